//! The dashboard in a real browser: headless Chromium (Debian's, through chromedriver) against
//! a live `converge serve` with seeded intents and decisions. Signing in with the keyboard,
//! the queue with positions, an intent's page with its timeline and trace ids, an update
//! appearing when a new decision lands, lease holders and the DLQ's depth (SQS on the AWS
//! emulator), a tenant's key seeing only its tenant, a phone-sized
//! window without sideways scrolling, and no console errors. Screenshots are kept under
//! `target/tmp/dashboard/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use converge_testkit::ServerProcess;
use converge_testkit::git::{commit_file, docs_and_clash, git};
use converge_testkit::webdriver::{Browser, ENTER, TAB};
use serde_json::{Value, json};

const ADMIN: &str = "admin-key";
const ACME: &str = "acme-key";

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard")
}

async fn api(server: &ServerProcess, key: &str, method: &str, path: &str, body: Value) -> Value {
    let client = reqwest::Client::new();
    let request = match method {
        "GET" => client.get(server.url(path)),
        _ => client.post(server.url(path)).json(&body),
    };
    request
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_queue_an_intent_and_live_updates() {
    let repo = tempfile::tempdir().unwrap();
    docs_and_clash(repo.path());
    git(
        repo.path(),
        &["checkout", "-q", "-b", "feature/more", "main"],
    );
    commit_file(repo.path(), "docs/more.md", "# More\n", "more");
    git(repo.path(), &["checkout", "-q", "--detach", "main"]);
    let data = tempfile::tempdir().unwrap();
    // A queue and its DLQ on the AWS emulator: the page shows the DLQ's depth.
    let queue = converge_testkit::sqs::queue_with_dlq("converge-dashboard", 30, 3).await;
    queue
        .client
        .send_message()
        .queue_url(&queue.dlq_url)
        .message_body("dead letter")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)));
    let server = ServerProcess::start_with(
        env!("CARGO_BIN_EXE_converge"),
        repo.path(),
        &[
            (
                "CONVERGE_DB_PATH",
                data.path().join("s.db").display().to_string(),
            ),
            ("CONVERGE_REPO_PATH", repo.path().display().to_string()),
            (
                "CONVERGE_API_KEYS",
                format!("{ADMIN}:admin:ops,{ACME}:viewer:acme-viewer:acme"),
            ),
            ("CONVERGE_QUEUE_URL", queue.url.clone()),
            ("CONVERGE_DLQ_URL", queue.dlq_url.clone()),
        ],
        &["--no-worker"],
    );

    // Seed: three intents; a round blocks them on checks CI has not reported (decisions with
    // reasons), one belongs to another tenant.
    for (id, source, tenant) in [
        ("docs", "feature/docs", "acme"),
        ("more", "feature/more", "acme"),
        ("clash", "feature/clash", "globex"),
    ] {
        let created = api(
            &server,
            ADMIN,
            "POST",
            "/v1/intents",
            json!({"id": id, "source": source, "tenant_id": tenant}),
        )
        .await;
        assert_eq!(created["ok"], true, "{created}");
    }
    let round = api(&server, ADMIN, "POST", "/v1/queue/run", json!({})).await;
    assert!(round["keys"].is_array(), "{round}");
    // An admin validates `docs` without waiting for CI: its risk is evaluated.
    let validated = api(
        &server,
        ADMIN,
        "POST",
        "/v1/intents/docs/validate",
        json!({"skip_checks": true}),
    )
    .await;
    assert_eq!(validated["decision"], "validated", "{validated}");

    // A worker elsewhere holds the `acme` queue's lease now.
    let store = converge_store::Store::from_url(
        &format!("sqlite://{}", data.path().join("s.db").display()),
        Arc::new(converge_store::SystemClock),
    )
    .unwrap();
    let acme_main = converge_core::queue::QueueKey {
        tenant: "acme".into(),
        repo: String::new(),
        target: "main".into(),
    };
    store
        .acquire_lease(&acme_main, "worker-elsewhere", Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the lease is free"));

    // An operator freezes acme's main target for a release.
    let frozen = api(
        &server,
        ADMIN,
        "POST",
        "/v1/queue/freezes",
        json!({"reason": "release 4.2 going out", "target": "main", "tenant_id": "acme"}),
    )
    .await;
    assert_eq!(frozen["holding"], true, "{frozen}");

    // A review of `more`, assigned: it holds the intent.
    let review = api(
        &server,
        ADMIN,
        "POST",
        "/v1/reviews",
        json!({"intent_id": "more", "reviewer": "ana"}),
    )
    .await;
    let review_id = review["id"].as_str().unwrap_or_default().to_owned();
    assert!(review_id.starts_with("rev-"), "{review}");

    let browser = Browser::start(1280, 900).await;
    browser.goto(&server.url("/dashboard")).await;
    assert!(
        browser.find("form.login").await.is_some(),
        "no sign-in form"
    );
    assert_eq!(
        browser
            .eval("return document.querySelector('label[for=key]').textContent")
            .await,
        "API key",
        "the key field has a label"
    );
    browser
        .screenshot(&screenshots().join("1-sign-in.png"))
        .await;

    // A wrong key is refused with a message; the right one is entered with the keyboard.
    browser.type_into("#key", &format!("wrong{ENTER}")).await;
    assert!(
        browser
            .wait_for_text(".problem", "not accepted", Duration::from_secs(5))
            .await
    );
    // The refusal is a 401, which the console reports; nothing else may be there.
    expect_only_console_error(&browser, "/dashboard/login", "401").await;
    browser.type_into("#key", &format!("{ADMIN}{ENTER}")).await;
    assert!(
        browser
            .wait_for_text("main", "Queues", Duration::from_secs(5))
            .await,
        "{}",
        browser.text("main").await
    );

    // The queue: every intent with its position and status; the blocked decisions.
    let queues = browser.text("#main").await;
    for id in ["docs", "more", "clash"] {
        assert!(queues.contains(id), "{id} missing: {queues}");
    }
    let first_row = browser
        .text("section[aria-labelledby=queues] table tbody tr")
        .await;
    assert!(first_row.starts_with("1 "), "positions: {first_row}");
    assert!(
        browser
            .wait_for_text("#decision-table", "intent.blocked", Duration::from_secs(1))
            .await
    );
    assert!(
        browser
            .text("#decision-table")
            .await
            .contains("Checks pending"),
        "reasons shown"
    );
    let workers = browser
        .eval("return document.querySelector('section[aria-labelledby=workers]').innerText")
        .await;
    let workers = workers.as_str().unwrap_or_default();
    assert!(
        workers.contains("worker-elsewhere") && workers.contains("[acme] main"),
        "lease holders: {workers}"
    );
    assert_eq!(browser.text("#dlq").await, "1 message(s)", "{workers}");
    // The freeze, above the queues: what it holds, why, and that it holds now.
    let freezes = browser
        .text("section[aria-labelledby=freezes] table tbody tr")
        .await;
    for shown in [
        "[acme] every repository @ main",
        "release 4.2 going out",
        "holding",
        "until lifted",
        "ops",
    ] {
        assert!(freezes.contains(shown), "{shown} missing: {freezes}");
    }
    let reviews = browser
        .text("section[aria-labelledby=reviews] table tbody tr")
        .await;
    for shown in [review_id.as_str(), "more", "assigned", "ana", "UTC"] {
        assert!(reviews.contains(shown), "{shown} missing: {reviews}");
    }
    browser.screenshot(&screenshots().join("2-queue.png")).await;

    // An intent's page: its facts, risk and timeline with trace ids.
    browser.click("a[href='/dashboard/intents/docs']").await;
    assert!(
        browser
            .wait_for_text("#timeline-list", "intent.created", Duration::from_secs(5))
            .await,
        "{}",
        browser.text("main").await
    );
    let timeline = browser.text("#timeline-list").await;
    assert!(
        timeline.contains("intent.blocked") && timeline.contains("trace"),
        "{timeline}"
    );
    let risk = browser.text("#risk + dl").await;
    assert!(risk.contains("Risk score"), "{risk}");
    assert!(browser.text("#main").await.contains("Signals"));
    browser
        .screenshot(&screenshots().join("3-intent.png"))
        .await;

    // A new decision lands while the page is open: it appears without a reload.
    browser.goto(&server.url("/dashboard")).await;
    let before: Value = browser
        .eval("return document.querySelectorAll('#decision-table tbody tr').length")
        .await;
    let decision = api(
        &server,
        ADMIN,
        "POST",
        "/v1/intents/more/validate",
        json!({"skip_checks": true}),
    )
    .await;
    assert_eq!(decision["decision"], "validated", "{decision}");
    let landed = browser
        .wait_until(
            "return [...document.querySelectorAll('#decision-table tbody tr')]\
             .some(r => r.textContent.includes('more') && r.textContent.includes('intent.validated'))",
            Duration::from_secs(15),
        )
        .await;
    assert!(landed, "the new decision never appeared");
    let after: Value = browser
        .eval("return document.querySelectorAll('#decision-table tbody tr').length")
        .await;
    assert!(
        after.as_u64() > before.as_u64(),
        "{before} → {after}: {}",
        browser.text("#decision-table").await
    );
    assert!(
        browser.url().await.ends_with("/dashboard"),
        "no navigation happened"
    );
    browser
        .screenshot(&screenshots().join("4-updated.png"))
        .await;

    let errors: Vec<_> = browser
        .console()
        .await
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    // Signing out forgets the key.
    browser
        .click("form[action='/dashboard/logout'] button")
        .await;
    assert!(
        browser
            .wait_for_text("main", "API key", Duration::from_secs(5))
            .await
    );
    browser.close().await;

    // A tenant's key sees its tenant only, and the page fits a phone.
    let phone = Browser::start(390, 844).await;
    phone.goto(&server.url("/dashboard")).await;
    phone.type_into("#key", &format!("{ACME}{ENTER}")).await;
    assert!(
        phone
            .wait_for_text("main", "Queues", Duration::from_secs(5))
            .await
    );
    let seen = phone.text("#main").await;
    assert!(seen.contains("docs") && !seen.contains("clash"), "{seen}");
    phone.goto(&server.url("/dashboard/intents/clash")).await;
    assert!(
        phone.text("main").await.contains("No intent"),
        "another tenant's intent"
    );
    expect_only_console_error(&phone, "/dashboard/intents/clash", "404").await;
    phone.goto(&server.url("/dashboard")).await;
    let overflow = phone
        .eval("return document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "sideways scroll on a phone: {overflow}"
    );
    phone.screenshot(&screenshots().join("5-phone.png")).await;
    let errors: Vec<_> = phone
        .console()
        .await
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    phone.close().await;

    // Keyboard: the first Tab reaches the skip link, which leads to the content.
    let keyboard = Browser::start(1024, 768).await;
    keyboard.goto(&server.url("/dashboard")).await;
    // Start where a person does: the page itself focused, nothing inside it.
    keyboard
        .eval(
            "window.focus(); document.body.tabIndex = -1; document.body.focus(); \
             document.body.removeAttribute('tabindex'); return true",
        )
        .await;
    keyboard.press(TAB).await;
    let focused = keyboard
        .eval("return document.activeElement.getAttribute('href')")
        .await;
    assert_eq!(focused, "#main", "the first Tab stop");
    keyboard.press(ENTER).await;
    let target = keyboard.eval("return document.activeElement.id").await;
    assert_eq!(
        target, "main",
        "the skip link moves the focus to the content"
    );
    keyboard.close().await;
}

/// Reads the console (which empties it) and checks that its only error is the failed load of
/// `path` with `status`: the answer a test provoked on purpose.
async fn expect_only_console_error(browser: &Browser, path: &str, status: &str) {
    let errors: Vec<_> = browser
        .console()
        .await
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    assert!(
        errors.len() == 1 && errors[0].1.contains(path) && errors[0].1.contains(status),
        "{errors:?}"
    );
}

/// Rewrites when an intent was created, as an import of older history would have it.
async fn created_at(db: &Path, id: &str, at: chrono::DateTime<chrono::Utc>) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE intents SET created_at = $1 WHERE id = $2")
        .bind(at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
}

fn seeded(
    id: &str,
    tenant: &str,
    at: chrono::DateTime<chrono::Utc>,
    event_type: converge_core::EventType,
    intent: Option<&str>,
    payload: Value,
) -> converge_core::Event {
    converge_core::Event {
        id: id.to_owned(),
        trace_id: "seed".to_owned(),
        timestamp: at,
        event_type,
        intent_id: intent.map(str::to_owned),
        agent_id: None,
        tenant_id: Some(tenant.to_owned()),
        payload,
        evidence: json!({}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_integration_page_draws_each_chart_with_its_figures_and_the_alerts() {
    use chrono::{Duration as Days, Utc};
    use converge_core::EventType as T;
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("i.db");
    let server = ServerProcess::start_with(
        env!("CARGO_BIN_EXE_converge"),
        data.path(),
        &[
            ("CONVERGE_DB_PATH", db.display().to_string()),
            (
                "CONVERGE_API_KEYS",
                format!("{ADMIN}:admin:ops,{ACME}:viewer:acme-viewer:acme"),
            ),
        ],
        &["--no-worker"],
    );
    for (id, tenant) in [
        ("m1", "acme"),
        ("m2", "acme"),
        ("m3", "acme"),
        ("r1", "acme"),
        ("r2", "acme"),
        ("g1", "globex"),
    ] {
        let created = api(
            &server,
            ADMIN,
            "POST",
            "/v1/intents",
            json!({"id": id, "source": format!("feature/{id}"), "tenant_id": tenant}),
        )
        .await;
        assert_eq!(created["ok"], true, "{created}");
    }
    let now = Utc::now();
    let (two_days_ago, yesterday) = (now - Days::days(2), now - Days::days(1));
    // m1 and m2 waited 25 and 26 hours before their merge two days ago; m3 3 hours, yesterday.
    created_at(&db, "m1", two_days_ago - Days::hours(25)).await;
    created_at(&db, "m2", two_days_ago - Days::hours(26)).await;
    created_at(&db, "m3", yesterday - Days::hours(3)).await;
    created_at(&db, "g1", two_days_ago - Days::hours(99)).await;
    let mut events = vec![
        seeded(
            "e1",
            "acme",
            two_days_ago,
            T::IntentMerged,
            Some("m1"),
            json!({}),
        ),
        seeded(
            "e2",
            "acme",
            two_days_ago,
            T::IntentMerged,
            Some("m2"),
            json!({}),
        ),
        seeded(
            "e3",
            "acme",
            yesterday,
            T::IntentMerged,
            Some("m3"),
            json!({}),
        ),
        seeded(
            "e4",
            "globex",
            two_days_ago,
            T::IntentMerged,
            Some("g1"),
            json!({}),
        ),
        seeded(
            "e5",
            "acme",
            yesterday,
            T::IntentRejected,
            Some("r1"),
            json!({"reason": "Merge conflicts: a.rs", "cause": "conflict", "retries": 3}),
        ),
        seeded(
            "e6",
            "acme",
            two_days_ago,
            T::IntentRequeued,
            Some("r2"),
            json!({"reason": "Checks failed: ['lint']", "cause": "checks_failed", "retries": 1}),
        ),
        seeded(
            "e7",
            "acme",
            yesterday,
            T::IntentRequeued,
            Some("r2"),
            json!({"reason": "Checks failed: ['lint']", "retries": 2}),
        ),
        seeded(
            "e8",
            "acme",
            yesterday,
            T::IntentRequeued,
            Some("r2"),
            json!({"reason": "revalidation needed: main moved", "retries": 2}),
        ),
        seeded(
            "e9",
            "acme",
            two_days_ago,
            T::HealthSnapshot,
            None,
            json!({"repo_health_score": 80.0, "active_intents": 5, "queues": [
                {"queue": "main", "waiting": 4, "oldest_wait_hours": 30.0},
                {"queue": "acme/app@main", "waiting": 1, "oldest_wait_hours": 4.5},
            ]}),
        ),
        seeded(
            "e10",
            "acme",
            yesterday,
            T::HealthSnapshot,
            None,
            json!({"repo_health_score": 60.5, "active_intents": 3, "queues": [
                {"queue": "main", "waiting": 3, "oldest_wait_hours": 54.0},
            ]}),
        ),
        seeded(
            "e11",
            "acme",
            two_days_ago,
            T::RiskEvaluated,
            None,
            json!({"risk_score": 30.0, "entropy_score": 5.0}),
        ),
        seeded(
            "e12",
            "acme",
            two_days_ago,
            T::RiskEvaluated,
            None,
            json!({"risk_score": 50.0, "entropy_score": 5.0}),
        ),
    ];
    // The last hours: five simulations, none clean (a compliance breach and a prediction).
    for n in 0..5 {
        events.push(seeded(
            &format!("s{n}"),
            "acme",
            now - Days::hours(2),
            T::SimulationCompleted,
            None,
            json!({"mergeable": false}),
        ));
    }
    let store = converge_store::Store::from_url(
        &format!("sqlite://{}", db.display()),
        Arc::new(converge_store::SystemClock),
    )
    .unwrap();
    store
        .commit(&converge_store::Commit {
            events,
            ..converge_store::Commit::default()
        })
        .await
        .unwrap();

    let paused = api(
        &server,
        ADMIN,
        "POST",
        "/v1/intake/mode",
        json!({"tenant_id": "acme", "mode": "pause", "reason": "release week"}),
    )
    .await;
    assert_eq!(paused["mode"], "pause", "{paused}");

    let browser = Browser::start(1280, 900).await;
    browser.goto(&server.url("/dashboard")).await;
    browser.type_into("#key", &format!("{ACME}{ENTER}")).await;
    assert!(
        browser
            .wait_for_text("main", "Queues", Duration::from_secs(5))
            .await
    );
    browser.click("nav a[href='/dashboard/integration']").await;
    assert!(
        browser
            .wait_for_text("main", "The last 30 days", Duration::from_secs(5))
            .await,
        "{}",
        browser.text("main").await
    );
    let day = |at: chrono::DateTime<Utc>| at.format("%m-%d").to_string();

    // Health now and the alerts: the breach and the prediction, in words.
    let figures = browser.text("#figures").await;
    assert!(figures.contains("Health"), "{figures}");
    assert!(
        browser
            .text("#intake")
            .await
            .starts_with("pause — set by ops: release week"),
        "{figures}"
    );
    let alerts = browser.text("#alerts").await;
    for shown in [
        "SLO breach: mergeable_rate",
        "rising_conflict_rate",
        "Conflict rate rose from 0% to 100%",
    ] {
        assert!(alerts.contains(shown), "{shown} missing: {alerts}");
    }

    // Every chart is drawn (a visible picture with marks in it) and names its series.
    for (chart, marks) in [
        ("chart-decisions", "rect"),
        ("chart-merge-time", "circle"),
        ("chart-queue", "circle"),
        ("chart-wait", "circle"),
        ("chart-health", "circle"),
        ("chart-risk", "circle"),
        ("chart-retries", "rect"),
    ] {
        let drawn = browser
            .eval(&format!(
                "const svg = document.querySelector('#{chart} svg'); \
                 return svg ? [svg.getBoundingClientRect().width, svg.querySelectorAll('{marks}').length] : null"
            ))
            .await;
        let width = drawn[0].as_f64().unwrap_or(0.0);
        let count = drawn[1].as_u64().unwrap_or(0);
        assert!(width > 200.0 && count > 0, "{chart}: {drawn}");
        let title = browser
            .eval(&format!(
                "return document.querySelector('#{chart} svg title').textContent"
            ))
            .await;
        assert!(
            title.as_str().is_some_and(|t| !t.is_empty()),
            "{chart} has no title"
        );
    }

    browser
        .screenshot(&screenshots().join("6-integration.png"))
        .await;

    // The figures behind each picture, a click away.
    let table = |chart: &'static str| {
        let browser = &browser;
        async move {
            browser.click(&format!("#{chart} summary")).await;
            browser.text(&format!("#{chart} table")).await
        }
    };
    let decisions = table("chart-decisions").await;
    assert!(
        decisions.contains(&format!("{} 2 0", day(two_days_ago))),
        "globex's merge is not acme's: {decisions}"
    );
    assert!(
        decisions.contains(&format!("{} 1 1", day(yesterday))),
        "{decisions}"
    );
    let waits = table("chart-merge-time").await;
    assert!(
        waits.contains(&format!("{} 25 26", day(two_days_ago))),
        "median and p90: {waits}"
    );
    assert!(
        waits.contains(&format!("{} 3 3", day(yesterday))),
        "{waits}"
    );
    let health = table("chart-health").await;
    assert!(
        health.contains(&format!("{} 80", day(two_days_ago)))
            && health.contains(&format!("{} 60.5", day(yesterday))),
        "{health}"
    );
    // All queues, then each queue: main, then acme/app@main (gone from yesterday's snapshot).
    let depth = table("chart-queue").await;
    assert!(depth.contains("all queues main acme/app@main"), "{depth}");
    assert!(
        depth.contains(&format!("{} 5 4 1", day(two_days_ago))),
        "{depth}"
    );
    assert!(
        depth.contains(&format!("{} 3 3 –", day(yesterday))),
        "{depth}"
    );
    let wait = table("chart-wait").await;
    assert!(
        wait.contains(&format!("{} 30 4.5", day(two_days_ago))),
        "{wait}"
    );
    assert!(wait.contains(&format!("{} 54 –", day(yesterday))), "{wait}");
    let risk = table("chart-risk").await;
    assert!(
        risk.contains(&format!("{} 40", day(two_days_ago))),
        "the day's mean: {risk}"
    );
    let retries = table("chart-retries").await;
    for row in ["conflict 1", "checks_failed 2", "target_moved 1"] {
        assert!(retries.contains(row), "{row} missing: {retries}");
    }
    browser
        .screenshot(&screenshots().join("6-integration-figures.png"))
        .await;
    let errors: Vec<_> = browser
        .console()
        .await
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;

    // On a phone: the charts fit the width.
    let phone = Browser::start(390, 844).await;
    phone.goto(&server.url("/dashboard")).await;
    phone.type_into("#key", &format!("{ACME}{ENTER}")).await;
    assert!(
        phone
            .wait_for_text("main", "Queues", Duration::from_secs(5))
            .await
    );
    phone.goto(&server.url("/dashboard/integration")).await;
    assert!(
        phone
            .wait_for_text("main", "The last 30 days", Duration::from_secs(5))
            .await
    );
    let overflow = phone
        .eval("return document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "sideways scroll on a phone: {overflow}"
    );
    phone
        .screenshot(&screenshots().join("7-integration-phone.png"))
        .await;
    phone.close().await;
}
