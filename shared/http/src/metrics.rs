//! `/metrics` in Prometheus text format: request counters and a latency histogram labelled by
//! route template (never the raw path: ids would explode the label set), rate-limit rejections
//! per tenant, and gauges read from the database at scrape time (intents by status, queue
//! depth per key, lease holders).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use converge_core::queue::QueueKey;

use crate::AppState;
use crate::error::ApiError;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Counters {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Histogram>,
    rate_limited: BTreeMap<String, u64>,
    /// Lists of intents answered from a kept page, and read afresh.
    kept_pages: (u64, u64),
}

/// In-process request metrics (per instance; the database gauges are shared truth).
#[derive(Default, Clone)]
pub struct Metrics(Arc<Mutex<Counters>>);

impl Metrics {
    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let Ok(mut c) = self.0.lock() else { return };
        *c.requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        let h = c
            .latency
            .entry((method.to_owned(), route.to_owned()))
            .or_default();
        h.count += 1;
        h.sum += seconds;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
    }

    /// Counts a list of intents answered from a page this instance kept (`hit`) or read
    /// afresh.
    pub fn count_kept_page(&self, hit: bool) {
        if let Ok(mut c) = self.0.lock() {
            if hit {
                c.kept_pages.0 += 1;
            } else {
                c.kept_pages.1 += 1;
            }
        }
    }

    /// Counts a request refused by the rate limit.
    pub fn count_rate_limited(&self, tenant: &str) {
        if let Ok(mut c) = self.0.lock() {
            *c.rate_limited.entry(tenant.to_owned()).or_default() += 1;
        }
    }

    fn render(&self, out: &mut String, tenant_labels: bool) {
        let Ok(c) = self.0.lock() else { return };
        out.push_str(
            "# HELP converge_http_requests_total HTTP requests by route template and status.\n",
        );
        out.push_str("# TYPE converge_http_requests_total counter\n");
        for ((method, route, status), n) in &c.requests {
            let _ = writeln!(
                out,
                "converge_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP converge_http_request_duration_seconds HTTP request latency by route template.\n");
        out.push_str("# TYPE converge_http_request_duration_seconds histogram\n");
        for ((method, route), h) in &c.latency {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "converge_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "converge_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "converge_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "converge_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out.push_str("# HELP converge_rate_limit_rejections_total Requests refused by the tenant rate limit.\n");
        out.push_str("# TYPE converge_rate_limit_rejections_total counter\n");
        if tenant_labels {
            for (tenant, n) in &c.rate_limited {
                let _ = writeln!(
                    out,
                    "converge_rate_limit_rejections_total{{tenant=\"{}\"}} {n}",
                    escape(tenant)
                );
            }
        } else {
            let total: u64 = c.rate_limited.values().sum();
            let _ = writeln!(out, "converge_rate_limit_rejections_total {total}");
        }
        out.push_str("# HELP converge_kept_pages_total Lists of intents answered from a page this instance kept (hit) or read afresh (miss).\n");
        out.push_str("# TYPE converge_kept_pages_total counter\n");
        let (hits, misses) = c.kept_pages;
        let _ = writeln!(out, "converge_kept_pages_total{{result=\"hit\"}} {hits}");
        let _ = writeln!(out, "converge_kept_pages_total{{result=\"miss\"}} {misses}");
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Middleware recording every response under its route template.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub async fn scrape(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = &state.services.api.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compared as hashes: the time taken does not depend on how much of the token matched.
        if crate::auth::hash_key(presented) != crate::auth::hash_key(token) {
            return Err(ApiError::Unauthenticated);
        }
    }
    let mut out = String::new();
    let tenant_labels = state.services.api.metrics_tenant_labels;
    state.metrics.render(&mut out, tenant_labels);

    // Counted by the database: no intent row is loaded, however many there are.
    let store = &state.services.store;
    let mut by_status: BTreeMap<&str, i64> = converge_core::Status::ALL
        .iter()
        .map(|s| (s.as_str(), 0))
        .collect();
    // Without tenant labels, a key's series is summed over tenants.
    let labelled = |key: &QueueKey| QueueKey {
        tenant: if tenant_labels {
            key.tenant.clone()
        } else {
            String::new()
        },
        repo: key.repo.clone(),
        target: key.target.clone(),
    };
    for (status, n) in store.status_counts(None).await? {
        *by_status.entry(status.as_str()).or_default() += n;
    }
    let mut depth: BTreeMap<QueueKey, i64> = BTreeMap::new();
    for count in store.actionable_counts(None).await? {
        *depth.entry(labelled(&count.key)).or_default() += count.count;
    }
    out.push_str("# HELP converge_intents Intents by status.\n# TYPE converge_intents gauge\n");
    for (status, n) in by_status {
        let _ = writeln!(out, "converge_intents{{status=\"{status}\"}} {n}");
    }
    out.push_str("# HELP converge_queue_depth Actionable intents per queue key.\n# TYPE converge_queue_depth gauge\n");
    let key_labels = |key: &QueueKey| {
        let place = format!(
            "repo=\"{}\",target=\"{}\"",
            escape(&key.repo),
            escape(&key.target)
        );
        if tenant_labels {
            format!("tenant=\"{}\",{place}", escape(&key.tenant))
        } else {
            place
        }
    };
    for (key, n) in depth {
        let _ = writeln!(out, "converge_queue_depth{{{}}} {n}", key_labels(&key));
    }
    out.push_str("# HELP converge_queue_lease_held Live leases holding the queue key.\n# TYPE converge_queue_lease_held gauge\n");
    let now = state.services.clock.now();
    let mut held: BTreeMap<(QueueKey, String), u32> = BTreeMap::new();
    for lease in state.services.store.leases().await? {
        let live = lease.holder.is_some() && lease.expires_at.is_some_and(|e| e > now);
        let holder = lease.holder.clone().unwrap_or_default();
        *held.entry((labelled(&lease.key), holder)).or_default() += u32::from(live);
    }
    for ((key, holder), n) in held {
        let _ = writeln!(
            out,
            "converge_queue_lease_held{{{},holder=\"{}\"}} {n}",
            key_labels(&key),
            escape(&holder)
        );
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
