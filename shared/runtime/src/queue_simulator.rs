//! The queue simulator (`converge queue simulate`): how many merges per hour a repository's CI
//! allows in each mode, and whether the target ever breaks.
//!
//! It runs the tested queue's engine (`core::train`) and the local SCM's candidate builds and
//! fast-forwards (`GitScm`) on a real, throwaway git repository, under a simulated clock, with
//! a model of CI:
//! - pull requests arrive as a Poisson process (`arrivals_per_hour`), each a branch adding a
//!   file of its own;
//! - a share of them breaks the build (`fail_rate`); of those, `semantic_share` pass on their
//!   own head and break only once merged with the changes before them (two changes green
//!   apart that break the target together);
//! - a CI run lasts `ci_minutes` ± 20 % (uniform), fails when the commit holds a change that
//!   breaks the build, and otherwise fails spuriously with `flake_rate`; runs are unlimited in
//!   parallel (a hosted CI).
//!
//! `head` mode is the original's: CI runs on each pull request's head when it is pushed, and a
//! green head is merged onto the target as it is then (a failed run is re-run once, like a
//! flaky check). The `tested` modes test candidates and land exactly what was tested: serial
//! (one intent, one candidate), batched (batches, one candidate at a time) and speculative
//! (batches and `depth` candidates at once). The same seed gives the same result.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::Path;

use converge_core::pipeline::{MergeError, ScmError};
use converge_core::train::{Action, Build, CheckResult, MergeMethod, Queued, Train, TrainSettings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::local_git::GitScm;

/// The check every simulated CI run reports.
const CHECK: &str = "ci";
/// The simulated target branch.
const TARGET: &str = "main";

/// How the simulated queue lands changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimulatedMode {
    /// Each head tested alone, merged when green.
    Head,
    /// One intent per candidate, one candidate at a time.
    TestedSerial,
    /// Batches, one candidate at a time.
    TestedBatched,
    /// Batches, `depth` candidates at once.
    TestedSpeculative,
}

impl SimulatedMode {
    /// Every mode, in the order of the comparison table.
    pub const ALL: [SimulatedMode; 4] = [
        SimulatedMode::Head,
        SimulatedMode::TestedSerial,
        SimulatedMode::TestedBatched,
        SimulatedMode::TestedSpeculative,
    ];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SimulatedMode::Head => "head",
            SimulatedMode::TestedSerial => "tested-serial",
            SimulatedMode::TestedBatched => "tested-batched",
            SimulatedMode::TestedSpeculative => "tested-speculative",
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationSettings {
    /// The mode.
    pub mode: SimulatedMode,
    /// Mean length of a CI run, in minutes.
    pub ci_minutes: f64,
    /// Share of changes that break the build.
    pub fail_rate: f64,
    /// Share of the breaking changes that pass on their own head.
    pub semantic_share: f64,
    /// Chance that a run of a good commit fails anyway.
    pub flake_rate: f64,
    /// Mean arrivals of pull requests per hour.
    pub arrivals_per_hour: f64,
    /// Simulated hours (arrivals and merges counted within them).
    pub hours: f64,
    /// Most intents per candidate (batched and speculative modes).
    pub batch_size: usize,
    /// Candidates tested at once (speculative mode).
    pub depth: usize,
    /// Re-runs of a failed run before it counts.
    pub flaky_reruns: u32,
    /// The random seed.
    pub seed: u64,
}

impl SimulationSettings {
    /// The reference settings: 10-minute CI, 5 % failing changes, 2 % flaky runs, 60
    /// arrivals per hour, 8 hours.
    pub fn reference(mode: SimulatedMode) -> SimulationSettings {
        SimulationSettings {
            mode,
            ci_minutes: 10.0,
            fail_rate: 0.05,
            semantic_share: 0.2,
            flake_rate: 0.02,
            arrivals_per_hour: 60.0,
            hours: 8.0,
            batch_size: 8,
            depth: 4,
            flaky_reruns: 1,
            seed: 1,
        }
    }

    fn validate(&self) -> Result<(), SimulationError> {
        let share = |name: &str, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(SimulationError::Invalid(format!(
                    "{name} must be between 0 and 1 (got {value})"
                )))
            }
        };
        share("--fail-rate", self.fail_rate)?;
        share("--semantic-share", self.semantic_share)?;
        share("--flake-rate", self.flake_rate)?;
        let positive = |name: &str, value: f64, most: f64| {
            if value > 0.0 && value <= most {
                Ok(())
            } else {
                Err(SimulationError::Invalid(format!(
                    "{name} must be above 0 and at most {most} (got {value})"
                )))
            }
        };
        positive("--ci-minutes", self.ci_minutes, 24.0 * 60.0)?;
        positive("--arrivals-per-hour", self.arrivals_per_hour, 1_000.0)?;
        positive("--hours", self.hours, 24.0 * 7.0)?;
        if !(1..=64).contains(&self.batch_size) {
            return Err(SimulationError::Invalid(format!(
                "--batch-size must be between 1 and 64 (got {})",
                self.batch_size
            )));
        }
        if !(1..=16).contains(&self.depth) {
            return Err(SimulationError::Invalid(format!(
                "--depth must be between 1 and 16 (got {})",
                self.depth
            )));
        }
        if self.arrivals_per_hour * self.hours > 20_000.0 {
            return Err(SimulationError::Invalid(format!(
                "{} arrivals expected; at most 20,000 are simulated (lower --hours or \
                 --arrivals-per-hour)",
                self.arrivals_per_hour * self.hours
            )));
        }
        Ok(())
    }

    fn train(&self) -> TrainSettings {
        let (batch_size, depth) = match self.mode {
            SimulatedMode::Head | SimulatedMode::TestedSerial => (1, 1),
            SimulatedMode::TestedBatched => (self.batch_size, 1),
            SimulatedMode::TestedSpeculative => (self.batch_size, self.depth),
        };
        TrainSettings {
            batch_size,
            depth,
            flaky_reruns: self.flaky_reruns,
            known_flaky: BTreeSet::new(),
        }
    }
}

/// What a simulation found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulationReport {
    /// The mode.
    pub mode: SimulatedMode,
    /// Pull requests that arrived.
    pub arrivals: usize,
    /// Intents merged within the simulated hours.
    pub merged: usize,
    /// Merged per simulated hour.
    pub merges_per_hour: f64,
    /// Median time from queued to merged, in minutes.
    pub p50_minutes: f64,
    /// 90th percentile of the same.
    pub p90_minutes: f64,
    /// CI runs started (cancelled ones included).
    pub ci_runs: u64,
    /// Whether the target ever held a change that breaks the build.
    pub target_broken: bool,
    /// Changes that break the build and merged.
    pub broken_merged: usize,
    /// Intents that left the queue (failed or conflicting).
    pub ejected: usize,
    /// Intents still queued when the hours ended.
    pub still_queued: usize,
    /// Candidates and merges written in the repository.
    pub builds: u64,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The throwaway repository could not be made or used.
    #[error("git: {0}")]
    Git(String),
}

impl From<ScmError> for SimulationError {
    fn from(e: ScmError) -> SimulationError {
        SimulationError::Git(e.to_string())
    }
}

/// One simulated pull request.
#[derive(Debug, Clone)]
struct Change {
    id: String,
    head: String,
    arrived_ms: u64,
    breaks: bool,
    /// Breaks only once merged with other changes.
    semantic: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    Arrival(usize),
    /// A run on a candidate's commit finished.
    CandidateRun {
        candidate: u64,
        commit: String,
        passed: bool,
    },
    /// A run on a pull request's head finished (head mode).
    HeadRun {
        change: usize,
        run: u32,
        passed: bool,
    },
}

/// The simulation's state.
struct Simulator<'a> {
    settings: &'a SimulationSettings,
    git: GitScm,
    changes: Vec<Change>,
    index: BTreeMap<String, usize>,
    /// What each commit holds (change indices).
    contents: BTreeMap<String, BTreeSet<usize>>,
    target: String,
    clock_ms: u64,
    end_ms: u64,
    agenda: BinaryHeap<Reverse<(u64, u64, Happening)>>,
    sequence: u64,
    ci: StdRng,
    report: SimulationReport,
    waits: Vec<f64>,
    settled: BTreeSet<usize>,
}

/// Runs a simulation in a throwaway repository made under `scratch`.
pub async fn simulate(
    settings: &SimulationSettings,
    scratch: &Path,
) -> Result<SimulationReport, SimulationError> {
    settings.validate()?;
    let mut arrivals = StdRng::seed_from_u64(settings.seed);
    let end_ms = (settings.hours * 3_600_000.0) as u64;
    let mut times = Vec::new();
    let mut at = 0.0f64;
    loop {
        // Exponential gaps: a Poisson process of the given rate.
        let u: f64 = arrivals.random();
        at += -(1.0 - u).ln() / settings.arrivals_per_hour * 3_600_000.0;
        if at as u64 >= end_ms {
            break;
        }
        times.push(at as u64);
    }
    let (root, heads) = seed_repository(scratch, times.len()).await?;
    let changes: Vec<Change> = times
        .iter()
        .zip(heads)
        .enumerate()
        .map(|(i, (&arrived_ms, head))| {
            let breaks = arrivals.random::<f64>() < settings.fail_rate;
            let semantic = breaks && arrivals.random::<f64>() < settings.semantic_share;
            Change {
                id: format!("pr-{i:05}"),
                head,
                arrived_ms,
                breaks,
                semantic,
            }
        })
        .collect();
    let mut simulator = Simulator {
        settings,
        git: GitScm::new(scratch),
        index: changes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect(),
        contents: BTreeMap::from([(root.clone(), BTreeSet::new())]),
        target: root,
        clock_ms: 0,
        end_ms,
        agenda: BinaryHeap::new(),
        sequence: 0,
        ci: StdRng::seed_from_u64(settings.seed ^ 0x9e37_79b9_7f4a_7c15),
        report: SimulationReport {
            mode: settings.mode,
            arrivals: changes.len(),
            merged: 0,
            merges_per_hour: 0.0,
            p50_minutes: 0.0,
            p90_minutes: 0.0,
            ci_runs: 0,
            target_broken: false,
            broken_merged: 0,
            ejected: 0,
            still_queued: 0,
            builds: 0,
        },
        changes,
        waits: Vec::new(),
        settled: BTreeSet::new(),
    };
    for i in 0..simulator.changes.len() {
        let at = simulator.changes[i].arrived_ms;
        simulator.schedule(at, Happening::Arrival(i));
    }
    if settings.mode == SimulatedMode::Head {
        simulator.run_head().await?;
    } else {
        simulator.run_tested().await?;
    }
    Ok(simulator.finish())
}

/// A bare repository with a root commit on `main` and one branch per change, each adding a
/// file of its own to the root, written by one `git fast-import`.
async fn seed_repository(
    scratch: &Path,
    changes: usize,
) -> Result<(String, Vec<String>), SimulationError> {
    use tokio::io::AsyncWriteExt;
    let git = |args: &[&str]| {
        let mut command = tokio::process::Command::new("git");
        command.arg("-C").arg(scratch).args(args);
        command
    };
    let init = tokio::process::Command::new("git")
        .args(["init", "--quiet", "--bare", "--initial-branch", TARGET])
        .arg(scratch)
        .status()
        .await
        .map_err(|e| SimulationError::Git(format!("cannot run git: {e}")))?;
    if !init.success() {
        return Err(SimulationError::Git(format!(
            "git init {} failed",
            scratch.display()
        )));
    }
    let mut stream = String::new();
    let commit = |stream: &mut String,
                  branch: &str,
                  mark: usize,
                  from: Option<usize>,
                  path: &str| {
        let message = format!("{branch}\n");
        let body = format!("{path}\n");
        stream.push_str(&format!(
            "commit refs/heads/{branch}\nmark :{mark}\ncommitter Simulator <sim@localhost> 0 +0000\ndata {}\n{message}",
            message.len()
        ));
        if let Some(from) = from {
            stream.push_str(&format!("from :{from}\n"));
        }
        stream.push_str(&format!(
            "M 644 inline {path}\ndata {}\n{body}\n",
            body.len()
        ));
    };
    commit(&mut stream, TARGET, 1, None, "README");
    for i in 0..changes {
        commit(
            &mut stream,
            &format!("change/{i:05}"),
            i + 2,
            Some(1),
            &format!("changes/{i:05}.txt"),
        );
    }
    let mut child = git(&["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| SimulationError::Git(format!("cannot run git: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(stream.as_bytes())
            .await
            .map_err(|e| SimulationError::Git(format!("cannot write to git fast-import: {e}")))?;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| SimulationError::Git(format!("git fast-import: {e}")))?;
    if !status.success() {
        return Err(SimulationError::Git("git fast-import failed".into()));
    }
    let listing = git(&[
        "for-each-ref",
        "--format=%(refname) %(objectname)",
        "refs/heads/",
    ])
    .output()
    .await
    .map_err(|e| SimulationError::Git(format!("cannot run git: {e}")))?;
    let text = String::from_utf8_lossy(&listing.stdout);
    let refs: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .collect();
    let commit_of = |name: &str| {
        refs.get(name)
            .map(|id| (*id).to_owned())
            .ok_or_else(|| SimulationError::Git(format!("{name} was not written")))
    };
    let root = commit_of(&format!("refs/heads/{TARGET}"))?;
    let heads = (0..changes)
        .map(|i| commit_of(&format!("refs/heads/change/{i:05}")))
        .collect::<Result<_, _>>()?;
    Ok((root, heads))
}

impl Simulator<'_> {
    fn schedule(&mut self, at_ms: u64, happening: Happening) {
        self.sequence += 1;
        self.agenda.push(Reverse((at_ms, self.sequence, happening)));
    }

    /// The next happening within the simulated hours.
    fn next(&mut self) -> Option<Happening> {
        let Reverse((at, _, happening)) = self.agenda.pop()?;
        if at > self.end_ms {
            return None;
        }
        self.clock_ms = at;
        Some(happening)
    }

    /// A CI run's length: the mean ± 20 %, uniformly.
    fn run_length_ms(&mut self) -> u64 {
        let spread: f64 = self.ci.random();
        (self.settings.ci_minutes * 60_000.0 * (0.8 + 0.4 * spread)) as u64
    }

    fn flakes(&mut self) -> bool {
        self.ci.random::<f64>() < self.settings.flake_rate
    }

    fn breaks(&self, commit: &str) -> bool {
        self.contents
            .get(commit)
            .is_some_and(|held| held.iter().any(|&i| self.changes[i].breaks))
    }

    /// The target moved to `commit`, landing `landed`.
    fn landed(&mut self, commit: &str, landed: &[usize]) {
        self.target = commit.to_owned();
        if self.breaks(commit) {
            self.report.target_broken = true;
        }
        for &i in landed {
            self.report.merged += 1;
            self.settled.insert(i);
            if self.changes[i].breaks {
                self.report.broken_merged += 1;
            }
            self.waits
                .push((self.clock_ms - self.changes[i].arrived_ms) as f64 / 60_000.0);
        }
    }

    async fn build(
        &mut self,
        base: &str,
        intents: &[(String, String)],
        trial_ref: &str,
    ) -> Result<Build, SimulationError> {
        self.report.builds += 1;
        let build = self
            .git
            .build_candidate(base, intents, MergeMethod::Merge, trial_ref)
            .await?;
        if let Build::Built(commit) = &build {
            let mut held = self.contents.get(base).cloned().unwrap_or_default();
            held.extend(
                intents
                    .iter()
                    .filter_map(|(id, _)| self.index.get(id).copied()),
            );
            self.contents.insert(commit.clone(), held);
        }
        Ok(build)
    }

    async fn fast_forward(
        &mut self,
        from: &str,
        to: &str,
    ) -> Result<Result<(), String>, SimulationError> {
        match self.git.fast_forward(TARGET, from, to).await {
            Ok(()) => Ok(Ok(())),
            Err(MergeError::TargetMoved { current, .. }) => Ok(Err(current)),
            Err(e) => Err(SimulationError::Git(e.to_string())),
        }
    }

    /// Head mode: CI on each head at its push; a green head merges onto the target as it is.
    async fn run_head(&mut self) -> Result<(), SimulationError> {
        while let Some(happening) = self.next() {
            match happening {
                Happening::Arrival(i) => self.run_on_head(i, 1),
                Happening::HeadRun {
                    change,
                    run,
                    passed,
                } => {
                    if !passed {
                        if run <= self.settings.flaky_reruns {
                            self.run_on_head(change, run + 1);
                        } else {
                            self.report.ejected += 1;
                            self.settled.insert(change);
                        }
                        continue;
                    }
                    let base = self.target.clone();
                    let merge = [(
                        self.changes[change].id.clone(),
                        self.changes[change].head.clone(),
                    )];
                    let Build::Built(commit) =
                        self.build(&base, &merge, "refs/converge/merge").await?
                    else {
                        self.report.ejected += 1;
                        self.settled.insert(change);
                        continue;
                    };
                    if self.fast_forward(&base, &commit).await?.is_ok() {
                        self.landed(&commit, &[change]);
                    }
                }
                Happening::CandidateRun { .. } => {}
            }
        }
        Ok(())
    }

    fn run_on_head(&mut self, change: usize, run: u32) {
        self.report.ci_runs += 1;
        let length = self.run_length_ms();
        let c = &self.changes[change];
        // A semantic break passes on its own head: it breaks only merged with others.
        let broken = c.breaks && !c.semantic;
        let passed = !broken && !self.flakes();
        let at = self.clock_ms + length;
        self.schedule(
            at,
            Happening::HeadRun {
                change,
                run,
                passed,
            },
        );
    }

    /// Tested modes: the train decides, the repository builds and fast-forwards, CI answers.
    async fn run_tested(&mut self) -> Result<(), SimulationError> {
        let mut train = Train::new(self.settings.train(), self.target.clone());
        while let Some(happening) = self.next() {
            match happening {
                Happening::Arrival(i) => {
                    let c = &self.changes[i];
                    train.enqueue(Queued {
                        id: c.id.clone(),
                        head: c.head.clone(),
                        priority: 0,
                        arrival: i as u64,
                        conflicts_with: BTreeSet::new(),
                    });
                }
                Happening::CandidateRun {
                    candidate,
                    commit,
                    passed,
                } => {
                    let results = [CheckResult {
                        name: CHECK.to_owned(),
                        passed,
                    }];
                    train.checks_finished(candidate, &commit, &results);
                }
                Happening::HeadRun { .. } => {}
            }
            self.carry_out(&mut train).await?;
        }
        Ok(())
    }

    async fn carry_out(&mut self, train: &mut Train) -> Result<(), SimulationError> {
        loop {
            let actions = train.take_actions();
            if actions.is_empty() {
                return Ok(());
            }
            for action in actions {
                match action {
                    Action::Build {
                        candidate,
                        base,
                        intents,
                    } => {
                        let trial = format!("refs/heads/converge/trial/{candidate}");
                        let build = self.build(&base, &intents, &trial).await?;
                        train.built(candidate, build);
                    }
                    Action::Test {
                        candidate, commit, ..
                    } => {
                        self.report.ci_runs += 1;
                        let length = self.run_length_ms();
                        let passed = !self.breaks(&commit) && !self.flakes();
                        let at = self.clock_ms + length;
                        self.schedule(
                            at,
                            Happening::CandidateRun {
                                candidate,
                                commit,
                                passed,
                            },
                        );
                    }
                    Action::Retire { candidate } => {
                        self.git
                            .drop_trial(&format!("refs/heads/converge/trial/{candidate}"))
                            .await?;
                    }
                    Action::FastForward { from, to, intents } => {
                        match self.fast_forward(&from, &to).await? {
                            Ok(()) => {
                                let landed: Vec<usize> = intents
                                    .iter()
                                    .filter_map(|id| self.index.get(id).copied())
                                    .collect();
                                self.landed(&to, &landed);
                                train.landed(&to);
                            }
                            Err(current) => train.target_moved(&current),
                        }
                    }
                    Action::Eject { intent, .. } => {
                        self.report.ejected += 1;
                        if let Some(&i) = self.index.get(&intent) {
                            self.settled.insert(i);
                        }
                    }
                }
            }
        }
    }

    fn finish(mut self) -> SimulationReport {
        self.waits.sort_by(f64::total_cmp);
        let percentile = |q: f64| {
            converge_core::analytics::nearest_rank(&self.waits, q)
                .map_or(0.0, |minutes| (minutes * 10.0).round() / 10.0)
        };
        self.report.p50_minutes = percentile(0.5);
        self.report.p90_minutes = percentile(0.9);
        self.report.merges_per_hour =
            (self.report.merged as f64 / self.settings.hours * 10.0).round() / 10.0;
        self.report.still_queued = self.report.arrivals - self.settled.len();
        self.report
    }
}
