//! The PostgreSQL store (production): `timestamptz` and `jsonb` columns, row locks taken with
//! `SELECT … FOR UPDATE` inside short transactions and no session state outside migrations
//! (whose advisory lock, sqlx's, lasts only while migrating): usable behind RDS Proxy.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use converge_core::pipeline::Clock;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use crate::StoreError;
use crate::backend::{
    bind_event_fields, insert_events_prefix, insert_intent_sql, insert_intents_prefix,
    intent_overwrite_sql, store_operations, tally_upsert_sql, version_bump_sql,
};

/// How long to wait for a pooled connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Converge state in PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    clock: Arc<dyn Clock + Send + Sync>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// A store over a small pool that connects on first use (cheap at Lambda cold start).
    pub fn connect_lazy(
        dsn: &str,
        max_connections: u32,
        clock: Arc<dyn Clock + Send + Sync>,
    ) -> Result<PgStore, StoreError> {
        let options: PgConnectOptions = dsn.parse().map_err(|_| {
            StoreError::Config("CONVERGE_PG_DSN is not a valid postgres:// URL".to_owned())
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .before_acquire(|conn, _| Box::pin(async move { Ok(crate::reusable(conn)) }))
            .connect_lazy_with(options);
        Ok(PgStore { pool, clock })
    }

    /// Points the connections made from now on at `dsn` (a rotated password). Open
    /// connections are kept until the pool retires them: PostgreSQL does not ask a connected
    /// session for its password again.
    pub fn use_dsn(&self, dsn: &str) -> Result<(), StoreError> {
        let options: PgConnectOptions = dsn.parse().map_err(|_| {
            StoreError::Config("the rotated DSN is not a valid postgres:// URL".to_owned())
        })?;
        self.pool.set_connect_options(options);
        Ok(())
    }

    /// Applies the pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrations::postgres().run(&self.pool).await?;
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
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool writes go through (the same as reads on PostgreSQL).
    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn now(&self) -> DateTime<Utc> {
        crate::micros(self.clock.now())
    }
}

/// A write transaction: PostgreSQL's own row locks order concurrent writers.
type WriteTx = sqlx::Transaction<'static, sqlx::Postgres>;

async fn begin_write(store: &PgStore) -> Result<WriteTx, StoreError> {
    Ok(store.pool.begin().await?)
}

fn ts(t: DateTime<Utc>) -> DateTime<Utc> {
    crate::micros(t)
}

fn get_ts(row: &PgRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    Ok(row.try_get(column)?)
}

fn get_opt_ts(row: &PgRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(row.try_get(column)?)
}

store_operations!(
    PgStore,
    sqlx::Postgres,
    lock = " FOR UPDATE",
    skip_locked = " FOR UPDATE SKIP LOCKED",
    lock_projection = "LOCK TABLE intents IN EXCLUSIVE MODE",
    intents_as_json = "SELECT json_agg(json_build_array(id, source, target, status, created_at, created_by, risk_level, priority, semantic, technical, checks_required, dependencies, retries, tenant_id, plan_id, origin_type) ORDER BY priority, created_at, id)::text",
    repo_of_intent = "COALESCE(technical->>'repo', '')",
    id_list = "SELECT jsonb_array_elements_text(CAST($2 AS jsonb))",
    head_of_intent = "(technical->>'initial_base_commit')"
);

crate::backend::analytics::analytics_operations!(
    PgStore,
    sqlx::Postgres,
    window_columns = "COUNT(*) FILTER (WHERE event_type = 'simulation.completed') AS simulations, COUNT(*) FILTER (WHERE event_type = 'simulation.completed' AND payload->'mergeable' = 'true'::jsonb) AS mergeable, COUNT(*) FILTER (WHERE event_type = 'risk.evaluated') AS risk_evaluations, AVG(COALESCE((payload->>'entropy_score')::float8, 0)) FILTER (WHERE event_type = 'risk.evaluated') AS entropy_mean, AVG(COALESCE((payload->>'propagation_score')::float8, 0)) FILTER (WHERE event_type = 'risk.evaluated') AS propagation_mean, AVG(COALESCE((payload->>'containment_score')::float8, 1)) FILTER (WHERE event_type = 'risk.evaluated') AS containment_mean, COUNT(*) FILTER (WHERE event_type = 'risk.evaluated' AND COALESCE((payload->>'propagation_score')::float8, 0) > 40) AS high_propagation, COUNT(*) FILTER (WHERE event_type = 'intent.merged') AS merged, COUNT(*) FILTER (WHERE event_type = 'intent.rejected') AS rejected, COUNT(*) FILTER (WHERE event_type = 'intent.requeued') AS requeued, COUNT(*) FILTER (WHERE event_type = 'semantic_conflict.detected') AS semantic_conflicts",
    repo_of_intent = "COALESCE(technical->>'repo', '')"
);

/// Writes a commit's [`LogTail`](crate::backend::LogTail) in one statement when its events
/// are of one tenant: the statement locks the chain's head, links the events to it (SHA-256 in
/// SQL over the records `converge_core::audit::link_record` made beforehand, as
/// `converge_core::audit::link_hash_of_record` does), appends them and moves the head, the
/// tallies and the tenant's version on. The head is then held for that statement and the
/// commit only, not for a round trip to this process and back. Other tails (several tenants,
/// more rows than one statement's parameters allow, a tenant's first event) are written in
/// steps.
async fn append_log_tail(
    tx: &mut WriteTx,
    tail: crate::backend::LogTail<'_>,
) -> Result<Vec<i64>, StoreError> {
    // Eleven parameters an event, five a tally (no more tallies than events): far below
    // PostgreSQL's 65,535.
    const MOST: usize = 1_000;
    let chains: std::collections::BTreeSet<&str> = tail
        .events
        .iter()
        .map(|e| converge_core::audit::chain_of(e.tenant_id.as_deref()))
        .collect();
    let chain = match chains.first() {
        Some(chain) if chains.len() == 1 && tail.events.len() <= MOST => *chain,
        _ => return append_log_tail_in_steps(tx, tail).await,
    };
    let records: Vec<String> = tail
        .events
        .iter()
        .map(converge_core::audit::link_record)
        .collect();
    let appended = append_to_one_chain(tx, &tail, chain, &records).await?;
    if appended.is_empty() {
        // Nothing was written: the chain has no head yet (its tenant's first event), which
        // the steps make.
        return append_log_tail_in_steps(tx, tail).await;
    }
    crate::backend::seqs_in_order(tail.events, appended)
}

/// The statement of [`append_log_tail`]. Every write in it hangs on the chain's head: without
/// one, it writes nothing and returns no row.
async fn append_to_one_chain(
    tx: &mut WriteTx,
    tail: &crate::backend::LogTail<'_>,
    chain: &str,
    records: &[String],
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "WITH RECURSIVE head AS (SELECT next_index, last_hash FROM audit_chains WHERE tenant = ",
    );
    q.push_bind(chain);
    q.push(" FOR UPDATE), incoming (position, id, trace_id, at, event_type, intent_id, agent_id, tenant_id, payload, evidence, record) AS (");
    q.push_values(
        (1_i64..).zip(tail.events.iter().zip(records)),
        |mut row, (position, (event, record))| {
            row.push_bind(position);
            bind_event_fields!(row, event).push_bind(record.as_str());
        },
    );
    // Each event's index follows its predecessor's, and its hash is
    // sha256_hex(previous hash | index | record), as in converge_core::audit.
    q.push(
        "), chained (position, chain_index, chain_hash) AS (\
         SELECT CAST(0 AS BIGINT), next_index - 1, last_hash FROM head \
         UNION ALL \
         SELECT i.position, c.chain_index + 1, \
         encode(sha256(convert_to(c.chain_hash || '|' || CAST(c.chain_index + 1 AS TEXT) || '|' || i.record, 'UTF8')), 'hex') \
         FROM chained AS c JOIN incoming AS i ON i.position = c.position + 1), \
         moved AS (UPDATE audit_chains SET next_index = last.chain_index + 1, last_hash = last.chain_hash \
         FROM (SELECT chain_index, chain_hash FROM chained ORDER BY position DESC LIMIT 1) AS last \
         WHERE audit_chains.tenant = ",
    );
    q.push_bind(chain);
    q.push("), ");
    if !tail.tallies.is_empty() {
        q.push("tallied AS (INSERT INTO event_tallies (tenant, event_type, day, events, mergeable) SELECT t.* FROM (");
        q.push_values(
            &tail.tallies,
            |mut row, ((tenant, event_type, day), (count, mergeable))| {
                row.push_bind(tenant.as_str())
                    .push_bind(*event_type)
                    .push_bind(day.as_str())
                    .push_bind(*count)
                    .push_bind(*mergeable);
            },
        );
        q.push(") AS t (tenant, event_type, day, events, mergeable), head");
        q.push(tally_upsert_sql!());
        q.push("), ");
    }
    if !tail.tenants.is_empty() {
        q.push(
            "versions AS (INSERT INTO tenant_versions (tenant, version) SELECT v.tenant, 1 FROM (",
        );
        q.push_values(tail.tenants.iter(), |mut row, tenant| {
            row.push_bind(tenant.as_str());
        });
        q.push(") AS v (tenant), head");
        q.push(version_bump_sql!());
        q.push("), ");
    }
    // Sequence numbers are taken in the events' order, as the steps' insert takes them.
    q.push("appended AS (");
    q.push(insert_events_prefix!());
    q.push(
        "SELECT i.id, i.trace_id, i.at, i.event_type, i.intent_id, i.agent_id, i.tenant_id, i.payload, i.evidence, c.chain_index, c.chain_hash \
         FROM incoming AS i JOIN chained AS c ON c.position = i.position ORDER BY i.position RETURNING id, seq) \
         SELECT id, seq FROM appended",
    );
    Ok(q.build_query_as().fetch_all(&mut **tx).await?)
}

/// Timestamps inside JSON built by PostgreSQL (`2026-11-27T21:00:00.123456+00:00`).
fn parse_json_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| crate::error::corrupt(format!("timestamp '{text}': {e}")))
}
