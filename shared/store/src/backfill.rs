//! Backfill: copy every table from one store to another (SQLite ↔ PostgreSQL), idempotently,
//! and verify the copy by row counts and a content checksum per table.
//!
//! Rows are written with `INSERT … ON CONFLICT (key) DO UPDATE … WHERE` a column differs, so a
//! rerun copies nothing twice and brings rows that changed in the source since the last copy
//! up to date (an intent MERGED since then); rows equal in both are not written. Append-only
//! tables (the event log, commit links, deliveries) are written with `ON CONFLICT DO NOTHING`:
//! their rows never change, and a target row is never overwritten. Rows deleted
//! from the source are not deleted from the target. Tables whose content changes by itself
//! while Converge runs (rate-limit counters, the readiness probe) are copied but not verified,
//! and the report says so. The checksum of a table is independent of backend and
//! row order: each row is rendered canonically (timestamps to the microsecond in UTC, JSON with
//! sorted keys), hashed, the row hashes sorted and hashed together.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::tables::{Kind, TABLES, Table};
use crate::{Store, StoreError};

/// Rows read and written per round trip.
const PAGE: i64 = 500;

/// What to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackfillOptions {
    /// Count rows only; write nothing at all (not even the target's schema).
    pub dry_run: bool,
    /// After copying, compare row counts and checksums of every table.
    pub verify: bool,
}

/// Row count and content checksum of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableSummary {
    /// Table name.
    pub table: String,
    /// Rows.
    pub rows: u64,
    /// Hex SHA-256 over the sorted row hashes.
    pub checksum: String,
}

/// What happened to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableReport {
    /// Table name.
    pub table: String,
    /// Rows in the source.
    pub source_rows: u64,
    /// Rows in the target before copying.
    pub target_rows_before: u64,
    /// New rows inserted into the target (0 in a dry run).
    pub copied: u64,
    /// Rows already in the target that differed from the source and were brought up to date.
    pub updated: u64,
    /// With `verify`: why this table's checksum is not compared (it changes by itself).
    pub verify_skipped: Option<String>,
    /// With `verify`: whether count and checksum match after the copy.
    pub verified: Option<bool>,
    /// With `verify`: source checksum.
    pub source_checksum: Option<String>,
    /// With `verify`: target checksum.
    pub target_checksum: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackfillReport {
    /// Whether anything was written.
    pub dry_run: bool,
    /// Per table, in copy order.
    pub tables: Vec<TableReport>,
}

impl BackfillReport {
    /// Tables whose verification failed.
    pub fn mismatches(&self) -> Vec<&str> {
        self.tables
            .iter()
            .filter(|t| t.verified == Some(false))
            .map(|t| t.table.as_str())
            .collect()
    }
}

/// A column value, normalised across backends.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Ts(Option<DateTime<Utc>>),
    Json(Value),
    Bool(bool),
}

impl Cell {
    fn canonical(&self) -> Value {
        match self {
            Cell::Text(v) => v.clone().map_or(Value::Null, Value::String),
            Cell::Int(v) => Value::from(*v),
            Cell::OptInt(v) => v.map_or(Value::Null, Value::from),
            Cell::Ts(v) => v.map_or(Value::Null, |t| Value::String(crate::sqlite::ts(t))),
            Cell::Json(v) => canonical_json(v),
            Cell::Bool(v) => Value::Bool(*v),
        }
    }
}

/// Largest magnitude below which an integral float is written as an integer.
const EXACT_INTEGERS: f64 = 9.0e15;

/// JSON as both backends give it back alike: object keys sorted at every level (jsonb reorders
/// them) and integral floats as integers (jsonb returns `1e17` as `100000000000000000`).
fn canonical_json(value: &Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() && x.fract() == 0.0 && x.abs() < EXACT_INTEGERS => {
                Value::from(x as i64)
            }
            _ => value.clone(),
        },
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for key in keys {
                out.insert(key.clone(), canonical_json(&map[key]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical_json).collect()),
        other => other.clone(),
    }
}

fn select_page_sql(table: &Table, after: bool) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    let key = table.key.join(", ");
    let mut sql = format!("SELECT {} FROM {}", columns.join(", "), table.name);
    if after {
        let placeholders: Vec<String> = (1..=table.key.len()).map(|i| format!("${i}")).collect();
        let _ = write!(sql, " WHERE ({key}) > ({})", placeholders.join(", "));
    }
    let _ = write!(sql, " ORDER BY {key} LIMIT {PAGE}");
    sql
}

fn insert_sql(table: &Table) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    let others: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|c| !table.key.contains(c))
        .collect();
    if table.append_only {
        // Any conflict (the key, or another unique column such as an event's id) keeps the
        // target's row.
        return format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
            table.name,
            columns.join(", "),
            placeholders.join(", ")
        );
    }
    let mut sql = format!(
        "INSERT INTO {} AS t ({}) VALUES ({}) ON CONFLICT ({}) DO ",
        table.name,
        columns.join(", "),
        placeholders.join(", "),
        table.key.join(", ")
    );
    if others.is_empty() {
        sql.push_str("NOTHING");
    } else {
        let set: Vec<String> = others
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let differs: Vec<String> = others
            .iter()
            .map(|c| format!("t.{c} IS DISTINCT FROM excluded.{c}"))
            .collect();
        let _ = write!(
            sql,
            "UPDATE SET {} WHERE {}",
            set.join(", "),
            differs.join(" OR ")
        );
    }
    sql
}

fn key_cells(table: &Table, row: &[Cell]) -> Vec<Cell> {
    table
        .key
        .iter()
        .filter_map(|k| table.columns.iter().position(|(name, _)| name == k))
        .map(|i| row[i].clone())
        .collect()
}

/// Reads, binds and writes rows of one backend; expanded for both.
macro_rules! table_io {
    ($module:ident, $db:ty, $pool:ty, $ts_bind:path, $ts_get:path, $ts_get_opt:path) => {
        mod $module {
            use super::*;

            fn cell(
                row: &<$db as sqlx::Database>::Row,
                column: &str,
                kind: Kind,
            ) -> Result<Cell, StoreError> {
                Ok(match kind {
                    Kind::Text => Cell::Text(Some(row.try_get(column)?)),
                    Kind::OptText => Cell::Text(row.try_get(column)?),
                    Kind::Int => Cell::Int(row.try_get(column)?),
                    Kind::OptInt => Cell::OptInt(row.try_get(column)?),
                    Kind::Ts => Cell::Ts(Some($ts_get(row, column)?)),
                    Kind::OptTs => Cell::Ts($ts_get_opt(row, column)?),
                    Kind::Bool => Cell::Bool(row.try_get(column)?),
                    Kind::Json => {
                        let v: sqlx::types::Json<Value> = row.try_get(column)?;
                        Cell::Json(v.0)
                    }
                })
            }

            fn bind<'q>(
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
                cell: &Cell,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                match cell {
                    Cell::Text(v) => query.bind(v.clone()),
                    Cell::Int(v) => query.bind(*v),
                    Cell::OptInt(v) => query.bind(*v),
                    Cell::Ts(v) => query.bind(v.map($ts_bind)),
                    Cell::Json(v) => query.bind(sqlx::types::Json(v.clone())),
                    Cell::Bool(v) => query.bind(*v),
                }
            }

            pub(super) async fn page(
                pool: &$pool,
                table: &Table,
                after: Option<&[Cell]>,
            ) -> Result<Vec<Vec<Cell>>, StoreError> {
                let sql = select_page_sql(table, after.is_some());
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for key in after.unwrap_or_default() {
                    query = bind(query, key);
                }
                let rows = query.fetch_all(pool).await?;
                rows.iter()
                    .map(|row| {
                        table
                            .columns
                            .iter()
                            .map(|(name, kind)| cell(row, name, *kind))
                            .collect()
                    })
                    .collect()
            }

            pub(super) async fn insert(
                pool: &$pool,
                table: &Table,
                rows: &[Vec<Cell>],
            ) -> Result<u64, StoreError> {
                let sql = insert_sql(table);
                let mut tx = pool.begin().await?;
                let mut inserted = 0;
                for row in rows {
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                    for cell in row {
                        query = bind(query, cell);
                    }
                    inserted += query.execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(inserted)
            }

            pub(super) async fn count(pool: &$pool, table: &Table) -> Result<u64, StoreError> {
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {}",
                    table.name
                )))
                .fetch_one(pool)
                .await?;
                Ok(u64::try_from(n).unwrap_or_default())
            }
        }
    };
}

fn pg_ts_get(row: &sqlx::postgres::PgRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    Ok(row.try_get(column)?)
}
fn pg_ts_get_opt(
    row: &sqlx::postgres::PgRow,
    column: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(row.try_get(column)?)
}
fn sqlite_ts_get(row: &sqlx::sqlite::SqliteRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    let text: String = row.try_get(column)?;
    crate::sqlite::parse_ts(&text)
}
fn sqlite_ts_get_opt(
    row: &sqlx::sqlite::SqliteRow,
    column: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let text: Option<String> = row.try_get(column)?;
    text.as_deref().map(crate::sqlite::parse_ts).transpose()
}

table_io!(
    pg_io,
    sqlx::Postgres,
    sqlx::PgPool,
    crate::micros,
    pg_ts_get,
    pg_ts_get_opt
);
table_io!(
    sqlite_io,
    sqlx::Sqlite,
    sqlx::SqlitePool,
    crate::sqlite::ts,
    sqlite_ts_get,
    sqlite_ts_get_opt
);

async fn page(
    store: &Store,
    table: &Table,
    after: Option<&[Cell]>,
) -> Result<Vec<Vec<Cell>>, StoreError> {
    match store {
        Store::Postgres(s) => pg_io::page(s.pool(), table, after).await,
        Store::Sqlite(s) => sqlite_io::page(s.pool(), table, after).await,
    }
}

async fn insert(store: &Store, table: &Table, rows: &[Vec<Cell>]) -> Result<u64, StoreError> {
    match store {
        Store::Postgres(s) => pg_io::insert(s.pool(), table, rows).await,
        Store::Sqlite(s) => sqlite_io::insert(s.pool(), table, rows).await,
    }
}

async fn count(store: &Store, table: &Table) -> Result<u64, StoreError> {
    match store {
        Store::Postgres(s) => pg_io::count(s.pool(), table).await,
        Store::Sqlite(s) => sqlite_io::count(s.pool(), table).await,
    }
}

/// Moves a PostgreSQL sequence past the values copied into its column (SQLite's
/// AUTOINCREMENT follows explicit inserts by itself).
async fn advance_sequence(store: &Store, table: &Table) -> Result<(), StoreError> {
    if let (Store::Postgres(s), Some(column)) = (store, table.serial) {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{t}', '{column}'), COALESCE(MAX({column}), 1), MAX({column}) IS NOT NULL) FROM {t}",
            t = table.name
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(s.pool())
            .await?;
    }
    Ok(())
}

async fn summarise(store: &Store, table: &Table) -> Result<TableSummary, StoreError> {
    let mut digests: Vec<[u8; 32]> = Vec::new();
    let mut after: Option<Vec<Cell>> = None;
    loop {
        let rows = page(store, table, after.as_deref()).await?;
        let Some(last) = rows.last() else { break };
        after = Some(key_cells(table, last));
        for row in &rows {
            let canonical = Value::Array(row.iter().map(Cell::canonical).collect());
            digests.push(Sha256::digest(canonical.to_string().as_bytes()).into());
        }
    }
    digests.sort_unstable();
    let mut hasher = Sha256::new();
    for digest in &digests {
        hasher.update(digest);
    }
    let checksum = hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
    Ok(TableSummary {
        table: table.name.to_owned(),
        rows: digests.len() as u64,
        checksum,
    })
}

/// Row count and checksum of every table of a store.
pub async fn summaries(store: &Store) -> Result<Vec<TableSummary>, StoreError> {
    let mut out = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        out.push(summarise(store, table).await?);
    }
    Ok(out)
}

/// The columns a backfill copies per table (to compare with the live schema).
pub fn table_columns() -> Vec<(&'static str, Vec<&'static str>)> {
    TABLES
        .iter()
        .map(|t| (t.name, t.columns.iter().map(|(c, _)| *c).collect()))
        .collect()
}

/// Names of the tables a backfill copies, in order.
pub fn table_names() -> Vec<&'static str> {
    TABLES.iter().map(|t| t.name).collect()
}

/// Copies every table from `source` to `target`. The source must hold a Converge store; the
/// target's schema is created if missing (except in a dry run, which writes nothing).
pub async fn backfill(
    source: &Store,
    target: &Store,
    options: BackfillOptions,
) -> Result<BackfillReport, StoreError> {
    if !source.is_migrated().await? {
        return Err(StoreError::Config(
            "the source holds no Converge tables".to_owned(),
        ));
    }
    let target_ready = if options.dry_run {
        target.is_migrated().await?
    } else {
        target.migrate().await?;
        true
    };
    let mut reports = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let source_rows = count(source, table).await?;
        let target_rows_before = if target_ready {
            count(target, table).await?
        } else {
            0
        };
        let (mut copied, mut updated) = (0, 0);
        if !options.dry_run {
            let mut written = 0;
            let mut after: Option<Vec<Cell>> = None;
            loop {
                let rows = page(source, table, after.as_deref()).await?;
                let Some(last) = rows.last() else { break };
                after = Some(key_cells(table, last));
                written += insert(target, table, &rows).await?;
            }
            advance_sequence(target, table).await?;
            // A write is a new row or a changed one; the count tells them apart.
            copied = count(target, table)
                .await?
                .saturating_sub(target_rows_before);
            updated = written.saturating_sub(copied);
        }
        let mut report = TableReport {
            table: table.name.to_owned(),
            source_rows,
            target_rows_before,
            copied,
            updated,
            verified: None,
            verify_skipped: None,
            source_checksum: None,
            target_checksum: None,
        };
        if let (true, Some(why)) = (options.verify, table.ephemeral) {
            report.verify_skipped = Some(why.to_owned());
        } else if options.verify && target_ready {
            let (from, to) = (
                summarise(source, table).await?,
                summarise(target, table).await?,
            );
            report.verified = Some(from == to);
            report.source_checksum = Some(from.checksum);
            report.target_checksum = Some(to.checksum);
        }
        reports.push(report);
        if !options.dry_run && table.name == "intents" {
            // The copy wrote intents without a commit: no page a server kept may outlive it.
            target.bump_tenant_versions().await?;
        }
    }
    Ok(BackfillReport {
        dry_run: options.dry_run,
        tables: reports,
    })
}
