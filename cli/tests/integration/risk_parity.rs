//! Parity with the reference risk engine: every case in `../shared/fixtures/risk/` goes through
//! the `converge` binary (`risk eval --json` and `policy eval --json`), and the output must
//! equal the case's `expected` under the fixtures' rules: integers exactly and as integers,
//! floats within 1e-9 and as floats, lists in order, extra output fields ignored. The spiral
//! bomb's `cycles` (not deterministic in the reference) is checked against `relaxed`.
//!
//! The fixtures are read in place, never copied. `CONVERGE_FIXTURES_DIR` points elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::parity::compare;

/// The fixtures' acceptance rule for spiral cycles.
fn check_cycles(
    actual: &Value,
    expected: &Value,
    relaxed: &Value,
    path: &str,
    diffs: &mut Vec<String>,
) {
    let successors: BTreeMap<String, BTreeSet<String>> = relaxed["spiral_cycles"]["successors"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let set = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect();
                    (k.clone(), set)
                })
                .collect()
        })
        .unwrap_or_default();
    let edge = |a: &str, b: &str| successors.get(a).is_some_and(|s| s.contains(b));
    let (Some(actual), Some(expected)) = (actual.as_array(), expected.as_array()) else {
        diffs.push(format!("{path}: cycles missing"));
        return;
    };
    if actual.len() != expected.len() {
        diffs.push(format!(
            "{path}: {} cycles, expected {}",
            actual.len(),
            expected.len()
        ));
    }
    let mut complete = BTreeSet::new();
    for (i, cycle) in actual.iter().enumerate() {
        let nodes: Vec<&str> = cycle
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let distinct: BTreeSet<&str> = nodes.iter().copied().collect();
        let follows_edges = nodes.windows(2).all(|w| edge(w[0], w[1]));
        let closes = nodes.len() == 5
            || nodes
                .last()
                .zip(nodes.first())
                .is_some_and(|(l, f)| edge(l, f));
        if !(2..=5).contains(&nodes.len())
            || distinct.len() != nodes.len()
            || !follows_edges
            || !closes
        {
            diffs.push(format!(
                "{path}[{i}]: {nodes:?} is not a cycle of the graph"
            ));
        }
        if nodes.len() < 5 {
            // A complete cycle, up to rotation.
            let start = nodes
                .iter()
                .enumerate()
                .min_by_key(|(_, n)| **n)
                .map_or(0, |(i, _)| i);
            let rotated: Vec<&str> = nodes[start..]
                .iter()
                .chain(&nodes[..start])
                .copied()
                .collect();
            if !complete.insert(rotated) {
                diffs.push(format!("{path}[{i}]: cycle listed twice"));
            }
        }
    }
}

fn run(args: &[&str], case: &Path) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(args)
        .arg("--input")
        .arg(case)
        .arg("--json")
        .output()
        .unwrap_or_else(|e| panic!("cannot run converge: {e}"));
    assert!(
        output.status.success(),
        "{} failed: {}",
        case.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{}: output is not JSON: {e}", case.display()))
}

fn take_spiral_cycles(value: &mut Value) -> Option<Value> {
    let bombs = value.pointer_mut("/risk/bombs")?.as_array_mut()?;
    let spiral = bombs.iter_mut().find(|b| b["type"] == "spiral")?;
    spiral.as_object_mut()?.remove("cycles")
}

fn check_command(args: &[&str]) {
    let mut failures = Vec::new();
    let cases = crate::parity::case_files("CONVERGE_FIXTURES_DIR", "../../shared/fixtures/risk");
    for case in &cases {
        let text =
            std::fs::read_to_string(case).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let fixture: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let mut expected = fixture["expected"].clone();
        let mut actual = run(args, case);

        let mut diffs = Vec::new();
        match (
            take_spiral_cycles(&mut actual),
            take_spiral_cycles(&mut expected),
        ) {
            (Some(a), Some(e)) => check_cycles(
                &a,
                &e,
                &fixture["relaxed"],
                "risk.bombs[spiral].cycles",
                &mut diffs,
            ),
            (None, None) => {}
            (a, _) => diffs.push(format!(
                "spiral bomb: present in output: {}, expected the opposite",
                a.is_some()
            )),
        }
        compare(&actual, &expected, "", 1e-9, &mut diffs);
        if !diffs.is_empty() {
            failures.push(format!("{}:\n  {}", case.display(), diffs.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn risk_eval_matches_every_reference_case() {
    check_command(&["risk", "eval"]);
}

#[test]
fn policy_eval_matches_every_reference_case() {
    check_command(&["policy", "eval"]);
}

#[test]
fn the_comparison_catches_a_rounding_step_and_a_number_type() {
    let expected: Value = serde_json::json!({"a": 41.1, "n": 1, "l": [1.0, 2.0]});
    let mut diffs = Vec::new();
    compare(
        &serde_json::json!({"a": 41.2, "n": 1.0, "l": [1.0], "extra": true}),
        &expected,
        "",
        1e-9,
        &mut diffs,
    );
    assert_eq!(diffs.len(), 3, "{diffs:?}");
    diffs.clear();
    compare(
        &serde_json::json!({"a": 41.1, "n": 1, "l": [1.0, 2.0], "extra": true}),
        &expected,
        "",
        1e-9,
        &mut diffs,
    );
    assert!(diffs.is_empty(), "{diffs:?}");
}
