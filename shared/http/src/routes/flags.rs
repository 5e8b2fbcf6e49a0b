//! Feature flags: every known flag with its value and source, and setting one (`/flags…`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use converge_core::EventType;
use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::AppState;
use crate::api;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};

// Flags
/// `GET /flags`: every known flag, its value and where the value comes from.
pub(super) async fn list_flags(State(state): State<Arc<AppState>>) -> ApiResult {
    let settings = state.services.store.flags().await?;
    let flags = converge_core::flags::ALL
        .iter()
        .map(|flag| {
            let set = settings.iter().find(|s| s.name == flag.name);
            api::FlagState {
                default: flag.default,
                description: flag.description.to_owned(),
                enabled: set.map_or(flag.default, |s| s.enabled),
                name: flag.name.to_owned(),
                source: if set.is_some() { "operator" } else { "default" }.to_owned(),
                updated_at: set.map(|s| s.updated_at),
                updated_by: set.map(|s| s.updated_by.clone()),
            }
        })
        .collect();
    typed(api::FlagList { flags })
}

/// The body of `POST /flags/{name}`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FlagUpdate {
    /// The flag's new value.
    enabled: bool,
}

/// `POST /flags/{name}`: sets a known flag for every instance (admin).
pub(super) async fn set_flag(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<FlagUpdate>,
) -> ApiResult {
    if principal.tenant.is_some() {
        return Err(ApiError::Forbidden(
            "flags apply to every tenant; a tenant-bound key cannot set them".to_owned(),
        ));
    }
    let flag = converge_core::flags::find(&name)
        .ok_or_else(|| ApiError::NotFound(format!("unknown flag '{name}'")))?;
    state
        .services
        .store
        .set_flag(flag.name, body.enabled, &principal.actor)
        .await?;
    let payload = json!({"flag": flag.name, "enabled": body.enabled});
    record(
        &state,
        &principal,
        EventType::FeatureFlagChanged,
        None,
        principal.tenant.clone(),
        payload,
    )
    .await?;
    typed(api::FlagSet {
        enabled: body.enabled,
        name: flag.name.to_owned(),
        source: "operator".to_owned(),
    })
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "get",
            path: "/flags",
            summary: "Every known feature flag, its value and its source (default or operator).",
            role: Role::Viewer,
            scope: "flags.read",
            params: &[],
            query: None,
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(list_flags),
        },
        Route {
            method: "post",
            path: "/flags/{name}",
            summary: "Set a feature flag for every instance.",
            role: Role::Admin,
            scope: "admin",
            params: &[("name", "Flag name, e.g. risk_auto_classify.")],
            query: None,
            body: Some(BodySpec::of::<FlagUpdate>("The flag's new value.")),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(set_flag),
        },
    ]
}
