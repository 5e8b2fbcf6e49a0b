//! The composition root: [`Services`], everything a Converge process works with, built once
//! from the typed configuration by [`Services::from_config`]. `converge serve`, `converge
//! worker`, the three Lambda functions and the CLI's in-process API all start here; the CLI's
//! store commands and `converge doctor` open their store with [`store_from_env`]. No other
//! crate wires a store, ports, queues or secrets together.

use std::sync::Arc;

use converge_core::PolicyConfig;
use converge_core::pipeline::{Clock, IdSource};
use converge_store::{Store, StoreError, SystemClock};
use rand::Rng as _;

use crate::config::{ApiSettings, AuditSettings, Config, ConfigError};
use crate::local_checks::LocalChecks;
use crate::local_git::GitScm;
use crate::queue_worker::{QueueProcessor, WorkerPorts, WorkerSettings};
use crate::routed::RoutedPorts;
use crate::secrets::{Rotation, Secrets, WatchedSecret};
use crate::sqs::SqsQueue;

/// Why the services could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// A setting is unusable (each named).
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// A setting or a secret it names cannot be used.
    #[error("configuration: {0}")]
    Setting(String),
    /// The store refused (opening or migrating).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServicesError {
    /// The message without the `configuration:` prefix (for a report that names the setting
    /// itself, such as `converge doctor`'s).
    pub fn detail(&self) -> String {
        match self {
            ServicesError::Setting(message) => message.clone(),
            other => other.to_string(),
        }
    }
}

/// The queue processor every worker of this process runs: the routed ports on every side.
pub type Processor = QueueProcessor<RoutedPorts, RoutedPorts, RoutedPorts>;

/// How often a process applies retention (`CONVERGE_RETENTION_*`).
pub const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3_600);

/// Everything a Converge process works with.
pub struct Services {
    /// The store (migrated).
    pub store: Store,
    /// Time.
    pub clock: Arc<dyn Clock + Send + Sync>,
    /// Policy (defaults for intents, risk gate).
    pub policy: PolicyConfig,
    /// The API and webhook settings.
    pub api: ApiSettings,
    /// The worker settings (`CONVERGE_WORKER_*`).
    pub worker: WorkerSettings,
    /// What intents are validated and merged through: the local repository and its checks,
    /// and the GitHub App, each when configured.
    pub ports: RoutedPorts,
    /// The SQS queue (`CONVERGE_QUEUE_URL`), when workers take their work from SQS.
    pub queue: Option<SqsQueue>,
    /// Its dead-letter queue (`CONVERGE_DLQ_URL`).
    pub dlq: Option<SqsQueue>,
    /// Secrets Manager with its cache, for the secrets read per use (the webhook secret, the
    /// API keys); `None` when none is configured.
    pub secrets: Option<Arc<Secrets>>,
    /// The secrets this process built objects from (the DSN, the App key).
    pub rotation: Rotation,
    /// The API keys' secret (`CONVERGE_API_KEYS_SECRET_ARN`), seeded when it changes.
    pub api_keys_secret: Option<WatchedSecret>,
    /// Notified after a change that calls for queue work was committed, so that a worker in
    /// this process starts at once instead of at its next poll (the outbox row is what
    /// guarantees the work; this only shortens the wait).
    pub queue_wakeup: Arc<tokio::sync::Notify>,
    /// Retention and the audit chain's signing key.
    pub audit: AuditSettings,
    /// Webhook deliveries about intents waiting to be written together (group commit): what
    /// each decides and answers (`commands::record_delivery`).
    pub delivery_groups: converge_store::DeliveryGroups<(serde_json::Value, bool)>,
    /// When this process last applied retention.
    retention_ran: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// The UTC hour (`YYYYMMDDTHH`) this process last took the analytics snapshots in.
    snapshot_hour: Arc<std::sync::Mutex<Option<String>>>,
    /// Auto intake's signals per tenant (`""`: none) as this process last counted them, and
    /// when (see `intake_control::SIGNALS_REUSED_FOR`).
    intake_signals: Arc<std::sync::Mutex<IntakeSignalsKept>>,
}

/// Intake signals kept per tenant, with the moment they were counted.
type IntakeSignalsKept = std::collections::HashMap<
    String,
    (
        std::time::Instant,
        converge_core::intake_mode::IntakeSignals,
    ),
>;

impl Services {
    /// Services over `store` with the default settings and no ports, queues or secrets: for
    /// tests and tools that bring their own store.
    pub fn new(store: Store, clock: Arc<dyn Clock + Send + Sync>, api: ApiSettings) -> Services {
        Services {
            delivery_groups: converge_store::DeliveryGroups::new(store.clone()),
            store,
            clock,
            policy: PolicyConfig::default(),
            api,
            worker: WorkerSettings::default(),
            ports: RoutedPorts::new(None, None),
            queue: None,
            dlq: None,
            secrets: None,
            rotation: Rotation::new(crate::secrets::SECRET_TTL),
            api_keys_secret: None,
            queue_wakeup: Arc::new(tokio::sync::Notify::new()),
            audit: AuditSettings::default(),
            retention_ran: Arc::default(),
            snapshot_hour: Arc::default(),
            intake_signals: Arc::default(),
        }
    }

    /// The services the environment configures (see [`Services::from_config`]).
    pub async fn from_env() -> Result<Services, ServicesError> {
        Services::from_config(Config::from_env()?).await
    }

    /// The one wiring of a Converge process: the store (its DSN from Secrets Manager when only
    /// the ARN is set; migrated), the ports (the local repository — `CONVERGE_REPO_PATH`, or
    /// the working directory when it is a git work tree — with its checks, and the GitHub App,
    /// its key from a file, the environment or Secrets Manager), the SQS queue and DLQ when
    /// `CONVERGE_QUEUE_URL` is set, and the secrets watched for rotation.
    pub async fn from_config(config: Config) -> Result<Services, ServicesError> {
        let mut rotation = Rotation::new(config.secrets_ttl);
        let store_config = crate::secrets::store_config(&config.store, &mut rotation)
            .await
            .map_err(ServicesError::Setting)?;
        let clock: Arc<dyn Clock + Send + Sync> = Arc::new(SystemClock);
        let store = Store::open(&store_config, clock.clone())?;
        store.migrate().await?;
        let local = match local_repository(config.local.repo_path.clone()) {
            None => None,
            Some(scm) => {
                let checks = LocalChecks::new(&config.local.checks, scm.path(), store.clone())
                    .map_err(ServicesError::Setting)?;
                Some((scm, checks))
            }
        };
        let github = crate::secrets::github_app(config.github.clone(), &mut rotation)
            .await
            .map_err(ServicesError::Setting)?
            .map(converge_github::adapters::GithubPorts::new);
        let secrets = if config.api.webhook_secret_arn.is_some()
            || config.api.api_keys_secret_arn.is_some()
        {
            Some(Secrets::shared(config.secrets_ttl).await)
        } else {
            None
        };
        let mut audit = config.audit;
        if let (None, Some(arn)) = (&audit.signing_key, &audit.signing_key_secret_arn) {
            let value = Secrets::shared(config.secrets_ttl)
                .await
                .get(arn)
                .await
                .map_err(|e| {
                    ServicesError::Setting(format!("CONVERGE_AUDIT_SIGNING_KEY_SECRET_ARN: {e}"))
                })?;
            audit.signing_key = Some(
                converge_core::audit::SigningKey::new(value.into_bytes()).map_err(|e| {
                    ServicesError::Setting(format!("CONVERGE_AUDIT_SIGNING_KEY_SECRET_ARN: {e}"))
                })?,
            );
        }
        let (queue, dlq) = match SqsQueue::from_settings(&config.queue).await {
            Some((queue, dlq)) => (Some(queue), dlq),
            None => (None, None),
        };
        if let Some(file) = &config.policy.file {
            tracing::info!(file = %file.display(), "policy read");
        }
        Ok(Services {
            delivery_groups: converge_store::DeliveryGroups::new(store.clone()),
            store,
            clock,
            policy: config.policy.config,
            api_keys_secret: config
                .api
                .api_keys_secret_arn
                .as_deref()
                .map(WatchedSecret::new),
            api: config.api,
            worker: config.worker,
            ports: RoutedPorts::new(local, github),
            queue,
            dlq,
            secrets,
            rotation,
            queue_wakeup: Arc::new(tokio::sync::Notify::new()),
            audit,
            retention_ran: Arc::default(),
            snapshot_hour: Arc::default(),
            intake_signals: Arc::default(),
        })
    }

    /// A tenant's intake signals if this process counted them less than `fresh` ago.
    pub(crate) fn kept_intake_signals(
        &self,
        tenant: &str,
        fresh: std::time::Duration,
    ) -> Option<converge_core::intake_mode::IntakeSignals> {
        let kept = self.intake_signals.lock().ok()?;
        kept.get(tenant)
            .filter(|(counted, _)| counted.elapsed() < fresh)
            .map(|(_, signals)| signals.clone())
    }

    /// Keeps a tenant's freshly counted intake signals (and forgets the stale ones of others,
    /// so the map holds only tenants creating intents now).
    pub(crate) fn keep_intake_signals(
        &self,
        tenant: String,
        signals: converge_core::intake_mode::IntakeSignals,
        fresh: std::time::Duration,
    ) {
        if let Ok(mut kept) = self.intake_signals.lock() {
            kept.retain(|_, (counted, _)| counted.elapsed() < fresh);
            kept.insert(tenant, (std::time::Instant::now(), signals));
        }
    }

    /// Whether any retention is configured (`CONVERGE_RETENTION_*`).
    pub fn retention_configured(&self) -> bool {
        self.audit.events.is_some() || self.audit.sent_outbox.is_some()
    }

    /// Applies retention if it is configured and this process has not in the last
    /// [`RETENTION_EVERY`] (part of [`Services::maintain`]). A failure is logged; the next
    /// call after the interval tries again.
    pub async fn apply_retention_if_due(&self) {
        if !self.retention_configured() {
            return;
        }
        {
            let Ok(mut ran) = self.retention_ran.lock() else {
                return;
            };
            if ran.is_some_and(|at| at.elapsed() < RETENTION_EVERY) {
                return;
            }
            *ran = Some(std::time::Instant::now());
        }
        match crate::audit::apply_retention(&self.store, &self.audit, self.clock.now()).await {
            Ok(report) if report != crate::audit::RetentionReport::default() => {
                tracing::info!(
                    events = report.events,
                    outbox = report.outbox,
                    "retention pruned {} event(s) and {} sent outbox row(s)",
                    report.events,
                    report.outbox
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("retention failed: {e}"),
        }
    }

    /// Takes the hour's analytics snapshots (each tenant's health and debt) unless this
    /// process already did; another process that did first makes this one's a no-op.
    pub async fn take_snapshots_if_due(&self) {
        let now = self.clock.now();
        let hour = now.format("%Y%m%dT%H").to_string();
        {
            let Ok(mut last) = self.snapshot_hour.lock() else {
                return;
            };
            if last.as_deref() == Some(hour.as_str()) {
                return;
            }
            *last = Some(hour);
        }
        match crate::analytics::take_snapshots(&self.store, &RandomIds, now).await {
            Ok(report) => tracing::debug!(
                taken = report.taken,
                already = report.already,
                "analytics snapshots taken"
            ),
            Err(e) => {
                // Try again at the next upkeep.
                if let Ok(mut last) = self.snapshot_hour.lock() {
                    *last = None;
                }
                tracing::warn!("analytics snapshots failed: {e}");
            }
        }
    }

    /// The scheduled upkeep: escalates review tasks past their SLA, takes the hour's
    /// analytics snapshots, and applies retention when it is due. The worker function runs it
    /// with every sweep; `converge serve` and `converge worker` every minute
    /// ([`Services::run_maintenance`]). Failures are logged and tried again next time.
    pub async fn maintain(&self) {
        match crate::reviews::escalate_overdue(self).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(escalated = n, "{n} review task(s) past their SLA escalated"),
            Err(e) => tracing::warn!("review SLA check failed: {e}"),
        }
        self.take_snapshots_if_due().await;
        self.apply_retention_if_due().await;
    }

    /// Runs [`Services::maintain`] every minute until `stop` turns true.
    pub async fn run_maintenance(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            self.maintain().await;
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// What works only in part, by part (`github_app`: "App key not set: …"): the process
    /// serves meanwhile, and readiness and `converge doctor` show these.
    pub fn degraded(&self) -> std::collections::BTreeMap<&'static str, String> {
        let mut parts = std::collections::BTreeMap::new();
        if let Some(problem) = self.ports.github_app().and_then(|app| app.key_problem()) {
            parts.insert("github_app", problem);
        }
        parts
    }

    /// A fresh id: 96 random bits as 24 hex characters (unique for any number of events a
    /// deployment will ever hold).
    pub fn new_id(&self) -> String {
        RandomIds.new_id()
    }

    /// A queue processor over this process's ports with `settings`, holding leases as
    /// `holder` (unique per worker).
    pub fn processor_with(&self, settings: WorkerSettings, holder: String) -> Processor {
        QueueProcessor::with_ports(
            self.store.clone(),
            WorkerPorts {
                scm: self.ports.clone(),
                checks: self.ports.clone(),
                publisher: self.ports.clone(),
            },
            self.policy.clone(),
            settings,
            self.clock.clone(),
            holder,
        )
    }

    /// The queue processor of a long-running worker (`converge serve`, `converge worker`),
    /// with the configured settings, holding leases as `<role>-<pid>-<random>`; `None` when
    /// there is nothing to work through (no local repository, no GitHub App).
    pub fn processor(&self, role: &str) -> Option<Processor> {
        if self.ports.is_empty() {
            return None;
        }
        let holder = format!("{role}-{}-{}", std::process::id(), self.new_id());
        Some(self.processor_with(self.worker.clone(), holder))
    }

    /// Called after a commit that wrote queue messages: wakes this process's worker and, with
    /// SQS configured, relays the outbox's queue messages there at once. A relay that fails is
    /// only logged: the messages stay in the outbox for the next relay or the sweep.
    pub async fn queue_work_committed(&self) {
        self.queue_wakeup.notify_one();
        if let Some(queue) = &self.queue
            && let Err(e) = queue.relay(&self.store, "api").await
        {
            tracing::warn!("queue messages left for the sweep: {e}");
        }
    }

    /// Brings this process up to date with rotated secrets: the DSN and the App key (see
    /// [`Rotation`]) and the API keys' secret. Each is read at most once per cache lifetime;
    /// a failure is logged and the current credentials kept. Answers the hashes of the keys
    /// the secret's new value listed or withdrew, for caches to forget.
    pub async fn refresh_secrets(&self) -> Vec<String> {
        self.rotation.refresh(&self.store).await;
        match self.refresh_api_keys().await {
            Ok(touched) => touched,
            Err(e) => {
                match &self.api_keys_secret {
                    Some(watched) => watched.log_failure(&e.to_string()),
                    None => tracing::warn!("{e}"),
                }
                Vec::new()
            }
        }
    }

    /// Seeds the keys of the API keys' secret when its value changed since the last call (the
    /// first call included), and revokes the keys it gave before and no longer lists; answers
    /// the hashes of both. A value that cannot be used is handed over again after
    /// [`crate::secrets::RETRY_AFTER_FAILURE`]; a failed read is retried after the same pause
    /// by the secrets' cache.
    pub async fn refresh_api_keys(&self) -> Result<Vec<String>, crate::api_keys::SeedError> {
        let (Some(watched), Some(secrets)) = (&self.api_keys_secret, &self.secrets) else {
            return Ok(Vec::new());
        };
        let Some(text) = watched
            .changed(secrets)
            .await
            .map_err(|e| crate::api_keys::SeedError::Secret(e.to_string()))?
        else {
            return Ok(Vec::new());
        };
        let outcome =
            crate::api_keys::seed_from_secret(&self.store, self.clock.now(), watched.arn(), &text)
                .await;
        if outcome.is_err() {
            watched.failed();
        }
        outcome
    }
}

/// Ids from the thread's random generator.
pub struct RandomIds;

impl IdSource for RandomIds {
    fn new_id(&self) -> String {
        let bytes: [u8; 12] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The git repository intents are validated against: `CONVERGE_REPO_PATH`, else the working
/// directory when it is inside a git work tree (the local server started in its repository).
fn local_repository(configured: Option<std::path::PathBuf>) -> Option<GitScm> {
    let path = match configured {
        Some(path) => path,
        // A Lambda function has no repository: skip the probe (a process spawn at cold start).
        None if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() => return None,
        None => {
            let cwd = std::env::current_dir().ok()?;
            let inside = std::process::Command::new("git")
                .arg("-C")
                .arg(&cwd)
                .args(["rev-parse", "--is-inside-work-tree"])
                .output()
                .ok()
                .is_some_and(|o| o.status.success());
            if !inside {
                return None;
            }
            cwd
        }
    };
    Some(GitScm::new(path))
}

/// The store the environment configures, its DSN read from Secrets Manager when only
/// `CONVERGE_PG_DSN_SECRET_ARN` names it (as the functions read it); not migrated. With
/// `must_exist`, a SQLite file that is not there is an error rather than created. For the
/// CLI's store commands and `converge doctor`.
pub async fn store_from_env(must_exist: bool) -> Result<Store, ServicesError> {
    let mut rotation = Rotation::from_env().map_err(ServicesError::Setting)?;
    let config =
        crate::secrets::store_config(&converge_store::StoreConfig::from_env()?, &mut rotation)
            .await
            .map_err(ServicesError::Setting)?;
    if must_exist
        && config.backend == converge_store::Backend::Sqlite
        && !config.sqlite_path.is_file()
    {
        return Err(ServicesError::Setting(format!(
            "no SQLite database at {}",
            config.sqlite_path.display()
        )));
    }
    Ok(Store::open(&config, Arc::new(SystemClock))?)
}

/// The current value of the Secrets Manager secret `arn`, read through the process's cache
/// with the lifetime `CONVERGE_SECRETS_TTL_SECONDS` gives: for `converge doctor`, which checks
/// the secrets a deployment names by ARN.
pub async fn secret_from_env(arn: &str) -> Result<String, ServicesError> {
    let ttl = crate::config::secrets_ttl(&|name: &str| std::env::var(name).ok())
        .map_err(ServicesError::Setting)?;
    Secrets::shared(ttl)
        .await
        .get(arn)
        .await
        .map_err(|e| ServicesError::Setting(e.to_string()))
}

/// The GitHub App the environment configures (`None`: no App), its key from a file, the
/// environment or Secrets Manager: for `converge doctor`.
pub async fn github_app_from_env()
-> Result<Option<Arc<converge_github::app::GithubApp>>, ServicesError> {
    let settings =
        converge_github::app::GithubSettings::from_lookup(|name| std::env::var(name).ok())
            .map_err(|e| ServicesError::Setting(e.to_string()))?;
    crate::secrets::github_app(
        settings,
        &mut Rotation::from_env().map_err(ServicesError::Setting)?,
    )
    .await
    .map_err(ServicesError::Setting)
}
