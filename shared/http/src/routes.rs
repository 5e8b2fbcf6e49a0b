//! The business routes, mounted under `/v1` and mirrored under `/api`.
//!
//! Each handler checks its role and scope first, then confines what it reads or writes to the
//! caller's tenant: another tenant's single objects are 404, writes into another tenant 403.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use converge_core::queue::QueueKey;
use converge_core::{Event, EventType, Intent, PolicyConfig, RiskLevel, Status};
use converge_store::{ApiKeyRecord, Commit, EventFilter, IntentCursor, IntentFilter, StoredEvent};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::{Principal, Role, hash_key};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};

type ApiResult = Result<Response, ApiError>;

/// Default and largest page of intents.
const INTENTS_PAGE_DEFAULT: u32 = 100;
const INTENTS_PAGE_MAX: u32 = 500;
/// Default and largest page of events.
const EVENTS_PAGE_DEFAULT: u32 = 100;
const EVENTS_PAGE_MAX: u32 = 1_000;
/// Longest grace period of a rotated key (a day).
const MAX_GRACE_SECONDS: i64 = 86_400;
/// Grace period of a rotated key when none is given (an hour).
const DEFAULT_GRACE_SECONDS: i64 = 3_600;

fn ok(value: Value) -> ApiResult {
    Ok(Json(value).into_response())
}

fn event(
    state: &AppState,
    principal: &Principal,
    event_type: EventType,
    intent_id: Option<&str>,
    tenant: Option<String>,
    payload: Value,
) -> Event {
    Event {
        id: state.new_id(),
        trace_id: format!("trace-{}", state.new_id()),
        timestamp: state.clock.now(),
        event_type,
        intent_id: intent_id.map(str::to_owned),
        agent_id: None,
        tenant_id: tenant,
        payload,
        evidence: json!({"actor": principal.actor}),
    }
}

/// Records one event (and whatever projection change it implies) in its own transaction.
async fn record(
    state: &AppState,
    principal: &Principal,
    event_type: EventType,
    intent_id: Option<&str>,
    tenant: Option<String>,
    payload: Value,
) -> Result<(), ApiError> {
    let recorded = event(state, principal, event_type, intent_id, tenant, payload);
    state
        .store
        .commit(&Commit {
            events: vec![recorded],
            ..Commit::default()
        })
        .await?;
    Ok(())
}

/// Records one event about an intent together with a queue message for the intent's key, in
/// one transaction, then wakes a worker in this process: the queue takes the change up.
async fn record_for_queue(
    state: &AppState,
    principal: &Principal,
    event_type: EventType,
    intent: &Intent,
    payload: Value,
) -> Result<(), ApiError> {
    let recorded = event(
        state,
        principal,
        event_type,
        Some(&intent.id),
        intent.tenant_id.clone(),
        payload,
    );
    enqueue(state, vec![recorded], intent).await
}

/// Commits `events` with a queue message for `intent`'s key, then wakes the local worker.
async fn enqueue(state: &AppState, events: Vec<Event>, intent: &Intent) -> Result<(), ApiError> {
    let message = converge_runtime::queue_worker::queue_message(&QueueKey::for_intent(intent));
    state
        .store
        .commit(&Commit {
            events,
            outbox: vec![message],
            ..Commit::default()
        })
        .await?;
    state.queue_work_committed().await;
    Ok(())
}

fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}, got {n}"
        ))),
    }
}

fn parse_time(field: &str, value: Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(&v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::BadRequest(format!("{field} must be an RFC 3339 time, got '{v}'"))
                })
        })
        .transpose()
}

/// An intent the caller may see, or 404.
async fn visible_intent(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Intent, ApiError> {
    match state.store.intent(id).await? {
        Some(intent) if principal.can_see(intent.tenant_id.as_deref()) => Ok(intent),
        _ => Err(ApiError::NotFound(format!("intent '{id}' not found"))),
    }
}

fn stored_event_json(stored: &StoredEvent) -> Value {
    let mut value = serde_json::to_value(&stored.event).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("seq".to_owned(), json!(stored.seq));
    }
    value
}

// ---------------------------------------------------------------------------------------------
// Intents

#[derive(Deserialize)]
pub(crate) struct IntentListQuery {
    status: Option<String>,
    tenant_id: Option<String>,
    target: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// A page of intents.
#[derive(serde::Serialize)]
struct IntentPage<'a> {
    intents: &'a [Intent],
    next_cursor: Option<String>,
}

fn encode_cursor(intent: &Intent) -> String {
    let id_hex: String = intent.id.bytes().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}.{}.{id_hex}",
        intent.priority,
        intent.created_at.timestamp_micros()
    )
}

fn decode_cursor(cursor: &str) -> Result<IntentCursor, ApiError> {
    let bad = || ApiError::BadRequest("cursor is not one this API returned".to_owned());
    let mut parts = cursor.splitn(3, '.');
    let priority = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let micros: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let hex = parts.next().ok_or_else(bad)?;
    if hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    let id = String::from_utf8(bytes.ok_or_else(bad)?).map_err(|_| bad())?;
    let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok(IntentCursor {
        priority,
        created_at,
        id,
    })
}

fn parse_statuses(list: Option<String>) -> Result<Vec<Status>, ApiError> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.to_uppercase()
                .parse::<Status>()
                .map_err(|e| ApiError::BadRequest(format!("status: {e}")))
        })
        .collect()
}

/// `GET /intents`: queue order, filters, cursor pagination.
pub(crate) async fn list_intents(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<IntentListQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "intents.read")?;
    let limit = page_limit(q.limit, INTENTS_PAGE_DEFAULT, INTENTS_PAGE_MAX)?;
    let filter = IntentFilter {
        statuses: parse_statuses(q.status)?,
        tenant_id: principal.read_tenant(q.tenant_id),
        target: q.target,
        after: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: limit + 1,
    };
    let mut intents = state.store.intents(&filter).await?;
    let next_cursor = if intents.len() > limit as usize {
        intents.truncate(limit as usize);
        intents.last().map(encode_cursor)
    } else {
        None
    };
    // Serialised straight from the intents (no intermediate JSON tree): this is the hot path.
    Ok(Json(IntentPage {
        intents: &intents,
        next_cursor,
    })
    .into_response())
}

/// `GET /intents/{id}`: the intent and its commit links.
pub(crate) async fn get_intent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    principal.require(Role::Viewer, "intents.read")?;
    let intent = visible_intent(&state, &principal, &id).await?;
    let links = state.store.commit_links(&id).await?;
    let mut value = serde_json::to_value(&intent).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Value::Object(map) = &mut value {
        map.insert("commit_links".to_owned(), json!(links));
    }
    ok(value)
}

#[derive(Deserialize)]
pub(crate) struct LimitQuery {
    limit: Option<u32>,
    tenant_id: Option<String>,
}

/// `GET /intents/{id}/events`: newest first.
pub(crate) async fn intent_events(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "intents.read")?;
    visible_intent(&state, &principal, &id).await?;
    let limit = page_limit(q.limit, EVENTS_PAGE_DEFAULT, EVENTS_PAGE_MAX)?;
    let events = state
        .store
        .events(&EventFilter {
            intent_id: Some(id),
            limit,
            ..EventFilter::default()
        })
        .await?;
    ok(json!({"events": events.iter().map(stored_event_json).collect::<Vec<_>>()}))
}

/// The body of `POST /intents`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntentCreate {
    id: Option<String>,
    intent_id: Option<String>,
    source: Option<String>,
    target: Option<String>,
    risk_level: Option<RiskLevel>,
    priority: Option<i64>,
    #[serde(default)]
    semantic: Map<String, Value>,
    #[serde(default)]
    technical: Map<String, Value>,
    #[serde(default)]
    checks_required: Vec<String>,
    #[serde(default)]
    dependencies: Vec<String>,
    tenant_id: Option<String>,
    plan_id: Option<String>,
    origin_type: Option<String>,
}

/// `POST /intents`: creates a READY intent (201); an existing id is a conflict.
pub(crate) async fn create_intent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<IntentCreate>,
) -> ApiResult {
    principal.require(Role::Operator, "intents.write")?;
    let text = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let technical_ref = |key: &str| {
        body.technical
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let source = text(body.source.clone())
        .or_else(|| text(technical_ref("source_ref")))
        .ok_or_else(|| ApiError::BadRequest("source is required".to_owned()))?;
    let target = text(body.target.clone())
        .or_else(|| text(technical_ref("target_ref")))
        .unwrap_or_else(|| state.policy.queue.default_target.clone());
    let id = text(body.id.or(body.intent_id)).unwrap_or_else(|| format!("api-{}", state.new_id()));
    if id.chars().count() > 512 {
        return Err(ApiError::BadRequest(
            "id must be at most 512 characters".to_owned(),
        ));
    }
    let tenant = principal.write_tenant(body.tenant_id)?;
    // The same answer whichever tenant holds the id (ids are one namespace).
    if state.store.intent(&id).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "intent id '{id}' is already taken"
        )));
    }
    let mut intent = Intent::new(&id, source, target, state.clock.now());
    intent.created_by = principal.actor.clone();
    intent.risk_level = body.risk_level.unwrap_or(RiskLevel::Medium);
    intent.priority = body
        .priority
        .unwrap_or(converge_core::intent::DEFAULT_PRIORITY);
    intent.semantic = body.semantic;
    intent.technical = body.technical;
    intent.checks_required = body.checks_required;
    intent.dependencies = body.dependencies;
    intent.tenant_id = tenant.clone();
    intent.plan_id = text(body.plan_id);
    intent.origin_type = text(body.origin_type).unwrap_or_else(|| "api".to_owned());
    let payload = serde_json::to_value(&intent).map_err(|e| ApiError::Internal(e.to_string()))?;
    record_for_queue(
        &state,
        &principal,
        EventType::IntentCreated,
        &intent,
        payload,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"ok": true, "intent_id": id, "status": intent.status})),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Queue

async fn tenant_intents(state: &AppState, tenant: Option<String>) -> Result<Vec<Intent>, ApiError> {
    Ok(state
        .store
        .intents(&IntentFilter {
            tenant_id: tenant,
            limit: 100_000,
            ..IntentFilter::default()
        })
        .await?)
}

fn by_status(intents: &[Intent]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for intent in intents {
        *counts.entry(intent.status.as_str()).or_default() += 1;
    }
    counts
}

fn queue_state_json(intents: &[Intent]) -> Value {
    let mut pending: Vec<&Intent> = intents
        .iter()
        .filter(|i| i.status.is_actionable())
        .collect();
    pending.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
    json!({
        "pending": pending.iter().map(|i| json!({"intent_id": i.id, "status": i.status, "priority": i.priority, "retries": i.retries})).collect::<Vec<_>>(),
        "total": intents.len(),
        "by_status": by_status(intents),
    })
}

#[derive(Deserialize)]
pub(crate) struct TenantQuery {
    tenant_id: Option<String>,
}

/// `GET /queue/state`.
pub(crate) async fn queue_state(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "queue.read")?;
    let intents = tenant_intents(&state, principal.read_tenant(q.tenant_id)).await?;
    ok(queue_state_json(&intents))
}

/// `GET /queue/summary`.
pub(crate) async fn queue_summary(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "queue.read")?;
    let tenant = principal.read_tenant(q.tenant_id);
    let counts = state.store.intent_counts(tenant.as_deref()).await?;
    let mut by_status: BTreeMap<&str, i64> = BTreeMap::new();
    for count in &counts {
        *by_status.entry(count.status.as_str()).or_default() += count.count;
    }
    let total: i64 = counts.iter().map(|c| c.count).sum();
    let pending: i64 = counts
        .iter()
        .filter(|c| c.status.is_actionable())
        .map(|c| c.count)
        .sum();
    ok(json!({"total": total, "by_status": by_status, "pending_count": pending}))
}

#[derive(Deserialize)]
pub(crate) struct InspectQuery {
    status: Option<String>,
    min_retries: Option<u32>,
    #[serde(default)]
    only_actionable: bool,
    limit: Option<u32>,
    tenant_id: Option<String>,
}

/// `GET /queue/inspect`.
pub(crate) async fn queue_inspect(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<InspectQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "queue.read")?;
    let limit = page_limit(q.limit, INTENTS_PAGE_DEFAULT, INTENTS_PAGE_MAX)? as usize;
    let statuses = if q.only_actionable {
        vec![Status::Ready, Status::Validated, Status::Queued]
    } else {
        parse_statuses(q.status)?
    };
    let intents = state
        .store
        .intents(&IntentFilter {
            statuses: statuses.clone(),
            tenant_id: principal.read_tenant(q.tenant_id),
            limit: 100_000,
            ..IntentFilter::default()
        })
        .await?;
    let mut rows: Vec<&Intent> = intents
        .iter()
        .filter(|i| i.retries >= q.min_retries.unwrap_or(0))
        .collect();
    // Actionable intents are listed READY first, then VALIDATED, then QUEUED.
    rows.sort_by_key(|i| {
        statuses
            .iter()
            .position(|s| *s == i.status)
            .unwrap_or(usize::MAX)
    });
    rows.truncate(limit);
    let rows: Vec<Value> = rows
        .iter()
        .map(|i| json!({"intent_id": i.id, "status": i.status, "retries": i.retries, "priority": i.priority, "source": i.source, "target": i.target, "risk_level": i.risk_level}))
        .collect();
    ok(json!({"intents": rows}))
}

/// The body of `POST /queue/reset`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueReset {
    intent_id: String,
    set_status: Option<String>,
    #[serde(default)]
    clear_lock: bool,
}

/// `POST /queue/reset`: retries back to 0 (optionally a new status) and, with `clear_lock`,
/// the queue key's lease cleared. `intent_id: "any"` with `clear_lock` clears every lease the
/// caller's tenant may touch (the runbook's stale-lock recovery).
pub(crate) async fn queue_reset(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<QueueReset>,
) -> ApiResult {
    principal.require(Role::Operator, "queue.write")?;
    let mut cleared = Vec::new();
    if body.intent_id == "any" {
        if !body.clear_lock {
            return Err(ApiError::BadRequest(
                "intent_id \"any\" only makes sense with clear_lock: true".to_owned(),
            ));
        }
        for lease in state.store.leases().await? {
            let visible = principal
                .tenant
                .as_deref()
                .is_none_or(|t| t == lease.key.tenant);
            if visible
                && lease.holder.is_some()
                && state.store.force_clear_lease(&lease.key).await?
            {
                cleared.push(lease.key.to_string());
            }
        }
        return ok(json!({"intent_id": "any", "cleared_leases": cleared}));
    }
    let intent = visible_intent(&state, &principal, &body.intent_id).await?;
    let new_status = body
        .set_status
        .map(|s| {
            s.to_uppercase()
                .parse::<Status>()
                .map_err(|e| ApiError::BadRequest(format!("set_status: {e}")))
        })
        .transpose()?;
    let payload = json!({"new_status": new_status, "retries_reset": true, "previous_retries": intent.retries});
    record_for_queue(&state, &principal, EventType::QueueReset, &intent, payload).await?;
    if body.clear_lock {
        let key = QueueKey::for_intent(&intent);
        if state.store.force_clear_lease(&key).await? {
            cleared.push(key.to_string());
        }
    }
    let status = new_status.unwrap_or(intent.status);
    ok(json!({"intent_id": intent.id, "status": status, "retries": 0, "cleared_leases": cleared}))
}

/// The body of `POST /merge/confirm`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MergeConfirm {
    intent_id: String,
    merged_commit: Option<String>,
}

/// `POST /merge/confirm`: records a merge done outside Converge (QUEUED or VALIDATED only).
pub(crate) async fn merge_confirm(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<MergeConfirm>,
) -> ApiResult {
    principal.require(Role::Operator, "queue.write")?;
    let intent = visible_intent(&state, &principal, &body.intent_id).await?;
    if !matches!(intent.status, Status::Queued | Status::Validated) {
        return Err(ApiError::Conflict(format!(
            "intent {} is {}, expected QUEUED or VALIDATED",
            intent.id, intent.status
        )));
    }
    let prefix: String = intent.id.chars().take(8).collect();
    let merged_commit = body
        .merged_commit
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| format!("confirmed-{prefix}"));
    let payload = json!({"merged_commit": merged_commit, "source": intent.source, "target": intent.target, "trigger": "merge_confirm"});
    // Queued with the key: intents that depended on this one may go on now.
    record_for_queue(
        &state,
        &principal,
        EventType::IntentMerged,
        &intent,
        payload,
    )
    .await?;
    ok(json!({"intent_id": intent.id, "status": Status::Merged, "merged_commit": merged_commit}))
}

// ---------------------------------------------------------------------------------------------
// Events

#[derive(Deserialize, Default)]
pub(crate) struct EventsQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    intent_id: Option<String>,
    tenant_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

async fn list_events(
    state: &AppState,
    principal: &Principal,
    q: EventsQuery,
) -> Result<Value, ApiError> {
    let event_type = q
        .event_type
        .map(|t| {
            t.parse::<EventType>()
                .map_err(|e| ApiError::BadRequest(format!("type: {e}")))
        })
        .transpose()?;
    let filter = EventFilter {
        intent_id: q.intent_id,
        event_type,
        tenant_id: principal.read_tenant(q.tenant_id),
        since: parse_time("since", q.since)?,
        until: parse_time("until", q.until)?,
        before_seq: q.before,
        limit: page_limit(q.limit, EVENTS_PAGE_DEFAULT, EVENTS_PAGE_MAX)?,
    };
    let events = state.store.events(&filter).await?;
    let next = if events.len() == filter.limit as usize {
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(
        json!({"events": events.iter().map(stored_event_json).collect::<Vec<_>>(), "next_before": next}),
    )
}

/// `GET /events`.
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "events.read")?;
    ok(list_events(&state, &principal, q).await?)
}

/// `GET /audit/recent`: every event, newest first (operators).
pub(crate) async fn audit_recent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult {
    principal.require(Role::Operator, "events.read")?;
    let query = EventsQuery {
        tenant_id: q.tenant_id,
        limit: q.limit,
        ..EventsQuery::default()
    };
    ok(list_events(&state, &principal, query).await?)
}

// ---------------------------------------------------------------------------------------------
// Auth

/// `GET /auth/whoami`.
pub(crate) async fn whoami(principal: Principal) -> ApiResult {
    principal.require(Role::Viewer, "intents.read")?;
    ok(
        json!({"role": principal.role, "actor": principal.actor, "tenant": principal.tenant, "scopes": principal.scopes}),
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rotate {
    grace_period_seconds: Option<i64>,
}

/// `POST /auth/keys/rotate`: a new key for the caller, valid at once on every instance; the
/// presented key keeps working for the grace period, then stops.
pub(crate) async fn rotate_key(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    OptionalJson(request): OptionalJson<Rotate>,
) -> ApiResult {
    principal.require(Role::Admin, "admin")?;
    let old_hash = principal.key_hash.clone().ok_or_else(|| {
        ApiError::BadRequest("authentication is off: there is no key to rotate".to_owned())
    })?;
    if principal.key_expires_at.is_some() {
        return Err(ApiError::Forbidden(
            "this key is already being retired; rotate with its replacement".to_owned(),
        ));
    }
    let grace = request
        .grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(ApiError::BadRequest(format!(
            "grace_period_seconds must be between 0 and {MAX_GRACE_SECONDS}, got {grace}"
        )));
    }
    let new_key = format!("cvg_{}", state.new_secret());
    let now = state.clock.now();
    state
        .store
        .put_api_key(&ApiKeyRecord {
            key_hash: hash_key(&new_key),
            role: principal.role.to_string(),
            actor: principal.actor.clone(),
            tenant_id: principal.tenant.clone(),
            scopes: principal.scopes.clone().unwrap_or_default(),
            created_at: now,
            expires_at: None,
            // Made through the API: no secret lists it, so none revokes it.
            origin: None,
        })
        .await?;
    let old_expires_at = now + TimeDelta::seconds(grace);
    state
        .store
        .expire_api_key(&old_hash, old_expires_at)
        .await?;
    state.key_cache.forget(&old_hash);
    let payload = json!({"actor": principal.actor, "grace_period_seconds": grace, "old_key_expires_at": old_expires_at});
    record(
        &state,
        &principal,
        EventType::AccessKeyRotated,
        None,
        principal.tenant.clone(),
        payload,
    )
    .await?;
    ok(json!({
        "new_key": new_key,
        "actor": principal.actor,
        "role": principal.role,
        "tenant": principal.tenant,
        "scopes": principal.scopes,
        "grace_period_seconds": grace,
        "old_key_expires_at": old_expires_at,
        "note": "The new key works now on every instance. The old key stops working at old_key_expires_at; replace it wherever it is configured."
    }))
}

// ---------------------------------------------------------------------------------------------
// Risk

/// `GET /risk/recent`: latest risk evaluations.
pub(crate) async fn risk_recent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "risk.read")?;
    let query = EventsQuery {
        event_type: Some(EventType::RiskEvaluated.as_str().to_owned()),
        tenant_id: q.tenant_id,
        limit: Some(q.limit.unwrap_or(50)),
        ..EventsQuery::default()
    };
    ok(list_events(&state, &principal, query).await?)
}

/// `GET /risk/gate/report`: how often policy blocked, and the latest blocks.
pub(crate) async fn risk_gate_report(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "risk.read")?;
    let filter = EventFilter {
        event_type: Some(EventType::PolicyEvaluated),
        tenant_id: principal.read_tenant(q.tenant_id),
        limit: 10_000,
        ..EventFilter::default()
    };
    let evaluations = state.store.events(&filter).await?;
    let blocked: Vec<&StoredEvent> = evaluations
        .iter()
        .filter(|e| e.event.payload["verdict"] == "BLOCK")
        .collect();
    let rate = if evaluations.is_empty() {
        0.0
    } else {
        blocked.len() as f64 / evaluations.len() as f64
    };
    ok(json!({
        "total_evaluations": evaluations.len(),
        "total_blocked": blocked.len(),
        "block_rate": converge_core::numeric::py_round(rate, 3),
        "recent_blocks": blocked.iter().take(20).map(|e| stored_event_json(e)).collect::<Vec<_>>(),
    }))
}

fn policy_tenant(principal: &Principal, requested: Option<String>) -> Result<String, ApiError> {
    principal
        .write_tenant(requested)?
        .ok_or_else(|| ApiError::BadRequest("tenant_id required".to_owned()))
}

/// `GET /risk/policy`: the tenant's risk gate policy.
pub(crate) async fn get_risk_policy(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "risk.read")?;
    let tenant = principal.read_tenant(q.tenant_id).unwrap_or_default();
    let policy = state
        .store
        .risk_policy(&tenant)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no risk policy for tenant '{tenant}'")))?;
    ok(
        json!({"tenant_id": tenant, "version": policy.version, "policy": policy.data, "updated_at": policy.updated_at}),
    )
}

/// `POST /risk/policy`: sets the tenant's risk gate policy (validated like `policy.json`'s
/// `risk` section).
pub(crate) async fn set_risk_policy(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(mut body): ApiJson<Map<String, Value>>,
) -> ApiResult {
    principal.require(Role::Operator, "risk.write")?;
    let body_tenant = body
        .remove("tenant_id")
        .and_then(|v| v.as_str().map(str::to_owned));
    let tenant = policy_tenant(&principal, body_tenant.or(q.tenant_id))?;
    let data = Value::Object(body);
    PolicyConfig::from_json(&json!({"risk": data}))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let version = state.store.put_risk_policy(&tenant, &data).await?;
    record(
        &state,
        &principal,
        EventType::RiskPolicyUpdated,
        None,
        Some(tenant.clone()),
        json!({"policy": data, "version": version}),
    )
    .await?;
    ok(json!({"ok": true, "tenant_id": tenant, "version": version}))
}

// ---------------------------------------------------------------------------------------------
// Summaries

/// `GET /metrics/integration`: decision counts from the event log.
pub(crate) async fn integration_metrics(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "events.read")?;
    let tenant = principal.read_tenant(q.tenant_id);
    let count = |event_type: EventType| {
        let filter = EventFilter {
            event_type: Some(event_type),
            tenant_id: tenant.clone(),
            limit: 100_000,
            ..EventFilter::default()
        };
        let store = state.store.clone();
        async move { store.events(&filter).await }
    };
    let simulations = count(EventType::SimulationCompleted).await?;
    let mergeable = simulations
        .iter()
        .filter(|e| e.event.payload["mergeable"] == true)
        .count();
    let validated = count(EventType::IntentValidated).await?.len();
    let blocked = count(EventType::IntentBlocked).await?.len();
    let merged = count(EventType::IntentMerged).await?.len();
    let rejected = count(EventType::IntentRejected).await?.len();
    let rate = if simulations.is_empty() {
        0.0
    } else {
        mergeable as f64 / simulations.len() as f64
    };
    ok(json!({
        "total_simulations": simulations.len(),
        "mergeable": mergeable,
        "mergeable_rate": converge_core::numeric::py_round(rate, 3),
        "total_merged": merged,
        "total_rejected": rejected,
        "total_blocked": blocked,
        "decision_distribution": {"validated": validated, "blocked": blocked, "merged": merged, "rejected": rejected},
        "tenant_id": tenant,
        "timestamp": state.clock.now(),
    }))
}

/// `GET /summary`: the queue at a glance.
pub(crate) async fn summary(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "intents.read")?;
    let tenant = principal.read_tenant(q.tenant_id);
    let intents = tenant_intents(&state, tenant.clone()).await?;
    ok(
        json!({"tenant_id": tenant, "queue": queue_state_json(&intents), "timestamp": state.clock.now()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let mut intent = Intent::new("acme/app:pr-1 ü", "s", "main", Utc::now());
        intent.priority = -2;
        let cursor = decode_cursor(&encode_cursor(&intent)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (cursor.priority, cursor.id.as_str()),
            (-2, "acme/app:pr-1 ü")
        );
        assert_eq!(
            cursor.created_at.timestamp_micros(),
            intent.created_at.timestamp_micros()
        );
        for bad in ["", "1", "1.2", "x.2.61", "1.2.6", "1.2.zz"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

/// The body of `POST /intents/{id}/checks`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckReport {
    name: String,
    state: ReportedState,
    head_sha: String,
    #[serde(default)]
    details: String,
}

#[derive(Deserialize, serde::Serialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ReportedState {
    Passed,
    Failed,
    Pending,
}

/// `POST /intents/{id}/checks`: CI reports a check's result for a commit of the intent.
pub(crate) async fn report_check(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CheckReport>,
) -> ApiResult {
    principal.require(Role::Operator, "checks.write")?;
    let intent = visible_intent(&state, &principal, &id).await?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 100 characters".to_owned(),
        ));
    }
    let sha = body.head_sha.trim().to_lowercase();
    if !(7..=64).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest(
            "head_sha must be a commit sha (7 to 64 hex characters)".to_owned(),
        ));
    }
    let details: String = body.details.chars().take(2_000).collect();
    let payload = json!({"name": name, "state": body.state, "head_sha": sha, "details": details, "reported_by": principal.actor});
    record_for_queue(
        &state,
        &principal,
        EventType::CheckReported,
        &intent,
        payload,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"ok": true, "intent_id": intent.id, "name": name, "state": body.state, "head_sha": sha}))).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidateRequest {
    #[serde(default)]
    skip_checks: bool,
}

struct StateClock<'a>(&'a AppState);

impl converge_core::pipeline::Clock for StateClock<'_> {
    fn now(&self) -> DateTime<Utc> {
        self.0.clock.now()
    }
}

struct StateIds<'a>(&'a AppState);

impl converge_core::pipeline::IdSource for StateIds<'_> {
    fn new_id(&self) -> String {
        self.0.new_id()
    }
}

/// `POST /intents/{id}/validate`: runs the validation pipeline against the repository now and
/// records its events; answers the decision (validated or blocked, with the evidence).
pub(crate) async fn validate_intent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    OptionalJson(request): OptionalJson<ValidateRequest>,
) -> ApiResult {
    use converge_core::pipeline::{Outcome, PipelineError, Ports, ValidationOptions, validate};
    principal.require(Role::Operator, "intents.write")?;
    if request.skip_checks {
        principal.require(Role::Admin, "admin")?;
    }
    let intent = visible_intent(&state, &principal, &id).await?;
    if state.ports.is_empty() {
        return Err(ApiError::DependencyUnavailable(
            "nothing to validate against: set CONVERGE_REPO_PATH or configure the GitHub App (CONVERGE_GITHUB_APP_ID)"
                .to_owned(),
        ));
    }
    let ports = Ports {
        scm: &state.ports,
        checks: &state.ports,
        clock: &StateClock(&state),
        ids: &StateIds(&state),
    };
    let options = ValidationOptions {
        skip_checks: request.skip_checks,
        auto_classify: flag_value(&state, converge_core::flags::RISK_AUTO_CLASSIFY).await?,
    };
    let decision = validate(&intent, ports, &state.policy, options)
        .await
        .map_err(|e| match e {
            PipelineError::Terminal { .. } => ApiError::Conflict(e.to_string()),
            PipelineError::Scm(_) | PipelineError::Checks(_) => {
                ApiError::DependencyUnavailable(e.to_string())
            }
        })?;
    enqueue(&state, decision.events.clone(), &intent).await?;
    let (verdict, kind, reason) = match &decision.outcome {
        Outcome::Validated => ("validated", None, None),
        Outcome::Blocked { kind, reason } => ("blocked", Some(*kind), Some(reason.clone())),
    };
    let sim = &decision.merge.simulation;
    ok(json!({
        "decision": verdict,
        "kind": kind,
        "reason": reason,
        "intent_id": decision.intent_id,
        "trace_id": decision.trace_id,
        "risk_level": decision.risk_level,
        "simulation": {"mergeable": sim.mergeable, "conflicts": sim.conflicts, "files_changed": sim.files_changed,
                        "head_sha": decision.merge.head_sha, "target_sha": decision.merge.target_sha},
        "checks": decision.checks,
        "risk": decision.risk,
        "policy": decision.policy,
        "risk_gate": decision.risk_gate,
    }))
}

#[derive(Deserialize)]
pub(crate) struct ReviewQuery {
    intent_id: Option<String>,
}

/// `GET /risk/review?intent_id=`: the latest risk, simulation and policy evidence of an
/// intent, the diagnostics they call for, and its recent decisions.
pub(crate) async fn risk_review(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> ApiResult {
    principal.require(Role::Viewer, "risk.read")?;
    let id = q
        .intent_id
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("intent_id required".to_owned()))?;
    let intent = visible_intent(&state, &principal, &id).await?;
    let latest = |event_type: EventType| {
        let filter = EventFilter {
            intent_id: Some(id.clone()),
            event_type: Some(event_type),
            limit: 1,
            ..EventFilter::default()
        };
        let store = state.store.clone();
        async move {
            store
                .events(&filter)
                .await
                .map(|e| e.into_iter().next().map(|s| s.event.payload))
        }
    };
    let risk_payload = latest(EventType::RiskEvaluated).await?;
    let simulation_payload = latest(EventType::SimulationCompleted).await?;
    let policy_payload = latest(EventType::PolicyEvaluated).await?;
    let risk: Option<converge_core::RiskEval> = risk_payload
        .clone()
        .and_then(|p| serde_json::from_value(p).ok());
    let simulation: Option<converge_core::Simulation> = simulation_payload
        .clone()
        .and_then(|p| serde_json::from_value(p).ok());
    let diagnostics =
        converge_core::risk::diagnostics::diagnose(risk.as_ref(), simulation.as_ref());
    let history = state
        .store
        .events(&EventFilter {
            intent_id: Some(id.clone()),
            limit: 50,
            ..EventFilter::default()
        })
        .await?;
    let history: Vec<Value> = history
        .iter()
        .map(|e| json!({"event_type": e.event.event_type, "timestamp": e.event.timestamp, "payload": e.event.payload}))
        .collect();
    ok(json!({
        "intent_id": id,
        "intent": intent,
        "risk": risk_payload,
        "simulation": simulation_payload,
        "policy": policy_payload,
        "diagnostics": diagnostics,
        "decision_history": history,
        "tenant_id": intent.tenant_id,
        "timestamp": state.clock.now(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Flags

/// The current value of a known flag: the operator's setting, else its default.
pub(crate) async fn flag_value(
    state: &AppState,
    flag: converge_core::flags::Flag,
) -> Result<bool, ApiError> {
    let settings = state.store.flags().await?;
    Ok(settings
        .iter()
        .find(|s| s.name == flag.name)
        .map_or(flag.default, |s| s.enabled))
}

/// `GET /flags`: every known flag, its value and where the value comes from.
pub(crate) async fn list_flags(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> ApiResult {
    principal.require(Role::Viewer, "flags.read")?;
    let settings = state.store.flags().await?;
    let flags: Vec<Value> = converge_core::flags::ALL
        .iter()
        .map(|flag| {
            let set = settings.iter().find(|s| s.name == flag.name);
            json!({
                "name": flag.name,
                "enabled": set.map_or(flag.default, |s| s.enabled),
                "default": flag.default,
                "description": flag.description,
                "source": if set.is_some() { "operator" } else { "default" },
                "updated_at": set.map(|s| s.updated_at),
                "updated_by": set.map(|s| s.updated_by.clone()),
            })
        })
        .collect();
    ok(json!({"flags": flags}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlagUpdate {
    enabled: bool,
}

/// `POST /flags/{name}`: sets a known flag for every instance (admin).
pub(crate) async fn set_flag(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<FlagUpdate>,
) -> ApiResult {
    principal.require(Role::Admin, "admin")?;
    if principal.tenant.is_some() {
        return Err(ApiError::Forbidden(
            "flags apply to every tenant; a tenant-bound key cannot set them".to_owned(),
        ));
    }
    let flag = converge_core::flags::find(&name)
        .ok_or_else(|| ApiError::NotFound(format!("unknown flag '{name}'")))?;
    state
        .store
        .set_flag(flag.name, body.enabled, &principal.actor)
        .await?;
    let payload = json!({"flag": flag.name, "enabled": body.enabled});
    record(
        &state,
        &principal,
        EventType::FeatureFlagChanged,
        None,
        principal.tenant.clone(),
        payload,
    )
    .await?;
    ok(json!({"name": flag.name, "enabled": body.enabled, "source": "operator"}))
}

/// `POST /intents/{id}/simulate`: the merge of the intent's head into its target as they are
/// now, simulated in the repository. Nothing is recorded.
pub(crate) async fn simulate_intent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    use converge_core::pipeline::{Scm, ScmError};
    principal.require(Role::Operator, "intents.write")?;
    let intent = visible_intent(&state, &principal, &id).await?;
    if state.ports.is_empty() {
        return Err(ApiError::DependencyUnavailable(
            "nothing to simulate against: set CONVERGE_REPO_PATH or configure the GitHub App (CONVERGE_GITHUB_APP_ID)"
                .to_owned(),
        ));
    }
    let merge = state.ports.simulate(&intent).await.map_err(|e| match e {
        ScmError::UnknownRef(name) => ApiError::Conflict(format!(
            "intent {}: unknown ref '{name}' (pushed and not deleted?)",
            intent.id
        )),
        other => ApiError::DependencyUnavailable(other.to_string()),
    })?;
    ok(json!({
        "intent_id": intent.id,
        "source": intent.source,
        "target": intent.target,
        "mergeable": merge.simulation.mergeable,
        "conflicts": merge.simulation.conflicts,
        "files_changed": merge.simulation.files_changed,
        "head_sha": merge.head_sha,
        "target_sha": merge.target_sha,
    }))
}

/// The body of `POST /queue/run`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueRun {
    target: Option<String>,
    limit: Option<u32>,
    auto_confirm: Option<bool>,
    max_retries: Option<u32>,
}

/// `POST /queue/run`: one round now over every queue key with actionable intents that the
/// caller may see (optionally one target), by this instance, with the worker's settings
/// (`limit`, `auto_confirm`, `max_retries` override them for this run). A key another worker
/// is processing is reported busy.
pub(crate) async fn queue_run(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    OptionalJson(body): OptionalJson<QueueRun>,
) -> ApiResult {
    use converge_runtime::queue_worker::{KeyOutcome, QueueProcessor, WorkerPorts};
    principal.require(Role::Operator, "queue.write")?;
    if state.ports.is_empty() {
        return Err(ApiError::DependencyUnavailable(
            "nothing to work on: set CONVERGE_REPO_PATH or configure the GitHub App (CONVERGE_GITHUB_APP_ID)"
                .to_owned(),
        ));
    }
    let mut settings = state.worker_settings.clone();
    if let Some(limit) = body.limit {
        if !(1..=1_000).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and 1000, got {limit}"
            )));
        }
        settings.batch_size = limit;
    }
    if let Some(max) = body.max_retries {
        if !(1..=100).contains(&max) {
            return Err(ApiError::BadRequest(format!(
                "max_retries must be between 1 and 100, got {max}"
            )));
        }
        settings.max_retries = Some(max);
    }
    if let Some(auto_confirm) = body.auto_confirm {
        settings.auto_confirm = auto_confirm;
    }
    let processor = QueueProcessor::with_ports(
        state.store.clone(),
        WorkerPorts {
            scm: state.ports.clone(),
            checks: state.ports.clone(),
            publisher: state.ports.clone(),
        },
        state.policy.clone(),
        settings,
        state.clock.clone(),
        format!("api-run-{}", state.new_id()),
    );
    let keys = converge_runtime::queue_worker::actionable_keys(&state.store).await?;
    let mut rounds = Vec::new();
    for key in keys {
        let visible = principal.tenant.as_deref().is_none_or(|t| t == key.tenant);
        let wanted = body.target.as_deref().is_none_or(|t| t == key.target);
        if !visible || !wanted {
            continue;
        }
        let outcome = processor
            .process_key(&key)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let (busy, intents) = match outcome {
            KeyOutcome::Busy => (true, Vec::new()),
            KeyOutcome::Processed(reports) => (
                false,
                reports
                    .iter()
                    .map(|r| json!({"intent_id": r.intent_id, "outcome": r.outcome, "detail": r.detail}))
                    .collect(),
            ),
        };
        rounds.push(
            json!({"tenant": key.tenant, "repo": key.repo, "target": key.target,
                           "busy": busy, "intents": intents}),
        );
    }
    ok(json!({"keys": rounds}))
}
