//! The caller's key: who it is (`/auth/whoami`) and its rotation (`/auth/keys/rotate`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use chrono::TimeDelta;
use converge_core::EventType;
use converge_store::ApiKeyRecord;
use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::AppState;
use crate::api;
use crate::auth::{Principal, Role, hash_key};
use crate::error::ApiError;
use crate::extract::OptionalJson;

/// Longest grace period of a rotated key (a day).
pub(super) const MAX_GRACE_SECONDS: i64 = 86_400;

/// Grace period of a rotated key when none is given (an hour).
pub(super) const DEFAULT_GRACE_SECONDS: i64 = 3_600;

/// `GET /auth/whoami`.
pub(super) async fn whoami(principal: Principal) -> ApiResult {
    typed(api::WhoAmI {
        actor: principal.actor,
        role: principal.role,
        scopes: principal.scopes,
        tenant: principal.tenant,
    })
}

/// The body of `POST /auth/keys/rotate`.
#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Rotate {
    /// How long the presented key keeps working: 0 to 86,400 seconds (default 3,600).
    #[schemars(range(min = 0, max = 86_400))]
    #[serde(default, deserialize_with = "crate::extract::integral")]
    grace_period_seconds: Option<i64>,
}

/// `POST /auth/keys/rotate`: a new key for the caller, valid at once on every instance; the
/// presented key keeps working for the grace period, then stops.
pub(super) async fn rotate_key(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    OptionalJson(request): OptionalJson<Rotate>,
) -> ApiResult {
    let old_hash = principal.key_hash.clone().ok_or_else(|| {
        ApiError::BadRequest("authentication is off: there is no key to rotate".to_owned())
    })?;
    if principal.key_expires_at.is_some() {
        return Err(ApiError::Forbidden(
            "this key is already being retired; rotate with its replacement".to_owned(),
        ));
    }
    let grace = request
        .grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(ApiError::BadRequest(format!(
            "grace_period_seconds must be between 0 and {MAX_GRACE_SECONDS}, got {grace}"
        )));
    }
    let new_key = format!("cvg_{}", state.new_secret());
    let now = state.services.clock.now();
    state
        .services
        .store
        .put_api_key(&ApiKeyRecord {
            key_hash: hash_key(&new_key),
            role: principal.role.to_string(),
            actor: principal.actor.clone(),
            tenant_id: principal.tenant.clone(),
            scopes: principal.scopes.clone().unwrap_or_default(),
            created_at: now,
            expires_at: None,
            // Made through the API: no secret lists it, so none revokes it.
            origin: None,
        })
        .await?;
    let old_expires_at = now + TimeDelta::seconds(grace);
    state
        .services
        .store
        .expire_api_key(&old_hash, old_expires_at)
        .await?;
    state.key_cache.forget(&old_hash);
    let payload = json!({"actor": principal.actor, "grace_period_seconds": grace, "old_key_expires_at": old_expires_at});
    record(
        &state,
        &principal,
        EventType::AccessKeyRotated,
        None,
        principal.tenant.clone(),
        payload,
    )
    .await?;
    typed(api::KeyRotated {
        actor: principal.actor,
        grace_period_seconds: grace,
        new_key,
        note: "The new key works now on every instance. The old key stops working at old_key_expires_at; replace it wherever it is configured.".to_owned(),
        old_key_expires_at: old_expires_at,
        role: principal.role,
        scopes: principal.scopes,
        tenant: principal.tenant,
    })
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "get",
            path: "/auth/whoami",
            summary: "The caller's role, actor, tenant and scopes.",
            role: Role::Viewer,
            scope: "intents.read",
            params: &[],
            query: None,
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(whoami),
        },
        Route {
            method: "post",
            path: "/auth/keys/rotate",
            summary: "A new key for the caller, valid at once everywhere; the old key works for the grace period.",
            role: Role::Admin,
            scope: "admin",
            params: &[],
            query: None,
            body: Some(BodySpec::optional::<Rotate>(
                "How long the presented key keeps working; or no body.",
            )),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(rotate_key),
        },
    ]
}
