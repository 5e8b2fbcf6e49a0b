//! Intake control (`/intake/status`, `/intake/mode`): whether new intents are taken in. An
//! operator sets a tenant's mode; left on `auto`, health and debt decide.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use converge_core::intake_mode::IntakeMode;
use converge_runtime::intake_control;
use serde::Deserialize;

use super::*;
use crate::AppState;
use crate::auth::{Principal, Role};
use crate::extract::{ApiJson, ApiQuery};

/// `POST /intake/mode`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ModeRequest {
    /// `open`, `throttle`, `pause`, or `auto` (health and debt decide).
    #[schemars(schema_with = "mode_schema")]
    mode: IntakeMode,
    /// Why (shown with the mode; at most 500 characters).
    #[serde(default)]
    #[schemars(length(max = 500))]
    reason: String,
    /// Tenant written to (also accepted in the query); a tenant-bound key may only name its
    /// own (403 otherwise). Left out by a key of no tenant: the global mode.
    tenant_id: Option<String>,
}

fn mode_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["open", "throttle", "pause", "auto"]})
}

/// `GET /intake/status`.
pub(super) async fn intake_status(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let now = state.services.clock.now();
    typed(intake_control::status(&state.services.store, tenant.as_deref(), now).await?)
}

/// `GET /intake/mode`.
pub(super) async fn intake_mode(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    let now = state.services.clock.now();
    let (mode, auto) =
        intake_control::mode_in_force(&state.services.store, tenant.as_deref(), now).await?;
    typed(serde_json::json!({
        "mode": mode,
        "manual_override": auto.is_none(),
        "tenant_id": tenant,
    }))
}

/// `POST /intake/mode`.
pub(super) async fn set_intake_mode(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<super::risk::TenantWriteQuery>,
    ApiJson(body): ApiJson<ModeRequest>,
) -> ApiResult {
    let count = body.reason.chars().count();
    if count > 500 {
        return Err(ApiError::BadRequest(format!(
            "reason: at most 500 characters, got {count}"
        )));
    }
    let tenant = principal
        .write_tenant(body.tenant_id.clone().or(q.tenant_id))?
        .unwrap_or_default();
    typed(
        intake_control::set_mode(
            &state.services,
            &principal.actor,
            &tenant,
            body.mode,
            &body.reason,
        )
        .await?,
    )
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "get",
            path: "/intake/status",
            summary: "Whether new intents are taken in: the mode in force, what auto would choose, the operator's setting, and the health and debt signals.",
            role: Role::Viewer,
            scope: "intents.read",
            params: &[],
            query: Some(schema_of::<TenantQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(intake_status),
        },
        Route {
            method: "get",
            path: "/intake/mode",
            summary: "The intake mode in force.",
            role: Role::Viewer,
            scope: "intents.read",
            params: &[],
            query: Some(schema_of::<TenantQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(intake_mode),
        },
        Route {
            method: "post",
            path: "/intake/mode",
            summary: "Set the tenant's intake mode (open, throttle, pause; auto gives the choice back to health and debt), recorded as intake.mode_changed.",
            role: Role::Operator,
            scope: "intake.write",
            params: &[],
            query: Some(schema_of::<super::risk::TenantWriteQuery>),
            body: Some(BodySpec::of::<ModeRequest>("The mode and why.")),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(set_intake_mode),
        },
    ]
}
