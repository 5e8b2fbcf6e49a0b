use proptest::prelude::*;

use super::*;

fn stamp() -> Stamp {
    Stamp {
        timestamp: "2026-12-04T10:00:00+00:00".to_owned(),
        tenant_id: Some("acme".to_owned()),
    }
}

fn window() -> impl Strategy<Value = WindowTally> {
    (
        0u64..200,
        0u64..200,
        0u64..50,
        0.0f64..100.0,
        0.0f64..100.0,
        0.0f64..1.0,
        (0u64..50, 0u64..50, 0u64..50, 0u64..50, 0u64..50),
    )
        .prop_map(
            |(simulations, mergeable, risk, entropy, propagation, containment, counts)| {
                WindowTally {
                    simulations,
                    mergeable: mergeable.min(simulations),
                    risk_evaluations: risk,
                    entropy_mean: entropy,
                    propagation_mean: propagation,
                    containment_mean: containment,
                    high_propagation: counts.0.min(risk),
                    merged: counts.1,
                    rejected: counts.2,
                    requeued: counts.3,
                    semantic_conflicts: counts.4,
                }
            },
        )
}

fn intents() -> impl Strategy<Value = IntentTally> {
    (0u64..300, 0u64..300, 0u64..300).prop_map(|(active, stale, retried)| IntentTally {
        total: active + 5,
        active,
        stale: stale.min(active),
        retried: retried.min(active),
    })
}

proptest! {
    #[test]
    fn rates_stay_in_the_unit_interval_and_scores_in_range(
        w in window(),
        i in intents(),
        reviews in 0u64..40,
    ) {
        let health = repo_health(&w, &i, &stamp());
        for rate in [health.mergeable_rate, health.conflict_rate] {
            prop_assert!((0.0..=1.0).contains(&rate), "{rate}");
        }
        prop_assert!((0.0..=100.0).contains(&health.repo_health_score));
        let debt = verification_debt(&i, reviews, &w, &stamp());
        prop_assert!((0.0..=100.0).contains(&debt.debt_score), "{}", debt.debt_score);
        prop_assert!((0.0..=1.0).contains(&debt.breakdown.conflict_rate));
        let totals = LogTotals {
            simulations: w.simulations,
            mergeable: w.mergeable,
            ..LogTotals::default()
        };
        let report = compliance_report(&totals, i.total, debt.debt_score, &ComplianceThresholds::default(), &stamp());
        prop_assert!((0.0..=1.0).contains(&report.mergeable_rate));
        prop_assert!((0.0..=1.0).contains(&report.conflict_rate));
        prop_assert_eq!(report.passed, report.alerts.is_empty());
        prop_assert_eq!(report.alerts.len(), report.checks.iter().filter(|c| !c.passed).count());
        let metrics = integration_metrics(&totals, &stamp());
        prop_assert!((0.0..=1.0).contains(&metrics.mergeable_rate));
    }

    #[test]
    fn lessons_come_most_urgent_first_and_projections_stay_in_range(
        w in window(),
        i in intents(),
        scores in proptest::collection::vec((0.0f64..100.0, 0.0f64..60.0, 0.0f64..1.0), 0..40),
    ) {
        let health = repo_health(&w, &i, &stamp());
        let priorities: Vec<u8> = health.learning.lessons.iter().map(|l| l.priority).collect();
        prop_assert!(priorities.windows(2).all(|p| p[0] <= p[1]), "{priorities:?}");
        prop_assert!(health.learning.next_actions.len() <= 3);
        let points: Vec<SnapshotPoint> = scores
            .iter()
            .map(|&(score, entropy, conflict_rate)| SnapshotPoint { score, entropy, conflict_rate })
            .collect();
        match predictive_health(&points, 7, &stamp()) {
            PredictiveHealth::TooFewSnapshots { .. } => prop_assert!(points.len() < 3),
            PredictiveHealth::Projected(p) => {
                prop_assert!((0.0..=100.0).contains(&p.projected_health));
                prop_assert_eq!(p.data_points, points.len());
                prop_assert_eq!(p.should_gate, p.signals.iter().any(|s| s.signal == "predict.approaching_red"));
            }
        }
    }
}

#[test]
fn an_empty_log_is_healthy_and_debt_free() {
    let health = repo_health(&WindowTally::default(), &IntentTally::default(), &stamp());
    assert_eq!(health.repo_health_score, 100.0);
    assert_eq!(health.mergeable_rate, 1.0);
    assert_eq!(health.status, "green");
    assert!(health.learning.lessons.is_empty());
    let debt = verification_debt(
        &IntentTally::default(),
        0,
        &WindowTally::default(),
        &stamp(),
    );
    assert_eq!(debt.debt_score, 0.0);
    assert!(predictions(&WindowTally::default(), &WindowTally::default()).is_empty());
}

#[test]
fn a_threshold_blob_overlays_only_the_five_names_and_keeps_their_types() {
    let data =
        serde_json::json!({"max_debt_score": 0, "min_mergeable_rate": 0.9, "max_retries": 7});
    let t = ComplianceThresholds::overlaid(data.as_object().expect("object")).expect("valid");
    assert_eq!(t.max_debt_score, Number::from(0));
    assert_eq!(t.min_mergeable_rate.as_f64(), Some(0.9));
    assert_eq!(t.max_retries_total, Number::from(200));
    let bad = serde_json::json!({"max_queue_tracked": "many"});
    let err =
        ComplianceThresholds::overlaid(bad.as_object().expect("object")).expect_err("refused");
    assert_eq!(err.field, "max_queue_tracked");
}

#[test]
fn calibration_reads_percentiles_at_truncated_positions() {
    assert_eq!(calibration_positions(0), None);
    assert_eq!(calibration_positions(1), Some([0, 0, 0]));
    assert_eq!(calibration_positions(11), Some([8, 9, 10]));
    let c = calibration(11, Some([10.7, 20.0, 30.0]), "t");
    // 1.5 × 10.7 is 16.049999999999997: Python's round gives 16.0.
    assert_eq!(c.calibrated_profiles.low.entropy_budget, 16.0);
    assert_eq!(c.calibrated_profiles.critical.entropy_budget, 24.0);
}

#[test]
fn thresholds_to_store_are_known_numbers_in_range() {
    let valid = serde_json::json!({"min_mergeable_rate": 0.9, "max_retries_total": 20, "max_debt_score": 55.5});
    let t = ComplianceThresholds::validated(valid.as_object().expect("object")).expect("valid");
    assert_eq!(t.max_retries_total, Number::from(20));
    assert_eq!(t.max_conflict_rate.as_f64(), Some(0.2));
    for (bad, field) in [
        (serde_json::json!({"mergeable_rate": 0.9}), "mergeable_rate"),
        (
            serde_json::json!({"min_mergeable_rate": 1.5}),
            "min_mergeable_rate",
        ),
        (
            serde_json::json!({"max_retries_total": -1}),
            "max_retries_total",
        ),
        (
            serde_json::json!({"max_queue_tracked": 2.5}),
            "max_queue_tracked",
        ),
        (
            serde_json::json!({"max_queue_tracked": 1_000_000_001u64}),
            "max_queue_tracked",
        ),
        (
            serde_json::json!({"max_debt_score": "low"}),
            "max_debt_score",
        ),
        (serde_json::json!({"max_debt_score": 101}), "max_debt_score"),
    ] {
        let err =
            ComplianceThresholds::validated(bad.as_object().expect("object")).expect_err("refused");
        assert_eq!(err.field, field, "{bad}");
    }
}

#[test]
fn nearest_rank_takes_a_value_that_is_there() {
    let values = [1.0, 2.0, 3.0, 4.0, 10.0];
    assert_eq!(nearest_rank(&values, 0.5), Some(3.0));
    assert_eq!(nearest_rank(&values, 0.9), Some(10.0));
    assert_eq!(nearest_rank(&values[..4], 0.5), Some(2.0));
    assert_eq!(nearest_rank(&[], 0.5), None);
}

#[test]
fn a_requeue_names_its_cause_or_its_reason_tells_it() {
    use crate::queue::RetryCause;
    let cause = |payload: serde_json::Value| RetryCause::of_payload(&payload);
    assert_eq!(
        cause(serde_json::json!({"cause": "checks_failed", "reason": "x"})),
        Some(RetryCause::ChecksFailed)
    );
    assert_eq!(
        cause(serde_json::json!({"reason": "Merge conflicts: a.rs"})),
        Some(RetryCause::Conflict)
    );
    assert_eq!(
        cause(serde_json::json!({"reason": "revalidation needed: target moved"})),
        Some(RetryCause::TargetMoved)
    );
    assert_eq!(cause(serde_json::json!({"reason": "who knows"})), None);
    assert_eq!(cause(serde_json::json!({})), None);
}
