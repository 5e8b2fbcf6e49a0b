//! The `Scm` port over a local git repository, through the `git` CLI.
//!
//! Simulation: both refs are resolved to commits (`UnknownRef` if either is missing), then
//! `git merge-tree --write-tree --name-only` merges them in memory (exit 1 lists the conflicted
//! paths). Files changed are counted from the merge base (`git diff --name-only base source`),
//! not as a diff of the two tips, so the target's own later changes are not the intent's.
//! Co-change history: file pairs changed together in the last commits (at least twice, the 50
//! most frequent), like the reference's archaeology.

use std::collections::BTreeMap;
use std::path::PathBuf;

use converge_core::Intent;
use converge_core::pipeline::{
    MergeError, MergePermit, Merger, Scm, ScmError, SimulatedMerge, Tips,
};
use converge_core::risk::CouplingPair;
use converge_core::simulation::Simulation;

/// Commits of history read for co-changes.
const HISTORY_COMMITS: usize = 200;
/// Co-change pairs kept (the most frequent).
const COUPLING_PAIRS: usize = 50;
/// Fewest co-changes for a pair to count.
const MIN_CO_CHANGES: u64 = 2;

/// A git repository on this machine.
#[derive(Debug, Clone)]
pub struct GitScm {
    repo: PathBuf,
}

impl GitScm {
    /// The repository at `repo` (its work tree or `.git` folder).
    pub fn new(repo: impl Into<PathBuf>) -> GitScm {
        GitScm { repo: repo.into() }
    }

    /// The repository's path, as given.
    pub fn path(&self) -> &std::path::Path {
        &self.repo
    }

    async fn git(&self, args: &[&str]) -> Result<(i32, String), ScmError> {
        self.git_with(args, &[]).await
    }

    async fn git_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(i32, String), ScmError> {
        let output = tokio::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .envs(env.iter().copied())
            .output()
            .await
            .map_err(|e| ScmError::Unavailable(format!("cannot run git: {e}")))?;
        let code = output.status.code().unwrap_or(-1);
        Ok((code, String::from_utf8_lossy(&output.stdout).into_owned()))
    }

    /// The full name of a target branch (`main` → `refs/heads/main`).
    fn branch_ref(target: &str) -> String {
        if target.starts_with("refs/") {
            target.to_owned()
        } else {
            format!("refs/heads/{target}")
        }
    }

    /// The work tree that has `branch` checked out, if any: moving the ref under it would
    /// leave that work tree showing the merge as reverted changes.
    async fn checked_out_at(&self, branch: &str) -> Result<Option<String>, ScmError> {
        let (code, out) = self.git(&["worktree", "list", "--porcelain"]).await?;
        if code != 0 {
            return Ok(None);
        }
        let mut path = None;
        for line in out.lines() {
            if let Some(p) = line.strip_prefix("worktree ") {
                path = Some(p.to_owned());
            } else if line.strip_prefix("branch ") == Some(branch) {
                return Ok(path);
            }
        }
        Ok(None)
    }

    async fn resolve(&self, reference: &str) -> Result<String, ScmError> {
        if reference.is_empty() || reference.starts_with('-') {
            return Err(ScmError::UnknownRef(reference.to_owned()));
        }
        let (code, out) = self
            .git(&[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{reference}^{{commit}}"),
            ])
            .await?;
        if code != 0 {
            return Err(ScmError::UnknownRef(reference.to_owned()));
        }
        Ok(out.trim().to_owned())
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Scm for GitScm {
    async fn tips(&self, intent: &Intent) -> Result<Tips, ScmError> {
        Ok(Tips {
            head_sha: self.resolve(&intent.source).await?,
            target_sha: self.resolve(&intent.target).await?,
        })
    }

    async fn simulate(&self, intent: &Intent) -> Result<SimulatedMerge, ScmError> {
        let head_sha = self.resolve(&intent.source).await?;
        let target_sha = self.resolve(&intent.target).await?;
        let (code, out) = self.git(&["merge-base", &target_sha, &head_sha]).await?;
        if code != 0 {
            return Err(ScmError::Unavailable(format!(
                "{} and {} share no history",
                intent.source, intent.target
            )));
        }
        let base = out.trim().to_owned();
        let (code, out) = self
            .git(&[
                "merge-tree",
                "--write-tree",
                "--name-only",
                "--no-messages",
                &target_sha,
                &head_sha,
            ])
            .await?;
        let mut conflicts = match code {
            0 => Vec::new(),
            // First line: the tree written; then one conflicted path per line.
            1 => lines(&out).into_iter().skip(1).collect(),
            _ => {
                return Err(ScmError::Unavailable(format!(
                    "git merge-tree failed with status {code}"
                )));
            }
        };
        conflicts.sort();
        conflicts.dedup();
        let (code, out) = self
            .git(&["diff", "--name-only", "--no-renames", &base, &head_sha])
            .await?;
        if code != 0 {
            return Err(ScmError::Unavailable(format!(
                "git diff failed with status {code}"
            )));
        }
        let simulation = Simulation {
            mergeable: conflicts.is_empty(),
            conflicts,
            files_changed: lines(&out),
        };
        Ok(SimulatedMerge {
            simulation,
            head_sha,
            target_sha,
        })
    }

    async fn co_changes(
        &self,
        intent: &Intent,
        _files: &[String],
    ) -> Result<Vec<CouplingPair>, ScmError> {
        let max = format!("--max-count={HISTORY_COMMITS}");
        let target = self.resolve(&intent.target).await?;
        let (code, out) = self
            .git(&["log", &max, "--format=%x00", "--name-only", &target])
            .await?;
        if code != 0 {
            return Ok(Vec::new());
        }
        let mut pairs: BTreeMap<(String, String), u64> = BTreeMap::new();
        for commit in out.split('\0') {
            let mut files = lines(commit);
            files.sort();
            files.dedup();
            for (i, a) in files.iter().enumerate() {
                for b in &files[i + 1..] {
                    *pairs.entry((a.clone(), b.clone())).or_default() += 1;
                }
            }
        }
        let mut frequent: Vec<((String, String), u64)> = pairs
            .into_iter()
            .filter(|(_, n)| *n >= MIN_CO_CHANGES)
            .collect();
        frequent.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        frequent.truncate(COUPLING_PAIRS);
        Ok(frequent
            .into_iter()
            .map(|((file_a, file_b), co_changes)| CouplingPair {
                file_a,
                file_b,
                co_changes,
                source: "git-log".to_owned(),
            })
            .collect())
    }
}

/// Who the merge commits Converge writes are by (the repository's own identity is not
/// assumed to be configured).
const MERGE_IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "Converge"),
    ("GIT_AUTHOR_EMAIL", "converge@localhost"),
    ("GIT_COMMITTER_NAME", "Converge"),
    ("GIT_COMMITTER_EMAIL", "converge@localhost"),
];

impl Merger for GitScm {
    async fn landed(&self, intent: &Intent, head_sha: &str) -> Result<bool, MergeError> {
        let unavailable = |e: ScmError| MergeError::Unavailable(e.to_string());
        let target = self.resolve(&intent.target).await.map_err(unavailable)?;
        let (code, _) = self
            .git(&["merge-base", "--is-ancestor", head_sha, &target])
            .await
            .map_err(unavailable)?;
        Ok(code == 0)
    }

    /// Writes the merge commit of the validated head onto the validated target commit (no work
    /// tree involved), then moves the target branch with `update-ref` from the validated commit
    /// only: if anything moved the branch meanwhile, git refuses and nothing changes.
    async fn merge(
        &self,
        intent: &Intent,
        validated: &SimulatedMerge,
        // Proof that the caller holds the key's lease: required, not read (see `MergePermit`).
        _permit: &MergePermit,
    ) -> Result<String, MergeError> {
        let unavailable = |e: ScmError| MergeError::Unavailable(e.to_string());
        let branch = Self::branch_ref(&intent.target);
        let current_target = self.resolve(&branch).await.map_err(unavailable)?;
        if current_target != validated.target_sha {
            return Err(MergeError::TargetMoved {
                validated: validated.target_sha.clone(),
                current: current_target,
            });
        }
        let current_head = self.resolve(&intent.source).await.map_err(unavailable)?;
        if current_head != validated.head_sha {
            return Err(MergeError::HeadMoved {
                validated: validated.head_sha.clone(),
                current: current_head,
            });
        }
        if let Some(path) = self.checked_out_at(&branch).await.map_err(unavailable)? {
            return Err(MergeError::Protected(format!(
                "{branch} is checked out in the work tree at {path}; Converge does not move a \
                 checked-out branch (check out another branch there, or use a bare clone)"
            )));
        }
        let (code, out) = self
            .git(&[
                "merge-tree",
                "--write-tree",
                "--no-messages",
                &validated.target_sha,
                &validated.head_sha,
            ])
            .await
            .map_err(unavailable)?;
        let tree = match code {
            0 => out.trim().to_owned(),
            1 => {
                return Err(MergeError::Conflict(
                    lines(&out).into_iter().skip(1).collect(),
                ));
            }
            _ => {
                return Err(MergeError::Unavailable(format!(
                    "git merge-tree failed with status {code}"
                )));
            }
        };
        let message = format!(
            "Merge {} into {} (Converge intent {})",
            intent.source, intent.target, intent.id
        );
        let (code, out) = self
            .git_with(
                &[
                    "commit-tree",
                    &tree,
                    "-p",
                    &validated.target_sha,
                    "-p",
                    &validated.head_sha,
                    "-m",
                    &message,
                ],
                &MERGE_IDENTITY,
            )
            .await
            .map_err(unavailable)?;
        if code != 0 {
            return Err(MergeError::Unavailable(format!(
                "git commit-tree failed with status {code}"
            )));
        }
        let merge_commit = out.trim().to_owned();
        let (code, _) = self
            .git(&[
                "update-ref",
                "-m",
                &message,
                &branch,
                &merge_commit,
                &validated.target_sha,
            ])
            .await
            .map_err(unavailable)?;
        if code != 0 {
            // The only way a compare-and-swap on a ref fails here is that it moved.
            let current = self.resolve(&branch).await.unwrap_or_default();
            return Err(MergeError::TargetMoved {
                validated: validated.target_sha.clone(),
                current,
            });
        }
        Ok(merge_commit)
    }
}
