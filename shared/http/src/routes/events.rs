//! The event log: filtered pages (`/events`) and the operators' audit view (`/audit/recent`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use converge_core::EventType;
use converge_store::EventFilter;
use serde::Deserialize;

use super::*;
use crate::AppState;
use crate::api;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::extract::ApiQuery;

// Events
/// `GET /events`'s filters.
#[derive(Deserialize, Default, schemars::JsonSchema)]
pub(super) struct EventsQuery {
    /// Event type, e.g. `intent.validated`.
    #[serde(rename = "type", default)]
    #[schemars(schema_with = "event_type_schema")]
    pub(super) event_type: Option<String>,
    /// Only this intent's events.
    pub(super) intent_id: Option<String>,
    /// Tenant to read (ignored for tenant-bound keys, which always read their own).
    pub(super) tenant_id: Option<String>,
    /// From this time on (RFC 3339, inclusive).
    #[schemars(extend("format" = "date-time"))]
    pub(super) since: Option<String>,
    /// Up to this time (RFC 3339, inclusive).
    #[schemars(extend("format" = "date-time"))]
    pub(super) until: Option<String>,
    /// Only events before this sequence number (`next_before` of the previous page).
    pub(super) before: Option<i64>,
    /// Page size, 1 to 1,000 (default 100).
    #[schemars(range(min = 1, max = 1000))]
    pub(super) limit: Option<u32>,
}

/// An event type by its dotted name.
fn event_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    schemars::json_schema!({"type": "string", "enum": names})
}

pub(super) async fn list_events(
    state: &AppState,
    principal: &Principal,
    q: EventsQuery,
) -> Result<api::EventPage, ApiError> {
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
    let events = state.services.store.events(&filter).await?;
    let next = if events.len() == filter.limit as usize {
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(api::EventPage {
        events: events.iter().map(api::EventRecord::from).collect(),
        next_before: next,
    })
}

/// `GET /events`.
pub(super) async fn events(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult {
    typed(list_events(&state, &principal, q).await?)
}

/// The latest events of one type (50 unless the query says), newest first: what the
/// `…/recent` and history routes of other resources answer.
pub(super) async fn recent_of_type(
    state: &AppState,
    principal: &Principal,
    q: LimitQuery,
    event_type: EventType,
) -> ApiResult {
    let query = EventsQuery {
        event_type: Some(event_type.as_str().to_owned()),
        tenant_id: q.tenant_id,
        limit: Some(q.limit.unwrap_or(50)),
        ..EventsQuery::default()
    };
    typed(list_events(state, principal, query).await?)
}

/// `GET /audit/recent`: every event, newest first (operators).
pub(super) async fn audit_recent(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult {
    let query = EventsQuery {
        tenant_id: q.tenant_id,
        limit: q.limit,
        ..EventsQuery::default()
    };
    typed(list_events(&state, &principal, query).await?)
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "get",
            path: "/events",
            summary: "Events, newest first; `next_before` pages on.",
            role: Role::Viewer,
            scope: "events.read",
            params: &[],
            query: Some(schema_of::<EventsQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(events),
        },
        Route {
            method: "get",
            path: "/audit/recent",
            summary: "Every event, newest first.",
            role: Role::Operator,
            scope: "events.read",
            params: &[],
            query: Some(schema_of::<LimitQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(audit_recent),
        },
    ]
}
