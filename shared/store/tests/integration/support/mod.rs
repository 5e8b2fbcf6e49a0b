//! Test support: fresh stores on both backends and a clock the test moves by hand.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use converge_core::pipeline::Clock;
use converge_core::{Event, EventType, Intent};
use converge_store::{SqliteStore, Store};
use serde_json::{Value, json};

pub use converge_testkit::{ManualClock, fresh_pg_database};

/// A migrated store on a fresh PostgreSQL database.
pub async fn pg_store(clock: &ManualClock) -> Store {
    pg_store_at(&fresh_pg_database().await, clock).await
}

/// A migrated store on the PostgreSQL database at `url`.
pub async fn pg_store_at(url: &str, clock: &ManualClock) -> Store {
    let store = Store::from_url(url, Arc::new(clock.clone())).unwrap();
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrate: {e}"));
    store
}

/// A migrated store on a fresh SQLite file (kept alive by the returned guard).
pub async fn sqlite_store(clock: &ManualClock) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store =
        SqliteStore::open(&dir.path().join("state.db"), 8, Arc::new(clock.clone())).unwrap();
    let store = Store::Sqlite(store);
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrate: {e}"));
    (store, dir)
}

static EVENT_IDS: AtomicU64 = AtomicU64::new(0);

/// An event about an intent at the clock's time.
pub fn event(clock: &ManualClock, intent_id: &str, event_type: EventType, payload: Value) -> Event {
    Event {
        id: format!(
            "ev-{:08}-{}",
            EVENT_IDS.fetch_add(1, Ordering::Relaxed),
            std::process::id()
        ),
        trace_id: "trace-test".into(),
        timestamp: clock.now(),
        event_type,
        intent_id: Some(intent_id.to_owned()),
        agent_id: None,
        tenant_id: Some("acme".into()),
        payload,
        evidence: json!({}),
    }
}

/// A new READY intent (created now) and its `intent.created` event.
pub fn created(clock: &ManualClock, id: &str, priority: i64) -> (Intent, Event) {
    let mut intent = Intent::new(id, format!("feature/{id}"), "main", clock.now());
    intent.priority = priority;
    intent.tenant_id = Some("acme".into());
    intent.technical.insert("repo".into(), json!("acme/app"));
    intent
        .technical
        .insert("scope_hint".into(), json!(["auth", "π"]));
    let payload = serde_json::to_value(&intent).unwrap_or_default();
    let e = event(clock, id, EventType::IntentCreated, payload);
    (intent, e)
}
