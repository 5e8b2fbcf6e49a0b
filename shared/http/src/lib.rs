//! HTTP: the axum [`Router`] of the Converge API, served by the `api` Lambda function
//! (lambda_http) and by `converge serve` alike.
//!
//! - Business routes under `/v1`, mirrored under `/api` (the runbook's prefix); each checks
//!   role, scope and tenant (see [`auth`]).
//! - Operational routes without auth or rate limit: `/health`, `/health/live`, `/health/ready`
//!   (503 when the database is down), `/metrics` (Prometheus text), `/v1/openapi.json`.
//! - Every error is `{"error": {"code", "message"}}` ([`error`]), unknown routes and malformed
//!   JSON included; bodies are limited to [`BODY_LIMIT_BYTES`].
//!
//! Handlers are thin: they parse, authorise, call the store and the domain, and shape JSON.
//! The business routes are declared once, in [`openapi`], with their documentation; the
//! router and `/v1/openapi.json` are both built from that table.

pub mod auth;
pub mod boot;
mod dashboard;
pub mod error;
mod extract;
pub mod metrics;
pub mod openapi;
mod routes;
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
/// What every handler shares.
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Time.
    pub clock: Arc<dyn Clock + Send + Sync>,
    /// API settings.
    pub settings: ApiSettings,
    /// Policy (defaults for intents, risk gate).
    pub policy: PolicyConfig,
    /// Request metrics of this instance.
    pub metrics: Metrics,
    /// Recently resolved API keys.
    pub key_cache: auth::KeyCache,
    /// What intents are validated (and, by a worker in this process, merged) through: the
    /// local repository and its checks, and the GitHub App, each when configured.
    pub ports: converge_runtime::routed::RoutedPorts,
    /// Notified after a change that calls for queue work was committed, so that a worker in
    /// this process starts at once instead of at its next poll (the outbox row is what
    /// guarantees the work; this only shortens the wait).
    pub queue_wakeup: Arc<tokio::sync::Notify>,
    /// The SQS queue (`CONVERGE_QUEUE_URL`), when workers take their work from SQS.
    pub sqs: Option<converge_runtime::sqs::SqsQueue>,
    /// Its dead-letter queue (`CONVERGE_DLQ_URL`), whose depth the dashboard shows.
    pub dlq: Option<converge_runtime::sqs::SqsQueue>,
    /// Secrets Manager with its cache (at most 5 minutes), for the secrets named by
    /// `*_SECRET_ARN` settings; `None` when none is.
    pub secrets: Option<Arc<converge_runtime::secrets::Secrets>>,
    /// The secrets this process built objects from (the DSN, the App key), re-read before
    /// each request.
    pub rotation: converge_runtime::secrets::Rotation,
    /// The API keys' secret (`CONVERGE_API_KEYS_SECRET_ARN`), re-seeded when it changes.
    pub api_keys_secret: Option<converge_runtime::secrets::WatchedSecret>,
    /// The worker settings (`CONVERGE_WORKER_*`), for rounds run on request.
    pub worker_settings: converge_runtime::queue_worker::WorkerSettings,
}

impl AppState {
    /// A new state.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock + Send + Sync>,
        settings: ApiSettings,
        policy: PolicyConfig,
    ) -> AppState {
        AppState {
            store,
            clock,
            settings,
            policy,
            metrics: Metrics::default(),
            key_cache: auth::KeyCache::default(),
            ports: converge_runtime::routed::RoutedPorts::new(None, None),
            queue_wakeup: Arc::new(tokio::sync::Notify::new()),
            sqs: None,
            dlq: None,
            secrets: None,
            rotation: converge_runtime::secrets::Rotation::new(
                converge_runtime::secrets::SECRET_TTL,
            ),
            api_keys_secret: None,
            worker_settings: converge_runtime::queue_worker::WorkerSettings::default(),
        }
    }

    /// Called after a commit that wrote queue messages: wakes this process's worker and, with
    /// SQS configured, relays the outbox's queue messages there at once. A relay that fails is
    /// only logged: the messages stay in the outbox for the next relay or the sweep.
    pub async fn queue_work_committed(&self) {
        self.queue_wakeup.notify_one();
        if let Some(queue) = &self.sqs
            && let Err(e) = queue.relay(&self.store, "api").await
        {
            tracing::warn!("queue messages left for the sweep: {e}");
        }
    }

    /// Brings this process up to date with rotated secrets: the DSN and the App key (see
    /// [`converge_runtime::secrets::Rotation`]) and the API keys' secret. Each is read at most
    /// once per cache lifetime; a failure is logged and the current credentials kept.
    pub async fn refresh_secrets(&self) {
        self.rotation.refresh(&self.store).await;
        if let Err(e) = self.refresh_api_keys().await {
            tracing::warn!("{e}");
        }
    }

    /// Seeds the keys of the API keys' secret when its value changed since the last call
    /// (the first call included), and revokes the keys it gave before and no longer lists. A
    /// value that cannot be used is handed over again after
    /// [`converge_runtime::secrets::RETRY_AFTER_FAILURE`]; a failed read is retried after the
    /// same pause by the secrets' cache.
    pub async fn refresh_api_keys(&self) -> Result<(), ApiError> {
        let (Some(watched), Some(secrets)) = (&self.api_keys_secret, &self.secrets) else {
            return Ok(());
        };
        let Some(text) = watched
            .changed(secrets)
            .await
            .map_err(|e| ApiError::DependencyUnavailable(e.to_string()))?
        else {
            return Ok(());
        };
        let outcome = auth::seed_api_keys_from_secret(self, watched.arn(), &text).await;
        if outcome.is_err() {
            watched.failed();
        }
        outcome
    }

    /// A fresh id: 96 random bits as 24 hex characters (unique for any number of events a
    /// deployment will ever hold).
    pub fn new_id(&self) -> String {
        let bytes: [u8; 12] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// 256 random bits, hex (for API keys).
    pub fn new_secret(&self) -> String {
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({"status": "ok", "timestamp": state.clock.now()})).into_response()
}

async fn live() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "ok", "timestamp": state.clock.now()})).into_response(),
        Err(e) => {
            tracing::warn!("readiness check failed: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "error": {"code": "unavailable", "message": "the database is unreachable"},
                    "timestamp": state.clock.now()
                })),
            )
                .into_response()
        }
    }
}

async fn openapi_document() -> Response {
    Json(openapi::document()).into_response()
}

/// One span per request (`http.request`: method, path, status, and the trace and span ids
/// the log lines inside it carry). The query string is left out: it is not ours to log.
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

/// Headers every response carries.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn business_routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    openapi::routes()
        .into_iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, route.handler)
        })
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(state),
            auth::authenticate,
        ))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(state),
            metrics::track,
        ))
}

/// The whole API.
pub fn router(state: Arc<AppState>) -> Router {
    let business = business_routes(&state);
    let operational = dashboard::routes()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
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
    Router::new()
        .merge(operational)
        .nest("/v1", business.clone())
        .nest("/api", business)
        .fallback(error::not_found)
        .method_not_allowed_fallback(|| async { error::method_not_allowed() })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            refresh_secrets,
        ))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}
