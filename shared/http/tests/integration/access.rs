//! Roles and scopes come from the route table and are checked before the handler: driven by
//! the OpenAPI document (built from the same table), so a route added later is covered too.
//! A key below a route's role, or without its scope, gets 403 whatever its body holds — a
//! malformed body included — and a key with the role and scope gets past the check.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use converge_http::{ApiSettings, parse_api_keys};
use serde_json::Value;
use tower::ServiceExt;

use crate::support;

const KEYS: &str = "viewer-key:viewer:eve,operator-key:operator:olga,admin-key:admin:ada,\
                    scoped-key:admin:sam::nothing.relevant";

async fn app() -> (axum::Router, tempfile::TempDir) {
    let (store, dir) = support::sqlite_store().await;
    let settings = ApiSettings {
        auth_required: true,
        rate_limit_rpm: None,
        api_keys: parse_api_keys(KEYS).unwrap(),
        ..ApiSettings::default()
    };
    (support::router_over(store, settings).await, dir)
}

/// Every business operation of the document: method, a concrete path, the role it needs.
fn operations() -> Vec<(String, String, String)> {
    let document = converge_http::openapi::document();
    let mut operations = Vec::new();
    let Some(paths) = document["paths"].as_object() else {
        panic!("the document has no paths");
    };
    for (path, item) in paths {
        if !path.starts_with("/v1/") || path == "/v1/openapi.json" {
            continue;
        }
        let Some(methods) = item.as_object() else {
            continue;
        };
        for (method, operation) in methods {
            let description = operation["description"].as_str().unwrap_or_default();
            let role = ["viewer", "operator", "admin"]
                .into_iter()
                .find(|role| description.starts_with(&format!("Needs the {role} role")))
                .unwrap_or_else(|| panic!("{method} {path}: no role documented"));
            let concrete = path
                .replace("{id}", "some-intent")
                .replace("{name}", "some-flag");
            operations.push((method.to_uppercase(), concrete, role.to_owned()));
        }
    }
    assert!(operations.len() >= 26, "{operations:?}");
    operations
}

async fn call(app: &axum::Router, method: &str, path: &str, key: &str) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", key);
    // A body no handler accepts: the role check must answer before anything reads it.
    let body = if method == "POST" {
        request = request.header("content-type", "application/json");
        Body::from("{this is not json")
    } else {
        Body::empty()
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 0,
        "operator" => 1,
        _ => 2,
    }
}

#[tokio::test]
async fn every_route_refuses_a_lower_role_before_reading_the_body() {
    let (app, _dir) = app().await;
    for (method, path, needed) in operations() {
        for (key, role) in [
            ("viewer-key", "viewer"),
            ("operator-key", "operator"),
            ("admin-key", "admin"),
        ] {
            let (status, body) = call(&app, &method, &path, key).await;
            if rank(role) < rank(&needed) {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} as {role} (needs {needed}): {body}"
                );
                assert_eq!(body["error"]["code"], "forbidden", "{method} {path}");
            } else {
                assert_ne!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} as {role} (needs {needed}): {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_key_without_the_routes_scope_is_refused_on_every_route() {
    let (app, _dir) = app().await;
    for (method, path, _) in operations() {
        let (status, body) = call(&app, &method, &path, "scoped-key").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("missing scope: "),
            "{method} {path}: {message}"
        );
    }
}
