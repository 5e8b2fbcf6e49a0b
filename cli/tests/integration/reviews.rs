//! Review tasks over HTTP and through the CLI against a live `converge serve`, on both
//! backends: the life cycle with its events, what the life cycle refuses (409), bad input
//! (400 naming the field), roles and tenants (another tenant's task is 404), the summary, and
//! two concurrent completions of one task landing once.

use serde_json::{Value, json};

use crate::operator_cli::converge;

use crate::audit_export::{ACME, ACME_VIEWER, GLOBEX};
use crate::freezes::call;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_tasks_live_their_life_cycle_with_tenants_roles_and_events_on_both_backends() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "reviews.db").await {
        let server = crate::audit_export::tenants_server(dir.path(), &database);
        let c = |key: &'static str, method: &'static str, path: String, body: Option<Value>| {
            let client = client.clone();
            let server = &server;
            async move { call(&client, server, key, method, &path, body).await }
        };
        for (key, id, level) in [
            (ACME, "acme-1", "high"),
            (ACME, "acme-2", "low"),
            (GLOBEX, "globex-1", "medium"),
        ] {
            let (status, body) = c(
                key,
                "POST",
                "/v1/intents".into(),
                Some(json!({"id": id, "source": format!("{id}-branch"), "risk_level": level})),
            )
            .await;
            assert_eq!(status, 201, "{body}");
        }

        // Requested: pending, due by its level's SLA (high: 24 h), an event of the tenant.
        let (status, task) = c(
            ACME,
            "POST",
            "/v1/reviews".into(),
            Some(json!({"intent_id": "acme-1"})),
        )
        .await;
        assert_eq!(status, 201, "{task}");
        assert_eq!(
            (task["status"].as_str(), task["trigger"].as_str()),
            (Some("pending"), Some("policy"))
        );
        assert_eq!(task["tenant_id"], "acme");
        let created =
            chrono::DateTime::parse_from_rfc3339(task["created_at"].as_str().unwrap()).unwrap();
        let due =
            chrono::DateTime::parse_from_rfc3339(task["sla_deadline"].as_str().unwrap()).unwrap();
        assert_eq!(due - created, chrono::Duration::hours(24));
        let id = task["id"].as_str().unwrap().to_owned();

        // Roles and tenants.
        let (status, _) = c(
            ACME_VIEWER,
            "POST",
            "/v1/reviews".into(),
            Some(json!({"intent_id": "acme-1"})),
        )
        .await;
        assert_eq!(status, 403);
        let (status, _) = c(
            GLOBEX,
            "POST",
            "/v1/reviews".into(),
            Some(json!({"intent_id": "acme-1"})),
        )
        .await;
        assert_eq!(
            status, 404,
            "another tenant's intent is not there for globex"
        );
        let (status, _) = c(
            GLOBEX,
            "POST",
            format!("/v1/reviews/{id}/assign"),
            Some(json!({"reviewer": "mallory"})),
        )
        .await;
        assert_eq!(status, 404);
        let (_, theirs) = c(GLOBEX, "GET", "/v1/reviews?tenant_id=acme".into(), None).await;
        assert_eq!(theirs["reviews"], json!([]));
        let (status, listed) = c(ACME_VIEWER, "GET", "/v1/reviews".into(), None).await;
        assert_eq!(status, 200);
        assert_eq!(listed["reviews"][0]["id"], id.as_str());

        // Assigned, reassigned, completed with a rejection; then nothing more.
        let (status, assigned) = c(
            ACME,
            "POST",
            format!("/v1/reviews/{id}/assign"),
            Some(json!({"reviewer": "ana"})),
        )
        .await;
        assert_eq!(
            (status, assigned["status"].as_str()),
            (200, Some("assigned")),
            "{assigned}"
        );
        let (_, reassigned) = c(
            ACME,
            "POST",
            format!("/v1/reviews/{id}/assign"),
            Some(json!({"reviewer": "bo"})),
        )
        .await;
        assert_eq!(reassigned["reviewer"], "bo");
        let (status, done) = c(
            ACME,
            "POST",
            format!("/v1/reviews/{id}/complete"),
            Some(json!({"resolution": "rejected", "notes": "needs a test"})),
        )
        .await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(
            (done["status"].as_str(), done["resolution"].as_str()),
            (Some("completed"), Some("rejected"))
        );
        for (action, body) in [
            ("complete", Some(json!({}))),
            ("cancel", None),
            ("escalate", None),
            ("assign", Some(json!({"reviewer": "cy"}))),
        ] {
            let (status, answer) =
                c(ACME, "POST", format!("/v1/reviews/{id}/{action}"), body).await;
            assert_eq!(status, 409, "{action}: {answer}");
        }

        // Bad input names the field; an unknown task or intent is 404.
        for (path, body, field) in [
            (
                "/v1/reviews".to_owned(),
                json!({"intent_id": "acme-2", "trigger": "boss"}),
                "trigger",
            ),
            (
                "/v1/reviews".to_owned(),
                json!({"intent_id": "acme-2", "reviewer": "  "}),
                "reviewer",
            ),
            (
                "/v1/reviews".to_owned(),
                json!({"intent_id": "acme-2", "priority": 11}),
                "priority",
            ),
            (
                "/v1/reviews".to_owned(),
                json!({"intent_id": "acme-2", "deadline": "soon"}),
                "deadline",
            ),
            (
                format!("/v1/reviews/{id}/complete"),
                json!({"resolution": "maybe"}),
                "resolution",
            ),
        ] {
            let (status, answer) = c(ACME, "POST", path.clone(), Some(body.clone())).await;
            assert_eq!(status, 400, "{path} {body}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(field), "{body}: {message}");
        }
        let (status, _) = c(
            ACME,
            "POST",
            "/v1/reviews".into(),
            Some(json!({"intent_id": "nope"})),
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = c(ACME, "POST", "/v1/reviews/rev-nope/cancel".into(), None).await;
        assert_eq!(status, 404);

        // A second task, escalated by hand; a third cancelled. The summary counts them.
        let (_, second) = c(ACME, "POST", "/v1/reviews".into(),
            Some(json!({"intent_id": "acme-2", "reviewer": "ana", "trigger": "manual", "priority": 1}))).await;
        assert_eq!(
            (second["status"].as_str(), second["priority"].as_i64()),
            (Some("assigned"), Some(1))
        );
        let second_id = second["id"].as_str().unwrap();
        let (status, escalated) = c(
            ACME,
            "POST",
            format!("/v1/reviews/{second_id}/escalate"),
            Some(json!({"reason": "urgent"})),
        )
        .await;
        assert_eq!(
            (status, escalated["status"].as_str()),
            (200, Some("escalated"))
        );
        let (_, third) = c(
            ACME,
            "POST",
            "/v1/reviews".into(),
            Some(json!({"intent_id": "acme-2"})),
        )
        .await;
        let third_id = third["id"].as_str().unwrap();
        let (status, cancelled) =
            c(ACME, "POST", format!("/v1/reviews/{third_id}/cancel"), None).await;
        assert_eq!(
            (status, cancelled["status"].as_str()),
            (200, Some("cancelled"))
        );
        let (_, summary) = c(ACME_VIEWER, "GET", "/v1/reviews/summary".into(), None).await;
        assert_eq!(summary["total"], 3, "{summary}");
        assert_eq!(
            summary["by_status"],
            json!({"cancelled": 1, "completed": 1, "escalated": 1})
        );
        assert_eq!(summary["by_reviewer"], json!({"ana": 1, "bo": 1}));
        assert_eq!(summary["sla_breached"], 0);
        let (_, filtered) = c(
            ACME,
            "GET",
            "/v1/reviews?status=escalated&reviewer=ana".into(),
            None,
        )
        .await;
        assert_eq!(filtered["reviews"].as_array().map(Vec::len), Some(1));
        let (status, _) = c(ACME, "GET", "/v1/reviews?status=lost".into(), None).await;
        assert_eq!(status, 400);
        let (_, globex_summary) = c(GLOBEX, "GET", "/v1/reviews/summary".into(), None).await;
        assert_eq!(globex_summary["total"], 0);

        // Every change is an event on the intent.
        let (_, events) = c(ACME, "GET", "/v1/intents/acme-1/events".into(), None).await;
        let types: Vec<&str> = events["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["event_type"].as_str())
            .filter(|t| t.starts_with("review."))
            .collect();
        assert_eq!(
            types,
            [
                "review.completed",
                "review.reassigned",
                "review.assigned",
                "review.requested"
            ]
        );

        // Two completions of one task at once: one lands, the other is a 409.
        let (_, fourth) = c(
            ACME,
            "POST",
            "/v1/reviews".into(),
            Some(json!({"intent_id": "acme-2"})),
        )
        .await;
        let fourth_id = fourth["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/reviews/{fourth_id}/complete");
        let (a, b) = tokio::join!(
            c(
                ACME,
                "POST",
                path.clone(),
                Some(json!({"resolution": "approved"}))
            ),
            c(
                ACME,
                "POST",
                path.clone(),
                Some(json!({"resolution": "rejected"}))
            ),
        );
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{a:?} {b:?}");

        // The CLI.
        let cli_env = [
            ("CONVERGE_API_URL", server.url("")),
            ("CONVERGE_API_KEY", ACME.to_owned()),
        ];
        let run = converge(
            &[
                "review",
                "request",
                "--intent-id",
                "acme-2",
                "--reviewer",
                "dee",
                "--json",
            ],
            &cli_env,
        );
        assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
        let cli_id = run.json()["id"].as_str().unwrap().to_owned();
        let run = converge(
            &[
                "review",
                "complete",
                "--id",
                &cli_id,
                "--resolution",
                "approved",
                "--notes",
                "ok",
            ],
            &cli_env,
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let run = converge(&["review", "list", "--reviewer", "dee"], &cli_env);
        assert!(
            run.stdout.contains(&cli_id) && run.stdout.contains("approved"),
            "{}",
            run.stdout
        );
        let run = converge(&["review", "cancel", "--id", &cli_id], &cli_env);
        assert_eq!(
            run.code, 1,
            "a completed task cannot be cancelled: {}",
            run.stderr
        );
        let run = converge(&["review", "summary", "--json"], &cli_env);
        assert_eq!(run.json()["total"], 5);
    }
}
