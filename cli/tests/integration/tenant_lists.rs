//! Tenant isolation of every list and aggregate route, driven by the route table (through the
//! OpenAPI document generated from it, so a route added later cannot skip this test). A key
//! bound to one tenant never sees another tenant's ids, even when it asks for that tenant
//! (`?tenant_id=`), and the other tenant's writes never move what it sees. On both backends.

use std::collections::BTreeSet;

use converge_testkit::ServerProcess;
use serde_json::{Value, json};

const ROOT: &str = "root-key";
const ACME: &str = "acme-operator-key";
const GLOBEX: &str = "globex-admin-key";
/// What only acme's writes contain: an intent id and a branch name.
const ACME_MARKERS: [&str; 2] = ["acme-secret-7f3a", "acme-only-branch"];

/// GET routes that read one object and so need its id in the query; the isolation matrix of
/// `api.rs` covers them. Any other route with a required parameter fails this test.
const NEEDS_AN_OBJECT: [&str; 4] = [
    "/v1/health/change",
    "/v1/risk/review",
    "/v1/impact/edges",
    "/v1/diagnostics/recent",
];
/// Routes with no tenant data at all.
const NOT_TENANT_DATA: [&str; 1] = ["/v1/openapi.json"];

async fn get(
    client: &reqwest::Client,
    server: &ServerProcess,
    key: &str,
    path: &str,
) -> (u16, String) {
    let response = client
        .get(server.url(path))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

async fn post(
    client: &reqwest::Client,
    server: &ServerProcess,
    key: &str,
    path: &str,
    body: Value,
) {
    let response = client
        .post(server.url(path))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!(
        (200..300).contains(&status),
        "{path}: {status} {}",
        response.text().await.unwrap_or_default()
    );
}

/// The list and aggregate routes of the API: every GET under `/v1` without a path parameter
/// that needs a key, from the OpenAPI document.
fn list_routes(document: &Value) -> Vec<String> {
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        let Some(get) = item.get("get") else { continue };
        let open = get["security"].as_array().is_some_and(Vec::is_empty);
        if !path.starts_with("/v1/")
            || path.contains('{')
            || open
            || NOT_TENANT_DATA.contains(&path.as_str())
        {
            continue;
        }
        let required: Vec<&str> = get["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["required"] == true)
            .filter_map(|p| p["name"].as_str())
            .collect();
        if !required.is_empty() {
            assert!(
                NEEDS_AN_OBJECT.contains(&path.as_str()),
                "{path} needs {required:?}: add its isolation case here or to api.rs's matrix"
            );
            continue;
        }
        routes.push(path.clone());
    }
    routes
}

/// An answer with what changes by itself between two reads (times, durations, trace ids)
/// blanked, so that two reads of unchanged data compare equal.
fn steady(text: &str) -> Value {
    fn blank(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    let volatile = [
                        "timestamp",
                        "generated_at",
                        "now",
                        "trace_id",
                        "uptime_seconds",
                    ]
                    .contains(&key.as_str())
                        || key.ends_with("_at");
                    if volatile {
                        *item = Value::Null;
                    } else {
                        blank(item);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(blank),
            _ => {}
        }
    }
    let mut value: Value =
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
    blank(&mut value);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_aggregate_routes_show_a_tenant_nothing_of_another() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "tenants.db").await {
        let mut env = database.clone();
        env.push((
            "CONVERGE_API_KEYS",
            format!("{ROOT}:admin:root,{ACME}:operator:a:acme,{GLOBEX}:admin:g:globex"),
        ));
        env.push(("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()));
        let server = ServerProcess::start_with(
            env!("CARGO_BIN_EXE_converge"),
            dir.path(),
            &env,
            &["--no-worker"],
        );
        post(
            &client,
            &server,
            GLOBEX,
            "/v1/intents",
            json!({"id": "globex-visible", "source": "globex-branch"}),
        )
        .await;

        let (_, document) = get(&client, &server, ROOT, "/v1/openapi.json").await;
        let routes = list_routes(&serde_json::from_str(&document).unwrap());
        for expected in [
            "/v1/intents",
            "/v1/events",
            "/v1/queue/state",
            "/v1/queue/summary",
            "/v1/queue/inspect",
            "/v1/audit/recent",
            "/v1/risk/recent",
            "/v1/risk/gate/report",
            "/v1/metrics/integration",
            "/v1/summary",
        ] {
            assert!(
                routes.iter().any(|r| r == expected),
                "{expected} missing from {routes:?}"
            );
        }
        // Each asks for acme's data outright: a handler that trusted the query would show it.
        let as_globex = |route: &str| format!("{route}?tenant_id=acme");
        // 200, or 404 for what globex does not have (its own risk policy, say).
        let mut before = Vec::new();
        for route in &routes {
            let (status, body) = get(&client, &server, GLOBEX, &as_globex(route)).await;
            assert!(status == 200 || status == 404, "{route}: {status} {body}");
            before.push((status, body));
        }

        // acme writes: an intent, a check, a reset, a risk policy.
        post(
            &client,
            &server,
            ACME,
            "/v1/intents",
            json!({"id": ACME_MARKERS[0], "source": ACME_MARKERS[1]}),
        )
        .await;
        post(
            &client,
            &server,
            ACME,
            &format!("/v1/intents/{}/checks", ACME_MARKERS[0]),
            json!({"name": "lint", "state": "passed", "head_sha": "abcdef1234"}),
        )
        .await;
        post(
            &client,
            &server,
            ACME,
            "/v1/queue/reset",
            json!({"intent_id": ACME_MARKERS[0]}),
        )
        .await;
        post(
            &client,
            &server,
            ACME,
            "/v1/risk/policy",
            json!({"max_risk_score": 50}),
        )
        .await;

        let mut failures = Vec::new();
        for (route, (status_before, before)) in routes.iter().zip(&before) {
            let (status, after) = get(&client, &server, GLOBEX, &as_globex(route)).await;
            if status != *status_before {
                failures.push(format!(
                    "{route}: {status_before} before acme wrote, {status} after: {after}"
                ));
                continue;
            }
            if let Some(marker) = ACME_MARKERS.iter().find(|m| after.contains(*m)) {
                failures.push(format!("{route} shows acme's {marker} to globex: {after}"));
            }
            if steady(before) != steady(&after) {
                failures.push(format!(
                    "{route} moved for globex when acme wrote:\n  before {before}\n  after  {after}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));

        // Not vacuous: an untenanted key does see acme's writes where intents and events are
        // listed or counted.
        let mut seen_by_root = BTreeSet::new();
        for route in &routes {
            let (_, body) = get(&client, &server, ROOT, route).await;
            if body.contains(ACME_MARKERS[0]) {
                seen_by_root.insert(route.as_str());
            }
        }
        for route in [
            "/v1/intents",
            "/v1/events",
            "/v1/queue/state",
            "/v1/queue/inspect",
            "/v1/audit/recent",
        ] {
            assert!(
                seen_by_root.contains(route),
                "{route} does not show acme's intent even to root: {seen_by_root:?}"
            );
        }
    }
}
