//! Typed bodies of the API's answers, shared with the CLI, which reads them with the same
//! types. Fields are declared in alphabetical order: the order the JSON objects of the
//! original answers had, so a typed answer is byte for byte what it replaced.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use converge_core::Status;
use converge_core::queue::RoundOutcome;
use converge_runtime::config::Role;
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
