//! Summaries: decision counts from the event log (`/metrics/integration`) and the queue at a
//! glance (`/summary`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use converge_core::EventType;
use converge_store::EventFilter;

use super::queue::queue_state_of;
use super::*;
use crate::AppState;
use crate::api;
use crate::auth::{Principal, Role};
use crate::extract::ApiQuery;

// Summaries
/// `GET /metrics/integration`: decision counts from the event log.
pub(super) async fn integration_metrics(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let count = |event_type: EventType| {
        let filter = EventFilter {
            event_type: Some(event_type),
            tenant_id: tenant.clone(),
            limit: 100_000,
            ..EventFilter::default()
        };
        let store = state.services.store.clone();
        async move { store.events(&filter).await }
    };
    let simulations = count(EventType::SimulationCompleted).await?;
    let mergeable = simulations
        .iter()
        .filter(|e| e.event.payload["mergeable"] == true)
        .count();
    let validated = count(EventType::IntentValidated).await?.len();
    let blocked = count(EventType::IntentBlocked).await?.len();
    let merged = count(EventType::IntentMerged).await?.len();
    let rejected = count(EventType::IntentRejected).await?.len();
    let rate = if simulations.is_empty() {
        0.0
    } else {
        mergeable as f64 / simulations.len() as f64
    };
    typed(api::IntegrationMetrics {
        decision_distribution: api::DecisionCounts {
            blocked,
            merged,
            rejected,
            validated,
        },
        mergeable,
        mergeable_rate: converge_core::numeric::py_round(rate, 3),
        tenant_id: tenant,
        timestamp: state.services.clock.now(),
        total_blocked: blocked,
        total_merged: merged,
        total_rejected: rejected,
        total_simulations: simulations.len(),
    })
}

/// `GET /summary`: the queue at a glance.
pub(super) async fn summary(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    typed(api::Summary {
        queue: queue_state_of(&state, tenant.clone()).await?,
        tenant_id: tenant,
        timestamp: state.services.clock.now(),
    })
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "get",
            path: "/metrics/integration",
            summary: "Decision counts from the event log.",
            role: Role::Viewer,
            scope: "events.read",
            params: &[],
            query: Some(schema_of::<TenantQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(integration_metrics),
        },
        Route {
            method: "get",
            path: "/summary",
            summary: "The queue at a glance.",
            role: Role::Viewer,
            scope: "intents.read",
            params: &[],
            query: Some(schema_of::<TenantQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(summary),
        },
    ]
}
