//! `converge risk eval` / `policy eval` on bad input: exit 1, one line on stderr naming the
//! offending field, nothing on stdout.

use std::path::Path;
use std::process::Command;

const GOOD_INPUT: &str = r#"{"input": {
  "intent": {"id": "i-1", "source": "feature/x", "target": "main", "risk_level": "medium",
             "dependencies": [], "technical": {"scope_hint": ["auth"]}},
  "simulation": {"mergeable": true, "files_changed": ["src/auth/login.py"], "conflicts": []},
  "coupling": []}}"#;

fn converge(args: &[&str], dir: &Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run converge: {e}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_clear_error(args: &[&str], files: &[(&str, &str)], needle: &str) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("write: {e}"));
    }
    let (code, stdout, stderr) = converge(args, dir.path());
    assert_eq!(code, 1, "stderr: {stderr}");
    assert!(stdout.is_empty(), "nothing on stdout, got {stdout}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line, got {stderr}"
    );
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
}

#[test]
fn unknown_risk_level_names_the_field() {
    let input = GOOD_INPUT.replace(r#""risk_level": "medium""#, r#""risk_level": "huge""#);
    assert_clear_error(
        &["risk", "eval", "--input", "in.json"],
        &[("in.json", &input)],
        "input.intent.risk_level",
    );
}

#[test]
fn wrong_type_names_the_field() {
    let input = GOOD_INPUT.replace(r#""mergeable": true"#, r#""mergeable": "yes""#);
    assert_clear_error(
        &["policy", "eval", "--input", "in.json"],
        &[("in.json", &input)],
        "input.simulation.mergeable",
    );
}

#[test]
fn missing_section_is_named() {
    assert_clear_error(
        &["risk", "eval", "--input", "in.json"],
        &[("in.json", r#"{"expected": {}}"#)],
        "missing field `input`",
    );
    let input = GOOD_INPUT.replace(r#""id": "i-1", "#, "");
    assert_clear_error(
        &["risk", "eval", "--input", "in.json"],
        &[("in.json", &input)],
        "`id`",
    );
}

#[test]
fn unreadable_and_malformed_files_are_reported() {
    assert_clear_error(
        &["risk", "eval", "--input", "absent.json"],
        &[],
        "cannot read absent.json",
    );
    assert_clear_error(
        &["risk", "eval", "--input", "in.json"],
        &[("in.json", "{not json")],
        "in.json: not valid JSON: key must be a string at line 1 column 2",
    );
}

#[test]
fn a_change_too_large_to_evaluate_is_refused() {
    let files: Vec<String> = (0..3001).map(|i| format!("\"f{i}.rs\"")).collect();
    let input = GOOD_INPUT.replace(
        r#"["src/auth/login.py"]"#,
        &format!("[{}]", files.join(",")),
    );
    assert_clear_error(
        &["risk", "eval", "--input", "in.json"],
        &[("in.json", &input)],
        "input.simulation.files_changed: 3001 files, at most 3000",
    );
}

#[test]
fn invalid_policy_names_the_field() {
    assert_clear_error(
        &[
            "policy",
            "eval",
            "--input",
            "in.json",
            "--policy",
            "policy.json",
        ],
        &[
            ("in.json", GOOD_INPUT),
            (
                "policy.json",
                r#"{"profiles": {"medium": {"containment_min": 2}}}"#,
            ),
        ],
        "profiles.medium.containment_min",
    );
}

#[test]
fn a_custom_policy_changes_the_verdict() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::write(dir.path().join("in.json"), GOOD_INPUT).unwrap_or_else(|e| panic!("write: {e}"));
    std::fs::write(
        dir.path().join("strict.json"),
        r#"{"profiles": {"medium": {"entropy_budget": 1.0}, "low": {"entropy_budget": 1.0}}}"#,
    )
    .unwrap_or_else(|e| panic!("write: {e}"));
    let (code, default_out, _) = converge(
        &["policy", "eval", "--input", "in.json", "--json"],
        dir.path(),
    );
    assert_eq!(code, 0);
    let (code, strict_out, _) = converge(
        &[
            "policy",
            "eval",
            "--input",
            "in.json",
            "--policy",
            "strict.json",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0);
    let verdict = |text: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        v["policy"]["verdict"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(verdict(&default_out), "ALLOW");
    assert_eq!(verdict(&strict_out), "BLOCK");
}

#[test]
fn summary_without_json_shows_scores_and_gates() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::write(dir.path().join("in.json"), GOOD_INPUT).unwrap_or_else(|e| panic!("write: {e}"));
    let (code, stdout, _) = converge(&["risk", "eval", "--input", "in.json"], dir.path());
    assert_eq!(code, 0);
    assert!(stdout.starts_with("intent i-1: risk "), "{stdout}");
    assert!(stdout.contains("policy: ALLOW (profile "), "{stdout}");
    assert!(stdout.contains("pass verification"), "{stdout}");
}
