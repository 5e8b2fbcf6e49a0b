//! The analytics routes over HTTP on both backends: figures counted from a log written by the
//! real store (events at known times, in two tenants), what each tenant and role may read,
//! that reads write nothing, and the hourly snapshots the upkeep takes once however many
//! processes try.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use converge_core::analytics::{self as core, IntentTally, Stamp, WindowTally};
use converge_core::{Event, EventType};
use converge_store::{Commit, EventFilter, Store, SystemClock};
use serde_json::{Value, json};

use crate::audit_export::{ACME, ACME_VIEWER, GLOBEX, ROOT, tenants_server};
use crate::freezes::call;

pub(crate) fn store_of(database: &[(&str, String)]) -> Store {
    let setting = |name: &str| {
        database
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    let url = match setting("CONVERGE_PG_DSN") {
        Some(dsn) => dsn,
        None => format!("sqlite://{}", setting("CONVERGE_DB_PATH").unwrap()),
    };
    Store::from_url(&url, Arc::new(SystemClock)).unwrap()
}

fn event(
    n: &mut u32,
    tenant: &str,
    at: DateTime<Utc>,
    event_type: EventType,
    payload: Value,
) -> Event {
    *n += 1;
    Event {
        id: format!("seed-{tenant}-{n}"),
        trace_id: "seed".to_owned(),
        timestamp: at,
        event_type,
        intent_id: None,
        agent_id: None,
        tenant_id: Some(tenant.to_owned()),
        payload,
        evidence: json!({}),
    }
}

/// acme's last day: 4 simulations (3 clean), 2 risk evaluations (entropy 10 and 20,
/// propagation 50, containment 0.5), 1 rejection, 2 merges, 6 requeues, 1 semantic conflict;
/// the day before: 2 clean simulations and 1 risk evaluation (entropy 5). globex's last day:
/// 5 conflicting simulations and 4 rejections, which acme must never see.
fn seeded_log(now: DateTime<Utc>) -> Vec<Event> {
    let mut n = 0;
    let recent = now - Duration::hours(1);
    let earlier = now - Duration::hours(30);
    let mut events = Vec::new();
    for mergeable in [true, true, true, false] {
        events.push(event(
            &mut n,
            "acme",
            recent,
            EventType::SimulationCompleted,
            json!({"mergeable": mergeable, "conflicts": []}),
        ));
    }
    for entropy in [10.0, 20.0] {
        events.push(event(
            &mut n,
            "acme",
            recent,
            EventType::RiskEvaluated,
            json!({"entropy_score": entropy, "propagation_score": 50.0, "containment_score": 0.5, "risk_score": 30.0}),
        ));
    }
    events.push(event(
        &mut n,
        "acme",
        recent,
        EventType::IntentRejected,
        json!({}),
    ));
    for _ in 0..2 {
        events.push(event(
            &mut n,
            "acme",
            recent,
            EventType::IntentMerged,
            json!({}),
        ));
    }
    for _ in 0..6 {
        events.push(event(
            &mut n,
            "acme",
            recent,
            EventType::IntentRequeued,
            json!({}),
        ));
    }
    events.push(event(
        &mut n,
        "acme",
        recent,
        EventType::SemanticConflictDetected,
        json!({}),
    ));
    for _ in 0..2 {
        events.push(event(
            &mut n,
            "acme",
            earlier,
            EventType::SimulationCompleted,
            json!({"mergeable": true}),
        ));
    }
    events.push(event(
        &mut n,
        "acme",
        earlier,
        EventType::RiskEvaluated,
        json!({"entropy_score": 5.0, "propagation_score": 10.0, "containment_score": 0.9}),
    ));
    for _ in 0..5 {
        events.push(event(
            &mut n,
            "globex",
            recent,
            EventType::SimulationCompleted,
            json!({"mergeable": false}),
        ));
    }
    for _ in 0..4 {
        events.push(event(
            &mut n,
            "globex",
            recent,
            EventType::IntentRejected,
            json!({}),
        ));
    }
    events
}

/// What acme's log above tallies to, counted by hand.
fn acme_last_day() -> WindowTally {
    WindowTally {
        simulations: 4,
        mergeable: 3,
        risk_evaluations: 2,
        entropy_mean: 15.0,
        propagation_mean: 50.0,
        containment_mean: 0.5,
        high_propagation: 2,
        merged: 2,
        rejected: 1,
        requeued: 6,
        semantic_conflicts: 1,
    }
}

fn acme_day_before() -> WindowTally {
    WindowTally {
        simulations: 2,
        mergeable: 2,
        risk_evaluations: 1,
        entropy_mean: 5.0,
        propagation_mean: 10.0,
        containment_mean: 0.9,
        ..WindowTally::default()
    }
}

/// `value` without the fields that name the instant of the read.
fn timeless(mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.remove("timestamp");
    }
    value
}

/// Events in the log, but for the snapshots the server's upkeep takes when an hour turns.
async fn event_count(store: &Store) -> usize {
    store
        .events(&EventFilter {
            limit: 10_000,
            ..EventFilter::default()
        })
        .await
        .unwrap()
        .iter()
        .filter(|e| !e.event.id.starts_with("health.snapshot/"))
        .filter(|e| !e.event.id.starts_with("verification.debt.snapshot/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_count_a_tenants_log_in_sql_and_show_it_only_to_that_tenant() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "analytics.db").await {
        let server = tenants_server(dir.path(), &database);
        let store = store_of(&database);
        // Two waiting intents of acme's, one with a review task waiting; one of globex's.
        for (key, id) in [(ACME, "acme-a"), (ACME, "acme-b"), (GLOBEX, "globex-a")] {
            let (status, body) = call(
                &client,
                &server,
                key,
                "POST",
                "/v1/intents",
                Some(json!({"id": id, "source": format!("{id}-branch")})),
            )
            .await;
            assert_eq!(status, 201, "{body}");
        }
        let (status, body) = call(
            &client,
            &server,
            ACME,
            "POST",
            "/v1/reviews",
            Some(json!({"intent_id": "acme-a", "reviewer": "jörg"})),
        )
        .await;
        assert!(status == 200 || status == 201, "{body}");
        let now = Utc::now();
        store
            .commit(&Commit {
                events: seeded_log(now),
                ..Commit::default()
            })
            .await
            .unwrap();

        let stamp = Stamp {
            timestamp: String::new(),
            tenant_id: Some("acme".to_owned()),
        };
        let intents = IntentTally {
            total: 2,
            active: 2,
            stale: 0,
            retried: 0,
        };
        let expected_health =
            serde_json::to_value(core::repo_health(&acme_last_day(), &intents, &stamp)).unwrap();
        let expected_debt = serde_json::to_value(core::verification_debt(
            &intents,
            1,
            &acme_last_day(),
            &stamp,
        ))
        .unwrap();
        let events_before_reads = event_count(&store).await;

        // Health: 100 - 0.25 × 30 - 15 × 0.5 - 1 × 1.5 = 83.5, whoever of acme asks, and
        // whatever tenant it names.
        for key in [ACME, ACME_VIEWER] {
            let (status, health) = call(
                &client,
                &server,
                key,
                "GET",
                "/v1/health/repo/now?tenant_id=globex",
                None,
            )
            .await;
            assert_eq!(status, 200, "{health}");
            assert_eq!(health["repo_health_score"], 83.5, "{health}");
            assert_eq!(timeless(health), timeless(expected_health.clone()));
        }
        let (_, by_root) = call(
            &client,
            &server,
            ROOT,
            "GET",
            "/api/health/repo/now?tenant_id=acme",
            None,
        )
        .await;
        assert_eq!(timeless(by_root), timeless(expected_health.clone()));
        let (_, globex) = call(&client, &server, GLOBEX, "GET", "/v1/health/repo/now", None).await;
        assert_eq!(globex["mergeable_rate"], 0.0, "{globex}");
        assert_eq!(globex["rejected_last_24h"], 4, "{globex}");

        // Debt: 2 waiting intents of 50, 1 review of 10, 0.7 × 1/4 + 0.3 × 1/10 conflicts.
        let (status, debt) =
            call(&client, &server, ACME, "GET", "/v1/verification/debt", None).await;
        assert_eq!(status, 200, "{debt}");
        assert_eq!(timeless(debt.clone()), timeless(expected_debt), "{debt}");
        assert_eq!(debt["breakdown"]["pending_reviews"], 1, "{debt}");

        // Predictions: six requeues stall the queue; propagation 50 twice is no cascade (3 needed).
        let (_, predictions) = call(&client, &server, ACME, "GET", "/v1/predictions", None).await;
        let expected_predictions =
            serde_json::to_value(core::predictions(&acme_last_day(), &acme_day_before())).unwrap();
        assert_eq!(
            predictions["predictions"], expected_predictions,
            "{predictions}"
        );
        let signals: Vec<&str> = predictions["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["signal"].as_str())
            .collect();
        // A quarter of the last day's simulations conflict against none the day before.
        assert_eq!(
            signals,
            ["rising_conflict_rate", "queue_stalling"],
            "{predictions}"
        );

        // All-time counts, from the maintained tallies.
        let (_, metrics) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/metrics/integration",
            None,
        )
        .await;
        assert_eq!(
            (
                metrics["total_simulations"].as_u64(),
                metrics["mergeable"].as_u64(),
                metrics["total_merged"].as_u64(),
                metrics["total_rejected"].as_u64(),
                metrics["mergeable_rate"].as_f64(),
            ),
            (Some(6), Some(5), Some(2), Some(1), Some(0.833)),
            "{metrics}"
        );

        // Compliance: 5 of 6 clean passes 0.8; 6 requeues are retries.
        let (status, report) =
            call(&client, &server, ACME, "GET", "/v1/compliance/report", None).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["retries_total"], 6, "{report}");
        assert_eq!(report["queue_tracked"], 2, "{report}");
        assert_eq!(report["passed"], true, "{report}");
        let (_, globex_report) = call(
            &client,
            &server,
            GLOBEX,
            "GET",
            "/v1/compliance/report",
            None,
        )
        .await;
        assert_eq!(globex_report["passed"], false, "{globex_report}");
        let (_, globex_alerts) = call(
            &client,
            &server,
            GLOBEX,
            "GET",
            "/v1/compliance/alerts",
            None,
        )
        .await;
        let alert_names: Vec<&str> = globex_alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["name"].as_str())
            .collect();
        assert_eq!(
            alert_names,
            ["mergeable_rate", "conflict_rate"],
            "{globex_alerts}"
        );

        // The dashboard's aggregate agrees with the parts; its alerts name their source.
        let (_, dashboard) = call(&client, &server, ACME, "GET", "/v1/dashboard", None).await;
        assert_eq!(
            timeless(dashboard["health"].clone()),
            timeless(expected_health.clone())
        );
        assert_eq!(dashboard["compliance"]["passed"], true);
        assert_eq!(dashboard["queue"]["total"], 2, "{dashboard}");
        let (_, alerts) = call(&client, &server, ACME, "GET", "/v1/dashboard/alerts", None).await;
        assert_eq!(alerts["compliance_passed"], true, "{alerts}");
        let raised: Vec<(&str, &str)> = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| Some((a["source"].as_str()?, a["signal"].as_str()?)))
            .collect();
        assert_eq!(
            raised,
            [
                ("prediction", "rising_conflict_rate"),
                ("prediction", "queue_stalling")
            ],
            "{alerts}"
        );
        let (_, summary) = call(&client, &server, ACME, "GET", "/v1/summary", None).await;
        assert_eq!(summary["health"]["repo_health_score"], 83.5, "{summary}");

        // Change health: an intent with no evaluation yet is whole; another tenant's is not found.
        let (status, change) = call(
            &client,
            &server,
            ACME_VIEWER,
            "GET",
            "/v1/health/change?intent_id=acme-a",
            None,
        )
        .await;
        assert_eq!(status, 200, "{change}");
        assert_eq!(
            (
                change["health_score"].as_f64(),
                change["policy_verdict"].as_str()
            ),
            (Some(100.0), Some("unknown"))
        );
        let (status, _) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/health/change?intent_id=globex-a",
            None,
        )
        .await;
        assert_eq!(status, 404);
        let (status, body) = call(&client, &server, ACME, "GET", "/v1/health/change", None).await;
        assert_eq!(status, 400, "{body}");

        // Bad spans are refused, naming the parameter.
        for bad in [
            "/v1/health/repo/trend?days=0",
            "/v1/health/repo/trend?days=366",
            "/v1/health/predict?horizon_days=91",
            "/v1/verification/debt/trend?days=x",
        ] {
            let (status, body) = call(&client, &server, ACME, "GET", bad, None).await;
            assert_eq!(status, 400, "{bad}: {body}");
        }

        // None of those reads wrote anything.
        assert_eq!(event_count(&store).await, events_before_reads);

        // Prediction from snapshots: too few, then a fall towards red. The snapshots are
        // initech's, a tenant without intents, so the upkeep never adds one of its own.
        let predict = "/v1/health/predict?tenant_id=initech";
        let (_, unknown) = call(&client, &server, ROOT, "GET", predict, None).await;
        assert_eq!(unknown["projected_status"], "unknown", "{unknown}");
        let mut n = 100;
        let snapshots: Vec<Event> = [80.0, 72.0, 60.0, 50.0]
            .iter()
            .enumerate()
            .map(|(i, score)| {
                event(
                    &mut n,
                    "initech",
                    now - Duration::hours(10 - i as i64),
                    EventType::HealthSnapshot,
                    json!({"repo_health_score": score, "entropy_score": 10.0, "conflict_rate": 0.1, "tenant_id": "initech"}),
                )
            })
            .collect();
        store
            .commit(&Commit {
                events: snapshots,
                ..Commit::default()
            })
            .await
            .unwrap();
        let (_, predicted) = call(&client, &server, ROOT, "GET", predict, None).await;
        // Older half 76, recent half 55: velocity -21, projected 34 (red) while now 50 (yellow).
        assert_eq!(predicted["velocity"]["health"], -21.0, "{predicted}");
        assert_eq!(predicted["projected_status"], "red", "{predicted}");
        assert_eq!(predicted["should_gate"], true, "{predicted}");
        let (_, trend) = call(
            &client,
            &server,
            ROOT,
            "GET",
            "/v1/health/repo/trend?days=1&tenant_id=initech",
            None,
        )
        .await;
        let scores: Vec<f64> = trend["points"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["snapshot"]["repo_health_score"].as_f64())
            .collect();
        assert_eq!(scores, [80.0, 72.0, 60.0, 50.0], "{trend}");
        let (_, globex_trend) = call(
            &client,
            &server,
            GLOBEX,
            "GET",
            "/v1/health/repo/trend?tenant_id=initech",
            None,
        )
        .await;
        for point in globex_trend["points"].as_array().unwrap() {
            assert_eq!(point["snapshot"]["tenant_id"], "globex", "{globex_trend}");
        }
        let (_, entropy) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/health/entropy/trend",
            None,
        )
        .await;
        let entropies: Vec<f64> = entropy["points"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["entropy_score"].as_f64())
            .collect();
        assert_eq!(entropies, [5.0, 10.0, 20.0], "{entropy}");

        // The same through the CLI: figures as JSON, exit 3 where a check fails.
        let cli = |key: &str, args: &[&str]| crate::operator_cli::converge_as(&server, key, args);
        let run = cli(ACME, &["--json", "analytics", "health"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.json()["repo_health_score"], 83.5, "{}", run.stdout);
        let run = cli(ACME, &["analytics", "health"]);
        assert!(
            run.stdout.contains("Repo health is strong (score: 84)"),
            "{}",
            run.stdout
        );
        let run = cli(ACME, &["compliance", "report", "--fail-on-alert"]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let run = cli(GLOBEX, &["compliance", "alerts", "--fail-on-alert"]);
        assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("mergeable_rate, conflict_rate"),
            "{}",
            run.stderr
        );
        let run = cli(ROOT, &["analytics", "predict", "--tenant-id", "initech"]);
        assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("predict.approaching_red"),
            "{}",
            run.stdout
        );
        let run = cli(ACME, &["analytics", "change", "--intent-id", "globex-a"]);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        for args in [
            &["analytics", "predictions"][..],
            &["analytics", "debt"],
            &["analytics", "debt", "--trend", "--days", "2"],
            &["analytics", "metrics"],
            &["analytics", "dashboard"],
            &["analytics", "trend", "--days", "3"],
            &["analytics", "entropy"],
        ] {
            let run = cli(ACME_VIEWER, args);
            assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        }
        let run = cli(ACME, &["analytics", "trend", "--days", "0"]);
        assert_ne!(run.code, 0, "{}", run.stdout);
        assert!(run.stderr.contains("days"), "{}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hourly_snapshots_are_taken_once_however_many_processes_race_for_them() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "snapshots.db").await {
        let server = tenants_server(dir.path(), &database);
        for (key, id) in [(ACME, "acme-s"), (GLOBEX, "globex-s")] {
            let (status, body) = call(
                &client,
                &server,
                key,
                "POST",
                "/v1/intents",
                Some(json!({"id": id, "source": format!("{id}-branch")})),
            )
            .await;
            assert_eq!(status, 201, "{body}");
        }
        let store = store_of(&database);
        // An hour no process has snapshotted yet (the server took the current one at start).
        let later = Utc::now() + Duration::hours(2);
        let racers = (0..4).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                converge_runtime::analytics::take_snapshots(
                    &store,
                    &converge_runtime::services::RandomIds,
                    later,
                )
                .await
                .unwrap()
            })
        });
        let mut taken = 0;
        let mut already = 0;
        for racer in racers {
            let report = racer.await.unwrap();
            taken += report.taken;
            already += report.already;
        }
        assert_eq!(taken, 2, "one snapshot per tenant");
        assert_eq!(already, 6, "the other three processes found each one taken");
        for tenant in ["acme", "globex"] {
            for event_type in [
                EventType::HealthSnapshot,
                EventType::VerificationDebtSnapshot,
            ] {
                let found = store
                    .events(&EventFilter {
                        event_type: Some(event_type),
                        tenant_id: Some(tenant.to_owned()),
                        since: Some(later - Duration::minutes(1)),
                        limit: 100,
                        ..EventFilter::default()
                    })
                    .await
                    .unwrap();
                assert_eq!(found.len(), 1, "{tenant} {event_type:?}");
                assert_eq!(found[0].event.payload["tenant_id"], tenant);
                if event_type == EventType::HealthSnapshot {
                    // Its queues: the one intent waits in `main` since before the hour.
                    let queue = &found[0].event.payload["queues"][0];
                    assert_eq!(queue["queue"], "main", "{queue}");
                    assert_eq!(queue["waiting"], 1, "{queue}");
                    assert!(
                        queue["oldest_wait_hours"].as_f64().unwrap() >= 1.9,
                        "{queue}"
                    );
                }
            }
        }
        // The chain still verifies with the snapshots in it.
        let (_, verified) = call(&client, &server, ACME, "GET", "/v1/audit/verify", None).await;
        assert_eq!(verified["status"], "valid", "{verified}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_thresholds_are_versioned_validated_and_each_write_counts_once() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "thresholds.db").await {
        let server = tenants_server(dir.path(), &database);
        let store = store_of(&database);
        store
            .commit(&Commit {
                events: seeded_log(Utc::now()),
                ..Commit::default()
            })
            .await
            .unwrap();

        // Nothing stored: the defaults, version 0.
        let (status, initial) = call(
            &client,
            &server,
            ACME_VIEWER,
            "GET",
            "/v1/compliance/thresholds",
            None,
        )
        .await;
        assert_eq!(status, 200, "{initial}");
        assert_eq!(initial["version"], 0, "{initial}");
        assert_eq!(
            initial["thresholds"]["min_mergeable_rate"], 0.8,
            "{initial}"
        );
        assert_eq!(initial["thresholds"]["max_retries_total"], 200, "{initial}");

        // Who may write, and what.
        let url = server.url("/v1/compliance/thresholds");
        let poster = client.clone();
        let set = move |key: &'static str, body: Value| {
            crate::freezes::post_owned(poster.clone(), url.clone(), key, body)
        };
        let (status, _) = set(ACME_VIEWER, json!({"max_debt_score": 50})).await;
        assert_eq!(status, 403, "viewers do not write thresholds");
        let (status, _) = set(ACME, json!({"tenant_id": "globex", "max_debt_score": 50})).await;
        assert_eq!(status, 403, "nor into another tenant");
        for (body, field) in [
            (json!({"mergeable_rate": 0.9}), "mergeable_rate"),
            (json!({"min_mergeable_rate": 1.2}), "min_mergeable_rate"),
            (json!({"max_retries_total": -3}), "max_retries_total"),
            (json!({"max_debt_score": "high"}), "max_debt_score"),
        ] {
            let (status, answer) = set(ACME, body.clone()).await;
            assert_eq!(status, 400, "{body}: {answer}");
            assert!(answer.to_string().contains(field), "{body}: {answer}");
        }
        let (_, unchanged) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/compliance/thresholds",
            None,
        )
        .await;
        assert_eq!(unchanged["version"], 0, "refused writes store nothing");

        // Eight operators at once: every write that answers 200 is a version of its own,
        // and the history holds exactly those.
        let writes = (0..8u32).map(|i| {
            let set = set.clone();
            tokio::spawn(async move {
                set(
                    ACME,
                    json!({"max_retries_total": 100 + i, "min_mergeable_rate": 0.9}),
                )
                .await
            })
        });
        let mut versions = Vec::new();
        for write in writes {
            let (status, answer) = write.await.unwrap();
            match status {
                200 => versions.push(answer["version"].as_i64().unwrap()),
                409 => {}
                other => panic!("{other}: {answer}"),
            }
        }
        versions.sort_unstable();
        assert!(!versions.is_empty());
        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
        let (_, stored) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/compliance/thresholds",
            None,
        )
        .await;
        assert_eq!(stored["version"], versions.len(), "{stored}");
        let (status, history) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/compliance/thresholds/history",
            None,
        )
        .await;
        assert_eq!(status, 200, "{history}");
        let listed: Vec<i64> = history["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["version"].as_i64())
            .collect();
        let mut newest_first = versions.clone();
        newest_first.reverse();
        assert_eq!(listed, newest_first, "{history}");
        assert_eq!(history["history"][0]["by"], "alice", "{history}");
        let (status, _) = call(
            &client,
            &server,
            ACME_VIEWER,
            "GET",
            "/v1/compliance/thresholds/history",
            None,
        )
        .await;
        assert_eq!(status, 403, "the history is for operators");

        // The report now holds acme to 0.9: 5 of 6 clean fails it. globex's are untouched.
        let (_, report) = call(&client, &server, ACME, "GET", "/v1/compliance/report", None).await;
        assert_eq!(report["checks"][0]["threshold"], 0.9, "{report}");
        assert_eq!(report["checks"][0]["passed"], false, "{report}");
        let (_, globex) = call(
            &client,
            &server,
            GLOBEX,
            "GET",
            "/v1/compliance/thresholds",
            None,
        )
        .await;
        assert_eq!(globex["version"], 0, "{globex}");

        // The CLI writes and reads them too.
        let cli = |key: &str, args: &[&str]| crate::operator_cli::converge_as(&server, key, args);
        let run = cli(
            GLOBEX,
            &["compliance", "set-thresholds", "--max-debt-score", "12.5"],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let run = cli(GLOBEX, &["--json", "compliance", "thresholds"]);
        assert_eq!(
            run.json()["thresholds"]["max_debt_score"],
            12.5,
            "{}",
            run.stdout
        );
        let run = cli(GLOBEX, &["compliance", "history"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stdout.contains("12.5"), "{}", run.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_risk_policy_is_written_with_its_event_and_concurrent_writes_are_never_lost() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "risk-policy.db").await {
        let server = tenants_server(dir.path(), &database);
        let writes = (0..6).map(|n| {
            let (client, url) = (client.clone(), server.url("/v1/risk/policy"));
            tokio::spawn(async move {
                crate::freezes::post_owned(client, url, ACME, json!({"max_risk_score": 40 + n}))
                    .await
            })
        });
        let mut versions = Vec::new();
        for write in writes {
            let (status, answer) = write.await.unwrap();
            match status {
                200 => versions.push(answer["version"].as_i64().unwrap()),
                409 => {}
                other => panic!("{other}: {answer}"),
            }
        }
        versions.sort_unstable();
        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
        // Every version answered has its event, and no other event was recorded.
        let (_, history) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/risk/policy/history",
            None,
        )
        .await;
        let mut recorded: Vec<i64> = history["history"]
            .as_array()
            .or(history["events"].as_array())
            .unwrap_or_else(|| panic!("{history}"))
            .iter()
            .filter_map(|h| h["version"].as_i64().or(h["payload"]["version"].as_i64()))
            .collect();
        recorded.sort_unstable();
        assert_eq!(recorded, versions, "{history}");
    }
}
