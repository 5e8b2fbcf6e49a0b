//! The SQLite writer's queue: a writer that fails or is given up on must not keep the
//! database's write lock, which other processes (the CLI, a second server) wait on.

use crate::support::{ManualClock, created, event, sqlite_store};

use std::sync::Arc;
use std::time::Duration;

use converge_core::EventType;
use converge_store::{Commit, SqliteStore, Store};
use serde_json::json;

/// A second store on the same file (another process's view): its write must not wait.
async fn another_process_can_write(path: &std::path::Path, clock: &ManualClock, id: &str) {
    let other = Store::Sqlite(SqliteStore::open(path, 2, Arc::new(clock.clone())).unwrap());
    let (_, creation) = created(clock, id, 3);
    let commit = Commit {
        events: vec![creation],
        ..Commit::default()
    };
    let write = other.commit(&commit);
    let landed = tokio::time::timeout(Duration::from_secs(5), write).await;
    assert!(
        matches!(landed, Ok(Ok(_))),
        "another connection's write after {id}: {landed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_or_cancelled_writer_does_not_keep_the_write_lock() {
    let clock = ManualClock::new();
    let (store, dir) = sqlite_store(&clock).await;
    let path = dir.path().join("state.db");

    // Fails half-way (READY → requeued → queued from READY), with nobody writing after it.
    let (_, creation) = created(&clock, "i-failed", 3);
    let failed = store
        .commit(&Commit {
            events: vec![
                creation,
                event(
                    &clock,
                    "i-failed",
                    EventType::IntentRequeued,
                    json!({"retries": 1}),
                ),
                event(&clock, "i-failed", EventType::IntentQueued, json!({})),
            ],
            ..Commit::default()
        })
        .await;
    assert!(
        failed.is_err(),
        "an illegal move commits nothing: {failed:?}"
    );
    another_process_can_write(&path, &clock, "i-after-failed").await;

    // Writers given up on at every point of their turn, the last one included.
    let tasks: Vec<_> = (0..40u64)
        .map(|k| {
            let store = store.clone();
            let (_, creation) = created(&clock, &format!("i-cancelled-{k}"), 3);
            tokio::spawn(async move {
                let commit = Commit {
                    events: vec![creation],
                    ..Commit::default()
                };
                let patience = Duration::from_micros((k * 131) % 2_000);
                let _ = tokio::time::timeout(patience, store.commit(&commit)).await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    another_process_can_write(&path, &clock, "i-after-cancelled").await;
}
