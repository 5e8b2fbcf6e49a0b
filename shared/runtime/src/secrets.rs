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
    /// A client configured from the environment (region, credentials, endpoint).
    pub async fn from_env() -> Secrets {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Secrets::with_client(aws_sdk_secretsmanager::Client::new(&config), SECRET_TTL)
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
