//! How integration is going (`/health/*`, `/verification/debt*`, `/compliance/report`,
//! `/compliance/alerts`, `/predictions`, `/dashboard`, `/dashboard/alerts`): counted in SQL by
//! `converge_runtime::analytics` and scored by `converge_core::analytics`. Every one is a read
//! that writes nothing; trends read the snapshots the upkeep takes each hour.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use converge_core::EventType;
use converge_runtime::analytics::{self as analytics, AnalyticsError};
use converge_store::EventFilter;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::queue::queue_state_of;
use super::*;
use crate::AppState;
use crate::auth::{Principal, Role};
use crate::extract::ApiQuery;

impl From<AnalyticsError> for ApiError {
    fn from(error: AnalyticsError) -> Self {
        match error {
            AnalyticsError::Store(e) => e.into(),
            // A stored blob the API did not validate (written before it did, or by hand).
            AnalyticsError::Thresholds(e) => {
                tracing::error!("stored compliance thresholds cannot be read: {e}");
                ApiError::Conflict(format!(
                    "the stored compliance thresholds cannot be read ({e}); store valid ones"
                ))
            }
        }
    }
}

/// `?tenant_id&days`: a trend's span.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct TrendQuery {
    /// Tenant to read (ignored for tenant-bound keys, which always read their own).
    tenant_id: Option<String>,
    /// Days back, 1 to 365 (default 30).
    #[schemars(range(min = 1, max = 365))]
    days: Option<u32>,
}

fn days_of(days: Option<u32>) -> Result<u32, ApiError> {
    match days {
        None => Ok(30),
        Some(d) if (1..=365).contains(&d) => Ok(d),
        Some(d) => Err(ApiError::BadRequest(format!(
            "days must be between 1 and 365, got {d}"
        ))),
    }
}

/// `?tenant_id&horizon_days`.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct PredictQuery {
    /// Tenant to read (ignored for tenant-bound keys, which always read their own).
    tenant_id: Option<String>,
    /// The horizon: snapshots of the last twice this many days are read; 1 to 90 (default 7).
    #[schemars(range(min = 1, max = 90))]
    horizon_days: Option<u32>,
}

/// `?intent_id`.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct ChangeQuery {
    /// The intent.
    #[schemars(length(min = 1))]
    intent_id: String,
}

/// A trend: snapshots, oldest first.
#[derive(Serialize)]
struct Trend {
    days: u32,
    points: Vec<analytics::TrendPoint>,
    tenant_id: Option<String>,
}

/// `GET /health/repo/now`.
pub(super) async fn repo_health_now(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let now = state.services.clock.now();
    typed(analytics::repo_health(&state.services.store, tenant.as_deref(), now).await?)
}

async fn trend_of(
    state: &AppState,
    principal: &Principal,
    q: TrendQuery,
    of: EventType,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let days = days_of(q.days)?;
    let now = state.services.clock.now();
    let points = analytics::trend(&state.services.store, of, tenant.as_deref(), days, now).await?;
    typed(Trend {
        days,
        points,
        tenant_id: tenant,
    })
}

/// `GET /health/repo/trend`.
pub(super) async fn repo_health_trend(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TrendQuery>,
) -> ApiResult {
    trend_of(&state, &principal, q, EventType::HealthSnapshot).await
}

/// `GET /verification/debt/trend`.
pub(super) async fn debt_trend(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TrendQuery>,
) -> ApiResult {
    trend_of(&state, &principal, q, EventType::VerificationDebtSnapshot).await
}

/// `GET /health/change?intent_id=`.
pub(super) async fn change_health(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ChangeQuery>,
) -> ApiResult {
    let intent = visible_intent(&state, &principal, &q.intent_id).await?;
    let now = state.services.clock.now();
    typed(
        analytics::change_health(
            &state.services.store,
            &intent.id,
            intent.tenant_id.as_deref(),
            now,
        )
        .await?,
    )
}

/// The most risk evaluations an entropy trend reads.
const ENTROPY_POINTS: u32 = 500;

/// One point of the entropy trend.
#[derive(Serialize)]
struct EntropyPoint {
    timestamp: chrono::DateTime<chrono::Utc>,
    intent_id: Option<String>,
    entropy_score: Value,
}

/// `GET /health/entropy/trend`: the entropy of each risk evaluation, oldest first.
pub(super) async fn entropy_trend(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TrendQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let days = days_of(q.days)?;
    let now = state.services.clock.now();
    let mut events = state
        .services
        .store
        .events(&EventFilter {
            event_type: Some(EventType::RiskEvaluated),
            tenant_id: tenant.clone(),
            since: Some(now - chrono::Duration::days(i64::from(days))),
            limit: ENTROPY_POINTS,
            ..EventFilter::default()
        })
        .await?;
    // Oldest first by time (the log's order breaks ties).
    events.reverse();
    events.sort_by_key(|e| e.event.timestamp);
    let points: Vec<EntropyPoint> = events
        .into_iter()
        .map(|s| EntropyPoint {
            timestamp: s.event.timestamp,
            entropy_score: s
                .event
                .payload
                .get("entropy_score")
                .cloned()
                .unwrap_or(Value::Null),
            intent_id: s.event.intent_id,
        })
        .collect();
    typed(serde_json::json!({"days": days, "points": points, "tenant_id": tenant}))
}

/// `GET /health/predict`.
pub(super) async fn predict_health(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<PredictQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let horizon = match q.horizon_days {
        None => 7,
        Some(h) if (1..=90).contains(&h) => h,
        Some(h) => {
            return Err(ApiError::BadRequest(format!(
                "horizon_days must be between 1 and 90, got {h}"
            )));
        }
    };
    let now = state.services.clock.now();
    typed(
        analytics::predictive_health(&state.services.store, tenant.as_deref(), horizon, now)
            .await?,
    )
}

/// `GET /verification/debt`.
pub(super) async fn debt_now(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let now = state.services.clock.now();
    typed(analytics::verification_debt(&state.services.store, tenant.as_deref(), now).await?)
}

/// `GET /compliance/report`.
pub(super) async fn compliance_report(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let now = state.services.clock.now();
    typed(analytics::compliance(&state.services.store, tenant.as_deref(), now).await?)
}

/// `GET /compliance/alerts`.
pub(super) async fn compliance_alerts(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let now = state.services.clock.now();
    let report = analytics::compliance(&state.services.store, tenant.as_deref(), now).await?;
    typed(serde_json::json!({
        "alerts": report.alerts,
        "tenant_id": tenant,
        "timestamp": report.timestamp,
    }))
}

/// `GET /predictions`.
pub(super) async fn predictions(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let now = state.services.clock.now();
    let predictions = analytics::predictions(&state.services.store, tenant.as_deref(), now).await?;
    typed(serde_json::json!({"predictions": predictions, "tenant_id": tenant}))
}

/// `GET /metrics/integration`: decision counts (all time, from the maintained tallies).
pub(super) async fn integration_metrics(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let now = state.services.clock.now();
    typed(analytics::integration_metrics(&state.services.store, tenant.as_deref(), now).await?)
}

/// An alert of the dashboard: a failed compliance check or a predicted issue.
fn alerts_of(
    report: &converge_core::analytics::ComplianceReport,
    predictions: &[converge_core::analytics::Prediction],
) -> Vec<Value> {
    let mut alerts: Vec<Value> = report
        .alerts
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
            v["source"] = Value::from("compliance");
            v["severity"] = Value::from("high");
            v
        })
        .collect();
    alerts.extend(predictions.iter().map(|p| {
        let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
        v["source"] = Value::from("prediction");
        v["alert"] = Value::from(p.message.clone());
        v
    }));
    alerts
}

/// `GET /dashboard/alerts`: failed compliance checks and predicted issues.
pub(super) async fn dashboard_alerts(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let now = state.services.clock.now();
    let overview = analytics::overview(&state.services.store, tenant.as_deref(), now).await?;
    let alerts = alerts_of(&overview.compliance, &overview.predictions);
    typed(serde_json::json!({
        "compliance_passed": overview.compliance.passed,
        "total": alerts.len(),
        "alerts": alerts,
        "tenant_id": tenant,
    }))
}

/// `GET /dashboard`: everything the dashboard shows, in one answer.
pub(super) async fn dashboard(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let now = state.services.clock.now();
    let store = &state.services.store;
    let t = tenant.as_deref();
    let (overview, prediction, queue) = futures_util::try_join!(
        async { Ok::<_, ApiError>(analytics::overview(store, t, now).await?) },
        async { Ok::<_, ApiError>(analytics::predictive_health(store, t, 7, now).await?) },
        queue_state_of(&state, tenant.clone()),
    )?;
    let alerts = alerts_of(&overview.compliance, &overview.predictions);
    let compliance = &overview.compliance;
    typed(serde_json::json!({
        "alerts": alerts,
        "compliance": {
            "passed": compliance.passed,
            "alerts": compliance.alerts,
            "checks": compliance.checks,
            "mergeable_rate": compliance.mergeable_rate,
            "conflict_rate": compliance.conflict_rate,
        },
        "debt": overview.debt,
        "health": overview.health,
        "metrics": overview.metrics,
        "predicted_health": prediction,
        "predictions": overview.predictions,
        "queue": queue,
        "tenant_id": tenant,
        "timestamp": overview.health.timestamp,
    }))
}

/// `POST /compliance/thresholds`: the thresholds to store (each left out keeps its default).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ThresholdsBody {
    /// Tenant written to (also accepted in the query); a tenant-bound key may only name its
    /// own (403 otherwise). Left out by a key of no tenant: the global thresholds.
    tenant_id: Option<String>,
    /// Lowest mergeable rate, 0 to 1 (default 0.8).
    #[schemars(range(min = 0.0, max = 1.0))]
    min_mergeable_rate: Option<f64>,
    /// Highest conflict rate, 0 to 1 (default 0.2).
    #[schemars(range(min = 0.0, max = 1.0))]
    max_conflict_rate: Option<f64>,
    /// Most requeues and queue resets, all time, up to a billion (default 200).
    #[serde(default, deserialize_with = "crate::extract::integral")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    max_retries_total: Option<u64>,
    /// Most intents tracked, up to a billion (default 1000).
    #[serde(default, deserialize_with = "crate::extract::integral")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    max_queue_tracked: Option<u64>,
    /// Highest verification debt, 0 to 100 (default 70).
    #[schemars(range(min = 0.0, max = 100.0))]
    max_debt_score: Option<f64>,
}

/// What a tenant's thresholds are.
#[derive(Serialize)]
struct ThresholdsAnswer {
    /// The thresholds in force (stored ones over the defaults).
    thresholds: serde_json::Map<String, Value>,
    /// What is stored (`null`: nothing, the defaults apply).
    stored: Option<Value>,
    tenant_id: String,
    updated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// 0 when nothing is stored.
    version: i64,
}

/// `GET /compliance/thresholds`.
pub(super) async fn get_thresholds(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let stored = state
        .services
        .store
        .compliance_thresholds(tenant.as_deref().unwrap_or(""))
        .await?;
    let in_force = analytics::thresholds_in(stored.as_ref().map(|s| &s.data))?;
    typed(ThresholdsAnswer {
        thresholds: in_force.as_map(),
        version: stored.as_ref().map_or(0, |s| s.version),
        updated_at: stored.as_ref().map(|s| s.updated_at),
        stored: stored.map(|s| s.data),
        tenant_id: tenant.unwrap_or_default(),
    })
}

/// `POST /compliance/thresholds`.
pub(super) async fn set_thresholds(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<super::risk::TenantWriteQuery>,
    crate::extract::ApiJson(body): crate::extract::ApiJson<ThresholdsBody>,
) -> ApiResult {
    let tenant = principal
        .write_tenant(body.tenant_id.clone().or(q.tenant_id))?
        .unwrap_or_default();
    let mut data = serde_json::Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            data.insert(name.to_owned(), value);
        }
    };
    put(
        "min_mergeable_rate",
        body.min_mergeable_rate.map(Value::from),
    );
    put("max_conflict_rate", body.max_conflict_rate.map(Value::from));
    put("max_retries_total", body.max_retries_total.map(Value::from));
    put("max_queue_tracked", body.max_queue_tracked.map(Value::from));
    put("max_debt_score", body.max_debt_score.map(Value::from));
    let (thresholds, version) =
        analytics::set_thresholds(&state.services, &principal.actor, &tenant, data)
            .await
            .map_err(|e| match e {
                analytics::ThresholdsError::Invalid(e) => ApiError::BadRequest(e.to_string()),
                analytics::ThresholdsError::Store(converge_store::StoreError::Conflict(_)) => {
                    ApiError::Conflict(
                        "the thresholds changed while this request was handled; nothing was written, send it again"
                            .to_owned(),
                    )
                }
                analytics::ThresholdsError::Store(e) => e.into(),
            })?;
    typed(serde_json::json!({
        "ok": true,
        "tenant_id": tenant,
        "thresholds": thresholds.as_map(),
        "version": version,
    }))
}

/// The most versions a history answers.
const THRESHOLD_HISTORY: u32 = 50;

/// `GET /compliance/thresholds/history`: the versions of a tenant's thresholds, newest first
/// (every tenant's, each naming its own, for a key of no tenant that names none).
pub(super) async fn thresholds_history(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let events = state
        .services
        .store
        .events(&EventFilter {
            event_type: Some(EventType::ComplianceThresholdsUpdated),
            tenant_id: tenant.clone(),
            limit: THRESHOLD_HISTORY,
            ..EventFilter::default()
        })
        .await?;
    let history: Vec<Value> = events
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "at": s.event.timestamp,
                "by": s.event.evidence.get("actor").cloned().unwrap_or(Value::Null),
                "tenant_id": s.event.payload.get("tenant_id").cloned().unwrap_or(Value::Null),
                "thresholds": s.event.payload.get("thresholds").cloned().unwrap_or(Value::Null),
                "version": s.event.payload.get("version").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    typed(serde_json::json!({"history": history, "tenant_id": tenant}))
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    let read = |path: &'static str,
                summary: &'static str,
                scope: &'static str,
                query: fn() -> Value,
                handler: MethodRouter<Arc<AppState>>| Route {
        method: "get",
        path,
        summary,
        role: Role::Viewer,
        scope,
        params: &[],
        query: Some(query),
        body: None,
        success: 200,
        conditional: false,
        answer: Answer::Json,
        handler,
    };
    vec![
        read(
            "/compliance/thresholds",
            "The compliance thresholds in force for the tenant, what is stored, and its version.",
            "compliance.read",
            schema_of::<TenantQuery>,
            get(get_thresholds),
        ),
        Route {
            method: "post",
            path: "/compliance/thresholds",
            summary: "Store the tenant's compliance thresholds (each left out keeps its default), recorded as a compliance.thresholds_updated event.",
            role: Role::Operator,
            scope: "compliance.write",
            params: &[],
            query: Some(schema_of::<super::risk::TenantWriteQuery>),
            body: Some(BodySpec::of::<ThresholdsBody>(
                "The thresholds; unknown names and values out of range are refused, naming the field.",
            )),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(set_thresholds),
        },
        Route {
            role: Role::Operator,
            ..read(
                "/compliance/thresholds/history",
                "Every version of the tenant's compliance thresholds, newest first (at most 50).",
                "compliance.read",
                schema_of::<TenantQuery>,
                get(thresholds_history),
            )
        },
        read(
            "/health/repo/now",
            "Repository health now: a score from the last 24 hours' simulations, entropy and rejections, with its lessons.",
            "intents.read",
            schema_of::<TenantQuery>,
            get(repo_health_now),
        ),
        read(
            "/health/repo/trend",
            "Repository health over the last days: the hourly snapshots, oldest first (at most 200).",
            "intents.read",
            schema_of::<TrendQuery>,
            get(repo_health_trend),
        ),
        read(
            "/health/change",
            "One intent's health from its latest risk evaluation, simulation and policy verdict, with its lessons.",
            "intents.read",
            schema_of::<ChangeQuery>,
            get(change_health),
        ),
        read(
            "/health/entropy/trend",
            "The entropy of each risk evaluation over the last days, oldest first (at most 500).",
            "intents.read",
            schema_of::<TrendQuery>,
            get(entropy_trend),
        ),
        read(
            "/health/predict",
            "Where health is heading: the velocity of the hourly snapshots and the signals it raises.",
            "intents.read",
            schema_of::<PredictQuery>,
            get(predict_health),
        ),
        read(
            "/verification/debt",
            "Verification debt now (0-100): stale and waiting intents, review backlog, conflicts, retries.",
            "intents.read",
            schema_of::<TenantQuery>,
            get(debt_now),
        ),
        read(
            "/verification/debt/trend",
            "Verification debt over the last days: the hourly snapshots, oldest first (at most 200).",
            "intents.read",
            schema_of::<TrendQuery>,
            get(debt_trend),
        ),
        read(
            "/compliance/report",
            "The compliance report: mergeable and conflict rates, retries, intents tracked and debt against the tenant's thresholds.",
            "compliance.read",
            schema_of::<TenantQuery>,
            get(compliance_report),
        ),
        read(
            "/compliance/alerts",
            "The compliance checks that fail now.",
            "compliance.read",
            schema_of::<TenantQuery>,
            get(compliance_alerts),
        ),
        read(
            "/predictions",
            "Issues the last two days show: rising conflicts, entropy spikes, stalls, rejections, cascades.",
            "intents.read",
            schema_of::<TenantQuery>,
            get(predictions),
        ),
        read(
            "/metrics/integration",
            "Decision counts (all time): simulations, mergeable rate, merges, rejections, blocks.",
            "events.read",
            schema_of::<TenantQuery>,
            get(integration_metrics),
        ),
        read(
            "/dashboard",
            "Everything the dashboard shows in one answer: health, debt, compliance, predictions, metrics, queue.",
            "intents.read",
            schema_of::<TenantQuery>,
            get(dashboard),
        ),
        read(
            "/dashboard/alerts",
            "Failed compliance checks and predicted issues, together.",
            "compliance.read",
            schema_of::<TenantQuery>,
            get(dashboard_alerts),
        ),
    ]
}
