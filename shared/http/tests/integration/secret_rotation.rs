//! The webhook secret kept in Secrets Manager (the AWS emulator `scripts/test.sh` starts,
//! through the real AWS SDK) is rotated: deliveries signed with the new secret are accepted
//! once the cache's lifetime has passed, with no restart, and the old secret stops working.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use converge_core::PolicyConfig;
use converge_github::signature::{WebhookSecret, sign};
use converge_http::{ApiSettings, AppState, router};
use converge_runtime::secrets::Secrets;
use converge_store::{Store, SystemClock};
use tower::ServiceExt;

const TTL: Duration = Duration::from_secs(3);

async fn deliver(app: &axum::Router, secret: &str, delivery: &str) -> u16 {
    let body = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
    let request = axum::http::Request::post("/integrations/github/webhook")
        .header("x-github-event", "ping")
        .header("x-github-delivery", delivery)
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            sign(&WebhookSecret::new(secret), body),
        )
        .body(Body::from(body.to_vec()))
        .unwrap_or_else(|e| panic!("{e}"));
    app.clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_webhook_secret_is_used_after_the_cache_lifetime() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the AWS emulator"
    );
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let manager = aws_sdk_secretsmanager::Client::new(&aws);
    let created = manager
        .create_secret()
        .name(format!("converge/webhook/{}", std::process::id()))
        .secret_string("first-secret")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)));
    let arn = created.arn().unwrap_or_default().to_owned();

    let db = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::from_url(
        &format!("sqlite://{}", db.path().join("s.db").display()),
        Arc::new(SystemClock),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    let settings = ApiSettings {
        // The environment's secret is ignored once an ARN names one.
        webhook_secrets: vec![WebhookSecret::new("environment-secret")],
        webhook_secret_arn: Some(arn.clone()),
        ..ApiSettings::default()
    };
    let mut state = AppState::new(
        store,
        Arc::new(SystemClock),
        settings,
        PolicyConfig::default(),
    );
    state.secrets = Some(Arc::new(Secrets::with_client(manager.clone(), TTL)));
    let app = router(Arc::new(state));

    assert_eq!(deliver(&app, "first-secret", "d-1").await, 202);
    assert_eq!(deliver(&app, "environment-secret", "d-2").await, 401);

    manager
        .put_secret_value()
        .secret_id(&arn)
        .secret_string("second-secret")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)));
    // Within the cache's lifetime the old value still holds.
    assert_eq!(deliver(&app, "first-secret", "d-3").await, 202);
    tokio::time::sleep(TTL + Duration::from_millis(200)).await;
    assert_eq!(deliver(&app, "second-secret", "d-4").await, 202);
    assert_eq!(deliver(&app, "first-secret", "d-5").await, 401);
}
