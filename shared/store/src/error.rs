//! Store errors: what went wrong, in terms a caller can act on.

use converge_core::projection::ProjectionError;
use converge_core::queue::QueueKey;

/// Why a store operation failed. The transaction it ran in, if any, was rolled back.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now (connection refused or lost, pool exhausted or
    /// closed, the server shutting down): the operation may succeed when tried again later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The write collides with a row already there (a unique key); nothing was written.
    #[error("the write conflicts with an existing row: {0}")]
    Conflict(String),
    /// The database refused the operation.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// A migration could not be applied.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The lease guarding a write was lost (expired and taken over, cleared, or released).
    #[error("lease on {key} is no longer held with fencing token {token}")]
    StaleLease {
        /// The queue key.
        key: QueueKey,
        /// The token the caller held.
        token: i64,
    },
    /// The commit's webhook delivery was already recorded; nothing was written.
    #[error("delivery {delivery_id} was already handled{}", if *same_body { "" } else { " with a different body" })]
    AlreadyDelivered {
        /// The delivery id.
        delivery_id: String,
        /// Whether the recorded body has the same hash (a redelivery) or not (a reused id).
        same_body: bool,
    },
    /// The commit expected an intent at a version (or absent) and found it changed: the
    /// decision was made from a read that is no longer current. Nothing was written; decide
    /// again from a fresh read.
    #[error(
        "intent {intent_id} changed since it was read (expected version {expected}, found {found})"
    )]
    Stale {
        /// The intent.
        intent_id: String,
        /// The version the commit expected (0: no such intent).
        expected: i64,
        /// The version found (0: no such intent).
        found: i64,
    },
    /// An event would move an intent illegally; nothing was written.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// A stored value does not decode (hand-edited row, foreign data).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Pruning met an audit chain that does not verify (or an anchor not signed with the
    /// configured key) and removed nothing: pruning would erase the evidence.
    #[error("the audit chain of tenant '{chain}' does not verify: {reason}; nothing was pruned")]
    ChainBroken {
        /// The chain (tenant; empty for events without one).
        chain: String,
        /// What is wrong.
        reason: String,
    },
    /// The store settings are unusable (backend name, URL, missing DSN).
    #[error("store configuration: {0}")]
    Config(String),
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl From<sqlx::Error> for StoreError {
    /// Sorts a driver error into what a caller acts on: unreachable (try again later), a
    /// conflict with an existing row, or refused.
    fn from(error: sqlx::Error) -> Self {
        if is_unreachable(&error) {
            return StoreError::Unavailable(error.to_string());
        }
        match &error {
            sqlx::Error::Database(e) if e.kind() == sqlx::error::ErrorKind::UniqueViolation => {
                StoreError::Conflict(e.message().to_owned())
            }
            _ => StoreError::Database(error),
        }
    }
}

fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        // PostgreSQL: connection exceptions (08…), the database is gone (3D000), insufficient
        // resources such as a full disk (53…), the server is shutting down or restarting
        // (57P0…). SQLite (numeric result codes): a full disk (13) or an I/O error (10, with
        // its extended codes): space or the device may come back.
        sqlx::Error::Database(e) => e.code().is_some_and(|code| match code.parse::<u32>() {
            Ok(sqlite_code) if code.len() < 5 => matches!(sqlite_code & 0xff, 10 | 13),
            _ => {
                code.starts_with("08")
                    || code == "3D000"
                    || code.starts_with("53")
                    || code.starts_with("57P0")
            }
        }),
        _ => false,
    }
}
