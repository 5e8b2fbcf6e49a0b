//! Tested merges: the queue of `tested` mode, where the target only ever moves to a commit
//! whose checks passed.
//!
//! A *candidate* is the target plus a batch of queued intents, merged in queue order. Up to
//! `depth` candidates are tested at once, each built on the one before (speculation: candidate
//! k is candidate k−1 plus its batch), so when they pass the target is fast-forwarded to the
//! last of them in one move, landing exactly the commit that was tested.
//!
//! When a candidate of the *main line* fails (once every candidate before it passed: until
//! then the failure may be theirs), the candidates after it are cancelled and rebuilt without
//! it at once, so the intents behind a failure lose one run, not a bisection. The failed batch
//! goes to a *probe* that finds its culprit beside the main line: the failed commit is re-run
//! (`flaky_reruns` times: if it passes, the failure was a flake and the batch queues again)
//! and, for a batch of more than one, its two halves are tested at the same time (the first
//! on the commit the batch failed on, the second on the first). A failing half is probed in
//! turn; halves that pass queue again; a failing single intent is ejected, naming its check.
//! So one failing intent among N is isolated in at most ⌈log2 N⌉ + 1 rounds of CI. Probes
//! never land and do not count against the depth.
//!
//! Flaky checks: a check named in `known_flaky` is reported but never fails a candidate.
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

/// How an intent's changes are written onto the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MergeMethod {
    /// A merge commit whose parents are the base and the head (the head stays an ancestor).
    #[default]
    Merge,
    /// One commit with the merged tree and the base as its only parent.
    Squash,
    /// The head's commits replayed one by one onto the base.
    Rebase,
}

/// Settings of a tested queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Most intents in one candidate (at least 1).
    pub batch_size: usize,
    /// Most candidates tested at once, each on the one before (at least 1; a bisection may add
    /// one more for as long as it lasts).
    pub depth: usize,
    /// Times a failed main-line commit is re-run (beside its bisection) before its failure
    /// counts.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        /// The commit was tested before: CI must run its checks again (a re-run).
        again: bool,
    },
    /// The candidate is finished with (cancelled, landed or judged): delete its trial ref (its
    /// checks still running are not cancelled).
    Retire {
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "stage")]
enum Stage {
    /// Waiting for the candidate before it to be built.
    Unbuilt,
    /// Being built.
    Building,
    /// Its checks run (the count of runs started on this commit).
    Testing { runs: u32 },
    /// Its checks passed.
    Passed,
    /// Its checks failed (after re-runs); acted on once every candidate before it passed.
    Failed { check: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Candidate {
    id: CandidateId,
    batch: Vec<Queued>,
    /// A re-run's: the intents of the candidates its commit was built on (their required
    /// checks are the commit's too).
    #[serde(default)]
    built_on: Vec<String>,
    /// The commit it is built on, once building.
    base: Option<String>,
    commit: Option<String>,
    stage: Stage,
}

/// A chain of candidates, each built on the one before.
///
/// The *main line* starts at the target and lands. A *probe* finds the culprit of a failed
/// batch: it starts at the commit the batch failed on, holds the batch's two halves (the second
/// built on the first) and a re-run of the failed commit, never lands, and sends the intents it
/// clears back to the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    /// `None` for the main line (built on the target); the probe's base otherwise.
    base: Option<String>,
    /// The probe's round of bisection (the failure that started it was round 1); 0 for the
    /// main line.
    round: u32,
    candidates: Vec<Candidate>,
    /// A probe's re-run of the commit that failed (whose batch, when it is a single intent,
    /// this holds: there are no halves then).
    recheck: Option<Candidate>,
}

impl Line {
    fn intents(&self) -> impl Iterator<Item = &Queued> {
        self.candidates
            .iter()
            .chain(self.recheck.iter())
            .flat_map(|c| c.batch.iter())
    }
}

/// Where a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In a line's chain, at this index.
    Chain(usize, usize),
    /// A probe's re-run.
    Recheck(usize),
}

/// The tested queue of one target. It is kept between rounds as JSON (serde): what it
/// stores is its whole state, and [`Train::reconfigure`] applies settings changed since.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Train {
    settings: TrainSettings,
    target: String,
    waiting: Vec<Queued>,
    /// The main line first, then the probes.
    lines: Vec<Line>,
    /// The number of main-line candidates a fast-forward in flight lands.
    landing: Option<usize>,
    next_id: CandidateId,
    /// Handed to the driver as they arise; a stored train has none left.
    #[serde(skip)]
    actions: Vec<Action>,
}

/// A candidate whose checks are running: what the driver asks CI about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderTest {
    /// The candidate.
    pub candidate: CandidateId,
    /// Its commit.
    pub commit: String,
    /// The intents it holds (a re-run's: those of the commit that failed).
    pub intents: Vec<String>,
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
            lines: vec![Line {
                base: None,
                round: 0,
                candidates: Vec::new(),
                recheck: None,
            }],
            landing: None,
            next_id: 1,
            actions: Vec::new(),
        }
    }

    /// Applies settings changed since the train was stored (they take effect for the
    /// candidates made from now on).
    pub fn reconfigure(&mut self, settings: TrainSettings) {
        self.settings = TrainSettings {
            batch_size: settings.batch_size.max(1),
            depth: settings.depth.max(1),
            ..settings
        };
    }

    /// Takes up a stored train again: what was asked of the driver and not answered (a build,
    /// a fast-forward) is asked again by the next call that advances it (builds and
    /// fast-forwards are safe to repeat: a trial ref is simply set again, and a fast-forward
    /// from where the target no longer is is refused).
    pub fn resume(&mut self) {
        self.landing = None;
        for line in &mut self.lines {
            for c in &mut line.candidates {
                if c.stage == Stage::Building {
                    c.stage = Stage::Unbuilt;
                }
            }
        }
    }

    /// Every intent it holds (waiting, riding or probed), with the head it holds.
    pub fn intents(&self) -> Vec<(String, String)> {
        self.waiting
            .iter()
            .chain(self.lines.iter().flat_map(Line::intents))
            .map(|q| (q.id.clone(), q.head.clone()))
            .collect()
    }

    /// The fast-forward asked for cannot happen now (a freeze holds the target): it is asked
    /// for again by the next call that advances the train.
    pub fn defer_landing(&mut self) {
        self.landing = None;
    }

    /// The candidates whose checks are running.
    pub fn under_test(&self) -> Vec<UnderTest> {
        let mut running = Vec::new();
        for line in &self.lines {
            for (at, c) in line.candidates.iter().enumerate() {
                if let (Stage::Testing { .. }, Some(commit)) = (&c.stage, &c.commit) {
                    // A candidate holds its predecessors' intents too.
                    let intents = line.candidates[..=at]
                        .iter()
                        .flat_map(|c| c.batch.iter().map(|q| q.id.clone()))
                        .collect();
                    running.push(UnderTest {
                        candidate: c.id,
                        commit: commit.clone(),
                        intents,
                    });
                }
            }
            if let Some(c) = &line.recheck
                && let (Stage::Testing { .. }, Some(commit)) = (&c.stage, &c.commit)
            {
                let own: Vec<String> = if c.batch.is_empty() {
                    line.candidates
                        .iter()
                        .flat_map(|c| c.batch.iter().map(|q| q.id.clone()))
                        .collect()
                } else {
                    c.batch.iter().map(|q| q.id.clone()).collect()
                };
                let intents = c.built_on.iter().cloned().chain(own).collect();
                running.push(UnderTest {
                    candidate: c.id,
                    commit: commit.clone(),
                    intents,
                });
            }
        }
        running
    }

    /// Where the target is, as far as this queue knows.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Intents waiting for a candidate, in queue order.
    pub fn waiting(&self) -> impl Iterator<Item = &Queued> {
        self.waiting.iter()
    }

    /// Intents in candidates of the main line, in merge order.
    pub fn in_candidates(&self) -> impl Iterator<Item = &Queued> {
        self.lines[0].intents()
    }

    /// Intents being probed (suspects of a failed batch).
    pub fn suspects(&self) -> impl Iterator<Item = &Queued> {
        self.lines[1..].iter().flat_map(Line::intents)
    }

    /// Whether nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.lines.len() == 1 && self.lines[0].candidates.is_empty()
    }

    /// The round of bisection a candidate is in (1 = the failure that started it), if any.
    pub fn bisection_round(&self, candidate: CandidateId) -> Option<u32> {
        let line = match self.find(candidate)? {
            Place::Chain(line, _) | Place::Recheck(line) => line,
        };
        Some(self.lines[line].round).filter(|round| *round > 0)
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
            self.take_out(&intent.id);
            self.wait(intent);
        }
        self.advance();
    }

    /// Take an intent out of the queue (a push, a close, `@converge dequeue`).
    pub fn dequeue(&mut self, intent: &str) -> Dequeued {
        let answer = self.take_out(intent);
        self.advance();
        answer
    }

    /// A candidate was built (or one of its intents did not merge).
    pub fn built(&mut self, candidate: CandidateId, build: Build) {
        let Some(Place::Chain(line, at)) = self.find(candidate) else {
            return;
        };
        if self.lines[line].candidates[at].stage != Stage::Building {
            return;
        }
        match build {
            Build::Built(commit) => {
                let c = &mut self.lines[line].candidates[at];
                c.commit = Some(commit.clone());
                c.stage = Stage::Testing { runs: 1 };
                self.actions.push(Action::Test {
                    candidate,
                    commit,
                    again: false,
                });
            }
            Build::Conflict { intent, files } => {
                // Everything from here on was built on, or waits for, this candidate.
                self.cancel_from(line, at);
                self.waiting.retain(|q| q.id != intent);
                self.actions.push(Action::Eject {
                    intent,
                    reason: Ejection::Conflict { files },
                });
            }
        }
        self.advance();
    }

    /// A candidate could not be built now (source control unreachable): it is asked for
    /// again by the next call that advances the train.
    pub fn build_failed(&mut self, candidate: CandidateId) {
        if let Some(Place::Chain(line, at)) = self.find(candidate)
            && self.lines[line].candidates[at].stage == Stage::Building
        {
            self.lines[line].candidates[at].stage = Stage::Unbuilt;
        }
    }

    /// A candidate's checks finished on `commit` (results of another commit are ignored).
    pub fn checks_finished(
        &mut self,
        candidate: CandidateId,
        commit: &str,
        results: &[CheckResult],
    ) {
        let reruns = self.settings.flaky_reruns;
        let failing = results
            .iter()
            .find(|r| !r.passed && !self.settings.known_flaky.contains(&r.name))
            .map(|r| r.name.clone());
        let Some(place) = self.find(candidate) else {
            return;
        };
        let c = match place {
            Place::Chain(line, at) => &mut self.lines[line].candidates[at],
            Place::Recheck(line) => match &mut self.lines[line].recheck {
                Some(c) => c,
                None => return,
            },
        };
        let Stage::Testing { runs } = c.stage else {
            return;
        };
        if c.commit.as_deref() != Some(commit) {
            return;
        }
        let is_recheck = matches!(place, Place::Recheck(_));
        match failing {
            None => c.stage = Stage::Passed,
            Some(_) if is_recheck && runs < reruns => {
                c.stage = Stage::Testing { runs: runs + 1 };
                self.actions.push(Action::Test {
                    candidate,
                    commit: commit.to_owned(),
                    again: true,
                });
            }
            Some(check) => c.stage = Stage::Failed { check },
        }
        self.advance();
    }

    /// The fast-forward asked for landed: the target is at `to`.
    pub fn landed(&mut self, to: &str) {
        let Some(count) = self.landing.take() else {
            return;
        };
        let landed: Vec<Candidate> = self.lines[0].candidates.drain(..count).collect();
        for c in &landed {
            self.retire(c);
        }
        self.target = to.to_owned();
        self.advance();
    }

    /// The target is at `tip`, which this queue did not put there (a push to the target, or a
    /// fast-forward refused because the target had moved): the main line is rebuilt on it.
    /// Probes go on: they only tell which intent fails.
    pub fn target_moved(&mut self, tip: &str) {
        if tip == self.target {
            return;
        }
        self.landing = None;
        self.target = tip.to_owned();
        self.cancel_from(0, 0);
        self.advance();
    }

    fn holds(&self, intent: &str) -> bool {
        self.waiting.iter().any(|q| q.id == intent)
            || self
                .lines
                .iter()
                .flat_map(Line::intents)
                .any(|q| q.id == intent)
    }

    /// Takes an intent out wherever it is, without advancing.
    fn take_out(&mut self, intent: &str) -> Dequeued {
        if !self.holds(intent) {
            return Dequeued::Absent;
        }
        if let Some(at) = self.waiting.iter().position(|q| q.id == intent) {
            self.waiting.remove(at);
            return Dequeued::Removed;
        }
        let main = &self.lines[0];
        if let Some(at) = main
            .candidates
            .iter()
            .position(|c| c.batch.iter().any(|q| q.id == intent))
        {
            if self.landing.is_some_and(|n| at < n) {
                return Dequeued::Landing;
            }
            self.cancel_from(0, at);
        } else if let Some(line) = self.lines[1..]
            .iter()
            .position(|l| l.intents().any(|q| q.id == intent))
        {
            // A probe without one of its suspects proves nothing: it ends.
            self.end_probe(line + 1);
        }
        self.waiting.retain(|q| q.id != intent);
        Dequeued::Removed
    }

    fn find(&self, candidate: CandidateId) -> Option<Place> {
        self.lines.iter().enumerate().find_map(|(line, l)| {
            if l.recheck.as_ref().is_some_and(|c| c.id == candidate) {
                return Some(Place::Recheck(line));
            }
            l.candidates
                .iter()
                .position(|c| c.id == candidate)
                .map(|at| Place::Chain(line, at))
        })
    }

    fn wait(&mut self, intent: Queued) {
        let at = self
            .waiting
            .partition_point(|q| q.order() <= intent.order());
        self.waiting.insert(at, intent);
    }

    /// Cancels a line's candidates from `at` on; their intents wait again. A probe left
    /// without candidates ends.
    fn cancel_from(&mut self, line: usize, at: usize) {
        for c in self.lines[line].candidates.split_off(at) {
            self.release(c);
        }
        if line > 0 && self.lines[line].candidates.is_empty() {
            self.end_probe(line);
        }
    }

    /// Ends a probe: what still runs is cancelled, its intents wait again.
    fn end_probe(&mut self, line: usize) {
        let probe = self.lines.remove(line);
        for c in probe.candidates.into_iter().chain(probe.recheck) {
            self.release(c);
        }
    }

    /// A candidate's intents wait again; a built (or building) one is retired.
    fn release(&mut self, c: Candidate) {
        self.retire(&c);
        for q in c.batch {
            self.wait(q);
        }
    }

    fn retire(&mut self, c: &Candidate) {
        if c.stage != Stage::Unbuilt {
            self.actions.push(Action::Retire { candidate: c.id });
        }
    }

    fn new_candidate(&mut self, batch: Vec<Queued>) -> Candidate {
        let id = self.next_id;
        self.next_id += 1;
        Candidate {
            id,
            batch,
            built_on: Vec::new(),
            base: None,
            commit: None,
            stage: Stage::Unbuilt,
        }
    }

    /// Acts on what is known: failures whose predecessors all passed, probes that know, a
    /// landing, new candidates, builds.
    fn advance(&mut self) {
        let mut line = 0;
        while line < self.lines.len() {
            if !self.resolve(line) {
                line += 1;
            }
        }
        self.land();
        self.fill();
        for line in 0..self.lines.len() {
            self.build(line);
        }
    }

    /// Acts on what a line knows. Answers whether the lines changed (the same index must be
    /// looked at again).
    fn resolve(&mut self, line: usize) -> bool {
        if line > 0 {
            match self.lines[line].recheck.as_ref().map(|c| c.stage.clone()) {
                // The failed commit passed when run again: a flake. Its intents queue again.
                Some(Stage::Passed) => {
                    self.end_probe(line);
                    return true;
                }
                Some(Stage::Failed { check }) => {
                    let recheck = self.lines[line].recheck.take();
                    if !self.lines[line].candidates.is_empty() {
                        // Its own failure, confirmed: the halves go on without the re-run.
                        if let Some(done) = &recheck {
                            self.retire(done);
                        }
                    } else {
                        // A single intent failed twice on the same commit: its own failure.
                        self.lines.remove(line);
                        if let Some(mut failed) = recheck {
                            self.retire(&failed);
                            self.eject_failed(&mut failed, check);
                        }
                    }
                    return true;
                }
                _ => {}
            }
        }
        let l = &self.lines[line];
        let Some(at) = l.candidates.iter().position(|c| c.stage != Stage::Passed) else {
            if line > 0 && !l.candidates.is_empty() {
                // Every half passed: together they are the very content that failed, so the
                // failure was a flake. The suspects queue again.
                self.end_probe(line);
                return true;
            }
            return false;
        };
        let Stage::Failed { check } = l.candidates[at].stage.clone() else {
            return false;
        };
        let round = l.round.max(1) + 1;
        let mut failed = self.lines[line].candidates.remove(at);
        // What was built on it contains it: cancelled, its intents wait again.
        for c in self.lines[line].candidates.split_off(at) {
            self.release(c);
        }
        if line > 0 {
            // The halves that passed before it are cleared, and the question is now the
            // failed half's.
            self.end_probe(line);
        }
        let recheck = if line == 0 && self.settings.flaky_reruns > 0 {
            // The re-run keeps the failed candidate's id (and so its trial ref, which CI
            // needs to run it again).
            let id = failed.id;
            let commit = failed.commit.clone().unwrap_or_default();
            self.actions.push(Action::Test {
                candidate: id,
                commit: commit.clone(),
                again: true,
            });
            let built_on = self.lines[0]
                .candidates
                .iter()
                .flat_map(|c| c.batch.iter().map(|q| q.id.clone()))
                .collect();
            Some(Candidate {
                id,
                batch: Vec::new(),
                built_on,
                base: failed.base.clone(),
                commit: Some(commit),
                stage: Stage::Testing { runs: 1 },
            })
        } else {
            self.retire(&failed);
            None
        };
        if failed.batch.len() == 1 {
            match recheck {
                Some(mut recheck) => {
                    recheck.batch = std::mem::take(&mut failed.batch);
                    self.lines.push(Line {
                        base: failed.base,
                        round,
                        candidates: Vec::new(),
                        recheck: Some(recheck),
                    });
                }
                None => self.eject_failed(&mut failed, check),
            }
            return true;
        }
        let mut first = std::mem::take(&mut failed.batch);
        let second = first.split_off(first.len().div_ceil(2));
        let first = self.new_candidate(first);
        let second = self.new_candidate(second);
        self.lines.push(Line {
            base: failed.base,
            round,
            candidates: vec![first, second],
            recheck,
        });
        true
    }

    /// Ejects the single intent of a failed candidate.
    fn eject_failed(&mut self, failed: &mut Candidate, check: String) {
        for culprit in std::mem::take(&mut failed.batch) {
            self.actions.push(Action::Eject {
                intent: culprit.id,
                reason: Ejection::Failed {
                    check: check.clone(),
                    commit: failed.commit.clone().unwrap_or_default(),
                },
            });
        }
    }

    /// Fast-forwards the target over the passed candidates at the front of the main line.
    fn land(&mut self) {
        if self.landing.is_some() {
            return;
        }
        let main = &self.lines[0].candidates;
        let passed = main.iter().take_while(|c| c.stage == Stage::Passed).count();
        if passed == 0 {
            return;
        }
        let to = main[passed - 1].commit.clone().unwrap_or_default();
        let intents = main[..passed]
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

    /// New main-line candidates from the waiting intents, up to the depth.
    fn fill(&mut self) {
        while self.lines[0].candidates.len() < self.settings.depth && !self.waiting.is_empty() {
            let mut riding: BTreeSet<String> = self.in_candidates().map(|q| q.id.clone()).collect();
            let mut batch: Vec<Queued> = Vec::new();
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
            let candidate = self.new_candidate(batch);
            self.lines[0].candidates.push(candidate);
        }
    }

    /// Builds the line's first unbuilt candidate if its base is known (each is built on the
    /// one before, once that one's commit is known).
    fn build(&mut self, line: usize) {
        let l = &self.lines[line];
        let Some(at) = l.candidates.iter().position(|c| c.stage == Stage::Unbuilt) else {
            return;
        };
        let base = match at {
            0 => Some(l.base.clone().unwrap_or_else(|| self.target.clone())),
            _ => l.candidates[at - 1].commit.clone(),
        };
        let Some(base) = base else {
            return;
        };
        let c = &mut self.lines[line].candidates[at];
        c.stage = Stage::Building;
        c.base = Some(base.clone());
        self.actions.push(Action::Build {
            candidate: c.id,
            base,
            intents: c
                .batch
                .iter()
                .map(|q| (q.id.clone(), q.head.clone()))
                .collect(),
        });
    }
}
