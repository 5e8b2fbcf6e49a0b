//! Intents: a proposed change ("merge `source` into `target`") and its life cycle.
//!
//! Invariant: an intent's status only moves along [`Status::can_move_to`]. The reference
//! implementation lets any code set any status; here MERGED and REJECTED are terminal and
//! every other move is named, so a bug that would resurrect a merged intent is a typed error.
//! A rejected pull request that comes back (reopened, pushed again) is a new intent, not a
//! resurrected one: the record of why the old one was rejected stays true.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where an intent is in its life cycle. "Blocked" is a decision recorded as an event, not a
/// status: a blocked intent keeps its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Created or sent back; waits for validation.
    Ready,
    /// Passed validation against some target tip; waits for the queue.
    Validated,
    /// Revalidated by the queue and waiting to be merged.
    Queued,
    /// Merged into its target. Terminal.
    Merged,
    /// Given up on (failed too often, closed unmerged, destroyed). Terminal.
    Rejected,
}

impl Status {
    /// Every status, in life-cycle order.
    pub const ALL: [Status; 5] = [
        Status::Ready,
        Status::Validated,
        Status::Queued,
        Status::Merged,
        Status::Rejected,
    ];

    /// The stable upper-case name used in events, the API and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "READY",
            Status::Validated => "VALIDATED",
            Status::Queued => "QUEUED",
            Status::Merged => "MERGED",
            Status::Rejected => "REJECTED",
        }
    }

    /// Whether nothing may follow this status.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Merged | Status::Rejected)
    }

    /// Whether the queue still has work to do for an intent in this status.
    pub fn is_actionable(self) -> bool {
        !self.is_terminal()
    }

    /// The legal moves. Staying in a non-terminal status is allowed (a revalidation that
    /// passes keeps a VALIDATED or QUEUED intent where it is).
    pub fn can_move_to(self, to: Status) -> bool {
        use Status::*;
        match (self, to) {
            (Merged | Rejected, _) => false,
            // Validation passes; the intent is given up on; or GitHub reports the pull request
            // merged by someone else (Converge itself only merges what it queued).
            (Ready, Ready | Validated | Rejected | Merged) => true,
            // Nothing reaches the queue without a validation first.
            (Ready, Queued) => false,
            // Queue revalidation passes (→ QUEUED) or fails (→ READY / REJECTED); an operator
            // confirms a merge done outside Converge (→ MERGED).
            (Validated, _) => true,
            // Revalidation of queued work fails, a merge attempt fails, or the merge lands.
            (Queued, Ready | Queued | Merged | Rejected) => true,
            (Queued, Validated) => false,
        }
    }

    /// Checks a move and returns the new status.
    pub fn transition(self, to: Status) -> Result<Status, TransitionError> {
        if self.can_move_to(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    /// Where an operator's queue reset takes an intent (`requested`: the status asked for;
    /// `None` keeps it). REJECTED is final only for the pipeline: an operator may requeue a
    /// rejected intent, as READY (it must pass validation again; nothing skips it). MERGED
    /// stays final. Other moves follow [`Status::transition`].
    pub fn reset_to(self, requested: Option<Status>) -> Result<Status, TransitionError> {
        match (self, requested) {
            (Status::Rejected, None | Some(Status::Ready)) => Ok(Status::Ready),
            (from, to) => from.transition(to.unwrap_or(from)),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "status",
                name: s.to_owned(),
            })
    }
}

/// A status move that the life cycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("intent status cannot move from {from} to {to}")]
pub struct TransitionError {
    /// Where the intent is.
    pub from: Status,
    /// Where the caller wanted it.
    pub to: Status,
}

/// A name that is not one of the known values of an enumeration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{name}'")]
pub struct UnknownName {
    /// What was being named (status, risk level, event type).
    pub kind: &'static str,
    /// The name given.
    pub name: String,
}

/// How much damage a change may do; selects the policy profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    /// Docs, tests, leaf code.
    Low,
    /// The default.
    Medium,
    /// Core code, several components.
    High,
    /// Anything that can take the product down.
    Critical,
}

/// Risk scores at or above which auto-classification picks a level.
pub mod classification {
    /// Lowest risk score classified critical.
    pub const CRITICAL_FROM: f64 = 75.0;
    /// Lowest risk score classified high.
    pub const HIGH_FROM: f64 = 50.0;
    /// Lowest risk score classified medium.
    pub const MEDIUM_FROM: f64 = 25.0;
}

impl RiskLevel {
    /// Every level, lowest first.
    pub const ALL: [RiskLevel; 4] = [
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];

    /// The stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }

    /// Auto-classification of a composite risk score.
    pub fn from_risk_score(score: f64) -> RiskLevel {
        use classification::*;
        if score >= CRITICAL_FROM {
            RiskLevel::Critical
        } else if score >= HIGH_FROM {
            RiskLevel::High
        } else if score >= MEDIUM_FROM {
            RiskLevel::Medium
        } else {
            RiskLevel::Low
        }
    }
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RiskLevel {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RiskLevel::ALL
            .into_iter()
            .find(|level| level.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "risk level",
                name: s.to_owned(),
            })
    }
}

/// Default priority of a new intent; lower numbers are processed first.
pub const DEFAULT_PRIORITY: i64 = 3;

/// A proposed change and everything Converge knows about it. Serialises with the reference's
/// field names and order (`Intent.to_dict()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// Unique id: `<owner>/<repo>:pr-<n>` for pull requests, `api-<hex12>` for API-created ones.
    pub id: String,
    /// Source ref (branch) to merge.
    pub source: String,
    /// Target ref (branch) to merge into.
    pub target: String,
    /// Life-cycle status.
    pub status: Status,
    /// Creation time (UTC); never changes.
    pub created_at: DateTime<Utc>,
    /// Who created it (API actor, `github-webhook`, …).
    pub created_by: String,
    /// Declared (or reclassified) risk level.
    pub risk_level: RiskLevel,
    /// Queue priority; lower first.
    pub priority: i64,
    /// Free-form description (`problem_statement`, `objective`, …).
    pub semantic: Map<String, Value>,
    /// Free-form technical data; see [`Intent::scope_hints`] and friends for the keys read.
    pub technical: Map<String, Value>,
    /// Checks named at creation; informational (required checks come from the policy profile).
    pub checks_required: Vec<String>,
    /// Intents that must be MERGED before this one is processed.
    pub dependencies: Vec<String>,
    /// Failed attempts so far.
    pub retries: u32,
    /// Tenant owning the intent.
    pub tenant_id: Option<String>,
    /// Plan grouping related intents.
    pub plan_id: Option<String>,
    /// `human`, `agent`, `integration`, `api`, …
    pub origin_type: String,
}

impl Intent {
    /// A READY intent with the reference's defaults for everything not given.
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        target: impl Into<String>,
        created_at: DateTime<Utc>,
    ) -> Intent {
        Intent {
            id: id.into(),
            source: source.into(),
            target: target.into(),
            status: Status::Ready,
            created_at,
            created_by: "system".to_owned(),
            risk_level: RiskLevel::Medium,
            priority: DEFAULT_PRIORITY,
            semantic: Map::new(),
            technical: Map::new(),
            checks_required: Vec::new(),
            dependencies: Vec::new(),
            retries: 0,
            tenant_id: None,
            plan_id: None,
            origin_type: "human".to_owned(),
        }
    }

    /// `technical.scope_hint`: the parts of the code base the author says the change touches.
    /// Non-string entries are ignored.
    pub fn scope_hints(&self) -> Vec<String> {
        string_list(self.technical.get("scope_hint"))
    }

    /// `technical.repo` (`owner/name`), when the intent comes from GitHub.
    pub fn repo(&self) -> Option<&str> {
        self.technical.get("repo").and_then(Value::as_str)
    }

    /// `technical.initial_base_commit`: the head commit the intent proposes (set when it was
    /// created, moved by a push to its branch).
    pub fn head_sha(&self) -> Option<&str> {
        self.technical
            .get("initial_base_commit")
            .and_then(Value::as_str)
    }

    /// `technical.draft`: the change is a draft (a draft pull request) and waits outside the
    /// queue until it is marked ready.
    pub fn is_draft(&self) -> bool {
        self.technical.get("draft").and_then(Value::as_bool) == Some(true)
    }

    /// Whether the intent stands for a merge group of the code host's own merge queue
    /// (`technical.webhook_event == "merge_group"`): Converge validates it and reports, and the
    /// host merges it — Converge never does.
    pub fn is_merge_group(&self) -> bool {
        self.technical.get("webhook_event").and_then(Value::as_str) == Some("merge_group")
    }

    /// Moves the intent to `to` if the life cycle allows it.
    pub fn move_to(&mut self, to: Status) -> Result<(), TransitionError> {
        self.status = self.status.transition(to)?;
        Ok(())
    }
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_requeues_a_rejected_intent_only_as_ready_and_never_a_merged_one() {
        assert_eq!(Status::Rejected.reset_to(None), Ok(Status::Ready));
        assert_eq!(
            Status::Rejected.reset_to(Some(Status::Ready)),
            Ok(Status::Ready)
        );
        for skipping in [
            Status::Validated,
            Status::Queued,
            Status::Merged,
            Status::Rejected,
        ] {
            assert!(
                Status::Rejected.reset_to(Some(skipping)).is_err(),
                "{skipping}"
            );
        }
        for to in [None, Some(Status::Ready), Some(Status::Rejected)] {
            assert!(Status::Merged.reset_to(to).is_err(), "{to:?}");
        }
        // Other statuses move as the life cycle allows.
        assert_eq!(Status::Queued.reset_to(None), Ok(Status::Queued));
        assert_eq!(
            Status::Queued.reset_to(Some(Status::Ready)),
            Ok(Status::Ready)
        );
        assert!(Status::Ready.reset_to(Some(Status::Queued)).is_err());
    }

    #[test]
    fn terminal_statuses_refuse_every_move() {
        for terminal in [Status::Merged, Status::Rejected] {
            for to in Status::ALL {
                assert_eq!(
                    terminal.transition(to),
                    Err(TransitionError { from: terminal, to })
                );
            }
        }
    }

    #[test]
    fn the_happy_path_is_legal() {
        let path = [
            Status::Ready,
            Status::Validated,
            Status::Queued,
            Status::Merged,
        ];
        for pair in path.windows(2) {
            assert_eq!(pair[0].transition(pair[1]), Ok(pair[1]));
        }
        assert!(
            Status::Ready.transition(Status::Queued).is_err(),
            "queueing needs validation"
        );
        assert!(Status::Queued.transition(Status::Validated).is_err());
        // A merge observed on GitHub is recorded whatever the intent's progress.
        assert_eq!(Status::Ready.transition(Status::Merged), Ok(Status::Merged));
    }

    #[test]
    fn classification_boundaries_are_inclusive() {
        assert_eq!(RiskLevel::from_risk_score(24.9), RiskLevel::Low);
        assert_eq!(RiskLevel::from_risk_score(25.0), RiskLevel::Medium);
        assert_eq!(RiskLevel::from_risk_score(50.0), RiskLevel::High);
        assert_eq!(RiskLevel::from_risk_score(75.0), RiskLevel::Critical);
    }

    #[test]
    fn names_round_trip() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        assert!("BLOCKED".parse::<Status>().is_err());
        assert_eq!("high".parse::<RiskLevel>(), Ok(RiskLevel::High));
    }
}
