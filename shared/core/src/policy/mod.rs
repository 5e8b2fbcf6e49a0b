//! Policy: whether a change with a given risk evaluation may advance.
//!
//! A profile per risk level holds the thresholds; origin overrides adjust them per origin
//! (`agent`, `human`, …). Five gates run in a fixed order — verification, containment,
//! entropy, security, coherence — and the verdict is ALLOW only if all pass. The risk gate then
//! compares the composite scores with the configured limits; in `shadow` mode it only reports,
//! in `enforce` mode it blocks the intents whose rollout bucket falls under `enforce_ratio`.
//!
//! Reasons, number types (integers for the verification gate, floats elsewhere) and list
//! orders are part of the contract: they reach events, check runs and the API unchanged.

mod config;
mod pyfmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::intent::RiskLevel;
use crate::numeric::py_round;
use crate::risk::RiskEval;
pub use config::{
    ConfigError, OriginOverrides, PolicyConfig, Profile, ProfilePatch, QueueSettings, RiskGateMode,
    RiskGateSettings, SecurityLimits, Threshold,
};
use pyfmt::py_list_repr;
pub(crate) use pyfmt::py_list_repr as py_list;

/// ALLOW or BLOCK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Every gate passed.
    Allow,
    /// At least one gate failed.
    Block,
}

/// The five gates, in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateName {
    /// Required checks passed.
    Verification,
    /// The change is contained enough.
    Containment,
    /// The change adds little enough disorder.
    Entropy,
    /// Security findings are within limits.
    Security,
    /// The coherence harness is satisfied.
    Coherence,
}

impl GateName {
    /// The stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            GateName::Verification => "verification",
            GateName::Containment => "containment",
            GateName::Entropy => "entropy",
            GateName::Security => "security",
            GateName::Coherence => "coherence",
        }
    }
}

/// A gate's measured value or threshold: a count (serialised as an integer) or an amount
/// (serialised as a float, `17.0` not `17`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Measure {
    /// Whole number of things (checks).
    Count(u64),
    /// A score or limit.
    Amount(f64),
}

/// The outcome of one gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// Which gate.
    pub gate: GateName,
    /// Whether it passed.
    pub passed: bool,
    /// What was measured.
    pub value: Measure,
    /// What it was compared with.
    pub threshold: Measure,
    /// Why, in words.
    pub reason: String,
}

/// The outcome of all gates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyEvaluation {
    /// ALLOW iff every gate passed.
    pub verdict: Verdict,
    /// The risk level whose profile was used.
    pub profile_used: RiskLevel,
    /// Gate results in evaluation order.
    pub gates: Vec<GateResult>,
}

impl PolicyEvaluation {
    /// Names of the gates that failed, in order.
    pub fn failed_gates(&self) -> Vec<&'static str> {
        self.gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| g.gate.as_str())
            .collect()
    }

    /// The block reason: `Policy blocked: gates ['entropy', ...]`.
    pub fn block_reason(&self) -> String {
        format!(
            "Policy blocked: gates {}",
            py_list_repr(&self.failed_gates())
        )
    }
}

/// Security findings counted by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecurityCounts {
    /// Critical findings.
    pub critical: u32,
    /// High findings.
    pub high: u32,
}

/// What the gates look at.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    /// Level whose profile applies.
    pub risk_level: RiskLevel,
    /// Origin of the intent, for origin overrides.
    pub origin_type: Option<&'a str>,
    /// Checks that ran and passed.
    pub checks_passed: &'a [String],
    /// Entropy score of the risk evaluation.
    pub entropy_delta: f64,
    /// Containment score of the risk evaluation.
    pub containment_score: f64,
    /// Security findings.
    pub security: SecurityCounts,
    /// Coherence score, when a harness ran (or the pass-through 100.0).
    pub coherence_score: Option<f64>,
}

/// The coherence score used when no coherence harness is configured: an automatic pass.
pub const COHERENCE_WITHOUT_HARNESS: f64 = 100.0;

impl<'a> PolicyInput<'a> {
    /// The gates' input for a risk evaluation, as the pipeline runs them today: no security
    /// scanner (zero findings) and no coherence harness (the pass-through score).
    pub fn for_risk(
        risk: &RiskEval,
        risk_level: RiskLevel,
        origin_type: Option<&'a str>,
        checks_passed: &'a [String],
    ) -> PolicyInput<'a> {
        PolicyInput {
            risk_level,
            origin_type,
            checks_passed,
            entropy_delta: risk.entropy_score,
            containment_score: risk.containment_score,
            security: SecurityCounts::default(),
            coherence_score: Some(COHERENCE_WITHOUT_HARNESS),
        }
    }
}

/// Runs the five gates.
pub fn evaluate_policy(input: &PolicyInput<'_>, config: &PolicyConfig) -> PolicyEvaluation {
    let profile = config.profile_for(input.risk_level, input.origin_type);
    let mut gates = Vec::with_capacity(5);

    let missing: Vec<&str> = profile
        .checks
        .iter()
        .filter(|c| !input.checks_passed.contains(c))
        .map(String::as_str)
        .collect();
    gates.push(GateResult {
        gate: GateName::Verification,
        passed: missing.is_empty(),
        value: Measure::Count(input.checks_passed.len() as u64),
        threshold: Measure::Count(profile.checks.len() as u64),
        reason: if missing.is_empty() {
            "All required checks passed".to_owned()
        } else {
            format!("Missing checks: {}", py_list_repr(&missing))
        },
    });

    let (containment, minimum) = (input.containment_score, profile.containment_min);
    gates.push(GateResult {
        gate: GateName::Containment,
        passed: containment >= minimum,
        value: Measure::Amount(containment),
        threshold: Measure::Amount(minimum),
        reason: format!("Containment {containment:.2} vs min {minimum:.2}"),
    });

    let (entropy, budget) = (input.entropy_delta, profile.entropy_budget);
    gates.push(GateResult {
        gate: GateName::Entropy,
        passed: entropy <= budget,
        value: Measure::Amount(entropy),
        threshold: Measure::Amount(budget),
        reason: format!("Entropy delta {entropy:.1} vs budget {budget:.1}"),
    });

    let SecurityCounts { critical, high } = input.security;
    let SecurityLimits {
        max_critical,
        max_high,
    } = profile.security;
    gates.push(GateResult {
        gate: GateName::Security,
        passed: critical <= max_critical && high <= max_high,
        value: Measure::Amount(f64::from(critical) * 10.0 + f64::from(high)),
        threshold: Measure::Amount(f64::from(max_critical) * 10.0 + f64::from(max_high)),
        reason: format!(
            "Security: {critical} critical, {high} high (max critical={max_critical}, max high={max_high})"
        ),
    });

    if let Some(score) = input.coherence_score {
        let (pass, warn) = (profile.coherence_pass, profile.coherence_warn);
        let reason = if score >= pass.value() {
            format!("Coherence score {score:.1} (pass threshold={pass})")
        } else if score >= warn.value() {
            format!("Coherence score {score:.1} (warn zone: {warn}-{pass})")
        } else {
            format!("Coherence score {score:.1} below warn threshold {warn}")
        };
        gates.push(GateResult {
            gate: GateName::Coherence,
            passed: score >= warn.value(),
            value: Measure::Amount(score),
            threshold: Measure::Amount(warn.value()),
            reason,
        });
    }

    let verdict = if gates.iter().all(|g| g.passed) {
        Verdict::Allow
    } else {
        Verdict::Block
    };
    PolicyEvaluation {
        verdict,
        profile_used: input.risk_level,
        gates,
    }
}

/// A composite score over its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    /// `risk_score`, `damage_score` or `propagation_score`.
    pub metric: String,
    /// The score.
    pub value: f64,
    /// The limit it exceeds.
    pub limit: f64,
}

/// The outcome of the risk gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskGateResult {
    /// Whether any score is over its limit.
    pub would_block: bool,
    /// Whether the gate actually blocks (enforce mode, breach, in the enforcement group).
    pub enforced: bool,
    /// `shadow` or `enforce`.
    pub mode: RiskGateMode,
    /// Share of intents under enforcement.
    pub enforce_ratio: f64,
    /// The intent's deterministic bucket in [0, 1] (4 places).
    pub rollout_bucket: f64,
    /// Whether the bucket falls under the ratio.
    pub in_enforcement_group: bool,
    /// Scores over their limits, in the order risk, damage, propagation.
    pub breaches: Vec<Breach>,
}

impl RiskGateResult {
    /// The block reason when enforced.
    pub fn block_reason(&self) -> String {
        let breaches: Vec<String> = self
            .breaches
            .iter()
            .map(|b| {
                format!(
                    "{{'metric': '{}', 'value': {}, 'limit': {}}}",
                    b.metric,
                    pyfmt::py_float_repr(b.value),
                    pyfmt::py_float_repr(b.limit)
                )
            })
            .collect();
        format!("Risk gate enforced: [{}]", breaches.join(", "))
    }
}

/// The deterministic rollout bucket of an intent: the first 32 bits of SHA-256 of its id,
/// divided by 2^32 − 1. The same intent always lands in the same bucket, across retries.
pub fn rollout_bucket(intent_id: &str) -> f64 {
    let digest = Sha256::digest(intent_id.as_bytes());
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    f64::from(head) / f64::from(u32::MAX)
}

/// Runs the risk gate on the composite scores of a risk evaluation.
pub fn evaluate_risk_gate(
    intent_id: &str,
    risk: &RiskEval,
    settings: &RiskGateSettings,
) -> RiskGateResult {
    let breaches: Vec<Breach> = [
        ("risk_score", risk.risk_score, settings.max_risk_score),
        ("damage_score", risk.damage_score, settings.max_damage_score),
        (
            "propagation_score",
            risk.propagation_score,
            settings.max_propagation_score,
        ),
    ]
    .into_iter()
    .filter(|&(_, value, limit)| value > limit)
    .map(|(metric, value, limit)| Breach {
        metric: metric.to_owned(),
        value,
        limit,
    })
    .collect();
    let would_block = !breaches.is_empty();
    let bucket = rollout_bucket(intent_id);
    let in_enforcement_group = bucket < settings.enforce_ratio;
    RiskGateResult {
        would_block,
        enforced: settings.mode == RiskGateMode::Enforce && would_block && in_enforcement_group,
        mode: settings.mode,
        enforce_ratio: settings.enforce_ratio,
        rollout_bucket: py_round(bucket, 4),
        in_enforcement_group,
        breaches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(level: RiskLevel, checks: &'a [String]) -> PolicyInput<'a> {
        PolicyInput {
            risk_level: level,
            origin_type: None,
            checks_passed: checks,
            entropy_delta: 17.0,
            containment_score: 0.72,
            security: SecurityCounts::default(),
            coherence_score: Some(COHERENCE_WITHOUT_HARNESS),
        }
    }

    #[test]
    fn missing_checks_block_with_the_reference_reason() {
        let checks = vec!["lint".to_owned()];
        let eval = evaluate_policy(&input(RiskLevel::High, &checks), &PolicyConfig::default());
        assert_eq!(eval.verdict, Verdict::Block);
        assert_eq!(eval.gates[0].reason, "Missing checks: ['unit_tests']");
        assert_eq!(eval.gates[0].value, Measure::Count(1));
        assert_eq!(eval.gates[0].threshold, Measure::Count(2));
        assert_eq!(
            eval.block_reason(),
            "Policy blocked: gates ['verification', 'entropy']"
        );
    }

    #[test]
    fn coherence_zones() {
        let checks = vec!["lint".to_owned()];
        let config = PolicyConfig::default();
        let mut i = input(RiskLevel::Medium, &checks);
        i.coherence_score = Some(70.0);
        let gate = evaluate_policy(&i, &config).gates.pop();
        assert_eq!(
            gate.map(|g| (g.passed, g.reason)),
            Some((true, "Coherence score 70.0 (warn zone: 60-75)".to_owned()))
        );
        i.coherence_score = Some(59.9);
        let gate = evaluate_policy(&i, &config).gates.pop();
        assert_eq!(
            gate.map(|g| (g.passed, g.reason)),
            Some((
                false,
                "Coherence score 59.9 below warn threshold 60".to_owned()
            ))
        );
    }

    fn scores(risk_score: f64) -> RiskEval {
        let subject = crate::risk::ChangeSubject {
            intent_id: "i-1",
            source: "s",
            target: "t",
            risk_level: RiskLevel::Low,
            dependencies: &[],
            scope_hints: &[],
        };
        let mut eval = crate::risk::evaluate_risk(&subject, &crate::Simulation::default(), &[]);
        (eval.risk_score, eval.damage_score, eval.propagation_score) = (risk_score, 10.0, 10.0);
        eval
    }

    #[test]
    fn risk_gate_enforces_only_inside_the_rollout_group() {
        let mut settings = RiskGateSettings::default();
        let shadow = evaluate_risk_gate("i-1", &scores(70.0), &settings);
        assert!(shadow.would_block && !shadow.enforced);
        settings.mode = RiskGateMode::Enforce;
        let enforced = evaluate_risk_gate("i-1", &scores(70.0), &settings);
        assert!(enforced.enforced);
        assert_eq!(
            enforced.block_reason(),
            "Risk gate enforced: [{'metric': 'risk_score', 'value': 70.0, 'limit': 65.0}]"
        );
        settings.enforce_ratio = 0.0;
        assert!(!evaluate_risk_gate("i-1", &scores(70.0), &settings).enforced);
    }
}
