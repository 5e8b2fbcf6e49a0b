//! The API router driven through lambda_http's API Gateway (HTTP API, payload 2.0) request
//! types, as the `api` function receives requests, on SQLite and PostgreSQL.

use std::sync::Arc;

use axum::body::Body;
use converge_github::signature::{WebhookSecret, sign};
use converge_http::{ApiSettings, parse_api_keys};
use converge_store::{Store, SystemClock};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support;

/// An API Gateway HTTP API (v2) event, as Lambda delivers it.
fn event(method: &str, path: &str, query: &str, key: Option<&str>, body: Option<Value>) -> String {
    let mut headers = json!({"content-type": "application/json", "host": "abc.execute-api.us-east-1.amazonaws.com"});
    if let Some(key) = key {
        headers["x-api-key"] = json!(key);
    }
    gateway_event(method, path, query, headers, body.map(|b| b.to_string()))
}

/// A signed GitHub delivery as the webhook function receives it.
fn delivery_event(event_name: &str, delivery: &str, payload: &Value) -> String {
    let body = payload.to_string();
    let signature = sign(&WebhookSecret::new(WEBHOOK_SECRET), body.as_bytes());
    let headers = json!({
        "content-type": "application/json",
        "x-github-event": event_name,
        "x-github-delivery": delivery,
        "x-hub-signature-256": signature,
    });
    gateway_event(
        "POST",
        "/integrations/github/webhook",
        "",
        headers,
        Some(body),
    )
}

const WEBHOOK_SECRET: &str = "lambda-secret";

fn gateway_event(
    method: &str,
    path: &str,
    query: &str,
    headers: Value,
    body: Option<String>,
) -> String {
    json!({
        "version": "2.0",
        "routeKey": "ANY /{proxy+}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc",
            "domainName": "abc.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"},
            "requestId": "r-1",
            "routeKey": "ANY /{proxy+}",
            "stage": "$default",
            "time": "27/Nov/2026:21:00:00 +0000",
            "timeEpoch": 1_795_900_000_000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

async fn send(app: &axum::Router, event_json: &str) -> (u16, Value) {
    let request = lambda_http::request::from_str(event_json)
        .unwrap_or_else(|e| panic!("not an API Gateway event: {e}"));
    let request = request.map(|body| Body::from(body.to_vec()));
    let response = app
        .clone()
        .oneshot(request)
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

async fn app(store: Store) -> axum::Router {
    let settings = ApiSettings {
        auth_required: true,
        rate_limit_rpm: Some(1_000),
        api_keys: parse_api_keys("k-op:operator:lambda-op:acme, k-view:viewer:lambda-view:globex")
            .unwrap_or_default(),
        webhook_secrets: vec![WebhookSecret::new(WEBHOOK_SECRET)],
        github_default_tenant: Some("acme".into()),
        ..ApiSettings::default()
    };
    support::router_over(store, settings).await
}

async fn exercise(app: axum::Router) {
    let (status, body) = send(
        &app,
        &event(
            "POST",
            "/v1/intents",
            "",
            Some("k-op"),
            Some(json!({"id": "acme/app:pr-7", "source": "feature/x"})),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        &app,
        &event(
            "GET",
            "/api/intents",
            "status=READY&limit=10",
            Some("k-op"),
            None,
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["intents"][0]["tenant_id"], "acme",
        "the key's tenant was applied: {body}"
    );
    let (status, body) = send(
        &app,
        &event("GET", "/v1/intents/acme%2Fapp:pr-7", "", Some("k-op"), None),
    )
    .await;
    assert_eq!((status, body["id"].as_str()), (200, Some("acme/app:pr-7")));
    let (status, _) = send(
        &app,
        &event(
            "GET",
            "/v1/intents/acme%2Fapp:pr-7",
            "",
            Some("k-view"),
            None,
        ),
    )
    .await;
    assert_eq!(status, 404, "another tenant's intent is hidden");
    let (status, body) = send(&app, &event("GET", "/v1/intents", "", None, None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, _) = send(&app, &event("GET", "/health/ready", "", None, None)).await;
    assert_eq!(status, 200);

    // The webhook function's route: a signed pull_request delivery creates the intent.
    let opened = json!({
        "action": "opened",
        "pull_request": {"number": 9, "head": {"ref": "fix", "sha": "abc"}, "base": {"ref": "main", "sha": "def"}},
        "repository": {"full_name": "acme/app"}
    });
    let (status, body) = send(&app, &delivery_event("pull_request", "lambda-d1", &opened)).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (202, Some("applied")),
        "{body}"
    );
    let (status, body) = send(&app, &delivery_event("pull_request", "lambda-d1", &opened)).await;
    assert_eq!(
        (status, body["duplicate"].as_bool()),
        (202, Some(true)),
        "{body}"
    );
    let (status, body) = send(
        &app,
        &event("GET", "/v1/intents/acme%2Fapp:pr-9", "", Some("k-op"), None),
    )
    .await;
    assert_eq!(
        (status, body["source"].as_str()),
        (200, Some("fix")),
        "{body}"
    );
}

#[tokio::test]
async fn the_router_answers_api_gateway_events_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    exercise(app(Store::from_url(&url, Arc::new(SystemClock)).unwrap()).await).await;
}

#[tokio::test]
async fn the_router_answers_api_gateway_events_on_postgres() {
    let url = converge_testkit::fresh_pg_database().await;
    exercise(app(Store::from_url(&url, Arc::new(SystemClock)).unwrap()).await).await;
}
