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
    insert_intent_sql, insert_intents_prefix, intent_overwrite_sql, store_operations,
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
            // sqlx's ping before handing a connection out stays on (a round trip per acquire):
            // a connection cut while it sat in the pool (a failover, a terminated session, a
            // frozen Lambda) is replaced, not handed to a request that would then fail.
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

/// Writes a commit's [`LogTail`](crate::backend::LogTail). A tail of one tenant is left in
/// `log_tails` for the deferred trigger of migration 21, which writes it while the transaction
/// commits: it makes the chain's head if the tenant has none, locks it, links the events to it
/// (SHA-256 in SQL over the records `converge_core::audit::link_record` made here, as
/// `converge_core::audit::link_hash_of_record` does), appends them and moves the head, the
/// tallies and the tenant's version on. The head is then held for that work and the commit,
/// not through a round trip to this process and back. Other tails (several tenants, more
/// events than one tail carries) are written in steps, before the commit.
async fn append_log_tail(
    _store: &PgStore,
    tx: &mut WriteTx,
    tail: crate::backend::LogTail<'_>,
) -> Result<(), StoreError> {
    let Some(chain) = chain_written_at_commit(&tail) else {
        append_log_tail_in_steps(tx, tail).await?;
        return Ok(());
    };
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new("");
    push_log_tail_insert(&mut q, chain, &tail);
    q.build().execute(&mut **tx).await?;
    Ok(())
}

/// Starts `q` with a `WITH` clause that leaves `tail` in `log_tails` when the trigger is to
/// write it (see [`append_log_tail`]), so that the commit's next statement carries it instead
/// of a statement of its own. Returns whether it did.
fn stage_log_tail(
    q: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    tail: &crate::backend::LogTail<'_>,
) -> bool {
    let Some(chain) = chain_written_at_commit(tail) else {
        return false;
    };
    q.push("WITH staged_log_tail AS (");
    push_log_tail_insert(q, chain, tail);
    q.push(") ");
    true
}

/// The chain of a tail the trigger writes at commit: one tenant's, of at most 1,000 events
/// (eighteen parameters an event, far below PostgreSQL's 65,535 even beside another
/// statement's). `None`: the tail is written in steps.
fn chain_written_at_commit<'a>(tail: &crate::backend::LogTail<'a>) -> Option<&'a str> {
    const MOST: usize = 1_000;
    tail.one_chain().filter(|_| tail.events.len() <= MOST)
}

/// Pushes the insert of `tail`'s rows into `log_tails`: a row an event, the first carrying
/// the tallies, column by column, and the tenants.
fn push_log_tail_insert(
    q: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    chain: &str,
    tail: &crate::backend::LogTail<'_>,
) {
    let mut tally_tenants = Vec::with_capacity(tail.tallies.len());
    let mut tally_types = Vec::with_capacity(tail.tallies.len());
    let mut tally_days = Vec::with_capacity(tail.tallies.len());
    let mut tally_events = Vec::with_capacity(tail.tallies.len());
    let mut tally_mergeable = Vec::with_capacity(tail.tallies.len());
    for ((tenant, event_type, day), (events, mergeable)) in &tail.tallies {
        tally_tenants.push(tenant.as_str());
        tally_types.push(*event_type);
        tally_days.push(day.as_str());
        tally_events.push(*events);
        tally_mergeable.push(*mergeable);
    }
    let tenants: Vec<&str> = tail.tenants.iter().map(String::as_str).collect();
    q.push(
        "INSERT INTO log_tails (position, chain, id, trace_id, at, event_type, intent_id, agent_id, \
         tenant_id, payload, evidence, record, tally_tenants, tally_types, tally_days, \
         tally_events, tally_mergeable, tenants) ",
    );
    q.push_values((1_i64..).zip(tail.events), |mut row, (position, event)| {
        row.push_bind(position)
            .push_bind(chain)
            .push_bind(event.id.as_str())
            .push_bind(event.trace_id.as_str())
            .push_bind(ts(event.timestamp))
            .push_bind(event.event_type.as_str())
            .push_bind(event.intent_id.as_deref())
            .push_bind(event.agent_id.as_deref())
            .push_bind(event.tenant_id.as_deref())
            .push_bind(sqlx::types::Json(&event.payload))
            .push_bind(sqlx::types::Json(&event.evidence))
            .push_bind(converge_core::audit::link_record(event));
        let first = position == 1;
        row.push_bind(first.then_some(&tally_tenants))
            .push_bind(first.then_some(&tally_types))
            .push_bind(first.then_some(&tally_days))
            .push_bind(first.then_some(&tally_events))
            .push_bind(first.then_some(&tally_mergeable))
            .push_bind(first.then_some(&tenants));
    });
}

/// Timestamps inside JSON built by PostgreSQL (`2026-11-27T21:00:00.123456+00:00`).
fn parse_json_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| crate::error::corrupt(format!("timestamp '{text}': {e}")))
}
