//! The outbox: claims with a lapse, sent marks, releases, the unsent count.

/// Expands these operations for one backend (see `store_operations!`).
macro_rules! outbox_operations {
    ($store:ident, $db:ty, lock = $lock:literal, skip_locked = $skip_locked:literal, lock_projection = $lock_projection:literal, intents_as_json = $intents_as_json:literal, repo_of_intent = $repo_of_intent:literal, id_list = $id_list:literal, head_of_intent = $head_of_intent:literal) => {
        impl $store {
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
                let mut tx = begin_write(self).await?;
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
                    .map(outbox_entry_from_row)
                    .collect::<Result<Vec<_>, $crate::StoreError>>()?;
                entries.sort_by_key(|e| e.seq);
                Ok(entries)
            }

            /// Marks an outbox row sent. False if it was already marked.
            pub async fn mark_outbox_sent(&self, seq: i64) -> Result<bool, $crate::StoreError> {
                let updated = sqlx::query("UPDATE outbox SET sent_at = $2 WHERE seq = $1 AND sent_at IS NULL")
                    .bind(seq)
                    .bind(ts(self.now()))
                    .execute(self.writer())
                    .await?
                    .rows_affected();
                Ok(updated == 1)
            }

            /// Marks several outbox rows sent in one transaction (one commit, not one per row);
            /// answers how many were not marked already.
            pub async fn mark_outbox_rows_sent(&self, seqs: &[i64]) -> Result<u64, $crate::StoreError> {
                if seqs.is_empty() {
                    return Ok(0);
                }
                let now = self.now();
                let mut tx = begin_write(self).await?;
                let mut marked = 0;
                for seq in seqs {
                    marked += sqlx::query("UPDATE outbox SET sent_at = $2 WHERE seq = $1 AND sent_at IS NULL")
                        .bind(seq)
                        .bind(ts(now))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                Ok(marked)
            }

            /// Gives a claimed, unsent outbox row back at once (its sender failed and later rows
            /// must not overtake it). False if it was sent meanwhile.
            pub async fn release_outbox(&self, seq: i64) -> Result<bool, $crate::StoreError> {
                let updated = sqlx::query("UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE seq = $1 AND sent_at IS NULL")
                    .bind(seq)
                    .execute(self.writer())
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

            /// The oldest unsent row of each topic that starts with `prefix`, at most `limit`
            /// topics, oldest first (what waits, by topic, without claiming it).
            pub async fn first_unsent_per_topic(
                &self,
                prefix: &str,
                limit: u32,
            ) -> Result<Vec<$crate::OutboxEntry>, $crate::StoreError> {
                let rows = sqlx::query(
                    "SELECT seq, topic, payload, attempts FROM outbox WHERE seq IN (\
                     SELECT MIN(seq) FROM outbox WHERE sent_at IS NULL \
                     AND substr(topic, 1, length($1)) = $1 GROUP BY topic) \
                     ORDER BY seq LIMIT $2",
                )
                .bind(prefix)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(outbox_entry_from_row).collect()
            }
        }

        /// An outbox row as read (`seq, topic, payload, attempts`).
        fn outbox_entry_from_row(
            row: &<$db as sqlx::Database>::Row,
        ) -> Result<$crate::OutboxEntry, $crate::StoreError> {
            let payload: sqlx::types::Json<serde_json::Value> = row.try_get("payload")?;
            Ok($crate::OutboxEntry {
                seq: row.try_get("seq")?,
                topic: row.try_get("topic")?,
                payload: payload.0,
                attempts: row.try_get("attempts")?,
            })
        }
    };
}

pub(crate) use outbox_operations;
