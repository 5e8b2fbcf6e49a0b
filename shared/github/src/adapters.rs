//! The domain's ports over GitHub's REST API: [`GithubPorts`] is the `Scm`, `Checks` and
//! `Merger` of intents that come from GitHub (`technical.repo`, `technical.installation_id`,
//! `technical.pr_number`).
//!
//! - Simulation: a scratch branch `converge/sim/<hash>` is set to the target commit and the
//!   head is merged into it with the merges API (201 clean, 204 already contained, 409
//!   conflict); the scratch branch is deleted afterwards. Files changed come from the compare
//!   API (target...head, so from the merge base). GitHub names no files on a conflict, so the
//!   files changed on both sides since the merge base are reported as the conflict.
//! - Merge, exactly what was validated: the target must still be at the validated commit and
//!   the pull request at the validated head; the scratch branch is set to the validated target
//!   commit, the validated head is merged into it (a commit whose parents are exactly those
//!   two), and the target branch is moved to that commit without force — GitHub refuses if
//!   the target moved meanwhile, which is reported as `TargetMoved`, never merged blind.
//! - Tested merges (`core::train`): a candidate is a trial branch `converge/trial/…` set to its
//!   base with each head merged into it by the merges API (merge commits only); CI runs on
//!   the branch's push, its checks are read on the candidate's commit like a head's, and the
//!   target is moved to the tested commit without force, only from where the train saw it.
//! - Checks: the check runs and commit statuses of the head commit, by the names CI reports
//!   (`CONVERGE_GITHUB_CHECK_MAP` maps profile names to them).
//! - Reports: one "Converge" check run per intent and head, created once then updated
//!   (in progress while validating or waiting, success when validated or merged, failure when
//!   blocked or rejected), optionally a commit status beside it.

use std::sync::Arc;

use converge_core::Intent;
use converge_core::pipeline::{
    CheckOutcome, CheckState, Checks, ChecksError, MergeError, MergePermit, Merger, Scm, ScmError,
    SimulatedMerge, Tips,
};
use converge_core::publication::{CHECK_NAME, PublishError, Publisher, Report, ReportState};
use converge_core::risk::CouplingPair;
use converge_core::simulation::Simulation;
use converge_core::train::{Build, MergeMethod};
use octocrab::Octocrab;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::app::{GithubApp, GithubError, call, message_of};

/// The ports over GitHub for intents that come from GitHub.
#[derive(Debug, Clone)]
pub struct GithubPorts {
    app: Arc<GithubApp>,
}

/// Where an intent lives on GitHub.
struct Target {
    client: Arc<Octocrab>,
    repo: String,
    pull: Option<u64>,
}

impl GithubPorts {
    /// Ports over `app`.
    pub fn new(app: Arc<GithubApp>) -> GithubPorts {
        GithubPorts { app }
    }

    /// The App these ports call GitHub as.
    pub fn app(&self) -> &Arc<GithubApp> {
        &self.app
    }

    fn target(&self, intent: &Intent) -> Result<Target, GithubError> {
        let repo = intent
            .repo()
            .filter(|r| r.contains('/'))
            .ok_or_else(|| {
                GithubError::Config(format!(
                    "intent {} names no GitHub repository (technical.repo)",
                    intent.id
                ))
            })?
            .to_owned();
        let installation = intent
            .technical
            .get("installation_id")
            .and_then(Value::as_u64)
            .or(self.app.settings().default_installation)
            .ok_or_else(|| {
                GithubError::Config(format!(
                    "intent {} has no installation id and CONVERGE_GITHUB_INSTALLATION_ID is not set",
                    intent.id
                ))
            })?;
        Ok(Target {
            client: self.app.installation(installation)?,
            repo,
            pull: pull_number(intent),
        })
    }

    /// The scratch branch of an intent (one per intent: its queue key's lease serialises use).
    fn scratch_branch(intent: &Intent) -> String {
        let digest = Sha256::digest(intent.id.as_bytes());
        let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("converge/sim/{hash}")
    }

    async fn branch_tip(&self, t: &Target, branch: &str) -> Result<Option<String>, GithubError> {
        let (status, body) = call(
            &t.client,
            "GET",
            &format!("/repos/{}/git/ref/heads/{}", t.repo, in_path(branch)),
            None,
        )
        .await?;
        match status {
            200 => Ok(body["object"]["sha"].as_str().map(str::to_owned)),
            404 => Ok(None),
            _ => Err(GithubError::Api {
                status,
                message: message_of(&body),
            }),
        }
    }

    async fn read_tips(&self, t: &Target, intent: &Intent) -> Result<Tips, ScmError> {
        let head_sha = match t.pull {
            Some(number) => {
                let (status, body) = call(
                    &t.client,
                    "GET",
                    &format!("/repos/{}/pulls/{number}", t.repo),
                    None,
                )
                .await
                .map_err(unavailable)?;
                match (status, body["head"]["sha"].as_str()) {
                    (200, Some(sha)) => sha.to_owned(),
                    (404, _) => {
                        return Err(ScmError::UnknownRef(format!("pull request #{number}")));
                    }
                    _ => {
                        return Err(ScmError::Unavailable(format!(
                            "pull request #{number}: {}",
                            message_of(&body)
                        )));
                    }
                }
            }
            None => self
                .branch_tip(t, &intent.source)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| ScmError::UnknownRef(intent.source.clone()))?,
        };
        let target_sha = self
            .branch_tip(t, &intent.target)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ScmError::UnknownRef(intent.target.clone()))?;
        Ok(Tips {
            head_sha,
            target_sha,
        })
    }

    /// Points the scratch branch at `sha` (creating it if needed).
    async fn reset_scratch(&self, t: &Target, branch: &str, sha: &str) -> Result<(), GithubError> {
        let body = json!({"ref": format!("refs/heads/{branch}"), "sha": sha});
        let (status, answer) = call(
            &t.client,
            "POST",
            &format!("/repos/{}/git/refs", t.repo),
            Some(&body),
        )
        .await?;
        if status == 201 {
            return Ok(());
        }
        let body = json!({"sha": sha, "force": true});
        let (status, answer2) = call(
            &t.client,
            "PATCH",
            &format!("/repos/{}/git/refs/heads/{}", t.repo, in_path(branch)),
            Some(&body),
        )
        .await?;
        if status == 200 {
            Ok(())
        } else {
            Err(GithubError::Api {
                status,
                message: format!(
                    "scratch branch: {} / {}",
                    message_of(&answer),
                    message_of(&answer2)
                ),
            })
        }
    }

    async fn delete_scratch(&self, t: &Target, branch: &str) {
        // Best effort: a leftover scratch branch is reset before its next use.
        let _ = call(
            &t.client,
            "DELETE",
            &format!("/repos/{}/git/refs/heads/{}", t.repo, in_path(branch)),
            None,
        )
        .await;
    }

    /// Merges `head` into the scratch branch: `Ok(Some(commit))` when a merge commit was made,
    /// `Ok(None)` when the head is already contained, `Err(None)` on a conflict.
    async fn scratch_merge(
        &self,
        t: &Target,
        branch: &str,
        head: &str,
        message: &str,
    ) -> Result<Result<Option<String>, ()>, GithubError> {
        let body = json!({"base": branch, "head": head, "commit_message": message});
        let (status, answer) = call(
            &t.client,
            "POST",
            &format!("/repos/{}/merges", t.repo),
            Some(&body),
        )
        .await?;
        match status {
            201 => Ok(Ok(answer["sha"].as_str().map(str::to_owned))),
            204 => Ok(Ok(None)),
            409 => Ok(Err(())),
            _ => Err(GithubError::Api {
                status,
                message: message_of(&answer),
            }),
        }
    }

    /// Files changed between `base` and `head` since their merge base, and the merge base.
    async fn compare(
        &self,
        t: &Target,
        base: &str,
        head: &str,
    ) -> Result<(Vec<String>, String, String), GithubError> {
        let (status, body) = call(
            &t.client,
            "GET",
            &format!("/repos/{}/compare/{base}...{head}", t.repo),
            None,
        )
        .await?;
        if status != 200 {
            return Err(GithubError::Api {
                status,
                message: message_of(&body),
            });
        }
        let mut files: Vec<String> = body["files"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|f| f["filename"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.dedup();
        let merge_base = body["merge_base_commit"]["sha"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let state = body["status"].as_str().unwrap_or_default().to_owned();
        Ok((files, merge_base, state))
    }
}

fn unavailable(error: GithubError) -> ScmError {
    ScmError::Unavailable(error.to_string())
}

/// The number of the pull request an intent is (`None` for a branch's).
fn pull_number(intent: &Intent) -> Option<u64> {
    intent.technical.get("pr_number").and_then(Value::as_u64)
}

/// A branch name as it goes into an API path or query: what is not a letter, digit, `-`, `.`,
/// `_` or `/` is percent-encoded (a `#` or `?` in a name would otherwise end the path).
fn in_path(branch: &str) -> percent_encoding::PercentEncode<'_> {
    const KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    percent_encoding::utf8_percent_encode(branch, KEPT)
}

impl Scm for GithubPorts {
    /// The contents API at `commit` (`None` for 404).
    async fn read_file(
        &self,
        sample: &Intent,
        commit: &str,
        path: &str,
    ) -> Result<Option<String>, ScmError> {
        use base64::Engine;
        let t = self.target(sample).map_err(unavailable)?;
        let (status, body) = call(
            &t.client,
            "GET",
            &format!("/repos/{}/contents/{path}?ref={commit}", t.repo),
            None,
        )
        .await
        .map_err(unavailable)?;
        match status {
            200 => {
                let encoded: String = body["content"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| ScmError::Unavailable(format!("{path} does not decode: {e}")))?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            404 => Ok(None),
            _ => Err(ScmError::Unavailable(format!(
                "reading {path}: GitHub answered {status}: {}",
                message_of(&body)
            ))),
        }
    }

    async fn tips(&self, intent: &Intent) -> Result<Tips, ScmError> {
        let t = self.target(intent).map_err(unavailable)?;
        self.read_tips(&t, intent).await
    }

    /// A queue page's tips in a few calls instead of two an intent: the target's tip once, and
    /// the heads of the open pull requests into it from their list (100 a call, until every
    /// pull request of the page is found). An intent the list does not answer (its pull
    /// request closed, or a branch) is read on its own. A page of several repositories or
    /// targets, or a failed call, leaves each to be read on its own.
    async fn tips_of(&self, intents: &[Intent]) -> Option<Vec<Result<Tips, ScmError>>> {
        const PER_PAGE: usize = 100;
        /// Past this many open pull requests into one target, the rest are read one by one.
        const MOST_PAGES: usize = 10;
        let first = intents.first()?;
        if intents.len() < 2
            || intents
                .iter()
                .any(|i| i.repo() != first.repo() || i.target != first.target)
        {
            return None;
        }
        let t = self.target(first).ok()?;
        let target_sha = self.branch_tip(&t, &first.target).await.ok()??;
        let base = in_path(&first.target);
        let wanted: std::collections::HashSet<u64> =
            intents.iter().filter_map(pull_number).collect();
        let mut heads: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
        for page in 1..=MOST_PAGES {
            let route = format!(
                "/repos/{}/pulls?state=open&base={base}&per_page={PER_PAGE}&page={page}",
                t.repo
            );
            let (status, body) = call(&t.client, "GET", &route, None).await.ok()?;
            let listed = body.as_array().filter(|_| status == 200)?;
            for pull in listed {
                if let (Some(number), Some(sha)) =
                    (pull["number"].as_u64(), pull["head"]["sha"].as_str())
                {
                    heads.insert(number, sha.to_owned());
                }
            }
            // The last page, or every pull request the page asks about is answered.
            if listed.len() < PER_PAGE || wanted.iter().all(|n| heads.contains_key(n)) {
                break;
            }
        }
        let mut tips = Vec::with_capacity(intents.len());
        for intent in intents {
            let listed = pull_number(intent).and_then(|number| heads.get(&number));
            tips.push(match listed {
                Some(head_sha) => Ok(Tips {
                    head_sha: head_sha.clone(),
                    target_sha: target_sha.clone(),
                }),
                None => self.tips(intent).await,
            });
        }
        Some(tips)
    }

    async fn simulate(&self, intent: &Intent) -> Result<SimulatedMerge, ScmError> {
        let t = self.target(intent).map_err(unavailable)?;
        let tips = self.read_tips(&t, intent).await?;
        let branch = Self::scratch_branch(intent);
        self.reset_scratch(&t, &branch, &tips.target_sha)
            .await
            .map_err(unavailable)?;
        let merged = self
            .scratch_merge(
                &t,
                &branch,
                &tips.head_sha,
                &format!("Converge simulation of {}", intent.id),
            )
            .await;
        self.delete_scratch(&t, &branch).await;
        let merged = merged.map_err(unavailable)?;
        let (files_changed, merge_base, _) = self
            .compare(&t, &tips.target_sha, &tips.head_sha)
            .await
            .map_err(unavailable)?;
        let conflicts = match merged {
            Ok(_) => Vec::new(),
            Err(()) => {
                // GitHub names no files: report what both sides changed since the merge base.
                let (target_side, _, _) = self
                    .compare(&t, &merge_base, &tips.target_sha)
                    .await
                    .map_err(unavailable)?;
                let both: Vec<String> = files_changed
                    .iter()
                    .filter(|f| target_side.contains(f))
                    .cloned()
                    .collect();
                if both.is_empty() {
                    files_changed.clone()
                } else {
                    both
                }
            }
        };
        Ok(SimulatedMerge {
            simulation: Simulation {
                mergeable: conflicts.is_empty(),
                conflicts,
                files_changed,
            },
            head_sha: tips.head_sha,
            target_sha: tips.target_sha,
        })
    }

    /// Co-change history is not read from GitHub (one API call per commit); the risk engine
    /// then works from the change's own files.
    async fn co_changes(
        &self,
        _intent: &Intent,
        _files: &[String],
    ) -> Result<Vec<CouplingPair>, ScmError> {
        Ok(Vec::new())
    }
}

impl Checks for GithubPorts {
    /// The commit's check runs and statuses in the intent's repository: the same for every
    /// intent of it.
    fn answers_per_commit(&self, _sample: &Intent) -> bool {
        true
    }

    /// Re-requests every check suite of the commit that did not succeed (GitHub resets it and
    /// CI runs it again).
    async fn rerun(&self, intent: &Intent, commit: &str) -> Result<bool, ChecksError> {
        let t = self
            .target(intent)
            .map_err(|e| ChecksError(e.to_string()))?;
        let route = format!(
            "/repos/{}/commits/{commit}/check-suites?per_page=100",
            t.repo
        );
        let (status, suites) = call(&t.client, "GET", &route, None)
            .await
            .map_err(|e| ChecksError(e.to_string()))?;
        if status != 200 {
            return Err(ChecksError(format!(
                "check suites: GitHub answered {status}: {}",
                message_of(&suites)
            )));
        }
        let mut asked = false;
        for suite in suites["check_suites"].as_array().into_iter().flatten() {
            let failed = suite["status"].as_str() == Some("completed")
                && !matches!(
                    suite["conclusion"].as_str(),
                    Some("success" | "neutral" | "skipped")
                );
            let Some(id) = suite["id"].as_u64().filter(|_| failed) else {
                continue;
            };
            let route = format!("/repos/{}/check-suites/{id}/rerequest", t.repo);
            let (status, answer) = call(&t.client, "POST", &route, None)
                .await
                .map_err(|e| ChecksError(e.to_string()))?;
            if status != 201 {
                return Err(ChecksError(format!(
                    "re-requesting check suite {id}: GitHub answered {status}: {}",
                    message_of(&answer)
                )));
            }
            asked = true;
        }
        Ok(asked)
    }

    async fn outcomes(
        &self,
        intent: &Intent,
        head_sha: &str,
        required: &[String],
    ) -> Result<Vec<CheckOutcome>, ChecksError> {
        let t = self
            .target(intent)
            .map_err(|e| ChecksError(e.to_string()))?;
        let route = format!(
            "/repos/{}/commits/{head_sha}/check-runs?per_page=100",
            t.repo
        );
        let (status, runs) = call(&t.client, "GET", &route, None)
            .await
            .map_err(|e| ChecksError(e.to_string()))?;
        if status != 200 {
            return Err(ChecksError(format!(
                "check runs: GitHub answered {status}: {}",
                message_of(&runs)
            )));
        }
        let route = format!("/repos/{}/commits/{head_sha}/status", t.repo);
        let (status, statuses) = call(&t.client, "GET", &route, None)
            .await
            .map_err(|e| ChecksError(e.to_string()))?;
        if status != 200 {
            return Err(ChecksError(format!(
                "statuses: GitHub answered {status}: {}",
                message_of(&statuses)
            )));
        }
        let empty = Vec::new();
        let runs = runs["check_runs"].as_array().unwrap_or(&empty);
        let statuses = statuses["statuses"].as_array().unwrap_or(&empty);
        Ok(required
            .iter()
            .map(|name| {
                let github_name = self.app.settings().check_map.get(name).unwrap_or(name);
                let latest_run = runs
                    .iter()
                    .filter(|r| r["name"].as_str() == Some(github_name.as_str()))
                    .max_by_key(|r| r["id"].as_u64().unwrap_or(0));
                let (state, details) = if let Some(run) = latest_run {
                    let conclusion = run["conclusion"].as_str().unwrap_or_default();
                    let state = match (run["status"].as_str(), conclusion) {
                        (Some("completed"), "success" | "neutral" | "skipped") => {
                            CheckState::Passed
                        }
                        (Some("completed"), _) => CheckState::Failed,
                        _ => CheckState::Pending,
                    };
                    (state, format!("check run {github_name}: {conclusion}"))
                } else if let Some(status) = statuses
                    .iter()
                    .find(|s| s["context"].as_str() == Some(github_name.as_str()))
                {
                    let state = match status["state"].as_str() {
                        Some("success") => CheckState::Passed,
                        Some("pending") => CheckState::Pending,
                        _ => CheckState::Failed,
                    };
                    (
                        state,
                        format!(
                            "status {github_name}: {}",
                            status["state"].as_str().unwrap_or_default()
                        ),
                    )
                } else {
                    (
                        CheckState::Missing,
                        format!("{github_name} not reported on {head_sha}"),
                    )
                };
                CheckOutcome {
                    name: name.clone(),
                    state,
                    details,
                }
            })
            .collect())
    }
}

fn merge_unavailable(error: GithubError) -> MergeError {
    match error {
        GithubError::Api {
            status: 403 | 404,
            message,
        } => MergeError::Forbidden(message),
        other => MergeError::Unavailable(other.to_string()),
    }
}

impl Merger for GithubPorts {
    async fn landed(&self, intent: &Intent, head_sha: &str) -> Result<bool, MergeError> {
        let t = self.target(intent).map_err(merge_unavailable)?;
        let (_, _, state) = self
            .compare(&t, &intent.target, head_sha)
            .await
            .map_err(merge_unavailable)?;
        Ok(state == "behind" || state == "identical")
    }

    async fn merge(
        &self,
        intent: &Intent,
        validated: &SimulatedMerge,
        // Proof that the caller holds the key's lease: required, not read (see `MergePermit`).
        _permit: &MergePermit,
    ) -> Result<String, MergeError> {
        let t = self.target(intent).map_err(merge_unavailable)?;
        let tips = self
            .read_tips(&t, intent)
            .await
            .map_err(|e| MergeError::Unavailable(e.to_string()))?;
        if tips.target_sha != validated.target_sha {
            return Err(MergeError::TargetMoved {
                validated: validated.target_sha.clone(),
                current: tips.target_sha,
            });
        }
        if tips.head_sha != validated.head_sha {
            return Err(MergeError::HeadMoved {
                validated: validated.head_sha.clone(),
                current: tips.head_sha,
            });
        }
        let branch = Self::scratch_branch(intent);
        self.reset_scratch(&t, &branch, &validated.target_sha)
            .await
            .map_err(merge_unavailable)?;
        let message = format!(
            "Merge {} into {} (Converge intent {})",
            intent.source, intent.target, intent.id
        );
        let merged = self
            .scratch_merge(&t, &branch, &validated.head_sha, &message)
            .await;
        self.delete_scratch(&t, &branch).await;
        let commit = match merged.map_err(merge_unavailable)? {
            Ok(Some(commit)) => commit,
            // Already contained in the validated target: nothing to move.
            Ok(None) => return Ok(validated.target_sha.clone()),
            Err(()) => return Err(MergeError::Conflict(Vec::new())),
        };
        self.move_target(&t, &intent.target, &validated.target_sha, &commit)
            .await?;
        Ok(commit)
    }

    async fn target_tip(&self, sample: &Intent) -> Result<String, ScmError> {
        let t = self.target(sample).map_err(unavailable)?;
        self.branch_tip(&t, &sample.target)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ScmError::UnknownRef(sample.target.clone()))
    }

    /// The trial branch is set to `base` and each head merged into it with the merges API
    /// (merge commits only: GitHub has no API that squashes or replays without a work tree).
    async fn build_candidate(
        &self,
        sample: &Intent,
        base: &str,
        intents: &[(String, String)],
        method: MergeMethod,
        trial_ref: &str,
    ) -> Result<Build, ScmError> {
        if method != MergeMethod::Merge {
            return Err(ScmError::Unavailable(
                "tested candidates on GitHub are built with merge commits only (set \
                 CONVERGE_MERGE_METHOD=merge)"
                    .to_owned(),
            ));
        }
        let t = self.target(sample).map_err(unavailable)?;
        let branch = trial_ref.strip_prefix("refs/heads/").unwrap_or(trial_ref);
        self.reset_scratch(&t, branch, base)
            .await
            .map_err(unavailable)?;
        let mut tip = base.to_owned();
        for (intent, head) in intents {
            let message = format!("Merge Converge intent {intent}");
            match self
                .scratch_merge(&t, branch, head, &message)
                .await
                .map_err(unavailable)?
            {
                Ok(Some(commit)) => tip = commit,
                // Already contained in the candidate.
                Ok(None) => {}
                Err(()) => {
                    // GitHub names no conflicted files: those the head changed since its merge
                    // base with the candidate are reported.
                    let (files, _, _) = self.compare(&t, &tip, head).await.unwrap_or_default();
                    self.delete_scratch(&t, branch).await;
                    return Ok(Build::Conflict {
                        intent: intent.clone(),
                        files,
                    });
                }
            }
        }
        Ok(Build::Built(tip))
    }

    async fn fast_forward(
        &self,
        sample: &Intent,
        from: &str,
        to: &str,
        // Proof that the caller holds the key's lease: required, not read.
        _permit: &MergePermit,
    ) -> Result<(), MergeError> {
        let t = self.target(sample).map_err(merge_unavailable)?;
        let current = self
            .branch_tip(&t, &sample.target)
            .await
            .map_err(merge_unavailable)?
            .unwrap_or_default();
        if current != from {
            return Err(MergeError::TargetMoved {
                validated: from.to_owned(),
                current,
            });
        }
        self.move_target(&t, &sample.target, from, to).await
    }

    async fn drop_trial(&self, sample: &Intent, trial_ref: &str) -> Result<(), ScmError> {
        let t = self.target(sample).map_err(unavailable)?;
        let branch = trial_ref.strip_prefix("refs/heads/").unwrap_or(trial_ref);
        self.delete_scratch(&t, branch).await;
        Ok(())
    }
}

impl GithubPorts {
    /// Moves `target` to `commit` without force: GitHub refuses unless it is a fast-forward,
    /// which is reported as `TargetMoved` (from where the caller read it, `expected`).
    async fn move_target(
        &self,
        t: &Target,
        target: &str,
        expected: &str,
        commit: &str,
    ) -> Result<(), MergeError> {
        let body = json!({"sha": commit, "force": false});
        let route = format!("/repos/{}/git/refs/heads/{}", t.repo, in_path(target));
        let (status, answer) = call(&t.client, "PATCH", &route, Some(&body))
            .await
            .map_err(merge_unavailable)?;
        let text = message_of(&answer);
        match status {
            200 => Ok(()),
            422 if text.to_lowercase().contains("protected") => Err(MergeError::Protected(text)),
            422 => {
                let current = self
                    .branch_tip(t, target)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                Err(MergeError::TargetMoved {
                    validated: expected.to_owned(),
                    current,
                })
            }
            403 | 404 => Err(MergeError::Forbidden(text)),
            _ => Err(MergeError::Unavailable(format!(
                "GitHub answered {status}: {text}"
            ))),
        }
    }
}

impl Publisher for GithubPorts {
    /// One "Converge" check run per intent and head commit: found by its external id (the
    /// intent id) among the head's check runs and updated, or created the first time. With
    /// `CONVERGE_GITHUB_PUBLISH_STATUS=1` a commit status `converge` is set too.
    async fn publish(&self, intent: &Intent, report: &Report) -> Result<(), PublishError> {
        let failed = |e: GithubError| PublishError(e.to_string());
        let t = self.target(intent).map_err(failed)?;
        let route = format!(
            "/repos/{}/commits/{}/check-runs?check_name={CHECK_NAME}&per_page=100",
            t.repo, report.head_sha
        );
        let (status, runs) = call(&t.client, "GET", &route, None).await.map_err(failed)?;
        if status != 200 {
            return Err(PublishError(format!(
                "listing check runs: GitHub answered {status}: {}",
                message_of(&runs)
            )));
        }
        let existing = runs["check_runs"].as_array().and_then(|list| {
            list.iter()
                .filter(|r| {
                    r["name"].as_str() == Some(CHECK_NAME)
                        && r["external_id"].as_str() == Some(intent.id.as_str())
                })
                .filter_map(|r| r["id"].as_u64())
                .min()
        });
        let (run_status, conclusion, state) = match report.state {
            ReportState::InProgress => ("in_progress", None, "pending"),
            ReportState::Success => ("completed", Some("success"), "success"),
            ReportState::Failure => ("completed", Some("failure"), "failure"),
        };
        let title: String = report.title.chars().take(200).collect();
        let mut body = json!({
            "status": run_status,
            "external_id": intent.id,
            "output": {"title": title, "summary": report.summary},
        });
        if let Some(conclusion) = conclusion {
            body["conclusion"] = json!(conclusion);
        }
        let (status, answer) = match existing {
            Some(id) => {
                call(
                    &t.client,
                    "PATCH",
                    &format!("/repos/{}/check-runs/{id}", t.repo),
                    Some(&body),
                )
                .await
            }
            None => {
                body["name"] = json!(CHECK_NAME);
                body["head_sha"] = json!(report.head_sha);
                call(
                    &t.client,
                    "POST",
                    &format!("/repos/{}/check-runs", t.repo),
                    Some(&body),
                )
                .await
            }
        }
        .map_err(failed)?;
        if !(200..300).contains(&status) {
            return Err(PublishError(format!(
                "check run: GitHub answered {status}: {}",
                message_of(&answer)
            )));
        }
        if self.app.settings().publish_status {
            let description: String = report.title.chars().take(140).collect();
            let body = json!({"state": state, "context": "converge", "description": description});
            let route = format!("/repos/{}/statuses/{}", t.repo, report.head_sha);
            let (status, answer) = call(&t.client, "POST", &route, Some(&body))
                .await
                .map_err(failed)?;
            if !(200..300).contains(&status) {
                return Err(PublishError(format!(
                    "commit status: GitHub answered {status}: {}",
                    message_of(&answer)
                )));
            }
        }
        Ok(())
    }
}
