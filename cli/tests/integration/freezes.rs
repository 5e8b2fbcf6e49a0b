//! Freezes over HTTP and through the CLI against a live `converge serve`, on both backends:
//! set (a span, weekly, a pause), listed, lifted once, resumed by scope; roles and tenants hold
//! (another tenant's freeze is 404 to lift and absent from lists); what makes no sense is a
//! 400 naming the field; every change is an event. And with the embedded worker on a real git
//! repository: a paused target merges nothing, and merges once resumed.

use std::time::{Duration, Instant};

use converge_testkit::ServerProcess;
use converge_testkit::git::{commit_file, git};
use serde_json::{Value, json};

use crate::operator_cli::converge;

use crate::audit_export::{ACME, ACME_VIEWER, GLOBEX, ROOT};

/// A request with `key`: its status and its body (JSON, or the text as a string).
pub(crate) async fn call(
    client: &reqwest::Client,
    server: &ServerProcess,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = match method {
        "POST" => client.post(server.url(path)),
        _ => client.get(server.url(path)),
    };
    request = request.header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A POST that owns what it needs, for writers spawned on their own tasks: the status and the
/// JSON answer (null when there is none).
pub(crate) async fn post_owned(
    client: reqwest::Client,
    url: String,
    key: &'static str,
    body: Value,
) -> (u16, Value) {
    let response = client
        .post(url)
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json::<Value>().await.unwrap_or(Value::Null),
    )
}

fn ids(list: &Value) -> Vec<String> {
    list["freezes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezes_are_set_listed_lifted_and_resumed_with_tenants_and_roles_on_both_backends() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "freezes.db").await {
        let server = crate::audit_export::tenants_server(dir.path(), &database);
        let post = |key: &'static str, path: &'static str, body: Value| {
            let client = client.clone();
            let server = &server;
            async move { call(&client, server, key, "POST", path, Some(body)).await }
        };

        // A span, a weekly window and a pause; a tenant-bound key freezes its own tenant.
        let (status, span) = post(
            ACME,
            "/v1/queue/freezes",
            json!({"reason": "deploy", "repo": "acme/app", "target": "main",
                   "window": {"kind": "span", "start": "2026-01-01T00:00:00Z", "minutes": 5_256_000}}),
        )
        .await;
        assert_eq!(status, 201, "{span}");
        assert_eq!(span["tenant_id"], "acme");
        assert_eq!(span["created_by"], "alice");
        assert_eq!(span["holding"], true, "{span}");
        assert_eq!(span["until"], "2035-12-30T00:00:00Z", "ten years on");
        let (status, weekly) = post(
            ACME,
            "/v1/queue/freezes",
            json!({"reason": "weekend", "window": {"kind": "weekly", "from": "Fri 16:00", "to": "Mon 08:00"}}),
        )
        .await;
        assert_eq!(status, 201, "{weekly}");
        assert_eq!(
            weekly["window"],
            json!({"kind": "weekly", "from": "Fri 16:00", "to": "Mon 08:00"})
        );
        assert!(weekly["until"].is_string(), "{weekly}");
        let (status, pause) = post(
            ACME,
            "/v1/queue/freezes",
            json!({"reason": "incident 42", "target": "release"}),
        )
        .await;
        assert_eq!(status, 201, "{pause}");
        assert_eq!(pause["window"], json!({"kind": "until_lifted"}));
        let (status, body) = post(
            ACME,
            "/v1/queue/freezes",
            json!({"reason": "theirs", "tenant_id": "globex"}),
        )
        .await;
        assert_eq!(status, 403, "{body}");

        // What makes no sense names its field.
        for (body, field) in [
            (json!({"reason": "  "}), "reason"),
            (
                json!({"reason": format!("\n{}", "0".repeat(500))}),
                "reason",
            ),
            (
                json!({"reason": "x", "window": {"kind": "weekly", "from": "Fry 16:00", "to": "Mon 08:00"}}),
                "window.from",
            ),
            (
                json!({"reason": "x", "window": {"kind": "weekly", "from": "Fri 16:00", "to": "Mon 08:00", "minutes": 5}}),
                "minutes",
            ),
            (
                json!({"reason": "x", "window": {"kind": "span", "start": "yesterday"}}),
                "window.start",
            ),
            (
                json!({"reason": "x", "window": {"kind": "span", "minutes": 0}}),
                "window.minutes",
            ),
            (json!({"reason": "x", "window": {"kind": "daily"}}), "daily"),
            (json!({"reason": "x", "until": "never"}), "until"),
        ] {
            let (status, answer) = post(ACME, "/v1/queue/freezes", body.clone()).await;
            assert_eq!(status, 400, "{body}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(field), "{body}: {message}");
        }
        // Setting freezes is for operators.
        let (status, _) = post(ACME_VIEWER, "/v1/queue/freezes", json!({"reason": "x"})).await;
        assert_eq!(status, 403);

        // Lists: acme's three for acme (a viewer too), none of them for globex, all for root.
        let (status, listed) = call(
            &client,
            &server,
            ACME_VIEWER,
            "GET",
            "/v1/queue/freezes",
            None,
        )
        .await;
        assert_eq!(status, 200, "{listed}");
        let mut acme_ids = ids(&listed);
        acme_ids.sort();
        let mut expected = vec![
            span["id"].as_str().unwrap().to_owned(),
            weekly["id"].as_str().unwrap().to_owned(),
            pause["id"].as_str().unwrap().to_owned(),
        ];
        expected.sort();
        assert_eq!(acme_ids, expected);
        let (_, theirs) = call(
            &client,
            &server,
            GLOBEX,
            "GET",
            "/v1/queue/freezes?tenant_id=acme",
            None,
        )
        .await;
        assert_eq!(ids(&theirs), Vec::<String>::new());
        let (_, all) = call(
            &client,
            &server,
            ROOT,
            "GET",
            "/v1/queue/freezes?tenant_id=acme",
            None,
        )
        .await;
        assert_eq!(ids(&all).len(), 3);

        // Lifting: another tenant's is 404, a viewer is 403, once is 200, twice is 409.
        let span_id = span["id"].as_str().unwrap();
        let lift = format!("/v1/queue/freezes/{span_id}/lift");
        let (status, _) = call(&client, &server, GLOBEX, "POST", &lift, None).await;
        assert_eq!(status, 404);
        let (status, _) = call(&client, &server, ACME_VIEWER, "POST", &lift, None).await;
        assert_eq!(status, 403);
        let (status, lifted) = call(&client, &server, ACME, "POST", &lift, None).await;
        assert_eq!(status, 200, "{lifted}");
        assert_eq!(
            (lifted["lifted_by"].as_str(), lifted["holding"].as_bool()),
            (Some("alice"), Some(false))
        );
        let (status, _) = call(&client, &server, ACME, "POST", &lift, None).await;
        assert_eq!(status, 409);
        let (status, _) = call(
            &client,
            &server,
            ACME,
            "POST",
            "/v1/queue/freezes/frz-nothing/lift",
            None,
        )
        .await;
        assert_eq!(status, 404);
        let (_, live) = call(&client, &server, ACME, "GET", "/v1/queue/freezes", None).await;
        assert_eq!(ids(&live).len(), 2);
        let (_, ended) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/queue/freezes?include_ended=true",
            None,
        )
        .await;
        assert_eq!(ids(&ended).len(), 3);

        // Resume lifts the freezes of exactly its scope: the release pause, not the weekly one.
        let (status, resumed) = post(ACME, "/v1/queue/resume", json!({"target": "release"})).await;
        assert_eq!(status, 200, "{resumed}");
        assert_eq!(
            ids(&resumed),
            vec![pause["id"].as_str().unwrap().to_owned()]
        );
        let (_, again) = post(ACME, "/v1/queue/resume", json!({"target": "release"})).await;
        assert_eq!(ids(&again), Vec::<String>::new());
        let (_, live) = call(&client, &server, ACME, "GET", "/v1/queue/freezes", None).await;
        assert_eq!(ids(&live), vec![weekly["id"].as_str().unwrap().to_owned()]);

        // Every change is an event of the tenant.
        let (_, events) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/events?type=queue.frozen",
            None,
        )
        .await;
        assert_eq!(
            events["events"].as_array().map(Vec::len),
            Some(3),
            "{events}"
        );
        let (_, events) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/events?type=queue.unfrozen",
            None,
        )
        .await;
        assert_eq!(
            events["events"].as_array().map(Vec::len),
            Some(2),
            "{events}"
        );

        // The CLI: pause, list, resume.
        let cli_env = [
            ("CONVERGE_API_URL", server.url("")),
            ("CONVERGE_API_KEY", ACME.to_owned()),
        ];
        let run = converge(
            &[
                "queue",
                "pause",
                "--reason",
                "cli pause",
                "--target",
                "main",
                "--json",
            ],
            &cli_env,
        );
        assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
        assert_eq!(run.json()["reason"], "cli pause");
        let run = converge(&["queue", "freezes"], &cli_env);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stdout.contains("cli pause") && run.stdout.contains("weekend"),
            "{}",
            run.stdout
        );
        let run = converge(&["queue", "resume", "--target", "main", "--json"], &cli_env);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.json()["freezes"].as_array().map(Vec::len), Some(1));
        let run = converge(
            &["queue", "freeze", "--reason", "x", "--weekly", "Fri 16:00"],
            &cli_env,
        );
        assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
        let run = converge(
            &[
                "queue",
                "freeze",
                "--reason",
                "late",
                "--weekly",
                "Sat 22:00-Sun 06:00",
                "--json",
            ],
            &cli_env,
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let id = run.json()["id"].as_str().unwrap().to_owned();
        let run = converge(&["queue", "unfreeze", "--id", &id, "--json"], &cli_env);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.json()["lifted_by"], "alice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_target_merges_nothing_until_it_is_resumed() {
    let client = reqwest::Client::new();
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    commit_file(repo.path(), "src/app/main.rs", "fn main() {}\n", "init");
    git(repo.path(), &["checkout", "-q", "-b", "feature/docs"]);
    commit_file(repo.path(), "docs/guide.md", "# Guide\n", "docs");
    git(repo.path(), &["checkout", "-q", "--detach", "main"]);
    let head = git(repo.path(), &["rev-parse", "feature/docs"]);
    let state = tempfile::tempdir().unwrap();
    let env = [
        (
            "CONVERGE_DB_PATH",
            state.path().join("s.db").display().to_string(),
        ),
        ("CONVERGE_REPO_PATH", repo.path().display().to_string()),
        ("CONVERGE_API_KEYS", format!("{ROOT}:admin:root")),
        ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
        ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
        ("CONVERGE_WORKER_POLL_INTERVAL", "1".to_owned()),
    ];
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_converge"), state.path(), &env);
    let main_before = git(repo.path(), &["rev-parse", "main"]);
    let (status, body) = call(
        &client,
        &server,
        ROOT,
        "POST",
        "/v1/queue/freezes",
        Some(json!({"reason": "release freeze", "target": "main"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = call(
        &client,
        &server,
        ROOT,
        "POST",
        "/v1/intents",
        Some(json!({"id": "docs", "source": "feature/docs", "risk_level": "low"})),
    )
    .await;
    assert_eq!(status, 201);
    let report = json!({"name": "lint", "state": "passed", "head_sha": head});
    let (status, body) = call(
        &client,
        &server,
        ROOT,
        "POST",
        "/v1/intents/docs/checks",
        Some(report),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // The worker validates and queues it, and holds it there.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, intent) = call(&client, &server, ROOT, "GET", "/v1/intents/docs", None).await;
        if intent["status"] == "QUEUED" {
            break;
        }
        assert!(Instant::now() < deadline, "never queued: {intent}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, intent) = call(&client, &server, ROOT, "GET", "/v1/intents/docs", None).await;
    assert_eq!(
        intent["status"], "QUEUED",
        "merged through a freeze: {intent}"
    );
    assert_eq!(git(repo.path(), &["rev-parse", "main"]), main_before);

    // Resumed: merged promptly.
    let (status, resumed) = call(
        &client,
        &server,
        ROOT,
        "POST",
        "/v1/queue/resume",
        Some(json!({"target": "main"})),
    )
    .await;
    assert_eq!((status, ids(&resumed).len()), (200, 1), "{resumed}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, intent) = call(&client, &server, ROOT, "GET", "/v1/intents/docs", None).await;
        if intent["status"] == "MERGED" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never merged after the resume: {intent}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(git(repo.path(), &["rev-parse", "main"]), main_before);
}
