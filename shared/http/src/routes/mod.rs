//! The business routes, mounted under `/v1` and mirrored under `/api`: one module per resource,
//! each declaring its routes in the one route table ([`table`]) with their documentation, role
//! and scope. The router, the access check and `/v1/openapi.json` are all built from that
//! table, so a route can neither exist undocumented nor skip its check.
//!
//! [`authorize`] checks the route's role and scope before the handler runs (and so before its
//! body is parsed); handlers then confine what they read or write to the caller's tenant:
//! another tenant's single objects are 404, writes into another tenant 403.

mod agents;
mod analytics;
mod audit;
mod auth;
mod events;
mod flags;
mod freezes;
mod intake;
mod intents;
mod pre_evaluation;
pub(crate) mod queue;
mod reviews;
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
use converge_store::StoredIntent;
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::auth::{Principal, Role};
use crate::error::ApiError;

/// One path parameter: name and description (its schema: a non-empty string).
pub(crate) type PathParam = (&'static str, &'static str);

/// One business route.
pub(crate) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// The least role that may call it.
    pub role: Role,
    /// The scope it needs when the key declares scopes.
    pub scope: &'static str,
    /// Its path parameters (`{id}`).
    pub params: &'static [PathParam],
    /// The JSON Schema of its query string: the type the handler parses, whose properties
    /// become the documented query parameters.
    pub query: Option<fn() -> Value>,
    /// The JSON body, if the route takes one.
    pub body: Option<BodySpec>,
    /// Success status.
    pub success: u16,
    /// Whether it answers with an `ETag` and honours `If-None-Match` (304).
    pub conditional: bool,
    /// What a success carries.
    pub answer: Answer,
    pub handler: MethodRouter<Arc<AppState>>,
}

/// What a route's success carries.
#[derive(Clone, Copy)]
pub(crate) enum Answer {
    /// A JSON object (`crate::api`).
    Json,
    /// A file streamed in one of these media types (as the query chooses).
    File(&'static [&'static str]),
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

/// The JSON Schema (2020-12, as OpenAPI 3.1 uses) of `T`, self-contained but for references
/// to `#/components/schemas/JsonWithoutNul` (see [`forbid_nul`]).
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
    forbid_nul(&mut schema);
    schema
}

/// The regular expression of a string without NUL characters, which every string of a request
/// must be (no store column can hold one; the extractors refuse them, see `crate::extract`).
pub(crate) const NO_NUL: &str = r"^[^\x00]*$";

/// Rust's whitespace (`char::is_whitespace`, what `str::trim` removes) as the inside of a
/// regular expression's character class, spelt out: `\s` differs between regex dialects.
macro_rules! whitespace_class {
    () => {
        r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}
pub(crate) use whitespace_class;

/// The regular expression of a string that is not blank once trimmed, without NUL.
pub(crate) const NOT_BLANK: &str = concat!(r"^[^\x00]*[^\x00", whitespace_class!(), r"][^\x00]*$");

/// Says in `schema` what the extractors enforce: no string and no object key holds a NUL.
/// Strings without a pattern, format or enum get [`NO_NUL`] (a hand-written pattern must
/// exclude NUL itself); objects get it for their keys; free-form values become
/// `JsonWithoutNul`, any JSON without a NUL anywhere.
pub(crate) fn forbid_nul(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let allows = |kind: &str, map: &serde_json::Map<String, Value>| match map.get("type") {
                Some(Value::String(t)) => t == kind,
                Some(Value::Array(types)) => types.iter().any(|t| t == kind),
                _ => false,
            };
            let constrained = ["pattern", "format", "enum", "const"]
                .iter()
                .any(|k| map.contains_key(*k));
            if allows("string", map) && !constrained {
                map.insert("pattern".to_owned(), Value::from(NO_NUL));
            }
            if allows("object", map) {
                map.entry("propertyNames")
                    .or_insert_with(|| serde_json::json!({"pattern": NO_NUL}));
                if matches!(map.get("additionalProperties"), Some(Value::Bool(true))) {
                    map.insert("additionalProperties".to_owned(), json_without_nul_ref());
                }
            }
            for (key, value) in map.iter_mut() {
                if !matches!(key.as_str(), "enum" | "const" | "default" | "examples") {
                    forbid_nul(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(forbid_nul),
        _ => {}
    }
}

fn json_without_nul_ref() -> Value {
    serde_json::json!({"$ref": "#/components/schemas/JsonWithoutNul"})
}

/// Any JSON value without a NUL character in a string or key (free-form fields).
pub(crate) fn json_without_nul() -> Value {
    serde_json::json!({
        "anyOf": [
            {"type": ["null", "boolean", "number"]},
            {"type": "string", "pattern": NO_NUL},
            {"type": "array", "items": json_without_nul_ref()},
            {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": json_without_nul_ref()},
        ]
    })
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

const ID: PathParam = ("id", "Intent id, percent-encoded (`acme%2Fapp:pr-7`).");

/// The business routes (mounted under `/v1` and `/api`), every resource's.
pub(crate) fn table() -> Vec<Route> {
    [
        intents::routes(),
        queue::routes(),
        events::routes(),
        audit::routes(),
        auth::routes(),
        risk::routes(),
        reviews::routes(),
        flags::routes(),
        freezes::routes(),
        summary::routes(),
        analytics::routes(),
        intake::routes(),
        agents::routes(),
        pre_evaluation::routes(),
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
/// for the intent's key: the queue takes the change up. Expects nothing of the intent's row:
/// for writes decided from what cannot change (its existence, its tenant).
async fn record_for_queue(
    state: &AppState,
    principal: &Principal,
    event_type: EventType,
    intent: &Intent,
    payload: Value,
) -> Result<(), ApiError> {
    let events = api_events(state, principal, intent, vec![(event_type, payload)]);
    commands::enqueue(&state.services, events, intent, None).await?;
    Ok(())
}

/// Events about `intent` recorded by the caller through the API.
fn api_events(
    state: &AppState,
    principal: &Principal,
    intent: &Intent,
    changes: Vec<(EventType, Value)>,
) -> Vec<converge_core::Event> {
    changes
        .into_iter()
        .map(|(event_type, payload)| {
            commands::api_event(
                &state.services,
                &principal.actor,
                event_type,
                Some(&intent.id),
                intent.tenant_id.as_deref(),
                payload,
            )
        })
        .collect()
}

/// What [`decide_about_intent`] decided: its answer, and the intent as the decision left it.
pub(super) struct Decided<T> {
    pub(super) answer: T,
    pub(super) intent: Intent,
}

/// Decides a write about an intent the caller may see (404 otherwise) from its row read under
/// its lock, and commits it in the same transaction (`Store::decide_and_commit`): no other
/// change can land in between, so the decision is never refused as stale. `decide` answers the
/// events to record — queued with the intent's key; none writes nothing — and what to answer;
/// its error writes nothing.
pub(super) async fn decide_about_intent<T>(
    state: &AppState,
    principal: &Principal,
    id: &str,
    decide: impl FnOnce(&Intent) -> Result<(Vec<(EventType, Value)>, T), ApiError>,
) -> Result<Decided<T>, ApiError> {
    let decided = state
        .services
        .store
        .decide_and_commit(id, |stored| {
            let plan = visible(principal, id, stored)
                .and_then(|stored| plan_decision(state, principal, &stored.intent, decide));
            match plan {
                Ok((commit, decided)) => {
                    let written = commit.is_some();
                    (commit, Ok((decided, written)))
                }
                Err(e) => (None, Err(e)),
            }
        })
        .await?;
    let (decided, written) = decided?;
    if written {
        state.services.queue_work_committed().await;
    }
    Ok(decided)
}

/// The commit of what `decide` decides about `intent` (none when it decides nothing), and the
/// intent as those events leave it (as the store's projection will).
fn plan_decision<T>(
    state: &AppState,
    principal: &Principal,
    intent: &Intent,
    decide: impl FnOnce(&Intent) -> Result<(Vec<(EventType, Value)>, T), ApiError>,
) -> Result<(Option<converge_store::Commit>, Decided<T>), ApiError> {
    let (changes, answer) = decide(intent)?;
    if changes.is_empty() {
        let unchanged = Decided {
            answer,
            intent: intent.clone(),
        };
        return Ok((None, unchanged));
    }
    let events = api_events(state, principal, intent, changes);
    let mut after = intent.clone();
    for event in &events {
        if let Some(next) = converge_core::projection::apply(Some(&after), event)
            .map_err(|e| ApiError::from(converge_store::StoreError::from(e)))?
        {
            after = next;
        }
    }
    let commit = commands::queued(events, intent);
    Ok((
        Some(commit),
        Decided {
            answer,
            intent: after,
        },
    ))
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
    visible(principal, id, state.services.store.stored_intent(id).await?)
}

/// `found` if the caller may see it, else 404: an intent of another tenant is answered as if
/// it did not exist.
fn visible<T: AsRef<Intent>>(
    principal: &Principal,
    id: &str,
    found: Option<T>,
) -> Result<T, ApiError> {
    match found {
        Some(found) if principal.can_see(found.as_ref().tenant_id.as_deref()) => Ok(found),
        _ => Err(ApiError::NotFound(format!("intent '{id}' not found"))),
    }
}

/// Parses a `status` filter: statuses by name (upper or lower case), comma-separated, no
/// blanks (exactly what [`status_list_schema`] documents); empty means every status.
pub(super) fn parse_statuses(list: Option<String>) -> Result<Vec<Status>, ApiError> {
    let list = list.unwrap_or_default();
    if list.is_empty() {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|name| {
            Status::ALL
                .into_iter()
                .find(|s| name == s.as_str() || name == s.as_str().to_lowercase())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "status: unknown status '{name}' (one of {})",
                        Status::ALL.map(Status::as_str).join(", ")
                    ))
                })
        })
        .collect()
}

/// The schema of a `status` filter (see [`parse_statuses`]).
pub(super) fn status_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<String> = Status::ALL
        .into_iter()
        .flat_map(|s| [s.as_str().to_owned(), s.as_str().to_lowercase()])
        .collect();
    let one = format!("(?:{})", names.join("|"));
    schemars::json_schema!({
        "type": "string",
        "pattern": format!("^(?:{one}(?:,{one})*)?$"),
        "description": "Comma-separated statuses (READY, VALIDATED, QUEUED, MERGED, REJECTED, upper or lower case); empty or left out: all.",
    })
}

/// `?limit=&tenant_id=`: a page of events.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct LimitQuery {
    /// Page size, 1 to 1,000 (default 100; 50 for risk evaluations).
    #[schemars(range(min = 1, max = 1000))]
    pub(super) limit: Option<u32>,
    /// Tenant to read (ignored for tenant-bound keys, which always read their own).
    pub(super) tenant_id: Option<String>,
}

/// `?tenant_id=`: what to read.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct TenantQuery {
    /// Tenant to read (ignored for tenant-bound keys, which always read their own).
    pub(super) tenant_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_filter_is_read_exactly_as_documented() {
        let pattern = status_list_schema(&mut schemars::SchemaGenerator::default());
        let pattern =
            regex::Regex::new(pattern.get("pattern").and_then(Value::as_str).unwrap()).unwrap();
        for taken in ["", "READY", "ready,QUEUED", "MERGED,merged,REJECTED"] {
            assert!(pattern.is_match(taken), "{taken}");
            assert!(parse_statuses(Some(taken.to_owned())).is_ok(), "{taken}");
        }
        for refused in ["Ready", "READY, QUEUED", "READY,", ",", "LIMBO"] {
            assert!(!pattern.is_match(refused), "{refused}");
            assert!(
                parse_statuses(Some(refused.to_owned())).is_err(),
                "{refused}"
            );
        }
        assert_eq!(
            parse_statuses(Some("queued,READY".to_owned())).unwrap(),
            vec![Status::Queued, Status::Ready]
        );
    }

    #[test]
    fn not_blank_means_what_trim_means() {
        let pattern = regex::Regex::new(NOT_BLANK).unwrap();
        for text in ["a", " a ", "\u{3000}x", "\u{1c}", "a\u{85}"] {
            assert!(pattern.is_match(text), "{text:?}");
            assert!(!text.trim().is_empty(), "{text:?}");
        }
        for text in [
            "",
            " ",
            "\t\n",
            "\u{3000}\u{a0}\u{2028}",
            "\u{85}",
            "a\u{0}",
        ] {
            assert!(!pattern.is_match(text), "{text:?}");
        }
        // Every whitespace character trim removes is in the class.
        for c in (0..=0x10ffff)
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
        {
            assert!(
                !pattern.is_match(&c.to_string()),
                "{c:?} counts as not blank"
            );
        }
    }

    #[test]
    fn every_string_of_a_schema_refuses_nul() {
        let mut schema = serde_json::json!({
            "type": "object",
            "additionalProperties": true,
            "properties": {"name": {"type": ["string", "null"]}, "tags": {"type": "array", "items": {"type": "string"}}},
        });
        forbid_nul(&mut schema);
        assert_eq!(schema["properties"]["name"]["pattern"], NO_NUL);
        assert_eq!(schema["properties"]["tags"]["items"]["pattern"], NO_NUL);
        assert_eq!(schema["propertyNames"]["pattern"], NO_NUL);
        assert_eq!(
            schema["additionalProperties"]["$ref"],
            "#/components/schemas/JsonWithoutNul"
        );
    }
}
