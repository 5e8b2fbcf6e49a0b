//! How a team's integration is going: repository health with its lessons, change health,
//! predictive health, verification debt, the compliance report, predictions of trouble,
//! integration metrics and entropy-budget calibration — the original's formulas (spec §10;
//! `fixtures/analytics/README.md`), numerically identical to it.
//!
//! Every formula here reads *tallies* (counts and means over a window of the event log), never
//! events: the server counts them in SQL, and [`log`] counts them from an in-memory log with
//! the original's exact rules (`converge analytics eval` and the parity fixtures). Both feed
//! the same functions below, so the two can only differ in what they count, not in how a score
//! follows from the counts.
//!
//! Arithmetic follows the original operation by operation: Python's `round` ([`py_round`]),
//! its compensated `sum` for means, and its format specs (ties to even on the exact binary
//! value), because the fixtures pin the last digit.

pub mod log;

use serde::Serialize;
use serde_json::{Number, Value};

use crate::intent::RiskLevel;
use crate::numeric::py_round;
use crate::policy::{Profile, Threshold};

/// What every answer echoes: when it was computed and for which tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The instant, as the answer prints it.
    pub timestamp: String,
    /// The tenant asked about (`None`: every tenant).
    pub tenant_id: Option<String>,
}

/// Counts and means over the events of one time window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowTally {
    /// `simulation.completed` events.
    pub simulations: u64,
    /// Of them, those whose `mergeable` is truthy.
    pub mergeable: u64,
    /// `risk.evaluated` events.
    pub risk_evaluations: u64,
    /// Mean `entropy_score` of those (0.0 when there are none).
    pub entropy_mean: f64,
    /// Mean `propagation_score` of those (0.0 when there are none).
    pub propagation_mean: f64,
    /// Mean `containment_score` of those (a missing score counts 1.0; 0.0 when there are none).
    pub containment_mean: f64,
    /// Risk evaluations whose `propagation_score` is above 40.
    pub high_propagation: u64,
    /// `intent.merged` events.
    pub merged: u64,
    /// `intent.rejected` events.
    pub rejected: u64,
    /// `intent.requeued` events.
    pub requeued: u64,
    /// `semantic_conflict.detected` events.
    pub semantic_conflicts: u64,
}

impl WindowTally {
    /// Simulations that did not merge cleanly.
    pub fn conflicting(&self) -> u64 {
        self.simulations - self.mergeable.min(self.simulations)
    }

    /// Conflicting simulations over `max(simulations, 1)`, as the predictions compute it.
    fn conflict_share(&self) -> f64 {
        self.conflicting() as f64 / self.simulations.max(1) as f64
    }
}

/// The intents of a tenant as the debt and health formulas see them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntentTally {
    /// Every intent.
    pub total: u64,
    /// Intents waiting (READY, VALIDATED, QUEUED).
    pub active: u64,
    /// Active intents created more than 24 hours ago.
    pub stale: u64,
    /// Active intents that have failed at least once.
    pub retried: u64,
}

/// The event types counted per tenant and day as they are appended (the store's
/// `event_tallies`): those the all-time and per-day figures read. Counting every type would
/// cost every webhook delivery an upsert for nothing.
pub const TALLIED: [crate::EventType; 7] = [
    crate::EventType::SimulationCompleted,
    crate::EventType::IntentCreated,
    crate::EventType::IntentMerged,
    crate::EventType::IntentRejected,
    crate::EventType::IntentBlocked,
    crate::EventType::IntentRequeued,
    crate::EventType::QueueReset,
];

/// Counts over the whole log (not windowed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogTotals {
    /// `simulation.completed` events.
    pub simulations: u64,
    /// Of them, those whose `mergeable` is truthy.
    pub mergeable: u64,
    /// `intent.merged` events.
    pub merged: u64,
    /// `intent.rejected` events.
    pub rejected: u64,
    /// `intent.blocked` events.
    pub blocked: u64,
    /// `queue.reset` plus `intent.requeued` events.
    pub retries: u64,
}

/// `"green"`, `"yellow"` or `"red"` for a health score (70 and 40 are the lower bounds).
pub fn health_status(score: f64) -> &'static str {
    if score >= 70.0 {
        "green"
    } else if score >= 40.0 {
        "yellow"
    } else {
        "red"
    }
}

fn health_level(score: f64) -> &'static str {
    if score >= 70.0 {
        "strong"
    } else if score >= 40.0 {
        "acceptable"
    } else {
        "fragile"
    }
}

/// Python's `f"{x:.{digits}f}"`: the exact binary value rounded half to even.
fn fixed(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

/// Python's `f"{x:.{digits}%}"`: multiplied by 100 in doubles, then formatted.
fn percent(x: f64, digits: usize) -> String {
    format!("{}%", fixed(x * 100.0, digits))
}

/// Python's `max(0.0, x)`: the first argument wins a tie.
fn at_least_zero(x: f64) -> f64 {
    if x > 0.0 { x } else { 0.0 }
}

/// What a lesson measures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LessonMetric {
    /// The measure.
    pub name: &'static str,
    /// Its value (3 decimals).
    pub observed: f64,
    /// Where it should be.
    pub target: f64,
}

/// One thing the numbers teach, with what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lesson {
    /// Stable code (`learn.low_mergeable`, ...).
    pub code: &'static str,
    /// Short title.
    pub title: &'static str,
    /// Why it matters.
    pub why: &'static str,
    /// What to do.
    pub action: &'static str,
    /// 0 first.
    pub priority: u8,
    /// The figure behind it.
    pub metric: LessonMetric,
}

/// The lessons of a health score, most urgent first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Learning {
    /// One sentence.
    pub summary: String,
    /// `strong`, `acceptable` or `fragile`.
    pub level: &'static str,
    /// Most urgent first.
    pub lessons: Vec<Lesson>,
    /// The actions of the first three lessons.
    pub next_actions: Vec<&'static str>,
}

impl Learning {
    fn of(summary: String, level: &'static str, mut lessons: Vec<Lesson>) -> Learning {
        lessons.sort_by_key(|l| l.priority); // stable: equal priorities keep their order
        let next_actions = lessons.iter().take(3).map(|l| l.action).collect();
        Learning {
            summary,
            level,
            lessons,
            next_actions,
        }
    }
}

fn lesson(
    code: &'static str,
    priority: u8,
    metric: &'static str,
    observed: f64,
    target: f64,
) -> Lesson {
    let (title, why, action) = lesson_text(code);
    Lesson {
        code,
        title,
        why,
        action,
        priority,
        metric: LessonMetric {
            name: metric,
            observed: py_round(observed, 3),
            target: py_round(target, 3),
        },
    }
}

/// The fixed words of each lesson (the original's).
fn lesson_text(code: &str) -> (&'static str, &'static str, &'static str) {
    match code {
        "learn.low_mergeable" => (
            "Low mergeable rate",
            "A low rate increases friction and integration queue backlog",
            "Reduce average change size and enforce pre-merge checks",
        ),
        "learn.high_entropy" => (
            "Elevated entropy",
            "High average entropy indicates large or complex changes entering the system",
            "Split large intents into smaller focused changes",
        ),
        "learn.frequent_rejections" => (
            "Frequent rejections",
            "Multiple rejections indicate systemic issues with source branch quality or policy fit",
            "Review policy thresholds and source branch preparation workflows",
        ),
        "learn.health_below_target" => (
            "Health below target",
            "Overall repo health has degraded below the safe threshold",
            "Prioritize resolving conflicts, reducing entropy, and clearing the queue",
        ),
        "learn.conflict" => (
            "Merge conflict present",
            "Source branch has conflicts with target — cannot merge cleanly",
            "Rebase or resolve conflicts before retrying",
        ),
        "learn.high_risk" => (
            "Elevated risk score",
            "Risk score exceeds safe threshold — multiple risk signals contributing",
            "Consider splitting into smaller changes or adding test coverage",
        ),
        _ => (
            "High change entropy",
            "Entropic load indicates a complex or wide-reaching change",
            "Reduce scope or break into incremental, independently-mergeable changes",
        ),
    }
}

/// Repository health now (spec §10): a score out of 100 from the last 24 hours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoHealth {
    /// 0–100, one decimal.
    pub repo_health_score: f64,
    /// Mean entropy of the window's risk evaluations, one decimal.
    pub entropy_score: f64,
    /// Clean simulations over simulations (1.0 with none), three decimals.
    pub mergeable_rate: f64,
    /// One minus the unrounded mergeable rate, three decimals.
    pub conflict_rate: f64,
    /// Intents waiting (not windowed).
    pub active_intents: u64,
    /// Merges in the window (events).
    pub merged_last_24h: u64,
    /// Rejections in the window (events).
    pub rejected_last_24h: u64,
    /// `green`, `yellow` or `red`.
    pub status: &'static str,
    /// When computed.
    pub timestamp: String,
    /// The tenant asked about.
    pub tenant_id: Option<String>,
    /// What the numbers teach.
    pub learning: Learning,
}

/// Repository health from the last 24 hours' tally and the waiting intents.
pub fn repo_health(window: &WindowTally, intents: &IntentTally, stamp: &Stamp) -> RepoHealth {
    let mergeable_rate = if window.simulations > 0 {
        window.mergeable as f64 / window.simulations as f64
    } else {
        1.0
    };
    let conflict_rate = 1.0 - mergeable_rate;
    let avg_entropy = window.entropy_mean;
    let rejected = window.rejected;
    let mut score = 100.0;
    score -= conflict_rate * 30.0;
    score -= avg_entropy.min(50.0) * 0.5;
    score -= rejected.min(20) as f64 * 1.5;
    let score = at_least_zero(py_round(score, 1));

    let mut lessons = Vec::new();
    if mergeable_rate < 0.85 {
        let priority = if mergeable_rate < 0.7 { 1 } else { 2 };
        lessons.push(lesson(
            "learn.low_mergeable",
            priority,
            "mergeable_rate",
            mergeable_rate,
            0.85,
        ));
    }
    if avg_entropy > 15.0 {
        let priority = if avg_entropy > 30.0 { 1 } else { 2 };
        lessons.push(lesson(
            "learn.high_entropy",
            priority,
            "avg_entropy",
            avg_entropy,
            15.0,
        ));
    }
    if rejected > 3 {
        lessons.push(lesson(
            "learn.frequent_rejections",
            1,
            "rejected_count",
            rejected as f64,
            3.0,
        ));
    }
    if score < 70.0 {
        lessons.push(lesson(
            "learn.health_below_target",
            0,
            "health_score",
            score,
            70.0,
        ));
    }
    let level = health_level(score);
    RepoHealth {
        repo_health_score: score,
        entropy_score: py_round(avg_entropy, 1),
        mergeable_rate: py_round(mergeable_rate, 3),
        conflict_rate: py_round(conflict_rate, 3),
        active_intents: intents.active,
        merged_last_24h: window.merged,
        rejected_last_24h: rejected,
        status: health_status(score),
        timestamp: stamp.timestamp.clone(),
        tenant_id: stamp.tenant_id.clone(),
        learning: Learning::of(
            format!("Repo health is {level} (score: {})", fixed(score, 0)),
            level,
            lessons,
        ),
    }
}

/// What change health reads of an intent: the payload fields of its latest risk evaluation,
/// merge simulation and policy evaluation (`None`: no such event, or no such field).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSignals {
    /// The latest `risk.evaluated`'s `risk_score`.
    pub risk_score: Option<Number>,
    /// The latest `risk.evaluated`'s `entropy_score`.
    pub entropy_score: Option<Number>,
    /// The latest `simulation.completed`'s `mergeable`.
    pub mergeable: Option<Value>,
    /// The latest `policy.evaluated`'s `verdict`.
    pub verdict: Option<Value>,
}

impl ChangeSignals {
    /// What change health reads of the payloads of an intent's latest risk evaluation,
    /// simulation and policy evaluation (each `None` when it has none).
    pub fn of_payloads(
        risk: Option<&Value>,
        simulation: Option<&Value>,
        policy: Option<&Value>,
    ) -> ChangeSignals {
        let number = |key: &str| match risk.and_then(|r| r.get(key)) {
            Some(Value::Number(n)) => Some(n.clone()),
            _ => None,
        };
        ChangeSignals {
            risk_score: number("risk_score"),
            entropy_score: number("entropy_score"),
            mergeable: simulation.and_then(|s| s.get("mergeable")).cloned(),
            verdict: policy.and_then(|p| p.get("verdict")).cloned(),
        }
    }
}

/// One intent's health (spec §10).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeHealth {
    /// The intent.
    pub intent_id: String,
    /// 0–100, one decimal.
    pub health_score: f64,
    /// As the latest risk evaluation has it (0 without one).
    pub risk_score: Number,
    /// As the latest risk evaluation has it (0 without one).
    pub entropy_score: Number,
    /// As the latest simulation has it (true without one).
    pub mergeable: Value,
    /// The latest policy verdict (`unknown` without one).
    pub policy_verdict: Value,
    /// `green`, `yellow` or `red`.
    pub status: &'static str,
    /// When computed.
    pub timestamp: String,
    /// The tenant asked about.
    pub tenant_id: Option<String>,
    /// What the numbers teach.
    pub learning: Learning,
}

/// Python's truthiness of a JSON value.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The health of one intent from its latest evaluations.
pub fn change_health(intent_id: &str, signals: ChangeSignals, stamp: &Stamp) -> ChangeHealth {
    let risk_score = signals.risk_score.unwrap_or_else(|| Number::from(0));
    let entropy_score = signals.entropy_score.unwrap_or_else(|| Number::from(0));
    let mergeable = signals.mergeable.unwrap_or(Value::Bool(true));
    let verdict = signals
        .verdict
        .unwrap_or_else(|| Value::String("unknown".to_owned()));
    let risk = risk_score.as_f64().unwrap_or(0.0);
    let entropy = entropy_score.as_f64().unwrap_or(0.0);
    let clean = truthy(&mergeable);
    let penalty = if clean { 0.0 } else { 30.0 };
    let health = at_least_zero(py_round(
        ((100.0 - risk * 0.5) - entropy * 0.3) - penalty,
        1,
    ));

    let mut lessons = Vec::new();
    if !clean {
        lessons.push(lesson("learn.conflict", 0, "mergeable", 0.0, 1.0));
    }
    if risk > 40.0 {
        let priority = if risk > 60.0 { 1 } else { 2 };
        lessons.push(lesson(
            "learn.high_risk",
            priority,
            "risk_score",
            risk,
            40.0,
        ));
    }
    if entropy > 20.0 {
        let priority = if entropy > 40.0 { 1 } else { 2 };
        lessons.push(lesson(
            "learn.change_entropy",
            priority,
            "entropy_score",
            entropy,
            20.0,
        ));
    }
    let level = health_level(health);
    ChangeHealth {
        intent_id: intent_id.to_owned(),
        health_score: health,
        risk_score,
        entropy_score,
        mergeable,
        policy_verdict: verdict,
        status: health_status(health),
        timestamp: stamp.timestamp.clone(),
        tenant_id: stamp.tenant_id.clone(),
        learning: Learning::of(
            format!("Change health: {level} ({})", fixed(health, 0)),
            level,
            lessons,
        ),
    }
}

/// What one health snapshot contributes to the prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotPoint {
    /// `repo_health_score` (100.0 when missing).
    pub score: f64,
    /// `entropy_score` (0.0 when missing).
    pub entropy: f64,
    /// `conflict_rate` (0.0 when missing).
    pub conflict_rate: f64,
}

impl SnapshotPoint {
    /// What a `health.snapshot` payload contributes (its defaults where a field is missing).
    pub fn of_payload(payload: &Value) -> SnapshotPoint {
        let field =
            |key: &str, default: f64| payload.get(key).and_then(Value::as_f64).unwrap_or(default);
        SnapshotPoint {
            score: field("repo_health_score", 100.0),
            entropy: field("entropy_score", 0.0),
            conflict_rate: field("conflict_rate", 0.0),
        }
    }
}

/// The most snapshots a prediction reads (the newest ones in its look-back window).
pub const PREDICTION_SNAPSHOTS: usize = 500;

/// Snapshots a prediction needs.
pub const PREDICTION_MIN_SNAPSHOTS: usize = 3;

/// A signal of where health is heading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrajectorySignal {
    /// `predict.health_falling`, `predict.entropy_rising`, `predict.conflict_rising`,
    /// `predict.approaching_red`.
    pub signal: &'static str,
    /// What was seen.
    pub message: String,
    /// `medium`, `high` or `critical`.
    pub severity: &'static str,
}

/// How fast each figure moves: the mean of the recent half minus the mean of the older half.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Velocity {
    /// Health score (two decimals).
    pub health: f64,
    /// Entropy (two decimals).
    pub entropy: f64,
    /// Conflict rate (four decimals).
    pub conflict_rate: f64,
}

/// Where health is heading (spec §10, `health predict`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PredictiveHealth {
    /// Fewer than three snapshots: the original's five-key answer.
    TooFewSnapshots {
        /// `unknown`.
        projected_status: &'static str,
        /// `low`.
        confidence: &'static str,
        /// How many there were.
        reason: String,
        /// Collect more.
        recommendation: &'static str,
        /// False.
        should_gate: bool,
    },
    /// A projection.
    Projected(Box<Projection>),
}

/// A projection of health from its recent snapshots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Projection {
    /// Status of the latest snapshot.
    pub current_status: &'static str,
    /// Score of the latest snapshot (one decimal).
    pub current_health: f64,
    /// Status of the projection.
    pub projected_status: &'static str,
    /// Projected score, clamped to [0, 100] (one decimal).
    pub projected_health: f64,
    /// The look-back is twice this many days.
    pub horizon_days: u32,
    /// How fast things move.
    pub velocity: Velocity,
    /// What the trajectory shows.
    pub signals: Vec<TrajectorySignal>,
    /// Whether intake should stop (projected red while not red now).
    pub should_gate: bool,
    /// `high` with seven snapshots or more, else `medium`.
    pub confidence: &'static str,
    /// What to do.
    pub recommendation: &'static str,
    /// Snapshots read.
    pub data_points: usize,
    /// When computed.
    pub timestamp: String,
    /// The tenant asked about.
    pub tenant_id: Option<String>,
}

fn mean(values: &[f64]) -> f64 {
    crate::numeric::neumaier_sum(values.iter().copied()) / values.len() as f64
}

/// Predicts health from snapshots, oldest first (at most [`PREDICTION_SNAPSHOTS`], the newest).
pub fn predictive_health(
    snapshots: &[SnapshotPoint],
    horizon_days: u32,
    stamp: &Stamp,
) -> PredictiveHealth {
    let n = snapshots.len();
    if n < PREDICTION_MIN_SNAPSHOTS {
        return PredictiveHealth::TooFewSnapshots {
            projected_status: "unknown",
            confidence: "low",
            reason: format!("Not enough data ({n} snapshots, need 3+)"),
            recommendation: "Collect more health snapshots before prediction is reliable",
            should_gate: false,
        };
    }
    let column = |f: fn(&SnapshotPoint) -> f64| -> (Vec<f64>, Vec<f64>) {
        let values: Vec<f64> = snapshots.iter().map(f).collect();
        let recent = values[n / 2..].to_vec();
        let mut older = values;
        older.truncate(n / 2);
        (older, recent)
    };
    let (older_scores, recent_scores) = column(|s| s.score);
    let (older_entropy, recent_entropy) = column(|s| s.entropy);
    let (older_conflict, recent_conflict) = column(|s| s.conflict_rate);
    let recent_score = mean(&recent_scores);
    let recent_entropy_mean = mean(&recent_entropy);
    let recent_conflict_mean = mean(&recent_conflict);
    let velocity_health = recent_score - mean(&older_scores);
    let velocity_entropy = recent_entropy_mean - mean(&older_entropy);
    let velocity_conflict = recent_conflict_mean - mean(&older_conflict);
    let current = snapshots[n - 1].score;
    let projected_raw = recent_score + velocity_health;
    let projected = at_least_zero(if projected_raw < 100.0 {
        projected_raw
    } else {
        100.0
    });

    let mut signals = Vec::new();
    if velocity_health < -5.0 {
        signals.push(TrajectorySignal {
            signal: "predict.health_falling",
            message: format!(
                "Health declining at {} per period (current: {})",
                fixed(velocity_health, 1),
                fixed(recent_score, 0)
            ),
            severity: if velocity_health < -10.0 {
                "high"
            } else {
                "medium"
            },
        });
    }
    if velocity_entropy > 3.0 {
        signals.push(TrajectorySignal {
            signal: "predict.entropy_rising",
            message: format!(
                "Entropy rising at +{} per period (current: {})",
                fixed(velocity_entropy, 1),
                fixed(recent_entropy_mean, 1)
            ),
            severity: if velocity_entropy > 5.0 {
                "high"
            } else {
                "medium"
            },
        });
    }
    if velocity_conflict > 0.05 {
        signals.push(TrajectorySignal {
            signal: "predict.conflict_rising",
            message: format!(
                "Conflict rate rising at +{} per period (current: {})",
                fixed(velocity_conflict, 2),
                percent(recent_conflict_mean, 1)
            ),
            severity: "medium",
        });
    }
    let current_status = health_status(current);
    let projected_status = health_status(projected);
    let should_gate = projected_status == "red" && current_status != "red";
    if should_gate {
        signals.push(TrajectorySignal {
            signal: "predict.approaching_red",
            message: format!(
                "Current: {current_status} ({}), projected: red ({})",
                fixed(current, 0),
                fixed(projected, 0)
            ),
            severity: "critical",
        });
    }
    PredictiveHealth::Projected(Box::new(Projection {
        current_status,
        current_health: py_round(current, 1),
        projected_status,
        projected_health: py_round(projected, 1),
        horizon_days,
        velocity: Velocity {
            health: py_round(velocity_health, 2),
            entropy: py_round(velocity_entropy, 2),
            conflict_rate: py_round(velocity_conflict, 4),
        },
        signals,
        should_gate,
        confidence: if n >= 7 { "high" } else { "medium" },
        recommendation: if should_gate {
            "Consider pausing new intents — health trajectory indicates degradation"
        } else {
            "System trajectory is stable"
        },
        data_points: n,
        timestamp: stamp.timestamp.clone(),
        tenant_id: stamp.tenant_id.clone(),
    }))
}

/// Where the debt's parts come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DebtBreakdown {
    /// Active intents older than the threshold.
    pub stale_intents: u64,
    /// Active intents.
    pub active_intents: u64,
    /// Hours after which an active intent is stale.
    pub stale_hours_threshold: u64,
    /// Active intents at which queue pressure saturates.
    pub queue_capacity: u64,
    /// Review tasks pending or assigned.
    pub pending_reviews: u64,
    /// Pending reviews at which the backlog saturates.
    pub review_capacity: u64,
    /// `0.7 × conflicting share of the window's simulations + 0.3 × semantic share` (3 dp).
    pub conflict_rate: f64,
    /// Active intents that have failed at least once.
    pub retry_intents: u64,
}

/// Verification debt (0–100): how much validated-but-unmerged work is piling up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerificationDebt {
    /// The sum of the parts (rounded from the unrounded parts).
    pub debt_score: f64,
    /// Up to 25.
    pub staleness_score: f64,
    /// Up to 20.
    pub queue_pressure_score: f64,
    /// Up to 25.
    pub review_backlog_score: f64,
    /// Up to 15.
    pub conflict_pressure_score: f64,
    /// Up to 15.
    pub retry_pressure_score: f64,
    /// The figures behind it.
    pub breakdown: DebtBreakdown,
    /// `green` (≤ 30), `yellow` (≤ 70) or `red`.
    pub status: &'static str,
    /// When computed.
    pub timestamp: String,
    /// The tenant asked about.
    pub tenant_id: Option<String>,
}

/// Python's `min(1.0, x)`.
fn at_most_one(x: f64) -> f64 {
    if 1.0 <= x { 1.0 } else { x }
}

/// Verification debt from the waiting intents, open reviews and the last 24 hours.
pub fn verification_debt(
    intents: &IntentTally,
    open_reviews: u64,
    window: &WindowTally,
    stamp: &Stamp,
) -> VerificationDebt {
    let n = intents.active;
    let staleness = at_most_one(if n > 0 {
        intents.stale as f64 / n as f64
    } else {
        0.0
    }) * 25.0;
    let queue = at_most_one(n as f64 / 50.0) * 20.0;
    let backlog = at_most_one(open_reviews as f64 / 10.0) * 25.0;
    let m = if window.simulations > 0 {
        window.conflicting() as f64 / window.simulations as f64
    } else {
        0.0
    };
    let k = window.semantic_conflicts;
    let s = if k > 0 {
        at_most_one(k as f64 / 10.0)
    } else {
        0.0
    };
    let conflict_rate = m * 0.7 + s * 0.3;
    let conflict = conflict_rate * 15.0;
    let retry = if n > 0 {
        intents.retried as f64 / n as f64 * 15.0
    } else {
        0.0
    };
    let debt = py_round((((staleness + queue) + backlog) + conflict) + retry, 1);
    VerificationDebt {
        debt_score: debt,
        staleness_score: py_round(staleness, 1),
        queue_pressure_score: py_round(queue, 1),
        review_backlog_score: py_round(backlog, 1),
        conflict_pressure_score: py_round(conflict, 1),
        retry_pressure_score: py_round(retry, 1),
        breakdown: DebtBreakdown {
            stale_intents: intents.stale,
            active_intents: n,
            stale_hours_threshold: 24,
            queue_capacity: 50,
            pending_reviews: open_reviews,
            review_capacity: 10,
            conflict_rate: py_round(conflict_rate, 3),
            retry_intents: intents.retried,
        },
        status: if debt <= 30.0 {
            "green"
        } else if debt <= 70.0 {
            "yellow"
        } else {
            "red"
        },
        timestamp: stamp.timestamp.clone(),
        tenant_id: stamp.tenant_id.clone(),
    }
}

/// The compliance thresholds (SLOs) a report checks, each echoed with the JSON type it was
/// given.
#[derive(Debug, Clone, PartialEq)]
pub struct ComplianceThresholds {
    /// Lowest mergeable rate allowed.
    pub min_mergeable_rate: Number,
    /// Highest conflict rate allowed.
    pub max_conflict_rate: Number,
    /// Most requeues and resets allowed.
    pub max_retries_total: Number,
    /// Most intents tracked.
    pub max_queue_tracked: Number,
    /// Highest verification debt allowed.
    pub max_debt_score: Number,
}

/// The names of the thresholds, in the order the report checks them.
pub const THRESHOLD_NAMES: [&str; 5] = [
    "min_mergeable_rate",
    "max_conflict_rate",
    "max_retries_total",
    "max_queue_tracked",
    "max_debt_score",
];

fn float_number(x: f64) -> Number {
    Number::from_f64(x).unwrap_or_else(|| Number::from(0))
}

impl Default for ComplianceThresholds {
    fn default() -> Self {
        ComplianceThresholds {
            min_mergeable_rate: float_number(0.80),
            max_conflict_rate: float_number(0.20),
            max_retries_total: Number::from(200),
            max_queue_tracked: Number::from(1000),
            max_debt_score: float_number(70.0),
        }
    }
}

/// A stored threshold set that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ThresholdError {
    /// The offending key.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ComplianceThresholds {
    /// The defaults overlaid with the five known keys of `data` (other keys are not thresholds
    /// and are left alone, as the original does).
    pub fn overlaid(data: &serde_json::Map<String, Value>) -> Result<Self, ThresholdError> {
        let mut t = ComplianceThresholds::default();
        for name in THRESHOLD_NAMES {
            let Some(value) = data.get(name) else {
                continue;
            };
            let Value::Number(number) = value else {
                return Err(ThresholdError {
                    field: name.to_owned(),
                    reason: format!("must be a number, got {value}"),
                });
            };
            *t.slot(name) = number.clone();
        }
        Ok(t)
    }

    /// Validates thresholds to store: only the five names, each a number in its range (rates
    /// and the debt score in [0, 1] and [0, 100], the counts whole, up to a billion). Returns
    /// what they make with the defaults.
    pub fn validated(data: &serde_json::Map<String, Value>) -> Result<Self, ThresholdError> {
        let refuse = |field: &str, reason: String| ThresholdError {
            field: field.to_owned(),
            reason,
        };
        for (name, value) in data {
            let Some(number) = value.as_f64().filter(|_| value.is_number()) else {
                return Err(if THRESHOLD_NAMES.contains(&name.as_str()) {
                    refuse(name, format!("must be a number, got {value}"))
                } else {
                    refuse(
                        name,
                        format!("not a threshold (known: {})", THRESHOLD_NAMES.join(", ")),
                    )
                });
            };
            let (low, high, whole) = match name.as_str() {
                "min_mergeable_rate" | "max_conflict_rate" => (0.0, 1.0, false),
                "max_debt_score" => (0.0, 100.0, false),
                "max_retries_total" | "max_queue_tracked" => (0.0, 1e9, true),
                _ => {
                    return Err(refuse(
                        name,
                        format!("not a threshold (known: {})", THRESHOLD_NAMES.join(", ")),
                    ));
                }
            };
            if whole && !(value.is_u64()) {
                return Err(refuse(
                    name,
                    format!("must be a whole number, not negative; got {value}"),
                ));
            }
            if !(low..=high).contains(&number) {
                return Err(refuse(
                    name,
                    format!("must be between {low} and {high}, got {value}"),
                ));
            }
        }
        ComplianceThresholds::overlaid(data)
    }

    /// The thresholds by name, in check order, each as given.
    pub fn as_map(&self) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        for (name, value) in THRESHOLD_NAMES.iter().zip([
            &self.min_mergeable_rate,
            &self.max_conflict_rate,
            &self.max_retries_total,
            &self.max_queue_tracked,
            &self.max_debt_score,
        ]) {
            map.insert((*name).to_owned(), Value::Number(value.clone()));
        }
        map
    }

    fn slot(&mut self, name: &str) -> &mut Number {
        match name {
            "min_mergeable_rate" => &mut self.min_mergeable_rate,
            "max_conflict_rate" => &mut self.max_conflict_rate,
            "max_retries_total" => &mut self.max_retries_total,
            "max_queue_tracked" => &mut self.max_queue_tracked,
            _ => &mut self.max_debt_score,
        }
    }
}

/// One checked SLO.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComplianceCheck {
    /// What is measured.
    pub name: &'static str,
    /// Its value.
    pub value: Number,
    /// The threshold.
    pub threshold: Number,
    /// `>=` or `<=`.
    pub op: &'static str,
    /// Whether `value op threshold` holds.
    pub passed: bool,
}

/// A failed check, raised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComplianceAlert {
    /// `SLO breach: <name>`.
    pub alert: String,
    /// The check.
    #[serde(flatten)]
    pub check: ComplianceCheck,
}

/// The compliance report (spec §10).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComplianceReport {
    /// Clean simulations over all simulations (three decimals; 1.0 with none).
    pub mergeable_rate: f64,
    /// One minus the unrounded rate (three decimals).
    pub conflict_rate: f64,
    /// Requeues plus queue resets.
    pub retries_total: u64,
    /// Intents tracked.
    pub queue_tracked: u64,
    /// The SLOs, in order.
    pub checks: Vec<ComplianceCheck>,
    /// Whether every check passed.
    pub passed: bool,
    /// The failed checks.
    pub alerts: Vec<ComplianceAlert>,
    /// When computed.
    pub timestamp: String,
    /// The tenant asked about.
    pub tenant_id: Option<String>,
}

/// Checks the log's totals and the debt against the thresholds.
pub fn compliance_report(
    totals: &LogTotals,
    queue_tracked: u64,
    debt_score: f64,
    thresholds: &ComplianceThresholds,
    stamp: &Stamp,
) -> ComplianceReport {
    let rate = if totals.simulations > 0 {
        totals.mergeable as f64 / totals.simulations as f64
    } else {
        1.0
    };
    let mergeable_rate = py_round(rate, 3);
    let conflict_rate = py_round(1.0 - rate, 3);
    let check = |name: &'static str, value: Number, threshold: &Number, op: &'static str| {
        let (v, t) = (
            value.as_f64().unwrap_or(f64::NAN),
            threshold.as_f64().unwrap_or(f64::NAN),
        );
        ComplianceCheck {
            name,
            passed: if op == ">=" { v >= t } else { v <= t },
            value,
            threshold: threshold.clone(),
            op,
        }
    };
    let checks = vec![
        check(
            "mergeable_rate",
            float_number(mergeable_rate),
            &thresholds.min_mergeable_rate,
            ">=",
        ),
        check(
            "conflict_rate",
            float_number(conflict_rate),
            &thresholds.max_conflict_rate,
            "<=",
        ),
        check(
            "retries_total",
            Number::from(totals.retries),
            &thresholds.max_retries_total,
            "<=",
        ),
        check(
            "queue_tracked",
            Number::from(queue_tracked),
            &thresholds.max_queue_tracked,
            "<=",
        ),
        check(
            "debt_score",
            float_number(debt_score),
            &thresholds.max_debt_score,
            "<=",
        ),
    ];
    let alerts: Vec<ComplianceAlert> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| ComplianceAlert {
            alert: format!("SLO breach: {}", c.name),
            check: c.clone(),
        })
        .collect();
    ComplianceReport {
        mergeable_rate,
        conflict_rate,
        retries_total: totals.retries,
        queue_tracked,
        passed: alerts.is_empty(),
        checks,
        alerts,
        timestamp: stamp.timestamp.clone(),
        tenant_id: stamp.tenant_id.clone(),
    }
}

/// A predicted issue (`predict_issues`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// `rising_conflict_rate`, `entropy_spike`, `queue_stalling`, `high_rejection_rate`,
    /// `bomb.cascade`, `bomb.spiral`, `bomb.thermal_death`.
    pub signal: &'static str,
    /// `medium`, `high` or `critical`.
    pub severity: &'static str,
    /// What was seen.
    pub message: String,
    /// What to do.
    pub recommendation: &'static str,
}

/// Issues the last 24 hours (`now`) show against the 24 hours before (`before`).
pub fn predictions(now: &WindowTally, before: &WindowTally) -> Vec<Prediction> {
    let mut found = Vec::new();
    let mut push = |signal, severity, message: String, recommendation| {
        found.push(Prediction {
            signal,
            severity,
            message,
            recommendation,
        });
    };
    let (rate_now, rate_before) = (now.conflict_share(), before.conflict_share());
    if rate_now > rate_before + 0.1 && now.simulations > 3 {
        push(
            "rising_conflict_rate",
            "high",
            format!(
                "Conflict rate rose from {} to {} in last 24h",
                percent(rate_before, 0),
                percent(rate_now, 0)
            ),
            "Consider pausing new intents and resolving current conflicts",
        );
    }
    let (entropy_now, entropy_before) = (now.entropy_mean, before.entropy_mean);
    if entropy_now > entropy_before * 1.2 && entropy_now > 15.0 && now.risk_evaluations > 3 {
        push(
            "entropy_spike",
            "medium",
            format!(
                "Average entropy rose from {} to {}",
                fixed(entropy_before, 1),
                fixed(entropy_now, 1)
            ),
            "Review recent intents for large or high-risk changes",
        );
    }
    if now.requeued > 5 {
        push(
            "queue_stalling",
            "high",
            format!("{} intents requeued in last 24h", now.requeued),
            "Check for systemic merge conflicts or failing checks",
        );
    }
    let decided = now.rejected + now.merged;
    if decided > 3 && now.rejected as f64 / decided as f64 > 0.4 {
        push(
            "high_rejection_rate",
            "critical",
            format!(
                "{}/{decided} intents rejected in last 24h ({})",
                now.rejected,
                percent(now.rejected as f64 / decided as f64, 0)
            ),
            "Review policy thresholds or source branch quality",
        );
    }
    if now.high_propagation >= 3 {
        push(
            "bomb.cascade",
            "high",
            format!(
                "{}/{} recent changes have high propagation scores (>40)",
                now.high_propagation, now.risk_evaluations
            ),
            "Multiple high-blast-radius changes detected — risk of cascade failures",
        );
    }
    let (containment_now, containment_before) = (now.containment_mean, before.containment_mean);
    if now.risk_evaluations >= 3
        && before.risk_evaluations >= 3
        && containment_now < containment_before - 0.1
        && containment_now < 0.6
    {
        push(
            "bomb.spiral",
            "medium",
            format!(
                "Containment dropping from {} to {} — changes becoming less isolated",
                fixed(containment_before, 2),
                fixed(containment_now, 2)
            ),
            "Increasing cross-boundary coupling detected — enforce scope limits",
        );
    }
    if now.risk_evaluations > 0
        && now.simulations > 0
        && entropy_now > 20.0
        && rate_now > 0.2
        && now.propagation_mean > 30.0
    {
        push(
            "bomb.thermal_death",
            "critical",
            format!(
                "System under thermal stress: entropy={}, conflict_rate={}, propagation elevated",
                fixed(entropy_now, 1),
                percent(rate_now, 0)
            ),
            "Halt new intents — system entropy is approaching critical levels",
        );
    }
    found
}

/// Decisions by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionDistribution {
    /// `intent.merged` events.
    pub merged: u64,
    /// `intent.rejected` events.
    pub rejected: u64,
    /// `intent.blocked` events.
    pub blocked: u64,
}

/// Integration metrics (all time).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntegrationMetrics {
    /// Simulations.
    pub total_simulations: u64,
    /// Clean simulations.
    pub mergeable: u64,
    /// Clean over all (three decimals; 1.0 with none).
    pub mergeable_rate: f64,
    /// Merges.
    pub total_merged: u64,
    /// Rejections.
    pub total_rejected: u64,
    /// Blocks.
    pub total_blocked: u64,
    /// The same three, together.
    pub decision_distribution: DecisionDistribution,
    /// The tenant asked about.
    pub tenant_id: Option<String>,
    /// When computed.
    pub timestamp: String,
}

/// Integration metrics from the log's totals.
pub fn integration_metrics(totals: &LogTotals, stamp: &Stamp) -> IntegrationMetrics {
    IntegrationMetrics {
        total_simulations: totals.simulations,
        mergeable: totals.mergeable,
        mergeable_rate: if totals.simulations > 0 {
            py_round(totals.mergeable as f64 / totals.simulations as f64, 3)
        } else {
            1.0
        },
        total_merged: totals.merged,
        total_rejected: totals.rejected,
        total_blocked: totals.blocked,
        decision_distribution: DecisionDistribution {
            merged: totals.merged,
            rejected: totals.rejected,
            blocked: totals.blocked,
        },
        tenant_id: stamp.tenant_id.clone(),
        timestamp: stamp.timestamp.clone(),
    }
}

/// The `q`-quantile (0 < q ≤ 1) of values sorted ascending, by nearest rank: the smallest
/// value with at least `q` of them at or below it. `None` for no values.
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The most risk evaluations calibration reads (the newest).
pub const CALIBRATION_SAMPLE: usize = 10_000;

/// Positions of the 75th, 90th and 95th percentiles in a sorted sample of `n` values
/// (`int(n * q)`, the product in doubles). `None` for an empty sample.
pub fn calibration_positions(n: usize) -> Option<[usize; 3]> {
    (n > 0).then(|| [0.75, 0.90, 0.95].map(|q| ((n as f64 * q) as usize).min(n - 1)))
}

/// A profile as calibration reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibratedProfile {
    /// The calibrated budget.
    pub entropy_budget: f64,
    /// Unchanged.
    pub containment_min: f64,
    /// Unchanged.
    pub blast_limit: f64,
    /// Unchanged.
    pub checks: Vec<String>,
    /// Unchanged.
    pub coherence_pass: Number,
    /// Unchanged.
    pub coherence_warn: Number,
}

/// The four levels' calibrated profiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibratedProfiles {
    /// Low risk.
    pub low: CalibratedProfile,
    /// Medium risk.
    pub medium: CalibratedProfile,
    /// High risk.
    pub high: CalibratedProfile,
    /// Critical risk.
    pub critical: CalibratedProfile,
}

/// Entropy budgets fitted to the entropy actually seen (`policy calibrate`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// The profiles, with fitted budgets.
    pub calibrated_profiles: CalibratedProfiles,
    /// Risk evaluations read.
    pub data_points: usize,
    /// When computed.
    pub timestamp: String,
}

/// Calibrates the built-in profiles' entropy budgets from the 75th/90th/95th percentile of
/// the sample (`percentiles`, at [`calibration_positions`] of `n` sorted values; `None` when
/// the sample is empty: the budgets stay).
pub fn calibration(n: usize, percentiles: Option<[f64; 3]>, timestamp: &str) -> Calibration {
    let profile = |level: RiskLevel, budget: Option<f64>| {
        let base = Profile::default_for(level);
        let int = |t: Threshold| {
            let v = t.value();
            if v.fract() == 0.0 {
                Number::from(v as i64)
            } else {
                float_number(v)
            }
        };
        CalibratedProfile {
            entropy_budget: budget.map_or(base.entropy_budget, |b| py_round(b, 1)),
            containment_min: base.containment_min,
            blast_limit: base.blast_limit,
            checks: base.checks,
            coherence_pass: int(base.coherence_pass),
            coherence_warn: int(base.coherence_warn),
        }
    };
    // Python's max(a, b) keeps a on a tie.
    let max = |a: f64, b: f64| if a >= b { a } else { b };
    let budgets = percentiles.map(|[p75, p90, p95]| {
        [
            max(p75 * 1.5, 10.0),
            max(p75, 8.0),
            max(p90, 5.0),
            max(p95 * 0.8, 3.0),
        ]
    });
    let budget = |i: usize| budgets.map(|b| b[i]);
    Calibration {
        calibrated_profiles: CalibratedProfiles {
            low: profile(RiskLevel::Low, budget(0)),
            medium: profile(RiskLevel::Medium, budget(1)),
            high: profile(RiskLevel::High, budget(2)),
            critical: profile(RiskLevel::Critical, budget(3)),
        },
        data_points: n,
        timestamp: timestamp.to_owned(),
    }
}

#[cfg(test)]
mod tests;
