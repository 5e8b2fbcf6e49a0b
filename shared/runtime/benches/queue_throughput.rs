//! Queue throughput on PostgreSQL: intents validated and decided per second by 1 and by 4
//! workers. With an in-process SCM (answers from memory: the engine's own ceiling — the
//! pipeline, the queue rules, the store and the leases) and with the GitHub fake (octocrab
//! over HTTP, real git behind it). Each measured batch creates fresh READY intents spread over
//! 16 queue keys and times until every one is decided and merged (auto-confirm on; the
//! in-process SCM's merges are instant, so the figure is the engine's own cost). Needs the throwaway PostgreSQL of `scripts/bench.sh`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use converge_core::pipeline::{
    CheckOutcome, CheckState, Checks, ChecksError, Clock, MergeError, Merger, Scm, ScmError,
    SimulatedMerge, Tips,
};
use converge_core::publication::NoPublisher;
use converge_core::risk::CouplingPair;
use converge_core::simulation::Simulation;
use converge_core::{Event, EventType, Intent, PolicyConfig, Status};
use converge_runtime::queue_worker::{QueueProcessor, WorkerPorts, WorkerSettings};
use converge_store::{Commit, IntentFilter, Store, SystemClock};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};

const KEYS: u64 = 16;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// An SCM that answers from memory: every change is clean and touches three files.
#[derive(Clone, Copy)]
struct MemoryScm;

impl Scm for MemoryScm {
    async fn tips(&self, intent: &Intent) -> Result<Tips, ScmError> {
        Ok(Tips {
            head_sha: format!("head-{}", intent.id),
            target_sha: format!("target-{}", intent.target),
        })
    }

    async fn simulate(&self, intent: &Intent) -> Result<SimulatedMerge, ScmError> {
        let tips = self.tips(intent).await?;
        Ok(SimulatedMerge {
            simulation: Simulation {
                mergeable: true,
                conflicts: Vec::new(),
                files_changed: vec!["src/a.rs".into(), "src/b.rs".into(), "docs/c.md".into()],
            },
            head_sha: tips.head_sha,
            target_sha: tips.target_sha,
        })
    }

    async fn co_changes(
        &self,
        _intent: &Intent,
        _files: &[String],
    ) -> Result<Vec<CouplingPair>, ScmError> {
        Ok(Vec::new())
    }
}

impl Merger for MemoryScm {
    async fn landed(&self, _intent: &Intent, _head_sha: &str) -> Result<bool, MergeError> {
        Ok(false)
    }

    async fn merge(
        &self,
        _intent: &Intent,
        validated: &SimulatedMerge,
    ) -> Result<String, MergeError> {
        Ok(format!("merge-of-{}", validated.head_sha))
    }
}

impl Checks for MemoryScm {
    async fn outcomes(
        &self,
        _intent: &Intent,
        _head_sha: &str,
        required: &[String],
    ) -> Result<Vec<CheckOutcome>, ChecksError> {
        Ok(required
            .iter()
            .map(|name| CheckOutcome {
                name: name.clone(),
                state: CheckState::Passed,
                details: String::new(),
            })
            .collect())
    }
}

/// Creates `count` READY intents over the 16 keys (targets `t0`…`t15`); returns their ids.
async fn seed(store: &Store, count: u64) -> Vec<String> {
    let mut ids = Vec::new();
    let mut events = Vec::new();
    for _ in 0..count {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("bench-{n}");
        let mut intent = Intent::new(
            &id,
            format!("feature/{n}"),
            format!("t{}", n % KEYS),
            SystemClock.now(),
        );
        intent.risk_level = converge_core::RiskLevel::Low;
        events.push(Event::about_intent(
            format!("{id}-created"),
            "bench",
            SystemClock.now(),
            EventType::IntentCreated,
            id.clone(),
            serde_json::to_value(&intent).unwrap_or_default(),
        ));
        ids.push(id);
    }
    for chunk in events.chunks(200) {
        store
            .commit(&Commit {
                events: chunk.to_vec(),
                ..Commit::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    ids
}

/// Runs `workers` processors until every intent of `ids` is merged.
async fn drain(store: &Store, workers: usize, ids: &[String]) {
    let tasks: Vec<_> = (0..workers)
        .map(|n| {
            let processor = QueueProcessor::with_ports(
                store.clone(),
                WorkerPorts {
                    scm: MemoryScm,
                    checks: MemoryScm,
                    publisher: NoPublisher,
                },
                PolicyConfig::default(),
                WorkerSettings {
                    batch_size: 200,
                    auto_confirm: true,
                    ..WorkerSettings::default()
                },
                Arc::new(SystemClock),
                format!("bench-worker-{n}"),
            );
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    processor.poll().await.unwrap_or_else(|e| panic!("{e}"));
                    let ready = store
                        .intents(&IntentFilter {
                            statuses: vec![Status::Ready, Status::Validated, Status::Queued],
                            limit: 1,
                            ..IntentFilter::default()
                        })
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    if ready.is_empty() {
                        break;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let last = ids.last().map(String::as_str).unwrap_or_default();
    let status = store.intent(last).await.ok().flatten().map(|i| i.status);
    assert_eq!(status, Some(Status::Merged));
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let _context = runtime.enter();
    let url = runtime.block_on(converge_testkit::fresh_pg_database());
    let store = Store::Postgres(
        converge_store::PgStore::connect_lazy(&url, 16, Arc::new(SystemClock))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    runtime
        .block_on(store.migrate())
        .unwrap_or_else(|e| panic!("{e}"));

    let mut group = c.benchmark_group("queue_in_process_scm");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for workers in [1usize, 4] {
        group.bench_with_input(
            BenchmarkId::new("workers", workers),
            &workers,
            |b, &workers| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let ids = seed(&store, iters.max(1)).await;
                        let start = Instant::now();
                        drain(&store, workers, &ids).await;
                        start.elapsed()
                    })
                });
            },
        );
    }
    group.finish();
}

/// Private, so the generated group function needs no docs.
mod groups {
    use criterion::criterion_group;
    criterion_group!(benches, super::bench);
}
criterion_main!(groups::benches);
