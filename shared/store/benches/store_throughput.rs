//! Store throughput on PostgreSQL: commits (two events appended and the intent projection
//! updated, in one transaction) per second with 1, 4 and 16 concurrent writers, and lease
//! acquire + release cycles per second. Needs the throwaway PostgreSQL that `scripts/bench.sh`
//! starts (CONVERGE_TEST_PG_URL).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use converge_core::pipeline::Clock;
use converge_core::queue::QueueKey;
use converge_core::{Event, EventType, Intent};
use converge_store::{Commit, Store, SystemClock};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use serde_json::json;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// One intent created and validated: two events, one projection upsert after each.
fn intent_commit() -> Commit {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = format!("bench-{n}");
    let now = SystemClock.now();
    let intent = Intent::new(&id, "feature/bench", "main", now);
    let event = |event_type: EventType, suffix: &str, payload: serde_json::Value| Event {
        id: format!("{id}-{suffix}"),
        trace_id: format!("trace-{n}"),
        timestamp: now,
        event_type,
        intent_id: Some(id.clone()),
        agent_id: None,
        tenant_id: Some("bench".into()),
        payload,
        evidence: json!({}),
    };
    Commit {
        events: vec![
            event(
                EventType::IntentCreated,
                "c",
                serde_json::to_value(&intent).unwrap_or_default(),
            ),
            event(
                EventType::IntentValidated,
                "v",
                json!({"risk_level": "low"}),
            ),
        ],
        ..Commit::default()
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    // The pool spawns its maintenance task on the current runtime.
    let _context = runtime.enter();
    let url = runtime.block_on(converge_testkit::fresh_pg_database());
    let store = Store::Postgres(
        converge_store::PgStore::connect_lazy(&url, 20, Arc::new(SystemClock)).unwrap(),
    );
    runtime.block_on(store.migrate()).unwrap();
    let store = Arc::new(store);

    let mut group = c.benchmark_group("postgres_commit");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for writers in [1u64, 4, 16] {
        group.bench_with_input(
            BenchmarkId::new("writers", writers),
            &writers,
            |b, &writers| {
                b.iter_custom(|iters| {
                    let store = Arc::clone(&store);
                    runtime.block_on(async move {
                        let start = Instant::now();
                        let mut tasks = Vec::new();
                        for w in 0..writers {
                            let store = Arc::clone(&store);
                            let share = iters / writers + u64::from(w < iters % writers);
                            tasks.push(tokio::spawn(async move {
                                for _ in 0..share {
                                    store.commit(&intent_commit()).await.unwrap();
                                }
                            }));
                        }
                        for task in tasks {
                            task.await.unwrap();
                        }
                        start.elapsed()
                    })
                });
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("postgres_lease");
    group.throughput(Throughput::Elements(1));
    group.bench_function("acquire_release", |b| {
        let key = QueueKey {
            tenant: "bench".into(),
            repo: "acme/app".into(),
            target: "main".into(),
        };
        b.iter(|| {
            runtime.block_on(async {
                let lease = store
                    .acquire_lease(&key, "bench", Duration::from_secs(60))
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("lease busy"));
                store.release_lease(&lease).await.unwrap();
            })
        });
    });
    group.finish();
}

/// Private, so the generated group function needs no docs.
mod groups {
    use criterion::criterion_group;
    criterion_group!(benches, super::bench);
}
criterion_main!(groups::benches);
