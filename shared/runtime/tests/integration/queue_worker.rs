//! The queue processor against real git repositories and real stores (SQLite and PostgreSQL):
//! what it merges, what it refuses, what it does not repeat, and how it shares a key.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use converge_core::pipeline::{
    Clock, MergeError, MergePermit, Merger, Scm, ScmError, SimulatedMerge, Tips,
};
use converge_core::queue::QueueKey;
use converge_core::risk::CouplingPair;
use converge_core::{Event, EventType, Intent, PolicyConfig, Status};
use converge_runtime::local_git::GitScm;
use converge_runtime::queue_worker::{KeyOutcome, QueueProcessor, WorkerError, WorkerSettings};
use converge_store::{Commit, EventFilter, Store, StoreError};
use converge_testkit::git::{commit_file, docs_and_clash, git};
use converge_testkit::{ManualClock, fresh_pg_database};
use serde_json::{Value, json};

/// Moves main by one commit without checking it out.
fn move_main(dir: &Path, content: &str) {
    git(dir, &["checkout", "-q", "main"]);
    commit_file(dir, "NOTES.md", content, "main moves again");
    git(dir, &["checkout", "-q", "--detach"]);
}

struct World {
    store: Store,
    clock: ManualClock,
    repo: tempfile::TempDir,
    _db: Option<tempfile::TempDir>,
    /// The PostgreSQL database, dropped when the test is done.
    pg_url: Option<String>,
}

async fn sqlite_world() -> World {
    let clock = ManualClock::new();
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("state.db").display());
    let store = Store::from_url(&url, Arc::new(clock.clone())).unwrap();
    world(store, clock, Some(db), None).await
}

async fn pg_world() -> World {
    let clock = ManualClock::new();
    let url = fresh_pg_database().await;
    let store = Store::from_url(&url, Arc::new(clock.clone())).unwrap();
    world(store, clock, None, Some(url)).await
}

async fn world(
    store: Store,
    clock: ManualClock,
    db: Option<tempfile::TempDir>,
    pg_url: Option<String>,
) -> World {
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("migrate: {e}"));
    let repo = tempfile::tempdir().unwrap();
    docs_and_clash(repo.path());
    World {
        store,
        clock,
        repo,
        _db: db,
        pg_url,
    }
}

fn settings(auto_confirm: bool, skip_checks: bool) -> WorkerSettings {
    WorkerSettings {
        auto_confirm,
        skip_checks,
        max_retries: Some(3),
        ..WorkerSettings::default()
    }
}

impl World {
    fn processor(&self, holder: &str, settings: WorkerSettings) -> QueueProcessor<GitScm> {
        QueueProcessor::new(
            self.store.clone(),
            GitScm::new(self.repo.path()),
            PolicyConfig::default(),
            settings,
            Arc::new(self.clock.clone()),
            holder,
        )
    }

    fn event(&self, intent_id: &str, event_type: EventType, payload: Value) -> Event {
        Event::about_intent(
            format!("{intent_id}-{}-{}", event_type.as_str(), rand_suffix()),
            "test",
            self.clock.now(),
            event_type,
            intent_id,
            payload,
        )
    }

    async fn append(&self, events: Vec<Event>) {
        self.store
            .commit(&Commit {
                events,
                ..Commit::default()
            })
            .await
            .unwrap_or_else(|e| panic!("commit: {e}"));
    }

    async fn create(&self, id: &str, source: &str) {
        let intent = Intent::new(id, source, "main", self.clock.now());
        let payload = serde_json::to_value(&intent).unwrap_or_default();
        self.append(vec![self.event(id, EventType::IntentCreated, payload)])
            .await;
    }

    async fn report_check(&self, id: &str, head_sha: &str, state: &str) {
        let payload = json!({"name": "lint", "head_sha": head_sha, "state": state});
        self.append(vec![self.event(id, EventType::CheckReported, payload)])
            .await;
    }

    async fn intent(&self, id: &str) -> Intent {
        self.store
            .intent(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no intent {id}"))
    }

    async fn events_of(&self, id: &str) -> Vec<EventType> {
        let filter = EventFilter {
            intent_id: Some(id.into()),
            limit: 500,
            ..EventFilter::default()
        };
        let mut events: Vec<EventType> = self
            .store
            .events(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.event_type)
            .collect();
        events.reverse();
        events
    }

    fn sha(&self, reference: &str) -> String {
        git(self.repo.path(), &["rev-parse", reference])
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn main_key() -> QueueKey {
    QueueKey {
        tenant: String::new(),
        repo: String::new(),
        target: "main".into(),
    }
}

async fn poll(processor: &QueueProcessor<GitScm>) -> Vec<(String, &'static str)> {
    let outcomes = processor
        .poll()
        .await
        .unwrap_or_else(|e| panic!("poll: {e}"));
    outcomes
        .into_values()
        .flat_map(|outcome| match outcome {
            KeyOutcome::Busy => Vec::new(),
            KeyOutcome::Processed(reports) | KeyOutcome::Paused { reports, .. } => reports
                .into_iter()
                .map(|r| (r.intent_id, r.outcome.as_str()))
                .collect(),
        })
        .collect()
}

async fn merges_exactly_the_validated_head_onto_the_validated_target(w: World) {
    w.create("docs", "feature/docs").await;
    let head = w.sha("feature/docs");
    let target = w.sha("main");
    let worker = w.processor("w1", settings(true, true));
    assert_eq!(poll(&worker).await, [("docs".to_owned(), "merged")]);

    let merged = w.intent("docs").await;
    assert_eq!(merged.status, Status::Merged);
    let new_main = w.sha("main");
    assert_eq!(
        w.sha("main^1"),
        target,
        "the merge sits on the validated target"
    );
    assert_eq!(w.sha("main^2"), head, "the merge brings the validated head");
    let tree = git(w.repo.path(), &["show", "main:docs/guide.md"]);
    assert_eq!(tree, "# Guide\n\nMore.");
    assert_eq!(
        w.events_of("docs").await,
        [
            EventType::IntentCreated,
            EventType::SimulationCompleted,
            EventType::CheckCompleted,
            EventType::RiskEvaluated,
            // A docs change scores low; the intent was declared medium.
            EventType::RiskLevelReclassified,
            EventType::PolicyEvaluated,
            EventType::IntentValidated,
            EventType::IntentQueued,
            EventType::IntentMerged,
        ]
    );
    // Nothing left to do: the next poll changes nothing and merges nothing.
    assert!(poll(&worker).await.is_empty());
    assert_eq!(w.sha("main"), new_main);
}

async fn a_conflict_is_blocked_once_per_change_and_rejected_at_the_bound(w: World) {
    w.create("clash", "feature/clash").await;
    let worker = w.processor("w1", settings(true, true));
    assert_eq!(poll(&worker).await, [("clash".to_owned(), "blocked")]);
    let after_first = w.events_of("clash").await.len();
    assert_eq!(w.intent("clash").await.retries, 1);
    // Nothing moved: polling again does not spend a retry nor write an event.
    assert_eq!(poll(&worker).await, [("clash".to_owned(), "unchanged")]);
    assert_eq!(w.events_of("clash").await.len(), after_first);
    // Each move of the target is a new attempt; the third failed one rejects it.
    move_main(w.repo.path(), "one\n");
    assert_eq!(poll(&worker).await, [("clash".to_owned(), "blocked")]);
    move_main(w.repo.path(), "two\n");
    assert_eq!(poll(&worker).await, [("clash".to_owned(), "rejected")]);
    let rejected = w.intent("clash").await;
    assert_eq!((rejected.status, rejected.retries), (Status::Rejected, 3));
}

async fn queued_work_is_revalidated_when_the_target_moves(w: World) {
    w.create("docs", "feature/docs").await;
    let manual = w.processor("w1", settings(false, true));
    assert_eq!(poll(&manual).await, [("docs".to_owned(), "queued")]);
    assert_eq!(poll(&manual).await, [("docs".to_owned(), "unchanged")]);
    let validations = |events: &[EventType]| {
        events
            .iter()
            .filter(|e| **e == EventType::IntentValidated)
            .count()
    };
    assert_eq!(validations(&w.events_of("docs").await), 1);

    move_main(w.repo.path(), "moved\n");
    let moved_to = w.sha("main");
    let auto = w.processor("w1", settings(true, true));
    assert_eq!(poll(&auto).await, [("docs".to_owned(), "merged")]);
    assert_eq!(validations(&w.events_of("docs").await), 2);
    assert_eq!(
        w.sha("main^1"),
        moved_to,
        "merged onto the tip it was revalidated against"
    );
}

async fn checks_are_awaited_without_spending_retries(w: World) {
    w.create("docs", "feature/docs").await;
    let head = w.sha("feature/docs");
    let worker = w.processor("w1", settings(true, false));
    assert_eq!(
        poll(&worker).await,
        [("docs".to_owned(), "waiting_for_checks")]
    );
    let waiting = w.events_of("docs").await.len();
    assert_eq!(poll(&worker).await, [("docs".to_owned(), "unchanged")]);
    assert_eq!(
        w.events_of("docs").await.len(),
        waiting,
        "idle polls add no events"
    );
    assert_eq!(w.intent("docs").await.retries, 0);

    w.report_check("docs", &head, "passed").await;
    assert_eq!(poll(&worker).await, [("docs".to_owned(), "merged")]);
}

/// Checks that CI reports while the round is reading them: the report commits before the
/// round's "still waiting" decision does, and the next round must still see it as new.
struct ReportedMidRound {
    store: Store,
    reported: std::sync::atomic::AtomicBool,
}

impl converge_core::pipeline::Checks for ReportedMidRound {
    async fn outcomes(
        &self,
        intent: &Intent,
        head_sha: &str,
        required: &[String],
    ) -> Result<Vec<converge_core::pipeline::CheckOutcome>, converge_core::pipeline::ChecksError>
    {
        use std::sync::atomic::Ordering;
        let reads = converge_runtime::reported_checks::ReportedChecks::new(self.store.clone());
        let outcomes =
            converge_core::pipeline::Checks::outcomes(&reads, intent, head_sha, required).await;
        if !self.reported.swap(true, Ordering::SeqCst) {
            // CI reports right after this read, before the round commits its decision.
            let event = Event::about_intent(
                "mid-round-check",
                "ci",
                chrono::Utc::now(),
                EventType::CheckReported,
                &intent.id,
                json!({"name": "lint", "head_sha": head_sha, "state": "passed"}),
            );
            self.store
                .commit(&Commit {
                    events: vec![event],
                    ..Commit::default()
                })
                .await
                .map_err(|e| converge_core::pipeline::ChecksError(e.to_string()))?;
        }
        outcomes
    }
}

async fn a_check_reported_while_the_round_decides_is_seen_by_the_next(w: World) {
    w.create("docs", "feature/docs").await;
    let checks = ReportedMidRound {
        store: w.store.clone(),
        reported: std::sync::atomic::AtomicBool::new(false),
    };
    let worker = QueueProcessor::with_ports(
        w.store.clone(),
        converge_runtime::queue_worker::WorkerPorts {
            scm: GitScm::new(w.repo.path()),
            checks,
            publisher: converge_core::publication::NoPublisher,
        },
        PolicyConfig::default(),
        settings(true, false),
        Arc::new(w.clock.clone()),
        "w-mid",
    );
    let outcomes = |o: std::collections::BTreeMap<QueueKey, KeyOutcome>| -> Vec<&'static str> {
        o.into_values()
            .flat_map(|outcome| match outcome {
                KeyOutcome::Processed(reports) => {
                    reports.into_iter().map(|r| r.outcome.as_str()).collect()
                }
                _ => Vec::new(),
            })
            .collect()
    };
    assert_eq!(
        outcomes(worker.poll().await.unwrap()),
        ["waiting_for_checks"]
    );
    assert_eq!(outcomes(worker.poll().await.unwrap()), ["merged"]);
}

async fn a_wait_for_checks_that_outlasts_the_limit_counts_as_a_failed_attempt(w: World) {
    w.create("docs", "feature/docs").await;
    let worker = w.processor("w1", settings(true, false));
    assert_eq!(
        poll(&worker).await,
        [("docs".to_owned(), "waiting_for_checks")]
    );
    w.clock.advance(Duration::minutes(121));
    assert_eq!(poll(&worker).await, [("docs".to_owned(), "blocked")]);
    let intent = w.intent("docs").await;
    assert_eq!((intent.status, intent.retries), (Status::Ready, 1));
}

async fn a_busy_key_is_left_alone_and_a_fenced_worker_cannot_write(w: World) {
    w.create("docs", "feature/docs").await;
    let lease = w
        .store
        .acquire_lease(&main_key(), "elsewhere", StdDuration::from_secs(60))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("lease"));
    let worker = w.processor("w1", settings(true, true));
    let outcome = worker.process_key(&main_key()).await.unwrap();
    assert_eq!(outcome, KeyOutcome::Busy);
    assert_eq!(w.events_of("docs").await, [EventType::IntentCreated]);

    // The holder's lease expires and another worker takes the key: the old holder is fenced.
    w.clock.advance(Duration::seconds(61));
    assert_eq!(poll(&worker).await, [("docs".to_owned(), "merged")]);
    let late_write = w
        .store
        .commit(&Commit {
            events: vec![w.event("docs", EventType::IntentRejected, json!({}))],
            guard: Some(lease),
            ..Commit::default()
        })
        .await;
    assert!(matches!(late_write, Err(StoreError::StaleLease { .. })));
    assert_eq!(w.intent("docs").await.status, Status::Merged);
}

async fn a_lost_merge_record_is_recovered_without_merging_twice(w: World) {
    w.create("docs", "feature/docs").await;
    let manual = w.processor("w1", settings(false, true));
    assert_eq!(poll(&manual).await, [("docs".to_owned(), "queued")]);
    // A worker merged and died before recording it: the head is in main, the intent QUEUED.
    let head = w.sha("feature/docs");
    git(w.repo.path(), &["checkout", "-q", "main"]);
    git(
        w.repo.path(),
        &["merge", "-q", "--no-ff", "-m", "by hand", &head],
    );
    git(w.repo.path(), &["checkout", "-q", "--detach"]);
    let main_after = w.sha("main");

    let auto = w.processor("w2", settings(true, true));
    assert_eq!(poll(&auto).await, [("docs".to_owned(), "merged")]);
    assert_eq!(w.sha("main"), main_after, "no second merge");
    assert_eq!(w.intent("docs").await.status, Status::Merged);
}

async fn a_checked_out_target_is_never_moved(w: World) {
    git(w.repo.path(), &["checkout", "-q", "main"]);
    let before = w.sha("main");
    w.create("docs", "feature/docs").await;
    let worker = w.processor("w1", settings(true, true));
    assert_eq!(poll(&worker).await, [("docs".to_owned(), "paused")]);
    assert_eq!(w.sha("main"), before);
    let status = git(w.repo.path(), &["status", "--porcelain"]);
    assert_eq!(status, "", "the work tree is untouched");
    // The environment's failure, not the change's: no retry spent, the key paused.
    let intent = w.intent("docs").await;
    assert_eq!((intent.status, intent.retries), (Status::Queued, 0));
    assert_eq!(
        w.events_of("docs").await.last(),
        Some(&EventType::QueuePaused)
    );
    let hold = w
        .store
        .inspect_lease(&main_key())
        .await
        .unwrap()
        .and_then(|l| l.hold);
    assert!(hold.is_some_and(|h| h.reason.contains("checked out")));
    // Within the backoff no round runs (the key answers paused, with no reports); after it,
    // the next one tries again, and the backoff doubles.
    let skipped = worker.poll().await.unwrap();
    assert!(
        matches!(skipped.get(&main_key()), Some(KeyOutcome::Paused { reports, .. }) if reports.is_empty()),
        "{skipped:?}"
    );
    assert_eq!(
        w.events_of("docs")
            .await
            .iter()
            .filter(|e| **e == EventType::QueuePaused)
            .count(),
        1
    );
    w.clock.advance(Duration::seconds(6));
    assert_eq!(poll(&worker).await, [("docs".to_owned(), "paused")]);
    let hold = w
        .store
        .inspect_lease(&main_key())
        .await
        .unwrap()
        .and_then(|l| l.hold);
    assert_eq!(
        hold.map(|h| (h.failures, h.until - w.clock.now())),
        Some((2, Duration::seconds(10)))
    );
    // Fixed: the next try merges and the pause ends.
    git(w.repo.path(), &["checkout", "-q", "--detach"]);
    w.clock.advance(Duration::seconds(11));
    assert_eq!(poll(&worker).await, [("docs".to_owned(), "merged")]);
    let hold = w
        .store
        .inspect_lease(&main_key())
        .await
        .unwrap()
        .and_then(|l| l.hold);
    assert_eq!(hold, None);
}

async fn dependencies_hold_an_intent_until_they_merge(w: World) {
    let mut waiting = Intent::new("after", "feature/docs", "main", w.clock.now());
    waiting.dependencies = vec!["first".into()];
    let payload = serde_json::to_value(&waiting).unwrap_or_default();
    w.append(vec![w.event("after", EventType::IntentCreated, payload)])
        .await;
    let worker = w.processor("w1", settings(true, true));
    assert_eq!(
        poll(&worker).await,
        [("after".to_owned(), "waiting_for_dependencies")]
    );
    assert_eq!(w.events_of("after").await, [EventType::IntentCreated]);
}

async fn two_workers_racing_on_one_key_merge_once(w: World) {
    for n in 0..3 {
        let branch = format!("feature/n{n}");
        git(w.repo.path(), &["branch", &branch, "feature/docs"]);
        git(w.repo.path(), &["checkout", "-q", &branch]);
        commit_file(w.repo.path(), &format!("docs/n{n}.md"), "x\n", "more");
        git(w.repo.path(), &["checkout", "-q", "--detach"]);
        w.create(&format!("n{n}"), &branch).await;
    }
    let a = w.processor("a", settings(true, true));
    let b = w.processor("b", settings(true, true));
    let (ra, rb) = tokio::join!(a.poll(), b.poll());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    // Drain: whatever one round left (a moved target revalidates) the next rounds finish.
    for _ in 0..6 {
        poll(&a).await;
    }
    let merges = git(w.repo.path(), &["rev-list", "--merges", "--count", "main"]);
    assert_eq!(merges, "3", "one merge per intent: {ra:?} {rb:?}");
    for n in 0..3 {
        assert_eq!(w.intent(&format!("n{n}")).await.status, Status::Merged);
        let merged_events = w
            .events_of(&format!("n{n}"))
            .await
            .into_iter()
            .filter(|e| *e == EventType::IntentMerged)
            .count();
        assert_eq!(merged_events, 1);
    }
}

async fn queued_work_never_starves_the_intents_behind_it(w: World) {
    w.create("first", "feature/docs").await;
    w.clock.advance(Duration::seconds(1));
    w.create("second", "feature/docs").await;
    let one_at_a_time = WorkerSettings {
        batch_size: 1,
        ..settings(false, true)
    };
    let worker = w.processor("w1", one_at_a_time);
    assert_eq!(poll(&worker).await, [("first".to_owned(), "queued")]);
    // The queued intent needs nothing and does not use up the batch of one.
    assert_eq!(
        poll(&worker).await,
        [
            ("first".to_owned(), "unchanged"),
            ("second".to_owned(), "queued")
        ]
    );
}

/// Source control that loses the worker its lease in the middle of a validation: the
/// simulation takes long enough for the lease to lapse (the clock jumps past its lifetime)
/// and another worker takes the key over, as after a pause or a partition.
struct LeaseLostDuringValidation {
    git: GitScm,
    store: Store,
    clock: ManualClock,
    ttl: StdDuration,
}

impl Scm for LeaseLostDuringValidation {
    async fn tips(&self, intent: &Intent) -> Result<Tips, ScmError> {
        self.git.tips(intent).await
    }

    async fn simulate(&self, intent: &Intent) -> Result<SimulatedMerge, ScmError> {
        let merge = self.git.simulate(intent).await?;
        self.clock
            .advance(Duration::seconds(self.ttl.as_secs() as i64 + 1));
        let taken = self
            .store
            .acquire_lease(&main_key(), "w2", self.ttl)
            .await
            .unwrap();
        assert!(taken.is_some(), "the lapsed lease is taken over");
        Ok(merge)
    }

    async fn co_changes(
        &self,
        intent: &Intent,
        files: &[String],
    ) -> Result<Vec<CouplingPair>, ScmError> {
        self.git.co_changes(intent, files).await
    }
}

impl Merger for LeaseLostDuringValidation {
    async fn landed(&self, intent: &Intent, head_sha: &str) -> Result<bool, MergeError> {
        self.git.landed(intent, head_sha).await
    }

    async fn merge(
        &self,
        intent: &Intent,
        validated: &SimulatedMerge,
        permit: &MergePermit,
    ) -> Result<String, MergeError> {
        self.git.merge(intent, validated, permit).await
    }
}

/// A worker that lost its lease between validating and merging does not merge: the merge
/// needs a permit, which only a lease still held can give (the decision's commit, guarded by
/// the lease, is refused first).
async fn a_worker_that_lost_its_lease_before_merging_does_not_merge(w: World) {
    w.create("docs", "feature/docs").await;
    let main_before = w.sha("main");
    let ttl = WorkerSettings::default().lease_ttl;
    let worker = QueueProcessor::new(
        w.store.clone(),
        LeaseLostDuringValidation {
            git: GitScm::new(w.repo.path()),
            store: w.store.clone(),
            clock: w.clock.clone(),
            ttl,
        },
        PolicyConfig::default(),
        settings(true, true),
        Arc::new(w.clock.clone()),
        "w1",
    );
    let outcome = worker.process_key(&main_key()).await;
    assert!(
        matches!(
            outcome,
            Err(WorkerError::Store(StoreError::StaleLease { .. }))
        ),
        "{outcome:?}"
    );
    assert_eq!(w.sha("main"), main_before, "nothing merged");
    assert_eq!(w.intent("docs").await.status, Status::Ready);
    let lease = w.store.inspect_lease(&main_key()).await.unwrap();
    assert_eq!(
        lease.and_then(|l| l.holder).as_deref(),
        Some("w2"),
        "the new holder keeps the key"
    );
}

/// Source control whose simulations wait until `together` of them are under way at once (or
/// give up after a few seconds): a poll that handled its keys one after another could never
/// bring two together.
struct Rendezvous {
    git: GitScm,
    barrier: tokio::sync::Barrier,
}

impl Scm for Rendezvous {
    async fn tips(&self, intent: &Intent) -> Result<Tips, ScmError> {
        self.git.tips(intent).await
    }

    async fn simulate(&self, intent: &Intent) -> Result<SimulatedMerge, ScmError> {
        tokio::time::timeout(StdDuration::from_secs(5), self.barrier.wait())
            .await
            .map_err(|_| ScmError::Unavailable("no other simulation came".into()))?;
        self.git.simulate(intent).await
    }

    async fn co_changes(
        &self,
        intent: &Intent,
        files: &[String],
    ) -> Result<Vec<CouplingPair>, ScmError> {
        self.git.co_changes(intent, files).await
    }
}

impl Merger for Rendezvous {
    async fn landed(&self, intent: &Intent, head_sha: &str) -> Result<bool, MergeError> {
        self.git.landed(intent, head_sha).await
    }

    async fn merge(
        &self,
        intent: &Intent,
        validated: &SimulatedMerge,
        permit: &MergePermit,
    ) -> Result<String, MergeError> {
        self.git.merge(intent, validated, permit).await
    }
}

/// One poll processes the keys of different targets at once (`CONVERGE_WORKER_CONCURRENCY`):
/// two targets' validations meet, and both intents merge into their own target.
async fn a_poll_processes_different_targets_at_once(w: World) {
    git(w.repo.path(), &["branch", "release", "main"]);
    w.create("docs", "feature/docs").await;
    let to_release = Intent::new("to-release", "feature/docs", "release", w.clock.now());
    let payload = serde_json::to_value(&to_release).unwrap_or_default();
    w.append(vec![w.event(
        "to-release",
        EventType::IntentCreated,
        payload,
    )])
    .await;
    let worker = QueueProcessor::new(
        w.store.clone(),
        Rendezvous {
            git: GitScm::new(w.repo.path()),
            barrier: tokio::sync::Barrier::new(2),
        },
        PolicyConfig::default(),
        WorkerSettings {
            concurrency: 2,
            ..settings(true, true)
        },
        Arc::new(w.clock.clone()),
        "w1",
    );
    let outcomes = worker.poll().await.unwrap_or_else(|e| panic!("poll: {e}"));
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    for id in ["docs", "to-release"] {
        assert_eq!(w.intent(id).await.status, Status::Merged, "{outcomes:?}");
    }
    for target in ["main", "release"] {
        let merges = git(w.repo.path(), &["rev-list", "--merges", "--count", target]);
        assert_eq!(merges, "1", "{target}");
    }
}

on_both_backends!(
    a_poll_processes_different_targets_at_once,
    queued_work_never_starves_the_intents_behind_it,
    merges_exactly_the_validated_head_onto_the_validated_target,
    a_conflict_is_blocked_once_per_change_and_rejected_at_the_bound,
    queued_work_is_revalidated_when_the_target_moves,
    checks_are_awaited_without_spending_retries,
    a_check_reported_while_the_round_decides_is_seen_by_the_next,
    a_wait_for_checks_that_outlasts_the_limit_counts_as_a_failed_attempt,
    a_busy_key_is_left_alone_and_a_fenced_worker_cannot_write,
    a_lost_merge_record_is_recovered_without_merging_twice,
    a_checked_out_target_is_never_moved,
    dependencies_hold_an_intent_until_they_merge,
    two_workers_racing_on_one_key_merge_once,
    a_worker_that_lost_its_lease_before_merging_does_not_merge,
    a_tenants_risk_policy_decides_its_intents_risk_gate,
);

/// The same change for two tenants: the one whose stored risk policy enforces a zero risk
/// ceiling is blocked by the risk gate, the other (the deployment's shadow gate) is queued.
async fn a_tenants_risk_policy_decides_its_intents_risk_gate(w: World) {
    for (id, tenant) in [("strict-docs", "strict"), ("lenient-docs", "lenient")] {
        let mut intent = Intent::new(id, "feature/docs", "main", w.clock.now());
        intent.tenant_id = Some(tenant.to_owned());
        let mut event = w.event(
            id,
            EventType::IntentCreated,
            serde_json::to_value(&intent).unwrap_or_default(),
        );
        event.tenant_id = Some(tenant.to_owned());
        w.append(vec![event]).await;
    }
    let version = w
        .store
        .put_risk_policy(
            "strict",
            &json!({"mode": "enforce", "max_risk_score": 0.0, "enforce_ratio": 1.0}),
        )
        .await
        .unwrap();
    assert_eq!(version, 1);
    let worker = w.processor("tenant-policies", settings(false, true));
    let mut outcomes = poll(&worker).await;
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("lenient-docs".to_owned(), "queued"),
            ("strict-docs".to_owned(), "blocked"),
        ]
    );
    let blocked = w
        .store
        .events(&EventFilter {
            intent_id: Some("strict-docs".into()),
            event_type: Some(EventType::IntentBlocked),
            limit: 1,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    let reason = blocked[0].event.payload["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.to_lowercase().contains("risk"), "{reason}");
}

/// The database-backed queue's poll with `CONVERGE_WORKER_TARGET=release`: the release
/// intent gets its round; the main intent is not looked at (no decision, no lease), and stays
/// for a worker of every target, which takes it.
#[tokio::test]
async fn a_poll_with_a_target_processes_only_that_targets_keys() {
    let w = sqlite_world().await;
    git(w.repo.path(), &["branch", "release", "main"]);
    w.create("for-main", "feature/docs").await;
    let intent = Intent::new("for-release", "feature/docs", "release", w.clock.now());
    let payload = serde_json::to_value(&intent).unwrap_or_default();
    w.append(vec![w.event(
        "for-release",
        EventType::IntentCreated,
        payload,
    )])
    .await;
    let release_only = WorkerSettings {
        target: Some("release".to_owned()),
        ..settings(false, true)
    };
    let outcomes = w
        .processor("release-worker", release_only)
        .poll()
        .await
        .unwrap();
    let targets: Vec<&str> = outcomes.keys().map(|k| k.target.as_str()).collect();
    assert_eq!(targets, ["release"]);
    assert!(
        w.events_of("for-release").await.len() > 1,
        "the release intent was not judged"
    );
    assert_eq!(w.events_of("for-main").await, [EventType::IntentCreated]);
    let leases = w.store.leases().await.unwrap();
    assert!(
        leases.iter().all(|l| l.key.target == "release"),
        "{leases:?}"
    );

    let outcomes = w
        .processor("any-worker", settings(false, true))
        .poll()
        .await
        .unwrap();
    assert!(outcomes.keys().any(|k| k.target == "main"), "{outcomes:?}");
    assert!(
        w.events_of("for-main").await.len() > 1,
        "the main intent was never judged"
    );
}
