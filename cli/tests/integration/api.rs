//! The HTTP API, black box: `converge serve` processes on SQLite and PostgreSQL, driven over
//! real HTTP like any client would.

use std::process::Command;
use std::time::Duration;

use converge_testkit::{ServerProcess, fresh_pg_database};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "key-admin";

/// API keys of the test servers: an untenanted admin, and every role for two tenants and for
/// no tenant.
fn keys() -> String {
    let mut entries = vec![format!("{ADMIN}:admin:root")];
    for role in ["viewer", "operator", "admin"] {
        entries.push(format!("key-{role}-acme:{role}:{role}-a:acme"));
        entries.push(format!("key-{role}-globex:{role}:{role}-g:globex"));
        entries.push(format!("key-{role}-none:{role}:{role}-n"));
    }
    entries.join(",")
}

fn start_server(database: &Database, extra_env: &[(&str, &str)]) -> ServerProcess {
    let dir = std::env::temp_dir();
    let mut env = vec![
        ("CONVERGE_API_KEYS", keys()),
        ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
    ];
    match database {
        Database::Sqlite(path) => {
            env.push(("CONVERGE_DB_BACKEND", "sqlite".to_owned()));
            env.push(("CONVERGE_DB_PATH", path.clone()));
        }
        Database::Postgres(url) => {
            env.push(("CONVERGE_DB_BACKEND", "postgres".to_owned()));
            env.push(("CONVERGE_PG_DSN", url.clone()));
        }
    }
    env.extend(extra_env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    ServerProcess::start(env!("CARGO_BIN_EXE_converge"), &dir, &env)
}

enum Database {
    Sqlite(String),
    Postgres(String),
}

async fn databases() -> Vec<(Database, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Database::Sqlite(dir.path().join("state.db").display().to_string());
    let pg_dir = tempfile::tempdir().unwrap();
    vec![
        (sqlite, dir),
        (Database::Postgres(fresh_pg_database().await), pg_dir),
    ]
}

/// `/metrics` as text.
async fn metrics_text(client: &reqwest::Client, server: &ServerProcess) -> String {
    client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap_or_default()
}

async fn call(
    client: &reqwest::Client,
    server: &ServerProcess,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, server.url(path));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

use converge_http::encode_component as encode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_move_through_the_api_on_both_backends() {
    let client = reqwest::Client::new();
    for (database, _dir) in databases().await {
        let server = start_server(&database, &[]);
        let admin = Some(ADMIN);
        for n in 0..5 {
            let body = json!({"id": format!("acme/app:pr-{n}"), "source": format!("feature/{n}"), "priority": 5 - n, "tenant_id": "acme", "technical": {"scope_hint": ["ü"]}});
            let (status, created) = call(
                &client,
                &server,
                Method::POST,
                "/v1/intents",
                admin,
                Some(body),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
        }
        let (status, again) = call(
            &client,
            &server,
            Method::POST,
            "/v1/intents",
            admin,
            Some(json!({"id": "acme/app:pr-0", "source": "x"})),
        )
        .await;
        assert_eq!(
            (status, again["error"]["code"].clone()),
            (StatusCode::CONFLICT, json!("conflict"))
        );

        // Cursor pagination in queue order (priority ascending).
        let mut seen = Vec::new();
        let mut path = "/v1/intents?limit=2".to_owned();
        loop {
            let (status, page) = call(&client, &server, Method::GET, &path, admin, None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seen.extend(
                page["intents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| i["id"].as_str().unwrap_or("").to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/v1/intents?limit=2&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(
            seen,
            (0..5)
                .rev()
                .map(|n| format!("acme/app:pr-{n}"))
                .collect::<Vec<_>>()
        );

        let id = "acme/app:pr-3";
        let (status, intent) = call(
            &client,
            &server,
            Method::GET,
            &format!("/api/intents/{}", encode(id)),
            admin,
            None,
        )
        .await;
        assert_eq!(
            (status, intent["id"].as_str()),
            (StatusCode::OK, Some(id)),
            "{intent}"
        );
        assert_eq!(intent["commit_links"], json!([]));
        assert_eq!(intent["technical"]["scope_hint"], json!(["ü"]));

        let (status, merged) = call(
            &client,
            &server,
            Method::POST,
            "/v1/merge/confirm",
            admin,
            Some(json!({"intent_id": id})),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "a READY intent cannot be confirmed merged: {merged}"
        );
        let reset = json!({"intent_id": id, "set_status": "VALIDATED"});
        let (status, body) = call(
            &client,
            &server,
            Method::POST,
            "/v1/queue/reset",
            admin,
            Some(reset),
        )
        .await;
        assert_eq!(
            (status, body["status"].clone(), body["retries"].clone()),
            (StatusCode::OK, json!("VALIDATED"), json!(0))
        );
        let (status, merged) = call(
            &client,
            &server,
            Method::POST,
            "/v1/merge/confirm",
            admin,
            Some(json!({"intent_id": id, "merged_commit": "abc123"})),
        )
        .await;
        assert_eq!(
            (status, merged["status"].clone()),
            (StatusCode::OK, json!("MERGED"))
        );
        let (status, _) = call(
            &client,
            &server,
            Method::POST,
            "/v1/queue/reset",
            admin,
            Some(json!({"intent_id": id, "set_status": "READY"})),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "a merged intent cannot go back"
        );

        let (_, events) = call(
            &client,
            &server,
            Method::GET,
            &format!("/v1/intents/{}/events", encode(id)),
            admin,
            None,
        )
        .await;
        let types: Vec<&str> = events["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["event_type"].as_str())
            .collect();
        // Intake's verdict is recorded with the creation.
        assert_eq!(
            types,
            [
                "intent.merged",
                "queue.reset",
                "intake.accepted",
                "intent.created"
            ]
        );

        let (_, state) = call(
            &client,
            &server,
            Method::GET,
            "/v1/queue/state",
            admin,
            None,
        )
        .await;
        assert_eq!(
            (state["total"].clone(), state["by_status"]["MERGED"].clone()),
            (json!(5), json!(1))
        );
        assert_eq!(state["pending"].as_array().map(Vec::len), Some(4));
        let (_, summary) = call(
            &client,
            &server,
            Method::GET,
            "/v1/queue/summary",
            admin,
            None,
        )
        .await;
        assert_eq!(
            (
                summary["total"].clone(),
                summary["pending_count"].clone(),
                summary["by_status"]["MERGED"].clone()
            ),
            (json!(5), json!(4), json!(1))
        );
        let (_, inspect) = call(
            &client,
            &server,
            Method::GET,
            "/v1/queue/inspect?only_actionable=true",
            admin,
            None,
        )
        .await;
        assert_eq!(inspect["intents"].as_array().map(Vec::len), Some(4));
        let (_, events) = call(
            &client,
            &server,
            Method::GET,
            "/v1/events?type=intent.created&limit=2",
            admin,
            None,
        )
        .await;
        assert_eq!(events["events"].as_array().map(Vec::len), Some(2));
        assert!(events["next_before"].is_i64());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_no_tenant_sets_and_reads_the_policy_of_intents_without_one() {
    let client = reqwest::Client::new();
    for (database, _dir) in databases().await {
        let server = start_server(&database, &[]);
        let policy = |mode: &str| json!({"mode": mode, "max_risk_score": 70.0});
        let (status, set) = call(
            &client,
            &server,
            Method::POST,
            "/v1/risk/policy",
            Some(ADMIN),
            Some(policy("enforce")),
        )
        .await;
        assert_eq!(
            (status, &set["tenant_id"]),
            (StatusCode::OK, &json!("")),
            "{set}"
        );
        let (status, read) = call(
            &client,
            &server,
            Method::GET,
            "/v1/risk/policy",
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(read["policy"], policy("enforce"));
        // A second version; the history lists both, newest first.
        let (status, _) = call(
            &client,
            &server,
            Method::POST,
            "/v1/risk/policy",
            Some(ADMIN),
            Some(policy("shadow")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, history) = call(
            &client,
            &server,
            Method::GET,
            "/v1/risk/policy/history",
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{history}");
        let versions: Vec<(i64, String)> = history["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["payload"]["version"].as_i64().unwrap_or(0),
                    e["payload"]["policy"]["mode"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect();
        assert_eq!(
            versions,
            [(2, "shadow".to_owned()), (1, "enforce".to_owned())]
        );
        // A named tenant's policy is its own.
        let (status, _) = call(
            &client,
            &server,
            Method::GET,
            "/v1/risk/policy?tenant_id=acme",
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_uses_the_envelope() {
    let client = reqwest::Client::new();
    let (database, _dir) = databases().await.remove(0);
    let server = start_server(&database, &[]);
    let admin = Some(ADMIN);
    /// (method, path, key, body, expected status, expected error code)
    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        Option<Value>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            "/v1/intents",
            None,
            None,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            Method::GET,
            "/v1/intents",
            Some("not-a-key"),
            None,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            Method::GET,
            "/v1/no-such-route",
            admin,
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::DELETE,
            "/v1/intents",
            admin,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/v1/intents",
            admin,
            Some(json!({"target": "main"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/intents",
            admin,
            Some(json!({"source": "a", "risk_level": "huge"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/intents",
            admin,
            Some(json!({"source": "a", "colour": "red"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/intents?limit=501",
            admin,
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/intents?status=LIMBO",
            admin,
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/intents?cursor=garbage",
            admin,
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/events?since=yesterday",
            admin,
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/intents/nope",
            admin,
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/v1/risk/policy",
            admin,
            Some(json!({"tenant_id": "acme", "mode": "loud"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/risk/policy",
            admin,
            Some(json!({"tenant_id": "acme", "enforce_ratio": 1.5})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/auth/keys/rotate",
            admin,
            Some(json!({"grace_period_seconds": 100000})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (method, path, key, body, status, code) in cases {
        let (got, value) = call(&client, &server, method.clone(), path, key, body).await;
        assert_eq!(
            (got, value["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {value}"
        );
        assert!(
            value["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, value) = call(
        &client,
        &server,
        Method::POST,
        "/v1/intents",
        admin,
        Some(json!({"source": "a", "risk_level": "huge"})),
    )
    .await;
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("risk_level"),
        "{status}: {value}"
    );

    let malformed = client
        .post(server.url("/v1/intents"))
        .header("x-api-key", ADMIN)
        .header("content-type", "application/json")
        .body("{\"source\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let value: Value = malformed.json().await.unwrap_or_default();
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("JSON"),
        "{value}"
    );

    let huge = json!({"source": "a", "semantic": {"blob": "x".repeat((1 << 20) + 1024)}});
    let (status, value) = call(
        &client,
        &server,
        Method::POST,
        "/v1/intents",
        admin,
        Some(huge),
    )
    .await;
    assert_eq!(
        (status, value["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
}

/// What a key may get from a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 2xx, or 409 for a write that is authorised but conflicts with the state.
    Allowed,
    Forbidden,
    Hidden,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_matrix() {
    let client = reqwest::Client::new();
    for (database, _dir) in databases().await {
        let server = start_server(&database, &[]);
        for tenant in ["acme", "globex"] {
            let body = json!({"id": format!("{tenant}-intent"), "source": "feature/x", "tenant_id": tenant});
            let (status, _) = call(
                &client,
                &server,
                Method::POST,
                "/v1/intents",
                Some(ADMIN),
                Some(body),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
        }
        let acme_object = "acme-intent";
        // (method, path, body, minimum role, how the route treats another tenant)
        #[derive(Clone, Copy)]
        enum Scope {
            List,
            Object,
            TenantWrite,
            /// Affects every tenant: only untenanted keys.
            Global,
        }
        let routes: Vec<(Method, String, Option<Value>, &str, Scope)> = vec![
            (
                Method::GET,
                "/v1/intents".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                format!("/v1/intents/{acme_object}"),
                None,
                "viewer",
                Scope::Object,
            ),
            (
                Method::GET,
                format!("/v1/intents/{acme_object}/events"),
                None,
                "viewer",
                Scope::Object,
            ),
            (
                Method::POST,
                "/v1/intents".into(),
                Some(json!({"source": "f", "tenant_id": "acme"})),
                "operator",
                Scope::TenantWrite,
            ),
            (
                Method::GET,
                "/v1/queue/state".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/queue/summary".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/queue/inspect".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::POST,
                "/v1/queue/reset".into(),
                Some(json!({"intent_id": acme_object})),
                "operator",
                Scope::Object,
            ),
            (
                Method::POST,
                "/v1/merge/confirm".into(),
                Some(json!({"intent_id": acme_object})),
                "operator",
                Scope::Object,
            ),
            (Method::GET, "/v1/flags".into(), None, "viewer", Scope::List),
            (
                Method::POST,
                "/v1/flags/risk_auto_classify".into(),
                Some(json!({"enabled": true})),
                "admin",
                Scope::Global,
            ),
            (
                Method::GET,
                format!("/v1/risk/review?intent_id={acme_object}"),
                None,
                "viewer",
                Scope::Object,
            ),
            (
                Method::GET,
                format!("/v1/impact/edges?intent_id={acme_object}"),
                None,
                "viewer",
                Scope::Object,
            ),
            (
                Method::GET,
                format!("/v1/diagnostics/recent?intent_id={acme_object}"),
                None,
                "viewer",
                Scope::Object,
            ),
            (
                Method::GET,
                "/v1/reviews".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/reviews/summary".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::POST,
                "/v1/reviews".into(),
                Some(json!({"intent_id": acme_object})),
                "operator",
                Scope::Object,
            ),
            (
                Method::GET,
                "/v1/queue/freezes".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::POST,
                "/v1/queue/freezes".into(),
                Some(json!({"reason": "matrix", "tenant_id": "acme"})),
                "operator",
                Scope::TenantWrite,
            ),
            (
                Method::POST,
                "/v1/queue/resume".into(),
                Some(json!({"tenant_id": "acme"})),
                "operator",
                Scope::TenantWrite,
            ),
            (
                Method::GET,
                "/v1/audit/verify".into(),
                None,
                "operator",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/export/decisions".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::POST,
                format!("/v1/intents/{acme_object}/validate"),
                None,
                "operator",
                Scope::Object,
            ),
            (
                Method::POST,
                format!("/v1/intents/{acme_object}/command"),
                Some(json!({"command": "status"})),
                "operator",
                Scope::Object,
            ),
            (
                Method::POST,
                format!("/v1/intents/{acme_object}/checks"),
                Some(json!({"name": "lint", "state": "passed", "head_sha": "abcdef1"})),
                "operator",
                Scope::Object,
            ),
            (
                Method::GET,
                "/v1/events".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/audit/recent".into(),
                None,
                "operator",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/auth/whoami".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/risk/recent".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/risk/gate/report".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::POST,
                "/v1/risk/policy".into(),
                Some(json!({"tenant_id": "acme", "mode": "shadow"})),
                "operator",
                Scope::TenantWrite,
            ),
            (
                Method::GET,
                "/v1/metrics/integration".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/summary".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/health/repo/now".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/health/repo/trend".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/health/entropy/trend".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/health/predict".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/verification/debt".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/verification/debt/trend".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/compliance/report".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/compliance/alerts".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/predictions".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/dashboard".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/dashboard/alerts".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/compliance/thresholds".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::POST,
                "/v1/compliance/thresholds".into(),
                Some(json!({"tenant_id": "acme", "max_debt_score": 50})),
                "operator",
                Scope::TenantWrite,
            ),
            (
                Method::GET,
                "/v1/compliance/thresholds/history".into(),
                None,
                "operator",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/agent/policy".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::POST,
                "/v1/agent/policy".into(),
                Some(json!({"tenant_id": "acme", "agent_id": "matrix-agent"})),
                "operator",
                Scope::TenantWrite,
            ),
            (
                Method::POST,
                "/v1/agent/authorize".into(),
                Some(
                    json!({"agent_id": "matrix-agent", "action": "analyze", "intent_id": acme_object}),
                ),
                "admin",
                Scope::Object,
            ),
            (
                Method::POST,
                "/v1/intents/evaluate".into(),
                Some(json!({"source": "draft", "tenant_id": "acme"})),
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/risk/shadow/recent".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/intake/status".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::GET,
                "/v1/intake/mode".into(),
                None,
                "viewer",
                Scope::List,
            ),
            (
                Method::POST,
                "/v1/intake/mode".into(),
                Some(json!({"tenant_id": "acme", "mode": "open", "reason": "matrix"})),
                "operator",
                Scope::TenantWrite,
            ),
            (
                Method::GET,
                format!("/v1/health/change?intent_id={acme_object}"),
                None,
                "viewer",
                Scope::Object,
            ),
        ];
        let rank = |role: &str| {
            ["viewer", "operator", "admin"]
                .iter()
                .position(|r| *r == role)
                .unwrap_or(0)
        };
        let mut failures = Vec::new();
        for (method, path, body, min_role, scope) in &routes {
            for role in ["viewer", "operator", "admin"] {
                for tenant in ["acme", "globex", "none"] {
                    let expected = if rank(role) < rank(min_role) {
                        Outcome::Forbidden
                    } else {
                        match (scope, tenant) {
                            (Scope::Object, "globex") => Outcome::Hidden,
                            (Scope::TenantWrite, "globex") => Outcome::Forbidden,
                            (Scope::Global, "acme" | "globex") => Outcome::Forbidden,
                            _ => Outcome::Allowed,
                        }
                    };
                    let key = format!("key-{role}-{tenant}");
                    let (status, value) = call(
                        &client,
                        &server,
                        method.clone(),
                        path,
                        Some(&key),
                        body.clone(),
                    )
                    .await;
                    let got = match status {
                        // Authorised: done, or refused by the state (409) or by what the test
                        // server lacks (422: no repository to validate against).
                        s if s.is_success()
                            || s == StatusCode::CONFLICT
                            || s == StatusCode::UNPROCESSABLE_ENTITY =>
                        {
                            Outcome::Allowed
                        }
                        StatusCode::FORBIDDEN => Outcome::Forbidden,
                        StatusCode::NOT_FOUND => Outcome::Hidden,
                        _ => {
                            failures.push(format!(
                                "{method} {path} as {key}: unexpected {status} {value}"
                            ));
                            continue;
                        }
                    };
                    if got != expected {
                        failures.push(format!(
                            "{method} {path} as {key}: expected {expected:?}, got {status} {value}"
                        ));
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} cells wrong:\n{}",
            failures.len(),
            failures.join("\n")
        );

        // Lists show a tenant-bound key nothing of other tenants, whatever it asks for.
        let (_, list) = call(
            &client,
            &server,
            Method::GET,
            "/v1/intents?tenant_id=acme",
            Some("key-admin-globex"),
            None,
        )
        .await;
        let tenants: Vec<&str> = list["intents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["tenant_id"].as_str())
            .collect();
        assert!(
            !tenants.is_empty() && tenants.iter().all(|t| *t == "globex"),
            "{tenants:?}"
        );
        let (status, events) = call(
            &client,
            &server,
            Method::GET,
            "/v1/events?tenant_id=acme",
            Some("key-viewer-globex"),
            None,
        )
        .await;
        let events = events["events"].as_array().cloned().unwrap_or_default();
        assert_eq!(status, StatusCode::OK);
        assert!(
            !events.is_empty() && events.iter().all(|e| e["tenant_id"] == "globex"),
            "{events:?}"
        );
        let (_, queue) = call(
            &client,
            &server,
            Method::GET,
            "/v1/queue/state?tenant_id=acme",
            Some("key-viewer-globex"),
            None,
        )
        .await;
        assert!(queue["pending"].as_array().is_some_and(|p| !p.is_empty() && p.iter().all(|i| i["intent_id"] != "acme-intent")), "{queue}");

        // Taking another tenant's intent id does not touch it.
        let grab = json!({"id": "globex-intent", "source": "evil", "tenant_id": "acme"});
        let (status, _) = call(
            &client,
            &server,
            Method::POST,
            "/v1/intents",
            Some("key-operator-acme"),
            Some(grab),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (_, intent) = call(
            &client,
            &server,
            Method::GET,
            "/v1/intents/globex-intent",
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(
            (intent["tenant_id"].clone(), intent["source"].clone()),
            (json!("globex"), json!("feature/x"))
        );
        let (_, all) = call(
            &client,
            &server,
            Method::GET,
            "/v1/intents?limit=500",
            Some("key-viewer-none"),
            None,
        )
        .await;
        let mut tenants: Vec<&str> = all["intents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["tenant_id"].as_str())
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        assert_eq!(tenants, ["acme", "globex"]);
    }
}

/// Waits until at least `needed` seconds remain in the current minute (rate-limit windows are
/// calendar minutes), so a test's requests fall into one window.
async fn wait_for_fresh_minute(needed: u32) {
    use chrono::Timelike;
    let second = chrono::Utc::now().second();
    if second + needed >= 60 {
        tokio::time::sleep(Duration::from_secs(u64::from(61 - second))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_rate_limits_and_rotations() {
    let client = reqwest::Client::new();
    let database = Database::Postgres(fresh_pg_database().await);
    let limits = [
        ("CONVERGE_RATE_LIMIT_ENABLED", "1"),
        ("CONVERGE_RATE_LIMIT_RPM", "5"),
    ];
    // b names tenants in /metrics; a, by default, does not.
    let labelled = [
        ("CONVERGE_RATE_LIMIT_ENABLED", "1"),
        ("CONVERGE_RATE_LIMIT_RPM", "5"),
        ("CONVERGE_METRICS_TENANT_LABELS", "1"),
    ];
    let (a, b) = (
        start_server(&database, &limits),
        start_server(&database, &labelled),
    );

    wait_for_fresh_minute(15).await;
    let mut successes = 0;
    let mut last_refusal = None;
    for n in 0..8 {
        let server = if n % 2 == 0 { &a } else { &b };
        let response = client
            .get(server.url("/v1/intents"))
            .header("x-api-key", "key-viewer-acme")
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            successes += 1;
            assert!(response.headers().contains_key("ratelimit-remaining"));
        } else {
            last_refusal = Some(response);
        }
    }
    assert_eq!(
        successes, 5,
        "the tenant's budget is shared by both servers"
    );
    let refusal = last_refusal.unwrap_or_else(|| panic!("no request was refused"));
    assert_eq!(refusal.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refusal
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        refusal
            .headers()
            .get("ratelimit-limit")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let other = client
        .get(b.url("/v1/intents"))
        .header("x-api-key", "key-viewer-globex")
        .send()
        .await
        .unwrap();
    assert!(
        other.status().is_success(),
        "another tenant is not throttled"
    );
    let metrics = metrics_text(&client, &b).await;
    assert!(
        metrics.contains("converge_rate_limit_rejections_total{tenant=\"acme\"}"),
        "{metrics}"
    );
    let unlabelled = metrics_text(&client, &a).await;
    assert!(
        unlabelled.contains("converge_rate_limit_rejections_total ")
            && !unlabelled.contains("acme")
            && !unlabelled.contains("globex"),
        "no tenant is named without CONVERGE_METRICS_TENANT_LABELS: {unlabelled}"
    );

    // A rotation through one server is honoured by the other, grace expiry included.
    let (status, rotated) = call(
        &client,
        &a,
        Method::POST,
        "/v1/auth/keys/rotate",
        Some("key-admin-none"),
        Some(json!({"grace_period_seconds": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_key = rotated["new_key"].as_str().unwrap_or_default().to_owned();
    assert!(new_key.starts_with("cvg_") && new_key.len() > 40);
    let (status, who) = call(
        &client,
        &b,
        Method::GET,
        "/v1/auth/whoami",
        Some(&new_key),
        None,
    )
    .await;
    assert_eq!(
        (status, who["actor"].clone(), who["tenant"].clone()),
        (StatusCode::OK, json!("admin-n"), Value::Null)
    );
    let (status, _) = call(
        &client,
        &b,
        Method::GET,
        "/v1/auth/whoami",
        Some("key-admin-none"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the old key works during the grace period"
    );
    let extend = json!({"grace_period_seconds": 86400});
    let (status, _) = call(
        &client,
        &b,
        Method::POST,
        "/v1/auth/keys/rotate",
        Some("key-admin-none"),
        Some(extend),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a key being retired cannot rotate itself a new lease of life"
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, _) = call(
        &client,
        &b,
        Method::GET,
        "/v1/auth/whoami",
        Some("key-admin-none"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old key stops after the grace period"
    );
    // A restart that re-reads CONVERGE_API_KEYS does not bring the rotated key back.
    drop(a);
    let c = start_server(&database, &limits);
    let (status, _) = call(
        &client,
        &c,
        Method::GET,
        "/v1/auth/whoami",
        Some("key-admin-none"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &client,
        &c,
        Method::GET,
        "/v1/auth/whoami",
        Some(&new_key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_sigterm_stops_cleanly() {
    let client = reqwest::Client::new();
    let url = fresh_pg_database().await;
    let mut server = start_server(&Database::Postgres(url.clone()), &[]);
    let (status, ready) = call(&client, &server, Method::GET, "/health/ready", None, None).await;
    assert_eq!(
        (status, ready["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );

    let name = url.rsplit('/').next().unwrap_or_default().to_owned();
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&converge_testkit::pg_admin_url())
            .await
            .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let (status, ready) = call(&client, &server, Method::GET, "/health/ready", None, None).await;
    assert_eq!(
        (status, ready["status"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("unavailable")),
        "{ready}"
    );
    assert_eq!(ready["error"]["code"], "unavailable");
    let (status, body) = call(
        &client,
        &server,
        Method::GET,
        "/v1/intents",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("unavailable")),
        "{body}"
    );
    assert!(
        !ready.to_string().contains(&name),
        "no internals in the body: {ready}"
    );
    let (status, _) = call(&client, &server, Method::GET, "/health/live", None, None).await;
    assert_eq!(status, StatusCode::OK);

    let pid = server.pid().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let exit = server.wait().unwrap();
    assert!(exit.success(), "converge serve exited with {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_token_guards_metrics() {
    let client = reqwest::Client::new();
    let (database, _dir) = databases().await.remove(0);
    let server = start_server(&database, &[("CONVERGE_METRICS_TOKEN", "scrape-secret")]);
    let denied = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let wrong = client
        .get(server.url("/metrics"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let allowed = client
        .get(server.url("/metrics"))
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert!(
        allowed
            .text()
            .await
            .unwrap_or_default()
            .contains("converge_intents{status=\"READY\"}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_are_listed_and_set_for_every_instance() {
    let client = reqwest::Client::new();
    let (database, _dir) = databases().await.remove(0);
    let (a, b) = (start_server(&database, &[]), start_server(&database, &[]));
    let (status, flags) = call(
        &client,
        &a,
        Method::GET,
        "/v1/flags",
        Some("key-viewer-none"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(flags["flags"][0]["name"], "risk_auto_classify");
    assert_eq!(
        (
            flags["flags"][0]["enabled"].clone(),
            flags["flags"][0]["source"].clone()
        ),
        (json!(true), json!("default"))
    );
    let (status, _) = call(
        &client,
        &a,
        Method::POST,
        "/v1/flags/risk_auto_classify",
        Some(ADMIN),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, flags) = call(
        &client,
        &b,
        Method::GET,
        "/v1/flags",
        Some("key-viewer-none"),
        None,
    )
    .await;
    assert_eq!(
        (
            flags["flags"][0]["enabled"].clone(),
            flags["flags"][0]["source"].clone()
        ),
        (json!(false), json!("operator"))
    );
    assert_eq!(flags["flags"][0]["updated_by"], "root");
    let (status, body) = call(
        &client,
        &a,
        Method::POST,
        "/v1/flags/no_such_flag",
        Some(ADMIN),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let (status, _) = call(
        &client,
        &a,
        Method::POST,
        "/v1/flags/risk_auto_classify",
        Some(ADMIN),
        Some(json!({"enabled": "yes"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
