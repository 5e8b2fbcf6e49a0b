//! Agent policies (`/agent/policy`) and authorization (`/agent/authorize`): what a coding
//! agent may do on its own, per tenant, and whether it may now.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use converge_core::agents::{ActionLimits, AgentPolicy, BlastSeverity};
use converge_runtime::agents::{self, AgentError};
use serde::Deserialize;

use super::*;
use crate::AppState;
use crate::auth::{Principal, Role};
use crate::extract::{ApiJson, ApiQuery};

impl From<AgentError> for ApiError {
    fn from(error: AgentError) -> Self {
        match error {
            AgentError::Invalid(e) => ApiError::BadRequest(e.to_string()),
            AgentError::Store(converge_store::StoreError::Conflict(_)) => ApiError::Conflict(
                "the policy changed while this request was handled; nothing was written, send it again"
                    .to_owned(),
            ),
            AgentError::Store(e) => e.into(),
            AgentError::Analytics(e) => e.into(),
        }
    }
}

/// Policies listed at most.
const POLICIES_MAX: u32 = 500;

fn severity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": ["string", "null"], "enum": ["low", "medium", "high", "critical", null]})
}

fn actions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["array", "null"],
        "maxItems": 50,
        "items": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": NOT_BLANK}
    })
}

/// Limits of one action, over the agent's.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsBody {
    /// Highest risk score, 0 to 100.
    #[schemars(range(min = 0.0, max = 100.0))]
    max_risk_score: Option<f64>,
    /// Widest blast radius.
    #[serde(default)]
    #[schemars(schema_with = "severity_schema")]
    max_blast_severity: Option<BlastSeverity>,
}

/// `POST /agent/policy`: an agent's policy (each field left out takes the default).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyBody {
    /// The agent: 1 to 200 characters, not all blank.
    #[schemars(length(min = 1, max = 200), extend("pattern" = NOT_BLANK))]
    agent_id: String,
    /// Tenant written to (also accepted in the query); a tenant-bound key may only name its
    /// own (403 otherwise).
    tenant_id: Option<String>,
    /// Autonomy level, 0 to 3 (default 0).
    #[serde(default, deserialize_with = "crate::extract::integral")]
    #[schemars(range(min = 0, max = 3))]
    atl: Option<u8>,
    /// Highest risk score the agent may act on, 0 to 100 (default 30).
    #[schemars(range(min = 0.0, max = 100.0))]
    max_risk_score: Option<f64>,
    /// Widest blast radius it may act on (default low).
    #[serde(default)]
    #[schemars(schema_with = "severity_schema")]
    max_blast_severity: Option<BlastSeverity>,
    /// Test coverage asked for, 0 to 1 (recorded; default 0).
    #[schemars(range(min = 0.0, max = 1.0))]
    min_test_coverage: Option<f64>,
    /// Whether the tenant's compliance report must pass (default true).
    require_compliance_pass: Option<bool>,
    /// Whether a human must have approved (default true).
    require_human_approval: Option<bool>,
    /// Whether critical intents need two approvals (default true).
    require_dual_approval_on_critical: Option<bool>,
    /// The actions it may take (default `["analyze"]`).
    #[serde(default)]
    #[schemars(schema_with = "actions_schema")]
    allow_actions: Option<Vec<String>>,
    /// Limits per action.
    action_overrides: Option<BTreeMap<String, LimitsBody>>,
    /// When the policy stops allowing anything (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    expires_at: Option<String>,
}

/// `GET /agent/policy`'s filters.
#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct PolicyQuery {
    /// Tenant to read (ignored for tenant-bound keys, which always read their own).
    tenant_id: Option<String>,
    /// Only this agent's (its default policy when none is stored).
    agent_id: Option<String>,
}

/// `POST /agent/authorize`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthorizeBody {
    /// The agent.
    #[schemars(length(min = 1, max = 200), extend("pattern" = NOT_BLANK))]
    agent_id: String,
    /// What it wants to do (`analyze`, `merge`, …).
    #[schemars(length(min = 1, max = 100), extend("pattern" = NOT_BLANK))]
    action: String,
    /// On which intent (its tenant's policy applies).
    #[schemars(length(min = 1), extend("pattern" = NOT_BLANK))]
    intent_id: String,
    /// Human approvals the change has (default 0).
    #[serde(default, deserialize_with = "crate::extract::integral")]
    #[schemars(range(min = 0, max = 1000))]
    human_approvals: Option<u32>,
}

/// `GET /agent/policy`: the tenant's agent policies (or one agent's, its default when none is
/// stored).
pub(super) async fn list_policies(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<PolicyQuery>,
) -> ApiResult {
    let tenant = principal.read_tenant(q.tenant_id);
    if let Some(agent_id) = q.agent_id {
        let (policy, version) =
            agents::policy_of(&state.services, &agent_id, tenant.as_deref()).await?;
        return typed(serde_json::json!({
            "policies": [{"policy": policy, "version": version}],
            "tenant_id": tenant,
        }));
    }
    let stored = state
        .services
        .store
        .agent_policies(tenant.as_deref(), POLICIES_MAX)
        .await?;
    let policies: Vec<Value> = stored
        .into_iter()
        .map(|doc| {
            serde_json::json!({"policy": doc.data, "version": doc.version, "updated_at": doc.updated_at})
        })
        .collect();
    typed(serde_json::json!({"policies": policies, "tenant_id": tenant}))
}

/// `POST /agent/policy`.
pub(super) async fn set_policy(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiQuery(q): ApiQuery<super::risk::TenantWriteQuery>,
    ApiJson(body): ApiJson<PolicyBody>,
) -> ApiResult {
    let tenant = principal.write_tenant(body.tenant_id.clone().or(q.tenant_id))?;
    let mut policy = AgentPolicy::default_for(body.agent_id.trim(), tenant.as_deref());
    if let Some(v) = body.atl {
        policy.atl = v;
    }
    if let Some(v) = body.max_risk_score {
        policy.max_risk_score = v;
    }
    if let Some(v) = body.max_blast_severity {
        policy.max_blast_severity = v;
    }
    if let Some(v) = body.min_test_coverage {
        policy.min_test_coverage = v;
    }
    if let Some(v) = body.require_compliance_pass {
        policy.require_compliance_pass = v;
    }
    if let Some(v) = body.require_human_approval {
        policy.require_human_approval = v;
    }
    if let Some(v) = body.require_dual_approval_on_critical {
        policy.require_dual_approval_on_critical = v;
    }
    if let Some(v) = body.allow_actions {
        policy.allow_actions = v;
    }
    if let Some(overrides) = body.action_overrides {
        policy.action_overrides = overrides
            .into_iter()
            .map(|(action, limits)| {
                (
                    action,
                    ActionLimits {
                        max_risk_score: limits.max_risk_score,
                        max_blast_severity: limits.max_blast_severity,
                    },
                )
            })
            .collect();
    }
    policy.expires_at = parse_time("expires_at", body.expires_at)?;
    let version = agents::set_policy(&state.services, &principal.actor, &policy).await?;
    typed(serde_json::json!({"ok": true, "policy": policy, "version": version}))
}

/// `POST /agent/authorize`.
pub(super) async fn authorize(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<AuthorizeBody>,
) -> ApiResult {
    for (field, value, most) in [
        ("agent_id", &body.agent_id, Some(200)),
        ("action", &body.action, Some(100)),
        ("intent_id", &body.intent_id, None),
    ] {
        let length = value.chars().count();
        if value.trim().is_empty() || most.is_some_and(|m| length > m) {
            return Err(ApiError::BadRequest(match most {
                Some(m) => format!("{field}: 1 to {m} characters, not all blank"),
                None => format!("{field}: must not be blank"),
            }));
        }
    }
    let approvals = body.human_approvals.unwrap_or(0);
    if approvals > 1000 {
        return Err(ApiError::BadRequest(format!(
            "human_approvals: at most 1000, got {approvals}"
        )));
    }
    let intent = visible_intent(&state, &principal, &body.intent_id).await?;
    typed(
        agents::authorize(
            &state.services,
            &principal.actor,
            body.agent_id.trim(),
            body.action.trim(),
            &intent,
            approvals,
        )
        .await?,
    )
}

/// The routes of this resource, for the table.
pub(super) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: "get",
            path: "/agent/policy",
            summary: "The tenant's agent policies, or one agent's (its default when none is stored).",
            role: Role::Viewer,
            scope: "agents.read",
            params: &[],
            query: Some(schema_of::<PolicyQuery>),
            body: None,
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: get(list_policies),
        },
        Route {
            method: "post",
            path: "/agent/policy",
            summary: "Store an agent's policy in the tenant (fields left out take the defaults), recorded as agent.policy_updated with its version.",
            role: Role::Operator,
            scope: "agents.write",
            params: &[],
            query: Some(schema_of::<super::risk::TenantWriteQuery>),
            body: Some(BodySpec::of::<PolicyBody>(
                "The policy; values out of range are refused, naming the field.",
            )),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(set_policy),
        },
        Route {
            method: "post",
            path: "/agent/authorize",
            summary: "Whether an agent may take an action on an intent now, with every reason it may not; recorded as agent.authorized.",
            role: Role::Admin,
            scope: "agents.admin",
            params: &[],
            query: None,
            body: Some(BodySpec::of::<AuthorizeBody>(
                "The agent, the action, the intent and the approvals it has.",
            )),
            success: 200,
            conditional: false,
            answer: Answer::Json,
            handler: post(authorize),
        },
    ]
}
