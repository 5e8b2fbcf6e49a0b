//! Typed bodies of the API's answers, shared with the CLI, which reads them with the same
//! types. Fields are declared in alphabetical order: the order the JSON objects of the
//! original answers had, so a typed answer is byte for byte what it replaced.

use converge_core::queue::RoundOutcome;
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
