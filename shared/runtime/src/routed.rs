//! One set of ports for a worker that serves both kinds of intents: those of a GitHub
//! repository (`technical.repo` set) go to the GitHub App's ports, the others to the local git
//! repository and its checks (reported by CI, or run as commands). Either side may be absent; an intent
//! whose side is absent gets an error naming what to configure, and waits.

use std::sync::Arc;

use converge_core::Intent;
use converge_core::pipeline::{
    CheckOutcome, Checks, ChecksError, MergeError, MergePermit, Merger, Scm, ScmError,
    SimulatedMerge, Tips,
};
use converge_core::publication::{PublishError, Publisher, Report};
use converge_core::risk::CouplingPair;
use converge_github::adapters::GithubPorts;

use crate::local_checks::LocalChecks;
use crate::local_git::GitScm;

/// Ports chosen per intent.
#[derive(Debug, Clone)]
pub struct RoutedPorts {
    local: Option<(GitScm, LocalChecks)>,
    github: Option<GithubPorts>,
}

const NO_GITHUB: &str = "this intent belongs to a GitHub repository and no GitHub App is configured (set CONVERGE_GITHUB_APP_ID and its private key)";
const NO_LOCAL: &str = "this intent names no GitHub repository and no local repository is configured (set CONVERGE_REPO_PATH)";

enum Side<'a> {
    Local(&'a GitScm, &'a LocalChecks),
    Github(&'a GithubPorts),
}

impl RoutedPorts {
    /// Ports over a local repository, GitHub, or both.
    pub fn new(local: Option<(GitScm, LocalChecks)>, github: Option<GithubPorts>) -> RoutedPorts {
        RoutedPorts { local, github }
    }

    /// The GitHub App, when one is configured.
    pub fn github_app(&self) -> Option<&Arc<converge_github::app::GithubApp>> {
        self.github.as_ref().map(GithubPorts::app)
    }

    /// Whether any side is configured.
    pub fn is_empty(&self) -> bool {
        self.local.is_none() && self.github.is_none()
    }

    fn side(&self, intent: &Intent) -> Result<Side<'_>, &'static str> {
        if intent.repo().is_some_and(|r| r.contains('/')) {
            self.github.as_ref().map(Side::Github).ok_or(NO_GITHUB)
        } else {
            self.local
                .as_ref()
                .map(|(scm, checks)| Side::Local(scm, checks))
                .ok_or(NO_LOCAL)
        }
    }
}

fn scm_error(message: &str) -> ScmError {
    ScmError::Unavailable(message.to_owned())
}

impl Scm for RoutedPorts {
    async fn conflicts_between(
        &self,
        sample: &Intent,
        first: &str,
        second: &str,
    ) -> Result<Vec<String>, ScmError> {
        match self.side(sample).map_err(scm_error)? {
            Side::Local(scm, _) => scm.conflicts_between(sample, first, second).await,
            Side::Github(github) => github.conflicts_between(sample, first, second).await,
        }
    }

    async fn read_file(
        &self,
        sample: &Intent,
        commit: &str,
        path: &str,
    ) -> Result<Option<String>, ScmError> {
        match self.side(sample).map_err(scm_error)? {
            Side::Local(scm, _) => scm.read_file(sample, commit, path).await,
            Side::Github(github) => github.read_file(sample, commit, path).await,
        }
    }

    async fn tips(&self, intent: &Intent) -> Result<Tips, ScmError> {
        match self.side(intent).map_err(scm_error)? {
            Side::Local(scm, _) => scm.tips(intent).await,
            Side::Github(github) => github.tips(intent).await,
        }
    }

    async fn tips_of(&self, intents: &[Intent]) -> Option<Vec<Result<Tips, ScmError>>> {
        // A round's intents share a queue key, so they are all on one side.
        let all_local = || {
            intents
                .iter()
                .all(|i| matches!(self.side(i), Ok(Side::Local(..))))
        };
        let all_github = || {
            intents
                .iter()
                .all(|i| matches!(self.side(i), Ok(Side::Github(_))))
        };
        match self.side(intents.first()?).ok()? {
            Side::Local(scm, _) if all_local() => scm.tips_of(intents).await,
            Side::Github(github) if all_github() => github.tips_of(intents).await,
            _ => None,
        }
    }

    async fn simulate(&self, intent: &Intent) -> Result<SimulatedMerge, ScmError> {
        match self.side(intent).map_err(scm_error)? {
            Side::Local(scm, _) => scm.simulate(intent).await,
            Side::Github(github) => github.simulate(intent).await,
        }
    }

    async fn co_changes(
        &self,
        intent: &Intent,
        files: &[String],
    ) -> Result<Vec<CouplingPair>, ScmError> {
        match self.side(intent).map_err(scm_error)? {
            Side::Local(scm, _) => scm.co_changes(intent, files).await,
            Side::Github(github) => github.co_changes(intent, files).await,
        }
    }
}

impl Checks for RoutedPorts {
    async fn outcomes(
        &self,
        intent: &Intent,
        head_sha: &str,
        required: &[String],
    ) -> Result<Vec<CheckOutcome>, ChecksError> {
        match self.side(intent).map_err(|m| ChecksError(m.to_owned()))? {
            Side::Local(_, checks) => checks.outcomes(intent, head_sha, required).await,
            Side::Github(github) => github.outcomes(intent, head_sha, required).await,
        }
    }

    async fn rerun(&self, intent: &Intent, commit: &str) -> Result<bool, ChecksError> {
        match self.side(intent).map_err(|m| ChecksError(m.to_owned()))? {
            Side::Local(_, checks) => checks.rerun(intent, commit).await,
            Side::Github(github) => github.rerun(intent, commit).await,
        }
    }

    fn answers_per_commit(&self, sample: &Intent) -> bool {
        match self.side(sample) {
            Ok(Side::Local(_, checks)) => checks.answers_per_commit(sample),
            Ok(Side::Github(github)) => github.answers_per_commit(sample),
            Err(_) => false,
        }
    }
}

impl Merger for RoutedPorts {
    async fn landed(&self, intent: &Intent, head_sha: &str) -> Result<bool, MergeError> {
        match self
            .side(intent)
            .map_err(|m| MergeError::Unavailable(m.to_owned()))?
        {
            Side::Local(scm, _) => scm.landed(intent, head_sha).await,
            Side::Github(github) => github.landed(intent, head_sha).await,
        }
    }

    async fn merge(
        &self,
        intent: &Intent,
        validated: &SimulatedMerge,
        permit: &MergePermit,
    ) -> Result<String, MergeError> {
        tracing::info!(
            intent = %intent.id,
            key = %permit.key(),
            fencing_token = permit.fencing_token(),
            "merging {} onto {}",
            validated.head_sha,
            validated.target_sha
        );
        match self
            .side(intent)
            .map_err(|m| MergeError::Unavailable(m.to_owned()))?
        {
            Side::Local(scm, _) => scm.merge(intent, validated, permit).await,
            Side::Github(github) => github.merge(intent, validated, permit).await,
        }
    }

    async fn target_tip(&self, sample: &Intent) -> Result<String, ScmError> {
        match self.side(sample).map_err(scm_error)? {
            Side::Local(scm, _) => Merger::target_tip(scm, sample).await,
            Side::Github(github) => Merger::target_tip(github, sample).await,
        }
    }

    async fn build_candidate(
        &self,
        sample: &Intent,
        base: &str,
        intents: &[(String, String)],
        method: converge_core::train::MergeMethod,
        trial_ref: &str,
    ) -> Result<converge_core::train::Build, ScmError> {
        match self.side(sample).map_err(scm_error)? {
            Side::Local(scm, _) => {
                Merger::build_candidate(scm, sample, base, intents, method, trial_ref).await
            }
            Side::Github(github) => {
                Merger::build_candidate(github, sample, base, intents, method, trial_ref).await
            }
        }
    }

    async fn fast_forward(
        &self,
        sample: &Intent,
        from: &str,
        to: &str,
        permit: &MergePermit,
    ) -> Result<(), MergeError> {
        tracing::info!(
            key = %permit.key(),
            fencing_token = permit.fencing_token(),
            "fast-forwarding {} from {from} to the tested {to}",
            sample.target
        );
        match self
            .side(sample)
            .map_err(|m| MergeError::Unavailable(m.to_owned()))?
        {
            Side::Local(scm, _) => Merger::fast_forward(scm, sample, from, to, permit).await,
            Side::Github(github) => Merger::fast_forward(github, sample, from, to, permit).await,
        }
    }

    async fn drop_trial(&self, sample: &Intent, trial_ref: &str) -> Result<(), ScmError> {
        match self.side(sample).map_err(scm_error)? {
            Side::Local(scm, _) => Merger::drop_trial(scm, sample, trial_ref).await,
            Side::Github(github) => Merger::drop_trial(github, sample, trial_ref).await,
        }
    }
}

impl Publisher for RoutedPorts {
    fn enabled(&self) -> bool {
        self.github.is_some()
    }

    /// Reports go to GitHub; a local intent's reports are dropped (nobody to tell).
    async fn publish(&self, intent: &Intent, report: &Report) -> Result<(), PublishError> {
        match self.side(intent) {
            Ok(Side::Github(github)) => github.publish(intent, report).await,
            _ => Ok(()),
        }
    }
}
