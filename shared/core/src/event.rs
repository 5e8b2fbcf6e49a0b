//! The immutable event record and the one registry of event types.
//!
//! Every decision Converge takes is appended as an [`Event`]; the intents table is a projection
//! of them. Event type names are part of the public contract (API filters, exports, the
//! reference's data), so they live here once, as [`EventType`], and nowhere else.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::intent::UnknownName;
use crate::pipeline::{Clock, IdSource};

macro_rules! event_types {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// Every kind of event, with its stable dotted name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType {
            $( $(#[$doc])* $variant, )*
        }

        impl EventType {
            /// Every registered type, in registry order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            /// The stable dotted name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }
        }
    };
}

event_types! {
    /// An intent was created (payload: the intent).
    IntentCreated => "intent.created",
    /// An operator forced a status (`{from, to}`).
    IntentStatusChanged => "intent.status_changed",
    /// Validation passed.
    IntentValidated => "intent.validated",
    /// Validation blocked; the status is unchanged.
    IntentBlocked => "intent.blocked",
    /// The intent was given up on.
    IntentRejected => "intent.rejected",
    /// The intent was sent back to READY.
    IntentRequeued => "intent.requeued",
    /// The queue revalidated the intent and queued it for merging.
    IntentQueued => "intent.queued",
    /// The intent's change landed on its target.
    IntentMerged => "intent.merged",
    /// A merge attempt failed.
    IntentMergeFailed => "intent.merge_failed",
    /// The intent's queue priority changed (`{priority, previous}`; a pull request's labels).
    IntentPriorityChanged => "intent.priority_changed",
    /// A command was given in a pull request comment (`{command, by, allowed, result}`),
    /// carried out or refused.
    IntentCommanded => "intent.commanded",
    /// A pull request review was submitted or dismissed on the code host (payload: an
    /// `approvals::HostReview`).
    IntentPullRequestReview => "intent.pull_request_review",
    /// The queue skipped the intent because of unmerged dependencies.
    IntentDependencyBlocked => "intent.dependency_blocked",
    /// A commit was linked to the intent.
    IntentLinkedCommit => "intent.linked.commit",
    /// A commit link was removed.
    IntentLinkRemoved => "intent.link.removed",
    /// A pre-evaluation of an intent's description ran.
    IntentPreEvaluated => "intent.pre_evaluated",
    /// A merge simulation finished.
    SimulationCompleted => "simulation.completed",
    /// One required check was read during a validation.
    CheckCompleted => "check.completed",
    /// CI reported a check's result for a commit of an intent.
    CheckReported => "check.reported",
    /// The risk engine evaluated the change.
    RiskEvaluated => "risk.evaluated",
    /// The risk gate ran in shadow mode on request.
    RiskShadowEvaluated => "risk.shadow_evaluated",
    /// A tenant's risk policy changed.
    RiskPolicyUpdated => "risk.policy_updated",
    /// Auto-classification changed the risk level.
    RiskLevelReclassified => "risk.level_reclassified",
    /// The policy gates ran.
    PolicyEvaluated => "policy.evaluated",
    /// A queue run finished.
    QueueProcessed => "queue.processed",
    /// An operator reset an intent's retries.
    QueueReset => "queue.reset",
    /// The intent's queue key was paused: its environment failed (not the change), so no
    /// retry was spent; rounds resume after a backoff.
    QueuePaused => "queue.paused",
    /// An operator froze merges of some queue keys (payload: the freeze).
    QueueFrozen => "queue.frozen",
    /// An operator lifted a freeze (payload: the freeze as lifted).
    QueueUnfrozen => "queue.unfrozen",
    /// A repository health snapshot was taken.
    HealthSnapshot => "health.snapshot",
    /// A change health snapshot was taken.
    HealthChangeSnapshot => "health.change_snapshot",
    /// A health prediction was made.
    HealthPrediction => "health.prediction",
    /// A verification debt snapshot was taken.
    VerificationDebtSnapshot => "verification.debt.snapshot",
    /// Compliance thresholds changed.
    ComplianceThresholdsUpdated => "compliance.thresholds_updated",
    /// An agent policy changed.
    AgentPolicyUpdated => "agent.policy_updated",
    /// An agent action was authorised or refused.
    AgentAuthorized => "agent.authorized",
    /// An embedding was generated.
    EmbeddingGenerated => "embedding.generated",
    /// Embeddings were rebuilt.
    EmbeddingReindexed => "embedding.reindexed",
    /// Two intents were found to conflict semantically.
    SemanticConflictDetected => "semantic_conflict.detected",
    /// A semantic conflict was resolved.
    SemanticConflictResolved => "semantic_conflict.resolved",
    /// A review was requested.
    ReviewRequested => "review.requested",
    /// A review was assigned.
    ReviewAssigned => "review.assigned",
    /// A review was reassigned.
    ReviewReassigned => "review.reassigned",
    /// A review was escalated.
    ReviewEscalated => "review.escalated",
    /// A review was completed.
    ReviewCompleted => "review.completed",
    /// A review was cancelled.
    ReviewCancelled => "review.cancelled",
    /// A review missed its deadline.
    ReviewSlaBreached => "review.sla.breached",
    /// An automated review analysis was produced.
    ReviewAnalysisGenerated => "review.analysis_generated",
    /// An automated review analysis failed.
    ReviewAnalysisFailed => "review.analysis_failed",
    /// Policy thresholds were recalibrated from history.
    CalibrationCompleted => "calibration.completed",
    /// A decisions data set was exported.
    DatasetExported => "dataset.exported",
    /// A webhook delivery was accepted.
    WebhookReceived => "webhook.received",
    /// A GitHub App installation, or its repositories, changed.
    GithubInstallationChanged => "github.installation_changed",
    /// A decision was published to GitHub.
    GithubDecisionPublished => "github.decision_published",
    /// Publishing a decision to GitHub failed.
    GithubDecisionPublishFailed => "github.decision_publish_failed",
    /// GitHub's merge queue asked for checks on a merge group.
    MergeGroupChecksRequested => "merge_group.checks_requested",
    /// GitHub's merge queue dropped a merge group.
    MergeGroupDestroyed => "merge_group.destroyed",
    /// Intake accepted a new intent.
    IntakeAccepted => "intake.accepted",
    /// Intake throttled a new intent.
    IntakeThrottled => "intake.throttled",
    /// Intake refused a new intent.
    IntakeRejected => "intake.rejected",
    /// The intake mode changed.
    IntakeModeChanged => "intake.mode_changed",
    /// A security scan started.
    SecurityScanStarted => "security.scan.started",
    /// A security scan finished.
    SecurityScanCompleted => "security.scan.completed",
    /// A security scan found something critical or high.
    SecurityFindingDetected => "security.finding.detected",
    /// The audit chain was initialised.
    AuditChainInitialized => "audit.chain.initialized",
    /// The audit chain was verified.
    AuditChainVerified => "audit.chain.verified",
    /// The audit chain did not verify.
    AuditChainTamperDetected => "audit.chain.tamper_detected",
    /// A separation-of-duties rule was broken.
    PolicySodViolation => "policy.sod.violation",
    /// A feature flag changed.
    FeatureFlagChanged => "feature_flag.changed",
    /// The coherence harness ran.
    CoherenceEvaluated => "coherence.evaluated",
    /// Coherence disagreed with risk.
    CoherenceInconsistency => "coherence.inconsistency",
    /// The coherence baseline changed.
    CoherenceBaselineUpdated => "coherence.baseline_updated",
    /// A coherence question was suggested.
    CoherenceSuggestion => "coherence.suggestion",
    /// A coherence suggestion was accepted.
    CoherenceSuggestionAccepted => "coherence.suggestion_accepted",
    /// An outbound notification was sent.
    NotificationSent => "notification.sent",
    /// An outbound notification failed.
    NotificationFailed => "notification.failed",
    /// A worker started.
    WorkerStarted => "worker.started",
    /// A worker stopped.
    WorkerStopped => "worker.stopped",
    /// A worker is alive.
    WorkerHeartbeat => "worker.heartbeat",
    /// An authenticated request was allowed.
    AccessGranted => "access.granted",
    /// A request was refused by authentication or authorisation.
    AccessDenied => "access.denied",
    /// An API key was rotated.
    AccessKeyRotated => "access.key_rotated",
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "event type",
                name: s.to_owned(),
            })
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// One immutable record of something Converge decided or observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id.
    pub id: String,
    /// Groups the events of one operation (one validation run shares one trace id).
    pub trace_id: String,
    /// When it happened (UTC).
    pub timestamp: DateTime<Utc>,
    /// What happened.
    pub event_type: EventType,
    /// The intent concerned, if any.
    pub intent_id: Option<String>,
    /// The agent concerned, if any.
    pub agent_id: Option<String>,
    /// The tenant concerned, if any.
    pub tenant_id: Option<String>,
    /// The full record of what happened.
    pub payload: Value,
    /// A short summary of why (scores, reason, trace id).
    pub evidence: Value,
}

impl Event {
    /// An event about one intent, with no agent, no tenant and empty evidence (what tools,
    /// tests and benchmarks record).
    pub fn about_intent(
        id: impl Into<String>,
        trace_id: impl Into<String>,
        timestamp: DateTime<Utc>,
        event_type: EventType,
        intent_id: impl Into<String>,
        payload: Value,
    ) -> Event {
        Event {
            id: id.into(),
            trace_id: trace_id.into(),
            timestamp,
            event_type,
            intent_id: Some(intent_id.into()),
            agent_id: None,
            tenant_id: None,
            payload,
            evidence: Value::Object(serde_json::Map::new()),
        }
    }
}

/// The one place events are made: every event of one operation (a validation run, a
/// webhook delivery, an API write, a queue step) shares its trace id, and takes its id and
/// time from the operation's id source and clock.
pub struct EventFactory<'a> {
    clock: &'a (dyn Clock + Sync),
    ids: &'a (dyn IdSource + Sync),
    trace_id: String,
}

impl<'a> EventFactory<'a> {
    /// A factory whose events carry `trace_id`.
    pub fn new(
        clock: &'a (dyn Clock + Sync),
        ids: &'a (dyn IdSource + Sync),
        trace_id: impl Into<String>,
    ) -> Self {
        EventFactory {
            clock,
            ids,
            trace_id: trace_id.into(),
        }
    }

    /// The trace id every event of this factory carries.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The time now, by the clock the events take theirs from.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// A new event of `event_type`, about `intent_id` (if any) in `tenant_id` (if any).
    pub fn event(
        &self,
        event_type: EventType,
        intent_id: Option<&str>,
        tenant_id: Option<&str>,
        payload: Value,
        evidence: Value,
    ) -> Event {
        Event {
            id: self.ids.new_id(),
            trace_id: self.trace_id.clone(),
            timestamp: self.clock.now(),
            event_type,
            intent_id: intent_id.map(str::to_owned),
            agent_id: None,
            tenant_id: tenant_id.map(str::to_owned),
            payload,
            evidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dotted_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &t in EventType::ALL {
            assert!(seen.insert(t.as_str()), "duplicate name {t}");
            assert!(t.as_str().contains('.'), "{t} is not dotted");
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            assert_eq!(serde_json::to_value(t).ok(), Some(Value::from(t.as_str())));
        }
        assert!("intent.exploded".parse::<EventType>().is_err());
    }
}
