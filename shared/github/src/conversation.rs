//! Talking with people on a pull request: whether a commenter may give commands (write
//! permission on the repository, as GitHub says), a reaction on their comment, a reply.

use serde_json::json;

use crate::app::{GithubApp, GithubError, call, message_of};

/// Permissions that may give commands.
const WRITERS: [&str; 3] = ["admin", "maintain", "write"];

fn client(
    app: &GithubApp,
    installation: Option<u64>,
    repo: &str,
) -> Result<std::sync::Arc<octocrab::Octocrab>, GithubError> {
    let id = installation
        .or(app.settings().default_installation)
        .ok_or_else(|| {
            GithubError::Config(format!(
                "a comment on {repo} came with no installation and CONVERGE_GITHUB_INSTALLATION_ID is not set"
            ))
        })?;
    app.installation(id)
}

/// Whether `user` may write to `repo` (admin, maintain or write); a user GitHub does not
/// know there may not.
pub async fn may_write(
    app: &GithubApp,
    installation: Option<u64>,
    repo: &str,
    user: &str,
) -> Result<bool, GithubError> {
    let client = client(app, installation, repo)?;
    let (status, body) = call(
        &client,
        "GET",
        &format!("/repos/{repo}/collaborators/{user}/permission"),
        None,
    )
    .await?;
    match status {
        200 => Ok(body["permission"]
            .as_str()
            .is_some_and(|p| WRITERS.contains(&p))),
        404 => Ok(false),
        _ => Err(GithubError::Api {
            status,
            message: message_of(&body),
        }),
    }
}

/// Reacts to a comment (`+1`, `-1`, `confused`, …).
pub async fn react(
    app: &GithubApp,
    installation: Option<u64>,
    repo: &str,
    comment_id: u64,
    content: &str,
) -> Result<(), GithubError> {
    let client = client(app, installation, repo)?;
    let (status, body) = call(
        &client,
        "POST",
        &format!("/repos/{repo}/issues/comments/{comment_id}/reactions"),
        Some(&json!({"content": content})),
    )
    .await?;
    if matches!(status, 200 | 201) {
        Ok(())
    } else {
        Err(GithubError::Api {
            status,
            message: message_of(&body),
        })
    }
}

/// Replies on the pull request's conversation.
pub async fn reply(
    app: &GithubApp,
    installation: Option<u64>,
    repo: &str,
    number: u64,
    text: &str,
) -> Result<(), GithubError> {
    let client = client(app, installation, repo)?;
    let (status, body) = call(
        &client,
        "POST",
        &format!("/repos/{repo}/issues/{number}/comments"),
        Some(&json!({"body": text})),
    )
    .await?;
    if status == 201 {
        Ok(())
    } else {
        Err(GithubError::Api {
            status,
            message: message_of(&body),
        })
    }
}
