//! Review tasks: a person's look at an intent before it may merge, with the original's life
//! cycle (request, assign, complete, cancel, escalate) and SLA (spec §1.6, §11).
//!
//! An open task (pending, assigned, in review, escalated) holds its intent in the queue; a task
//! completed with `rejected` holds it too, until a later task approves it. The SLA deadline
//! is the request time plus the hours of the intent's risk level (low 72, medium 48, high 24,
//! critical 8); the scheduled sweep escalates open tasks past it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::RiskLevel;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    /// Requested, nobody assigned.
    Pending,
    /// A reviewer is assigned.
    Assigned,
    /// The reviewer is on it.
    InReview,
    /// Past its SLA, or escalated by hand.
    Escalated,
    /// Done, with a resolution.
    Completed,
    /// Withdrawn.
    Cancelled,
}

impl ReviewStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [ReviewStatus; 6] = [
        ReviewStatus::Pending,
        ReviewStatus::Assigned,
        ReviewStatus::InReview,
        ReviewStatus::Escalated,
        ReviewStatus::Completed,
        ReviewStatus::Cancelled,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Assigned => "assigned",
            ReviewStatus::InReview => "in_review",
            ReviewStatus::Escalated => "escalated",
            ReviewStatus::Completed => "completed",
            ReviewStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the task still waits for a person.
    pub fn is_open(self) -> bool {
        !matches!(self, ReviewStatus::Completed | ReviewStatus::Cancelled)
    }
}

impl fmt::Display for ReviewStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReviewStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        ReviewStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown review status '{text}' (one of {})",
                    ReviewStatus::ALL.map(ReviewStatus::as_str).join(", ")
                )
            })
    }
}

/// Why a review was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A policy asked for it (the original's default).
    #[default]
    Policy,
    /// A conflict.
    Conflict,
    /// An operator.
    Manual,
    /// The coherence harness.
    Coherence,
}

/// How a completed review ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The change may go on.
    Approved,
    /// The change may not merge (until a later review approves it).
    Rejected,
    /// Decided later; the intent is not held by this task any more.
    Deferred,
}

/// A move the life cycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("review task {id} is {status}: it cannot be {action}")]
pub struct ReviewError {
    /// The task.
    pub id: String,
    /// Its status.
    pub status: ReviewStatus,
    /// What was asked (`assigned`, `completed`, …).
    pub action: &'static str,
}

/// One review task (the original's `ReviewTask`, same fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewTask {
    /// `rev-<hex>`.
    pub id: String,
    /// The intent reviewed.
    pub intent_id: String,
    /// Where it stands.
    pub status: ReviewStatus,
    /// Who reviews it.
    pub reviewer: Option<String>,
    /// Its priority (the intent's unless given).
    pub priority: i64,
    /// The intent's risk level when requested (sets the SLA).
    pub risk_level: RiskLevel,
    /// Why it was asked for.
    pub trigger: Trigger,
    /// When it must be done.
    pub sla_deadline: DateTime<Utc>,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When a reviewer was (last) assigned.
    pub assigned_at: Option<DateTime<Utc>>,
    /// When it was completed or cancelled.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was escalated.
    pub escalated_at: Option<DateTime<Utc>>,
    /// How it ended.
    pub resolution: Option<Resolution>,
    /// The reviewer's notes, or why it was cancelled or escalated.
    pub notes: String,
    /// The intent's tenant.
    pub tenant_id: Option<String>,
}

/// Hours a review of a change at `level` may take.
pub fn sla_hours(level: RiskLevel) -> i64 {
    match level {
        RiskLevel::Low => 72,
        RiskLevel::Medium => 48,
        RiskLevel::High => 24,
        RiskLevel::Critical => 8,
    }
}

/// What a change to a task was, for its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewChange {
    /// First assignment.
    Assigned,
    /// Another reviewer.
    Reassigned,
    /// Completed.
    Completed,
    /// Cancelled.
    Cancelled,
    /// Escalated.
    Escalated,
}

impl ReviewTask {
    /// A new task for `intent`, assigned at once when `reviewer` is given.
    #[allow(clippy::too_many_arguments)] // the original's request, field for field
    pub fn request(
        id: String,
        intent: &crate::Intent,
        trigger: Trigger,
        reviewer: Option<String>,
        priority: Option<i64>,
        now: DateTime<Utc>,
    ) -> ReviewTask {
        let assigned = reviewer.is_some();
        ReviewTask {
            id,
            intent_id: intent.id.clone(),
            status: if assigned {
                ReviewStatus::Assigned
            } else {
                ReviewStatus::Pending
            },
            reviewer,
            priority: priority.unwrap_or(intent.priority),
            risk_level: intent.risk_level,
            trigger,
            sla_deadline: now + Duration::hours(sla_hours(intent.risk_level)),
            created_at: now,
            assigned_at: assigned.then_some(now),
            completed_at: None,
            escalated_at: None,
            resolution: None,
            notes: String::new(),
            tenant_id: intent.tenant_id.clone(),
        }
    }

    fn refuse(&self, action: &'static str) -> ReviewError {
        ReviewError {
            id: self.id.clone(),
            status: self.status,
            action,
        }
    }

    /// Assigns (or reassigns) a reviewer to an open task.
    pub fn assign(
        &mut self,
        reviewer: &str,
        now: DateTime<Utc>,
    ) -> Result<ReviewChange, ReviewError> {
        if !self.status.is_open() {
            return Err(self.refuse("assigned"));
        }
        let change = if self.reviewer.is_some() {
            ReviewChange::Reassigned
        } else {
            ReviewChange::Assigned
        };
        self.reviewer = Some(reviewer.to_owned());
        self.assigned_at = Some(now);
        if self.status == ReviewStatus::Pending {
            self.status = ReviewStatus::Assigned;
        }
        Ok(change)
    }

    /// Completes an open task with a resolution and notes.
    pub fn complete(
        &mut self,
        resolution: Resolution,
        notes: &str,
        now: DateTime<Utc>,
    ) -> Result<ReviewChange, ReviewError> {
        if !self.status.is_open() {
            return Err(self.refuse("completed"));
        }
        self.status = ReviewStatus::Completed;
        self.resolution = Some(resolution);
        self.notes = notes.to_owned();
        self.completed_at = Some(now);
        Ok(ReviewChange::Completed)
    }

    /// Cancels an open task; the reason becomes its notes.
    pub fn cancel(
        &mut self,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ReviewChange, ReviewError> {
        if !self.status.is_open() {
            return Err(self.refuse("cancelled"));
        }
        self.status = ReviewStatus::Cancelled;
        self.notes = reason.to_owned();
        self.completed_at = Some(now);
        Ok(ReviewChange::Cancelled)
    }

    /// Escalates an open task that is not escalated yet.
    pub fn escalate(
        &mut self,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ReviewChange, ReviewError> {
        if !self.status.is_open() || self.status == ReviewStatus::Escalated {
            return Err(self.refuse("escalated"));
        }
        self.status = ReviewStatus::Escalated;
        self.notes = reason.to_owned();
        self.escalated_at = Some(now);
        Ok(ReviewChange::Escalated)
    }

    /// Whether it is past its deadline and not yet escalated or done (what the sweep
    /// escalates).
    pub fn sla_breached(&self, now: DateTime<Utc>) -> bool {
        matches!(
            self.status,
            ReviewStatus::Pending | ReviewStatus::Assigned | ReviewStatus::InReview
        ) && now > self.sla_deadline
    }
}

/// Why an intent's reviews hold it, if they do: an open task, or a rejection no later
/// approval answered. `tasks` are the intent's tasks in any order.
pub fn review_hold(tasks: &[ReviewTask]) -> Option<String> {
    if let Some(open) = tasks.iter().find(|t| t.status.is_open()) {
        return Some(format!(
            "review {} is {}{}",
            open.id,
            open.status,
            open.reviewer
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }
    let last_decided = tasks
        .iter()
        .filter(|t| {
            matches!(
                t.resolution,
                Some(Resolution::Approved | Resolution::Rejected)
            )
        })
        .max_by_key(|t| (t.completed_at, t.created_at));
    match last_decided {
        Some(task) if task.resolution == Some(Resolution::Rejected) => Some(format!(
            "review {} rejected it{}",
            task.id,
            if task.notes.is_empty() {
                String::new()
            } else {
                format!(": {}", task.notes)
            }
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn intent(level: RiskLevel) -> crate::Intent {
        let mut intent = crate::Intent::new(
            "acme/app:pr-1",
            "feature",
            "main",
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
        );
        intent.risk_level = level;
        intent.tenant_id = Some("acme".into());
        intent
    }

    fn at(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).unwrap() + Duration::hours(hours)
    }

    #[test]
    fn a_task_lives_through_assign_reassign_and_completion_and_nothing_after() {
        let mut task = ReviewTask::request(
            "rev-1".into(),
            &intent(RiskLevel::High),
            Trigger::Manual,
            None,
            None,
            at(0),
        );
        assert_eq!(
            (task.status, task.sla_deadline),
            (ReviewStatus::Pending, at(24))
        );
        assert_eq!(task.priority, 3);
        assert_eq!(task.assign("ana", at(1)), Ok(ReviewChange::Assigned));
        assert_eq!(task.assign("bo", at(2)), Ok(ReviewChange::Reassigned));
        assert_eq!(
            (task.status, task.reviewer.as_deref()),
            (ReviewStatus::Assigned, Some("bo"))
        );
        assert_eq!(
            task.complete(Resolution::Approved, "fine", at(3)),
            Ok(ReviewChange::Completed)
        );
        assert!(task.assign("cy", at(4)).is_err());
        assert!(task.cancel("late", at(4)).is_err());
        assert!(task.escalate("late", at(4)).is_err());
        let error = task.complete(Resolution::Rejected, "", at(5)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "review task rev-1 is completed: it cannot be completed"
        );
        let given = ReviewTask::request(
            "rev-2".into(),
            &intent(RiskLevel::Critical),
            Trigger::Policy,
            Some("ana".into()),
            Some(1),
            at(0),
        );
        assert_eq!(
            (given.status, given.priority, given.sla_deadline),
            (ReviewStatus::Assigned, 1, at(8))
        );
    }

    #[test]
    fn the_sla_breaches_after_the_levels_hours_and_an_escalation_ends_the_breach() {
        for (level, hours) in [
            (RiskLevel::Low, 72),
            (RiskLevel::Medium, 48),
            (RiskLevel::High, 24),
            (RiskLevel::Critical, 8),
        ] {
            let mut task = ReviewTask::request(
                "rev".into(),
                &intent(level),
                Trigger::Policy,
                None,
                None,
                at(0),
            );
            assert!(!task.sla_breached(at(hours)), "{level:?}");
            assert!(
                task.sla_breached(at(hours) + Duration::seconds(1)),
                "{level:?}"
            );
            task.escalate("sla_breach", at(hours + 1)).unwrap();
            assert!(!task.sla_breached(at(hours + 2)));
            assert!(task.escalate("again", at(hours + 3)).is_err());
            assert!(
                task.status.is_open(),
                "an escalated task still holds its intent"
            );
        }
    }

    #[test]
    fn open_tasks_and_unanswered_rejections_hold_the_intent() {
        let base = |id: &str| {
            ReviewTask::request(
                id.into(),
                &intent(RiskLevel::Medium),
                Trigger::Policy,
                None,
                None,
                at(0),
            )
        };
        assert_eq!(review_hold(&[]), None);
        let open = base("rev-open");
        assert!(
            review_hold(std::slice::from_ref(&open))
                .unwrap()
                .contains("rev-open is pending")
        );
        let mut rejected = base("rev-no");
        rejected
            .complete(Resolution::Rejected, "needs tests", at(1))
            .unwrap();
        assert_eq!(
            review_hold(std::slice::from_ref(&rejected)).as_deref(),
            Some("review rev-no rejected it: needs tests")
        );
        let mut approved = base("rev-yes");
        approved.complete(Resolution::Approved, "", at(2)).unwrap();
        assert_eq!(review_hold(&[rejected.clone(), approved.clone()]), None);
        let mut deferred = base("rev-later");
        deferred.complete(Resolution::Deferred, "", at(3)).unwrap();
        assert_eq!(review_hold(&[approved, deferred.clone()]), None);
        let mut cancelled = base("rev-off");
        cancelled.cancel("not needed", at(1)).unwrap();
        assert_eq!(review_hold(&[cancelled, deferred]), None);
        assert!("bogus".parse::<ReviewStatus>().is_err());
        assert_eq!(
            "in_review".parse::<ReviewStatus>(),
            Ok(ReviewStatus::InReview)
        );
    }
}
