//! The business routes, mounted under `/v1` and mirrored under `/api`: one module per resource,
//! each declaring its routes in the one route table ([`table`]) with their documentation, role
//! and scope. The router, the access check and `/v1/openapi.json` are all built from that
//! table, so a route can neither exist undocumented nor skip its check.
//!
//! [`authorize`] checks the route's role and scope before the handler runs (and so before its
//! body is parsed); handlers then confine what they read or write to the caller's tenant:
//! another tenant's single objects are 404, writes into another tenant 403.

mod auth;
mod events;
mod flags;
mod intents;
mod queue;
mod risk;
mod summary;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use chrono::{DateTime, Utc};
use converge_core::{EventType, Intent, Status};
use converge_runtime::commands;
use converge_store::{Expected, StoredIntent};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::auth::{Principal, Role};
use crate::error::ApiError;

/// Where a parameter goes.
#[derive(Clone, Copy)]
pub(crate) enum In {
    Query,
    Path,
}

/// One documented parameter: name, location, JSON type, description.
pub(crate) type Param = (&'static str, In, &'static str, &'static str);

/// One business route.
pub(crate) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// The least role that may call it.
    pub role: Role,
    /// The scope it needs when the key declares scopes.
    pub scope: &'static str,
    pub params: &'static [Param],
    /// The JSON body, if the route takes one.
    pub body: Option<BodySpec>,
    /// Success status.
    pub success: u16,
    pub handler: MethodRouter<Arc<AppState>>,
}

/// A route's JSON body: what it holds, whether it may be left out, and its JSON Schema,
/// generated from the type the handler parses (so the document cannot drift from the code).
#[derive(Clone, Copy)]
pub(crate) struct BodySpec {
    pub description: &'static str,
    pub required: bool,
    pub schema: fn() -> Value,
}

impl BodySpec {
    /// A body of type `T`.
    pub(crate) fn of<T: schemars::JsonSchema>(description: &'static str) -> BodySpec {
        BodySpec {
            description,
            required: true,
            schema: schema_of::<T>,
        }
    }

    /// A body of type `T` that may be left out (its fields' defaults then apply).
    pub(crate) fn optional<T: schemars::JsonSchema>(description: &'static str) -> BodySpec {
        BodySpec {
            required: false,
            ..BodySpec::of::<T>(description)
        }
    }
}

/// The JSON Schema (2020-12, as OpenAPI 3.1 uses) of `T`, self-contained.
pub(crate) fn schema_of<T: schemars::JsonSchema>() -> Value {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Value::Object(map) = &mut schema {
        map.remove("title");
    }
    schema
}

/// What a route needs of its caller: a role and, when the key declares scopes, a scope.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Access {
    pub role: Role,
    pub scope: &'static str,
}

impl Route {
    /// What the route needs of its caller.
    fn access(&self) -> Access {
        Access {
            role: self.role,
            scope: self.scope,
        }
    }
}

impl Access {
    /// Whether `principal` has this access (403 naming what is missing otherwise).
    pub fn check(self, principal: &Principal) -> Result<(), ApiError> {
        principal.require(self.role, self.scope)
    }
}

const TENANT: Param = (
    "tenant_id",
    In::Query,
    "string",
    "Tenant to read (ignored for tenant-bound keys, which always read their own).",
);
const LIMIT: Param = ("limit", In::Query, "integer", "Page size.");
const TENANT_WRITE: Param = (
    "tenant_id",
    In::Query,
    "string",
    "Tenant written to; a tenant-bound key may only name its own (403 otherwise).",
);
const ID: Param = (
    "id",
    In::Path,
    "string",
    "Intent id, percent-encoded (`acme%2Fapp:pr-7`).",
);

/// The business routes (mounted under `/v1` and `/api`), every resource's.
pub(crate) fn table() -> Vec<Route> {
    [
        intents::routes(),
        queue::routes(),
        events::routes(),
        auth::routes(),
        risk::routes(),
        flags::routes(),
        summary::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The business routes as a router, each behind the check of its role and scope.
pub(crate) fn router() -> axum::Router<Arc<AppState>> {
    table()
        .into_iter()
        .fold(axum::Router::new(), |router, route| {
            let access = route.access();
            router.route(
                route.path,
                route
                    .handler
                    .route_layer(axum::middleware::from_fn_with_state(access, authorize)),
            )
        })
}

/// The access check of every business route: the caller's principal (set by
/// [`crate::auth::authenticate`]) must have the route's role and scope. It runs before the
/// handler's extractors, so a caller without the role gets 403 whatever its body holds.
pub(crate) async fn authorize(
    State(access): State<Access>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .ok_or(ApiError::Unauthenticated)?;
    access.check(principal)?;
    Ok(next.run(request).await)
}

/// Records one event written by the caller (and whatever projection change it implies).
async fn record(
    state: &AppState,
    principal: &Principal,
    event_type: EventType,
    intent_id: Option<&str>,
    tenant: Option<String>,
    payload: Value,
) -> Result<(), ApiError> {
    let event = commands::api_event(
        &state.services,
        &principal.actor,
        event_type,
        intent_id,
        tenant.as_deref(),
        payload,
    );
    commands::record(&state.services, vec![event]).await?;
    Ok(())
}

/// Records one event about an intent, written by the caller, together with a queue message
/// for the intent's key: the queue takes the change up. The write commits only if the intent
/// is still as `expect` says (what the decision to write was made from).
async fn record_for_queue(
    state: &AppState,
    principal: &Principal,
    event_type: EventType,
    intent: &Intent,
    payload: Value,
    expect: Option<Expected>,
) -> Result<(), ApiError> {
    let event = commands::api_event(
        &state.services,
        &principal.actor,
        event_type,
        Some(&intent.id),
        intent.tenant_id.as_deref(),
        payload,
    );
    commands::enqueue(&state.services, vec![event], intent, expect).await?;
    Ok(())
}

/// Attempts of a read-decide-write whose read went stale before its write committed.
const DECISION_ATTEMPTS: usize = 5;

/// Runs `decide` — a read, a decision from it, and a write that expects what was read —
/// again from a fresh read while its write finds the read stale, a bounded number of times.
/// When every attempt met a concurrent change, the answer is a 409 and nothing was written.
pub(super) async fn until_current<T, F>(mut decide: impl FnMut() -> F) -> Result<T, ApiError>
where
    F: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 1;
    loop {
        match decide().await {
            Err(ApiError::Stale(_)) if attempt < DECISION_ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

/// Default and largest page of intents.
pub(super) const INTENTS_PAGE_DEFAULT: u32 = 100;
pub(super) const INTENTS_PAGE_MAX: u32 = 500;

/// Default and largest page of events.
pub(super) const EVENTS_PAGE_DEFAULT: u32 = 100;
pub(super) const EVENTS_PAGE_MAX: u32 = 1_000;

/// A typed answer (`crate::api`), 200: every answer of the business routes is one.
pub(super) fn typed(answer: impl serde::Serialize) -> ApiResult {
    Ok(Json(answer).into_response())
}

pub(super) fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}, got {n}"
        ))),
    }
}

pub(super) fn parse_time(
    field: &str,
    value: Option<String>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
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
pub(super) async fn visible_intent(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Intent, ApiError> {
    Ok(visible_stored_intent(state, principal, id).await?.intent)
}

/// An intent the caller may see with its row's version (for a write decided from it), or 404.
pub(super) async fn visible_stored_intent(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<StoredIntent, ApiError> {
    match state.services.store.stored_intent(id).await? {
        Some(stored) if principal.can_see(stored.intent.tenant_id.as_deref()) => Ok(stored),
        _ => Err(ApiError::NotFound(format!("intent '{id}' not found"))),
    }
}

pub(super) fn parse_statuses(list: Option<String>) -> Result<Vec<Status>, ApiError> {
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

#[derive(Deserialize)]
pub(super) struct LimitQuery {
    pub(super) limit: Option<u32>,
    pub(super) tenant_id: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct TenantQuery {
    pub(super) tenant_id: Option<String>,
}
