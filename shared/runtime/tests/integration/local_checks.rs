//! Checks run as commands in a work tree of the head commit: a Makefile target passes or
//! fails per branch, a slow command times out, an unconfigured name is missing, and neither
//! the repository's own work tree nor its list of work trees is left changed.

use std::time::Duration;

use converge_core::Intent;
use converge_core::pipeline::{CheckState, Checks};
use converge_runtime::local_checks::CommandChecks;
use converge_testkit::git::{commit_file, git};

#[tokio::test]
async fn commands_judge_the_head_commit_in_a_work_tree_of_their_own() {
    let repo = tempfile::tempdir().unwrap();
    let path = repo.path();
    git(path, &["init", "-q", "-b", "main"]);
    commit_file(
        path,
        "Makefile",
        "lint:\n\ttest -f ok\nslow:\n\tsleep 5\n",
        "init",
    );
    git(path, &["checkout", "-q", "-b", "good"]);
    commit_file(path, "ok", "yes\n", "good");
    git(path, &["checkout", "-q", "main"]);
    let good = git(path, &["rev-parse", "good"]);
    let bad = git(path, &["rev-parse", "main"]);
    let checks = CommandChecks::new(
        path,
        "lint=make lint,slow=make slow",
        Duration::from_secs(1),
    )
    .unwrap();
    let intent = Intent::new("i", "good", "main", chrono::DateTime::default());
    let required = [
        "lint".to_owned(),
        "slow".to_owned(),
        "unit_tests".to_owned(),
    ];

    let outcomes = checks.outcomes(&intent, &good, &required).await.unwrap();
    let states: Vec<CheckState> = outcomes.iter().map(|o| o.state).collect();
    assert_eq!(
        states,
        [CheckState::Passed, CheckState::Failed, CheckState::Missing]
    );
    assert!(
        outcomes[1].details.contains("timed out"),
        "{:?}",
        outcomes[1]
    );

    let outcomes = checks
        .outcomes(&intent, &bad, &required[..1])
        .await
        .unwrap();
    assert_eq!(outcomes[0].state, CheckState::Failed);

    assert_eq!(
        git(path, &["status", "--porcelain"]),
        "",
        "the work tree is untouched"
    );
    assert_eq!(
        git(path, &["worktree", "list"]).lines().count(),
        1,
        "no work tree left behind"
    );
    assert!(CommandChecks::new(path, "lint", Duration::from_secs(1)).is_err());
}

/// A process killed while its checks ran leaves a registered work tree in its scratch
/// directory. The next start removes it and its directory; the work tree of a process that
/// still holds its owner lock is kept, as is a work tree Converge did not make.
#[test]
fn a_killed_runs_work_tree_is_removed_at_the_next_start() {
    let repo = tempfile::tempdir().unwrap();
    let path = repo.path();
    git(path, &["init", "-q", "-b", "main"]);
    commit_file(path, "Makefile", "lint:\n\ttrue\n", "init");
    let scratch = tempfile::tempdir().unwrap();
    let dead = scratch.path().join("converge-checks-dead");
    let alive = scratch.path().join("converge-checks-alive");
    let someone_elses = scratch.path().join("my-own-tree");
    for dir in [&dead, &alive, &someone_elses] {
        std::fs::create_dir_all(dir).unwrap();
        let tree = dir.join("tree").display().to_string();
        git(
            path,
            &["worktree", "add", "--detach", "--quiet", &tree, "main"],
        );
    }
    // The dead owner's lock file is left, unlocked; the live owner holds its lock.
    std::fs::File::create(dead.join("owner.lock")).unwrap();
    let live_owner = std::fs::File::create(alive.join("owner.lock")).unwrap();
    live_owner.lock().unwrap();
    assert_eq!(git(path, &["worktree", "list"]).lines().count(), 4);

    // Another process starts (a lock held by this one is held against it too: locks belong to
    // open files, and the cleanup opens its own).
    CommandChecks::new(path, "lint=make lint", Duration::from_secs(5)).unwrap();

    let trees = git(path, &["worktree", "list"]);
    assert_eq!(trees.lines().count(), 3, "{trees}");
    assert!(!trees.contains("converge-checks-dead"), "{trees}");
    assert!(trees.contains("converge-checks-alive"), "{trees}");
    assert!(trees.contains("my-own-tree"), "{trees}");
    assert!(!dead.exists(), "the killed run's scratch directory is left");
    assert!(alive.join("tree").exists() && someone_elses.join("tree").exists());
    drop(live_owner);
}
