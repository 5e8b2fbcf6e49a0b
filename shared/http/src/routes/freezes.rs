//! Freezes of the queue (`/queue/freezes`, `/queue/resume`): operators hold merges of a
//! tenant's repositories and targets, for a span, every week, or until lifted (a pause).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use converge_core::freeze::{Freeze, WEEK_TIME_PATTERN, WeekTime, Window};
use serde::Deserialize;

use super::*;
use crate::AppState;
use crate::api;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};

/// Default and largest page of freezes.
const FREEZES_DEFAULT: u32 = 100;
const FREEZES_MAX: u32 = 500;

/// `GET /queue/freezes`'s query.
#[derive(Deserialize, Default, schemars::JsonSchema)]
pub(super) struct FreezesQuery {
    /// Tenant to read (ignored for tenant-bound keys, which always read their own).
    tenant_id: Option<String>,
    /// Also lifted and ended freezes (default: only those that hold or will).
    #[serde(default)]
    include_ended: Option<bool>,
    /// Page size, 1 to 500 (default 100).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<u32>,
}

/// When a freeze holds; left out of a request, until it is lifted (a pause).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum WindowRequest {
    /// From `start` (default: now) for `minutes` (default: until lifted).
    Span {
        /// When it starts holding (RFC 3339).
        #[schemars(extend("format" = "date-time"))]
        start: Option<String>,
        /// How long it holds, 1 minute to 10 years.
        #[schemars(range(min = 1, max = 5_256_000))]
        #[serde(default, deserialize_with = "crate::extract::integral")]
        minutes: Option<u32>,
    },
    /// Every week from one day and UTC time to another (`Fri 16:00` to `Mon 08:00` wraps past
    /// Sunday; the same moment twice is the whole week).
    Weekly {
        /// Day and UTC time it starts each week.
        #[schemars(extend("pattern" = WEEK_TIME_PATTERN))]
        from: String,
        /// Day and UTC time it ends.
        #[schemars(extend("pattern" = WEEK_TIME_PATTERN))]
        to: String,
    },
}

/// `POST /queue/freezes`: what to freeze, why, and when.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FreezeRequest {
    /// Why (shown on the held pull requests' check runs and the dashboard).
    #[schemars(length(min = 1, max = 500), extend("pattern" = NOT_BLANK))]
    reason: String,
    /// Only this repository (`owner/name`; empty: local intents); left out: every repository.
    repo: Option<String>,
    /// Only this target branch; left out: every target.
    #[schemars(extend("pattern" = NOT_BLANK))]
    target: Option<String>,
    /// When it holds (left out: from now until lifted).
    window: Option<WindowRequest>,
    /// Tenant frozen (a tenant-bound key may only name its own).
    tenant_id: Option<String>,
}

/// `POST /queue/resume`: the scope whose freezes to lift.
#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeRequest {
    /// The repository the freezes name (left out: those over every repository).
    repo: Option<String>,
    /// The target they name (left out: those over every target).
    target: Option<String>,
    /// Tenant (a tenant-bound key may only name its own).
    tenant_id: Option<String>,
}

const FREEZE_ID: PathParam = ("id", "Freeze id (`frz-…`).");

/// `GET /queue/freezes`.
pub(super) async fn list_freezes(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<FreezesQuery>,
) -> ApiResult {
    let limit = page_limit(q.limit, FREEZES_DEFAULT, FREEZES_MAX)?;
    let tenant = principal.read_tenant(q.tenant_id);
    let include_ended = q.include_ended.unwrap_or(false);
    let now = state.services.clock.now();
    let freezes = state
        .services
        .store
        .freezes(tenant.as_deref(), include_ended, limit)
        .await?
        .into_iter()
        .filter(|f| include_ended || f.is_live(now))
        .map(|f| api::FreezeRecord::at(f, now))
        .collect();
    typed(api::FreezeList { freezes })
}

/// `POST /queue/freezes`: 201 with the freeze.
pub(super) async fn create_freeze(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<FreezeRequest>,
) -> ApiResult {
    let now = state.services.clock.now();
    let window = match body.window {
        None => Window::UntilLifted,
        Some(WindowRequest::Span { start, minutes }) => {
            if let Some(m) = minutes
                && !(1..=5_256_000).contains(&m)
            {
                return Err(ApiError::BadRequest(format!(
                    "window.minutes must be between 1 and 5256000 (ten years), got {m}"
                )));
            }
            let start = parse_time("window.start", start)?.map_or(now, converge_store::micros);
            let end = match minutes {
                None => None,
                Some(m) => Some(
                    start
                        .checked_add_signed(chrono::Duration::minutes(i64::from(m)))
                        .ok_or_else(|| {
                            ApiError::BadRequest("window: ends beyond the calendar".to_owned())
                        })?,
                ),
            };
            Window::Span { start, end }
        }
        Some(WindowRequest::Weekly { from, to }) => {
            let parse = |field: &str, text: &str| {
                text.parse::<WeekTime>()
                    .map_err(|e| ApiError::BadRequest(format!("window.{field}: {e}")))
            };
            Window::Weekly {
                from: parse("from", &from)?,
                to: parse("to", &to)?,
            }
        }
    };
    // The document bounds the reason as sent; the freeze keeps it trimmed.
    let sent = body.reason.chars().count();
    if sent > converge_core::freeze::MAX_REASON_CHARS {
        return Err(ApiError::BadRequest(format!(
            "reason: at most {} characters, got {sent}",
            converge_core::freeze::MAX_REASON_CHARS
        )));
    }
    let freeze = Freeze {
        id: format!("frz-{}", state.services.new_id()),
        tenant_id: principal.write_tenant(body.tenant_id)?,
        repo: body.repo,
        target: body.target,
        reason: body.reason.trim().to_owned(),
        window,
        created_by: principal.actor.clone(),
        created_at: now,
        lifted_at: None,
        lifted_by: None,
    };
    freeze
        .check()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    converge_runtime::commands::put_freeze(&state.services, &principal.actor, &freeze).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(api::FreezeRecord::at(freeze, now)),
    )
        .into_response())
}

/// `POST /queue/freezes/{id}/lift`: 200 with the freeze as lifted; 409 if it already was.
pub(super) async fn lift_freeze(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    let freeze = match state.services.store.freeze(&id).await? {
        Some(freeze) if principal.can_see(freeze.tenant_id.as_deref()) => freeze,
        _ => return Err(ApiError::NotFound(format!("freeze '{id}' not found"))),
    };
    if freeze.lifted_at.is_some() {
        return Err(ApiError::Conflict(format!(
            "freeze '{id}' was already lifted"
        )));
    }
    let lifted =
        converge_runtime::commands::lift_freezes(&state.services, &principal.actor, vec![freeze])
            .await?;
    let now = state.services.clock.now();
    match lifted.into_iter().next() {
        Some(freeze) => typed(api::FreezeRecord::at(freeze, now)),
        None => Err(ApiError::Internal("the lift wrote nothing".to_owned())),
    }
}

/// `POST /queue/resume`: lifts every live freeze of exactly this scope (what `queue pause`
/// set); answers the freezes lifted (none is not an error: the queue was not paused).
pub(super) async fn resume(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    OptionalJson(body): OptionalJson<ResumeRequest>,
) -> ApiResult {
    let tenant = principal.write_tenant(body.tenant_id)?;
    let live = state
        .services
        .store
        .freezes(Some(tenant.as_deref().unwrap_or("")), false, FREEZES_MAX)
        .await?;
    let matching: Vec<Freeze> = live
        .into_iter()
        .filter(|f| f.repo == body.repo && f.target == body.target)
        .collect();
    let lifted =
        converge_runtime::commands::lift_freezes(&state.services, &principal.actor, matching)
            .await?;
    let now = state.services.clock.now();
    typed(api::FreezeList {
        freezes: lifted
            .into_iter()
            .map(|f| api::FreezeRecord::at(f, now))
            .collect(),
    })
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "get",
            path: "/queue/freezes",
            summary: "Freezes that hold or will hold merges (with `include_ended`, also lifted and ended ones), newest first.",
            role: Role::Viewer,
            scope: "queue.read",
            params: &[],
            query: Some(schema_of::<FreezesQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(list_freezes),
        },
        Route {
            method: "post",
            path: "/queue/freezes",
            summary: "Freeze merges of a tenant's repositories and targets: for a span, every week, or until lifted (a pause). Intents are still validated and queued; they merge when the freeze ends.",
            role: Role::Operator,
            scope: "queue.write",
            params: &[],
            query: None,
            body: Some(BodySpec::of::<FreezeRequest>(
                "What to freeze, why and when.",
            )),
            success: 201,
            conditional: false,
            answer: Answer::Json,
            handler: post(create_freeze),
        },
        Route {
            method: "post",
            path: "/queue/freezes/{id}/lift",
            summary: "Lift a freeze: what it held merges on the next round.",
            role: Role::Operator,
            scope: "queue.write",
            params: &[FREEZE_ID],
            query: None,
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(lift_freeze),
        },
        Route {
            method: "post",
            path: "/queue/resume",
            summary: "Lift every freeze of exactly this scope (what a pause of it set).",
            role: Role::Operator,
            scope: "queue.write",
            params: &[],
            query: None,
            body: Some(BodySpec::optional::<ResumeRequest>(
                "The scope: repository and target as the freezes name them.",
            )),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(resume),
        },
    ]
}

#[cfg(test)]
mod tests {
    use converge_core::freeze::{WEEK_TIME_PATTERN, WeekTime};

    #[test]
    fn the_documented_pattern_of_a_week_time_is_what_the_parser_takes() {
        let pattern = regex::Regex::new(WEEK_TIME_PATTERN).unwrap();
        for text in [
            "Mon 00:00",
            "Sun 23:59",
            "Fri 16:00",
            "fri 16:00",
            "Fri 6:00",
            "Fri 24:00",
            "Fri 16:60",
            "Fri  16:00",
            " Fri 16:00",
            "Fri 16:00 ",
            "Friday 16:00",
            "A 0:00",
            "",
        ] {
            assert_eq!(
                pattern.is_match(text),
                text.parse::<WeekTime>().is_ok(),
                "{text:?}"
            );
        }
    }
}
