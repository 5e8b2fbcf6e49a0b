//! `converge backfill`, `converge migrate`, `converge projections rebuild` and the runbook's
//! Python wrapper, through the real binaries against a SQLite file and a PostgreSQL database:
//! a round trip SQLite → PostgreSQL → SQLite is identical by checksum, a rerun copies nothing
//! twice and brings changed rows up to date, `--verify` catches a row only the target has,
//! `--dry-run` writes nothing.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use converge_core::pipeline::Clock;
use converge_core::queue::QueueKey;
use converge_core::{Event, EventType, Intent};
use converge_store::backfill::{TableSummary, summaries};
use converge_store::{ApiKeyRecord, Commit, CommitLink, FreezeWrite, OutboxMessage, Store};
use converge_testkit::{ManualClock, fresh_pg_database};
use serde_json::{Value, json};

fn converge(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_converge"));
    command
        .arg("--json")
        .args(args)
        .env_remove("CONVERGE_DB_BACKEND")
        .env_remove("CONVERGE_PG_DSN");
    for (k, v) in envs {
        command.env(k, v);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run converge: {e}"))
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "converge failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Puts at least one row in every table.
async fn seed(store: &Store, clock: &ManualClock) {
    store.migrate().await.unwrap();
    for n in 0..4 {
        let id = format!("acme/app:pr-{n}");
        let mut intent = Intent::new(&id, format!("feature/{n}"), "main", clock.now());
        intent
            .technical
            .insert("scope_hint".into(), json!(["payments", "résumé"]));
        intent.semantic.insert(
            "objective".into(),
            json!({"b": 1.5, "a": [1, 2, {"z": null, "y": "ü"}]}),
        );
        let event = |event_type: EventType, suffix: &str, payload: Value| Event {
            id: format!("ev-{n}-{suffix}"),
            trace_id: format!("trace-{n}"),
            timestamp: clock.now(),
            event_type,
            intent_id: Some(id.clone()),
            agent_id: None,
            tenant_id: Some("acme".into()),
            payload,
            evidence: json!({"score": 0.30000000000000004}),
        };
        let commit = Commit {
            events: vec![
                event(
                    EventType::IntentCreated,
                    "created",
                    serde_json::to_value(&intent).unwrap_or_default(),
                ),
                event(
                    EventType::IntentValidated,
                    "validated",
                    json!({"risk_level": "low"}),
                ),
            ],
            commit_links: vec![CommitLink {
                intent_id: id.clone(),
                repo: "acme/app".into(),
                sha: format!("{n:040}"),
                role: "head".into(),
                observed_at: clock.now(),
            }],
            outbox: vec![OutboxMessage {
                topic: "queue".into(),
                payload: json!({"intent": id}),
            }],
            guard: None,
            expect: Vec::new(),
            delivery: None,
            freezes: Vec::new(),
            reviews: Vec::new(),
            thresholds: Vec::new(),
            intake: Vec::new(),
            agent_policies: Vec::new(),
            risk_policies: Vec::new(),
        };
        store.commit(&commit).await.unwrap();
        clock.advance(chrono::Duration::milliseconds(1_250));
    }
    let key = QueueKey {
        tenant: "acme".into(),
        repo: "acme/app".into(),
        target: "main".into(),
    };
    store
        .acquire_lease(&key, "worker-1", Duration::from_secs(60))
        .await
        .unwrap();
    store
        .record_delivery("d-1", "pull_request", "abc")
        .await
        .unwrap();
    store
        .put_api_key(&ApiKeyRecord {
            key_hash: "ab".repeat(32),
            role: "admin".into(),
            actor: "ops".into(),
            tenant_id: None,
            scopes: vec!["*".into()],
            created_at: clock.now(),
            expires_at: None,
            origin: Some("secret:arn:aws:secretsmanager:eu-west-1:1:secret:keys".into()),
        })
        .await
        .unwrap();
    store.hit_rate_limit("acme", clock.now(), 1).await.unwrap();
    store
        .set_flag("risk_auto_classify", false, "ops")
        .await
        .unwrap();
    store
        .put_risk_policy("acme", &json!({"mode": "enforce"}))
        .await
        .unwrap();
    store
        .put_compliance_thresholds("", &json!({"min_mergeable_rate": 0.8}))
        .await
        .unwrap();
    store.probe_write().await.unwrap();
    store
        .create_session(
            "session-sha",
            "key-sha",
            clock.now() + chrono::Duration::hours(12),
        )
        .await
        .unwrap();
    let day = chrono::Duration::hours(24);
    store
        .claim_idempotency_key("acme\u{1f}ops", "retry-1", "feed", day, day)
        .await
        .unwrap();
    store
        .complete_idempotency_key("acme\u{1f}ops", "retry-1", 201, r#"{"ok":true}"#)
        .await
        .unwrap();
}

/// What retention leaves (an audit anchor: the old events of tenant `archived` pruned), a
/// freeze and a review task. Apart from `seed`: a pruned log refuses a projection rebuild.
async fn seed_retention_and_freeze(store: &Store, clock: &ManualClock) {
    let old = Event {
        id: "ev-archived-0".into(),
        trace_id: "trace-archived".into(),
        timestamp: clock.now(),
        event_type: EventType::WebhookReceived,
        intent_id: None,
        agent_id: None,
        tenant_id: Some("archived".into()),
        payload: json!({"delivery_id": "d-0"}),
        evidence: json!({}),
    };
    let freeze = converge_core::freeze::Freeze {
        id: "frz-release".into(),
        tenant_id: Some("acme".into()),
        repo: Some("acme/app".into()),
        target: None,
        reason: "release week".into(),
        window: converge_core::freeze::Window::Weekly {
            from: "Fri 16:00".parse().unwrap(),
            to: "Mon 08:00".parse().unwrap(),
        },
        created_by: "ops".into(),
        created_at: clock.now(),
        lifted_at: None,
        lifted_by: None,
    };
    let reviewed = Intent::new("acme/app:pr-0", "feature/0", "main", clock.now());
    let review = converge_core::review::ReviewTask::request(
        "rev-seed".into(),
        &reviewed,
        converge_core::review::Trigger::Manual,
        Some("jörg".into()),
        None,
        clock.now(),
    );
    store
        .commit(&Commit {
            events: vec![old],
            freezes: vec![FreezeWrite::Put(freeze)],
            reviews: vec![converge_store::ReviewWrite {
                task: review,
                expected_version: None,
            }],
            thresholds: vec![converge_store::DocumentWrite {
                tenant: "núcleo-labs".into(),
                data: serde_json::json!({"max_debt_score": 40.5}),
                expected_version: None,
            }],
            intake: vec![converge_store::IntakeWrite {
                tenant: "núcleo-labs".into(),
                set: Some(converge_store::IntakeOverride {
                    mode: "throttle".into(),
                    reason: "release week".into(),
                    set_by: "jörg".into(),
                    set_at: clock.now(),
                }),
            }],
            agent_policies: vec![converge_store::AgentPolicyWrite {
                agent_id: "codex-7".into(),
                tenant: "núcleo-labs".into(),
                policy: serde_json::json!({"agent_id": "codex-7", "atl": 2}),
                expected_version: None,
            }],
            ..Commit::default()
        })
        .await
        .unwrap();
    clock.advance(chrono::Duration::days(2));
    let key = converge_core::audit::SigningKey::new(vec![7u8; 32]).unwrap();
    let pruned = store
        .prune_chain("archived", clock.now(), &key, 10)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
}

/// Every table's summary but the tenants' versions, which a copy and a rebuild move on purpose
/// (so that no server keeps serving a page it read before).
async fn summaries_of(url: &str) -> Vec<TableSummary> {
    let store = Store::from_url(url, Arc::new(ManualClock::new())).unwrap();
    let mut tables = summaries(&store).await.unwrap();
    tables.retain(|t| t.table != "tenant_versions");
    tables
}

fn copied(report: &Value) -> Vec<u64> {
    report["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["copied"].as_u64().unwrap_or(u64::MAX))
        .collect()
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_through_postgres_is_identical_and_reruns_copy_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let original = sqlite_url(&dir.path().join("original.db"));
    let returned = dir.path().join("returned.db");
    let pg = fresh_pg_database().await;
    let clock = ManualClock::new();
    let store = Store::from_url(&original, Arc::new(clock.clone())).unwrap();
    seed(&store, &clock).await;
    seed_retention_and_freeze(&store, &clock).await;
    let source = summaries_of(&original).await;
    assert!(
        source.iter().all(|t| t.rows > 0),
        "every table seeded: {source:?}"
    );

    // A dry run counts and writes nothing.
    let dry = json_of(&converge(
        &["backfill", "--from", &original, "--to", &pg, "--dry-run"],
        &[],
    ));
    assert_eq!(dry["dry_run"], true);
    assert!(copied(&dry).iter().all(|&n| n == 0));
    let untouched = Store::from_url(&pg, Arc::new(ManualClock::new())).unwrap();
    assert!(
        !untouched.is_migrated().await.unwrap_or(true),
        "a dry run created the target's schema"
    );

    let forward = json_of(&converge(
        &["backfill", "--from", &original, "--to", &pg, "--verify"],
        &[],
    ));
    for summary in &source {
        assert_eq!(
            table(&forward, &summary.table)["copied"],
            json!(summary.rows),
            "{forward}"
        );
    }
    assert!(
        forward["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|t| t["verified"] == true || t["verify_skipped"].is_string()),
        "{forward}"
    );

    let again = json_of(&converge(
        &["backfill", "--from", &original, "--to", &pg, "--verify"],
        &[],
    ));
    assert!(
        copied(&again).iter().all(|&n| n == 0),
        "a rerun copied rows again: {again}"
    );
    assert!(
        again["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|t| t["updated"] == 0),
        "a rerun rewrote rows that had not changed: {again}"
    );

    // Back to SQLite through the runbook's wrapper.
    let wrapper = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/backfill_sqlite_to_pg.py"))
        .args(["--reverse", "--source", &pg, "--target"])
        .arg(&returned)
        .arg("--verify")
        .env("CONVERGE_BIN", env!("CARGO_BIN_EXE_converge"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    json_of(&wrapper);
    assert_eq!(
        summaries_of(&sqlite_url(&returned)).await,
        source,
        "SQLite → PostgreSQL → SQLite changed content"
    );

    // New rows appended after the copy get fresh sequence numbers in PostgreSQL.
    let pg_store = Store::from_url(&pg, Arc::new(clock.clone())).unwrap();
    let more = Commit {
        outbox: vec![OutboxMessage {
            topic: "queue".into(),
            payload: json!({}),
        }],
        ..Commit::default()
    };
    pg_store
        .commit(&more)
        .await
        .unwrap_or_else(|e| panic!("appending after a backfill failed: {e}"));
}

fn table<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .and_then(|tables| tables.iter().find(|t| t["table"] == name))
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

/// The rollback's rerun: an intent that moved on in PostgreSQL after the first copy back to
/// SQLite (MERGED there, QUEUED in the copy) is brought up to date by the next run, which
/// reports it as updated, not copied; `--verify` then passes, and says which tables it does
/// not compare because they change by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_brings_rows_changed_since_the_last_copy_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let original = sqlite_url(&dir.path().join("original.db"));
    let rolled_back = sqlite_url(&dir.path().join("rolled-back.db"));
    let pg = fresh_pg_database().await;
    let clock = ManualClock::new();
    seed(
        &Store::from_url(&original, Arc::new(clock.clone())).unwrap(),
        &clock,
    )
    .await;
    json_of(&converge(
        &["backfill", "--from", &original, "--to", &pg],
        &[],
    ));
    json_of(&converge(
        &["backfill", "--from", &pg, "--to", &rolled_back],
        &[],
    ));

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE intents SET status = 'MERGED', version = version + 1 WHERE id = 'acme/app:pr-2'",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let rerun = json_of(&converge(
        &["backfill", "--from", &pg, "--to", &rolled_back, "--verify"],
        &[],
    ));
    let intents = table(&rerun, "intents");
    assert_eq!(
        (&intents["copied"], &intents["updated"]),
        (&json!(0), &json!(1)),
        "{rerun}"
    );
    assert_eq!(intents["verified"], true, "{rerun}");
    let rows = Store::from_url(&rolled_back, Arc::new(ManualClock::new())).unwrap();
    let merged = rows.intent("acme/app:pr-2").await.unwrap().unwrap();
    assert_eq!(merged.status, converge_core::Status::Merged);
    for ephemeral in ["rate_limit_counters", "store_probe"] {
        let skipped = table(&rerun, ephemeral);
        assert_eq!(skipped["verified"], Value::Null, "{skipped}");
        assert!(skipped["verify_skipped"].is_string(), "{skipped}");
    }
    assert!(
        rerun["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["verify_skipped"].is_null())
            .all(|t| t["verified"] == true
                && t["copied"] == 0
                && (t["updated"] == 0 || t["table"] == "intents")),
        "only the changed row was written: {rerun}"
    );
    // Nothing changed since: a third run writes nothing.
    let third = json_of(&converge(
        &["backfill", "--from", &pg, "--to", &rolled_back],
        &[],
    ));
    assert!(
        third["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|t| t["copied"] == 0 && t["updated"] == 0),
        "{third}"
    );
}

/// `--verify` catches a target that holds what the source does not (a row deleted from the
/// source is not deleted by a copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_a_row_only_the_target_has() {
    let dir = tempfile::tempdir().unwrap();
    let original = sqlite_url(&dir.path().join("original.db"));
    let pg = fresh_pg_database().await;
    let clock = ManualClock::new();
    seed(
        &Store::from_url(&original, Arc::new(clock.clone())).unwrap(),
        &clock,
    )
    .await;
    json_of(&converge(
        &["backfill", "--from", &original, "--to", &pg],
        &[],
    ));

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO feature_flags (name, enabled, updated_at, updated_by) VALUES ('only_here', true, now(), 'x')",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let output = converge(
        &["backfill", "--from", &original, "--to", &pg, "--verify"],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("verification failed for: feature_flags"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    assert_eq!(table(&report, "feature_flags")["verified"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_rebuild_use_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/state.db");
    let path_str = path.display().to_string();
    let env = [
        ("CONVERGE_DB_BACKEND", "sqlite"),
        ("CONVERGE_DB_PATH", path_str.as_str()),
    ];
    assert_eq!(
        json_of(&converge(&["migrate"], &env)),
        json!({"backend": "sqlite", "migrated": true})
    );

    let clock = ManualClock::new();
    seed(
        &Store::from_url(&sqlite_url(&path), Arc::new(clock.clone())).unwrap(),
        &clock,
    )
    .await;
    let before = summaries_of(&sqlite_url(&path)).await;
    assert_eq!(
        json_of(&converge(&["projections", "rebuild"], &env)),
        json!({"backend": "sqlite", "intents": 4})
    );
    assert_eq!(summaries_of(&sqlite_url(&path)).await, before);

    let pg = fresh_pg_database().await;
    let pg_env = [
        ("CONVERGE_DB_BACKEND", "postgres"),
        ("CONVERGE_PG_DSN", pg.as_str()),
    ];
    assert_eq!(
        json_of(&converge(&["migrate"], &pg_env)),
        json!({"backend": "postgres", "migrated": true})
    );

    let bad = converge(&["migrate"], &[("CONVERGE_DB_BACKEND", "postgres")]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("needs CONVERGE_PG_DSN"));
}

#[test]
fn bad_urls_are_refused_without_echoing_them() {
    let dir = tempfile::tempdir().unwrap();
    let target = sqlite_url(&dir.path().join("target.db"));
    let missing = sqlite_url(&dir.path().join("missing.db"));

    let output = converge(&["backfill", "--from", &missing, "--to", &target], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no SQLite database at"));
    assert!(
        !dir.path().join("missing.db").exists(),
        "a missing source was created"
    );

    let output = converge(
        &[
            "backfill",
            "--from",
            "mysql://admin:hunter2@db/converge",
            "--to",
            &target,
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("must start with sqlite:// or postgres://"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password reached the error: {stderr}"
    );

    let output = converge(
        &[
            "backfill",
            "--from",
            "env:CONVERGE_TEST_UNSET_VARIABLE",
            "--to",
            &target,
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("CONVERGE_TEST_UNSET_VARIABLE is not set")
    );

    let output = converge(&["backfill", "--from", &target, "--to", &target], &[]);
    assert_eq!(output.status.code(), Some(1), "a refused backfill exits 1");
    assert!(String::from_utf8_lossy(&output.stderr).contains("the same store"));
}
