//! Reads that cost little: the per-minute budget is shared by every server on a database
//! without a write per request, and an answer a client already holds comes back as 304 until
//! a write changes it. On SQLite and PostgreSQL, over HTTP against `converge serve`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use converge_testkit::git::{commit_file, git};
use converge_testkit::{ServerProcess, server_databases};
use serde_json::json;

const KEY: &str = "reads-key";

/// Waits, if needed, so that at least `needed` seconds are left of the current minute (the
/// budget's window is the wall clock's minute).
async fn room_in_this_minute(needed: u64) {
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        % 60.0;
    if 60.0 - second < needed as f64 {
        tokio::time::sleep(Duration::from_secs_f64(60.0 - second + 0.2)).await;
    }
}

/// Two servers on one database, 1,000 requests a minute for a tenant: callers spread over
/// both get between 95 % and 100 % of the budget before both refuse, and never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_budget_within_five_percent() {
    const LIMIT: usize = 1_000;
    let state = tempfile::tempdir().unwrap();
    for database in server_databases(state.path(), "budget.db").await {
        let mut env = database;
        env.extend([
            ("CONVERGE_API_KEYS", format!("{KEY}:viewer:reader:acme")),
            ("CONVERGE_RATE_LIMIT_RPM", LIMIT.to_string()),
        ]);
        let servers = [
            ServerProcess::start_with(
                env!("CARGO_BIN_EXE_converge"),
                state.path(),
                &env,
                &["--no-worker"],
            ),
            ServerProcess::start_with(
                env!("CARGO_BIN_EXE_converge"),
                state.path(),
                &env,
                &["--no-worker"],
            ),
        ];
        let client = reqwest::Client::new();
        room_in_this_minute(25).await;
        let started = std::time::Instant::now();
        let (mut answered, mut refused) = ([0usize; 2], [0usize; 2]);
        // Eight requests at a time, alternating between the servers, until each has refused
        // a few in a row.
        let mut refused_in_a_row = [0usize; 2];
        while refused_in_a_row.iter().any(|n| *n < 3) {
            assert!(
                answered.iter().sum::<usize>() + refused.iter().sum::<usize>() < 3 * LIMIT,
                "the budget was never spent: {answered:?} answered"
            );
            let batch = (0..8).map(|n| {
                let server = &servers[n % 2];
                let request = client
                    .get(server.url("/v1/intents?limit=1"))
                    .header("x-api-key", KEY)
                    .send();
                async move { (n % 2, request.await.map(|r| r.status().as_u16())) }
            });
            for (which, status) in futures_util::future::join_all(batch).await {
                match status.unwrap() {
                    200 => {
                        answered[which] += 1;
                        refused_in_a_row[which] = 0;
                    }
                    429 => {
                        refused[which] += 1;
                        refused_in_a_row[which] += 1;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "the run left its minute: the counts below would span two windows"
        );
        let total: usize = answered.iter().sum();
        assert!(
            (LIMIT * 95 / 100..=LIMIT).contains(&total),
            "{total} answered across both servers ({answered:?}) for a budget of {LIMIT}"
        );
        assert!(
            answered.iter().all(|n| *n > LIMIT / 4),
            "both servers spent the shared budget: {answered:?}"
        );
    }
}

/// A single intent and a list carry an `ETag`; asking again with it gets 304 and no body; once
/// the worker has merged the intent, the same tags get the new answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_answer_is_304_and_a_write_changes_the_tag() {
    let state = tempfile::tempdir().unwrap();
    for database in server_databases(state.path(), "etag.db").await {
        let repo = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        commit_file(repo.path(), "src/main.rs", "fn main() {}\n", "init");
        git(repo.path(), &["checkout", "-q", "-b", "feature/docs"]);
        commit_file(repo.path(), "docs/guide.md", "# Guide\n", "docs");
        let head = git(repo.path(), &["rev-parse", "HEAD"]);
        git(repo.path(), &["checkout", "-q", "--detach", "main"]);
        let mut env = database;
        env.extend([
            ("CONVERGE_API_KEYS", format!("{KEY}:admin:ci")),
            ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
            ("CONVERGE_REPO_PATH", repo.path().display().to_string()),
            ("CONVERGE_WORKER_AUTO_CONFIRM", "1".to_owned()),
        ]);
        let server = ServerProcess::start(env!("CARGO_BIN_EXE_converge"), state.path(), &env);
        let client = reqwest::Client::new();
        let get = |path: &str, tag: Option<&str>| {
            let mut request = client.get(server.url(path)).header("x-api-key", KEY);
            if let Some(tag) = tag {
                request = request.header("if-none-match", tag);
            }
            request.send()
        };
        let created = client
            .post(server.url("/v1/intents"))
            .header("x-api-key", KEY)
            .json(&json!({"id": "docs", "source": "feature/docs", "risk_level": "low"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        // Wait for the worker's first look (checks pending): after it, nothing changes the
        // intent until CI reports.
        let mut judged = false;
        for _ in 0..200 {
            let events = get("/v1/intents/docs/events", None).await.unwrap();
            if events.text().await.unwrap().contains("checks_pending") {
                judged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(judged, "the worker never looked at the new intent");
        for path in ["/v1/intents/docs", "/v1/intents"] {
            let first = get(path, None).await.unwrap();
            assert_eq!(first.status(), 200);
            let tag = first.headers()["etag"].to_str().unwrap().to_owned();
            assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
            assert_eq!(first.headers()["cache-control"], "private, no-cache");
            let again = get(path, Some(&tag)).await.unwrap();
            assert_eq!(again.status(), 304, "{path}");
            assert_eq!(again.headers()["etag"], tag.as_str());
            assert!(again.bytes().await.unwrap().is_empty());
            let other = get(path, Some("\"not-it\"")).await.unwrap();
            assert_eq!(other.status(), 200, "{path}");
        }
        let tags: Vec<String> = {
            let mut tags = Vec::new();
            for path in ["/v1/intents/docs", "/v1/intents"] {
                let answer = get(path, None).await.unwrap();
                tags.push(answer.headers()["etag"].to_str().unwrap().to_owned());
            }
            tags
        };

        // CI reports green: the worker merges it, and neither answer is the one held.
        let report = json!({"name": "lint", "state": "passed", "head_sha": head});
        let reported = client
            .post(server.url("/v1/intents/docs/checks"))
            .header("x-api-key", KEY)
            .json(&report)
            .send()
            .await
            .unwrap();
        assert_eq!(reported.status(), 201);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let answer = get("/v1/intents/docs", Some(&tags[0])).await.unwrap();
            if answer.status() == 200 {
                let intent: serde_json::Value = answer.json().await.unwrap();
                if intent["intent"]["status"] == "MERGED" || intent["status"] == "MERGED" {
                    break;
                }
            } else {
                assert_eq!(answer.status(), 304);
            }
            assert!(std::time::Instant::now() < deadline, "never merged");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let list = get("/v1/intents", Some(&tags[1])).await.unwrap();
        assert_eq!(
            list.status(),
            200,
            "the list's old tag still matched after a merge"
        );
        assert_ne!(list.headers()["etag"].to_str().unwrap(), tags[1]);
    }
}

/// Two servers on one database: a page one server keeps is served again while nothing changed
/// (its `/metrics` count a hit), and never hides an intent created through the other, whether
/// the reader is bound to the tenant or reads every tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_one_server_keeps_never_hides_a_write_made_through_another() {
    let state = tempfile::tempdir().unwrap();
    for database in server_databases(state.path(), "kept.db").await {
        let mut env = database;
        env.extend([
            (
                "CONVERGE_API_KEYS",
                format!("{KEY}:operator:writer:acme,reads-admin:admin:root"),
            ),
            ("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()),
        ]);
        let start = || {
            ServerProcess::start_with(
                env!("CARGO_BIN_EXE_converge"),
                state.path(),
                &env,
                &["--no-worker"],
            )
        };
        let (reader, writer) = (start(), start());
        let client = reqwest::Client::new();
        let ids_on = |key: &'static str| {
            let request = client
                .get(reader.url("/v1/intents?limit=500"))
                .header("x-api-key", key)
                .send();
            async move {
                let page: serde_json::Value = request.await.unwrap().json().await.unwrap();
                page["intents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["id"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            }
        };
        let kept_hits = || {
            let request = client.get(reader.url("/metrics")).send();
            async move {
                let text = request.await.unwrap().text().await.unwrap();
                text.lines()
                    .find_map(|l| l.strip_prefix("converge_kept_pages_total{result=\"hit\"} "))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("no kept-page count in /metrics: {text}"))
            }
        };
        for n in 0..12 {
            // The reader serves (and keeps) its page, then the other server takes a write.
            assert_eq!(ids_on(KEY).await.len(), n);
            let hits = kept_hits().await;
            assert_eq!(ids_on(KEY).await.len(), n);
            assert_eq!(
                kept_hits().await,
                hits + 1,
                "an unchanged list was read afresh"
            );
            assert_eq!(ids_on("reads-admin").await.len(), n);
            let id = format!("kept-{n}");
            let created = client
                .post(writer.url("/v1/intents"))
                .header("x-api-key", KEY)
                .json(&json!({"id": id, "source": format!("feature/{n}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201);
            for key in [KEY, "reads-admin"] {
                let ids = ids_on(key).await;
                assert!(
                    ids.contains(&id),
                    "the reader's kept page hid {id} from {key}: {ids:?}"
                );
            }
        }
    }
}
