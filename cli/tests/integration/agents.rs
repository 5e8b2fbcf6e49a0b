//! Agent policies and authorization over HTTP and the CLI on both backends: defaults, versions
//! under concurrent writes, validation naming the field, tenants and roles, and answers that
//! list every reason an action is refused.

use std::sync::Arc;

use converge_core::{Event, EventType};
use converge_store::Commit;
use serde_json::{Value, json};

use crate::audit_export::{ACME, ACME_VIEWER, GLOBEX, ROOT, tenants_server};
use crate::freezes::call;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_policies_are_versioned_per_tenant_and_authorization_gives_every_reason() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "agents.db").await {
        let server = tenants_server(dir.path(), &database);
        let post = {
            let client = client.clone();
            let base = server.url("");
            Arc::new(move |key: &'static str, path: &'static str, body: Value| {
                crate::freezes::post_owned(client.clone(), format!("{base}{path}"), key, body)
            })
        };

        // Nobody wrote a policy: the default, analysis only.
        let (status, listed) = call(
            &client,
            &server,
            ACME_VIEWER,
            "GET",
            "/v1/agent/policy?agent_id=codex-7",
            None,
        )
        .await;
        assert_eq!(status, 200, "{listed}");
        let default = &listed["policies"][0];
        assert_eq!(default["version"], 0, "{listed}");
        assert_eq!(
            default["policy"]["allow_actions"],
            json!(["analyze"]),
            "{listed}"
        );
        assert_eq!(default["policy"]["tenant_id"], "acme", "{listed}");

        // Who writes, and what is refused.
        let policy = json!({
            "agent_id": "codex-7", "atl": 2, "allow_actions": ["analyze", "merge"],
            "max_risk_score": 50, "max_blast_severity": "medium", "require_compliance_pass": false,
        });
        let (status, _) = post(ACME_VIEWER, "/v1/agent/policy", policy.clone()).await;
        assert_eq!(status, 403);
        let (status, _) = post(
            ACME,
            "/v1/agent/policy",
            json!({"agent_id": "x", "tenant_id": "globex"}),
        )
        .await;
        assert_eq!(status, 403);
        for (bad, field) in [
            (json!({"agent_id": "codex-7", "atl": 5}), "atl"),
            (
                json!({"agent_id": "codex-7", "max_blast_severity": "huge"}),
                "max_blast_severity",
            ),
            (
                json!({"agent_id": "codex-7", "expires_at": "soon"}),
                "expires_at",
            ),
            (json!({"agent_id": " "}), "agent_id"),
            (json!({"agent_id": "codex-7", "autonomy": 3}), "autonomy"),
        ] {
            let (status, answer) = post(ACME, "/v1/agent/policy", bad.clone()).await;
            assert_eq!(status, 400, "{bad}: {answer}");
            assert!(answer.to_string().contains(field), "{bad}: {answer}");
        }

        // Six operators at once: every 200 is a version of its own.
        let writes = (0..6).map(|_| {
            let post = post.clone();
            let policy = policy.clone();
            tokio::spawn(async move { post(ACME, "/v1/agent/policy", policy).await })
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
        let (_, mine) = call(&client, &server, ACME, "GET", "/v1/agent/policy", None).await;
        assert_eq!(mine["policies"].as_array().unwrap().len(), 1, "{mine}");
        assert_eq!(mine["policies"][0]["version"], versions.len(), "{mine}");
        let (_, theirs) = call(
            &client,
            &server,
            GLOBEX,
            "GET",
            "/v1/agent/policy?tenant_id=acme",
            None,
        )
        .await;
        assert_eq!(
            theirs["policies"],
            json!([]),
            "another tenant's policies: {theirs}"
        );

        // An intent of acme's, evaluated at risk 45 with damage 40 (a medium blast radius).
        let (status, body) = call(
            &client,
            &server,
            ACME,
            "POST",
            "/v1/intents",
            Some(json!({"id": "acme-agent", "source": "agent-branch"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let store = crate::analytics::store_of(&database);
        store
            .commit(&Commit {
                events: vec![Event {
                    id: "risk-acme-agent".into(),
                    trace_id: "seed".into(),
                    timestamp: chrono::Utc::now(),
                    event_type: EventType::RiskEvaluated,
                    intent_id: Some("acme-agent".into()),
                    agent_id: None,
                    tenant_id: Some("acme".into()),
                    payload: json!({"risk_score": 45.0, "damage_score": 40.0}),
                    evidence: json!({}),
                }],
                ..Commit::default()
            })
            .await
            .unwrap();
        let ask = |action: &str, approvals: u32| json!({"agent_id": "codex-7", "action": action, "intent_id": "acme-agent", "human_approvals": approvals});
        let (status, _) = post(ACME, "/v1/agent/authorize", ask("merge", 1)).await;
        assert_eq!(status, 403, "authorizing is for admins");
        let (status, _) = post(GLOBEX, "/v1/agent/authorize", ask("merge", 1)).await;
        assert_eq!(status, 404, "another tenant's intent");
        let (status, allowed) = post(ROOT, "/v1/agent/authorize", ask("merge", 1)).await;
        assert_eq!(status, 200, "{allowed}");
        assert_eq!(allowed["allowed"], true, "{allowed}");
        assert_eq!(allowed["atl"], 2, "{allowed}");
        assert_eq!(
            allowed["effective_limits"]["max_risk_score"], 50.0,
            "{allowed}"
        );
        let (_, refused) = post(ROOT, "/v1/agent/authorize", ask("deploy", 0)).await;
        assert_eq!(refused["allowed"], false, "{refused}");
        let reasons: Vec<&str> = refused["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(reasons.len(), 2, "{refused}");
        assert!(
            reasons[0].contains("'deploy' is not allowed"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("human approval"), "{reasons:?}");
        let (_, recorded) = call(
            &client,
            &server,
            ACME,
            "GET",
            "/v1/events?type=agent.authorized",
            None,
        )
        .await;
        assert_eq!(
            recorded["events"].as_array().unwrap().len(),
            2,
            "{recorded}"
        );

        // The CLI: set, list, and exit 3 when the agent may not.
        let cli = |key: &str, args: &[&str]| crate::operator_cli::converge_as(&server, key, args);
        let run = cli(
            ACME,
            &[
                "agent",
                "set-policy",
                "--agent-id",
                "claude-3",
                "--allow",
                "analyze,review",
                "--atl",
                "1",
            ],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let run = cli(ACME_VIEWER, &["agent", "policies"]);
        assert!(
            run.stdout.contains("claude-3") && run.stdout.contains("codex-7"),
            "{}",
            run.stdout
        );
        let run = cli(
            ROOT,
            &[
                "agent",
                "authorize",
                "--agent-id",
                "claude-3",
                "--action",
                "merge",
                "--intent-id",
                "acme-agent",
                "--approvals",
                "1",
            ],
        );
        assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("'merge' is not allowed"),
            "{}",
            run.stdout
        );
    }
}
