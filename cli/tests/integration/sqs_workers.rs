//! The serverless shape end to end on one machine: the API (`converge serve --no-worker`)
//! takes signed webhooks and relays queue messages to SQS (the AWS emulator, real aws-sdk-sqs);
//! four `converge worker` processes take their work from that queue, on one PostgreSQL, and
//! validate and merge through the GitHub App against the GitHub fake.
//!
//! Two repositories and three targets; per target, clean changes (merged), a pair that clash
//! (the first merged, the second rejected once the target holds the first), a change whose CI
//! fails (rejected), and on one target a draft (held). Every intent must end where the scenario
//! says, the fake must show exactly one merge per merged intent and none for the others, the
//! merged commits must be the validated heads, and every worker must stop cleanly on SIGTERM.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_store::{Store, SystemClock};

use converge_testkit::git::{commit_file, git};
use converge_testkit::github_fake::{GithubFake, app_key_pair};
use converge_testkit::{ServerProcess, fresh_pg_database};
use serde_json::{Value, json};

const SECRET: &str = "hook-secret";
const KEY: &str = "ops-key";
const WORKERS: usize = 4;
const CLEAN_PER_TARGET: usize = 5;

/// What a pull request is, and so where it must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Clean,
    ClashFirst,
    ClashSecond,
    RedCi,
    Draft,
}

impl Kind {
    fn expected_status(self) -> &'static str {
        match self {
            Kind::Clean | Kind::ClashFirst => "MERGED",
            Kind::ClashSecond | Kind::RedCi => "REJECTED",
            Kind::Draft => "READY",
        }
    }
}

struct Pull {
    repo: &'static str,
    number: u64,
    target: &'static str,
    head: String,
    kind: Kind,
}

impl Pull {
    fn intent_id(&self) -> String {
        format!("{}:pr-{}", self.repo, self.number)
    }
}

/// Branches one pull request's head off `target` in `dir` and returns its sha.
fn branch(dir: &Path, name: &str, target: &str, file: &str, content: &str) -> String {
    git(dir, &["checkout", "-q", "-b", name, target]);
    commit_file(dir, file, content, name);
    let head = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["checkout", "-q", "--detach", target]);
    head
}

/// The pull requests of one target, in the order they are opened.
fn pulls_for(
    fake: &GithubFake,
    dir: &Path,
    repo: &'static str,
    target: &'static str,
    next_number: &mut u64,
    with_draft: bool,
) -> Vec<Pull> {
    let mut kinds = vec![Kind::ClashFirst];
    kinds.extend(std::iter::repeat_n(Kind::Clean, CLEAN_PER_TARGET));
    kinds.extend([Kind::ClashSecond, Kind::RedCi]);
    if with_draft {
        kinds.push(Kind::Draft);
    }
    kinds
        .into_iter()
        .map(|kind| {
            *next_number += 1;
            let number = *next_number;
            let name = format!("{target}-pr-{number}");
            let head = match kind {
                Kind::ClashFirst => branch(dir, &name, target, "shared.txt", "first\n"),
                Kind::ClashSecond => branch(dir, &name, target, "shared.txt", "second\n"),
                _ => branch(
                    dir,
                    &name,
                    target,
                    &format!("docs/{name}.md"),
                    &format!("# {name}\n"),
                ),
            };
            let conclusion = if kind == Kind::RedCi {
                "failure"
            } else {
                "success"
            };
            fake.complete_check(repo, &head, "ci/lint", conclusion);
            fake.open_pull(repo, number, &name, target);
            Pull {
                repo,
                number,
                target,
                head,
                kind,
            }
        })
        .collect()
}

fn start_worker(env: &[(&str, String)], cwd: &Path, log: &Path) -> converge_testkit::KilledOnDrop {
    let log = std::fs::File::create(log).unwrap();
    converge_testkit::KilledOnDrop(
        Command::new(env!("CARGO_BIN_EXE_converge"))
            .arg("worker")
            .current_dir(cwd)
            .env_remove("CONVERGE_DB_PATH")
            .env_remove("CONVERGE_REPO_PATH")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start converge worker: {e}")),
    )
}

async fn statuses(server: &ServerProcess) -> BTreeMap<String, String> {
    let page: Value = reqwest::Client::new()
        .get(server.url("/v1/intents?limit=500"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default();
    page["intents"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|i| {
                    (
                        i["id"].as_str().unwrap_or_default().to_owned(),
                        i["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_sqs_workers_merge_exactly_what_the_scenario_allows() {
    let (private_pem, public_pem) = app_key_pair();
    let fake = GithubFake::start(7, &public_pem).await;
    let app = fake.create_repo("acme/app");
    commit_file(&app, "src/lib.rs", "pub fn f() {}\n", "init");
    git(&app, &["branch", "release", "main"]);
    git(&app, &["checkout", "-q", "release"]);
    commit_file(&app, "RELEASE.md", "1.0\n", "release branch");
    git(&app, &["checkout", "-q", "--detach", "main"]);
    let lib = fake.create_repo("acme/lib");
    commit_file(&lib, "src/lib.rs", "pub fn g() {}\n", "init");
    git(&lib, &["checkout", "-q", "--detach", "main"]);

    let mut numbers = BTreeMap::new();
    let mut per_target = Vec::new();
    for (repo, dir, target, draft) in [
        ("acme/app", &app, "main", false),
        ("acme/app", &app, "release", false),
        ("acme/lib", &lib, "main", true),
    ] {
        let next = numbers.entry(repo).or_insert(0u64);
        per_target.push(pulls_for(&fake, dir, repo, target, next, draft));
    }
    let targets_tips: BTreeMap<(&str, &str), String> = [
        (("acme/app", "main"), git(&app, &["rev-parse", "main"])),
        (
            ("acme/app", "release"),
            git(&app, &["rev-parse", "release"]),
        ),
        (("acme/lib", "main"), git(&lib, &["rev-parse", "main"])),
    ]
    .into_iter()
    .collect();

    let queue = converge_testkit::sqs::queue_with_dlq("converge-e2e", 5, 5).await;
    let dsn = fresh_pg_database().await;
    let env = vec![
        ("CONVERGE_DB_BACKEND", "postgres".to_owned()),
        ("CONVERGE_PG_DSN", dsn.clone()),
        ("CONVERGE_API_KEYS", format!("{KEY}:admin:ops")),
        ("CONVERGE_GITHUB_WEBHOOK_SECRET", SECRET.to_owned()),
        ("CONVERGE_GITHUB_APP_ID", "7".to_owned()),
        ("CONVERGE_GITHUB_APP_PRIVATE_KEY", private_pem),
        ("CONVERGE_GITHUB_API_URL", fake.url().to_owned()),
        ("CONVERGE_GITHUB_CHECK_MAP", "lint=ci/lint".to_owned()),
        ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
        ("CONVERGE_WORKER_MAX_RETRIES", "1".to_owned()),
        ("CONVERGE_WORKER_POLL_INTERVAL", "1".to_owned()),
        ("CONVERGE_WORKER_BATCH_SIZE", "3".to_owned()),
        ("CONVERGE_QUEUE_URL", queue.url.clone()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        env!("CARGO_BIN_EXE_converge"),
        dir.path(),
        &env,
        &["--no-worker"],
    );
    let mut workers: Vec<converge_testkit::KilledOnDrop> = (0..WORKERS)
        .map(|n| {
            start_worker(
                &env,
                dir.path(),
                &dir.path().join(format!("worker-{n}.log")),
            )
        })
        .collect();

    // The pull requests are opened round-robin over the targets, so every target's queue
    // fills while the workers are already busy with the others.
    let hook = server.url("/integrations/github/webhook");
    let longest = per_target.iter().map(Vec::len).max().unwrap_or(0);
    for index in 0..longest {
        for pull in per_target.iter().filter_map(|pulls| pulls.get(index)) {
            let payload = json!({
                "action": "opened",
                "pull_request": {"number": pull.number, "title": format!("PR {}", pull.number),
                                 "draft": pull.kind == Kind::Draft,
                                 "head": {"ref": format!("{}-pr-{}", pull.target, pull.number), "sha": pull.head},
                                 "base": {"ref": pull.target, "sha": targets_tips[&(pull.repo, pull.target)]}},
                "repository": {"full_name": pull.repo},
                "installation": {"id": 31}
            });
            let delivery = format!("d-{}", pull.intent_id());
            let (status, answer) = fake
                .send_webhook(&hook, SECRET, "pull_request", &delivery, &payload)
                .await;
            assert_eq!(status, 202, "{answer}");
        }
    }
    let pulls: Vec<&Pull> = per_target.iter().flatten().collect();
    let expected: BTreeMap<String, String> = pulls
        .iter()
        .map(|p| (p.intent_id(), p.kind.expected_status().to_owned()))
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = statuses(&server).await;
    while seen != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        seen = statuses(&server).await;
    }
    let logs = || {
        (0..WORKERS)
            .map(|n| {
                std::fs::read_to_string(dir.path().join(format!("worker-{n}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert_eq!(seen, expected, "worker logs:\n{}", logs());

    // Exactly one merge per merged intent, each the validated head on its own target.
    let updates = fake.ref_updates();
    let merged: Vec<&&Pull> = pulls
        .iter()
        .filter(|p| p.kind.expected_status() == "MERGED")
        .collect();
    assert_eq!(updates.len(), merged.len(), "{updates:?}");
    let mut merged_heads = BTreeSet::new();
    for update in &updates {
        let dir = if update.repo == "acme/app" {
            &app
        } else {
            &lib
        };
        let second_parent = git(dir, &["rev-parse", &format!("{}^2", update.to)]);
        assert!(
            merged_heads.insert((update.repo.clone(), second_parent.clone())),
            "{second_parent} merged twice"
        );
        let pull = merged
            .iter()
            .find(|p| p.repo == update.repo && p.head == second_parent)
            .unwrap_or_else(|| panic!("{update:?} merged a head the scenario did not allow"));
        assert_eq!(update.reference, format!("heads/{}", pull.target));
    }
    // Each target's history is the chain of its merges: no update was lost or overwritten.
    for ((repo, target), start) in &targets_tips {
        let dir = if *repo == "acme/app" { &app } else { &lib };
        let chain: Vec<&str> = updates
            .iter()
            .filter(|u| u.repo == *repo && u.reference == format!("heads/{target}"))
            .map(|u| u.from.as_str())
            .collect();
        assert_eq!(chain.first().copied(), Some(start.as_str()));
        let merges = git(
            dir,
            &[
                "rev-list",
                "--merges",
                "--count",
                &format!("{start}..{target}"),
            ],
        );
        assert_eq!(merges, chain.len().to_string(), "{repo} {target}");
    }

    // Every worker stops on SIGTERM with exit 0 and leaves no lease held.
    for worker in &workers {
        let killed = Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }
    for worker in &mut workers {
        let status = worker.wait().unwrap();
        assert!(status.success(), "{status:?}; logs:\n{}", logs());
    }
    // Nothing was poisoned on the way.
    let dead = queue
        .client
        .receive_message()
        .queue_url(&queue.dlq_url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)));
    assert!(dead.messages().is_empty(), "{:?}", dead.messages());
    // `converge doctor` from the same environment: the App's JWT is accepted, the queue and
    // its DLQ are reachable (and the DLQ is empty), the database is migrated.
    let mut doctor_env = env.clone();
    doctor_env.push(("CONVERGE_DLQ_URL", queue.dlq_url.clone()));
    doctor_env.push(("CONVERGE_API_URL", server.url("")));
    let doctor = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["--json", "doctor"])
        .env_remove("CONVERGE_DB_PATH")
        .envs(doctor_env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&doctor.stdout).unwrap_or_default();
    let status_of = |name: &str| {
        report["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|c| c["check"] == name))
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or_default().to_owned(),
                    c["detail"].clone(),
                )
            })
    };
    for check in [
        "api",
        "database",
        "leases",
        "queue",
        "dlq",
        "github_app",
        "webhook_secret",
    ] {
        assert_eq!(
            status_of(check).map(|s| s.0).as_deref(),
            Some("pass"),
            "{check}: {report}"
        );
    }
    assert_eq!(report["overall"], "pass", "{report}");
    assert!(doctor.status.success());

    let store = Store::from_url(&dsn, Arc::new(SystemClock)).unwrap();
    let leases = store.leases().await.unwrap();
    assert!(!leases.is_empty(), "the workers took no lease at all");
    assert!(
        leases.iter().all(|l| l.holder.is_none()),
        "a lease is still held: {leases:?}"
    );
}
