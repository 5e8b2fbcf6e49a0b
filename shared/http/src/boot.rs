//! Building the API from the environment, shared by the `api` function and `converge serve`.

use std::sync::Arc;

use axum::Router;
use converge_core::PolicyConfig;
use converge_store::{Store, SystemClock};

use crate::{AppState, router, seed_api_keys};

/// Why the API could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] converge_store::StoreError),
    /// Seeding the keys failed.
    #[error("cannot store the configured API keys: {0}")]
    Keys(crate::ApiError),
}

/// The application state from the environment: the store (migrated), the API settings (keys
/// seeded into the store), the default policy, and the ports: the local repository
/// (`CONVERGE_REPO_PATH`, or the working directory when it is a git work tree) with its checks,
/// and the GitHub App (`CONVERGE_GITHUB_APP_ID`, its key from a file, the environment or
/// Secrets Manager); and the SQS queue when `CONVERGE_QUEUE_URL` is set.
pub async fn state_from_env() -> Result<Arc<AppState>, BootError> {
    build_state(false).await
}

/// The state `converge --local` runs the API on in process, for an operator at the database
/// when the API is down: built like [`state_from_env`], with authentication off (whoever can
/// read the database configuration already holds every key).
pub async fn local_state_from_env() -> Result<Arc<AppState>, BootError> {
    build_state(true).await
}

async fn build_state(local: bool) -> Result<Arc<AppState>, BootError> {
    let config = converge_runtime::config::Config::from_env()
        .map_err(|e| BootError::Config(e.to_string()))?;
    let mut rotation = converge_runtime::secrets::Rotation::new(config.secrets_ttl);
    let store_config = converge_runtime::secrets::store_config(&config.store, &mut rotation)
        .await
        .map_err(BootError::Config)?;
    let mut settings = config.api.clone();
    if local {
        settings.auth_required = false;
        settings.rate_limit_rpm = None;
    }
    let store = Store::open(&store_config, Arc::new(SystemClock))?;
    store.migrate().await?;
    let mut state = AppState::new(
        store,
        Arc::new(SystemClock),
        settings,
        PolicyConfig::default(),
    );
    let local = match local_repository(config.local.repo_path.clone()) {
        None => None,
        Some(scm) => {
            let checks = converge_runtime::local_checks::LocalChecks::new(
                &config.local.checks,
                scm.path(),
                state.store.clone(),
            )
            .map_err(BootError::Config)?;
            Some((scm, checks))
        }
    };
    let github = converge_runtime::secrets::github_app(config.github.clone(), &mut rotation)
        .await
        .map_err(BootError::Config)?
        .map(converge_github::adapters::GithubPorts::new);
    state.ports = converge_runtime::routed::RoutedPorts::new(local, github);
    if state.settings.webhook_secret_arn.is_some() || state.settings.api_keys_secret_arn.is_some() {
        state.secrets = Some(converge_runtime::secrets::Secrets::shared(config.secrets_ttl).await);
    }
    state.api_keys_secret = state
        .settings
        .api_keys_secret_arn
        .as_deref()
        .map(converge_runtime::secrets::WatchedSecret::new);
    state.rotation = rotation;
    if let Some((queue, dlq)) = converge_runtime::sqs::SqsQueue::from_settings(&config.queue).await
    {
        state.sqs = Some(queue);
        state.dlq = dlq;
    }
    state.worker_settings = config.worker.clone();
    let state = Arc::new(state);
    seed_api_keys(&state, &state.settings.api_keys)
        .await
        .map_err(BootError::Keys)?;
    // The keys' secret is read now, so that its keys work from the first request. A failure
    // does not stop the start: the keys seeded before are in the database, and the next
    // request tries again (after a pause).
    if let Err(e) = state.refresh_api_keys().await {
        tracing::warn!("API keys' secret not seeded: {e}");
    }
    Ok(state)
}

/// The git repository intents are validated against: `CONVERGE_REPO_PATH`, else the working
/// directory when it is inside a git work tree (the local server started in its repository).
fn local_repository(
    configured: Option<std::path::PathBuf>,
) -> Option<converge_runtime::local_git::GitScm> {
    let path = match configured {
        Some(path) => path,
        // A Lambda function has no repository: skip the probe (a process spawn at cold start).
        None if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() => return None,
        None => {
            let cwd = std::env::current_dir().ok()?;
            let inside = std::process::Command::new("git")
                .arg("-C")
                .arg(&cwd)
                .args(["rev-parse", "--is-inside-work-tree"])
                .output()
                .ok()
                .is_some_and(|o| o.status.success());
            if !inside {
                return None;
            }
            cwd
        }
    };
    Some(converge_runtime::local_git::GitScm::new(path))
}

/// The API router from the environment.
pub async fn router_from_env() -> Result<Router, BootError> {
    Ok(router(state_from_env().await?))
}

/// The router of an HTTP Lambda function (`service` names it in telemetry): telemetry
/// installed, and the spans of each request flushed before its answer goes back, since the
/// process may be frozen right after.
pub async fn lambda_router_from_env(service: &'static str) -> Result<Router, BootError> {
    let telemetry = converge_runtime::telemetry::Telemetry::init(service);
    let router = router_from_env().await?;
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
