//! Review tasks (`/reviews`): request, assign, complete, cancel, escalate, list, summary. An
//! open task, or a rejection no later approval answered, holds its intent in the queue.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use converge_core::review::{Resolution, ReviewStatus, ReviewTask, Trigger};
use converge_runtime::reviews::{self, ReviewCommandError};
use converge_store::{ReviewFilter, StoreError, StoredReview};
use serde::Deserialize;

use super::*;
use crate::AppState;
use crate::api;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};

/// Default and largest page of review tasks.
const REVIEWS_DEFAULT: u32 = 50;
const REVIEWS_MAX: u32 = 500;

const REVIEW_ID: PathParam = ("id", "Review task id (`rev-…`).");

/// `GET /reviews`'s filters.
#[derive(Deserialize, Default, schemars::JsonSchema)]
pub(super) struct ReviewsQuery {
    /// Tenant to read (ignored for tenant-bound keys, which always read their own).
    tenant_id: Option<String>,
    /// Only this intent's.
    intent_id: Option<String>,
    /// Only in this status.
    #[serde(default)]
    #[schemars(schema_with = "status_schema")]
    status: Option<String>,
    /// Only this reviewer's.
    reviewer: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<u32>,
}

fn status_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = ReviewStatus::ALL.iter().map(|s| s.as_str()).collect();
    schemars::json_schema!({"type": "string", "enum": names})
}

/// `POST /reviews`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReviewRequest {
    /// The intent to review.
    #[schemars(length(min = 1), extend("pattern" = NOT_BLANK))]
    intent_id: String,
    /// Why: policy (default, as the original), conflict, manual or coherence.
    #[serde(default)]
    #[schemars(schema_with = "trigger_schema")]
    trigger: Option<String>,
    /// Assigned at once to this reviewer.
    #[schemars(length(min = 1, max = 200), extend("pattern" = NOT_BLANK))]
    reviewer: Option<String>,
    /// Its priority (default: the intent's).
    #[schemars(range(min = 1, max = 10))]
    #[serde(default, deserialize_with = "crate::extract::integral")]
    priority: Option<i64>,
}

/// `POST /reviews/{id}/assign`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignRequest {
    /// Who reviews it.
    #[schemars(length(min = 1, max = 200), extend("pattern" = NOT_BLANK))]
    reviewer: String,
}

/// `POST /reviews/{id}/complete`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CompleteRequest {
    /// How it ended: approved (default, as the original), rejected or deferred.
    #[serde(default)]
    #[schemars(schema_with = "resolution_schema")]
    resolution: Option<String>,
    /// The reviewer's notes.
    #[serde(default)]
    #[schemars(length(max = 5000))]
    notes: String,
}

// Both may be null in a body, which means the default.
fn trigger_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": ["string", "null"], "enum": ["policy", "conflict", "manual", "coherence", null]})
}

fn resolution_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": ["string", "null"], "enum": ["approved", "rejected", "deferred", null]})
}

/// A name of a serde enum (snake case), or a 400 naming the field.
fn named<T: serde::de::DeserializeOwned>(
    field: &str,
    text: Option<String>,
) -> Result<Option<T>, ApiError> {
    text.map(|t| {
        serde_json::from_value(serde_json::Value::String(t.clone()))
            .map_err(|_| ApiError::BadRequest(format!("{field}: unknown value '{t}'")))
    })
    .transpose()
}

/// `POST /reviews/{id}/cancel` and `/escalate`: why.
#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonRequest {
    /// Why (kept as the task's notes).
    #[serde(default)]
    #[schemars(length(max = 5000))]
    reason: Option<String>,
}

/// Refuses a text longer than the document allows (`max` characters).
fn at_most(field: &str, text: &str, max: usize) -> Result<(), ApiError> {
    let count = text.chars().count();
    if count > max {
        return Err(ApiError::BadRequest(format!(
            "{field}: at most {max} characters, got {count}"
        )));
    }
    Ok(())
}

fn refused(error: ReviewCommandError) -> ApiError {
    match error {
        ReviewCommandError::Refused(e) => ApiError::Conflict(e.to_string()),
        ReviewCommandError::Store(StoreError::Conflict(_)) => ApiError::Conflict(
            "the review task changed since it was read; nothing was written, send the request again"
                .to_owned(),
        ),
        ReviewCommandError::Store(e) => ApiError::from(e),
    }
}

/// A task the caller may see, with its version, or 404.
async fn visible_task(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<StoredReview, ApiError> {
    match state.services.store.review_task(id).await? {
        Some(stored) if principal.can_see(stored.task.tenant_id.as_deref()) => Ok(stored),
        _ => Err(ApiError::NotFound(format!("review task '{id}' not found"))),
    }
}

/// `GET /reviews`.
pub(super) async fn list_reviews(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReviewsQuery>,
) -> ApiResult {
    let status = q
        .status
        .map(|s| {
            s.parse::<ReviewStatus>()
                .map_err(|e| ApiError::BadRequest(format!("status: {e}")))
        })
        .transpose()?;
    let filter = ReviewFilter {
        tenant_id: principal.read_tenant(q.tenant_id),
        intent_id: q.intent_id,
        status,
        reviewer: q.reviewer,
        open_only: false,
        limit: page_limit(q.limit, REVIEWS_DEFAULT, REVIEWS_MAX)?,
    };
    let reviews = state.services.store.review_tasks(&filter).await?;
    typed(api::ReviewList { reviews })
}

/// `GET /reviews/summary`.
pub(super) async fn summary(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult {
    let now = state.services.clock.now();
    let tenant = principal.read_tenant(q.tenant_id);
    let counts = state
        .services
        .store
        .review_counts(tenant.as_deref(), now)
        .await?;
    typed(api::ReviewSummary {
        by_reviewer: counts.by_reviewer,
        total: counts.by_status.values().sum(),
        by_status: counts.by_status,
        sla_breached: counts.overdue,
        timestamp: now,
    })
}

/// `POST /reviews`: 201 with the task.
pub(super) async fn request_review(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<ReviewRequest>,
) -> ApiResult {
    let intent = visible_intent(&state, &principal, &body.intent_id).await?;
    if intent.status.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "intent '{}' is {}: there is nothing left to review",
            intent.id, intent.status
        )));
    }
    if let Some(priority) = body.priority
        && !(1..=10).contains(&priority)
    {
        return Err(ApiError::BadRequest(format!(
            "priority must be between 1 and 10, got {priority}"
        )));
    }
    let trigger: Trigger = named("trigger", body.trigger)?.unwrap_or_default();
    if let Some(reviewer) = &body.reviewer {
        at_most("reviewer", reviewer, 200)?;
        if reviewer.trim().is_empty() {
            return Err(ApiError::BadRequest(
                "reviewer: must not be blank".to_owned(),
            ));
        }
    }
    let reviewer = body.reviewer.map(|r| r.trim().to_owned());
    let task = reviews::request(
        &state.services,
        &principal.actor,
        &intent,
        trigger,
        reviewer,
        body.priority,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(task)).into_response())
}

/// Applies a change to a visible task and answers it.
async fn change(
    state: &AppState,
    principal: &Principal,
    id: &str,
    apply: impl FnOnce(
        &mut ReviewTask,
        chrono::DateTime<chrono::Utc>,
    ) -> Result<
        converge_core::review::ReviewChange,
        converge_core::review::ReviewError,
    >,
) -> ApiResult {
    let stored = visible_task(state, principal, id).await?;
    let now = state.services.clock.now();
    let task = reviews::change(&state.services, &principal.actor, stored, |task| {
        apply(task, now)
    })
    .await
    .map_err(refused)?;
    typed(task)
}

/// `POST /reviews/{id}/assign`.
pub(super) async fn assign(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AssignRequest>,
) -> ApiResult {
    at_most("reviewer", &body.reviewer, 200)?;
    let reviewer = body.reviewer.trim().to_owned();
    if reviewer.is_empty() {
        return Err(ApiError::BadRequest(
            "reviewer: must not be blank".to_owned(),
        ));
    }
    change(&state, &principal, &id, |task, now| {
        task.assign(&reviewer, now)
    })
    .await
}

/// `POST /reviews/{id}/complete`.
pub(super) async fn complete(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CompleteRequest>,
) -> ApiResult {
    let resolution: Resolution =
        named("resolution", body.resolution)?.unwrap_or(Resolution::Approved);
    at_most("notes", &body.notes, 5000)?;
    change(&state, &principal, &id, |task, now| {
        task.complete(resolution, &body.notes, now)
    })
    .await
}

/// `POST /reviews/{id}/cancel`.
pub(super) async fn cancel(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<ReasonRequest>,
) -> ApiResult {
    let reason = body.reason.unwrap_or_default();
    at_most("reason", &reason, 5000)?;
    change(&state, &principal, &id, |task, now| {
        task.cancel(&reason, now)
    })
    .await
}

/// `POST /reviews/{id}/escalate`.
pub(super) async fn escalate(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<ReasonRequest>,
) -> ApiResult {
    let reason = body.reason.unwrap_or_else(|| "manual".to_owned());
    at_most("reason", &reason, 5000)?;
    change(&state, &principal, &id, |task, now| {
        task.escalate(&reason, now)
    })
    .await
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    let write =
        |path: &'static str, summary: &'static str, body: Option<BodySpec>, handler| Route {
            method: "post",
            path,
            summary,
            role: Role::Operator,
            scope: "reviews.write",
            params: &[REVIEW_ID],
            query: None,
            body,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler,
        };
    vec![
        Route {
            method: "get",
            path: "/reviews",
            summary: "Review tasks, newest first, filtered by intent, status or reviewer.",
            role: Role::Viewer,
            scope: "reviews.read",
            params: &[],
            query: Some(schema_of::<ReviewsQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(list_reviews),
        },
        Route {
            method: "get",
            path: "/reviews/summary",
            summary: "Review tasks counted by status and reviewer, and how many are past their SLA.",
            role: Role::Viewer,
            scope: "reviews.read",
            params: &[],
            query: Some(schema_of::<TenantQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(summary),
        },
        Route {
            method: "post",
            path: "/reviews",
            summary: "Request a review of an intent (its SLA from its risk level: low 72 h, medium 48, high 24, critical 8); the queue holds the intent until it is completed.",
            role: Role::Operator,
            scope: "reviews.write",
            params: &[],
            query: None,
            body: Some(BodySpec::of::<ReviewRequest>(
                "The intent, and optionally the reviewer, trigger and priority.",
            )),
            success: 201,
            conditional: false,
            answer: Answer::Json,
            handler: post(request_review),
        },
        write(
            "/reviews/{id}/assign",
            "Assign (or reassign) an open review task.",
            Some(BodySpec::of::<AssignRequest>("The reviewer.")),
            post(assign),
        ),
        write(
            "/reviews/{id}/complete",
            "Complete an open review task: `approved` frees its intent, `rejected` holds it until a later review approves.",
            Some(BodySpec::of::<CompleteRequest>("The resolution and notes.")),
            post(complete),
        ),
        write(
            "/reviews/{id}/cancel",
            "Cancel an open review task.",
            Some(BodySpec::optional::<ReasonRequest>("Why; or no body.")),
            post(cancel),
        ),
        write(
            "/reviews/{id}/escalate",
            "Escalate an open review task (the sweep does this at its SLA deadline).",
            Some(BodySpec::optional::<ReasonRequest>("Why; or no body.")),
            post(escalate),
        ),
    ]
}
