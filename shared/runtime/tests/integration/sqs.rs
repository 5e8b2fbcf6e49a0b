//! The SQS side of the queue through the real AWS SDK against the emulator that
//! `scripts/test.sh` starts: outbox relay, the worker function's batch handler (processing,
//! a busy key queued again with a delay, a malformed message and a failed round reported as
//! batch item failures, poison messages redriven to the DLQ) and the sweep.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use converge_core::pipeline::Clock;
use converge_core::queue::QueueKey;
use converge_core::{Event, EventType, Intent, PolicyConfig, Status};
use converge_runtime::local_git::GitScm;
use converge_runtime::queue_worker::{QueueProcessor, WorkerSettings, queue_message};
use converge_runtime::sqs::{SqsQueue, handle_batch, handle_event};
use converge_store::{Commit, Store, SystemClock};
use converge_testkit::git::{commit_file, git};
use serde_json::{Value, json};

struct Queues {
    sqs: aws_sdk_sqs::Client,
    url: String,
    dlq_url: String,
    queue: SqsQueue,
}

async fn queues(name: &str) -> Queues {
    let created = converge_testkit::sqs::queue_with_dlq(name, 0, 2).await;
    Queues {
        queue: SqsQueue::new(created.client.clone(), &created.url),
        sqs: created.client,
        url: created.url,
        dlq_url: created.dlq_url,
    }
}

/// Messages as the event source mapping hands them to the function.
async fn receive(queues: &Queues, url: &str) -> Vec<Value> {
    let answer = queues
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)));
    answer
        .messages()
        .iter()
        .map(|m| {
            json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(),
                   "body": m.body(), "eventSource": "aws:sqs"})
        })
        .collect()
}

/// What the event source mapping does after the function returns: delete every message of
/// the batch that was not reported as failed.
async fn delete_succeeded(queues: &Queues, records: &[Value], answer: &Value) {
    let failed: Vec<&str> = answer["batchItemFailures"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|f| f["itemIdentifier"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for record in records {
        let id = record["messageId"].as_str().unwrap_or_default();
        let handle = record["receiptHandle"].as_str().unwrap_or_default();
        if !failed.contains(&id) && handle != "r" {
            queues
                .sqs
                .delete_message()
                .queue_url(&queues.url)
                .receipt_handle(handle)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)));
        }
    }
}

fn repository(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    commit_file(dir, "src/main.rs", "fn main() {}\n", "init");
    git(dir, &["checkout", "-q", "-b", "feature"]);
    commit_file(dir, "docs/guide.md", "# Guide\n", "docs");
    git(dir, &["checkout", "-q", "--detach", "main"]);
}

fn created(id: &str, source: &str) -> Event {
    let intent = Intent::new(id, source, "main", SystemClock.now());
    Event::about_intent(
        format!("{id}-created"),
        "t",
        SystemClock.now(),
        EventType::IntentCreated,
        id,
        serde_json::to_value(&intent).unwrap_or_default(),
    )
}

/// A processor over a fresh SQLite store and the sample repository, holding leases as
/// `holder`. The temporary directories live as long as the returned guards.
async fn local_processor(
    settings: WorkerSettings,
    holder: &str,
) -> (
    Store,
    QueueProcessor<GitScm>,
    tempfile::TempDir,
    tempfile::TempDir,
) {
    let repo = tempfile::tempdir().unwrap();
    repository(repo.path());
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("s.db").display());
    let store = Store::from_url(&url, Arc::new(SystemClock)).unwrap();
    store.migrate().await.unwrap();
    let processor = QueueProcessor::new(
        store.clone(),
        GitScm::new(repo.path()),
        PolicyConfig::default(),
        settings,
        Arc::new(SystemClock),
        holder,
    );
    (store, processor, repo, db)
}

fn main_key() -> QueueKey {
    QueueKey {
        tenant: String::new(),
        repo: String::new(),
        target: "main".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_messages_go_through_sqs_to_the_worker_and_poison_reaches_the_dlq() {
    let queues = queues("converge-worker").await;
    let settings = WorkerSettings {
        auto_confirm: true,
        skip_checks: true,
        // Also the delay before a busy key's successor is visible.
        poll_interval: Duration::from_secs(1),
        ..WorkerSettings::default()
    };
    let (store, processor, _repo, _db) = local_processor(settings, "lambda-test").await;

    // The API's transaction: the intent and its queue message; the relay moves it to SQS.
    store
        .commit(&Commit {
            events: vec![created("docs", "feature")],
            outbox: vec![queue_message(&main_key())],
            ..Commit::default()
        })
        .await
        .unwrap();
    let relayed = queues.queue.relay(&store, "relay").await;
    assert_eq!(relayed.ok(), Some(1));
    assert_eq!(store.unsent_outbox_count().await.ok(), Some(0));

    // A busy key: nothing is processed, its message counts as handled and a successor is
    // queued with a delay (waiting for a lease uses up no receive of the redrive policy); the
    // malformed message is a batch item failure.
    let lease = store
        .acquire_lease(&main_key(), "elsewhere", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("lease"));
    let mut records = receive(&queues, &queues.url).await;
    assert_eq!(records.len(), 1);
    records.push(json!({"messageId": "not-a-key", "receiptHandle": "r", "body": "{\"oops\": 1}"}));
    let answer = handle_event(
        &processor,
        &store,
        &queues.queue,
        json!({"Records": records.clone()}),
    )
    .await
    .unwrap();
    assert_eq!(
        answer["batchItemFailures"],
        json!([{"itemIdentifier": "not-a-key"}]),
        "{answer}"
    );
    assert_eq!(
        store.intent("docs").await.ok().flatten().map(|i| i.status),
        Some(Status::Ready)
    );
    delete_succeeded(&queues, &records[..1], &answer).await;

    // The lease is free again: the successor, received after its delay, is processed and the
    // intent merged.
    store.release_lease(&lease).await.unwrap();
    // Waited for (each receive long-polls a second), not slept through: a busy machine may
    // deliver it late.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let successor = loop {
        let received = receive(&queues, &queues.url).await;
        if !received.is_empty() || std::time::Instant::now() > deadline {
            break received;
        }
    };
    assert_eq!(successor.len(), 1, "the busy key was queued again");
    assert_ne!(successor[0]["messageId"], records[0]["messageId"]);
    let records = successor;
    let answer = handle_event(
        &processor,
        &store,
        &queues.queue,
        json!({"Records": [records[0].clone()]}),
    )
    .await
    .unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    delete_succeeded(&queues, &records[..1], &answer).await;
    assert_eq!(
        store.intent("docs").await.ok().flatten().map(|i| i.status),
        Some(Status::Merged)
    );

    // A poison message is left to the redrive policy: after 2 receives it is in the DLQ.
    queues
        .sqs
        .send_message()
        .queue_url(&queues.url)
        .message_body("poison")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)));
    let mut in_dlq = Vec::new();
    for _ in 0..5 {
        let batch = receive(&queues, &queues.url).await;
        if !batch.is_empty() {
            let answer = handle_event(&processor, &store, &queues.queue, json!({"Records": batch}))
                .await
                .unwrap();
            assert_eq!(
                answer["batchItemFailures"].as_array().map(Vec::len),
                Some(1)
            );
        }
        in_dlq = receive(&queues, &queues.dlq_url).await;
        if !in_dlq.is_empty() {
            break;
        }
    }
    assert_eq!(in_dlq.len(), 1, "the poison message reached the DLQ");
    assert_eq!(in_dlq[0]["body"], "poison");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_enqueues_waiting_keys_and_clears_expired_leases() {
    let queues = queues("converge-sweep").await;
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("s.db").display());
    let clock = converge_testkit::ManualClock::new();
    let store = Store::from_url(&url, Arc::new(clock.clone())).unwrap();
    store.migrate().await.unwrap();
    // An intent whose queue message was lost, and a lease whose holder died.
    store
        .commit(&Commit {
            events: vec![created("waiting", "feature")],
            ..Commit::default()
        })
        .await
        .unwrap();
    store
        .acquire_lease(&main_key(), "dead-worker", Duration::from_secs(30))
        .await
        .unwrap();
    clock.advance(chrono::Duration::seconds(31));

    let report = queues.queue.sweep(&store, "sweeper").await.unwrap();
    assert_eq!((report.enqueued, report.reclaimed), (1, 1), "{report:?}");
    let messages = receive(&queues, &queues.url).await;
    let bodies: Vec<Value> = messages
        .iter()
        .filter_map(|m| {
            m["body"]
                .as_str()
                .and_then(|b| serde_json::from_str(b).ok())
        })
        .collect();
    assert_eq!(
        bodies,
        [json!({"tenant": "", "repo": "", "target": "main"})]
    );
    let leases = store.leases().await.unwrap();
    assert!(leases.iter().all(|l| l.holder.is_none()), "{leases:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_that_fills_its_batch_sends_its_key_again() {
    let queues = queues("converge-continue").await;
    let settings = WorkerSettings {
        batch_size: 1,
        skip_checks: true,
        ..WorkerSettings::default()
    };
    let (store, processor, _repo, _db) = local_processor(settings, "batch-test").await;
    store
        .commit(&Commit {
            events: vec![created("first", "feature"), created("second", "feature")],
            ..Commit::default()
        })
        .await
        .unwrap();
    let record = json!({"messageId": "m1", "receiptHandle": "r",
                        "body": queue_message(&main_key()).payload.to_string()});

    // One intent per round: the first round leaves the second and says so through SQS.
    let answer = handle_event(
        &processor,
        &store,
        &queues.queue,
        json!({"Records": [record]}),
    )
    .await
    .unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let status = |id: &'static str| {
        let store = store.clone();
        async move { store.intent(id).await.ok().flatten().map(|i| i.status) }
    };
    assert_eq!(status("first").await, Some(Status::Queued));
    assert_eq!(status("second").await, Some(Status::Ready));
    let again = receive(&queues, &queues.url).await;
    assert_eq!(again.len(), 1, "{again:?}");
    let answer = handle_event(&processor, &store, &queues.queue, json!({"Records": again}))
        .await
        .unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(status("second").await, Some(Status::Queued));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_worker_events_are_handled() {
    let queues = queues("converge-samples").await;
    let (store, processor, _repo, _db) = local_processor(
        WorkerSettings {
            skip_checks: true,
            ..WorkerSettings::default()
        },
        "samples",
    )
    .await;
    store
        .commit(&Commit {
            events: vec![created("docs", "feature")],
            ..Commit::default()
        })
        .await
        .unwrap();
    let sample = |file: &str| -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../events")
            .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
    };

    // The SQS batch names the `main` queue: its intent is decided.
    let answer = handle_event(&processor, &store, &queues.queue, sample("sqs-batch.json"))
        .await
        .unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(
        store.intent("docs").await.ok().flatten().map(|i| i.status),
        Some(Status::Queued)
    );
    // The schedule's event is a sweep.
    let answer = handle_event(
        &processor,
        &store,
        &queues.queue,
        sample("schedule-sweep.json"),
    )
    .await
    .unwrap();
    assert_eq!(answer["enqueued"], 1, "{answer}");
}

/// A round that fails — here the store refuses: its tables were never created — has every
/// message of its key reported as a batch item failure, so SQS delivers them again and, past
/// the redrive policy's bound, moves them to the DLQ. Nothing is counted as handled or busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_round_reports_its_messages_as_batch_item_failures() {
    let repo = tempfile::tempdir().unwrap();
    repository(repo.path());
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("unmigrated.db").display());
    let store = Store::from_url(&url, Arc::new(SystemClock)).unwrap();
    let processor = QueueProcessor::new(
        store,
        GitScm::new(repo.path()),
        PolicyConfig::default(),
        WorkerSettings::default(),
        Arc::new(SystemClock),
        "failing-worker",
    );
    let key = serde_json::to_string(&main_key()).unwrap();
    let event: SqsEvent = serde_json::from_value(json!({"Records": [
        {"messageId": "m-1", "body": key},
        {"messageId": "m-2", "body": key},
    ]}))
    .unwrap();
    let outcome = handle_batch(&processor, event).await;
    let failed: Vec<&str> = outcome
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m-1", "m-2"]);
    assert!(outcome.busy.is_empty(), "{:?}", outcome.busy);
    assert!(outcome.unfinished.is_empty(), "{:?}", outcome.unfinished);
}

/// A worker given `CONVERGE_WORKER_TARGET=release` runs rounds only for that target: a batch
/// with a `main` key and a `release` key judges the release intent, leaves the main intent
/// untouched (no round, no lease), and acknowledges the main message instead of failing it
/// into the DLQ. Without the setting, both are processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_given_a_target_processes_only_that_targets_keys() {
    let settings = WorkerSettings {
        target: Some("release".to_owned()),
        ..WorkerSettings::default()
    };
    let (store, processor, repo, _db) = local_processor(settings, "release-worker").await;
    git(repo.path(), &["branch", "release", "main"]);
    let mut for_release = created("for-release", "feature");
    for_release.payload["target"] = json!("release");
    store
        .commit(&Commit {
            events: vec![created("for-main", "feature"), for_release],
            ..Commit::default()
        })
        .await
        .unwrap();
    let release_key = QueueKey {
        target: "release".into(),
        ..main_key()
    };
    let event: SqsEvent = serde_json::from_value(json!({"Records": [
        {"messageId": "m-main", "body": serde_json::to_string(&main_key()).unwrap()},
        {"messageId": "m-release", "body": serde_json::to_string(&release_key).unwrap()},
    ]}))
    .unwrap();
    let outcome = handle_batch(&processor, event).await;
    assert!(
        outcome.response.batch_item_failures.is_empty(),
        "another target's message is acknowledged, not failed: {:?}",
        outcome.response.batch_item_failures
    );
    let judged = |id: &'static str| {
        let store = store.clone();
        async move {
            !store
                .decision_trail(id, 10)
                .await
                .unwrap()
                .decisions
                .is_empty()
        }
    };
    assert!(
        judged("for-release").await,
        "the release intent was not judged"
    );
    assert!(
        !judged("for-main").await,
        "the main intent was judged by the release worker"
    );
    let leases = store.leases().await.unwrap();
    assert!(
        leases.iter().all(|l| l.key.target == "release"),
        "a lease was taken outside the worker's target: {leases:?}"
    );

    // The same batch on a worker of every target judges the main intent too.
    let every = QueueProcessor::new(
        store.clone(),
        GitScm::new(repo.path()),
        PolicyConfig::default(),
        WorkerSettings::default(),
        Arc::new(SystemClock),
        "any-worker",
    );
    let event: SqsEvent = serde_json::from_value(json!({"Records": [
        {"messageId": "m-main-2", "body": serde_json::to_string(&main_key()).unwrap()},
    ]}))
    .unwrap();
    handle_batch(&every, event).await;
    assert!(judged("for-main").await, "the main intent was never judged");
}

/// On SQS a paused key is not left to the minute sweep: its message is handled, and the key
/// is sent again to be visible when its backoff ends (5 s after a first environment failure,
/// here a target checked out in the work tree).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_key_is_sent_again_for_the_end_of_its_backoff() {
    let queues = queues("converge-paused").await;
    let settings = WorkerSettings {
        auto_confirm: true,
        skip_checks: true,
        ..WorkerSettings::default()
    };
    let (store, processor, repo, _db) = local_processor(settings, "paused-worker").await;
    git(repo.path(), &["checkout", "-q", "main"]);
    store
        .commit(&Commit {
            events: vec![created("docs", "feature")],
            ..Commit::default()
        })
        .await
        .unwrap();
    let event = json!({"Records": [
        {"messageId": "m-1", "receiptHandle": "r", "body": serde_json::to_string(&main_key()).unwrap()},
    ]});
    let answer = handle_event(&processor, &store, &queues.queue, event)
        .await
        .unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let hold = store
        .inspect_lease(&main_key())
        .await
        .unwrap()
        .and_then(|l| l.hold);
    assert!(hold.is_some_and(|h| h.reason.contains("checked out")));

    assert!(
        receive(&queues, &queues.url).await.is_empty(),
        "sent again before the backoff ended"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut again = Vec::new();
    while again.is_empty() && std::time::Instant::now() < deadline {
        again = receive(&queues, &queues.url).await;
    }
    let bodies: Vec<Value> = again
        .iter()
        .filter_map(|m| {
            m["body"]
                .as_str()
                .and_then(|b| serde_json::from_str(b).ok())
        })
        .collect();
    assert_eq!(bodies, [serde_json::to_value(main_key()).unwrap()]);
}
