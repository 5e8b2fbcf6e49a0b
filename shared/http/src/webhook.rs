//! `POST /integrations/github/webhook`: GitHub deliveries in.
//!
//! Only fast work happens here: size guard, signature, parse, translate, then the runtime's
//! `commands::record_delivery` (one transaction: the delivery record, `webhook.received`, the
//! intent's events and projection, queue messages), then 202. The queue worker does the rest. A delivery id already handled writes
//! nothing and is acknowledged as a duplicate, also when copies arrive concurrently (the
//! delivery row is inserted inside the same transaction).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use converge_github::signature;
use converge_github::webhook::{IntakeContext, action_of, translate};
use converge_runtime::commands::{self, DeliveryResult};
use converge_store::Delivery;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The handler.
pub(crate) async fn github_webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "webhook.delivery",
        delivery_id = header(&headers, "x-github-delivery").unwrap_or(""),
        event = header(&headers, "x-github-event").unwrap_or(""),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    converge_runtime::telemetry::record_ids(&span);
    receive(state, headers, body).instrument(span).await
}

/// Verifies, deduplicates, translates and commits one delivery.
async fn receive(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.services.api.webhook_max_body_bytes;
    let declared = header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    if let Some(declared) = declared.filter(|n| *n > limit) {
        // Read a body up to twice the limit before refusing it, so the sender gets the 413
        // instead of a connection closed under it; anything larger is cut off at once.
        if declared <= limit.saturating_mul(2) {
            let _ = axum::body::to_bytes(body, limit.saturating_mul(2)).await;
        }
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| ApiError::unreadable_body(&e, limit))?;

    let secrets = webhook_secrets(&state).await?;
    let signed = !secrets.is_empty();
    if signed {
        signature::verify(&secrets, &body, header(&headers, "x-hub-signature-256"))
            .map_err(|e| ApiError::BadSignature(format!("webhook refused: {e}")))?;
    } else if state.services.api.auth_required {
        return Err(ApiError::Forbidden(
            "webhook signature verification is not configured: set CONVERGE_GITHUB_WEBHOOK_SECRET \
             (or CONVERGE_AUTH_REQUIRED=0 on a private machine)"
                .to_owned(),
        ));
    }
    let event_name = header(&headers, "x-github-event")
        .ok_or_else(|| ApiError::BadRequest("missing X-GitHub-Event header".to_owned()))?
        .to_owned();
    let delivery_id = header(&headers, "x-github-delivery")
        .ok_or_else(|| ApiError::BadRequest("missing X-GitHub-Delivery header".to_owned()))?
        .to_owned();
    if delivery_id.len() > 200 || event_name.len() > 100 {
        return Err(ApiError::BadRequest(
            "X-GitHub-Delivery or X-GitHub-Event is too long".to_owned(),
        ));
    }
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "empty body: a JSON payload is required".to_owned(),
        ));
    }
    let context = IntakeContext {
        tenant: state.services.api.github_default_tenant.as_deref(),
        now: state.services.clock.now(),
    };
    // A NUL in what GitHub sent (a pull request's title, a branch name) cannot be stored: it
    // is replaced, and the event says where, rather than losing the delivery.
    let (payload, replaced) = replace_nul(&body);
    let translation = translate(&event_name, &payload, context)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let action = action_of(&payload);
    let delivery = Delivery {
        id: delivery_id.clone(),
        event_name: event_name.clone(),
        body_sha256: signature::body_sha256(&body),
    };
    let mut received = json!({"github_event": event_name, "delivery_id": delivery_id,
                          "action": action, "signed": signed});
    if !replaced.is_empty() {
        received["nul_replaced"] = json!(replaced);
    }

    let recorded =
        commands::record_delivery(&state.services, &translation, &received, &delivery).await?;
    let outcome = match recorded {
        DeliveryResult::Recorded(outcome) => outcome,
        DeliveryResult::Duplicate => {
            return Ok(accepted(json!({"ok": true, "delivery_id": delivery_id,
                                      "event": event_name, "duplicate": true})));
        }
        DeliveryResult::ReusedId => {
            return Err(ApiError::Conflict(format!(
                "delivery {delivery_id} was already received with a different body"
            )));
        }
    };
    let mut response =
        json!({"ok": true, "delivery_id": delivery_id, "event": event_name, "action": action});
    if let (Value::Object(map), Value::Object(more)) = (&mut response, outcome) {
        map.extend(more);
    }
    Ok(accepted(response))
}

/// The secrets deliveries may be signed with: from Secrets Manager when an ARN is set (read
/// again once the cache's lifetime has passed, so a rotation needs no redeploy), else from
/// the environment. Secrets Manager failing is a 503: GitHub delivers again later.
async fn webhook_secrets(
    state: &AppState,
) -> Result<std::borrow::Cow<'_, [signature::WebhookSecret]>, ApiError> {
    match (
        &state.services.api.webhook_secret_arn,
        &state.services.secrets,
    ) {
        (Some(arn), Some(secrets)) => {
            let value = secrets.get(arn).await.map_err(|e| {
                tracing::error!("webhook: {e}");
                ApiError::DependencyUnavailable(
                    "the webhook secret cannot be read from Secrets Manager".to_owned(),
                )
            })?;
            Ok(std::borrow::Cow::Owned(signature::parse_secrets(&value)))
        }
        _ => Ok(std::borrow::Cow::Borrowed(
            &state.services.api.webhook_secrets,
        )),
    }
}

fn accepted(body: Value) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// The body with every NUL character replaced by U+FFFD, and the paths where one was (none:
/// the body as it came).
fn replace_nul(body: &[u8]) -> (std::borrow::Cow<'_, [u8]>, Vec<String>) {
    if !crate::extract::holds_nul_escape(body) {
        return (std::borrow::Cow::Borrowed(body), Vec::new());
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return (std::borrow::Cow::Borrowed(body), Vec::new());
    };
    let mut replaced = Vec::new();
    while let Some(path) = crate::extract::nul_path(&value, String::new()) {
        replace_first_nul(&mut value);
        replaced.push(path);
    }
    let rewritten = serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec());
    (std::borrow::Cow::Owned(rewritten), replaced)
}

/// Replaces the NUL characters of the first string or key holding any, in the order
/// `nul_path` finds them; whether one did.
fn replace_first_nul(value: &mut Value) -> bool {
    const REPLACEMENT: &str = "\u{fffd}";
    match value {
        Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', REPLACEMENT);
            true
        }
        Value::Array(items) => items.iter_mut().any(replace_first_nul),
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if key.contains('\0') {
                    if let Some(item) = map.remove(&key) {
                        map.insert(key.replace('\0', REPLACEMENT), item);
                    }
                    return true;
                }
                if map.get_mut(&key).is_some_and(replace_first_nul) {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}
