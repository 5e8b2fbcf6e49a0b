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

/// Two processes append to one tenant's audit chain in turns, and a commit that moved the
/// chain rolls back: each process links to the chain's real head (a process keeps the head it
/// last wrote, and must notice when another moved it or its own write did not land), so the
/// chain has every event, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_taking_turns_on_a_chain_link_to_its_real_head() {
    let clock = ManualClock::new();
    let (first, dir) = sqlite_store(&clock).await;
    let second = Store::Sqlite(
        SqliteStore::open(&dir.path().join("state.db"), 2, Arc::new(clock.clone())).unwrap(),
    );
    let create = |store: &Store, id: &str| {
        let (_, creation) = created(&clock, id, 3);
        let (store, commit) = (
            store.clone(),
            Commit {
                events: vec![creation],
                ..Commit::default()
            },
        );
        async move { store.commit(&commit).await.unwrap() }
    };
    let mut expected = 0;
    for round in 0..3 {
        for (name, store) in [("first", &first), ("second", &second)] {
            create(store, &format!("i-{name}-{round}")).await;
            expected += 1;
        }
    }
    // The first process writes again (so it holds the head it wrote), then a commit of its
    // moves the chain and fails on the events' insert (an event id already in the log):
    // nothing of it stays, the head included.
    create(&first, "i-first-again").await;
    expected += 1;
    let (_, creation) = created(&clock, "i-rolled-back", 3);
    let mut reused = event(&clock, "i-rolled-back", EventType::RiskEvaluated, json!({}));
    reused.id = first.audit_links("acme", -1, 1).await.unwrap()[0]
        .event
        .as_ref()
        .unwrap()
        .id
        .clone();
    let failed = first
        .commit(&Commit {
            events: vec![creation, reused],
            ..Commit::default()
        })
        .await;
    assert!(failed.is_err(), "an event id landed twice: {failed:?}");
    create(&first, "i-after").await;
    expected += 1;

    let links = first.audit_links("acme", -1, 100).await.unwrap();
    let indexes: Vec<i64> = links.iter().map(|l| l.chain_index).collect();
    assert_eq!(indexes, (0..expected).collect::<Vec<i64>>());
    let head = first.audit_head("acme").await.unwrap().unwrap();
    assert_eq!(head.next_index, expected);
    assert_eq!(Some(&head.last_hash), links.last().map(|l| &l.chain_hash));
    for pair in links.windows(2) {
        let event = pair[1].event.as_ref().unwrap();
        assert_eq!(
            pair[1].chain_hash,
            converge_core::audit::link_hash(&pair[0].chain_hash, pair[1].chain_index, event),
            "position {} links to the one before it",
            pair[1].chain_index
        );
    }
}
