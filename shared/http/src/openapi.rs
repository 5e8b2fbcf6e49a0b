//! The OpenAPI 3.1 document of the business API, generated from the route table
//! (`routes`): every route with its summary, role, scope, parameters and body.

use serde_json::{Map, Value, json};

use crate::routes::{In, table};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The OpenAPI 3.1 document of the API.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in table() {
        let mut parameters: Vec<Value> = route
            .params
            .iter()
            .map(|(name, location, kind, description)| {
                let (place, required) = match location {
                    In::Query => ("query", false),
                    In::Path => ("path", true),
                };
                json!({"name": name, "in": place, "required": required, "description": description, "schema": {"type": kind}})
            })
            .collect();
        if route.method == "post" {
            parameters.push(json!({
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "Retries with the same key and request within 24 h get the first answer (see `http::idempotency`).",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}
            }));
        }
        let mut operation = json!({
            "summary": route.summary,
            "description": format!("Needs the {} role (and the `{}` scope when the key declares scopes).", route.role, route.scope),
            "security": [{"apiKey": []}],
            "parameters": parameters,
            "responses": {
                route.success.to_string(): {"description": "Success", "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": error_response("Malformed request; the message names the problem."),
                "401": error_response("Missing, unknown or expired API key."),
                "403": error_response("Role or scope too low, or a write into another tenant."),
                "404": error_response("Not found, or not visible to this key's tenant."),
                "409": error_response("The request conflicts with the intent's state (illegal move, id taken, changed meanwhile), or its Idempotency-Key's first request is still running."),
                "408": error_response("The body did not arrive in time (`converge serve`)."),
                "413": error_response("Body larger than 1 MiB."),
                "415": error_response("A Content-Encoding other than identity."),
                "422": error_response("Cannot be done as asked: a setting this needs is missing (the message names it), or an Idempotency-Key reused with another request."),
                "429": error_response("The tenant's requests per minute are used up, or too many failed authentications; see Retry-After."),
                "503": error_response("The database is unreachable or full, or too many connections."),
            },
        });
        if let Some(body) = route.body {
            operation["requestBody"] = json!({"required": body.required, "description": body.description, "content": {"application/json": {"schema": (body.schema)()}}});
        }
        for prefix in ["/v1", "/api"] {
            let entry = paths
                .entry(format!("{prefix}{}", route.path))
                .or_insert_with(|| json!({}));
            entry[route.method] = operation.clone();
        }
    }
    let ops = [
        ("/v1/openapi.json", "This document (also under /api)."),
        ("/health", "Liveness and time."),
        ("/health/live", "Liveness."),
        (
            "/health/ready",
            "Readiness: 503 when the database is unreachable.",
        ),
        (
            "/metrics",
            "Prometheus text: requests by route template, latency, database gauges.",
        ),
    ];
    for (path, summary) in ops {
        paths.insert(path.to_owned(), json!({"get": {"summary": summary, "security": [], "responses": {"200": {"description": "Success"}}}}));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Converge API", "version": env!("CARGO_PKG_VERSION"), "description": "Merge coordination: intents, queue, events and policy. Every error is {\"error\": {\"code\", \"message\"}}."},
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}},
        },
        "paths": paths,
    })
}
