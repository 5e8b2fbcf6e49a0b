//! Property-based sequences on a real git repository and store: target moves, pushes, check
//! results and worker rounds in any order. After every step the three invariants hold:
//! 1. nothing is merged that was not validated — every merge commit on the target has as
//!    parents exactly the target commit and head of its intent's last validation;
//! 2. nothing is merged blind — that validation was made against the target as it was just
//!    before the merge (the merge's first parent is the target's previous tip);
//! 3. retries never pass the bound, and an intent is REJECTED only at the bound.
//!
//! 1 and 2 are checked from the target's side too: every merge commit on main is one an
//! intent recorded, with exactly its validated parents. The cases come from a fixed seed, so
//! every run tries the same sequences, and the run fails if none of them merged anything (a
//! queue that never merges would keep every invariant).

use std::path::Path;
use std::sync::Arc;

use converge_core::pipeline::Clock;
use converge_core::{Event, EventType, Intent, PolicyConfig, Status};
use converge_runtime::local_git::GitScm;
use converge_runtime::queue_worker::{QueueProcessor, WorkerSettings};
use converge_store::{Commit, EventFilter, Store, SystemClock};
use converge_testkit::git::{commit_file, git};
use proptest::prelude::*;
use serde_json::json;

const BRANCHES: usize = 3;
const MAX_RETRIES: u32 = 2;

#[derive(Debug, Clone)]
enum Step {
    /// Someone lands a commit on main (a file no branch touches, or the shared one).
    MoveTarget { conflicting: bool },
    /// A new commit on a feature branch.
    Push { branch: usize, conflicting: bool },
    /// CI reports lint on a branch's current head.
    Report { branch: usize, passed: bool },
    /// One worker round.
    Work,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        any::<bool>().prop_map(|conflicting| Step::MoveTarget { conflicting }),
        (0..BRANCHES, any::<bool>()).prop_map(|(branch, conflicting)| Step::Push {
            branch,
            conflicting
        }),
        (0..BRANCHES, any::<bool>()).prop_map(|(branch, passed)| Step::Report { branch, passed }),
        Just(Step::Work),
        Just(Step::Work),
    ]
}

fn on_branch(repo: &Path, branch: &str, file: &str, content: &str) {
    git(repo, &["checkout", "-q", branch]);
    commit_file(repo, file, content, "step");
    git(repo, &["checkout", "-q", "--detach"]);
}

struct World {
    repo: tempfile::TempDir,
    store: Store,
    _db: tempfile::TempDir,
    counter: u64,
}

impl World {
    async fn new() -> World {
        let repo = tempfile::tempdir().unwrap();
        let path = repo.path();
        git(path, &["init", "-q", "-b", "main"]);
        commit_file(path, "shared.txt", "base\n", "init");
        for b in 0..BRANCHES {
            git(path, &["branch", &format!("feature/{b}"), "main"]);
            on_branch(
                path,
                &format!("feature/{b}"),
                &format!("f{b}.txt"),
                "first\n",
            );
        }
        git(path, &["checkout", "-q", "--detach", "main"]);
        let db = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", db.path().join("s.db").display());
        let store = Store::from_url(&url, Arc::new(SystemClock)).unwrap();
        store.migrate().await.unwrap();
        let events = (0..BRANCHES)
            .map(|b| {
                let intent = Intent::new(
                    format!("i{b}"),
                    format!("feature/{b}"),
                    "main",
                    SystemClock.now(),
                );
                event(
                    &format!("i{b}"),
                    EventType::IntentCreated,
                    serde_json::to_value(&intent).unwrap_or_default(),
                    b as u64,
                )
            })
            .collect();
        store
            .commit(&Commit {
                events,
                ..Commit::default()
            })
            .await
            .unwrap();
        World {
            repo,
            store,
            _db: db,
            counter: 100,
        }
    }

    fn processor(&self) -> QueueProcessor<GitScm> {
        let settings = WorkerSettings {
            auto_confirm: true,
            max_retries: Some(MAX_RETRIES),
            ..WorkerSettings::default()
        };
        QueueProcessor::new(
            self.store.clone(),
            GitScm::new(self.repo.path()),
            PolicyConfig::default(),
            settings,
            Arc::new(SystemClock),
            "prop",
        )
    }

    async fn apply(&mut self, step: &Step) {
        self.counter += 1;
        let n = self.counter;
        let path = self.repo.path();
        match step {
            Step::MoveTarget { conflicting } => {
                let file = if *conflicting {
                    "shared.txt".to_owned()
                } else {
                    format!("main-{n}.txt")
                };
                on_branch(path, "main", &file, &format!("main {n}\n"));
            }
            Step::Push {
                branch,
                conflicting,
            } => {
                let file = if *conflicting {
                    "shared.txt".to_owned()
                } else {
                    format!("f{branch}-{n}.txt")
                };
                on_branch(
                    path,
                    &format!("feature/{branch}"),
                    &file,
                    &format!("branch {n}\n"),
                );
            }
            Step::Report { branch, passed } => {
                let head = git(path, &["rev-parse", &format!("feature/{branch}")]);
                let state = if *passed { "passed" } else { "failed" };
                let payload = json!({"name": "lint", "state": state, "head_sha": head});
                let report = event(&format!("i{branch}"), EventType::CheckReported, payload, n);
                self.store
                    .commit(&Commit {
                        events: vec![report],
                        ..Commit::default()
                    })
                    .await
                    .unwrap();
            }
            Step::Work => {
                self.processor().poll().await.unwrap();
            }
        }
    }

    /// Checks the three invariants; `Err` names the broken one. Answers how many merge
    /// commits main holds.
    async fn check(&self) -> Result<usize, String> {
        let path = self.repo.path();
        let merges = git(path, &["log", "--merges", "--format=%H %P", "main"]);
        // Each recorded merge: its commit, and the target and head it was validated as.
        let mut recorded: std::collections::BTreeMap<String, String> = Default::default();
        for b in 0..BRANCHES {
            let id = format!("i{b}");
            let intent = self
                .store
                .intent(&id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("intent lost")?;
            // 3: the retry bound.
            if intent.retries > MAX_RETRIES
                || (intent.status == Status::Rejected && intent.retries < MAX_RETRIES)
            {
                return Err(format!(
                    "{id}: {} with {} retries",
                    intent.status, intent.retries
                ));
            }
            let filter = EventFilter {
                intent_id: Some(id.clone()),
                limit: 1_000,
                ..EventFilter::default()
            };
            let events = self
                .store
                .events(&filter)
                .await
                .map_err(|e| e.to_string())?;
            let merged = events
                .iter()
                .find(|e| e.event.event_type == EventType::IntentMerged);
            let Some(merged) = merged else { continue };
            let commit = merged.event.payload["merged_commit"]
                .as_str()
                .unwrap_or_default();
            // 1 and 2: the merge commit's parents are the last validation's target and head.
            let validation = events
                .iter()
                .filter(|e| e.seq < merged.seq && e.event.event_type == EventType::IntentValidated)
                .max_by_key(|e| e.seq)
                .ok_or(format!("{id}: merged without a validation"))?;
            let target = validation.event.payload["target_sha"]
                .as_str()
                .unwrap_or_default();
            let head = validation.event.payload["head_sha"]
                .as_str()
                .unwrap_or_default();
            if recorded
                .insert(commit.to_owned(), format!("{commit} {target} {head}"))
                .is_some()
            {
                return Err(format!("{id}: merge commit {commit} recorded twice"));
            }
        }
        // From the target's side: every merge commit on main was recorded by an intent, with
        // exactly the parents its validation named (first parent: the target it was validated
        // against, which was main's tip just before).
        for line in merges.lines() {
            let commit = line.split(' ').next().unwrap_or_default();
            let expected = recorded.remove(commit).ok_or(format!(
                "merge commit {commit} on main that no intent recorded"
            ))?;
            if line != expected {
                return Err(format!("merge {line} is not the validated {expected}"));
            }
        }
        if let Some((commit, _)) = recorded.into_iter().next() {
            return Err(format!("recorded merge commit {commit} is not on main"));
        }
        Ok(merges.lines().count())
    }
}

fn event(intent_id: &str, event_type: EventType, payload: serde_json::Value, n: u64) -> Event {
    Event::about_intent(
        format!("{intent_id}-{}-{n}", event_type.as_str()),
        "prop",
        SystemClock.now(),
        event_type,
        intent_id.to_owned(),
        payload,
    )
}

#[test]
fn invariants_hold_after_every_step() {
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let config = ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let runs_that_merged = AtomicUsize::new(0);
    let outcome = runner.run(&prop::collection::vec(step(), 1..14), |steps| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let merges = runtime.block_on(async {
            let mut world = World::new().await;
            let mut merges = 0;
            for (i, step) in steps.iter().enumerate() {
                world.apply(step).await;
                merges = world.check().await.map_err(|broken| {
                    TestCaseError::fail(format!("after step {i} ({step:?}): {broken}"))
                })?;
            }
            Ok::<usize, TestCaseError>(merges)
        })?;
        if merges > 0 {
            runs_that_merged.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    assert!(
        runs_that_merged.load(Ordering::Relaxed) > 0,
        "no sequence merged anything: the invariants held vacuously"
    );
}
