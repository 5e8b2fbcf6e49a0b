//! What the code host is told about an intent: one report per intent and head commit (on
//! GitHub, one "Converge" check run, created once and then updated), stating the decision,
//! the risk scores, the gates, the queue position and the trace id.
//!
//! Reports are written to the outbox in the transaction of the decision they describe and
//! sent in order by the holder of the intent's queue lease, so the host never sees an older
//! state after a newer one.

use std::fmt::Write as _;
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::intent::{Intent, Status};
use crate::pipeline::{Decision, Outcome};
use crate::queue::Step;

/// The name of the check run Converge publishes.
pub const CHECK_NAME: &str = "Converge";

/// The state shown on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportState {
    /// Work is under way or waiting (validating, waiting for checks, queued for merge).
    InProgress,
    /// Validated or merged.
    Success,
    /// Blocked or rejected.
    Failure,
}

/// One report about an intent's head commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The intent.
    pub intent_id: String,
    /// The commit it is about.
    pub head_sha: String,
    /// The state shown.
    pub state: ReportState,
    /// One line (the check run's title).
    pub title: String,
    /// Markdown details.
    pub summary: String,
    /// The trace of the decision.
    pub trace_id: String,
}

/// Why a report could not be delivered (the caller retries later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("report not delivered: {0}")]
pub struct PublishError(pub String);

/// Delivers reports to the code host.
pub trait Publisher {
    /// Whether reports are delivered at all (a local repository has nobody to tell).
    fn enabled(&self) -> bool {
        true
    }

    /// Shows `report` for `intent` (creating the intent's check run for that head, or
    /// updating it).
    fn publish(
        &self,
        intent: &Intent,
        report: &Report,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// The publisher of a local repository: nothing is sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPublisher;

impl Publisher for NoPublisher {
    fn enabled(&self) -> bool {
        false
    }

    async fn publish(&self, _intent: &Intent, _report: &Report) -> Result<(), PublishError> {
        Ok(())
    }
}

fn header(intent: &Intent, decision_line: &str) -> String {
    format!(
        "**Intent:** `{}`\n**Decision:** {decision_line}\n",
        intent.id
    )
}

/// A report about `intent` at `head_sha`.
fn report(
    intent: &Intent,
    head_sha: &str,
    state: ReportState,
    title: String,
    summary: String,
    trace_id: &str,
) -> Report {
    Report {
        intent_id: intent.id.clone(),
        head_sha: head_sha.to_owned(),
        state,
        title,
        summary,
        trace_id: trace_id.to_owned(),
    }
}

/// Validation has started on `head_sha`.
pub fn validating(intent: &Intent, head_sha: &str, trace_id: &str) -> Report {
    report(
        intent,
        head_sha,
        ReportState::InProgress,
        "Validating".to_owned(),
        format!("{}**Trace:** `{trace_id}`\n", header(intent, "validating")),
        trace_id,
    )
}

/// The report of a validation and the queue step that followed it. `queue_position` is the
/// intent's place among its queue's actionable intents (1 = next).
pub fn decided(
    intent: &Intent,
    decision: &Decision,
    step: &Step,
    queue_position: Option<usize>,
) -> Report {
    let (state, title) = match (&decision.outcome, step.status) {
        (_, Status::Rejected) => (
            ReportState::Failure,
            format!("Rejected: {}", step_reason(step)),
        ),
        (Outcome::Validated, _) => (ReportState::Success, "Validated".to_owned()),
        (Outcome::Blocked { kind, reason }, _) if !kind.counts_as_failed_attempt() => {
            (ReportState::InProgress, format!("Waiting: {reason}"))
        }
        (Outcome::Blocked { reason, .. }, _) => {
            (ReportState::Failure, format!("Blocked: {reason}"))
        }
    };
    let mut summary = header(intent, &title);
    if let Some(risk) = &decision.risk {
        let _ = writeln!(
            summary,
            "**Risk score:** {:.1} (damage {:.1}, entropy {:.1}, propagation {:.1}, containment {:.2})",
            risk.risk_score,
            risk.damage_score,
            risk.entropy_score,
            risk.propagation_score,
            risk.containment_score
        );
    }
    let _ = writeln!(summary, "**Risk level:** {}", decision.risk_level);
    if let Some(policy) = &decision.policy {
        let _ = writeln!(summary, "**Gates:**");
        for gate in &policy.gates {
            let _ = writeln!(
                summary,
                "- {} {}: {}",
                if gate.passed { "passed" } else { "failed" },
                gate.gate.as_str(),
                gate.reason
            );
        }
    }
    for check in &decision.checks {
        let _ = writeln!(summary, "- check `{}`: {:?}", check.name, check.state);
    }
    let _ = writeln!(summary, "**Retries:** {}", step.retries);
    if let Some(position) = queue_position.filter(|_| step.status == Status::Queued) {
        let _ = writeln!(summary, "**Queue position:** {position}");
    }
    let _ = writeln!(summary, "**Trace:** `{}`", decision.trace_id);
    Report {
        intent_id: intent.id.clone(),
        head_sha: decision.merge.head_sha.clone(),
        state,
        title,
        summary,
        trace_id: decision.trace_id.clone(),
    }
}

/// The report when the code host ended the change itself: merged there (`merged`), or closed
/// without merging, or its merge group dropped (`detail` says which). Its check run stops
/// waiting.
pub fn ended_by_host(
    intent: &Intent,
    head_sha: &str,
    merged: bool,
    detail: &str,
    trace_id: &str,
) -> Report {
    let (state, title) = if merged {
        (ReportState::Success, format!("Merged: {detail}"))
    } else {
        (ReportState::Failure, format!("Closed: {detail}"))
    };
    let mut summary = header(intent, &title);
    let _ = writeln!(summary, "**Trace:** `{trace_id}`");
    report(intent, head_sha, state, title, summary, trace_id)
}

/// The report of an intent its reviews hold (`reason`: an open review task, a rejection,
/// changes requested, approvals missing): it goes on when that is resolved.
pub fn held(intent: &Intent, head_sha: &str, reason: &str) -> Report {
    let title = format!("Held: {reason}");
    let mut summary = header(intent, &title);
    let _ = writeln!(
        summary,
        "The queue takes it up again as soon as this is resolved; no retry is spent meanwhile."
    );
    report(
        intent,
        head_sha,
        ReportState::InProgress,
        title,
        summary,
        "",
    )
}

/// The report of a validated intent whose merge a freeze holds: `reason` is the freeze's
/// description (`Merges frozen: … (until …)`).
pub fn frozen(intent: &Intent, head_sha: &str, reason: &str, trace_id: &str) -> Report {
    let title = format!("Queued; {reason}");
    let mut summary = header(intent, &title);
    let _ = writeln!(
        summary,
        "Validated and queued: it merges when the freeze ends, if its target has not moved \
         (otherwise it is validated again first)."
    );
    let _ = writeln!(summary, "**Trace:** `{trace_id}`");
    report(
        intent,
        head_sha,
        ReportState::InProgress,
        title,
        summary,
        trace_id,
    )
}

/// The report after a merge attempt (landed, or refused with the step that followed).
pub fn merge_result(
    intent: &Intent,
    head_sha: &str,
    step: &Step,
    detail: &str,
    trace_id: &str,
) -> Report {
    let (state, title) = match step.status {
        Status::Merged => (ReportState::Success, "Merged".to_owned()),
        Status::Rejected => (
            ReportState::Failure,
            format!("Rejected: {}", step_reason(step)),
        ),
        _ => (ReportState::InProgress, format!("Requeued: {detail}")),
    };
    let mut summary = header(intent, &title);
    if step.status == Status::Merged {
        let _ = writeln!(summary, "**Merge commit:** `{detail}`");
    }
    let _ = writeln!(summary, "**Retries:** {}", step.retries);
    let _ = writeln!(summary, "**Trace:** `{trace_id}`");
    report(intent, head_sha, state, title, summary, trace_id)
}

fn step_reason(step: &Step) -> String {
    step.event
        .as_ref()
        .and_then(|(_, payload, _)| payload.get("reason").and_then(serde_json::Value::as_str))
        .unwrap_or("given up")
        .to_owned()
}
