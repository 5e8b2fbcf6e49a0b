//! Risk: an intent's evidence and diagnostics, recent evaluations, the gate's report, and the
//! tenant's risk policy (`/risk/…`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use converge_core::{EventType, PolicyConfig};
use converge_store::{EventFilter, StoredEvent};
use serde::Deserialize;
use serde_json::json;

use super::events::recent_of_type;
use super::*;
use crate::AppState;
use crate::api;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};

/// `GET /risk/review`'s intent.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct ReviewQuery {
    /// The intent.
    intent_id: String,
}

/// `?tenant_id=` of a policy write.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct TenantWriteQuery {
    /// Tenant written to (also accepted in the body); a tenant-bound key may only name its
    /// own (403 otherwise). Left out by a key of no tenant: the policy of intents without one.
    pub(super) tenant_id: Option<String>,
}

/// `GET /risk/review?intent_id=`: the latest risk, simulation and policy evidence of an
/// intent, the diagnostics they call for, and its recent decisions.
pub(super) async fn risk_review(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> ApiResult {
    let id = q.intent_id;
    let intent = visible_intent(&state, &principal, &id).await?;
    let latest = |event_type: EventType| {
        let filter = EventFilter {
            intent_id: Some(id.clone()),
            event_type: Some(event_type),
            limit: 1,
            ..EventFilter::default()
        };
        let store = state.services.store.clone();
        async move {
            store
                .events(&filter)
                .await
                .map(|e| e.into_iter().next().map(|s| s.event.payload))
        }
    };
    let risk_payload = latest(EventType::RiskEvaluated).await?;
    let simulation_payload = latest(EventType::SimulationCompleted).await?;
    let policy_payload = latest(EventType::PolicyEvaluated).await?;
    let risk: Option<converge_core::RiskEval> = risk_payload
        .clone()
        .and_then(|p| serde_json::from_value(p).ok());
    let simulation: Option<converge_core::Simulation> = simulation_payload
        .clone()
        .and_then(|p| serde_json::from_value(p).ok());
    let diagnostics =
        converge_core::risk::diagnostics::diagnose(risk.as_ref(), simulation.as_ref());
    let history = state
        .services
        .store
        .events(&EventFilter {
            intent_id: Some(id.clone()),
            limit: 50,
            ..EventFilter::default()
        })
        .await?;
    let decision_history = history
        .into_iter()
        .map(|e| api::HistoryEntry {
            event_type: e.event.event_type,
            payload: e.event.payload,
            timestamp: e.event.timestamp,
        })
        .collect();
    typed(api::RiskReview {
        decision_history,
        diagnostics,
        tenant_id: intent.tenant_id.clone(),
        intent,
        intent_id: id,
        policy: policy_payload,
        risk: risk_payload,
        simulation: simulation_payload,
        timestamp: state.services.clock.now(),
    })
}

/// The latest `risk.evaluated` event of an intent the caller may see (404 otherwise).
async fn latest_risk(
    state: &AppState,
    principal: &Principal,
    intent_id: &str,
) -> Result<Option<StoredEvent>, ApiError> {
    visible_intent(state, principal, intent_id).await?;
    Ok(state
        .services
        .store
        .latest_events(EventType::RiskEvaluated, &[intent_id.to_owned()])
        .await?
        .into_iter()
        .next())
}

/// A list field of a risk evaluation's payload (empty when there is none).
fn risk_list(event: Option<&StoredEvent>, field: &str) -> Vec<serde_json::Value> {
    event
        .and_then(|e| e.event.payload.get(field))
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// `GET /impact/edges?intent_id=`: the direct impacts of an intent's latest risk evaluation.
pub(super) async fn impact_edges(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> ApiResult {
    let latest = latest_risk(&state, &principal, &q.intent_id).await?;
    typed(api::ImpactEdges {
        evaluated_at: latest.as_ref().map(|e| e.event.timestamp),
        impact_edges: risk_list(latest.as_ref(), "impact_edges"),
        intent_id: q.intent_id,
    })
}

/// `GET /diagnostics/recent?intent_id=`: the findings of an intent's latest risk evaluation
/// (what the original answered under this name; `/risk/review` has the diagnostics proper).
pub(super) async fn diagnostics_recent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> ApiResult {
    let latest = latest_risk(&state, &principal, &q.intent_id).await?;
    typed(api::RiskFindings {
        evaluated_at: latest.as_ref().map(|e| e.event.timestamp),
        findings: risk_list(latest.as_ref(), "findings"),
        intent_id: q.intent_id,
    })
}

/// `GET /policy/recent`: latest policy evaluations, newest first.
pub(super) async fn policy_recent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult {
    recent_of_type(&state, &principal, q, EventType::PolicyEvaluated).await
}

/// `GET /risk/shadow/recent`: what the risk gate would have blocked had it been enforced
/// (`risk.shadow_evaluated`), newest first.
pub(super) async fn shadow_recent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult {
    recent_of_type(&state, &principal, q, EventType::RiskShadowEvaluated).await
}

/// `GET /risk/policy/history`: every version of the tenant's risk policy, newest first (the
/// `risk.policy_updated` events, each with the policy and its version).
pub(super) async fn risk_policy_history(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult {
    recent_of_type(&state, &principal, q, EventType::RiskPolicyUpdated).await
}

// Risk
/// `GET /risk/recent`: latest risk evaluations.
pub(super) async fn risk_recent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult {
    recent_of_type(&state, &principal, q, EventType::RiskEvaluated).await
}

/// `GET /risk/gate/report`: how often policy blocked, and the latest blocks.
pub(super) async fn risk_gate_report(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let filter = EventFilter {
        event_type: Some(EventType::PolicyEvaluated),
        tenant_id: principal.read_tenant(q.tenant_id),
        limit: 10_000,
        ..EventFilter::default()
    };
    let evaluations = state.services.store.events(&filter).await?;
    let blocked: Vec<&StoredEvent> = evaluations
        .iter()
        .filter(|e| e.event.payload["verdict"] == "BLOCK")
        .collect();
    let rate = if evaluations.is_empty() {
        0.0
    } else {
        blocked.len() as f64 / evaluations.len() as f64
    };
    typed(api::GateReport {
        block_rate: converge_core::numeric::py_round(rate, 3),
        recent_blocks: blocked
            .iter()
            .take(20)
            .map(|e| api::EventRecord::from(*e))
            .collect(),
        total_blocked: blocked.len(),
        total_evaluations: evaluations.len(),
    })
}

/// The tenant whose policy a write sets: the key's own, or the one named; none named by a key
/// of no tenant is the policy of intents without a tenant (`""`, what a read without a tenant
/// returns).
pub(super) fn policy_tenant(
    principal: &Principal,
    requested: Option<String>,
) -> Result<String, ApiError> {
    Ok(principal.write_tenant(requested)?.unwrap_or_default())
}

/// `GET /risk/policy`: the tenant's risk gate policy.
pub(super) async fn get_risk_policy(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id).unwrap_or_default();
    let policy = state
        .services
        .store
        .risk_policy(&tenant)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no risk policy for tenant '{tenant}'")))?;
    typed(api::RiskPolicy {
        policy: policy.data,
        tenant_id: tenant,
        updated_at: policy.updated_at,
        version: policy.version,
    })
}

/// The body of `POST /risk/policy`: the `risk` section of `policy.json`, and the tenant.
#[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RiskPolicyUpdate {
    /// The tenant (a tenant's key may name only its own).
    #[serde(skip_serializing)]
    tenant_id: Option<String>,
    /// Highest risk score allowed, 0 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    max_risk_score: Option<f64>,
    /// Highest damage score allowed, 0 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    max_damage_score: Option<f64>,
    /// Highest propagation score allowed, 0 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    max_propagation_score: Option<f64>,
    /// `shadow` (record what would be blocked) or `enforce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "gate_mode_schema")]
    mode: Option<String>,
    /// Share of the gate's blocks enforced, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    enforce_ratio: Option<f64>,
}

fn gate_mode_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"enum": ["shadow", "enforce", null]})
}

/// `POST /risk/policy`: sets the tenant's risk gate policy (validated like `policy.json`'s
/// `risk` section).
pub(super) async fn set_risk_policy(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantWriteQuery>,
    ApiJson(body): ApiJson<RiskPolicyUpdate>,
) -> ApiResult {
    let tenant = policy_tenant(&principal, body.tenant_id.clone().or(q.tenant_id))?;
    let data = serde_json::to_value(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
    PolicyConfig::from_json(&json!({"risk": data}))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // The policy and its event in one transaction, over the version read just before: a
    // write made meanwhile fails (409) rather than being overwritten or recorded twice.
    let current = state.services.store.risk_policy(&tenant).await?;
    let version = current.as_ref().map_or(1, |c| c.version + 1);
    let event = converge_runtime::commands::api_event(
        &state.services,
        &principal.actor,
        EventType::RiskPolicyUpdated,
        None,
        Some(tenant.as_str()),
        json!({"policy": data, "version": version}),
    );
    state
        .services
        .store
        .commit(&converge_store::Commit {
            events: vec![event],
            risk_policies: vec![converge_store::DocumentWrite {
                tenant: tenant.clone(),
                data,
                expected_version: current.map(|c| c.version),
            }],
            ..converge_store::Commit::default()
        })
        .await
        .map_err(|e| match e {
            converge_store::StoreError::Conflict(_) => ApiError::Conflict(
                "the risk policy changed while this request was handled; nothing was written, send it again"
                    .to_owned(),
            ),
            other => other.into(),
        })?;
    typed(api::RiskPolicySet {
        ok: true,
        tenant_id: tenant,
        version,
    })
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "get",
            path: "/risk/review",
            summary: "An intent's latest risk, simulation and policy evidence, the diagnostics they call for (most severe first), and its last 50 events.",
            role: Role::Viewer,
            scope: "risk.read",
            params: &[],
            query: Some(schema_of::<ReviewQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(risk_review),
        },
        Route {
            method: "get",
            path: "/impact/edges",
            summary: "The direct impacts (file → dependant, with weight) of an intent's latest risk evaluation.",
            role: Role::Viewer,
            scope: "risk.read",
            params: &[],
            query: Some(schema_of::<ReviewQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(impact_edges),
        },
        Route {
            method: "get",
            path: "/diagnostics/recent",
            summary: "The findings of an intent's latest risk evaluation.",
            role: Role::Viewer,
            scope: "risk.read",
            params: &[],
            query: Some(schema_of::<ReviewQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(diagnostics_recent),
        },
        Route {
            method: "get",
            path: "/risk/shadow/recent",
            summary: "What the risk gate would have blocked had it been enforced (shadow mode, or outside the enforcement group), newest first.",
            role: Role::Viewer,
            scope: "risk.read",
            params: &[],
            query: Some(schema_of::<LimitQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(shadow_recent),
        },
        Route {
            method: "get",
            path: "/policy/recent",
            summary: "Latest policy evaluations (the gates' verdicts), newest first.",
            role: Role::Viewer,
            scope: "events.read",
            params: &[],
            query: Some(schema_of::<LimitQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(policy_recent),
        },
        Route {
            method: "get",
            path: "/risk/recent",
            summary: "Latest risk evaluations.",
            role: Role::Viewer,
            scope: "risk.read",
            params: &[],
            query: Some(schema_of::<LimitQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(risk_recent),
        },
        Route {
            method: "get",
            path: "/risk/gate/report",
            summary: "How often policy blocked, and the latest blocks.",
            role: Role::Viewer,
            scope: "risk.read",
            params: &[],
            query: Some(schema_of::<TenantQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(risk_gate_report),
        },
        Route {
            method: "get",
            path: "/risk/policy",
            summary: "The tenant's risk gate policy.",
            role: Role::Viewer,
            scope: "risk.read",
            params: &[],
            query: Some(schema_of::<TenantQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(get_risk_policy),
        },
        Route {
            method: "get",
            path: "/risk/policy/history",
            summary: "Every version of the tenant's risk policy, newest first.",
            role: Role::Viewer,
            scope: "risk.read",
            params: &[],
            query: Some(schema_of::<LimitQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(risk_policy_history),
        },
        Route {
            method: "post",
            path: "/risk/policy",
            summary: "Set the tenant's risk gate policy (the `risk` section of policy.json): its intents' risk gate uses these thresholds and mode from the next validation; what it leaves out stays as deployed.",
            role: Role::Operator,
            scope: "risk.write",
            params: &[],
            query: Some(schema_of::<TenantWriteQuery>),
            body: Some(BodySpec::of::<RiskPolicyUpdate>(
                "The risk gate's thresholds and mode (the `risk` section of policy.json).",
            )),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(set_risk_policy),
        },
    ]
}
