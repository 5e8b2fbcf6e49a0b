//! The queue and repository health at a glance (`/summary`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;

use super::queue::queue_state_of;
use super::*;
use crate::AppState;
use crate::api;
use crate::auth::{Principal, Role};
use crate::extract::ApiQuery;

/// `GET /summary`: the queue and repository health at a glance.
pub(super) async fn summary(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let now = state.services.clock.now();
    let health =
        converge_runtime::analytics::repo_health(&state.services.store, tenant.as_deref(), now)
            .await?;
    typed(api::Summary {
        health: serde_json::to_value(health).unwrap_or(serde_json::Value::Null),
        queue: queue_state_of(&state, tenant.clone()).await?,
        tenant_id: tenant,
        timestamp: state.services.clock.now(),
    })
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![Route {
        method: "get",
        path: "/summary",
        summary: "The queue and repository health at a glance.",
        role: Role::Viewer,
        scope: "intents.read",
        params: &[],
        query: Some(schema_of::<TenantQuery>),
        body: None,
        success: 200,
        conditional: false,
        answer: Answer::Json,
        handler: get(summary),
    }]
}
