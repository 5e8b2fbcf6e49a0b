//! Secrets from AWS Secrets Manager, through the AWS SDK (which honours `AWS_ENDPOINT_URL`,
//! so the local stack and the tests use an emulator). A value is cached for at most
//! [`SECRET_TTL`], so a rotated secret is picked up without a redeploy; an error never
//! contains the secret.
//!
//! Secrets turned into long-lived objects (the database DSN into the connection pool, the
//! GitHub App's key into its client) are watched by a [`Rotation`], which hands a changed value
//! to its object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The longest and default cache lifetime of a secret (defined with the configuration).
pub use crate::config::SECRET_TTL;

/// After a failed read or a value that could not be used, how long before the next attempt:
/// the value in hand stays in use meanwhile, and requests are not held up by a failure each.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret {arn}: {reason}")]
pub struct SecretError {
    /// The secret's ARN (or name).
    pub arn: String,
    /// What went wrong (never the value).
    pub reason: String,
}

/// The time as the cache sees it: `Instant::now` in a process; tests pass a clock they move.
pub type MonotonicClock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// A Secrets Manager client with a cache.
pub struct Secrets {
    client: aws_sdk_secretsmanager::Client,
    /// Each secret's last answer (a value, or why there is none) and the moment it should be
    /// read again.
    cache: Mutex<HashMap<String, Cached>>,
    /// One lock per secret, held while it is read: when a value's lifetime ends, one request
    /// reads Secrets Manager and the others wait for its answer instead of each asking too.
    reading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    ttl: Duration,
    clock: MonotonicClock,
}

#[derive(Clone)]
struct Cached {
    read_again_at: Instant,
    answer: Result<String, SecretError>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// The process's client (one cache for every secret the process reads), made on first use
    /// with the SDK's configuration from the environment and values kept for `ttl` (the
    /// configuration's `CONVERGE_SECRETS_TTL_SECONDS`; the first caller's value holds).
    pub async fn shared(ttl: Duration) -> Arc<Secrets> {
        static SHARED: tokio::sync::OnceCell<Arc<Secrets>> = tokio::sync::OnceCell::const_new();
        SHARED
            .get_or_init(|| async {
                let client = aws_sdk_secretsmanager::Client::new(crate::aws::sdk_config().await);
                Arc::new(Secrets::with_client(client, ttl))
            })
            .await
            .clone()
    }

    /// A client over `client`, caching values for `ttl` (at most [`SECRET_TTL`]).
    pub fn with_client(client: aws_sdk_secretsmanager::Client, ttl: Duration) -> Secrets {
        Secrets::with_clock(client, ttl, Arc::new(Instant::now))
    }

    /// [`Secrets::with_client`] whose values age by `clock`.
    pub fn with_clock(
        client: aws_sdk_secretsmanager::Client,
        ttl: Duration,
        clock: MonotonicClock,
    ) -> Secrets {
        Secrets {
            client,
            cache: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashMap::new()),
            ttl: ttl.min(SECRET_TTL),
            clock,
        }
    }

    /// The current value of the secret `arn` (its string value), from the cache when fresh.
    /// When the read fails but a value was read before, that value is answered (and the read
    /// tried again after [`RETRY_AFTER_FAILURE`]): an outage of Secrets Manager keeps the
    /// credentials in hand working. A secret never read yet fails, and its failure too is
    /// kept for [`RETRY_AFTER_FAILURE`], so that requests are not held up by one read each.
    pub async fn get(&self, arn: &str) -> Result<String, SecretError> {
        if let Some(answer) = self.fresh(arn) {
            return answer;
        }
        let lock = self
            .reading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(arn.to_owned())
            .or_default()
            .clone();
        let _reading = lock.lock().await;
        // Another request may have read it while this one waited.
        if let Some(answer) = self.fresh(arn) {
            return answer;
        }
        let before = self.cached(arn).and_then(|cached| cached.answer.ok());
        let (answer, fresh_for) = match (self.read(arn).await, before) {
            (Ok(value), _) => (Ok(value), self.ttl),
            (Err(e), Some(stale)) => {
                tracing::warn!("{e}; the value read before stays in use");
                (Ok(stale), self.ttl.min(RETRY_AFTER_FAILURE))
            }
            (Err(e), None) => (Err(e), self.ttl.min(RETRY_AFTER_FAILURE)),
        };
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                arn.to_owned(),
                Cached {
                    read_again_at: (self.clock)() + fresh_for,
                    answer: answer.clone(),
                },
            );
        answer
    }

    async fn read(&self, arn: &str) -> Result<String, SecretError> {
        let failed = |reason: String| SecretError {
            arn: arn.to_owned(),
            reason,
        };
        let answer = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| {
                failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())
            })?;
        answer
            .secret_string()
            .map(str::to_owned)
            .ok_or_else(|| failed("it holds no string value".to_owned()))
    }

    fn fresh(&self, arn: &str) -> Option<Result<String, SecretError>> {
        self.cached(arn)
            .filter(|cached| (self.clock)() < cached.read_again_at)
            .map(|cached| cached.answer)
    }

    fn cached(&self, arn: &str) -> Option<Cached> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(arn)
            .cloned()
    }
}

/// A secret whose consumer must act when its value changes (new connections, a new signing
/// key, re-seeded API keys). It remembers a digest of the value last handed over, never the
/// value.
#[derive(Debug)]
pub struct WatchedSecret {
    arn: String,
    state: Mutex<Watch>,
}

#[derive(Debug, Default)]
struct Watch {
    /// Digest of the value last handed over.
    seen: Option<[u8; 32]>,
    /// After a failure: no value is handed over before then.
    retry_at: Option<Instant>,
}

impl WatchedSecret {
    /// Watches `arn`; nothing is seen yet, so the first [`WatchedSecret::changed`] answers the
    /// value.
    pub fn new(arn: impl Into<String>) -> WatchedSecret {
        WatchedSecret {
            arn: arn.into(),
            state: Mutex::new(Watch::default()),
        }
    }

    /// The secret's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The value when it differs from the one last handed over (through `secrets`' cache, so
    /// at most one read per cache lifetime); `None` when unchanged, or while a failure's
    /// [`RETRY_AFTER_FAILURE`] lasts.
    pub async fn changed(&self, secrets: &Secrets) -> Result<Option<String>, SecretError> {
        let value = secrets.get(&self.arn).await?;
        let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.seen == Some(digest) || state.retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(None);
        }
        *state = Watch {
            seen: Some(digest),
            retry_at: None,
        };
        Ok(Some(value))
    }

    /// The value last handed over could not be used: it is handed over again, after
    /// [`RETRY_AFTER_FAILURE`].
    pub fn failed(&self) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Watch {
            seen: None,
            retry_at: Some(Instant::now() + RETRY_AFTER_FAILURE),
        };
    }
}

/// The secrets a running process has built objects from, re-read so that a rotation reaches
/// them without a restart: the database DSN (new connections use it) and the GitHub App's
/// private key (new tokens are signed with it). [`Rotation::refresh`] runs before each
/// request and each batch; it costs a Secrets Manager call only once per cache lifetime.
#[derive(Debug)]
pub struct Rotation {
    ttl: Duration,
    secrets: Option<Arc<Secrets>>,
    dsn: Option<WatchedSecret>,
    app_key: Option<(WatchedSecret, Arc<converge_github::app::GithubApp>)>,
}

impl Rotation {
    /// Watches nothing yet; secrets are read through the process's client, kept for `ttl`.
    pub fn new(ttl: Duration) -> Rotation {
        Rotation {
            ttl,
            secrets: None,
            dsn: None,
            app_key: None,
        }
    }

    /// Watches nothing yet, with the cache lifetime `CONVERGE_SECRETS_TTL_SECONDS` gives: for a
    /// CLI command, which reads the one setting it needs rather than the whole configuration.
    pub fn from_env() -> Result<Rotation, String> {
        crate::config::secrets_ttl(&|name: &str| std::env::var(name).ok()).map(Rotation::new)
    }

    /// Watches secrets through `secrets`.
    pub fn with_secrets(secrets: Arc<Secrets>) -> Rotation {
        Rotation {
            secrets: Some(secrets),
            ..Rotation::new(SECRET_TTL)
        }
    }

    /// Reads the DSN kept in `arn` (a plain DSN or RDS's JSON document) and watches it.
    pub async fn watch_dsn(&mut self, arn: &str) -> Result<String, String> {
        let (watched, value) = self.first_read(arn).await?;
        self.dsn = Some(watched);
        Ok(dsn_of_secret(&value))
    }

    /// Builds the App with the private key kept in `arn` and watches it.
    pub async fn watch_app_key(
        &mut self,
        arn: &str,
        mut settings: converge_github::app::GithubSettings,
    ) -> Result<Arc<converge_github::app::GithubApp>, String> {
        let (watched, pem) = self.first_read(arn).await?;
        settings.private_key_pem = pem;
        let app = converge_github::app::GithubApp::new(settings).map_err(|e| e.to_string())?;
        self.app_key = Some((watched, app.clone()));
        Ok(app)
    }

    /// Reads `arn` now and watches it from here on; answers its value.
    async fn first_read(&mut self, arn: &str) -> Result<(WatchedSecret, String), String> {
        let secrets = match &self.secrets {
            Some(secrets) => secrets.clone(),
            None => {
                let secrets = Secrets::shared(self.ttl).await;
                self.secrets = Some(secrets.clone());
                secrets
            }
        };
        let watched = WatchedSecret::new(arn);
        let value = watched
            .changed(&secrets)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        Ok((watched, value))
    }

    /// Hands each watched secret that changed to its consumer. A failure is logged (without
    /// the value) and retried after [`RETRY_AFTER_FAILURE`]; the process keeps its current
    /// credentials meanwhile.
    pub async fn refresh(&self, store: &converge_store::Store) {
        let Some(secrets) = &self.secrets else {
            return;
        };
        if let Some(watched) = &self.dsn {
            match watched.changed(secrets).await {
                Ok(None) => {}
                Ok(Some(value)) => match store.use_pg_dsn(&dsn_of_secret(&value)) {
                    Ok(()) => tracing::info!(secret = watched.arn(), "database DSN rotated"),
                    Err(e) => {
                        watched.failed();
                        tracing::warn!(secret = watched.arn(), "rotated DSN refused: {e}");
                    }
                },
                Err(e) => tracing::warn!("{e}"),
            }
        }
        if let Some((watched, app)) = &self.app_key {
            match watched.changed(secrets).await {
                Ok(None) => {}
                Ok(Some(pem)) => match app.replace_key(&pem) {
                    Ok(()) => tracing::info!(secret = watched.arn(), "GitHub App key rotated"),
                    Err(e) => {
                        watched.failed();
                        tracing::warn!(secret = watched.arn(), "rotated App key refused: {e}");
                    }
                },
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
}

/// The GitHub App of `settings` (`None`: no App), its private key read from Secrets Manager
/// when only `CONVERGE_GITHUB_APP_PRIVATE_KEY_SECRET_ARN` names it (then watched by
/// `rotation`).
pub async fn github_app(
    settings: Option<converge_github::app::GithubSettings>,
    rotation: &mut Rotation,
) -> Result<Option<Arc<converge_github::app::GithubApp>>, String> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    match settings.private_key_secret_arn.clone() {
        Some(arn) if settings.private_key_pem.is_empty() => {
            rotation.watch_app_key(&arn, settings).await.map(Some)
        }
        _ => converge_github::app::GithubApp::new(settings)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// `store` with its DSN: on PostgreSQL without `CONVERGE_PG_DSN`, the DSN is read from the
/// Secrets Manager secret `CONVERGE_PG_DSN_SECRET_ARN` (as RDS keeps it) and watched by
/// `rotation`, so that new connections follow a rotated password.
pub async fn store_config(
    store: &converge_store::StoreConfig,
    rotation: &mut Rotation,
) -> Result<converge_store::StoreConfig, String> {
    let mut store = store.clone();
    if store.pg_dsn.is_none()
        && store.backend == converge_store::Backend::Postgres
        && let Some(arn) = store.pg_dsn_secret_arn.clone()
    {
        store.pg_dsn = Some(rotation.watch_dsn(&arn).await?);
    }
    Ok(store)
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
    // Only RFC 3986's unreserved characters stay as they are in a URL's user and password.
    const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let encode = |text: String| percent_encoding::utf8_percent_encode(&text, USERINFO).to_string();
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
