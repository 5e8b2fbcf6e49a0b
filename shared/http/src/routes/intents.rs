//! Intents: list, read, create, report checks, validate and simulate (`/intents…`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chrono::DateTime;
use converge_core::{EventType, Intent, RiskLevel};
use converge_store::{EventFilter, Expected, IntentCursor, IntentFilter, StoreError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::*;
use crate::AppState;
use crate::api;
use crate::auth::{Principal, Role};
use crate::conditional::{Serialised, json_or_not_modified};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};

// Intents
/// `GET /intents`'s filters and page.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct IntentListQuery {
    #[serde(default)]
    #[schemars(schema_with = "status_list_schema")]
    status: Option<String>,
    /// Tenant to read (ignored for tenant-bound keys, which always read their own).
    tenant_id: Option<String>,
    /// Only intents into this target branch.
    target: Option<String>,
    /// Page size, 1 to 500 (default 100).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[schemars(regex(
        pattern = r"^-?[0-9]{1,18}\.-?[0-9]{1,16}\.(?:0[1-9a-fA-F]|[1-9a-fA-F][0-9a-fA-F])*$"
    ))]
    cursor: Option<String>,
}

/// `?limit=`: a page of one intent's events.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct PageQuery {
    /// Page size, 1 to 1,000 (default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<u32>,
}

/// A page of intents.
#[derive(serde::Serialize)]
pub(super) struct IntentPage<'a> {
    intents: &'a [Intent],
    next_cursor: Option<String>,
}

pub(super) fn encode_cursor(intent: &Intent) -> String {
    let id_hex: String = intent.id.bytes().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}.{}.{id_hex}",
        intent.priority,
        intent.created_at.timestamp_micros()
    )
}

/// The position a cursor names. Every string of the documented form (priority, microseconds,
/// the id's bytes in hex without a NUL) is a position, even one no intent holds; the id's bytes
/// need not be UTF-8 (they are read leniently), so no well-formed cursor is refused.
pub(super) fn decode_cursor(cursor: &str) -> Result<IntentCursor, ApiError> {
    let bad = || ApiError::BadRequest("cursor is not one this API returned".to_owned());
    let digits = |part: &str, most: usize| {
        let unsigned = part.strip_prefix('-').unwrap_or(part);
        (1..=most).contains(&unsigned.len()) && unsigned.bytes().all(|b| b.is_ascii_digit())
    };
    let mut parts = cursor.splitn(3, '.');
    let (Some(priority), Some(micros), Some(hex)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !digits(priority, 18) || !digits(micros, 16) || hex.len() % 2 != 0 {
        return Err(bad());
    }
    let priority = priority.parse().map_err(|_| bad())?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    let bytes = bytes.filter(|b| !b.contains(&0)).ok_or_else(bad)?;
    let id = String::from_utf8_lossy(&bytes).into_owned();
    let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok(IntentCursor {
        priority,
        created_at,
        id,
    })
}

/// `GET /intents`: queue order, filters, cursor pagination.
pub(super) async fn list_intents(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<IntentListQuery>,
) -> ApiResult {
    let limit = page_limit(q.limit, INTENTS_PAGE_DEFAULT, INTENTS_PAGE_MAX)?;
    let filter = IntentFilter {
        statuses: parse_statuses(q.status)?,
        tenant_id: principal.read_tenant(q.tenant_id),
        target: q.target,
        after: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: limit + 1,
    };
    // Read before the page: a page kept at this version is the page (see `PageCache`).
    let store = &state.services.store;
    let scope = filter.tenant_id.as_deref();
    let version = state
        .version_reads
        .current(scope, || store.intents_version(scope))
        .await?;
    let key = format!(
        "{:?}|{:?}|{:?}|{:?}|{}",
        filter.tenant_id, filter.statuses, filter.target, q.cursor, limit
    );
    if let Some(page) = state.page_cache.get(&key, version) {
        state.metrics.count_kept_page(true);
        return page.answer(&headers);
    }
    state.metrics.count_kept_page(false);
    let mut intents = store.intents(&filter).await?;
    let next_cursor = if intents.len() > limit as usize {
        intents.truncate(limit as usize);
        intents.last().map(encode_cursor)
    } else {
        None
    };
    // Serialised straight from the intents (no intermediate JSON tree): this is the hot path.
    let page = Serialised::of(&IntentPage {
        intents: &intents,
        next_cursor,
    })?;
    state.page_cache.put(key, version, page.clone());
    page.answer(&headers)
}

/// `GET /intents/{id}`: the intent and its commit links.
pub(super) async fn get_intent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    let intent = visible_intent(&state, &principal, &id).await?;
    let commit_links = state.services.store.commit_links(&id).await?;
    json_or_not_modified(
        &headers,
        &api::IntentDetail {
            intent,
            commit_links,
        },
    )
}

/// `GET /intents/{id}/events`: newest first.
pub(super) async fn intent_events(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult {
    visible_intent(&state, &principal, &id).await?;
    let limit = page_limit(q.limit, EVENTS_PAGE_DEFAULT, EVENTS_PAGE_MAX)?;
    let events = state
        .services
        .store
        .events(&EventFilter {
            intent_id: Some(id),
            limit,
            ..EventFilter::default()
        })
        .await?;
    typed(api::IntentEvents {
        events: events.iter().map(api::EventRecord::from).collect(),
    })
}

/// The body of `POST /intents`: `source`, or else `technical.source_ref`, names the branch.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    {"required": ["source"], "properties": {"source": {"type": "string", "pattern": NOT_BLANK}}},
    {"required": ["technical"], "properties": {"technical": {
        "type": "object", "required": ["source_ref"],
        "properties": {"source_ref": {"type": "string", "pattern": NOT_BLANK}}}}},
]))]
pub(super) struct IntentCreate {
    /// The intent's id (made up when left out); at most 512 characters.
    #[schemars(length(max = 512))]
    id: Option<String>,
    /// Another name for `id`.
    #[schemars(length(max = 512))]
    intent_id: Option<String>,
    /// The branch to merge (or `technical.source_ref`).
    source: Option<String>,
    /// The branch to merge into (default: the policy's default target).
    target: Option<String>,
    /// Declared risk level (default medium).
    #[serde(default)]
    #[schemars(schema_with = "risk_level_schema")]
    risk_level: Option<RiskLevel>,
    /// Queue priority, lower first (default 3).
    #[serde(default, deserialize_with = "crate::extract::integral")]
    priority: Option<i64>,
    /// Free-form description.
    #[serde(default)]
    semantic: Map<String, Value>,
    /// Free-form technical data (`repo`, `source_ref`, `target_ref`, `scope_hint`, …).
    #[serde(default)]
    technical: Map<String, Value>,
    /// Checks named at creation (informational).
    #[serde(default)]
    checks_required: Vec<String>,
    /// Intents that must be merged first.
    #[serde(default)]
    dependencies: Vec<String>,
    /// The tenant (a tenant's key may name only its own).
    tenant_id: Option<String>,
    /// A plan grouping related intents.
    plan_id: Option<String>,
    /// `human`, `agent`, `integration`, `api` (default).
    origin_type: Option<String>,
}

/// A risk level by name, or null.
pub(super) fn risk_level_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<Value> = RiskLevel::ALL
        .iter()
        .map(|l| Value::from(l.as_str()))
        .chain([Value::Null])
        .collect();
    schemars::json_schema!({"enum": names})
}

/// `POST /intents`: creates a READY intent (201); an existing id is a conflict.
pub(super) async fn create_intent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<IntentCreate>,
) -> ApiResult {
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
        .unwrap_or_else(|| state.services.policy.queue.default_target.clone());
    let id = body.id.or(body.intent_id);
    if id.as_ref().is_some_and(|id| id.chars().count() > 512) {
        return Err(ApiError::BadRequest(
            "id must be at most 512 characters".to_owned(),
        ));
    }
    let id = text(id).unwrap_or_else(|| format!("api-{}", state.services.new_id()));
    let tenant = principal.write_tenant(body.tenant_id)?;
    let mut intent = Intent::new(&id, source, target, state.services.clock.now());
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
    // Intake control first: a refusal is recorded, and nothing else is written.
    let (decision, intake_event) =
        converge_runtime::intake_control::admit(&state.services, &principal.actor, &intent).await?;
    if decision.verdict != converge_core::intake_mode::IntakeVerdict::Accepted {
        state
            .services
            .store
            .commit(&converge_runtime::intake_control::refusal_commit(
                intake_event,
            ))
            .await?;
        return Err(ApiError::IntakeRejected(format!(
            "{}; the intent was not created",
            decision.reason
        )));
    }
    let mut events = api_events(
        &state,
        &principal,
        &intent,
        vec![(EventType::IntentCreated, payload)],
    );
    events.push(intake_event);
    // The write commits only if no intent holds the id when it runs, so of concurrent creates
    // of one id exactly one succeeds. The same answer whichever tenant holds the id (ids are
    // one namespace).
    converge_runtime::commands::enqueue(
        &state.services,
        events,
        &intent,
        Some(Expected::absent(&id)),
    )
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Stale(_) => ApiError::Conflict(format!("intent id '{id}' is already taken")),
        other => other,
    })?;
    Ok((
        StatusCode::CREATED,
        Json(api::IntentCreated {
            intent_id: id,
            ok: true,
            status: intent.status,
        }),
    )
        .into_response())
}

// Validation
/// The body of `POST /intents/{id}/checks`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckReport {
    /// The check's name: 1 to 100 characters, not all blank.
    #[schemars(length(min = 1, max = 100), extend("pattern" = NOT_BLANK))]
    name: String,
    /// Its result.
    state: api::ReportedState,
    /// The commit it ran on: 7 to 64 hexadecimal digits.
    #[schemars(extend("pattern" = SHA_PATTERN))]
    head_sha: String,
    /// Free text (kept to 2,000 characters).
    #[serde(default)]
    details: String,
}

/// A commit sha as `report_check` reads it: 7 to 64 hex digits, surrounding blanks trimmed.
const SHA_PATTERN: &str = concat!(
    "^[",
    whitespace_class!(),
    "]*[0-9a-fA-F]{7,64}[",
    whitespace_class!(),
    "]*$"
);

/// `POST /intents/{id}/checks`: CI reports a check's result for a commit of the intent.
pub(super) async fn report_check(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CheckReport>,
) -> ApiResult {
    let intent = visible_intent(&state, &principal, &id).await?;
    let name = body.name.trim();
    if name.is_empty() || body.name.chars().count() > 100 {
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
    // Decided from nothing that can change: an intent's existence and tenant are fixed, and
    // the report names the commit it is about. So it expects no version, and a report never
    // fails because the worker moved the intent meanwhile.
    record_for_queue(
        &state,
        &principal,
        EventType::CheckReported,
        &intent,
        payload,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(api::CheckRecorded {
            head_sha: sha,
            intent_id: intent.id,
            name: name.to_owned(),
            ok: true,
            state: body.state,
        }),
    )
        .into_response())
}

/// The body of `POST /intents/{id}/command`: the commands of pull request comments
/// (`core::comment_command`), for operators.
#[derive(Deserialize, schemars::JsonSchema)]
// Struct variants, even empty: serde refuses unknown fields only in those.
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum CommandRequest {
    /// Put the intent (back) in the queue: a rejected one comes back as READY.
    Queue {},
    /// Take it out of the queue (REJECTED, with who asked).
    Dequeue {},
    /// Set its queue priority.
    Priority {
        /// 0 to 9, lower first.
        // Read as JSON Schema's `integer` is (3.0 is 3); required, never null.
        #[serde(deserialize_with = "crate::extract::integral")]
        #[schemars(with = "u8", range(min = 0, max = 9))]
        priority: Option<u8>,
    },
    /// Start its retries again (and bring a rejected one back).
    Retry {},
    /// Where it stands (nothing is recorded).
    Status {},
}

/// `POST /intents/{id}/command`: a queue command on one intent, as a comment would give it,
/// by the caller; decided under the intent's lock, and answered with the intent as it left it.
pub(super) async fn command_intent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CommandRequest>,
) -> ApiResult {
    use converge_core::comment_command::{self, Command, Effect};
    let command = match body {
        CommandRequest::Queue {} => Command::Queue,
        CommandRequest::Dequeue {} => Command::Dequeue,
        CommandRequest::Priority {
            priority: Some(priority),
        } if priority <= 9 => Command::Priority(i64::from(priority)),
        CommandRequest::Priority { .. } => {
            return Err(ApiError::BadRequest(
                "priority must be from 0 to 9".to_owned(),
            ));
        }
        CommandRequest::Retry {} => Command::Retry,
        CommandRequest::Status {} => Command::Status,
    };
    let decided = decide_about_intent(&state, &principal, &id, |intent| {
        Ok(
            match comment_command::effect(intent, command, &principal.actor) {
                Effect::Nothing(why) if command == Command::Status => (vec![], ("answered", why)),
                Effect::Nothing(why) => (vec![], ("unchanged", why)),
                Effect::Events(changes) => {
                    (changes, ("applied", format!("{} done", command.name())))
                }
            },
        )
    })
    .await?;
    let ((result, answer), after) = (decided.answer, decided.intent);
    let done = api::CommandDone {
        intent_id: after.id.clone(),
        command: command.name().to_owned(),
        result: result.to_owned(),
        answer,
        status: after.status,
        retries: after.retries,
        priority: after.priority,
    };
    typed(done)
}

/// The body of `POST /intents/{id}/validate`.
#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ValidateRequest {
    /// Treat required checks as passed (admin only).
    #[serde(default)]
    skip_checks: bool,
}

/// `POST /intents/{id}/validate`: runs the validation pipeline against the repository now and
/// records its events; answers the decision (validated or blocked, with the evidence).
pub(super) async fn validate_intent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    OptionalJson(request): OptionalJson<ValidateRequest>,
) -> ApiResult {
    use converge_core::pipeline::{Outcome, PipelineError};
    use converge_runtime::commands::{ValidateError, validate_now};
    if request.skip_checks {
        SKIP_CHECKS.check(&principal)?;
    }
    let intent = visible_stored_intent(&state, &principal, &id).await?;
    let decision = validate_now(&state.services, &intent, request.skip_checks)
        .await
        .map_err(|e| match e {
            ValidateError::NoPorts => ApiError::NotConfigured(e.to_string()),
            ValidateError::Pipeline(PipelineError::Terminal { .. }) => {
                ApiError::Conflict(e.to_string())
            }
            ValidateError::Pipeline(PipelineError::Scm(_) | PipelineError::Checks(_)) => {
                ApiError::DependencyUnavailable(e.to_string())
            }
            ValidateError::Store(StoreError::Stale { .. }) => ApiError::Stale(format!(
                "intent {id} changed while it was being validated; nothing was recorded, validate again"
            )),
            ValidateError::Store(e) => e.into(),
        })?;
    let (verdict, kind, reason) = match &decision.outcome {
        Outcome::Validated => (api::Verdict::Validated, None, None),
        Outcome::Blocked { kind, reason } => {
            (api::Verdict::Blocked, Some(*kind), Some(reason.clone()))
        }
    };
    let merge = decision.merge;
    typed(api::ValidateAnswer {
        checks: decision.checks,
        decision: verdict,
        intent_id: decision.intent_id,
        kind,
        policy: decision.policy,
        reason,
        risk: decision.risk,
        risk_gate: decision.risk_gate,
        risk_level: decision.risk_level,
        simulation: api::SimulationPinned {
            conflicts: merge.simulation.conflicts,
            files_changed: merge.simulation.files_changed,
            head_sha: merge.head_sha,
            mergeable: merge.simulation.mergeable,
            target_sha: merge.target_sha,
        },
        trace_id: decision.trace_id,
    })
}

/// `POST /intents/{id}/simulate`: the merge of the intent's head into its target as they are
/// now, simulated in the repository. Nothing is recorded.
pub(super) async fn simulate_intent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    use converge_core::pipeline::{Scm, ScmError};
    let intent = visible_intent(&state, &principal, &id).await?;
    if state.services.ports.is_empty() {
        return Err(ApiError::NotConfigured(
            "nothing to simulate against: set CONVERGE_REPO_PATH or configure the GitHub App (CONVERGE_GITHUB_APP_ID)"
                .to_owned(),
        ));
    }
    let merge = state
        .services
        .ports
        .simulate(&intent)
        .await
        .map_err(|e| match e {
            ScmError::UnknownRef(name) => ApiError::Conflict(format!(
                "intent {}: unknown ref '{name}' (pushed and not deleted?)",
                intent.id
            )),
            other => ApiError::DependencyUnavailable(other.to_string()),
        })?;
    typed(api::Simulated {
        conflicts: merge.simulation.conflicts,
        files_changed: merge.simulation.files_changed,
        head_sha: merge.head_sha,
        intent_id: intent.id,
        mergeable: merge.simulation.mergeable,
        source: intent.source,
        target: intent.target,
        target_sha: merge.target_sha,
    })
}

/// What `skip_checks` on a validation needs beyond the route's own access: declared here,
/// beside the route, because only the body says whether it applies.
const SKIP_CHECKS: Access = Access {
    role: Role::Admin,
    scope: "admin",
};

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "post",
            path: "/intents/{id}/validate",
            summary: "Validate the intent against the repository now: merge simulation, required checks (as reported by CI), risk, policy gates, risk gate. Records the events; answers the decision.",
            role: Role::Operator,
            scope: "intents.write",
            params: &[ID],
            query: None,
            body: Some(BodySpec::optional::<ValidateRequest>(
                "`skip_checks` (admin only); or no body.",
            )),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(validate_intent),
        },
        Route {
            method: "post",
            path: "/intents/{id}/command",
            summary: "A queue command on the intent, as a pull request comment gives it (queue, dequeue, priority, retry, status); recorded at the version read.",
            role: Role::Operator,
            scope: "intents.write",
            params: &[ID],
            query: None,
            body: Some(BodySpec::of::<CommandRequest>(
                "`{\"command\": \"queue\"}`, …; `priority` takes `\"priority\": 0-9`.",
            )),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(command_intent),
        },
        Route {
            method: "post",
            path: "/intents/{id}/simulate",
            summary: "Simulate the merge of the intent's head into its target as they are now. Nothing is recorded.",
            role: Role::Operator,
            scope: "intents.write",
            params: &[ID],
            query: None,
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(simulate_intent),
        },
        Route {
            method: "post",
            path: "/intents/{id}/checks",
            summary: "Report a check's result for a commit of the intent (what validation reads).",
            role: Role::Operator,
            scope: "checks.write",
            params: &[ID],
            query: None,
            body: Some(BodySpec::of::<CheckReport>(
                "A check's result for a commit of the intent.",
            )),
            success: 201,
            conditional: false,
            answer: Answer::Json,
            handler: post(report_check),
        },
        Route {
            method: "get",
            path: "/intents",
            summary: "List intents in queue order (priority, age); `next_cursor` pages on.",
            role: Role::Viewer,
            scope: "intents.read",
            params: &[],
            query: Some(schema_of::<IntentListQuery>),
            body: None,
            success: 200,
            conditional: true,
            answer: Answer::Json,
            handler: get(list_intents),
        },
        Route {
            method: "post",
            path: "/intents",
            summary: "Create a READY intent; an existing id is a conflict.",
            role: Role::Operator,
            scope: "intents.write",
            params: &[],
            query: None,
            body: Some(BodySpec::of::<IntentCreate>(
                "The intent: `source` (or `technical.source_ref`) is required; a tenant-bound key may name only its own tenant.",
            )),
            success: 201,
            conditional: false,
            answer: Answer::Json,
            handler: post(create_intent),
        },
        Route {
            method: "get",
            path: "/intents/{id}",
            summary: "One intent with its commit links.",
            role: Role::Viewer,
            scope: "intents.read",
            params: &[ID],
            query: None,
            body: None,
            success: 200,
            conditional: true,
            answer: Answer::Json,
            handler: get(get_intent),
        },
        Route {
            method: "get",
            path: "/intents/{id}/events",
            summary: "Events of one intent, newest first.",
            role: Role::Viewer,
            scope: "intents.read",
            params: &[ID],
            query: Some(schema_of::<PageQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(intent_events),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let mut intent = Intent::new("acme/app:pr-1 ü", "s", "main", chrono::Utc::now());
        intent.priority = -2;
        let cursor = decode_cursor(&encode_cursor(&intent)).unwrap();
        assert_eq!(
            (cursor.priority, cursor.id.as_str()),
            (-2, "acme/app:pr-1 ü")
        );
        assert_eq!(
            cursor.created_at.timestamp_micros(),
            intent.created_at.timestamp_micros()
        );
        for bad in [
            "", "1", "1.2", "x.2.61", "1.2.6", "1.2.zz", "1.2.6100", "+1.2.61",
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
        // Any cursor of the documented form is a position, even one no intent holds.
        let odd = decode_cursor("-7.0.ff41").unwrap();
        assert_eq!((odd.priority, odd.id.as_str()), (-7, "\u{fffd}A"));
        let pattern = regex::Regex::new(
            schema_of::<IntentListQuery>()["properties"]["cursor"]["pattern"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        for cursor in [
            "-7.0.ff41",
            "3.1700000000000000.61",
            &encode_cursor(&intent),
        ] {
            assert!(pattern.is_match(cursor), "{cursor}");
            assert!(decode_cursor(cursor).is_ok(), "{cursor}");
        }
    }
}
