//! HTTP: the axum [`Router`]s of the Converge API. [`router`] is the whole API, served by the
//! `api` Lambda function (lambda_http) and by `converge serve` alike; [`webhook_router`] is the
//! `webhook` function's: the GitHub webhook and the health routes, nothing else.
//!
//! - Business routes under `/v1`, mirrored under `/api` (the runbook's prefix); the route
//!   table's role and scope are checked before the handler runs, then the tenant (see
//!   [`auth`]).
//! - Operational routes without an API key or rate limit: `/health`, `/health/live`,
//!   `/health/ready` (503 when the database is down), `/metrics` (Prometheus text; with
//!   `CONVERGE_METRICS_TOKEN` set it asks for `Authorization: Bearer <token>`),
//!   `/v1/openapi.json`.
//! - Every error is `{"error": {"code", "message"}}` ([`error`]), unknown routes and malformed
//!   JSON included; bodies are limited to [`BODY_LIMIT_BYTES`].
//!
//! Handlers are thin: they parse, call the store, the domain and the runtime's commands, and
//! shape JSON. The business routes are declared once, in the route table (`routes`, one
//! module per resource), with their documentation, role and scope; the router, the access
//! check and `/v1/openapi.json` are all built from that table. [`AppState`] holds the
//! process's [`Services`] (built by `converge_runtime`, the composition root) and what only
//! HTTP needs: request metrics and the cache of resolved keys.

pub mod api;
pub mod auth;
pub mod boot;
mod charts;
pub mod conditional;
mod dashboard;
pub mod error;
mod extract;
pub mod idempotency;
mod integration_page;
pub mod metrics;
pub mod openapi;
mod routes;
pub mod server;
mod webhook;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use converge_core::PolicyConfig;
use converge_core::pipeline::Clock;
use converge_runtime::services::Services;
use converge_store::Store;
use rand::Rng as _;
use serde_json::json;

pub use auth::{Principal, seed_api_keys};
pub use converge_runtime::config::{
    ApiKeySpec, ApiSettings, DEFAULT_RATE_LIMIT_RPM, Role, WEBHOOK_MAX_BODY_BYTES, parse_api_keys,
};
pub use error::ApiError;
pub use metrics::Metrics;

/// What [`encode_component`] leaves as it is: RFC 3986's unreserved characters and `:`, which
/// is legal in a path segment and a query value alike.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b':');

/// Percent-encodes a path segment or a query value: intent ids like `acme/app:pr-7` hold a
/// slash. Shared by the dashboard's links and the CLI's requests.
pub fn encode_component(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, COMPONENT).to_string()
}

/// Largest request body accepted (1 MiB).
pub const BODY_LIMIT_BYTES: usize = 1 << 20;

/// What every handler shares: the process's services and what only HTTP needs.
pub struct AppState {
    /// The store, ports, queues, secrets, clock and settings of this process, built by the
    /// composition root ([`Services::from_config`]).
    pub services: Services,
    /// Request metrics of this instance.
    pub metrics: Metrics,
    /// Recently resolved API keys.
    pub key_cache: auth::KeyCache,
    /// Failed authentications, per client and key prefix.
    pub auth_throttle: auth::AuthThrottle,
    /// What this instance holds of its callers' per-minute budgets.
    pub rate_limiter: auth::RateLimiter,
    /// Pages of intents this instance already serialised, with the version they were read at.
    pub page_cache: conditional::PageCache,
    /// Reads of intents versions that concurrent requests share.
    pub version_reads: conditional::VersionReads,
}

impl AppState {
    /// A state over `store` with `settings` and `policy`, and no ports, queues or secrets
    /// (tests and benchmarks; a server builds its state with [`boot::state_from_env`]).
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock + Send + Sync>,
        settings: ApiSettings,
        policy: PolicyConfig,
    ) -> AppState {
        let mut services = Services::new(store, clock, settings);
        services.policy = policy;
        AppState::with_services(services)
    }

    /// The state of a server over `services`.
    pub fn with_services(services: Services) -> AppState {
        AppState {
            services,
            metrics: Metrics::default(),
            key_cache: auth::KeyCache::default(),
            auth_throttle: auth::AuthThrottle::default(),
            rate_limiter: auth::RateLimiter::default(),
            page_cache: conditional::PageCache::default(),
            version_reads: conditional::VersionReads::default(),
        }
    }

    /// Brings this process up to date with rotated secrets (see
    /// [`Services::refresh_secrets`]); the keys a secret added or withdrew are forgotten by the
    /// key cache at once, so both changes take effect on the next request.
    pub async fn refresh_secrets(&self) {
        for key_hash in self.services.refresh_secrets().await {
            self.key_cache.forget(&key_hash);
        }
    }

    /// 256 random bits, hex (for API keys).
    pub fn new_secret(&self) -> String {
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({"status": "ok", "timestamp": state.services.clock.now()})).into_response()
}

async fn live() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// How long readiness waits for the database: a load balancer's probe wants an answer
/// quickly, not after the pool's acquire timeout.
const READY_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Ready when the database answers and takes a write (a full disk or a read-only file system
/// shows only in a write), within [`READY_PROBE_TIMEOUT`]. A part that works only in part
/// (the GitHub App still waiting for its key) makes the answer `degraded`, still 200: the API
/// and the dashboard serve, and `details` says what waits.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let store = &state.services.store;
    let probe = async {
        store
            .ping()
            .await
            .map_err(|e| ("the database is unreachable", e))?;
        store
            .probe_write()
            .await
            .map_err(|e| ("the database cannot be written to", e))
    };
    let probed = tokio::time::timeout(READY_PROBE_TIMEOUT, probe)
        .await
        .unwrap_or_else(|_| {
            Err((
                "the database is unreachable",
                converge_store::StoreError::Unavailable(format!(
                    "no answer within {READY_PROBE_TIMEOUT:?}"
                )),
            ))
        });
    match probed {
        Ok(()) => {
            let degraded = state.services.degraded();
            let mut details = serde_json::Map::new();
            details.insert("database".to_owned(), json!("ok"));
            for (part, problem) in &degraded {
                details.insert((*part).to_owned(), json!(problem));
            }
            let status = if degraded.is_empty() {
                "ok"
            } else {
                "degraded"
            };
            Json(json!({"status": status, "details": details, "timestamp": state.services.clock.now()}))
                .into_response()
        }
        Err((message, e)) => {
            tracing::warn!("readiness check failed: {message}: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "error": {"code": "unavailable", "message": message},
                    "timestamp": state.services.clock.now()
                })),
            )
                .into_response()
        }
    }
}

/// The document is the same for the life of the process: built once, on first request.
async fn openapi_document() -> Response {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(openapi::document)).into_response()
}

/// One span per request (`http.request`: method, path, status, and the trace and span ids
/// the log lines inside it carry), continuing the caller's trace when the request carries a
/// `traceparent`. The query string is left out: it is not ours to log.
async fn trace_request(request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "http.request",
        method = %request.method(),
        path = %request.uri().path(),
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    // A caller that traces (W3C `traceparent`) gets this request as a child of its span.
    if let Some(traceparent) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        converge_runtime::telemetry::continue_trace(&span, traceparent);
    }
    converge_runtime::telemetry::record_ids(&span);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    response
}

/// Before each request: rotated secrets are picked up (a cache hit nearly always).
async fn refresh_secrets(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    state.refresh_secrets().await;
    next.run(request).await
}

/// Refuses, before any of the body is read, a declared `Content-Length` over the route's
/// limit (413) and a `Content-Encoding` Converge does not decode (415).
async fn body_preconditions(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let limit = if request.uri().path() == "/integrations/github/webhook" {
        state.services.api.webhook_max_body_bytes
    } else {
        BODY_LIMIT_BYTES
    };
    check_body_headers(request.headers(), limit)?;
    Ok(next.run(request).await)
}

fn check_body_headers(headers: &axum::http::HeaderMap, limit: usize) -> Result<(), ApiError> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    if let Some(declared) = header("content-length") {
        match declared.trim().parse::<u64>() {
            Ok(n) if n > limit as u64 => return Err(ApiError::PayloadTooLarge(limit)),
            Ok(_) => {}
            Err(_) => {
                return Err(ApiError::BadRequest(
                    "content-length is not a number".to_owned(),
                ));
            }
        }
    }
    if let Some(encoding) = header("content-encoding")
        && !encoding.trim().eq_ignore_ascii_case("identity")
    {
        return Err(ApiError::UnsupportedEncoding(format!(
            "content-encoding '{encoding}' is not supported: send the body uncompressed"
        )));
    }
    Ok(())
}

/// Headers every response carries.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Answers are not stored unless their route says how (conditional GETs revalidate).
    headers
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn business_routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    routes::router()
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(state),
            idempotency::idempotent,
        ))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(state),
            auth::authenticate,
        ))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(state),
            metrics::track,
        ))
}

/// The operational routes every deployment answers: health, liveness, readiness.
fn health_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

/// The layers every router carries: the error envelope for unknown routes and methods, the
/// body limit, rotated secrets, security headers and the request span.
fn finish(router: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    router
        .fallback(error::not_found)
        .method_not_allowed_fallback(|| async { error::method_not_allowed() })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            body_preconditions,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            refresh_secrets,
        ))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// The webhook function's router: the GitHub webhook and the health routes, nothing else.
pub fn webhook_router(state: Arc<AppState>) -> Router {
    let routes = health_routes()
        .route(
            "/integrations/github/webhook",
            axum::routing::post(webhook::github_webhook),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::track,
        ));
    finish(routes, state)
}

/// The whole API.
pub fn router(state: Arc<AppState>) -> Router {
    let business = business_routes(&state);
    let operational = dashboard::routes()
        .merge(health_routes())
        .route("/metrics", get(metrics::scrape))
        .route(
            "/integrations/github/webhook",
            axum::routing::post(webhook::github_webhook),
        )
        .route("/v1/openapi.json", get(openapi_document))
        .route("/api/openapi.json", get(openapi_document))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::track,
        ));
    let routes = Router::new()
        .merge(operational)
        .nest("/v1", business.clone())
        .nest("/api", business);
    finish(routes, state)
}
