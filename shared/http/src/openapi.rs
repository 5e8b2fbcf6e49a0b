//! The route table of the business API, and the OpenAPI 3.1 document generated from it.
//!
//! Every business route is declared once here, with its handler and its documentation (role,
//! scope, parameters, body): the router is built from this table and so is
//! `/v1/openapi.json`, so a route cannot exist undocumented.

use std::sync::Arc;

use axum::routing::{MethodRouter, get, post};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::routes;

/// Where a parameter goes.
#[derive(Clone, Copy)]
pub(crate) enum In {
    Query,
    Path,
}

/// One documented parameter: name, location, JSON type, description.
pub(crate) type Param = (&'static str, In, &'static str, &'static str);

/// One business route.
pub(crate) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub role: &'static str,
    pub scope: &'static str,
    pub params: &'static [Param],
    /// Description of the JSON body, if the route takes one.
    pub body: Option<&'static str>,
    /// Success status.
    pub success: u16,
    pub handler: MethodRouter<Arc<AppState>>,
}

const TENANT: Param = (
    "tenant_id",
    In::Query,
    "string",
    "Tenant to read (ignored for tenant-bound keys, which always read their own).",
);
const LIMIT: Param = ("limit", In::Query, "integer", "Page size.");
const TENANT_WRITE: Param = (
    "tenant_id",
    In::Query,
    "string",
    "Tenant written to; a tenant-bound key may only name its own (403 otherwise).",
);
const ID: Param = (
    "id",
    In::Path,
    "string",
    "Intent id, percent-encoded (`acme%2Fapp:pr-7`).",
);

/// The business routes (mounted under `/v1` and `/api`).
pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "get",
            path: "/flags",
            summary: "Every known feature flag, its value and its source (default or operator).",
            role: "viewer",
            scope: "flags.read",
            params: &[],
            body: None,
            success: 200,
            handler: get(routes::list_flags),
        },
        Route {
            method: "post",
            path: "/flags/{name}",
            summary: "Set a feature flag for every instance.",
            role: "admin",
            scope: "admin",
            params: &[(
                "name",
                In::Path,
                "string",
                "Flag name, e.g. risk_auto_classify.",
            )],
            body: Some("{enabled}"),
            success: 200,
            handler: post(routes::set_flag),
        },
        Route {
            method: "get",
            path: "/risk/review",
            summary: "An intent's latest risk, simulation and policy evidence, the diagnostics they call for (most severe first), and its last 50 events.",
            role: "viewer",
            scope: "risk.read",
            params: &[("intent_id", In::Query, "string", "The intent (required).")],
            body: None,
            success: 200,
            handler: get(routes::risk_review),
        },
        Route {
            method: "post",
            path: "/intents/{id}/validate",
            summary: "Validate the intent against the repository now: merge simulation, required checks (as reported by CI), risk, policy gates, risk gate. Records the events; answers the decision.",
            role: "operator",
            scope: "intents.write",
            params: &[ID],
            body: Some("{skip_checks? (admin only)} — or no body"),
            success: 200,
            handler: post(routes::validate_intent),
        },
        Route {
            method: "post",
            path: "/intents/{id}/simulate",
            summary: "Simulate the merge of the intent's head into its target as they are now. Nothing is recorded.",
            role: "operator",
            scope: "intents.write",
            params: &[ID],
            body: None,
            success: 200,
            handler: post(routes::simulate_intent),
        },
        Route {
            method: "post",
            path: "/queue/run",
            summary: "One queue round now over every key with actionable intents (optionally one target), with the worker's settings; limit, auto_confirm and max_retries override them for this run.",
            role: "operator",
            scope: "queue.write",
            params: &[],
            body: Some("{target?, limit?, auto_confirm?, max_retries?} — or no body"),
            success: 200,
            handler: post(routes::queue_run),
        },
        Route {
            method: "post",
            path: "/intents/{id}/checks",
            summary: "Report a check's result for a commit of the intent (what validation reads).",
            role: "operator",
            scope: "checks.write",
            params: &[ID],
            body: Some("{name, state (passed|failed|pending), head_sha, details?}"),
            success: 201,
            handler: post(routes::report_check),
        },
        Route {
            method: "get",
            path: "/intents",
            summary: "List intents in queue order (priority, age); `next_cursor` pages on.",
            role: "viewer",
            scope: "intents.read",
            params: &[
                (
                    "status",
                    In::Query,
                    "string",
                    "Comma-separated statuses (READY,VALIDATED,QUEUED,MERGED,REJECTED).",
                ),
                TENANT,
                ("target", In::Query, "string", "Target branch."),
                (
                    "limit",
                    In::Query,
                    "integer",
                    "Page size, 1-500 (default 100).",
                ),
                (
                    "cursor",
                    In::Query,
                    "string",
                    "`next_cursor` of the previous page.",
                ),
            ],
            body: None,
            success: 200,
            handler: get(routes::list_intents),
        },
        Route {
            method: "post",
            path: "/intents",
            summary: "Create a READY intent; an existing id is a conflict.",
            role: "operator",
            scope: "intents.write",
            params: &[],
            body: Some(
                "{source (required), id?, target? (default main), risk_level?, priority?, semantic?, technical?, checks_required?, dependencies?, tenant_id? (a tenant-bound key may only use its own), plan_id?, origin_type?}",
            ),
            success: 201,
            handler: post(routes::create_intent),
        },
        Route {
            method: "get",
            path: "/intents/{id}",
            summary: "One intent with its commit links.",
            role: "viewer",
            scope: "intents.read",
            params: &[ID],
            body: None,
            success: 200,
            handler: get(routes::get_intent),
        },
        Route {
            method: "get",
            path: "/intents/{id}/events",
            summary: "Events of one intent, newest first.",
            role: "viewer",
            scope: "intents.read",
            params: &[ID, LIMIT],
            body: None,
            success: 200,
            handler: get(routes::intent_events),
        },
        Route {
            method: "get",
            path: "/queue/state",
            summary: "Actionable intents and counts by status.",
            role: "viewer",
            scope: "queue.read",
            params: &[TENANT],
            body: None,
            success: 200,
            handler: get(routes::queue_state),
        },
        Route {
            method: "get",
            path: "/queue/summary",
            summary: "Counts by status and pending count.",
            role: "viewer",
            scope: "queue.read",
            params: &[TENANT],
            body: None,
            success: 200,
            handler: get(routes::queue_summary),
        },
        Route {
            method: "get",
            path: "/queue/inspect",
            summary: "Queue rows for operators.",
            role: "viewer",
            scope: "queue.read",
            params: &[
                ("status", In::Query, "string", "Comma-separated statuses."),
                (
                    "min_retries",
                    In::Query,
                    "integer",
                    "Only intents with at least this many retries.",
                ),
                (
                    "only_actionable",
                    In::Query,
                    "boolean",
                    "READY, then VALIDATED, then QUEUED.",
                ),
                LIMIT,
                TENANT,
            ],
            body: None,
            success: 200,
            handler: get(routes::queue_inspect),
        },
        Route {
            method: "post",
            path: "/queue/reset",
            summary: "Reset an intent's retries (optionally its status); clear_lock clears its queue lease. intent_id \"any\" with clear_lock clears every visible lease.",
            role: "operator",
            scope: "queue.write",
            params: &[],
            body: Some("{intent_id, set_status?, clear_lock?}"),
            success: 200,
            handler: post(routes::queue_reset),
        },
        Route {
            method: "post",
            path: "/merge/confirm",
            summary: "Record a merge done outside Converge (QUEUED or VALIDATED intents).",
            role: "operator",
            scope: "queue.write",
            params: &[],
            body: Some("{intent_id, merged_commit?}"),
            success: 200,
            handler: post(routes::merge_confirm),
        },
        Route {
            method: "get",
            path: "/events",
            summary: "Events, newest first; `next_before` pages on.",
            role: "viewer",
            scope: "events.read",
            params: &[
                (
                    "type",
                    In::Query,
                    "string",
                    "Event type, e.g. intent.validated.",
                ),
                ("intent_id", In::Query, "string", "Intent."),
                TENANT,
                ("since", In::Query, "string", "RFC 3339 time (inclusive)."),
                ("until", In::Query, "string", "RFC 3339 time (inclusive)."),
                (
                    "before",
                    In::Query,
                    "integer",
                    "Only events before this sequence number.",
                ),
                (
                    "limit",
                    In::Query,
                    "integer",
                    "Page size, 1-1000 (default 100).",
                ),
            ],
            body: None,
            success: 200,
            handler: get(routes::events),
        },
        Route {
            method: "get",
            path: "/audit/recent",
            summary: "Every event, newest first.",
            role: "operator",
            scope: "events.read",
            params: &[LIMIT, TENANT],
            body: None,
            success: 200,
            handler: get(routes::audit_recent),
        },
        Route {
            method: "get",
            path: "/auth/whoami",
            summary: "The caller's role, actor, tenant and scopes.",
            role: "viewer",
            scope: "intents.read",
            params: &[],
            body: None,
            success: 200,
            handler: get(routes::whoami),
        },
        Route {
            method: "post",
            path: "/auth/keys/rotate",
            summary: "A new key for the caller, valid at once everywhere; the old key works for the grace period.",
            role: "admin",
            scope: "admin",
            params: &[],
            body: Some("{grace_period_seconds? (0-86400, default 3600)}"),
            success: 200,
            handler: post(routes::rotate_key),
        },
        Route {
            method: "get",
            path: "/risk/recent",
            summary: "Latest risk evaluations.",
            role: "viewer",
            scope: "risk.read",
            params: &[LIMIT, TENANT],
            body: None,
            success: 200,
            handler: get(routes::risk_recent),
        },
        Route {
            method: "get",
            path: "/risk/gate/report",
            summary: "How often policy blocked, and the latest blocks.",
            role: "viewer",
            scope: "risk.read",
            params: &[TENANT],
            body: None,
            success: 200,
            handler: get(routes::risk_gate_report),
        },
        Route {
            method: "get",
            path: "/risk/policy",
            summary: "The tenant's risk gate policy.",
            role: "viewer",
            scope: "risk.read",
            params: &[TENANT],
            body: None,
            success: 200,
            handler: get(routes::get_risk_policy),
        },
        Route {
            method: "post",
            path: "/risk/policy",
            summary: "Set the tenant's risk gate policy (the `risk` section of policy.json).",
            role: "operator",
            scope: "risk.write",
            params: &[TENANT_WRITE],
            body: Some(
                "{tenant_id?, max_risk_score?, max_damage_score?, max_propagation_score?, mode? (shadow|enforce), enforce_ratio?}",
            ),
            success: 200,
            handler: post(routes::set_risk_policy),
        },
        Route {
            method: "get",
            path: "/metrics/integration",
            summary: "Decision counts from the event log.",
            role: "viewer",
            scope: "events.read",
            params: &[TENANT],
            body: None,
            success: 200,
            handler: get(routes::integration_metrics),
        },
        Route {
            method: "get",
            path: "/summary",
            summary: "The queue at a glance.",
            role: "viewer",
            scope: "intents.read",
            params: &[TENANT],
            body: None,
            success: 200,
            handler: get(routes::summary),
        },
    ]
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The OpenAPI 3.1 document of the API.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in routes() {
        let parameters: Vec<Value> = route
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
                "409": error_response("The request conflicts with the intent's state (illegal move, id taken)."),
                "413": error_response("Body larger than 1 MiB."),
                "429": error_response("The tenant's requests per minute are used up; see Retry-After."),
                "503": error_response("The database is unreachable."),
            },
        });
        if let Some(body) = route.body {
            operation["requestBody"] = json!({"required": true, "description": body, "content": {"application/json": {"schema": {"type": "object"}}}});
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
