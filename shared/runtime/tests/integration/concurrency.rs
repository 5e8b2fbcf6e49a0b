//! Four workers at once on PostgreSQL, through octocrab against the git-backed GitHub fake:
//! pull requests on two repositories and three targets each, some clean, some conflicting,
//! some with a failing check. Every intent ends where the scenario says, and the fake's log
//! shows exactly one merge per merged intent and none for the others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_core::pipeline::Clock;
use converge_core::{Event, EventType, Intent, PolicyConfig, Status};
use converge_github::adapters::GithubPorts;
use converge_github::app::{GithubApp, GithubSettings, parse_check_map};
use converge_runtime::queue_worker::{QueueProcessor, WorkerPorts, WorkerSettings};
use converge_store::{Commit, Store, SystemClock};
use converge_testkit::fresh_pg_database;
use converge_testkit::git::{commit_file, git};
use converge_testkit::github_fake::{GithubFake, app_key_pair};
use serde_json::json;

const REPOS: [&str; 2] = ["acme/app", "acme/lib"];
const TARGETS: [&str; 3] = ["main", "release", "dev"];
const CLEAN_PER_TARGET: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Merged,
    Rejected,
}

/// One commit on a new branch `name` from `from`; returns its head.
fn branch(repo: &Path, name: &str, from: &str, file: &str, content: &str) -> String {
    git(repo, &["checkout", "-q", "-b", name, from]);
    commit_file(repo, file, content, name);
    git(repo, &["rev-parse", "HEAD"])
}

/// Builds the repository's targets and pull requests; returns (pull number, head, target,
/// expected fate) per pull request.
fn scenario(fake: &GithubFake, repo_name: &str) -> Vec<(u64, String, &'static str, Fate)> {
    let repo = fake.create_repo(repo_name);
    commit_file(&repo, "shared.txt", "base\n", "init");
    for target in &TARGETS[1..] {
        git(&repo, &["branch", target, "main"]);
    }
    let mut pulls = Vec::new();
    let mut number = 0;
    for target in TARGETS {
        let mut open = |name: String, file: String, content: &str, conclusion: &str, fate: Fate| {
            number += 1;
            let head = branch(&repo, &name, target, &file, content);
            fake.open_pull(repo_name, number, &name, target);
            fake.complete_check(repo_name, &head, "ci/lint", conclusion);
            pulls.push((number, head, target, fate));
        };
        for n in 0..CLEAN_PER_TARGET {
            open(
                format!("clean-{target}-{n}"),
                format!("{target}/{n}.txt"),
                "clean\n",
                "success",
                Fate::Merged,
            );
        }
        open(
            format!("clash-{target}"),
            "shared.txt".to_owned(),
            "theirs\n",
            "success",
            Fate::Rejected,
        );
        open(
            format!("red-{target}"),
            format!("{target}/red.txt"),
            "red\n",
            "failure",
            Fate::Rejected,
        );
        // The target moves on the shared file: the clash branch now conflicts.
        git(&repo, &["checkout", "-q", target]);
        commit_file(
            &repo,
            "shared.txt",
            &format!("ours on {target}\n"),
            "target moves",
        );
    }
    git(&repo, &["checkout", "-q", "--detach"]);
    pulls
}

fn created(repo: &str, number: u64, head: &str, target: &str) -> Event {
    let id = format!("{repo}:pr-{number}");
    let mut intent = Intent::new(&id, format!("pr-{number}"), target, SystemClock.now());
    for (key, value) in [
        ("repo", json!(repo)),
        ("pr_number", json!(number)),
        ("installation_id", json!(5)),
        ("initial_base_commit", json!(head)),
    ] {
        intent.technical.insert(key.into(), value);
    }
    Event::about_intent(
        format!("{id}-created"),
        "scenario",
        SystemClock.now(),
        EventType::IntentCreated,
        id,
        serde_json::to_value(&intent).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_merge_each_passing_pull_request_exactly_once() {
    let (private_pem, public_pem) = app_key_pair();
    let fake = GithubFake::start(11, &public_pem).await;
    let mut expected: BTreeMap<String, (String, String, &'static str, Fate)> = BTreeMap::new();
    for repo in REPOS {
        for (number, head, target, fate) in scenario(&fake, repo) {
            expected.insert(
                format!("{repo}:pr-{number}"),
                (repo.to_owned(), head, target, fate),
            );
        }
    }
    let store = Store::from_url(&fresh_pg_database().await, Arc::new(SystemClock)).unwrap();
    store.migrate().await.unwrap();
    let events: Vec<Event> = expected
        .iter()
        .map(|(id, (repo, head, target, _))| {
            let number = id
                .rsplit("pr-")
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            created(repo, number, head, target)
        })
        .collect();
    store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .await
        .unwrap();

    let settings = GithubSettings {
        app_id: 11,
        private_key_pem: private_pem,
        private_key_secret_arn: None,
        api_url: fake.url().to_owned(),
        default_installation: None,
        check_map: parse_check_map("lint=ci/lint").unwrap(),
        publish_status: false,
    };
    let app = GithubApp::new(settings).unwrap();
    let ports = GithubPorts::new(app);
    let workers: Vec<_> = (0..4)
        .map(|n| {
            let processor = QueueProcessor::with_ports(
                store.clone(),
                WorkerPorts {
                    scm: ports.clone(),
                    checks: ports.clone(),
                    publisher: ports.clone(),
                },
                PolicyConfig::default(),
                WorkerSettings {
                    auto_confirm: true,
                    max_retries: Some(1),
                    ..WorkerSettings::default()
                },
                Arc::new(SystemClock),
                format!("worker-{n}"),
            );
            let store = store.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                while Instant::now() < deadline {
                    processor.poll().await.unwrap();
                    let open = store
                        .intent_counts(None)
                        .await
                        .unwrap()
                        .iter()
                        .filter(|c| c.status.is_actionable())
                        .map(|c| c.count)
                        .sum::<i64>();
                    if open == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }

    for (id, (_, _, _, fate)) in &expected {
        let status = store.intent(id).await.ok().flatten().map(|i| i.status);
        let wanted = match fate {
            Fate::Merged => Status::Merged,
            Fate::Rejected => Status::Rejected,
        };
        assert_eq!(status, Some(wanted), "{id}");
    }
    // The fake's log: one move of a target per merged intent, each bringing a distinct
    // expected head, and no head of a rejected intent anywhere.
    let updates = fake.ref_updates();
    let merges: Vec<_> = updates
        .iter()
        .filter(|u| !u.reference.starts_with("heads/converge/"))
        .collect();
    let merged_count = expected.values().filter(|e| e.3 == Fate::Merged).count();
    assert_eq!(merges.len(), merged_count, "{merges:?}");
    for repo in REPOS {
        let path = fake.repo_path(repo);
        for target in TARGETS {
            let parents = git(&path, &["log", "--merges", "--format=%P", target]);
            let merged: Vec<&str> = parents
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .collect();
            let distinct: BTreeSet<&str> = merged.iter().copied().collect();
            let wanted: BTreeSet<&str> = expected
                .values()
                .filter(|(r, _, t, f)| r == repo && *t == target && *f == Fate::Merged)
                .map(|(_, head, _, _)| head.as_str())
                .collect();
            assert_eq!(
                merged.len(),
                distinct.len(),
                "{repo}@{target}: a head merged twice"
            );
            assert_eq!(distinct, wanted, "{repo}@{target}");
        }
    }
}
