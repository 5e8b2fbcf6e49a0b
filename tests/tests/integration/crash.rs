//! A writer killed with SIGKILL in the middle of its transactions leaves no intent without its
//! events and no event without its projection change, on both backends.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use converge_store::backfill::summaries;
use converge_store::{EventFilter, IntentFilter, Store, SystemClock};

/// Kills per backend.
const KILLS: usize = 20;

/// Runs the writer against `url`, killing it `KILLS` times after a varying number of commits
/// and a varying delay, so that kills land inside transactions as well as between them.
fn kill_writer_repeatedly(url: &str) {
    for round in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_converge-store-crash-writer"))
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the writer: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = BufReader::new(stdout).lines();
        let commits_before_kill = 5 + (round * 7) % 60;
        for _ in 0..commits_before_kill {
            match lines.next() {
                Some(Ok(_)) => {}
                other => panic!("writer stopped early: {other:?}"),
            }
        }
        // Spread the kill over a commit's duration (about a millisecond).
        std::thread::sleep(Duration::from_micros((round as u64 * 389) % 1_500));
        child.kill().unwrap_or_else(|e| panic!("kill: {e}")); // SIGKILL on Unix
        let _ = child.wait();
    }
}

async fn check_nothing_half_written(store: &Store) {
    let intents = store
        .intents(&IntentFilter {
            limit: 100_000,
            ..IntentFilter::default()
        })
        .await
        .unwrap();
    let events = store
        .events(&EventFilter {
            limit: 100_000,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    let mut per_intent: BTreeMap<String, usize> = BTreeMap::new();
    for stored in &events {
        *per_intent
            .entry(stored.event.intent_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert!(
        intents.len() >= KILLS * 5,
        "the writers committed too little: {}",
        intents.len()
    );
    assert_eq!(
        per_intent.len(),
        intents.len(),
        "an event without its projection row, or the reverse"
    );
    for intent in &intents {
        assert_eq!(
            per_intent.get(&intent.id),
            Some(&3),
            "intent {} lost some of its events",
            intent.id
        );
        assert_eq!(
            intent.status,
            converge_core::Status::Queued,
            "intent {} has a half-applied row",
            intent.id
        );
        assert_eq!(
            store
                .commit_links(&intent.id)
                .await
                .unwrap_or_default()
                .len(),
            1
        );
    }
    let tables = summaries(store).await.unwrap();
    let outbox = tables
        .iter()
        .find(|t| t.table == "outbox")
        .map_or(0, |t| t.rows);
    assert_eq!(
        outbox as usize,
        intents.len(),
        "an outbox message without its events, or the reverse"
    );

    // The projection is exactly what the surviving events say.
    let before: Vec<_> = tables
        .into_iter()
        .filter(|t| t.table == "intents")
        .collect();
    store.rebuild_projections().await.unwrap();
    let after: Vec<_> = summaries(store)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.table == "intents")
        .collect();
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_kills_mid_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let writer_url = url.clone();
    tokio::task::spawn_blocking(move || kill_writer_repeatedly(&writer_url))
        .await
        .unwrap();
    let store = Store::from_url(&url, Arc::new(SystemClock)).unwrap();
    check_nothing_half_written(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_kills_mid_transaction() {
    let url = converge_testkit::fresh_pg_database().await;
    let writer_url = url.clone();
    tokio::task::spawn_blocking(move || kill_writer_repeatedly(&writer_url))
        .await
        .unwrap();
    let store = Store::from_url(&url, Arc::new(SystemClock)).unwrap();
    check_nothing_half_written(&store).await;
}
