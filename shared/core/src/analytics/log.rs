//! The analytics of an event log held in memory, counted with the original's exact rules:
//! what `converge analytics eval --input FILE` prints for a store given as data (the shape of
//! the parity fixtures' `input`), and how the parity cases are checked.
//!
//! This is the *compatibility mode*: it keeps the original's quirks the server fixes (change
//! health and the export read other tenants' events, calibration reads every tenant). The
//! counting rules that both share (windows inclusive at the bottom, counts of events rather
//! than intents, means summed newest first) are the server's too.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::*;
use crate::export::{DecisionRecord, RecordHead, record_of};

/// A store at one instant, as the parity fixtures give it.
#[derive(Debug, Clone, Deserialize)]
pub struct LogInput {
    /// The frozen clock (ISO 8601 with an offset).
    pub now: String,
    /// The tenant asked about (`None`: every tenant).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Predictive health's horizon, in days.
    #[serde(default = "default_horizon")]
    pub horizon_days: u32,
    /// Intents to compute change health for, in order.
    #[serde(default)]
    pub change_health_intent_ids: Vec<String>,
    /// The events table.
    #[serde(default)]
    pub events: Vec<LogEvent>,
    /// The intents table.
    #[serde(default)]
    pub intents: Vec<LogIntent>,
    /// The review tasks table.
    #[serde(default)]
    pub review_tasks: Vec<LogReview>,
    /// The stored compliance thresholds.
    #[serde(default)]
    pub compliance_thresholds: Vec<StoredThresholds>,
}

fn default_horizon() -> u32 {
    7
}

/// An event as the log stores it (fields the analytics do not read are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct LogEvent {
    /// When.
    pub timestamp: String,
    /// Its type.
    pub event_type: String,
    /// Its intent.
    #[serde(default)]
    pub intent_id: Option<String>,
    /// Its tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Its payload.
    #[serde(default)]
    pub payload: Value,
}

/// An intent as the intents table stores it.
#[derive(Debug, Clone, Deserialize)]
pub struct LogIntent {
    /// Its id.
    pub id: String,
    /// Source branch.
    #[serde(default)]
    pub source: String,
    /// Target branch.
    #[serde(default)]
    pub target: String,
    /// Status (`READY`, ...).
    pub status: String,
    /// When created.
    pub created_at: String,
    /// Risk level.
    #[serde(default)]
    pub risk_level: String,
    /// Priority (1 first).
    #[serde(default)]
    pub priority: i64,
    /// Failed attempts.
    #[serde(default)]
    pub retries: i64,
    /// Tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// A review task (only its status and tenant are read).
#[derive(Debug, Clone, Deserialize)]
pub struct LogReview {
    /// `pending`, `assigned`, ...
    pub status: String,
    /// Tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// A tenant's stored threshold blob.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredThresholds {
    /// The tenant.
    pub tenant_id: String,
    /// The blob, as stored.
    pub data: Value,
}

/// Everything the nine read-side functions answer for one store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogReport {
    /// Repository health.
    pub repo_health: RepoHealth,
    /// Change health per requested intent.
    pub change_health: Map<String, Value>,
    /// Predictive health.
    pub predictive_health: PredictiveHealth,
    /// The compliance report.
    pub compliance: ComplianceReport,
    /// Verification debt.
    pub verification_debt: VerificationDebt,
    /// Predicted issues.
    pub predictions: Vec<Prediction>,
    /// Integration metrics.
    pub integration_metrics: IntegrationMetrics,
    /// The decision export's records.
    pub export_decisions: Vec<DecisionRecord>,
    /// Calibrated profiles.
    pub calibration: Calibration,
}

/// Input the evaluation cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// A timestamp that is not ISO 8601 with an offset.
    #[error("{field}: not an ISO 8601 instant with an offset: '{value}'")]
    Timestamp {
        /// Where.
        field: String,
        /// What was there.
        value: String,
    },
    /// A stored threshold that is not a number.
    #[error("compliance_thresholds of '{tenant}': {source}")]
    Thresholds {
        /// Whose.
        tenant: String,
        /// What.
        source: ThresholdError,
    },
}

fn instant(field: &str, text: &str) -> Result<DateTime<Utc>, LogError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| LogError::Timestamp {
            field: field.to_owned(),
            value: text.to_owned(),
        })
}

/// An event with its instant parsed.
struct Timed<'a> {
    at: DateTime<Utc>,
    event: &'a LogEvent,
}

/// The store, indexed for the evaluation.
struct Store<'a> {
    input: &'a LogInput,
    /// Newest first (the order the original reads events back in).
    events: Vec<Timed<'a>>,
    intents: Vec<(DateTime<Utc>, &'a LogIntent)>,
}

impl<'a> Store<'a> {
    fn of_tenant(&self, tenant: &Option<String>) -> bool {
        match &self.input.tenant_id {
            None => true,
            Some(t) => tenant.as_deref() == Some(t.as_str()),
        }
    }

    /// The tenant's events of a type with `from <= at` (and `at < until`), newest first.
    fn typed(
        &self,
        event_type: &'a str,
        from: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> impl Iterator<Item = &'a LogEvent> + '_ {
        self.events
            .iter()
            .filter(move |t| t.event.event_type == event_type)
            .filter(move |t| self.of_tenant(&t.event.tenant_id))
            .filter(move |t| from.is_none_or(|f| t.at >= f))
            .filter(move |t| until.is_none_or(|u| t.at < u))
            .map(|t| t.event)
    }

    fn window(&self, from: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> WindowTally {
        let count = |event_type| self.typed(event_type, from, until).count() as u64;
        let simulations: Vec<&LogEvent> = self.typed("simulation.completed", from, until).collect();
        let risks: Vec<&LogEvent> = self.typed("risk.evaluated", from, until).collect();
        let score = |e: &LogEvent, key: &str, default: f64| {
            e.payload
                .get(key)
                .and_then(Value::as_f64)
                .unwrap_or(default)
        };
        let mean_of = |key: &str, default: f64| {
            if risks.is_empty() {
                0.0
            } else {
                mean(
                    &risks
                        .iter()
                        .map(|e| score(e, key, default))
                        .collect::<Vec<_>>(),
                )
            }
        };
        WindowTally {
            simulations: simulations.len() as u64,
            mergeable: simulations
                .iter()
                .filter(|e| e.payload.get("mergeable").is_some_and(truthy))
                .count() as u64,
            risk_evaluations: risks.len() as u64,
            entropy_mean: mean_of("entropy_score", 0.0),
            propagation_mean: mean_of("propagation_score", 0.0),
            containment_mean: mean_of("containment_score", 1.0),
            high_propagation: risks
                .iter()
                .filter(|e| score(e, "propagation_score", 0.0) > 40.0)
                .count() as u64,
            merged: count("intent.merged"),
            rejected: count("intent.rejected"),
            requeued: count("intent.requeued"),
            semantic_conflicts: count("semantic_conflict.detected"),
        }
    }

    fn totals(&self) -> LogTotals {
        let window = self.window(None, None);
        let resets = self.typed("queue.reset", None, None).count() as u64;
        LogTotals {
            simulations: window.simulations,
            mergeable: window.mergeable,
            merged: window.merged,
            rejected: window.rejected,
            blocked: self.typed("intent.blocked", None, None).count() as u64,
            retries: resets + window.requeued,
        }
    }

    fn intent_tally(&self, stale_before: DateTime<Utc>) -> IntentTally {
        let mine: Vec<&(DateTime<Utc>, &LogIntent)> = self
            .intents
            .iter()
            .filter(|(_, i)| self.of_tenant(&i.tenant_id))
            .collect();
        let active: Vec<_> = mine
            .iter()
            .filter(|(_, i)| matches!(i.status.as_str(), "READY" | "VALIDATED" | "QUEUED"))
            .collect();
        IntentTally {
            total: mine.len() as u64,
            active: active.len() as u64,
            stale: active.iter().filter(|(at, _)| *at < stale_before).count() as u64,
            retried: active.iter().filter(|(_, i)| i.retries > 0).count() as u64,
        }
    }

    /// The payload of the intent's latest event of a type, whatever its tenant (quirk 2).
    fn latest(&self, intent_id: &str, event_type: &str) -> Option<&'a Value> {
        self.events
            .iter()
            .find(|t| {
                t.event.event_type == event_type && t.event.intent_id.as_deref() == Some(intent_id)
            })
            .map(|t| &t.event.payload)
    }
}

/// Evaluates the nine read-side functions over `input`, each on the store as given (no
/// function sees another's snapshot).
pub fn evaluate(input: &LogInput) -> Result<LogReport, LogError> {
    let now = instant("now", &input.now)?;
    let mut events = Vec::with_capacity(input.events.len());
    for (i, event) in input.events.iter().enumerate() {
        events.push(Timed {
            at: instant(&format!("events[{i}].timestamp"), &event.timestamp)?,
            event,
        });
    }
    // Newest first; no two events of one type share an instant, so the order is the original's.
    events.sort_by_key(|t| std::cmp::Reverse(t.at));
    let mut intents = Vec::with_capacity(input.intents.len());
    for (i, intent) in input.intents.iter().enumerate() {
        intents.push((
            instant(&format!("intents[{i}].created_at"), &intent.created_at)?,
            intent,
        ));
    }
    let store = Store {
        input,
        events,
        intents,
    };
    let stamp = Stamp {
        timestamp: input.now.clone(),
        tenant_id: input.tenant_id.clone(),
    };
    let s24 = now - Duration::hours(24);
    let s48 = now - Duration::hours(48);
    let last_day = store.window(Some(s24), None);
    let day_before = store.window(Some(s48), Some(s24));
    let intent_tally = store.intent_tally(s24);

    let change_health = input
        .change_health_intent_ids
        .iter()
        .map(|id| {
            let signals = ChangeSignals::of_payloads(
                store.latest(id, "risk.evaluated"),
                store.latest(id, "simulation.completed"),
                store.latest(id, "policy.evaluated"),
            );
            let health = change_health(id, signals, &stamp);
            (
                id.clone(),
                serde_json::to_value(health).unwrap_or(Value::Null),
            )
        })
        .collect();

    let look_back = now - Duration::days(2 * i64::from(input.horizon_days));
    let mut snapshots: Vec<SnapshotPoint> = store
        .typed("health.snapshot", Some(look_back), None)
        .take(PREDICTION_SNAPSHOTS)
        .map(|e| SnapshotPoint::of_payload(&e.payload))
        .collect();
    snapshots.reverse();

    let open_reviews = input
        .review_tasks
        .iter()
        .filter(|r| store.of_tenant(&r.tenant_id))
        .filter(|r| matches!(r.status.as_str(), "pending" | "assigned"))
        .count() as u64;
    let debt = verification_debt(&intent_tally, open_reviews, &last_day, &stamp);

    let thresholds = match &input.tenant_id {
        Some(tenant) => match input
            .compliance_thresholds
            .iter()
            .find(|t| &t.tenant_id == tenant)
            .and_then(|t| t.data.as_object())
            .filter(|data| !data.is_empty())
        {
            Some(data) => {
                ComplianceThresholds::overlaid(data).map_err(|source| LogError::Thresholds {
                    tenant: tenant.clone(),
                    source,
                })?
            }
            None => ComplianceThresholds::default(),
        },
        None => ComplianceThresholds::default(),
    };
    let totals = store.totals();

    let mut exported: Vec<&(DateTime<Utc>, &LogIntent)> = store
        .intents
        .iter()
        .filter(|(_, i)| store.of_tenant(&i.tenant_id))
        .collect();
    exported.sort_by(|(a_at, a), (b_at, b)| a.priority.cmp(&b.priority).then(a_at.cmp(b_at)));
    let export_decisions = exported
        .into_iter()
        .map(|(_, intent)| {
            record_of(
                RecordHead {
                    intent_id: intent.id.clone(),
                    source: intent.source.clone(),
                    target: intent.target.clone(),
                    status: intent.status.clone(),
                    risk_level: intent.risk_level.clone(),
                    priority: intent.priority,
                    retries: intent.retries,
                    tenant_id: intent.tenant_id.clone(),
                    created_at: Value::String(intent.created_at.clone()),
                },
                store.latest(&intent.id, "risk.evaluated"),
                store.latest(&intent.id, "simulation.completed"),
                store.latest(&intent.id, "policy.evaluated"),
            )
        })
        .collect();

    // Calibration reads every tenant's risk evaluations (quirk 4).
    let mut sample: Vec<f64> = store
        .events
        .iter()
        .filter(|t| t.event.event_type == "risk.evaluated")
        .take(CALIBRATION_SAMPLE)
        .map(|t| {
            t.event
                .payload
                .get("entropy_score")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        })
        .collect();
    sample.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let percentiles = calibration_positions(sample.len()).map(|at| at.map(|i| sample[i]));

    Ok(LogReport {
        repo_health: repo_health(&last_day, &intent_tally, &stamp),
        change_health,
        predictive_health: predictive_health(&snapshots, input.horizon_days, &stamp),
        compliance: compliance_report(
            &totals,
            intent_tally.total,
            debt.debt_score,
            &thresholds,
            &stamp,
        ),
        verification_debt: debt,
        predictions: predictions(&last_day, &day_before),
        integration_metrics: integration_metrics(&totals, &stamp),
        export_decisions,
        calibration: calibration(sample.len(), percentiles, &input.now),
    })
}
