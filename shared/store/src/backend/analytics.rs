//! What the analytics read (`converge_core::analytics`): tallies of a time window of the log
//! counted in SQL, all-time counts from `event_tallies` (kept by `commit`), and the waiting
//! intents and open reviews counted from their tables. Nothing here loads events to count
//! them in memory.

/// Expands these operations for one backend. `window_columns` is the select list of a window
/// tally over `events` (it reads payload fields, which the two dialects spell differently).
macro_rules! analytics_operations {
    ($store:ident, $db:ty, window_columns = $window_columns:literal, repo_of_intent = $repo_of_intent:literal) => {
        impl $store {
            /// Counts and means of a tenant's events (every tenant's when `None`) with
            /// `from <= timestamp` and, when given, `timestamp < until`.
            pub async fn window_tally(
                &self,
                tenant: Option<&str>,
                from: chrono::DateTime<chrono::Utc>,
                until: Option<chrono::DateTime<chrono::Utc>>,
            ) -> Result<converge_core::analytics::WindowTally, $crate::StoreError> {
                use converge_core::EventType as T;
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!("SELECT ", $window_columns, " FROM events WHERE event_type IN ("));
                let mut types = q.separated(", ");
                for t in [
                    T::SimulationCompleted,
                    T::RiskEvaluated,
                    T::IntentMerged,
                    T::IntentRejected,
                    T::IntentRequeued,
                    T::SemanticConflictDetected,
                ] {
                    types.push_bind(t.as_str());
                }
                q.push(") AND timestamp >= ").push_bind(ts(from));
                if let Some(until) = until {
                    q.push(" AND timestamp < ").push_bind(ts(until));
                }
                if let Some(tenant) = tenant {
                    q.push(" AND tenant_id = ").push_bind(tenant.to_owned());
                }
                let row = q.build().fetch_one(&self.pool).await?;
                let count = |column: &str| -> Result<u64, $crate::StoreError> {
                    let n: Option<i64> = row.try_get(column)?;
                    Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
                };
                let mean = |column: &str| -> Result<f64, $crate::StoreError> {
                    let m: Option<f64> = row.try_get(column)?;
                    Ok(m.unwrap_or(0.0))
                };
                Ok(converge_core::analytics::WindowTally {
                    simulations: count("simulations")?,
                    mergeable: count("mergeable")?,
                    risk_evaluations: count("risk_evaluations")?,
                    entropy_mean: mean("entropy_mean")?,
                    propagation_mean: mean("propagation_mean")?,
                    containment_mean: mean("containment_mean")?,
                    high_propagation: count("high_propagation")?,
                    merged: count("merged")?,
                    rejected: count("rejected")?,
                    requeued: count("requeued")?,
                    semantic_conflicts: count("semantic_conflicts")?,
                })
            }

            /// All-time counts of a tenant's decisions (every tenant's when `None`), from
            /// `event_tallies`.
            pub async fn log_totals(&self, tenant: Option<&str>) -> Result<converge_core::analytics::LogTotals, $crate::StoreError> {
                use converge_core::EventType as T;
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT event_type, CAST(SUM(events) AS BIGINT) AS events, CAST(SUM(mergeable) AS BIGINT) AS mergeable \
                     FROM event_tallies WHERE event_type IN (",
                );
                let mut types = q.separated(", ");
                for t in [T::SimulationCompleted, T::IntentMerged, T::IntentRejected, T::IntentBlocked, T::QueueReset, T::IntentRequeued] {
                    types.push_bind(t.as_str());
                }
                q.push(")");
                if let Some(tenant) = tenant {
                    q.push(" AND tenant = ").push_bind(tenant.to_owned());
                }
                q.push(" GROUP BY event_type");
                let rows = q.build().fetch_all(&self.pool).await?;
                let mut totals = converge_core::analytics::LogTotals::default();
                for row in &rows {
                    let event_type: String = row.try_get("event_type")?;
                    let events = u64::try_from(row.try_get::<i64, _>("events")?).unwrap_or(0);
                    let mergeable = u64::try_from(row.try_get::<i64, _>("mergeable")?).unwrap_or(0);
                    match event_type.parse::<T>().ok() {
                        Some(T::SimulationCompleted) => {
                            totals.simulations = events;
                            totals.mergeable = mergeable;
                        }
                        Some(T::IntentMerged) => totals.merged = events,
                        Some(T::IntentRejected) => totals.rejected = events,
                        Some(T::IntentBlocked) => totals.blocked = events,
                        Some(T::QueueReset | T::IntentRequeued) => totals.retries += events,
                        _ => {}
                    }
                }
                Ok(totals)
            }

            /// Events per UTC day ('YYYY-MM-DD', from `from_day` on) and type, of a tenant
            /// (every tenant's when `None`), from `event_tallies`: day, type, events, mergeable.
            pub async fn daily_tallies(
                &self,
                tenant: Option<&str>,
                from_day: &str,
                event_types: &[converge_core::EventType],
            ) -> Result<Vec<$crate::DailyTally>, $crate::StoreError> {
                if event_types.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT day, event_type, CAST(SUM(events) AS BIGINT) AS events, CAST(SUM(mergeable) AS BIGINT) AS mergeable \
                     FROM event_tallies WHERE day >= ",
                );
                q.push_bind(from_day.to_owned());
                q.push(" AND event_type IN (");
                let mut types = q.separated(", ");
                for t in event_types {
                    types.push_bind(t.as_str());
                }
                q.push(")");
                if let Some(tenant) = tenant {
                    q.push(" AND tenant = ").push_bind(tenant.to_owned());
                }
                q.push(" GROUP BY day, event_type ORDER BY day, event_type");
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        let event_type: String = row.try_get("event_type")?;
                        Ok($crate::DailyTally {
                            day: row.try_get("day")?,
                            event_type: event_type
                                .parse::<converge_core::EventType>()
                                .map_err(|_| $crate::error::corrupt(format!("unknown event type '{event_type}' in event_tallies")))?,
                            events: row.try_get("events")?,
                            mergeable: row.try_get("mergeable")?,
                        })
                    })
                    .collect()
            }

            /// A tenant's intents (every tenant's when `None`) as the health and debt formulas
            /// count them; `stale_before`: an active intent created before it is stale.
            pub async fn intent_tally(
                &self,
                tenant: Option<&str>,
                stale_before: chrono::DateTime<chrono::Utc>,
            ) -> Result<converge_core::analytics::IntentTally, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT CAST(COUNT(*) AS BIGINT) AS total, \
                     CAST(COALESCE(SUM(CASE WHEN status IN ('READY', 'VALIDATED', 'QUEUED') THEN 1 ELSE 0 END), 0) AS BIGINT) AS active, \
                     CAST(COALESCE(SUM(CASE WHEN status IN ('READY', 'VALIDATED', 'QUEUED') AND created_at < ",
                );
                q.push_bind(ts(stale_before));
                q.push(
                    " THEN 1 ELSE 0 END), 0) AS BIGINT) AS stale, \
                     CAST(COALESCE(SUM(CASE WHEN status IN ('READY', 'VALIDATED', 'QUEUED') AND retries > 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS retried \
                     FROM intents",
                );
                if let Some(tenant) = tenant {
                    q.push(" WHERE tenant_id = ").push_bind(tenant.to_owned());
                }
                let row = q.build().fetch_one(&self.pool).await?;
                let count = |column: &str| -> Result<u64, $crate::StoreError> {
                    Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
                };
                Ok(converge_core::analytics::IntentTally {
                    total: count("total")?,
                    active: count("active")?,
                    stale: count("stale")?,
                    retried: count("retried")?,
                })
            }

            /// The newest merges of a tenant (every tenant's when `None`) since `since`, at most
            /// `limit`: when each was merged and when its intent was created, newest first.
            pub async fn merge_times(
                &self,
                tenant: Option<&str>,
                since: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT e.timestamp AS merged_at, i.created_at AS created_at FROM events e \
                     JOIN intents i ON i.id = e.intent_id WHERE e.event_type = ",
                );
                q.push_bind(converge_core::EventType::IntentMerged.as_str());
                q.push(" AND e.timestamp >= ").push_bind(ts(since));
                if let Some(tenant) = tenant {
                    q.push(" AND e.tenant_id = ").push_bind(tenant.to_owned());
                }
                q.push(" ORDER BY e.timestamp DESC LIMIT ").push_bind(i64::from(limit));
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| Ok((get_ts(row, "merged_at")?, get_ts(row, "created_at")?)))
                    .collect()
            }

            /// The queues of a tenant (every tenant's when `None`) with intents waiting: how
            /// many, and when the oldest of them was created; the fullest first, at most `limit`.
            pub async fn queue_ages(
                &self,
                tenant: Option<&str>,
                limit: u32,
            ) -> Result<Vec<$crate::QueueAge>, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT COALESCE(tenant_id, '') AS tenant, ", $repo_of_intent, " AS repo, target, ",
                    "CAST(COUNT(*) AS BIGINT) AS waiting, MIN(created_at) AS oldest FROM intents ",
                    "WHERE status IN ('READY', 'VALIDATED', 'QUEUED')"
                ));
                if let Some(tenant) = tenant {
                    q.push(" AND tenant_id = ").push_bind(tenant.to_owned());
                }
                q.push(" GROUP BY 1, 2, 3 ORDER BY waiting DESC, 1, 2, 3 LIMIT ").push_bind(i64::from(limit));
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::QueueAge {
                            key: converge_core::queue::QueueKey {
                                tenant: row.try_get("tenant")?,
                                repo: row.try_get("repo")?,
                                target: row.try_get("target")?,
                            },
                            waiting: row.try_get("waiting")?,
                            oldest: get_ts(row, "oldest")?,
                        })
                    })
                    .collect()
            }

            /// The intake mode an operator set for a tenant (`""`: the global one).
            pub async fn intake_override(&self, tenant: &str) -> Result<Option<$crate::IntakeOverride>, $crate::StoreError> {
                let row = sqlx::query("SELECT mode, reason, set_by, set_at FROM intake_overrides WHERE tenant = $1")
                    .bind(tenant)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref()
                    .map(|row| {
                        Ok($crate::IntakeOverride {
                            mode: row.try_get("mode")?,
                            reason: row.try_get("reason")?,
                            set_by: row.try_get("set_by")?,
                            set_at: get_ts(row, "set_at")?,
                        })
                    })
                    .transpose()
            }

            /// The tenants that have intents (`""` for intents without one), in name order, at
            /// most `limit`.
            pub async fn tenants(&self, limit: u32) -> Result<Vec<String>, $crate::StoreError> {
                Ok(sqlx::query_scalar("SELECT tenant FROM tenant_versions ORDER BY tenant LIMIT $1")
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?)
            }

            /// Review tasks waiting for a reviewer to act (pending or assigned) of a tenant
            /// (every tenant's when `None`).
            pub async fn waiting_review_count(&self, tenant: Option<&str>) -> Result<u64, $crate::StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT CAST(COUNT(*) AS BIGINT) FROM review_tasks WHERE status IN ('pending', 'assigned')",
                );
                if let Some(tenant) = tenant {
                    q.push(" AND tenant = ").push_bind(tenant.to_owned());
                }
                let n: i64 = q.build_query_scalar().fetch_one(&self.pool).await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    };
}

pub(crate) use analytics_operations;
