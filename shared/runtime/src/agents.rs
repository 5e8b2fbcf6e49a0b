//! Agent policies as the server keeps them (one per agent and tenant, versioned, each change
//! recorded as `agent.policy_updated`) and authorization requests (`agent.authorized`).

use converge_core::agents::{self, AgentPolicy, Authorization, AuthorizationFacts};
use converge_core::{EventType, Intent};
use converge_store::{AgentPolicyWrite, Commit, StoreError};
use serde_json::{Value, json};

use crate::analytics::AnalyticsError;
use crate::services::Services;

/// Why a policy was not stored or a request not answered.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A field is out of range.
    #[error(transparent)]
    Invalid(#[from] agents::AgentPolicyError),
    /// The store failed, or the policy changed since it was read
    /// ([`StoreError::Conflict`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Counting the compliance report failed.
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
}

/// The policy of an agent in a tenant: the stored one, else the default.
pub async fn policy_of(
    services: &Services,
    agent_id: &str,
    tenant: Option<&str>,
) -> Result<(AgentPolicy, i64), AgentError> {
    match services
        .store
        .agent_policy(agent_id, tenant.unwrap_or(""))
        .await?
    {
        Some(doc) => match serde_json::from_value::<AgentPolicy>(doc.data) {
            Ok(policy) => Ok((policy, doc.version)),
            Err(e) => Err(AgentError::Store(StoreError::Config(format!(
                "the stored policy of agent '{agent_id}' cannot be read: {e}"
            )))),
        },
        None => Ok((AgentPolicy::default_for(agent_id, tenant), 0)),
    }
}

/// Stores `policy` over the version read just before (a write made meanwhile fails with a
/// conflict), with its `agent.policy_updated` event. Returns the new version.
pub async fn set_policy(
    services: &Services,
    actor: &str,
    policy: &AgentPolicy,
) -> Result<i64, AgentError> {
    policy.validate()?;
    let tenant = policy.tenant_id.clone().unwrap_or_default();
    let current = services
        .store
        .agent_policy(&policy.agent_id, &tenant)
        .await?;
    let version = current.as_ref().map_or(1, |c| c.version + 1);
    let stored = serde_json::to_value(policy).unwrap_or(Value::Null);
    let event = crate::commands::api_event(
        services,
        actor,
        EventType::AgentPolicyUpdated,
        None,
        policy.tenant_id.as_deref(),
        json!({"policy": stored, "version": version}),
    );
    services
        .store
        .commit(&Commit {
            events: vec![event],
            agent_policies: vec![AgentPolicyWrite {
                agent_id: policy.agent_id.clone(),
                tenant,
                policy: stored,
                expected_version: current.map(|c| c.version),
            }],
            ..Commit::default()
        })
        .await?;
    Ok(version)
}

/// Whether `agent_id` may take `action` on `intent` (the caller checked it may see it), from
/// the agent's policy in the intent's tenant, the intent's latest risk evaluation and, when the
/// policy asks, the tenant's compliance report; recorded as `agent.authorized`.
pub async fn authorize(
    services: &Services,
    actor: &str,
    agent_id: &str,
    action: &str,
    intent: &Intent,
    human_approvals: u32,
) -> Result<Authorization, AgentError> {
    let tenant = intent.tenant_id.as_deref();
    let (policy, _) = policy_of(services, agent_id, tenant).await?;
    let now = services.clock.now();
    let risk = services
        .store
        .latest_events(EventType::RiskEvaluated, std::slice::from_ref(&intent.id))
        .await?
        .into_iter()
        .next()
        .map(|e| e.event.payload);
    let score = |key: &str| {
        risk.as_ref()
            .and_then(|r| r.get(key))
            .and_then(Value::as_f64)
    };
    let compliance_passed = if policy.require_compliance_pass {
        crate::analytics::compliance(&services.store, tenant, now)
            .await?
            .passed
    } else {
        true
    };
    let answer = agents::authorize(
        &policy,
        action,
        &intent.id,
        &AuthorizationFacts {
            risk_score: score("risk_score"),
            damage_score: score("damage_score"),
            risk_level: intent.risk_level,
            compliance_passed,
            human_approvals,
            now,
        },
    );
    let event = crate::commands::api_event(
        services,
        actor,
        EventType::AgentAuthorized,
        Some(&intent.id),
        tenant,
        serde_json::to_value(&answer).unwrap_or(Value::Null),
    );
    services
        .store
        .commit(&Commit {
            events: vec![event],
            ..Commit::default()
        })
        .await?;
    Ok(answer)
}
