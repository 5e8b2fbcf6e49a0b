//! Parity with the reference risk engine: every case in `../shared/fixtures/risk/` goes through
//! the `converge` binary (`risk eval --json` and `policy eval --json`), and the output must
//! equal the case's `expected` under the fixtures' rules: integers exactly and as integers,
//! floats within 1e-9 and as floats, lists in order, extra output fields ignored. The spiral
//! bomb's `cycles` (not deterministic in the reference) is checked against `relaxed`.
//!
//! The fixtures are read in place, never copied. `CONVERGE_FIXTURES_DIR` points elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("CONVERGE_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/risk"),
    }
}

fn case_files() -> Vec<PathBuf> {
    let dir = fixtures_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("parity fixtures not found at {}: {e}", dir.display()));
    let mut cases: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("case-") && name.ends_with(".json")
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no case-*.json in {}", dir.display());
    cases
}

/// Compares `actual` with `expected` by the fixtures' rules, collecting differences.
fn compare(actual: &Value, expected: &Value, path: &str, diffs: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, e_value) in e {
                match a.get(key) {
                    Some(a_value) => compare(a_value, e_value, &format!("{path}.{key}"), diffs),
                    None => diffs.push(format!("{path}.{key}: missing")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                diffs.push(format!("{path}: {} items, expected {}", a.len(), e.len()));
                return;
            }
            for (i, (a_item, e_item)) in a.iter().zip(e).enumerate() {
                compare(a_item, e_item, &format!("{path}[{i}]"), diffs);
            }
        }
        (Value::Number(e), Value::Number(a)) => {
            if e.is_f64() {
                let close = a.is_f64()
                    && matches!((a.as_f64(), e.as_f64()), (Some(x), Some(y)) if (x - y).abs() <= 1e-9);
                if !close {
                    diffs.push(format!("{path}: {a}, expected float {e}"));
                }
            } else if a.is_f64() || a.as_i64() != e.as_i64() {
                diffs.push(format!("{path}: {a}, expected integer {e}"));
            }
        }
        (e, a) if e == a => {}
        (e, a) => diffs.push(format!("{path}: {a}, expected {e}")),
    }
}

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
    let cases = case_files();
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
        compare(&actual, &expected, "", &mut diffs);
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
        &mut diffs,
    );
    assert_eq!(diffs.len(), 3, "{diffs:?}");
    diffs.clear();
    compare(
        &serde_json::json!({"a": 41.1, "n": 1, "l": [1.0, 2.0], "extra": true}),
        &expected,
        "",
        &mut diffs,
    );
    assert!(diffs.is_empty(), "{diffs:?}");
}
