//! Client retries: a POST with an `Idempotency-Key` header is done once. A retry with the same
//! key and the same request (method, path, query and body) within 24 hours gets the first
//! answer again, status and body, without doing anything; the same key with another request is
//! a 422; while the first is still being handled, a retry gets a 409. Keys belong to the
//! caller (its tenant and actor): two callers never see each other's answers. An answer of the
//! server's own failing (5xx) is not kept, so a retry runs again.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use converge_store::IdempotencyClaim;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// How long a key's first answer is kept.
const KEPT_FOR: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// A claim older than this whose request never completed (its process died) is free again.
const ABANDONED_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// The longest key accepted.
const KEY_MAX_LEN: usize = 255;
/// Answers larger than this are not kept (a retry runs again).
const ANSWER_MAX_BYTES: usize = 1 << 20;

/// The header.
pub const HEADER: &str = "idempotency-key";

/// The middleware, after authentication (it needs the caller).
pub async fn idempotent(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let Some(key) = request.headers().get(HEADER) else {
        return Ok(next.run(request).await);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= KEY_MAX_LEN && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {KEY_MAX_LEN} visible ASCII characters"
            ))
        })?
        .to_owned();
    let scope = match request.extensions().get::<Principal>() {
        Some(principal) => format!(
            "{}\u{1f}{}",
            principal.tenant.as_deref().unwrap_or(""),
            principal.actor
        ),
        None => return Err(ApiError::Unauthenticated),
    };

    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, crate::BODY_LIMIT_BYTES)
        .await
        .map_err(|e| ApiError::unreadable_body(&e, crate::BODY_LIMIT_BYTES))?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(
        parts
            .uri
            .path_and_query()
            .map_or("", |p| p.as_str())
            .as_bytes(),
    );
    hasher.update([0]);
    hasher.update(&bytes);
    let request_sha256: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let store = &state.services.store;
    match store
        .claim_idempotency_key(&scope, &key, &request_sha256, KEPT_FOR, ABANDONED_AFTER)
        .await?
    {
        IdempotencyClaim::New => {}
        IdempotencyClaim::Answered { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = (status, body).into_response();
            let headers = response.headers_mut();
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(response);
        }
        IdempotencyClaim::InProgress => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still being handled; retry later"
                    .to_owned(),
            ));
        }
        IdempotencyClaim::Mismatch => {
            return Err(ApiError::Unprocessable(
                "this Idempotency-Key was used for a different request".to_owned(),
            ));
        }
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if status.is_server_error() {
        store.release_idempotency_key(&scope, &key).await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, ANSWER_MAX_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            store.release_idempotency_key(&scope, &key).await?;
            return Err(ApiError::Internal("an answer could not be read".to_owned()));
        }
    };
    // The request's work is done: its answer goes out even if keeping it fails (the claim
    // then lapses after ABANDONED_AFTER, and the request's own checks refuse a repeat).
    let kept = match std::str::from_utf8(&body) {
        Ok(text) => {
            store
                .complete_idempotency_key(&scope, &key, status.as_u16(), text)
                .await
        }
        Err(_) => store.release_idempotency_key(&scope, &key).await,
    };
    if let Err(e) = kept {
        tracing::warn!("the answer to an idempotent request was not kept: {e}");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}
