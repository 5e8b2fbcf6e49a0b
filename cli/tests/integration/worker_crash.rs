//! Crash safety of the queue: `converge worker` processes are killed with SIGKILL at random
//! moments 20 times while 50 intents go through the queue on PostgreSQL and a local
//! repository. Afterwards every intent is merged exactly once — no intent lost, no head merged
//! twice — and no lease is left held (expired ones are taken over by the next worker).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_core::pipeline::Clock;
use converge_core::queue::QueueKey;
use converge_core::{Event, EventType, Intent, Status};
use converge_store::{Commit, IntentFilter, OutboxMessage, Store, SystemClock};
use converge_testkit::fresh_pg_database;
use converge_testkit::git::{commit_file, git};
use serde_json::json;

const INTENTS: usize = 50;
const KILLS: usize = 20;

fn repository(dir: &Path) -> Vec<String> {
    git(dir, &["init", "-q", "-b", "main"]);
    commit_file(dir, "README.md", "crash test\n", "init");
    let mut heads = Vec::new();
    for n in 0..INTENTS {
        let branch = format!("feature/{n}");
        git(dir, &["checkout", "-q", "-b", &branch, "main"]);
        commit_file(
            dir,
            &format!("docs/{n}.md"),
            &format!("change {n}\n"),
            &format!("change {n}"),
        );
        heads.push(git(dir, &["rev-parse", "HEAD"]));
    }
    git(dir, &["checkout", "-q", "--detach", "main"]);
    heads
}

fn start_worker(env: &[(&str, String)], dir: &Path) -> converge_testkit::KilledOnDrop {
    converge_testkit::KilledOnDrop(
        Command::new(env!("CARGO_BIN_EXE_converge"))
            .arg("worker")
            .current_dir(dir)
            .env_remove("CONVERGE_DB_PATH")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start converge worker: {e}")),
    )
}

/// A pseudo-random delay from 50 to 650 ms (xorshift; no extra crate for a test).
fn next_delay(state: &mut u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    Duration::from_millis(50 + *state % 600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_lose_nothing_and_merge_nothing_twice() {
    let repo = tempfile::tempdir().unwrap();
    let heads = repository(repo.path());
    let dsn = fresh_pg_database().await;
    let store = Store::from_url(&dsn, Arc::new(SystemClock)).unwrap();
    store.migrate().await.unwrap();
    let key = QueueKey {
        tenant: String::new(),
        repo: String::new(),
        target: "main".into(),
    };
    for n in 0..INTENTS {
        let id = format!("crash-{n:02}");
        let intent = Intent::new(&id, format!("feature/{n}"), "main", SystemClock.now());
        let event = Event::about_intent(
            format!("{id}-created"),
            "crash",
            SystemClock.now(),
            EventType::IntentCreated,
            id.clone(),
            serde_json::to_value(&intent).unwrap_or_default(),
        );
        let message = OutboxMessage {
            topic: "queue".into(),
            payload: json!({"tenant": key.tenant, "repo": key.repo, "target": key.target}),
        };
        store
            .commit(&Commit {
                events: vec![event],
                outbox: vec![message],
                ..Commit::default()
            })
            .await
            .unwrap();
    }

    let state = tempfile::tempdir().unwrap();
    let env = vec![
        ("CONVERGE_DB_BACKEND", "postgres".to_owned()),
        ("CONVERGE_PG_DSN", dsn.clone()),
        ("CONVERGE_REPO_PATH", repo.path().display().to_string()),
        ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
        ("CONVERGE_WORKER_SKIP_CHECKS", "1".to_owned()),
        ("CONVERGE_WORKER_POLL_INTERVAL", "1".to_owned()),
        ("CONVERGE_WORKER_BATCH_SIZE", "5".to_owned()),
        ("CONVERGE_WORKER_LEASE_TTL", "5".to_owned()),
        ("CONVERGE_AUTH_REQUIRED", "0".to_owned()),
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..KILLS {
        let mut worker = start_worker(&env, state.path());
        std::thread::sleep(next_delay(&mut seed));
        let _ = worker.kill();
        let _ = worker.wait();
    }

    let all = IntentFilter {
        limit: 500,
        ..IntentFilter::default()
    };
    let before = store.intents(&all).await.unwrap();
    let merged_before = before.iter().filter(|i| i.status == Status::Merged).count();
    eprintln!("merged by the {KILLS} killed workers: {merged_before} of {INTENTS}");
    assert!(
        merged_before > 0,
        "the killed workers did some of the work before dying"
    );

    // A last worker finishes the queue (taking over the leases the dead ones left to expire).
    let mut last = start_worker(&env, state.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let intents = store.intents(&all).await.unwrap();
        if intents.iter().all(|i| i.status == Status::Merged) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &last.id().to_string()])
        .status();
    assert!(killed.is_ok_and(|s| s.success()));
    let exit = last.wait().unwrap();
    assert!(exit.success(), "the last worker exited with {exit}");

    let intents = store.intents(&all).await.unwrap();
    assert_eq!(intents.len(), INTENTS, "no intent lost");
    let unmerged: Vec<_> = intents
        .iter()
        .filter(|i| i.status != Status::Merged)
        .map(|i| (&i.id, i.status))
        .collect();
    assert!(unmerged.is_empty(), "not merged: {unmerged:?}");
    // Every head merged exactly once: one merge commit per intent, each bringing a distinct head.
    let parents = git(repo.path(), &["log", "--merges", "--format=%P", "main"]);
    let merged_heads: Vec<&str> = parents
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(merged_heads.len(), INTENTS, "one merge commit per intent");
    let distinct: BTreeSet<&str> = merged_heads.iter().copied().collect();
    let expected: BTreeSet<&str> = heads.iter().map(String::as_str).collect();
    assert_eq!(distinct, expected, "each head merged once");
    let leases = store.leases().await.unwrap();
    assert!(
        leases.iter().all(|l| l.holder.is_none()),
        "a lease is still held: {leases:?}"
    );
}
