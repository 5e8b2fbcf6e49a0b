//! Secrets from AWS Secrets Manager, through the AWS SDK (which honours `AWS_ENDPOINT_URL`,
//! so the local stack and the tests use an emulator). A value is cached for at most
//! [`SECRET_TTL`], so a rotated secret is picked up without a redeploy; an error never
//! contains the secret.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest time a secret value is reused before it is read again.
pub const SECRET_TTL: Duration = Duration::from_secs(300);

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret {arn}: {reason}")]
pub struct SecretError {
    /// The secret's ARN (or name).
    pub arn: String,
    /// What went wrong (never the value).
    pub reason: String,
}

/// A Secrets Manager client with a cache.
pub struct Secrets {
    client: aws_sdk_secretsmanager::Client,
    cache: Mutex<HashMap<String, (Instant, String)>>,
    ttl: Duration,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// A client configured from the environment (region, credentials, endpoint), caching for
    /// `CONVERGE_SECRETS_TTL_SECONDS` (1–300, default 300).
    pub async fn from_env() -> Secrets {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let ttl = std::env::var("CONVERGE_SECRETS_TTL_SECONDS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|n| (1..=SECRET_TTL.as_secs()).contains(n))
            .map_or(SECRET_TTL, Duration::from_secs);
        Secrets::with_client(aws_sdk_secretsmanager::Client::new(&config), ttl)
    }

    /// A client over `client`, caching values for `ttl` (at most [`SECRET_TTL`]).
    pub fn with_client(client: aws_sdk_secretsmanager::Client, ttl: Duration) -> Secrets {
        Secrets {
            client,
            cache: Mutex::new(HashMap::new()),
            ttl: ttl.min(SECRET_TTL),
        }
    }

    /// The current value of the secret `arn` (its string value), from the cache when fresh.
    pub async fn get(&self, arn: &str) -> Result<String, SecretError> {
        if let Some((read_at, value)) = self.cached(arn)
            && read_at.elapsed() < self.ttl
        {
            return Ok(value);
        }
        let answer = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| SecretError {
                arn: arn.to_owned(),
                reason: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
            })?;
        let value = answer.secret_string().ok_or_else(|| SecretError {
            arn: arn.to_owned(),
            reason: "it holds no string value".to_owned(),
        })?;
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(arn.to_owned(), (Instant::now(), value.to_owned()));
        Ok(value.to_owned())
    }

    fn cached(&self, arn: &str) -> Option<(Instant, String)> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(arn)
            .cloned()
    }
}

/// The GitHub App from the environment (`CONVERGE_GITHUB_*`), its private key read from
/// Secrets Manager when only `CONVERGE_GITHUB_APP_PRIVATE_KEY_SECRET_ARN` names it. `None`
/// when no App is configured.
pub async fn github_app_from_env()
-> Result<Option<std::sync::Arc<converge_github::app::GithubApp>>, String> {
    use converge_github::app::{GithubApp, GithubSettings};
    let Some(mut settings) =
        GithubSettings::from_lookup(|name| std::env::var(name).ok()).map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    if settings.private_key_pem.is_empty()
        && let Some(arn) = settings.private_key_secret_arn.clone()
    {
        settings.private_key_pem = Secrets::from_env()
            .await
            .get(&arn)
            .await
            .map_err(|e| e.to_string())?;
    }
    GithubApp::new(settings)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The store settings from the environment; on PostgreSQL without `CONVERGE_PG_DSN`, the DSN
/// is read from the Secrets Manager secret `CONVERGE_PG_DSN_SECRET_ARN` (as RDS keeps it).
/// Read once, when the process starts: a rotated password takes a new process.
pub async fn store_config_from_env() -> Result<converge_store::StoreConfig, String> {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let dsn = match (env("CONVERGE_PG_DSN"), env("CONVERGE_PG_DSN_SECRET_ARN")) {
        (Some(dsn), _) => Some(dsn),
        (None, Some(arn)) => Some(
            Secrets::from_env()
                .await
                .get(&arn)
                .await
                .map(|value| dsn_of_secret(&value))
                .map_err(|e| e.to_string())?,
        ),
        (None, None) => None,
    };
    converge_store::StoreConfig::from_lookup(|name| match name {
        "CONVERGE_PG_DSN" => dsn.clone(),
        other => std::env::var(other).ok(),
    })
    .map_err(|e| e.to_string())
}

/// A DSN from a secret's value: the value itself, or an RDS-style JSON document (`username`,
/// `password`, `host`, `port`, `dbname`).
fn dsn_of_secret(value: &str) -> String {
    let Ok(serde_json::Value::Object(doc)) = serde_json::from_str::<serde_json::Value>(value)
    else {
        return value.trim().to_owned();
    };
    let field = |name: &str| {
        doc.get(name)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    let encode = |text: String| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    let port = Some(field("port"))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "5432".to_owned());
    format!(
        "postgres://{}:{}@{}:{port}/{}",
        encode(field("username")),
        encode(field("password")),
        field("host"),
        field("dbname")
    )
}

#[cfg(test)]
mod tests {
    use super::dsn_of_secret;

    #[test]
    fn a_dsn_comes_from_a_plain_or_an_rds_secret() {
        assert_eq!(
            dsn_of_secret(" postgres://u:p@h/d \n"),
            "postgres://u:p@h/d"
        );
        let rds = r#"{"username": "app", "password": "p@ss/word", "host": "db.internal", "port": 5433, "dbname": "converge"}"#;
        assert_eq!(
            dsn_of_secret(rds),
            "postgres://app:p%40ss%2Fword@db.internal:5433/converge"
        );
    }
}
