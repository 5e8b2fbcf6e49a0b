//! The dashboard: server-rendered HTML over the same store, auth and tenancy as the API.
//!
//! Each page reads what it shows first, with a fixed number of queries (never one per row),
//! into a view, then renders it with maud templates, which are checked at compile time and
//! escape every value they are given. The time shown is the services' clock, not the system's.
//!
//! Signing in: the API key is entered once in a form; the server keeps a session for it
//! ([`SESSION_TTL`], in the store, so every instance knows it) and the browser holds only an
//! opaque session id in a cookie (`HttpOnly`, `SameSite=Strict`, `Secure` when the request came
//! over HTTPS). Signing out ends the session; revoking or expiring the key ends it too, since
//! every page resolves the session's key exactly like `x-api-key`, so a tenant's key sees only
//! its tenant. A sign-in posted from another origin is refused. Pages count against the
//! caller's per-minute budget like API requests. Pages are plain HTML with the stylesheet and a
//! small script served from `/dashboard/assets/` (the Content-Security-Policy allows nothing
//! inline); the script refreshes the main region every few seconds (paused on request, and not
//! needed to use the page). Nothing here writes to the store but the sessions.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use converge_core::queue::QueueKey;
use converge_core::{EventType, Intent, Status};
use converge_store::{EventFilter, LeaseState, StoredEvent};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use crate::auth::{Principal, hash_key};
use crate::{ApiError, AppState};

const COOKIE: &str = "converge_session";
/// How long a dashboard session lasts.
const SESSION_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(12);
/// How often the script refreshes the page's main region.
const REFRESH_SECONDS: u32 = 5;
/// Intents listed per queue key.
const QUEUE_ROWS: u32 = 50;
/// Queue keys listed at most (those beyond are counted, not listed).
const QUEUES_LISTED: usize = 20;
/// Recent decisions listed.
const DECISION_ROWS: usize = 20;

/// The dashboard's routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/dashboard", get(overview))
        .route("/dashboard/intents/{id}", get(intent_page))
        .route(
            "/dashboard/integration",
            get(crate::integration_page::integration),
        )
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/assets/style.css", get(stylesheet))
        .route("/dashboard/assets/live.js", get(live_script))
}

/// Who is looking: from the session cookie (or anyone, with authentication off). A page
/// counts against the caller's per-minute budget.
pub(crate) async fn viewer(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    let principal = if state.services.api.auth_required {
        let Some(session) = cookie(headers, COOKIE) else {
            return Ok(None);
        };
        let Some(key_hash) = state
            .services
            .store
            .session_key(&hash_key(&session))
            .await?
        else {
            return Ok(None);
        };
        match state.key_cache.principal(state, &key_hash).await {
            Ok(principal) => principal,
            Err(ApiError::Unauthenticated) => return Ok(None),
            Err(e) => return Err(e),
        }
    } else {
        Principal::anonymous()
    };
    crate::auth::count_request(state, &principal).await?;
    Ok(Some(principal))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether a form post comes from a page of this site: the browser's `Sec-Fetch-Site`, else its
/// `Origin` against the host asked for. A client that sends neither is not a browser, and a
/// cross-site forgery needs one.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    let Some(origin) = text("origin") else {
        return true;
    };
    let origin_host = origin.split_once("://").map_or(origin, |(_, host)| host);
    [text("x-forwarded-host"), text("host")]
        .into_iter()
        .flatten()
        .any(|host| host.eq_ignore_ascii_case(origin_host))
}

/// Whether the request came over HTTPS (directly, or through API Gateway or a proxy).
fn over_https(uri: &axum::http::Uri, headers: &HeaderMap) -> bool {
    uri.scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The sign-in form.
#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    key: String,
}

/// `POST /dashboard/login`: checks the key (throttled like the API's) and starts a session.
async fn login(
    State(state): State<Arc<AppState>>,
    address: Option<axum::Extension<crate::auth::ClientAddress>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    axum::Form(LoginForm { key }): axum::Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        let body = html! { p.problem { "Sign in from this site's own page." } };
        return page(StatusCode::FORBIDDEN, "Sign in", body, false);
    }
    let address = address.map(|axum::Extension(a)| a);
    let presented = Some(key.as_str()).filter(|k| !k.is_empty());
    let principal = match crate::auth::authenticate_key(&state, address, presented).await {
        Ok(principal) => principal,
        Err(ApiError::Unauthenticated) => {
            return page(
                StatusCode::UNAUTHORIZED,
                "Sign in",
                login_form(Some("That key was not accepted.")),
                false,
            );
        }
        Err(e) => return e.into_response(),
    };
    let Some(key_hash) = principal.key_hash else {
        // Authentication is off: there is nothing to keep.
        return Redirect::to("/dashboard").into_response();
    };
    let session = state.new_secret();
    let expires_at = state.services.clock.now() + SESSION_TTL;
    if let Err(e) = state
        .services
        .store
        .create_session(&hash_key(&session), &key_hash, expires_at)
        .await
    {
        return ApiError::from(e).into_response();
    }
    let cookie = format!(
        "{COOKIE}={session}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.num_seconds(),
        if over_https(&uri, &headers) {
            "; Secure"
        } else {
            ""
        }
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/dashboard")).into_response()
}

/// `POST /dashboard/logout`: ends the session.
async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(session) = cookie(&headers, COOKIE)
        && let Err(e) = state
            .services
            .store
            .delete_session(&hash_key(&session))
            .await
    {
        return ApiError::from(e).into_response();
    }
    let cookie = format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/dashboard")).into_response()
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn live_script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// `GET /dashboard`: the queues, recent decisions, leases and the DLQ.
async fn overview(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match viewer(&state, &headers).await {
        Ok(Some(principal)) => match overview_view(&state, &principal).await {
            Ok(view) => page(StatusCode::OK, "Queue", overview_html(&view), true),
            Err(e) => e.into_response(),
        },
        Ok(None) => page(StatusCode::OK, "Sign in", login_form(None), false),
        Err(e) => e.into_response(),
    }
}

/// `GET /dashboard/intents/{id}`: one intent, its risk and its timeline.
async fn intent_page(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let principal = match viewer(&state, &headers).await {
        Ok(Some(principal)) => principal,
        Ok(None) => return page(StatusCode::OK, "Sign in", login_form(None), false),
        Err(e) => return e.into_response(),
    };
    // No intent id holds a NUL (the API refuses them), and PostgreSQL cannot even be asked.
    let found = if id.contains('\0') {
        Ok(None)
    } else {
        state.services.store.intent(&id).await
    };
    let intent = match found {
        Ok(Some(intent)) if principal.can_see(intent.tenant_id.as_deref()) => intent,
        Ok(_) => {
            let shown = id.replace('\0', "\u{fffd}");
            let body = html! {
                p { "No intent " code { (shown) } " here." }
                p { a href="/dashboard" { "Back to the queue" } }
            };
            return page(StatusCode::NOT_FOUND, "Not found", body, false);
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    match intent_view(&state, intent).await {
        Ok(view) => page(
            StatusCode::OK,
            &format!("Intent {}", view.intent.id),
            intent_html(&view),
            true,
        ),
        Err(e) => e.into_response(),
    }
}

/// What the overview shows, read with a fixed number of queries (none per row).
struct OverviewView {
    now: DateTime<Utc>,
    /// Per listed key: how many intents wait, and the first [`QUEUE_ROWS`] of them.
    queues: BTreeMap<QueueKey, (i64, Vec<Intent>)>,
    /// Keys with waiting intents that are not listed.
    queues_not_listed: usize,
    /// Latest risk score per listed intent.
    risk_scores: BTreeMap<String, f64>,
    decisions: Vec<StoredEvent>,
    policies: Vec<StoredEvent>,
    leases: Vec<LeaseState>,
    /// Keys paused because their environment failed.
    paused: Vec<crate::api::PausedKey>,
    /// Operators' freezes that hold or will hold merges (the newest [`FREEZE_ROWS`]).
    freezes: Vec<converge_core::freeze::Freeze>,
    /// Open review tasks, the [`REVIEW_ROWS`] soonest due, soonest first.
    reviews: Vec<converge_core::review::ReviewTask>,
    dlq: String,
}

/// Freezes listed on the overview.
const FREEZE_ROWS: u32 = 20;
/// Open review tasks listed on the overview.
const REVIEW_ROWS: u32 = 20;

async fn overview_view(state: &AppState, principal: &Principal) -> Result<OverviewView, ApiError> {
    let store = &state.services.store;
    let tenant = principal.tenant.clone();
    // Counted by the database; each listed key's first rows read by one bounded query.
    let mut waiting: BTreeMap<QueueKey, i64> = BTreeMap::new();
    for count in store.actionable_counts(tenant.as_deref()).await? {
        *waiting.entry(count.key).or_default() += count.count;
    }
    let queues_not_listed = waiting.len().saturating_sub(QUEUES_LISTED);
    let mut queues: BTreeMap<QueueKey, (i64, Vec<Intent>)> = BTreeMap::new();
    for (key, count) in waiting.into_iter().take(QUEUES_LISTED) {
        let first = store.queue_intents(&key, None, QUEUE_ROWS).await?;
        queues.insert(key, (count, first));
    }
    let listed: Vec<String> = queues
        .values()
        .flat_map(|(_, intents)| intents.iter())
        .map(|intent| intent.id.clone())
        .collect();
    let risk_scores = store
        .latest_events(EventType::RiskEvaluated, &listed)
        .await?
        .into_iter()
        .filter_map(|e| Some((e.event.intent_id?, e.event.payload["risk_score"].as_f64()?)))
        .collect();

    // Recent decisions, newest first, with the gates of the same trace.
    let mut decisions: Vec<StoredEvent> = Vec::new();
    for event_type in [
        EventType::IntentValidated,
        EventType::IntentBlocked,
        EventType::IntentRejected,
        EventType::IntentMerged,
    ] {
        decisions.extend(recent(state, event_type, tenant.clone(), DECISION_ROWS as u32).await?);
    }
    decisions.sort_by_key(|d| std::cmp::Reverse(d.seq));
    decisions.truncate(DECISION_ROWS);
    let policies = recent(state, EventType::PolicyEvaluated, tenant.clone(), 200).await?;

    let all_leases = store.leases().await?;
    let paused = crate::routes::queue::paused_keys(&all_leases, principal);
    let leases = all_leases
        .into_iter()
        .filter(|l| principal.can_see(Some(l.key.tenant.as_str()).filter(|t| !t.is_empty())))
        .filter(|l| l.holder.is_some())
        .collect();
    let now = state.services.clock.now();
    let freezes = store
        .freezes(tenant.as_deref(), false, FREEZE_ROWS)
        .await?
        .into_iter()
        .filter(|f| f.is_live(now))
        .collect();
    let reviews = store
        .review_tasks(&converge_store::ReviewFilter {
            tenant_id: tenant.clone(),
            open_only: true,
            limit: REVIEW_ROWS,
            ..converge_store::ReviewFilter::default()
        })
        .await?;
    let dlq = match &state.services.dlq {
        None => "not configured (CONVERGE_DLQ_URL)".to_owned(),
        Some(queue) => match queue.depth().await {
            Ok(depth) => format!("{depth} message(s)"),
            Err(e) => format!("unknown ({e})"),
        },
    };
    Ok(OverviewView {
        now: state.services.clock.now(),
        queues,
        queues_not_listed,
        risk_scores,
        decisions,
        policies,
        leases,
        paused,
        freezes,
        reviews,
        dlq,
    })
}

fn overview_html(view: &OverviewView) -> Markup {
    html! {
        @if !view.paused.is_empty() {
            section.problem role="alert" aria-labelledby="paused" {
                h2 #paused { "Paused queues" }
                p { "Their environment failed, not their changes: nothing merges and no retry is spent until a try gets through." }
                ul {
                    @for paused in &view.paused {
                        li {
                            strong { (queue_label(&QueueKey { tenant: paused.tenant.clone(), repo: paused.repo.clone(), target: paused.target.clone() })) } ": " (paused.reason)
                            span.muted { " (since " (paused.since.format("%H:%M:%S")) ", " (paused.failures) " failures, next try " (paused.until.format("%H:%M:%S")) ")" }
                        }
                    }
                }
            }
        }
        @if !view.freezes.is_empty() {
            section aria-labelledby="freezes" {
                h2 #freezes { "Freezes" }
                div.scroll {
                    table {
                        caption { "Merges held by operators (intents are still validated and queued)" }
                        thead { tr {
                            th scope="col" { "Queues" } th scope="col" { "Reason" } th scope="col" { "Now" }
                            th scope="col" { "Window" } th scope="col" { "Set by" }
                        } }
                        tbody {
                            @for freeze in &view.freezes {
                                tr {
                                    td { (freeze_scope(freeze)) }
                                    td { (freeze.reason) }
                                    td {
                                        @if freeze.window.covers(view.now) { strong { "holding" } } @else { "scheduled" }
                                    }
                                    td { (freeze_window(&freeze.window, view.now)) }
                                    td { (freeze.created_by) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="queues" {
            h2 #queues { "Queues" }
            @if view.queues.is_empty() {
                p { "Nothing is waiting." }
            }
            @for (key, (waiting, intents)) in &view.queues {
                div.scroll {
                    table {
                        caption { (queue_label(key)) " " span.muted { "(" (waiting) " waiting)" } }
                        thead { tr {
                            th scope="col" { "#" } th scope="col" { "Intent" } th scope="col" { "Status" }
                            th scope="col" { "Retries" } th scope="col" { "Risk score" } th scope="col" { "Age" }
                        } }
                        tbody {
                            @for (position, intent) in intents.iter().enumerate() {
                                tr {
                                    td { (position + 1) }
                                    td { (intent_link(&intent.id)) }
                                    td { (status_badge(intent.status)) }
                                    td { (intent.retries) }
                                    td { (one_decimal(view.risk_scores.get(&intent.id).copied())) }
                                    td { (age(view.now - intent.created_at)) }
                                }
                            }
                        }
                    }
                }
                @if (*waiting as usize) > intents.len() {
                    p.muted { "And " ((*waiting as usize) - intents.len()) " more in this queue." }
                }
            }
            @if view.queues_not_listed > 0 {
                p.muted { (view.queues_not_listed) " more queues with waiting intents are not listed." }
            }
        }
        @if !view.reviews.is_empty() {
            section aria-labelledby="reviews" {
                h2 #reviews { "Open reviews" }
                div.scroll {
                    table {
                        caption { "Review tasks holding their intents, soonest due first" }
                        thead { tr {
                            th scope="col" { "Task" } th scope="col" { "Intent" } th scope="col" { "Status" }
                            th scope="col" { "Reviewer" } th scope="col" { "Due" }
                        } }
                        tbody {
                            @for task in &view.reviews {
                                tr {
                                    td { (task.id) }
                                    td { (intent_link(&task.intent_id)) }
                                    td { (task.status.as_str()) }
                                    td { (task.reviewer.as_deref().unwrap_or("unassigned")) }
                                    td {
                                        @if task.sla_deadline < view.now { strong { "overdue " } }
                                        (task.sla_deadline.format("%Y-%m-%d %H:%M UTC"))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="decisions" {
            h2 #decisions { "Recent decisions" }
            @if view.decisions.is_empty() {
                p { "No decision yet." }
            } @else {
                div.scroll {
                    table #decision-table {
                        caption.sr-only { "Recent decisions" }
                        thead { tr {
                            th scope="col" { "When" } th scope="col" { "Intent" } th scope="col" { "Decision" }
                            th scope="col" { "Reason" } th scope="col" { "Gates" }
                        } }
                        tbody {
                            @for stored in &view.decisions {
                                (decision_row(stored, &view.policies))
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="workers" {
            h2 #workers { "Workers" }
            @if view.leases.is_empty() {
                p { "No lease is held." }
            } @else {
                div.scroll {
                    table {
                        caption { "Lease holders" }
                        thead { tr {
                            th scope="col" { "Queue" } th scope="col" { "Holder" } th scope="col" { "Token" } th scope="col" { "Expires" }
                        } }
                        tbody {
                            @for lease in &view.leases {
                                tr {
                                    td { (queue_label(&lease.key)) }
                                    td { (lease.holder.as_deref().unwrap_or("")) }
                                    td { (lease.token) }
                                    td {
                                        @if let Some(expires) = lease.expires_at {
                                            (expires.format("%H:%M:%S"))
                                            @if expires < view.now { " (stale)" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p { "Dead-letter queue: " strong #dlq { (view.dlq) } }
        }
    }
}

/// `[tenant] owner/repo@target`, with `every repository` / `every target` for what a freeze
/// leaves open.
fn freeze_scope(freeze: &converge_core::freeze::Freeze) -> String {
    let tenant = freeze
        .tenant_id
        .as_deref()
        .map(|t| format!("[{t}] "))
        .unwrap_or_default();
    let repo = match freeze.repo.as_deref() {
        None => "every repository".to_owned(),
        Some("") => "local".to_owned(),
        Some(repo) => repo.to_owned(),
    };
    let target = freeze.target.as_deref().unwrap_or("every target");
    format!("{tenant}{repo} @ {target}")
}

fn freeze_window(window: &converge_core::freeze::Window, now: DateTime<Utc>) -> String {
    use converge_core::freeze::Window;
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    match window {
        Window::UntilLifted => "until lifted".to_owned(),
        Window::Span { start, end } => match end {
            Some(end) if *start <= now => format!("until {}", time(*end)),
            Some(end) => format!("{} to {}", time(*start), time(*end)),
            None => format!("from {} until lifted", time(*start)),
        },
        Window::Weekly { from, to } => format!("every week, {from} to {to} UTC"),
    }
}

fn decision_row(stored: &StoredEvent, policies: &[StoredEvent]) -> Markup {
    let event = &stored.event;
    let trace = event.payload["trace_id"]
        .as_str()
        .unwrap_or(event.trace_id.as_str());
    let gates = policies
        .iter()
        .find(|p| p.event.trace_id == trace || p.event.payload["trace_id"] == trace)
        .map(|p| gates_html(&p.event.payload["gates"]));
    let reason = event.payload["reason"]
        .as_str()
        .or(event.payload["error"].as_str())
        .unwrap_or("");
    let intent_id = event.intent_id.clone().unwrap_or_default();
    html! {
        tr {
            td { time datetime=(event.timestamp.to_rfc3339()) { (event.timestamp.format("%H:%M:%S")) } }
            td { (intent_link(&intent_id)) }
            td { (event.event_type.as_str()) }
            td { (reason) }
            td { @if let Some(gates) = gates { (gates) } }
        }
    }
}

/// What the intent page shows.
struct IntentView {
    intent: Intent,
    risk: Option<Value>,
    events: Vec<StoredEvent>,
}

async fn intent_view(state: &AppState, intent: Intent) -> Result<IntentView, ApiError> {
    let store = &state.services.store;
    let risk = store
        .latest_events(EventType::RiskEvaluated, std::slice::from_ref(&intent.id))
        .await?
        .into_iter()
        .next()
        .map(|s| s.event.payload);
    let events = store
        .events(&EventFilter {
            intent_id: Some(intent.id.clone()),
            limit: 200,
            ..EventFilter::default()
        })
        .await?;
    Ok(IntentView {
        intent,
        risk,
        events,
    })
}

fn intent_html(view: &IntentView) -> Markup {
    let intent = &view.intent;
    html! {
        p { a href="/dashboard" { "← Back to the queue" } }
        dl.facts {
            dt { "Status" } dd { (status_badge(intent.status)) }
            dt { "Source → target" } dd { code { (intent.source) } " → " code { (intent.target) } }
            dt { "Priority" } dd { (intent.priority) }
            dt { "Retries" } dd { (intent.retries) }
            dt { "Risk level" } dd { (intent.risk_level.as_str()) }
            @if let Some(tenant) = &intent.tenant_id {
                dt { "Tenant" } dd { (tenant) }
            }
            @if !intent.dependencies.is_empty() {
                dt { "Depends on" }
                dd {
                    @for (n, dependency) in intent.dependencies.iter().enumerate() {
                        @if n > 0 { ", " }
                        (intent_link(dependency))
                    }
                }
            }
            @if let Some(link) = check_run_link(intent) {
                dt { "Checks" }
                dd { a href=(link) rel="noopener" { "The pull request's checks on GitHub" } }
            }
        }
        section aria-labelledby="risk" {
            h2 #risk { "Risk" }
            @match &view.risk {
                None => p { "Not evaluated yet." },
                Some(risk) => {
                    dl.facts {
                        @for (label, field) in [
                            ("Risk score", "risk_score"),
                            ("Damage", "damage_score"),
                            ("Entropy", "entropy_score"),
                            ("Propagation", "propagation_score"),
                            ("Containment", "containment_score"),
                        ] {
                            dt { (label) }
                            dd { (one_decimal(risk[field].as_f64())) }
                        }
                    }
                    h3 { "Signals" }
                    (object_table(&risk["signals"], "Signals"))
                    h3 { "Findings" }
                    (list_table(&risk["findings"], &["severity", "code", "message"], "Findings"))
                    h3 { "Bombs" }
                    (list_table(&risk["bombs"], &["kind", "severity", "message"], "Bombs"))
                }
            }
        }
        section aria-labelledby="timeline" {
            h2 #timeline { "Timeline" }
            ol.timeline #timeline-list reversed {
                @for stored in &view.events {
                    (timeline_item(stored))
                }
            }
        }
    }
}

fn timeline_item(stored: &StoredEvent) -> Markup {
    let event = &stored.event;
    let detail = event.payload["reason"]
        .as_str()
        .or(event.payload["error"].as_str())
        .or(event.payload["merged_commit"].as_str())
        .unwrap_or("");
    html! {
        li {
            time datetime=(event.timestamp.to_rfc3339()) { (event.timestamp.format("%Y-%m-%d %H:%M:%S")) }
            " " strong { (event.event_type.as_str()) } " " (detail) " "
            span.muted { "trace " code { (event.trace_id) } }
        }
    }
}

async fn recent(
    state: &AppState,
    event_type: EventType,
    tenant: Option<String>,
    limit: u32,
) -> Result<Vec<StoredEvent>, ApiError> {
    Ok(state
        .services
        .store
        .events(&EventFilter {
            event_type: Some(event_type),
            tenant_id: tenant,
            limit,
            ..EventFilter::default()
        })
        .await?)
}

/// GitHub's page of the pull request's checks, when the intent is a pull request.
fn check_run_link(intent: &Intent) -> Option<String> {
    let repo = intent.repo()?;
    let number = intent.technical.get("pr_number")?.as_u64()?;
    Some(format!("https://github.com/{repo}/pull/{number}/checks"))
}

fn intent_link(id: &str) -> Markup {
    html! { a href={ "/dashboard/intents/" (crate::encode_component(id)) } { (id) } }
}

fn status_badge(status: Status) -> Markup {
    html! { span class={ "status " (status.as_str().to_lowercase()) } { (status.as_str()) } }
}

fn queue_label(key: &QueueKey) -> String {
    let mut label = String::new();
    if !key.tenant.is_empty() {
        label.push_str(&format!("[{}] ", key.tenant));
    }
    if !key.repo.is_empty() {
        label.push_str(&format!("{}@", key.repo));
    }
    label.push_str(&key.target);
    label
}

fn gates_html(gates: &Value) -> Markup {
    html! {
        @for (n, gate) in gates.as_array().into_iter().flatten().enumerate() {
            @let passed = gate["passed"].as_bool().unwrap_or(false);
            @if n > 0 { " " }
            span class={ "gate " (if passed { "pass" } else { "fail" }) } {
                (if passed { "✓" } else { "✗" }) " " (gate["gate"].as_str().unwrap_or("?"))
            }
        }
    }
}

fn object_table(value: &Value, caption: &str) -> Markup {
    let Some(map) = value.as_object().filter(|m| !m.is_empty()) else {
        return html! { p { "None." } };
    };
    html! {
        div.scroll {
            table {
                caption.sr-only { (caption) }
                tbody {
                    @for (k, v) in map {
                        tr { th scope="row" { (k) } td { (compact(v)) } }
                    }
                }
            }
        }
    }
}

fn list_table(value: &Value, columns: &[&str], caption: &str) -> Markup {
    let Some(items) = value.as_array().filter(|l| !l.is_empty()) else {
        return html! { p { "None." } };
    };
    html! {
        div.scroll {
            table {
                caption.sr-only { (caption) }
                thead { tr { @for column in columns { th scope="col" { (column) } } } }
                tbody {
                    @for item in items {
                        @let (kind, fields) = bomb_or_finding(item);
                        tr {
                            @for column in columns {
                                td {
                                    @if *column == "kind" && !kind.is_empty() {
                                        (kind)
                                    } @else {
                                        (compact(&fields[*column]))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A bomb is `{"<kind>": {...}}`; a finding is flat.
fn bomb_or_finding(item: &Value) -> (&str, &Value) {
    match item.as_object() {
        Some(map) if map.len() == 1 && map.values().all(Value::is_object) => map
            .iter()
            .next()
            .map_or(("", &Value::Null), |(k, v)| (k.as_str(), v)),
        _ => ("", item),
    }
}

/// A score with one decimal, or a dash when there is none.
fn one_decimal(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.1}"))
}

fn compact(value: &Value) -> String {
    match value {
        Value::Null => "–".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() != 0.0)
            .map_or(n.to_string(), |f| format!("{f:.2}")),
        other => other.to_string(),
    }
}

fn age(elapsed: chrono::Duration) -> String {
    let seconds = elapsed.num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3_600 => format!("{} min", seconds / 60),
        3_600..86_400 => format!("{} h", seconds / 3_600),
        _ => format!("{} d", seconds / 86_400),
    }
}

pub(crate) fn login_form(problem: Option<&str>) -> Markup {
    html! {
        @if let Some(problem) = problem {
            p.problem role="alert" { (problem) }
        }
        form method="post" action="/dashboard/login" class="login" {
            label for="key" { "API key" }
            input #key name="key" type="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
            p.muted { "The key is kept for this browser session only." }
        }
    }
}

/// A whole page. `live` pages carry the sign-out button and refresh themselves.
pub(crate) fn page(status: StatusCode, title: &str, main: Markup, live: bool) -> Response {
    let document = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Converge" }
                link rel="stylesheet" href="/dashboard/assets/style.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    h1 { a href="/dashboard" { "Converge" } " " span.muted { (title) } }
                    @if live {
                        nav aria-label="Pages" {
                            a href="/dashboard" { "Queue" } " · " a href="/dashboard/integration" { "Integration" }
                        }
                        div.controls {
                            button type="button" #pause aria-pressed="false" { "Pause updates" }
                            a href="" #refresh-now { "Refresh" }
                            span #updated .muted aria-live="polite" {}
                            form method="post" action="/dashboard/logout" { button type="submit" { "Sign out" } }
                        }
                        script src="/dashboard/assets/live.js" data-refresh-ms=(REFRESH_SECONDS * 1_000) defer {}
                    }
                }
                main #main tabindex="-1" { (main) }
            }
        }
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ],
        document.into_string(),
    )
        .into_response()
}

/// Refreshes `<main>` in place (scroll and focus stay) unless paused or the tab is hidden.
const SCRIPT: &str = r#"(function () {
  var every = Number(document.currentScript.dataset.refreshMs) || 5000;
  var paused = false;
  var pause = document.getElementById('pause');
  var stamp = document.getElementById('updated');
  pause.addEventListener('click', function () {
    paused = !paused;
    pause.setAttribute('aria-pressed', String(paused));
    pause.textContent = paused ? 'Resume updates' : 'Pause updates';
  });
  function refresh() {
    if (paused || document.hidden) { return; }
    fetch(window.location.href, { credentials: 'same-origin', headers: { 'accept': 'text/html' } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) { return; }
        var fresh = new DOMParser().parseFromString(text, 'text/html').getElementById('main');
        var main = document.getElementById('main');
        if (fresh && main && fresh.innerHTML !== main.innerHTML) { main.innerHTML = fresh.innerHTML; }
        stamp.textContent = 'Updated ' + new Date().toLocaleTimeString();
      })
      .catch(function () { stamp.textContent = 'Update failed; retrying'; });
  }
  setInterval(refresh, every);
})();"#;

const STYLE: &str = "\
:root{color-scheme:light;--fg:#1a1a1a;--muted:#555;--line:#d0d0d0;--ok:#0b6b2b;--bad:#a4161a;--wait:#7a4a00;--link:#0645ad}\
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,sans-serif;color:var(--fg);background:#fff}\
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between;padding:.75rem 1rem;border-bottom:1px solid var(--line)}\
h1{font-size:1.25rem;margin:0}h1 a{color:inherit;text-decoration:none}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}h3{font-size:1rem;margin:1rem 0 .25rem}\
main{padding:0 1rem 2rem;max-width:72rem}a{color:var(--link)}code{font-size:.9em}\
.muted{color:var(--muted);font-weight:normal}.scroll{overflow-x:auto}\
table{border-collapse:collapse;width:100%;margin:.5rem 0}caption{text-align:left;font-weight:600;padding:.25rem 0}\
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}\
.status,.gate{font-weight:600;white-space:nowrap}.merged,.queued,.validated,.pass{color:var(--ok)}.rejected,.fail{color:var(--bad)}.ready{color:var(--wait)}\
.controls{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}.controls form{margin:0}\
button,input{font:inherit;padding:.4rem .7rem;border:1px solid #767676;border-radius:4px;background:#f4f4f4;color:var(--fg)}\
input{background:#fff;min-width:16rem;max-width:100%}\
:focus-visible{outline:3px solid #1a5fb4;outline-offset:2px}\
.login{display:flex;flex-direction:column;gap:.5rem;max-width:24rem;margin-top:1rem}.problem{color:var(--bad);font-weight:600}\
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dl.facts dt{font-weight:600}dl.facts dd{margin:0}\
ol.timeline{padding-left:1.25rem}ol.timeline li{margin:.25rem 0}\
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:.5rem;background:#fff;padding:.25rem .5rem}\
.sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}\
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,30rem),1fr));gap:1rem 1.5rem}\
figure.chart{margin:0}figure.chart figcaption{font-weight:600}figure.chart svg{width:100%;height:auto;display:block}\
.grid{stroke:var(--line);stroke-width:1}.axis{font-size:11px;fill:var(--muted)}\
.line{fill:none;stroke-width:2}.series-0{stroke:#1a5fb4;fill:#1a5fb4;background:#1a5fb4}.series-1{stroke:#c64600;fill:#c64600;background:#c64600}\
.series-2{stroke:#26803a;fill:#26803a;background:#26803a}.series-3{stroke:#8a2be2;fill:#8a2be2;background:#8a2be2}.series-4{stroke:#6b4f00;fill:#6b4f00;background:#6b4f00}\
polyline.line{fill:none}\
ul.legend{list-style:none;display:flex;gap:1rem;padding:0;margin:.25rem 0}.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}\
li.alert{margin:.25rem 0}\
@media (max-width:40rem){th,td{padding:.3rem}input{min-width:0;width:100%}}";
