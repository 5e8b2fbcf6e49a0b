//! The HTTP state and routers of a server process, over the services the runtime's one wiring
//! builds (`converge_runtime::services::Services`): shared by the `api` and `webhook`
//! functions, `converge serve` and the CLI's in-process API.

use std::sync::Arc;

use axum::Router;
use converge_runtime::config::Config;
use converge_runtime::services::{Services, ServicesError};

use crate::{AppState, router, seed_api_keys, webhook_router};

/// Why the API could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The services could not be built.
    #[error(transparent)]
    Services(#[from] ServicesError),
    /// Seeding the keys failed.
    #[error("cannot store the configured API keys: {0}")]
    Keys(crate::ApiError),
}

/// The application state from the environment: the services (see [`Services::from_config`])
/// and the configured API keys seeded into the store.
pub async fn state_from_env() -> Result<Arc<AppState>, BootError> {
    let config = Config::from_env().map_err(ServicesError::from)?;
    state_from_config(config).await
}

/// The state `converge --local` runs the API on in process, for an operator at the database
/// when the API is down: built like [`state_from_env`], with authentication and the rate limit
/// off (whoever can read the database configuration already holds every key).
pub async fn local_state_from_env() -> Result<Arc<AppState>, BootError> {
    let mut config = Config::from_env().map_err(ServicesError::from)?;
    config.api.auth_required = false;
    config.api.rate_limit_rpm = None;
    state_from_config(config).await
}

/// The application state from read settings (as [`state_from_env`] does with the
/// environment's).
pub async fn state_from_config(config: Config) -> Result<Arc<AppState>, BootError> {
    let state = Arc::new(AppState::with_services(
        Services::from_config(config).await?,
    ));
    seed_api_keys(&state, &state.services.api.api_keys)
        .await
        .map_err(BootError::Keys)?;
    // The keys' secret is read now, so that its keys work from the first request. A failure
    // does not stop the start: the keys seeded before are in the database, and the next
    // request tries again (after a pause).
    if let Err(e) = state.services.refresh_api_keys().await {
        tracing::warn!("API keys' secret not seeded: {e}");
    }
    Ok(state)
}

/// The API router from the environment.
pub async fn router_from_env() -> Result<Router, BootError> {
    Ok(router(state_from_env().await?))
}

/// Which router an HTTP Lambda function serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// The whole API (the `api` function).
    Api,
    /// The GitHub webhook and health routes only (the `webhook` function).
    Webhook,
}

/// The router of an HTTP Lambda function (`service` names it in telemetry): telemetry
/// installed, and the spans of each request flushed before its answer goes back, since the
/// process may be frozen right after.
pub async fn lambda_router_from_env(
    service: &'static str,
    function: Function,
) -> Result<Router, BootError> {
    let telemetry = converge_runtime::telemetry::Telemetry::init(service);
    let router = match function {
        Function::Api => router(state_from_env().await?),
        // The webhook authenticates no caller by key: its cold start seeds none.
        Function::Webhook => webhook_router(Arc::new(AppState::with_services(
            Services::from_env().await?,
        ))),
    };
    Ok(router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let telemetry = telemetry.clone();
            async move {
                let response = next.run(request).await;
                telemetry.flush().await;
                response
            }
        },
    )))
}
