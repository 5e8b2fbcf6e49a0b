//! The one typed configuration of Converge: every variable of the runbook's environment table
//! (docs/RUNBOOK.md) that a server process reads, parsed and checked here, with the defaults the
//! table lists. [`Config::from_env`] reads them all at start and reports the unusable ones at
//! once (every one of a section parsed here; the first of the store's and the App's sections),
//! so a deployment with several mistakes needs one fix, not several restarts.
//!
//! Every default of this crate's settings is defined here, once (the worker's, the secrets'
//! cache lifetime, the local check commands); the modules that use them import them from here,
//! never the other way round. The store's `StoreConfig` and the App's `GithubSettings` keep
//! their parsers in their own crates, which this one depends on. Secrets named by
//! `*_SECRET_ARN` are not read here: [`crate::secrets`] reads them, after the configuration is
//! known. Telemetry
//! (`CONVERGE_LOG`, `OTEL_*`) is the one exception: it starts before the configuration is read,
//! so that a configuration error is itself logged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use converge_core::PolicyConfig;
use converge_github::app::GithubSettings;
use converge_store::StoreConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Every setting of a server process (the API and webhook functions, the worker function,
/// `converge serve` and `converge worker`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The store: `CONVERGE_DB_BACKEND`, `CONVERGE_DB_PATH`, `CONVERGE_PG_DSN` (or
    /// `CONVERGE_PG_DSN_SECRET_ARN`), `CONVERGE_DB_POOL_SIZE`.
    pub store: StoreConfig,
    /// The HTTP API and the webhook.
    pub api: ApiSettings,
    /// The queue worker (`CONVERGE_WORKER_*`).
    pub worker: WorkerSettings,
    /// The GitHub App (`CONVERGE_GITHUB_APP_*` and friends); `None` when no App is set up.
    pub github: Option<GithubSettings>,
    /// The SQS queues.
    pub queue: QueueSettings,
    /// The local repository and its checks.
    pub local: LocalSettings,
    /// How long a secret read from Secrets Manager is reused (`CONVERGE_SECRETS_TTL_SECONDS`,
    /// 1–300, default 300).
    pub secrets_ttl: Duration,
    /// The limits of `converge serve`'s HTTP server (`CONVERGE_HTTP_*`).
    pub server: ServerSettings,
    /// Retention and the audit chain's signing key (`CONVERGE_RETENTION_*`,
    /// `CONVERGE_AUDIT_SIGNING_KEY`).
    pub audit: AuditSettings,
    /// The policy (profiles, origin overrides, the `queue` and `risk` sections) and the file it
    /// was read from (`CONVERGE_POLICY_PATH`, else [`POLICY_FILE`]); the built-in policy when
    /// there is none.
    pub policy: PolicySettings,
}

/// The settings that could not be used, each naming its variable (never a secret's value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Reads every setting from the process's environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads every setting through `lookup`; the error lists every unusable one.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();
        let store = problems.keep(StoreConfig::from_lookup(&lookup).map_err(|e| e.to_string()));
        let api = problems.keep(ApiSettings::from_lookup(&lookup));
        let worker = problems.keep(WorkerSettings::from_lookup(&lookup));
        let github = problems.keep(GithubSettings::from_lookup(&lookup).map_err(|e| e.to_string()));
        let local = problems.keep(LocalSettings::from_lookup(&lookup));
        let secrets_ttl = problems.keep(secrets_ttl(&lookup));
        let server = problems.keep(ServerSettings::from_lookup(&lookup));
        let audit = problems.keep(AuditSettings::from_lookup(&lookup));
        let policy = problems.keep(PolicySettings::from_lookup(&lookup));
        match (
            store,
            api,
            worker,
            github,
            local,
            secrets_ttl,
            server,
            audit,
            policy,
        ) {
            (
                Some(store),
                Some(api),
                Some(worker),
                Some(github),
                Some(local),
                Some(secrets_ttl),
                Some(server),
                Some(audit),
                Some(policy),
            ) => Ok(Config {
                store,
                api,
                worker,
                github,
                queue: QueueSettings::from_lookup(&lookup),
                local,
                secrets_ttl,
                server,
                audit,
                policy,
            }),
            _ => Err(ConfigError(problems.0)),
        }
    }
}

/// The unusable values found while reading settings, each naming its variable. Within a
/// section, a setting found unusable is read as its default meanwhile ([`Problems::or`]), so the
/// reading goes on and the error lists every problem, not only the first; across sections, a
/// section that does not parse is noted and the next one read ([`Problems::keep`]).
#[derive(Debug, Default)]
struct Problems(Vec<String>);

impl Problems {
    /// The value of a section that parsed; `None`, with the problem noted, otherwise.
    fn keep<T>(&mut self, result: Result<T, String>) -> Option<T> {
        result.map_err(|problem| self.0.push(problem)).ok()
    }

    /// `result`'s value, or `fallback` with the problem noted.
    fn or<T>(&mut self, result: Result<T, String>, fallback: T) -> T {
        result.unwrap_or_else(|problem| {
            self.0.push(problem);
            fallback
        })
    }

    /// Notes a problem found by a check across settings.
    fn note(&mut self, problem: String) {
        self.0.push(problem);
    }

    /// `value` when nothing was noted; every problem otherwise.
    fn into_result<T>(self, value: T) -> Result<T, String> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0.join("; "))
        }
    }
}

/// A variable's value, trimmed; `None` when unset or blank.
fn non_empty(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// What is kept how long, and the key that signs what pruning leaves of the audit chain.
#[derive(Debug, Clone, Default)]
pub struct AuditSettings {
    /// Events older than this are pruned by the sweep, from the start of each tenant's chain
    /// (`CONVERGE_RETENTION_EVENTS_DAYS`, 1–36500; unset: kept forever).
    pub events: Option<chrono::Duration>,
    /// Outbox rows sent longer ago than this are deleted by the sweep
    /// (`CONVERGE_RETENTION_OUTBOX_DAYS`, 1–36500; unset: kept forever).
    pub sent_outbox: Option<chrono::Duration>,
    /// The key pruning signs its anchors with, and verification checks them with
    /// (`CONVERGE_AUDIT_SIGNING_KEY`, at least 32 bytes; required with events retention).
    pub signing_key: Option<converge_core::audit::SigningKey>,
    /// The same key from Secrets Manager (`CONVERGE_AUDIT_SIGNING_KEY_SECRET_ARN`), read once
    /// when the process starts (`services::Services::from_config`) when the plain key is unset.
    pub signing_key_secret_arn: Option<String>,
}

impl AuditSettings {
    /// Reads the settings; the error names every unusable variable (never the key).
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<AuditSettings, String> {
        let days = |name: &str| -> Result<Option<chrono::Duration>, String> {
            non_empty(lookup, name)
                .map(|v| match v.parse::<i64>() {
                    Ok(n) if (1..=36_500).contains(&n) => Ok(chrono::Duration::days(n)),
                    _ => Err(format!(
                        "{name} must be a whole number of days from 1 to 36500, got '{v}'"
                    )),
                })
                .transpose()
        };
        let mut problems = Problems::default();
        let events = problems.or(days("CONVERGE_RETENTION_EVENTS_DAYS"), None);
        let sent_outbox = problems.or(days("CONVERGE_RETENTION_OUTBOX_DAYS"), None);
        let signing_key = lookup("CONVERGE_AUDIT_SIGNING_KEY")
            .filter(|k| !k.is_empty())
            .map(|k| {
                converge_core::audit::SigningKey::new(k.into_bytes())
                    .map_err(|e| format!("CONVERGE_AUDIT_SIGNING_KEY: {e}"))
            })
            .transpose();
        // An unusable key is its own problem: the retention's need of one is not noted again.
        let key_unusable = signing_key.is_err();
        let signing_key = problems.or(signing_key, None);
        let signing_key_secret_arn = non_empty(lookup, "CONVERGE_AUDIT_SIGNING_KEY_SECRET_ARN");
        // Retention asked for (even with an unusable number of days) needs a key.
        let retention_asked = non_empty(lookup, "CONVERGE_RETENTION_EVENTS_DAYS").is_some();
        if retention_asked
            && signing_key.is_none()
            && signing_key_secret_arn.is_none()
            && !key_unusable
        {
            problems.note(
                "CONVERGE_RETENTION_EVENTS_DAYS needs CONVERGE_AUDIT_SIGNING_KEY (or \
                 CONVERGE_AUDIT_SIGNING_KEY_SECRET_ARN): pruned events leave a signed anchor so \
                 the audit chain still verifies"
                    .to_owned(),
            );
        }
        problems.into_result(AuditSettings {
            events,
            sent_outbox,
            signing_key,
            signing_key_secret_arn,
        })
    }
}

/// Where a server looks for its policy file when `CONVERGE_POLICY_PATH` is unset, from its
/// working directory: the original's first place. (Its next, a bare `policy.json`, is not
/// looked for: a repository may hold an unrelated file of that name, and it would stop every
/// process started there.)
pub const POLICY_FILE: &str = ".converge/policy.json";

/// The policy a server decides by (`converge_core::policy`, in the `policy.json` shape).
#[derive(Debug, Clone, Default)]
pub struct PolicySettings {
    /// The policy: the file's over the built-in defaults.
    pub config: PolicyConfig,
    /// The file it was read from; `None`: the built-in policy.
    pub file: Option<PathBuf>,
}

impl PolicySettings {
    /// Reads the file `CONVERGE_POLICY_PATH` names (it must exist), or else [`POLICY_FILE`] if
    /// it exists. A file that cannot be read or does not validate is an error naming the file
    /// and the field: a server never runs on a policy other than the one given.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<PolicySettings, String> {
        let file = match non_empty(lookup, "CONVERGE_POLICY_PATH") {
            Some(named) => PathBuf::from(named),
            None if Path::new(POLICY_FILE).exists() => PathBuf::from(POLICY_FILE),
            None => return Ok(PolicySettings::default()),
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read the policy file {}: {e}", file.display()))?;
        let config = PolicyConfig::from_json_str(&text)
            .map_err(|e| format!("the policy file {}: {e}", file.display()))?;
        Ok(PolicySettings {
            config,
            file: Some(file),
        })
    }
}

/// The longest and default time a secret read from Secrets Manager is reused
/// (`CONVERGE_SECRETS_TTL_SECONDS`).
pub const SECRET_TTL: Duration = Duration::from_secs(300);

/// `CONVERGE_SECRETS_TTL_SECONDS`: 1 to 300 seconds, default 300.
pub fn secrets_ttl(lookup: &impl Fn(&str) -> Option<String>) -> Result<Duration, String> {
    match non_empty(lookup, "CONVERGE_SECRETS_TTL_SECONDS") {
        None => Ok(SECRET_TTL),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=SECRET_TTL.as_secs()).contains(n))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("CONVERGE_SECRETS_TTL_SECONDS must be 1 to 300, got '{v}'")),
    }
}

/// The limits of the HTTP server `converge serve` runs (shared/http's `server`). The functions
/// behind API Gateway have API Gateway's and Lambda's limits instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// A request's headers must arrive within this of the connection opening, or of the first
    /// byte of a later request on a kept-alive connection
    /// (`CONVERGE_HTTP_HEADER_TIMEOUT_SECONDS`, default 10).
    pub header_timeout: Duration,
    /// A request's body must arrive whole within this of its headers; later, the answer is a
    /// 408 (`CONVERGE_HTTP_BODY_TIMEOUT_SECONDS`, default 30).
    pub body_timeout: Duration,
    /// A kept-alive connection with no request closes after this
    /// (`CONVERGE_HTTP_IDLE_TIMEOUT_SECONDS`, default 75: longer than the 60 s of the usual load
    /// balancers in front, so they close first).
    pub idle_timeout: Duration,
    /// Open connections at most; at the cap, the one waiting longest without a request is
    /// closed for a newcomer, or the newcomer gets a 503 when all are busy
    /// (`CONVERGE_HTTP_MAX_CONNECTIONS`, default 512; keep it well below the open-files limit).
    pub max_connections: usize,
    /// After SIGTERM, requests in progress get at most this long before the process exits
    /// (`CONVERGE_HTTP_SHUTDOWN_SECONDS`, default 10).
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl ServerSettings {
    /// Reads the `CONVERGE_HTTP_*` settings; each must be a whole number in its range, and the
    /// error names every one that is not.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ServerSettings, String> {
        let defaults = ServerSettings::default();
        let number = |name: &str, default: u64, max: u64| -> Result<u64, String> {
            match non_empty(&lookup, name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        format!("{name} must be a whole number from 1 to {max}, got '{v}'")
                    }),
            }
        };
        let seconds = |name: &str, default: Duration| {
            number(name, default.as_secs(), 3_600).map(Duration::from_secs)
        };
        let mut problems = Problems::default();
        let max_connections = problems.or(
            number(
                "CONVERGE_HTTP_MAX_CONNECTIONS",
                defaults.max_connections as u64,
                1_000_000,
            ),
            defaults.max_connections as u64,
        );
        let mut seconds_or_default =
            |name: &str, default: Duration| problems.or(seconds(name, default), default);
        let settings = ServerSettings {
            header_timeout: seconds_or_default(
                "CONVERGE_HTTP_HEADER_TIMEOUT_SECONDS",
                defaults.header_timeout,
            ),
            body_timeout: seconds_or_default(
                "CONVERGE_HTTP_BODY_TIMEOUT_SECONDS",
                defaults.body_timeout,
            ),
            idle_timeout: seconds_or_default(
                "CONVERGE_HTTP_IDLE_TIMEOUT_SECONDS",
                defaults.idle_timeout,
            ),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            shutdown_grace: seconds_or_default(
                "CONVERGE_HTTP_SHUTDOWN_SECONDS",
                defaults.shutdown_grace,
            ),
        };
        problems.into_result(settings)
    }
}

/// The SQS queues: `CONVERGE_QUEUE_URL` (workers take their work from it, the API and
/// webhook relay to it) and `CONVERGE_DLQ_URL` (its dead-letter queue).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSettings {
    /// The queue, when work goes through SQS.
    pub queue_url: Option<String>,
    /// Its dead-letter queue.
    pub dlq_url: Option<String>,
}

impl QueueSettings {
    /// Reads the queue URLs through `lookup`.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> QueueSettings {
        QueueSettings {
            queue_url: non_empty(lookup, "CONVERGE_QUEUE_URL"),
            dlq_url: non_empty(lookup, "CONVERGE_DLQ_URL"),
        }
    }
}

/// The local repository (`CONVERGE_REPO_PATH`) and how its checks are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// The repository; `None` means the working directory when it is a git work tree.
    pub repo_path: Option<PathBuf>,
    /// Its checks.
    pub checks: LocalChecksSettings,
}

/// Default of `CONVERGE_LOCAL_CHECK_COMMANDS`: the reference's check commands.
pub const DEFAULT_LOCAL_CHECK_COMMANDS: &str = "lint=make lint,unit_tests=make test,integration_tests=make test-integration,security_scan=make security-scan,contract_tests=make test-contract";

/// Default of `CONVERGE_CHECK_TIMEOUT`.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// How the checks of the local repository are found (`CONVERGE_LOCAL_CHECKS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalChecksSettings {
    /// `reported` (the default): CI reports results to `POST /v1/intents/{id}/checks`.
    Reported,
    /// `commands`: each check is a shell command run in a work tree of the head.
    Commands {
        /// `name=command` pairs, comma-separated (`CONVERGE_LOCAL_CHECK_COMMANDS`).
        commands: String,
        /// How long one command may run (`CONVERGE_CHECK_TIMEOUT`, seconds, default 300).
        timeout: Duration,
    },
}

impl LocalSettings {
    /// Reads the local settings through `lookup`.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<LocalSettings, String> {
        let mut problems = Problems::default();
        let timeout = match non_empty(lookup, "CONVERGE_CHECK_TIMEOUT") {
            None => Ok(DEFAULT_CHECK_TIMEOUT),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .ok_or_else(|| {
                    format!("CONVERGE_CHECK_TIMEOUT must be a number of seconds, got '{v}'")
                }),
        };
        // An unusable timeout is refused whatever the mode: it is a mistake either way.
        let timeout = problems.or(timeout, DEFAULT_CHECK_TIMEOUT);
        let checks = match non_empty(lookup, "CONVERGE_LOCAL_CHECKS").as_deref() {
            None | Some("reported") => LocalChecksSettings::Reported,
            Some("commands") => LocalChecksSettings::Commands {
                commands: non_empty(lookup, "CONVERGE_LOCAL_CHECK_COMMANDS")
                    .unwrap_or_else(|| DEFAULT_LOCAL_CHECK_COMMANDS.to_owned()),
                timeout,
            },
            Some(other) => {
                problems.note(format!(
                    "CONVERGE_LOCAL_CHECKS must be 'reported' or 'commands', got '{other}'"
                ));
                LocalChecksSettings::Reported
            }
        };
        problems.into_result(LocalSettings {
            repo_path: non_empty(lookup, "CONVERGE_REPO_PATH").map(PathBuf::from),
            checks,
        })
    }
}

/// Default requests per minute per tenant.
pub const DEFAULT_RATE_LIMIT_RPM: u32 = 120;

/// Default of `CONVERGE_AUTH_FREE_FAILURES`.
pub const DEFAULT_AUTH_FREE_FAILURES: u32 = 10;

/// API settings: `CONVERGE_AUTH_REQUIRED` (default 1), `CONVERGE_API_KEYS`,
/// `CONVERGE_RATE_LIMIT_ENABLED` (default 1), `CONVERGE_RATE_LIMIT_RPM` (default 120),
/// `CONVERGE_METRICS_TOKEN` (optional), `CONVERGE_AUTH_FREE_FAILURES` (default 10).
#[derive(Clone)]
pub struct ApiSettings {
    /// Whether requests need an API key.
    pub auth_required: bool,
    /// Failed authentications a client address or key prefix may make before each further
    /// one makes it wait (`CONVERGE_AUTH_FREE_FAILURES`, default 10).
    pub auth_free_failures: u32,
    /// Requests per minute per tenant, or `None` when rate limiting is off.
    pub rate_limit_rpm: Option<u32>,
    /// Keys to seed into the store at start.
    pub api_keys: Vec<ApiKeySpec>,
    /// A Secrets Manager secret holding more keys in the form of `CONVERGE_API_KEYS`
    /// (`CONVERGE_API_KEYS_SECRET_ARN`): seeded at start and again whenever its value changes
    /// (checked once per cache lifetime); a key dropped from it is revoked.
    pub api_keys_secret_arn: Option<String>,
    /// When set, `/metrics` answers only `Authorization: Bearer <token>` (its labels name
    /// tenants, repositories and lease holders; set it wherever `/metrics` is reachable from
    /// outside).
    pub metrics_token: Option<String>,
    /// Whether `/metrics` names tenants (and the actors of untenanted keys) in its labels
    /// (`CONVERGE_METRICS_TENANT_LABELS`, default 0: series are summed over tenants, so a
    /// scrape reveals no customer names).
    pub metrics_tenant_labels: bool,
    /// Secrets that sign webhook deliveries (`CONVERGE_GITHUB_WEBHOOK_SECRET`, several
    /// separated by commas during a rotation). None and auth required: every delivery is
    /// refused.
    pub webhook_secrets: Vec<converge_github::signature::WebhookSecret>,
    /// A Secrets Manager secret holding the webhook secret(s) in the same form
    /// (`CONVERGE_GITHUB_WEBHOOK_SECRET_ARN`): read through the API's Secrets Manager client, so a
    /// rotation is picked up within the cache's lifetime. It replaces
    /// `CONVERGE_GITHUB_WEBHOOK_SECRET` when both are set.
    pub webhook_secret_arn: Option<String>,
    /// Largest webhook body accepted (`CONVERGE_WEBHOOK_MAX_BODY_BYTES`, 1 MiB).
    pub webhook_max_body_bytes: usize,
    /// Tenant of intents created from GitHub (`CONVERGE_GITHUB_DEFAULT_TENANT`).
    pub github_default_tenant: Option<String>,
}

/// Default of `CONVERGE_WEBHOOK_MAX_BODY_BYTES`.
pub const WEBHOOK_MAX_BODY_BYTES: usize = 1_048_576;

fn flag(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: bool,
) -> Result<bool, String> {
    match lookup(name).as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some("1" | "true" | "yes") => Ok(true),
        Some("0" | "false" | "no") => Ok(false),
        Some(other) => Err(format!("{name} must be 1 or 0, got '{other}'")),
    }
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("auth_required", &self.auth_required)
            .field("auth_free_failures", &self.auth_free_failures)
            .field("rate_limit_rpm", &self.rate_limit_rpm)
            .field("api_keys", &self.api_keys)
            .field("api_keys_secret_arn", &self.api_keys_secret_arn)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_secrets", &self.webhook_secrets.len())
            .field("webhook_secret_arn", &self.webhook_secret_arn)
            .field("webhook_max_body_bytes", &self.webhook_max_body_bytes)
            .field("github_default_tenant", &self.github_default_tenant)
            .finish()
    }
}

impl Default for ApiSettings {
    /// What an empty environment gives: authentication and rate limiting on, no keys, no
    /// webhook secret (deliveries refused).
    fn default() -> Self {
        ApiSettings {
            auth_required: true,
            auth_free_failures: DEFAULT_AUTH_FREE_FAILURES,
            rate_limit_rpm: Some(DEFAULT_RATE_LIMIT_RPM),
            api_keys: Vec::new(),
            api_keys_secret_arn: None,
            metrics_token: None,
            metrics_tenant_labels: false,
            webhook_secrets: Vec::new(),
            webhook_secret_arn: None,
            webhook_max_body_bytes: WEBHOOK_MAX_BODY_BYTES,
            github_default_tenant: None,
        }
    }
}

impl ApiSettings {
    /// Reads the settings through `lookup` (the environment in production).
    /// Every unusable setting is named in the error, not only the first.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ApiSettings, String> {
        let mut problems = Problems::default();
        let positive = |name: &str, default: u64| match lookup(name).as_deref().map(str::trim) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} must be a positive integer, got '{v}'")),
        };
        let auth_required = problems.or(flag(&lookup, "CONVERGE_AUTH_REQUIRED", true), true);
        let rate_limited = problems.or(flag(&lookup, "CONVERGE_RATE_LIMIT_ENABLED", true), true);
        let rpm = problems.or(
            positive("CONVERGE_RATE_LIMIT_RPM", DEFAULT_RATE_LIMIT_RPM.into()).and_then(|n| {
                u32::try_from(n).map_err(|_| format!("CONVERGE_RATE_LIMIT_RPM is too large: {n}"))
            }),
            DEFAULT_RATE_LIMIT_RPM,
        );
        let auth_free_failures = problems.or(
            positive(
                "CONVERGE_AUTH_FREE_FAILURES",
                DEFAULT_AUTH_FREE_FAILURES.into(),
            )
            .and_then(|n| {
                u32::try_from(n)
                    .map_err(|_| format!("CONVERGE_AUTH_FREE_FAILURES is too large: {n}"))
            }),
            DEFAULT_AUTH_FREE_FAILURES,
        );
        let api_keys = problems.or(
            parse_api_keys(&lookup("CONVERGE_API_KEYS").unwrap_or_default()),
            Vec::new(),
        );
        let metrics_tenant_labels = problems.or(
            flag(&lookup, "CONVERGE_METRICS_TENANT_LABELS", false),
            false,
        );
        let webhook_max_body_bytes = problems.or(
            positive(
                "CONVERGE_WEBHOOK_MAX_BODY_BYTES",
                WEBHOOK_MAX_BODY_BYTES as u64,
            )
            .and_then(|n| {
                usize::try_from(n)
                    .map_err(|_| format!("CONVERGE_WEBHOOK_MAX_BODY_BYTES is too large: {n}"))
            }),
            WEBHOOK_MAX_BODY_BYTES,
        );
        let metrics_token = lookup("CONVERGE_METRICS_TOKEN").filter(|t| !t.trim().is_empty());
        problems.into_result(ApiSettings {
            auth_required,
            auth_free_failures,
            rate_limit_rpm: rate_limited.then_some(rpm),
            api_keys,
            api_keys_secret_arn: lookup("CONVERGE_API_KEYS_SECRET_ARN")
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty()),
            metrics_token,
            metrics_tenant_labels,
            webhook_secrets: converge_github::signature::parse_secrets(
                &lookup("CONVERGE_GITHUB_WEBHOOK_SECRET").unwrap_or_default(),
            ),
            webhook_secret_arn: lookup("CONVERGE_GITHUB_WEBHOOK_SECRET_ARN")
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty()),
            webhook_max_body_bytes,
            github_default_tenant: lookup("CONVERGE_GITHUB_DEFAULT_TENANT")
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
        })
    }
}

/// What a key may do, in increasing power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads and queue operations.
    Operator,
    /// Everything, key rotation included.
    Admin,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            // The value is not repeated: in a misordered entry it may be part of a key.
            _ => Err("unknown role (expected viewer, operator or admin)".to_owned()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// SHA-256 of a key, hex: all the store ever holds of a key.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One entry of `CONVERGE_API_KEYS`: `key:role:actor:tenant:scopes`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySpec {
    key: String,
    /// Role.
    pub role: Role,
    /// Actor.
    pub actor: String,
    /// Tenant, if the key is confined to one.
    pub tenant: Option<String>,
    /// Scopes, if the key declares any.
    pub scopes: Option<Vec<String>>,
}

impl ApiKeySpec {
    /// The hash of the key, as the store keeps it.
    pub fn key_hash(&self) -> String {
        hash_key(&self.key)
    }
}

impl fmt::Debug for ApiKeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeySpec")
            .field("role", &self.role)
            .field("actor", &self.actor)
            .field("tenant", &self.tenant)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Parses `CONVERGE_API_KEYS`: entries separated by commas or newlines, each
/// `key:role:actor[:tenant[:scopes]]`; several scopes in one entry are separated by `|` or
/// spaces (`k1:operator:ci:acme:intents.read|queue.read`). An empty tenant means none; an
/// absent or empty scopes field means the role alone decides. A line starting with `#` is a
/// comment. Errors name the entry by position and never repeat the key.
pub fn parse_api_keys(text: &str) -> Result<Vec<ApiKeySpec>, String> {
    let mut specs = Vec::new();
    // Comments are whole lines, so that a comment may hold commas.
    for (index, entry) in text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
    {
        let position = index + 1;
        let parts: Vec<&str> = entry.splitn(5, ':').collect();
        if parts.len() < 3 || parts[0].is_empty() || parts[2].is_empty() {
            return Err(format!(
                "CONVERGE_API_KEYS entry {position}: expected key:role:actor[:tenant[:scopes]]"
            ));
        }
        let role = parts[1]
            .parse()
            .map_err(|e| format!("CONVERGE_API_KEYS entry {position}: {e}"))?;
        let tenant = parts
            .get(3)
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        let scopes: Option<Vec<String>> = parts.get(4).and_then(|s| {
            let list: Vec<String> = s
                .split(['|', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            (!list.is_empty()).then_some(list)
        });
        specs.push(ApiKeySpec {
            key: parts[0].to_owned(),
            role,
            actor: parts[2].to_owned(),
            tenant,
            scopes,
        });
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_needs_a_signing_key_and_sane_days_and_never_shows_the_key() {
        let settings = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            AuditSettings::from_lookup(&move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        let unset = settings(&[]).unwrap();
        assert!(unset.events.is_none() && unset.sent_outbox.is_none());
        let problem = settings(&[("CONVERGE_RETENTION_EVENTS_DAYS", "30")]).unwrap_err();
        assert!(problem.contains("CONVERGE_AUDIT_SIGNING_KEY"), "{problem}");
        for bad in ["0", "-3", "36501", "a week"] {
            let problem = settings(&[("CONVERGE_RETENTION_OUTBOX_DAYS", bad)]).unwrap_err();
            assert!(
                problem.contains("CONVERGE_RETENTION_OUTBOX_DAYS"),
                "{problem}"
            );
        }
        let short = "too-short-a-secret-to-sign";
        let problem = settings(&[("CONVERGE_AUDIT_SIGNING_KEY", short)]).unwrap_err();
        assert!(!problem.contains(short), "{problem}");
        let key = "k".repeat(32);
        let both = settings(&[
            ("CONVERGE_RETENTION_EVENTS_DAYS", "365"),
            ("CONVERGE_AUDIT_SIGNING_KEY", key.as_str()),
        ])
        .unwrap();
        assert_eq!(both.events, Some(chrono::Duration::days(365)));
        assert!(!format!("{both:?}").contains(&key));
        let from_secret = settings(&[
            ("CONVERGE_RETENTION_EVENTS_DAYS", "7"),
            (
                "CONVERGE_AUDIT_SIGNING_KEY_SECRET_ARN",
                "arn:aws:secretsmanager:x",
            ),
        ])
        .unwrap();
        assert!(from_secret.signing_key.is_none() && from_secret.signing_key_secret_arn.is_some());
    }

    #[test]
    fn keys_parse_with_several_scopes_and_no_tenant() {
        let specs = parse_api_keys(
            "k1:admin:ops::*, k2:operator:ci:acme:intents.read|queue.*\nk3:viewer:dash",
        )
        .unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(
            (specs[0].tenant.clone(), specs[0].scopes.clone()),
            (None, Some(vec!["*".to_owned()]))
        );
        assert_eq!(
            specs[1].scopes.clone().unwrap_or_default(),
            ["intents.read", "queue.*"]
        );
        assert_eq!(
            (specs[2].role, specs[2].scopes.clone()),
            (Role::Viewer, None)
        );
        let commented =
            parse_api_keys("# entries, one per line\nk4:viewer:dash, k5:viewer:dash").unwrap();
        assert_eq!(
            commented.len(),
            2,
            "a line starting with # is a comment, commas and all"
        );
        let error = parse_api_keys("secret-value:boss:x")
            .err()
            .unwrap_or_default();
        assert!(
            error.contains("entry 1") && !error.contains("secret-value"),
            "{error}"
        );
    }

    /// The template creates the keys' secret with a placeholder value: it must parse (to no
    /// key), or every API function would fail to seed its keys.
    #[test]
    fn the_templates_placeholder_for_the_keys_secret_parses() {
        let template = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml"),
        )
        .unwrap_or_else(|e| panic!("template.yaml: {e}"));
        let placeholder = template
            .split("ApiKeysSecret:")
            .nth(1)
            .and_then(|resource| resource.split("SecretString:").nth(1))
            .and_then(|rest| rest.lines().next())
            .map(|value| value.trim().trim_matches('"'))
            .unwrap_or_else(|| panic!("no SecretString for ApiKeysSecret in template.yaml"));
        assert_eq!(parse_api_keys(placeholder).map(|keys| keys.len()), Ok(0));
    }

    #[test]
    fn every_unusable_setting_is_reported_at_once() {
        // Several mistakes in one section as well as across sections: one error names them all.
        let error = Config::from_lookup(|name| match name {
            "CONVERGE_RATE_LIMIT_RPM" => Some("lots".to_owned()),
            "CONVERGE_AUTH_FREE_FAILURES" => Some("0".to_owned()),
            "CONVERGE_WORKER_BATCH_SIZE" => Some("-1".to_owned()),
            "CONVERGE_WORKER_LEASE_TTL" => Some("1".to_owned()),
            "CONVERGE_WORKER_AUTO_CONFIRM" => Some("maybe".to_owned()),
            "CONVERGE_TRAIN_DEPTH" => Some("99".to_owned()),
            "CONVERGE_HTTP_HEADER_TIMEOUT_SECONDS" => Some("0".to_owned()),
            "CONVERGE_HTTP_MAX_CONNECTIONS" => Some("many".to_owned()),
            "CONVERGE_RETENTION_OUTBOX_DAYS" => Some("a week".to_owned()),
            "CONVERGE_RETENTION_EVENTS_DAYS" => Some("0".to_owned()),
            "CONVERGE_LOCAL_CHECKS" => Some("command".to_owned()),
            "CONVERGE_CHECK_TIMEOUT" => Some("soon".to_owned()),
            "CONVERGE_SECRETS_TTL_SECONDS" => Some("3600".to_owned()),
            _ => None,
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        for variable in [
            "CONVERGE_RATE_LIMIT_RPM",
            "CONVERGE_AUTH_FREE_FAILURES",
            "CONVERGE_WORKER_BATCH_SIZE",
            "CONVERGE_WORKER_LEASE_TTL",
            "CONVERGE_WORKER_AUTO_CONFIRM",
            "CONVERGE_TRAIN_DEPTH",
            "CONVERGE_HTTP_HEADER_TIMEOUT_SECONDS",
            "CONVERGE_HTTP_MAX_CONNECTIONS",
            "CONVERGE_RETENTION_OUTBOX_DAYS",
            "CONVERGE_RETENTION_EVENTS_DAYS",
            "CONVERGE_LOCAL_CHECKS",
            "CONVERGE_CHECK_TIMEOUT",
            "CONVERGE_SECRETS_TTL_SECONDS",
            // Retention asked for with an unusable number of days still needs a key.
            "CONVERGE_RETENTION_EVENTS_DAYS needs CONVERGE_AUDIT_SIGNING_KEY",
        ] {
            assert!(error.contains(variable), "{variable} missing from: {error}");
        }
    }

    #[test]
    fn an_unusable_setting_is_reported_once_not_again_through_what_depends_on_it() {
        let worker = |pairs: &'static [(&'static str, &'static str)]| {
            WorkerSettings::from_lookup(|name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        // A misspelt mode is the problem; the method is not also said to need another mode.
        let problem = worker(&[
            ("CONVERGE_MERGE_MODE", "testd"),
            ("CONVERGE_MERGE_METHOD", "squash"),
        ])
        .unwrap_err();
        assert!(
            problem.contains("CONVERGE_MERGE_MODE must be head or tested"),
            "{problem}"
        );
        assert!(
            !problem.contains("needs CONVERGE_MERGE_MODE=tested"),
            "{problem}"
        );
        // With the mode given as head, the method's need of tested is the problem.
        let problem = worker(&[
            ("CONVERGE_MERGE_MODE", "head"),
            ("CONVERGE_MERGE_METHOD", "squash"),
            ("CONVERGE_WORKER_POLL_INTERVAL", "0"),
        ])
        .unwrap_err();
        assert!(
            problem.contains("needs CONVERGE_MERGE_MODE=tested"),
            "{problem}"
        );
        assert!(
            problem.contains("CONVERGE_WORKER_POLL_INTERVAL"),
            "{problem}"
        );
        assert!(
            worker(&[
                ("CONVERGE_MERGE_MODE", "tested"),
                ("CONVERGE_MERGE_METHOD", "squash")
            ])
            .is_ok()
        );
        // A signing key too short to use is reported as such, not also as missing.
        let audit = AuditSettings::from_lookup(&|name: &str| match name {
            "CONVERGE_RETENTION_EVENTS_DAYS" => Some("30".to_owned()),
            "CONVERGE_AUDIT_SIGNING_KEY" => Some("short".to_owned()),
            _ => None,
        })
        .unwrap_err();
        assert!(audit.contains("CONVERGE_AUDIT_SIGNING_KEY:"), "{audit}");
        assert!(
            !audit.contains("needs CONVERGE_AUDIT_SIGNING_KEY"),
            "{audit}"
        );
    }
}

/// The worker's settings (`CONVERGE_WORKER_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// Seconds between polls (`CONVERGE_WORKER_POLL_INTERVAL`, 5).
    pub poll_interval: Duration,
    /// Intents processed per key and round (`CONVERGE_WORKER_BATCH_SIZE`, 20).
    pub batch_size: u32,
    /// Failed attempts before rejection (`CONVERGE_WORKER_MAX_RETRIES`; the policy's
    /// `queue.max_retries` when unset).
    pub max_retries: Option<u32>,
    /// Merge passing intents (`CONVERGE_WORKER_AUTO_CONFIRM`, 0).
    pub auto_confirm: bool,
    /// Treat required checks as passed (`CONVERGE_WORKER_SKIP_CHECKS`, 0; the reference
    /// defaulted to 1, which let unchecked work through).
    pub skip_checks: bool,
    /// How long a key's lease lasts without renewal (`CONVERGE_WORKER_LEASE_TTL`, 60 s).
    pub lease_ttl: Duration,
    /// How often `converge worker` on SQS runs the sweep (`CONVERGE_WORKER_SWEEP_INTERVAL`,
    /// 60 s; the worker function is swept by its schedule instead).
    pub sweep_interval: Duration,
    /// The only target branch this worker processes (`CONVERGE_WORKER_TARGET`; unset: every
    /// target).
    pub target: Option<String>,
    /// Queue keys a worker processes at once (`CONVERGE_WORKER_CONCURRENCY`, 4): each key
    /// still has one round at a time (its lease), so this only spreads work across targets.
    pub concurrency: usize,
    /// How queued intents land (`CONVERGE_MERGE_MODE`: `head`, the default, merges each
    /// validated head; `tested` tests candidates and fast-forwards to exactly what passed).
    pub merge_mode: converge_core::train::MergeMode,
    /// How an intent is written onto the target in tested mode (`CONVERGE_MERGE_METHOD`:
    /// `merge`, the default, `squash` or `rebase`; head mode merges only).
    pub merge_method: converge_core::train::MergeMethod,
    /// The tested queue: `CONVERGE_TRAIN_BATCH_SIZE` (8), `CONVERGE_TRAIN_DEPTH` (3),
    /// `CONVERGE_TRAIN_FLAKY_RERUNS` (1), `CONVERGE_TRAIN_KNOWN_FLAKY` (check names, comma
    /// separated).
    pub train: converge_core::train::TrainSettings,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            poll_interval: Duration::from_secs(5),
            batch_size: 20,
            max_retries: None,
            auto_confirm: false,
            skip_checks: false,
            lease_ttl: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(60),
            target: None,
            concurrency: 4,
            merge_mode: converge_core::train::MergeMode::Head,
            merge_method: converge_core::train::MergeMethod::Merge,
            train: converge_core::train::TrainSettings::default(),
        }
    }
}

impl WorkerSettings {
    /// Reads the settings; the error names every unusable variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<WorkerSettings, String> {
        let defaults = WorkerSettings::default();
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let number = |name: &str, min: u64, max: u64| -> Result<Option<u64>, String> {
            get(name)
                .map(|v| match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(format!(
                        "{name} must be a whole number from {min} to {max}, got '{v}'"
                    )),
                })
                .transpose()
        };
        let flag = |name: &str, default: bool| -> Result<bool, String> {
            match get(name).as_deref() {
                None => Ok(default),
                Some("1" | "true" | "yes") => Ok(true),
                Some("0" | "false" | "no") => Ok(false),
                Some(other) => Err(format!("{name} must be 1 or 0, got '{other}'")),
            }
        };
        let mut problems = Problems::default();
        // `None`: unusable (noted), and then not checked against the method either.
        let merge_mode = match get("CONVERGE_MERGE_MODE").as_deref() {
            None | Some("head") => Some(converge_core::train::MergeMode::Head),
            Some("tested") => Some(converge_core::train::MergeMode::Tested),
            Some(other) => {
                problems.note(format!(
                    "CONVERGE_MERGE_MODE must be head or tested, got '{other}'"
                ));
                None
            }
        };
        let merge_method = match get("CONVERGE_MERGE_METHOD").as_deref() {
            None | Some("merge") => converge_core::train::MergeMethod::Merge,
            Some("squash") => converge_core::train::MergeMethod::Squash,
            Some("rebase") => converge_core::train::MergeMethod::Rebase,
            Some(other) => {
                problems.note(format!(
                    "CONVERGE_MERGE_METHOD must be merge, squash or rebase, got '{other}'"
                ));
                defaults.merge_method
            }
        };
        if merge_mode == Some(converge_core::train::MergeMode::Head)
            && merge_method != converge_core::train::MergeMethod::Merge
        {
            problems.note(
                "CONVERGE_MERGE_METHOD squash or rebase needs CONVERGE_MERGE_MODE=tested (head \
                 mode writes merge commits only)"
                    .to_owned(),
            );
        }
        let merge_mode = merge_mode.unwrap_or(defaults.merge_mode);
        let mut number = |name: &str, min: u64, max: u64| problems.or(number(name, min, max), None);
        let poll_interval = number("CONVERGE_WORKER_POLL_INTERVAL", 1, 3_600);
        let batch_size = number("CONVERGE_WORKER_BATCH_SIZE", 1, 1_000);
        let max_retries = number("CONVERGE_WORKER_MAX_RETRIES", 1, 100);
        let lease_ttl = number("CONVERGE_WORKER_LEASE_TTL", 5, 3_600);
        let sweep_interval = number("CONVERGE_WORKER_SWEEP_INTERVAL", 1, 86_400);
        let concurrency = number("CONVERGE_WORKER_CONCURRENCY", 1, 64);
        let train_batch_size = number("CONVERGE_TRAIN_BATCH_SIZE", 1, 64);
        let train_depth = number("CONVERGE_TRAIN_DEPTH", 1, 16);
        let flaky_reruns = number("CONVERGE_TRAIN_FLAKY_RERUNS", 0, 3);
        let auto_confirm = problems.or(
            flag("CONVERGE_WORKER_AUTO_CONFIRM", defaults.auto_confirm),
            defaults.auto_confirm,
        );
        let skip_checks = problems.or(
            flag("CONVERGE_WORKER_SKIP_CHECKS", defaults.skip_checks),
            defaults.skip_checks,
        );
        problems.into_result(WorkerSettings {
            poll_interval: poll_interval.map_or(defaults.poll_interval, Duration::from_secs),
            batch_size: batch_size.map_or(defaults.batch_size, |n| n as u32),
            max_retries: max_retries.map(|n| n as u32),
            auto_confirm,
            skip_checks,
            lease_ttl: lease_ttl.map_or(defaults.lease_ttl, Duration::from_secs),
            sweep_interval: sweep_interval.map_or(defaults.sweep_interval, Duration::from_secs),
            target: get("CONVERGE_WORKER_TARGET"),
            concurrency: concurrency.map_or(defaults.concurrency, |n| n as usize),
            merge_mode,
            merge_method,
            train: converge_core::train::TrainSettings {
                batch_size: train_batch_size.map_or(defaults.train.batch_size, |n| n as usize),
                depth: train_depth.map_or(defaults.train.depth, |n| n as usize),
                flaky_reruns: flaky_reruns.map_or(defaults.train.flaky_reruns, |n| n as u32),
                known_flaky: get("CONVERGE_TRAIN_KNOWN_FLAKY")
                    .map(|names| {
                        names
                            .split(',')
                            .map(str::trim)
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            },
        })
    }

    /// Whether this worker processes `key` (every key unless `CONVERGE_WORKER_TARGET` names
    /// one target branch).
    pub fn takes(&self, key: &converge_core::queue::QueueKey) -> bool {
        self.target
            .as_deref()
            .is_none_or(|target| target == key.target)
    }
}
