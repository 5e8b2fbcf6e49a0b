//! Operators' settings: feature flags and the per-tenant policy documents.

/// Expands these operations for one backend (see `store_operations!`).
macro_rules! settings_operations {
    ($store:ident, $db:ty, lock = $lock:literal, skip_locked = $skip_locked:literal, lock_projection = $lock_projection:literal, intents_as_json = $intents_as_json:literal, repo_of_intent = $repo_of_intent:literal, id_list = $id_list:literal, head_of_intent = $head_of_intent:literal) => {
        impl $store {
            /// Claims `key` for a request of `scope` (the caller) whose method, path and body
            /// hash to `request_sha256`. A key is kept for `ttl`; a claim whose request never
            /// completed (its process died) is taken over after `in_progress_ttl`.
            pub async fn claim_idempotency_key(
                &self,
                scope: &str,
                key: &str,
                request_sha256: &str,
                ttl: chrono::Duration,
                in_progress_ttl: chrono::Duration,
            ) -> Result<$crate::IdempotencyClaim, $crate::StoreError> {
                let now = self.now();
                let mut tx = begin_write(self).await?;
                // Lapsed keys (anyone's: the table holds a day of requests at most), and this
                // key's claim if a crash abandoned it, are free again.
                sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                    .bind(ts(now - ttl))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "DELETE FROM idempotency_keys \
                     WHERE scope = $1 AND key = $2 AND status = 0 AND created_at < $3",
                )
                .bind(scope)
                .bind(key)
                .bind(ts(now - in_progress_ttl))
                .execute(&mut *tx)
                .await?;
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (scope, key, request_sha256, status, body, created_at) \
                     VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT DO NOTHING",
                )
                .bind(scope)
                .bind(key)
                .bind(request_sha256)
                .bind(ts(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let claim = if inserted == 1 {
                    $crate::IdempotencyClaim::New
                } else {
                    let row = sqlx::query(concat!(
                        "SELECT request_sha256, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
                        $lock
                    ))
                    .bind(scope)
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                    let stored: String = row.try_get("request_sha256")?;
                    let status: i64 = row.try_get("status")?;
                    if stored != request_sha256 {
                        $crate::IdempotencyClaim::Mismatch
                    } else if status == 0 {
                        $crate::IdempotencyClaim::InProgress
                    } else {
                        $crate::IdempotencyClaim::Answered {
                            status: u16::try_from(status).map_err($crate::error::corrupt)?,
                            body: row.try_get("body")?,
                        }
                    }
                };
                tx.commit().await?;
                Ok(claim)
            }

            /// Records the answer of the request holding `key`.
            pub async fn complete_idempotency_key(&self, scope: &str, key: &str, status: u16, body: &str) -> Result<(), $crate::StoreError> {
                sqlx::query("UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2 AND status = 0")
                    .bind(scope)
                    .bind(key)
                    .bind(i64::from(status))
                    .bind(body)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            /// Frees `key` (its request failed on the server's side: a retry runs again).
            pub async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<(), $crate::StoreError> {
                sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status = 0")
                    .bind(scope)
                    .bind(key)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            /// Writes the probe row, in a transaction of its own.
            pub async fn probe_write(&self) -> Result<(), $crate::StoreError> {
                let mut tx = begin_write(self).await?;
                sqlx::query(
                    "INSERT INTO store_probe (id, probed_at) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
                )
                .bind(ts(self.now()))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
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
                .execute(self.writer())
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
                .fetch_one(self.writer())
                .await?)
            }

            /// A tenant's compliance thresholds (`""` for the global ones) with their version.
            pub async fn compliance_thresholds(&self, tenant: &str) -> Result<Option<$crate::VersionedDocument>, $crate::StoreError> {
                self.document("SELECT data, version, updated_at FROM compliance_thresholds WHERE tenant = $1", tenant).await
            }

            /// Replaces a tenant's compliance thresholds.
            pub async fn put_compliance_thresholds(&self, tenant: &str, data: &serde_json::Value) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO compliance_thresholds (tenant, data, updated_at, version) VALUES ($1, $2, $3, 1) \
                     ON CONFLICT (tenant) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at, \
                     version = compliance_thresholds.version + 1",
                )
                .bind(tenant)
                .bind(sqlx::types::Json(data))
                .bind(ts(self.now()))
                .execute(self.writer())
                .await?;
                Ok(())
            }

            /// An agent's policy in a tenant (`""`: intents without one), with its version.
            pub async fn agent_policy(&self, agent_id: &str, tenant: &str) -> Result<Option<$crate::VersionedDocument>, $crate::StoreError> {
                let row = sqlx::query("SELECT policy, version, updated_at FROM agent_policies WHERE agent_id = $1 AND tenant = $2")
                    .bind(agent_id)
                    .bind(tenant)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref()
                    .map(|row| versioned_document(row, "policy"))
                    .transpose()
            }

            /// The agent policies of a tenant (every tenant's when `None`), by tenant and
            /// agent, at most `limit`.
            pub async fn agent_policies(&self, tenant: Option<&str>, limit: u32) -> Result<Vec<$crate::VersionedDocument>, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT policy, version, updated_at FROM agent_policies WHERE 1 = 1");
                if let Some(tenant) = tenant {
                    q.push(" AND tenant = ").push_bind(tenant.to_owned());
                }
                q.push(" ORDER BY tenant, agent_id LIMIT ").push_bind(i64::from(limit));
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| versioned_document(row, "policy"))
                    .collect()
            }

            async fn document(&self, sql: &'static str, tenant: &str) -> Result<Option<$crate::VersionedDocument>, $crate::StoreError> {
                let row = sqlx::query(sql).bind(tenant).fetch_optional(&self.pool).await?;
                row.as_ref()
                    .map(|row| versioned_document(row, "data"))
                    .transpose()
            }
        }

        /// A versioned document from its row: the JSON in `column`, its version and when it
        /// was written.
        fn versioned_document(
            row: &<$db as sqlx::Database>::Row,
            column: &str,
        ) -> Result<$crate::VersionedDocument, $crate::StoreError> {
            let data: sqlx::types::Json<serde_json::Value> = row.try_get(column)?;
            Ok($crate::VersionedDocument {
                data: data.0,
                version: row.try_get("version")?,
                updated_at: get_ts(row, "updated_at")?,
            })
        }
    };
}

pub(crate) use settings_operations;
