//! Leases on queue keys, with fencing tokens: acquire, extend, release, clear, inspect.

/// Expands these operations for one backend (see `store_operations!`).
macro_rules! lease_operations {
    ($store:ident, $db:ty, lock = $lock:literal, skip_locked = $skip_locked:literal, lock_projection = $lock_projection:literal, intents_as_json = $intents_as_json:literal, repo_of_intent = $repo_of_intent:literal, id_list = $id_list:literal, head_of_intent = $head_of_intent:literal) => {
        impl $store {
            /// Takes the lease of a queue key if nobody holds it or the holding expired.
            /// The new fencing token is one more than any token handed out for the key.
            pub async fn acquire_lease(
                &self,
                key: &converge_core::queue::QueueKey,
                holder: &str,
                ttl: std::time::Duration,
            ) -> Result<Option<$crate::Lease>, $crate::StoreError> {
                let ttl = chrono::Duration::from_std(ttl).map_err(|e| $crate::StoreError::Config(e.to_string()))?;
                let mut tx = begin_write(self).await?;
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
                // A key whose row is locked is in use: its holder is committing (a commit
                // guarded by the lease locks the row until it ends) or another worker is taking
                // it. On PostgreSQL the row is then skipped and the key answered busy at once,
                // instead of this worker waiting out that commit (and the commits queued before
                // it on the tenant's audit chain) only to find the key held.
                let token: Option<i64> = sqlx::query_scalar(concat!(
                    "UPDATE queue_leases SET holder = $4, token = token + 1, acquired_at = $5, expires_at = $6 \
                     WHERE tenant = $1 AND repo = $2 AND target = $3 AND (holder IS NULL OR expires_at <= $5) \
                     AND EXISTS (SELECT 1 FROM queue_leases AS unlocked \
                     WHERE unlocked.tenant = $1 AND unlocked.repo = $2 AND unlocked.target = $3",
                    $skip_locked,
                    ") RETURNING token"
                ))
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
                .execute(self.writer())
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
                .execute(self.writer())
                .await?
                .rows_affected();
                Ok(released == 1)
            }

            /// Clears whoever holds a key (operator action, `queue reset --clear-lock`). The
            /// token is kept, so the next holder's is higher and the old holder stays fenced.
            pub async fn force_clear_lease(&self, key: &converge_core::queue::QueueKey) -> Result<bool, $crate::StoreError> {
                // An operator clearing a key also ends its pause: they vouch for the fix.
                let cleared = sqlx::query(
                    "UPDATE queue_leases SET holder = NULL, acquired_at = NULL, expires_at = NULL, \
                     hold_reason = NULL, hold_since = NULL, hold_until = NULL, hold_failures = 0 \
                     WHERE tenant = $1 AND repo = $2 AND target = $3 \
                     AND (holder IS NOT NULL OR hold_reason IS NOT NULL)",
                )
                .bind(&key.tenant)
                .bind(&key.repo)
                .bind(&key.target)
                .execute(self.writer())
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
                .execute(self.writer())
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

            /// Pauses the key of `lease` (still held: its holder and token must match) because
            /// its environment failed with `reason`: one more failure in a row, and no round
            /// before the backoff of that many failures has passed.
            pub async fn hold_key(&self, lease: &$crate::Lease, reason: &str) -> Result<$crate::KeyHold, $crate::StoreError> {
                let mut tx = begin_write(self).await?;
                let failures: Option<i64> = sqlx::query_scalar(
                    "UPDATE queue_leases SET hold_failures = hold_failures + 1 \
                     WHERE tenant = $1 AND repo = $2 AND target = $3 AND holder = $4 AND token = $5 \
                     RETURNING hold_failures",
                )
                .bind(&lease.key.tenant)
                .bind(&lease.key.repo)
                .bind(&lease.key.target)
                .bind(&lease.holder)
                .bind(lease.token.0)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(failures) = failures else {
                    return Err($crate::StoreError::StaleLease { key: lease.key.clone(), token: lease.token.0 });
                };
                let failures = u32::try_from(failures).unwrap_or(u32::MAX);
                let now = self.now();
                let until = now + converge_core::queue::environment_backoff(failures);
                let row = sqlx::query(
                    "UPDATE queue_leases SET hold_reason = $4, hold_since = COALESCE(hold_since, $5), hold_until = $6 \
                     WHERE tenant = $1 AND repo = $2 AND target = $3 RETURNING *",
                )
                .bind(&lease.key.tenant)
                .bind(&lease.key.repo)
                .bind(&lease.key.target)
                .bind(reason)
                .bind(ts(now))
                .bind(ts(until))
                .fetch_one(&mut *tx)
                .await?;
                let hold = key_hold_from_row(&row)?;
                tx.commit().await?;
                hold.ok_or_else(|| $crate::StoreError::Config("the hold just written is not there".to_owned()))
            }

            /// Ends the pause of `key` if nobody holds its lease (a key left with nothing to do,
            /// whose rounds no longer run). True if it was paused.
            pub async fn release_idle_key_hold(&self, key: &converge_core::queue::QueueKey) -> Result<bool, $crate::StoreError> {
                let cleared = sqlx::query(
                    "UPDATE queue_leases SET hold_reason = NULL, hold_since = NULL, hold_until = NULL, hold_failures = 0 \
                     WHERE tenant = $1 AND repo = $2 AND target = $3 AND holder IS NULL AND hold_reason IS NOT NULL",
                )
                .bind(&key.tenant)
                .bind(&key.repo)
                .bind(&key.target)
                .execute(self.writer())
                .await?
                .rows_affected();
                Ok(cleared > 0)
            }

            /// Ends the pause of the key of `lease` (still held). True if it was paused.
            pub async fn release_key_hold(&self, lease: &$crate::Lease) -> Result<bool, $crate::StoreError> {
                let cleared = sqlx::query(
                    "UPDATE queue_leases SET hold_reason = NULL, hold_since = NULL, hold_until = NULL, hold_failures = 0 \
                     WHERE tenant = $1 AND repo = $2 AND target = $3 AND holder = $4 AND token = $5 AND hold_reason IS NOT NULL",
                )
                .bind(&lease.key.tenant)
                .bind(&lease.key.repo)
                .bind(&lease.key.target)
                .bind(&lease.holder)
                .bind(lease.token.0)
                .execute(self.writer())
                .await?
                .rows_affected();
                Ok(cleared > 0)
            }

            /// Stores one of the documents a key keeps in its lease row (`None` forgets it). The
            /// key's lease must still be held (holder and token), or nothing is written and
            /// `StaleLease` answers.
            pub async fn save_key_document(&self, lease: &$crate::Lease, document: $crate::KeyDocument, text: Option<&str>) -> Result<(), $crate::StoreError> {
                let saved = sqlx::query(document.update_sql())
                .bind(&lease.key.tenant)
                .bind(&lease.key.repo)
                .bind(&lease.key.target)
                .bind(&lease.holder)
                .bind(lease.token.0)
                .bind(text)
                .execute(self.writer())
                .await?
                .rows_affected();
                if saved == 0 {
                    return Err($crate::StoreError::StaleLease { key: lease.key.clone(), token: lease.token.0 });
                }
                Ok(())
            }

            /// One of the documents a key keeps in its lease row, if it has it.
            pub async fn key_document(&self, key: &converge_core::queue::QueueKey, document: $crate::KeyDocument) -> Result<Option<String>, $crate::StoreError> {
                let text: Option<Option<String>> = sqlx::query_scalar(document.select_sql())
                .bind(&key.tenant)
                .bind(&key.repo)
                .bind(&key.target)
                .fetch_optional(&self.pool)
                .await?;
                Ok(text.flatten())
            }

            /// The stored trains (tested queues) of a repository's keys, by key: the queues a
            /// commit may be under test in.
            pub async fn trains_of_repo(&self, repo: &str) -> Result<Vec<(converge_core::queue::QueueKey, String)>, $crate::StoreError> {
                let rows: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT tenant, target, train FROM queue_leases WHERE repo = $1 AND train IS NOT NULL ORDER BY tenant, target",
                )
                .bind(repo)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(tenant, target, train)| {
                        (converge_core::queue::QueueKey { tenant, repo: repo.to_owned(), target }, train)
                    })
                    .collect())
            }

            /// Every lease row, with the key's pause if it is paused.
            pub async fn leases(&self) -> Result<Vec<$crate::LeaseState>, $crate::StoreError> {
                let rows = sqlx::query("SELECT * FROM queue_leases ORDER BY tenant, repo, target")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(lease_from_row).collect()
            }
        }
    };
}

pub(crate) use lease_operations;
