//! Queue processing against GitHub — the real octocrab client, as a GitHub App, talking to the
//! git-backed GitHub fake: a pull request is validated and merged with exactly the validated
//! commits; conflicts, moved heads and targets, failed checks, merge groups and rate limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_core::intake::{Effect, effect};
use converge_core::pipeline::{Clock, MergeError, Merger, SimulatedMerge};
use converge_core::queue::QueueKey;
use converge_core::{Event, EventType, Intent, PolicyConfig, Status};
use converge_github::adapters::GithubPorts;
use converge_github::app::{GithubApp, GithubSettings, parse_check_map};
use converge_github::webhook::{IntakeContext, Translation, translate};
use converge_runtime::queue_worker::{KeyOutcome, QueueProcessor, WorkerPorts, WorkerSettings};
use converge_store::{Commit, EventFilter, Store, SystemClock};
use converge_testkit::git::{commit_file, git};
use converge_testkit::github_fake::{CheckRun, GithubFake, app_key_pair};
use serde_json::{Value, json};

const APP_ID: u64 = 4242;
const INSTALLATION: u64 = 99;
const REPO: &str = "acme/app";

struct World {
    fake: GithubFake,
    repo: PathBuf,
    store: Store,
    ports: GithubPorts,
    _db: tempfile::TempDir,
}

async fn world() -> World {
    let (private_pem, public_pem) = app_key_pair();
    let fake = GithubFake::start(APP_ID, &public_pem).await;
    let repo = fake.create_repo(REPO);
    commit_file(&repo, "src/app/main.rs", "fn main() {}\n", "init");
    commit_file(&repo, "docs/guide.md", "# Guide\n", "docs");
    git(&repo, &["checkout", "-q", "--detach"]);
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("s.db").display());
    let store = Store::from_url(&url, Arc::new(SystemClock)).unwrap();
    store.migrate().await.unwrap();
    let settings = GithubSettings {
        app_id: APP_ID,
        private_key_pem: private_pem,
        private_key_secret_arn: None,
        api_url: fake.url().to_owned(),
        default_installation: None,
        check_map: parse_check_map("lint=ci/lint").unwrap(),
        publish_status: false,
    };
    let app = GithubApp::new(settings).unwrap();
    World {
        fake,
        repo,
        store,
        ports: GithubPorts::new(app),
        _db: db,
    }
}

/// Makes branch `name` from `from` with one commit writing `file`.
fn branch(repo: &Path, name: &str, from: &str, file: &str, content: &str) -> String {
    git(repo, &["checkout", "-q", "-b", name, from]);
    commit_file(repo, file, content, &format!("change {file}"));
    git(repo, &["checkout", "-q", "--detach"]);
    git(repo, &["rev-parse", name])
}

/// One more commit on an existing branch.
fn push(repo: &Path, name: &str, file: &str, content: &str) -> String {
    git(repo, &["checkout", "-q", name]);
    commit_file(repo, file, content, &format!("update {file}"));
    git(repo, &["checkout", "-q", "--detach"]);
    git(repo, &["rev-parse", name])
}

impl World {
    fn processor(&self, auto_confirm: bool) -> Worker {
        self.processor_on(auto_confirm, Arc::new(SystemClock))
    }

    /// A worker whose time is `clock`'s.
    fn processor_on(&self, auto_confirm: bool, clock: Arc<dyn Clock + Send + Sync>) -> Worker {
        self.processor_with(auto_confirm, clock, PolicyConfig::default())
    }

    /// A worker whose time is `clock`'s, judging by `policy`.
    fn processor_with(
        &self,
        auto_confirm: bool,
        clock: Arc<dyn Clock + Send + Sync>,
        policy: PolicyConfig,
    ) -> Worker {
        let settings = WorkerSettings {
            auto_confirm,
            max_retries: Some(3),
            ..WorkerSettings::default()
        };
        let ports = WorkerPorts {
            scm: self.ports.clone(),
            checks: self.ports.clone(),
            publisher: self.ports.clone(),
        };
        QueueProcessor::with_ports(
            self.store.clone(),
            ports,
            policy,
            settings,
            clock,
            "gh-worker",
        )
    }

    /// The "Converge" check runs of `sha`.
    fn reports(&self, sha: &str) -> Vec<CheckRun> {
        self.fake
            .check_runs()
            .into_iter()
            .filter(|r| r.name == "Converge" && r.head_sha == sha)
            .collect()
    }

    /// Delivers a payload the way the webhook does: translate, decide, commit.
    async fn deliver(&self, event: &str, payload: Value) -> String {
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let context = IntakeContext {
            tenant: None,
            now: SystemClock.now(),
        };
        let Ok(Translation::Change(change)) = translate(event, &body, context) else {
            panic!("not a change");
        };
        let id = match change.as_ref() {
            converge_core::intake::Change::Proposed { intent, .. }
            | converge_core::intake::Change::MergeGroupRequested { intent } => intent.id.clone(),
            converge_core::intake::Change::Closed { intent_id, .. }
            | converge_core::intake::Change::MergeGroupDestroyed { intent_id, .. }
            | converge_core::intake::Change::Prioritised { intent_id, .. }
            | converge_core::intake::Change::Reviewed { intent_id, .. } => intent_id.clone(),
        };
        let current = self.store.intent(&id).await.unwrap();
        let Effect::Events { events, .. } = effect(current.as_ref(), &change) else {
            panic!("ignored");
        };
        let events = events
            .into_iter()
            .enumerate()
            .map(|(n, (event_type, payload))| {
                Event::about_intent(
                    format!("{id}-{}-{n}", SystemClock.now().timestamp_micros()),
                    "webhook",
                    SystemClock.now(),
                    event_type,
                    id.clone(),
                    payload,
                )
            })
            .collect();
        self.store
            .commit(&Commit {
                events,
                ..Commit::default()
            })
            .await
            .unwrap();
        id
    }

    async fn open_pull(&self, number: u64, head_ref: &str) -> String {
        self.fake.open_pull(REPO, number, head_ref, "main");
        let head = git(&self.repo, &["rev-parse", head_ref]);
        let payload = json!({
            "action": "opened",
            "pull_request": {"number": number, "title": "change", "head": {"ref": head_ref, "sha": head},
                             "base": {"ref": "main", "sha": git(&self.repo, &["rev-parse", "main"])}},
            "repository": {"full_name": REPO},
            "installation": {"id": INSTALLATION}
        });
        self.deliver("pull_request", payload).await
    }

    /// CI completes `ci/lint` on `sha`: the check run on the fake, and the `check.reported`
    /// event the webhook records on the intent when GitHub delivers `check_run completed`.
    async fn complete_check(&self, id: &str, sha: &str, conclusion: &str) {
        self.fake.complete_check(REPO, sha, "ci/lint", conclusion);
        let state = if conclusion == "success" {
            "passed"
        } else {
            "failed"
        };
        let event = Event::about_intent(
            format!("check-{id}-{sha}-{}", SystemClock.now().timestamp_micros()),
            "webhook",
            SystemClock.now(),
            EventType::CheckReported,
            id.to_owned(),
            json!({"name": "ci/lint", "state": state, "head_sha": sha, "reported_by": "github"}),
        );
        self.store
            .commit(&Commit {
                events: vec![event],
                ..Commit::default()
            })
            .await
            .unwrap();
    }

    async fn intent(&self, id: &str) -> Intent {
        self.store
            .intent(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no intent {id}"))
    }

    async fn payloads(&self, id: &str, event_type: EventType) -> Vec<Value> {
        let filter = EventFilter {
            intent_id: Some(id.into()),
            event_type: Some(event_type),
            limit: 100,
            ..EventFilter::default()
        };
        self.store
            .events(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.payload)
            .collect()
    }

    /// A worker in tested mode: batches of 8, two candidates at once, one re-run.
    fn tested_processor(&self) -> Worker {
        let settings = WorkerSettings {
            auto_confirm: true,
            max_retries: Some(3),
            merge_mode: converge_core::train::MergeMode::Tested,
            train: converge_core::train::TrainSettings {
                batch_size: 8,
                depth: 2,
                flaky_reruns: 1,
                known_flaky: Default::default(),
            },
            ..WorkerSettings::default()
        };
        QueueProcessor::with_ports(
            self.store.clone(),
            WorkerPorts {
                scm: self.ports.clone(),
                checks: self.ports.clone(),
                publisher: self.ports.clone(),
            },
            PolicyConfig::default(),
            settings,
            Arc::new(SystemClock),
            "gh-tested",
        )
    }

    /// The commits of the trial branches tested candidates are on, one a line.
    fn trial_commits(&self) -> String {
        git(
            &self.repo,
            &[
                "for-each-ref",
                "--format=%(objectname)",
                "refs/heads/converge/trial/",
            ],
        )
    }

    fn main_updates(&self) -> usize {
        self.fake
            .ref_updates()
            .iter()
            .filter(|u| u.reference == "heads/main")
            .count()
    }
}

type Worker = QueueProcessor<GithubPorts, GithubPorts, GithubPorts>;

async fn poll(processor: &Worker) -> Vec<(String, &'static str, String)> {
    processor
        .poll()
        .await
        .unwrap_or_else(|e| panic!("poll: {e}"))
        .into_values()
        .flat_map(|outcome| match outcome {
            KeyOutcome::Busy => Vec::new(),
            KeyOutcome::Processed(reports) | KeyOutcome::Paused { reports, .. } => reports
                .into_iter()
                .map(|r| (r.intent_id, r.outcome.as_str(), r.detail))
                .collect(),
        })
        .collect()
}

fn outcomes(reports: &[(String, &'static str, String)]) -> Vec<&'static str> {
    reports.iter().map(|r| r.1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_is_validated_then_merged_with_exactly_the_validated_commits() {
    let w = world().await;
    let head = branch(
        &w.repo,
        "feature",
        "main",
        "docs/guide.md",
        "# Guide\n\nMore.\n",
    );
    let target = git(&w.repo, &["rev-parse", "main"]);
    let id = w.open_pull(7, "feature").await;
    assert_eq!(id, "acme/app:pr-7");
    let worker = w.processor(true);

    // CI has not reported yet: waiting, nothing merged.
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["waiting_for_checks"], "{reports:?}");
    assert_eq!(w.main_updates(), 0);

    w.complete_check(&id, &head, "success").await;
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["merged"], "{reports:?}");
    let merged = w.intent(&id).await;
    assert_eq!(merged.status, Status::Merged);
    // Exactly one move of main, from the validated target to a merge of the validated head.
    let updates = w.fake.ref_updates();
    let main: Vec<_> = updates
        .iter()
        .filter(|u| u.reference == "heads/main")
        .collect();
    assert_eq!(main.len(), 1, "{updates:?}");
    assert_eq!(main[0].from, target);
    assert_eq!(git(&w.repo, &["rev-parse", "main^1"]), target);
    assert_eq!(git(&w.repo, &["rev-parse", "main^2"]), head);
    let expected_tree = git(&w.repo, &["merge-tree", "--write-tree", &target, &head]);
    assert_eq!(git(&w.repo, &["rev-parse", "main^{tree}"]), expected_tree);
    // One "Converge" check run for the intent and head: in progress, then success.
    let runs = w.reports(&head);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].external_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        runs[0].history.first().map(String::as_str),
        Some("in_progress"),
        "{runs:?}"
    );
    assert_eq!(
        runs[0].history.last().map(String::as_str),
        Some("completed/success"),
        "{runs:?}"
    );
    let summary = runs[0].output["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("Merge commit") && summary.contains("Trace"),
        "{summary}"
    );
    // The scratch branches are gone.
    assert_eq!(git(&w.repo, &["for-each-ref", "refs/heads/converge"]), "");
    // Every call carried an installation token the fake issued (no 401 anywhere).
    assert!(
        w.fake.calls().iter().all(|c| c.status != 401),
        "{:?}",
        w.fake.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_pull_request_is_blocked_with_its_conflict_files() {
    let w = world().await;
    branch(
        &w.repo,
        "clash",
        "main",
        "src/app/main.rs",
        "fn main() { clash(); }\n",
    );
    git(&w.repo, &["checkout", "-q", "main"]);
    commit_file(
        &w.repo,
        "src/app/main.rs",
        "fn main() { run(); }\n",
        "main moves",
    );
    git(&w.repo, &["checkout", "-q", "--detach"]);
    let id = w.open_pull(8, "clash").await;
    let reports = poll(&w.processor(true)).await;
    assert_eq!(outcomes(&reports), ["blocked"], "{reports:?}");
    let simulation = w.payloads(&id, EventType::SimulationCompleted).await;
    assert_eq!(simulation[0]["conflicts"], json!(["src/app/main.rs"]));
    assert_eq!(simulation[0]["mergeable"], json!(false));
    assert_eq!(w.intent(&id).await.retries, 1);
    assert_eq!(w.main_updates(), 0);
    let head = git(&w.repo, &["rev-parse", "clash"]);
    let runs = w.reports(&head);
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].history.last().map(String::as_str),
        Some("completed/failure")
    );
    assert!(
        runs[0].output["title"]
            .as_str()
            .unwrap_or_default()
            .contains("src/app/main.rs")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_head_or_target_is_revalidated_never_merged_blind() {
    let w = world().await;
    let first_head = branch(&w.repo, "feature", "main", "docs/a.md", "a\n");
    let id = w.open_pull(9, "feature").await;
    w.complete_check(&id, &first_head, "success").await;
    assert_eq!(outcomes(&poll(&w.processor(false)).await), ["queued"]);
    let intent = w.intent(&id).await;
    let validated = SimulatedMerge {
        head_sha: first_head.clone(),
        target_sha: git(&w.repo, &["rev-parse", "main"]),
        ..SimulatedMerge::default()
    };

    // A merge needs the lease of the intent's queue key.
    let key = QueueKey::for_intent(&intent);
    let lease = w
        .store
        .acquire_lease(&key, "test", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the key is free"));
    let (lease, permit) = w
        .store
        .merge_permit(&lease, Duration::from_secs(60), false, SystemClock.now())
        .await
        .unwrap();

    // The pull request got a new head: the validated head is refused, nothing moves.
    let second_head = push(&w.repo, "feature", "docs/b.md", "b\n");
    let refused = w.ports.merge(&intent, &validated, &permit).await;
    assert!(
        matches!(refused, Err(MergeError::HeadMoved { .. })),
        "{refused:?}"
    );
    // The target moved too.
    git(&w.repo, &["checkout", "-q", "main"]);
    commit_file(&w.repo, "NOTES.md", "moved\n", "main moves");
    git(&w.repo, &["checkout", "-q", "--detach"]);
    let moved_main = git(&w.repo, &["rev-parse", "main"]);
    let validated_new_head = SimulatedMerge {
        head_sha: second_head.clone(),
        ..validated.clone()
    };
    let refused = w.ports.merge(&intent, &validated_new_head, &permit).await;
    assert!(
        matches!(refused, Err(MergeError::TargetMoved { .. })),
        "{refused:?}"
    );
    assert_eq!(w.main_updates(), 0);
    w.store.release_lease(&lease).await.unwrap();

    // The queue revalidates against the new head and tip, then merges those.
    w.complete_check(&id, &second_head, "success").await;
    let reports = poll(&w.processor(true)).await;
    assert_eq!(outcomes(&reports), ["merged"], "{reports:?}");
    assert_eq!(git(&w.repo, &["rev-parse", "main^1"]), moved_main);
    assert_eq!(git(&w.repo, &["rev-parse", "main^2"]), second_head);
    assert_eq!(w.payloads(&id, EventType::IntentValidated).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_required_check_blocks() {
    let w = world().await;
    let head = branch(&w.repo, "feature", "main", "docs/guide.md", "changed\n");
    let id = w.open_pull(10, "feature").await;
    w.complete_check(&id, &head, "failure").await;
    let reports = poll(&w.processor(true)).await;
    assert_eq!(outcomes(&reports), ["blocked"], "{reports:?}");
    let blocked = w.payloads(&id, EventType::IntentBlocked).await;
    assert_eq!(blocked[0]["kind"], "checks_failed", "{blocked:?}");
    assert_eq!(w.main_updates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_group_is_validated_and_left_for_github_to_merge() {
    let w = world().await;
    let group_head = branch(
        &w.repo,
        "gh-readonly-queue/main/pr-7-abc",
        "main",
        "docs/q.md",
        "q\n",
    );
    let payload = |action: &str, reason: Option<&str>| {
        json!({"action": action, "reason": reason,
               "merge_group": {"head_sha": group_head, "head_ref": "refs/heads/gh-readonly-queue/main/pr-7-abc",
                               "base_ref": "refs/heads/main"},
               "repository": {"full_name": REPO}, "installation": {"id": INSTALLATION}})
    };
    let id = w
        .deliver("merge_group", payload("checks_requested", None))
        .await;
    w.complete_check(&id, &group_head, "success").await;
    let reports = poll(&w.processor(true)).await;
    assert_eq!(outcomes(&reports), ["queued"], "{reports:?}");
    assert_eq!(outcomes(&poll(&w.processor(true)).await), ["unchanged"]);
    assert_eq!(
        w.main_updates(),
        0,
        "GitHub merges merge groups, not Converge"
    );
    w.deliver("merge_group", payload("destroyed", Some("merged")))
        .await;
    assert_eq!(w.intent(&id).await.status, Status::Merged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out_and_the_work_goes_on() {
    let w = world().await;
    let head = branch(&w.repo, "feature", "main", "docs/guide.md", "rate\n");
    let id = w.open_pull(11, "feature").await;
    w.complete_check(&id, &head, "success").await;
    w.fake.fail_next("/pulls/", 429, Some(1), 1);
    w.fake.fail_next("/compare/", 403, Some(1), 1);
    w.fake.fail_next("/merges", 502, None, 1);
    let started = Instant::now();
    let reports = poll(&w.processor(true)).await;
    assert_eq!(outcomes(&reports), ["merged"], "{reports:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "each Retry-After was honoured"
    );
    let calls = w.fake.calls();
    for status in [429, 403, 502] {
        assert!(
            calls.iter().any(|c| c.status == status),
            "{status} was injected: {calls:?}"
        );
    }
    assert_eq!(w.main_updates(), 1);
}

/// GitHub's two refusals of the final ref update. "Not a fast forward" (the target moved under
/// the merge) sends the intent back to be revalidated without spending a retry; branch
/// protection pauses the queue key with its reason, also without spending one. Neither moves
/// the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_fast_forward_or_a_protected_target_moves_nothing() {
    let w = world().await;
    let head = branch(&w.repo, "feature", "main", "docs/guide.md", "guarded\n");
    let target = git(&w.repo, &["rev-parse", "main"]);
    let id = w.open_pull(12, "feature").await;
    w.complete_check(&id, &head, "success").await;
    let worker = w.processor(true);

    w.fake.fail_next("/git/refs/heads/main", 422, None, 1);
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["requeued"], "{reports:?}");
    assert!(
        w.fake.calls().iter().any(|c| c.method == "PATCH"
            && c.path.ends_with("/git/refs/heads/main")
            && c.status == 422),
        "the refusal was the ref update's: {:?}",
        w.fake.calls()
    );
    let intent = w.intent(&id).await;
    assert_eq!((intent.status, intent.retries), (Status::Ready, 0));
    assert!(reports[0].2.contains("moved"), "{reports:?}");

    w.fake.protect("acme/app", "main");
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["paused"], "{reports:?}");
    assert!(reports[0].2.contains("protected"), "{reports:?}");
    let intent = w.intent(&id).await;
    assert_eq!(
        (intent.status, intent.retries),
        (Status::Queued, 0),
        "branch protection is the repository's setting, not the change's fault: no attempt spent"
    );
    let paused = w.payloads(&id, EventType::QueuePaused).await;
    assert_eq!(paused.len(), 1, "the pause is recorded with its reason");
    assert!(
        paused[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("protected")
    );
    assert!(
        w.payloads(&id, EventType::IntentMergeFailed)
            .await
            .is_empty()
    );

    assert_eq!(w.main_updates(), 0);
    assert_eq!(git(&w.repo, &["rev-parse", "main"]), target);
}

/// Reports reach GitHub in the order they were decided, also after one fails: the first
/// publish of a round is refused (the check run's creation answers 422), so the later report
/// of that round is held back with it rather than sent ahead; the next round sends both, in
/// order, and the check run ends in the latest state (completed), not the older one
/// (in progress).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_holds_back_the_reports_behind_it() {
    let w = world().await;
    let head = branch(&w.repo, "feature", "main", "docs/guide.md", "ordered\n");
    let id = w.open_pull(14, "feature").await;
    w.complete_check(&id, &head, "success").await;
    let worker = w.processor(false);

    // The round decides twice (validating, then queued); creating the check run fails once.
    w.fake.fail_next("/app/check-runs", 422, None, 1);
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["queued"], "{reports:?}");
    let runs = w.reports(&head);
    assert!(
        runs.is_empty(),
        "the later report overtook the failed one: {runs:?}"
    );

    // The next round sends them, oldest first.
    poll(&worker).await;
    let runs = w.reports(&head);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0].history.first().map(String::as_str),
        Some("in_progress"),
        "{runs:?}"
    );
    assert!(
        runs[0]
            .history
            .last()
            .is_some_and(|state| state.starts_with("completed")),
        "the check run ended in an older state: {runs:?}"
    );
    assert_eq!(runs[0].history.len(), 2, "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_window_holds_merges_says_why_and_lifts_on_time() {
    let w = world().await;
    let head = branch(
        &w.repo,
        "feature",
        "main",
        "docs/guide.md",
        "# Guide\n\nDuring the freeze.\n",
    );
    let id = w.open_pull(8, "feature").await;
    w.complete_check(&id, &head, "success").await;
    let clock = converge_testkit::ManualClock::new();
    let now = clock.now();
    let freeze = converge_core::freeze::Freeze {
        id: "frz-deploy".into(),
        tenant_id: None,
        repo: Some(REPO.into()),
        target: Some("main".into()),
        reason: "deploy window".into(),
        window: converge_core::freeze::Window::Span {
            start: now - chrono::Duration::minutes(1),
            end: Some(now + chrono::Duration::hours(1)),
        },
        created_by: "ops".into(),
        created_at: now,
        lifted_at: None,
        lifted_by: None,
    };
    w.store
        .commit(&Commit {
            freezes: vec![converge_store::FreezeWrite::Put(freeze)],
            ..Commit::default()
        })
        .await
        .unwrap();
    let worker = w.processor_on(true, Arc::new(clock.clone()));

    // Validated and queued, but not merged; the check run says why and until when.
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["frozen"], "{reports:?}");
    assert!(reports[0].2.contains("deploy window"), "{reports:?}");
    assert_eq!(w.main_updates(), 0);
    assert_eq!(w.intent(&id).await.status, Status::Queued);
    let runs = w.reports(&head);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let title = runs[0].output["title"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        title.contains("Merges frozen: deploy window (until "),
        "{title}"
    );
    assert_eq!(
        runs[0].history.last().map(String::as_str),
        Some("in_progress")
    );
    // The next rounds keep it queued without telling GitHub again.
    let updates = runs[0].updates;
    clock.advance(chrono::Duration::minutes(30));
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["frozen"], "{reports:?}");
    assert_eq!(w.reports(&head)[0].updates, updates);
    assert_eq!(w.main_updates(), 0);

    // The window closes: the next round merges exactly what was validated.
    clock.advance(chrono::Duration::minutes(31));
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["merged"], "{reports:?}");
    assert_eq!(w.main_updates(), 1);
    assert_eq!(w.intent(&id).await.status, Status::Merged);
    assert_eq!(git(&w.repo, &["rev-parse", "main^2"]), head);
    assert_eq!(
        w.reports(&head)[0].history.last().map(String::as_str),
        Some("completed/success")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_holds_a_pull_request_escalates_at_its_deadline_through_the_sweep_and_frees_it_once_approved()
 {
    let w = world().await;
    let head = branch(
        &w.repo,
        "reviewed",
        "main",
        "docs/guide.md",
        "# Guide\n\nReviewed.\n",
    );
    let id = w.open_pull(9, "reviewed").await;
    w.complete_check(&id, &head, "success").await;
    let clock = converge_testkit::ManualClock::new();
    let services = converge_runtime::services::Services::new(
        w.store.clone(),
        Arc::new(clock.clone()),
        converge_runtime::config::ApiSettings::default(),
    );
    let intent = w.intent(&id).await;
    let task = converge_runtime::reviews::request(
        &services,
        "ops",
        &intent,
        converge_core::review::Trigger::Manual,
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(task.sla_deadline, clock.now() + chrono::Duration::hours(48));
    let worker = w.processor_on(true, Arc::new(clock.clone()));

    // Held: not validated, not merged, the reason names the task.
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["held"], "{reports:?}");
    assert!(reports[0].2.contains(&task.id), "{reports:?}");
    assert_eq!(w.main_updates(), 0);

    // Before the deadline the sweep leaves it; after, it escalates it once.
    clock.advance(chrono::Duration::hours(47));
    services.maintain().await;
    assert!(
        w.payloads(&id, EventType::ReviewSlaBreached)
            .await
            .is_empty()
    );
    clock.advance(chrono::Duration::hours(2));
    services.maintain().await;
    services.maintain().await;
    assert_eq!(w.payloads(&id, EventType::ReviewSlaBreached).await.len(), 1);
    let escalated = w.store.review_task(&task.id).await.unwrap().unwrap();
    assert_eq!(
        escalated.task.status,
        converge_core::review::ReviewStatus::Escalated
    );
    assert_eq!(escalated.task.notes, "sla_breach");
    let reports = poll(&worker).await;
    assert_eq!(
        outcomes(&reports),
        ["held"],
        "an escalated review still holds: {reports:?}"
    );

    // A rejection holds it too; a later approval frees it, and it merges.
    let rejected = converge_runtime::reviews::change(&services, "lead", escalated, |t| {
        t.complete(
            converge_core::review::Resolution::Rejected,
            "needs a test",
            clock.now(),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        rejected.resolution,
        Some(converge_core::review::Resolution::Rejected)
    );
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["held"], "{reports:?}");
    assert!(reports[0].2.contains("needs a test"), "{reports:?}");
    let again = converge_runtime::reviews::request(
        &services,
        "ops",
        &w.intent(&id).await,
        converge_core::review::Trigger::Manual,
        Some("lead".into()),
        None,
    )
    .await
    .unwrap();
    let stored = w.store.review_task(&again.id).await.unwrap().unwrap();
    clock.advance(chrono::Duration::minutes(5));
    converge_runtime::reviews::change(&services, "lead", stored, |t| {
        t.complete(converge_core::review::Resolution::Approved, "", clock.now())
    })
    .await
    .unwrap();
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["merged"], "{reports:?}");
    assert_eq!(w.main_updates(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_requested_hold_a_pull_request_until_its_reviewer_approves() {
    let w = world().await;
    let head = branch(
        &w.repo,
        "asked",
        "main",
        "docs/guide.md",
        "# Guide\n\nAsked.\n",
    );
    let id = w.open_pull(10, "asked").await;
    w.complete_check(&id, &head, "success").await;
    let review = |review_id: u64, login: &str, state: &str, action: &str| {
        json!({
            "action": action,
            "review": {"id": review_id, "user": {"login": login}, "state": state,
                       "submitted_at": format!("2026-12-04T10:00:{review_id:02}Z"), "commit_id": head,
                       "author_association": "COLLABORATOR"},
            "pull_request": {"number": 10},
            "repository": {"full_name": REPO},
            "installation": {"id": INSTALLATION}
        })
    };
    // Medium-risk changes need one approving review here.
    let policy =
        PolicyConfig::from_json(&json!({"queue": {"required_approvals": {"medium": 1}}})).unwrap();
    let worker = w.processor_with(true, Arc::new(SystemClock), policy);

    // No review yet: held for want of an approval.
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["held"], "{reports:?}");
    assert!(reports[0].2.contains("needs 1 approval"), "{reports:?}");
    // Changes requested: held, saying by whom; a later comment changes nothing.
    w.deliver(
        "pull_request_review",
        review(1, "ana", "changes_requested", "submitted"),
    )
    .await;
    w.deliver(
        "pull_request_review",
        review(2, "ana", "commented", "submitted"),
    )
    .await;
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["held"], "{reports:?}");
    assert_eq!(reports[0].2, "changes requested by ana");
    assert_eq!(w.main_updates(), 0);
    // The pull request's check run says why, once.
    let runs = w.reports(&head);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0].output["title"].as_str(),
        Some("Held: changes requested by ana")
    );
    let updates = runs[0].updates;
    poll(&worker).await;
    assert_eq!(w.reports(&head)[0].updates, updates);
    // Bo approves, but Ana still asks for changes; her review dismissed, Bo's approval is enough.
    w.deliver(
        "pull_request_review",
        review(3, "bo", "approved", "submitted"),
    )
    .await;
    let reports = poll(&worker).await;
    assert_eq!(reports[0].2, "changes requested by ana", "{reports:?}");
    w.deliver(
        "pull_request_review",
        review(1, "ana", "dismissed", "dismissed"),
    )
    .await;
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["merged"], "{reports:?}");
    assert_eq!(w.main_updates(), 1);
    assert_eq!(
        w.payloads(&id, EventType::IntentPullRequestReview)
            .await
            .len(),
        4
    );
}

/// Tested mode on GitHub: eight pull requests, one breaking the build. CI (played here, as a
/// hosted CI would, on every trial branch Converge pushes) fails `ci/lint` on any tree holding
/// `BROKEN`. The seven others land, the target only ever moves to commits whose check passed,
/// and the breaking one is rejected naming its check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tested_mode_lands_seven_of_eight_and_ejects_the_failing_one_naming_its_check() {
    let w = world().await;
    let mut ids = Vec::new();
    let mut heads = Vec::new();
    for i in 0..8u64 {
        let name = format!("feature/{i}");
        let mut head = branch(&w.repo, &name, "main", &format!("f{i}.txt"), "x\n");
        if i == 5 {
            head = push(&w.repo, &name, "BROKEN", "yes\n");
        }
        heads.push(head);
        ids.push(w.open_pull(i + 1, &name).await);
    }
    let worker = w.tested_processor();
    let mut judged = std::collections::BTreeSet::new();
    for _ in 0..40 {
        poll(&worker).await;
        let mut done = true;
        for id in &ids {
            done &= matches!(w.intent(id).await.status, Status::Merged | Status::Rejected);
        }
        if done {
            break;
        }
        // CI runs on every trial branch pushed since.
        let trials = w.trial_commits();
        for sha in trials.lines().filter(|s| judged.insert(s.to_string())) {
            let files = git(&w.repo, &["ls-tree", "-r", "--name-only", sha]);
            let conclusion = if files.lines().any(|f| f == "BROKEN") {
                "failure"
            } else {
                "success"
            };
            w.fake.complete_check(REPO, sha, "ci/lint", conclusion);
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let expected = if i == 5 {
            Status::Rejected
        } else {
            Status::Merged
        };
        assert_eq!(
            w.intent(id).await.status,
            expected,
            "pull request {}",
            i + 1
        );
    }
    let rejected = w.payloads(&ids[5], EventType::IntentRejected).await;
    assert_eq!(rejected[0]["check"], "lint", "{rejected:?}");
    assert_eq!(rejected[0]["tested"], true);
    // The target moved only by fast-forwards to commits whose check passed.
    let passed: std::collections::BTreeSet<String> = w
        .fake
        .check_runs()
        .into_iter()
        .filter(|r| r.name == "ci/lint" && r.conclusion.as_deref() == Some("success"))
        .map(|r| r.head_sha)
        .collect();
    let moves: Vec<_> = w
        .fake
        .ref_updates()
        .into_iter()
        .filter(|u| u.reference == "heads/main")
        .collect();
    assert!(!moves.is_empty());
    for update in &moves {
        assert!(
            passed.contains(&update.to),
            "main moved to untested {}",
            update.to
        );
        let ancestor = std::process::Command::new("git")
            .arg("-C")
            .arg(&w.repo)
            .args(["merge-base", "--is-ancestor", &update.from, &update.to])
            .status()
            .unwrap()
            .success();
        assert!(ancestor, "{update:?} is a fast-forward");
    }
    let main = git(&w.repo, &["rev-parse", "main"]);
    for (i, head) in heads.iter().enumerate() {
        let landed = std::process::Command::new("git")
            .arg("-C")
            .arg(&w.repo)
            .args(["merge-base", "--is-ancestor", head, &main])
            .status()
            .unwrap()
            .success();
        assert_eq!(landed, i != 5, "pull request {}", i + 1);
    }
    assert_eq!(
        git(&w.repo, &["for-each-ref", "refs/heads/converge/trial/"]),
        "",
        "trial branches are deleted"
    );
}

/// Tested mode asks GitHub for a candidate's checks once a round, not once for each pull
/// request the candidate holds: waiting on CI costs two calls a candidate a round, however
/// many it tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tested_mode_reads_a_candidates_checks_once_a_round_whatever_it_holds() {
    let w = world().await;
    for i in 0..6u64 {
        let name = format!("feature/{i}");
        branch(&w.repo, &name, "main", &format!("f{i}.txt"), "x\n");
        w.open_pull(i + 1, &name).await;
    }
    let worker = w.tested_processor();
    let trials = || {
        w.trial_commits()
            .lines()
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<String>>()
    };
    // Rounds until the candidates wait on CI (their branches pushed, no check reported).
    for _ in 0..10 {
        if !trials().is_empty() {
            break;
        }
        poll(&worker).await;
    }
    let under_test = trials();
    assert!(!under_test.is_empty(), "a candidate is under test");
    let before = w.fake.calls().len();
    poll(&worker).await;
    let calls = w.fake.calls();
    for sha in &under_test {
        for read in ["check-runs", "status"] {
            let path = format!("/repos/{REPO}/commits/{sha}/{read}");
            let times = calls[before..].iter().filter(|c| c.path == path).count();
            assert_eq!(times, 1, "{path} read {times} times in a round");
        }
    }
}

/// A check that completes on no pull request's head wakes only the queues testing that commit
/// (a tested candidate's), not every queue of the repository: CI on other branches costs the
/// queues nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_check_wakes_only_the_queue_testing_its_commit() {
    let w = world().await;
    for i in 0..2u64 {
        let name = format!("woken/{i}");
        branch(&w.repo, &name, "main", &format!("w{i}.txt"), "w\n");
        w.open_pull(60 + i, &name).await;
    }
    let worker = w.tested_processor();
    let trial = || w.trial_commits();
    for _ in 0..10 {
        if !trial().is_empty() {
            break;
        }
        poll(&worker).await;
    }
    let candidate = trial()
        .lines()
        .next()
        .map(str::to_owned)
        .expect("a candidate");
    let services = converge_runtime::services::Services::new(
        w.store.clone(),
        Arc::new(SystemClock),
        converge_runtime::config::ApiSettings::default(),
    );
    let completed = |n: u32, sha: &str| {
        let translation = Translation::ChecksCompleted {
            repo: REPO.into(),
            head_sha: sha.into(),
            name: "ci/lint".into(),
            conclusion: "success".into(),
        };
        let delivery = converge_store::Delivery {
            id: format!("check-{n}"),
            event_name: "check_run".into(),
            body_sha256: format!("body-{n}"),
        };
        let services = &services;
        async move {
            match converge_runtime::commands::record_delivery(
                services,
                &translation,
                &json!({}),
                &delivery,
            )
            .await
            {
                Ok(converge_runtime::commands::DeliveryResult::Recorded(outcome)) => outcome,
                other => panic!("{other:?}"),
            }
        }
    };
    let woken = completed(1, &candidate).await;
    assert_eq!(
        (&woken["result"], &woken["queues"]),
        (&json!("queued"), &json!(1)),
        "{woken}"
    );
    let elsewhere = git(&w.repo, &["rev-parse", "main"]);
    let ignored = completed(2, &elsewhere).await;
    assert_eq!(
        (&ignored["result"], &ignored["queues"]),
        (&json!("ignored"), &json!(0)),
        "{ignored}"
    );
}

/// The repository file is read once per target tip: rounds over a target that stays put ask
/// GitHub where it is, not for the file again; a target that moved is read afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_file_is_read_once_per_target_tip() {
    let w = world().await;
    branch(&w.repo, "waiting", "main", "w.txt", "w\n");
    let waiting = w.open_pull(31, "waiting").await;
    let worker = w.processor(true);
    let path = format!("/repos/{REPO}/contents/.github/converge.toml");
    let reads = |w: &World| w.fake.calls().iter().filter(|c| c.path == path).count();
    // Its check never reports: the pull request waits, and each round looks at the key.
    for _ in 0..3 {
        poll(&worker).await;
    }
    assert_ne!(w.intent(&waiting).await.status, Status::Merged);
    assert_eq!(
        reads(&w),
        1,
        "three rounds over an unmoved target read the file once"
    );
    git(&w.repo, &["checkout", "-q", "main"]);
    commit_file(
        &w.repo,
        ".github/converge.toml",
        "batch_size = 5\n",
        "config",
    );
    git(&w.repo, &["checkout", "-q", "--detach"]);
    poll(&worker).await;
    poll(&worker).await;
    assert_eq!(reads(&w), 2, "the moved target's file is read, once");
}

/// A round reads where a page of pull requests points with the target's ref and the list of
/// open pull requests into it (as far as it needs), not two calls for each, with the
/// installation token it already has; a pushed head is still seen and validated again, and the
/// others are left as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_reads_its_pull_requests_tips_from_their_list_and_sees_a_push() {
    let w = world().await;
    let mut ids = Vec::new();
    for n in 0..3u64 {
        let name = format!("listed/{n}");
        let head = branch(&w.repo, &name, "main", &format!("l{n}.txt"), "l\n");
        let id = w.open_pull(40 + n, &name).await;
        w.complete_check(&id, &head, "success").await;
        ids.push(id);
    }
    // More open pull requests than one page lists: the page's are on the first.
    for n in 100..250u64 {
        w.fake.open_pull(REPO, n, &format!("other/{n}"), "main");
    }
    let worker = w.processor(false);
    assert_eq!(outcomes(&poll(&worker).await), ["queued"; 3]);
    let before = w.fake.calls().len();
    let reports = poll(&worker).await;
    assert!(
        reports.iter().all(|r| r.1 == "unchanged"),
        "nothing moved: {reports:?}"
    );
    let calls = w.fake.calls();
    let round = &calls[before..];
    let each = round
        .iter()
        .filter(|c| c.path.starts_with(&format!("/repos/{REPO}/pulls/")))
        .count();
    let listed = round
        .iter()
        .filter(|c| c.path == format!("/repos/{REPO}/pulls"))
        .count();
    assert_eq!((each, listed), (0, 1), "{round:?}");
    let minted = round
        .iter()
        .filter(|c| c.path.ends_with("/access_tokens"))
        .count();
    assert_eq!(minted, 0, "the installation's token is reused: {round:?}");

    let pushed = push(&w.repo, "listed/1", "more.txt", "m\n");
    w.complete_check(&ids[1], &pushed, "success").await;
    poll(&worker).await;
    let validated: Vec<usize> = validations_of(&w, &ids).await;
    assert_eq!(
        validated,
        [1, 2, 1],
        "only the pushed pull request is validated again"
    );
    let last = w.payloads(&ids[1], EventType::IntentValidated).await;
    assert!(
        last.iter().any(|p| p.to_string().contains(&pushed)),
        "validated at the pushed head {pushed}: {last:?}"
    );
}

/// How many times each intent was validated.
async fn validations_of(w: &World, ids: &[String]) -> Vec<usize> {
    let mut counts = Vec::new();
    for id in ids {
        counts.push(w.payloads(id, EventType::IntentValidated).await.len());
    }
    counts
}

/// Branch names go into GitHub's paths encoded: a `#` (which git allows) would otherwise end
/// the path, and the ref read would be another branch's, or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_named_with_a_hash_is_read_as_itself() {
    let w = world().await;
    branch(&w.repo, "release", "main", "r.txt", "r\n");
    let tip = branch(&w.repo, "release#2", "main", "r2.txt", "r2\n");
    branch(&w.repo, "feature", "main", "f.txt", "f\n");
    let id = w.open_pull(50, "feature").await;
    let mut intent = w.intent(&id).await;
    intent.target = "release#2".into();
    assert_eq!(w.ports.target_tip(&intent).await, Ok(tip));
}

/// Tested mode: a pull request that conflicts with the target leaves the queue at once (no
/// retries counted), its check run naming the file; a push that resolves it brings it back,
/// and it lands once its candidate's check passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_tested_mode_a_conflict_leaves_the_queue_at_once_and_a_push_brings_it_back() {
    let w = world().await;
    branch(
        &w.repo,
        "clash",
        "main",
        "src/app/main.rs",
        "fn main() { clash(); }\n",
    );
    git(&w.repo, &["checkout", "-q", "main"]);
    commit_file(
        &w.repo,
        "src/app/main.rs",
        "fn main() { run(); }\n",
        "main moves",
    );
    git(&w.repo, &["checkout", "-q", "--detach"]);
    let id = w.open_pull(9, "clash").await;
    let worker = w.tested_processor();
    let reports = poll(&worker).await;
    assert_eq!(outcomes(&reports), ["rejected"], "{reports:?}");
    let rejected = w.intent(&id).await;
    assert_eq!(rejected.status, Status::Rejected);
    assert_eq!(rejected.retries, 0, "no retry spent");
    let rejection = w.payloads(&id, EventType::IntentRejected).await;
    assert_eq!(rejection[0]["conflicts"], json!(["src/app/main.rs"]));
    let head = git(&w.repo, &["rev-parse", "clash"]);
    let runs = w.reports(&head);
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].history.last().map(String::as_str),
        Some("completed/failure")
    );
    assert!(
        runs[0].output["title"]
            .as_str()
            .unwrap_or_default()
            .contains("src/app/main.rs"),
        "{:?}",
        runs[0].output
    );

    // The author merges main into the branch and resolves: the push brings it back.
    git(&w.repo, &["checkout", "-q", "clash"]);
    let _ = std::process::Command::new("git")
        .arg("-C")
        .arg(&w.repo)
        .args(["merge", "-q", "main"])
        .output();
    commit_file(
        &w.repo,
        "src/app/main.rs",
        "fn main() { run(); clash(); }\n",
        "resolve",
    );
    git(&w.repo, &["checkout", "-q", "--detach"]);
    let new_head = git(&w.repo, &["rev-parse", "clash"]);
    let payload = json!({
        "action": "synchronize",
        "pull_request": {"number": 9, "title": "change", "head": {"ref": "clash", "sha": new_head},
                         "base": {"ref": "main", "sha": git(&w.repo, &["rev-parse", "main"])}},
        "repository": {"full_name": REPO},
        "installation": {"id": INSTALLATION}
    });
    assert_eq!(w.deliver("pull_request", payload).await, id);
    assert_eq!(w.intent(&id).await.status, Status::Ready);
    for _ in 0..10 {
        poll(&worker).await;
        if w.intent(&id).await.status == Status::Merged {
            break;
        }
        let trials = w.trial_commits();
        for sha in trials.lines() {
            w.fake.complete_check(REPO, sha, "ci/lint", "success");
        }
    }
    assert_eq!(w.intent(&id).await.status, Status::Merged);
    let main = git(&w.repo, &["rev-parse", "main"]);
    let landed = std::process::Command::new("git")
        .arg("-C")
        .arg(&w.repo)
        .args(["merge-base", "--is-ancestor", &new_head, &main])
        .status()
        .unwrap()
        .success();
    assert!(landed);
}

/// The repository's `.github/converge.toml` on the target picks tested mode for a worker
/// configured for head mode; a file that is refused later is reported on the check runs with
/// its line and field, and the last valid one stays in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_file_picks_the_mode_and_a_refused_one_leaves_the_last_valid_in_force() {
    let w = world().await;
    git(&w.repo, &["checkout", "-q", "main"]);
    commit_file(
        &w.repo,
        ".github/converge.toml",
        "mode = \"tested\"\nbatch_size = 2\n",
        "queue config",
    );
    git(&w.repo, &["checkout", "-q", "--detach"]);
    branch(&w.repo, "one", "main", "one.txt", "1\n");
    let one = w.open_pull(21, "one").await;
    // Head mode by the deployment; the file says tested.
    let worker = w.processor(true);
    let ci = |w: &World| {
        let trials = w.trial_commits();
        for sha in trials.lines() {
            w.fake.complete_check(REPO, sha, "ci/lint", "success");
        }
        !trials.is_empty()
    };
    let mut saw_trials = false;
    for _ in 0..10 {
        poll(&worker).await;
        if w.intent(&one).await.status == Status::Merged {
            break;
        }
        saw_trials |= ci(&w);
    }
    assert_eq!(w.intent(&one).await.status, Status::Merged);
    assert!(saw_trials, "the pull request went through a trial branch");
    let subject = git(&w.repo, &["log", "-1", "--format=%s", "main"]);
    assert!(subject.starts_with("Merge Converge intent"), "{subject}");

    // A refused file: line 2 is out of range.
    git(&w.repo, &["checkout", "-q", "main"]);
    commit_file(
        &w.repo,
        ".github/converge.toml",
        "mode = \"head\"\nbatch_size = 100\n",
        "bad config",
    );
    git(&w.repo, &["checkout", "-q", "--detach"]);
    branch(&w.repo, "two", "main", "two.txt", "2\n");
    let two = w.open_pull(22, "two").await;
    for _ in 0..10 {
        poll(&worker).await;
        if w.intent(&two).await.status == Status::Merged {
            break;
        }
        ci(&w);
    }
    assert_eq!(w.intent(&two).await.status, Status::Merged);
    let subject = git(&w.repo, &["log", "-1", "--format=%s", "main"]);
    assert!(
        subject.starts_with("Merge Converge intent"),
        "still tested: {subject}"
    );
    let head = git(&w.repo, &["rev-parse", "two"]);
    let summaries: Vec<String> = w
        .reports(&head)
        .iter()
        .map(|r| r.output["summary"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        summaries.iter().any(|s| s.contains("Configuration refused")
            && s.contains(".github/converge.toml, line 2, batch_size")),
        "{summaries:?}"
    );
}

/// Tested mode on GitHub: a flaky failure is re-run — the commit's failed check suite is
/// re-requested, its old result not taken for the new one — and the pull request lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tested_mode_reruns_a_flaky_failure_through_github_and_lands() {
    let w = world().await;
    branch(&w.repo, "flaky", "main", "flaky.txt", "1\n");
    let id = w.open_pull(31, "flaky").await;
    let worker = w.tested_processor();
    let mut judged = std::collections::BTreeSet::new();
    let mut rerun = 0;
    for _ in 0..15 {
        poll(&worker).await;
        if w.intent(&id).await.status == Status::Merged {
            break;
        }
        // CI: the first trial commit flakes; a re-requested suite runs again and passes.
        let trials = w.trial_commits();
        for sha in trials.lines() {
            if !judged.insert(sha.to_string()) {
                continue;
            }
            let conclusion = if judged.len() == 1 {
                "failure"
            } else {
                "success"
            };
            w.fake.complete_check(REPO, sha, "ci/lint", conclusion);
        }
        let asked = w.fake.rerequested();
        for (_, sha) in &asked[rerun..] {
            w.fake.complete_check(REPO, sha, "ci/lint", "success");
        }
        rerun = asked.len();
    }
    assert_eq!(w.intent(&id).await.status, Status::Merged);
    assert_eq!(rerun, 1, "the flaky suite was re-requested once");
    assert!(w.payloads(&id, EventType::IntentRejected).await.is_empty());
}
