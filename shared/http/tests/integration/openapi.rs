//! The OpenAPI document: snapshot-tested, so any change to the API's surface shows up in
//! review (`cargo insta review`, or `INSTA_UPDATE=always cargo test` to accept).

use axum::body::Body;
use axum::http::Request;
use converge_http::ApiSettings;
use tower::ServiceExt;

use crate::support;

#[test]
fn the_openapi_document_is_stable() {
    insta::assert_json_snapshot!("openapi", converge_http::openapi::document());
}

#[tokio::test]
async fn the_document_is_served_without_a_key_and_documents_every_route() {
    let (store, _dir) = support::sqlite_store().await;
    let settings = ApiSettings {
        auth_required: true,
        rate_limit_rpm: None,
        api_keys: Vec::new(),
        ..ApiSettings::default()
    };
    let app = support::router_over(store, settings).await;
    let response = app
        .oneshot(
            Request::get("/api/openapi.json")
                .body(Body::empty())
                .unwrap_or_default(),
        )
        .await
        .unwrap_or_else(|e| match e {});
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let served: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    assert_eq!(served, converge_http::openapi::document());
    assert_eq!(served["openapi"], "3.1.0");
    for path in [
        "/v1/intents",
        "/api/intents/{id}",
        "/v1/queue/reset",
        "/v1/auth/keys/rotate",
        "/health/ready",
    ] {
        assert!(
            served["paths"].get(path).is_some(),
            "{path} is not documented"
        );
    }
    assert!(
        served["paths"]["/v1/intents"].get("post").is_some()
            && served["paths"]["/v1/intents"].get("get").is_some()
    );
}

/// Every request body is described field by field from the type its handler parses: no
/// body is a bare object, unknown fields are refused (as the handlers refuse them), and the
/// bounds the handlers check are in the schema.
#[test]
fn every_request_body_has_the_schema_of_its_type() {
    let document = converge_http::openapi::document();
    let mut bodies = 0;
    for (path, operations) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in operations.as_object().into_iter().flatten() {
            let Some(body) = operation.get("requestBody") else {
                continue;
            };
            bodies += 1;
            let schema = &body["content"]["application/json"]["schema"];
            // A body of several shapes (a tagged command) is each of them, held to the same.
            let shapes = match schema["oneOf"].as_array() {
                Some(shapes) => shapes.iter().collect(),
                None => vec![schema],
            };
            for shape in shapes {
                let fields = shape["properties"].as_object().map_or(0, |p| p.len());
                assert!(fields > 0, "{method} {path}: {shape}");
                assert_eq!(
                    shape["additionalProperties"],
                    serde_json::json!(false),
                    "{method} {path}"
                );
            }
        }
    }
    assert_eq!(bodies, 44, "twenty-two body routes, under /v1 and /api");
    let body = |path: &str| {
        document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
            .clone()
    };
    let checks = body("/v1/intents/{id}/checks");
    assert_eq!(
        checks["required"],
        serde_json::json!(["name", "state", "head_sha"])
    );
    assert_eq!(checks["properties"]["name"]["maxLength"], 100);
    let rotate = body("/v1/auth/keys/rotate");
    assert_eq!(
        rotate["properties"]["grace_period_seconds"]["maximum"],
        86_400
    );
    assert_eq!(
        document["paths"]["/v1/auth/keys/rotate"]["post"]["requestBody"]["required"], false,
        "rotation works without a body"
    );
    assert_eq!(body("/v1/intents")["properties"]["id"]["maxLength"], 512);
    let freeze = body("/v1/queue/freezes");
    assert_eq!(freeze["required"], serde_json::json!(["reason"]));
    let windows = freeze["properties"]["window"].to_string();
    assert!(
        windows.contains("date-time") && windows.contains("\"weekly\""),
        "{windows}"
    );
}

/// The strings of `schema` that allow any text, as paths (`name`, `tags.items`).
fn unconstrained_strings(schema: &serde_json::Value, at: &str, found: &mut Vec<String>) {
    use serde_json::Value;
    match schema {
        Value::Object(map) => {
            let allows_string = match map.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
                _ => false,
            };
            let constrained = ["pattern", "enum", "format", "const"]
                .iter()
                .any(|k| map.contains_key(*k));
            if allows_string && !constrained {
                found.push(at.to_owned());
            }
            if map.get("additionalProperties") == Some(&Value::Bool(true)) {
                found.push(format!("{at}.additionalProperties"));
            }
            for (key, value) in map {
                if !matches!(key.as_str(), "enum" | "const" | "default" | "examples") {
                    unconstrained_strings(value, &format!("{at}.{key}"), found);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unconstrained_strings(item, &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// What the document calls a valid request is what the handlers accept: no request string
/// may hold a NUL undocumented (the extractors refuse them), query parameters come from the
/// handlers' query types with their bounds, and path parameters are non-empty.
#[test]
fn every_parameter_and_body_string_is_documented_as_the_handlers_read_it() {
    let document = converge_http::openapi::document();
    let mut loose = Vec::new();
    let mut query_parameters = 0;
    for (path, operations) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in operations.as_object().into_iter().flatten() {
            let here = format!("{method} {path}");
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap_or_default();
                let schema = &parameter["schema"];
                unconstrained_strings(schema, &format!("{here} {name}"), &mut loose);
                assert!(
                    !schema["type"].is_array(),
                    "{here} {name}: a parameter is present or absent, never null: {schema}"
                );
                if parameter["in"] == "query" {
                    query_parameters += 1;
                    assert!(
                        parameter["description"]
                            .as_str()
                            .is_some_and(|d| !d.is_empty()),
                        "{here} {name} is undescribed"
                    );
                }
                if parameter["in"] == "path" {
                    assert_eq!(schema["minLength"], 1, "{here} {name}");
                }
            }
            if let Some(body) = operation.get("requestBody") {
                let schema = &body["content"]["application/json"]["schema"];
                unconstrained_strings(schema, &format!("{here} body"), &mut loose);
            }
        }
    }
    assert!(loose.is_empty(), "strings that may hold a NUL: {loose:#?}");
    assert!(query_parameters > 40, "{query_parameters} query parameters");
    let intents = &document["paths"]["/v1/intents"]["get"]["parameters"];
    let limit = intents
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "limit"))
        .map(|p| p["schema"].clone())
        .unwrap_or_default();
    assert_eq!(
        (limit["minimum"].clone(), limit["maximum"].clone()),
        (1.into(), 500.into())
    );
    let create = &document["paths"]["/v1/intents"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        create["anyOf"][0]["required"],
        serde_json::json!(["source"])
    );
}
