//! Tested mode (`CONVERGE_MERGE_MODE=tested`) end to end over the queue processor: a real git
//! repository, checks run as commands in work trees of the candidates' commits, and real
//! stores (SQLite and PostgreSQL).

use std::path::Path;
use std::sync::Arc;

use converge_core::pipeline::Clock;
use converge_core::publication::NoPublisher;
use converge_core::train::{MergeMode, TrainSettings};
use converge_core::{Event, EventType, Intent, PolicyConfig, Status};
use converge_runtime::local_checks::CommandChecks;
use converge_runtime::local_git::GitScm;
use converge_runtime::queue_worker::{KeyOutcome, QueueProcessor, WorkerPorts, WorkerSettings};
use converge_store::{Commit, EventFilter, Store};
use converge_testkit::git::{commit_file, git};
use converge_testkit::{ManualClock, fresh_pg_database};
use std::collections::BTreeSet;

struct World {
    store: Store,
    clock: ManualClock,
    repo: tempfile::TempDir,
    _db: Option<tempfile::TempDir>,
    pg_url: Option<String>,
}

type Processor = QueueProcessor<GitScm, CommandChecks, NoPublisher>;

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
    store.migrate().await.unwrap();
    let repo = tempfile::tempdir().unwrap();
    let path = repo.path();
    git(path, &["init", "-q", "-b", "main"]);
    commit_file(path, "README.md", "# app\n", "init");
    git(path, &["checkout", "-q", "--detach"]);
    World {
        store,
        clock,
        repo,
        _db: db,
        pg_url,
    }
}

/// A branch off `main` adding `files` (path, content) in one commit.
fn branch(dir: &Path, name: &str, files: &[(&str, &str)]) {
    git(dir, &["checkout", "-q", "-b", name, "main"]);
    for (path, content) in files {
        std::fs::write(dir.join(path), content).unwrap();
    }
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", name]);
    git(dir, &["checkout", "-q", "--detach"]);
}

impl World {
    /// A worker in tested mode whose `lint` check fails on any tree holding `BROKEN`.
    fn processor(&self, train: TrainSettings) -> Processor {
        let checks = CommandChecks::new(
            self.repo.path(),
            "lint=test ! -e BROKEN",
            std::time::Duration::from_secs(30),
        )
        .unwrap();
        let settings = WorkerSettings {
            auto_confirm: true,
            max_retries: Some(3),
            merge_mode: MergeMode::Tested,
            train,
            ..WorkerSettings::default()
        };
        QueueProcessor::with_ports(
            self.store.clone(),
            WorkerPorts {
                scm: GitScm::new(self.repo.path()),
                checks,
                publisher: NoPublisher,
            },
            PolicyConfig::default(),
            settings,
            Arc::new(self.clock.clone()),
            "tested-worker",
        )
    }

    async fn create(&self, id: &str, source: &str) {
        let intent = Intent::new(id, source, "main", self.clock.now());
        let event = Event::about_intent(
            format!("{id}-created"),
            "test",
            self.clock.now(),
            EventType::IntentCreated,
            id,
            serde_json::to_value(&intent).unwrap(),
        );
        self.store
            .commit(&Commit {
                events: vec![event],
                ..Commit::default()
            })
            .await
            .unwrap();
    }

    async fn status(&self, id: &str) -> Status {
        self.store.intent(id).await.unwrap().unwrap().status
    }

    fn sha(&self, reference: &str) -> String {
        git(self.repo.path(), &["rev-parse", reference])
    }

    fn is_ancestor(&self, ancestor: &str, of: &str) -> bool {
        std::process::Command::new("git")
            .arg("-C")
            .arg(self.repo.path())
            .args(["merge-base", "--is-ancestor", ancestor, of])
            .status()
            .unwrap()
            .success()
    }

    /// Polls until a round changes nothing, at most `rounds` times.
    async fn settle(&self, worker: &Processor, rounds: usize) {
        for _ in 0..rounds {
            let outcomes = worker.poll().await.unwrap();
            let changed = outcomes.values().any(|o| match o {
                KeyOutcome::Processed(reports) => {
                    reports.iter().any(|r| r.outcome.as_str() != "unchanged")
                }
                _ => false,
            });
            if !changed {
                return;
            }
            self.clock.advance(chrono::Duration::seconds(10));
        }
    }

    async fn rejection_of(&self, id: &str) -> serde_json::Value {
        let filter = EventFilter {
            intent_id: Some(id.into()),
            event_type: Some(EventType::IntentRejected),
            limit: 10,
            ..EventFilter::default()
        };
        let events = self.store.events(&filter).await.unwrap();
        events
            .first()
            .map(|e| e.event.payload.clone())
            .unwrap_or_else(|| panic!("{id} was not rejected"))
    }
}

/// Eight intents, one breaking the build: the seven others land and the target only ever
/// moves to commits whose check passed; the failing one is rejected naming its check.
async fn a_batch_of_eight_with_one_failing_lands_the_other_seven(w: World) {
    let path = w.repo.path();
    for i in 0..8 {
        let file = format!("f{i}.txt");
        let mut files = vec![(file.as_str(), "x\n")];
        if i == 5 {
            files.push(("BROKEN", "yes\n"));
        }
        branch(path, &format!("feature/{i}"), &files);
        w.create(&format!("i{i}"), &format!("feature/{i}")).await;
    }
    let heads: Vec<String> = (0..8).map(|i| w.sha(&format!("feature/{i}"))).collect();
    let main_before = w.sha("main");
    let worker = w.processor(TrainSettings {
        batch_size: 8,
        depth: 2,
        flaky_reruns: 1,
        known_flaky: BTreeSet::new(),
    });
    w.settle(&worker, 20).await;

    for i in 0..8 {
        let id = format!("i{i}");
        let expected = if i == 5 {
            Status::Rejected
        } else {
            Status::Merged
        };
        assert_eq!(w.status(&id).await, expected, "{id}");
    }
    let rejection = w.rejection_of("i5").await;
    assert_eq!(rejection["check"], "lint", "{rejection}");
    assert_eq!(rejection["cause"], "checks_failed", "{rejection}");
    assert_eq!(rejection["tested"], true);

    let main = w.sha("main");
    assert!(
        w.is_ancestor(&main_before, &main),
        "the target moved by fast-forward"
    );
    for (i, head) in heads.iter().enumerate() {
        assert_eq!(w.is_ancestor(head, &main), i != 5, "feature/{i}");
    }
    // Every commit the target moved through passed the check: none holds BROKEN.
    let reflog = git(path, &["reflog", "show", "--format=%H", "refs/heads/main"]);
    for commit in reflog.lines() {
        let files = git(path, &["ls-tree", "-r", "--name-only", commit]);
        assert!(!files.lines().any(|f| f == "BROKEN"), "{commit}: {files}");
    }
    // The merged intents record the tested commit they landed in.
    let merged = w
        .store
        .events(&EventFilter {
            event_type: Some(EventType::IntentMerged),
            limit: 50,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(merged.len(), 7);
    for event in &merged {
        let commit = event.event.payload["merged_commit"]
            .as_str()
            .unwrap_or_default();
        assert!(w.is_ancestor(commit, &main), "{commit}");
    }
    // No trial ref is left behind once the queue is empty.
    assert_eq!(
        git(
            path,
            &[
                "for-each-ref",
                "--format=%(refname)",
                "refs/heads/converge/"
            ]
        ),
        "",
        "trial refs left"
    );
}

/// Two intents that merge cleanly alone but not together: the second is rejected at once with
/// the conflicting file, the first lands; a new head pushed for the second brings it back.
async fn a_conflict_between_queued_intents_rejects_the_later_one_with_its_files(w: World) {
    let path = w.repo.path();
    branch(path, "feature/one", &[("shared.txt", "one\n")]);
    branch(path, "feature/two", &[("shared.txt", "two\n")]);
    w.create("one", "feature/one").await;
    w.clock.advance(chrono::Duration::seconds(1));
    w.create("two", "feature/two").await;
    let worker = w.processor(TrainSettings {
        batch_size: 4,
        depth: 1,
        flaky_reruns: 0,
        known_flaky: BTreeSet::new(),
    });
    w.settle(&worker, 10).await;
    assert_eq!(w.status("one").await, Status::Merged);
    assert_eq!(w.status("two").await, Status::Rejected);
    let rejection = w.rejection_of("two").await;
    assert_eq!(rejection["cause"], "conflict", "{rejection}");
    assert_eq!(rejection["conflicts"], serde_json::json!(["shared.txt"]));
    assert!(
        w.is_ancestor(&w.sha("feature/one"), &w.sha("main")),
        "the first landed"
    );
}

/// Two intents predicted to conflict (they change the same file differently) ride apart: the
/// first breaks the build and is rejected, and the second, which would have been ejected for
/// conflicting with it in one candidate, lands.
async fn predicted_conflicts_ride_apart_so_a_failing_intent_takes_nobody_down(w: World) {
    let path = w.repo.path();
    branch(
        path,
        "feature/broken",
        &[("shared.txt", "one\n"), ("BROKEN", "yes\n")],
    );
    branch(path, "feature/fine", &[("shared.txt", "two\n")]);
    w.create("broken", "feature/broken").await;
    w.clock.advance(chrono::Duration::seconds(1));
    w.create("fine", "feature/fine").await;
    let worker = w.processor(TrainSettings {
        batch_size: 8,
        depth: 2,
        flaky_reruns: 0,
        known_flaky: BTreeSet::new(),
    });
    w.settle(&worker, 10).await;
    assert_eq!(w.status("broken").await, Status::Rejected);
    assert_eq!(w.rejection_of("broken").await["check"], "lint");
    assert_eq!(w.status("fine").await, Status::Merged);
    assert!(w.is_ancestor(&w.sha("feature/fine"), &w.sha("main")));
}

/// A freeze holds the tested commit: nothing lands, and the train waits without testing
/// again; an intent dequeued meanwhile does not land with it (its candidate is rebuilt without
/// it); once the freeze ends, the rest lands.
async fn a_freeze_holds_the_tested_commit_and_a_dequeued_intent_does_not_land_with_it(w: World) {
    use converge_core::comment_command::{Command, Effect, effect};
    let path = w.repo.path();
    branch(path, "feature/a", &[("a.txt", "a\n")]);
    branch(path, "feature/b", &[("b.txt", "b\n")]);
    w.create("a", "feature/a").await;
    w.create("b", "feature/b").await;
    let now = w.clock.now();
    let freeze = converge_core::freeze::Freeze {
        id: "frz".into(),
        tenant_id: None,
        repo: None,
        target: Some("main".into()),
        reason: "release".into(),
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
    let main_before = w.sha("main");
    let worker = w.processor(TrainSettings {
        batch_size: 8,
        depth: 1,
        flaky_reruns: 0,
        known_flaky: BTreeSet::new(),
    });
    w.settle(&worker, 3).await;
    assert_eq!(w.sha("main"), main_before, "frozen: nothing lands");
    assert_eq!(w.status("a").await, Status::Queued);
    let trials = git(
        path,
        &[
            "for-each-ref",
            "--format=%(refname)",
            "refs/heads/converge/",
        ],
    );
    assert_eq!(
        trials.lines().count(),
        1,
        "one tested candidate waits: {trials}"
    );

    // `b` is taken out while its candidate waits.
    let b = w.store.intent("b").await.unwrap().unwrap();
    let Effect::Events(events) = effect(&b, Command::Dequeue, "ops") else {
        panic!("dequeue does something");
    };
    let events = events
        .into_iter()
        .map(|(event_type, payload)| {
            Event::about_intent(
                "b-dequeued",
                "test",
                w.clock.now(),
                event_type,
                "b",
                payload,
            )
        })
        .collect();
    w.store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await
        .unwrap();

    // The freeze ends: `a` lands alone, `b` does not.
    w.clock.advance(chrono::Duration::hours(2));
    w.settle(&worker, 10).await;
    assert_eq!(w.status("a").await, Status::Merged);
    assert_eq!(w.status("b").await, Status::Rejected);
    let main = w.sha("main");
    assert!(w.is_ancestor(&w.sha("feature/a"), &main));
    assert!(
        !w.is_ancestor(&w.sha("feature/b"), &main),
        "a dequeued intent landed"
    );
}

on_both_backends!(
    a_batch_of_eight_with_one_failing_lands_the_other_seven,
    a_conflict_between_queued_intents_rejects_the_later_one_with_its_files,
    predicted_conflicts_ride_apart_so_a_failing_intent_takes_nobody_down,
    a_freeze_holds_the_tested_commit_and_a_dequeued_intent_does_not_land_with_it,
);
