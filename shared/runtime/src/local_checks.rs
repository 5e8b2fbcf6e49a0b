//! Required checks run as commands on the local repository (`CONVERGE_LOCAL_CHECKS=commands`):
//! each check name maps to a shell command (`CONVERGE_LOCAL_CHECK_COMMANDS`, by default the
//! reference's `lint=make lint, unit_tests=make test, integration_tests=make
//! test-integration, security_scan=make security-scan, contract_tests=make test-contract`),
//! run in a detached work tree of the head commit (never the user's own work tree) with a
//! timeout (`CONVERGE_CHECK_TIMEOUT`, 300 s). Exit 0 passes; anything else, a timeout included,
//! fails. A name with no command is `Missing`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use converge_core::Intent;
use converge_core::pipeline::{CheckOutcome, CheckState, Checks, ChecksError};

/// The default check commands (defined with the configuration).
pub use crate::config::DEFAULT_LOCAL_CHECK_COMMANDS as DEFAULT_COMMANDS;

/// Characters of a command's output kept as the check's details.
const OUTPUT_LIMIT: usize = 2_000;

/// How the scratch directories of the work trees are named, so that a later process can find
/// the ones a killed process left behind.
const SCRATCH_PREFIX: &str = "converge-checks-";
/// The file in a scratch directory its owner holds locked while its checks run: a lock that
/// can be taken means the owner is gone (the kernel lets go of a dead process's locks), in
/// whatever process namespace the owner ran.
const OWNER_LOCK: &str = "owner.lock";

/// Checks run as commands in a work tree of the head commit.
#[derive(Debug, Clone)]
pub struct CommandChecks {
    repo: PathBuf,
    commands: BTreeMap<String, String>,
    timeout: Duration,
}

impl CommandChecks {
    /// Commands from `name=command` pairs separated by commas.
    pub fn new(
        repo: impl Into<PathBuf>,
        commands: &str,
        timeout: Duration,
    ) -> Result<CommandChecks, String> {
        let commands = commands
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|entry| match entry.split_once('=') {
                Some((name, command)) if !name.trim().is_empty() && !command.trim().is_empty() => {
                    Ok((name.trim().to_owned(), command.trim().to_owned()))
                }
                _ => Err(format!(
                    "CONVERGE_LOCAL_CHECK_COMMANDS entries are name=command, got '{entry}'"
                )),
            })
            .collect::<Result<_, _>>()?;
        let checks = CommandChecks {
            repo: repo.into(),
            commands,
            timeout,
        };
        checks.remove_leftovers();
        Ok(checks)
    }

    /// Removes the work trees a process killed during its checks left behind (nobody holds
    /// their scratch directory's owner lock any more), and their directories. Best effort: a
    /// failure is logged and the checks still run.
    fn remove_leftovers(&self) {
        let Ok(listed) = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["worktree", "list", "--porcelain"])
            .output()
        else {
            return;
        };
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        let leftovers: Vec<PathBuf> = listed
            .lines()
            .filter_map(|line| line.strip_prefix("worktree "))
            .map(PathBuf::from)
            .filter(|tree| tree.parent().is_some_and(owner_gone))
            .collect();
        for tree in leftovers {
            let removed = std::process::Command::new("git")
                .arg("-C")
                .arg(&self.repo)
                .args(["worktree", "remove", "--force"])
                .arg(&tree)
                .status();
            if let Some(scratch) = tree.parent() {
                let _ = std::fs::remove_dir_all(scratch);
            }
            match removed {
                Ok(status) if status.success() => tracing::info!(
                    tree = %tree.display(),
                    "removed a check work tree left by a killed process"
                ),
                _ => tracing::warn!(
                    tree = %tree.display(),
                    "could not remove a check work tree left by a killed process"
                ),
            }
        }
        // Work trees whose directory is already gone.
        let _ = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["worktree", "prune"])
            .status();
    }

    async fn git(&self, args: &[&str]) -> Result<(), ChecksError> {
        let output = tokio::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(args)
            .output()
            .await
            .map_err(|e| ChecksError(format!("cannot run git: {e}")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(ChecksError(format!(
                "git {}: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    async fn run(&self, command: &str, dir: &std::path::Path) -> (CheckState, String) {
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(dir)
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(self.timeout, child).await {
            Err(_) => (
                CheckState::Failed,
                format!("timed out after {} s", self.timeout.as_secs()),
            ),
            Ok(Err(e)) => (CheckState::Failed, format!("cannot run: {e}")),
            Ok(Ok(output)) => {
                let (state, text) = if output.status.success() {
                    (CheckState::Passed, output.stdout)
                } else {
                    (CheckState::Failed, output.stderr)
                };
                (
                    state,
                    String::from_utf8_lossy(&text)
                        .chars()
                        .take(OUTPUT_LIMIT)
                        .collect(),
                )
            }
        }
    }
}

/// Whether the process that made the scratch directory `scratch` (one of ours by its name)
/// is gone: nobody holds its owner lock (or it has none: made before owners kept one).
fn owner_gone(scratch: &std::path::Path) -> bool {
    let ours = scratch
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(SCRATCH_PREFIX));
    if !ours {
        return false;
    }
    match std::fs::File::open(scratch.join(OWNER_LOCK)) {
        Ok(file) => file.try_lock().is_ok(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

impl Checks for CommandChecks {
    async fn outcomes(
        &self,
        _intent: &Intent,
        head_sha: &str,
        required: &[String],
    ) -> Result<Vec<CheckOutcome>, ChecksError> {
        let runnable: Vec<&String> = required
            .iter()
            .filter(|n| self.commands.contains_key(*n))
            .collect();
        let mut results: BTreeMap<&String, (CheckState, String)> = BTreeMap::new();
        if !runnable.is_empty() {
            let scratch = tempfile::Builder::new()
                .prefix(SCRATCH_PREFIX)
                .tempdir()
                .map_err(|e| ChecksError(format!("no scratch directory: {e}")))?;
            // Held until the work tree is removed: while it is, no other process takes the
            // work tree for a leftover.
            let owner = std::fs::File::create(scratch.path().join(OWNER_LOCK))
                .and_then(|file| file.lock().map(|()| file))
                .map_err(|e| ChecksError(format!("cannot lock the scratch directory: {e}")))?;
            let tree = scratch.path().join("tree");
            let tree_arg = tree.display().to_string();
            self.git(&[
                "worktree", "add", "--detach", "--quiet", &tree_arg, head_sha,
            ])
            .await?;
            for name in runnable {
                let command = self
                    .commands
                    .get(name)
                    .map(String::as_str)
                    .unwrap_or_default();
                results.insert(name, self.run(command, &tree).await);
            }
            // The work tree is temporary whatever the outcome.
            let _ = self
                .git(&["worktree", "remove", "--force", &tree_arg])
                .await;
            drop(owner);
        }
        Ok(required
            .iter()
            .map(|name| {
                let (state, details) = results.remove(name).unwrap_or((
                    CheckState::Missing,
                    format!("no command configured for '{name}'"),
                ));
                CheckOutcome {
                    name: name.clone(),
                    state,
                    details,
                }
            })
            .collect())
    }

    /// The commands run on the commit, whichever intent asks.
    fn answers_per_commit(&self, _sample: &Intent) -> bool {
        true
    }
}

/// The local repository's source of check results: what CI reported to Converge
/// (`CONVERGE_LOCAL_CHECKS=reported`, the default), or commands run here (`commands`).
#[derive(Debug, Clone)]
pub enum LocalChecks {
    /// Results CI reported through the API.
    Reported(crate::reported_checks::ReportedChecks),
    /// Commands run in a work tree of the head.
    Commands(CommandChecks),
}

impl Checks for LocalChecks {
    async fn outcomes(
        &self,
        intent: &Intent,
        head_sha: &str,
        required: &[String],
    ) -> Result<Vec<CheckOutcome>, ChecksError> {
        match self {
            LocalChecks::Reported(checks) => checks.outcomes(intent, head_sha, required).await,
            LocalChecks::Commands(checks) => checks.outcomes(intent, head_sha, required).await,
        }
    }

    fn answers_per_commit(&self, sample: &Intent) -> bool {
        match self {
            LocalChecks::Reported(checks) => checks.answers_per_commit(sample),
            LocalChecks::Commands(checks) => checks.answers_per_commit(sample),
        }
    }
}

impl LocalChecks {
    /// The checks `settings` describe, for the repository at `repo`.
    pub fn new(
        settings: &crate::config::LocalChecksSettings,
        repo: &std::path::Path,
        store: converge_store::Store,
    ) -> Result<LocalChecks, String> {
        match settings {
            crate::config::LocalChecksSettings::Reported => Ok(LocalChecks::Reported(
                crate::reported_checks::ReportedChecks::new(store),
            )),
            crate::config::LocalChecksSettings::Commands { commands, timeout } => {
                CommandChecks::new(repo, commands, *timeout).map(LocalChecks::Commands)
            }
        }
    }
}
