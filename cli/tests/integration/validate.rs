//! Validation over HTTP against a real git repository: `converge serve` with
//! CONVERGE_REPO_PATH, CI reporting checks through the API, on SQLite and PostgreSQL.

use std::path::Path;

use converge_testkit::git::{docs_and_clash, git};
use converge_testkit::{ServerProcess, fresh_pg_database};
use serde_json::{Value, json};

const KEY: &str = "validate-key";

fn serve(cwd: &Path, env: &[(&str, String)]) -> ServerProcess {
    let mut env = env.to_vec();
    env.push(("CONVERGE_API_KEYS", format!("{KEY}:admin:ci")));
    env.push(("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()));
    // Manual validation is under test: no worker moving intents meanwhile.
    ServerProcess::start_with(env!("CARGO_BIN_EXE_converge"), cwd, &env, &["--no-worker"])
}

async fn get(client: &reqwest::Client, server: &ServerProcess, path: &str) -> Value {
    let response = client
        .get(server.url(path))
        .header("x-api-key", KEY)
        .send()
        .await;
    let response = response.unwrap();
    response.json().await.unwrap_or_default()
}

async fn post(
    client: &reqwest::Client,
    server: &ServerProcess,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let response = client
        .post(server.url(path))
        .header("x-api-key", KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_reads_the_repository_and_reported_checks() {
    let client = reqwest::Client::new();
    let repo = tempfile::tempdir().unwrap();
    docs_and_clash(repo.path());
    let state = tempfile::tempdir().unwrap();
    let backends = [
        vec![
            ("CONVERGE_DB_BACKEND", "sqlite".to_owned()),
            (
                "CONVERGE_DB_PATH",
                state.path().join("s.db").display().to_string(),
            ),
        ],
        vec![
            ("CONVERGE_DB_BACKEND", "postgres".to_owned()),
            ("CONVERGE_PG_DSN", fresh_pg_database().await),
        ],
    ];
    for env in backends {
        let mut env = env.clone();
        env.push(("CONVERGE_REPO_PATH", repo.path().display().to_string()));
        let server = serve(state.path(), &env);
        for (id, source) in [
            ("docs", "feature/docs"),
            ("docs-again", "feature/docs"),
            ("clash", "feature/clash"),
            ("gone", "feature/deleted"),
        ] {
            let (status, _) = post(
                &client,
                &server,
                "/v1/intents",
                json!({"id": id, "source": source, "risk_level": "low"}),
            )
            .await;
            assert_eq!(status, 201);
        }

        // No CI result yet: blocked as pending, not failed.
        let (status, decision) =
            post(&client, &server, "/v1/intents/docs/validate", json!({})).await;
        assert_eq!(status, 200, "{decision}");
        assert_eq!(
            (decision["decision"].as_str(), decision["kind"].as_str()),
            (Some("blocked"), Some("checks_pending")),
            "{decision}"
        );
        assert_eq!(
            decision["simulation"]["files_changed"],
            json!(["docs/guide.md"]),
            "counted from the merge base"
        );
        let head = decision["simulation"]["head_sha"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(head, git(repo.path(), &["rev-parse", "feature/docs"]));

        // CI reports lint green for that commit: validated.
        let report = json!({"name": "lint", "state": "passed", "head_sha": head});
        let (status, body) = post(&client, &server, "/v1/intents/docs/checks", report).await;
        assert_eq!(status, 201, "{body}");
        let (_, decision) = post(&client, &server, "/v1/intents/docs/validate", json!({})).await;
        assert_eq!(decision["decision"], "validated", "{decision}");
        assert_eq!(
            decision["simulation"]["target_sha"].as_str(),
            Some(git(repo.path(), &["rev-parse", "main"]).as_str())
        );
        let intent: Value = get(&client, &server, "/v1/intents/docs").await;
        assert_eq!(intent["status"], "VALIDATED");

        // A result for another commit does not count.
        let stale = json!({"name": "lint", "state": "passed", "head_sha": git(repo.path(), &["rev-parse", "main"])});
        post(&client, &server, "/v1/intents/docs-again/checks", stale).await;
        let (_, decision) = post(
            &client,
            &server,
            "/v1/intents/docs-again/validate",
            json!({}),
        )
        .await;
        assert_eq!(decision["kind"], "checks_pending", "{decision}");
        // A red check blocks and says which.
        let red =
            json!({"name": "lint", "state": "failed", "head_sha": head, "details": "3 warnings"});
        post(&client, &server, "/v1/intents/docs-again/checks", red).await;
        let (_, decision) = post(
            &client,
            &server,
            "/v1/intents/docs-again/validate",
            json!({}),
        )
        .await;
        assert_eq!(
            (decision["kind"].as_str(), decision["reason"].as_str()),
            (Some("checks_failed"), Some("Checks failed: ['lint']"))
        );

        let (_, decision) = post(&client, &server, "/v1/intents/clash/validate", json!({})).await;
        assert_eq!(
            (decision["kind"].as_str(), decision["reason"].as_str()),
            (Some("conflict"), Some("Merge conflicts: src/app/main.rs")),
            "{decision}"
        );

        // The review explains the clash and keeps the history.
        let review: Value = get(&client, &server, "/v1/risk/review?intent_id=clash").await;
        let codes: Vec<&str> = review["diagnostics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["code"].as_str())
            .collect();
        assert_eq!(codes.first(), Some(&"diag.merge_conflict"), "{review}");
        assert!(
            review["decision_history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|e| e["event_type"] == "intent.blocked"))
        );
        let review: Value = get(&client, &server, "/v1/risk/review?intent_id=docs").await;
        assert!(
            review["risk"]["risk_score"].is_f64() && review["policy"]["verdict"] == "ALLOW",
            "{review}"
        );
        // The same evaluation's impacts and findings, and the verdict among the latest.
        let impact: Value = get(&client, &server, "/v1/impact/edges?intent_id=docs").await;
        assert_eq!(
            impact["impact_edges"], review["risk"]["impact_edges"],
            "{impact}"
        );
        assert!(impact["evaluated_at"].is_string(), "{impact}");
        let findings: Value = get(&client, &server, "/v1/diagnostics/recent?intent_id=docs").await;
        assert_eq!(
            findings["findings"], review["risk"]["findings"],
            "{findings}"
        );
        assert!(
            findings["findings"]
                .as_array()
                .is_some_and(|f| !f.is_empty()),
            "a change to docs has findings: {findings}"
        );
        let recent: Value = get(&client, &server, "/v1/policy/recent").await;
        let verdicts: Vec<(&str, &str)> = recent["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["event_type"].as_str().unwrap_or_default(),
                    e["intent_id"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            verdicts.first(),
            Some(&("policy.evaluated", "docs")),
            "{recent}"
        );
        assert!(verdicts.iter().all(|(t, _)| *t == "policy.evaluated"));

        let (_, decision) = post(&client, &server, "/v1/intents/gone/validate", json!({})).await;
        assert_eq!(
            (decision["kind"].as_str(), decision["reason"].as_str()),
            (Some("missing_ref"), Some("Unknown ref 'feature/deleted'"))
        );

        let (status, body) = post(
            &client,
            &server,
            "/v1/intents/docs/checks",
            json!({"name": "lint", "state": "green", "head_sha": head}),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request"))
        );
    }

    // Without a repository, validation says so instead of guessing.
    let elsewhere = tempfile::tempdir().unwrap();
    let env = [(
        "CONVERGE_DB_PATH",
        elsewhere.path().join("s.db").display().to_string(),
    )];
    let server = serve(elsewhere.path(), &env);
    post(
        &client,
        &server,
        "/v1/intents",
        json!({"id": "x", "source": "feature/docs"}),
    )
    .await;
    let (status, body) = post(&client, &server, "/v1/intents/x/validate", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("not_configured")),
        "{body}"
    );
    // Simulating and running the queue name what to set the same way: a permanent gap in
    // the configuration is the caller's to fix, not an outage to retry (4xx, not 503).
    for path in ["/v1/intents/x/simulate", "/v1/queue/run"] {
        let (status, body) = post(&client, &server, path, json!({})).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 422, "{path}: {body}");
        assert!(
            message.contains("CONVERGE_REPO_PATH") && message.contains("CONVERGE_GITHUB_APP_ID"),
            "{path}: {body}"
        );
    }
}
