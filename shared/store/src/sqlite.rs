//! The SQLite store (embedded default and fallback). Write transactions start with
//! `BEGIN IMMEDIATE`, which takes the database's write lock up front: concurrent writers queue
//! behind it (busy timeout) instead of deadlocking on a read-to-write upgrade, which gives the
//! same serialisation PostgreSQL's row locks give. Timestamps are fixed-width UTC text, so text
//! order is time order.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use converge_core::pipeline::Clock;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use crate::StoreError;
use crate::backend::{insert_intent_sql, store_operations};

/// How long a writer waits for the write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// The one timestamp format: microseconds, always six digits, `Z`.
const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Converge state in a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    clock: Arc<dyn Clock + Send + Sync>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// A store over the file at `path` (created, with its folder, if missing).
    pub fn open(
        path: &Path,
        max_connections: u32,
        clock: Arc<dyn Clock + Send + Sync>,
    ) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Config(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| StoreError::Config(format!("bad SQLite path {}: {e}", path.display())))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_lazy_with(options);
        Ok(SqliteStore { pool, clock })
    }

    /// Applies the pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrations::sqlite().run(&self.pool).await?;
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The underlying pool (backfill and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn now(&self) -> DateTime<Utc> {
        crate::micros(self.clock.now())
    }
}

async fn begin_write(
    pool: &SqlitePool,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// Encodes a timestamp as fixed-width UTC text.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.format(TS_FORMAT).to_string()
}

/// Decodes a timestamp written by [`ts`].
pub(crate) fn parse_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    NaiveDateTime::parse_from_str(text, TS_FORMAT)
        .map(|t| t.and_utc())
        .map_err(|e| crate::error::corrupt(format!("timestamp '{text}': {e}")))
}

fn get_ts(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    let text: String = row.try_get(column)?;
    parse_ts(&text)
}

fn get_opt_ts(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let text: Option<String> = row.try_get(column)?;
    text.as_deref().map(parse_ts).transpose()
}

store_operations!(
    SqliteStore,
    sqlx::Sqlite,
    lock = "",
    skip_locked = "",
    lock_projection = "SELECT 1"
);
