//! The OpenAPI 3.1 document of the business API, generated from the route table
//! (`routes`): every route with its summary, role, scope, parameters and body.

use serde_json::{Map, Value, json};

use crate::routes::{Answer, NO_NUL, json_without_nul, table};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The query parameters of a query string whose JSON Schema is `schema` (an object): one per
/// property, required as the type requires it. A query parameter is present or absent, never
/// null, so `null` is dropped from its types.
fn query_parameters(schema: &Value) -> Vec<Value> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let description = property
                .as_object_mut()
                .and_then(|p| p.remove("description"))
                .unwrap_or_default();
            if let Some(Value::Array(types)) = property.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    property["type"] = types[0].clone();
                }
            }
            if let Some(Value::Array(values)) = property.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            json!({"name": name, "in": "query", "required": required.contains(&name.as_str()),
                   "description": description, "schema": property})
        })
        .collect()
}

/// The OpenAPI 3.1 document of the API.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in table() {
        let mut parameters: Vec<Value> = route
            .params
            .iter()
            .map(|(name, description)| {
                json!({"name": name, "in": "path", "required": true, "description": description,
                       "schema": {"type": "string", "minLength": 1, "pattern": NO_NUL}})
            })
            .collect();
        if let Some(query) = route.query {
            parameters.extend(query_parameters(&query()));
        }
        if route.method == "post" {
            parameters.push(json!({
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "Retries with the same key and request within 24 h get the first answer (see `http::idempotency`).",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}
            }));
        }
        let content: Map<String, Value> = match route.answer {
            Answer::Json => [(
                "application/json".to_owned(),
                json!({"schema": {"type": "object"}}),
            )]
            .into_iter()
            .collect(),
            Answer::File(types) => types
                .iter()
                .map(|t| ((*t).to_owned(), json!({"schema": {"type": "string"}})))
                .collect(),
        };
        let mut operation = json!({
            "summary": route.summary,
            "description": format!("Needs the {} role (and the `{}` scope when the key declares scopes).", route.role, route.scope),
            "security": [{"apiKey": []}],
            "parameters": parameters,
            "responses": {
                route.success.to_string(): {"description": "Success", "content": content},
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
        if route.conditional {
            if let Some(parameters) = operation["parameters"].as_array_mut() {
                parameters.push(json!({
                    "name": "If-None-Match", "in": "header", "required": false,
                    "description": "An `ETag` of an earlier answer (or several, comma-separated): 304 with no body while the answer is unchanged.",
                    "schema": {"type": "string", "minLength": 1, "pattern": "^[ !-~]*[!-~][ !-~]*$"}
                }));
            }
            operation["responses"]["304"] = json!({"description": "Not modified: the answer is still the one whose ETag was given.", "headers": {"ETag": {"schema": {"type": "string"}}}});
            operation["responses"][route.success.to_string()]["headers"] = json!({"ETag": {"description": "A digest of the answer: send it back in If-None-Match.", "schema": {"type": "string"}}});
        }
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
            "schemas": {"JsonWithoutNul": json_without_nul(), "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}},
        },
        "paths": paths,
    })
}
