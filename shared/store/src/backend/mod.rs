//! The store contract's operations, written once for both backends.
//!
//! sqlx checks types per database, so the operations are a macro expanded once in `pg.rs` and
//! once in `sqlite.rs`. The SQL text is shared (both accept `$n` placeholders, `RETURNING` and
//! `ON CONFLICT`); each backend supplies what differs: how a write transaction starts (SQLite
//! takes the write lock up front with `BEGIN IMMEDIATE`), the row-lock clause (`FOR UPDATE`,
//! empty on SQLite, whose transactions are already serialised), and how timestamps are encoded
//! (`timestamptz` on PostgreSQL, fixed-width UTC text on SQLite).
//!
//! The operations are grouped by area, one macro per file (the log and its projection, leases,
//! the outbox, keys and rate limits, settings, the audit chain, freezes, review tasks); `store_operations!` expands them all.

pub(crate) mod access;
pub(crate) mod analytics;
pub(crate) mod audit;
pub(crate) mod freezes;
pub(crate) mod journal;
pub(crate) mod leases;
pub(crate) mod outbox;
pub(crate) mod reviews;
pub(crate) mod settings;

/// The heads of the audit chains a commit appends to, by chain, as they stand after it.
pub(crate) type ChainHeads<'a> = std::collections::BTreeMap<&'a str, converge_core::audit::Head>;

/// What a commit writes last, under its tenants' audit chain heads: the events with their
/// chain positions, the heads moved on, the analytics tallies and the tenants' versions. These
/// rows are shared by every commit of a tenant, so the time from locking the first to
/// committing is the time a tenant's commits wait on each other: PostgreSQL writes a
/// one-tenant tail as the transaction commits (`pg.rs`: a deferred trigger locks, hashes and
/// writes it); other tails, and SQLite's (whose writes are serialised anyway), are written
/// before the commit: SQLite links a one-chain tail to the head its process last wrote where
/// the row still holds it (`sqlite.rs`), otherwise in steps (`append_log_tail_in_steps`).
pub(crate) struct LogTail<'a> {
    pub events: &'a [converge_core::Event],
    pub tallies: Vec<Tally>,
    /// The tenants whose intents the commit changed (`""` for none).
    pub tenants: &'a std::collections::BTreeSet<String>,
}

impl<'a> LogTail<'a> {
    /// The one audit chain every event of the tail joins; `None` when there are several, or
    /// no event.
    pub fn one_chain(&self) -> Option<&'a str> {
        let events: &'a [converge_core::Event] = self.events;
        let first = converge_core::audit::chain_of(events.first()?.tenant_id.as_deref());
        events
            .iter()
            .all(|e| converge_core::audit::chain_of(e.tenant_id.as_deref()) == first)
            .then_some(first)
    }
}

/// One row of `event_tallies` to add: (tenant, event type, day) and (events, mergeable).
pub(crate) type Tally = ((String, &'static str, String), (i64, i64));

/// The events of the tallied types (`converge_core::analytics::TALLIED`) counted per tenant,
/// type and UTC day, in key order (the order their rows are locked in).
pub(crate) fn tallies_of(events: &[converge_core::Event]) -> Vec<Tally> {
    let mut tallies: std::collections::BTreeMap<(String, &'static str, String), (i64, i64)> =
        std::collections::BTreeMap::new();
    for event in events
        .iter()
        .filter(|e| converge_core::analytics::TALLIED.contains(&e.event_type))
    {
        let key = (
            event.tenant_id.clone().unwrap_or_default(),
            event.event_type.as_str(),
            event.timestamp.format("%Y-%m-%d").to_string(),
        );
        let entry = tallies.entry(key).or_default();
        entry.0 += 1;
        if event.event_type == converge_core::EventType::SimulationCompleted
            && event.payload.get("mergeable") == Some(&serde_json::Value::Bool(true))
        {
            entry.1 += 1;
        }
    }
    tallies.into_iter().collect()
}

/// The column list of an events insert.
macro_rules! insert_events_prefix {
    () => {
        "INSERT INTO events (id, trace_id, timestamp, event_type, intent_id, agent_id, tenant_id, payload, evidence, chain_index, chain_hash) "
    };
}

/// Binds an event's stored fields to a row of a `push_values`, in the order of
/// [`insert_events_prefix`] up to `evidence` (the chain's columns follow); `ts` is the calling
/// backend's timestamp conversion.
macro_rules! bind_event_fields {
    ($row:expr, $event:expr) => {
        $row.push_bind($event.id.as_str())
            .push_bind($event.trace_id.as_str())
            .push_bind(ts($event.timestamp))
            .push_bind($event.event_type.as_str())
            .push_bind($event.intent_id.as_deref())
            .push_bind($event.agent_id.as_deref())
            .push_bind($event.tenant_id.as_deref())
            .push_bind(sqlx::types::Json(&$event.payload))
            .push_bind(sqlx::types::Json(&$event.evidence))
    };
}

/// What adding to a tally row does when it exists.
macro_rules! tally_upsert_sql {
    () => {
        " ON CONFLICT (tenant, event_type, day) DO UPDATE SET \
         events = event_tallies.events + excluded.events, mergeable = event_tallies.mergeable + excluded.mergeable"
    };
}

/// The actionable statuses (`Status::is_actionable`) as SQL, spelled as the partial indexes of
/// queues (`intents_key_idx`) spell them: a database uses a partial index only for a query that
/// repeats its condition, with the values written out, not bound.
macro_rules! actionable_sql {
    () => {
        "status IN ('READY', 'VALIDATED', 'QUEUED')"
    };
}

/// What bumping a tenant's version does when its row exists.
macro_rules! version_bump_sql {
    () => {
        " ON CONFLICT (tenant) DO UPDATE SET version = tenant_versions.version + 1"
    };
}

/// The column list of an intents insert, shared by its two conflict policies.
macro_rules! insert_intents_prefix {
    () => {
        "INSERT INTO intents (id, source, target, status, created_at, created_by, risk_level, priority, semantic, \
         technical, checks_required, dependencies, retries, tenant_id, plan_id, origin_type, updated_at, version) "
    };
}

macro_rules! insert_intent_sql {
    () => {
        concat!(
            insert_intents_prefix!(),
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) "
        )
    };
}

/// What an upsert of an intent row replaces.
macro_rules! intent_overwrite_sql {
    () => {
        concat!(
            "ON CONFLICT (id) DO UPDATE SET source = excluded.source, target = excluded.target, ",
            "status = excluded.status, created_at = excluded.created_at, created_by = excluded.created_by, ",
            "risk_level = excluded.risk_level, priority = excluded.priority, semantic = excluded.semantic, ",
            "technical = excluded.technical, checks_required = excluded.checks_required, ",
            "dependencies = excluded.dependencies, retries = excluded.retries, tenant_id = excluded.tenant_id, ",
            "plan_id = excluded.plan_id, origin_type = excluded.origin_type, updated_at = excluded.updated_at, ",
            "version = excluded.version"
        )
    };
}

/// Expands the store operations for one backend. The invoking module provides `begin_write`
/// (and its transaction type, `WriteTx`), `ts`, `get_ts`, `get_opt_ts` and the pool type;
/// `$lock` and `$skip_locked` are the SQL suffixes for row locks; `$lock_projection` keeps
/// other writers off the intents table during a rebuild; `$intents_as_json` aggregates a page
/// of intents into one JSON array (one row crosses from the database instead of one per
/// intent: on SQLite, sqlx hands each row across threads, which dominated the cost of
/// listing); `$id_list` selects the ids of a JSON array bound as `$2`.
macro_rules! store_operations {
    // Every area takes the same settings (each uses the ones it needs), so they are passed on
    // as they came.
    ($($settings:tt)*) => {
        $crate::backend::journal::journal_operations!($($settings)*);
        $crate::backend::leases::lease_operations!($($settings)*);
        $crate::backend::outbox::outbox_operations!($($settings)*);
        $crate::backend::access::access_operations!($($settings)*);
        $crate::backend::settings::settings_operations!($($settings)*);
        $crate::backend::audit::audit_operations!($($settings)*);
        $crate::backend::freezes::freeze_operations!($($settings)*);
        $crate::backend::reviews::review_operations!($($settings)*);
    };
}

pub(crate) use {
    actionable_sql, bind_event_fields, insert_events_prefix, insert_intent_sql,
    insert_intents_prefix, intent_overwrite_sql, store_operations, tally_upsert_sql,
    version_bump_sql,
};

#[cfg(test)]
mod tests {
    use converge_core::Status;

    #[test]
    fn the_actionable_condition_names_exactly_the_actionable_statuses() {
        let every = [
            Status::Ready,
            Status::Validated,
            Status::Queued,
            Status::Merged,
            Status::Rejected,
        ];
        let listed: Vec<String> = every
            .iter()
            .filter(|s| s.is_actionable())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        assert_eq!(
            actionable_sql!(),
            format!("status IN ({})", listed.join(", "))
        );
        // And the migrations' partial indexes carry the same condition.
        for backend in ["postgres", "sqlite"] {
            let path = format!(
                "{}/migrations/{backend}/0020_intent_queues.sql",
                env!("CARGO_MANIFEST_DIR")
            );
            let migration = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                migration.contains(&format!("WHERE {};", actionable_sql!())),
                "{path} indexes the actionable intents as the queries name them"
            );
        }
    }
}
