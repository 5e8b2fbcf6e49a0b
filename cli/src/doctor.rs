//! `converge doctor`: checks a deployment from the operator's environment — the API, the
//! database and its migrations, stale leases, the SQS queue and its DLQ, the GitHub App's
//! credentials and the webhook secret. Each check passes, warns or fails with a one-line hint;
//! any failure exits 3.

use serde::Serialize;
use serde_json::json;

use crate::client::{ApiClient, CliError};
use crate::output::Output;

/// One check's result.
#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    status: &'static str,
    detail: String,
    hint: String,
}

impl Check {
    fn pass(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            check,
            status: "pass",
            detail: detail.into(),
            hint: String::new(),
        }
    }

    fn warn(check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            check,
            status: "warn",
            detail: detail.into(),
            hint: hint.into(),
        }
    }

    fn fail(check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            check,
            status: "fail",
            detail: detail.into(),
            hint: hint.into(),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Runs every check and prints them.
pub async fn run(
    api: Result<ApiClient, CliError>,
    out: Output,
    local: bool,
) -> Result<(), CliError> {
    let mut checks = vec![api_check(api, local).await];
    checks.extend(database_checks().await);
    checks.extend(queue_checks().await);
    checks.push(github_check().await);
    checks.push(webhook_secret_check().await);
    let overall = if checks.iter().any(|c| c.status == "fail") {
        "fail"
    } else if checks.iter().any(|c| c.status == "warn") {
        "warn"
    } else {
        "pass"
    };
    let report = json!({"overall": overall, "checks": checks});
    out.emit(&report, |o| {
        let rows: Vec<serde_json::Value> = report["checks"].as_array().cloned().unwrap_or_default();
        let mut text = o.table(
            &rows,
            &[
                ("check", "/check"),
                ("status", "/status"),
                ("detail", "/detail"),
                ("hint", "/hint"),
            ],
        );
        text.push_str(&format!("\n{} {overall}", o.bold("overall:")));
        text
    })?;
    if overall == "fail" {
        return Err(CliError::CheckFailed("a doctor check failed".to_owned()));
    }
    Ok(())
}

async fn api_check(api: Result<ApiClient, CliError>, local: bool) -> Check {
    let api = match api {
        Ok(api) => api,
        Err(e) if local => {
            return Check::fail(
                "api",
                format!("the API cannot start in this process: {e}"),
                "see the database check below",
            );
        }
        Err(e) => {
            return Check::fail(
                "api",
                e.to_string(),
                "fix --api-url / CONVERGE_API_URL and CONVERGE_API_KEY",
            );
        }
    };
    if local {
        return Check::pass("api", "--local: the API runs in this process");
    }
    match api.get_raw("/health/ready").await {
        Ok(answer) => Check::pass(
            "api",
            format!(
                "{} ready ({})",
                api.base(),
                answer["status"].as_str().unwrap_or("ok")
            ),
        ),
        Err(e) => Check::fail(
            "api",
            e.to_string(),
            "start it (converge serve) or fix --api-url / CONVERGE_API_URL",
        ),
    }
}

/// The database of this environment (CONVERGE_DB_*), when one is configured here.
async fn database_checks() -> Vec<Check> {
    let configured = [
        "CONVERGE_DB_BACKEND",
        "CONVERGE_PG_DSN",
        "CONVERGE_PG_DSN_SECRET_ARN",
        "CONVERGE_DB_PATH",
    ]
    .iter()
    .any(|name| env(name).is_some());
    if !configured {
        return vec![Check::warn(
            "database",
            "no database configured here (CONVERGE_DB_BACKEND, CONVERGE_PG_DSN, CONVERGE_DB_PATH)",
            "set them to check the database and its leases directly",
        )];
    }
    // The DSN may be kept in Secrets Manager, as the functions read it; a SQLite file that is
    // not there is reported, not created.
    let opened = converge_runtime::services::store_from_env(true)
        .await
        .map_err(|e| e.detail());
    let store = match opened {
        Ok(store) => store,
        Err(e) => {
            return vec![Check::fail(
                "database",
                e.to_string(),
                "check CONVERGE_DB_BACKEND and CONVERGE_PG_DSN / CONVERGE_DB_PATH",
            )];
        }
    };
    let backend = format!("{:?}", store.backend()).to_lowercase();
    let database = match store.is_migrated().await {
        Ok(true) => Check::pass("database", format!("{backend}: reachable, migrated")),
        Ok(false) => {
            return vec![Check::fail(
                "database",
                format!("{backend}: reachable, not migrated"),
                "run converge migrate",
            )];
        }
        Err(e) => {
            return vec![Check::fail(
                "database",
                format!("{backend}: {e}"),
                "is the database up and reachable from here (network, DSN, password)?",
            )];
        }
    };
    // One read of the lease table for both checks.
    let leases = match store.leases().await {
        Ok(leases) => leases,
        Err(e) => {
            return vec![
                database,
                Check::fail("leases", e.to_string(), "cannot read queue_leases"),
                Check::fail("paused_queues", e.to_string(), "cannot read queue_leases"),
            ];
        }
    };
    let now = chrono::Utc::now();
    let stale: Vec<String> = leases
        .iter()
        .filter(|l| l.holder.is_some() && l.expires_at.is_some_and(|e| e < now))
        .map(|l| l.key.to_string())
        .collect();
    let stale = if stale.is_empty() {
        Check::pass("leases", format!("{} queue keys, none stale", leases.len()))
    } else {
        Check::warn(
            "leases",
            format!("stale: {}", stale.join(", ")),
            "the next worker or sweep takes them over; at once: converge queue reset --intent-id any --clear-lock",
        )
    };
    let paused: Vec<String> = leases
        .iter()
        .filter_map(|l| {
            let hold = l.hold.as_ref()?;
            Some(format!(
                "{} since {} ({} failures; next try {}): {}",
                l.key,
                hold.since.format("%Y-%m-%d %H:%M:%SZ"),
                hold.failures,
                hold.until.format("%H:%M:%SZ"),
                hold.reason
            ))
        })
        .collect();
    let paused = if paused.is_empty() {
        Check::pass("paused_queues", "none")
    } else {
        Check::warn(
            "paused_queues",
            paused.join("; "),
            "fix what failed (the queue resumes by itself at its next try; no retry is spent meanwhile)",
        )
    };
    vec![database, stale, paused]
}

/// The SQS queue and its DLQ (CONVERGE_QUEUE_URL, CONVERGE_DLQ_URL), when configured.
async fn queue_checks() -> Vec<Check> {
    let Some((queue, dlq)) = converge_runtime::sqs::SqsQueue::from_env().await else {
        return vec![Check::pass(
            "queue",
            "database-backed queue (CONVERGE_QUEUE_URL unset)",
        )];
    };
    let waiting = match queue.depth().await {
        Ok(n) => Check::pass("queue", format!("SQS reachable, {n} messages waiting")),
        Err(e) => {
            return vec![Check::fail(
                "queue",
                e.to_string(),
                "check CONVERGE_QUEUE_URL, AWS credentials and region (AWS_ENDPOINT_URL for an emulator)",
            )];
        }
    };
    let dlq = match dlq {
        None => Check::warn(
            "dlq",
            "CONVERGE_DLQ_URL unset: the DLQ's depth is unknown",
            "set it to the dead-letter queue's URL",
        ),
        Some(dlq) => match dlq.depth().await {
            Ok(0) => Check::pass("dlq", "empty"),
            Ok(n) => Check::warn(
                "dlq",
                format!("{n} messages dead-lettered"),
                "read them, fix the cause, then redrive them (see the runbook)",
            ),
            Err(e) => Check::fail("dlq", e.to_string(), "check CONVERGE_DLQ_URL"),
        },
    };
    vec![waiting, dlq]
}

async fn github_check() -> Check {
    if env("CONVERGE_GITHUB_APP_ID").is_none() {
        return Check::warn(
            "github_app",
            "no GitHub App configured (CONVERGE_GITHUB_APP_ID)",
            "only local repositories can be worked on",
        );
    }
    let app = match converge_runtime::services::github_app_from_env().await {
        Ok(Some(app)) => app,
        Ok(None) => {
            return Check::warn(
                "github_app",
                "no GitHub App configured",
                "set CONVERGE_GITHUB_APP_ID",
            );
        }
        Err(e) => {
            return Check::fail(
                "github_app",
                e.detail(),
                "check CONVERGE_GITHUB_APP_PRIVATE_KEY(_PATH, _SECRET_ARN)",
            );
        }
    };
    if let Some(problem) = app.key_problem() {
        return Check::fail(
            "github_app",
            problem,
            "put the App's private key (PEM) into its secret: aws secretsmanager put-secret-value --secret-id \"$CONVERGE_GITHUB_APP_PRIVATE_KEY_SECRET_ARN\" --secret-string file://app.pem",
        );
    }
    let slug = match app.check_app().await {
        Ok(slug) => slug,
        Err(e) => return github_failure(&app.settings().api_url, e),
    };
    match app.settings().default_installation {
        None => Check::pass("github_app", format!("authenticated as {slug}")),
        Some(installation) => match app.check_credentials(installation).await {
            Ok(()) => Check::pass(
                "github_app",
                format!("authenticated as {slug}; installation {installation} token issued"),
            ),
            Err(e) => Check::fail(
                "github_app",
                format!("installation {installation}: {e}"),
                "is the App installed there (CONVERGE_GITHUB_INSTALLATION_ID)?",
            ),
        },
    }
}

/// A failed call to GitHub, blamed on what failed: the network, GitHub itself, or the
/// App's credentials (only a 401 means the id and key do not belong together).
fn github_failure(api_url: &str, error: converge_github::app::GithubError) -> Check {
    use converge_github::app::GithubError;
    match error {
        GithubError::Api {
            status: 401,
            message,
        } => Check::fail(
            "github_app",
            format!("the App's JWT was refused: {message}"),
            "the App id and private key must belong together (regenerate the key on GitHub if unsure)",
        ),
        GithubError::Api { status, message } if status >= 500 => Check::fail(
            "github_app",
            format!("GitHub answered {status} at {api_url}: {message}"),
            "GitHub is failing: check its status page, then run doctor again",
        ),
        GithubError::Transport(reason) => Check::fail(
            "github_app",
            format!("GitHub unreachable at {api_url}: {reason}"),
            "check the network path (a NAT gateway from a VPC) and CONVERGE_GITHUB_API_URL",
        ),
        other => Check::fail(
            "github_app",
            other.to_string(),
            "check CONVERGE_GITHUB_APP_ID and the App's settings on GitHub",
        ),
    }
}

/// The webhook secret, given in the environment or by its Secrets Manager ARN (as the
/// functions read it).
async fn webhook_secret_check() -> Check {
    // Counted as the webhook reads them (several during a rotation).
    let count = |value: &str| converge_github::signature::parse_secrets(value).len();
    if let Some(secrets) = env("CONVERGE_GITHUB_WEBHOOK_SECRET") {
        return Check::pass(
            "webhook_secret",
            format!("{} secret(s) configured", count(&secrets)),
        );
    }
    if let Some(arn) = env("CONVERGE_GITHUB_WEBHOOK_SECRET_ARN") {
        return match converge_runtime::services::secret_from_env(&arn).await {
            Ok(value) if count(&value) > 0 => Check::pass(
                "webhook_secret",
                format!("{} secret(s) in {arn}", count(&value)),
            ),
            Ok(_) => Check::fail(
                "webhook_secret",
                format!("{arn} is empty: every delivery is refused"),
                "put the App's webhook secret into it",
            ),
            Err(e) => Check::fail(
                "webhook_secret",
                e.detail(),
                "check CONVERGE_GITHUB_WEBHOOK_SECRET_ARN, CONVERGE_SECRETS_TTL_SECONDS and this role's secretsmanager:GetSecretValue",
            ),
        };
    }
    if env("CONVERGE_GITHUB_APP_ID").is_some() {
        return Check::fail(
            "webhook_secret",
            "CONVERGE_GITHUB_WEBHOOK_SECRET and CONVERGE_GITHUB_WEBHOOK_SECRET_ARN unset: every delivery is refused",
            "set one to the App's webhook secret",
        );
    }
    Check::warn(
        "webhook_secret",
        "CONVERGE_GITHUB_WEBHOOK_SECRET unset",
        "needed once GitHub sends webhooks",
    )
}
