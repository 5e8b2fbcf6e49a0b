//! `POST /intents/evaluate`: a draft intent judged before it is created — how much it repeats
//! what is already waiting, and how well it is described (`converge_core::pre_evaluation`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use converge_core::pre_evaluation::{self, Draft};
use converge_core::{EventType, RiskLevel, Status};
use converge_store::IntentFilter;
use serde::Deserialize;
use serde_json::Map;

use super::*;
use crate::AppState;
use crate::auth::{Principal, Role};
use crate::extract::ApiJson;

/// Waiting intents a draft is compared with at most (the first in queue order).
const COMPARED: u32 = 500;

fn mode_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": ["string", "null"], "enum": ["shadow", "enforce", null]})
}

/// The draft.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DraftBody {
    /// The branch to merge.
    source: Option<String>,
    /// The branch to merge into (default: the policy's default target).
    target: Option<String>,
    /// Declared risk level (default medium).
    #[serde(default)]
    #[schemars(schema_with = "super::intents::risk_level_schema")]
    risk_level: Option<RiskLevel>,
    /// Free-form description (`description`, `objective`, `problem_statement` are read).
    #[serde(default)]
    semantic: Map<String, Value>,
    /// Free-form technical data (`scope_hint`: a list of the parts it touches).
    #[serde(default)]
    technical: Map<String, Value>,
    /// Intents it would depend on.
    #[serde(default)]
    dependencies: Vec<String>,
    /// The tenant whose waiting intents it is compared with (a tenant's key: its own).
    tenant_id: Option<String>,
    /// `shadow` (default: never fails) or `enforce` (fails under 0.5).
    #[serde(default)]
    #[schemars(schema_with = "mode_schema")]
    mode: Option<String>,
}

/// The parts a change says it touches (`technical.scope_hint`: a list, or one name).
fn scope_of(technical: &Map<String, Value>) -> Vec<String> {
    match technical.get("scope_hint") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// `POST /intents/evaluate`.
pub(super) async fn evaluate_draft(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<DraftBody>,
) -> ApiResult {
    let enforce = match body.mode.as_deref() {
        None | Some("shadow") => false,
        Some("enforce") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "mode: 'shadow' or 'enforce', got '{other}'"
            )));
        }
    };
    let tenant = principal.read_tenant(body.tenant_id);
    let scope = scope_of(&body.technical);
    let draft = Draft {
        source: body.source.unwrap_or_default().trim().to_owned(),
        target: body
            .target
            .unwrap_or_else(|| state.services.policy.queue.default_target.clone()),
        risk_level: body
            .risk_level
            .unwrap_or(RiskLevel::Medium)
            .as_str()
            .to_owned(),
        semantic: body.semantic,
        scope,
        dependencies: body.dependencies,
    };
    let waiting = state
        .services
        .store
        .intents(&IntentFilter {
            statuses: vec![Status::Ready, Status::Validated, Status::Queued],
            tenant_id: tenant.clone(),
            limit: COMPARED,
            ..IntentFilter::default()
        })
        .await?;
    let others: Vec<(String, String)> = waiting
        .iter()
        .map(|intent| {
            let text = Draft {
                source: intent.source.clone(),
                target: intent.target.clone(),
                risk_level: intent.risk_level.as_str().to_owned(),
                semantic: intent.semantic.clone(),
                scope: scope_of(&intent.technical),
                dependencies: intent.dependencies.clone(),
            }
            .embedded_text();
            (intent.id.clone(), text)
        })
        .collect();
    let answer = pre_evaluation::evaluate(&draft, &others, enforce);
    record(
        &state,
        &principal,
        EventType::IntentPreEvaluated,
        None,
        tenant,
        serde_json::to_value(&answer).unwrap_or(Value::Null),
    )
    .await?;
    typed(answer)
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![Route {
        method: "post",
        path: "/intents/evaluate",
        summary: "Judge a draft intent before creating it: how much it repeats what is waiting, how well it is described, what to improve; recorded as intent.pre_evaluated.",
        role: Role::Viewer,
        scope: "intents.read",
        params: &[],
        query: None,
        body: Some(BodySpec::of::<DraftBody>("The draft, and the mode.")),
        success: 200,
        conditional: false,
        answer: Answer::Json,
        handler: post(evaluate_draft),
    }]
}
