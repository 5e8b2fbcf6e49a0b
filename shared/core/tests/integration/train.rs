//! Tested merges (`core::train`) driven over a model of a repository and its CI: random
//! sequences of arrivals, CI results, flakes, pushes to the target, re-pushed and dequeued
//! pull requests, with the invariants checked at every step.

use std::collections::{BTreeMap, BTreeSet};

use converge_core::train::{
    Action, Build, CandidateId, CheckResult, Dequeued, Ejection, Queued, Train, TrainSettings,
};
use proptest::prelude::*;

/// A commit of the model: the intents merged into it and every commit it descends from.
#[derive(Debug, Clone, Default)]
struct Commit {
    intents: BTreeSet<String>,
    ancestors: BTreeSet<String>,
}

/// A repository, its CI and the train's driver.
#[derive(Debug, Default)]
struct World {
    commits: BTreeMap<String, Commit>,
    target: String,
    /// Commits whose latest CI run passed.
    passed: BTreeSet<String>,
    /// Tests running: candidate → commit.
    running: BTreeMap<CandidateId, String>,
    heads: BTreeMap<String, String>,
    /// Intents that break the build wherever they are.
    bad: BTreeSet<String>,
    /// Pairs of intents that do not merge together.
    clashing: BTreeSet<(String, String)>,
    merged: BTreeSet<String>,
    ejected: Vec<(String, Ejection)>,
    /// Candidates built and not retired yet (their trial refs).
    trial_refs: BTreeSet<CandidateId>,
    /// The next fast-forward is held (a freeze): the train is told to ask again later.
    frozen: bool,
    next: u64,
}

impl World {
    fn new() -> World {
        let mut world = World::default();
        world.target = world.commit(Commit::default());
        world
    }

    fn commit(&mut self, mut commit: Commit) -> String {
        self.next += 1;
        let id = format!("c{}", self.next);
        commit.ancestors.insert(id.clone());
        self.commits.insert(id.clone(), commit);
        id
    }

    /// A pull request's new head: a commit on the target as it is.
    fn head(&mut self, intent: &str) -> String {
        let base = self.commits[&self.target].clone();
        let head = self.commit(Commit {
            intents: BTreeSet::new(),
            ancestors: base.ancestors,
        });
        self.heads.insert(intent.to_owned(), head.clone());
        head
    }

    fn push_to_target(&mut self) -> String {
        let base = self.commits[&self.target].clone();
        self.target = self.commit(base);
        self.target.clone()
    }

    fn contains_bad(&self, commit: &str) -> bool {
        self.commits[commit]
            .intents
            .iter()
            .any(|i| self.bad.contains(i))
    }

    /// Carries out the train's actions (builds answer at once, tests wait for `finish`).
    fn drive(&mut self, train: &mut Train) {
        loop {
            let actions = train.take_actions();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                self.carry_out(train, action);
            }
        }
    }

    fn carry_out(&mut self, train: &mut Train, action: Action) {
        match action {
            Action::Build {
                candidate,
                base,
                intents,
            } => {
                let mut commit = self.commits[&base].clone();
                for (intent, head) in intents {
                    assert_eq!(
                        self.heads.get(&intent),
                        Some(&head),
                        "builds the queued head"
                    );
                    assert!(
                        !self.merged.contains(&intent),
                        "{intent} built after it merged"
                    );
                    let clash = commit.intents.iter().any(|other| {
                        self.clashing.contains(&(intent.clone(), other.clone()))
                            || self.clashing.contains(&(other.clone(), intent.clone()))
                    });
                    if clash {
                        train.built(
                            candidate,
                            Build::Conflict {
                                intent,
                                files: vec!["shared.rs".into()],
                            },
                        );
                        return;
                    }
                    let head = self.commits[&head].clone();
                    commit.ancestors.extend(head.ancestors);
                    commit.intents.insert(intent);
                }
                let id = self.commit(commit);
                self.trial_refs.insert(candidate);
                train.built(candidate, Build::Built(id));
            }
            Action::Test {
                candidate, commit, ..
            } => {
                self.running.insert(candidate, commit);
            }
            Action::Retire { candidate } => {
                self.running.remove(&candidate);
                self.trial_refs.remove(&candidate);
            }
            Action::FastForward { .. } if self.frozen => {
                self.frozen = false;
                train.defer_landing();
            }
            Action::FastForward { from, to, intents } => {
                assert!(
                    self.passed.contains(&to),
                    "the target moves only to a commit whose checks passed"
                );
                assert!(
                    self.commits[&to].ancestors.contains(&from),
                    "a fast-forward: {to} descends from {from}"
                );
                if self.target != from {
                    let tip = self.target.clone();
                    train.target_moved(&tip);
                    return;
                }
                self.target = to.clone();
                for intent in intents {
                    assert!(self.merged.insert(intent.clone()), "{intent} merged twice");
                    assert!(
                        !self.bad.contains(&intent),
                        "{intent} breaks the build and landed"
                    );
                }
                train.landed(&to);
            }
            Action::Eject { intent, reason } => {
                assert!(
                    !self.merged.contains(&intent),
                    "{intent} ejected after it merged"
                );
                self.ejected.push((intent, reason));
            }
        }
    }

    /// Finishes one running test (`pick` chooses which), failing it spuriously on `flake`.
    fn finish(&mut self, train: &mut Train, pick: usize, flake: bool) {
        let Some((&candidate, commit)) = self.running.iter().nth(pick % self.running.len().max(1))
        else {
            return;
        };
        let commit = commit.clone();
        self.running.remove(&candidate);
        let passed = !flake && !self.contains_bad(&commit);
        if passed {
            self.passed.insert(commit.clone());
        } else {
            self.passed.remove(&commit);
        }
        let results = [
            CheckResult {
                name: "build".into(),
                passed,
            },
            // Known flaky: reported failing half the time, never blocks.
            CheckResult {
                name: "e2e".into(),
                passed: pick.is_multiple_of(2),
            },
        ];
        train.checks_finished(candidate, &commit, &results);
        self.drive(train);
    }

    fn check_target(&self) {
        let target = &self.commits[&self.target];
        for intent in &self.merged {
            let head = &self.heads[intent];
            assert!(
                target.ancestors.contains(head),
                "merged {intent}'s head {head} is an ancestor of the target"
            );
        }
    }
}

fn queued(id: &str, head: &str, arrival: u64, conflicts_with: BTreeSet<String>) -> Queued {
    Queued {
        id: id.to_owned(),
        head: head.to_owned(),
        priority: 0,
        arrival,
        conflicts_with,
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// A pull request is queued; bad, and clashing with an earlier one, or not.
    Arrive {
        bad: bool,
        clashes_with: Option<usize>,
    },
    /// A running test finishes.
    Finish { pick: usize, flake: bool },
    /// Somebody pushes to the target.
    PushTarget,
    /// A queued pull request gets a new head (the fixed one is good).
    Repush { pick: usize },
    /// A pull request is taken out.
    Dequeue { pick: usize },
    /// The next fast-forward is held by a freeze.
    Freeze,
    /// The train is stored and read back (another round, another process).
    Reload,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (prop::bool::weighted(0.2), prop::option::weighted(0.15, 0usize..64))
            .prop_map(|(bad, clashes_with)| Step::Arrive { bad, clashes_with }),
        6 => (0usize..64, prop::bool::weighted(0.1)).prop_map(|(pick, flake)| Step::Finish { pick, flake }),
        1 => Just(Step::PushTarget),
        1 => (0usize..64).prop_map(|pick| Step::Repush { pick }),
        1 => (0usize..64).prop_map(|pick| Step::Dequeue { pick }),
        1 => Just(Step::Freeze),
        1 => Just(Step::Reload),
    ]
}

/// Train settings, and whether conflicts are predicted to the train.
fn settings() -> impl Strategy<Value = (TrainSettings, bool)> {
    (1usize..6, 1usize..4, 0u32..2, any::<bool>()).prop_map(
        |(batch_size, depth, flaky_reruns, predicted)| {
            let settings = TrainSettings {
                batch_size,
                depth,
                flaky_reruns,
                known_flaky: BTreeSet::from(["e2e".to_owned()]),
            };
            (settings, predicted)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The target only moves to commits whose checks passed (so nothing that breaks the build
    /// lands), every merged intent's head is an ancestor of the target, no intent merges twice,
    /// and once CI has finished everything every intent has merged or left the queue.
    #[test]
    fn the_target_only_moves_to_tested_commits(
        (settings, predicted) in settings(),
        steps in prop::collection::vec(step(), 1..120),
    ) {
        let mut world = World::new();
        let mut train = Train::new(settings.clone(), world.target.clone());
        let mut intents: Vec<String> = Vec::new();
        for step in steps {
            match step {
                Step::Arrive { bad, clashes_with } => {
                    let id = format!("i{}", intents.len());
                    let head = world.head(&id);
                    if bad {
                        world.bad.insert(id.clone());
                    }
                    let mut predicted_clashes = BTreeSet::new();
                    if let Some(other) = clashes_with.filter(|_| !intents.is_empty()) {
                        let other = intents[other % intents.len()].clone();
                        world.clashing.insert((id.clone(), other.clone()));
                        if predicted {
                            predicted_clashes.insert(other);
                        }
                    }
                    intents.push(id.clone());
                    let arrival = intents.len() as u64;
                    train.enqueue(queued(&id, &head, arrival, predicted_clashes));
                }
                Step::Finish { pick, flake } => world.finish(&mut train, pick, flake),
                Step::PushTarget => {
                    let tip = world.push_to_target();
                    train.target_moved(&tip);
                }
                Step::Repush { pick } if !intents.is_empty() => {
                    let id = intents[pick % intents.len()].clone();
                    if world.merged.contains(&id) {
                        continue;
                    }
                    let head = world.head(&id);
                    world.bad.remove(&id);
                    world.clashing.retain(|(a, b)| *a != id && *b != id);
                    world.ejected.retain(|(i, _)| *i != id);
                    let arrival = pick as u64;
                    train.enqueue(queued(&id, &head, arrival, BTreeSet::new()));
                }
                Step::Dequeue { pick } if !intents.is_empty() => {
                    let id = &intents[pick % intents.len()];
                    let answer = train.dequeue(id);
                    if world.merged.contains(id) {
                        prop_assert_ne!(answer, Dequeued::Removed);
                    }
                }
                Step::Freeze => world.frozen = true,
                Step::Reload => {
                    let stored = serde_json::to_string(&train).unwrap();
                    train = serde_json::from_str(&stored).unwrap();
                    // A round begins as the worker's does: settings, where the target is,
                    // then what the train asks for is asked again.
                    train.resume();
                    train.reconfigure(settings.clone());
                    train.target_moved(&world.target.clone());
                    train.enqueue_all([]);
                }
                Step::Repush { .. } | Step::Dequeue { .. } => {}
            }
            world.drive(&mut train);
            world.check_target();
        }
        // Let CI finish everything, without flakes or freezes, a round after another.
        world.frozen = false;
        let mut guard = 0;
        loop {
            train.enqueue_all([]);
            world.drive(&mut train);
            if world.running.is_empty() {
                break;
            }
            world.finish(&mut train, 0, false);
            guard += 1;
            prop_assert!(guard < 10_000, "the train settles");
        }
        world.check_target();
        prop_assert!(train.is_idle(), "every intent merged or left once CI is done");
        prop_assert!(world.trial_refs.is_empty(), "trial refs left: {:?}", world.trial_refs);
        for intent in &world.merged {
            prop_assert!(!world.bad.contains(intent));
        }
    }

    /// One failing intent in a batch of N is isolated in at most ⌈log2 N⌉ + 1 rounds of CI,
    /// and the other N − 1 land.
    #[test]
    fn bisection_isolates_one_failing_intent_in_log_rounds(
        n in 1usize..=40,
        culprit in 0usize..40,
        depth in 1usize..4,
        flaky_reruns in 0u32..2,
        order_seed in any::<u64>(),
    ) {
        let culprit = culprit % n;
        let mut world = World::new();
        let settings = TrainSettings {
            batch_size: n,
            depth,
            flaky_reruns,
            known_flaky: BTreeSet::from(["e2e".to_owned()]),
        };
        let mut train = Train::new(settings, world.target.clone());
        let mut batch = Vec::new();
        for i in 0..n {
            let id = format!("i{i}");
            let head = world.head(&id);
            if i == culprit {
                world.bad.insert(id.clone());
            }
            batch.push(queued(&id, &head, i as u64, BTreeSet::new()));
        }
        train.enqueue_all(batch);
        world.drive(&mut train);
        let mut rounds = 0u32;
        let mut seed = order_seed;
        while world.ejected.is_empty() {
            rounds += 1;
            prop_assert!(rounds < 100, "the culprit is found");
            // A round: every test running now finishes, in an arbitrary order.
            let mut this_round: Vec<CandidateId> = world.running.keys().copied().collect();
            while !this_round.is_empty() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let candidate = this_round.remove((seed >> 33) as usize % this_round.len());
                if let Some(at) = world.running.keys().position(|c| *c == candidate) {
                    world.finish(&mut train, at, false);
                }
            }
        }
        // The re-run of a failed batch runs beside its halves: it adds a round only when
        // there are no halves (a single intent).
        let rerun_round = if n == 1 { flaky_reruns } else { 0 };
        let bound = (n as f64).log2().ceil() as u32 + 1 + rerun_round;
        prop_assert!(rounds <= bound, "{rounds} rounds for {n} intents (bound {bound})");
        prop_assert_eq!(&world.ejected[0].0, &format!("i{culprit}"));
        match &world.ejected[0].1 {
            Ejection::Failed { check, .. } => prop_assert_eq!(check, "build"),
            other => prop_assert!(false, "ejected for {:?}", other),
        }
        while !world.running.is_empty() {
            world.finish(&mut train, 0, false);
        }
        prop_assert_eq!(world.merged.len(), n - 1, "ejected: {:?}", world.ejected);
        world.check_target();
    }
}

/// Eight intents, one failing: the other seven land in one fast-forward chain and the failing
/// one leaves with its check named.
#[test]
fn a_batch_of_eight_with_one_failing_lands_seven() {
    let mut world = World::new();
    let mut train = Train::new(
        TrainSettings {
            batch_size: 8,
            depth: 2,
            flaky_reruns: 1,
            known_flaky: BTreeSet::from(["e2e".to_owned()]),
        },
        world.target.clone(),
    );
    let batch: Vec<Queued> = (0..8)
        .map(|i| {
            let id = format!("i{i}");
            let head = world.head(&id);
            queued(&id, &head, i, BTreeSet::new())
        })
        .collect();
    world.bad.insert("i5".into());
    train.enqueue_all(batch);
    world.drive(&mut train);
    while !world.running.is_empty() {
        world.finish(&mut train, 0, false);
    }
    assert_eq!(world.merged.len(), 7);
    assert!(!world.merged.contains("i5"));
    assert!(matches!(
        &world.ejected[..],
        [(id, Ejection::Failed { check, .. })] if id == "i5" && check == "build"
    ));
    assert!(train.is_idle());
    world.check_target();
}

/// Predicted conflicts are never tested together: the second waits until the first left.
#[test]
fn predicted_conflicts_ride_in_different_trains() {
    let mut world = World::new();
    let mut train = Train::new(TrainSettings::default(), world.target.clone());
    let a = world.head("a");
    let b = world.head("b");
    let c = world.head("c");
    world.bad.insert("a".into());
    world.clashing.insert(("b".into(), "a".into()));
    train.enqueue_all([
        queued("a", &a, 1, BTreeSet::new()),
        queued("b", &b, 2, BTreeSet::from(["a".to_owned()])),
        queued("c", &c, 3, BTreeSet::new()),
    ]);
    world.drive(&mut train);
    let riding: Vec<String> = train.in_candidates().map(|q| q.id.clone()).collect();
    assert_eq!(riding, ["a", "c"]);
    while !world.running.is_empty() {
        world.finish(&mut train, 0, false);
    }
    // `a` broke the build and left; `b`, which would have conflicted with it, merged.
    assert_eq!(
        world.merged,
        BTreeSet::from(["b".to_owned(), "c".to_owned()])
    );
    assert!(world.ejected.iter().all(|(id, _)| id == "a"));
}

/// A flaky failure is re-run beside the main line, which goes on without the suspect: the
/// intent queues again when the re-run passes, and merges.
#[test]
fn a_flaky_failure_is_rerun_while_the_line_goes_on() {
    let mut world = World::new();
    let mut train = Train::new(TrainSettings::serial(), world.target.clone());
    let a = world.head("a");
    let b = world.head("b");
    train.enqueue_all([
        queued("a", &a, 1, BTreeSet::new()),
        queued("b", &b, 2, BTreeSet::new()),
    ]);
    world.drive(&mut train);
    // `a` fails by a flake: `b` takes its place on the main line, `a` is re-run.
    world.finish(&mut train, 0, true);
    assert!(world.ejected.is_empty(), "re-run instead of ejecting");
    let riding: Vec<&str> = train.in_candidates().map(|q| q.id.as_str()).collect();
    assert_eq!(riding, ["b"]);
    let probed: Vec<&str> = train.suspects().map(|q| q.id.as_str()).collect();
    assert_eq!(probed, ["a"]);
    assert_eq!(world.running.len(), 2);
    while !world.running.is_empty() {
        world.finish(&mut train, 0, false);
    }
    assert_eq!(
        world.merged,
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    );
    assert!(train.is_idle());
}

/// A single intent that fails again on the re-run is its own failure: ejected, check named.
#[test]
fn a_failure_confirmed_by_its_rerun_ejects_the_intent() {
    let mut world = World::new();
    let mut train = Train::new(TrainSettings::serial(), world.target.clone());
    let a = world.head("a");
    world.bad.insert("a".into());
    train.enqueue(queued("a", &a, 1, BTreeSet::new()));
    world.drive(&mut train);
    world.finish(&mut train, 0, false);
    assert!(world.ejected.is_empty(), "not before the re-run");
    world.finish(&mut train, 0, false);
    assert!(matches!(
        &world.ejected[..],
        [(id, Ejection::Failed { check, .. })] if id == "a" && check == "build"
    ));
    assert!(world.merged.is_empty());
    assert!(train.is_idle());
}
