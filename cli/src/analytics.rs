//! `converge analytics eval`: the analytics of a store given as data, offline.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use clap::Args;
use converge_core::analytics::log::{self, LogInput, LogReport};
use serde_json::Value;

use crate::client::CliError;
use crate::output::Output;

/// `analytics eval` arguments.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// JSON file holding a store at one instant, `{"input": {"now", "tenant_id", "events",
    /// "intents", "review_tasks", "compliance_thresholds", …}}` or the bare input object (a
    /// parity case file is valid input; other keys are ignored).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
}

/// Reads the store of `path`: the `input` of a case file, or the file itself.
fn load(path: &Path) -> anyhow::Result<LogInput> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut value: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: not valid JSON: {e}", path.display()))?;
    if let Some(input) = value.get_mut("input").filter(|i| i.is_object()) {
        value = input.take();
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        anyhow!("{}: {field}: {}", path.display(), e.into_inner())
    })
}

/// Prints what the original's nine read-side functions answer for the store in the file.
pub fn eval(args: &EvalArgs, out: Output) -> Result<(), CliError> {
    let input = load(&args.input)?;
    let report = log::evaluate(&input).map_err(|e| anyhow!("{}: {e}", args.input.display()))?;
    let value = serde_json::to_value(&report).map_err(anyhow::Error::from)?;
    out.emit(&value, |_| summary(&report))?;
    Ok(())
}

fn summary(report: &LogReport) -> String {
    let health = &report.repo_health;
    let debt = &report.verification_debt;
    let compliance = &report.compliance;
    let mut lines = vec![
        format!(
            "repo health   {:.1} ({}): {}",
            health.repo_health_score, health.status, health.learning.summary
        ),
        format!("debt          {:.1} ({})", debt.debt_score, debt.status),
        format!(
            "compliance    {}",
            if compliance.passed {
                "passed".to_owned()
            } else {
                let names: Vec<&str> = compliance.alerts.iter().map(|a| a.check.name).collect();
                format!("failed: {}", names.join(", "))
            }
        ),
    ];
    for p in &report.predictions {
        lines.push(format!(
            "prediction    {} ({}): {}",
            p.signal, p.severity, p.message
        ));
    }
    lines.push(format!(
        "decisions     {} intents exported",
        report.export_decisions.len()
    ));
    lines.join("\n")
}
