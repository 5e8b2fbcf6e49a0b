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
            .map_err(|e| failed(read_failure(e)))?;
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

/// Why a read failed, in one line: Secrets Manager's error code and message when it answered
/// (`ResourceNotFoundException`: a secret created with no value yet), the whole chain of
/// causes when it could not be reached.
fn read_failure(
    error: aws_sdk_secretsmanager::error::SdkError<
        aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError,
    >,
) -> String {
    use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
    match error.as_service_error() {
        Some(answer) if answer.is_resource_not_found_exception() => format!(
            "it holds no value yet ({})",
            answer.message().unwrap_or("ResourceNotFoundException")
        ),
        Some(answer) => format!(
            "{}: {}",
            answer.code().unwrap_or("error"),
            answer.message().unwrap_or("no message")
        ),
        None => aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string(),
    }
}

/// A secret whose consumer must act when its value changes (new connections, a new signing
/// key, re-seeded API keys). It remembers a digest of the value last handed over, never the
/// value.
#[derive(Debug)]
pub struct WatchedSecret {
    arn: String,
    state: Mutex<Watch>,
    /// The last failure logged, so that a failure that lasts is logged once, not on every
    /// request that meets it (a cached failure is met until the next read).
    last_failure: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct Watch {
    /// Digest of the value last handed over.
    seen: Option<[u8; 32]>,
    /// A value its consumer refused, and until when it is not handed over again (another
    /// value is handed over at once).
    refused: Option<([u8; 32], Instant)>,
}

impl WatchedSecret {
    /// Watches `arn`; nothing is seen yet, so the first [`WatchedSecret::changed`] answers the
    /// value.
    pub fn new(arn: impl Into<String>) -> WatchedSecret {
        WatchedSecret {
            arn: arn.into(),
            state: Mutex::new(Watch::default()),
            last_failure: Mutex::new(None),
        }
    }

    /// The secret's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The value when it differs from the one last handed over (through `secrets`' cache, so
    /// at most one read per cache lifetime); `None` when unchanged, or when it is the value
    /// last refused and [`RETRY_AFTER_FAILURE`] has not passed.
    pub async fn changed(&self, secrets: &Secrets) -> Result<Option<String>, SecretError> {
        let value = secrets.get(&self.arn).await?;
        if let Some(ended) = self
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            tracing::info!(secret = %self.arn, "read again after: {ended}");
        }
        let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refused_still = state
            .refused
            .is_some_and(|(refused, until)| refused == digest && Instant::now() < until);
        if state.seen == Some(digest) || refused_still {
            return Ok(None);
        }
        *state = Watch {
            seen: Some(digest),
            refused: None,
        };
        Ok(Some(value))
    }

    /// Logs `failure` (never a value) as a warning the first time it is met, at debug level
    /// while it lasts, and as a warning again when it changes.
    pub fn log_failure(&self, failure: &str) {
        let mut last = self
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_deref() == Some(failure) {
            tracing::debug!(secret = %self.arn, "{failure}");
        } else {
            tracing::warn!(secret = %self.arn, "{failure}");
            *last = Some(failure.to_owned());
        }
    }

    /// The value last handed over could not be used: it is handed over again after
    /// [`RETRY_AFTER_FAILURE`], and a different value as soon as it is read.
    pub fn failed(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *state = Watch {
            seen: None,
            refused: state
                .seen
                .map(|digest| (digest, Instant::now() + RETRY_AFTER_FAILURE)),
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
    /// Where the database is when the DSN's secret does not say (see [`dsn_of_secret`]).
    pg_location: converge_store::PgLocation,
    app_key: Option<(WatchedSecret, Arc<converge_github::app::GithubApp>)>,
}

impl Rotation {
    /// Watches nothing yet; secrets are read through the process's client, kept for `ttl`.
    pub fn new(ttl: Duration) -> Rotation {
        Rotation {
            ttl,
            secrets: None,
            dsn: None,
            pg_location: converge_store::PgLocation::default(),
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

    /// Reads the secret `arn` that holds the database's DSN or credentials, and watches it.
    pub async fn watch_dsn(&mut self, arn: &str) -> Result<String, String> {
        let (watched, value) = self.first_read(arn).await;
        let value = value?;
        self.dsn = Some(watched);
        Ok(value)
    }

    /// Builds the App with the private key kept in `arn` and watches it. A secret that cannot
    /// be read yet (created empty by the template) or holds no usable key leaves the App
    /// waiting for its key: the process starts, GitHub work fails with "App key not set", and
    /// the key is picked up by [`Rotation::refresh`] once it is put.
    pub async fn watch_app_key(
        &mut self,
        arn: &str,
        mut settings: converge_github::app::GithubSettings,
    ) -> Arc<converge_github::app::GithubApp> {
        use converge_github::app::GithubApp;
        let (watched, read) = self.first_read(arn).await;
        let app = match read {
            Ok(pem) => {
                settings.private_key_pem = pem;
                GithubApp::new(settings.clone()).unwrap_or_else(|e| {
                    watched.failed();
                    GithubApp::awaiting_key(settings, format!("secret {arn}: {e}"))
                })
            }
            Err(e) => {
                // Remembered, so that the same failure met again by each refresh is not
                // logged as new.
                watched.log_failure(&e);
                GithubApp::awaiting_key(settings, e)
            }
        };
        if let Some(problem) = app.key_problem() {
            tracing::warn!(
                secret = arn,
                "{problem}; GitHub work waits until the key is put into the secret"
            );
        }
        self.app_key = Some((watched, app.clone()));
        app
    }

    /// Starts watching `arn` and reads it now: its value, or why it could not be read.
    async fn first_read(&mut self, arn: &str) -> (WatchedSecret, Result<String, String>) {
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
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string());
        (watched, value)
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
                Ok(Some(value)) => match dsn_of_secret(&value, &self.pg_location)
                    .and_then(|dsn| store.use_pg_dsn(&dsn).map_err(|e| e.to_string()))
                {
                    Ok(()) => tracing::info!(secret = watched.arn(), "database DSN rotated"),
                    Err(e) => {
                        watched.failed();
                        tracing::warn!(secret = watched.arn(), "rotated DSN refused: {e}");
                    }
                },
                Err(e) => watched.log_failure(&e.to_string()),
            }
        }
        if let Some((watched, app)) = &self.app_key {
            match watched.changed(secrets).await {
                Ok(None) => {}
                Ok(Some(pem)) => match app.replace_key(&pem) {
                    Ok(()) => tracing::info!(secret = watched.arn(), "GitHub App key in use"),
                    Err(e) => {
                        watched.failed();
                        tracing::warn!(secret = watched.arn(), "App key refused: {e}");
                        app.key_refused(format!("secret {}: {e}", watched.arn()));
                    }
                },
                Err(e) => watched.log_failure(&e.to_string()),
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
            Ok(Some(rotation.watch_app_key(&arn, settings).await))
        }
        _ => converge_github::app::GithubApp::new(settings)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// `store` with its DSN: on PostgreSQL without `CONVERGE_PG_DSN`, the DSN is read from the
/// Secrets Manager secret `CONVERGE_PG_DSN_SECRET_ARN` (see [`dsn_of_secret`] for the shapes
/// it may hold) and watched by `rotation`, so that new connections follow a rotated password.
pub async fn store_config(
    store: &converge_store::StoreConfig,
    rotation: &mut Rotation,
) -> Result<converge_store::StoreConfig, String> {
    let mut store = store.clone();
    if store.pg_dsn.is_none()
        && store.backend == converge_store::Backend::Postgres
        && let Some(arn) = store.pg_dsn_secret_arn.clone()
    {
        let value = rotation
            .watch_dsn(&arn)
            .await
            .map_err(|e| format!("CONVERGE_PG_DSN_SECRET_ARN: {e}"))?;
        store.pg_dsn = Some(
            dsn_of_secret(&value, &store.pg_location)
                .map_err(|e| format!("the secret of CONVERGE_PG_DSN_SECRET_ARN ({arn}) {e}"))?,
        );
        store.pg_dsn_origin =
            format!("the DSN in the secret of CONVERGE_PG_DSN_SECRET_ARN ({arn})");
        rotation.pg_location = store.pg_location.clone();
    }
    Ok(store)
}

/// A DSN from a secret's value, in any of the three shapes a deployment keeps it: a plain
/// `postgres://` DSN; RDS's rotation document (`username`, `password`, `host`, `port`,
/// `dbname`); or RDS's managed master-user secret (`username`, `password` only), the database's
/// place then given by `location`. A setting of `location` wins over the document's field (an
/// RDS Proxy endpoint in front of the instance the document names). The error says what is
/// missing and which setting gives it; it never holds the value.
pub fn dsn_of_secret(value: &str, location: &converge_store::PgLocation) -> Result<String, String> {
    let Ok(serde_json::Value::Object(doc)) = serde_json::from_str::<serde_json::Value>(value)
    else {
        let dsn = value.trim();
        if !(dsn.starts_with("postgres://") || dsn.starts_with("postgresql://")) {
            return Err(
                "holds neither a postgres:// DSN nor a JSON document with username and password"
                    .to_owned(),
            );
        }
        // A whole DSN says where the database is; settings saying otherwise would be ignored.
        if *location != converge_store::PgLocation::default() {
            return Err(
                "holds a whole DSN, which names its own host, port and database: \
                 leave CONVERGE_PG_HOST, CONVERGE_PG_PORT and CONVERGE_PG_DATABASE empty, or put \
                 the place (an RDS Proxy endpoint) into the DSN"
                    .to_owned(),
            );
        }
        return Ok(dsn.to_owned());
    };
    let field = |name: &str| {
        doc.get(name)
            .filter(|v| !v.is_null())
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .filter(|v| !v.trim().is_empty())
    };
    let required = |name: &str| field(name).ok_or_else(|| format!("has no '{name}' field"));
    let (username, password) = (required("username")?, required("password")?);
    let host =
        location.host.clone().or_else(|| field("host")).ok_or(
            "has no 'host': set CONVERGE_PG_HOST (the instance's or RDS Proxy's endpoint)",
        )?;
    let database = location
        .database
        .clone()
        .or_else(|| field("dbname"))
        .ok_or("has no 'dbname': set CONVERGE_PG_DATABASE")?;
    let port = match (location.port, field("port")) {
        (Some(port), _) => port,
        (None, Some(port)) => port
            .parse::<u16>()
            .map_err(|_| format!("has a 'port' that is not a port number: '{port}'"))?,
        (None, None) => 5432,
    };
    // Only RFC 3986's unreserved characters stay as they are in a URL's parts.
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let encode = |text: &str| percent_encoding::utf8_percent_encode(text, UNRESERVED).to_string();
    Ok(format!(
        "postgres://{}:{}@{host}:{port}/{}",
        encode(&username),
        encode(&password),
        encode(&database)
    ))
}

#[cfg(test)]
mod tests {
    use super::dsn_of_secret;
    use converge_store::PgLocation;

    #[test]
    fn a_dsn_comes_from_a_plain_dsn_or_an_rds_rotation_document() {
        let nowhere = PgLocation::default();
        assert_eq!(
            dsn_of_secret(" postgres://u:p@h/d \n", &nowhere).unwrap(),
            "postgres://u:p@h/d"
        );
        let rds = r#"{"engine": "postgres", "username": "app", "password": "p@ss/word", "host": "db.internal", "port": 5433, "dbname": "converge"}"#;
        assert_eq!(
            dsn_of_secret(rds, &nowhere).unwrap(),
            "postgres://app:p%40ss%2Fword@db.internal:5433/converge"
        );
    }

    #[test]
    fn a_managed_master_user_secret_takes_the_place_of_the_database_from_settings() {
        let managed = r#"{"username": "postgres", "password": "s3cr:et"}"#;
        let proxy = PgLocation {
            host: Some("converge.proxy-abc.eu-west-1.rds.amazonaws.com".to_owned()),
            port: None,
            database: Some("converge".to_owned()),
        };
        assert_eq!(
            dsn_of_secret(managed, &proxy).unwrap(),
            "postgres://postgres:s3cr%3Aet@converge.proxy-abc.eu-west-1.rds.amazonaws.com:5432/converge"
        );
        // The settings win over the rotation document's own place (a proxy in front of it).
        let rds = r#"{"username": "app", "password": "pw", "host": "instance", "port": "5432", "dbname": "other"}"#;
        assert_eq!(
            dsn_of_secret(
                rds,
                &PgLocation {
                    port: Some(6432),
                    ..proxy.clone()
                }
            )
            .unwrap(),
            "postgres://app:pw@converge.proxy-abc.eu-west-1.rds.amazonaws.com:6432/converge"
        );
    }

    #[test]
    fn what_is_missing_is_named_with_the_setting_that_gives_it_and_never_the_password() {
        let nowhere = PgLocation::default();
        let managed = r#"{"username": "postgres", "password": "hunter2"}"#;
        let no_host = dsn_of_secret(managed, &nowhere).unwrap_err();
        assert!(no_host.contains("CONVERGE_PG_HOST"), "{no_host}");
        let with_host = PgLocation {
            host: Some("db".to_owned()),
            ..nowhere.clone()
        };
        let no_db = dsn_of_secret(managed, &with_host).unwrap_err();
        assert!(no_db.contains("CONVERGE_PG_DATABASE"), "{no_db}");
        let no_password = dsn_of_secret(r#"{"username": "u"}"#, &with_host).unwrap_err();
        assert!(no_password.contains("'password'"), "{no_password}");
        let whole = dsn_of_secret("postgres://u:hunter2@db/x", &with_host).unwrap_err();
        assert!(
            whole.contains("CONVERGE_PG_HOST") && !whole.contains("hunter2"),
            "{whole}"
        );
        let garbage = dsn_of_secret("hunter2", &nowhere).unwrap_err();
        assert!(
            !garbage.contains("hunter2") && garbage.contains("postgres://"),
            "{garbage}"
        );
        for error in [no_host, no_db] {
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
