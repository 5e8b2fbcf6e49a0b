//! Writes that decide from what they read, raced for real: many clients at once against
//! `converge serve` on SQLite and PostgreSQL. A decision commits only if what it read is
//! still current, so an acknowledged write is never silently overwritten.

use converge_github::signature::{WebhookSecret, sign};
use converge_testkit::ServerProcess;
use converge_testkit::github_fake::{GithubFake, app_key_pair};
use serde_json::{Value, json};

const KEY: &str = "race-key";
const SECRET: &str = "race-secret";
/// The intent of the pull request the webhook races are about (`opened`).
const RACED_PR: &str = "acme/race:pr-31";

async fn databases(dir: &std::path::Path) -> Vec<Vec<(&'static str, String)>> {
    converge_testkit::server_databases(dir, "race.db").await
}

fn serve(dir: &std::path::Path, database: &[(&'static str, String)]) -> ServerProcess {
    serve_with(dir, database, Vec::new())
}

/// `converge serve` on `database` (no worker), with `more` settings.
fn serve_with(
    dir: &std::path::Path,
    database: &[(&'static str, String)],
    more: Vec<(&'static str, String)>,
) -> ServerProcess {
    let mut env = database.to_vec();
    env.push(("CONVERGE_API_KEYS", format!("{KEY}:admin:ops")));
    env.push(("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()));
    env.push(("CONVERGE_GITHUB_WEBHOOK_SECRET", SECRET.to_owned()));
    env.extend(more);
    ServerProcess::start_with(env!("CARGO_BIN_EXE_converge"), dir, &env, &["--no-worker"])
}

/// The events of `event_type` recorded (for `intent_id`, when given).
async fn events_of(
    client: &reqwest::Client,
    server: &ServerProcess,
    intent_id: Option<&str>,
    event_type: &str,
) -> Vec<Value> {
    let mut path = format!("/v1/events?type={event_type}&limit=1000");
    if let Some(id) = intent_id {
        path += &format!("&intent_id={}", id.replace('/', "%2F").replace(':', "%3A"));
    }
    let answer = get_json(client, server, &path).await;
    answer["events"].as_array().cloned().unwrap_or_default()
}

/// `GET path` as the admin key; the answer's JSON.
async fn get_json(client: &reqwest::Client, server: &ServerProcess, path: &str) -> Value {
    client
        .get(server.url(path))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `POST path` with a JSON `body` as the admin key.
fn post_json(
    client: &reqwest::Client,
    server: &ServerProcess,
    path: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    client
        .post(server.url(path))
        .header("x-api-key", KEY)
        .json(body)
}

/// A `pull_request` delivery of `event` with its id, signed with the server's secret.
fn pull_request_delivery(
    client: &reqwest::Client,
    server: &ServerProcess,
    event: &Value,
    delivery: String,
) -> reqwest::RequestBuilder {
    github_delivery(client, server, "pull_request", event, delivery)
}

/// A delivery of GitHub's `kind` of event with its id, signed with the server's secret.
fn github_delivery(
    client: &reqwest::Client,
    server: &ServerProcess,
    kind: &str,
    event: &Value,
    delivery: String,
) -> reqwest::RequestBuilder {
    let body = serde_json::to_vec(event).unwrap();
    let signature = sign(&WebhookSecret::new(SECRET), &body);
    client
        .post(server.url("/integrations/github/webhook"))
        .header("x-github-event", kind)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
}

/// Waits for every task; their results in order.
async fn all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_concurrent_creates_of_one_id_acknowledge_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let server = serve(dir.path(), &database);
        let client = reqwest::Client::new();
        let id = "race-create";
        let tasks: Vec<_> = (0..40)
            .map(|n| {
                // Each client sends its own body: a lost write would show as another source.
                let body = json!({"id": id, "source": format!("feature-{n}"), "target": "main"});
                let request = post_json(&client, &server, "/v1/intents", &body);
                tokio::spawn(async move {
                    let response = request.send().await.unwrap();
                    (response.status().as_u16(), n)
                })
            })
            .collect();
        let answers = all(tasks).await;
        let created: Vec<usize> = answers
            .iter()
            .filter(|(status, _)| *status == 201)
            .map(|(_, n)| *n)
            .collect();
        let refused = answers.iter().filter(|(status, _)| *status == 409).count();
        assert_eq!(
            (created.len(), refused),
            (1, 39),
            "{database:?}: one 201 and 39 × 409, got {answers:?}"
        );

        let created_events = events_of(&client, &server, Some(id), "intent.created").await;
        assert_eq!(created_events.len(), 1, "{database:?}");
        // The intent is the one that was acknowledged, not a later writer's.
        let intent = get_json(&client, &server, &format!("/v1/intents/{id}")).await;
        assert_eq!(
            intent["source"],
            json!(format!("feature-{}", created[0])),
            "{database:?}"
        );
    }
}

fn opened(delivery: usize) -> Value {
    json!({
        "action": "opened",
        "number": 31,
        "pull_request": {
            "number": 31, "title": "Race", "draft": false, "merged": false,
            "head": {"ref": "race", "sha": "a1b2c3d4"},
            "base": {"ref": "main", "sha": "base0"},
            "labels": [],
            // Distinct bodies: each delivery is its own, not a redelivery of the first.
            "body": format!("delivery {delivery}")
        },
        "repository": {"full_name": "acme/race"},
        "installation": {"id": 77},
        "sender": {"login": "octocat"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_deliveries_for_one_new_pull_request_create_it_once() {
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let server = serve(dir.path(), &database);
        let client = reqwest::Client::new();
        let tasks: Vec<_> = (0..200)
            .map(|n| {
                let request = pull_request_delivery(
                    &client,
                    &server,
                    &opened(n),
                    format!("race-delivery-{n}"),
                );
                tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
            })
            .collect();
        let statuses = all(tasks).await;
        let accepted = statuses.iter().filter(|s| **s < 300).count();
        assert_eq!(accepted, 200, "{database:?}: {statuses:?}");

        let created = events_of(&client, &server, Some(RACED_PR), "intent.created").await;
        let deliveries: Vec<&Value> = created
            .iter()
            .map(|e| &e["evidence"]["delivery_id"])
            .collect();
        assert_eq!(created.len(), 1, "{database:?}: created by {deliveries:?}");
        // Every delivery was recorded; the 199 after the first found nothing to change.
        let received = events_of(&client, &server, None, "webhook.received").await;
        assert_eq!(received.len(), 200, "{database:?}");
    }
}

/// Sends `request` in a task of its own: its status and JSON answer (null if none).
fn send_answered(request: reqwest::RequestBuilder) -> tokio::task::JoinHandle<(u16, Value)> {
    tokio::spawn(async move {
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        (status, answer.json::<Value>().await.unwrap_or(Value::Null))
    })
}

/// What priority changes of one intent sent at once must leave: every one answered `ok`; one
/// `intent.priority_changed` per change applied (its answer's `result_field` says `applied`),
/// each decided from the priority the change before it set; and the intent at the last one.
async fn assert_changes_chain(
    client: &reqwest::Client,
    server: &ServerProcess,
    database: &[(&'static str, String)],
    intent_id: &str,
    (ok, result_field): (u16, &str),
    answers: &[(u16, Value)],
) {
    let refused: Vec<&(u16, Value)> = answers.iter().filter(|(s, _)| *s != ok).collect();
    assert!(refused.is_empty(), "{database:?}: {refused:?}");
    let applied = answers
        .iter()
        .filter(|(_, body)| body[result_field] == "applied")
        .count();
    let changes = events_of(client, server, Some(intent_id), "intent.priority_changed").await;
    assert_eq!(changes.len(), applied, "{database:?}: {answers:?}");
    assert!(applied > 0, "{database:?}: nothing changed the priority");
    // Newest first: each change was decided from the priority the change before it set.
    for pair in changes.windows(2) {
        assert_eq!(
            pair[0]["payload"]["previous"], pair[1]["payload"]["priority"],
            "{database:?}: {changes:?}"
        );
    }
    let path = format!(
        "/v1/intents/{}",
        intent_id.replace('/', "%2F").replace(':', "%3A")
    );
    let intent = get_json(client, server, &path).await;
    assert_eq!(
        intent["priority"], changes[0]["payload"]["priority"],
        "{database:?}: {intent}"
    );
}

/// Sixty label changes of one open pull request, delivered at once: each is decided from the
/// intent as the one before it left it, so every delivery lands (none is refused as stale
/// after its retries), every change it decided is recorded, and the intent ends as the last
/// recorded change set it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_concurrent_label_changes_of_one_pull_request_all_land_in_order() {
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let server = serve(dir.path(), &database);
        let client = reqwest::Client::new();
        let deliver = |event: Value, delivery: String| {
            send_answered(pull_request_delivery(&client, &server, &event, delivery))
        };
        let (status, _) = deliver(opened(0), "label-race-open".to_owned())
            .await
            .unwrap();
        assert_eq!(status, 202, "{database:?}");

        let tasks: Vec<_> = (0..60)
            .map(|n| {
                let mut event = opened(n);
                event["action"] = json!("labeled");
                let label = format!("converge/priority-{}", n % 3 + 1);
                event["pull_request"]["labels"] = json!([{ "name": label }]);
                deliver(event, format!("label-race-{n}"))
            })
            .collect();
        let answers = all(tasks).await;
        let expected = (202, "result");
        assert_changes_chain(&client, &server, &database, RACED_PR, expected, &answers).await;
    }
}

/// Ten copies of one push (each its own delivery) racing sixty label changes of the pushed pull
/// request: the push sends the validated intent back to READY at the new head exactly once (each
/// push commits only while the intent is at the version it read, and decides again otherwise),
/// every delivery lands, and the label changes still chain in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_pushes_racing_sixty_label_changes_requeue_the_intent_once() {
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let server = serve(dir.path(), &database);
        let client = reqwest::Client::new();
        let (status, _) = send_answered(pull_request_delivery(
            &client,
            &server,
            &opened(0),
            "push-race-open".to_owned(),
        ))
        .await
        .unwrap();
        assert_eq!(status, 202, "{database:?}");
        let validate = json!({"intent_id": RACED_PR, "set_status": "VALIDATED"});
        let validated = send_answered(post_json(&client, &server, "/v1/queue/reset", &validate));
        assert_eq!(validated.await.unwrap().0, 200, "{database:?}");

        let push = json!({"ref": "refs/heads/race", "after": "e5f6a7b8",
                          "repository": {"full_name": "acme/race"}});
        let mut tasks = Vec::new();
        for n in 0..60 {
            let mut event = opened(n);
            event["action"] = json!("labeled");
            let label = format!("converge/priority-{}", n % 3 + 1);
            event["pull_request"]["labels"] = json!([{ "name": label }]);
            let delivery = format!("push-race-label-{n}");
            tasks.push(send_answered(pull_request_delivery(
                &client, &server, &event, delivery,
            )));
            if n % 6 == 0 {
                let delivery = format!("push-race-push-{n}");
                tasks.push(send_answered(github_delivery(
                    &client, &server, "push", &push, delivery,
                )));
            }
        }
        let answers = all(tasks).await;
        let (pushes, labels): (Vec<_>, Vec<_>) = answers
            .into_iter()
            .partition(|(_, body)| body.get("revalidated").is_some());
        assert_eq!(pushes.len(), 10, "{database:?}: {pushes:?}");
        assert!(
            pushes.iter().all(|(status, _)| *status == 202),
            "{database:?}: {pushes:?}"
        );
        let requeued = events_of(&client, &server, Some(RACED_PR), "intent.requeued").await;
        assert_eq!(requeued.len(), 1, "{database:?}: {requeued:?}");
        let revalidating: Vec<&(u16, Value)> = pushes
            .iter()
            .filter(|(_, body)| body["revalidated"] == json!([RACED_PR]))
            .collect();
        assert_eq!(revalidating.len(), 1, "{database:?}: {pushes:?}");
        let intent = get_json(&client, &server, "/v1/intents/acme%2Frace:pr-31").await;
        assert_eq!(
            (
                &intent["status"],
                &intent["technical"]["initial_base_commit"]
            ),
            (&json!("READY"), &json!("e5f6a7b8")),
            "{database:?}: {intent}"
        );
        let expected = (202, "result");
        assert_changes_chain(&client, &server, &database, RACED_PR, expected, &labels).await;
    }
}

/// Sixty priority commands for one intent through the API at once: each is decided from the
/// intent as the one before left it (under its lock), so every one is answered 200, none 409
/// for a concurrent change, and the recorded changes chain from one priority to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_concurrent_commands_for_one_intent_are_all_decided_in_order() {
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let server = serve(dir.path(), &database);
        let client = reqwest::Client::new();
        let body = json!({"id": "commanded", "source": "feature-c", "target": "main"});
        let created = post_json(&client, &server, "/v1/intents", &body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 201, "{database:?}");

        let tasks: Vec<_> = (0..60)
            .map(|n| {
                let body = json!({"command": "priority", "priority": n % 3 + 1});
                send_answered(post_json(
                    &client,
                    &server,
                    "/v1/intents/commanded/command",
                    &body,
                ))
            })
            .collect();
        let answers = all(tasks).await;
        let expected = (200, "result");
        assert_changes_chain(&client, &server, &database, "commanded", expected, &answers).await;
    }
}

/// Sixty `@converge priority N` comments by a writer on one pull request, delivered at once:
/// GitHub is asked whether the author may write, then each command is decided from the intent
/// as the one before left it (under its lock), so every delivery lands (none is refused as
/// stale after its retries) and the recorded changes chain from one priority to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_concurrent_comment_commands_on_one_pull_request_all_land_in_order() {
    let (private_pem, public_pem) = app_key_pair();
    let fake = GithubFake::start(7, &public_pem).await;
    fake.set_permission("acme/race", "maintainer", "write");
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let app = vec![
            ("CONVERGE_GITHUB_APP_ID", "7".to_owned()),
            ("CONVERGE_GITHUB_APP_PRIVATE_KEY", private_pem.clone()),
            ("CONVERGE_GITHUB_API_URL", fake.url().to_owned()),
        ];
        let server = serve_with(dir.path(), &database, app);
        let client = reqwest::Client::new();
        let deliver = |kind: &str, event: Value, delivery: String| {
            send_answered(github_delivery(&client, &server, kind, &event, delivery))
        };
        let (status, _) = deliver("pull_request", opened(0), "comment-race-open".to_owned())
            .await
            .unwrap();
        assert_eq!(status, 202, "{database:?}");

        let tasks: Vec<_> = (0..60)
            .map(|n| {
                let comment = json!({
                    "action": "created",
                    "issue": {"number": 31, "pull_request": {"url": "https://example.invalid/pulls/31"}},
                    "comment": {"id": 5_000 + n, "body": format!("@converge priority {}", n % 3 + 1),
                                "user": {"login": "maintainer"}},
                    "repository": {"full_name": "acme/race"},
                    "installation": {"id": 77}
                });
                deliver("issue_comment", comment, format!("comment-race-{n}"))
            })
            .collect();
        let answers = all(tasks).await;
        let expected = (202, "command_result");
        assert_changes_chain(&client, &server, &database, RACED_PR, expected, &answers).await;
    }
}

/// Posts `body` to `/v1/intents` as `key`, with an Idempotency-Key; status, replay header, body.
async fn post_idempotent(
    client: &reqwest::Client,
    server: &ServerProcess,
    api_key: &str,
    idempotency_key: &str,
    body: &Value,
) -> (u16, bool, Value) {
    let response = client
        .post(server.url("/v1/intents"))
        .header("x-api-key", api_key)
        .header("idempotency-key", idempotency_key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (
        status,
        replayed,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_post_with_an_idempotency_key_gets_the_first_answer_and_does_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let mut env = database.clone();
        env.push((
            "CONVERGE_API_KEYS",
            format!("{KEY}:admin:ops,other-key:admin:someone-else"),
        ));
        env.push(("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()));
        let server = ServerProcess::start_with(
            env!("CARGO_BIN_EXE_converge"),
            dir.path(),
            &env,
            &["--no-worker"],
        );
        let client = reqwest::Client::new();
        // No id in the body: the server makes one, so a second run would be a second intent.
        let body = json!({"source": "feature/retry", "target": "main"});
        let (status, replayed, first) = post_idempotent(&client, &server, KEY, "k-1", &body).await;
        assert_eq!((status, replayed), (201, false), "{database:?}: {first}");
        let (status, replayed, again) = post_idempotent(&client, &server, KEY, "k-1", &body).await;
        assert_eq!((status, replayed), (201, true), "{database:?}");
        assert_eq!(again, first, "{database:?}");

        // The same key with another request is refused, and does nothing.
        let other_body = json!({"source": "feature/other"});
        let (status, _, refused) = post_idempotent(&client, &server, KEY, "k-1", &other_body).await;
        assert_eq!(status, 422, "{database:?}: {refused}");

        // Another caller's key of the same name is its own.
        let (status, replayed, theirs) =
            post_idempotent(&client, &server, "other-key", "k-1", &body).await;
        assert_eq!((status, replayed), (201, false), "{database:?}");
        assert_ne!(theirs["intent_id"], first["intent_id"]);

        // Ten concurrent copies of one new request: one runs, the rest replay or wait.
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let client = client.clone();
                let url = server.url("/v1/intents");
                tokio::spawn(async move {
                    let response = client
                        .post(url)
                        .header("x-api-key", KEY)
                        .header("idempotency-key", "k-burst")
                        .json(&json!({"source": "feature/burst"}))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    (
                        status,
                        response.json::<Value>().await.unwrap_or(Value::Null),
                    )
                })
            })
            .collect();
        let answers = all(tasks).await;
        let created: std::collections::BTreeSet<String> = answers
            .iter()
            .filter(|(status, _)| *status == 201)
            .map(|(_, body)| body["intent_id"].to_string())
            .collect();
        assert_eq!(created.len(), 1, "{database:?}: {answers:?}");
        assert!(
            answers
                .iter()
                .all(|(status, _)| *status == 201 || *status == 409),
            "{answers:?}"
        );

        let listed = get_json(&client, &server, "/v1/intents?limit=100").await;
        assert_eq!(
            listed["intents"].as_array().map(Vec::len),
            Some(3),
            "{database:?}: one intent per request that ran: {listed}"
        );
    }
}
