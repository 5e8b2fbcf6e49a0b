//! Intake control: whether a new intent is taken in, by mode (spec §11). An operator sets a
//! tenant's mode (`open`, `throttle`, `pause`) or leaves it on `auto`, where the worse of
//! repository health and verification debt decides: below 30 the tenant pauses, below 60 it
//! throttles. Paused, only critical changes come in; throttled, half of them do, chosen by a
//! hash of the intent id (the same intent always gets the same answer).

use serde::{Deserialize, Serialize};

use crate::analytics::{RepoHealth, VerificationDebt};
use crate::intent::RiskLevel;
use crate::policy::rollout_bucket;

/// How a tenant takes in new intents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntakeMode {
    /// Everything comes in.
    Open,
    /// Half comes in (by id).
    Throttle,
    /// Only critical changes come in.
    Pause,
    /// Health and debt choose among the three.
    Auto,
}

impl IntakeMode {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            IntakeMode::Open => "open",
            IntakeMode::Throttle => "throttle",
            IntakeMode::Pause => "pause",
            IntakeMode::Auto => "auto",
        }
    }

    /// The mode of a name.
    pub fn parse(name: &str) -> Option<IntakeMode> {
        [
            IntakeMode::Open,
            IntakeMode::Throttle,
            IntakeMode::Pause,
            IntakeMode::Auto,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }
}

/// Below this effective score, `auto` pauses.
pub const PAUSE_BELOW: f64 = 30.0;
/// Below this effective score, `auto` throttles.
pub const THROTTLE_BELOW: f64 = 60.0;
/// The share of intents a throttle lets in.
pub const THROTTLE_RATIO: f64 = 0.5;

/// What `auto` decides from, as the original reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntakeSignals {
    /// Repository health score.
    pub health_score: f64,
    /// Its status.
    pub health_status: &'static str,
    /// Verification debt score.
    pub debt_score: f64,
    /// Its status.
    pub debt_status: &'static str,
    /// `min(health, 100 - debt)`.
    pub effective_score: f64,
    /// Intents tracked.
    pub queue_total: u64,
    /// Intents waiting.
    pub queue_pending: u64,
    /// The last day's conflict rate.
    pub conflict_rate: f64,
    /// [`PAUSE_BELOW`].
    pub pause_threshold: f64,
    /// [`THROTTLE_BELOW`].
    pub throttle_threshold: f64,
    /// What `auto` would choose now.
    pub auto_mode: IntakeMode,
}

/// The signals of a tenant's health and debt now.
pub fn signals(health: &RepoHealth, debt: &VerificationDebt, queue_total: u64) -> IntakeSignals {
    let inverse_debt = 100.0 - debt.debt_score;
    let effective = if health.repo_health_score <= inverse_debt {
        health.repo_health_score
    } else {
        inverse_debt
    };
    IntakeSignals {
        health_score: health.repo_health_score,
        health_status: health.status,
        debt_score: debt.debt_score,
        debt_status: debt.status,
        effective_score: effective,
        queue_total,
        queue_pending: health.active_intents,
        conflict_rate: health.conflict_rate,
        pause_threshold: PAUSE_BELOW,
        throttle_threshold: THROTTLE_BELOW,
        auto_mode: auto_mode(effective),
    }
}

/// What `auto` chooses for an effective score.
pub fn auto_mode(effective_score: f64) -> IntakeMode {
    if effective_score < PAUSE_BELOW {
        IntakeMode::Pause
    } else if effective_score < THROTTLE_BELOW {
        IntakeMode::Throttle
    } else {
        IntakeMode::Open
    }
}

/// What intake does with one intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IntakeVerdict {
    /// It comes in.
    Accepted,
    /// A throttle kept it out.
    Throttled,
    /// A pause kept it out.
    Rejected,
}

/// The decision on one intent under a mode (never `auto`: resolve it first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntakeDecision {
    /// The mode that applied.
    pub mode: IntakeMode,
    /// What it decided.
    pub verdict: IntakeVerdict,
    /// Why, in words.
    pub reason: String,
    /// The intent's throttle bucket (throttle only).
    pub bucket: Option<f64>,
}

/// Decides on an intent of `risk_level` with id `intent_id` under `mode` (`auto` counts as
/// open: resolve it with [`auto_mode`] first).
pub fn decide(mode: IntakeMode, risk_level: RiskLevel, intent_id: &str) -> IntakeDecision {
    match mode {
        IntakeMode::Open | IntakeMode::Auto => IntakeDecision {
            mode: IntakeMode::Open,
            verdict: IntakeVerdict::Accepted,
            reason: "intake is open".to_owned(),
            bucket: None,
        },
        IntakeMode::Pause if risk_level == RiskLevel::Critical => IntakeDecision {
            mode,
            verdict: IntakeVerdict::Accepted,
            reason: "intake is paused; critical changes still come in".to_owned(),
            bucket: None,
        },
        IntakeMode::Pause => IntakeDecision {
            mode,
            verdict: IntakeVerdict::Rejected,
            reason: "intake is paused: only critical changes are taken in".to_owned(),
            bucket: None,
        },
        IntakeMode::Throttle => {
            let bucket = rollout_bucket(intent_id);
            let accepted = bucket < THROTTLE_RATIO;
            IntakeDecision {
                mode,
                verdict: if accepted {
                    IntakeVerdict::Accepted
                } else {
                    IntakeVerdict::Throttled
                },
                reason: if accepted {
                    "intake is throttled; this intent is in the half taken in".to_owned()
                } else {
                    "intake is throttled: this intent is in the half kept out; send it again when intake opens".to_owned()
                },
                bucket: Some(bucket),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_worse_of_health_and_debt() {
        assert_eq!(auto_mode(29.9), IntakeMode::Pause);
        assert_eq!(auto_mode(30.0), IntakeMode::Throttle);
        assert_eq!(auto_mode(59.9), IntakeMode::Throttle);
        assert_eq!(auto_mode(60.0), IntakeMode::Open);
    }

    #[test]
    fn a_pause_takes_only_critical_changes_and_a_throttle_half_by_id() {
        assert_eq!(
            decide(IntakeMode::Pause, RiskLevel::High, "a").verdict,
            IntakeVerdict::Rejected
        );
        assert_eq!(
            decide(IntakeMode::Pause, RiskLevel::Critical, "a").verdict,
            IntakeVerdict::Accepted
        );
        let ids: Vec<String> = (0..400).map(|n| format!("intent-{n}")).collect();
        let taken = ids
            .iter()
            .filter(|id| {
                decide(IntakeMode::Throttle, RiskLevel::Low, id).verdict == IntakeVerdict::Accepted
            })
            .count();
        assert!((150..=250).contains(&taken), "{taken} of 400");
        for id in &ids {
            assert_eq!(
                decide(IntakeMode::Throttle, RiskLevel::Low, id),
                decide(IntakeMode::Throttle, RiskLevel::Low, id),
                "the same id, the same answer"
            );
        }
        assert_eq!(
            decide(IntakeMode::Auto, RiskLevel::Low, "a").verdict,
            IntakeVerdict::Accepted
        );
    }
}
