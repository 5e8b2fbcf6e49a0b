//! The audit chain's verification (`/audit/verify`) and the decision export
//! (`/export/decisions`, streamed).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use converge_core::export::DecisionRecord;
use converge_runtime::audit::{VerifyError, verify_chain};
use converge_runtime::export::{ExportCursor, next_page};
use futures_util::StreamExt;
use serde::Deserialize;

use super::*;
use crate::AppState;
use crate::api;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::extract::ApiQuery;

/// Events one call verifies by default, and at most.
const VERIFY_DEFAULT: u64 = 100_000;
const VERIFY_MAX: u64 = 1_000_000;

/// `GET /audit/verify`'s query.
#[derive(Deserialize, Default, schemars::JsonSchema)]
pub(super) struct VerifyQuery {
    /// Tenant whose chain to verify (ignored for tenant-bound keys, which verify their own;
    /// left out by a key of no tenant: the chain of events without a tenant).
    pub(super) tenant_id: Option<String>,
    /// Go on after this position (`next_after` of the previous call).
    #[schemars(range(min = 0))]
    pub(super) after: Option<i64>,
    /// Events to verify in this call, 1 to 1,000,000 (default 100,000).
    #[schemars(range(min = 1, max = 1_000_000))]
    pub(super) limit: Option<u64>,
}

/// `GET /audit/verify`: recomputes a tenant's chain from its start (or its signed anchor) and
/// reports the first broken link.
pub(super) async fn verify(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<VerifyQuery>,
) -> ApiResult {
    let limit = match q.limit {
        None => VERIFY_DEFAULT,
        Some(n) if (1..=VERIFY_MAX).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {VERIFY_MAX}, got {n}"
            )));
        }
    };
    if let Some(after) = q.after
        && after < 0
    {
        return Err(ApiError::BadRequest(format!(
            "after must be a position (0 or more), got {after}"
        )));
    }
    let chain = principal.read_tenant(q.tenant_id).unwrap_or_default();
    let check = verify_chain(
        &state.services.store,
        &chain,
        state.services.audit.signing_key.as_ref(),
        q.after,
        limit,
    )
    .await
    .map_err(|e| match e {
        VerifyError::Store(e) => ApiError::from(e),
        VerifyError::NoSuchPosition(_) => ApiError::NotFound(e.to_string()),
    })?;
    if check.first_broken.is_some() || check.unchained_event.is_some() {
        tracing::error!(
            tenant = %check.chain,
            "the audit chain does not verify: {:?}",
            check.first_broken
        );
    }
    typed(api::AuditVerification::from(&check))
}

/// `GET /export/decisions`'s query.
#[derive(Deserialize, Default, schemars::JsonSchema)]
pub(super) struct ExportQuery {
    /// `jsonl` (default: one JSON record a line) or `csv`.
    #[serde(default)]
    #[schemars(schema_with = "format_schema")]
    pub(super) fmt: Option<String>,
    /// Tenant to export (ignored for tenant-bound keys, which export their own).
    pub(super) tenant_id: Option<String>,
}

fn format_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["jsonl", "csv"]})
}

#[derive(Clone, Copy)]
enum Format {
    Jsonl,
    Csv,
}

impl Format {
    fn line(self, record: &DecisionRecord) -> String {
        match self {
            Format::Jsonl => {
                // A record of strings, numbers and JSON values always serialises.
                let mut line = serde_json::to_string(record).unwrap_or_default();
                line.push('\n');
                line
            }
            Format::Csv => record.csv_line(),
        }
    }
}

/// `GET /export/decisions`: one record per intent, streamed a page of intents at a time (the
/// server holds one page, however large the log). The first page is read before the answer
/// starts, so a store that cannot be read is a proper error; a failure later cuts the stream
/// short (the client sees an incomplete body, never a partial file passed off as whole).
pub(super) async fn export_decisions(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult {
    let format = match q.fmt.as_deref() {
        None | Some("jsonl") => Format::Jsonl,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "fmt must be jsonl or csv, got '{other}'"
            )));
        }
    };
    let tenant = principal.read_tenant(q.tenant_id);
    let (first, cursor) = next_page(
        &state.services.store,
        tenant.as_deref(),
        ExportCursor::default(),
    )
    .await?;
    let mut head = String::new();
    if matches!(format, Format::Csv) {
        head.push_str(&converge_core::export::csv_header());
    }
    for record in &first {
        head.push_str(&format.line(record));
    }
    let rest = futures_util::stream::unfold(
        (state, tenant, cursor, false),
        move |(state, tenant, cursor, failed)| async move {
            if failed {
                return None;
            }
            match next_page(&state.services.store, tenant.as_deref(), cursor).await {
                Ok((records, _)) if records.is_empty() => None,
                Ok((records, cursor)) => {
                    let chunk: String = records.iter().map(|r| format.line(r)).collect();
                    Some((Ok(Bytes::from(chunk)), (state, tenant, cursor, false)))
                }
                Err(e) => {
                    tracing::error!("the decision export stopped: {e}");
                    let cut = std::io::Error::other("the export could not be read to its end");
                    Some((Err(cut), (state, tenant, ExportCursor::default(), true)))
                }
            }
        },
    );
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(head))]).chain(rest);
    let (content_type, file) = match format {
        Format::Jsonl => ("application/x-ndjson", "decisions.jsonl"),
        Format::Csv => ("text/csv; charset=utf-8", "decisions.csv"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "get",
            path: "/audit/verify",
            summary: "Verifies a tenant's audit chain (a hash chain maintained on every append) \
                      and reports the first broken link; `next_after` goes on past `limit`.",
            role: Role::Operator,
            scope: "events.read",
            params: &[],
            query: Some(schema_of::<VerifyQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(verify),
        },
        Route {
            method: "get",
            path: "/export/decisions",
            summary: "One decision record per intent (the original's shape), streamed as JSON \
                      lines or CSV.",
            role: Role::Viewer,
            scope: "events.read",
            params: &[],
            query: Some(schema_of::<ExportQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::File(&["application/x-ndjson", "text/csv; charset=utf-8"]),
            handler: get(export_decisions),
        },
    ]
}
