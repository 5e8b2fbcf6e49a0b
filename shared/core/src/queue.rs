//! Queue rules: which intent is processed next, and what a processing step decides.
//!
//! The rules carry invariants 2 and 3. Work is taken in priority order (lower number first,
//! then oldest). An intent whose dependencies have not all merged waits without penalty. An
//! intent at the retry bound is rejected before any work. Every actionable intent is
//! (re)validated against the *current* target tip before it advances, and an intent validated
//! against an older tip is revalidated before it may merge. A block that counts as a failed
//! attempt increments the retries; reaching the bound rejects the intent, otherwise it goes
//! back to READY. Waiting for CI is not a failed attempt.
//!
//! These are pure functions: the worker loads intents, calls them, and applies the result
//! (status, retries, event) in one transaction.

use std::cmp::Ordering;

use serde_json::{Value, json};

use crate::event::EventType;
use crate::intent::{Intent, Status};
use crate::pipeline::{Decision, Outcome};

/// The default bound on failed attempts.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// Queue order: priority ascending, then creation time, then id (so the order is total).
pub fn queue_order(a: &Intent, b: &Intent) -> Ordering {
    a.priority
        .cmp(&b.priority)
        .then(a.created_at.cmp(&b.created_at))
        .then_with(|| a.id.cmp(&b.id))
}

/// Sorts intents into processing order, keeping only the actionable ones.
pub fn processing_order(mut intents: Vec<Intent>) -> Vec<Intent> {
    intents.retain(|i| i.status.is_actionable());
    intents.sort_by(queue_order);
    intents
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
    max_retries: u32,
    status_of: impl Fn(&str) -> Option<Status>,
) -> Admission {
    if intent.status.is_terminal() {
        return Admission::Skip;
    }
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
    /// Event to append besides the decision's own: type, payload, evidence.
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

/// The step after a (re)validation in the queue.
pub fn after_validation(
    intent: &Intent,
    decision: &Decision,
    max_retries: u32,
    auto_confirm: bool,
) -> Step {
    match &decision.outcome {
        Outcome::Validated => Step {
            status: Status::Queued,
            retries: intent.retries,
            event: None,
            action: if auto_confirm {
                NextAction::Merge
            } else {
                NextAction::None
            },
        },
        Outcome::Blocked { kind, reason } if kind.counts_as_failed_attempt() => {
            failed_attempt(intent, max_retries, reason)
        }
        Outcome::Blocked { .. } => Step {
            status: intent.status,
            retries: intent.retries,
            event: None,
            action: NextAction::RetryLater,
        },
    }
}

/// The step after a merge attempt that failed (the target moved, the push was refused, …).
pub fn after_merge_failure(intent: &Intent, max_retries: u32, error: &str) -> Step {
    let mut step = failed_attempt(intent, max_retries, error);
    step.event = Some((
        EventType::IntentMergeFailed,
        json!({"error": error, "source": intent.source, "target": intent.target, "retries": step.retries}),
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
    fn order_is_priority_then_age_and_drops_terminal_intents() {
        let mut merged = intent("m", 0, 0);
        merged.status = Status::Merged;
        let order = processing_order(vec![
            intent("b", 3, 5),
            intent("a", 3, 1),
            intent("c", 1, 9),
            merged,
        ]);
        let ids: Vec<&str> = order.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
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
            admit(&i, 3, |_| None),
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
            admit(&i, 3, status),
            Admission::WaitForDependencies {
                unmet: vec!["y".into()]
            }
        );
        assert_eq!(admit(&i, 3, |_| Some(Status::Merged)), Admission::Process);
    }

    #[test]
    fn moved_target_requires_revalidation() {
        assert!(needs_revalidation(Some("aaa"), "bbb"));
        assert!(needs_revalidation(None, "bbb"));
        assert!(!needs_revalidation(Some("bbb"), "bbb"));
    }
}
