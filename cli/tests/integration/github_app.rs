//! `converge serve` as a GitHub App, end to end over real HTTP (its private key and its
//! database's DSN read from Secrets Manager on the AWS emulator): the GitHub fake delivers a
//! signed `pull_request opened`, CI's check run completes, and the embedded worker validates
//! the pull request, reports a "Converge" check run and merges exactly the validated commits
//! through the fake's REST API.

use std::time::{Duration, Instant};

use converge_testkit::git::{commit_file, git};
use converge_testkit::github_fake::{GithubFake, app_key_pair};
use converge_testkit::{ServerProcess, fresh_pg_database};
use serde_json::{Value, json};

const SECRET: &str = "hook-secret";
const KEY: &str = "app-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_goes_from_webhook_to_merge_through_the_github_app() {
    let (private_pem, public_pem) = app_key_pair();
    let fake = GithubFake::start(7, &public_pem).await;
    let repo = fake.create_repo("acme/app");
    commit_file(&repo, "src/lib.rs", "pub fn f() {}\n", "init");
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    commit_file(&repo, "docs/guide.md", "# Guide\n", "docs");
    git(&repo, &["checkout", "-q", "--detach"]);
    let head = git(&repo, &["rev-parse", "feature"]);
    let base = git(&repo, &["rev-parse", "main"]);
    fake.open_pull("acme/app", 5, "feature", "main");

    let dir = tempfile::tempdir().unwrap();
    // The App's key lives in Secrets Manager (the AWS emulator scripts/test.sh starts).
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run scripts/test.sh, which starts the AWS emulator"
    );
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secret = aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(format!("converge/app-key/{}", std::process::id()))
        .secret_string(&private_pem)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)));
    let key_arn = secret.arn().unwrap_or_default().to_owned();
    // So is the database's DSN.
    let dsn_secret = aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(format!("converge/dsn/{}", std::process::id()))
        .secret_string(fresh_pg_database().await)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)));
    let env = vec![
        ("CONVERGE_DB_BACKEND", "postgres".to_owned()),
        (
            "CONVERGE_PG_DSN_SECRET_ARN",
            dsn_secret.arn().unwrap_or_default().to_owned(),
        ),
        ("CONVERGE_API_KEYS", format!("{KEY}:admin:ops")),
        ("CONVERGE_GITHUB_WEBHOOK_SECRET", SECRET.to_owned()),
        ("CONVERGE_GITHUB_APP_ID", "7".to_owned()),
        ("CONVERGE_GITHUB_APP_PRIVATE_KEY_SECRET_ARN", key_arn),
        ("CONVERGE_GITHUB_API_URL", fake.url().to_owned()),
        ("CONVERGE_GITHUB_CHECK_MAP", "lint=ci/lint".to_owned()),
        ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
        ("CONVERGE_WORKER_POLL_INTERVAL", "600".to_owned()),
    ];
    // Started outside any git repository: GitHub intents only.
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_converge"), dir.path(), &env);
    let hook = server.url("/integrations/github/webhook");

    let opened = json!({
        "action": "opened",
        "pull_request": {"number": 5, "title": "Docs", "head": {"ref": "feature", "sha": head},
                         "base": {"ref": "main", "sha": base}},
        "repository": {"full_name": "acme/app"},
        "installation": {"id": 31}
    });
    let (status, answer) = fake
        .send_webhook(&hook, SECRET, "pull_request", "d-1", &opened)
        .await;
    assert_eq!(status, 202, "{answer}");

    // CI has not reported: the worker reports the wait on GitHub, nothing is merged.
    let waiting = wait_for(|| {
        fake.check_runs()
            .iter()
            .any(|r| r.name == "Converge" && r.head_sha == head)
    })
    .await;
    assert!(waiting, "no Converge check run appeared");
    assert!(fake.ref_updates().is_empty());

    // An operator's validation on demand goes through the App too.
    let client = reqwest::Client::new();
    let decision: Value = client
        .post(server.url("/v1/intents/acme%2Fapp:pr-5/validate"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(
        (decision["decision"].as_str(), decision["kind"].as_str()),
        (Some("blocked"), Some("checks_pending")),
        "{decision}"
    );
    assert_eq!(
        decision["simulation"]["files_changed"],
        json!(["docs/guide.md"])
    );
    assert_eq!(
        decision["simulation"]["head_sha"].as_str(),
        Some(head.as_str())
    );

    // CI completes; GitHub tells Converge; the worker validates and merges.
    fake.complete_check("acme/app", &head, "ci/lint", "success");
    let check = json!({"action": "completed", "repository": {"full_name": "acme/app"},
                       "check_run": {"head_sha": head, "name": "ci/lint", "conclusion": "success"}});
    let (status, answer) = fake
        .send_webhook(&hook, SECRET, "check_run", "d-2", &check)
        .await;
    assert_eq!(status, 202, "{answer}");
    let merged = wait_for(|| !fake.ref_updates().is_empty()).await;
    assert!(merged, "never merged; calls: {:?}", fake.calls());
    let updates = fake.ref_updates();
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(
        (updates[0].reference.as_str(), updates[0].from.as_str()),
        ("heads/main", base.as_str())
    );
    assert_eq!(git(&repo, &["rev-parse", "main^2"]), head);

    // The report of the merge is sent after the merge is recorded: once GitHub shows it, the
    // intent is MERGED too.
    let reported = wait_for(|| {
        fake.check_runs().iter().any(|r| {
            r.name == "Converge"
                && r.history.last().map(String::as_str) == Some("completed/success")
        })
    })
    .await;
    assert!(
        reported,
        "the merge was never reported: {:?}",
        fake.check_runs()
    );
    let client = reqwest::Client::new();
    let intent: Value = client
        .get(server.url("/v1/intents/acme%2Fapp:pr-5"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(intent["status"], "MERGED", "{intent}");
    let runs: Vec<_> = fake
        .check_runs()
        .into_iter()
        .filter(|r| r.name == "Converge")
        .collect();
    assert_eq!(runs.len(), 1, "one check run per intent and head: {runs:?}");
    assert_eq!(
        runs[0].history.last().map(String::as_str),
        Some("completed/success")
    );

    // A second pull request waits for CI, then is closed on GitHub without merging: its
    // Converge check run stops waiting and says so, even when GitHub refuses that report the
    // first time and the queue has nothing else left to do (the run of the queue sends it).
    git(&repo, &["checkout", "-q", "-b", "second", "main"]);
    commit_file(&repo, "docs/second.md", "# Second\n", "second");
    git(&repo, &["checkout", "-q", "--detach"]);
    let second = git(&repo, &["rev-parse", "second"]);
    fake.open_pull("acme/app", 6, "second", "main");
    let mut pull = opened.clone();
    pull["pull_request"]["number"] = json!(6);
    pull["pull_request"]["head"] = json!({"ref": "second", "sha": second});
    let (status, answer) = fake
        .send_webhook(&hook, SECRET, "pull_request", "d-3", &pull)
        .await;
    assert_eq!(status, 202, "{answer}");
    let last_state_of_second = || {
        fake.check_runs()
            .into_iter()
            .find(|r| r.name == "Converge" && r.head_sha == second)
            .and_then(|r| r.history.last().cloned())
    };
    assert!(
        wait_for(|| last_state_of_second().is_some()).await,
        "no Converge check run for the second pull request"
    );
    // Every try of octocrab's retries (five) refused.
    fake.fail_next("/check-runs/", 502, None, 6);
    pull["action"] = json!("closed");
    pull["pull_request"]["merged"] = json!(false);
    let (status, answer) = fake
        .send_webhook(&hook, SECRET, "pull_request", "d-4", &pull)
        .await;
    assert_eq!(status, 202, "{answer}");
    let refused = wait_for(|| {
        fake.calls()
            .iter()
            .any(|c| c.method == "PATCH" && c.path.contains("/check-runs/") && c.status == 502)
    })
    .await;
    assert!(refused, "the report was not refused: {:?}", fake.calls());
    let run: Value = client
        .post(server.url("/v1/queue/run"))
        .header("x-api-key", KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(run["keys"].is_array(), "{run}");
    let told = wait_for(|| last_state_of_second().as_deref() == Some("completed/failure")).await;
    assert!(
        told,
        "the closed pull request's check run: {:?}",
        fake.check_runs()
    );
}

/// Polls `condition` for up to 20 s.
async fn wait_for(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}
