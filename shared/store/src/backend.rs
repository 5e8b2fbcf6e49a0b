//! The store contract's operations, written once for both backends.
//!
//! sqlx checks types per database, so the operations are a macro expanded once in `pg.rs` and
//! once in `sqlite.rs`. The SQL text is shared (both accept `$n` placeholders, `RETURNING` and
//! `ON CONFLICT`); each backend supplies what differs: how a write transaction starts (SQLite
//! takes the write lock up front with `BEGIN IMMEDIATE`), the row-lock clause (`FOR UPDATE`,
//! empty on SQLite, whose transactions are already serialised), and how timestamps are encoded
//! (`timestamptz` on PostgreSQL, fixed-width UTC text on SQLite).

/// The column list of an intents insert, shared by its two conflict policies.
macro_rules! insert_intents_prefix {
    () => {
        "INSERT INTO intents (id, source, target, status, created_at, created_by, risk_level, priority, semantic, \
         technical, checks_required, dependencies, retries, tenant_id, plan_id, origin_type, updated_at) "
    };
}

macro_rules! insert_intent_sql {
    () => {
        concat!(
            insert_intents_prefix!(),
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) "
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
            "plan_id = excluded.plan_id, origin_type = excluded.origin_type, updated_at = excluded.updated_at"
        )
    };
}

/// Expands the store operations for one backend. The invoking module provides `begin_write`,
/// `ts`, `get_ts`, `get_opt_ts` and the pool type; `$lock` and `$skip_locked` are the SQL
/// suffixes for row locks; `$lock_projection` keeps other writers off the intents table during
/// a rebuild; `$intents_as_json` aggregates a page of intents into one JSON array (one row
/// crosses from the database instead of one per intent: on SQLite, sqlx hands each row across
/// threads, which dominated the cost of listing).
macro_rules! store_operations {
    ($store:ident, $db:ty, lock = $lock:literal, skip_locked = $skip_locked:literal, lock_projection = $lock_projection:literal, intents_as_json = $intents_as_json:literal, repo_of_intent = $repo_of_intent:literal) => {
        impl $store {
            /// Appends events, updates the intents projection from them, and records commit
            /// links and outbox rows, all in one transaction — after checking the guard lease.
            pub async fn commit(&self, commit: &$crate::Commit) -> Result<Vec<i64>, $crate::StoreError> {
                let mut tx = begin_write(&self.pool).await?;
                if let Some(lease) = &commit.guard {
                    let row = sqlx::query(concat!(
                        "SELECT holder, token, expires_at FROM queue_leases WHERE tenant = $1 AND repo = $2 AND target = $3",
                        $lock
                    ))
                    .bind(&lease.key.tenant)
                    .bind(&lease.key.repo)
                    .bind(&lease.key.target)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let now = self.now();
                    let current = match &row {
                        Some(row) => {
                            let holder: Option<String> = row.try_get("holder")?;
                            let token: i64 = row.try_get("token")?;
                            let expires_at = get_opt_ts(row, "expires_at")?;
                            holder.as_deref() == Some(lease.holder.as_str())
                                && token == lease.token.0
                                && expires_at.is_some_and(|e| e > now)
                        }
                        None => false,
                    };
                    if !current {
                        return Err($crate::StoreError::StaleLease { key: lease.key.clone(), token: lease.token.0 });
                    }
                }

                if let Some(delivery) = &commit.delivery {
                    let inserted = sqlx::query(
                        "INSERT INTO webhook_deliveries (delivery_id, event_name, body_sha256, received_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(&delivery.id)
                    .bind(&delivery.event_name)
                    .bind(&delivery.body_sha256)
                    .bind(ts(self.now()))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 0 {
                        let stored: Option<String> =
                            sqlx::query_scalar("SELECT body_sha256 FROM webhook_deliveries WHERE delivery_id = $1")
                                .bind(&delivery.id)
                                .fetch_optional(&mut *tx)
                                .await?;
                        return Err($crate::StoreError::AlreadyDelivered {
                            delivery_id: delivery.id.clone(),
                            same_body: stored.as_deref() == Some(delivery.body_sha256.as_str()),
                        });
                    }
                }

                // Lock and read the rows of the intents this commit changes, in id order and in
                // one statement, before any event takes its sequence number: per intent, log
                // order is then the order its row changed, and commits touching several intents
                // cannot deadlock on each other. (A single intent is locked by its first
                // projection step, before its event is appended.) Locks are always taken lease
                // first, then intents.
                let touched: std::collections::BTreeSet<&str> = commit
                    .events
                    .iter()
                    .filter(|e| converge_core::projection::changes_projection(e.event_type))
                    .filter_map(|e| e.intent_id.as_deref())
                    .collect();
                let mut projected: Vec<Projected<'_>> = Vec::new();
                if touched.len() > 1 {
                    let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM intents WHERE id IN (");
                    let mut ids = q.separated(", ");
                    for id in &touched {
                        ids.push_bind(*id);
                    }
                    q.push(") ORDER BY id");
                    q.push($lock);
                    let rows = q.build().fetch_all(&mut *tx).await?;
                    let mut found = std::collections::HashMap::with_capacity(rows.len());
                    for row in &rows {
                        let intent = intent_from_row(row)?;
                        found.insert(intent.id.clone(), intent);
                    }
                    for id in &touched {
                        let current = found.remove(*id);
                        projected.push(Projected { id, existed: current.is_some(), current, events: Vec::new(), updated_at: None });
                    }
                }
                for event in &commit.events {
                    let Some(intent_id) = event.intent_id.as_deref() else { continue };
                    if !converge_core::projection::changes_projection(event.event_type) {
                        continue;
                    }
                    let position = match projected.iter().position(|p| p.id == intent_id) {
                        Some(position) => position,
                        None => {
                            let current = read_locked(&mut tx, intent_id).await?;
                            projected.push(Projected { id: intent_id, existed: current.is_some(), current, events: Vec::new(), updated_at: None });
                            projected.len() - 1
                        }
                    };
                    let entry = &mut projected[position];
                    entry.events.push(event);
                    if let Some(next) = converge_core::projection::apply(entry.current.as_ref(), event)? {
                        entry.current = Some(next);
                        entry.updated_at = Some(event.timestamp);
                    }
                }
                // Rows that existed are overwritten in one statement; new ones one by one (their
                // insert may meet a row another transaction just created).
                let (existing, new): (Vec<_>, Vec<_>) = projected.into_iter().partition(|p| p.existed);
                let rewritten: Vec<(&converge_core::Intent, chrono::DateTime<chrono::Utc>)> = existing
                    .iter()
                    .filter_map(|p| Some((p.current.as_ref()?, p.updated_at?)))
                    .collect();
                overwrite_intents(&mut tx, &rewritten).await?;
                for entry in new {
                    write_projected(&mut tx, entry).await?;
                }

                let seqs = insert_events(&mut tx, &commit.events).await?;
                for link in &commit.commit_links {
                    sqlx::query(
                        "INSERT INTO intent_commit_links (intent_id, repo, sha, role, observed_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    )
                    .bind(&link.intent_id)
                    .bind(&link.repo)
                    .bind(&link.sha)
                    .bind(&link.role)
                    .bind(ts(link.observed_at))
                    .execute(&mut *tx)
                    .await?;
                }
                let now = self.now();
                for message in &commit.outbox {
                    sqlx::query("INSERT INTO outbox (topic, payload, created_at, attempts) VALUES ($1, $2, $3, 0)")
                        .bind(&message.topic)
                        .bind(sqlx::types::Json(&message.payload))
                        .bind(ts(now))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(seqs)
            }

            /// The current state of an intent.
            pub async fn intent(&self, id: &str) -> Result<Option<converge_core::Intent>, $crate::StoreError> {
                let row = sqlx::query("SELECT * FROM intents WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(intent_from_row).transpose()
            }

            /// Intents in queue order (priority, creation, id), filtered and paged.
            pub async fn intents(&self, filter: &$crate::IntentFilter) -> Result<Vec<converge_core::Intent>, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!($intents_as_json, " FROM (SELECT * FROM intents WHERE 1 = 1"));
                if !filter.statuses.is_empty() {
                    q.push(" AND status IN (");
                    let mut list = q.separated(", ");
                    for status in &filter.statuses {
                        list.push_bind(status.as_str());
                    }
                    q.push(")");
                }
                if let Some(tenant) = &filter.tenant_id {
                    q.push(" AND tenant_id = ").push_bind(tenant.clone());
                }
                if let Some(target) = &filter.target {
                    q.push(" AND target = ").push_bind(target.clone());
                }
                if let Some(after) = &filter.after {
                    q.push(" AND (priority > ").push_bind(after.priority);
                    q.push(" OR (priority = ").push_bind(after.priority);
                    q.push(" AND (created_at > ").push_bind(ts(after.created_at));
                    q.push(" OR (created_at = ").push_bind(ts(after.created_at));
                    q.push(" AND id > ").push_bind(after.id.clone());
                    q.push("))))");
                }
                let limit = if filter.limit == 0 { 100 } else { filter.limit };
                q.push(" ORDER BY priority, created_at, id LIMIT ").push_bind(i64::from(limit));
                q.push(") AS page");
                let page: Option<String> = q.build_query_scalar().fetch_one(&self.pool).await?;
                $crate::intent_json::decode_page(page.as_deref().unwrap_or("[]"), parse_json_ts)
            }

            /// The actionable intents (READY, VALIDATED, QUEUED) of one queue key, in queue
            /// order, after `after` (from the start when `None`), at most `limit`.
            pub async fn queue_intents(&self, key: &converge_core::queue::QueueKey, after: Option<&$crate::IntentCursor>, limit: u32) -> Result<Vec<converge_core::Intent>, $crate::StoreError> {
                // Without a cursor, one that sorts before every row.
                let (priority, created_at, id) = match after {
                    Some(c) => (c.priority, c.created_at, c.id.clone()),
                    None => (
                        i64::MIN,
                        // Year 1: before any intent, and within PostgreSQL's range.
                        chrono::DateTime::<chrono::Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default(),
                        String::new(),
                    ),
                };
                let page: Option<String> = sqlx::query_scalar(concat!(
                    $intents_as_json,
                    " FROM (SELECT * FROM intents WHERE status IN ('READY', 'VALIDATED', 'QUEUED') ",
                    "AND COALESCE(tenant_id, '') = $1 AND ", $repo_of_intent, " = $2 AND target = $3 ",
                    "AND (priority > $5 OR (priority = $5 AND (created_at > $6 OR (created_at = $6 AND id > $7)))) ",
                    "ORDER BY priority, created_at, id LIMIT $4) AS page"
                ))
                .bind(&key.tenant)
                .bind(&key.repo)
                .bind(&key.target)
                .bind(i64::from(limit))
                .bind(priority)
                .bind(ts(created_at))
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
                $crate::intent_json::decode_page(page.as_deref().unwrap_or("[]"), parse_json_ts)
            }

            /// An intent's latest decisions (`intent.validated`, `intent.blocked`), newest
            /// first, and the sequence number of its latest `check.reported` event.
            pub async fn decision_trail(&self, intent_id: &str, limit: u32) -> Result<$crate::DecisionTrail, $crate::StoreError> {
                // One round trip: the latest check report's seq joined to the decisions (one
                // row of NULL event columns when there are none).
                let rows = sqlx::query(
                    "SELECT c.last_check_report, e.* FROM \
                     (SELECT MAX(seq) AS last_check_report FROM events WHERE intent_id = $1 AND event_type = 'check.reported') AS c \
                     LEFT JOIN (SELECT * FROM events WHERE intent_id = $1 AND event_type IN ('intent.validated', 'intent.blocked') \
                     ORDER BY seq DESC LIMIT $2) AS e ON 1 = 1 ORDER BY e.seq DESC",
                )
                .bind(intent_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                let last_check_report: Option<i64> = match rows.first() {
                    Some(row) => row.try_get("last_check_report")?,
                    None => None,
                };
                let mut decisions = Vec::with_capacity(rows.len());
                for row in &rows {
                    if row.try_get::<Option<i64>, _>("seq")?.is_some() {
                        decisions.push(stored_event_from_row(row)?);
                    }
                }
                Ok($crate::DecisionTrail { decisions, last_check_report })
            }

            /// Intents counted by tenant, repository, target and status (for gauges and
            /// summaries: no row is loaded). `tenant` confines the count to one tenant.
            pub async fn intent_counts(&self, tenant: Option<&str>) -> Result<Vec<$crate::IntentCount>, $crate::StoreError> {
                let rows = sqlx::query(concat!(
                    "SELECT tenant_id, ", $repo_of_intent, " AS repo, target, status, COUNT(*) AS n FROM intents ",
                    "WHERE ($1 IS NULL OR tenant_id = $1) GROUP BY tenant_id, ", $repo_of_intent, ", target, status ",
                    "ORDER BY tenant_id, repo, target, status"
                ))
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let status: String = row.try_get("status")?;
                        Ok($crate::IntentCount {
                            key: converge_core::queue::QueueKey {
                                tenant: row.try_get::<Option<String>, _>("tenant_id")?.unwrap_or_default(),
                                repo: row.try_get("repo")?,
                                target: row.try_get("target")?,
                            },
                            status: status.parse().map_err($crate::error::corrupt)?,
                            count: row.try_get("n")?,
                        })
                    })
                    .collect()
            }

            /// Events, newest first, filtered and paged.
            pub async fn events(&self, filter: &$crate::EventFilter) -> Result<Vec<$crate::StoredEvent>, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM events WHERE 1 = 1");
                if let Some(v) = &filter.intent_id {
                    q.push(" AND intent_id = ").push_bind(v.clone());
                }
                if let Some(v) = filter.event_type {
                    q.push(" AND event_type = ").push_bind(v.as_str());
                }
                if let Some(v) = &filter.tenant_id {
                    q.push(" AND tenant_id = ").push_bind(v.clone());
                }
                if let Some(v) = filter.since {
                    q.push(" AND timestamp >= ").push_bind(ts(v));
                }
                if let Some(v) = filter.until {
                    q.push(" AND timestamp <= ").push_bind(ts(v));
                }
                if let Some(v) = filter.before_seq {
                    q.push(" AND seq < ").push_bind(v);
                }
                let limit = if filter.limit == 0 { 200 } else { filter.limit };
                q.push(" ORDER BY seq DESC LIMIT ").push_bind(i64::from(limit));
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter().map(stored_event_from_row).collect()
            }

            /// Commits observed for an intent.
            pub async fn commit_links(&self, intent_id: &str) -> Result<Vec<$crate::CommitLink>, $crate::StoreError> {
                let rows = sqlx::query("SELECT * FROM intent_commit_links WHERE intent_id = $1 ORDER BY observed_at, sha, role")
                    .bind(intent_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::CommitLink {
                            intent_id: row.try_get("intent_id")?,
                            repo: row.try_get("repo")?,
                            sha: row.try_get("sha")?,
                            role: row.try_get("role")?,
                            observed_at: get_ts(row, "observed_at")?,
                        })
                    })
                    .collect()
            }

            /// Empties the intents projection and replays every event into it, in append order.
            /// Returns the number of intents rebuilt.
            pub async fn rebuild_projections(&self) -> Result<usize, $crate::StoreError> {
                const PAGE: i64 = 1_000;
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query($lock_projection).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM intents").execute(&mut *tx).await?;
                let mut state: std::collections::BTreeMap<String, (converge_core::Intent, chrono::DateTime<chrono::Utc>)> =
                    std::collections::BTreeMap::new();
                let mut after = 0i64;
                loop {
                    let rows = sqlx::query("SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                        .bind(after)
                        .bind(PAGE)
                        .fetch_all(&mut *tx)
                        .await?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in &rows {
                        let stored = stored_event_from_row(row)?;
                        after = stored.seq;
                        let event = stored.event;
                        let Some(id) = event.intent_id.clone() else { continue };
                        let current = state.get(&id).map(|(intent, _)| intent);
                        if let Some(next) = converge_core::projection::apply(current, &event)? {
                            state.insert(id, (next, event.timestamp));
                        }
                    }
                }
                for (intent, updated_at) in state.values() {
                    write_intent(&mut tx, intent, *updated_at, true).await?;
                }
                tx.commit().await?;
                Ok(state.len())
            }

            /// Records a webhook delivery once; concurrent identical deliveries yield one `New`.
            pub async fn record_delivery(
                &self,
                delivery_id: &str,
                event_name: &str,
                body_sha256: &str,
            ) -> Result<$crate::DeliveryOutcome, $crate::StoreError> {
                let inserted = sqlx::query(
                    "INSERT INTO webhook_deliveries (delivery_id, event_name, body_sha256, received_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(delivery_id)
                .bind(event_name)
                .bind(body_sha256)
                .bind(ts(self.now()))
                .execute(&self.pool)
                .await?
                .rows_affected();
                if inserted == 1 {
                    return Ok($crate::DeliveryOutcome::New);
                }
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT body_sha256 FROM webhook_deliveries WHERE delivery_id = $1")
                        .bind(delivery_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(if stored.as_deref() == Some(body_sha256) {
                    $crate::DeliveryOutcome::Duplicate
                } else {
                    $crate::DeliveryOutcome::BodyMismatch
                })
            }

            /// Takes the lease of a queue key if nobody holds it or the holding expired.
            /// The new fencing token is one more than any token handed out for the key.
            pub async fn acquire_lease(
                &self,
                key: &converge_core::queue::QueueKey,
                holder: &str,
                ttl: std::time::Duration,
            ) -> Result<Option<$crate::Lease>, $crate::StoreError> {
                let ttl = chrono::Duration::from_std(ttl).map_err(|e| $crate::StoreError::Config(e.to_string()))?;
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query(
                    "INSERT INTO queue_leases (tenant, repo, target, holder, token, acquired_at, expires_at) \
                     VALUES ($1, $2, $3, NULL, 0, NULL, NULL) ON CONFLICT DO NOTHING",
                )
                .bind(&key.tenant)
                .bind(&key.repo)
                .bind(&key.target)
                .execute(&mut *tx)
                .await?;
                // Read the time once the write lock is held (SQLite may have waited for it).
                let now = self.now();
                let expires_at = now + ttl;
                let token: Option<i64> = sqlx::query_scalar(
                    "UPDATE queue_leases SET holder = $4, token = token + 1, acquired_at = $5, expires_at = $6 \
                     WHERE tenant = $1 AND repo = $2 AND target = $3 AND (holder IS NULL OR expires_at <= $5) \
                     RETURNING token",
                )
                .bind(&key.tenant)
                .bind(&key.repo)
                .bind(&key.target)
                .bind(holder)
                .bind(ts(now))
                .bind(ts(expires_at))
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(token.map(|token| $crate::Lease {
                    key: key.clone(),
                    holder: holder.to_owned(),
                    token: $crate::FencingToken(token),
                    expires_at,
                }))
            }

            /// Pushes a held lease's expiry to now + `ttl`. Fails if it was lost meanwhile.
            pub async fn extend_lease(&self, lease: &$crate::Lease, ttl: std::time::Duration) -> Result<$crate::Lease, $crate::StoreError> {
                let now = self.now();
                let expires_at = now + chrono::Duration::from_std(ttl).map_err(|e| $crate::StoreError::Config(e.to_string()))?;
                let updated = sqlx::query(
                    "UPDATE queue_leases SET expires_at = $6 \
                     WHERE tenant = $1 AND repo = $2 AND target = $3 AND holder = $4 AND token = $5 AND expires_at > $7",
                )
                .bind(&lease.key.tenant)
                .bind(&lease.key.repo)
                .bind(&lease.key.target)
                .bind(&lease.holder)
                .bind(lease.token.0)
                .bind(ts(expires_at))
                .bind(ts(now))
                .execute(&self.pool)
                .await?
                .rows_affected();
                if updated == 0 {
                    return Err($crate::StoreError::StaleLease { key: lease.key.clone(), token: lease.token.0 });
                }
                Ok($crate::Lease { expires_at, ..lease.clone() })
            }

            /// Gives a lease back. False if it had already been lost.
            pub async fn release_lease(&self, lease: &$crate::Lease) -> Result<bool, $crate::StoreError> {
                let released = sqlx::query(
                    "UPDATE queue_leases SET holder = NULL, acquired_at = NULL, expires_at = NULL \
                     WHERE tenant = $1 AND repo = $2 AND target = $3 AND holder = $4 AND token = $5",
                )
                .bind(&lease.key.tenant)
                .bind(&lease.key.repo)
                .bind(&lease.key.target)
                .bind(&lease.holder)
                .bind(lease.token.0)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(released == 1)
            }

            /// Clears whoever holds a key (operator action, `queue reset --clear-lock`). The
            /// token is kept, so the next holder's is higher and the old holder stays fenced.
            pub async fn force_clear_lease(&self, key: &converge_core::queue::QueueKey) -> Result<bool, $crate::StoreError> {
                let cleared = sqlx::query(
                    "UPDATE queue_leases SET holder = NULL, acquired_at = NULL, expires_at = NULL \
                     WHERE tenant = $1 AND repo = $2 AND target = $3 AND holder IS NOT NULL",
                )
                .bind(&key.tenant)
                .bind(&key.repo)
                .bind(&key.target)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(cleared == 1)
            }

            /// Clears every lease whose holder let it expire (the sweep). Tokens stay, so a late
            /// holder is still fenced; a lease taken over meanwhile is not touched. Returns how
            /// many were cleared.
            pub async fn clear_expired_leases(&self) -> Result<u64, $crate::StoreError> {
                Ok(sqlx::query(
                    "UPDATE queue_leases SET holder = NULL, acquired_at = NULL, expires_at = NULL \
                     WHERE holder IS NOT NULL AND expires_at <= $1",
                )
                .bind(ts(self.now()))
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            /// The lease row of a key, if the key was ever leased.
            pub async fn inspect_lease(&self, key: &converge_core::queue::QueueKey) -> Result<Option<$crate::LeaseState>, $crate::StoreError> {
                let row = sqlx::query("SELECT * FROM queue_leases WHERE tenant = $1 AND repo = $2 AND target = $3")
                    .bind(&key.tenant)
                    .bind(&key.repo)
                    .bind(&key.target)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(lease_from_row).transpose()
            }

            /// Every lease row, by key.
            pub async fn leases(&self) -> Result<Vec<$crate::LeaseState>, $crate::StoreError> {
                let rows = sqlx::query("SELECT * FROM queue_leases ORDER BY tenant, repo, target")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(lease_from_row).collect()
            }

            /// Claims up to `limit` unsent outbox rows of `topic` for `claim_ttl` (oldest first). A claim that
            /// lapses without `mark_sent` makes the row claimable again: nothing is lost if the
            /// sender dies.
            pub async fn claim_outbox(
                &self,
                topic: &str,
                claimer: &str,
                limit: u32,
                claim_ttl: std::time::Duration,
            ) -> Result<Vec<$crate::OutboxEntry>, $crate::StoreError> {
                let now = self.now();
                let until = now + chrono::Duration::from_std(claim_ttl).map_err(|e| $crate::StoreError::Config(e.to_string()))?;
                let mut tx = begin_write(&self.pool).await?;
                let rows = sqlx::query(concat!(
                    "UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 WHERE seq IN (",
                    "SELECT seq FROM outbox WHERE topic = $5 AND sent_at IS NULL AND (claimed_until IS NULL OR claimed_until <= $3) ",
                    "ORDER BY seq LIMIT $4",
                    $skip_locked,
                    ") RETURNING seq, topic, payload, attempts"
                ))
                .bind(claimer)
                .bind(ts(until))
                .bind(ts(now))
                .bind(i64::from(limit))
                .bind(topic)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                let mut entries = rows
                    .iter()
                    .map(|row| {
                        let payload: sqlx::types::Json<serde_json::Value> = row.try_get("payload")?;
                        Ok($crate::OutboxEntry {
                            seq: row.try_get("seq")?,
                            topic: row.try_get("topic")?,
                            payload: payload.0,
                            attempts: row.try_get("attempts")?,
                        })
                    })
                    .collect::<Result<Vec<_>, $crate::StoreError>>()?;
                entries.sort_by_key(|e| e.seq);
                Ok(entries)
            }

            /// Marks an outbox row sent. False if it was already marked.
            pub async fn mark_outbox_sent(&self, seq: i64) -> Result<bool, $crate::StoreError> {
                let updated = sqlx::query("UPDATE outbox SET sent_at = $2 WHERE seq = $1 AND sent_at IS NULL")
                    .bind(seq)
                    .bind(ts(self.now()))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(updated == 1)
            }

            /// Gives a claimed, unsent outbox row back at once (its sender failed and later rows
            /// must not overtake it). False if it was sent meanwhile.
            pub async fn release_outbox(&self, seq: i64) -> Result<bool, $crate::StoreError> {
                let updated = sqlx::query("UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE seq = $1 AND sent_at IS NULL")
                    .bind(seq)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(updated == 1)
            }

            /// Outbox rows not sent yet.
            pub async fn unsent_outbox_count(&self) -> Result<i64, $crate::StoreError> {
                Ok(sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
                    .fetch_one(&self.pool)
                    .await?)
            }

            /// Stores an API key record, or updates it. An expiry, once set, is never lifted
            /// or extended by a later put (re-seeding a rotated key from the environment keeps
            /// it expiring), and an origin is never cleared: a key a secret gave stays the
            /// secret's to revoke, even if `CONVERGE_API_KEYS` lists it too.
            pub async fn put_api_key(&self, key: &$crate::ApiKeyRecord) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO api_keys (key_hash, role, actor, tenant_id, scopes, created_at, expires_at, origin) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (key_hash) DO UPDATE SET role = excluded.role, actor = excluded.actor, \
                     tenant_id = excluded.tenant_id, scopes = excluded.scopes, \
                     origin = COALESCE(excluded.origin, api_keys.origin), \
                     expires_at = CASE WHEN excluded.expires_at IS NOT NULL \
                     AND (api_keys.expires_at IS NULL OR excluded.expires_at < api_keys.expires_at) \
                     THEN excluded.expires_at ELSE api_keys.expires_at END",
                )
                .bind(&key.key_hash)
                .bind(&key.role)
                .bind(&key.actor)
                .bind(&key.tenant_id)
                .bind(sqlx::types::Json(&key.scopes))
                .bind(ts(key.created_at))
                .bind(key.expires_at.map(ts))
                .bind(&key.origin)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            /// The hashes of the live keys configured from `origin` (see `ApiKeyRecord::origin`).
            pub async fn api_keys_from(&self, origin: &str) -> Result<Vec<String>, $crate::StoreError> {
                Ok(sqlx::query_scalar(
                    "SELECT key_hash FROM api_keys WHERE origin = $1 \
                     AND (expires_at IS NULL OR expires_at > $2) ORDER BY key_hash",
                )
                .bind(origin)
                .bind(ts(self.now()))
                .fetch_all(&self.pool)
                .await?)
            }

            /// The key with this hash, if it exists and has not expired.
            pub async fn find_api_key(&self, key_hash: &str) -> Result<Option<$crate::ApiKeyRecord>, $crate::StoreError> {
                let row = sqlx::query("SELECT * FROM api_keys WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > $2)")
                    .bind(key_hash)
                    .bind(ts(self.now()))
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref()
                    .map(|row| {
                        let scopes: sqlx::types::Json<Vec<String>> = row.try_get("scopes")?;
                        Ok($crate::ApiKeyRecord {
                            key_hash: row.try_get("key_hash")?,
                            role: row.try_get("role")?,
                            actor: row.try_get("actor")?,
                            tenant_id: row.try_get("tenant_id")?,
                            scopes: scopes.0,
                            created_at: get_ts(row, "created_at")?,
                            expires_at: get_opt_ts(row, "expires_at")?,
                            origin: row.try_get("origin")?,
                        })
                    })
                    .transpose()
            }

            /// Sets when a key stops working (rotation grace), unless it already stops sooner.
            /// False if no such key.
            pub async fn expire_api_key(&self, key_hash: &str, at: chrono::DateTime<chrono::Utc>) -> Result<bool, $crate::StoreError> {
                // Only ever brings the expiry closer: a key in its grace period cannot extend it.
                let updated = sqlx::query(
                    "UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NULL OR $2 < expires_at THEN $2 ELSE expires_at END \
                     WHERE key_hash = $1",
                )
                    .bind(key_hash)
                    .bind(ts(at))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(updated == 1)
            }

            /// Counts one request of `tenant` in the window starting at `window_start` and returns
            /// the window's count so far (shared by every instance).
            pub async fn hit_rate_limit(&self, tenant: &str, window_start: chrono::DateTime<chrono::Utc>) -> Result<i64, $crate::StoreError> {
                Ok(sqlx::query_scalar(
                    "INSERT INTO rate_limit_counters (tenant, window_start, hits) VALUES ($1, $2, 1) \
                     ON CONFLICT (tenant, window_start) DO UPDATE SET hits = rate_limit_counters.hits + 1 RETURNING hits",
                )
                .bind(tenant)
                .bind(ts(window_start))
                .fetch_one(&self.pool)
                .await?)
            }

            /// Forgets rate-limit windows that started before `cutoff`.
            pub async fn prune_rate_limits(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64, $crate::StoreError> {
                Ok(sqlx::query("DELETE FROM rate_limit_counters WHERE window_start < $1")
                    .bind(ts(cutoff))
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            }

            /// Flags an operator has set: name, value, when, by whom.
            pub async fn flags(&self) -> Result<Vec<$crate::FlagSetting>, $crate::StoreError> {
                let rows = sqlx::query("SELECT * FROM feature_flags ORDER BY name").fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::FlagSetting {
                            name: row.try_get("name")?,
                            enabled: row.try_get("enabled")?,
                            updated_at: get_ts(row, "updated_at")?,
                            updated_by: row.try_get("updated_by")?,
                        })
                    })
                    .collect()
            }

            /// Sets a flag.
            pub async fn set_flag(&self, name: &str, enabled: bool, by: &str) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO feature_flags (name, enabled, updated_at, updated_by) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at, \
                     updated_by = excluded.updated_by",
                )
                .bind(name)
                .bind(enabled)
                .bind(ts(self.now()))
                .bind(by)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            /// A tenant's risk policy (`""` for the global one).
            pub async fn risk_policy(&self, tenant: &str) -> Result<Option<$crate::VersionedDocument>, $crate::StoreError> {
                self.document("SELECT data, version, updated_at FROM risk_policies WHERE tenant = $1", tenant).await
            }

            /// Replaces a tenant's risk policy; returns the new version.
            pub async fn put_risk_policy(&self, tenant: &str, data: &serde_json::Value) -> Result<i64, $crate::StoreError> {
                Ok(sqlx::query_scalar(
                    "INSERT INTO risk_policies (tenant, data, version, updated_at) VALUES ($1, $2, 1, $3) \
                     ON CONFLICT (tenant) DO UPDATE SET data = excluded.data, version = risk_policies.version + 1, \
                     updated_at = excluded.updated_at RETURNING version",
                )
                .bind(tenant)
                .bind(sqlx::types::Json(data))
                .bind(ts(self.now()))
                .fetch_one(&self.pool)
                .await?)
            }

            /// A tenant's compliance thresholds (`""` for the global ones); version is always 1.
            pub async fn compliance_thresholds(&self, tenant: &str) -> Result<Option<$crate::VersionedDocument>, $crate::StoreError> {
                self.document("SELECT data, CAST(1 AS BIGINT) AS version, updated_at FROM compliance_thresholds WHERE tenant = $1", tenant).await
            }

            /// Replaces a tenant's compliance thresholds.
            pub async fn put_compliance_thresholds(&self, tenant: &str, data: &serde_json::Value) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO compliance_thresholds (tenant, data, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                )
                .bind(tenant)
                .bind(sqlx::types::Json(data))
                .bind(ts(self.now()))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn document(&self, sql: &'static str, tenant: &str) -> Result<Option<$crate::VersionedDocument>, $crate::StoreError> {
                let row = sqlx::query(sql).bind(tenant).fetch_optional(&self.pool).await?;
                row.as_ref()
                    .map(|row| {
                        let data: sqlx::types::Json<serde_json::Value> = row.try_get("data")?;
                        Ok($crate::VersionedDocument {
                            data: data.0,
                            version: row.try_get("version")?,
                            updated_at: get_ts(row, "updated_at")?,
                        })
                    })
                    .transpose()
            }
        }

        /// Applies one event to its intent's row (locked), inside the commit's transaction.
        /// An intent's row while a commit applies its events: as read (under its row lock),
        /// and as the events leave it.
        struct Projected<'a> {
            id: &'a str,
            existed: bool,
            current: Option<converge_core::Intent>,
            events: Vec<&'a converge_core::Event>,
            updated_at: Option<chrono::DateTime<chrono::Utc>>,
        }

        async fn read_locked(
            tx: &mut sqlx::Transaction<'static, $db>,
            intent_id: &str,
        ) -> Result<Option<converge_core::Intent>, $crate::StoreError> {
            let row = sqlx::query(concat!("SELECT * FROM intents WHERE id = $1", $lock))
                .bind(intent_id)
                .fetch_optional(&mut **tx)
                .await?;
            row.as_ref().map(intent_from_row).transpose()
        }

        /// Writes an intent as a commit's events left it. If the row did not exist and a
        /// concurrent transaction created it first, our insert waited for it and did nothing:
        /// the events are applied again to the row that transaction wrote.
        async fn write_projected(
            tx: &mut sqlx::Transaction<'static, $db>,
            entry: Projected<'_>,
        ) -> Result<(), $crate::StoreError> {
            let (Some(intent), Some(updated_at)) = (&entry.current, entry.updated_at) else {
                return Ok(());
            };
            if write_intent(tx, intent, updated_at, entry.existed).await? {
                return Ok(());
            }
            let mut current = read_locked(tx, entry.id).await?;
            let mut updated_at = None;
            for event in &entry.events {
                if let Some(next) = converge_core::projection::apply(current.as_ref(), event)? {
                    current = Some(next);
                    updated_at = Some(event.timestamp);
                }
            }
            match (current, updated_at) {
                (Some(intent), Some(at)) if write_intent(tx, &intent, at, true).await? => Ok(()),
                (_, None) => Ok(()),
                _ => Err($crate::error::corrupt(format!("intent {} changed under a held row lock", entry.id))),
            }
        }

        /// Appends events in as few statements as possible; returns their sequence numbers in
        /// the order given.
        async fn insert_events(
            tx: &mut sqlx::Transaction<'static, $db>,
            events: &[converge_core::Event],
        ) -> Result<Vec<i64>, $crate::StoreError> {
            // Nine parameters a row; SQLite allows 32,766 in a statement.
            const ROWS_PER_STATEMENT: usize = 1_000;
            let mut seqs = Vec::with_capacity(events.len());
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO events (id, trace_id, timestamp, event_type, intent_id, agent_id, tenant_id, payload, evidence) ",
                );
                q.push_values(chunk, |mut row, event| {
                    row.push_bind(event.id.clone())
                        .push_bind(event.trace_id.clone())
                        .push_bind(ts(event.timestamp))
                        .push_bind(event.event_type.as_str())
                        .push_bind(event.intent_id.clone())
                        .push_bind(event.agent_id.clone())
                        .push_bind(event.tenant_id.clone())
                        .push_bind(sqlx::types::Json(event.payload.clone()))
                        .push_bind(sqlx::types::Json(event.evidence.clone()));
                });
                // The order RETURNING lists rows in is not promised: match them by id.
                q.push(" RETURNING id, seq");
                let rows: Vec<(String, i64)> = q.build_query_as().fetch_all(&mut **tx).await?;
                let by_id: std::collections::HashMap<String, i64> = rows.into_iter().collect();
                for event in chunk {
                    let seq = by_id.get(&event.id).copied().ok_or_else(|| {
                        $crate::error::corrupt(format!("event {} was not appended", event.id))
                    })?;
                    seqs.push(seq);
                }
            }
            Ok(seqs)
        }

        /// Writes an intent row: replacing the existing one (`overwrite`), or only if none
        /// exists. Returns whether a row was written.
        async fn write_intent(
            tx: &mut sqlx::Transaction<'static, $db>,
            intent: &converge_core::Intent,
            updated_at: chrono::DateTime<chrono::Utc>,
            overwrite: bool,
        ) -> Result<bool, $crate::StoreError> {
            let sql = if overwrite {
                concat!(insert_intent_sql!(), intent_overwrite_sql!())
            } else {
                concat!(
                    insert_intent_sql!(),
                    "ON CONFLICT (id) DO NOTHING"
                )
            };
            let written = sqlx::query(sql)
            .bind(&intent.id)
            .bind(&intent.source)
            .bind(&intent.target)
            .bind(intent.status.as_str())
            .bind(ts(intent.created_at))
            .bind(&intent.created_by)
            .bind(intent.risk_level.as_str())
            .bind(intent.priority)
            .bind(sqlx::types::Json(&intent.semantic))
            .bind(sqlx::types::Json(&intent.technical))
            .bind(sqlx::types::Json(&intent.checks_required))
            .bind(sqlx::types::Json(&intent.dependencies))
            .bind(i64::from(intent.retries))
            .bind(&intent.tenant_id)
            .bind(&intent.plan_id)
            .bind(&intent.origin_type)
            .bind(ts(updated_at))
            .execute(&mut **tx)
            .await?
            .rows_affected();
            Ok(written == 1)
        }

        /// Replaces existing intent rows, all in one statement.
        async fn overwrite_intents(
            tx: &mut sqlx::Transaction<'static, $db>,
            intents: &[(&converge_core::Intent, chrono::DateTime<chrono::Utc>)],
        ) -> Result<(), $crate::StoreError> {
            // Seventeen parameters a row; SQLite allows 32,766 in a statement.
            const ROWS_PER_STATEMENT: usize = 500;
            for chunk in intents.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::<$db>::new(insert_intents_prefix!());
                q.push_values(chunk, |mut row, (intent, updated_at)| {
                    row.push_bind(intent.id.clone())
                        .push_bind(intent.source.clone())
                        .push_bind(intent.target.clone())
                        .push_bind(intent.status.as_str())
                        .push_bind(ts(intent.created_at))
                        .push_bind(intent.created_by.clone())
                        .push_bind(intent.risk_level.as_str())
                        .push_bind(intent.priority)
                        .push_bind(sqlx::types::Json(intent.semantic.clone()))
                        .push_bind(sqlx::types::Json(intent.technical.clone()))
                        .push_bind(sqlx::types::Json(intent.checks_required.clone()))
                        .push_bind(sqlx::types::Json(intent.dependencies.clone()))
                        .push_bind(i64::from(intent.retries))
                        .push_bind(intent.tenant_id.clone())
                        .push_bind(intent.plan_id.clone())
                        .push_bind(intent.origin_type.clone())
                        .push_bind(ts(*updated_at));
                });
                q.push(concat!(" ", intent_overwrite_sql!()));
                q.build().execute(&mut **tx).await?;
            }
            Ok(())
        }

        fn intent_from_row(row: &<$db as sqlx::Database>::Row) -> Result<converge_core::Intent, $crate::StoreError> {
            let status: String = row.try_get("status")?;
            let level: String = row.try_get("risk_level")?;
            let semantic: sqlx::types::Json<serde_json::Map<String, serde_json::Value>> = row.try_get("semantic")?;
            let technical: sqlx::types::Json<serde_json::Map<String, serde_json::Value>> = row.try_get("technical")?;
            let checks: sqlx::types::Json<Vec<String>> = row.try_get("checks_required")?;
            let dependencies: sqlx::types::Json<Vec<String>> = row.try_get("dependencies")?;
            let retries: i64 = row.try_get("retries")?;
            Ok(converge_core::Intent {
                id: row.try_get("id")?,
                source: row.try_get("source")?,
                target: row.try_get("target")?,
                status: status.parse().map_err($crate::error::corrupt)?,
                created_at: get_ts(row, "created_at")?,
                created_by: row.try_get("created_by")?,
                risk_level: level.parse().map_err($crate::error::corrupt)?,
                priority: row.try_get("priority")?,
                semantic: semantic.0,
                technical: technical.0,
                checks_required: checks.0,
                dependencies: dependencies.0,
                retries: u32::try_from(retries).map_err($crate::error::corrupt)?,
                tenant_id: row.try_get("tenant_id")?,
                plan_id: row.try_get("plan_id")?,
                origin_type: row.try_get("origin_type")?,
            })
        }

        fn stored_event_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::StoredEvent, $crate::StoreError> {
            let event_type: String = row.try_get("event_type")?;
            let payload: sqlx::types::Json<serde_json::Value> = row.try_get("payload")?;
            let evidence: sqlx::types::Json<serde_json::Value> = row.try_get("evidence")?;
            Ok($crate::StoredEvent {
                seq: row.try_get("seq")?,
                event: converge_core::Event {
                    id: row.try_get("id")?,
                    trace_id: row.try_get("trace_id")?,
                    timestamp: get_ts(row, "timestamp")?,
                    event_type: event_type.parse().map_err($crate::error::corrupt)?,
                    intent_id: row.try_get("intent_id")?,
                    agent_id: row.try_get("agent_id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    payload: payload.0,
                    evidence: evidence.0,
                },
            })
        }

        fn lease_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::LeaseState, $crate::StoreError> {
            Ok($crate::LeaseState {
                key: converge_core::queue::QueueKey {
                    tenant: row.try_get("tenant")?,
                    repo: row.try_get("repo")?,
                    target: row.try_get("target")?,
                },
                holder: row.try_get("holder")?,
                token: row.try_get("token")?,
                acquired_at: get_opt_ts(row, "acquired_at")?,
                expires_at: get_opt_ts(row, "expires_at")?,
            })
        }
    };
}

pub(crate) use {insert_intent_sql, insert_intents_prefix, intent_overwrite_sql, store_operations};
