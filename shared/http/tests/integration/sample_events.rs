//! The sample events in `events/` (for `cargo lambda invoke` and `sam local invoke`) go through
//! the API router as the `api` and `webhook` functions receive them, so they stay valid: the
//! API call is answered, and the webhook's signature matches the documented secret.

use axum::body::Body;
use converge_github::signature::WebhookSecret;
use converge_http::{ApiSettings, parse_api_keys};
use serde_json::Value;
use tower::ServiceExt;

use crate::support;

async fn app() -> (axum::Router, tempfile::TempDir) {
    let (store, db) = support::sqlite_store().await;
    let settings = ApiSettings {
        api_keys: parse_api_keys("dev-key:admin:me").unwrap_or_default(),
        webhook_secrets: vec![WebhookSecret::new("dev-webhook-secret")],
        ..ApiSettings::default()
    };
    (support::router_over(store, settings).await, db)
}

async fn invoke(app: &axum::Router, file: &str) -> (u16, Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let request = lambda_http::request::from_str(&text)
        .unwrap_or_else(|e| panic!("{file} is not an API Gateway event: {e}"));
    let response = app
        .clone()
        .oneshot(request.map(|body| Body::from(body.to_vec())))
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_sample_api_and_webhook_events_are_answered() {
    let (app, _db) = app().await;
    let (status, page) = invoke(&app, "api-list-intents.json").await;
    assert_eq!(status, 200, "{page}");
    assert!(page["intents"].is_array(), "{page}");
    let (status, answer) = invoke(&app, "webhook-ping.json").await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["event"], "ping", "{answer}");
}
