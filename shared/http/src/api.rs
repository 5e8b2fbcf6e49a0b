//! Typed bodies of the API's answers, shared with the CLI, which reads them with the same
//! types. Fields are declared in alphabetical order, the order the JSON objects of the untyped
//! answers had (events and intents, flattened, keep their own order).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use converge_core::pipeline::{BlockKind, CheckOutcome};
use converge_core::policy::{PolicyEvaluation, RiskGateResult};
use converge_core::queue::RoundOutcome;
use converge_core::risk::diagnostics::Diagnostic;
use converge_core::{Event, EventType, Intent, RiskEval, RiskLevel, Status};
use converge_runtime::config::Role;
use converge_store::{CommitLink, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /queue/run`: one entry per queue key a round was run (or tried) on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRunAnswer {
    /// The keys, in queue-key order.
    pub keys: Vec<KeyRound>,
}

/// One queue key's round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRound {
    /// Another worker held the key's lease: nothing was done.
    pub busy: bool,
    /// What the round did with each intent it looked at.
    pub intents: Vec<IntentRound>,
    /// Repository `owner/name` (empty for local intents).
    pub repo: String,
    /// Target branch.
    pub target: String,
    /// Tenant (empty for none).
    pub tenant: String,
}

/// What a round did with one intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRound {
    /// The reason or detail.
    pub detail: String,
    /// The intent.
    pub intent_id: String,
    /// What was done.
    pub outcome: RoundOutcome,
}

/// `GET /auth/whoami`: the caller's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The actor named by the key.
    pub actor: String,
    /// Its role.
    pub role: Role,
    /// Its scopes; `None`: the role alone decides.
    pub scopes: Option<Vec<String>>,
    /// The tenant it is confined to, if any.
    pub tenant: Option<String>,
}

/// `POST /auth/keys/rotate`: the new key, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotated {
    /// The actor of both keys.
    pub actor: String,
    /// How long the old key keeps working, in seconds.
    pub grace_period_seconds: i64,
    /// The new key (the store keeps only its hash).
    pub new_key: String,
    /// What to do next.
    pub note: String,
    /// When the old key stops working.
    pub old_key_expires_at: DateTime<Utc>,
    /// The role of both keys.
    pub role: Role,
    /// The scopes of both keys.
    pub scopes: Option<Vec<String>>,
    /// The tenant of both keys.
    pub tenant: Option<String>,
}

/// `GET /flags`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagList {
    /// Every known flag.
    pub flags: Vec<FlagState>,
}

/// One feature flag as every instance sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagState {
    /// Its default.
    pub default: bool,
    /// What it changes.
    pub description: String,
    /// Its value now.
    pub enabled: bool,
    /// Its name.
    pub name: String,
    /// `operator` (set through the API) or `default`.
    pub source: String,
    /// When an operator last set it.
    pub updated_at: Option<DateTime<Utc>>,
    /// Who last set it.
    pub updated_by: Option<String>,
}

/// `POST /flags/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagSet {
    /// The value set.
    pub enabled: bool,
    /// The flag.
    pub name: String,
    /// Always `operator`.
    pub source: String,
}

/// `GET /queue/summary`: intents counted by status, in SQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSummary {
    /// Count per status name.
    pub by_status: BTreeMap<String, i64>,
    /// READY, VALIDATED and QUEUED intents.
    pub pending_count: i64,
    /// Every intent.
    pub total: i64,
}

/// `POST /queue/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReset {
    /// The queue keys whose lease was cleared.
    pub cleared_leases: Vec<String>,
    /// The intent (`any` for a lease-only reset).
    pub intent_id: String,
    /// Its retries now (absent for `any`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Its status now (absent for `any`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// `POST /intents/{id}/command`: what a queue command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandDone {
    /// The intent.
    pub intent_id: String,
    /// The command (`queue`, `dequeue`, `priority`, `retry`, `status`).
    pub command: String,
    /// `applied` (recorded), `unchanged` (nothing to do) or `answered` (`status`).
    pub result: String,
    /// What happened, in words (the answer to `status`).
    pub answer: String,
    /// The intent's status now.
    pub status: Status,
    /// Its retries now.
    pub retries: u32,
    /// Its priority now.
    pub priority: i64,
}

/// `POST /merge/confirm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeConfirmed {
    /// The intent.
    pub intent_id: String,
    /// The commit recorded as its merge.
    pub merged_commit: String,
    /// Always MERGED.
    pub status: Status,
}

/// `POST /intents`: the intent was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentCreated {
    /// Its id.
    pub intent_id: String,
    /// Always true.
    pub ok: bool,
    /// Always READY.
    pub status: Status,
}

/// A check's result as CI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportedState {
    /// Finished successfully.
    Passed,
    /// Finished unsuccessfully.
    Failed,
    /// Still running.
    Pending,
}

/// `POST /intents/{id}/checks`: the result was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecorded {
    /// The commit it is about.
    pub head_sha: String,
    /// The intent.
    pub intent_id: String,
    /// The check.
    pub name: String,
    /// Always true.
    pub ok: bool,
    /// Its result.
    pub state: ReportedState,
}

/// `POST /intents/{id}/simulate`: the merge as it would be now; nothing is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Simulated {
    /// Files both sides changed, when the merge conflicts.
    pub conflicts: Vec<String>,
    /// Files the intent changes.
    pub files_changed: Vec<String>,
    /// The head simulated.
    pub head_sha: String,
    /// The intent.
    pub intent_id: String,
    /// Whether it merges cleanly.
    pub mergeable: bool,
    /// Its source ref.
    pub source: String,
    /// Its target branch.
    pub target: String,
    /// The target commit simulated onto.
    pub target_sha: String,
}

/// An event as the API lists it: the event and its place in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// Its sequence number (append order).
    pub seq: i64,
}

impl From<&StoredEvent> for EventRecord {
    fn from(stored: &StoredEvent) -> Self {
        EventRecord {
            event: stored.event.clone(),
            seq: stored.seq,
        }
    }
}

/// `GET /events`, `/audit/recent`, `/risk/recent`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    /// The events.
    pub events: Vec<EventRecord>,
    /// `before` for the next page, when this one was full.
    pub next_before: Option<i64>,
}

/// `GET /intents/{id}/events`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentEvents {
    /// The events.
    pub events: Vec<EventRecord>,
}

/// `GET /intents/{id}`: the intent and the commits seen for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentDetail {
    /// The intent's fields.
    #[serde(flatten)]
    pub intent: Intent,
    /// Head, base and merge commits seen.
    pub commit_links: Vec<CommitLink>,
}

/// `POST /intents/{id}/validate`: the decision and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidateAnswer {
    /// Check outcomes read, in order.
    pub checks: Vec<CheckOutcome>,
    /// Whether the intent may advance.
    pub decision: Verdict,
    /// The intent.
    pub intent_id: String,
    /// Why it was blocked (the kind of block), if it was.
    pub kind: Option<BlockKind>,
    /// Policy evaluation, if the run got that far.
    pub policy: Option<PolicyEvaluation>,
    /// Why it was blocked, if it was.
    pub reason: Option<String>,
    /// Risk evaluation, if the run got that far.
    pub risk: Option<RiskEval>,
    /// Risk gate, if the run got that far.
    pub risk_gate: Option<RiskGateResult>,
    /// The level it was judged at.
    pub risk_level: RiskLevel,
    /// The merge simulation, pinned to its commits.
    pub simulation: SimulationPinned,
    /// The trace id every event of the run carries.
    pub trace_id: String,
}

/// A validation's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every gate passed: the intent may advance.
    Validated,
    /// A gate stopped it (`kind` and `reason` say which and why).
    Blocked,
}

/// A merge simulation with the commits it was made on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulationPinned {
    /// Files both sides changed, when it conflicts.
    pub conflicts: Vec<String>,
    /// Files the intent changes.
    pub files_changed: Vec<String>,
    /// The head simulated.
    pub head_sha: String,
    /// Whether it merges cleanly.
    pub mergeable: bool,
    /// The target commit simulated onto.
    pub target_sha: String,
}

/// `GET /queue/state` (and the `queue` of `GET /summary`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// Count per status name.
    pub by_status: BTreeMap<String, usize>,
    /// READY, VALIDATED and QUEUED intents, by priority then id: the first
    /// `PENDING_LISTED` (500) of the queue, so the answer stays small however long it is.
    pub pending: Vec<PendingIntent>,
    /// How many intents are READY, VALIDATED or QUEUED (`pending` lists up to 500 of them).
    pub pending_total: usize,
    /// Every intent counted.
    pub total: usize,
}

/// One actionable intent of [`QueueState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingIntent {
    /// The intent.
    pub intent_id: String,
    /// Its priority (lower first).
    pub priority: i64,
    /// Its failed attempts.
    pub retries: u32,
    /// Its status.
    pub status: Status,
}

/// `GET /queue/inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInspection {
    /// The intents, READY first, then VALIDATED, then QUEUED.
    pub intents: Vec<InspectedIntent>,
    /// The queue keys paused because their environment failed (target checked out or
    /// protected, permission denied, GitHub unreachable, App key not set): nothing of theirs
    /// merges until a round after `until` gets through.
    #[serde(default)]
    pub paused_keys: Vec<PausedKey>,
}

/// One paused queue key of [`QueueInspection`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PausedKey {
    /// The tenant (empty for none).
    pub tenant: String,
    /// The repository (empty for the local one).
    pub repo: String,
    /// The target branch.
    pub target: String,
    /// What failed.
    pub reason: String,
    /// Since when (the first failure in a row).
    pub since: DateTime<Utc>,
    /// The next round, not before.
    pub until: DateTime<Utc>,
    /// Failures in a row.
    pub failures: u32,
}

/// One intent of [`QueueInspection`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectedIntent {
    /// The intent.
    pub intent_id: String,
    /// Its priority.
    pub priority: i64,
    /// Its failed attempts.
    pub retries: u32,
    /// Its declared risk level.
    pub risk_level: RiskLevel,
    /// Its source ref.
    pub source: String,
    /// Its status.
    pub status: Status,
    /// Its target branch.
    pub target: String,
}

/// `GET /risk/review`: an intent's latest evidence and what it calls for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskReview {
    /// Its last 50 events, newest first.
    pub decision_history: Vec<HistoryEntry>,
    /// What the evidence calls for, most severe first.
    pub diagnostics: Vec<Diagnostic>,
    /// The intent.
    pub intent: Intent,
    /// Its id.
    pub intent_id: String,
    /// The latest `policy.evaluated` payload.
    pub policy: Option<Value>,
    /// The latest `risk.evaluated` payload.
    pub risk: Option<Value>,
    /// The latest `simulation.completed` payload.
    pub simulation: Option<Value>,
    /// Its tenant.
    pub tenant_id: Option<String>,
    /// When this was read.
    pub timestamp: DateTime<Utc>,
}

/// One event of [`RiskReview::decision_history`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// What happened.
    pub event_type: EventType,
    /// The event's payload.
    pub payload: Value,
    /// When.
    pub timestamp: DateTime<Utc>,
}

/// `GET /risk/gate/report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    /// Blocked evaluations over all, rounded to 3 places.
    pub block_rate: f64,
    /// The latest 20 blocks.
    pub recent_blocks: Vec<EventRecord>,
    /// Evaluations that blocked.
    pub total_blocked: usize,
    /// Evaluations read (the latest 10,000 at most).
    pub total_evaluations: usize,
}

/// `GET /risk/policy`: the tenant's risk gate policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskPolicy {
    /// The policy document.
    pub policy: Value,
    /// The tenant.
    pub tenant_id: String,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
    /// Its version (one more per change).
    pub version: i64,
}

/// `POST /risk/policy`: the policy was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskPolicySet {
    /// Always true.
    pub ok: bool,
    /// The tenant.
    pub tenant_id: String,
    /// Its new version.
    pub version: i64,
}

/// `GET /summary`: the queue and repository health at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Repository health now (`converge_core::analytics::RepoHealth`).
    pub health: Value,
    /// The queue.
    pub queue: QueueState,
    /// The tenant (none: every tenant).
    pub tenant_id: Option<String>,
    /// When this was read.
    pub timestamp: DateTime<Utc>,
}

/// `GET /audit/verify`: what verifying a tenant's audit chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// The anchor pruning left, if the chain was pruned.
    pub anchor: Option<AuditAnchor>,
    /// Events found sound by this call.
    pub checked: u64,
    /// The first break found, if any.
    pub first_broken: Option<ChainBreak>,
    /// The first position this call checked.
    pub from_index: i64,
    /// The chain's head, if it ever had events.
    pub head: Option<ChainHead>,
    /// When the call stopped at its `limit`: pass this as `after` to go on.
    pub next_after: Option<i64>,
    /// `valid`, `broken`, or `unverifiable` (sound, but the anchor's signature cannot be
    /// checked without `CONVERGE_AUDIT_SIGNING_KEY`).
    pub status: String,
    /// The chain's tenant (empty: events without one).
    pub tenant_id: String,
    /// An event of the tenant that is in no chain (written around it), if any.
    pub unchained_event: Option<String>,
}

/// What pruning left of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// Events pruned from the chain in all.
    pub pruned_events: i64,
    /// `valid`, `invalid`, or `unchecked` (no key configured).
    pub signature: String,
    /// The hash of the last event pruned.
    pub through_hash: String,
    /// The position of the last event pruned.
    pub through_index: i64,
}

/// Where and why a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    /// The position.
    pub chain_index: i64,
    /// The event found there, if any.
    pub event_id: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// A chain's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The hash of the last event.
    pub last_hash: String,
    /// The position the next event takes (events ever appended).
    pub next_index: i64,
}

impl From<&converge_runtime::audit::ChainCheck> for AuditVerification {
    fn from(check: &converge_runtime::audit::ChainCheck) -> Self {
        use converge_runtime::audit::AnchorSignature;
        AuditVerification {
            anchor: check
                .anchor
                .as_ref()
                .map(|(anchor, signature)| AuditAnchor {
                    created_at: anchor.created_at,
                    pruned_events: anchor.pruned_events,
                    signature: match signature {
                        AnchorSignature::Valid => "valid",
                        AnchorSignature::Invalid => "invalid",
                        AnchorSignature::Unchecked => "unchecked",
                    }
                    .to_owned(),
                    through_hash: anchor.through_hash.clone(),
                    through_index: anchor.through_index,
                }),
            checked: check.checked,
            first_broken: check.first_broken.as_ref().map(|b| ChainBreak {
                chain_index: b.chain_index,
                event_id: b.event_id.clone(),
                reason: b.reason.clone(),
            }),
            from_index: check.from_index,
            head: check.head.as_ref().map(|h| ChainHead {
                last_hash: h.last_hash.clone(),
                next_index: h.next_index,
            }),
            next_after: check.next_after,
            status: check.status().to_owned(),
            tenant_id: check.chain.clone(),
            unchained_event: check.unchained_event.clone(),
        }
    }
}

/// `GET /impact/edges`: what an intent's latest risk evaluation says it touches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpactEdges {
    /// When that evaluation ran (`None`: the intent was never evaluated).
    pub evaluated_at: Option<DateTime<Utc>>,
    /// Its direct impacts, as the evaluation recorded them.
    pub impact_edges: Vec<Value>,
    /// The intent.
    pub intent_id: String,
}

/// `GET /diagnostics/recent`: the findings of an intent's latest risk evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskFindings {
    /// When that evaluation ran (`None`: the intent was never evaluated).
    pub evaluated_at: Option<DateTime<Utc>>,
    /// Its findings, in rule order.
    pub findings: Vec<Value>,
    /// The intent.
    pub intent_id: String,
}

/// A freeze as the API shows it: the freeze, and what it does now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FreezeRecord {
    /// The freeze's fields.
    #[serde(flatten)]
    pub freeze: converge_core::freeze::Freeze,
    /// Whether it holds merges right now (its window is open and it is not lifted).
    pub holding: bool,
    /// When its window next closes by itself, if it does.
    pub until: Option<DateTime<Utc>>,
}

impl FreezeRecord {
    /// The record of `freeze` at `now`.
    pub fn at(freeze: converge_core::freeze::Freeze, now: DateTime<Utc>) -> FreezeRecord {
        let holding = freeze.lifted_at.is_none() && freeze.window.covers(now);
        let until = if freeze.lifted_at.is_none() {
            freeze.window.closes_after(now)
        } else {
            None
        };
        FreezeRecord {
            freeze,
            holding,
            until,
        }
    }
}

/// `GET /queue/freezes`, `POST /queue/resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FreezeList {
    /// The freezes, newest first.
    pub freezes: Vec<FreezeRecord>,
}

/// `GET /reviews`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewList {
    /// The tasks, newest first.
    pub reviews: Vec<converge_core::review::ReviewTask>,
}

/// `GET /reviews/summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewSummary {
    /// Tasks per reviewer (assigned ones).
    pub by_reviewer: BTreeMap<String, i64>,
    /// Tasks per status.
    pub by_status: BTreeMap<String, i64>,
    /// Open tasks past their deadline and not escalated yet.
    pub sla_breached: i64,
    /// When counted.
    pub timestamp: DateTime<Utc>,
    /// Every task.
    pub total: i64,
}
