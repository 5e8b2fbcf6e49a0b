//! `converge demo --once`: the throwaway repository, the server on the embedded default, the
//! intents and their checks; the clean branches are merged into main by the worker and the
//! conflicting one is held back with its reason, and the command says so with exit 0.

use serde_json::Value;

use crate::operator_cli::converge;
use converge_testkit::git::git;

#[test]
fn the_demo_merges_the_clean_branches_and_holds_back_the_conflicting_one() {
    let dir = tempfile::tempdir().unwrap();
    let place = dir.path().join("demo");
    let run = converge(
        &[
            "--json",
            "demo",
            "--once",
            "--dir",
            &place.display().to_string(),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let summary = run.json();
    assert_eq!(summary["as_expected"], true, "{summary}");
    let intents: Vec<&Value> = summary["intents"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let status_of = |id: &str| {
        intents
            .iter()
            .find(|i| i["intent"] == id)
            .map(|i| i["status"].clone())
            .unwrap_or_default()
    };
    assert_eq!(status_of("docs"), "MERGED");
    assert_eq!(status_of("api"), "MERGED");
    assert_ne!(status_of("greeting"), "MERGED");

    // What the summary says is what the repository holds.
    let repo = place.join("repo");
    let merged = |branch: &str| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["merge-base", "--is-ancestor", branch, "main"])
            .status()
            .unwrap()
            .success()
    };
    assert!(merged("feature/docs") && merged("feature/api"));
    assert!(
        !merged("feature/greeting"),
        "the conflicting branch reached main"
    );
    let merges = git(&repo, &["log", "--merges", "--format=%s", "main"]);
    assert_eq!(merges.lines().count(), 2, "{merges}");

    // The directory is taken now: a second demo there is refused, nothing overwritten.
    let again = converge(
        &["demo", "--once", "--dir", &place.display().to_string()],
        &[],
    );
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
}
