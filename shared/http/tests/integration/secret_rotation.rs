//! The webhook secret kept in Secrets Manager (the AWS emulator `scripts/test.sh` starts,
//! through the real AWS SDK) is rotated: deliveries signed with the new secret are accepted
//! once the cache's lifetime has passed, with no restart, and the old secret stops working.
//! The API keys kept there rotate the same way.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use converge_core::PolicyConfig;
use converge_github::signature::{WebhookSecret, sign};
use converge_http::{ApiSettings, AppState, router};
use converge_runtime::secrets::{Secrets, WatchedSecret};
use converge_store::{Store, SystemClock};
use tower::ServiceExt;

const TTL: Duration = Duration::from_secs(3);

fn sdk_error(e: impl std::error::Error + 'static) -> String {
    aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()
}

/// The emulator's Secrets Manager and a new secret `converge/<what>/<pid>` holding `value`;
/// answers the client and the secret's ARN.
async fn secret(what: &str, value: &str) -> (aws_sdk_secretsmanager::Client, String) {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the AWS emulator"
    );
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let manager = aws_sdk_secretsmanager::Client::new(&aws);
    let created = manager
        .create_secret()
        .name(format!("converge/{what}/{}", std::process::id()))
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", sdk_error(e)));
    let arn = created.arn().unwrap_or_default().to_owned();
    (manager, arn)
}

async fn put(manager: &aws_sdk_secretsmanager::Client, arn: &str, value: &str) {
    manager
        .put_secret_value()
        .secret_id(arn)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", sdk_error(e)));
}

/// The API's state on a fresh SQLite store (kept while the returned directory lives), with
/// `settings` and Secrets Manager read through `manager` with the test's TTL, aging by `clock`.
async fn state(
    settings: ApiSettings,
    manager: &aws_sdk_secretsmanager::Client,
    clock: &converge_testkit::MovableClock,
) -> (AppState, tempfile::TempDir) {
    let db = tempfile::tempdir().unwrap();
    let store = Store::from_url(
        &format!("sqlite://{}", db.path().join("s.db").display()),
        Arc::new(SystemClock),
    )
    .unwrap();
    store.migrate().await.unwrap();
    let mut state = AppState::new(
        store,
        Arc::new(SystemClock),
        settings,
        PolicyConfig::default(),
    );
    state.services.secrets = Some(Arc::new(Secrets::with_clock(
        manager.clone(),
        TTL,
        clock.now_fn(),
    )));
    (state, db)
}

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
        .unwrap();
    app.clone()
        .oneshot(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_webhook_secret_is_used_after_the_cache_lifetime() {
    let (manager, arn) = secret("webhook", "first-secret").await;
    let settings = ApiSettings {
        // The environment's secret is ignored once an ARN names one.
        webhook_secrets: vec![WebhookSecret::new("environment-secret")],
        webhook_secret_arn: Some(arn.clone()),
        ..ApiSettings::default()
    };
    let clock = converge_testkit::MovableClock::default();
    let (state, _db) = state(settings, &manager, &clock).await;
    let app = router(Arc::new(state));

    assert_eq!(deliver(&app, "first-secret", "d-1").await, 202);
    assert_eq!(deliver(&app, "environment-secret", "d-2").await, 401);

    put(&manager, &arn, "second-secret").await;
    // Within the cache's lifetime the old value still holds.
    assert_eq!(deliver(&app, "first-secret", "d-3").await, 202);
    clock.advance(TTL);
    assert_eq!(deliver(&app, "second-secret", "d-4").await, 202);
    assert_eq!(deliver(&app, "first-secret", "d-5").await, 401);
}

async fn list_intents(app: &axum::Router, key: &str) -> u16 {
    let request = axum::http::Request::get("/v1/intents")
        .header("x-api-key", key)
        .body(Body::empty())
        .unwrap();
    app.clone()
        .oneshot(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The API keys kept in Secrets Manager (`CONVERGE_API_KEYS_SECRET_ARN`) are rotated: the
/// secret gains a new key and drops the old one. After the cache's lifetime the new key is
/// accepted and the dropped one refused, with no restart, however many edits came between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_rotated_in_secrets_manager_are_seeded_and_dropped_keys_revoked() {
    let (manager, arn) = secret("api-keys", "old-key:operator:ops").await;
    let settings = ApiSettings {
        api_keys_secret_arn: Some(arn.clone()),
        // Rate limiting is not what this test is about.
        rate_limit_rpm: None,
        ..ApiSettings::default()
    };
    let clock = converge_testkit::MovableClock::default();
    let (mut state, _db) = state(settings, &manager, &clock).await;
    state.services.api_keys_secret = Some(WatchedSecret::new(&arn));
    let state = Arc::new(state);
    // What the start does: the secret's keys are seeded before the first request.
    state.services.refresh_api_keys().await.unwrap();
    let app = router(state);

    assert_eq!(list_intents(&app, "old-key").await, 200);
    assert_eq!(list_intents(&app, "new-key").await, 401);

    // A rotation in two steps, as an operator does it: add the new key, then drop the old.
    put(&manager, &arn, "old-key:operator:ops\nnew-key:operator:ops").await;
    assert_eq!(
        list_intents(&app, "new-key").await,
        401,
        "within the cache's lifetime the secret is not read again"
    );
    clock.advance(TTL);
    assert_eq!(list_intents(&app, "new-key").await, 200);
    assert_eq!(list_intents(&app, "old-key").await, 200);

    put(&manager, &arn, "new-key:operator:ops").await;
    clock.advance(TTL);
    assert_eq!(list_intents(&app, "new-key").await, 200);
    assert_eq!(
        list_intents(&app, "old-key").await,
        401,
        "a key dropped from the secret is revoked"
    );

    // Two edits within one cache lifetime (a key added, then the one before it dropped): the
    // instance sees only the last value, and still revokes what that value no longer lists.
    put(
        &manager,
        &arn,
        "new-key:operator:ops\nthird-key:operator:ops",
    )
    .await;
    put(&manager, &arn, "third-key:operator:ops").await;
    clock.advance(TTL);
    assert_eq!(list_intents(&app, "third-key").await, 200);
    assert_eq!(list_intents(&app, "new-key").await, 401);

    // A value that does not parse changes nothing, and is reported without its keys.
    put(&manager, &arn, "not-a-key-entry").await;
    clock.advance(TTL);
    assert_eq!(list_intents(&app, "third-key").await, 200);
}
