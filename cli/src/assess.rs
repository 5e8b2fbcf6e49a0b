//! Loading and rendering offline assessments (`converge risk eval`, `converge policy eval`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, anyhow};
use converge_core::policy::{Measure, Verdict};
use converge_core::risk::{Bomb, MAX_CHANGED_FILES};
use converge_core::{Assessment, AssessmentInput, PolicyConfig};
use serde::Deserialize;

/// The file shape: the assessment input under `input`; anything else (a case's `expected`) is
/// ignored.
#[derive(Deserialize)]
struct InputFile {
    input: AssessmentInput,
}

/// Reads an assessment input. Errors name the file and, for well-formed JSON of the wrong
/// shape, the offending field, in one line.
pub fn load_input(path: &Path) -> anyhow::Result<AssessmentInput> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: not valid JSON: {e}", path.display()))?;
    let file: InputFile = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "(top level)".to_owned()
        } else {
            field
        };
        anyhow!("{}: {field}: {}", path.display(), e.into_inner())
    })?;
    let files = file.input.simulation.files_changed.len();
    if files > MAX_CHANGED_FILES {
        return Err(anyhow!(
            "{}: input.simulation.files_changed: {files} files, at most {MAX_CHANGED_FILES} can be evaluated",
            path.display()
        ));
    }
    Ok(file.input)
}

/// Reads a policy configuration, or the built-in one.
pub fn load_policy(path: Option<&Path>) -> anyhow::Result<PolicyConfig> {
    let Some(path) = path else {
        return Ok(PolicyConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    PolicyConfig::from_json_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Which part of the assessment a summary leads with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// Scores, signals, findings and bombs first.
    Risk,
    /// Gates first.
    Policy,
}

fn measure(m: Measure) -> String {
    match m {
        Measure::Count(n) => n.to_string(),
        Measure::Amount(x) => format!("{x:?}"),
    }
}

/// A human-readable summary.
pub fn summary(a: &Assessment, focus: Focus) -> String {
    let mut risk = String::new();
    let r = &a.risk;
    let level = match a.reclassified_level {
        Some(level) => format!("reclassified {level}"),
        None => format!("{}", a.policy.profile_used),
    };
    let _ = writeln!(
        risk,
        "intent {}: risk {:?} ({level}), damage {:?}, propagation {:?}, containment {:?}",
        r.intent_id, r.risk_score, r.damage_score, r.propagation_score, r.containment_score
    );
    let s = &r.signals;
    let _ = writeln!(
        risk,
        "signals: entropic load {:?}, contextual value {:?}, complexity delta {:?}, path dependence {:?}",
        s.entropic_load, s.contextual_value, s.complexity_delta, s.path_dependence
    );
    let g = &r.graph_metrics;
    let _ = writeln!(
        risk,
        "graph: {} nodes, {} edges, {} components, density {:?}",
        g.nodes, g.edges, g.components, g.density
    );
    if r.findings.is_empty() {
        let _ = writeln!(risk, "findings: none");
    }
    for f in &r.findings {
        let _ = writeln!(
            risk,
            "finding: {} ({}): {}",
            f.code,
            f.severity.as_str(),
            f.message
        );
    }
    if r.bombs.is_empty() {
        let _ = writeln!(risk, "bombs: none");
    }
    for b in &r.bombs {
        let message = match b {
            Bomb::Cascade { message, .. }
            | Bomb::Spiral { message, .. }
            | Bomb::ThermalDeath { message, .. } => message,
        };
        let _ = writeln!(risk, "bomb: {}: {message}", b.kind());
    }

    let mut policy = String::new();
    let verdict = match a.policy.verdict {
        Verdict::Allow => "ALLOW",
        Verdict::Block => "BLOCK",
    };
    let _ = writeln!(
        policy,
        "policy: {verdict} (profile {})",
        a.policy.profile_used
    );
    for gate in &a.policy.gates {
        let mark = if gate.passed { "pass" } else { "FAIL" };
        let _ = writeln!(
            policy,
            "  {mark} {:<12} {} / {}  {}",
            gate.gate.as_str(),
            measure(gate.value),
            measure(gate.threshold),
            gate.reason
        );
    }
    let gate = &a.risk_gate;
    let mode = if gate.enforced {
        "enforced"
    } else if gate.would_block {
        "would block"
    } else {
        "clear"
    };
    let _ = write!(policy, "risk gate ({}): {mode}", gate.mode.as_str());
    for b in &gate.breaches {
        let _ = write!(policy, "; {} {:?} > {:?}", b.metric, b.value, b.limit);
    }

    match focus {
        Focus::Risk => format!("{risk}{policy}"),
        Focus::Policy => format!("{policy}\n{risk}").trim_end().to_owned(),
    }
}
