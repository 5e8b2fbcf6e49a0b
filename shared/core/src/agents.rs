//! Agent policies and authorization (spec §1.6, §11): what a coding agent may do on its own.
//! A policy names the actions an agent is allowed, the risk and blast radius it may act on,
//! and whether a passing compliance report and human approvals are required. `authorize`
//! answers one request with every reason it is refused, so an orchestrator can show them all.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::intent::RiskLevel;

/// How far a change's damage reaches, from its damage score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlastSeverity {
    /// Damage below 30.
    Low,
    /// Below 50.
    Medium,
    /// Below 75.
    High,
    /// 75 or more.
    Critical,
}

impl BlastSeverity {
    /// The severity of a damage score.
    pub fn of_damage(damage: f64) -> BlastSeverity {
        if damage < 30.0 {
            BlastSeverity::Low
        } else if damage < 50.0 {
            BlastSeverity::Medium
        } else if damage < 75.0 {
            BlastSeverity::High
        } else {
            BlastSeverity::Critical
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            BlastSeverity::Low => "low",
            BlastSeverity::Medium => "medium",
            BlastSeverity::High => "high",
            BlastSeverity::Critical => "critical",
        }
    }
}

/// Limits an action may override.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionLimits {
    /// Highest risk score allowed for this action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_risk_score: Option<f64>,
    /// Widest blast radius allowed for this action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blast_severity: Option<BlastSeverity>,
}

/// What an agent may do on its own, in a tenant (the original's defaults where not given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentPolicy {
    /// The agent.
    pub agent_id: String,
    /// The tenant (`None`: intents without one).
    pub tenant_id: Option<String>,
    /// Autonomy level, 0 (none) to 3.
    pub atl: u8,
    /// Highest risk score the agent may act on.
    pub max_risk_score: f64,
    /// Widest blast radius it may act on.
    pub max_blast_severity: BlastSeverity,
    /// Test coverage asked for (recorded; nothing measures coverage yet, as in the original).
    pub min_test_coverage: f64,
    /// Whether the tenant's compliance report must pass.
    pub require_compliance_pass: bool,
    /// Whether a human must have approved.
    pub require_human_approval: bool,
    /// Whether critical intents need two approvals.
    pub require_dual_approval_on_critical: bool,
    /// The actions it may take.
    pub allow_actions: Vec<String>,
    /// Limits per action, over the general ones.
    pub action_overrides: BTreeMap<String, ActionLimits>,
    /// When the policy stops allowing anything.
    pub expires_at: Option<DateTime<Utc>>,
}

impl AgentPolicy {
    /// The policy of an agent nobody wrote one for: analysis only, low risk, approvals needed.
    pub fn default_for(agent_id: &str, tenant_id: Option<&str>) -> AgentPolicy {
        AgentPolicy {
            agent_id: agent_id.to_owned(),
            tenant_id: tenant_id.map(str::to_owned),
            atl: 0,
            max_risk_score: 30.0,
            max_blast_severity: BlastSeverity::Low,
            min_test_coverage: 0.0,
            require_compliance_pass: true,
            require_human_approval: true,
            require_dual_approval_on_critical: true,
            allow_actions: vec!["analyze".to_owned()],
            action_overrides: BTreeMap::new(),
            expires_at: None,
        }
    }

    /// Checks the ranges a stored policy must keep, naming the field.
    pub fn validate(&self) -> Result<(), AgentPolicyError> {
        let refuse = |field: &str, reason: String| {
            Err(AgentPolicyError {
                field: field.to_owned(),
                reason,
            })
        };
        if self.agent_id.trim().is_empty() {
            return refuse("agent_id", "must not be empty".to_owned());
        }
        let length = self.agent_id.chars().count();
        if length > 200 {
            return refuse("agent_id", format!("at most 200 characters, got {length}"));
        }
        if self.atl > 3 {
            return refuse("atl", format!("must be 0 to 3, got {}", self.atl));
        }
        if !(0.0..=100.0).contains(&self.max_risk_score) {
            return refuse(
                "max_risk_score",
                format!("must be 0 to 100, got {}", self.max_risk_score),
            );
        }
        if !(0.0..=1.0).contains(&self.min_test_coverage) {
            return refuse(
                "min_test_coverage",
                format!("must be 0 to 1, got {}", self.min_test_coverage),
            );
        }
        if self.allow_actions.len() > 50 {
            return refuse(
                "allow_actions",
                format!("at most 50 actions, got {}", self.allow_actions.len()),
            );
        }
        for action in &self.allow_actions {
            let length = action.chars().count();
            if action.trim().is_empty() || length > 100 {
                return refuse(
                    "allow_actions",
                    format!("an action is a name of 1 to 100 characters, got '{action}'"),
                );
            }
        }
        for (action, limits) in &self.action_overrides {
            if let Some(score) = limits.max_risk_score
                && !(0.0..=100.0).contains(&score)
            {
                return refuse(
                    &format!("action_overrides.{action}.max_risk_score"),
                    format!("must be 0 to 100, got {score}"),
                );
            }
        }
        Ok(())
    }
}

/// A policy out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct AgentPolicyError {
    /// The field.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// What authorization reads besides the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizationFacts {
    /// The intent's latest risk score, if it was evaluated.
    pub risk_score: Option<f64>,
    /// Its latest damage score, if it was evaluated.
    pub damage_score: Option<f64>,
    /// Its risk level.
    pub risk_level: RiskLevel,
    /// Whether the tenant's compliance report passes now.
    pub compliance_passed: bool,
    /// Human approvals the caller reports.
    pub human_approvals: u32,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The limits that applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveLimits {
    /// Highest risk score.
    pub max_risk_score: f64,
    /// Widest blast radius.
    pub max_blast_severity: BlastSeverity,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Authorization {
    /// The agent.
    pub agent_id: String,
    /// What it asked to do.
    pub action: String,
    /// On which intent.
    pub intent_id: String,
    /// Whether it may.
    pub allowed: bool,
    /// Every reason it may not (empty when allowed).
    pub reasons: Vec<String>,
    /// Its autonomy level.
    pub atl: u8,
    /// The limits that applied.
    pub effective_limits: EffectiveLimits,
    /// Approvals counted.
    pub human_approvals: u32,
    /// When.
    pub timestamp: DateTime<Utc>,
}

/// Whether `policy`'s agent may take `action` on `intent_id`, with every reason it may not.
pub fn authorize(
    policy: &AgentPolicy,
    action: &str,
    intent_id: &str,
    facts: &AuthorizationFacts,
) -> Authorization {
    let overrides = policy.action_overrides.get(action);
    let limits = EffectiveLimits {
        max_risk_score: overrides
            .and_then(|o| o.max_risk_score)
            .unwrap_or(policy.max_risk_score),
        max_blast_severity: overrides
            .and_then(|o| o.max_blast_severity)
            .unwrap_or(policy.max_blast_severity),
    };
    let mut reasons = Vec::new();
    if let Some(expired) = policy.expires_at.filter(|at| *at <= facts.now) {
        reasons.push(format!("the policy expired at {}", expired.to_rfc3339()));
    }
    if !policy.allow_actions.iter().any(|a| a == action) {
        reasons.push(format!(
            "action '{action}' is not allowed (allowed: {})",
            policy.allow_actions.join(", ")
        ));
    }
    if let Some(score) = facts.risk_score
        && score > limits.max_risk_score
    {
        reasons.push(format!(
            "risk score {score} is above {}",
            limits.max_risk_score
        ));
    }
    if let Some(damage) = facts.damage_score {
        let blast = BlastSeverity::of_damage(damage);
        if blast > limits.max_blast_severity {
            reasons.push(format!(
                "blast radius {} (damage {damage}) is wider than {}",
                blast.as_str(),
                limits.max_blast_severity.as_str()
            ));
        }
    }
    if policy.require_compliance_pass && !facts.compliance_passed {
        reasons.push("the compliance report does not pass".to_owned());
    }
    if policy.require_human_approval && facts.human_approvals < 1 {
        reasons.push("a human approval is required".to_owned());
    }
    if policy.require_dual_approval_on_critical
        && facts.risk_level == RiskLevel::Critical
        && facts.human_approvals < 2
    {
        reasons.push("a critical intent needs two human approvals".to_owned());
    }
    Authorization {
        agent_id: policy.agent_id.clone(),
        action: action.to_owned(),
        intent_id: intent_id.to_owned(),
        allowed: reasons.is_empty(),
        reasons,
        atl: policy.atl,
        effective_limits: limits,
        human_approvals: facts.human_approvals,
        timestamp: facts.now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> AuthorizationFacts {
        AuthorizationFacts {
            risk_score: Some(20.0),
            damage_score: Some(10.0),
            risk_level: RiskLevel::Medium,
            compliance_passed: true,
            human_approvals: 1,
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn the_default_policy_allows_analysis_of_a_small_approved_change_only() {
        let policy = AgentPolicy::default_for("codex-7", Some("acme"));
        assert!(authorize(&policy, "analyze", "i", &facts()).allowed);
        let merge = authorize(&policy, "merge", "i", &facts());
        assert!(!merge.allowed);
        assert_eq!(
            merge.reasons,
            ["action 'merge' is not allowed (allowed: analyze)"]
        );
    }

    #[test]
    fn every_reason_is_listed_and_overrides_apply_per_action() {
        let mut policy = AgentPolicy::default_for("codex-7", None);
        policy.allow_actions = vec!["merge".into()];
        policy.expires_at = Some(facts().now);
        let refused = authorize(
            &policy,
            "merge",
            "i",
            &AuthorizationFacts {
                risk_score: Some(55.0),
                damage_score: Some(80.0),
                risk_level: RiskLevel::Critical,
                compliance_passed: false,
                human_approvals: 1,
                ..facts()
            },
        );
        assert_eq!(refused.reasons.len(), 5, "{:?}", refused.reasons);
        assert!(refused.reasons[2].contains("blast radius critical"));
        policy.expires_at = None;
        policy.action_overrides.insert(
            "merge".into(),
            ActionLimits {
                max_risk_score: Some(60.0),
                max_blast_severity: Some(BlastSeverity::Critical),
            },
        );
        policy.require_compliance_pass = false;
        let allowed = authorize(
            &policy,
            "merge",
            "i",
            &AuthorizationFacts {
                risk_score: Some(55.0),
                damage_score: Some(80.0),
                risk_level: RiskLevel::Critical,
                human_approvals: 2,
                ..facts()
            },
        );
        assert!(allowed.allowed, "{:?}", allowed.reasons);
        assert_eq!(allowed.effective_limits.max_risk_score, 60.0);
    }

    #[test]
    fn a_policy_out_of_range_is_refused_naming_the_field() {
        let mut policy = AgentPolicy::default_for("a", None);
        policy.allow_actions = vec!["x".repeat(101)];
        assert_eq!(
            policy.validate().map_err(|e| e.field),
            Err("allow_actions".to_owned())
        );
        policy.allow_actions = vec!["merge".into(); 51];
        assert_eq!(
            policy.validate().map_err(|e| e.field),
            Err("allow_actions".to_owned())
        );
        policy.allow_actions = vec!["merge".into()];
        policy.atl = 4;
        assert_eq!(
            policy.validate().map_err(|e| e.field),
            Err("atl".to_owned())
        );
        policy.atl = 3;
        policy.agent_id = "a".repeat(201);
        assert_eq!(
            policy.validate().map_err(|e| e.field),
            Err("agent_id".to_owned())
        );
    }

    #[test]
    fn blast_severity_follows_the_damage_bands() {
        assert_eq!(BlastSeverity::of_damage(29.9), BlastSeverity::Low);
        assert_eq!(BlastSeverity::of_damage(30.0), BlastSeverity::Medium);
        assert_eq!(BlastSeverity::of_damage(74.9), BlastSeverity::High);
        assert_eq!(BlastSeverity::of_damage(75.0), BlastSeverity::Critical);
    }
}
