//! The reads a dashboard viewer and an operator repeat, over a big queue: `GET
//! /v1/queue/state`, `GET /v1/summary` and `GET /dashboard` with 25,000 intents (5,000 of them
//! waiting, over 10 queues) on SQLite and PostgreSQL, in process through the router. Criterion
//! reports the median time of each; the answer's size is printed, and the run fails if one
//! exceeds 100 KB (the budget: counts come from the database, lists are bounded). Beside them,
//! what a worker reads first in each round of a key: the queue's first page of 100
//! (`Store::queue_intents`, 2,500 waiting in that queue). PostgreSQL needs the throwaway cluster of
//! `scripts/bench.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Benchmarks: a panic is how a check fails.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use converge_core::queue::QueueKey;
use converge_core::{Event, EventType, Intent, PolicyConfig, Status};
use converge_http::{ApiSettings, AppState, router};
use converge_store::{Commit, Store, SystemClock};
use criterion::{Criterion, criterion_main};
use serde_json::json;
use tower::ServiceExt;

const INTENTS: usize = 25_000;
const WAITING: usize = 5_000;
const BUDGET_BYTES: usize = 100 * 1024;
const ROUTES: [&str; 3] = ["/v1/queue/state", "/v1/summary", "/dashboard"];

/// 25,000 intents: every fifth waiting (READY), the rest merged, over 10 repositories.
async fn seed(store: &Store) {
    let now = chrono::Utc::now();
    let mut events = Vec::with_capacity(1_000);
    for n in 0..INTENTS {
        let mut intent = Intent::new(format!("bench-{n:05}"), format!("feature-{n}"), "main", now);
        intent
            .technical
            .insert("repo".into(), json!(format!("acme/repo-{}", n % 10)));
        let id = intent.id.clone();
        let created = serde_json::to_value(&intent).unwrap();
        events.push(event(&id, EventType::IntentCreated, created, now));
        if n % (INTENTS / WAITING) != 0 {
            let merged = json!({"merged_commit": "abc", "source": intent.source, "target": "main"});
            events.push(event(
                &id,
                EventType::IntentStatusChanged,
                json!({"to": Status::Validated}),
                now,
            ));
            events.push(event(&id, EventType::IntentMerged, merged, now));
        }
        if events.len() >= 900 {
            commit(store, std::mem::take(&mut events)).await;
        }
    }
    commit(store, events).await;
}

fn event(
    id: &str,
    event_type: EventType,
    payload: serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Event {
    Event {
        id: format!("{id}-{}", event_type.as_str()),
        trace_id: format!("trace-{id}"),
        timestamp: now,
        event_type,
        intent_id: Some(id.to_owned()),
        agent_id: None,
        tenant_id: None,
        payload,
        evidence: json!({}),
    }
}

async fn commit(store: &Store, events: Vec<Event>) {
    store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await
        .unwrap();
}

async fn get(app: &axum::Router, path: &str) -> usize {
    let request = Request::get(path).body(Body::empty()).unwrap();
    let response = app
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    assert_eq!(response.status(), 200, "{path}");
    axum::body::to_bytes(response.into_body(), 10 << 20)
        .await
        .unwrap()
        .len()
}

fn app_over(store: Store) -> axum::Router {
    let settings = ApiSettings {
        auth_required: false,
        rate_limit_rpm: None,
        ..ApiSettings::default()
    };
    router(Arc::new(AppState::new(
        store,
        Arc::new(SystemClock),
        settings,
        PolicyConfig::default(),
    )))
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _context = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::from_url(
        &format!("sqlite://{}", dir.path().join("bench.db").display()),
        Arc::new(SystemClock),
    )
    .unwrap();
    let mut backends = vec![("sqlite", sqlite)];
    if std::env::var("CONVERGE_TEST_PG_URL").is_ok() {
        let url = runtime.block_on(converge_testkit::fresh_pg_database());
        let pg = Store::Postgres(
            converge_store::PgStore::connect_lazy(&url, 8, Arc::new(SystemClock)).unwrap(),
        );
        backends.push(("postgres", pg));
    } else {
        eprintln!("reads_at_scale: CONVERGE_TEST_PG_URL is not set: SQLite only");
    }

    let mut group = c.benchmark_group("reads_at_25k_intents");
    group.measurement_time(Duration::from_secs(5));
    for (backend, store) in backends {
        runtime.block_on(async {
            store.migrate().await.unwrap();
            seed(&store).await;
        });
        let key = QueueKey {
            tenant: String::new(),
            repo: "acme/repo-5".into(),
            target: "main".into(),
        };
        let page = runtime
            .block_on(store.queue_intents(&key, None, 100))
            .unwrap();
        assert_eq!(page.len(), 100, "a full first page");
        group.bench_function(
            format!("{backend}/queue page of a key (worker round)"),
            |b| {
                b.iter(|| {
                    runtime
                        .block_on(store.queue_intents(&key, None, 100))
                        .unwrap()
                });
            },
        );
        let app = app_over(store);
        for path in ROUTES {
            let size = runtime.block_on(get(&app, path));
            eprintln!("reads_at_scale: {backend} {path}: {size} bytes");
            assert!(
                size <= BUDGET_BYTES,
                "{backend} {path}: {size} bytes is over the budget"
            );
            group.bench_function(format!("{backend}{path}"), |b| {
                b.iter(|| runtime.block_on(get(&app, path)));
            });
        }
    }
    group.finish();
}

/// Private, so the generated group function needs no docs.
mod groups {
    use criterion::criterion_group;
    criterion_group!(benches, super::bench);
}
criterion_main!(groups::benches);
