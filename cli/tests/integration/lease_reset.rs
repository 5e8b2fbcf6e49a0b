//! The runbook's emergency lease reset (`queue reset --clear-lock`) with leases really held:
//! the caller's stuck lease is cleared and its holder fenced (its next write refused), while
//! another tenant's live lease and its holder are left alone. On SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use converge_core::queue::QueueKey;
use converge_store::{Commit, Store, StoreError, SystemClock};
use converge_testkit::ServerProcess;
use serde_json::{Value, json};

const ACME: &str = "reset-acme-operator";
const ADMIN: &str = "reset-admin";

fn key(tenant: &str) -> QueueKey {
    QueueKey {
        tenant: tenant.into(),
        repo: String::new(),
        target: "main".into(),
    }
}

/// The store the server runs on, opened beside it (what another worker process would see).
fn store_of(database: &[(&'static str, String)]) -> Store {
    let setting = |name: &str| {
        database
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let url = match setting("CONVERGE_DB_BACKEND").as_str() {
        "postgres" => setting("CONVERGE_PG_DSN"),
        _ => format!("sqlite://{}", setting("CONVERGE_DB_PATH")),
    };
    Store::from_url(&url, Arc::new(SystemClock)).unwrap()
}

async fn reset(server: &ServerProcess, api_key: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url("/v1/queue/reset"))
        .header("x-api-key", api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn holder(store: &Store, key: &QueueKey) -> Option<String> {
    store
        .inspect_lease(key)
        .await
        .unwrap()
        .and_then(|l| l.holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_reset_clears_and_fences_the_callers_stuck_holder_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "leases.db").await {
        let mut env = database.clone();
        env.push((
            "CONVERGE_API_KEYS",
            format!("{ACME}:operator:ops-a:acme,{ADMIN}:admin:root"),
        ));
        env.push(("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()));
        let server = ServerProcess::start_with(
            env!("CARGO_BIN_EXE_converge"),
            dir.path(),
            &env,
            &["--no-worker"],
        );
        let store = store_of(&database);
        let ttl = Duration::from_secs(600);
        // A worker that died mid-round left acme's lease held for ten minutes; globex's worker
        // is alive and working.
        let stuck = store
            .acquire_lease(&key("acme"), "worker-killed-mid-round", ttl)
            .await
            .unwrap()
            .expect("acme's lease is free");
        let live = store
            .acquire_lease(&key("globex"), "globex-worker", ttl)
            .await
            .unwrap()
            .expect("globex's lease is free");

        let (status, answer) = reset(
            &server,
            ACME,
            json!({"intent_id": "any", "clear_lock": true}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["cleared_leases"], json!([key("acme").to_string()]));
        assert_eq!(holder(&store, &key("acme")).await, None);
        assert_eq!(
            holder(&store, &key("globex")).await.as_deref(),
            Some("globex-worker"),
            "another tenant's lease was touched"
        );

        // The dead worker's next write (were it only slow) is refused; the live one's is not.
        let fenced = store
            .commit(&Commit {
                guard: Some(stuck),
                ..Commit::default()
            })
            .await;
        assert!(
            matches!(fenced, Err(StoreError::StaleLease { .. })),
            "the cleared holder could still write: {fenced:?}"
        );
        store
            .commit(&Commit {
                guard: Some(live.clone()),
                ..Commit::default()
            })
            .await
            .expect("the live holder keeps writing");

        // Nothing left to clear for acme: a second reset clears nothing, and globex's stays.
        let (status, again) = reset(
            &server,
            ACME,
            json!({"intent_id": "any", "clear_lock": true}),
        )
        .await;
        assert_eq!((status, &again["cleared_leases"]), (200, &json!([])));
        assert!(holder(&store, &key("globex")).await.is_some());

        // An admin of no tenant clears globex's by name of one of its intents.
        let created = reqwest::Client::new()
            .post(server.url("/v1/intents"))
            .header("x-api-key", ADMIN)
            .json(&json!({"id": "globex-1", "source": "feature", "target": "main", "tenant_id": "globex"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 201);
        let (status, cleared) = reset(
            &server,
            ADMIN,
            json!({"intent_id": "globex-1", "clear_lock": true}),
        )
        .await;
        assert_eq!(status, 200, "{cleared}");
        assert_eq!(
            cleared["cleared_leases"],
            json!([key("globex").to_string()])
        );
        let fenced = store
            .commit(&Commit {
                guard: Some(live),
                ..Commit::default()
            })
            .await;
        assert!(matches!(fenced, Err(StoreError::StaleLease { .. })));
    }
}

/// `converge doctor` names a lease whose holder let it expire, with the reset that frees it,
/// and passes once the sweep has cleared it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_stale_lease_and_the_command_that_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("doctor.db");
    let store =
        Store::from_url(&format!("sqlite://{}", db.display()), Arc::new(SystemClock)).unwrap();
    store.migrate().await.unwrap();
    store
        .acquire_lease(&key("acme"), "worker-gone", Duration::from_secs(1))
        .await
        .unwrap()
        .expect("the lease is free");
    let doctor = || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
            .args(["--json", "doctor"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CONVERGE_DB_PATH", db.display().to_string())
            .env("CONVERGE_API_URL", "http://127.0.0.1:9")
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        report["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|c| c["check"] == "leases").cloned())
            .unwrap_or_else(|| panic!("no leases check: {report}"))
    };
    let live = doctor();
    assert_eq!(live["status"], "pass", "a live lease is not stale: {live}");

    // Once its second is up (waited for, not slept through).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stale = loop {
        let check = doctor();
        if check["status"] != "pass" || std::time::Instant::now() > deadline {
            break check;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stale["status"], "warn", "{stale}");
    assert!(
        stale["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&key("acme").to_string()),
        "{stale}"
    );
    assert!(
        stale["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("queue reset --intent-id any --clear-lock"),
        "{stale}"
    );

    assert_eq!(store.clear_expired_leases().await.unwrap(), 1);
    assert_eq!(doctor()["status"], "pass");
}
