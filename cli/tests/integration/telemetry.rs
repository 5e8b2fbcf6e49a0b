//! Telemetry end to end: an API-only `converge serve` and a `converge worker` on SQS (the AWS
//! emulator) export their spans over OTLP (HTTP/JSON) to a receiver on loopback while a pull
//! request goes from webhook to merge through the GitHub fake. The receiver gets the request,
//! the delivery, the worker's messages and round, and the GitHub calls — one trace across both
//! processes (the queue message carries it), linked parent to child.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use converge_testkit::ServerProcess;
use converge_testkit::git::{commit_file, git};
use converge_testkit::github_fake::{GithubFake, app_key_pair};
use serde_json::{Value, json};

const SECRET: &str = "hook-secret";

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
}

/// A metric data point as the receiver got it: the metric's name, its attributes, and its
/// value (a sum's or gauge's value, a histogram's count).
#[derive(Debug, Clone)]
struct Point {
    name: String,
    attributes: Vec<(String, String)>,
    value: f64,
}

/// The data points of an OTLP/HTTP JSON metrics export.
fn points_of(export: &Value) -> Vec<Point> {
    let mut points = Vec::new();
    for resource in export["resourceMetrics"].as_array().into_iter().flatten() {
        for scope in resource["scopeMetrics"].as_array().into_iter().flatten() {
            for metric in scope["metrics"].as_array().into_iter().flatten() {
                let name = metric["name"].as_str().unwrap_or_default().to_owned();
                for kind in ["sum", "gauge", "histogram"] {
                    for point in metric[kind]["dataPoints"].as_array().into_iter().flatten() {
                        let number = |v: &Value| {
                            v.as_f64()
                                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        };
                        let value = number(&point["asInt"])
                            .or_else(|| number(&point["asDouble"]))
                            .or_else(|| number(&point["count"]))
                            .unwrap_or_default();
                        let attributes = point["attributes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|a| {
                                (
                                    a["key"].as_str().unwrap_or_default().to_owned(),
                                    a["value"]["stringValue"]
                                        .as_str()
                                        .unwrap_or_default()
                                        .to_owned(),
                                )
                            })
                            .collect();
                        points.push(Point {
                            name: name.clone(),
                            attributes,
                            value,
                        });
                    }
                }
            }
        }
    }
    points
}

/// An OTLP/HTTP receiver that keeps every span it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    receiver_with_metrics().await.0
}

/// An OTLP/HTTP receiver that keeps every span and every metric data point it is sent.
async fn receiver_with_metrics() -> ((String, Arc<Mutex<Vec<Span>>>), Arc<Mutex<Vec<Point>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let points: Arc<Mutex<Vec<Point>>> = Arc::default();
    let kept = spans.clone();
    let kept_points = points.clone();
    let app = axum::Router::new()
        .route(
            "/v1/metrics",
            post(move |body: axum::body::Bytes| {
                let kept = kept_points.clone();
                async move {
                    let export: Value = serde_json::from_slice(&body).unwrap_or_default();
                    if let Ok(mut all) = kept.lock() {
                        all.extend(points_of(&export));
                    }
                    axum::Json(json!({}))
                }
            }),
        )
        .route(
            "/v1/traces",
            post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let export: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let mut received = Vec::new();
                    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                            for span in scope["spans"].as_array().into_iter().flatten() {
                                let text =
                                    |k: &str| span[k].as_str().unwrap_or_default().to_owned();
                                received.push(Span {
                                    trace: text("traceId"),
                                    id: text("spanId"),
                                    parent: text("parentSpanId"),
                                    name: text("name"),
                                });
                            }
                        }
                    }
                    if let Ok(mut all) = kept.lock() {
                        all.extend(received);
                    }
                    axum::Json(json!({}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    ((format!("http://{address}"), spans), points)
}

fn spans_named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_to_merge_flow_reaches_an_otlp_receiver_with_its_links() {
    let ((endpoint, spans), points) = receiver_with_metrics().await;
    let (private_pem, public_pem) = app_key_pair();
    let fake = GithubFake::start(7, &public_pem).await;
    let repo = fake.create_repo("acme/app");
    commit_file(&repo, "src/lib.rs", "pub fn f() {}\n", "init");
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    commit_file(&repo, "docs/guide.md", "# Guide\n", "docs");
    // A second pull request whose CI never reports: it waits in the queue, which the depth
    // gauge shows.
    git(&repo, &["checkout", "-q", "-b", "waiting", "main"]);
    commit_file(&repo, "docs/later.md", "# Later\n", "later");
    git(&repo, &["checkout", "-q", "--detach"]);
    let head = git(&repo, &["rev-parse", "feature"]);
    let waiting_head = git(&repo, &["rev-parse", "waiting"]);
    let base = git(&repo, &["rev-parse", "main"]);
    fake.open_pull("acme/app", 5, "feature", "main");
    fake.open_pull("acme/app", 6, "waiting", "main");
    fake.complete_check("acme/app", &head, "ci/lint", "success");

    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        (
            "CONVERGE_DB_PATH",
            dir.path().join("s.db").display().to_string(),
        ),
        ("CONVERGE_API_KEYS", "k:admin:ops".to_owned()),
        ("CONVERGE_GITHUB_WEBHOOK_SECRET", SECRET.to_owned()),
        ("CONVERGE_GITHUB_APP_ID", "7".to_owned()),
        ("CONVERGE_GITHUB_APP_PRIVATE_KEY", private_pem),
        ("CONVERGE_GITHUB_API_URL", fake.url().to_owned()),
        ("CONVERGE_GITHUB_CHECK_MAP", "lint=ci/lint".to_owned()),
        ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_owned()),
        // Export every 100 ms instead of every 5 s, metrics every 200 ms instead of 60 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200".to_owned()),
    ];
    let queue = converge_testkit::sqs::queue_with_dlq("converge-telemetry", 5, 5).await;
    let mut env = env;
    env.push(("CONVERGE_QUEUE_URL", queue.url.clone()));
    env.push(("CONVERGE_WORKER_POLL_INTERVAL", "1".to_owned()));
    // The sweep counts the queues' depth: every second here.
    env.push(("CONVERGE_WORKER_SWEEP_INTERVAL", "1".to_owned()));
    let server = ServerProcess::start_with(
        env!("CARGO_BIN_EXE_converge"),
        dir.path(),
        &env,
        &["--no-worker"],
    );
    let mut worker = converge_testkit::KilledOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
            .arg("worker")
            .current_dir(dir.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start converge worker: {e}")),
    );
    let opened = json!({
        "action": "opened",
        "pull_request": {"number": 5, "title": "Docs", "head": {"ref": "feature", "sha": head},
                         "base": {"ref": "main", "sha": base}},
        "repository": {"full_name": "acme/app"},
        "installation": {"id": 31}
    });
    let (status, answer) = fake
        .send_webhook(
            &server.url("/integrations/github/webhook"),
            SECRET,
            "pull_request",
            "d-1",
            &opened,
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let waiting = json!({
        "action": "opened",
        "pull_request": {"number": 6, "title": "Later", "head": {"ref": "waiting", "sha": waiting_head},
                         "base": {"ref": "main", "sha": base}},
        "repository": {"full_name": "acme/app"},
        "installation": {"id": 31}
    });
    let (status, answer) = fake
        .send_webhook(
            &server.url("/integrations/github/webhook"),
            SECRET,
            "pull_request",
            "d-2",
            &waiting,
        )
        .await;
    assert_eq!(status, 202, "{answer}");

    // The merge happens, and its spans arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    let complete = |all: &[Span]| {
        !fake.ref_updates().is_empty()
            && [
                "http.request",
                "webhook.delivery",
                "sqs.messages",
                "queue.round",
                "github.call",
            ]
            .iter()
            .all(|name| !spans_named(all, name).is_empty())
            && spans_named(all, "github.call").len() >= 3
    };
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen = spans.lock().map(|s| s.clone()).unwrap_or_default();
        if complete(&seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(complete(&seen), "spans received: {seen:?}");

    // The delivery is a child of its request, in the same trace.
    let delivery = spans_named(&seen, "webhook.delivery")[0];
    let request = seen
        .iter()
        .find(|s| s.id == delivery.parent)
        .unwrap_or_else(|| panic!("the delivery's parent was not exported: {seen:?}"));
    assert_eq!(request.name, "http.request");
    assert_eq!(request.trace, delivery.trace);
    assert!(
        request.parent.is_empty(),
        "the request is a root: {request:?}"
    );
    // The merge's GitHub calls are children of the queue round that made them.
    let rounds: Vec<&Span> = spans_named(&seen, "queue.round");
    let calls_in_rounds = spans_named(&seen, "github.call")
        .into_iter()
        .filter(|call| {
            rounds
                .iter()
                .any(|round| round.id == call.parent && round.trace == call.trace)
        })
        .count();
    assert!(calls_in_rounds >= 3, "github calls under a round: {seen:?}");
    // The worker's messages continue the webhook's trace, under its delivery.
    let continued = spans_named(&seen, "sqs.messages")
        .into_iter()
        .any(|messages| messages.trace == delivery.trace && messages.parent == delivery.id);
    assert!(
        continued,
        "the round did not continue the delivery's trace: {seen:?}"
    );
    let round = rounds
        .iter()
        .find(|r| r.trace == delivery.trace)
        .unwrap_or_else(|| panic!("no round in the delivery's trace: {seen:?}"));
    assert!(
        spans_named(&seen, "sqs.messages")
            .iter()
            .any(|m| m.id == round.parent),
        "the round is a child of its messages: {round:?}"
    );

    // The worker's queue metrics arrive over OTLP too: the merge, its decision, its wait.
    let queue = ("queue".to_owned(), "acme/app@main".to_owned());
    let merged_counted = |all: &[Point]| {
        let has = |name: &str, attribute: &(String, String)| {
            all.iter()
                .any(|p| p.name == name && p.value >= 1.0 && p.attributes.contains(attribute))
        };
        has("converge.queue.merges", &queue)
            && has("converge.queue.wait", &queue)
            && has(
                "converge.queue.decisions",
                &("outcome".to_owned(), "merged".to_owned()),
            )
            && all.iter().any(|p| {
                p.name == "converge.queue.depth" && p.value >= 1.0 && p.attributes.contains(&queue)
            })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut metrics = Vec::new();
    while Instant::now() < deadline {
        metrics = points.lock().map(|p| p.clone()).unwrap_or_default();
        if merged_counted(&metrics) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(merged_counted(&metrics), "metrics received: {metrics:?}");

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let stopped = worker.wait().unwrap();
    assert!(stopped.success(), "{stopped:?}");
}

/// A request that carries a W3C `traceparent` continues the caller's trace: the server's
/// `http.request` span has the caller's trace id and the caller's span as its parent, and is
/// exported even when the caller did not sample. One without it starts a trace of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_traceparent_is_continued() {
    let (endpoint, spans) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        (
            "CONVERGE_DB_PATH",
            dir.path().join("t.db").display().to_string(),
        ),
        ("CONVERGE_AUTH_REQUIRED", "0".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let server = ServerProcess::start_with(
        env!("CARGO_BIN_EXE_converge"),
        dir.path(),
        &env,
        &["--no-worker"],
    );
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let client = reqwest::Client::new();
    let traced = client
        .get(server.url("/v1/intents"))
        // Flags 00: the caller did not sample; the server records its span all the same.
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-00"))
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 200);
    let untraced = client.get(server.url("/v1/events")).send().await.unwrap();
    assert_eq!(untraced.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(20);
    let requests = loop {
        let requests: Vec<Span> = spans_named(&spans.lock().unwrap(), "http.request")
            .into_iter()
            .cloned()
            .collect();
        if requests.len() >= 2 || Instant::now() > deadline {
            break requests;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let continued: Vec<&Span> = requests
        .iter()
        .filter(|s| s.trace == caller_trace)
        .collect();
    assert_eq!(continued.len(), 1, "{requests:?}");
    assert_eq!(continued[0].parent, caller_span, "{requests:?}");
    assert!(
        requests
            .iter()
            .any(|s| s.trace != caller_trace && s.parent.is_empty()),
        "a request without traceparent starts its own trace: {requests:?}"
    );
}
