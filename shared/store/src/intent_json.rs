//! Decoding a page of intents that the database aggregated into one JSON array of rows
//! (`[id, source, target, status, created_at, created_by, risk_level, priority, semantic,
//! technical, checks_required, dependencies, retries, tenant_id, plan_id, origin_type]`).

use chrono::{DateTime, Utc};
use converge_core::Intent;
use serde_json::{Map, Value};

use crate::StoreError;
use crate::error::corrupt;

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Map<String, Value>,
    Map<String, Value>,
    Vec<String>,
    Vec<String>,
    i64,
    Option<String>,
    Option<String>,
    String,
);

/// Decodes the aggregated page; `parse_ts` reads the backend's timestamp text.
pub(crate) fn decode_page(
    json: &str,
    parse_ts: fn(&str) -> Result<DateTime<Utc>, StoreError>,
) -> Result<Vec<Intent>, StoreError> {
    let rows: Vec<Row> =
        serde_json::from_str(json).map_err(|e| corrupt(format!("intents page: {e}")))?;
    rows.into_iter()
        .map(|r| {
            Ok(Intent {
                id: r.0,
                source: r.1,
                target: r.2,
                status: r.3.parse().map_err(corrupt)?,
                created_at: parse_ts(&r.4)?,
                created_by: r.5,
                risk_level: r.6.parse().map_err(corrupt)?,
                priority: r.7,
                semantic: r.8,
                technical: r.9,
                checks_required: r.10,
                dependencies: r.11,
                retries: u32::try_from(r.12).map_err(corrupt)?,
                tenant_id: r.13,
                plan_id: r.14,
                origin_type: r.15,
            })
        })
        .collect()
}
