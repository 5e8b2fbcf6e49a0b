//! What the parity tests share: the case files of a fixtures folder and the comparison of an
//! output with a case's `expected` by the fixtures' rules.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The `case-*.json` files of the folder `variable` names (else `default`, relative to the
/// crate), in name order; a missing or empty folder fails the test.
pub(crate) fn case_files(variable: &str, default: &str) -> Vec<PathBuf> {
    let dir = match std::env::var_os(variable) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(default),
    };
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

/// Compares `actual` with `expected`, collecting differences: integers exactly and as
/// integers, floats as floats within `float_tolerance` (0: the same value), lists in order,
/// keys `expected` lacks ignored.
pub(crate) fn compare(
    actual: &Value,
    expected: &Value,
    path: &str,
    float_tolerance: f64,
    diffs: &mut Vec<String>,
) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, e_value) in e {
                match a.get(key) {
                    Some(a_value) => compare(
                        a_value,
                        e_value,
                        &format!("{path}.{key}"),
                        float_tolerance,
                        diffs,
                    ),
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
                compare(
                    a_item,
                    e_item,
                    &format!("{path}[{i}]"),
                    float_tolerance,
                    diffs,
                );
            }
        }
        (Value::Number(e), Value::Number(a)) => {
            let same = if e.is_f64() {
                a.is_f64()
                    && matches!((a.as_f64(), e.as_f64()), (Some(x), Some(y)) if (x - y).abs() <= float_tolerance)
            } else {
                !a.is_f64() && a.as_i64() == e.as_i64() && a.as_u64() == e.as_u64()
            };
            if !same {
                diffs.push(format!("{path}: {a}, expected {e}"));
            }
        }
        (e, a) if e == a => {}
        (e, a) => diffs.push(format!("{path}: {a}, expected {e}")),
    }
}
