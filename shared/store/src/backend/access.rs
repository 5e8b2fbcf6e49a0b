//! API keys (hashes only) and the tenant-wide rate-limit counters.

/// Expands these operations for one backend (see `store_operations!`).
macro_rules! access_operations {
    ($store:ident, $db:ty, lock = $lock:literal, skip_locked = $skip_locked:literal, lock_projection = $lock_projection:literal, intents_as_json = $intents_as_json:literal, repo_of_intent = $repo_of_intent:literal, id_list = $id_list:literal, head_of_intent = $head_of_intent:literal) => {
        impl $store {
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
                .execute(self.writer())
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
                    .execute(self.writer())
                    .await?
                    .rows_affected();
                Ok(updated == 1)
            }

            /// Counts `hits` requests of `tenant` in the window starting at `window_start` at once
            /// and returns the window's count so far, these included (shared by every instance).
            /// An instance takes a block of its budget this way and spends it without writing.
            pub async fn hit_rate_limit(&self, tenant: &str, window_start: chrono::DateTime<chrono::Utc>, hits: i64) -> Result<i64, $crate::StoreError> {
                Ok(sqlx::query_scalar(
                    "INSERT INTO rate_limit_counters (tenant, window_start, hits) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant, window_start) DO UPDATE SET hits = rate_limit_counters.hits + $3 RETURNING hits",
                )
                .bind(tenant)
                .bind(ts(window_start))
                .bind(hits)
                .fetch_one(self.writer())
                .await?)
            }

            /// Forgets rate-limit windows that started before `cutoff`.
            pub async fn prune_rate_limits(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64, $crate::StoreError> {
                Ok(sqlx::query("DELETE FROM rate_limit_counters WHERE window_start < $1")
                    .bind(ts(cutoff))
                    .execute(self.writer())
                    .await?
                    .rows_affected())
            }

            /// Starts a dashboard session standing for `key_hash` until `expires_at`, and
            /// forgets the sessions that have expired.
            pub async fn create_session(&self, id_sha256: &str, key_hash: &str, expires_at: chrono::DateTime<chrono::Utc>) -> Result<(), $crate::StoreError> {
                let now = self.now();
                let mut tx = begin_write(self).await?;
                sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
                    .bind(ts(now))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO dashboard_sessions (id_sha256, key_hash, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(id_sha256)
                    .bind(key_hash)
                    .bind(ts(now))
                    .bind(ts(expires_at))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            /// The key hash a live session stands for (`None`: unknown or expired).
            pub async fn session_key(&self, id_sha256: &str) -> Result<Option<String>, $crate::StoreError> {
                Ok(sqlx::query_scalar("SELECT key_hash FROM dashboard_sessions WHERE id_sha256 = $1 AND expires_at > $2")
                    .bind(id_sha256)
                    .bind(ts(self.now()))
                    .fetch_optional(&self.pool)
                    .await?)
            }

            /// Ends a session.
            pub async fn delete_session(&self, id_sha256: &str) -> Result<(), $crate::StoreError> {
                sqlx::query("DELETE FROM dashboard_sessions WHERE id_sha256 = $1")
                    .bind(id_sha256)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use access_operations;
