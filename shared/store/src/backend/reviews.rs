//! Review tasks (`converge_core::review`): written by `commit` with their events (a changed
//! task only if it is still at the version its change was decided from), read by the API, the
//! queue (what holds an intent) and the sweep (what is past its SLA).

/// Expands these operations for one backend (see `store_operations!`).
macro_rules! review_operations {
    ($store:ident, $db:ty, lock = $lock:literal, skip_locked = $skip_locked:literal, lock_projection = $lock_projection:literal, intents_as_json = $intents_as_json:literal, repo_of_intent = $repo_of_intent:literal, id_list = $id_list:literal, head_of_intent = $head_of_intent:literal) => {
        impl $store {
            /// A review task with its version.
            pub async fn review_task(&self, id: &str) -> Result<Option<$crate::StoredReview>, $crate::StoreError> {
                let row = sqlx::query("SELECT task, version FROM review_tasks WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(stored_review_from_row).transpose()
            }

            /// Review tasks, newest first (open ones: soonest due first), filtered.
            pub async fn review_tasks(&self, filter: &$crate::ReviewFilter) -> Result<Vec<converge_core::review::ReviewTask>, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT task, version FROM review_tasks WHERE 1 = 1");
                if let Some(tenant) = &filter.tenant_id {
                    q.push(" AND tenant = ").push_bind(tenant.clone());
                }
                if let Some(intent) = &filter.intent_id {
                    q.push(" AND intent_id = ").push_bind(intent.clone());
                }
                if let Some(status) = filter.status {
                    q.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(reviewer) = &filter.reviewer {
                    q.push(" AND reviewer = ").push_bind(reviewer.clone());
                }
                if filter.open_only {
                    q.push(" AND status IN ('pending', 'assigned', 'in_review', 'escalated') ORDER BY sla_deadline, id");
                } else {
                    q.push(" ORDER BY created_at DESC, id");
                }
                q.push(" LIMIT ").push_bind(i64::from(filter.limit.max(1)));
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter().map(|row| stored_review_from_row(row).map(|s| s.task)).collect()
            }

            /// The review tasks of these intents (the queue's page), newest first, in one query.
            pub async fn review_tasks_of(&self, intent_ids: &[String]) -> Result<Vec<converge_core::review::ReviewTask>, $crate::StoreError> {
                if intent_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let ids = serde_json::to_string(intent_ids).map_err($crate::error::corrupt)?;
                // At most this many tasks for one page of intents: a bounded read.
                const MOST: i64 = 10_000;
                let rows = sqlx::query(concat!(
                    "SELECT task, version FROM review_tasks WHERE intent_id IN (", $id_list, ") ORDER BY created_at DESC, id LIMIT $1"
                ))
                .bind(MOST)
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| stored_review_from_row(row).map(|s| s.task)).collect()
            }

            /// Open tasks past their SLA deadline and not escalated yet, oldest deadline first.
            pub async fn overdue_reviews(&self, now: chrono::DateTime<chrono::Utc>, limit: u32) -> Result<Vec<$crate::StoredReview>, $crate::StoreError> {
                let rows = sqlx::query(
                    "SELECT task, version FROM review_tasks WHERE status IN ('pending', 'assigned', 'in_review') \
                     AND sla_deadline < $1 ORDER BY sla_deadline, id LIMIT $2",
                )
                .bind(ts(now))
                .bind(i64::from(limit.max(1)))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(stored_review_from_row).collect()
            }

            /// Tasks counted by status and by reviewer, and the open ones past their deadline.
            pub async fn review_counts(&self, tenant: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Result<$crate::ReviewCounts, $crate::StoreError> {
                let mut by_status = std::collections::BTreeMap::new();
                let mut by_reviewer = std::collections::BTreeMap::new();
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT status, COALESCE(reviewer, ''), COUNT(*) FROM review_tasks WHERE 1 = 1");
                if let Some(tenant) = tenant {
                    q.push(" AND tenant = ").push_bind(tenant.to_owned());
                }
                q.push(" GROUP BY status, COALESCE(reviewer, '')");
                let rows: Vec<(String, String, i64)> = q.build_query_as().fetch_all(&self.pool).await?;
                for (status, reviewer, count) in rows {
                    *by_status.entry(status).or_insert(0) += count;
                    if !reviewer.is_empty() {
                        *by_reviewer.entry(reviewer).or_insert(0) += count;
                    }
                }
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT COUNT(*) FROM review_tasks WHERE status IN ('pending', 'assigned', 'in_review') AND sla_deadline < ",
                );
                q.push_bind(ts(now));
                if let Some(tenant) = tenant {
                    q.push(" AND tenant = ").push_bind(tenant.to_owned());
                }
                let (overdue,): (i64,) = q.build_query_as().fetch_one(&self.pool).await?;
                Ok($crate::ReviewCounts { by_status, by_reviewer, overdue })
            }
        }

        /// Writes a commit's review tasks inside its transaction.
        async fn write_reviews(
            tx: &mut WriteTx,
            writes: &[$crate::ReviewWrite],
        ) -> Result<(), $crate::StoreError> {
            for write in writes {
                let task = &write.task;
                let json = sqlx::types::Json(task);
                match write.expected_version {
                    None => {
                        sqlx::query(
                            "INSERT INTO review_tasks (id, intent_id, tenant, status, reviewer, sla_deadline, created_at, task, version) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)",
                        )
                        .bind(&task.id)
                        .bind(&task.intent_id)
                        .bind(task.tenant_id.clone().unwrap_or_default())
                        .bind(task.status.as_str())
                        .bind(&task.reviewer)
                        .bind(ts(task.sla_deadline))
                        .bind(ts(task.created_at))
                        .bind(json)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Some(version) => {
                        let written = sqlx::query(
                            "UPDATE review_tasks SET status = $3, reviewer = $4, task = $5, version = version + 1 \
                             WHERE id = $1 AND version = $2",
                        )
                        .bind(&task.id)
                        .bind(version)
                        .bind(task.status.as_str())
                        .bind(&task.reviewer)
                        .bind(json)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                        if written == 0 {
                            return Err($crate::StoreError::Conflict(format!(
                                "review task {} changed since it was read",
                                task.id
                            )));
                        }
                    }
                }
            }
            Ok(())
        }

        fn stored_review_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::StoredReview, $crate::StoreError> {
            let task: sqlx::types::Json<converge_core::review::ReviewTask> = row.try_get(0)?;
            Ok($crate::StoredReview { task: task.0, version: row.try_get(1)? })
        }
    };
}

pub(crate) use review_operations;
