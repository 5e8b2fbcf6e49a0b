//! The validation pipeline end to end over in-memory ports: what an operator would see in the
//! decision and the event log for each way a validation can go.

use crate::support;

use converge_core::pipeline::{
    BlockKind, CheckState, Outcome, PipelineError, ValidationOptions, validate,
};
use converge_core::policy::{GateName, Measure};
use converge_core::{EventType, PolicyConfig, RiskLevel};
use support::{FakeChecks, FakeScm, World, block_on, intent};

fn event_types(decision: &converge_core::Decision) -> Vec<&'static str> {
    decision
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect()
}

fn run(
    world: &World,
    intent: &converge_core::Intent,
    config: &PolicyConfig,
) -> converge_core::Decision {
    match block_on(validate(
        intent,
        world.ports(),
        config,
        ValidationOptions::default(),
    )) {
        Ok(decision) => decision,
        Err(e) => panic!("pipeline failed: {e}"),
    }
}

#[test]
fn a_clean_change_with_green_checks_is_validated_with_one_trace() {
    let world = World::new(
        FakeScm::clean(&["docs/guide.md", "src/auth/login.rs"]),
        FakeChecks::with(&[("lint", CheckState::Passed)]),
    );
    // A small change classifies low: declare it low so no reclassification step appears.
    let mut small = intent("i-1");
    small.risk_level = RiskLevel::Low;
    let decision = run(&world, &small, &PolicyConfig::default());
    assert_eq!(decision.outcome, Outcome::Validated);
    assert_eq!(decision.risk_level, RiskLevel::Low);
    assert_eq!(
        event_types(&decision),
        [
            "simulation.completed",
            "check.completed",
            "risk.evaluated",
            "policy.evaluated",
            "intent.validated"
        ]
    );
    assert!(
        decision
            .events
            .iter()
            .all(|e| e.trace_id == decision.trace_id)
    );
    assert!(decision.trace_id.starts_with("trace-"));
    let validated = decision
        .events
        .last()
        .map(|e| e.payload.clone())
        .unwrap_or_default();
    assert_eq!(
        validated["target_sha"],
        "2".repeat(40),
        "the decision pins the target tip it saw"
    );
}

#[test]
fn a_conflict_blocks_before_any_check_is_read() {
    let world = World::new(
        FakeScm::conflicting(&["a.rs", "b.rs"]),
        FakeChecks::default(),
    );
    let decision = run(&world, &intent("i-2"), &PolicyConfig::default());
    assert_eq!(
        decision.outcome,
        Outcome::Blocked {
            kind: BlockKind::Conflict,
            reason: "Merge conflicts: a.rs, b.rs".into()
        }
    );
    assert_eq!(
        event_types(&decision),
        ["simulation.completed", "intent.blocked"]
    );
    assert!(decision.risk.is_none() && decision.checks.is_empty());
}

#[test]
fn a_failed_check_blocks_and_counts_as_an_attempt() {
    let world = World::new(
        FakeScm::clean(&["src/a.rs"]),
        FakeChecks::with(&[("lint", CheckState::Failed)]),
    );
    let decision = run(&world, &intent("i-3"), &PolicyConfig::default());
    let Outcome::Blocked { kind, reason } = &decision.outcome else {
        panic!("validated with a red check")
    };
    assert_eq!(
        (*kind, reason.as_str()),
        (BlockKind::ChecksFailed, "Checks failed: ['lint']")
    );
    assert!(kind.counts_as_failed_attempt());
    assert_eq!(
        event_types(&decision),
        ["simulation.completed", "check.completed", "intent.blocked"]
    );
    assert_eq!(decision.events[1].payload["passed"], false);
}

#[test]
fn a_check_still_running_or_never_reported_waits_without_penalty() {
    for checks in [
        FakeChecks::with(&[("lint", CheckState::Pending)]),
        FakeChecks::default(),
    ] {
        let world = World::new(FakeScm::clean(&["src/a.rs"]), checks);
        let decision = run(&world, &intent("i-4"), &PolicyConfig::default());
        let Outcome::Blocked { kind, reason } = &decision.outcome else {
            panic!("validated without CI")
        };
        assert_eq!(
            (*kind, reason.as_str()),
            (BlockKind::ChecksPending, "Checks pending: ['lint']")
        );
        assert!(!kind.counts_as_failed_attempt());
    }
}

/// Thirty files over ten folders: the risk score classifies the intent high or above.
fn big_change() -> Vec<String> {
    (0..30)
        .map(|i| format!("src/m{}/f{i}.rs", i % 10))
        .collect()
}

#[test]
fn a_reclassified_intent_is_judged_on_the_checks_of_its_new_level() {
    let files = big_change();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let mut low = intent("i-5");
    low.risk_level = RiskLevel::Low;

    // CI ran both checks: the verification gate sees them, unlike the reference, which blocked
    // for "Missing checks: ['unit_tests']".
    let world = World::new(
        FakeScm::clean(&files),
        FakeChecks::with(&[
            ("lint", CheckState::Passed),
            ("unit_tests", CheckState::Passed),
        ]),
    );
    let decision = run(&world, &low, &PolicyConfig::default());
    assert!(
        decision.risk_level >= RiskLevel::High,
        "expected reclassification, got {}",
        decision.risk_level
    );
    let types = event_types(&decision);
    assert_eq!(
        types[..4],
        [
            "simulation.completed",
            "check.completed",
            "risk.evaluated",
            "risk.level_reclassified"
        ]
    );
    assert_eq!(
        types[4], "check.completed",
        "the added check is read before the gates"
    );
    let policy = decision.policy.as_ref().map(|p| p.gates[0].clone());
    let verification = policy.unwrap_or_else(|| panic!("no policy evaluation"));
    assert_eq!(verification.gate, GateName::Verification);
    assert!(verification.passed);
    assert_eq!(
        (verification.value, verification.threshold),
        (Measure::Count(2), Measure::Count(2))
    );

    // The added check failed: blocked for that check, before any gate.
    let world = World::new(
        FakeScm::clean(&files),
        FakeChecks::with(&[
            ("lint", CheckState::Passed),
            ("unit_tests", CheckState::Failed),
        ]),
    );
    let decision = run(&world, &low, &PolicyConfig::default());
    assert_eq!(
        decision.outcome,
        Outcome::Blocked {
            kind: BlockKind::ChecksFailed,
            reason: "Checks failed: ['unit_tests']".into()
        }
    );
    assert!(decision.policy.is_none());
    assert!(
        decision.risk.is_some(),
        "the risk evaluation that caused the reclassification is kept"
    );
}

#[test]
fn policy_blocks_name_the_failed_gates() {
    let files = big_change();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let world = World::new(
        FakeScm::clean(&files),
        FakeChecks::with(&[
            ("lint", CheckState::Passed),
            ("unit_tests", CheckState::Passed),
        ]),
    );
    let decision = run(&world, &intent("i-6"), &PolicyConfig::default());
    let Outcome::Blocked { kind, reason } = &decision.outcome else {
        panic!("a sprawling change was validated")
    };
    assert_eq!(*kind, BlockKind::Policy);
    assert!(reason.starts_with("Policy blocked: gates ['"), "{reason}");
    assert!(event_types(&decision).ends_with(&["policy.evaluated", "intent.blocked"]));
}

#[test]
fn an_enforced_risk_gate_blocks_inside_its_rollout_group() {
    let permissive = r#"{"profiles": {
        "low": {"entropy_budget": 100, "containment_min": 0},
        "medium": {"entropy_budget": 100, "containment_min": 0},
        "high": {"entropy_budget": 100, "containment_min": 0},
        "critical": {"entropy_budget": 100, "containment_min": 0}},
      "risk": {"max_risk_score": 1, "mode": "enforce", "enforce_ratio": 1.0}}"#;
    let config = PolicyConfig::from_json_str(permissive).unwrap();
    let world = World::new(
        FakeScm::clean(&["src/a.rs"]),
        FakeChecks::with(&[("lint", CheckState::Passed)]),
    );
    let decision = run(&world, &intent("i-7"), &config);
    let Outcome::Blocked { kind, reason } = &decision.outcome else {
        panic!("risk gate did not enforce")
    };
    assert_eq!(*kind, BlockKind::RiskGate);
    assert!(
        reason.starts_with("Risk gate enforced: [{'metric': 'risk_score'"),
        "{reason}"
    );
    assert!(decision.risk_gate.as_ref().is_some_and(|g| g.enforced));

    // Shadow mode reports the same breach and lets the intent through.
    let shadow = PolicyConfig::from_json_str(&permissive.replace("enforce\"", "shadow\"")).unwrap();
    let decision = run(&world, &intent("i-7"), &shadow);
    assert_eq!(decision.outcome, Outcome::Validated);
    assert!(
        decision
            .risk_gate
            .as_ref()
            .is_some_and(|g| g.would_block && !g.enforced)
    );
    // ... and records what enforcing would have blocked, before the validation.
    assert!(
        event_types(&decision).ends_with(&[
            "policy.evaluated",
            "risk.shadow_evaluated",
            "intent.validated"
        ]),
        "{:?}",
        event_types(&decision)
    );
    let shadow_event = decision
        .events
        .iter()
        .find(|e| e.event_type == converge_core::EventType::RiskShadowEvaluated)
        .expect("a shadow verdict");
    assert_eq!(shadow_event.payload["risk_gate"]["would_block"], true);
    assert_eq!(
        shadow_event.payload["risk_gate"]["breaches"][0]["metric"],
        "risk_score"
    );
    // Under its limits the gate has nothing to report.
    let lenient = PolicyConfig::from_json_str(
        &permissive.replace("\"max_risk_score\": 1", "\"max_risk_score\": 100"),
    )
    .unwrap();
    let decision = run(&world, &intent("i-7"), &lenient);
    assert!(!event_types(&decision).contains(&"risk.shadow_evaluated"));
}

#[test]
fn port_failures_are_errors_not_verdicts() {
    let mut scm = FakeScm::clean(&[]);
    scm.result = Err(converge_core::pipeline::ScmError::Unavailable(
        "git timed out".into(),
    ));
    let world = World::new(scm, FakeChecks::default());
    let result = block_on(validate(
        &intent("i-8"),
        world.ports(),
        &PolicyConfig::default(),
        ValidationOptions::default(),
    ));
    assert!(matches!(result, Err(PipelineError::Scm(_))));

    let checks = FakeChecks {
        unavailable: true,
        ..FakeChecks::default()
    };
    let world = World::new(FakeScm::clean(&["a.rs"]), checks);
    let result = block_on(validate(
        &intent("i-8"),
        world.ports(),
        &PolicyConfig::default(),
        ValidationOptions::default(),
    ));
    assert!(matches!(result, Err(PipelineError::Checks(_))));
}

#[test]
fn skipping_checks_is_recorded_as_such() {
    let world = World::new(FakeScm::clean(&["src/a.rs"]), FakeChecks::default());
    let options = ValidationOptions {
        skip_checks: true,
        ..ValidationOptions::default()
    };
    let decision = block_on(validate(
        &intent("i-9"),
        world.ports(),
        &PolicyConfig::default(),
        options,
    ))
    .unwrap();
    assert_eq!(decision.outcome, Outcome::Validated);
    let check = decision
        .events
        .iter()
        .find(|e| e.event_type == EventType::CheckCompleted);
    assert_eq!(
        check.map(|e| e.payload["details"].clone()),
        Some("skipped by operator".into())
    );
}

#[test]
fn a_level_moved_down_is_judged_on_the_lower_profile() {
    let mut critical = intent("i-10");
    critical.risk_level = RiskLevel::Critical;
    let world = World::new(
        FakeScm::clean(&["docs/guide.md"]),
        FakeChecks::with(&[
            ("lint", CheckState::Passed),
            ("unit_tests", CheckState::Passed),
        ]),
    );
    let decision = run(&world, &critical, &PolicyConfig::default());
    assert!(
        decision.risk_level < RiskLevel::Critical,
        "got {}",
        decision.risk_level
    );
    let policy = decision
        .policy
        .unwrap_or_else(|| panic!("no policy evaluation"));
    assert_eq!(policy.profile_used, decision.risk_level);
    // Both declared checks ran and passed; the lower profile asks for one.
    assert_eq!(policy.gates[0].value, Measure::Count(2));
    assert_eq!(policy.gates[0].threshold, Measure::Count(1));
}

#[test]
fn origin_overrides_decide_which_checks_are_required() {
    let config = PolicyConfig::from_json_str(
        r#"{"origin_overrides": {"agent": {"_default": {"checks": ["lint", "agent_review"]}}}}"#,
    )
    .unwrap();
    let mut from_agent = intent("i-11");
    from_agent.risk_level = RiskLevel::Low;
    from_agent.origin_type = "agent".into();
    let world = World::new(
        FakeScm::clean(&["docs/a.md"]),
        FakeChecks::with(&[("lint", CheckState::Passed)]),
    );
    let decision = run(&world, &from_agent, &config);
    assert_eq!(
        decision.outcome,
        Outcome::Blocked {
            kind: BlockKind::ChecksPending,
            reason: "Checks pending: ['agent_review']".into()
        }
    );
    // A human's intent with the same change needs only lint.
    let mut from_human = from_agent.clone();
    from_human.origin_type = "human".into();
    assert_eq!(
        run(&world, &from_human, &config).outcome,
        Outcome::Validated
    );
}

#[test]
fn terminal_intents_are_not_validated() {
    let world = World::new(
        FakeScm::clean(&["a.rs"]),
        FakeChecks::with(&[("lint", CheckState::Passed)]),
    );
    let mut merged = intent("i-12");
    merged.status = converge_core::Status::Merged;
    let result = block_on(validate(
        &merged,
        world.ports(),
        &PolicyConfig::default(),
        ValidationOptions::default(),
    ));
    assert!(matches!(result, Err(PipelineError::Terminal { .. })));
}

#[test]
fn a_deleted_branch_is_a_verdict_not_an_outage() {
    let mut scm = FakeScm::clean(&[]);
    scm.result = Err(converge_core::pipeline::ScmError::UnknownRef(
        "feature/x".into(),
    ));
    let world = World::new(scm, FakeChecks::default());
    let decision = run(&world, &intent("i-13"), &PolicyConfig::default());
    let Outcome::Blocked { kind, reason } = &decision.outcome else {
        panic!("validated a missing branch")
    };
    assert_eq!(
        (*kind, reason.as_str()),
        (BlockKind::MissingRef, "Unknown ref 'feature/x'")
    );
    assert!(kind.counts_as_failed_attempt());
    assert_eq!(event_types(&decision), ["intent.blocked"]);
}
