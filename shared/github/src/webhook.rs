//! Webhook payloads, typed (only the fields Converge uses; unknown fields are ignored), and
//! their translation into what they mean for the queue.
//!
//! | event | action | meaning |
//! |---|---|---|
//! | `pull_request` | `opened`, `synchronize`, `reopened`, `ready_for_review`, `converted_to_draft`, `edited` | the change as it stands ([`Change::Proposed`]): created, or re-created on a new head |
//! | `pull_request` | `closed` | merged → MERGED with the merge commit, else REJECTED |
//! | `pull_request` | `labeled`, `unlabeled` | the priority its labels ask for (`converge/priority-N`) |
//! | `pull_request_review` | `submitted`, `dismissed` | the review, counted per reviewer (approvals, changes requested) |
//! | `push` | branch pushes | the branch's new head ([`Translation::Pushed`]): READY and VALIDATED intents of that branch are revalidated at it, and the repository's queues woken (a target moved, or a source got a head); a deleted branch only wakes them |
//! | `check_suite`, `check_run` | `completed` | recorded on the intents whose head it is, which are judged again; on a commit no intent's head, wakes the queues whose tested candidate it is |
//! | `issue_comment` | `created` | an `@converge` command on a pull request ([`Translation::Command`]) |
//! | `merge_group` | `checks_requested`, `destroyed` | an intent for the group; or its rejection |
//! | `installation`, `installation_repositories` | any | recorded as `github.installation_changed` |
//! | `ping` | | acknowledged |
//!
//! Anything else is acknowledged as ignored.

use chrono::{DateTime, Utc};
use converge_core::intake::{Change, priority_from_labels};
use converge_core::{EventType, Intent};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// What a delivery means.
#[derive(Debug, Clone, PartialEq)]
pub enum Translation {
    /// A change to one intent (boxed: an intent is large beside the other variants).
    Change(Box<Change>),
    /// Work may be waiting in this repository's queues (a branch deleted).
    Wake {
        /// `owner/name`.
        repo: String,
    },
    /// A branch of this repository was pushed: the intents validated on it are stale, and
    /// work may be waiting in the repository's queues (its target may have moved).
    Pushed {
        /// `owner/name`.
        repo: String,
        /// The branch (the ref without `refs/heads/`).
        branch: String,
        /// Its new head.
        head: String,
    },
    /// CI finished a check run or suite on a commit: the intents whose head it is are judged
    /// again (and the result is recorded on them).
    ChecksCompleted {
        /// `owner/name`.
        repo: String,
        /// The commit.
        head_sha: String,
        /// The check run's name (the suite's app name for a suite).
        name: String,
        /// GitHub's conclusion (`success`, `failure`, …).
        conclusion: String,
    },
    /// A command in a pull request comment (`@converge …`): carried out if its author may
    /// write to the repository.
    Command {
        /// `owner/name`.
        repo: String,
        /// The App installation that delivered it.
        installation: Option<u64>,
        /// The pull request's intent.
        intent_id: String,
        /// The pull request's number.
        number: u64,
        /// The comment (reactions answer on it).
        comment_id: u64,
        /// Who wrote it.
        author: String,
        /// The command, or what is wrong with it.
        command: Result<converge_core::comment_command::Command, String>,
    },
    /// A fact to record as an event, with no effect on intents.
    Record {
        /// The event type.
        event_type: EventType,
        /// Its payload.
        payload: Value,
    },
    /// Acknowledged, nothing to do.
    Ignored {
        /// Why.
        reason: String,
    },
}

/// A delivery's payload does not have the shape its event promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} payload: {detail}")]
pub struct PayloadError {
    /// `X-GitHub-Event`.
    pub event: String,
    /// Where and what (`pull_request.head.sha: missing field`).
    pub detail: String,
}

/// What the translation needs besides the payload.
#[derive(Debug, Clone, Copy)]
pub struct IntakeContext<'a> {
    /// Tenant of the intents created from deliveries (`CONVERGE_GITHUB_DEFAULT_TENANT`).
    pub tenant: Option<&'a str>,
    /// Now (the birth of new intents).
    pub now: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    full_name: String,
}

/// The prefix of the branches Converge itself writes (`converge/sim/…`, `converge/trial/…`).
const SCRATCH_BRANCHES: &str = "converge/";

#[derive(Debug, Deserialize)]
struct Installation {
    id: u64,
    #[serde(default)]
    account: Option<Account>,
}

#[derive(Debug, Deserialize)]
struct Account {
    login: String,
}

#[derive(Debug, Deserialize)]
struct GitRef {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
    /// The repository the branch lives in (a fork's for a pull request from a fork; absent
    /// when the fork was deleted).
    #[serde(default)]
    repo: Option<Repository>,
}

#[derive(Debug, Deserialize)]
struct Label {
    name: String,
}

#[derive(Debug, Deserialize)]
struct PullRequest {
    number: u64,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    merged: bool,
    #[serde(default)]
    merge_commit_sha: Option<String>,
    head: GitRef,
    base: GitRef,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Debug, Deserialize)]
struct PullRequestEvent {
    action: String,
    pull_request: PullRequest,
    repository: Repository,
    #[serde(default)]
    installation: Option<Installation>,
}

#[derive(Debug, Deserialize)]
struct IssueCommentEvent {
    action: String,
    issue: CommentedIssue,
    comment: Comment,
    repository: Repository,
    #[serde(default)]
    installation: Option<Installation>,
}

#[derive(Debug, Deserialize)]
struct CommentedIssue {
    number: u64,
    /// Present when the issue is a pull request.
    #[serde(default)]
    pull_request: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Comment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    user: ReviewUser,
}

#[derive(Debug, Deserialize)]
struct ReviewUser {
    login: String,
}

#[derive(Debug, Deserialize)]
struct Review {
    id: u64,
    user: ReviewUser,
    state: String,
    #[serde(default)]
    submitted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    commit_id: Option<String>,
    #[serde(default)]
    author_association: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReviewedPullRequest {
    number: u64,
}

#[derive(Debug, Deserialize)]
struct PullRequestReviewEvent {
    action: String,
    review: Review,
    pull_request: ReviewedPullRequest,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    name: String,
    /// The ref's new commit (zeros when the ref was deleted).
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct CheckRunEvent {
    action: String,
    check_run: CheckResult,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct CheckSuiteEvent {
    action: String,
    check_suite: CheckResult,
    repository: Repository,
}

/// The part of a check run or check suite that matters: the commit and the outcome.
#[derive(Debug, Deserialize)]
struct CheckResult {
    head_sha: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    app: Option<CheckApp>,
}

#[derive(Debug, Deserialize)]
struct CheckApp {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MergeGroup {
    head_sha: String,
    head_ref: String,
    base_ref: String,
}

#[derive(Debug, Deserialize)]
struct MergeGroupEvent {
    action: String,
    merge_group: MergeGroup,
    repository: Repository,
    #[serde(default)]
    installation: Option<Installation>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InstallationEvent {
    action: String,
    installation: Installation,
    #[serde(default)]
    repositories: Vec<Repository>,
    #[serde(default)]
    repositories_added: Vec<Repository>,
    #[serde(default)]
    repositories_removed: Vec<Repository>,
}

#[derive(Debug, Deserialize)]
struct ActionOnly {
    #[serde(default)]
    action: Option<String>,
}

/// The `action` of a payload, if it has one (for the log and the response).
pub fn action_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ActionOnly>(body)
        .ok()
        .and_then(|a| a.action)
}

fn parse<T: DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, PayloadError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        PayloadError {
            event: event.to_owned(),
            detail,
        }
    })
}

/// Translates a delivery of `event` with raw JSON `body`.
pub fn translate(
    event: &str,
    body: &[u8],
    context: IntakeContext<'_>,
) -> Result<Translation, PayloadError> {
    let ignored = |reason: String| Ok(Translation::Ignored { reason });
    match event {
        "pull_request" => {
            let delivery: PullRequestEvent = parse(event, body)?;
            pull_request(delivery, context)
        }
        "pull_request_review" => {
            let delivery: PullRequestReviewEvent = parse(event, body)?;
            pull_request_review(delivery, context)
        }
        "issue_comment" => {
            let delivery: IssueCommentEvent = parse(event, body)?;
            if delivery.action != "created" {
                return ignored(format!("issue_comment {} is no command", delivery.action));
            }
            if delivery.issue.pull_request.is_none() {
                return ignored("a comment on an issue, not a pull request".to_owned());
            }
            let Some(command) = converge_core::comment_command::parse(
                delivery.comment.body.as_deref().unwrap_or(""),
            ) else {
                return ignored("the comment does not speak to @converge".to_owned());
            };
            let repo = delivery.repository.full_name;
            Ok(Translation::Command {
                intent_id: format!("{repo}:pr-{}", delivery.issue.number),
                repo,
                installation: delivery.installation.map(|i| i.id),
                number: delivery.issue.number,
                comment_id: delivery.comment.id,
                author: delivery.comment.user.login,
                command,
            })
        }
        "push" => {
            let delivery: PushEvent = parse(event, body)?;
            let Some(branch) = delivery.name.strip_prefix("refs/heads/") else {
                return ignored(format!("not a branch push ({})", delivery.name));
            };
            // Converge's own scratch branches (simulations, trial merges) are no intent's
            // source; a deleted branch has no head.
            if delivery.deleted || branch.starts_with(SCRATCH_BRANCHES) {
                return Ok(Translation::Wake {
                    repo: delivery.repository.full_name,
                });
            }
            Ok(Translation::Pushed {
                branch: branch.to_owned(),
                head: delivery.after,
                repo: delivery.repository.full_name,
            })
        }
        "check_run" | "check_suite" => {
            let (action, result, repository) = if event == "check_run" {
                let d: CheckRunEvent = parse(event, body)?;
                (d.action, d.check_run, d.repository)
            } else {
                let d: CheckSuiteEvent = parse(event, body)?;
                (d.action, d.check_suite, d.repository)
            };
            if action != "completed" {
                return ignored(format!("{event} {action} is not a result"));
            }
            let name = result
                .name
                .or_else(|| result.app.and_then(|a| a.name))
                .unwrap_or_else(|| event.to_owned());
            Ok(Translation::ChecksCompleted {
                repo: repository.full_name,
                head_sha: result.head_sha,
                name,
                conclusion: result.conclusion.unwrap_or_default(),
            })
        }
        "merge_group" => {
            let delivery: MergeGroupEvent = parse(event, body)?;
            merge_group(delivery, context)
        }
        "installation" | "installation_repositories" => {
            let delivery: InstallationEvent = parse(event, body)?;
            let names = |repos: &[Repository]| -> Vec<String> {
                repos.iter().map(|r| r.full_name.clone()).collect()
            };
            Ok(Translation::Record {
                event_type: EventType::GithubInstallationChanged,
                payload: json!({
                    "event": event,
                    "action": delivery.action,
                    "installation_id": delivery.installation.id,
                    "account": delivery.installation.account.map(|a| a.login),
                    "repositories": names(&delivery.repositories),
                    "repositories_added": names(&delivery.repositories_added),
                    "repositories_removed": names(&delivery.repositories_removed),
                }),
            })
        }
        "ping" => ignored("ping".to_owned()),
        other => ignored(other.to_owned()),
    }
}

/// A review submitted or dismissed: the reviewer's verdict, as GitHub states it.
fn pull_request_review(
    delivery: PullRequestReviewEvent,
    context: IntakeContext<'_>,
) -> Result<Translation, PayloadError> {
    use converge_core::approvals::{HostReview, HostReviewState};
    let review = &delivery.review;
    let state = match (
        delivery.action.as_str(),
        review.state.to_ascii_lowercase().as_str(),
    ) {
        ("dismissed", _) | (_, "dismissed") => HostReviewState::Dismissed,
        ("submitted", "approved") => HostReviewState::Approved,
        ("submitted", "changes_requested") => HostReviewState::ChangesRequested,
        ("submitted", "commented") => HostReviewState::Commented,
        (action, state) => {
            return Ok(Translation::Ignored {
                reason: format!("pull_request_review {action} ({state}) changes no verdict"),
            });
        }
    };
    let intent_id = format!(
        "{}:pr-{}",
        delivery.repository.full_name, delivery.pull_request.number
    );
    changed(Change::Reviewed {
        intent_id,
        review: HostReview {
            reviewer: review.user.login.clone(),
            state,
            review_id: review.id,
            submitted_at: review.submitted_at.unwrap_or(context.now),
            commit_id: review.commit_id.clone(),
            association: review.author_association.clone(),
        },
    })
}

/// A translation into a change of one intent.
fn changed(change: Change) -> Result<Translation, PayloadError> {
    Ok(Translation::Change(Box::new(change)))
}

fn pull_request(
    delivery: PullRequestEvent,
    context: IntakeContext<'_>,
) -> Result<Translation, PayloadError> {
    let pr = &delivery.pull_request;
    let repo = delivery.repository.full_name.as_str();
    let intent_id = format!("{repo}:pr-{}", pr.number);
    let action = delivery.action.as_str();
    match action {
        "opened" | "synchronize" | "reopened" | "ready_for_review" | "converted_to_draft"
        | "edited" => {
            let mut intent = Intent::new(&intent_id, &pr.head.name, &pr.base.name, context.now);
            intent.created_by = "github-webhook".to_owned();
            intent.origin_type = "integration".to_owned();
            intent.tenant_id = context.tenant.map(str::to_owned);
            intent.priority = priority_from_labels(pr.labels.iter().map(|l| l.name.as_str()));
            let title = pr.title.clone().unwrap_or_default();
            intent
                .semantic
                .insert("problem_statement".into(), json!(title));
            intent.semantic.insert("objective".into(), json!(title));
            let technical = [
                ("source_ref", json!(pr.head.name)),
                ("target_ref", json!(pr.base.name)),
                ("initial_base_commit", json!(pr.head.sha)),
                ("base_sha", json!(pr.base.sha)),
                ("repo", json!(repo)),
                // Where the source branch lives: a push there moves the head
                // (`intake::revalidation_after_push`).
                (
                    "head_repo",
                    json!(pr.head.repo.as_ref().map(|r| r.full_name.as_str())),
                ),
                ("pr_number", json!(pr.number)),
                (
                    "installation_id",
                    json!(delivery.installation.as_ref().map(|i| i.id)),
                ),
                ("draft", json!(pr.draft)),
            ];
            for (key, value) in technical {
                intent.technical.insert(key.into(), value);
            }
            changed(Change::Proposed {
                intent,
                trigger: format!("pull_request.{action}"),
            })
        }
        "closed" => changed(Change::Closed {
            intent_id,
            merged: pr.merged,
            merge_commit: pr.merge_commit_sha.clone().filter(|_| pr.merged),
            // The original's name for what closed it.
            trigger: "github_pr_closed".to_owned(),
        }),
        "labeled" | "unlabeled" => changed(Change::Prioritised {
            intent_id,
            priority: priority_from_labels(pr.labels.iter().map(|l| l.name.as_str())),
        }),
        other => Ok(Translation::Ignored {
            reason: format!("pull_request {other}"),
        }),
    }
}

fn merge_group(
    delivery: MergeGroupEvent,
    context: IntakeContext<'_>,
) -> Result<Translation, PayloadError> {
    let group = &delivery.merge_group;
    let repo = delivery.repository.full_name.as_str();
    let sha12: String = group.head_sha.chars().take(12).collect();
    let intent_id = format!("{repo}:mg-{sha12}");
    let branch = |r: &str| r.strip_prefix("refs/heads/").unwrap_or(r).to_owned();
    match delivery.action.as_str() {
        "checks_requested" => {
            let mut intent = Intent::new(
                &intent_id,
                branch(&group.head_ref),
                branch(&group.base_ref),
                context.now,
            );
            intent.created_by = "github-merge-queue".to_owned();
            intent.origin_type = "integration".to_owned();
            intent.tenant_id = context.tenant.map(str::to_owned);
            intent
                .semantic
                .insert("problem_statement".into(), json!("Merge queue candidate"));
            intent.semantic.insert(
                "objective".into(),
                json!("Validate merge group before integration"),
            );
            let technical = [
                ("source_ref", json!(branch(&group.head_ref))),
                ("target_ref", json!(branch(&group.base_ref))),
                ("initial_base_commit", json!(group.head_sha)),
                ("repo", json!(repo)),
                ("merge_group_head_ref", json!(group.head_ref)),
                (
                    "installation_id",
                    json!(delivery.installation.as_ref().map(|i| i.id)),
                ),
                ("webhook_event", json!("merge_group")),
            ];
            for (key, value) in technical {
                intent.technical.insert(key.into(), value);
            }
            changed(Change::MergeGroupRequested { intent })
        }
        "destroyed" => changed(Change::MergeGroupDestroyed {
            intent_id,
            reason: delivery.reason.unwrap_or_else(|| "destroyed".to_owned()),
        }),
        other => Ok(Translation::Ignored {
            reason: format!("merge_group {other}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> IntakeContext<'static> {
        IntakeContext {
            tenant: Some("acme"),
            now: DateTime::default(),
        }
    }

    fn pr_body(action: &str, labels: &[&str]) -> Vec<u8> {
        let labels: Vec<Value> = labels
            .iter()
            .map(|l| json!({"name": l, "color": "fff"}))
            .collect();
        serde_json::to_vec(&json!({
            "action": action,
            "number": 7,
            "pull_request": {
                "number": 7, "title": "Fix login", "draft": false, "merged": false,
                "head": {"ref": "fix-login", "sha": "aaa", "label": "x"},
                "base": {"ref": "main", "sha": "bbb"},
                "labels": labels, "unknown_field": {"nested": true}
            },
            "repository": {"full_name": "acme/app", "id": 1},
            "installation": {"id": 42}
        }))
        .unwrap_or_default()
    }

    #[test]
    fn an_opened_pull_request_proposes_its_intent() {
        let translated = translate(
            "pull_request",
            &pr_body("opened", &["converge/priority-1"]),
            context(),
        );
        let Ok(Translation::Change(change)) = translated else {
            panic!("{translated:?}");
        };
        let Change::Proposed { intent, trigger } = *change else {
            panic!("not a proposal");
        };
        assert_eq!(intent.id, "acme/app:pr-7");
        assert_eq!(
            (intent.source.as_str(), intent.target.as_str()),
            ("fix-login", "main")
        );
        assert_eq!(intent.head_sha(), Some("aaa"));
        assert_eq!(intent.tenant_id.as_deref(), Some("acme"));
        assert_eq!(intent.priority, 1);
        assert_eq!(intent.technical["installation_id"], json!(42));
        assert_eq!(trigger, "pull_request.opened");
    }

    #[test]
    fn a_malformed_payload_names_the_field() {
        let body = br#"{"action":"opened","pull_request":{"number":7,"head":{"ref":"x"},"base":{"ref":"main","sha":"b"}},"repository":{"full_name":"a/b"}}"#;
        let error = translate("pull_request", body, context()).err();
        let detail = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            detail.contains("pull_request.head") && detail.contains("sha"),
            "{detail}"
        );
        let not_json = translate("push", b"{", context()).err();
        assert!(not_json.is_some());
    }

    #[test]
    fn pushes_and_check_results_wake_the_repository() {
        let push = br#"{"ref":"refs/heads/feature/x","after":"abc","repository":{"full_name":"acme/app"}}"#;
        assert_eq!(
            translate("push", push, context()),
            Ok(Translation::Pushed {
                repo: "acme/app".into(),
                branch: "feature/x".into(),
                head: "abc".into(),
            })
        );
        let deleted = br#"{"ref":"refs/heads/feature/x","after":"0000000000000000000000000000000000000000","deleted":true,"repository":{"full_name":"acme/app"}}"#;
        assert_eq!(
            translate("push", deleted, context()),
            Ok(Translation::Wake {
                repo: "acme/app".into()
            })
        );
        let scratch = br#"{"ref":"refs/heads/converge/trial/t/acme/app/main/3","after":"abc","repository":{"full_name":"acme/app"}}"#;
        assert_eq!(
            translate("push", scratch, context()),
            Ok(Translation::Wake {
                repo: "acme/app".into()
            })
        );
        let tag = br#"{"ref":"refs/tags/v1","after":"abc","repository":{"full_name":"acme/app"}}"#;
        assert!(matches!(
            translate("push", tag, context()),
            Ok(Translation::Ignored { .. })
        ));
        let requested = br#"{"action":"requested","check_suite":{"head_sha":"abc"},"repository":{"full_name":"acme/app"}}"#;
        assert!(matches!(
            translate("check_suite", requested, context()),
            Ok(Translation::Ignored { .. })
        ));
        let completed = br#"{"action":"completed","check_run":{"head_sha":"abc","name":"ci/lint","conclusion":"success"},"repository":{"full_name":"acme/app"}}"#;
        assert_eq!(
            translate("check_run", completed, context()),
            Ok(Translation::ChecksCompleted {
                repo: "acme/app".into(),
                head_sha: "abc".into(),
                name: "ci/lint".into(),
                conclusion: "success".into()
            })
        );
    }

    #[test]
    fn labels_and_unknown_events() {
        let labeled = translate(
            "pull_request",
            &pr_body("labeled", &["converge/priority-0"]),
            context(),
        );
        assert_eq!(
            labeled,
            changed(Change::Prioritised {
                intent_id: "acme/app:pr-7".into(),
                priority: 0
            })
        );
        assert_eq!(
            translate("star", b"{}", context()),
            Ok(Translation::Ignored {
                reason: "star".into()
            })
        );
    }

    #[test]
    fn a_pull_request_review_becomes_the_reviewers_verdict() {
        use converge_core::approvals::HostReviewState;
        let body = |action: &str, state: &str| {
            format!(
                r#"{{"action":"{action}","review":{{"id":42,"user":{{"login":"ana"}},"state":"{state}","submitted_at":"2026-12-04T10:00:00Z","commit_id":"abc","author_association":"MEMBER"}},"pull_request":{{"number":7}},"repository":{{"full_name":"acme/app"}}}}"#
            )
        };
        for (action, state, expected) in [
            ("submitted", "approved", HostReviewState::Approved),
            ("submitted", "APPROVED", HostReviewState::Approved),
            (
                "submitted",
                "changes_requested",
                HostReviewState::ChangesRequested,
            ),
            ("submitted", "commented", HostReviewState::Commented),
            ("dismissed", "dismissed", HostReviewState::Dismissed),
        ] {
            let Ok(Translation::Change(change)) = translate(
                "pull_request_review",
                body(action, state).as_bytes(),
                context(),
            ) else {
                panic!("{action} {state}: not a change");
            };
            let Change::Reviewed { intent_id, review } = *change else {
                panic!("{action} {state}: not a review");
            };
            assert_eq!(intent_id, "acme/app:pr-7");
            assert_eq!(
                (review.reviewer.as_str(), review.state, review.review_id),
                ("ana", expected, 42)
            );
            assert_eq!(review.commit_id.as_deref(), Some("abc"));
            assert_eq!(review.association.as_deref(), Some("MEMBER"));
        }
        assert!(matches!(
            translate(
                "pull_request_review",
                body("edited", "approved").as_bytes(),
                context()
            ),
            Ok(Translation::Ignored { .. })
        ));
        assert!(
            translate(
                "pull_request_review",
                br#"{"action":"submitted"}"#,
                context()
            )
            .is_err()
        );
    }

    #[test]
    fn a_merge_group_becomes_its_own_intent() {
        let body = br#"{"action":"checks_requested","merge_group":{"head_sha":"0123456789abcdef","head_ref":"refs/heads/gh-readonly-queue/main/pr-7-aaa","base_ref":"refs/heads/main"},"repository":{"full_name":"acme/app"}}"#;
        let Ok(Translation::Change(change)) = translate("merge_group", body, context()) else {
            panic!("not a change");
        };
        let Change::MergeGroupRequested { intent } = *change else {
            panic!("not a merge group");
        };
        assert_eq!(intent.id, "acme/app:mg-0123456789ab");
        assert_eq!(intent.target, "main");
        assert_eq!(intent.source, "gh-readonly-queue/main/pr-7-aaa");
    }
}

#[cfg(test)]
mod manifest {
    use super::*;

    /// Events `translate` acts on (everything else is acknowledged as ignored).
    const HANDLED: [&str; 7] = [
        "pull_request",
        "pull_request_review",
        "issue_comment",
        "push",
        "check_suite",
        "check_run",
        "merge_group",
    ];

    #[test]
    fn the_app_manifest_subscribes_to_exactly_the_events_handled() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/github-app.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let manifest: Value = serde_json::from_str(&text).unwrap();
        let mut events: Vec<&str> = manifest["default_events"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        events.sort_unstable();
        let mut handled = HANDLED.to_vec();
        handled.sort_unstable();
        assert_eq!(events, handled);
        for event in HANDLED {
            let translated = translate(
                event,
                b"{}",
                IntakeContext {
                    tenant: None,
                    now: DateTime::default(),
                },
            );
            assert!(
                !matches!(&translated, Ok(Translation::Ignored { reason }) if reason == event),
                "{event} is subscribed but not handled"
            );
        }
        let permissions = &manifest["default_permissions"];
        assert_eq!(
            permissions["contents"], "write",
            "merges move the target ref"
        );
        assert_eq!(permissions["checks"], "write");
        assert_eq!(
            permissions["pull_requests"], "read",
            "Converge never writes pull requests"
        );
        assert_eq!(
            permissions["issues"], "write",
            "an @converge command is answered with a reaction and a reply on the conversation"
        );
        assert_eq!(permissions.as_object().map(|p| p.len()), Some(7));
    }
}
