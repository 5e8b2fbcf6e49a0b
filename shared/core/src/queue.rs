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

use crate::event::EventType;
use crate::intent::{Intent, Status};
use crate::pipeline::{Decision, Outcome};
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
}

impl QueueRules {
    /// Rules from the policy's queue settings.
    pub fn from_settings(settings: &QueueSettings, auto_confirm: bool) -> QueueRules {
        QueueRules {
            max_retries: settings.max_retries,
            auto_confirm,
            checks_wait_limit: Duration::minutes(i64::from(settings.checks_wait_minutes)),
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

/// Applies a failed attempt: one more retry, then READY or, at the bound, REJECTED.
pub fn failed_attempt(intent: &Intent, max_retries: u32, reason: &str) -> Step {
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
            json!({"reason": reason, "retries": retries}),
            json!({"retries": retries, "max_retries": max_retries}),
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
            action: if rules.auto_confirm {
                NextAction::Merge
            } else {
                NextAction::None
            },
        },
        Outcome::Blocked { kind, reason } if kind.counts_as_failed_attempt() => {
            failed_attempt(intent, rules.max_retries, reason)
        }
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
    let mut step = failed_attempt(intent, max_retries, error);
    step.event = Some((
        EventType::IntentMergeFailed,
        json!({"error": error, "source": intent.source, "target": intent.target,
               "retries": step.retries, "status": step.status}),
        json!({"error": error, "retries": step.retries}),
    ));
    step
}

/// Whether a validation made against `validated_target_sha` still holds for the target's
/// current tip. When the target moved, queued work must be revalidated (invariant 2).
pub fn needs_revalidation(validated_target_sha: Option<&str>, current_target_sha: &str) -> bool {
    validated_target_sha != Some(current_target_sha)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let first = failed_attempt(&i, 3, "Merge conflicts: x");
        assert_eq!((first.status, first.retries), (Status::Ready, 1));
        i.retries = 2;
        let third = failed_attempt(&i, 3, "Merge conflicts: x");
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
}
