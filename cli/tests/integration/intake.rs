//! Intake control over HTTP and the CLI on both backends: the modes an operator sets (per
//! tenant and global), what `auto` decides from health and debt counted in the store, the
//! 422 `intake_rejected` a refused creation gets (recorded, and nothing else written), roles
//! and tenants.

use chrono::{Duration, Utc};
use converge_core::intake_mode::{IntakeMode, IntakeVerdict, decide};
use converge_core::{Event, EventType, RiskLevel};
use converge_store::Commit;
use serde_json::{Value, json};

use crate::audit_export::{ACME, ACME_VIEWER, GLOBEX, ROOT, tenants_server};
use crate::freezes::{call, post_owned};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_modes_decide_which_intents_come_in_and_refusals_write_nothing_else() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "intake.db").await {
        let server = tenants_server(dir.path(), &database);
        let create = |key: &'static str, id: String, risk: &'static str| {
            post_owned(
                client.clone(),
                server.url("/v1/intents"),
                key,
                json!({"id": id, "source": format!("{id}-branch"), "risk_level": risk}),
            )
        };
        let set_mode = |key: &'static str, body: Value| {
            post_owned(client.clone(), server.url("/v1/intake/mode"), key, body)
        };

        // A quiet tenant is open, by auto.
        let (status, open) = call(&client, &server, ACME, "GET", "/v1/intake/status", None).await;
        assert_eq!(status, 200, "{open}");
        assert_eq!(
            (
                open["mode"].as_str(),
                open["auto_mode"].as_str(),
                open["manual_override"].as_bool()
            ),
            (Some("open"), Some("open"), Some(false)),
            "{open}"
        );
        assert_eq!(open["signals"]["effective_score"], 100.0, "{open}");

        // Viewers do not set modes; an operator pauses acme, with a reason.
        let (status, _) = set_mode(ACME_VIEWER, json!({"mode": "pause"})).await;
        assert_eq!(status, 403);
        let (status, _) = set_mode(ACME, json!({"mode": "pause", "tenant_id": "globex"})).await;
        assert_eq!(status, 403, "not another tenant's");
        let (status, body) = set_mode(ACME, json!({"mode": "sleep"})).await;
        assert_eq!(status, 400, "{body}");
        let (status, paused) =
            set_mode(ACME, json!({"mode": "pause", "reason": "release 4.2"})).await;
        assert_eq!(status, 200, "{paused}");
        assert_eq!(paused["mode"], "pause", "{paused}");
        assert_eq!(paused["override"]["reason"], "release 4.2", "{paused}");
        assert_eq!(paused["override"]["set_by"], "alice", "{paused}");

        // Paused: a medium change is refused with 422 and not created; a critical one comes in.
        let (status, refused) = create(ACME, "acme-held".to_owned(), "medium").await;
        assert_eq!(status, 422, "{refused}");
        assert_eq!(refused["error"]["code"], "intake_rejected", "{refused}");
        assert!(refused.to_string().contains("paused"), "{refused}");
        let (status, _) = call(&client, &server, ACME, "GET", "/v1/intents/acme-held", None).await;
        assert_eq!(status, 404, "a refused intent is not created");
        let (_, recorded) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/events?type=intake.rejected",
            None,
        )
        .await;
        let recorded = recorded["events"].as_array().cloned().unwrap_or_default();
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(recorded[0]["intent_id"], "acme-held");
        let (status, body) = create(ACME, "acme-hotfix".to_owned(), "critical").await;
        assert_eq!(status, 201, "{body}");
        // globex is not acme.
        let (status, body) = create(GLOBEX, "globex-1".to_owned(), "medium").await;
        assert_eq!(status, 201, "{body}");

        // Throttled: exactly the intents whose bucket is in the lower half come in.
        let (status, _) = set_mode(ACME, json!({"mode": "throttle"})).await;
        assert_eq!(status, 200);
        let mut taken = 0;
        for n in 0..16 {
            let id = format!("acme-t{n}");
            let expected = decide(IntakeMode::Throttle, RiskLevel::Medium, &id).verdict;
            let (status, body) = create(ACME, id.clone(), "medium").await;
            match expected {
                IntakeVerdict::Accepted => {
                    assert_eq!(status, 201, "{id}: {body}");
                    taken += 1;
                }
                _ => {
                    assert_eq!(status, 422, "{id}: {body}");
                    assert!(body.to_string().contains("throttled"), "{body}");
                }
            }
        }
        assert!((1..16).contains(&taken), "{taken} of 16 taken");

        // Back to auto; then a global pause holds every tenant without a mode of its own.
        let (_, auto) = set_mode(ACME, json!({"mode": "auto"})).await;
        assert_eq!(auto["manual_override"], false, "{auto}");
        let (status, global) =
            set_mode(ROOT, json!({"mode": "pause", "reason": "freeze week"})).await;
        assert_eq!(status, 200, "{global}");
        let (status, body) = create(GLOBEX, "globex-2".to_owned(), "low").await;
        assert_eq!(status, 422, "{body}");
        let (status, _) = set_mode(GLOBEX, json!({"mode": "open"})).await;
        assert_eq!(status, 200);
        let (status, body) = create(GLOBEX, "globex-3".to_owned(), "low").await;
        assert_eq!(status, 201, "its own mode wins: {body}");
        let (_, mode) = call(&client, &server, ACME, "GET", "/v1/intake/mode", None).await;
        assert_eq!(
            mode["mode"], "pause",
            "acme falls under the global mode: {mode}"
        );
        let (status, _) = set_mode(ROOT, json!({"mode": "auto"})).await;
        assert_eq!(status, 200);

        // Auto pauses a tenant whose health collapsed: every simulation conflicting, entropy at
        // 50 and twenty rejections in the last day give 100 - 30 - 25 - 30 = 15. Creates reuse
        // the signals a second at most: a create just before the collapse is counted open.
        let create_initech = |id: &'static str| {
            let (client, url) = (&client, server.url("/v1/intents"));
            async move {
                let response = client
                    .post(url)
                    .header("x-api-key", ROOT)
                    .json(&json!({"id": id, "source": "b", "tenant_id": "initech"}))
                    .send()
                    .await
                    .unwrap();
                response.status().as_u16()
            }
        };
        assert_eq!(create_initech("initech-0").await, 201);
        let store = crate::analytics::store_of(&database);
        let now = Utc::now();
        let mut events = Vec::new();
        for n in 0..20 {
            for (event_type, payload) in [
                (EventType::SimulationCompleted, json!({"mergeable": false})),
                (EventType::RiskEvaluated, json!({"entropy_score": 50.0})),
                (EventType::IntentRejected, json!({})),
            ] {
                events.push(Event {
                    id: format!("initech-{}-{n}", event_type.as_str()),
                    trace_id: "seed".into(),
                    timestamp: now - Duration::hours(1),
                    event_type,
                    intent_id: None,
                    agent_id: None,
                    tenant_id: Some("initech".into()),
                    payload,
                    evidence: json!({}),
                });
            }
        }
        store
            .commit(&Commit {
                events,
                ..Commit::default()
            })
            .await
            .unwrap();
        let (_, collapsed) = call(
            &client,
            &server,
            ROOT,
            "GET",
            "/v1/intake/status?tenant_id=initech",
            None,
        )
        .await;
        assert_eq!(collapsed["signals"]["health_score"], 15.0, "{collapsed}");
        assert_eq!(collapsed["mode"], "pause", "{collapsed}");
        // The signals the first create counted are a second old at most by now, or are let go.
        tokio::time::sleep(converge_runtime::intake_control::SIGNALS_REUSED_FOR).await;
        assert_eq!(create_initech("initech-1").await, 422);

        // The CLI reads and sets the mode too.
        let cli = |key: &str, args: &[&str]| crate::operator_cli::converge_as(&server, key, args);
        let run = cli(
            ACME,
            &["intake", "mode", "throttle", "--reason", "busy week"],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stdout
                .contains("mode: throttle (set by alice: busy week)"),
            "{}",
            run.stdout
        );
        let run = cli(ACME_VIEWER, &["--json", "intake", "status"]);
        assert_eq!(run.json()["mode"], "throttle", "{}", run.stdout);
        let run = cli(ACME_VIEWER, &["intake", "mode", "open"]);
        assert_ne!(run.code, 0, "viewers cannot: {}", run.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_is_judged_against_the_tenants_waiting_intents_before_it_is_created() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "drafts.db").await {
        let server = tenants_server(dir.path(), &database);
        let vague =
            json!({"source": "feature/fix", "target": "main", "semantic": {"description": "fix"}});
        let mut waiting = vague.clone();
        waiting["id"] = json!("acme-vague");
        let (status, body) =
            call(&client, &server, ACME, "POST", "/v1/intents", Some(waiting)).await;
        assert_eq!(status, 201, "{body}");

        // The same vague change again: a copy of what waits, poorly described.
        let mut draft = vague.clone();
        draft["mode"] = json!("enforce");
        let (status, judged) = call(
            &client,
            &server,
            ACME_VIEWER,
            "POST",
            "/v1/intents/evaluate",
            Some(draft.clone()),
        )
        .await;
        assert_eq!(status, 200, "{judged}");
        assert_eq!(
            judged["similar_intents"][0]["intent_id"], "acme-vague",
            "{judged}"
        );
        assert_eq!(judged["signals"]["max_similarity"], 1.0, "{judged}");
        assert_eq!(judged["passed"], false, "{judged}");
        assert_eq!(
            judged["recommendations"].as_array().unwrap().len(),
            3,
            "{judged}"
        );
        // In shadow mode it only advises.
        let (_, shadow) = call(
            &client,
            &server,
            ACME,
            "POST",
            "/v1/intents/evaluate",
            Some(vague.clone()),
        )
        .await;
        assert_eq!(
            (shadow["passed"].as_bool(), shadow["mode"].as_str()),
            (Some(true), Some("shadow")),
            "{shadow}"
        );
        // Another tenant's waiting intents are not compared.
        let (_, elsewhere) = call(
            &client,
            &server,
            GLOBEX,
            "POST",
            "/v1/intents/evaluate",
            Some(draft),
        )
        .await;
        assert_eq!(elsewhere["similar_intents"], json!([]), "{elsewhere}");
        assert_eq!(elsewhere["signals"]["compared"], 0, "{elsewhere}");
        // A well described new change passes.
        let (_, good) = call(
            &client,
            &server,
            ACME,
            "POST",
            "/v1/intents/evaluate",
            Some(json!({"source": "feature/retry", "semantic": {"description": "retry payments on gateway timeout"},
                        "technical": {"scope_hint": ["payments"]}, "mode": "enforce"})),
        )
        .await;
        assert_eq!(good["passed"], true, "{good}");
        assert_eq!(good["recommendations"], json!([]), "{good}");
        let (status, body) = call(
            &client,
            &server,
            ACME,
            "POST",
            "/v1/intents/evaluate",
            Some(json!({"source": "a", "mode": "strict"})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (_, recorded) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/events?type=intent.pre_evaluated",
            None,
        )
        .await;
        assert_eq!(
            recorded["events"].as_array().unwrap().len(),
            3,
            "{recorded}"
        );

        // The CLI asks the same, and fails an enforced copy.
        let run = crate::operator_cli::converge_as(
            &server,
            ACME,
            &[
                "intent",
                "evaluate",
                "--source",
                "feature/fix",
                "--target",
                "main",
                "--description",
                "fix",
                "--enforce",
            ],
        );
        assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("like acme-vague (similarity 1.0)"),
            "{}",
            run.stdout
        );
    }
}
