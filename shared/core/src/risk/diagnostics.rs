//! Diagnostics: a reviewer's reading of a risk evaluation — what is high, why it matters and
//! what to do — ordered from critical to low. The thresholds and words are the reference's;
//! unlike the reference's review (which dropped the signals), all seven threshold rules apply.

use serde::{Deserialize, Serialize};

use super::{Bomb, RiskEval, Severity};
use crate::simulation::{CONFLICTS_SHOWN, Simulation};

/// One diagnostic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// How much it matters.
    pub severity: Severity,
    /// Stable code (`diag.high_risk`, `diag.bomb.cascade`, …).
    pub code: String,
    /// What was seen.
    pub explanation: String,
    /// What to do about it (may be empty).
    pub recommendation: String,
}

/// A threshold rule: the value, whether it fires, its escalation, and the words.
struct Rule {
    code: &'static str,
    value: f64,
    fires: bool,
    severity: Severity,
    escalated: Option<Severity>,
    explanation: String,
    recommendation: &'static str,
}

fn rules(r: &RiskEval) -> Vec<Rule> {
    let s = r.signals;
    vec![
        Rule {
            code: "diag.high_risk",
            value: r.risk_score,
            fires: r.risk_score > 60.0,
            severity: Severity::High,
            escalated: (r.risk_score > 80.0).then_some(Severity::Critical),
            explanation: format!(
                "Combined risk score {:.0} exceeds safe threshold",
                r.risk_score
            ),
            recommendation: "Split this change into smaller, independent intents",
        },
        Rule {
            code: "diag.high_entropy",
            value: r.entropy_score,
            fires: r.entropy_score > 20.0,
            severity: Severity::Medium,
            escalated: (r.entropy_score > 40.0).then_some(Severity::High),
            explanation: format!(
                "Entropy score {:.0} indicates high disorder",
                r.entropy_score
            ),
            recommendation: "Reduce file count or dependencies before merging",
        },
        Rule {
            code: "diag.high_propagation",
            value: r.propagation_score,
            fires: r.propagation_score > 40.0,
            severity: Severity::High,
            escalated: None,
            explanation: format!(
                "Change propagation score {:.0} indicates wide blast radius",
                r.propagation_score
            ),
            recommendation: "Review impact graph and consider narrowing scope",
        },
        Rule {
            code: "diag.low_containment",
            value: r.containment_score,
            fires: r.containment_score < 0.4,
            severity: Severity::Medium,
            escalated: None,
            explanation: format!(
                "Containment {:.2} is below acceptable levels",
                r.containment_score
            ),
            recommendation: "Add scope hints or reduce cross-boundary dependencies",
        },
        Rule {
            code: "diag.high_entropic_load",
            value: s.entropic_load,
            fires: s.entropic_load > 50.0,
            severity: Severity::High,
            escalated: None,
            explanation: format!(
                "Entropic load {:.0} indicates high disorder introduction",
                s.entropic_load
            ),
            recommendation: "Reduce the number of files, directories, or dependencies touched",
        },
        Rule {
            code: "diag.high_contextual_value",
            value: s.contextual_value,
            fires: s.contextual_value > 60.0,
            severity: Severity::High,
            escalated: None,
            explanation: format!(
                "Change touches critical files (contextual value: {:.0})",
                s.contextual_value
            ),
            recommendation: "Ensure thorough review — these files have high centrality in the codebase",
        },
        Rule {
            code: "diag.path_dependent",
            value: s.path_dependence,
            fires: s.path_dependence > 40.0,
            severity: Severity::Medium,
            escalated: None,
            explanation: format!(
                "Path dependence {:.0}: merge order matters",
                s.path_dependence
            ),
            recommendation: "Coordinate merge timing with related intents",
        },
    ]
}

fn bomb_recommendation(bomb: &Bomb) -> &'static str {
    match bomb {
        Bomb::Cascade { .. } => {
            "Split change to avoid touching high-centrality files simultaneously"
        }
        Bomb::Spiral { .. } => "Break circular dependencies before merging",
        Bomb::ThermalDeath { .. } => "System is under stress — reduce change scope immediately",
    }
}

fn rank(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 0,
        Severity::High => 1,
        Severity::Medium => 2,
        Severity::Low => 3,
    }
}

/// The diagnostics of a risk evaluation (and of the simulation, when known), most severe
/// first; within a severity, in rule order: thresholds, conflicts, bombs, findings.
pub fn diagnose(risk: Option<&RiskEval>, simulation: Option<&Simulation>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if let Some(r) = risk {
        for rule in rules(r)
            .into_iter()
            .filter(|rule| rule.fires && rule.value.is_finite())
        {
            out.push(Diagnostic {
                severity: rule.escalated.unwrap_or(rule.severity),
                code: rule.code.to_owned(),
                explanation: rule.explanation,
                recommendation: rule.recommendation.to_owned(),
            });
        }
    }
    if let Some(sim) = simulation.filter(|s| !s.mergeable) {
        let shown: Vec<&str> = sim
            .conflicts
            .iter()
            .take(CONFLICTS_SHOWN)
            .map(String::as_str)
            .collect();
        out.push(Diagnostic {
            severity: Severity::Critical,
            code: "diag.merge_conflict".to_owned(),
            explanation: format!(
                "Merge has {} conflict(s): {}",
                sim.conflicts.len(),
                shown.join(", ")
            ),
            recommendation: "Resolve conflicts in source branch before retrying".to_owned(),
        });
    }
    if let Some(r) = risk {
        for bomb in &r.bombs {
            let (severity, message) = match bomb {
                Bomb::Cascade {
                    severity, message, ..
                }
                | Bomb::Spiral {
                    severity, message, ..
                }
                | Bomb::ThermalDeath {
                    severity, message, ..
                } => (*severity, message.clone()),
            };
            out.push(Diagnostic {
                severity,
                code: format!("diag.bomb.{}", bomb.kind()),
                explanation: message,
                recommendation: bomb_recommendation(bomb).to_owned(),
            });
        }
        for finding in &r.findings {
            out.push(Diagnostic {
                severity: finding.severity,
                code: finding.code.clone(),
                explanation: finding.message.clone(),
                recommendation: String::new(),
            });
        }
    }
    out.sort_by_key(|d| rank(d.severity));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RiskLevel;
    use crate::risk::{ChangeSubject, evaluate_risk};

    #[test]
    fn a_sprawling_conflicting_change_reads_as_such() {
        let files: Vec<String> = (0..40).map(|i| format!("src/m{}/f{i}.rs", i % 9)).collect();
        let deps: Vec<String> = (0..5).map(|i| format!("dep-{i}")).collect();
        let subject = ChangeSubject {
            intent_id: "i-diag",
            source: "feature/x",
            target: "main",
            risk_level: RiskLevel::Medium,
            dependencies: &deps,
            scope_hints: &[],
        };
        let sim = Simulation {
            mergeable: false,
            conflicts: vec!["a.rs".into(), "b.rs".into()],
            files_changed: files,
        };
        let risk = evaluate_risk(&subject, &sim, &[]);
        let diagnostics = diagnose(Some(&risk), Some(&sim));
        let codes: Vec<&str> = diagnostics.iter().map(|d| d.code.as_str()).collect();
        assert!(
            codes.contains(&"diag.merge_conflict") && codes.contains(&"diag.high_risk"),
            "{codes:?}"
        );
        assert!(codes.contains(&"semantic.dependency_spread"));
        let ranks: Vec<u8> = diagnostics.iter().map(|d| rank(d.severity)).collect();
        assert!(
            ranks.windows(2).all(|w| w[0] <= w[1]),
            "most severe first: {ranks:?}"
        );
        let conflict = diagnostics.iter().find(|d| d.code == "diag.merge_conflict");
        assert_eq!(
            conflict.map(|d| d.explanation.as_str()),
            Some("Merge has 2 conflict(s): a.rs, b.rs")
        );
    }

    #[test]
    fn a_small_clean_change_has_only_its_findings() {
        let files = vec!["docs/readme.md".to_owned()];
        let subject = ChangeSubject {
            intent_id: "i-small",
            source: "f",
            target: "develop",
            risk_level: RiskLevel::Low,
            dependencies: &[],
            scope_hints: &[],
        };
        let sim = Simulation {
            mergeable: true,
            conflicts: vec![],
            files_changed: files,
        };
        let risk = evaluate_risk(&subject, &sim, &[]);
        assert!(diagnose(Some(&risk), Some(&sim)).is_empty());
        assert!(diagnose(None, None).is_empty());
    }
}
