//! The dashboard: server-rendered HTML over the same store, auth and tenancy as the API.
//!
//! The API key is entered once in a form and kept in a session cookie (`HttpOnly`,
//! `SameSite=Strict`, no expiry: gone when the browser session ends; `Secure` when the
//! request came over HTTPS). Every page resolves it to a principal exactly like `x-api-key`
//! does, so a tenant's key sees only its tenant. Pages are plain HTML with inline CSS; a small
//! script refreshes the main region every few seconds (paused on request, and not needed to
//! use the page). Nothing here writes to the store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use converge_core::queue::QueueKey;
use converge_core::{EventType, Intent, Status};
use converge_store::{EventFilter, IntentFilter, StoredEvent};
use serde_json::Value;

use crate::auth::{Principal, hash_key};
use crate::{ApiError, AppState};

const COOKIE: &str = "converge_key";
/// How often the script refreshes the page's main region.
const REFRESH_SECONDS: u32 = 5;
/// Intents listed per queue key.
const QUEUE_ROWS: u32 = 50;
/// Recent decisions listed.
const DECISION_ROWS: usize = 20;

/// The dashboard's routes.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/dashboard", get(overview))
        .route("/dashboard/intents/{id}", get(intent_page))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
}

/// Who is looking: from the session cookie (or anyone, with authentication off).
async fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
    if !state.services.api.auth_required {
        return Ok(Some(Principal::anonymous()));
    }
    let Some(key) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    match state.key_cache.principal(state, &hash_key(&key)).await {
        Ok(principal) => Ok(Some(principal)),
        Err(ApiError::Unauthenticated) => Ok(None),
        Err(e) => Err(e),
    }
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

/// The sign-in form.
#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    key: String,
}

/// `POST /dashboard/login`: checks the key and keeps it for the browser session.
async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::Form(LoginForm { key }): axum::Form<LoginForm>,
) -> Response {
    // A key goes into a cookie as it is: only characters a cookie value may hold.
    let cookie_safe = key
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b";,\"\\".contains(&b));
    let known = !key.is_empty()
        && cookie_safe
        && state
            .key_cache
            .principal(&state, &hash_key(&key))
            .await
            .is_ok();
    if !known {
        return page(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            &login_form(Some("That key was not accepted.")),
            false,
        );
    }
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p == "https");
    let cookie = format!(
        "{COOKIE}={key}; Path=/dashboard; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/dashboard")).into_response()
}

/// `POST /dashboard/logout`: forgets the key.
async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/dashboard")).into_response()
}

/// `GET /dashboard`: the queues, recent decisions, leases and the DLQ.
async fn overview(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match viewer(&state, &headers).await {
        Ok(Some(principal)) => match overview_html(&state, &principal).await {
            Ok(html) => page(StatusCode::OK, "Queue", &html, true),
            Err(e) => e.into_response(),
        },
        Ok(None) => page(StatusCode::OK, "Sign in", &login_form(None), false),
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
        Ok(None) => return page(StatusCode::OK, "Sign in", &login_form(None), false),
        Err(e) => return e.into_response(),
    };
    let intent = match state.services.store.intent(&id).await {
        Ok(Some(intent)) if principal.can_see(intent.tenant_id.as_deref()) => intent,
        Ok(_) => {
            let body = format!(
                "<p>No intent <code>{}</code> here.</p><p><a href=\"/dashboard\">Back to the queue</a></p>",
                esc(&id)
            );
            return page(StatusCode::NOT_FOUND, "Not found", &body, false);
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    match intent_html(&state, &intent).await {
        Ok(html) => page(
            StatusCode::OK,
            &format!("Intent {}", intent.id),
            &html,
            true,
        ),
        Err(e) => e.into_response(),
    }
}

async fn overview_html(state: &AppState, principal: &Principal) -> Result<String, ApiError> {
    let mut html = String::new();
    let tenant = principal.tenant.clone();
    let actionable = state
        .services
        .store
        .intents(&IntentFilter {
            statuses: vec![Status::Ready, Status::Validated, Status::Queued],
            tenant_id: tenant.clone(),
            limit: 10_000,
            ..IntentFilter::default()
        })
        .await?;
    let mut queues: BTreeMap<QueueKey, Vec<Intent>> = BTreeMap::new();
    for intent in actionable {
        queues
            .entry(QueueKey::for_intent(&intent))
            .or_default()
            .push(intent);
    }
    html.push_str("<section aria-labelledby=\"queues\"><h2 id=\"queues\">Queues</h2>");
    if queues.is_empty() {
        html.push_str("<p>Nothing is waiting.</p>");
    }
    let now = Utc::now();
    for (key, intents) in &queues {
        let label = queue_label(key);
        let _ = write!(
            html,
            "<div class=\"scroll\"><table><caption>{} <span class=\"muted\">({} waiting)</span></caption>\
             <thead><tr><th scope=\"col\">#</th><th scope=\"col\">Intent</th><th scope=\"col\">Status</th>\
             <th scope=\"col\">Retries</th><th scope=\"col\">Risk score</th><th scope=\"col\">Age</th></tr></thead><tbody>",
            esc(&label),
            intents.len()
        );
        for (position, intent) in intents.iter().take(QUEUE_ROWS as usize).enumerate() {
            let risk = latest_payload(state, &intent.id, EventType::RiskEvaluated)
                .await?
                .and_then(|r| r["risk_score"].as_f64())
                .map_or("–".to_owned(), |s| format!("{s:.1}"));
            let _ = write!(
                html,
                "<tr><td>{}</td><td><a href=\"/dashboard/intents/{}\">{}</a></td><td><span class=\"status {}\">{}</span></td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>",
                position + 1,
                esc(&crate::encode_component(&intent.id)),
                esc(&intent.id),
                intent.status.as_str().to_lowercase(),
                intent.status.as_str(),
                intent.retries,
                risk,
                age(now - intent.created_at)
            );
        }
        html.push_str("</tbody></table></div>");
    }
    html.push_str("</section>");

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
    html.push_str(
        "<section aria-labelledby=\"decisions\"><h2 id=\"decisions\">Recent decisions</h2>",
    );
    if decisions.is_empty() {
        html.push_str("<p>No decision yet.</p>");
    } else {
        html.push_str(
            "<div class=\"scroll\"><table id=\"decision-table\"><caption class=\"sr-only\">Recent decisions</caption><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Intent</th>\
             <th scope=\"col\">Decision</th><th scope=\"col\">Reason</th><th scope=\"col\">Gates</th></tr></thead><tbody>",
        );
        for stored in &decisions {
            let event = &stored.event;
            let trace = event.payload["trace_id"]
                .as_str()
                .unwrap_or(event.trace_id.as_str());
            let gates = policies
                .iter()
                .find(|p| p.event.trace_id == trace || p.event.payload["trace_id"] == trace)
                .map(|p| gates_html(&p.event.payload["gates"]))
                .unwrap_or_default();
            let reason = event.payload["reason"]
                .as_str()
                .or(event.payload["error"].as_str())
                .unwrap_or("");
            let intent_id = event.intent_id.clone().unwrap_or_default();
            let _ = write!(
                html,
                "<tr><td><time datetime=\"{}\">{}</time></td><td><a href=\"/dashboard/intents/{}\">{}</a></td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>",
                event.timestamp.to_rfc3339(),
                event.timestamp.format("%H:%M:%S"),
                esc(&crate::encode_component(&intent_id)),
                esc(&intent_id),
                esc(event.event_type.as_str()),
                esc(reason),
                gates
            );
        }
        html.push_str("</tbody></table></div>");
    }
    html.push_str("</section>");

    // Leases and the dead-letter queue.
    html.push_str("<section aria-labelledby=\"workers\"><h2 id=\"workers\">Workers</h2>");
    let leases: Vec<_> = state
        .services
        .store
        .leases()
        .await?
        .into_iter()
        .filter(|l| principal.can_see(Some(l.key.tenant.as_str()).filter(|t| !t.is_empty())))
        .filter(|l| l.holder.is_some())
        .collect();
    if leases.is_empty() {
        html.push_str("<p>No lease is held.</p>");
    } else {
        html.push_str("<div class=\"scroll\"><table><caption>Lease holders</caption><thead><tr><th scope=\"col\">Queue</th><th scope=\"col\">Holder</th><th scope=\"col\">Token</th><th scope=\"col\">Expires</th></tr></thead><tbody>");
        for lease in &leases {
            let expired = lease.expires_at.is_some_and(|e| e < now);
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                esc(&queue_label(&lease.key)),
                esc(lease.holder.as_deref().unwrap_or("")),
                lease.token,
                lease
                    .expires_at
                    .map(|e| e.format("%H:%M:%S").to_string())
                    .unwrap_or_default(),
                if expired { " (stale)" } else { "" }
            );
        }
        html.push_str("</tbody></table></div>");
    }
    let dlq = match &state.services.dlq {
        None => "not configured (CONVERGE_DLQ_URL)".to_owned(),
        Some(queue) => match queue.depth().await {
            Ok(depth) => format!("{depth} message(s)"),
            Err(e) => format!("unknown ({})", esc(&e.to_string())),
        },
    };
    let _ = write!(
        html,
        "<p>Dead-letter queue: <strong id=\"dlq\">{dlq}</strong></p></section>"
    );
    Ok(html)
}

async fn intent_html(state: &AppState, intent: &Intent) -> Result<String, ApiError> {
    let mut html = String::new();
    html.push_str("<p><a href=\"/dashboard\">← Back to the queue</a></p>");
    let _ = write!(
        html,
        "<dl class=\"facts\"><dt>Status</dt><dd><span class=\"status {}\">{}</span></dd>\
         <dt>Source → target</dt><dd><code>{}</code> → <code>{}</code></dd>\
         <dt>Priority</dt><dd>{}</dd><dt>Retries</dt><dd>{}</dd><dt>Risk level</dt><dd>{}</dd>",
        intent.status.as_str().to_lowercase(),
        intent.status.as_str(),
        esc(&intent.source),
        esc(&intent.target),
        intent.priority,
        intent.retries,
        esc(intent.risk_level.as_str()),
    );
    if let Some(tenant) = &intent.tenant_id {
        let _ = write!(html, "<dt>Tenant</dt><dd>{}</dd>", esc(tenant));
    }
    if !intent.dependencies.is_empty() {
        let links: Vec<String> = intent
            .dependencies
            .iter()
            .map(|d| {
                format!(
                    "<a href=\"/dashboard/intents/{}\">{}</a>",
                    esc(&crate::encode_component(d)),
                    esc(d)
                )
            })
            .collect();
        let _ = write!(html, "<dt>Depends on</dt><dd>{}</dd>", links.join(", "));
    }
    if let Some(link) = check_run_link(intent) {
        let _ = write!(
            html,
            "<dt>Checks</dt><dd><a href=\"{}\" rel=\"noopener\">The pull request's checks on GitHub</a></dd>",
            esc(&link)
        );
    }
    html.push_str("</dl>");

    html.push_str("<section aria-labelledby=\"risk\"><h2 id=\"risk\">Risk</h2>");
    match latest_payload(state, &intent.id, EventType::RiskEvaluated).await? {
        None => html.push_str("<p>Not evaluated yet.</p>"),
        Some(risk) => {
            html.push_str("<dl class=\"facts\">");
            for (label, field) in [
                ("Risk score", "risk_score"),
                ("Damage", "damage_score"),
                ("Entropy", "entropy_score"),
                ("Propagation", "propagation_score"),
                ("Containment", "containment_score"),
            ] {
                let value = risk[field]
                    .as_f64()
                    .map_or("–".to_owned(), |v| format!("{v:.1}"));
                let _ = write!(html, "<dt>{label}</dt><dd>{value}</dd>");
            }
            html.push_str("</dl><h3>Signals</h3>");
            html.push_str(&object_table(&risk["signals"], "Signals"));
            html.push_str("<h3>Findings</h3>");
            html.push_str(&list_table(
                &risk["findings"],
                &["severity", "code", "message"],
                "Findings",
            ));
            html.push_str("<h3>Bombs</h3>");
            html.push_str(&list_table(
                &risk["bombs"],
                &["kind", "severity", "message"],
                "Bombs",
            ));
        }
    }
    html.push_str("</section>");

    let events = state
        .services
        .store
        .events(&EventFilter {
            intent_id: Some(intent.id.clone()),
            limit: 200,
            ..EventFilter::default()
        })
        .await?;
    html.push_str("<section aria-labelledby=\"timeline\"><h2 id=\"timeline\">Timeline</h2><ol class=\"timeline\" id=\"timeline-list\" reversed>");
    for stored in &events {
        let event = &stored.event;
        let detail = event.payload["reason"]
            .as_str()
            .or(event.payload["error"].as_str())
            .or(event.payload["merged_commit"].as_str())
            .unwrap_or("");
        let _ = write!(
            html,
            "<li><time datetime=\"{}\">{}</time> <strong>{}</strong> {} <span class=\"muted\">trace <code>{}</code></span></li>",
            event.timestamp.to_rfc3339(),
            event.timestamp.format("%Y-%m-%d %H:%M:%S"),
            esc(event.event_type.as_str()),
            esc(detail),
            esc(&event.trace_id)
        );
    }
    html.push_str("</ol></section>");
    Ok(html)
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

async fn latest_payload(
    state: &AppState,
    intent_id: &str,
    event_type: EventType,
) -> Result<Option<Value>, ApiError> {
    Ok(state
        .services
        .store
        .events(&EventFilter {
            intent_id: Some(intent_id.to_owned()),
            event_type: Some(event_type),
            limit: 1,
            ..EventFilter::default()
        })
        .await?
        .into_iter()
        .next()
        .map(|s| s.event.payload))
}

/// GitHub's page of the pull request's checks, when the intent is a pull request.
fn check_run_link(intent: &Intent) -> Option<String> {
    let repo = intent.repo()?;
    let number = intent.technical.get("pr_number")?.as_u64()?;
    Some(format!("https://github.com/{repo}/pull/{number}/checks"))
}

fn queue_label(key: &QueueKey) -> String {
    let mut label = String::new();
    if !key.tenant.is_empty() {
        let _ = write!(label, "[{}] ", key.tenant);
    }
    if !key.repo.is_empty() {
        let _ = write!(label, "{}@", key.repo);
    }
    label.push_str(&key.target);
    label
}

fn gates_html(gates: &Value) -> String {
    gates
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let passed = g["passed"].as_bool().unwrap_or(false);
            format!(
                "<span class=\"gate {}\">{} {}</span>",
                if passed { "pass" } else { "fail" },
                if passed { "✓" } else { "✗" },
                esc(g["gate"].as_str().unwrap_or("?"))
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn object_table(value: &Value, caption: &str) -> String {
    let Some(map) = value.as_object().filter(|m| !m.is_empty()) else {
        return "<p>None.</p>".to_owned();
    };
    let mut html = format!(
        "<div class=\"scroll\"><table><caption class=\"sr-only\">{}</caption><tbody>",
        esc(caption)
    );
    for (k, v) in map {
        let _ = write!(
            html,
            "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
            esc(k),
            esc(&compact(v))
        );
    }
    html.push_str("</tbody></table></div>");
    html
}

fn list_table(value: &Value, columns: &[&str], caption: &str) -> String {
    let Some(items) = value.as_array().filter(|l| !l.is_empty()) else {
        return "<p>None.</p>".to_owned();
    };
    let mut html = format!(
        "<div class=\"scroll\"><table><caption class=\"sr-only\">{}</caption><thead><tr>",
        esc(caption)
    );
    for column in columns {
        let _ = write!(html, "<th scope=\"col\">{}</th>", esc(column));
    }
    html.push_str("</tr></thead><tbody>");
    for item in items {
        // A bomb is `{"<kind>": {...}}`; a finding is flat.
        let (kind, fields) = match item.as_object() {
            Some(map) if map.len() == 1 && map.values().all(Value::is_object) => {
                let (k, v) = map
                    .iter()
                    .next()
                    .map_or(("", &Value::Null), |(k, v)| (k.as_str(), v));
                (k.to_owned(), v)
            }
            _ => (String::new(), item),
        };
        html.push_str("<tr>");
        for column in columns {
            let cell = if *column == "kind" && !kind.is_empty() {
                kind.clone()
            } else {
                compact(&fields[*column])
            };
            let _ = write!(html, "<td>{}</td>", esc(&cell));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></div>");
    html
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

/// Escapes text for HTML (content and quoted attributes).
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn login_form(problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"problem\" role=\"alert\">{}</p>", esc(p)))
        .unwrap_or_default();
    format!(
        "{problem}<form method=\"post\" action=\"/dashboard/login\" class=\"login\">\
         <label for=\"key\">API key</label>\
         <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button>\
         <p class=\"muted\">The key is kept for this browser session only.</p></form>"
    )
}

/// A whole page. `live` pages carry the sign-out button and refresh themselves.
fn page(status: StatusCode, title: &str, main: &str, live: bool) -> Response {
    let controls = if live {
        format!(
            "<div class=\"controls\"><button type=\"button\" id=\"pause\" aria-pressed=\"false\">Pause updates</button>\
             <a href=\"\" id=\"refresh-now\">Refresh</a>\
             <span id=\"updated\" class=\"muted\" aria-live=\"polite\"></span>\
             <form method=\"post\" action=\"/dashboard/logout\"><button type=\"submit\">Sign out</button></form></div>\
             <script>{}</script>",
            SCRIPT.replace("REFRESH_MS", &(REFRESH_SECONDS * 1_000).to_string())
        )
    } else {
        String::new()
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Converge</title><style>{STYLE}</style></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><h1><a href=\"/dashboard\">Converge</a> <span class=\"muted\">{}</span></h1>{controls}</header>\
         <main id=\"main\" tabindex=\"-1\">{main}</main></body></html>",
        esc(title),
        esc(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        html,
    )
        .into_response()
}

/// Refreshes `<main>` in place (scroll and focus stay) unless paused or the tab is hidden.
const SCRIPT: &str = r#"(function () {
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
  setInterval(refresh, REFRESH_MS);
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
@media (max-width:40rem){th,td{padding:.3rem}input{min-width:0;width:100%}}";
