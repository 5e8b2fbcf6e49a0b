//! Parity with the original's analytics: every case in `../shared/fixtures/analytics/` goes
//! through the `converge` binary (`analytics eval --input FILE --json`, FILE a copy holding
//! only the case's `input`), and the output must equal the case's `expected` exactly: integers
//! as integers, floats as floats of the same value (no tolerance: the cases pin Python's
//! rounding of exact ties), strings equal, lists in order; object key order and extra output
//! keys are not checked (the fixtures' README, "Checking a port").
//!
//! The fixtures are read in place. `CONVERGE_ANALYTICS_FIXTURES_DIR` points elsewhere.

use std::process::Command;

use serde_json::{Value, json};

use crate::parity::{case_files, compare};

#[test]
fn analytics_eval_prints_what_the_original_computed_for_every_case() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let cases = case_files(
        "CONVERGE_ANALYTICS_FIXTURES_DIR",
        "../../shared/fixtures/analytics",
    );
    let mut failures = Vec::new();
    for case in &cases {
        let text =
            std::fs::read_to_string(case).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let fixture: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let input_only = scratch.path().join(case.file_name().expect("a file name"));
        std::fs::write(&input_only, json!({"input": fixture["input"]}).to_string())
            .expect("write the input");
        let output = Command::new(env!("CARGO_BIN_EXE_converge"))
            .args(["analytics", "eval", "--json", "--input"])
            .arg(&input_only)
            .output()
            .expect("run converge");
        assert!(
            output.status.success(),
            "{}: {}",
            case.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let actual: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{}: output is not JSON: {e}", case.display()));
        let mut diffs = Vec::new();
        compare(&actual, &fixture["expected"], "", 0.0, &mut diffs);
        if !diffs.is_empty() {
            failures.push(format!("{}:\n  {}", case.display(), diffs.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "analytics parity: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn analytics_eval_names_what_it_cannot_read() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let file = scratch.path().join("bad.json");
    std::fs::write(
        &file,
        json!({"input": {"now": "yesterday", "events": []}}).to_string(),
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["analytics", "eval", "--input"])
        .arg(&file)
        .output()
        .expect("run converge");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("now") && stderr.contains("yesterday"),
        "{stderr}"
    );
}
