//! The dashboard's integration page (`/dashboard/integration`): how integration is going, in
//! pictures — health now with its lessons, the alerts, and charts of the last 30 days, each
//! with its table. Read with a fixed number of bounded queries (`runtime::analytics::charts`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use converge_runtime::analytics::{self as analytics, ChartData, Overview};
use maud::{Markup, html};

use crate::charts::{Chart, Kind, Series};
use crate::dashboard::{login_form, page, viewer};
use crate::{ApiError, AppState};

/// Days the charts cover.
const DAYS: u32 = 30;

/// `GET /dashboard/integration`.
pub(crate) async fn integration(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    let principal = match viewer(&state, &headers).await {
        Ok(Some(principal)) => principal,
        Ok(None) => return page(StatusCode::OK, "Sign in", login_form(None), false),
        Err(e) => return e.into_response(),
    };
    let now = state.services.clock.now();
    let tenant = principal.tenant.as_deref();
    let store = &state.services.store;
    let read = async {
        let (overview, charts) = futures_util::try_join!(
            analytics::overview(store, tenant, now),
            analytics::charts(store, tenant, DAYS, now),
        )?;
        // Intake's signals are the overview's health and debt: only the mode is read again.
        let intake = converge_runtime::intake_control::status_given(
            store,
            tenant,
            &overview.health,
            &overview.debt,
            overview.compliance.queue_tracked,
        )
        .await?;
        Ok::<_, analytics::AnalyticsError>((overview, charts, intake))
    };
    match read.await {
        Ok((overview, charts, intake)) => page(
            StatusCode::OK,
            "Integration",
            html_of(&overview, &charts, &intake),
            true,
        ),
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn html_of(
    overview: &Overview,
    charts: &ChartData,
    intake: &converge_runtime::intake_control::IntakeStatus,
) -> Markup {
    let Overview {
        health,
        debt,
        compliance,
        predictions,
        ..
    } = overview;
    let alerts = compliance.alerts.len() + predictions.len();
    html! {
        section aria-labelledby="now" {
            h2 #now { "Now" }
            dl.facts #figures {
                dt { "Health" } dd { strong class=(health.status) { (format!("{:.1}", health.repo_health_score)) } " " (health.status) " — " (health.learning.summary) }
                dt { "Mergeable (24 h)" } dd { (format!("{:.1}%", health.mergeable_rate * 100.0)) }
                dt { "Verification debt" } dd { (format!("{:.1}", debt.debt_score)) " " (debt.status) }
                dt { "Waiting intents" } dd { (health.active_intents) }
                dt { "Intake" } dd #intake {
                    strong class=(if intake.mode == converge_core::intake_mode::IntakeMode::Open { "pass" } else { "fail" }) { (intake.mode.as_str()) }
                    @if let Some(set) = intake.set.as_ref().filter(|_| intake.manual_override) {
                        " — set by " (set.set_by) @if !set.reason.is_empty() { ": " (set.reason) }
                    } @else {
                        " (auto: effective score " (format!("{:.1}", intake.signals.effective_score)) ")"
                    }
                }
                dt { "Compliance" } dd { @if compliance.passed { "every check passes" } @else { strong.fail { (compliance.alerts.len()) " failing" } } }
            }
            @if !health.learning.lessons.is_empty() {
                h3 { "What to do" }
                ol #lessons {
                    @for lesson in &health.learning.lessons {
                        li { strong { (lesson.title) } ": " (lesson.action) span.muted { " (" (lesson.why) ")" } }
                    }
                }
            }
        }
        section #alerts aria-labelledby="alerts-title" {
            h2 #alerts-title { "Alerts " span.muted { "(" (alerts) ")" } }
            @if alerts == 0 {
                p { "No alert." }
            } @else {
                ul {
                    @for alert in &compliance.alerts {
                        li.alert { strong.fail { (alert.alert) } ": " (alert.check.value) " " (alert.check.op) " " (alert.check.threshold) " does not hold" }
                    }
                    @for prediction in predictions {
                        li.alert { strong class=(if prediction.severity == "critical" { "fail" } else { "" }) { (prediction.signal) } " (" (prediction.severity) "): " (prediction.message) ". " span.muted { (prediction.recommendation) } }
                    }
                }
            }
        }
        section aria-labelledby="charts" {
            h2 #charts { "The last " (DAYS) " days" }
            div.charts {
                @for chart in charts_of(charts) { (chart.render()) }
            }
        }
    }
}

fn charts_of(data: &ChartData) -> Vec<Chart> {
    let labels: Vec<String> = data
        .days
        .iter()
        .map(|d| d.get(5..).unwrap_or(d).to_owned())
        .collect();
    let counts = |values: &[u64]| values.iter().map(|v| Some(*v as f64)).collect();
    vec![
        Chart {
            id: "chart-decisions",
            title: "Merges and rejections per day".to_owned(),
            unit: "intents",
            labels: labels.clone(),
            series: vec![
                Series {
                    name: "merged".to_owned(),
                    values: counts(&data.merged),
                },
                Series {
                    name: "rejected".to_owned(),
                    values: counts(&data.rejected),
                },
            ],
            kind: Kind::Bars,
            y_max: None,
        },
        Chart {
            id: "chart-merge-time",
            title: "Time from opening to merge".to_owned(),
            unit: "hours",
            labels: labels.clone(),
            series: vec![
                Series {
                    name: "median".to_owned(),
                    values: data.merge_hours_median.clone(),
                },
                Series {
                    name: "p90".to_owned(),
                    values: data.merge_hours_p90.clone(),
                },
            ],
            kind: Kind::Line,
            y_max: None,
        },
        Chart {
            id: "chart-queue",
            title: "Queue depth (waiting intents)".to_owned(),
            unit: "intents, last hourly snapshot of the day",
            labels: labels.clone(),
            series: std::iter::once(Series {
                name: "all queues".to_owned(),
                values: data.queue_depth.clone(),
            })
            .chain(data.queues.iter().map(|q| Series {
                name: q.queue.clone(),
                values: q.waiting.clone(),
            }))
            .collect(),
            kind: Kind::Line,
            y_max: None,
        },
        Chart {
            id: "chart-wait",
            title: "Wait in each queue".to_owned(),
            unit: "hours the oldest waiting intent had waited, last snapshot of the day",
            labels: labels.clone(),
            series: data
                .queues
                .iter()
                .map(|q| Series {
                    name: q.queue.clone(),
                    values: q.oldest_wait_hours.clone(),
                })
                .collect(),
            kind: Kind::Line,
            y_max: None,
        },
        Chart {
            id: "chart-health",
            title: "Repository health".to_owned(),
            unit: "score out of 100, last hourly snapshot of the day",
            labels: labels.clone(),
            series: vec![Series {
                name: "health".to_owned(),
                values: data.health.clone(),
            }],
            kind: Kind::Line,
            y_max: Some(100.0),
        },
        Chart {
            id: "chart-risk",
            title: "Risk score".to_owned(),
            unit: "mean of the day's risk evaluations",
            labels,
            series: vec![Series {
                name: "risk".to_owned(),
                values: data.risk_mean.clone(),
            }],
            kind: Kind::Line,
            y_max: Some(100.0),
        },
        Chart {
            id: "chart-retries",
            title: "Retries by cause".to_owned(),
            unit: "requeues and rejections",
            labels: data
                .retry_causes
                .iter()
                .map(|(cause, _)| (*cause).to_owned())
                .collect(),
            series: vec![Series {
                name: "retries".to_owned(),
                values: data
                    .retry_causes
                    .iter()
                    .map(|(_, n)| Some(*n as f64))
                    .collect(),
            }],
            kind: Kind::Bars,
            y_max: None,
        },
    ]
}
