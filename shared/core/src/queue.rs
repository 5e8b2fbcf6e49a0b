//! Queue rules: which intent is processed next, and what a processing step decides.
//!
//! The rules carry invariants 2 and 3. Work is grouped by queue key (tenant, repository,
//! target) and taken in priority order (lower number first, then oldest). An intent whose
//! dependencies have not all merged waits without penalty. An intent at the retry bound is
//! rejected before any work. Every actionable intent is (re)validated against the *current*
//! target tip before it advances, and an intent validated against an older tip is revalidated
//! before it may merge. A block that counts as a failed attempt increments the retries;
//! reaching the bound rejects the intent, otherwise it goes back to READY. Waiting for CI is
//! not a failed attempt — until it has lasted longer than the configured limit, after which a
//! check that never arrives counts like a failed one (so invariant 3 still ends the wait).
//!
//! These are pure functions: the worker loads intents, calls them, and appends the decision's
//! events followed by the step's event in one transaction; the projection
//! ([`crate::projection`]) checks every status move they imply.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::event::{Event, EventType};
use crate::intent::{Intent, Status};
use crate::pipeline::{Decision, Outcome, Tips};
use crate::policy::QueueSettings;

/// The unit of serialisation: one lease, one processing order, per (tenant, repo, target).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueKey {
    /// Tenant, empty for none.
    pub tenant: String,
    /// Repository `owner/name`, empty for intents not tied to one (local use).
    pub repo: String,
    /// Target branch.
    pub target: String,
}

impl std::fmt::Display for QueueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenant = if self.tenant.is_empty() {
            "-"
        } else {
            &self.tenant
        };
        let repo = if self.repo.is_empty() {
            "-"
        } else {
            &self.repo
        };
        write!(f, "{tenant}/{repo}@{}", self.target)
    }
}

impl QueueKey {
    /// The queue an intent belongs to.
    pub fn for_intent(intent: &Intent) -> QueueKey {
        QueueKey {
            tenant: intent.tenant_id.clone().unwrap_or_default(),
            repo: intent.repo().unwrap_or_default().to_owned(),
            target: intent.target.clone(),
        }
    }
}

/// How the queue behaves: the retry bound, whether it merges, and how long it waits for CI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRules {
    /// Failed attempts after which an intent is rejected (invariant 3).
    pub max_retries: u32,
    /// Merge passing intents (otherwise they stay QUEUED for an operator or GitHub).
    pub auto_confirm: bool,
    /// How long required checks may stay pending or unreported before that counts as a
    /// failed attempt.
    pub checks_wait_limit: Duration,
    /// Approving pull request reviews needed per risk level.
    pub required_approvals: RequiredApprovals,
    /// A conflict with the target takes the intent out of the queue at once (REJECTED, the
    /// files named; a new push brings it back) instead of counting as a failed attempt: what
    /// tested mode does, like the merge queues its users know. Head mode keeps the original's
    /// retries.
    pub eject_conflicts: bool,
}

/// Approving pull request reviews an intent from a pull request needs, per risk level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequiredApprovals([u32; 4]);

impl RequiredApprovals {
    /// From the policy's `queue.required_approvals` (absent levels need none).
    pub fn from_map(map: &BTreeMap<crate::RiskLevel, u32>) -> RequiredApprovals {
        let mut counts = [0; 4];
        for (n, level) in crate::RiskLevel::ALL.into_iter().enumerate() {
            counts[n] = map.get(&level).copied().unwrap_or(0);
        }
        RequiredApprovals(counts)
    }

    /// How many an intent at `level` needs.
    pub fn at(self, level: crate::RiskLevel) -> u32 {
        crate::RiskLevel::ALL
            .into_iter()
            .position(|l| l == level)
            .map_or(0, |n| self.0[n])
    }
}

impl QueueRules {
    /// Rules from the policy's queue settings.
    pub fn from_settings(settings: &QueueSettings, auto_confirm: bool) -> QueueRules {
        QueueRules {
            max_retries: settings.max_retries,
            auto_confirm,
            checks_wait_limit: Duration::minutes(i64::from(settings.checks_wait_minutes)),
            required_approvals: RequiredApprovals::from_map(&settings.required_approvals),
            eject_conflicts: false,
        }
    }
}

/// Queue order: priority ascending, then creation time, then id (so the order is total).
pub fn queue_order(a: &Intent, b: &Intent) -> Ordering {
    a.priority
        .cmp(&b.priority)
        .then(a.created_at.cmp(&b.created_at))
        .then_with(|| a.id.cmp(&b.id))
}

/// Groups the actionable intents by queue key, each group in processing order.
pub fn by_queue(intents: Vec<Intent>) -> BTreeMap<QueueKey, Vec<Intent>> {
    let mut groups: BTreeMap<QueueKey, Vec<Intent>> = BTreeMap::new();
    for intent in intents.into_iter().filter(|i| i.status.is_actionable()) {
        groups
            .entry(QueueKey::for_intent(&intent))
            .or_default()
            .push(intent);
    }
    for group in groups.values_mut() {
        group.sort_by(queue_order);
    }
    groups
}

/// Dependencies of `intent` that are not MERGED (unknown ones included), in declared order.
pub fn unmet_dependencies(
    intent: &Intent,
    status_of: impl Fn(&str) -> Option<Status>,
) -> Vec<String> {
    intent
        .dependencies
        .iter()
        .filter(|dep| status_of(dep) != Some(Status::Merged))
        .cloned()
        .collect()
}

/// What to do with an intent before any validation work.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Validate (READY, VALIDATED) or revalidate (QUEUED) it now.
    Process,
    /// Leave it alone this round: its dependencies have not merged. No retry is spent.
    WaitForDependencies {
        /// The dependencies still missing.
        unmet: Vec<String>,
    },
    /// It has used up its attempts: reject without further work.
    Reject(Step),
    /// Left out of the queue until it changes (a draft). No retry is spent.
    Held {
        /// Why.
        reason: String,
    },
    /// Nothing to do (terminal status).
    Skip,
}

/// Decides whether an intent is processed this round.
pub fn admit(
    intent: &Intent,
    rules: &QueueRules,
    status_of: impl Fn(&str) -> Option<Status>,
) -> Admission {
    if intent.status.is_terminal() {
        return Admission::Skip;
    }
    let max_retries = rules.max_retries;
    if intent.retries >= max_retries {
        return Admission::Reject(Step {
            status: Status::Rejected,
            retries: intent.retries,
            event: Some((
                EventType::IntentRejected,
                json!({"reason": format!("Max retries ({max_retries}) exceeded"), "retries": intent.retries}),
                json!({"retries": intent.retries, "max_retries": max_retries}),
            )),
            action: NextAction::None,
        });
    }
    if intent.is_draft() {
        return Admission::Held {
            reason: "draft: waits until it is marked ready for review".to_owned(),
        };
    }
    let unmet = unmet_dependencies(intent, status_of);
    if !unmet.is_empty() {
        return Admission::WaitForDependencies { unmet };
    }
    Admission::Process
}

/// What the worker does after applying a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAction {
    /// Nothing more this round.
    None,
    /// Merge the validated head onto the validated target tip (auto-confirm is on).
    Merge,
    /// Try again later without spending a retry (checks still running).
    RetryLater,
}

/// The state change one processing step decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// New status.
    pub status: Status,
    /// New retry count.
    pub retries: u32,
    /// Event to append after the decision's own: type, payload, evidence.
    pub event: Option<(EventType, Value, Value)>,
    /// What follows.
    pub action: NextAction,
}

/// What a queue round did with one intent: what the dashboard, the CLI and the log lines
/// show, under the stable names of [`RoundOutcome::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundOutcome {
    /// The step left the intent VALIDATED.
    Validated,
    /// Validated and queued for a merge.
    Queued,
    /// Validation blocked it (conflict, checks, policy, risk gate).
    Blocked,
    /// Required checks are still running; tried again later without spending a retry.
    WaitingForChecks,
    /// An intent it depends on has not merged yet.
    WaitingForDependencies,
    /// Held out of the queue (a draft).
    Held,
    /// Sent back to READY (a refused or failed merge).
    Requeued,
    /// Rejected: at the retry bound, or a merge failed for the last time.
    Rejected,
    /// Merged (or found already in its target).
    Merged,
    /// Nothing to do this round.
    Unchanged,
    /// The round could not judge it (a ref it names is gone); tried again later.
    Error,
    /// The environment failed (target checked out or protected, permission denied, source
    /// control or checks unreachable): the key is paused with the reason and tried again
    /// after a backoff; no retry is spent.
    Paused,
    /// Validated and queued, but an operator's freeze holds the key's merges: it merges when
    /// the freeze ends.
    Frozen,
}

impl RoundOutcome {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            RoundOutcome::Validated => "validated",
            RoundOutcome::Queued => "queued",
            RoundOutcome::Blocked => "blocked",
            RoundOutcome::WaitingForChecks => "waiting_for_checks",
            RoundOutcome::WaitingForDependencies => "waiting_for_dependencies",
            RoundOutcome::Held => "held",
            RoundOutcome::Requeued => "requeued",
            RoundOutcome::Rejected => "rejected",
            RoundOutcome::Merged => "merged",
            RoundOutcome::Unchanged => "unchanged",
            RoundOutcome::Error => "error",
            RoundOutcome::Paused => "paused",
            RoundOutcome::Frozen => "frozen",
        }
    }

    /// Whether the intent needed work (a validation, a merge, a rejection), which is what a
    /// round's batch size counts; waiting, held and unchanged intents do not.
    pub fn needed_work(self) -> bool {
        !matches!(
            self,
            RoundOutcome::Unchanged
                | RoundOutcome::Held
                | RoundOutcome::WaitingForDependencies
                | RoundOutcome::Frozen
        )
    }

    /// The outcome a step leads to, by the status it sets.
    pub fn of_step(step: &Step) -> RoundOutcome {
        match step.status {
            Status::Queued => RoundOutcome::Queued,
            Status::Rejected => RoundOutcome::Rejected,
            Status::Merged => RoundOutcome::Merged,
            Status::Validated => RoundOutcome::Validated,
            Status::Ready => RoundOutcome::Blocked,
        }
    }
}

impl std::fmt::Display for RoundOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first pause of a queue key whose environment failed.
pub const ENVIRONMENT_BACKOFF_FIRST: chrono::Duration = chrono::Duration::seconds(5);
/// The longest pause: a key is tried at least this often until its environment is fixed.
pub const ENVIRONMENT_BACKOFF_MAX: chrono::Duration = chrono::Duration::minutes(15);

/// How long a queue key is paused after `failures` environment failures in a row: 5 s,
/// doubling with each, at most 15 minutes.
pub fn environment_backoff(failures: u32) -> chrono::Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let pause = ENVIRONMENT_BACKOFF_FIRST * (1i32 << doublings);
    pause.min(ENVIRONMENT_BACKOFF_MAX)
}

/// The step after the environment failed while working on an intent (a merge refused by a
/// checked-out or protected target, no permission, source control or checks unreachable): the
/// intent keeps its status and its retries, and the event says why its key is paused.
pub fn after_environment_failure(intent: &Intent, reason: &str) -> Step {
    Step {
        status: intent.status,
        retries: intent.retries,
        event: Some((
            EventType::QueuePaused,
            json!({"reason": reason, "retries": intent.retries, "target": intent.target}),
            json!({"retries_spent": false}),
        )),
        action: NextAction::None,
    }
}

/// Why an intent went back in the queue (recorded in `intent.requeued` and `intent.rejected`
/// as `cause`, so that retries can be counted by cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// The merge did not apply cleanly.
    Conflict,
    /// A required check failed.
    ChecksFailed,
    /// Required checks did not finish within `queue.checks_wait_minutes`.
    ChecksTimeout,
    /// A policy gate or the risk gate blocked it.
    Policy,
    /// The source or target branch is gone.
    MissingRef,
    /// The change is too large to evaluate.
    TooLarge,
    /// The merge itself failed.
    MergeFailed,
    /// A ref moved under the merge: revalidated, no retry spent.
    TargetMoved,
}

impl RetryCause {
    /// Every cause, in the order reports list them.
    pub const ALL: [RetryCause; 8] = [
        RetryCause::Conflict,
        RetryCause::ChecksFailed,
        RetryCause::ChecksTimeout,
        RetryCause::Policy,
        RetryCause::MissingRef,
        RetryCause::TooLarge,
        RetryCause::MergeFailed,
        RetryCause::TargetMoved,
    ];

    /// Its stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryCause::Conflict => "conflict",
            RetryCause::ChecksFailed => "checks_failed",
            RetryCause::ChecksTimeout => "checks_timeout",
            RetryCause::Policy => "policy",
            RetryCause::MissingRef => "missing_ref",
            RetryCause::TooLarge => "too_large",
            RetryCause::MergeFailed => "merge_failed",
            RetryCause::TargetMoved => "target_moved",
        }
    }

    /// The cause of a block that counts as a failed attempt.
    pub fn of_block(kind: crate::pipeline::BlockKind) -> RetryCause {
        use crate::pipeline::BlockKind as B;
        match kind {
            B::Conflict => RetryCause::Conflict,
            B::ChecksFailed => RetryCause::ChecksFailed,
            B::ChecksPending => RetryCause::ChecksTimeout,
            B::Policy | B::RiskGate => RetryCause::Policy,
            B::MissingRef => RetryCause::MissingRef,
            B::TooLarge => RetryCause::TooLarge,
        }
    }

    /// The cause a requeue's payload names; for events written before causes were recorded,
    /// read from the reason's wording (`None` when it says nothing known).
    pub fn of_payload(payload: &serde_json::Value) -> Option<RetryCause> {
        if let Some(name) = payload.get("cause").and_then(serde_json::Value::as_str) {
            return RetryCause::ALL.into_iter().find(|c| c.as_str() == name);
        }
        let reason = payload.get("reason").and_then(serde_json::Value::as_str)?;
        let reason = reason.to_ascii_lowercase();
        [
            ("revalidation needed", RetryCause::TargetMoved),
            ("merge conflict", RetryCause::Conflict),
            ("checks failed", RetryCause::ChecksFailed),
            ("checks pending", RetryCause::ChecksTimeout),
            ("unknown ref", RetryCause::MissingRef),
        ]
        .into_iter()
        .find(|(start, _)| reason.starts_with(start))
        .map(|(_, cause)| cause)
    }
}

/// Applies a failed attempt: one more retry, then READY or, at the bound, REJECTED.
pub fn failed_attempt(intent: &Intent, max_retries: u32, reason: &str, cause: RetryCause) -> Step {
    let retries = intent.retries + 1;
    let (status, event_type) = if retries >= max_retries {
        (Status::Rejected, EventType::IntentRejected)
    } else {
        (Status::Ready, EventType::IntentRequeued)
    };
    Step {
        status,
        retries,
        event: Some((
            event_type,
            json!({"reason": reason, "retries": retries, "cause": cause.as_str()}),
            json!({"retries": retries, "max_retries": max_retries}),
        )),
        action: NextAction::None,
    }
}

/// The step after the tested queue ([`crate::train`]) ejected an intent: REJECTED at once,
/// naming the check that failed on its candidate or the files it conflicts on (a new push
/// brings it back as a fresh intent, as for any rejection).
pub fn after_ejection(intent: &Intent, ejection: &crate::train::Ejection) -> Step {
    let (reason, cause, detail) = match ejection {
        crate::train::Ejection::Failed { check, commit } => (
            format!("required check '{check}' failed on the tested commit {commit}"),
            RetryCause::ChecksFailed,
            json!({"check": check, "tested_commit": commit}),
        ),
        crate::train::Ejection::Conflict { files } => (
            format!(
                "conflicts with the changes queued ahead of it: {}",
                files.join(", ")
            ),
            RetryCause::Conflict,
            json!({"conflicts": files}),
        ),
    };
    let mut payload = json!({"reason": reason, "retries": intent.retries,
                             "cause": cause.as_str(), "tested": true});
    if let (Value::Object(p), Value::Object(d)) = (&mut payload, detail) {
        p.extend(d);
    }
    Step {
        status: Status::Rejected,
        retries: intent.retries,
        event: Some((
            EventType::IntentRejected,
            payload,
            json!({"retries": intent.retries}),
        )),
        action: NextAction::None,
    }
}

/// The step after a (re)validation in the queue. A READY intent that passes reaches QUEUED
/// through the decision's own `intent.validated` event (READY → VALIDATED) and then this
/// step's `intent.queued`. `waiting_since` is when the intent started waiting for checks on
/// this head, if it was already waiting.
pub fn after_validation(
    intent: &Intent,
    decision: &Decision,
    rules: &QueueRules,
    waiting_since: Option<DateTime<Utc>>,
) -> Step {
    match &decision.outcome {
        Outcome::Validated => Step {
            status: Status::Queued,
            retries: intent.retries,
            event: Some((
                EventType::IntentQueued,
                json!({"head_sha": decision.merge.head_sha, "target_sha": decision.merge.target_sha}),
                json!({"trace_id": decision.trace_id}),
            )),
            action: if rules.auto_confirm && !intent.is_merge_group() {
                NextAction::Merge
            } else {
                NextAction::None
            },
        },
        Outcome::Blocked {
            kind: crate::pipeline::BlockKind::Conflict,
            reason,
        } if rules.eject_conflicts => {
            let mut step = failed_attempt(intent, 0, reason, RetryCause::Conflict);
            // Out at once: no retry is spent, none is left to spend.
            step.retries = intent.retries;
            if let Some((_, payload, evidence)) = &mut step.event {
                payload["retries"] = json!(intent.retries);
                payload["conflicts"] = json!(decision.merge.simulation.conflicts);
                evidence["retries"] = json!(intent.retries);
            }
            step
        }
        Outcome::Blocked { kind, reason } if kind.counts_as_failed_attempt() => failed_attempt(
            intent,
            rules.max_retries,
            reason,
            RetryCause::of_block(*kind),
        ),
        Outcome::Blocked { reason, .. } => {
            let now = decision.events.last().map(|e| e.timestamp);
            let waited_too_long = match (waiting_since, now) {
                (Some(since), Some(now)) => now - since > rules.checks_wait_limit,
                _ => false,
            };
            if waited_too_long {
                let minutes = rules.checks_wait_limit.num_minutes();
                failed_attempt(
                    intent,
                    rules.max_retries,
                    &format!("{reason} for over {minutes} min"),
                    RetryCause::ChecksTimeout,
                )
            } else {
                Step {
                    status: intent.status,
                    retries: intent.retries,
                    event: None,
                    action: NextAction::RetryLater,
                }
            }
        }
    }
}

/// The step after the merge of exactly what was validated landed on the target.
pub fn after_merge(intent: &Intent, merged_commit: &str) -> Step {
    Step {
        status: Status::Merged,
        retries: intent.retries,
        event: Some((
            EventType::IntentMerged,
            json!({"merged_commit": merged_commit, "source": intent.source, "target": intent.target}),
            json!({"merged_commit": merged_commit}),
        )),
        action: NextAction::None,
    }
}

/// The step after a merge attempt that failed (the target moved, the push was refused, …).
pub fn after_merge_failure(intent: &Intent, max_retries: u32, error: &str) -> Step {
    let mut step = failed_attempt(intent, max_retries, error, RetryCause::MergeFailed);
    step.event = Some((
        EventType::IntentMergeFailed,
        json!({"error": error, "source": intent.source, "target": intent.target,
               "retries": step.retries, "status": step.status}),
        json!({"error": error, "retries": step.retries}),
    ));
    step
}

/// A merge attempt was refused because a ref moved after validation: the intent goes back to
/// READY to be revalidated, and no retry is spent (the change is not at fault; invariant 2
/// forbids merging it blind).
pub fn after_merge_refused(intent: &Intent, error: &str) -> Step {
    Step {
        status: Status::Ready,
        retries: intent.retries,
        event: Some((
            EventType::IntentRequeued,
            json!({"reason": format!("revalidation needed: {error}"), "retries": intent.retries,
                   "cause": RetryCause::TargetMoved.as_str()}),
            json!({"retries": intent.retries, "revalidate": true}),
        )),
        action: NextAction::None,
    }
}

/// The last decision the pipeline recorded for an intent: the commits it judged, when, and
/// whether it has been waiting for checks on that head (since when).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastDecision {
    /// The head that was judged.
    pub head_sha: String,
    /// The target commit it was judged against.
    pub target_sha: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Whether it validated (else it blocked).
    pub validated: bool,
    /// Set when the decision was a checks-pending block: the time of the first such block in
    /// the unbroken run of them on this head.
    pub waiting_since: Option<DateTime<Utc>>,
}

impl LastDecision {
    /// Reads the last decision from an intent's `intent.validated` and `intent.blocked` events,
    /// newest first. `None` when there is none (never judged).
    pub fn from_events(newest_first: &[Event]) -> Option<LastDecision> {
        let sha = |event: &Event, field: &str| {
            event
                .payload
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let is_pending_block = |event: &Event| {
            event.event_type == EventType::IntentBlocked
                && event.payload.get("kind").and_then(Value::as_str) == Some("checks_pending")
        };
        let latest = newest_first.first()?;
        let head_sha = sha(latest, "head_sha");
        let waiting_since = if is_pending_block(latest) {
            newest_first
                .iter()
                .take_while(|e| is_pending_block(e) && sha(e, "head_sha") == head_sha)
                .last()
                .map(|e| e.timestamp)
        } else {
            None
        };
        Some(LastDecision {
            target_sha: sha(latest, "target_sha"),
            head_sha,
            at: latest.timestamp,
            validated: latest.event_type == EventType::IntentValidated,
            waiting_since,
        })
    }
}

/// What a processing round does with an admitted intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Run the validation pipeline; `waiting_since` goes to [`after_validation`].
    Validate {
        /// When the intent started waiting for checks on this head, if it is waiting.
        waiting_since: Option<DateTime<Utc>>,
    },
    /// Merge what the last decision validated (QUEUED, refs unmoved, auto-confirm on).
    Merge {
        /// The validated head.
        head_sha: String,
        /// The validated target commit.
        target_sha: String,
    },
    /// Nothing changed since the last decision: running again would decide the same thing
    /// and only add events.
    Nothing,
}

/// Chooses the work for an admitted intent from its last decision and where its refs point
/// now. Invariant 2: a QUEUED intent whose head or target moved is revalidated, never merged.
/// New evidence since the last decision (a check result, or an operator's reset of a rejected or
/// stuck intent), or a wait for checks that outlasted the limit, also calls for a run.
pub fn plan_work(
    intent: &Intent,
    last: Option<&LastDecision>,
    tips: &Tips,
    new_evidence_since: bool,
    now: DateTime<Utc>,
    rules: &QueueRules,
) -> Work {
    let Some(last) = last else {
        return Work::Validate {
            waiting_since: None,
        };
    };
    let same_head = last.head_sha == tips.head_sha;
    let waiting_since = if same_head { last.waiting_since } else { None };
    let moved = !same_head || needs_revalidation(Some(&last.target_sha), &tips.target_sha);
    let wait_over = waiting_since.is_some_and(|since| now - since > rules.checks_wait_limit);
    // VALIDATED moves on to QUEUED through a run; READY after a passing decision means a merge
    // attempt failed or an operator requeued it, so it is judged again (the retry bound ends it).
    let judged_again =
        intent.status == Status::Validated || (intent.status == Status::Ready && last.validated);
    if moved || new_evidence_since || wait_over || judged_again {
        return Work::Validate { waiting_since };
    }
    if intent.status == Status::Queued && rules.auto_confirm && !intent.is_merge_group() {
        return Work::Merge {
            head_sha: last.head_sha.clone(),
            target_sha: last.target_sha.clone(),
        };
    }
    Work::Nothing
}

/// Whether a validation made against `validated_target_sha` still holds for the target's
/// current tip. When the target moved, queued work must be revalidated (invariant 2).
pub fn needs_revalidation(validated_target_sha: Option<&str>, current_target_sha: &str) -> bool {
    validated_target_sha != Some(current_target_sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_failure_backs_off_from_five_seconds_doubling_to_fifteen_minutes() {
        let seconds = |failures| environment_backoff(failures).num_seconds();
        assert_eq!(
            [seconds(1), seconds(2), seconds(3), seconds(4)],
            [5, 10, 20, 40]
        );
        assert_eq!(seconds(8), 640);
        assert_eq!(seconds(9), 900);
        assert_eq!(seconds(u32::MAX), 900);
        assert_eq!(seconds(0), 5);
    }
    use chrono::TimeZone;

    fn rules() -> QueueRules {
        QueueRules::from_settings(&QueueSettings::default(), false)
    }

    fn intent(id: &str, priority: i64, seconds: i64) -> Intent {
        let created = chrono::Utc
            .timestamp_opt(1_700_000_000 + seconds, 0)
            .single()
            .unwrap_or_default();
        let mut i = Intent::new(id, "feature", "main", created);
        i.priority = priority;
        i
    }

    #[test]
    fn groups_by_key_in_priority_then_age_order_without_terminal_intents() {
        let mut merged = intent("m", 0, 0);
        merged.status = Status::Merged;
        let mut other_target = intent("d", 0, 0);
        other_target.target = "develop".into();
        let groups = by_queue(vec![
            intent("b", 3, 5),
            intent("a", 3, 1),
            intent("c", 1, 9),
            merged,
            other_target,
        ]);
        let ids = |target: &str| -> Vec<String> {
            let key = QueueKey {
                tenant: String::new(),
                repo: String::new(),
                target: target.into(),
            };
            groups
                .get(&key)
                .map(|g| g.iter().map(|i| i.id.clone()).collect())
                .unwrap_or_default()
        };
        assert_eq!(ids("main"), ["c", "a", "b"]);
        assert_eq!(ids("develop"), ["d"]);
        assert_eq!(groups.len(), 2);
    }

    #[test]
    fn retries_lead_to_rejection_at_the_bound() {
        let mut i = intent("a", 3, 0);
        let first = failed_attempt(&i, 3, "Merge conflicts: x", RetryCause::Conflict);
        assert_eq!((first.status, first.retries), (Status::Ready, 1));
        i.retries = 2;
        let third = failed_attempt(&i, 3, "Merge conflicts: x", RetryCause::Conflict);
        assert_eq!((third.status, third.retries), (Status::Rejected, 3));
        i.retries = 3;
        assert!(matches!(
            admit(&i, &rules(), |_| None),
            Admission::Reject(Step {
                status: Status::Rejected,
                ..
            })
        ));
    }

    #[test]
    fn unmerged_dependencies_hold_without_penalty() {
        let mut i = intent("a", 3, 0);
        i.dependencies = vec!["x".into(), "y".into()];
        let status = |id: &str| (id == "x").then_some(Status::Merged);
        assert_eq!(
            admit(&i, &rules(), status),
            Admission::WaitForDependencies {
                unmet: vec!["y".into()]
            }
        );
        assert_eq!(
            admit(&i, &rules(), |_| Some(Status::Merged)),
            Admission::Process
        );
    }

    #[test]
    fn moved_target_requires_revalidation() {
        assert!(needs_revalidation(Some("aaa"), "bbb"));
        assert!(needs_revalidation(None, "bbb"));
        assert!(!needs_revalidation(Some("bbb"), "bbb"));
    }

    fn decision_event(kind: Option<&str>, head: &str, target: &str, minute: i64) -> Event {
        let at = chrono::Utc
            .timestamp_opt(1_700_000_000 + minute * 60, 0)
            .single()
            .unwrap_or_default();
        let (event_type, payload) = match kind {
            None => (
                EventType::IntentValidated,
                json!({"head_sha": head, "target_sha": target}),
            ),
            Some(kind) => (
                EventType::IntentBlocked,
                json!({"kind": kind, "head_sha": head, "target_sha": target}),
            ),
        };
        Event {
            id: format!("e-{minute}"),
            trace_id: format!("t-{minute}"),
            timestamp: at,
            event_type,
            intent_id: Some("a".into()),
            agent_id: None,
            tenant_id: None,
            payload,
            evidence: json!({}),
        }
    }

    fn tips(head: &str, target: &str) -> Tips {
        Tips {
            head_sha: head.into(),
            target_sha: target.into(),
        }
    }

    #[test]
    fn the_wait_for_checks_counts_from_the_first_pending_block_on_the_same_head() {
        let newest_first = [
            decision_event(Some("checks_pending"), "h2", "t2", 30),
            decision_event(Some("checks_pending"), "h2", "t1", 20),
            decision_event(Some("checks_pending"), "h1", "t1", 10),
        ];
        let last = LastDecision::from_events(&newest_first).expect("a decision");
        assert_eq!(
            (last.head_sha.as_str(), last.target_sha.as_str()),
            ("h2", "t2")
        );
        assert_eq!(last.waiting_since, Some(newest_first[1].timestamp));
        assert!(!last.validated);
        let conflict = [decision_event(Some("conflict"), "h1", "t1", 5)];
        let last = LastDecision::from_events(&conflict).expect("a decision");
        assert_eq!(last.waiting_since, None);
        assert!(LastDecision::from_events(&[]).is_none());
    }

    #[test]
    fn work_is_planned_only_when_something_changed() {
        let mut queued = intent("a", 3, 0);
        queued.status = Status::Queued;
        let validated = LastDecision::from_events(&[decision_event(None, "h", "t", 0)]);
        let now = validated.as_ref().map(|l| l.at).unwrap_or_default();
        let manual = rules();
        let auto = QueueRules {
            auto_confirm: true,
            ..rules()
        };
        let plan = |i: &Intent, t: Tips, reported: bool, r: &QueueRules| {
            plan_work(i, validated.as_ref(), &t, reported, now, r)
        };
        assert_eq!(plan(&queued, tips("h", "t"), false, &manual), Work::Nothing);
        assert_eq!(
            plan(&queued, tips("h", "t"), false, &auto),
            Work::Merge {
                head_sha: "h".into(),
                target_sha: "t".into()
            }
        );
        // Invariant 2: a moved target or head means a new validation, never a merge.
        for moved in [tips("h", "t2"), tips("h2", "t")] {
            assert!(matches!(
                plan(&queued, moved, false, &auto),
                Work::Validate { .. }
            ));
        }
        assert!(matches!(
            plan(&queued, tips("h", "t"), true, &auto),
            Work::Validate { .. }
        ));
        assert!(matches!(
            plan_work(
                &intent("new", 3, 0),
                None,
                &tips("h", "t"),
                false,
                now,
                &auto
            ),
            Work::Validate {
                waiting_since: None
            }
        ));
    }

    #[test]
    fn a_pending_wait_is_run_again_once_it_outlasts_the_limit() {
        let ready = intent("a", 3, 0);
        let blocked = [decision_event(Some("checks_pending"), "h", "t", 0)];
        let last = LastDecision::from_events(&blocked);
        let start = blocked[0].timestamp;
        let r = rules();
        let at = |minutes: i64| {
            plan_work(
                &ready,
                last.as_ref(),
                &tips("h", "t"),
                false,
                start + Duration::minutes(minutes),
                &r,
            )
        };
        assert_eq!(at(10), Work::Nothing);
        assert_eq!(
            at(r.checks_wait_limit.num_minutes() + 1),
            Work::Validate {
                waiting_since: Some(start)
            }
        );
        // A new head starts a new wait.
        assert_eq!(
            plan_work(&ready, last.as_ref(), &tips("h2", "t"), false, start, &r),
            Work::Validate {
                waiting_since: None
            }
        );
    }
}
