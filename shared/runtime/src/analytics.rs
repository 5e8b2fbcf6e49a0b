//! The analytics as the server answers them: the tallies read from the store (counted in SQL,
//! never by loading events), fed to `converge_core::analytics`. Reads never write: the
//! snapshots that trends and predictions read are taken by the scheduled upkeep
//! ([`take_snapshots`]), once an hour per tenant however many processes run it.
//!
//! Where the server differs from the original (and from `converge analytics eval`, which keeps
//! its behaviour): change health reads only the tenant's intents; a report for no tenant uses
//! the global thresholds (`""`) when stored; windowed means are SQL averages (the original
//! sums newest first with compensation: they can differ in the last bit, which shows only at
//! an exact rounding tie).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use converge_core::EventType;
use converge_core::analytics::{self as core, Stamp};
use converge_core::pipeline::IdSource;
use converge_store::{Commit, EventFilter, Store, StoreError};
use serde_json::Value;

/// Why an analytics answer could not be given.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored compliance thresholds cannot be read.
    #[error("stored compliance thresholds: {0}")]
    Thresholds(#[from] core::ThresholdError),
}

/// How the answers print their instant.
pub fn stamp_of(tenant: Option<&str>, now: DateTime<Utc>) -> Stamp {
    Stamp {
        timestamp: now.to_rfc3339_opts(SecondsFormat::Micros, true),
        tenant_id: tenant.map(str::to_owned),
    }
}

/// The last day as the health and debt formulas read it: its window of events, the tenant's
/// intents and the reviews waiting, read once (concurrently) and shared by both formulas.
#[derive(Debug, Clone, PartialEq)]
pub struct Today {
    /// Counts and means of the last 24 hours.
    pub window: core::WindowTally,
    /// The intents (stale: created more than 24 hours ago).
    pub intents: core::IntentTally,
    /// Review tasks pending or assigned.
    pub reviews: u64,
}

impl Today {
    /// Reads a tenant's last day.
    pub async fn read(
        store: &Store,
        tenant: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Today, StoreError> {
        let s24 = now - Duration::hours(24);
        let (window, intents, reviews) = futures_util::try_join!(
            store.window_tally(tenant, s24, None),
            store.intent_tally(tenant, s24),
            store.waiting_review_count(tenant),
        )?;
        Ok(Today {
            window,
            intents,
            reviews,
        })
    }

    /// Repository health.
    pub fn health(&self, stamp: &Stamp) -> core::RepoHealth {
        core::repo_health(&self.window, &self.intents, stamp)
    }

    /// Verification debt.
    pub fn debt(&self, stamp: &Stamp) -> core::VerificationDebt {
        core::verification_debt(&self.intents, self.reviews, &self.window, stamp)
    }
}

/// Repository health now.
pub async fn repo_health(
    store: &Store,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<core::RepoHealth, AnalyticsError> {
    Ok(Today::read(store, tenant, now)
        .await?
        .health(&stamp_of(tenant, now)))
}

/// Verification debt now.
pub async fn verification_debt(
    store: &Store,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<core::VerificationDebt, AnalyticsError> {
    Ok(Today::read(store, tenant, now)
        .await?
        .debt(&stamp_of(tenant, now)))
}

/// The thresholds stored for a tenant (`None`: the global ones) over the defaults.
pub async fn thresholds_of(
    store: &Store,
    tenant: Option<&str>,
) -> Result<core::ComplianceThresholds, AnalyticsError> {
    let stored = store.compliance_thresholds(tenant.unwrap_or("")).await?;
    thresholds_in(stored.as_ref().map(|doc| &doc.data))
}

/// The thresholds a stored document (if any) puts in force.
pub fn thresholds_in(stored: Option<&Value>) -> Result<core::ComplianceThresholds, AnalyticsError> {
    match stored.and_then(Value::as_object) {
        Some(data) => Ok(core::ComplianceThresholds::overlaid(data)?),
        None => Ok(core::ComplianceThresholds::default()),
    }
}

/// The compliance report now.
pub async fn compliance(
    store: &Store,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<core::ComplianceReport, AnalyticsError> {
    let (today, totals, thresholds) = futures_util::try_join!(
        async { Ok::<_, AnalyticsError>(Today::read(store, tenant, now).await?) },
        async { Ok(store.log_totals(tenant).await?) },
        thresholds_of(store, tenant),
    )?;
    let stamp = stamp_of(tenant, now);
    Ok(core::compliance_report(
        &totals,
        today.intents.total,
        today.debt(&stamp).debt_score,
        &thresholds,
        &stamp,
    ))
}

/// Issues the last two days show.
pub async fn predictions(
    store: &Store,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<core::Prediction>, AnalyticsError> {
    let s24 = now - Duration::hours(24);
    let (last, before) = futures_util::try_join!(
        store.window_tally(tenant, s24, None),
        store.window_tally(tenant, now - Duration::hours(48), Some(s24)),
    )?;
    Ok(core::predictions(&last, &before))
}

/// Integration metrics (all time).
pub async fn integration_metrics(
    store: &Store,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<core::IntegrationMetrics, AnalyticsError> {
    let totals = store.log_totals(tenant).await?;
    Ok(core::integration_metrics(&totals, &stamp_of(tenant, now)))
}

/// Every "now" figure of a tenant at once, for the dashboard: each window, tally and count is
/// read once (concurrently) and shared by the formulas that use it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Overview {
    /// Repository health.
    pub health: core::RepoHealth,
    /// Verification debt.
    pub debt: core::VerificationDebt,
    /// The compliance report.
    pub compliance: core::ComplianceReport,
    /// Issues the last two days show.
    pub predictions: Vec<core::Prediction>,
    /// Integration metrics.
    pub metrics: core::IntegrationMetrics,
}

/// Reads and scores a tenant's [`Overview`].
pub async fn overview(
    store: &Store,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Overview, AnalyticsError> {
    let s24 = now - Duration::hours(24);
    let (today, day_before, totals, thresholds) = futures_util::try_join!(
        async { Ok::<_, AnalyticsError>(Today::read(store, tenant, now).await?) },
        async {
            Ok(store
                .window_tally(tenant, now - Duration::hours(48), Some(s24))
                .await?)
        },
        async { Ok(store.log_totals(tenant).await?) },
        thresholds_of(store, tenant),
    )?;
    let stamp = stamp_of(tenant, now);
    let debt = today.debt(&stamp);
    Ok(Overview {
        health: today.health(&stamp),
        compliance: core::compliance_report(
            &totals,
            today.intents.total,
            debt.debt_score,
            &thresholds,
            &stamp,
        ),
        debt,
        predictions: core::predictions(&today.window, &day_before),
        metrics: core::integration_metrics(&totals, &stamp),
    })
}

/// The newest snapshots of a type since `since` (at most `limit`), oldest first.
async fn snapshots(
    store: &Store,
    event_type: EventType,
    tenant: Option<&str>,
    since: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<converge_store::StoredEvent>, StoreError> {
    let mut events = store
        .events(&EventFilter {
            event_type: Some(event_type),
            tenant_id: tenant.map(str::to_owned),
            since: Some(since),
            limit,
            ..EventFilter::default()
        })
        .await?;
    // Oldest first by time (the log's order breaks ties).
    events.reverse();
    events.sort_by_key(|e| e.event.timestamp);
    Ok(events)
}

/// Where health is heading, from the snapshots of the last `2 × horizon_days` days.
pub async fn predictive_health(
    store: &Store,
    tenant: Option<&str>,
    horizon_days: u32,
    now: DateTime<Utc>,
) -> Result<core::PredictiveHealth, AnalyticsError> {
    let since = now - Duration::days(2 * i64::from(horizon_days));
    let points: Vec<core::SnapshotPoint> = snapshots(
        store,
        EventType::HealthSnapshot,
        tenant,
        since,
        core::PREDICTION_SNAPSHOTS as u32,
    )
    .await?
    .iter()
    .map(|s| core::SnapshotPoint::of_payload(&s.event.payload))
    .collect();
    Ok(core::predictive_health(
        &points,
        horizon_days,
        &stamp_of(tenant, now),
    ))
}

/// One point of a trend: a snapshot's payload with its time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrendPoint {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// What it recorded.
    pub snapshot: Value,
}

/// The most points a trend answers.
pub const TREND_POINTS: u32 = 200;

/// Snapshots of a type over the last `days` days, oldest first (the newest [`TREND_POINTS`]).
pub async fn trend(
    store: &Store,
    event_type: EventType,
    tenant: Option<&str>,
    days: u32,
    now: DateTime<Utc>,
) -> Result<Vec<TrendPoint>, AnalyticsError> {
    let since = now - Duration::days(i64::from(days));
    Ok(snapshots(store, event_type, tenant, since, TREND_POINTS)
        .await?
        .into_iter()
        .map(|s| TrendPoint {
            at: s.event.timestamp,
            snapshot: s.event.payload,
        })
        .collect())
}

/// The health of one intent (the caller has checked it is the tenant's).
pub async fn change_health(
    store: &Store,
    intent_id: &str,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<core::ChangeHealth, AnalyticsError> {
    let ids = [intent_id.to_owned()];
    let ids = &ids;
    let latest = |event_type| async move {
        Ok::<_, StoreError>(
            store
                .latest_events(event_type, ids)
                .await?
                .into_iter()
                .next()
                .map(|s| s.event.payload),
        )
    };
    let risk = latest(EventType::RiskEvaluated).await?;
    let simulation = latest(EventType::SimulationCompleted).await?;
    let policy = latest(EventType::PolicyEvaluated).await?;
    let signals =
        core::ChangeSignals::of_payloads(risk.as_ref(), simulation.as_ref(), policy.as_ref());
    Ok(core::change_health(
        intent_id,
        signals,
        &stamp_of(tenant, now),
    ))
}

/// The most queues a health snapshot records (the fullest).
const SNAPSHOT_QUEUES: u32 = 20;

/// How a queue is named within its tenant: `owner/repo@target`, or the target of local
/// intents.
pub fn queue_name(key: &converge_core::queue::QueueKey) -> String {
    if key.repo.is_empty() {
        key.target.clone()
    } else {
        format!("{}@{}", key.repo, key.target)
    }
}

/// Hours in a duration, to one decimal.
pub fn hours(duration: Duration) -> f64 {
    converge_core::numeric::py_round(duration.num_seconds().max(0) as f64 / 3600.0, 1)
}

/// The most tenants one upkeep snapshots.
const SNAPSHOT_TENANTS: u32 = 10_000;

/// What one round of snapshots did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Tenants snapshotted now.
    pub taken: usize,
    /// Tenants another process had already snapshotted this hour.
    pub already: usize,
}

/// Records each tenant's repository health and verification debt as `health.snapshot` and
/// `verification.debt.snapshot` events, once per tenant and UTC hour: the events' ids name
/// the tenant and the hour, so a second process's attempt collides and writes nothing.
pub async fn take_snapshots(
    store: &Store,
    ids: &(dyn IdSource + Sync),
    now: DateTime<Utc>,
) -> Result<SnapshotReport, AnalyticsError> {
    let hour = now.format("%Y%m%dT%H");
    let trace = format!("snapshot-{}", ids.new_id());
    let mut report = SnapshotReport::default();
    for tenant_key in store.tenants(SNAPSHOT_TENANTS).await? {
        let tenant = (!tenant_key.is_empty()).then_some(tenant_key.as_str());
        let today = Today::read(store, tenant, now).await?;
        let stamp = stamp_of(tenant, now);
        let (health, debt) = (today.health(&stamp), today.debt(&stamp));
        let queues: Vec<Value> = store
            .queue_ages(tenant, SNAPSHOT_QUEUES)
            .await?
            .into_iter()
            .map(|q| {
                serde_json::json!({
                    "queue": queue_name(&q.key),
                    "waiting": q.waiting,
                    "oldest_wait_hours": crate::analytics::hours(now - q.oldest),
                })
            })
            .collect();
        let mut health_payload = serde_json::to_value(&health).unwrap_or(Value::Null);
        health_payload["queues"] = Value::Array(queues);
        let event = |event_type: EventType, payload: Value| converge_core::Event {
            id: format!("{}/{hour}/{tenant_key}", event_type.as_str()),
            trace_id: trace.clone(),
            timestamp: now,
            event_type,
            intent_id: None,
            agent_id: None,
            tenant_id: tenant.map(str::to_owned),
            payload,
            evidence: Value::Object(serde_json::Map::new()),
        };
        let events = vec![
            event(EventType::HealthSnapshot, health_payload),
            event(
                EventType::VerificationDebtSnapshot,
                serde_json::to_value(&debt).unwrap_or(Value::Null),
            ),
        ];
        match store
            .commit(&Commit {
                events,
                ..Commit::default()
            })
            .await
        {
            Ok(_) => report.taken += 1,
            Err(StoreError::Conflict(_)) => report.already += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// Why thresholds were not stored.
#[derive(Debug, thiserror::Error)]
pub enum ThresholdsError {
    /// A field is not a threshold or out of its range.
    #[error("{0}")]
    Invalid(#[from] core::ThresholdError),
    /// The store failed, or the thresholds changed since they were read (a
    /// [`StoreError::Conflict`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stores a tenant's thresholds (`""`: the global ones) with the
/// `compliance.thresholds_updated` event that records them, over the version read just
/// before (a write made meanwhile fails with a conflict). Returns the thresholds in force and
/// the new version.
pub async fn set_thresholds(
    services: &crate::services::Services,
    actor: &str,
    tenant: &str,
    data: serde_json::Map<String, Value>,
) -> Result<(core::ComplianceThresholds, i64), ThresholdsError> {
    let thresholds = core::ComplianceThresholds::validated(&data)?;
    let current = services.store.compliance_thresholds(tenant).await?;
    let version = current.as_ref().map_or(1, |c| c.version + 1);
    let event_tenant = (!tenant.is_empty()).then_some(tenant);
    let event = crate::commands::api_event(
        services,
        actor,
        EventType::ComplianceThresholdsUpdated,
        None,
        event_tenant,
        serde_json::json!({
            "tenant_id": tenant,
            "thresholds": data,
            "in_force": thresholds.as_map(),
            "version": version,
        }),
    );
    services
        .store
        .commit(&Commit {
            events: vec![event],
            thresholds: vec![converge_store::DocumentWrite {
                tenant: tenant.to_owned(),
                data: Value::Object(data),
                expected_version: current.map(|c| c.version),
            }],
            ..Commit::default()
        })
        .await?;
    Ok((thresholds, version))
}

/// What the dashboard's charts draw over the last days: one value per UTC day, oldest first
/// (`None` where a day has nothing to show), and retries by cause.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChartData {
    /// The days, `YYYY-MM-DD`.
    pub days: Vec<String>,
    /// Merges per day.
    pub merged: Vec<u64>,
    /// Rejections per day.
    pub rejected: Vec<u64>,
    /// Median hours from an intent's creation to its merge, per day of merge.
    pub merge_hours_median: Vec<Option<f64>>,
    /// The 90th percentile of the same.
    pub merge_hours_p90: Vec<Option<f64>>,
    /// Waiting intents in the day's last health snapshot.
    pub queue_depth: Vec<Option<f64>>,
    /// Health score in the day's last health snapshot.
    pub health: Vec<Option<f64>>,
    /// Mean risk score of the day's risk evaluations.
    pub risk_mean: Vec<Option<f64>>,
    /// Requeues and rejections by cause over the span (causes with none left out).
    pub retry_causes: Vec<(&'static str, u64)>,
    /// The fullest queues (at most [`CHART_QUEUES`]) as the day's last snapshot saw them.
    pub queues: Vec<QueueSeries>,
}

/// One queue over the days of a chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSeries {
    /// `owner/repo@target` (or the target).
    pub queue: String,
    /// Intents waiting.
    pub waiting: Vec<Option<f64>>,
    /// Hours the oldest of them had waited.
    pub oldest_wait_hours: Vec<Option<f64>>,
}

/// Queues a chart draws (the fullest over its span).
pub const CHART_QUEUES: usize = 4;

/// The most events of each kind a chart reads (the newest in its span).
pub const CHART_SAMPLE: u32 = 2_000;

/// Reads what the dashboard's charts draw over the last `days` days (today included), with a
/// fixed number of bounded queries.
pub async fn charts(
    store: &Store,
    tenant: Option<&str>,
    days: u32,
    now: DateTime<Utc>,
) -> Result<ChartData, AnalyticsError> {
    let days = days.max(1);
    let first = (now - Duration::days(i64::from(days) - 1)).date_naive();
    let since = first.and_time(chrono::NaiveTime::MIN).and_utc();
    let day_of = |at: DateTime<Utc>| -> Option<usize> {
        usize::try_from((at.date_naive() - first).num_days())
            .ok()
            .filter(|d| *d < days as usize)
    };
    let n = days as usize;
    let mut data = ChartData {
        days: first
            .iter_days()
            .take(n)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .collect(),
        merged: vec![0; n],
        rejected: vec![0; n],
        ..ChartData::default()
    };
    let first_day = first.format("%Y-%m-%d").to_string();
    let recent = |event_type| EventFilter {
        event_type: Some(event_type),
        tenant_id: tenant.map(str::to_owned),
        since: Some(since),
        limit: CHART_SAMPLE,
        ..EventFilter::default()
    };
    let (risk_filter, requeue_filter, rejection_filter) = (
        recent(EventType::RiskEvaluated),
        recent(EventType::IntentRequeued),
        recent(EventType::IntentRejected),
    );
    let (tallies, merges, risks, requeues, rejections, snapshots) = futures_util::try_join!(
        store.daily_tallies(
            tenant,
            &first_day,
            &[EventType::IntentMerged, EventType::IntentRejected]
        ),
        store.merge_times(tenant, since, CHART_SAMPLE),
        store.events(&risk_filter),
        store.events(&requeue_filter),
        store.events(&rejection_filter),
        snapshots(
            store,
            EventType::HealthSnapshot,
            tenant,
            since,
            24 * (days + 1)
        ),
    )?;
    for tally in tallies {
        let Some(d) = data.days.iter().position(|day| *day == tally.day) else {
            continue;
        };
        let count = u64::try_from(tally.events).unwrap_or(0);
        match tally.event_type {
            EventType::IntentMerged => data.merged[d] += count,
            EventType::IntentRejected => data.rejected[d] += count,
            _ => {}
        }
    }
    let mut hours: Vec<Vec<f64>> = vec![Vec::new(); n];
    for (merged_at, created_at) in merges {
        if let Some(d) = day_of(merged_at) {
            hours[d].push((merged_at - created_at).num_seconds().max(0) as f64 / 3600.0);
        }
    }
    for day in &mut hours {
        day.sort_by(f64::total_cmp);
    }
    data.merge_hours_median = hours.iter().map(|h| core::nearest_rank(h, 0.5)).collect();
    data.merge_hours_p90 = hours.iter().map(|h| core::nearest_rank(h, 0.9)).collect();
    let mut risk: Vec<Vec<f64>> = vec![Vec::new(); n];
    for stored in risks {
        let score = stored
            .event
            .payload
            .get("risk_score")
            .and_then(Value::as_f64);
        if let (Some(d), Some(score)) = (day_of(stored.event.timestamp), score) {
            risk[d].push(score);
        }
    }
    data.risk_mean = risk
        .iter()
        .map(|r| (!r.is_empty()).then(|| r.iter().sum::<f64>() / r.len() as f64))
        .collect();
    // Oldest first: the day's last snapshot wins.
    let mut last_of_day: Vec<Option<&Value>> = vec![None; n];
    for snapshot in &snapshots {
        if let Some(d) = day_of(snapshot.event.timestamp) {
            last_of_day[d] = Some(&snapshot.event.payload);
        }
    }
    let field = |payload: Option<&Value>, key: &str| payload?.get(key)?.as_f64();
    data.health = last_of_day
        .iter()
        .map(|p| field(*p, "repo_health_score"))
        .collect();
    data.queue_depth = last_of_day
        .iter()
        .map(|p| field(*p, "active_intents"))
        .collect();
    let mut queues: std::collections::BTreeMap<String, QueueSeries> =
        std::collections::BTreeMap::new();
    for (d, payload) in last_of_day.iter().enumerate() {
        let listed = payload
            .and_then(|p| p.get("queues"))
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for q in listed {
            let Some(name) = q.get("queue").and_then(Value::as_str) else {
                continue;
            };
            let series = queues
                .entry(name.to_owned())
                .or_insert_with(|| QueueSeries {
                    queue: name.to_owned(),
                    waiting: vec![None; n],
                    oldest_wait_hours: vec![None; n],
                });
            series.waiting[d] = q.get("waiting").and_then(Value::as_f64);
            series.oldest_wait_hours[d] = q.get("oldest_wait_hours").and_then(Value::as_f64);
        }
    }
    let mut queues: Vec<QueueSeries> = queues.into_values().collect();
    let fullest = |s: &QueueSeries| s.waiting.iter().flatten().fold(0.0_f64, |a, b| a.max(*b));
    queues.sort_by(|a, b| fullest(b).total_cmp(&fullest(a)));
    queues.truncate(CHART_QUEUES);
    data.queues = queues;
    let mut causes = [0u64; 8];
    for stored in requeues.iter().chain(rejections.iter()) {
        if let Some(cause) = converge_core::queue::RetryCause::of_payload(&stored.event.payload)
            && let Some(i) = converge_core::queue::RetryCause::ALL
                .iter()
                .position(|c| *c == cause)
        {
            causes[i] += 1;
        }
    }
    data.retry_causes = converge_core::queue::RetryCause::ALL
        .iter()
        .zip(causes)
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| (c.as_str(), n))
        .collect();
    Ok(data)
}
