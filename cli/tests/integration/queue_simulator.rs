//! `converge queue simulate`: the queue simulator through the binary, on a real throwaway
//! repository, with the reference settings of the comparison table (10-minute CI, 5 % failing
//! changes, 2 % flaky runs, 60 arrivals per hour, 8 hours).

use std::process::{Command, Output};

use serde_json::Value;

fn simulate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["--json", "queue", "simulate"])
        .args(args)
        .output()
        .unwrap()
}

fn report(args: &[&str]) -> Value {
    let output = simulate(args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn mode<'a>(reports: &'a Value, name: &str) -> &'a Value {
    reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mode"] == name)
        .unwrap()
}

#[test]
fn tested_speculative_merges_five_times_what_serial_does_and_never_breaks_the_target() {
    let reports = report(&["--mode", "all"]);
    let head = mode(&reports, "head");
    let serial = mode(&reports, "tested-serial");
    let speculative = mode(&reports, "tested-speculative");
    for name in ["tested-serial", "tested-batched", "tested-speculative"] {
        let r = mode(&reports, name);
        assert_eq!(r["target_broken"], false, "{name}: {r}");
        assert_eq!(r["broken_merged"], 0, "{name}: {r}");
    }
    // Head mode merges changes that are green alone and break the target together.
    assert_eq!(head["target_broken"], true, "{head}");
    let per_hour = |r: &Value| r["merges_per_hour"].as_f64().unwrap();
    assert!(
        per_hour(speculative) >= 5.0 * per_hour(serial),
        "speculative {} vs serial {}",
        per_hour(speculative),
        per_hour(serial)
    );
    // It keeps up with the arrivals: almost nothing is left queued after 8 hours.
    let arrivals = speculative["arrivals"].as_f64().unwrap();
    assert!(
        speculative["still_queued"].as_f64().unwrap() < 0.1 * arrivals,
        "{speculative}"
    );
    for r in reports.as_array().unwrap() {
        assert!(r["p50_minutes"].as_f64().unwrap() <= r["p90_minutes"].as_f64().unwrap());
        assert!(r["ci_runs"].as_u64().unwrap() > 0);
    }
}

#[test]
fn the_same_seed_gives_the_same_result_and_another_seed_another() {
    let args = [
        "--mode",
        "tested-speculative",
        "--hours",
        "2",
        "--fail-rate",
        "0.2",
    ];
    let first = report(&[&args[..], &["--seed", "7"]].concat());
    let again = report(&[&args[..], &["--seed", "7"]].concat());
    let other = report(&[&args[..], &["--seed", "8"]].concat());
    assert_eq!(first, again);
    assert_ne!(first, other);
    assert_eq!(first["mode"], "tested-speculative");
    // A fifth of the changes break the build: they are ejected, never merged.
    assert!(first["ejected"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["target_broken"], false);
}

#[test]
fn settings_out_of_range_are_refused_naming_the_option() {
    for (args, named) in [
        (&["--fail-rate", "1.5"][..], "--fail-rate"),
        (&["--ci-minutes", "0"][..], "--ci-minutes"),
        (&["--batch-size", "0"][..], "--batch-size"),
        (&["--depth", "100"][..], "--depth"),
        (
            &["--hours", "1000", "--arrivals-per-hour", "1000"][..],
            "--hours",
        ),
    ] {
        let output = simulate(args);
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}
