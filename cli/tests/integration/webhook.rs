//! GitHub deliveries over real HTTP against `converge serve`, on SQLite and PostgreSQL: the
//! signature rules, the size guard, dedupe (also under 100 concurrent copies), and what pull
//! request events do to intents.

use converge_github::signature::{WebhookSecret, sign};
use converge_testkit::ServerProcess;
use serde_json::{Value, json};

const KEY: &str = "hook-key";
const SECRET: &str = "current-secret";

fn serve(
    dir: &std::path::Path,
    database: &[(&'static str, String)],
    extra: &[(&'static str, &str)],
) -> ServerProcess {
    let mut env = database.to_vec();
    env.push(("CONVERGE_API_KEYS", format!("{KEY}:admin:ops")));
    env.push(("CONVERGE_RATE_LIMIT_ENABLED", "1".to_owned()));
    if !extra
        .iter()
        .any(|(name, _)| *name == "CONVERGE_RATE_LIMIT_RPM")
    {
        env.push(("CONVERGE_RATE_LIMIT_RPM", "5".to_owned()));
    }
    for (name, value) in extra {
        env.push((name, (*value).to_owned()));
    }
    ServerProcess::start_with(env!("CARGO_BIN_EXE_converge"), dir, &env, &["--no-worker"])
}

async fn databases(dir: &std::path::Path) -> Vec<Vec<(&'static str, String)>> {
    converge_testkit::server_databases(dir, "s.db").await
}

struct Hook<'a> {
    client: &'a reqwest::Client,
    server: &'a ServerProcess,
}

/// Sends a delivery's headers declaring a body of `length` bytes, and no body; answers the
/// status and the JSON body of the server's answer.
async fn declared_only(server: &ServerProcess, length: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.url("").trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /integrations/github/webhook HTTP/1.1\r\nhost: {address}\r\n\
         x-github-event: pull_request\r\nx-github-delivery: d-big\r\n\
         content-type: application/json\r\nx-hub-signature-256: sha256=00\r\n\
         content-length: {length}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("no answer within 5 s: the server waited for the body")
    .unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

impl Hook<'_> {
    /// Sends `body` as `event` with `delivery`, signed by `secret` (or with `signature` as
    /// given when set).
    async fn send_raw(
        &self,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.server.url("/integrations/github/webhook"))
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("content-type", "application/json");
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, event: &str, delivery: &str, payload: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let signature = sign(&WebhookSecret::new(SECRET), &body);
        self.send_raw(event, delivery, body, Some(signature)).await
    }

    async fn api(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.server.url(path))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap_or(Value::Null)
    }
}

fn pull_request(action: &str, head: &str, labels: &[&str], merged: bool) -> Value {
    let labels: Vec<Value> = labels.iter().map(|l| json!({"name": l})).collect();
    json!({
        "action": action,
        "number": 12,
        "pull_request": {
            "number": 12, "title": "Faster login", "draft": false, "merged": merged,
            "merge_commit_sha": if merged { json!("feedface") } else { Value::Null },
            "head": {"ref": "faster-login", "sha": head},
            "base": {"ref": "main", "sha": "base0"},
            "labels": labels,
            "body": "x".repeat(20_000)
        },
        "repository": {"full_name": "acme/app"},
        "installation": {"id": 77},
        "sender": {"login": "octocat"}
    })
}

/// An intent's commit links (`GET /v1/intents/{id}`), as (sha, role), in the order seen.
fn links_of(intent: &Value) -> Vec<(String, String)> {
    intent["commit_links"]
        .as_array()
        .map(|links| {
            links
                .iter()
                .map(|l| {
                    let text = |field: &str| l[field].as_str().unwrap_or_default().to_owned();
                    (text("sha"), text("role"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn event_count(events: &Value, event_type: &str) -> usize {
    events["events"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|e| e["event_type"] == event_type)
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_size_and_payloads_are_checked_before_anything_is_written() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let secrets = format!("old-secret,{SECRET}");
        let server = serve(
            dir.path(),
            &database,
            &[("CONVERGE_GITHUB_WEBHOOK_SECRET", &secrets)],
        );
        let hook = Hook {
            client: &client,
            server: &server,
        };
        let payload = pull_request("opened", "aaa111", &[], false);
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let good = sign(&WebhookSecret::new(SECRET), &body);

        let wrong = sign(&WebhookSecret::new("guess"), &body);
        let truncated = good[..good.len() - 1].to_owned();
        let sha1 = "sha1=2fd4e1c67a2d28fced849ee1bb76e7391b93eb12".to_owned();
        for (signature, what) in [
            (Some(wrong), "wrong secret"),
            (Some(truncated), "truncated"),
            (Some(sha1), "sha1"),
            (None, "missing"),
        ] {
            let (status, answer) = hook
                .send_raw("pull_request", "d-bad", body.clone(), signature)
                .await;
            assert_eq!(status, 401, "{what}: {answer}");
            assert_eq!(answer["error"]["code"], "invalid_signature", "{what}");
        }
        let empty_signature = sign(&WebhookSecret::new(SECRET), b"");
        let (status, answer) = hook
            .send_raw("pull_request", "d-empty", Vec::new(), Some(empty_signature))
            .await;
        assert_eq!(status, 400, "{answer}");

        // Over the limit: refused from its declared length, before the body is read. (The
        // body is not sent: the server answers and closes without reading it, and a client
        // still writing it would see a broken pipe rather than the answer.)
        let (status, answer) = declared_only(hook.server, 1_048_577).await;
        assert_eq!(
            (status, answer["error"]["code"].clone()),
            (413, json!("payload_too_large")),
            "{answer}"
        );

        // Signed, but not the shape a pull_request delivery has: a 400 naming the field.
        let mut broken = payload.clone();
        if let Some(head) = broken["pull_request"]["head"].as_object_mut() {
            head.remove("sha");
        }
        let (status, answer) = hook.send("pull_request", "d-broken", &broken).await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("pull_request.head") && message.contains("sha"),
            "{message}"
        );

        assert_eq!(
            hook.api("/v1/intents").await["intents"],
            json!([]),
            "nothing was written"
        );
        assert_eq!(
            hook.api("/v1/events").await["events"],
            json!([]),
            "no event was recorded for a refused delivery"
        );
        // Nor was its delivery id spent: signed properly, the same delivery is handled.
        let (status, answer) = hook
            .send_raw("pull_request", "d-bad", body.clone(), Some(good.clone()))
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(
            hook.api("/v1/intents").await["intents"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "the delivery refused before was not taken for a duplicate"
        );

        // The old secret of a rotation still verifies.
        let old = sign(&WebhookSecret::new("old-secret"), &body);
        let (status, answer) = hook
            .send_raw("pull_request", "d-old", body.clone(), Some(old))
            .await;
        assert_eq!(status, 202, "{answer}");
        // Webhooks are not rate limited (the budget here is 5 per minute).
        for n in 0..8 {
            let (status, _) = hook
                .send("ping", &format!("ping-{n}"), &json!({"zen": "x"}))
                .await;
            assert_eq!(status, 202);
        }
    }
    // No secret configured: refused unless authentication is explicitly off.
    let database = databases(dir.path()).await.remove(0);
    let server = serve(dir.path(), &database, &[]);
    let hook = Hook {
        client: &client,
        server: &server,
    };
    let body = serde_json::to_vec(&json!({"zen": "x"})).unwrap_or_default();
    let (status, _) = hook.send_raw("ping", "p-1", body.clone(), None).await;
    assert_eq!(status, 403);
    drop(server);
    let server = serve(dir.path(), &database, &[("CONVERGE_AUTH_REQUIRED", "0")]);
    let hook = Hook {
        client: &client,
        server: &server,
    };
    let (status, answer) = hook.send_raw("ping", "p-2", body, None).await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_events_drive_the_intent_and_copies_change_it_once() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let server = serve(
            dir.path(),
            &database,
            &[
                ("CONVERGE_GITHUB_WEBHOOK_SECRET", SECRET),
                ("CONVERGE_GITHUB_DEFAULT_TENANT", "acme"),
                ("CONVERGE_RATE_LIMIT_RPM", "10000"),
            ],
        );
        let hook = Hook {
            client: &client,
            server: &server,
        };
        let id = "acme%2Fapp:pr-12";

        // 100 concurrent copies of one delivery: one intent change.
        let opened = pull_request("opened", "aaa111", &[], false);
        let url = server.url("/integrations/github/webhook");
        let answers = send_concurrently(&client, url, "delivery-open", &opened, 100).await;
        assert!(
            answers.iter().all(|(status, _)| *status == 202),
            "{answers:?}"
        );
        let fresh = answers
            .iter()
            .filter(|(_, a)| a["duplicate"] != true)
            .count();
        assert_eq!(fresh, 1, "exactly one copy is handled");
        let intent = hook.api(&format!("/v1/intents/{id}")).await;
        assert_eq!(intent["status"], "READY", "{intent}");
        assert_eq!(intent["tenant_id"], "acme");
        assert_eq!(intent["technical"]["initial_base_commit"], "aaa111");
        assert_eq!(intent["technical"]["installation_id"], 77);
        let events = hook.api(&format!("/v1/intents/{id}/events")).await;
        assert_eq!(event_count(&events, "intent.created"), 1, "{events}");
        // Its head is linked to it, and the link announced (as the original).
        assert_eq!(
            links_of(&intent),
            vec![("aaa111".to_owned(), "head".to_owned())]
        );
        assert_eq!(event_count(&events, "intent.linked.commit"), 1, "{events}");

        // A replay later is a duplicate too.
        let (status, answer) = hook.send("pull_request", "delivery-open", &opened).await;
        assert_eq!((status, answer["duplicate"].clone()), (202, json!(true)));

        // The same delivery id with another body is a conflict, and changes nothing.
        let relabeled = pull_request("labeled", "aaa111", &["converge/priority-0"], false);
        let (status, answer) = hook.send("pull_request", "delivery-open", &relabeled).await;
        assert_eq!(
            (status, answer["error"]["code"].clone()),
            (409, json!("conflict")),
            "{answer}"
        );
        let intent = hook.api(&format!("/v1/intents/{id}")).await;
        assert_ne!(
            intent["priority"], 0,
            "the conflicting body was not applied: {intent}"
        );
        let events = hook.api(&format!("/v1/intents/{id}/events")).await;
        assert_eq!(
            events["events"].as_array().map(Vec::len),
            Some(2),
            "only intent.created and intent.linked.commit: {events}"
        );

        // A label raises the priority; a new head starts the intent afresh.
        let labeled = pull_request("labeled", "aaa111", &["converge/priority-0"], false);
        let (status, answer) = hook.send("pull_request", "delivery-label", &labeled).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(hook.api(&format!("/v1/intents/{id}")).await["priority"], 0);
        let pushed = pull_request("synchronize", "bbb222", &["converge/priority-0"], false);
        hook.send("pull_request", "delivery-sync", &pushed).await;
        let intent = hook.api(&format!("/v1/intents/{id}")).await;
        assert_eq!(intent["technical"]["initial_base_commit"], "bbb222");
        assert_eq!(
            (intent["status"].clone(), intent["retries"].clone()),
            (json!("READY"), json!(0))
        );
        // The same head again changes nothing.
        let (_, answer) = hook.send("pull_request", "delivery-sync-2", &pushed).await;
        assert_eq!(answer["result"], "ignored", "{answer}");

        // CI finished on the current head: recorded on the intent, which is judged again.
        let check = json!({"action": "completed", "repository": {"full_name": "acme/app"},
                           "check_run": {"head_sha": "bbb222", "name": "ci/lint", "conclusion": "failure"}});
        let (status, answer) = hook.send("check_run", "delivery-check", &check).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["intents"], json!(["acme/app:pr-12"]), "{answer}");
        let events = hook.api(&format!("/v1/intents/{id}/events")).await;
        assert_eq!(event_count(&events, "check.reported"), 1, "{events}");
        let stale = json!({"action": "completed", "repository": {"full_name": "acme/app"},
                           "check_run": {"head_sha": "aaa111", "name": "ci/lint", "conclusion": "success"}});
        let (_, answer) = hook.send("check_run", "delivery-check-old", &stale).await;
        // An old head's result concerns no intent, and no queue tests that commit: nothing
        // looks again.
        assert_eq!(
            (&answer["result"], &answer["queues"]),
            (&json!("ignored"), &json!(0)),
            "{answer}"
        );
        let events = hook.api(&format!("/v1/intents/{id}/events")).await;
        assert_eq!(event_count(&events, "check.reported"), 1, "{events}");

        // Closed with a merge: MERGED with the merge commit.
        let closed = pull_request("closed", "bbb222", &[], true);
        let (_, answer) = hook.send("pull_request", "delivery-close", &closed).await;
        assert_eq!(answer["result"], "applied", "{answer}");
        let intent = hook.api(&format!("/v1/intents/{id}")).await;
        assert_eq!(intent["status"], "MERGED");
        let events = hook.api(&format!("/v1/intents/{id}/events")).await;
        let merged = events["events"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["event_type"] == "intent.merged"))
            .cloned();
        // With the original's keys and trigger too.
        let payload = merged.map(|e| e["payload"].clone()).unwrap_or_default();
        assert_eq!(
            (
                &payload["merged_commit"],
                &payload["merged"],
                &payload["merge_commit_sha"],
                &payload["trigger"]
            ),
            (
                &json!("feedface"),
                &json!(true),
                &json!("feedface"),
                &json!("github_pr_closed")
            ),
            "{events}"
        );
        // Each head it had and the merge commit are linked to it.
        assert_eq!(
            links_of(&intent),
            vec![
                ("aaa111".to_owned(), "head".to_owned()),
                ("bbb222".to_owned(), "head".to_owned()),
                ("feedface".to_owned(), "merge".to_owned())
            ]
        );

        // Events Converge does not act on are acknowledged.
        let (status, answer) = hook
            .send("star", "delivery-star", &json!({"action": "created"}))
            .await;
        assert_eq!((status, answer["ignored"].clone()), (202, json!("star")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_branch_sends_its_validated_intents_back_to_ready_at_the_new_head() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in databases(dir.path()).await {
        let server = serve(
            dir.path(),
            &database,
            &[
                ("CONVERGE_GITHUB_WEBHOOK_SECRET", SECRET),
                ("CONVERGE_RATE_LIMIT_RPM", "10000"),
            ],
        );
        let hook = Hook {
            client: &client,
            server: &server,
        };
        let id = "acme%2Fapp:pr-12";
        let opened = pull_request("opened", "aaa111", &[], false);
        hook.send("pull_request", "push-open", &opened).await;
        // A pull request of another repository, from a branch of the same name.
        let mut elsewhere = opened.clone();
        elsewhere["repository"]["full_name"] = json!("acme/web");
        hook.send("pull_request", "push-open-web", &elsewhere).await;
        // Validated (set by an operator here: no worker runs in this test).
        let reset = client
            .post(server.url("/v1/queue/reset"))
            .header("x-api-key", KEY)
            .json(&json!({"intent_id": "acme/app:pr-12", "set_status": "VALIDATED"}))
            .send()
            .await
            .unwrap();
        assert_eq!(reset.status().as_u16(), 200);
        assert_eq!(
            hook.api(&format!("/v1/intents/{id}")).await["status"],
            "VALIDATED"
        );

        let push = |name: &str, after: &str| json!({"ref": name, "after": after, "repository": {"full_name": "acme/app"}});
        let (status, answer) = hook
            .send("push", "push-1", &push("refs/heads/faster-login", "ccc333"))
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["revalidated"], json!(["acme/app:pr-12"]), "{answer}");
        let intent = hook.api(&format!("/v1/intents/{id}")).await;
        assert_eq!(
            (
                &intent["status"],
                &intent["technical"]["initial_base_commit"]
            ),
            (&json!("READY"), &json!("ccc333")),
            "{intent}"
        );
        assert!(
            links_of(&intent).contains(&("ccc333".to_owned(), "head".to_owned())),
            "{intent}"
        );
        let events = hook.api(&format!("/v1/intents/{id}/events")).await;
        let requeued: Vec<&Value> = events["events"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|e| e["event_type"] == "intent.requeued")
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(requeued.len(), 1, "{events}");
        assert_eq!(
            requeued[0]["payload"],
            json!({"trigger": "push_revalidation", "branch": "faster-login", "new_head_sha": "ccc333"})
        );

        // The same head pushed again, another branch, a tag: nothing to revalidate.
        for (delivery, name, after) in [
            ("push-2", "refs/heads/faster-login", "ccc333"),
            ("push-3", "refs/heads/other", "ddd444"),
        ] {
            let (_, answer) = hook.send("push", delivery, &push(name, after)).await;
            assert_eq!(answer["revalidated"], json!([]), "{answer}");
        }
        let (_, answer) = hook
            .send("push", "push-4", &push("refs/tags/v1", "eee555"))
            .await;
        assert_eq!(answer["result"], "ignored", "{answer}");
        let events = hook.api(&format!("/v1/intents/{id}/events")).await;
        assert_eq!(event_count(&events, "intent.requeued"), 1, "{events}");
        // The other repository's pull request kept its head.
        let other = hook.api("/v1/intents/acme%2Fweb:pr-12").await;
        assert_eq!(
            other["technical"]["initial_base_commit"], "aaa111",
            "{other}"
        );
    }
}

/// Sends the same signed delivery `copies` times at once; the answers.
async fn send_concurrently(
    client: &reqwest::Client,
    url: String,
    delivery: &str,
    payload: &Value,
    copies: usize,
) -> Vec<(u16, Value)> {
    let body = serde_json::to_vec(payload).unwrap_or_default();
    let signature = sign(&WebhookSecret::new(SECRET), &body);
    let tasks: Vec<_> = (0..copies)
        .map(|_| {
            let request = client
                .post(&url)
                .header("x-github-event", "pull_request")
                .header("x-github-delivery", delivery)
                .header("x-hub-signature-256", &signature)
                .body(body.clone());
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                (
                    status,
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(copies);
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}
