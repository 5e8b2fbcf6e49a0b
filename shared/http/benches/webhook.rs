//! In-process webhook handling on PostgreSQL: one signed 25 KB `pull_request` delivery through
//! the router — size guard, signature, parse, translate, dedupe, one transaction (delivery,
//! events, projection, queue message), 202 — with a new delivery id each time and 500 pull
//! requests in turn (the first delivery of each creates its intent; later ones are repeats that
//! change nothing). Criterion reports the median; the p50 and p99 of a separate sample of 2,000
//! deliveries are printed. Then a `check_run` completed on one of those pull requests' heads
//! (`check_run_completed_500_actionable_postgres`): recorded on the intent whose head it is,
//! with the 500 intents actionable in the repository; and one completed on a commit that is no
//! intent's head (`check_run_completed_elsewhere_postgres`: CI on another branch). Needs the
//! throwaway PostgreSQL of `scripts/bench.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use converge_core::PolicyConfig;
use converge_github::signature::{WebhookSecret, sign};
use converge_http::{ApiSettings, AppState, router};
use converge_store::{Store, SystemClock};
use criterion::{Criterion, Throughput, criterion_main};
use serde_json::json;
use tower::ServiceExt;

const SECRET: &str = "bench-secret";
const PULLS: u64 = 500;

static DELIVERY: AtomicU64 = AtomicU64::new(0);

/// A signed ~25 KB delivery for pull request `number`.
fn delivery(number: u64) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&json!({
        "action": "opened",
        "number": number,
        "pull_request": {
            "number": number, "title": format!("Change {number}"), "draft": false,
            "head": {"ref": format!("feature-{number}"), "sha": format!("{number:040x}")},
            "base": {"ref": "main", "sha": "b".repeat(40)},
            "labels": [{"name": "converge/priority-2"}],
            "body": "lorem ipsum ".repeat(2_000)
        },
        "repository": {"full_name": "acme/app", "description": "x".repeat(500)},
        "installation": {"id": 7},
        "sender": {"login": "octocat"}
    }))
    .unwrap_or_default();
    let signature = sign(&WebhookSecret::new(SECRET), &body);
    (body, signature)
}

/// A signed `check_run` completed on the head of pull request `number`.
fn check_completed(number: u64) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&json!({
        "action": "completed",
        "check_run": {"head_sha": format!("{number:040x}"), "name": "ci/lint", "conclusion": "success"},
        "repository": {"full_name": "acme/app"},
        "installation": {"id": 7}
    }))
    .unwrap_or_default();
    let signature = sign(&WebhookSecret::new(SECRET), &body);
    (body, signature)
}

async fn send(app: &axum::Router, event: &str, body: &[u8], signature: &str) {
    let id = DELIVERY.fetch_add(1, Ordering::Relaxed);
    let request = Request::post("/integrations/github/webhook")
        .header("x-github-event", event)
        .header("x-github-delivery", format!("bench-{id}"))
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    let response = app
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    assert_eq!(response.status(), 202);
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
        converge_store::PgStore::connect_lazy(&url, 8, Arc::new(SystemClock)).unwrap(),
    );
    runtime.block_on(store.migrate()).unwrap();
    let settings = ApiSettings {
        webhook_secrets: vec![WebhookSecret::new(SECRET)],
        ..ApiSettings::default()
    };
    let app = router(Arc::new(AppState::new(
        store,
        Arc::new(SystemClock),
        settings,
        PolicyConfig::default(),
    )));
    let deliveries: Vec<(Vec<u8>, String)> = (0..PULLS).map(delivery).collect();
    let size = deliveries[0].0.len();
    let next = AtomicU64::new(0);
    let pick = || &deliveries[(next.fetch_add(1, Ordering::Relaxed) % PULLS) as usize];

    let mut samples: Vec<Duration> = runtime.block_on(async {
        let mut samples = Vec::with_capacity(2_000);
        for _ in 0..2_000 {
            let (body, signature) = pick();
            let start = Instant::now();
            send(&app, "pull_request", body, signature).await;
            samples.push(start.elapsed());
        }
        samples
    });
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    eprintln!(
        "webhook in-process, {size} bytes, PostgreSQL: p50 {:?}, p99 {:?} over {} deliveries",
        at(0.50),
        at(0.99),
        samples.len()
    );

    let mut group = c.benchmark_group("webhook");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("pull_request_25kb_postgres", |b| {
        b.iter(|| {
            let (body, signature) = pick();
            runtime.block_on(send(&app, "pull_request", body, signature));
        });
    });
    let checks: Vec<(Vec<u8>, String)> = (0..PULLS).map(check_completed).collect();
    group.bench_function("check_run_completed_500_actionable_postgres", |b| {
        b.iter(|| {
            let (body, signature) =
                &checks[(next.fetch_add(1, Ordering::Relaxed) % PULLS) as usize];
            runtime.block_on(send(&app, "check_run", body, signature));
        });
    });
    let elsewhere = check_completed(PULLS + 1);
    group.bench_function("check_run_completed_elsewhere_postgres", |b| {
        b.iter(|| runtime.block_on(send(&app, "check_run", &elsewhere.0, &elsewhere.1)));
    });
    group.finish();
}

/// Private, so the generated group function needs no docs.
mod groups {
    use criterion::criterion_group;
    criterion_group!(benches, super::bench);
}
criterion_main!(groups::benches);
