//! The audit chain in the store: heads locked and moved on by commits written in steps
//! (`lock_chains`, then `move_heads` with the log's tail; PostgreSQL's one-tenant commits do
//! both in their tail's statement, `pg.rs`), the reads verification pages through, the sealing of rows
//! from before the chain existed, and retention (pruning a verified prefix behind a signed
//! anchor; sent outbox rows).
//! What a chain *is* lives in `converge_core::audit`.

/// Expands these operations for one backend (see `store_operations!`).
macro_rules! audit_operations {
    ($store:ident, $db:ty, lock = $lock:literal, $($rest:tt)*) => {
        impl $store {
            /// A chain's head (`""`: events without a tenant), if it has had events.
            pub async fn audit_head(&self, chain: &str) -> Result<Option<converge_core::audit::Head>, $crate::StoreError> {
                let row: Option<(i64, String)> =
                    sqlx::query_as("SELECT next_index, last_hash FROM audit_chains WHERE tenant = $1")
                        .bind(chain)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(next_index, last_hash)| converge_core::audit::Head { next_index, last_hash }))
            }

            /// The anchor retention left in a chain, if it was ever pruned.
            pub async fn audit_anchor(&self, chain: &str) -> Result<Option<converge_core::audit::Anchor>, $crate::StoreError> {
                let row = sqlx::query("SELECT * FROM audit_anchors WHERE tenant = $1")
                    .bind(chain)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(anchor_from_row).transpose()
            }

            /// Up to `limit` events of a chain after position `after_index`, in chain order.
            pub async fn audit_links(&self, chain: &str, after_index: i64, limit: u32) -> Result<Vec<$crate::ChainedEvent>, $crate::StoreError> {
                let rows = sqlx::query(
                    "SELECT * FROM events WHERE COALESCE(tenant_id, '') = $1 AND chain_index > $2 \
                     ORDER BY chain_index LIMIT $3",
                )
                .bind(chain)
                .bind(after_index)
                .bind(i64::from(limit.max(1)))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(chained_event_from_row).collect()
            }

            /// The id of an event of the chain's tenant that is in no chain (appended around
            /// the chain, or by a process older than it), if there is one.
            pub async fn first_unchained_event(&self, chain: &str) -> Result<Option<String>, $crate::StoreError> {
                Ok(sqlx::query_scalar(
                    "SELECT id FROM events WHERE chain_index IS NULL AND COALESCE(tenant_id, '') = $1 \
                     ORDER BY seq LIMIT 1",
                )
                .bind(chain)
                .fetch_optional(&self.pool)
                .await?)
            }

            /// Every chain that has had events, by name.
            pub async fn audit_chain_names(&self) -> Result<Vec<String>, $crate::StoreError> {
                Ok(sqlx::query_scalar("SELECT tenant FROM audit_chains ORDER BY tenant")
                    .fetch_all(&self.pool)
                    .await?)
            }

            /// Chains the events that are in no chain (rows from before the chain existed),
            /// oldest first, a page per transaction. Returns how many were chained.
            pub async fn seal_unchained_events(&self) -> Result<u64, $crate::StoreError> {
                const PAGE: i64 = 500;
                // Every process start comes here: a read (on the partial index of unchained
                // rows) spares it a write transaction when, as almost always, nothing waits.
                let waiting: Option<i64> =
                    sqlx::query_scalar("SELECT seq FROM events WHERE chain_index IS NULL LIMIT 1")
                        .fetch_optional(&self.pool)
                        .await?;
                if waiting.is_none() {
                    return Ok(0);
                }
                let mut sealed = 0u64;
                let mut after_seq = 0i64;
                loop {
                    let mut tx = begin_write(self).await?;
                    let rows = sqlx::query(concat!(
                        "SELECT * FROM events WHERE chain_index IS NULL AND seq > $1 ORDER BY seq LIMIT $2",
                        $lock
                    ))
                    .bind(after_seq)
                    .bind(PAGE)
                    .fetch_all(&mut *tx)
                    .await?;
                    let Some(last) = rows.last() else {
                        tx.commit().await?;
                        return Ok(sealed);
                    };
                    after_seq = last.try_get("seq")?;
                    // A row that does not read as an event stays out of the chain, where
                    // verification reports it.
                    let mut events = Vec::with_capacity(rows.len());
                    for row in &rows {
                        match stored_event_from_row(row) {
                            Ok(stored) => events.push(stored),
                            Err(e) => tracing::warn!("an event row is unreadable and stays out of the audit chain: {e}"),
                        }
                    }
                    let plain: Vec<converge_core::Event> = events.iter().map(|s| s.event.clone()).collect();
                    let links = chain_events(&mut tx, &plain).await?;
                    for (stored, (index, hash)) in events.iter().zip(&links) {
                        sqlx::query("UPDATE events SET chain_index = $1, chain_hash = $2 WHERE seq = $3")
                            .bind(*index)
                            .bind(hash)
                            .bind(stored.seq)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    sealed += links.len() as u64;
                }
            }

            /// Removes the events of a chain older than `cutoff`, from its start, up to
            /// `batch` of them and never one of an intent still in the queue (nor anything
            /// after it), after verifying them; leaves an anchor signed with `key` at the last
            /// one removed. Returns how many were removed (0: nothing is old enough).
            /// A chain that does not verify is not pruned ([`StoreError::ChainBroken`]).
            pub async fn prune_chain(
                &self,
                chain: &str,
                cutoff: chrono::DateTime<chrono::Utc>,
                key: &converge_core::audit::SigningKey,
                batch: u32,
            ) -> Result<u64, $crate::StoreError> {
                let broken = |reason: String| $crate::StoreError::ChainBroken { chain: chain.to_owned(), reason };
                let mut tx = begin_write(self).await?;
                // The head's lock keeps the chain's appends out while its start moves.
                let head: Option<(i64, String)> = sqlx::query_as(concat!(
                    "SELECT next_index, last_hash FROM audit_chains WHERE tenant = $1",
                    $lock
                ))
                .bind(chain)
                .fetch_optional(&mut *tx)
                .await?;
                if head.is_none() {
                    tx.commit().await?;
                    return Ok(0);
                }
                let anchor = sqlx::query("SELECT * FROM audit_anchors WHERE tenant = $1")
                    .bind(chain)
                    .fetch_optional(&mut *tx)
                    .await?
                    .as_ref()
                    .map(anchor_from_row)
                    .transpose()?;
                if let Some(anchor) = &anchor
                    && !anchor.signed_by(key)
                {
                    return Err(broken("its anchor is not signed with the configured key".to_owned()));
                }
                let rows = sqlx::query(
                    "SELECT * FROM events WHERE COALESCE(tenant_id, '') = $1 AND chain_index > $2 \
                     ORDER BY chain_index LIMIT $3",
                )
                .bind(chain)
                .bind(anchor.as_ref().map_or(-1, |a| a.through_index))
                .bind(i64::from(batch.max(1)))
                .fetch_all(&mut *tx)
                .await?;
                // The events of intents still in the queue are kept, and with them everything
                // after them in the chain: their decision trail, checks and reviews are what
                // the queue judges them by.
                let mut live: std::collections::HashSet<String> = std::collections::HashSet::new();
                let mentioned: std::collections::BTreeSet<String> = rows
                    .iter()
                    .filter_map(|row| row.try_get::<Option<String>, _>("intent_id").ok().flatten())
                    .collect();
                if !mentioned.is_empty() {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT id FROM intents WHERE status IN ('READY', 'VALIDATED', 'QUEUED') AND id IN (",
                    );
                    let mut list = q.separated(", ");
                    for id in &mentioned {
                        list.push_bind(id.clone());
                    }
                    q.push(")");
                    let ids: Vec<(String,)> = q.build_query_as().fetch_all(&mut *tx).await?;
                    live.extend(ids.into_iter().map(|(id,)| id));
                }
                let mut verifier = converge_core::audit::Verifier::new(anchor.as_ref());
                let mut last = None;
                for row in &rows {
                    let stored = chained_event_from_row(row)?;
                    let event = stored.event.map_err(&broken)?;
                    if event.timestamp >= cutoff
                        || event.intent_id.as_ref().is_some_and(|id| live.contains(id))
                    {
                        break;
                    }
                    let link = converge_core::audit::Link { index: stored.chain_index, hash: stored.chain_hash, event };
                    verifier.check(&link).map_err(|b| broken(format!("at position {}: {}", b.chain_index, b.reason)))?;
                    last = Some(link);
                }
                let Some(last) = last else {
                    tx.commit().await?;
                    return Ok(0);
                };
                let from = anchor.as_ref().map_or(0, |a| a.through_index + 1);
                let removed = sqlx::query(
                    "DELETE FROM events WHERE COALESCE(tenant_id, '') = $1 AND chain_index >= $2 AND chain_index <= $3",
                )
                .bind(chain)
                .bind(from)
                .bind(last.index)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let pruned_before = anchor.as_ref().map_or(0, |a| a.pruned_events);
                let next = converge_core::audit::Anchor::sign(
                    key,
                    chain,
                    last.index,
                    &last.hash,
                    pruned_before + i64::try_from(removed).unwrap_or(i64::MAX),
                    self.now(),
                );
                sqlx::query(
                    "INSERT INTO audit_anchors (tenant, through_index, through_hash, pruned_events, created_at, signature) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant) DO UPDATE SET \
                     through_index = excluded.through_index, through_hash = excluded.through_hash, \
                     pruned_events = excluded.pruned_events, created_at = excluded.created_at, signature = excluded.signature",
                )
                .bind(&next.chain)
                .bind(next.through_index)
                .bind(&next.through_hash)
                .bind(next.pruned_events)
                .bind(ts(next.created_at))
                .bind(&next.signature)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(removed)
            }

            /// Deletes up to `batch` outbox rows sent before `cutoff`. Returns how many.
            pub async fn prune_sent_outbox(&self, cutoff: chrono::DateTime<chrono::Utc>, batch: u32) -> Result<u64, $crate::StoreError> {
                let mut tx = begin_write(self).await?;
                let removed = sqlx::query(
                    "DELETE FROM outbox WHERE seq IN \
                     (SELECT seq FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1 ORDER BY seq LIMIT $2)",
                )
                .bind(ts(cutoff))
                .bind(i64::from(batch.max(1)))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(removed)
            }
        }

        /// Extends the chains of `events`' tenants inside `tx` and moves their heads on:
        /// [`lock_chains`], then [`move_heads`]. Returns the position and hash of each event.
        async fn chain_events(
            tx: &mut WriteTx,
            events: &[converge_core::Event],
        ) -> Result<Vec<(i64, String)>, $crate::StoreError> {
            let (links, heads) = lock_chains(tx, events).await?;
            move_heads(tx, &heads).await?;
            Ok(links)
        }

        /// Locks the heads of the chains of `events`' tenants inside `tx` (tenants in name
        /// order, so two commits never wait on each other in a circle) and computes each
        /// event's position and hash. Returns them in the order given, and the heads as they
        /// stand after the events, which the caller writes back before committing.
        async fn lock_chains<'e>(
            tx: &mut WriteTx,
            events: &'e [converge_core::Event],
        ) -> Result<(Vec<(i64, String)>, $crate::backend::ChainHeads<'e>), $crate::StoreError> {
            let chains: std::collections::BTreeSet<&str> = events
                .iter()
                .map(|e| converge_core::audit::chain_of(e.tenant_id.as_deref()))
                .collect();
            let mut heads = std::collections::BTreeMap::new();
            for chain in chains {
                // An upsert that changes nothing still locks the row (and creates a missing one).
                let (next_index, last_hash): (i64, String) = sqlx::query_as(
                    "INSERT INTO audit_chains (tenant, next_index, last_hash) VALUES ($1, 0, $2) \
                     ON CONFLICT (tenant) DO UPDATE SET next_index = audit_chains.next_index \
                     RETURNING next_index, last_hash",
                )
                .bind(chain)
                .bind(converge_core::audit::GENESIS)
                .fetch_one(&mut **tx)
                .await?;
                heads.insert(chain, converge_core::audit::Head { next_index, last_hash });
            }
            let mut links = Vec::with_capacity(events.len());
            for event in events {
                let chain = converge_core::audit::chain_of(event.tenant_id.as_deref());
                let head = heads
                    .get_mut(chain)
                    .ok_or_else(|| $crate::error::corrupt(format!("no head for chain '{chain}'")))?;
                links.push(head.append(event));
            }
            Ok((links, heads))
        }

        /// Writes the heads [`lock_chains`] moved on.
        async fn move_heads(
            tx: &mut WriteTx,
            heads: &$crate::backend::ChainHeads<'_>,
        ) -> Result<(), $crate::StoreError> {
            for (chain, head) in heads {
                sqlx::query("UPDATE audit_chains SET next_index = $2, last_hash = $3 WHERE tenant = $1")
                    .bind(*chain)
                    .bind(head.next_index)
                    .bind(&head.last_hash)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(())
        }

        fn chained_event_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::ChainedEvent, $crate::StoreError> {
            let chain_index: Option<i64> = row.try_get("chain_index")?;
            let chain_hash: Option<String> = row.try_get("chain_hash")?;
            let seq: i64 = row.try_get("seq")?;
            Ok($crate::ChainedEvent {
                seq,
                chain_index: chain_index.ok_or_else(|| $crate::error::corrupt(format!("event {seq} has no chain position")))?,
                chain_hash: chain_hash.unwrap_or_default(),
                event: stored_event_from_row(row).map(|s| s.event).map_err(|e| e.to_string()),
            })
        }

        fn anchor_from_row(row: &<$db as sqlx::Database>::Row) -> Result<converge_core::audit::Anchor, $crate::StoreError> {
            Ok(converge_core::audit::Anchor {
                chain: row.try_get("tenant")?,
                through_index: row.try_get("through_index")?,
                through_hash: row.try_get("through_hash")?,
                pruned_events: row.try_get("pruned_events")?,
                created_at: get_ts(row, "created_at")?,
                signature: row.try_get("signature")?,
            })
        }
    };
}

pub(crate) use audit_operations;
