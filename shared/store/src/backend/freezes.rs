//! Freezes (`converge_core::freeze`): written by `commit` with their events, read here by the
//! API and by the worker before every merge.

/// Expands these operations for one backend (see `store_operations!`).
macro_rules! freeze_operations {
    ($store:ident, $db:ty, $($rest:tt)*) => {
        impl $store {
            /// Freezes of a tenant (every tenant's when `None`), newest first: the live ones,
            /// or every one with `include_lifted`.
            pub async fn freezes(&self, tenant: Option<&str>, include_lifted: bool, limit: u32) -> Result<Vec<converge_core::freeze::Freeze>, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM queue_freezes WHERE 1 = 1");
                if let Some(tenant) = tenant {
                    q.push(" AND tenant = ").push_bind(tenant.to_owned());
                }
                if !include_lifted {
                    q.push(" AND lifted_at IS NULL");
                }
                q.push(" ORDER BY created_at DESC, id LIMIT ").push_bind(i64::from(limit.max(1)));
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter().map(freeze_from_row).collect()
            }

            /// One freeze by id.
            pub async fn freeze(&self, id: &str) -> Result<Option<converge_core::freeze::Freeze>, $crate::StoreError> {
                let row = sqlx::query("SELECT * FROM queue_freezes WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(freeze_from_row).transpose()
            }

            /// The freezes not lifted that cover a queue key (whatever their windows).
            pub async fn freezes_of_key(&self, key: &converge_core::queue::QueueKey) -> Result<Vec<converge_core::freeze::Freeze>, $crate::StoreError> {
                let rows = sqlx::query(
                    "SELECT * FROM queue_freezes WHERE lifted_at IS NULL AND tenant = $1 \
                     AND (repo IS NULL OR repo = $2) AND (target IS NULL OR target = $3) \
                     ORDER BY created_at, id",
                )
                .bind(&key.tenant)
                .bind(&key.repo)
                .bind(&key.target)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(freeze_from_row).collect()
            }
        }

        /// Writes a commit's freeze changes inside its transaction.
        async fn write_freezes(
            tx: &mut WriteTx,
            changes: &[$crate::FreezeWrite],
        ) -> Result<(), $crate::StoreError> {
            for change in changes {
                match change {
                    $crate::FreezeWrite::Put(freeze) => {
                        sqlx::query(
                            "INSERT INTO queue_freezes (id, tenant, repo, target, reason, time_window, created_by, created_at, lifted_at, lifted_by) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)",
                        )
                        .bind(&freeze.id)
                        .bind(freeze.tenant_id.clone().unwrap_or_default())
                        .bind(&freeze.repo)
                        .bind(&freeze.target)
                        .bind(&freeze.reason)
                        .bind(sqlx::types::Json(&freeze.window))
                        .bind(&freeze.created_by)
                        .bind(ts(freeze.created_at))
                        .execute(&mut **tx)
                        .await?;
                    }
                    $crate::FreezeWrite::Lift { id, by, at } => {
                        let lifted = sqlx::query(
                            "UPDATE queue_freezes SET lifted_at = $2, lifted_by = $3 WHERE id = $1 AND lifted_at IS NULL",
                        )
                        .bind(id)
                        .bind(ts(*at))
                        .bind(by)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                        if lifted == 0 {
                            return Err($crate::StoreError::Conflict(format!("freeze {id} is already lifted")));
                        }
                    }
                }
            }
            Ok(())
        }

        fn freeze_from_row(row: &<$db as sqlx::Database>::Row) -> Result<converge_core::freeze::Freeze, $crate::StoreError> {
            let tenant: String = row.try_get("tenant")?;
            let window: sqlx::types::Json<converge_core::freeze::Window> = row.try_get("time_window")?;
            Ok(converge_core::freeze::Freeze {
                id: row.try_get("id")?,
                tenant_id: (!tenant.is_empty()).then_some(tenant),
                repo: row.try_get("repo")?,
                target: row.try_get("target")?,
                reason: row.try_get("reason")?,
                window: window.0,
                created_by: row.try_get("created_by")?,
                created_at: get_ts(row, "created_at")?,
                lifted_at: get_opt_ts(row, "lifted_at")?,
                lifted_by: row.try_get("lifted_by")?,
            })
        }
    };
}

pub(crate) use freeze_operations;
