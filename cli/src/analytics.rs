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

/// `converge analytics …` against the API: how integration is going.
#[derive(Debug, clap::Subcommand)]
pub enum ReadCommand {
    /// Repository health now: the score, its parts and its lessons.
    Health(crate::ops::TenantArgs),
    /// Repository health over the last days (the hourly snapshots).
    Trend(TrendArgs),
    /// One intent's health from its latest evaluations.
    Change(crate::ops::IntentId),
    /// The entropy of each risk evaluation over the last days.
    Entropy(TrendArgs),
    /// Where health is heading (exit 3 when it calls for stopping intake).
    Predict(PredictArgs),
    /// Verification debt now (with `--trend`: over the last days).
    Debt(DebtArgs),
    /// Issues the last two days show.
    Predictions(crate::ops::TenantArgs),
    /// Decision counts (all time).
    Metrics(crate::ops::TenantArgs),
    /// Everything the dashboard shows, in one answer.
    Dashboard(crate::ops::TenantArgs),
}

/// A trend's span.
#[derive(Debug, Args)]
pub struct TrendArgs {
    /// Days back, 1 to 365.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Only this tenant (admins; a tenant's key implies its own).
    #[arg(long)]
    tenant_id: Option<String>,
}

/// `analytics predict` arguments.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Snapshots of the last twice this many days are read; 1 to 90.
    #[arg(long, default_value_t = 7)]
    horizon_days: u32,
    /// Only this tenant (admins; a tenant's key implies its own).
    #[arg(long)]
    tenant_id: Option<String>,
}

/// `analytics debt` arguments.
#[derive(Debug, Args)]
pub struct DebtArgs {
    /// The hourly snapshots of the last `--days` days instead of the debt now.
    #[arg(long)]
    trend: bool,
    /// Days back for `--trend`, 1 to 365.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Only this tenant (admins; a tenant's key implies its own).
    #[arg(long)]
    tenant_id: Option<String>,
}

/// `converge compliance …`.
#[derive(Debug, clap::Subcommand)]
pub enum ComplianceCommand {
    /// The compliance report against the tenant's thresholds.
    Report(ComplianceArgs),
    /// The checks that fail now.
    Alerts(ComplianceArgs),
    /// The thresholds in force, what is stored, and its version.
    Thresholds(crate::ops::TenantArgs),
    /// Store the thresholds (each left out keeps its default; operators).
    SetThresholds(SetThresholdsArgs),
    /// Every version of the thresholds, newest first.
    History(crate::ops::TenantArgs),
}

/// `compliance set-thresholds` arguments.
#[derive(Debug, Args)]
pub struct SetThresholdsArgs {
    /// Lowest mergeable rate, 0 to 1.
    #[arg(long)]
    min_mergeable_rate: Option<f64>,
    /// Highest conflict rate, 0 to 1.
    #[arg(long)]
    max_conflict_rate: Option<f64>,
    /// Most requeues and queue resets, all time.
    #[arg(long)]
    max_retries_total: Option<u64>,
    /// Most intents tracked.
    #[arg(long)]
    max_queue_tracked: Option<u64>,
    /// Highest verification debt, 0 to 100.
    #[arg(long)]
    max_debt_score: Option<f64>,
    /// The tenant (admins of no tenant; a tenant's key writes its own; none: the global
    /// thresholds).
    #[arg(long)]
    tenant_id: Option<String>,
}

/// `compliance report|alerts` arguments.
#[derive(Debug, Args)]
pub struct ComplianceArgs {
    /// Exit 3 when a check fails.
    #[arg(long)]
    fail_on_alert: bool,
    /// Only this tenant (admins; a tenant's key implies its own).
    #[arg(long)]
    tenant_id: Option<String>,
}

fn points(out: &Output, answer: &Value, columns: &[crate::output::Column<'_>]) -> String {
    let rows = answer["points"].as_array().map_or(&[][..], Vec::as_slice);
    out.table(rows, columns)
}

/// Runs an `analytics` read.
pub async fn read(
    api: &crate::client::ApiClient,
    out: Output,
    command: ReadCommand,
) -> Result<(), CliError> {
    let tenant = |t: Option<String>| ("tenant_id", t);
    match command {
        ReadCommand::Health(args) => {
            let answer = api
                .get("/health/repo/now", &[tenant(args.tenant_id)])
                .await?;
            out.emit(&answer, |o| health_text(o, &answer))?;
        }
        ReadCommand::Trend(args) => {
            let answer = api
                .get(
                    "/health/repo/trend",
                    &[
                        tenant(args.tenant_id),
                        ("days", Some(args.days.to_string())),
                    ],
                )
                .await?;
            out.emit(&answer, |o| {
                points(
                    o,
                    &answer,
                    &[
                        ("at", "/at"),
                        ("score", "/snapshot/repo_health_score"),
                        ("status", "/snapshot/status"),
                        ("mergeable", "/snapshot/mergeable_rate"),
                        ("entropy", "/snapshot/entropy_score"),
                    ],
                )
            })?;
        }
        ReadCommand::Change(args) => {
            let answer = api
                .get("/health/change", &[("intent_id", Some(args.intent_id))])
                .await?;
            out.emit(&answer, |o| health_text(o, &answer))?;
        }
        ReadCommand::Entropy(args) => {
            let answer = api
                .get(
                    "/health/entropy/trend",
                    &[
                        tenant(args.tenant_id),
                        ("days", Some(args.days.to_string())),
                    ],
                )
                .await?;
            out.emit(&answer, |o| {
                points(
                    o,
                    &answer,
                    &[
                        ("timestamp", "/timestamp"),
                        ("intent", "/intent_id"),
                        ("entropy", "/entropy_score"),
                    ],
                )
            })?;
        }
        ReadCommand::Predict(args) => {
            let answer = api
                .get(
                    "/health/predict",
                    &[
                        tenant(args.tenant_id),
                        ("horizon_days", Some(args.horizon_days.to_string())),
                    ],
                )
                .await?;
            out.emit(&answer, |o| {
                let mut text = o.pairs(&answer);
                if let Some(signals) = answer["signals"].as_array() {
                    text.push('\n');
                    text.push_str(&o.table(
                        signals,
                        &[
                            ("signal", "/signal"),
                            ("severity", "/severity"),
                            ("message", "/message"),
                        ],
                    ));
                }
                text
            })?;
            if answer["should_gate"] == true {
                return Err(CliError::CheckFailed(format!(
                    "health is projected to turn red: {}",
                    answer["recommendation"].as_str().unwrap_or_default()
                )));
            }
        }
        ReadCommand::Debt(args) => {
            if args.trend {
                let answer = api
                    .get(
                        "/verification/debt/trend",
                        &[
                            tenant(args.tenant_id),
                            ("days", Some(args.days.to_string())),
                        ],
                    )
                    .await?;
                out.emit(&answer, |o| {
                    points(
                        o,
                        &answer,
                        &[
                            ("at", "/at"),
                            ("debt", "/snapshot/debt_score"),
                            ("status", "/snapshot/status"),
                        ],
                    )
                })?;
            } else {
                let answer = api
                    .get("/verification/debt", &[tenant(args.tenant_id)])
                    .await?;
                out.emit(&answer, |o| o.pairs(&answer))?;
            }
        }
        ReadCommand::Predictions(args) => {
            let answer = api.get("/predictions", &[tenant(args.tenant_id)]).await?;
            out.emit(&answer, |o| {
                let rows = answer["predictions"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice);
                o.table(
                    rows,
                    &[
                        ("signal", "/signal"),
                        ("severity", "/severity"),
                        ("message", "/message"),
                        ("recommendation", "/recommendation"),
                    ],
                )
            })?;
        }
        ReadCommand::Metrics(args) => {
            let answer = api
                .get("/metrics/integration", &[tenant(args.tenant_id)])
                .await?;
            out.emit(&answer, |o| o.pairs(&answer))?;
        }
        ReadCommand::Dashboard(args) => {
            let answer = api.get("/dashboard", &[tenant(args.tenant_id)]).await?;
            out.emit(&answer, |o| {
                let mut text = health_text(o, &answer["health"]);
                text.push_str(&format!(
                    "\ndebt: {} ({})\ncompliance: {}\nalerts: {}",
                    answer["debt"]["debt_score"],
                    answer["debt"]["status"].as_str().unwrap_or_default(),
                    if answer["compliance"]["passed"] == true {
                        "passed"
                    } else {
                        "failed"
                    },
                    answer["alerts"].as_array().map_or(0, Vec::len)
                ));
                text
            })?;
        }
    }
    Ok(())
}

/// A health answer (repository or change) as text: its figures, then its lessons.
fn health_text(out: &Output, answer: &Value) -> String {
    let mut figures = answer.clone();
    let learning = figures
        .as_object_mut()
        .and_then(|m| m.remove("learning"))
        .unwrap_or(Value::Null);
    let mut text = out.pairs(&figures);
    if let Some(summary) = learning["summary"].as_str() {
        text.push_str(&format!("\n\n{summary}"));
    }
    let lessons = learning["lessons"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if !lessons.is_empty() {
        text.push('\n');
        text.push_str(&out.table(
            lessons,
            &[
                ("priority", "/priority"),
                ("lesson", "/title"),
                ("action", "/action"),
            ],
        ));
    }
    text
}

/// Runs a `compliance` read; exit 3 on a failed check with `--fail-on-alert`.
pub async fn compliance(
    api: &crate::client::ApiClient,
    out: Output,
    command: ComplianceCommand,
) -> Result<(), CliError> {
    let (path, args) = match command {
        ComplianceCommand::Report(args) => ("/compliance/report", args),
        ComplianceCommand::Alerts(args) => ("/compliance/alerts", args),
        ComplianceCommand::Thresholds(args) => {
            let answer = api
                .get("/compliance/thresholds", &[("tenant_id", args.tenant_id)])
                .await?;
            out.emit(&answer, |o| {
                format!(
                    "{}\nversion: {}",
                    o.pairs(&answer["thresholds"]),
                    answer["version"]
                )
            })?;
            return Ok(());
        }
        ComplianceCommand::SetThresholds(args) => {
            let mut body = serde_json::Map::new();
            let mut put = |name: &str, value: Option<Value>| {
                if let Some(value) = value {
                    body.insert(name.to_owned(), value);
                }
            };
            put(
                "min_mergeable_rate",
                args.min_mergeable_rate.map(Value::from),
            );
            put("max_conflict_rate", args.max_conflict_rate.map(Value::from));
            put("max_retries_total", args.max_retries_total.map(Value::from));
            put("max_queue_tracked", args.max_queue_tracked.map(Value::from));
            put("max_debt_score", args.max_debt_score.map(Value::from));
            put("tenant_id", args.tenant_id.map(Value::from));
            let answer = api
                .post("/compliance/thresholds", &Value::Object(body))
                .await?;
            out.emit(&answer, |o| {
                format!(
                    "{}\nversion: {}",
                    o.pairs(&answer["thresholds"]),
                    answer["version"]
                )
            })?;
            return Ok(());
        }
        ComplianceCommand::History(args) => {
            let answer = api
                .get(
                    "/compliance/thresholds/history",
                    &[("tenant_id", args.tenant_id)],
                )
                .await?;
            out.emit(&answer, |o| {
                let rows = answer["history"].as_array().map_or(&[][..], Vec::as_slice);
                o.table(
                    rows,
                    &[
                        ("version", "/version"),
                        ("at", "/at"),
                        ("by", "/by"),
                        ("tenant", "/tenant_id"),
                        ("thresholds", "/thresholds"),
                    ],
                )
            })?;
            return Ok(());
        }
    };
    let answer = api.get(path, &[("tenant_id", args.tenant_id)]).await?;
    let columns: &[crate::output::Column<'_>] = &[
        ("check", "/name"),
        ("value", "/value"),
        ("op", "/op"),
        ("threshold", "/threshold"),
        ("passed", "/passed"),
    ];
    out.emit(&answer, |o| {
        let key = if path.ends_with("report") {
            "checks"
        } else {
            "alerts"
        };
        let rows = answer[key].as_array().map_or(&[][..], Vec::as_slice);
        o.table(rows, columns)
    })?;
    let failed: Vec<&str> = answer["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str())
        .collect();
    if args.fail_on_alert && !failed.is_empty() {
        return Err(CliError::CheckFailed(format!(
            "compliance checks failed: {}",
            failed.join(", ")
        )));
    }
    Ok(())
}
