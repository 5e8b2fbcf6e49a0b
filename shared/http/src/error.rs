//! The one mapping from failures to HTTP responses: `{"error": {"code", "message"}}`.
//!
//! User errors carry a stable code and a message that says what to fix. Internal errors are
//! logged in full and answered with a generic message: nothing internal (SQL, paths, DSNs)
//! reaches a response body.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use converge_store::StoreError;
use serde_json::json;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or names something invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// No API key, or an unknown or expired one (401).
    #[error("a valid x-api-key header is required")]
    Unauthenticated,
    /// A webhook delivery whose signature does not verify.
    #[error("{0}")]
    BadSignature(String),
    /// The key's role or scopes do not allow this, or the target is another tenant's (403).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing there, or nothing this key may see (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The intent changed between the read a decision was made from and its write, more
    /// often than the write was retried (409). Nothing was written.
    #[error("{0}")]
    Stale(String),
    /// The request is well-formed but cannot be done as asked (422).
    #[error("{0}")]
    Unprocessable(String),
    /// Intake control kept a new intent out (422, `intake_rejected`): the message says which
    /// mode and why.
    #[error("{0}")]
    IntakeRejected(String),
    /// The request needs something this deployment has not configured (422): the message
    /// names the setting.
    #[error("{0}")]
    NotConfigured(String),
    /// The body's `Content-Encoding` is not one Converge reads (415).
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// The body did not arrive in time (408).
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// The body is larger than the limit (413).
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The tenant used up its requests for this minute (429).
    #[error("rate limit exceeded ({limit} requests/min)")]
    RateLimited {
        /// Requests allowed per minute.
        limit: u32,
        /// Seconds until the window resets.
        retry_after: u64,
    },
    /// Too many failed authentications from this client or with this key prefix: wait
    /// `retry_after` seconds (429).
    #[error("too many failed attempts to authenticate; try again in {retry_after} s")]
    AuthThrottled {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The database cannot be reached (503).
    #[error("the database is unavailable")]
    Unavailable,
    /// A dependency other than the database failed or is not configured (503).
    #[error("{0}")]
    DependencyUnavailable(String),
    /// Anything else (500); the cause is logged, not shown.
    #[error("an internal error occurred")]
    Internal(String),
}

impl ApiError {
    /// Why a body read up to `limit` failed: its time ran out (408), or (what else the read
    /// can report) it was larger than the limit (413).
    pub fn unreadable_body(error: &(dyn std::error::Error + 'static), limit: usize) -> ApiError {
        if crate::server::timed_out(error) {
            ApiError::RequestTimeout
        } else {
            ApiError::PayloadTooLarge(limit)
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::BadSignature(_) => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) | ApiError::Stale(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::NotConfigured(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_configured"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::IntakeRejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "intake_rejected"),
            ApiError::UnsupportedEncoding(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded"),
            ApiError::AuthThrottled { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_failed_attempts")
            }
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::DependencyUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "dependency_unavailable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

/// The error envelope for a status with a message.
pub fn envelope(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!("internal error: {cause}");
        }
        let (status, code) = self.status_and_code();
        let mut response = envelope(status, code, &self.to_string());
        if let ApiError::AuthThrottled { retry_after } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after.to_string())
        {
            response.headers_mut().insert("retry-after", value);
        }
        if let ApiError::RateLimited { limit, retry_after } = self {
            let headers = response.headers_mut();
            for (name, value) in [
                ("retry-after", retry_after.to_string()),
                ("ratelimit-limit", limit.to_string()),
                ("ratelimit-remaining", "0".to_owned()),
                ("ratelimit-reset", retry_after.to_string()),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Projection(e) => ApiError::Conflict(e.to_string()),
            StoreError::StaleLease { .. } => ApiError::Conflict(error.to_string()),
            StoreError::Stale { .. } => ApiError::Stale(format!(
                "{error}; nothing was written, send the request again"
            )),
            // The constraint's message stays in the log: it names tables and columns.
            StoreError::Conflict(cause) => {
                tracing::info!("store conflict: {cause}");
                ApiError::Conflict("the write conflicts with the current state".to_owned())
            }
            StoreError::Unavailable(cause) => {
                tracing::warn!("{cause}");
                ApiError::Unavailable
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::BadRequest(
                "expected a JSON body with content-type: application/json".to_owned(),
            ),
            JsonRejection::BytesRejection(e) if crate::server::timed_out(&e) => {
                ApiError::RequestTimeout
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge(crate::BODY_LIMIT_BYTES)
            }
            other => ApiError::BadRequest(format!("invalid JSON body: {}", other.body_text())),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(format!("invalid path: {}", rejection.body_text()))
    }
}

/// Answers unknown routes with the envelope.
pub async fn not_found() -> Response {
    envelope(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Rewrites axum's plain-text 405 into the envelope.
pub fn method_not_allowed() -> Response {
    let mut response = envelope(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
