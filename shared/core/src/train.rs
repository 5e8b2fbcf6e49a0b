//! Tested merges: the queue of `tested` mode, where the target only ever moves to a commit
//! whose checks passed.
//!
//! A *candidate* is the target plus a batch of queued intents, merged in queue order. Up to
//! `depth` candidates are tested at once, each built on the one before (speculation: candidate
//! k is candidate k−1 plus its batch), so when they pass the target is fast-forwarded to the
//! last of them in one move, landing exactly the commit that was tested.
//!
//! When a candidate fails, the candidates after it are cancelled (they contain it) and its
//! intents go back to the queue. A candidate of one intent ejects that intent, naming the
//! failing check. A larger one is *bisected*: its batch is split in two, the first half is
//! built on the same base and the second on the first, and both are tested at once (whatever
//! the depth), so one failing intent among N is isolated in at most ⌈log2 N⌉ + 1 rounds of CI.
//! A failure is only acted on once every candidate before it passed: until then it may be
//! theirs.
//!
//! Flaky checks: a check named in `known_flaky` is reported but never fails a candidate, and a
//! failed candidate outside a bisection is re-run `flaky_reruns` times on the same commit before
//! it counts as failed.
//!
//! Conflicts: an intent that does not merge onto its candidate's base leaves the queue at once
//! with the conflicting files (a new push puts it back: the driver enqueues it again). Intents
//! predicted to conflict with one another (the driver computes the pairs) are never tested
//! together: one waits until the other has left the trains.
//!
//! This is a state machine with no I/O. A driver (the queue simulator, the worker) feeds it
//! inputs (`enqueue`, `built`, `checks_finished`, `landed`, `target_moved`, `dequeue`) and
//! carries out the [`Action`]s it takes from [`Train::take_actions`], answering each with the
//! matching input.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// How a repository's queue lands changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MergeMode {
    /// The head of each pull request is validated (simulation, the checks CI reported on the
    /// head) and merged one at a time: the original's behaviour.
    #[default]
    Head,
    /// Candidates (the target plus queued intents) are tested and the target moves to exactly
    /// the tested commit.
    Tested,
}

/// Settings of a tested queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainSettings {
    /// Most intents in one candidate (at least 1).
    pub batch_size: usize,
    /// Most candidates tested at once, each on the one before (at least 1; a bisection may add
    /// one more for as long as it lasts).
    pub depth: usize,
    /// Times a failed candidate is re-run on the same commit before it counts as failed
    /// (outside bisections).
    pub flaky_reruns: u32,
    /// Checks that are reported but never block.
    pub known_flaky: BTreeSet<String>,
}

impl TrainSettings {
    /// One intent at a time, one candidate at a time: the slowest safe queue.
    pub fn serial() -> TrainSettings {
        TrainSettings {
            batch_size: 1,
            depth: 1,
            flaky_reruns: 1,
            known_flaky: BTreeSet::new(),
        }
    }
}

impl Default for TrainSettings {
    fn default() -> TrainSettings {
        TrainSettings {
            batch_size: 8,
            depth: 3,
            flaky_reruns: 1,
            known_flaky: BTreeSet::new(),
        }
    }
}

/// An intent waiting for, or riding in, a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The intent's id.
    pub id: String,
    /// The head commit to merge.
    pub head: String,
    /// Lower goes first.
    pub priority: i64,
    /// Order of arrival (ties of priority: first come first).
    pub arrival: u64,
    /// Intents predicted to conflict with this one (touching common files and not merging
    /// together): never tested in the same train.
    pub conflicts_with: BTreeSet<String>,
}

impl Queued {
    fn order(&self) -> (i64, u64) {
        (self.priority, self.arrival)
    }
}

/// Names a candidate for the life of a train.
pub type CandidateId = u64;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Merge the intents' heads, in order, onto `base` (push the result as the candidate's
    /// trial ref); answer with [`Train::built`].
    Build {
        /// The candidate.
        candidate: CandidateId,
        /// The commit to build on: the target, or the candidate before.
        base: String,
        /// `(intent id, head)` in merge order.
        intents: Vec<(String, String)>,
    },
    /// Run the required checks on the candidate's commit; answer with
    /// [`Train::checks_finished`].
    Test {
        /// The candidate.
        candidate: CandidateId,
        /// Its commit.
        commit: String,
    },
    /// The candidate's result no longer matters: stop its checks and drop its trial ref.
    Cancel {
        /// The candidate.
        candidate: CandidateId,
    },
    /// Move the target from `from` to `to` (a fast-forward: `to` descends from `from`);
    /// answer with [`Train::landed`], or [`Train::target_moved`] if the target was no longer
    /// at `from`.
    FastForward {
        /// Where the target must still be.
        from: String,
        /// The tested commit.
        to: String,
        /// The intents it lands, in merge order.
        intents: Vec<String>,
    },
    /// Take the intent out of the queue.
    Eject {
        /// The intent.
        intent: String,
        /// Why.
        reason: Ejection,
    },
}

/// Why an intent left the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ejection {
    /// It failed a required check alone on its base (after bisection, if it was in a batch).
    Failed {
        /// The failing check.
        check: String,
        /// The commit that failed.
        commit: String,
    },
    /// It does not merge onto its base.
    Conflict {
        /// The conflicting files.
        files: Vec<String>,
    },
}

/// The result of building a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Build {
    /// The candidate's commit.
    Built(String),
    /// An intent did not merge.
    Conflict {
        /// The intent.
        intent: String,
        /// The conflicting files.
        files: Vec<String>,
    },
}

/// One check's result on a candidate's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
}

/// What a call to [`Train::dequeue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dequeued {
    /// Taken out (cancelling the candidates that held it, if any).
    Removed,
    /// It is being landed: too late.
    Landing,
    /// It was not in this queue.
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Waiting for the candidate before it to be built.
    Unbuilt,
    /// Being built.
    Building,
    /// Its checks run (the count of runs started on this commit).
    Testing { runs: u32 },
    /// Its checks passed; it lands once every candidate before it did.
    Passed,
    /// Its checks failed (after re-runs); acted on once every candidate before it passed.
    Failed { check: String },
}

#[derive(Debug, Clone)]
struct Candidate {
    id: CandidateId,
    batch: Vec<Queued>,
    commit: Option<String>,
    stage: Stage,
    /// Set while the candidate is part of a bisection: its round (the failure that started
    /// the bisection was round 1).
    bisection_round: Option<u32>,
}

/// The tested queue of one target.
#[derive(Debug, Clone)]
pub struct Train {
    settings: TrainSettings,
    target: String,
    waiting: Vec<Queued>,
    candidates: Vec<Candidate>,
    /// The number of front candidates a fast-forward in flight lands.
    landing: Option<usize>,
    next_id: CandidateId,
    actions: Vec<Action>,
}

impl Train {
    /// An empty queue whose target is at `target`.
    pub fn new(settings: TrainSettings, target: impl Into<String>) -> Train {
        let settings = TrainSettings {
            batch_size: settings.batch_size.max(1),
            depth: settings.depth.max(1),
            ..settings
        };
        Train {
            settings,
            target: target.into(),
            waiting: Vec::new(),
            candidates: Vec::new(),
            landing: None,
            next_id: 1,
            actions: Vec::new(),
        }
    }

    /// Where the target is, as far as this queue knows.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Intents waiting for a candidate, in queue order.
    pub fn waiting(&self) -> impl Iterator<Item = &Queued> {
        self.waiting.iter()
    }

    /// Intents in candidates, in merge order.
    pub fn in_candidates(&self) -> impl Iterator<Item = &Queued> {
        self.candidates.iter().flat_map(|c| c.batch.iter())
    }

    /// Whether nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.candidates.is_empty()
    }

    /// The round of bisection a candidate is in (1 = the failure that started it), if any.
    pub fn bisection_round(&self, candidate: CandidateId) -> Option<u32> {
        self.find(candidate)
            .and_then(|i| self.candidates[i].bisection_round)
    }

    /// What the driver must do now (in order).
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Queue an intent (again, after a push: an intent already queued is replaced).
    pub fn enqueue(&mut self, intent: Queued) {
        self.enqueue_all([intent]);
    }

    /// Queue several intents at once (a page read by the worker), so they can share a
    /// candidate.
    pub fn enqueue_all(&mut self, intents: impl IntoIterator<Item = Queued>) {
        for intent in intents {
            if self.holds(&intent.id) {
                self.dequeue(&intent.id);
            }
            self.wait(intent);
        }
        self.advance();
    }

    /// Take an intent out of the queue (a push, a close, `@converge dequeue`).
    pub fn dequeue(&mut self, intent: &str) -> Dequeued {
        if let Some(at) = self.waiting.iter().position(|q| q.id == intent) {
            self.waiting.remove(at);
            return Dequeued::Removed;
        }
        let Some(at) = self
            .candidates
            .iter()
            .position(|c| c.batch.iter().any(|q| q.id == intent))
        else {
            return Dequeued::Absent;
        };
        if self.landing.is_some_and(|n| at < n) {
            return Dequeued::Landing;
        }
        self.cancel_from(at);
        self.waiting.retain(|q| q.id != intent);
        self.advance();
        Dequeued::Removed
    }

    /// A candidate was built (or one of its intents did not merge).
    pub fn built(&mut self, candidate: CandidateId, build: Build) {
        let Some(at) = self.find(candidate) else {
            return;
        };
        if self.candidates[at].stage != Stage::Building {
            return;
        }
        match build {
            Build::Built(commit) => {
                let c = &mut self.candidates[at];
                c.commit = Some(commit.clone());
                c.stage = Stage::Testing { runs: 1 };
                self.actions.push(Action::Test { candidate, commit });
            }
            Build::Conflict { intent, files } => {
                // Everything from here on was built on, or waits for, this candidate.
                self.cancel_from(at);
                self.waiting.retain(|q| q.id != intent);
                self.actions.push(Action::Eject {
                    intent,
                    reason: Ejection::Conflict { files },
                });
            }
        }
        self.advance();
    }

    /// A candidate's checks finished on `commit` (results of another commit are ignored).
    pub fn checks_finished(
        &mut self,
        candidate: CandidateId,
        commit: &str,
        results: &[CheckResult],
    ) {
        let Some(at) = self.find(candidate) else {
            return;
        };
        let c = &mut self.candidates[at];
        let Stage::Testing { runs } = c.stage else {
            return;
        };
        if c.commit.as_deref() != Some(commit) {
            return;
        }
        let failing = results
            .iter()
            .find(|r| !r.passed && !self.settings.known_flaky.contains(&r.name));
        match failing {
            None => c.stage = Stage::Passed,
            Some(_) if c.bisection_round.is_none() && runs <= self.settings.flaky_reruns => {
                c.stage = Stage::Testing { runs: runs + 1 };
                self.actions.push(Action::Test {
                    candidate,
                    commit: commit.to_owned(),
                });
            }
            Some(check) => {
                c.stage = Stage::Failed {
                    check: check.name.clone(),
                }
            }
        }
        self.advance();
    }

    /// The fast-forward asked for landed: the target is at `to`.
    pub fn landed(&mut self, to: &str) {
        let Some(count) = self.landing.take() else {
            return;
        };
        self.candidates.drain(..count);
        self.target = to.to_owned();
        self.advance();
    }

    /// The target is at `tip`, which this queue did not put there (a push to the target, or a
    /// fast-forward refused because the target had moved): every candidate is rebuilt on it.
    pub fn target_moved(&mut self, tip: &str) {
        if tip == self.target && self.landing.is_none() {
            return;
        }
        self.landing = None;
        self.target = tip.to_owned();
        self.cancel_from(0);
        self.advance();
    }

    fn holds(&self, intent: &str) -> bool {
        self.waiting.iter().any(|q| q.id == intent) || self.in_candidates().any(|q| q.id == intent)
    }

    fn find(&self, candidate: CandidateId) -> Option<usize> {
        self.candidates.iter().position(|c| c.id == candidate)
    }

    fn wait(&mut self, intent: Queued) {
        let at = self
            .waiting
            .partition_point(|q| q.order() <= intent.order());
        self.waiting.insert(at, intent);
    }

    /// Cancels the candidates from `at` on; their intents wait again.
    fn cancel_from(&mut self, at: usize) {
        for c in self.candidates.split_off(at) {
            if c.stage != Stage::Unbuilt {
                self.actions.push(Action::Cancel { candidate: c.id });
            }
            for q in c.batch {
                self.wait(q);
            }
        }
    }

    fn new_candidate(&mut self, batch: Vec<Queued>, bisection_round: Option<u32>) -> Candidate {
        let id = self.next_id;
        self.next_id += 1;
        Candidate {
            id,
            batch,
            commit: None,
            stage: Stage::Unbuilt,
            bisection_round,
        }
    }

    /// Acts on what is known: a failure whose predecessors all passed, a landing, new
    /// candidates, builds.
    fn advance(&mut self) {
        loop {
            if !self.resolve_failure() {
                break;
            }
        }
        self.land();
        self.fill();
        self.build();
    }

    /// Acts on the first candidate that failed, if every candidate before it passed.
    fn resolve_failure(&mut self) -> bool {
        let Some(at) = self
            .candidates
            .iter()
            .position(|c| c.stage != Stage::Passed)
        else {
            return false;
        };
        let Stage::Failed { check } = self.candidates[at].stage.clone() else {
            return false;
        };
        let failed = self.candidates[at].clone();
        self.cancel_from(at + 1);
        self.candidates.truncate(at);
        let mut batch = failed.batch;
        if batch.len() == 1 {
            let culprit = batch.remove(0);
            self.actions.push(Action::Eject {
                intent: culprit.id,
                reason: Ejection::Failed {
                    check,
                    commit: failed.commit.unwrap_or_default(),
                },
            });
            return true;
        }
        let round = failed.bisection_round.unwrap_or(1) + 1;
        let second = batch.split_off(batch.len().div_ceil(2));
        let first = self.new_candidate(batch, Some(round));
        let second = self.new_candidate(second, Some(round));
        self.candidates.push(first);
        self.candidates.push(second);
        true
    }

    /// Fast-forwards the target over the passed candidates at the front.
    fn land(&mut self) {
        if self.landing.is_some() {
            return;
        }
        let passed = self
            .candidates
            .iter()
            .take_while(|c| c.stage == Stage::Passed)
            .count();
        if passed == 0 {
            return;
        }
        let to = self.candidates[passed - 1]
            .commit
            .clone()
            .unwrap_or_default();
        let intents = self.candidates[..passed]
            .iter()
            .flat_map(|c| c.batch.iter().map(|q| q.id.clone()))
            .collect();
        self.landing = Some(passed);
        self.actions.push(Action::FastForward {
            from: self.target.clone(),
            to,
            intents,
        });
    }

    /// New candidates from the waiting intents, up to the depth.
    fn fill(&mut self) {
        while self.candidates.len() < self.settings.depth && !self.waiting.is_empty() {
            let mut riding: BTreeSet<String> = self.in_candidates().map(|q| q.id.clone()).collect();
            let mut batch = Vec::new();
            let mut at = 0;
            while at < self.waiting.len() && batch.len() < self.settings.batch_size {
                let clashes = {
                    let q = &self.waiting[at];
                    q.conflicts_with.iter().any(|other| riding.contains(other))
                        || self
                            .in_candidates()
                            .chain(batch.iter())
                            .any(|c| c.conflicts_with.contains(&q.id))
                };
                if clashes {
                    at += 1;
                    continue;
                }
                let q = self.waiting.remove(at);
                riding.insert(q.id.clone());
                batch.push(q);
            }
            if batch.is_empty() {
                return;
            }
            let candidate = self.new_candidate(batch, None);
            self.candidates.push(candidate);
        }
    }

    /// Builds every candidate whose base is known.
    fn build(&mut self) {
        for at in 0..self.candidates.len() {
            if self.candidates[at].stage != Stage::Unbuilt {
                continue;
            }
            let base = if at == 0 {
                Some(self.target.clone())
            } else {
                self.candidates[at - 1].commit.clone()
            };
            let Some(base) = base else {
                return;
            };
            let c = &mut self.candidates[at];
            c.stage = Stage::Building;
            self.actions.push(Action::Build {
                candidate: c.id,
                base,
                intents: c
                    .batch
                    .iter()
                    .map(|q| (q.id.clone(), q.head.clone()))
                    .collect(),
            });
            // The next one is built on this one's commit, once known.
            return;
        }
    }
}
