//! Offline assessment of a change: risk, auto-classification, policy gates and risk gate,
//! with no simulation or checks to run.
//!
//! This is what `converge risk eval` and `converge policy eval` compute from a file, and what
//! the parity fixtures pin down. It keeps the reference's assumptions for a dry run: the
//! checks that passed are those the *declared* level requires (so an intent that
//! auto-classification moves up is shown failing verification for checks nobody ran: that is
//! the reference's trap, visible here on purpose), there is no coherence harness (the gate sees
//! the pass-through score 100.0) and no security findings. The real pipeline
//! ([`crate::pipeline`]) runs the checks of the new level instead.

use serde::{Deserialize, Serialize};

use crate::intent::{DEFAULT_PRIORITY, RiskLevel};
use crate::policy::{
    PolicyConfig, PolicyEvaluation, PolicyInput, RiskGateResult, evaluate_policy,
    evaluate_risk_gate,
};
use crate::risk::{ChangeSubject, CouplingPair, RiskEval, evaluate_risk};
use crate::simulation::Simulation;

/// The intent fields an assessment reads (the parity cases' `input.intent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentSketch {
    /// Intent id.
    pub id: String,
    /// Source branch.
    pub source: String,
    /// Target branch.
    #[serde(default = "default_target")]
    pub target: String,
    /// Declared risk level.
    #[serde(default = "default_level")]
    pub risk_level: RiskLevel,
    /// Queue priority (no effect on the assessment).
    #[serde(default = "default_priority")]
    pub priority: i64,
    /// Intents this one depends on.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Origin, for origin overrides.
    #[serde(default = "default_origin")]
    pub origin_type: String,
    /// Technical details; only `scope_hint` is read.
    #[serde(default)]
    pub technical: TechnicalSketch,
}

/// The technical fields an assessment reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TechnicalSketch {
    /// Scope hints.
    #[serde(default)]
    pub scope_hint: Vec<String>,
}

fn default_target() -> String {
    "main".to_owned()
}
fn default_level() -> RiskLevel {
    RiskLevel::Medium
}
fn default_priority() -> i64 {
    DEFAULT_PRIORITY
}
fn default_origin() -> String {
    "human".to_owned()
}

/// Everything an offline assessment needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssessmentInput {
    /// The intent.
    pub intent: IntentSketch,
    /// The merge simulation.
    pub simulation: Simulation,
    /// Co-change history.
    #[serde(default)]
    pub coupling: Vec<CouplingPair>,
}

/// The outcome of an offline assessment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The risk evaluation.
    pub risk: RiskEval,
    /// The level auto-classification moved the intent to, if it differs from the declared one.
    pub reclassified_level: Option<RiskLevel>,
    /// The policy gates, with the profile of the (re)classified level.
    pub policy: PolicyEvaluation,
    /// The risk gate.
    pub risk_gate: RiskGateResult,
}

/// Assesses a change under a policy configuration.
pub fn assess(input: &AssessmentInput, config: &PolicyConfig) -> Assessment {
    let intent = &input.intent;
    let subject = ChangeSubject {
        intent_id: &intent.id,
        source: &intent.source,
        target: &intent.target,
        risk_level: intent.risk_level,
        dependencies: &intent.dependencies,
        scope_hints: &intent.technical.scope_hint,
    };
    let checks_passed = config.profile_for(intent.risk_level, None).checks;
    let risk = evaluate_risk(&subject, &input.simulation, &input.coupling);

    let classified = risk.classified_level();
    let reclassified_level = (classified != intent.risk_level).then_some(classified);
    let policy = evaluate_policy(
        &PolicyInput::for_risk(&risk, classified, Some(&intent.origin_type), &checks_passed),
        config,
    );
    let risk_gate = evaluate_risk_gate(&intent.id, &risk, &config.risk);
    Assessment {
        risk,
        reclassified_level,
        policy,
        risk_gate,
    }
}
