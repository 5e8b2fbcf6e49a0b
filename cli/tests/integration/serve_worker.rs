//! `converge serve` runs all of Converge: an intent created over HTTP is validated and, with
//! auto-confirm, merged into the local repository by the embedded worker, without anyone
//! calling validate; SIGTERM then stops the process cleanly with its leases given back. On
//! SQLite and PostgreSQL.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_store::{Store, SystemClock};
use converge_testkit::git::{commit_file, git};
use converge_testkit::{ServerProcess, fresh_pg_database};
use serde_json::{Value, json};

const KEY: &str = "worker-key";

/// main and feature/docs (a clean docs change); HEAD detached so main can be merged into.
fn repository(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    commit_file(dir, "src/app/main.rs", "fn main() {}\n", "init");
    git(dir, &["checkout", "-q", "-b", "feature/docs"]);
    commit_file(dir, "docs/guide.md", "# Guide\n", "docs");
    git(dir, &["checkout", "-q", "--detach", "main"]);
}

async fn call(
    client: &reqwest::Client,
    server: &ServerProcess,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let request = match body {
        Some(body) => client.post(server.url(path)).json(&body),
        None => client.get(server.url(path)),
    };
    let response = request.header("x-api-key", KEY).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls the intent until it has `status`, for at most `within`.
async fn wait_for_status(
    client: &reqwest::Client,
    server: &ServerProcess,
    id: &str,
    status: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, intent) = call(client, server, &format!("/v1/intents/{id}"), None).await;
        if intent["status"] == status || Instant::now() > deadline {
            return intent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_created_over_http_is_validated_and_merged_by_the_embedded_worker() {
    let client = reqwest::Client::new();
    let state = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", state.path().join("s.db").display());
    let pg_url = fresh_pg_database().await;
    let backends = [
        (
            sqlite_url.clone(),
            vec![
                ("CONVERGE_DB_BACKEND", "sqlite".to_owned()),
                (
                    "CONVERGE_DB_PATH",
                    state.path().join("s.db").display().to_string(),
                ),
            ],
        ),
        (
            pg_url.clone(),
            vec![
                ("CONVERGE_DB_BACKEND", "postgres".to_owned()),
                ("CONVERGE_PG_DSN", pg_url.clone()),
            ],
        ),
    ];
    for (url, mut env) in backends {
        let repo = tempfile::tempdir().unwrap();
        repository(repo.path());
        let main_before = git(repo.path(), &["rev-parse", "main"]);
        let head = git(repo.path(), &["rev-parse", "feature/docs"]);
        env.extend([
            ("CONVERGE_REPO_PATH", repo.path().display().to_string()),
            ("CONVERGE_API_KEYS", format!("{KEY}:admin:ci")),
            ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
            ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
            // A long poll: the merge below must come from the wake-up, not a timer.
            ("CONVERGE_WORKER_POLL_INTERVAL", "600".to_owned()),
        ]);
        let mut server = ServerProcess::start(env!("CARGO_BIN_EXE_converge"), state.path(), &env);

        let (status, body) = call(
            &client,
            &server,
            "/v1/intents",
            Some(json!({"id": "docs", "source": "feature/docs", "risk_level": "low"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        // The worker judges it at once; lint has not reported, so it waits (no retry spent).
        let mut waiting = Value::Null;
        for _ in 0..100 {
            let (_, events) = call(&client, &server, "/v1/intents/docs/events", None).await;
            if events.to_string().contains("checks_pending") {
                waiting = events;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            waiting != Value::Null,
            "the worker never judged the new intent"
        );
        let intent =
            wait_for_status(&client, &server, "docs", "READY", Duration::from_secs(1)).await;
        assert_eq!(
            (&intent["status"], &intent["retries"]),
            (&serde_json::json!("READY"), &serde_json::json!(0)),
            "waiting for a check spends no retry and leaves the intent READY: {intent}"
        );

        // CI reports lint green on the head: the worker validates and merges it.
        let report = json!({"name": "lint", "state": "passed", "head_sha": head});
        let (status, body) = call(&client, &server, "/v1/intents/docs/checks", Some(report)).await;
        assert_eq!(status, 201, "{body}");
        let intent =
            wait_for_status(&client, &server, "docs", "MERGED", Duration::from_secs(20)).await;
        assert_eq!(intent["status"], "MERGED", "{intent}");
        assert_eq!(git(repo.path(), &["rev-parse", "main^1"]), main_before);
        assert_eq!(git(repo.path(), &["rev-parse", "main^2"]), head);

        let killed = Command::new("kill")
            .args(["-TERM", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let exit = server.wait().unwrap();
        assert!(exit.success(), "converge serve exited with {exit}");

        // Stopped cleanly: no lease left held.
        let store = Store::from_url(&url, Arc::new(SystemClock)).unwrap();
        let leases = store.leases().await.unwrap();
        assert!(!leases.is_empty(), "the worker took the key's lease");
        assert!(leases.iter().all(|l| l.holder.is_none()), "{leases:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_worker_process_processes_what_an_api_only_server_accepts() {
    let client = reqwest::Client::new();
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    repository(repo.path());
    let head = git(repo.path(), &["rev-parse", "feature/docs"]);
    let env = vec![
        ("CONVERGE_DB_BACKEND", "postgres".to_owned()),
        ("CONVERGE_PG_DSN", fresh_pg_database().await),
        ("CONVERGE_REPO_PATH", repo.path().display().to_string()),
        ("CONVERGE_API_KEYS", format!("{KEY}:admin:ci")),
        ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
        ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
        ("CONVERGE_WORKER_POLL_INTERVAL", "1".to_owned()),
    ];
    let server = ServerProcess::start_with(
        env!("CARGO_BIN_EXE_converge"),
        state.path(),
        &env,
        &["--no-worker"],
    );
    let mut worker = converge_testkit::KilledOnDrop(
        Command::new(env!("CARGO_BIN_EXE_converge"))
            .arg("worker")
            .current_dir(state.path())
            .env_remove("CONVERGE_DB_PATH")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start converge worker: {e}")),
    );

    let (status, body) = call(
        &client,
        &server,
        "/v1/intents",
        Some(json!({"id": "docs", "source": "feature/docs", "risk_level": "low"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let report = json!({"name": "lint", "state": "passed", "head_sha": head});
    call(&client, &server, "/v1/intents/docs/checks", Some(report)).await;
    let intent = wait_for_status(&client, &server, "docs", "MERGED", Duration::from_secs(20)).await;
    assert_eq!(intent["status"], "MERGED", "{intent}");
    assert_eq!(git(repo.path(), &["rev-parse", "main^2"]), head);

    let killed = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = worker.wait().unwrap();
    assert!(exit.success(), "converge worker exited with {exit}");
}

/// A worker whose round stopped at the batch size polls again at once instead of sleeping its
/// poll interval: three intents, ready before the worker starts, are merged one round each
/// with a batch of one and a ten-minute interval (a separate process, so no wake-up from the
/// API's commits can help it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_goes_straight_on_while_work_remains_and_sleeps_only_when_idle() {
    let client = reqwest::Client::new();
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    commit_file(repo.path(), "src/app/main.rs", "fn main() {}\n", "init");
    let mut heads = Vec::new();
    for n in 0..3 {
        git(
            repo.path(),
            &["checkout", "-q", "-b", &format!("feature/{n}"), "main"],
        );
        commit_file(repo.path(), &format!("docs/{n}.md"), "# Doc\n", "docs");
        heads.push(git(repo.path(), &["rev-parse", "HEAD"]));
    }
    git(repo.path(), &["checkout", "-q", "--detach", "main"]);
    let env = vec![
        ("CONVERGE_DB_BACKEND", "sqlite".to_owned()),
        (
            "CONVERGE_DB_PATH",
            state.path().join("s.db").display().to_string(),
        ),
        ("CONVERGE_REPO_PATH", repo.path().display().to_string()),
        ("CONVERGE_API_KEYS", format!("{KEY}:admin:ci")),
        ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
        ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
        ("CONVERGE_WORKER_BATCH_SIZE", "1".to_owned()),
        ("CONVERGE_WORKER_POLL_INTERVAL", "600".to_owned()),
    ];
    let server = ServerProcess::start_with(
        env!("CARGO_BIN_EXE_converge"),
        state.path(),
        &env,
        &["--no-worker"],
    );
    for (n, head) in heads.iter().enumerate() {
        let body = json!({"id": format!("doc-{n}"), "source": format!("feature/{n}"), "risk_level": "low"});
        let (status, body) = call(&client, &server, "/v1/intents", Some(body)).await;
        assert_eq!(status, 201, "{body}");
        let report = json!({"name": "lint", "state": "passed", "head_sha": head});
        let (status, body) = call(
            &client,
            &server,
            &format!("/v1/intents/doc-{n}/checks"),
            Some(report),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut worker = converge_testkit::KilledOnDrop(
        Command::new(env!("CARGO_BIN_EXE_converge"))
            .arg("worker")
            .current_dir(state.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start converge worker: {e}")),
    );
    for n in 0..3 {
        let intent = wait_for_status(
            &client,
            &server,
            &format!("doc-{n}"),
            "MERGED",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(intent["status"], "MERGED", "{intent}");
    }
    let merges = git(repo.path(), &["rev-list", "--count", "--merges", "main"]);
    assert_eq!(merges, "3");
    let killed = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(worker.wait().unwrap().success());
}

/// The seq of the newest event of `event_type` among `events` (newest first), if any.
fn newest_seq(events: &Value, event_type: &str) -> Option<i64> {
    events["events"]
        .as_array()?
        .iter()
        .find(|e| e["event_type"] == event_type)
        .and_then(|e| e["seq"].as_i64())
}

/// An operator requeues a REJECTED intent (`converge queue reset`): it is READY with no
/// retries spent, recorded as an operator event with the actor, and the worker judges it again
/// though nothing else changed; once CI reports green, it merges like any other. Only READY is
/// allowed from REJECTED (nothing skips validation), and a MERGED intent stays merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_requeues_a_rejected_intent_and_the_worker_merges_it() {
    let client = reqwest::Client::new();
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    repository(repo.path());
    let head = git(repo.path(), &["rev-parse", "feature/docs"]);
    let env = [
        (
            "CONVERGE_DB_PATH",
            state.path().join("s.db").display().to_string(),
        ),
        ("CONVERGE_REPO_PATH", repo.path().display().to_string()),
        ("CONVERGE_API_KEYS", format!("{KEY}:admin:ops-alice")),
        ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
        ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
        ("CONVERGE_WORKER_MAX_RETRIES", "1".to_owned()),
    ];
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_converge"), state.path(), &env);
    let (status, body) = call(
        &client,
        &server,
        "/v1/intents",
        Some(json!({"id": "docs", "source": "feature/docs", "risk_level": "low"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // CI reports lint red: the one attempt allowed is spent, and the pipeline rejects it.
    let red = json!({"name": "lint", "state": "failed", "head_sha": head});
    let (status, body) = call(&client, &server, "/v1/intents/docs/checks", Some(red)).await;
    assert_eq!(status, 201, "{body}");
    let intent = wait_for_status(
        &client,
        &server,
        "docs",
        "REJECTED",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(intent["status"], "REJECTED", "{intent}");

    let reset = |body: Value| call(&client, &server, "/v1/queue/reset", Some(body));
    // Straight back into the queue past validation: refused, and nothing changes.
    let (status, body) = reset(json!({"intent_id": "docs", "set_status": "VALIDATED"})).await;
    assert_eq!(status, 409, "{body}");
    let (_, intent) = call(&client, &server, "/v1/intents/docs", None).await;
    assert_eq!(intent["status"], "REJECTED", "{intent}");

    let (status, body) = reset(json!({"intent_id": "docs"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["status"], &body["retries"]),
        (&json!("READY"), &json!(0)),
        "{body}"
    );
    let (_, events) = call(&client, &server, "/v1/intents/docs/events", None).await;
    let requeues: Vec<&Value> = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["event_type"] == "queue.reset" && e["payload"]["requeued"] == true)
        .collect();
    assert_eq!(requeues.len(), 1, "{events}");
    let requeue = requeues[0];
    assert_eq!(
        requeue["payload"]["previous_status"], "REJECTED",
        "{requeue}"
    );
    assert_eq!(requeue["payload"]["new_status"], "READY", "{requeue}");
    assert_eq!(requeue["evidence"]["actor"], "ops-alice", "{requeue}");

    // Nothing else changed, yet the worker judges it again (lint is still red: rejected again).
    let reset_seq = requeue["seq"].as_i64().unwrap_or(i64::MAX);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut judged_again = false;
    while !judged_again && Instant::now() < deadline {
        let (_, events) = call(&client, &server, "/v1/intents/docs/events", None).await;
        judged_again = newest_seq(&events, "intent.blocked").is_some_and(|seq| seq > reset_seq);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(judged_again, "the requeued intent was never judged again");

    // CI goes green; the operator requeues it once more, and it merges.
    let green = json!({"name": "lint", "state": "passed", "head_sha": head});
    let (status, body) = call(&client, &server, "/v1/intents/docs/checks", Some(green)).await;
    assert_eq!(status, 201, "{body}");
    wait_for_status(
        &client,
        &server,
        "docs",
        "REJECTED",
        Duration::from_secs(20),
    )
    .await;
    let (status, body) = reset(json!({"intent_id": "docs", "set_status": "READY"})).await;
    assert_eq!(status, 200, "{body}");
    let intent = wait_for_status(&client, &server, "docs", "MERGED", Duration::from_secs(20)).await;
    assert_eq!(intent["status"], "MERGED", "{intent}");
    assert_eq!(git(repo.path(), &["rev-parse", "main^2"]), head);

    let (status, body) = reset(json!({"intent_id": "docs", "set_status": "READY"})).await;
    assert_eq!(status, 409, "a merged intent stays merged: {body}");
}

/// A failure of the environment does not use up an intent's retries: with auto-confirm in a
/// normal clone (the target checked out, which Converge will not move), the merge is refused,
/// the queue key is paused with the reason (queue inspect, doctor) and the intent stays
/// QUEUED with no retry spent, even with a retry bound of 1. Once the work tree lets go of
/// the target, the next try after the backoff merges it and the pause ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_failure_pauses_the_queue_without_spending_retries_and_resumes_when_fixed() {
    let client = reqwest::Client::new();
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    repository(repo.path());
    git(repo.path(), &["checkout", "-q", "main"]);
    let head = git(repo.path(), &["rev-parse", "feature/docs"]);
    let db = state.path().join("s.db").display().to_string();
    let env = [
        ("CONVERGE_DB_PATH", db.clone()),
        ("CONVERGE_REPO_PATH", repo.path().display().to_string()),
        ("CONVERGE_API_KEYS", format!("{KEY}:admin:ci")),
        ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
        ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
        ("CONVERGE_WORKER_MAX_RETRIES", "1".to_owned()),
        ("CONVERGE_WORKER_POLL_INTERVAL", "1".to_owned()),
    ];
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_converge"), state.path(), &env);
    let (status, body) = call(
        &client,
        &server,
        "/v1/intents",
        Some(json!({"id": "docs", "source": "feature/docs", "risk_level": "low"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let report = json!({"name": "lint", "state": "passed", "head_sha": head});
    let (status, body) = call(&client, &server, "/v1/intents/docs/checks", Some(report)).await;
    assert_eq!(status, 201, "{body}");

    let mut inspection = Value::Null;
    for _ in 0..200 {
        let (_, answer) = call(&client, &server, "/v1/queue/inspect", None).await;
        if answer["paused_keys"]
            .as_array()
            .is_some_and(|k| !k.is_empty())
        {
            inspection = answer;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paused = &inspection["paused_keys"][0];
    if paused.is_null() {
        let (_, events) = call(&client, &server, "/v1/intents/docs/events", None).await;
        panic!("the queue was never paused: {events}");
    }
    assert_eq!(paused["target"], "main", "{inspection}");
    assert!(
        paused["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("checked out"),
        "{inspection}"
    );
    // The next try, after the backoff, fails again: still no retry spent, and the bound of 1
    // is not hit.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failures = 0;
    while failures < 2 && Instant::now() < deadline {
        let (_, answer) = call(&client, &server, "/v1/queue/inspect", None).await;
        failures = answer["paused_keys"][0]["failures"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        failures, 2,
        "the paused queue was not tried again after its backoff"
    );
    let (_, intent) = call(&client, &server, "/v1/intents/docs", None).await;
    assert_eq!(
        (&intent["status"], &intent["retries"]),
        (&json!("QUEUED"), &json!(0)),
        "{intent}"
    );
    let (_, events) = call(&client, &server, "/v1/intents/docs/events", None).await;
    assert!(events.to_string().contains("queue.paused"), "{events}");

    let doctor = crate::operator_cli::converge(
        &["--local", "--json", "doctor"],
        &[
            ("CONVERGE_DB_PATH", db.clone()),
            ("CONVERGE_AUTH_REQUIRED", "0".to_owned()),
        ],
    );
    let report = doctor.json();
    let check = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == "paused_queues").cloned())
        .unwrap_or_default();
    assert_eq!(check["status"], "warn", "{report}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("checked out"),
        "{check}"
    );

    // The operator lets go of main: the next try merges, and the queue is no longer paused.
    git(repo.path(), &["checkout", "-q", "--detach"]);
    let intent = wait_for_status(&client, &server, "docs", "MERGED", Duration::from_secs(30)).await;
    assert_eq!(intent["status"], "MERGED", "{intent}");
    assert_eq!(git(repo.path(), &["rev-parse", "main^2"]), head);
    let (_, inspection) = call(&client, &server, "/v1/queue/inspect", None).await;
    assert_eq!(inspection["paused_keys"], json!([]), "{inspection}");
}
