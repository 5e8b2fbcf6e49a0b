//! Queue throughput on PostgreSQL: intents per second by 1 and by 4 workers. With an
//! in-process SCM (answers from memory: the engine's own ceiling — the pipeline, the queue
//! rules, the store and the leases), validated and decided (`queue_in_process_decide`,
//! auto-confirm off: each intent ends QUEUED) and validated, decided and merged
//! (`queue_in_process_scm`, and `queue_in_process_scm_4_tenants` with the keys spread over
//! four tenants); and with the GitHub fake (`queue_github_fake`: octocrab over
//! HTTP, real git behind it, reports published as check runs, merged). Each measured batch
//! creates fresh READY intents spread over the queue keys (512 over 16 keys in process; on
//! the fake, as many as criterion asks for over 4 target branches) and times until every one
//! is decided or merged. Needs the throwaway PostgreSQL of `scripts/bench.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use converge_core::pipeline::{
    CheckOutcome, CheckState, Checks, ChecksError, Clock, MergeError, MergePermit, Merger, Scm,
    ScmError, SimulatedMerge, Tips,
};
use converge_core::publication::{NoPublisher, Publisher};
use converge_core::risk::CouplingPair;
use converge_core::simulation::Simulation;
use converge_core::{Event, EventType, Intent, PolicyConfig, Status};
use converge_github::adapters::GithubPorts;
use converge_github::app::{GithubApp, GithubSettings, parse_check_map};
use converge_runtime::queue_worker::{QueueProcessor, WorkerPorts, WorkerSettings};
use converge_store::{Commit, Store, SystemClock};
use converge_testkit::github_fake::{GithubFake, app_key_pair};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_main};

const KEYS: u64 = 16;

/// Intents in each measured batch of the in-process benchmarks (32 a key). Fixed: a round has
/// costs of its own (the poll, the lease, the page reads) and four workers contend for keys
/// at the start and end of a batch, so a batch of a few intents measures those instead, and
/// criterion, sizing samples from its warm-up, would be led to batches of a few intents.
const IN_PROCESS_BATCH: u64 = 512;

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
        _permit: &MergePermit,
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

/// Creates `count` READY intents over the 16 keys (targets `t0`…`t15`), of one tenant or,
/// with `tenants` above one, of that many (by target: each tenant has keys of its own and an
/// audit chain of its own); returns their ids.
async fn seed(store: &Store, count: u64, tenants: u64) -> Vec<String> {
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
        if tenants > 1 {
            intent.tenant_id = Some(format!("tenant-{}", n % KEYS % tenants));
        }
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
            .unwrap();
    }
    refresh_statistics(store).await;
    ids
}

/// Brings the planner's statistics up to date, outside the timing. The database grows from
/// empty during a run, far faster than autovacuum's analyze follows (it looks once a minute):
/// left alone, the planner judges a table of 100,000 events by the statistics of an empty one,
/// picks scans that fit those, and each batch runs slower than the one before (830 intents/s
/// in the first batches, 440 in the last). A production database's statistics are kept
/// current by autovacuum, which is what this stands for.
async fn refresh_statistics(store: &Store) {
    if let Store::Postgres(pg) = store {
        sqlx::query("ANALYZE").execute(pg.pool()).await.unwrap();
    }
}

/// Runs `workers` processors over `ports` until no intent is left to work on: with
/// `auto_confirm`, until every intent is merged; without it, until every one is decided
/// (QUEUED or rejected).
async fn drain<S, C, P>(
    store: &Store,
    workers: usize,
    auto_confirm: bool,
    ports: impl Fn() -> WorkerPorts<S, C, P>,
) where
    S: Scm + Merger + Sync + Send + 'static,
    C: Checks + Sync + Send + 'static,
    P: Publisher + Sync + Send + 'static,
{
    let tasks: Vec<_> = (0..workers)
        .map(|n| {
            let processor = QueueProcessor::with_ports(
                store.clone(),
                ports(),
                PolicyConfig::default(),
                WorkerSettings {
                    batch_size: 200,
                    auto_confirm,
                    ..WorkerSettings::default()
                },
                Arc::new(SystemClock),
                format!("bench-worker-{n}"),
            );
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let outcomes = processor.poll().await.unwrap();
                    // Done when no intent is left to move, counted by the queues' partial
                    // index as a worker's poll counts them (a page of intents by status in
                    // queue order would walk every merged intent first, and cost the database
                    // more than the rounds).
                    let left = store
                        .actionable_counts(None)
                        .await
                        .unwrap()
                        .into_iter()
                        .any(|c| c.count > 0 && (auto_confirm || c.status != Status::Queued));
                    if !left {
                        break;
                    }
                    // As `run_until_stopped` does, a worker polls again at once only while its
                    // rounds leave work; one that found its keys busy or done waits (there, for
                    // a wake-up or the poll interval; here, a millisecond) instead of spinning
                    // on the database while the other workers' rounds need it.
                    if !processor.work_left(&outcomes) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Checks, outside the timing, that the run left every intent in `expected`.
async fn assert_status(store: &Store, ids: &[String], expected: Status) {
    for id in ids {
        let status = store.intent(id).await.ok().flatten().map(|i| i.status);
        assert_eq!(status, Some(expected), "{id}");
    }
}

/// Takes decided intents out of the queue (as merged by hand), outside the timing, so the next
/// batch does not pay for looking at them.
async fn clear_queued(store: &Store, ids: &[String]) {
    let events: Vec<Event> = ids
        .iter()
        .map(|id| {
            Event::about_intent(
                format!("{id}-confirmed"),
                "bench",
                SystemClock.now(),
                EventType::IntentMerged,
                id.clone(),
                serde_json::json!({"merged_commit": "bench"}),
            )
        })
        .collect();
    for chunk in events.chunks(200) {
        store
            .commit(&Commit {
                events: chunk.to_vec(),
                ..Commit::default()
            })
            .await
            .unwrap();
    }
}

const FAKE_REPO: &str = "acme/bench";
const FAKE_TARGETS: u64 = 4;
const INSTALLATION: u64 = 99;

/// The GitHub fake with one repository whose targets `t0`…`t3` start at `main`, and the App's
/// ports to it.
async fn github_world() -> (GithubFake, GithubPorts) {
    let (private_pem, public_pem) = app_key_pair();
    let fake = GithubFake::start(7, &public_pem).await;
    let repo = fake.create_repo(FAKE_REPO);
    converge_testkit::git::commit_file(&repo, "src/lib.rs", "pub fn f() {}\n", "init");
    for t in 0..FAKE_TARGETS {
        converge_testkit::git::git(&repo, &["branch", &format!("t{t}"), "main"]);
    }
    converge_testkit::git::git(&repo, &["checkout", "-q", "--detach"]);
    let settings = GithubSettings {
        app_id: 7,
        private_key_pem: private_pem,
        private_key_secret_arn: None,
        api_url: fake.url().to_owned(),
        default_installation: None,
        check_map: parse_check_map("lint=ci/lint").unwrap(),
        publish_status: false,
    };
    let app = GithubApp::new(settings).unwrap();
    (fake, GithubPorts::new(app))
}

/// Makes `count` branches on the fake (one commit each off `main`, written by one
/// `git fast-import`), marks CI green on each head, and creates their READY intents.
async fn seed_github(store: &Store, fake: &GithubFake, count: u64) -> Vec<String> {
    let repo = fake.repo_path(FAKE_REPO);
    let main = converge_testkit::git::git(&repo, &["rev-parse", "main"]);
    let numbers: Vec<u64> = (0..count)
        .map(|_| NEXT.fetch_add(1, Ordering::Relaxed))
        .collect();
    let heads = fast_import_branches(&repo, &main, &numbers);
    let mut ids = Vec::new();
    let mut events = Vec::new();
    for (n, head) in numbers.iter().zip(&heads) {
        fake.complete_check(FAKE_REPO, head, "ci/lint", "success");
        let id = format!("{FAKE_REPO}:bench-{n}");
        let mut intent = Intent::new(
            &id,
            format!("bench/{n}"),
            format!("t{}", n % FAKE_TARGETS),
            SystemClock.now(),
        );
        intent.risk_level = converge_core::RiskLevel::Low;
        intent.technical.insert("repo".into(), FAKE_REPO.into());
        intent
            .technical
            .insert("installation_id".into(), INSTALLATION.into());
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
    store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await
        .unwrap();
    refresh_statistics(store).await;
    ids
}

/// Branches `bench/<n>` off `base`, each adding `docs/<n>.md`; returns their head shas.
fn fast_import_branches(repo: &Path, base: &str, numbers: &[u64]) -> Vec<String> {
    let marks = repo.join(".git/bench-marks");
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["fast-import", "--quiet"])
        .arg(format!("--export-marks={}", marks.display()))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("git fast-import: {e}"));
    let mut stream = String::new();
    for (mark, n) in numbers.iter().enumerate() {
        let content = format!("change {n}\n");
        stream.push_str(&format!(
            "commit refs/heads/bench/{n}\nmark :{}\ncommitter Bench <bench@example.com> 1700000000 +0000\ndata 6\nbench\nfrom {base}\nM 100644 inline docs/{n}.md\ndata {}\n{content}\n",
            mark + 1,
            content.len()
        ));
    }
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(stream.as_bytes())
            .unwrap_or_else(|e| panic!("git fast-import: {e}"));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "git fast-import failed");
    let marks = std::fs::read_to_string(&marks).unwrap();
    let by_mark: std::collections::HashMap<usize, String> = marks
        .lines()
        .filter_map(|l| {
            let (mark, sha) = l.split_once(' ')?;
            Some((mark.trim_start_matches(':').parse().ok()?, sha.to_owned()))
        })
        .collect();
    (1..=numbers.len())
        .map(|mark| by_mark.get(&mark).cloned().unwrap_or_default())
        .collect()
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
        converge_store::PgStore::connect_lazy(&url, 16, Arc::new(SystemClock)).unwrap(),
    );
    runtime.block_on(store.migrate()).unwrap();

    // Validated and decided (auto-confirm off: each intent ends QUEUED), then validated,
    // decided and merged; then merged again with the keys spread over four tenants, whose
    // commits do not wait on one another for an audit chain's head (a tenant's commits take
    // turns on its chain's head, each holding it through its round trip to COMMIT).
    for (name, auto_confirm, tenants, worker_counts) in [
        ("queue_in_process_decide", false, 1, &[1usize, 4][..]),
        ("queue_in_process_scm", true, 1, &[1, 4][..]),
        ("queue_in_process_scm_4_tenants", true, 4, &[4][..]),
    ] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(IN_PROCESS_BATCH));
        group.sample_size(10);
        group.sampling_mode(SamplingMode::Flat);
        group.measurement_time(Duration::from_secs(20));
        for &workers in worker_counts {
            group.bench_with_input(
                BenchmarkId::new("workers", workers),
                &workers,
                |b, &workers| {
                    b.iter_custom(|batches| {
                        runtime.block_on(async {
                            let mut measured = Duration::ZERO;
                            for _ in 0..batches {
                                let ids = seed(&store, IN_PROCESS_BATCH, tenants).await;
                                let start = Instant::now();
                                drain(&store, workers, auto_confirm, || WorkerPorts {
                                    scm: MemoryScm,
                                    checks: MemoryScm,
                                    publisher: NoPublisher,
                                })
                                .await;
                                measured += start.elapsed();
                                if auto_confirm {
                                    assert_status(&store, &ids, Status::Merged).await;
                                } else {
                                    assert_status(&store, &ids, Status::Queued).await;
                                    clear_queued(&store, &ids).await;
                                }
                            }
                            measured
                        })
                    });
                },
            );
        }
        group.finish();
    }

    let (fake, ports) = runtime.block_on(github_world());
    let mut group = c.benchmark_group("queue_github_fake");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(15));
    for workers in [1usize, 4] {
        group.bench_with_input(
            BenchmarkId::new("workers", workers),
            &workers,
            |b, &workers| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let ids = seed_github(&store, &fake, iters.max(1)).await;
                        let start = Instant::now();
                        drain(&store, workers, true, || WorkerPorts {
                            scm: ports.clone(),
                            checks: ports.clone(),
                            publisher: ports.clone(),
                        })
                        .await;
                        let elapsed = start.elapsed();
                        assert_status(&store, &ids, Status::Merged).await;
                        elapsed
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
