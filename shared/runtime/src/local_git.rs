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
use converge_core::pipeline::{Scm, ScmError, SimulatedMerge};
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

    async fn git(&self, args: &[&str]) -> Result<(i32, String), ScmError> {
        let output = tokio::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .await
            .map_err(|e| ScmError::Unavailable(format!("cannot run git: {e}")))?;
        let code = output.status.code().unwrap_or(-1);
        Ok((code, String::from_utf8_lossy(&output.stdout).into_owned()))
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
