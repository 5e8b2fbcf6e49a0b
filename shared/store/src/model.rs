//! The records the store reads and writes, beyond the domain's own types.

use chrono::{DateTime, Utc};
use converge_core::queue::QueueKey;
use converge_core::{Event, EventType, Status};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A number that only grows per queue key, handed out with each lease. A write guarded by a
/// token older than the key's current one is refused, so a worker that lost its lease (paused,
/// slow, partitioned) cannot merge or finish an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FencingToken(pub(crate) i64);

impl FencingToken {
    /// The token's value.
    pub fn value(self) -> i64 {
        self.0
    }
}

/// Proof that a worker held the lease of a queue key. Only the store creates one (by
/// acquiring or extending), so a function that takes `&Lease` can only be called by a holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub(crate) key: QueueKey,
    pub(crate) holder: String,
    pub(crate) token: FencingToken,
    pub(crate) expires_at: DateTime<Utc>,
}

impl Lease {
    /// The queue key held.
    pub fn key(&self) -> &QueueKey {
        &self.key
    }
    /// Who holds it.
    pub fn holder(&self) -> &str {
        &self.holder
    }
    /// The fencing token of this holding.
    pub fn token(&self) -> FencingToken {
        self.token
    }
    /// When it lapses unless extended.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
}

/// What the lease table says about a key (for `queue inspect` and the sweep).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseState {
    /// The key.
    pub key: QueueKey,
    /// Current holder, if held (possibly expired).
    pub holder: Option<String>,
    /// Last token handed out.
    pub token: i64,
    /// When the current holding started.
    pub acquired_at: Option<DateTime<Utc>>,
    /// When the current holding lapses.
    pub expires_at: Option<DateTime<Utc>>,
    /// Set while the key is paused by a failure of its environment.
    pub hold: Option<KeyHold>,
}

/// A document a queue key keeps in its lease row, written only by the lease's holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDocument {
    /// The key's tested queue (`core::train::Train`, JSON).
    Train,
    /// The last valid `.github/converge.toml` read on the key's target.
    RepoConfig,
}

impl KeyDocument {
    /// Sets it (`$6`) in the row of a key still held (`$1`–`$3` the key, `$4` holder, `$5`
    /// token). Static per document: no SQL is put together at run time.
    pub(crate) fn update_sql(self) -> &'static str {
        match self {
            KeyDocument::Train => {
                "UPDATE queue_leases SET train = $6 \
                 WHERE tenant = $1 AND repo = $2 AND target = $3 AND holder = $4 AND token = $5"
            }
            KeyDocument::RepoConfig => {
                "UPDATE queue_leases SET repo_config = $6 \
                 WHERE tenant = $1 AND repo = $2 AND target = $3 AND holder = $4 AND token = $5"
            }
        }
    }

    /// Reads it from a key's row (`$1`–`$3`).
    pub(crate) fn select_sql(self) -> &'static str {
        match self {
            KeyDocument::Train => {
                "SELECT train FROM queue_leases WHERE tenant = $1 AND repo = $2 AND target = $3"
            }
            KeyDocument::RepoConfig => {
                "SELECT repo_config FROM queue_leases WHERE tenant = $1 AND repo = $2 AND target = $3"
            }
        }
    }
}

/// A queue key paused because its environment failed (not its changes): no round runs before
/// `until`; the next round that gets through clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyHold {
    /// What failed, as the port said it.
    pub reason: String,
    /// The first failure of this run of them.
    pub since: DateTime<Utc>,
    /// No round before then (the backoff).
    pub until: DateTime<Utc>,
    /// Failures in a row.
    pub failures: u32,
}

/// A commit observed for an intent (head, base or merge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitLink {
    /// The intent.
    pub intent_id: String,
    /// Repository `owner/name`.
    pub repo: String,
    /// Commit sha.
    pub sha: String,
    /// `head`, `base` or `merge`.
    pub role: String,
    /// When Converge saw it.
    pub observed_at: DateTime<Utc>,
}

/// A message to send after the transaction commits (an SQS message, a GitHub publication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Where it goes (`queue`, `github.publish`, …).
    pub topic: String,
    /// What to send.
    pub payload: Value,
}

/// An outbox row claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    /// Row id (append order).
    pub seq: i64,
    /// Destination.
    pub topic: String,
    /// Message.
    pub payload: Value,
    /// Claims so far, this one included.
    pub attempts: i64,
}

/// An intent as stored, with the version of its row: the number of events applied to it (1
/// once created). A decision made from it commits only while the row is still at this version
/// ([`Commit::expect`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredIntent {
    /// The intent.
    pub intent: converge_core::Intent,
    /// The row's version.
    pub version: i64,
}

impl AsRef<converge_core::Intent> for StoredIntent {
    fn as_ref(&self) -> &converge_core::Intent {
        &self.intent
    }
}

impl StoredIntent {
    /// The expectation that the intent is still as read.
    pub fn expected(&self) -> Expected {
        Expected {
            intent_id: self.intent.id.clone(),
            version: self.version,
        }
    }
}

/// What a commit expects of an intent's row when it runs: the version it read, or absence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The intent.
    pub intent_id: String,
    /// The version read; 0 for "no such intent" (a create).
    pub version: i64,
}

impl Expected {
    /// The intent must not exist yet.
    pub fn absent(intent_id: impl Into<String>) -> Expected {
        Expected {
            intent_id: intent_id.into(),
            version: 0,
        }
    }
}

/// Everything one transaction writes. Events are appended in order; each event that changes
/// an intent updates the projection in the same transaction; outbox rows and commit links go
/// with them. With a `guard`, the transaction commits only if that lease is still current;
/// with expectations, only if each intent named is still at the version read.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Events to append.
    pub events: Vec<Event>,
    /// Commit links to record (duplicates ignored).
    pub commit_links: Vec<CommitLink>,
    /// Messages to send once committed.
    pub outbox: Vec<OutboxMessage>,
    /// The lease that must still be held.
    pub guard: Option<Lease>,
    /// Intents that must still be as the decision read them (otherwise
    /// [`crate::StoreError::Stale`] and nothing is written).
    pub expect: Vec<Expected>,
    /// A webhook delivery this commit handles: recorded in the same transaction, and if the
    /// delivery id is already recorded nothing is written ([`crate::StoreError::AlreadyDelivered`]),
    /// so concurrent or repeated deliveries change state once.
    pub delivery: Option<Delivery>,
    /// Freezes set or lifted with the events that record it.
    pub freezes: Vec<FreezeWrite>,
    /// Review tasks requested or changed with the events that record it.
    pub reviews: Vec<ReviewWrite>,
    /// Compliance thresholds set with the event that records it.
    pub thresholds: Vec<DocumentWrite>,
    /// Risk policies set with the event that records it.
    pub risk_policies: Vec<DocumentWrite>,
    /// Intake modes set (or given back to auto) with the event that records it.
    pub intake: Vec<IntakeWrite>,
    /// Agent policies set with the event that records it.
    pub agent_policies: Vec<AgentPolicyWrite>,
}

impl Commit {
    /// Whether the commit appends only events, commit links and outbox rows: no lease, no
    /// expectations, no delivery and no other table's rows.
    pub fn is_plain(&self) -> bool {
        self.guard.is_none()
            && self.expect.is_empty()
            && self.delivery.is_none()
            && self.freezes.is_empty()
            && self.reviews.is_empty()
            && self.thresholds.is_empty()
            && self.risk_policies.is_empty()
            && self.intake.is_empty()
            && self.agent_policies.is_empty()
    }
}

/// One webhook delivery's decision, taken with others in one transaction
/// (`Store::decide_for_deliveries`): `decide` plans from the intent the delivery is about as
/// the group's earlier deliveries left it (`None`: no such intent, or the delivery is about
/// none), and answers what to tell the delivery's sender.
pub struct DeliveryDecision<T> {
    /// The intent the delivery is about (locked while the group is written), if any.
    pub intent_id: Option<String>,
    /// The delivery, recorded once.
    pub delivery: Delivery,
    /// Plans the delivery's commit: events, commit links and outbox rows only, and events that
    /// change no intent but this one.
    #[allow(clippy::type_complexity)]
    pub decide: Box<dyn FnOnce(Option<&StoredIntent>) -> (Commit, T) + Send>,
}

impl<T> std::fmt::Debug for DeliveryDecision<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryDecision")
            .field("intent_id", &self.intent_id)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

/// An agent's policy to store: new (`expected_version: None`, and none may be stored yet), or
/// replacing the version it was read at (a change made meanwhile fails the commit:
/// [`crate::StoreError::Conflict`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentPolicyWrite {
    /// The agent.
    pub agent_id: String,
    /// The tenant (`""`: intents without one).
    pub tenant: String,
    /// The policy (`converge_core::agents::AgentPolicy`), as stored.
    pub policy: serde_json::Value,
    /// The version read, for a replacement.
    pub expected_version: Option<i64>,
}

/// An operator's intake mode for a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntakeOverride {
    /// `open`, `throttle` or `pause`.
    pub mode: String,
    /// Why.
    pub reason: String,
    /// Who set it.
    pub set_by: String,
    /// When.
    pub set_at: DateTime<Utc>,
}

/// A tenant's intake mode to store (`None`: back to auto).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeWrite {
    /// The tenant (`""`: the global mode).
    pub tenant: String,
    /// The mode, or `None` for auto.
    pub set: Option<IntakeOverride>,
}

/// A tenant's document (compliance thresholds, risk policy) to store: new
/// (`expected_version: None`, and none may be stored yet), or replacing the version it was read
/// at (a change made meanwhile fails the commit: [`crate::StoreError::Conflict`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentWrite {
    /// The tenant (`""`: the global one, or intents without a tenant).
    pub tenant: String,
    /// The document, as stored.
    pub data: serde_json::Value,
    /// The version read, for a replacement.
    pub expected_version: Option<i64>,
}

/// A review task to write: new (`expected_version: None`), or changed from the version it
/// was read at (a task changed meanwhile fails the commit: [`crate::StoreError::Conflict`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewWrite {
    /// The task as it is to be.
    pub task: converge_core::review::ReviewTask,
    /// The version it was read at, for a change.
    pub expected_version: Option<i64>,
}

/// A review task with its row's version.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReview {
    /// The task.
    pub task: converge_core::review::ReviewTask,
    /// Its version (1 when requested, one more with every change).
    pub version: i64,
}

/// Which review tasks to list (newest first).
#[derive(Debug, Clone, Default)]
pub struct ReviewFilter {
    /// Only this tenant's.
    pub tenant_id: Option<String>,
    /// Only this intent's.
    pub intent_id: Option<String>,
    /// Only in this status.
    pub status: Option<converge_core::review::ReviewStatus>,
    /// Only this reviewer's.
    pub reviewer: Option<String>,
    /// Only open tasks (pending, assigned, in review, escalated), soonest due first.
    pub open_only: bool,
    /// At most this many.
    pub limit: u32,
}

/// Review tasks counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewCounts {
    /// Per status name.
    pub by_status: std::collections::BTreeMap<String, i64>,
    /// Per reviewer (assigned tasks only).
    pub by_reviewer: std::collections::BTreeMap<String, i64>,
    /// Open tasks past their deadline, not escalated yet.
    pub overdue: i64,
}

/// A change to the queue's freezes, written by a [`Commit`].
#[derive(Debug, Clone, PartialEq)]
pub enum FreezeWrite {
    /// A new freeze.
    Put(converge_core::freeze::Freeze),
    /// Lifts a freeze; one already lifted fails the commit ([`crate::StoreError::Conflict`]).
    Lift {
        /// The freeze.
        id: String,
        /// Who lifts it.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// The result of recording a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// First time this delivery id is seen: handle it.
    New,
    /// Seen before with the same body: do nothing.
    Duplicate,
    /// Seen before with a different body: do nothing, and say so.
    BodyMismatch,
}

/// A stored API key (only its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// SHA-256 of the key, hex.
    pub key_hash: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// Who uses it.
    pub actor: String,
    /// Tenant it is confined to.
    pub tenant_id: Option<String>,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working (rotation grace), if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Where it was configured: `None` for keys made through the API or `CONVERGE_API_KEYS`,
    /// `secret:<arn>` for keys seeded from a Secrets Manager secret (which revokes the keys it
    /// no longer lists).
    pub origin: Option<String>,
}

/// Where a page of intents starts (exclusive), in queue order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentCursor {
    /// Priority of the last row seen.
    pub priority: i64,
    /// Creation time of the last row seen.
    pub created_at: DateTime<Utc>,
    /// Id of the last row seen.
    pub id: String,
}

impl IntentCursor {
    /// The cursor of the page that follows `last`.
    pub fn after(last: &converge_core::Intent) -> IntentCursor {
        IntentCursor {
            priority: last.priority,
            created_at: last.created_at,
            id: last.id.clone(),
        }
    }
}

/// Which intents to list.
#[derive(Debug, Clone, Default)]
pub struct IntentFilter {
    /// Any of these statuses (all when empty).
    pub statuses: Vec<Status>,
    /// Only this tenant.
    pub tenant_id: Option<String>,
    /// Only this target branch.
    pub target: Option<String>,
    /// Start after this row.
    pub after: Option<IntentCursor>,
    /// At most this many (0 = the default of 100).
    pub limit: u32,
}

/// Which events to list (newest first).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events of this intent.
    pub intent_id: Option<String>,
    /// Only this type.
    pub event_type: Option<EventType>,
    /// Only this tenant.
    pub tenant_id: Option<String>,
    /// Only at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only at or before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only events appended before this sequence number (cursor).
    pub before_seq: Option<i64>,
    /// At most this many (0 = the default of 200).
    pub limit: u32,
}

/// An event with its position in the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    /// Append order, unique.
    pub seq: i64,
    /// The event.
    pub event: Event,
}

/// How many intents of a queue key are in a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntentCount {
    /// The queue key (tenant, repository, target).
    pub key: QueueKey,
    /// The status.
    pub status: Status,
    /// How many.
    pub count: i64,
}

/// A feature flag an operator set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlagSetting {
    /// Flag name.
    pub name: String,
    /// Value.
    pub enabled: bool,
    /// When it was set.
    pub updated_at: DateTime<Utc>,
    /// Who set it.
    pub updated_by: String,
}

/// A per-tenant policy document with its version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionedDocument {
    /// The document.
    pub data: Value,
    /// 1 for the first write, +1 for each later one.
    pub version: i64,
    /// Last write.
    pub updated_at: DateTime<Utc>,
}

/// What the queue needs to know of an intent's past decisions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecisionTrail {
    /// `intent.validated` and `intent.blocked` events, newest first.
    pub decisions: Vec<StoredEvent>,
    /// Sequence number of the latest event that calls for a new judgement: a reported check
    /// result (`check.reported`) or an operator's reset (`queue.reset`, a rejected intent
    /// requeued), if any.
    pub last_new_evidence: Option<i64>,
}

impl DecisionTrail {
    /// Whether a check result was reported, or an operator reset the intent, after the latest
    /// decision.
    ///
    /// A decision records the latest evidence its round had read (`evidence.evidence_seq`):
    /// a result reported while the round was deciding commits before the decision does, and
    /// must still count as new. A decision without it is compared by its own position.
    pub fn new_evidence_since(&self) -> bool {
        let decided = self
            .decisions
            .first()
            .map(|d| match d.event.evidence.get(EVIDENCE_SEQ) {
                Some(serde_json::Value::Null) => 0,
                Some(seen) => seen.as_i64().unwrap_or(d.seq),
                None => d.seq,
            });
        match (self.last_new_evidence, decided) {
            (Some(report), Some(decided)) => report > decided,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// The evidence field of a decision naming the latest new evidence (`last_new_evidence`) the
/// deciding round had read; `null` when there was none.
pub const EVIDENCE_SEQ: &str = "evidence_seq";

/// A webhook delivery, identified by the sender's delivery id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `X-GitHub-Delivery`.
    pub id: String,
    /// `X-GitHub-Event`.
    pub event_name: String,
    /// SHA-256 of the raw body, hex.
    pub body_sha256: String,
}

/// What became of a claim on an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is this request's now: handle it, then complete or release the key.
    New,
    /// The same request was answered before: this is its answer.
    Answered {
        /// HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
    /// The same request is being handled now (by another connection or instance).
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// One stored event of an audit chain, as verification reads it.
#[derive(Debug, Clone)]
pub struct ChainedEvent {
    /// Append order.
    pub seq: i64,
    /// Its position in its tenant's chain.
    pub chain_index: i64,
    /// The hash stored with it.
    pub chain_hash: String,
    /// The event, or why the stored row does not read as one (a hand-edited row).
    pub event: Result<Event, String>,
}

/// Events of one type on one UTC day (from the maintained tallies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyTally {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// The type.
    pub event_type: converge_core::EventType,
    /// How many.
    pub events: i64,
    /// Of `simulation.completed`, how many merged cleanly.
    pub mergeable: i64,
}

/// A queue with intents waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueAge {
    /// The queue.
    pub key: converge_core::queue::QueueKey,
    /// Intents waiting in it.
    pub waiting: i64,
    /// When the oldest of them was created.
    pub oldest: DateTime<Utc>,
}
