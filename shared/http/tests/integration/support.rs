//! What the HTTP suites share: a migrated store and the API's router over it.

use std::sync::Arc;

use converge_core::PolicyConfig;
use converge_http::{ApiSettings, AppState, router, seed_api_keys};
use converge_store::{Store, SystemClock};

/// A migrated store on a fresh SQLite file (kept while the returned folder lives).
pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let store = Store::from_url(&url, Arc::new(SystemClock)).unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

/// The API's router over `store` (migrated here) with `settings`, its keys seeded, as a server
/// starts.
pub async fn router_over(store: Store, settings: ApiSettings) -> axum::Router {
    store.migrate().await.unwrap();
    let state = Arc::new(AppState::new(
        store,
        Arc::new(SystemClock),
        settings,
        PolicyConfig::default(),
    ));
    seed_api_keys(&state, &state.services.api.api_keys)
        .await
        .unwrap();
    router(state)
}
