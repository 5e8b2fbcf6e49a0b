//! Properties that must hold for every input, not just the examples.

use crate::support;

use converge_core::pipeline::{CheckState, Outcome, ValidationOptions, validate};
use converge_core::projection::apply;
use converge_core::queue::{
    Admission, NextAction, QueueRules, admit, after_merge, after_merge_failure, after_validation,
    failed_attempt,
};
use converge_core::risk::graph::DiGraph;
use converge_core::risk::{ChangeSubject, CouplingPair, evaluate_risk, pagerank};
use converge_core::simulation::Simulation;
use converge_core::{PolicyConfig, RiskLevel, Status};
use proptest::prelude::*;
use support::{FakeChecks, FakeScm, World, block_on, intent};

fn path() -> impl Strategy<Value = String> {
    // Short names over a few folders, so directories, duplicates and scope matches all occur.
    prop::collection::vec(
        prop::sample::select(vec!["src", "lib", "app", "docs", "core", "x", "ü"]),
        1..4,
    )
    .prop_map(|parts| format!("{}.rs", parts.join("/")))
}

fn level() -> impl Strategy<Value = RiskLevel> {
    prop::sample::select(RiskLevel::ALL.to_vec())
}

fn status() -> impl Strategy<Value = Status> {
    prop::sample::select(Status::ALL.to_vec())
}

fn check_state() -> impl Strategy<Value = Option<CheckState>> {
    prop::option::of(prop::sample::select(vec![
        CheckState::Passed,
        CheckState::Failed,
        CheckState::Pending,
        CheckState::Missing,
    ]))
}

prop_compose! {
    fn change()(
        files in prop::collection::vec(path(), 0..40),
        conflicts in prop::collection::vec(path(), 0..4),
        dependencies in prop::collection::vec("[a-d]{1,2}", 0..6),
        scopes in prop::collection::vec(prop::sample::select(vec!["src", "docs", "API", "core", "x.rs"]), 0..4),
        coupling in prop::collection::vec((path(), path(), 0u64..15), 0..12),
        target in prop::sample::select(vec!["main", "develop", "release"]),
        level in level(),
    ) -> (Simulation, Vec<String>, Vec<String>, Vec<CouplingPair>, &'static str, RiskLevel) {
        let mergeable = conflicts.is_empty();
        let coupling = coupling
            .into_iter()
            .map(|(a, b, n)| CouplingPair { file_a: a, file_b: b, co_changes: n, source: "git-log".into() })
            .collect();
        let scopes = scopes.into_iter().map(str::to_owned).collect();
        (Simulation { mergeable, conflicts, files_changed: files }, dependencies, scopes, coupling, target, level)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn scores_stay_within_their_bounds((sim, deps, scopes, coupling, target, level) in change()) {
        let subject = ChangeSubject {
            intent_id: "i-prop", source: "feature/p", target, risk_level: level,
            dependencies: &deps, scope_hints: &scopes,
        };
        let eval = evaluate_risk(&subject, &sim, &coupling);
        let s = eval.signals;
        for (name, value) in [
            ("entropic_load", s.entropic_load), ("contextual_value", s.contextual_value),
            ("complexity_delta", s.complexity_delta), ("path_dependence", s.path_dependence),
            ("risk", eval.risk_score), ("damage", eval.damage_score),
            ("propagation", eval.propagation_score), ("entropy", eval.entropy_score),
        ] {
            prop_assert!((0.0..=100.0).contains(&value), "{name} = {value}");
        }
        prop_assert!((0.0..=1.0).contains(&eval.containment_score));
        prop_assert!(eval.graph_metrics.pagerank_max <= 1.0);
        prop_assert!(eval.graph_metrics.pagerank_top.len() <= 5);
        let classified = eval.classified_level();
        prop_assert_eq!(classified, RiskLevel::from_risk_score(eval.risk_score));
    }

    #[test]
    fn pagerank_sums_to_one(
        edges in prop::collection::vec((0usize..30, 0usize..30, 1u32..20), 0..120),
        isolated in 0usize..5,
    ) {
        let mut graph = DiGraph::default();
        for (a, b, w) in &edges {
            graph.add_edge(&format!("n{a}"), &format!("n{b}"), f64::from(*w) / 10.0);
        }
        for i in 0..isolated {
            graph.ensure_node(&format!("lonely{i}"));
        }
        prop_assume!(!graph.is_empty());
        let ranks = pagerank(&graph);
        let total: f64 = ranks.iter().sum();
        prop_assert!((total - 1.0).abs() < 1e-9, "sum = {total}");
        prop_assert!(ranks.iter().all(|&r| r > 0.0));
    }

    #[test]
    fn the_pipeline_never_validates_a_conflict_or_a_red_check(
        (sim, deps, scopes, coupling, _target, level) in change(),
        lint in check_state(),
        unit_tests in check_state(),
        auto_classify in any::<bool>(),
    ) {
        let mut scm = FakeScm::clean(&[]);
        if let Ok(merge) = &mut scm.result {
            merge.simulation = sim.clone();
        }
        scm.coupling = coupling;
        let mut states = Vec::new();
        if let Some(s) = lint { states.push(("lint", s)); }
        if let Some(s) = unit_tests { states.push(("unit_tests", s)); }
        let world = World::new(scm, FakeChecks::with(&states));
        let mut subject = intent("i-prop");
        subject.risk_level = level;
        subject.dependencies = deps;
        subject.technical.insert("scope_hint".into(), scopes.into());
        let options = ValidationOptions { auto_classify, skip_checks: false };
        let decision = block_on(validate(&subject, world.ports(), &PolicyConfig::default(), options));
        let decision = match decision { Ok(d) => d, Err(e) => return Err(TestCaseError::fail(e.to_string())) };

        if decision.outcome == Outcome::Validated {
            prop_assert!(sim.mergeable, "validated an unmergeable intent");
            let required = PolicyConfig::default().profile_for(decision.risk_level, Some("human")).checks;
            for name in &required {
                let passed = decision.checks.iter().any(|c| &c.name == name && c.state == CheckState::Passed);
                prop_assert!(passed, "validated without a passing {}", name);
            }
            prop_assert!(decision.checks.iter().all(|c| c.state == CheckState::Passed));
        }
        if !sim.mergeable {
            prop_assert!(decision.outcome != Outcome::Validated);
        }
        prop_assert!(decision.events.iter().all(|e| e.trace_id == decision.trace_id));
    }

    #[test]
    fn no_sequence_of_moves_leaves_a_terminal_status(moves in prop::collection::vec(status(), 1..20)) {
        let mut i = intent("i-seq");
        let mut reached_terminal = false;
        for to in moves {
            let before = i.status;
            let result = i.move_to(to);
            if reached_terminal {
                prop_assert!(result.is_err(), "{} -> {} was allowed", before, to);
                prop_assert_eq!(i.status, before);
            }
            if result.is_err() {
                prop_assert_eq!(i.status, before, "a refused move changed the status");
            }
            reached_terminal |= i.status.is_terminal();
        }
    }

    #[test]
    fn queue_steps_only_take_legal_moves_and_reject_at_the_bound(
        from in status(),
        retries in 0u32..6,
        max_retries in 1u32..6,
    ) {
        let rules = QueueRules { max_retries, auto_confirm: false, checks_wait_limit: chrono::Duration::minutes(120), required_approvals: Default::default(), eject_conflicts: false };
        let mut i = intent("i-q");
        i.status = from;
        i.retries = retries;
        let admission = admit(&i, &rules, |_| None);
        if from.is_terminal() {
            // The worker never processes terminal intents.
            prop_assert_eq!(admission, Admission::Skip);
            return Ok(());
        }
        let steps = match admission {
            Admission::Reject(step) => {
                prop_assert!(retries >= max_retries);
                vec![step]
            }
            Admission::Process => vec![failed_attempt(&i, max_retries, "x", converge_core::queue::RetryCause::Conflict), after_merge_failure(&i, max_retries, "x")],
            other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        };
        for step in steps {
            prop_assert!(from.can_move_to(step.status), "{} -> {}", from, step.status);
            prop_assert!(step.retries <= max_retries.max(retries));
            prop_assert_eq!(step.status == Status::Rejected, step.retries >= max_retries);
        }
    }

    /// Whatever a queue round decides, its events (the decision's, then the step's) fold into
    /// the projection without an illegal move, and the row ends where the step says.
    #[test]
    fn a_queue_round_folds_legally_into_the_projection(
        (sim, deps, scopes, coupling, _target, level) in change(),
        lint in check_state(),
        from in prop::sample::select(vec![Status::Ready, Status::Validated, Status::Queued]),
        retries in 0u32..3,
        auto_confirm in any::<bool>(),
        merge_lands in any::<bool>(),
    ) {
        let mut scm = FakeScm::clean(&[]);
        if let Ok(merge) = &mut scm.result {
            merge.simulation = sim;
        }
        scm.coupling = coupling;
        let states: Vec<(&str, CheckState)> = lint.map(|s| ("lint", s)).into_iter().collect();
        let world = World::new(scm, FakeChecks::with(&states));
        let mut subject = intent("i-round");
        subject.risk_level = level;
        subject.dependencies = deps;
        subject.technical.insert("scope_hint".into(), scopes.into());
        subject.status = from;
        subject.retries = retries;
        let rules = QueueRules { max_retries: 3, auto_confirm, checks_wait_limit: chrono::Duration::minutes(120), required_approvals: Default::default(), eject_conflicts: false };

        let decision = block_on(validate(&subject, world.ports(), &PolicyConfig::default(), ValidationOptions::default()))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let step = after_validation(&subject, &decision, &rules, None);
        let mut events = decision.events.clone();
        let mut expected = step.status;
        if let Some((event_type, payload, evidence)) = step.event.clone() {
            events.push(support::event_for(&subject, event_type, payload, evidence));
        }
        if step.action == NextAction::Merge {
            let merged = if merge_lands { after_merge(&subject, "abc") } else { after_merge_failure(&subject, 3, "target moved") };
            expected = merged.status;
            if let Some((event_type, payload, evidence)) = merged.event {
                events.push(support::event_for(&subject, event_type, payload, evidence));
            }
        }
        let mut row = subject.clone();
        for event in &events {
            match apply(Some(&row), event) {
                Ok(Some(next)) => row = next,
                Ok(None) => {}
                Err(e) => return Err(TestCaseError::fail(format!("{e} in {:?}", events.iter().map(|e| e.event_type).collect::<Vec<_>>()))),
            }
        }
        prop_assert_eq!(row.status, expected);
    }
}
