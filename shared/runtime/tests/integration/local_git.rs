//! The local repository's SCM against real repositories: the refs of a page of intents read
//! in one go agree with reading them one by one; the merge commits the tree the simulation
//! wrote; a branch checked out in a linked work tree is never moved; unrelated histories are
//! reported as such.

use chrono::Utc;
use converge_core::Intent;
use converge_core::pipeline::{MergeError, MergePermit, Merger, Scm, ScmError};
use converge_core::queue::QueueKey;
use converge_runtime::local_git::GitScm;
use converge_store::{Store, SystemClock};
use converge_testkit::git::{commit_file, docs_and_clash, git};
use std::sync::Arc;
use std::time::Duration;

fn intent(id: &str, source: &str, target: &str) -> Intent {
    Intent::new(id, source, target, Utc::now())
}

/// A permit as a worker gets it: from a lease held in a store.
async fn permit(target: &str) -> MergePermit {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let store = Store::from_url(&url, Arc::new(SystemClock)).unwrap();
    store.migrate().await.unwrap();
    let key = QueueKey {
        tenant: String::new(),
        repo: String::new(),
        target: target.into(),
    };
    let ttl = Duration::from_secs(60);
    let lease = store.acquire_lease(&key, "w1", ttl).await.unwrap().unwrap();
    let (_, permit) = store
        .merge_permit(&lease, ttl, false, Utc::now())
        .await
        .unwrap();
    permit
}

#[tokio::test]
async fn the_tips_of_a_page_agree_with_reading_each_and_name_what_is_unknown() {
    let repo = tempfile::tempdir().unwrap();
    docs_and_clash(repo.path());
    let scm = GitScm::new(repo.path());
    let page = [
        intent("a", "feature/docs", "main"),
        intent("b", "feature/nope", "main"),
        intent("c", "feature/clash", "gone"),
        intent("d", "-x", "main"),
        intent("e", "feature/clash", "main"),
    ];
    let together = scm
        .tips_of(&page)
        .await
        .expect("git reads a page's refs together");
    assert_eq!(together.len(), page.len());
    for (intent, tips) in page.iter().zip(&together) {
        assert_eq!(tips, &scm.tips(intent).await, "{}", intent.id);
    }
    let tips = together[0].as_ref().unwrap();
    assert_eq!(
        tips.head_sha,
        git(repo.path(), &["rev-parse", "feature/docs"])
    );
    assert_eq!(tips.target_sha, git(repo.path(), &["rev-parse", "main"]));
    assert_eq!(
        together[1],
        Err(ScmError::UnknownRef("feature/nope".into()))
    );
    assert_eq!(together[2], Err(ScmError::UnknownRef("gone".into())));
    assert_eq!(together[3], Err(ScmError::UnknownRef("-x".into())));
    assert!(together[4].is_ok());
}

/// The refs are read by one git process kept running: what other processes do to the
/// branches meanwhile (a commit, `pack-refs`, a move, a deletion) is seen at the next read, and
/// a resolver process that died is replaced.
#[tokio::test]
async fn the_kept_resolver_sees_every_change_to_the_branches_and_outlives_its_process() {
    let repo = tempfile::tempdir().unwrap();
    docs_and_clash(repo.path());
    let scm = GitScm::new(repo.path());
    let docs = intent("a", "feature/docs", "main");
    let tips = |scm: GitScm, intent: Intent| async move { scm.tips(&intent).await };
    let first = tips(scm.clone(), docs.clone()).await.unwrap();

    git(repo.path(), &["checkout", "-q", "main"]);
    commit_file(
        repo.path(),
        "later.txt",
        "later\n",
        "a later commit on main",
    );
    let moved = tips(scm.clone(), docs.clone()).await.unwrap();
    assert_eq!(moved.target_sha, git(repo.path(), &["rev-parse", "main"]));
    assert_ne!(
        moved.target_sha, first.target_sha,
        "a new commit on the target"
    );

    git(repo.path(), &["pack-refs", "--all"]);
    git(
        repo.path(),
        &["update-ref", "refs/heads/main", &first.target_sha],
    );
    let back = tips(scm.clone(), docs.clone()).await.unwrap();
    assert_eq!(
        back.target_sha, first.target_sha,
        "a packed branch moved back"
    );

    git(
        repo.path(),
        &["update-ref", "-d", "refs/heads/feature/docs"],
    );
    assert_eq!(
        tips(scm.clone(), docs.clone()).await,
        Err(ScmError::UnknownRef("feature/docs".into())),
        "a deleted branch"
    );

    // The resolver's process ends (killed: it is the only `git cat-file` of this repository).
    let killed = std::process::Command::new("pkill")
        .args([
            "-f",
            &format!("{} cat-file --batch-check", repo.path().display()),
        ])
        .status()
        .unwrap();
    assert!(killed.success(), "a resolver process was running");
    let again = tips(scm.clone(), intent("e", "feature/clash", "main")).await;
    assert_eq!(
        again.map(|t| t.head_sha),
        Ok(git(repo.path(), &["rev-parse", "feature/clash"])),
        "a new process answers"
    );
}

#[tokio::test]
async fn a_file_read_tells_a_missing_file_from_a_commit_that_does_not_read() {
    let repo = tempfile::tempdir().unwrap();
    docs_and_clash(repo.path());
    let scm = GitScm::new(repo.path());
    let sample = intent("a", "feature/docs", "main");
    let without = git(repo.path(), &["rev-parse", "main"]);
    let path = converge_core::repo_config::PATH;
    commit_file(repo.path(), path, "mode = \"tested\"\n", "configure");
    let with = git(repo.path(), &["rev-parse", "HEAD"]);
    assert_eq!(
        scm.read_file(&sample, &with, path).await,
        Ok(Some("mode = \"tested\"\n".to_owned()))
    );
    assert_eq!(
        scm.read_file(&sample, &without, path).await,
        Ok(None),
        "no file in a commit that reads"
    );
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let read = scm.read_file(&sample, unknown, path).await;
    assert!(
        matches!(&read, Err(ScmError::Unavailable(why)) if why.contains(unknown)),
        "a commit that is not there is a failure, not a missing file: {read:?}"
    );
}

#[tokio::test]
async fn a_merge_commits_the_tree_its_simulation_wrote_with_or_without_it() {
    for simulated_first in [true, false] {
        let repo = tempfile::tempdir().unwrap();
        docs_and_clash(repo.path());
        let scm = GitScm::new(repo.path());
        let docs = intent("docs", "feature/docs", "main");
        let validated = scm.simulate(&docs).await.unwrap();
        assert!(validated.simulation.mergeable);
        assert_eq!(validated.simulation.files_changed, ["docs/guide.md"]);
        // A fresh SCM (another process) has not seen the simulation.
        let merger = if simulated_first {
            scm
        } else {
            GitScm::new(repo.path())
        };
        let commit = merger
            .merge(&docs, &validated, &permit("main").await)
            .await
            .unwrap();
        assert_eq!(git(repo.path(), &["rev-parse", "main"]), commit);
        let expected_tree = git(
            repo.path(),
            &[
                "merge-tree",
                "--write-tree",
                &validated.target_sha,
                &validated.head_sha,
            ],
        );
        assert_eq!(
            git(repo.path(), &["rev-parse", &format!("{commit}^{{tree}}")]),
            expected_tree
        );
    }
}

#[tokio::test]
async fn a_branch_checked_out_in_a_linked_work_tree_is_never_moved() {
    let repo = tempfile::tempdir().unwrap();
    docs_and_clash(repo.path());
    let linked = tempfile::tempdir().unwrap();
    let tree = linked.path().join("tree");
    let tree = tree.display().to_string();
    git(repo.path(), &["worktree", "add", "-q", &tree, "main"]);
    let scm = GitScm::new(repo.path());
    let docs = intent("docs", "feature/docs", "main");
    let validated = scm.simulate(&docs).await.unwrap();
    let main_before = git(repo.path(), &["rev-parse", "main"]);
    match scm.merge(&docs, &validated, &permit("main").await).await {
        Err(MergeError::Protected(reason)) => assert!(reason.contains(&tree), "{reason}"),
        other => panic!("merged into a checked-out branch: {other:?}"),
    }
    assert_eq!(git(repo.path(), &["rev-parse", "main"]), main_before);

    // Once the work tree is on another branch, the merge goes through.
    git(
        linked.path().join("tree").as_path(),
        &["checkout", "-q", "--detach"],
    );
    assert!(
        scm.merge(&docs, &validated, &permit("main").await)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn unrelated_histories_are_reported_as_such() {
    let repo = tempfile::tempdir().unwrap();
    docs_and_clash(repo.path());
    git(repo.path(), &["checkout", "-q", "--orphan", "island"]);
    git(repo.path(), &["rm", "-q", "-r", "-f", "."]);
    commit_file(repo.path(), "island.txt", "alone\n", "island");
    git(repo.path(), &["checkout", "-q", "--detach"]);
    let scm = GitScm::new(repo.path());
    match scm.simulate(&intent("i", "island", "main")).await {
        Err(ScmError::Unavailable(reason)) => {
            assert!(reason.contains("share no history"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// A repository with `main` and three branches off it: two that add files of their own
/// (two commits each) and one that clashes with `main`'s next commit.
fn trains_repository(dir: &std::path::Path) {
    docs_and_clash(dir);
    git(dir, &["checkout", "-q", "-b", "feature/a", "main"]);
    commit_file(dir, "a/one.txt", "1\n", "a one");
    commit_file(dir, "a/two.txt", "2\n", "a two");
    git(dir, &["checkout", "-q", "-b", "feature/b", "main"]);
    commit_file(dir, "b/one.txt", "1\n", "b one");
    commit_file(dir, "b/two.txt", "2\n", "b two");
    git(dir, &["checkout", "-q", "--detach"]);
}

fn files_at(repo: &std::path::Path, commit: &str) -> Vec<String> {
    git(repo, &["ls-tree", "-r", "--name-only", commit])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_candidate_holds_every_intent_by_each_merge_method_and_lands_by_fast_forward() {
    use converge_core::train::{Build, MergeMethod};
    for method in [MergeMethod::Merge, MergeMethod::Squash, MergeMethod::Rebase] {
        let repo = tempfile::tempdir().unwrap();
        trains_repository(repo.path());
        let scm = GitScm::new(repo.path());
        let main = git(repo.path(), &["rev-parse", "main"]);
        let a = git(repo.path(), &["rev-parse", "feature/a"]);
        let b = git(repo.path(), &["rev-parse", "feature/b"]);
        let intents = [("a".to_owned(), a.clone()), ("b".to_owned(), b.clone())];
        let trial = "refs/heads/converge/trial/1";
        let Build::Built(candidate) = scm
            .build_candidate(&main, &intents, method, trial)
            .await
            .unwrap()
        else {
            panic!("{method:?}: the two branches merge cleanly");
        };
        assert_eq!(git(repo.path(), &["rev-parse", trial]), candidate);
        let files = files_at(repo.path(), &candidate);
        for file in [
            "a/one.txt",
            "a/two.txt",
            "b/one.txt",
            "b/two.txt",
            "docs/guide.md",
        ] {
            assert!(
                files.iter().any(|f| f == file),
                "{method:?}: {file} in {files:?}"
            );
        }
        let heads_are_ancestors = [&a, &b].iter().all(|head| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(repo.path())
                .args(["merge-base", "--is-ancestor", head, &candidate])
                .status()
                .unwrap()
                .success()
        });
        let commits_on_main = git(
            repo.path(),
            &["rev-list", "--count", &format!("{main}..{candidate}")],
        );
        match method {
            MergeMethod::Merge => {
                assert!(heads_are_ancestors, "merge commits keep the heads");
                assert_eq!(
                    commits_on_main, "6",
                    "two merges and the four commits they bring"
                );
            }
            MergeMethod::Squash => {
                assert!(!heads_are_ancestors);
                assert_eq!(commits_on_main, "2", "one commit per intent");
            }
            MergeMethod::Rebase => {
                assert!(!heads_are_ancestors);
                assert_eq!(commits_on_main, "4", "each intent's commits, replayed");
                let first_parent = git(
                    repo.path(),
                    &[
                        "rev-list",
                        "--merges",
                        "--count",
                        &format!("{main}..{candidate}"),
                    ],
                );
                assert_eq!(first_parent, "0", "no merge commits");
            }
        }
        // The target moves to exactly the tested commit, from where it was.
        scm.fast_forward("main", &main, &candidate).await.unwrap();
        assert_eq!(git(repo.path(), &["rev-parse", "main"]), candidate);
        scm.drop_trial(trial).await.unwrap();
        assert!(
            !git(repo.path(), &["for-each-ref", "refs/heads/converge/"]).contains("trial"),
            "the trial ref is gone"
        );
    }
}

#[tokio::test]
async fn a_conflicting_intent_is_named_with_its_files_and_a_moved_target_is_not_overwritten() {
    use converge_core::train::{Build, MergeMethod};
    let repo = tempfile::tempdir().unwrap();
    trains_repository(repo.path());
    let scm = GitScm::new(repo.path());
    let main = git(repo.path(), &["rev-parse", "main"]);
    let a = git(repo.path(), &["rev-parse", "feature/a"]);
    let clash = git(repo.path(), &["rev-parse", "feature/clash"]);
    let intents = [("a".to_owned(), a), ("clash".to_owned(), clash)];
    let build = scm
        .build_candidate(
            &main,
            &intents,
            MergeMethod::Merge,
            "refs/heads/converge/trial/2",
        )
        .await
        .unwrap();
    assert_eq!(
        build,
        Build::Conflict {
            intent: "clash".into(),
            files: vec!["src/app/main.rs".into()],
        }
    );
    assert!(
        git(repo.path(), &["for-each-ref", "refs/heads/converge/"]).is_empty(),
        "a failed build points no trial ref"
    );

    // A candidate built on `main`, then somebody pushes to `main`: no fast-forward.
    let Build::Built(candidate) = scm
        .build_candidate(
            &main,
            &intents[..1],
            MergeMethod::Merge,
            "refs/heads/converge/trial/3",
        )
        .await
        .unwrap()
    else {
        panic!("a merges");
    };
    git(
        repo.path(),
        &["update-ref", "refs/heads/main", "feature/docs"],
    );
    let pushed = git(repo.path(), &["rev-parse", "main"]);
    match scm.fast_forward("main", &main, &candidate).await {
        Err(MergeError::TargetMoved { current, .. }) => assert_eq!(current, pushed),
        other => panic!("moved a target that had moved: {other:?}"),
    }
    assert_eq!(git(repo.path(), &["rev-parse", "main"]), pushed);
    // Nor to a commit that does not descend from where the target is.
    assert!(scm.fast_forward("main", &pushed, &candidate).await.is_err());
    assert_eq!(git(repo.path(), &["rev-parse", "main"]), pushed);
}
