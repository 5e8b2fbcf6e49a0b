//! The SQLite store (embedded default and fallback). Every write goes through one writer
//! connection, so a process's writers take turns on it; write transactions start with
//! `BEGIN IMMEDIATE`, which takes the database's write lock up front: writers of other
//! processes queue behind it (busy timeout) instead of deadlocking on a read-to-write upgrade,
//! which gives the same serialisation PostgreSQL's row locks give. Writers that queue behind
//! each other share a transaction and its sync to disk (`group_commit`). Reads use the other
//! connections. Timestamps are fixed-width UTC text, so text order is time order.

mod group_commit;

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
use crate::backend::{
    insert_intent_sql, insert_intents_prefix, intent_overwrite_sql, store_operations,
};
use group_commit::{GroupWriter, WriteTx};

/// How long a writer waits for the write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// The one timestamp format: microseconds, always six digits, `Z`.
const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Converge state in a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// One connection for write transactions, shared by the writers of a group.
    writer: GroupWriter,
    clock: Arc<dyn Clock + Send + Sync>,
    /// The audit chain heads this process last wrote, by chain: a commit links its events to
    /// the cached head and moves the head on only if the row still holds it (see
    /// [`append_log_tail`]), which saves reading the head first.
    chain_heads:
        Arc<std::sync::Mutex<std::collections::HashMap<String, converge_core::audit::Head>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// How SQLite makes a commit durable (`CONVERGE_SQLITE_SYNCHRONOUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteDurability {
    /// `synchronous=FULL`, the default (as the original runs): a commit that returned
    /// survives a power loss, at the cost of a sync of the log per commit.
    #[default]
    Full,
    /// `synchronous=NORMAL`: a commit survives the process crashing; the last ones may be
    /// lost if the machine loses power.
    Normal,
}

impl SqliteDurability {
    /// The setting's value: `full` or `normal`.
    pub fn parse(value: &str) -> Option<SqliteDurability> {
        match value.trim().to_ascii_lowercase().as_str() {
            "full" => Some(SqliteDurability::Full),
            "normal" => Some(SqliteDurability::Normal),
            _ => None,
        }
    }
}

impl SqliteStore {
    /// A store over the file at `path` (created, with its folder, if missing), with full
    /// durability.
    pub fn open(
        path: &Path,
        max_connections: u32,
        clock: Arc<dyn Clock + Send + Sync>,
    ) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, max_connections, SqliteDurability::Full, clock)
    }

    /// [`SqliteStore::open`] with a chosen durability.
    pub fn open_with(
        path: &Path,
        max_connections: u32,
        durability: SqliteDurability,
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
            .synchronous(match durability {
                SqliteDurability::Full => SqliteSynchronous::Full,
                SqliteDurability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(BUSY_TIMEOUT)
            // 256 KiB of page cache per connection, not SQLite's 2 MiB: each connection keeps
            // its own, and the kernel caches the file for all of them anyway (a page read past
            // this cache is a copy from the kernel's, not a disk read).
            .pragma("cache_size", "-256")
            .foreign_keys(true);
        let pool_of = |connections: u32| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .min_connections(0)
                .acquire_timeout(BUSY_TIMEOUT)
                // No ping before handing a connection out (sqlx's default): a file cannot be
                // cut while the connection sits idle, and sqlx pings it as it is returned.
                .test_before_acquire(false)
                .before_acquire(|conn, _| Box::pin(async move { Ok(crate::reusable(conn)) }))
                // And on release: a connection left inside a transaction holds the database's
                // write lock while it sits idle.
                .after_release(|conn, _| Box::pin(async move { Ok(crate::reusable(conn)) }))
                .connect_lazy_with(options.clone())
        };
        Ok(SqliteStore {
            pool: pool_of(max_connections.max(1)),
            writer: GroupWriter::new(pool_of(1)),
            clock,
            chain_heads: Arc::default(),
        })
    }

    /// Applies the pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrations::sqlite().run(&self.pool).await?;
        // Rows written before the audit chain existed join it now, before this process writes.
        self.seal_unchained_events().await?;
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

    /// The connection writes go through: the writer, so that a process's writes wait their
    /// turn in the pool's queue and not in SQLite's busy handler.
    fn writer(&self) -> &SqlitePool {
        self.writer.pool()
    }

    fn now(&self) -> DateTime<Utc> {
        crate::micros(self.clock.now())
    }
}

/// A write transaction on the writer connection: this process's writers queue for it in
/// turn instead of meeting SQLite's write lock, whose busy handler sleeps in steps of up to
/// 100 ms (the long tail of concurrent writes), and those that queue commit together. Other
/// processes still meet the lock.
async fn begin_write(store: &SqliteStore) -> Result<WriteTx, StoreError> {
    store.writer.begin().await
}

/// Encodes a timestamp as fixed-width UTC text.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.format(TS_FORMAT).to_string()
}

/// Decodes a timestamp written by [`ts`]. The format is fixed, so the fields are read by
/// position (a general-purpose parser costs more than the rest of a row's decoding).
pub(crate) fn parse_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    let corrupt = || {
        crate::error::corrupt(format!(
            "timestamp '{text}' is not YYYY-MM-DDTHH:MM:SS.ffffffZ"
        ))
    };
    let b = text.as_bytes();
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return Err(corrupt());
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(
        number(0..4).ok_or_else(corrupt)? as i32,
        number(5..7).ok_or_else(corrupt)?,
        number(8..10).ok_or_else(corrupt)?,
    )
    .ok_or_else(corrupt)?;
    let time = chrono::NaiveTime::from_hms_micro_opt(
        number(11..13).ok_or_else(corrupt)?,
        number(14..16).ok_or_else(corrupt)?,
        number(17..19).ok_or_else(corrupt)?,
        number(20..26).ok_or_else(corrupt)?,
    )
    .ok_or_else(corrupt)?;
    Ok(NaiveDateTime::new(date, time).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_round_trip_and_garbage_is_refused() {
        let t = Utc
            .timestamp_opt(1_800_000_000, 123_456_000)
            .single()
            .unwrap_or_default();
        assert_eq!(parse_ts(&ts(t)).ok(), Some(t));
        assert_eq!(ts(t), "2027-01-15T08:00:00.123456Z");
        for bad in [
            "",
            "2027-01-15T08:00:00Z",
            "2027-13-15T08:00:00.123456Z",
            "2027-01-15T08:00:00.12345xZ",
            "2027-01-15 08:00:00.123456Z",
        ] {
            assert!(parse_ts(bad).is_err(), "{bad}");
        }
    }
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
    lock_projection = "SELECT 1",
    intents_as_json = "SELECT json_group_array(json_array(id, source, target, status, created_at, created_by, risk_level, priority, json(semantic), json(technical), json(checks_required), json(dependencies), retries, tenant_id, plan_id, origin_type) ORDER BY priority, created_at, id)",
    repo_of_intent = "COALESCE(json_extract(technical, '$.repo'), '')",
    id_list = "SELECT value FROM json_each($2)",
    // As `intents_head_idx` spells it (SQLite uses an expression index only for the same
    // expression).
    head_of_intent = "json_extract(technical, '$.initial_base_commit')"
);

crate::backend::analytics::analytics_operations!(
    SqliteStore,
    sqlx::Sqlite,
    window_columns = "COUNT(*) FILTER (WHERE event_type = 'simulation.completed') AS simulations, COUNT(*) FILTER (WHERE event_type = 'simulation.completed' AND json_type(payload, '$.mergeable') = 'true') AS mergeable, COUNT(*) FILTER (WHERE event_type = 'risk.evaluated') AS risk_evaluations, AVG(COALESCE(CAST(json_extract(payload, '$.entropy_score') AS REAL), 0.0)) FILTER (WHERE event_type = 'risk.evaluated') AS entropy_mean, AVG(COALESCE(CAST(json_extract(payload, '$.propagation_score') AS REAL), 0.0)) FILTER (WHERE event_type = 'risk.evaluated') AS propagation_mean, AVG(COALESCE(CAST(json_extract(payload, '$.containment_score') AS REAL), 1.0)) FILTER (WHERE event_type = 'risk.evaluated') AS containment_mean, COUNT(*) FILTER (WHERE event_type = 'risk.evaluated' AND COALESCE(CAST(json_extract(payload, '$.propagation_score') AS REAL), 0.0) > 40) AS high_propagation, COUNT(*) FILTER (WHERE event_type = 'intent.merged') AS merged, COUNT(*) FILTER (WHERE event_type = 'intent.rejected') AS rejected, COUNT(*) FILTER (WHERE event_type = 'intent.requeued') AS requeued, COUNT(*) FILTER (WHERE event_type = 'semantic_conflict.detected') AS semantic_conflicts",
    repo_of_intent = "COALESCE(json_extract(technical, '$.repo'), '')"
);

/// Writes a commit's [`LogTail`](crate::backend::LogTail). SQLite's writes are serialised
/// whatever their length, and each statement costs a call to the connection's thread (no
/// network round trip), so what counts is the number of statements. A tail of one chain whose
/// head this process wrote last links its events to the cached head and moves the head on
/// with an update that requires the row to still hold the cached head: one statement instead
/// of reading the head and then moving it. Where the row holds something else (another
/// process wrote, or a transaction that moved the cache rolled back) nothing is written by
/// that update and the tail goes in steps, which read the head under the write lock; so do
/// other tails. (Sending the tail's statements in one call measured no faster: webhook and
/// create benchmarks, December.)
async fn append_log_tail(
    store: &SqliteStore,
    tx: &mut WriteTx,
    tail: crate::backend::LogTail<'_>,
) -> Result<(), StoreError> {
    let cached = tail
        .one_chain()
        .and_then(|chain| Some((chain, store.cached_head(chain)?)));
    if let Some((chain, head)) = cached {
        let mut moved = head.clone();
        let links: Vec<(i64, String)> = tail.events.iter().map(|e| moved.append(e)).collect();
        let updated = sqlx::query(
            "UPDATE audit_chains SET next_index = $2, last_hash = $3 \
             WHERE tenant = $1 AND next_index = $4 AND last_hash = $5",
        )
        .bind(chain)
        .bind(moved.next_index)
        .bind(&moved.last_hash)
        .bind(head.next_index)
        .bind(&head.last_hash)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if updated == 1 {
            store.cache_head(chain, moved);
            return append_linked_events(tx, &tail, &links).await;
        }
    }
    let heads = append_log_tail_in_steps(tx, tail).await?;
    for (chain, head) in heads {
        store.cache_head(chain, head);
    }
    Ok(())
}

impl SqliteStore {
    fn cached_head(&self, chain: &str) -> Option<converge_core::audit::Head> {
        let heads = self.chain_heads.lock().unwrap_or_else(|e| e.into_inner());
        heads.get(chain).cloned()
    }

    fn cache_head(&self, chain: &str, head: converge_core::audit::Head) {
        let mut heads = self.chain_heads.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a deployment with more tenants than this reads the head of the rest.
        const MOST: usize = 10_000;
        if heads.len() >= MOST && !heads.contains_key(chain) {
            return;
        }
        heads.insert(chain.to_owned(), head);
    }
}

/// SQLite stages nothing ahead of another statement: its tail is written by [`append_log_tail`].
fn stage_log_tail(
    _q: &mut sqlx::QueryBuilder<sqlx::Sqlite>,
    _tail: &crate::backend::LogTail<'_>,
) -> bool {
    false
}

/// Timestamps inside JSON built by SQLite are the stored text.
fn parse_json_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    parse_ts(text)
}
