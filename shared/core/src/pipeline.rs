//! The validation pipeline: may this intent advance, on the evidence available now?
//!
//! 1. **Merge simulation** of the source onto the current target tip (the [`Scm`] port).
//!    Unmergeable → blocked.
//! 2. **Required checks** of the intent's profile, read for the simulated head (the [`Checks`]
//!    port). A failed check → blocked; a check not finished yet → blocked as *pending*, which
//!    the queue does not count as a failed attempt.
//! 3. **Risk evaluation** (never blocks), then auto-classification. When the level goes up,
//!    the checks the new profile adds are read before any gate runs, so a reclassified intent
//!    is judged on checks that exist (the reference blocked it for checks nobody ran).
//! 4. **Policy gates**, with the pass-through coherence score when no harness is configured.
//! 5. **Risk gate** (shadow or enforce, per configuration).
//!
//! The function performs no I/O itself; it awaits the ports and returns a [`Decision`] that
//! carries the events to append. Invariant 1 lives here: the outcome is `Validated` only if the
//! merge simulation was clean and every required check of the final profile passed.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::event::{Event, EventFactory, EventType};
use crate::intent::{Intent, RiskLevel};
use crate::policy::{
    PolicyConfig, PolicyEvaluation, PolicyInput, RiskGateResult, Verdict, evaluate_policy,
    evaluate_risk_gate,
};
use crate::risk::{ChangeSubject, CouplingPair, MAX_CHANGED_FILES, RiskEval, evaluate_risk};
use crate::simulation::Simulation;

/// A merge simulation, pinned to the commits it was computed for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SimulatedMerge {
    /// What the merge would do.
    pub simulation: Simulation,
    /// Commit of the source that was simulated.
    pub head_sha: String,
    /// Commit of the target it was simulated against.
    pub target_sha: String,
}

/// Why the source control port could not answer. Not a verdict on the intent: the caller
/// retries later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScmError {
    /// A ref does not exist.
    #[error("unknown ref '{0}'")]
    UnknownRef(String),
    /// The repository could not be reached or answered nonsense.
    #[error("source control unavailable: {0}")]
    Unavailable(String),
}

/// The commits an intent's refs point at now.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tips {
    /// Commit of the source ref.
    pub head_sha: String,
    /// Commit of the target ref.
    pub target_sha: String,
}

/// Source control: merge simulation and change history.
pub trait Scm {
    /// Where the intent's source and target point now: cheap, so the queue can tell whether
    /// anything moved since the last decision before it runs a simulation.
    fn tips(&self, intent: &Intent) -> impl Future<Output = Result<Tips, ScmError>> + Send;

    /// The tips of several intents read together, one answer per intent in their order: what
    /// a queue round reads for a page of its intents, most of which have nothing to do. `None`
    /// when the SCM cannot do better than [`Scm::tips`] per intent (the round then reads each
    /// intent's when it comes to it).
    fn tips_of(
        &self,
        intents: &[Intent],
    ) -> impl Future<Output = Option<Vec<Result<Tips, ScmError>>>> + Send {
        let _ = intents;
        std::future::ready(None)
    }

    /// Simulates merging the intent's source into the current tip of its target; the changed
    /// files are counted from the merge base.
    fn simulate(
        &self,
        intent: &Intent,
    ) -> impl Future<Output = Result<SimulatedMerge, ScmError>> + Send;

    /// Pairs of files that history shows changing together, for the files of a simulation.
    fn co_changes(
        &self,
        intent: &Intent,
        files: &[String],
    ) -> impl Future<Output = Result<Vec<CouplingPair>, ScmError>> + Send;

    /// The files two heads of `sample`'s repository conflict on when merged together (from
    /// their merge base), to keep them out of one tested candidate; empty when they merge
    /// cleanly. Source control that cannot tell answers empty (no prediction).
    fn conflicts_between(
        &self,
        sample: &Intent,
        first: &str,
        second: &str,
    ) -> impl Future<Output = Result<Vec<String>, ScmError>> + Send {
        let _ = (sample, first, second);
        async { Ok(Vec::new()) }
    }

    /// The text of the file at `path` in `commit` of `sample`'s repository (`None` when there
    /// is none): the repository's own configuration (`crate::repo_config`). Source control
    /// that cannot read files answers `None`.
    fn read_file(
        &self,
        sample: &Intent,
        commit: &str,
        path: &str,
    ) -> impl Future<Output = Result<Option<String>, ScmError>> + Send {
        let _ = (sample, commit, path);
        async { Ok(None) }
    }
}

/// Why a merge of validated work did not land. Each kind is handled differently by the queue:
/// a moved ref means the validation no longer describes what would merge (revalidate, no retry
/// spent); the others count as a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The target is no longer at the validated commit.
    #[error("target moved: validated against {validated}, now at {current}")]
    TargetMoved {
        /// The commit the validation was made against.
        validated: String,
        /// Where the target is now.
        current: String,
    },
    /// The source got a new head after validation: the validated head is not merged.
    #[error("source moved: validated head {validated}, now at {current}")]
    HeadMoved {
        /// The validated head.
        validated: String,
        /// The new head.
        current: String,
    },
    /// The merge no longer applies cleanly.
    #[error("merge conflicts: {}", .0.join(", "))]
    Conflict(Vec<String>),
    /// The target refuses updates (branch protection, or checked out in a work tree).
    #[error("target is protected: {0}")]
    Protected(String),
    /// Converge lacks the permission to write the target.
    #[error("permission denied: {0}")]
    Forbidden(String),
    /// Source control could not be reached; nothing was merged.
    #[error("source control unavailable: {0}")]
    Unavailable(String),
}

impl MergeError {
    /// Whether the environment failed rather than the change: the target refuses Converge's
    /// update (checked out in a work tree, branch protection), Converge lacks a permission, or
    /// source control cannot be reached. Such failures pause the queue key and spend no retry.
    pub fn is_environmental(&self) -> bool {
        matches!(
            self,
            MergeError::Protected(_) | MergeError::Forbidden(_) | MergeError::Unavailable(_)
        )
    }

    /// Whether the failure means the validation is stale rather than the change at fault.
    pub fn needs_revalidation(&self) -> bool {
        matches!(
            self,
            MergeError::TargetMoved { .. } | MergeError::HeadMoved { .. }
        )
    }
}

/// Proof, at the moment of a merge, that the caller holds the lease of the intent's queue
/// key: the fencing token of that holding. A merge cannot be called without one.
///
/// Only the store's lease code issues permits (`Store::merge_permit`, after checking that the
/// lease is still held); Rust's privacy is per crate, so [`MergePermit::issue`] is public, and
/// `scripts/check-architecture.sh` fails CI if any other crate calls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePermit {
    key: crate::queue::QueueKey,
    fencing_token: i64,
}

impl MergePermit {
    /// A permit for `key` under `fencing_token` (the store's lease code only).
    pub fn issue(key: crate::queue::QueueKey, fencing_token: i64) -> MergePermit {
        MergePermit { key, fencing_token }
    }

    /// The queue key whose lease the permit proves.
    pub fn key(&self) -> &crate::queue::QueueKey {
        &self.key
    }

    /// The fencing token of the holding.
    pub fn fencing_token(&self) -> i64 {
        self.fencing_token
    }
}

/// Lands validated work: the merge of exactly the validated head onto exactly the validated
/// target commit, moving the target ref only if it still points at that commit.
pub trait Merger {
    /// Whether `head_sha` is already part of the intent's target (merged by an earlier attempt
    /// whose record was lost, or by hand): such an intent is recorded MERGED, never merged
    /// again.
    fn landed(
        &self,
        intent: &Intent,
        head_sha: &str,
    ) -> impl Future<Output = Result<bool, MergeError>> + Send;

    /// Merges and returns the new target commit; `permit` proves the caller holds the lease
    /// of the intent's queue key.
    fn merge(
        &self,
        intent: &Intent,
        validated: &SimulatedMerge,
        permit: &MergePermit,
    ) -> impl Future<Output = Result<String, MergeError>> + Send;

    /// Tested merges (`crate::train`): where the target branch of `sample`'s queue points.
    /// Source control without tested merges answers `Unavailable`, which pauses the queue
    /// with the reason.
    fn target_tip(&self, sample: &Intent) -> impl Future<Output = Result<String, ScmError>> + Send {
        let _ = sample;
        async { Err(ScmError::Unavailable(NO_TRAINS.to_owned())) }
    }

    /// Writes a candidate: `intents` (`(id, head)`) onto `base` with `method`, pointed at by
    /// `trial_ref` (see `crate::train::Action::Build`).
    fn build_candidate(
        &self,
        sample: &Intent,
        base: &str,
        intents: &[(String, String)],
        method: crate::train::MergeMethod,
        trial_ref: &str,
    ) -> impl Future<Output = Result<crate::train::Build, ScmError>> + Send {
        let _ = (sample, base, intents, method, trial_ref);
        async { Err(ScmError::Unavailable(NO_TRAINS.to_owned())) }
    }

    /// Moves the target of `sample`'s queue from `from` to the tested `to` (a fast-forward,
    /// refused with `TargetMoved` if the target is no longer at `from`).
    fn fast_forward(
        &self,
        sample: &Intent,
        from: &str,
        to: &str,
        permit: &MergePermit,
    ) -> impl Future<Output = Result<(), MergeError>> + Send {
        let _ = (sample, from, to, permit);
        async { Err(MergeError::Unavailable(NO_TRAINS.to_owned())) }
    }

    /// Deletes a candidate's trial ref.
    fn drop_trial(
        &self,
        sample: &Intent,
        trial_ref: &str,
    ) -> impl Future<Output = Result<(), ScmError>> + Send {
        let _ = (sample, trial_ref);
        async { Err(ScmError::Unavailable(NO_TRAINS.to_owned())) }
    }
}

/// Why a queue in tested mode waits on source control that cannot build candidates.
pub const NO_TRAINS: &str = "tested merges are not available for this repository's source \
    control yet (set its merge mode to head)";

/// The state of one required check on a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// Finished successfully.
    Passed,
    /// Finished unsuccessfully.
    Failed,
    /// Queued or running.
    Pending,
    /// Never reported for this commit.
    Missing,
}

/// One required check's state, with whatever detail the reporter gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// Check name as the policy profile spells it (`lint`, `unit_tests`).
    pub name: String,
    /// Its state.
    pub state: CheckState,
    /// Short detail (a URL, a summary); may be empty.
    pub details: String,
}

/// Why the checks port could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checks unavailable: {0}")]
pub struct ChecksError(pub String);

/// Outcomes of required checks, as reported by CI for a commit.
pub trait Checks {
    /// The state of each named check on `head_sha`, one outcome per name, in order.
    fn outcomes(
        &self,
        intent: &Intent,
        head_sha: &str,
        required: &[String],
    ) -> impl Future<Output = Result<Vec<CheckOutcome>, ChecksError>> + Send;

    /// Asks CI to run the checks of `commit` again (a tested candidate's re-run). `Ok(true)`:
    /// asked; results are read from a later round, once CI had a chance to start. `Ok(false)`:
    /// nothing to ask — reading again is the re-run (checks run as commands), or nobody can be
    /// asked (results CI reported stand).
    fn rerun(
        &self,
        intent: &Intent,
        commit: &str,
    ) -> impl Future<Output = Result<bool, ChecksError>> + Send {
        let _ = (intent, commit);
        async { Ok(false) }
    }

    /// Whether a commit's outcomes are the same whichever intent of `sample`'s repository asks
    /// (the code host's checks of the commit, commands run on it), so one answer serves every
    /// intent a tested candidate holds. `false` (the default) where results are kept per
    /// intent, as results reported to Converge for an intent are.
    fn answers_per_commit(&self, sample: &Intent) -> bool {
        let _ = sample;
        false
    }
}

/// The current time.
pub trait Clock {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// Fresh identifiers.
pub trait IdSource {
    /// A new unique id (12 lower-case hex characters in production).
    fn new_id(&self) -> String;
}

/// The ports the pipeline needs, borrowed for one run.
pub struct Ports<'a, S, C, K, I> {
    /// Source control.
    pub scm: &'a S,
    /// Check outcomes.
    pub checks: &'a C,
    /// Time.
    pub clock: &'a K,
    /// Identifiers.
    pub ids: &'a I,
}

/// Options of one validation run.
#[derive(Debug, Clone, Copy)]
pub struct ValidationOptions {
    /// Move the risk level when the risk score classifies differently (on by default).
    pub auto_classify: bool,
    /// Treat every required check as passed without asking (operator override, recorded in the
    /// decision's evidence).
    pub skip_checks: bool,
}

impl Default for ValidationOptions {
    fn default() -> Self {
        ValidationOptions {
            auto_classify: true,
            skip_checks: false,
        }
    }
}

/// Why an intent was blocked; the queue treats the kinds differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// The merge does not apply cleanly.
    Conflict,
    /// A required check failed.
    ChecksFailed,
    /// A required check has not finished (or not started) on this commit.
    ChecksPending,
    /// A policy gate failed.
    Policy,
    /// The risk gate is enforced and a score is over its limit.
    RiskGate,
    /// The source or target ref does not exist (branch deleted, typo).
    MissingRef,
    /// The change touches more files than the risk engine evaluates.
    TooLarge,
}

impl BlockKind {
    /// Whether the block counts toward the retry bound. Waiting for CI is not a failure.
    pub fn counts_as_failed_attempt(self) -> bool {
        !matches!(self, BlockKind::ChecksPending)
    }
}

/// Validated, or blocked with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Outcome {
    /// Every step passed.
    Validated,
    /// A step blocked.
    Blocked {
        /// Which kind of block.
        kind: BlockKind,
        /// The reason, in the reference's words (`Merge conflicts: a, b`).
        reason: String,
    },
}

/// The result of one validation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The intent.
    pub intent_id: String,
    /// Trace id shared by every event of the run.
    pub trace_id: String,
    /// Validated or blocked.
    pub outcome: Outcome,
    /// The level the intent was judged at (after auto-classification).
    pub risk_level: RiskLevel,
    /// The simulation, pinned to its commits.
    pub merge: SimulatedMerge,
    /// Check outcomes read, in order (declared level's first, then those added by a
    /// reclassification).
    pub checks: Vec<CheckOutcome>,
    /// Risk evaluation, if the run got that far.
    pub risk: Option<RiskEval>,
    /// Policy evaluation, if the run got that far.
    pub policy: Option<PolicyEvaluation>,
    /// Risk gate, if the run got that far.
    pub risk_gate: Option<RiskGateResult>,
    /// Events to append, in order, all with `trace_id`.
    pub events: Vec<Event>,
}

impl Decision {
    /// Whether the intent may advance.
    pub fn is_validated(&self) -> bool {
        self.outcome == Outcome::Validated
    }
}

/// Why a run could not reach a decision. Nothing is recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// The intent is MERGED or REJECTED: there is nothing left to validate.
    #[error("intent {intent_id} is {status}: terminal intents are not validated")]
    Terminal {
        /// The intent.
        intent_id: String,
        /// Its terminal status.
        status: crate::intent::Status,
    },
    /// Source control failed.
    #[error(transparent)]
    Scm(#[from] ScmError),
    /// The checks port failed.
    #[error(transparent)]
    Checks(#[from] ChecksError),
}

impl PipelineError {
    /// Whether the environment failed (source control or the checks could not be reached)
    /// rather than anything about the intent: its queue key is paused, no retry is spent.
    pub fn is_environmental(&self) -> bool {
        matches!(
            self,
            PipelineError::Scm(ScmError::Unavailable(_)) | PipelineError::Checks(_)
        )
    }
}

/// Builds the events of one run about one intent, all with the run's trace id.
struct Recorder<'a> {
    factory: EventFactory<'a>,
    intent: &'a Intent,
    events: Vec<Event>,
}

impl Recorder<'_> {
    fn trace_id(&self) -> &str {
        self.factory.trace_id()
    }

    fn record(&mut self, event_type: EventType, payload: Value, evidence: Value) {
        let event = self.factory.event(
            event_type,
            Some(&self.intent.id),
            self.intent.tenant_id.as_deref(),
            payload,
            evidence,
        );
        self.events.push(event);
    }
}

/// Reads the outcomes of `names` (or assumes them passed when skipping), records one
/// `check.completed` per check, and returns the block they cause, if any.
async fn read_checks<C: Checks>(
    checks: &C,
    names: &[String],
    head_sha: &str,
    skip: bool,
    recorder: &mut Recorder<'_>,
    read: &mut Vec<CheckOutcome>,
) -> Result<Option<(BlockKind, String)>, ChecksError> {
    if names.is_empty() {
        return Ok(None);
    }
    let outcomes = if skip {
        names
            .iter()
            .map(|n| CheckOutcome {
                name: n.clone(),
                state: CheckState::Passed,
                details: "skipped by operator".to_owned(),
            })
            .collect()
    } else {
        let mut outcomes = checks.outcomes(recorder.intent, head_sha, names).await?;
        // A reporter that forgets a check must not make it pass: fill the gaps as missing.
        for name in names {
            if !outcomes.iter().any(|o| &o.name == name) {
                outcomes.push(CheckOutcome {
                    name: name.clone(),
                    state: CheckState::Missing,
                    details: String::new(),
                });
            }
        }
        outcomes.retain(|o| names.contains(&o.name));
        outcomes
    };
    for outcome in &outcomes {
        let passed = outcome.state == CheckState::Passed;
        recorder.record(
            EventType::CheckCompleted,
            json!({"check_type": outcome.name, "passed": passed, "state": outcome.state, "details": outcome.details}),
            json!({"check_type": outcome.name, "passed": passed}),
        );
    }
    read.extend(outcomes.iter().cloned());
    let names_in = |state: CheckState| -> Vec<&str> {
        outcomes
            .iter()
            .filter(|o| o.state == state)
            .map(|o| o.name.as_str())
            .collect()
    };
    let failed = names_in(CheckState::Failed);
    if !failed.is_empty() {
        return Ok(Some((
            BlockKind::ChecksFailed,
            format!("Checks failed: {}", crate::policy::py_list(&failed)),
        )));
    }
    let mut waiting = names_in(CheckState::Pending);
    waiting.extend(names_in(CheckState::Missing));
    if !waiting.is_empty() {
        return Ok(Some((
            BlockKind::ChecksPending,
            format!("Checks pending: {}", crate::policy::py_list(&waiting)),
        )));
    }
    Ok(None)
}

/// Validates an intent against the current state of its target.
pub async fn validate<S, C, K, I>(
    intent: &Intent,
    ports: Ports<'_, S, C, K, I>,
    config: &PolicyConfig,
    options: ValidationOptions,
) -> Result<Decision, PipelineError>
where
    S: Scm,
    C: Checks,
    K: Clock + Sync,
    I: IdSource + Sync,
{
    let mut recorder = Recorder {
        factory: EventFactory::new(
            ports.clock,
            ports.ids,
            format!("trace-{}", ports.ids.new_id()),
        ),
        intent,
        events: Vec::new(),
    };
    if intent.status.is_terminal() {
        return Err(PipelineError::Terminal {
            intent_id: intent.id.clone(),
            status: intent.status,
        });
    }
    let origin = Some(intent.origin_type.as_str());

    // Step 1: merge simulation. A missing ref is a verdict on the intent (it will not heal by
    // waiting); an unreachable repository is not.
    let merge = match ports.scm.simulate(intent).await {
        Ok(merge) => merge,
        Err(ScmError::UnknownRef(name)) => {
            let decision = fresh_decision(intent, recorder.trace_id(), SimulatedMerge::default());
            return Ok(blocked(
                decision,
                recorder,
                BlockKind::MissingRef,
                format!("Unknown ref '{name}'"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let sim = &merge.simulation;
    recorder.record(
        EventType::SimulationCompleted,
        json!({
            "mergeable": sim.mergeable, "conflicts": sim.conflicts, "files_changed": sim.files_changed,
            "source": intent.source, "target": intent.target,
            "head_sha": merge.head_sha, "target_sha": merge.target_sha,
        }),
        json!({"source": intent.source, "target": intent.target, "conflict_count": sim.conflicts.len()}),
    );
    let mut decision = fresh_decision(intent, recorder.trace_id(), merge.clone());
    if !sim.mergeable {
        return Ok(blocked(
            decision,
            recorder,
            BlockKind::Conflict,
            sim.conflict_reason(),
        ));
    }
    if sim.files_changed.len() > MAX_CHANGED_FILES {
        let reason = format!(
            "Change too large to evaluate: {} files (limit {MAX_CHANGED_FILES})",
            sim.files_changed.len()
        );
        return Ok(blocked(decision, recorder, BlockKind::TooLarge, reason));
    }

    // Step 2: the declared level's required checks.
    let declared_checks = config.profile_for(intent.risk_level, origin).checks;
    if let Some((kind, reason)) = read_checks(
        ports.checks,
        &declared_checks,
        &merge.head_sha,
        options.skip_checks,
        &mut recorder,
        &mut decision.checks,
    )
    .await?
    {
        return Ok(blocked(decision, recorder, kind, reason));
    }

    // Step 3: risk, then auto-classification.
    let coupling = ports.scm.co_changes(intent, &sim.files_changed).await?;
    let scope_hints = intent.scope_hints();
    let subject = ChangeSubject {
        intent_id: &intent.id,
        source: &intent.source,
        target: &intent.target,
        risk_level: intent.risk_level,
        dependencies: &intent.dependencies,
        scope_hints: &scope_hints,
    };
    let risk = evaluate_risk(&subject, sim, &coupling);
    recorder.record(
        EventType::RiskEvaluated,
        serde_json::to_value(&risk).unwrap_or(Value::Null),
        json!({
            "risk_score": risk.risk_score, "damage_score": risk.damage_score, "signals": risk.signals,
            "bombs": risk.bombs.iter().map(|b| b.kind()).collect::<Vec<_>>(), "trace_id": recorder.trace_id(),
        }),
    );
    let mut level = intent.risk_level;
    if options.auto_classify && risk.classified_level() != level {
        let new_level = risk.classified_level();
        recorder.record(
            EventType::RiskLevelReclassified,
            json!({"old": level, "new": new_level, "risk_score": risk.risk_score}),
            json!({"trace_id": recorder.trace_id()}),
        );
        level = new_level;
        decision.risk_level = level;
        // Read the checks the new profile adds before any gate judges them.
        let added: Vec<String> = config
            .profile_for(level, origin)
            .checks
            .into_iter()
            .filter(|c| !declared_checks.contains(c))
            .collect();
        if let Some((kind, reason)) = read_checks(
            ports.checks,
            &added,
            &merge.head_sha,
            options.skip_checks,
            &mut recorder,
            &mut decision.checks,
        )
        .await?
        {
            decision.risk = Some(risk);
            return Ok(blocked(decision, recorder, kind, reason));
        }
    }
    let checks_passed: Vec<String> = decision
        .checks
        .iter()
        .filter(|o| o.state == CheckState::Passed)
        .map(|o| o.name.clone())
        .collect();

    // Step 4: policy gates.
    let policy = evaluate_policy(
        &PolicyInput::for_risk(&risk, level, origin, &checks_passed),
        config,
    );
    recorder.record(
        EventType::PolicyEvaluated,
        json!({"verdict": policy.verdict, "gates": policy.gates, "profile_used": policy.profile_used, "trace_id": recorder.trace_id()}),
        json!({"verdict": policy.verdict, "trace_id": recorder.trace_id()}),
    );
    if policy.verdict == Verdict::Block {
        let reason = policy.block_reason();
        decision.risk = Some(risk);
        decision.policy = Some(policy);
        return Ok(blocked(decision, recorder, BlockKind::Policy, reason));
    }

    // Step 5: risk gate.
    let gate = evaluate_risk_gate(&intent.id, &risk, &config.risk);
    let risk_score = risk.risk_score;
    decision.risk = Some(risk);
    decision.policy = Some(policy);
    if gate.enforced {
        let reason = gate.block_reason();
        decision.risk_gate = Some(gate);
        return Ok(blocked(decision, recorder, BlockKind::RiskGate, reason));
    }
    if gate.would_block {
        // Over a limit but not enforced (shadow mode, or outside the enforcement group): what
        // enforcing would have blocked, for operators deciding whether to enforce.
        recorder.record(
            EventType::RiskShadowEvaluated,
            json!({"risk_gate": gate, "risk_score": risk_score, "trace_id": recorder.trace_id()}),
            json!({"would_block": true, "mode": gate.mode, "trace_id": recorder.trace_id()}),
        );
    }
    decision.risk_gate = Some(gate);

    // Step 6: validated.
    recorder.record(
        EventType::IntentValidated,
        json!({"source": intent.source, "target": intent.target, "trace_id": recorder.trace_id(),
               "head_sha": merge.head_sha, "target_sha": merge.target_sha, "risk_level": level}),
        json!({"risk_score": risk_score, "policy_verdict": "ALLOW", "trace_id": recorder.trace_id()}),
    );
    decision.events = recorder.events;
    Ok(decision)
}

/// A decision before any step has judged: validated until a step blocks it.
fn fresh_decision(intent: &Intent, trace_id: &str, merge: SimulatedMerge) -> Decision {
    Decision {
        intent_id: intent.id.clone(),
        trace_id: trace_id.to_owned(),
        outcome: Outcome::Validated,
        risk_level: intent.risk_level,
        merge,
        checks: Vec::new(),
        risk: None,
        policy: None,
        risk_gate: None,
        events: Vec::new(),
    }
}

fn blocked(
    mut decision: Decision,
    mut recorder: Recorder<'_>,
    kind: BlockKind,
    reason: String,
) -> Decision {
    recorder.record(
        EventType::IntentBlocked,
        json!({"reason": reason, "kind": kind, "trace_id": recorder.trace_id(),
               "head_sha": decision.merge.head_sha, "target_sha": decision.merge.target_sha}),
        json!({"reason": reason, "trace_id": recorder.trace_id()}),
    );
    decision.outcome = Outcome::Blocked { kind, reason };
    decision.events = recorder.events;
    decision
}
