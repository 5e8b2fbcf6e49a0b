//! State: one store contract, implemented for PostgreSQL (production) and SQLite (embedded
//! default and fallback), on sqlx.
//!
//! Invariants the store keeps:
//! - **Events and projection move together.** [`Store::commit`] appends events, updates the
//!   intents projection from them ([`converge_core::projection`]), and writes commit links and
//!   outbox rows in one transaction. A crash at any point leaves either all of it or none.
//!   [`Store::rebuild_projections`] replays the log into an empty table and yields the same
//!   rows.
//! - **Leases fence.** A queue key `(tenant, repo, target)` is held by at most one worker at a
//!   time ([`Store::acquire_lease`], conditional `UPDATE … RETURNING` on the key's row, no
//!   session-level advisory locks). Each holding gets a fencing token larger than every earlier
//!   one; a [`Commit`] guarded by a lost lease fails with [`StoreError::StaleLease`].
//! - **Deliveries are recorded once** (`ON CONFLICT DO NOTHING` on the delivery id).
//! - **Nothing in the outbox is lost**: rows are written with the events that cause them and
//!   stay claimable until marked sent.
//!
//! Migrations are versioned per backend (`migrations/postgres`, `migrations/sqlite`), embedded
//! in the binary and applied by [`Store::migrate`]: by `converge migrate`, and at the start of
//! every process the runtime builds (`converge_runtime::services::Services::from_config`: the
//! functions, `converge serve`, `converge worker`).
//! [`backfill`] copies every table between the two backends.

mod backend;
pub mod backfill;
mod delivery_groups;
mod error;
mod intent_json;
mod model;
pub mod pg;
pub mod sqlite;
mod tables;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use converge_core::pipeline::Clock;

pub use delivery_groups::DeliveryGroups;
pub use error::StoreError;
pub use model::EVIDENCE_SEQ;
pub use model::{
    AgentPolicyWrite, ApiKeyRecord, ChainedEvent, Commit, CommitLink, DailyTally, DecisionTrail,
    Delivery, DeliveryDecision, DeliveryOutcome, DocumentWrite, EventFilter, Expected,
    FencingToken, FlagSetting, FreezeWrite, IdempotencyClaim, IntakeOverride, IntakeWrite,
    IntentCount, IntentCursor, IntentFilter, KeyDocument, KeyHold, Lease, LeaseState, OutboxEntry,
    OutboxMessage, QueueAge, ReviewCounts, ReviewFilter, ReviewWrite, StoredEvent, StoredIntent,
    StoredReview, VersionedDocument,
};
pub use pg::PgStore;
pub use sqlite::{SqliteDurability, SqliteStore};

/// Default SQLite file, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = ".converge/state.db";
/// Default pool size: small, because each Lambda instance serves one request at a time.
pub const DEFAULT_POOL_SIZE: u32 = 4;

/// The default pool size of a backend. PostgreSQL's connections mostly wait on round trips,
/// so [`DEFAULT_POOL_SIZE`] of them. A SQLite reader is busy on this machine's CPU for its
/// whole read, so readers beyond the cores add memory (each its own thread, page cache and
/// prepared statements) and no throughput: one per core, at least 2 (a long read does not
/// hold up the others) and at most [`DEFAULT_POOL_SIZE`]. On 2 cores: 2 readers served as
/// many GETs a second as 4, with 3 MiB less peak memory under writes (bench.sh api, December).
pub fn default_pool_size(backend: Backend) -> u32 {
    match backend {
        Backend::Postgres => DEFAULT_POOL_SIZE,
        Backend::Sqlite => std::thread::available_parallelism()
            .map_or(DEFAULT_POOL_SIZE, |cores| {
                u32::try_from(cores.get()).unwrap_or(u32::MAX)
            })
            .clamp(2, DEFAULT_POOL_SIZE),
    }
}

/// Timestamps are kept to the microsecond (PostgreSQL's precision), everywhere, so a value
/// reads back equal to what was written on both backends.
pub fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Whether a pooled connection may serve again. One still inside a transaction is not: its
/// COMMIT failed (a full disk) and SQLite rolled back by itself, so the ROLLBACK sqlx sent
/// afterwards failed too, and sqlx still counts the transaction open — every later `BEGIN` on
/// it would be refused. Such a connection is closed, and the pool opens a fresh one.
pub(crate) fn reusable(conn: &mut impl sqlx::Connection) -> bool {
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!("a database connection was left inside a failed transaction: closing it");
    }
    clean
}

/// The system clock, to the microsecond.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        micros(Utc::now())
    }
}

mod migrations {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};

    fn migrator(sources: &[(i64, &'static str, &'static str)]) -> Migrator {
        Migrator::with_migrations(
            sources
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        description.into(),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        )
    }

    pub fn postgres() -> Migrator {
        migrator(&[
            (
                1,
                "initial",
                include_str!("../migrations/postgres/0001_initial.sql"),
            ),
            (
                2,
                "intents queue order",
                include_str!("../migrations/postgres/0002_intents_queue_order.sql"),
            ),
            (
                3,
                "feature flags",
                include_str!("../migrations/postgres/0003_feature_flags.sql"),
            ),
            (
                4,
                "api key origin",
                include_str!("../migrations/postgres/0004_api_key_origin.sql"),
            ),
            (
                5,
                "intent version",
                include_str!("../migrations/postgres/0005_intent_version.sql"),
            ),
            (
                6,
                "idempotency keys",
                include_str!("../migrations/postgres/0006_idempotency_keys.sql"),
            ),
            (
                7,
                "store probe",
                include_str!("../migrations/postgres/0007_store_probe.sql"),
            ),
            (
                8,
                "dashboard sessions",
                include_str!("../migrations/postgres/0008_dashboard_sessions.sql"),
            ),
            (
                9,
                "queue key holds",
                include_str!("../migrations/postgres/0009_queue_key_holds.sql"),
            ),
            (
                10,
                "tenant versions",
                include_str!("../migrations/postgres/0010_tenant_versions.sql"),
            ),
            (
                11,
                "audit chain",
                include_str!("../migrations/postgres/0011_audit_chain.sql"),
            ),
            (
                12,
                "queue freezes",
                include_str!("../migrations/postgres/0012_queue_freezes.sql"),
            ),
            (
                13,
                "review tasks",
                include_str!("../migrations/postgres/0013_review_tasks.sql"),
            ),
            (
                14,
                "event tallies",
                include_str!("../migrations/postgres/0014_event_tallies.sql"),
            ),
            (
                15,
                "threshold versions",
                include_str!("../migrations/postgres/0015_threshold_versions.sql"),
            ),
            (
                16,
                "intake overrides",
                include_str!("../migrations/postgres/0016_intake_overrides.sql"),
            ),
            (
                17,
                "agent policies",
                include_str!("../migrations/postgres/0017_agent_policies.sql"),
            ),
            (
                18,
                "trains",
                include_str!("../migrations/postgres/0018_trains.sql"),
            ),
            (
                19,
                "intent heads",
                include_str!("../migrations/postgres/0019_intent_heads.sql"),
            ),
            (
                20,
                "intent queues",
                include_str!("../migrations/postgres/0020_intent_queues.sql"),
            ),
            (
                21,
                "log tail at commit",
                include_str!("../migrations/postgres/0021_log_tail_at_commit.sql"),
            ),
        ])
    }

    pub fn sqlite() -> Migrator {
        migrator(&[
            (
                1,
                "initial",
                include_str!("../migrations/sqlite/0001_initial.sql"),
            ),
            (
                2,
                "intents queue order",
                include_str!("../migrations/sqlite/0002_intents_queue_order.sql"),
            ),
            (
                3,
                "feature flags",
                include_str!("../migrations/sqlite/0003_feature_flags.sql"),
            ),
            (
                4,
                "api key origin",
                include_str!("../migrations/sqlite/0004_api_key_origin.sql"),
            ),
            (
                5,
                "intent version",
                include_str!("../migrations/sqlite/0005_intent_version.sql"),
            ),
            (
                6,
                "idempotency keys",
                include_str!("../migrations/sqlite/0006_idempotency_keys.sql"),
            ),
            (
                7,
                "store probe",
                include_str!("../migrations/sqlite/0007_store_probe.sql"),
            ),
            (
                8,
                "dashboard sessions",
                include_str!("../migrations/sqlite/0008_dashboard_sessions.sql"),
            ),
            (
                9,
                "queue key holds",
                include_str!("../migrations/sqlite/0009_queue_key_holds.sql"),
            ),
            (
                10,
                "tenant versions",
                include_str!("../migrations/sqlite/0010_tenant_versions.sql"),
            ),
            (
                11,
                "audit chain",
                include_str!("../migrations/sqlite/0011_audit_chain.sql"),
            ),
            (
                12,
                "queue freezes",
                include_str!("../migrations/sqlite/0012_queue_freezes.sql"),
            ),
            (
                13,
                "review tasks",
                include_str!("../migrations/sqlite/0013_review_tasks.sql"),
            ),
            (
                14,
                "event tallies",
                include_str!("../migrations/sqlite/0014_event_tallies.sql"),
            ),
            (
                15,
                "threshold versions",
                include_str!("../migrations/sqlite/0015_threshold_versions.sql"),
            ),
            (
                16,
                "intake overrides",
                include_str!("../migrations/sqlite/0016_intake_overrides.sql"),
            ),
            (
                17,
                "agent policies",
                include_str!("../migrations/sqlite/0017_agent_policies.sql"),
            ),
            (
                18,
                "trains",
                include_str!("../migrations/sqlite/0018_trains.sql"),
            ),
            (
                19,
                "intent heads",
                include_str!("../migrations/sqlite/0019_intent_heads.sql"),
            ),
            (
                20,
                "intent queues",
                include_str!("../migrations/sqlite/0020_intent_queues.sql"),
            ),
        ])
    }
}

/// A parsed store URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUrl<'a> {
    /// `sqlite://PATH`.
    Sqlite(&'a std::path::Path),
    /// `postgres://…` or `postgresql://…`, as given.
    Postgres(&'a str),
}

impl<'a> StoreUrl<'a> {
    /// Parses `sqlite://PATH`, `postgres://…` or `postgresql://…`; anything else is refused
    /// (without repeating it: it may be a DSN with a password).
    pub fn parse(url: &'a str) -> Result<StoreUrl<'a>, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url));
        }
        match url.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => Ok(StoreUrl::Sqlite(std::path::Path::new(path))),
            Some(_) => Err(StoreError::Config(
                "sqlite:// URL without a path".to_owned(),
            )),
            None => Err(StoreError::Config(
                "a store URL must start with sqlite:// or postgres:// (postgresql://)".to_owned(),
            )),
        }
    }
}

/// Which database holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (the default).
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// Store settings: `CONVERGE_DB_BACKEND` (`sqlite` | `postgres`, default `sqlite`),
/// `CONVERGE_DB_PATH` (default `.converge/state.db`), `CONVERGE_SQLITE_SYNCHRONOUS` (`full` or
/// `normal`, default `full`), `CONVERGE_PG_DSN` (or
/// `CONVERGE_PG_DSN_SECRET_ARN` with `CONVERGE_PG_HOST`, `CONVERGE_PG_PORT`,
/// `CONVERGE_PG_DATABASE`), `CONVERGE_DB_POOL_SIZE` (default: [`default_pool_size`]).
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Which backend.
    pub backend: Backend,
    /// The SQLite file.
    pub sqlite_path: PathBuf,
    /// The PostgreSQL DSN (secret: never printed).
    pub pg_dsn: Option<String>,
    /// A Secrets Manager secret holding the DSN (`CONVERGE_PG_DSN_SECRET_ARN`), used when
    /// `pg_dsn` is unset: the runtime reads it into `pg_dsn` before the store is opened.
    pub pg_dsn_secret_arn: Option<String>,
    /// Where the database is when the secret does not say, or where to reach it instead
    /// (an RDS Proxy endpoint): `CONVERGE_PG_HOST`, `CONVERGE_PG_PORT`, `CONVERGE_PG_DATABASE`.
    pub pg_location: PgLocation,
    /// What `pg_dsn` came from, for errors: `CONVERGE_PG_DSN`, or the secret it was read from.
    pub pg_dsn_origin: String,
    /// Connections per pool.
    pub pool_size: u32,
    /// How a SQLite commit is made durable (`CONVERGE_SQLITE_SYNCHRONOUS`, `full`).
    pub sqlite_durability: SqliteDurability,
}

/// Where the PostgreSQL database is, as settings give it beside a secret that holds only the
/// credentials (RDS's managed master-user secret); each one set wins over the secret's field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgLocation {
    /// `CONVERGE_PG_HOST`: the instance's or an RDS Proxy's endpoint.
    pub host: Option<String>,
    /// `CONVERGE_PG_PORT`.
    pub port: Option<u16>,
    /// `CONVERGE_PG_DATABASE`.
    pub database: Option<String>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("sqlite_path", &self.sqlite_path)
            .field("pg_dsn", &self.pg_dsn.as_ref().map(|_| "<redacted>"))
            .field("pg_dsn_secret_arn", &self.pg_dsn_secret_arn)
            .field("pg_location", &self.pg_location)
            .field("pg_dsn_origin", &self.pg_dsn_origin)
            .field("pool_size", &self.pool_size)
            .field("sqlite_durability", &self.sqlite_durability)
            .finish()
    }
}

impl StoreConfig {
    /// Reads the settings through `lookup` (the environment, in production).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<StoreConfig, StoreError> {
        let backend = match lookup("CONVERGE_DB_BACKEND").as_deref().map(str::trim) {
            None | Some("") | Some("sqlite") => Backend::Sqlite,
            Some("postgres") => Backend::Postgres,
            Some(other) => {
                return Err(StoreError::Config(format!(
                    "CONVERGE_DB_BACKEND must be sqlite or postgres, got '{other}'"
                )));
            }
        };
        let pg_dsn = lookup("CONVERGE_PG_DSN").filter(|s| !s.trim().is_empty());
        let pg_dsn_secret_arn = lookup("CONVERGE_PG_DSN_SECRET_ARN")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if backend == Backend::Postgres && pg_dsn.is_none() && pg_dsn_secret_arn.is_none() {
            return Err(StoreError::Config(
                "CONVERGE_DB_BACKEND=postgres needs CONVERGE_PG_DSN or CONVERGE_PG_DSN_SECRET_ARN"
                    .to_owned(),
            ));
        }
        let setting = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let pg_location = PgLocation {
            host: setting("CONVERGE_PG_HOST"),
            port: setting("CONVERGE_PG_PORT")
                .map(|v| {
                    v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                        StoreError::Config(format!(
                            "CONVERGE_PG_PORT must be a port number in [1, 65535], got '{v}'"
                        ))
                    })
                })
                .transpose()?,
            database: setting("CONVERGE_PG_DATABASE"),
        };
        let pool_size = match lookup("CONVERGE_DB_POOL_SIZE") {
            None => default_pool_size(backend),
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    StoreError::Config(format!(
                        "CONVERGE_DB_POOL_SIZE must be an integer in [1, 100], got '{v}'"
                    ))
                })?,
        };
        let sqlite_durability = match setting("CONVERGE_SQLITE_SYNCHRONOUS") {
            None => SqliteDurability::default(),
            Some(_) if backend == Backend::Postgres => {
                return Err(StoreError::Config(
                    "CONVERGE_SQLITE_SYNCHRONOUS applies to the SQLite backend only; unset it \
                     with CONVERGE_DB_BACKEND=postgres"
                        .to_owned(),
                ));
            }
            Some(v) => SqliteDurability::parse(&v).ok_or_else(|| {
                StoreError::Config(format!(
                    "CONVERGE_SQLITE_SYNCHRONOUS must be full or normal, got '{v}'"
                ))
            })?,
        };
        Ok(StoreConfig {
            sqlite_durability,
            backend,
            sqlite_path: lookup("CONVERGE_DB_PATH")
                .filter(|s| !s.trim().is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_SQLITE_PATH), PathBuf::from),
            pg_dsn,
            pg_dsn_secret_arn,
            pg_location,
            pg_dsn_origin: "CONVERGE_PG_DSN".to_owned(),
            pool_size,
        })
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<StoreConfig, StoreError> {
        StoreConfig::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The store, on whichever backend the configuration chose.
#[derive(Debug, Clone)]
pub enum Store {
    /// PostgreSQL.
    Postgres(PgStore),
    /// SQLite.
    Sqlite(SqliteStore),
}

impl Store {
    /// Opens the configured store (connections are made lazily, on first use).
    pub fn open(
        config: &StoreConfig,
        clock: Arc<dyn Clock + Send + Sync>,
    ) -> Result<Store, StoreError> {
        match config.backend {
            Backend::Sqlite => Ok(Store::Sqlite(SqliteStore::open_with(
                &config.sqlite_path,
                config.pool_size,
                config.sqlite_durability,
                clock,
            )?)),
            Backend::Postgres => {
                let dsn = config.pg_dsn.as_deref().ok_or_else(|| {
                    StoreError::Config(
                        "the PostgreSQL DSN was not read from CONVERGE_PG_DSN_SECRET_ARN; \
                         set CONVERGE_PG_DSN for this command"
                            .to_owned(),
                    )
                })?;
                let store = PgStore::connect_lazy(dsn, config.pool_size, clock).map_err(|_| {
                    StoreError::Config(format!(
                        "{} is not a valid postgres:// URL",
                        config.pg_dsn_origin
                    ))
                })?;
                Ok(Store::Postgres(store))
            }
        }
    }

    /// On PostgreSQL, makes new connections with `dsn` (see [`PgStore::use_dsn`]); a SQLite
    /// store has no DSN and refuses.
    pub fn use_pg_dsn(&self, dsn: &str) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pg) => pg.use_dsn(dsn),
            Store::Sqlite(_) => Err(StoreError::Config(
                "a PostgreSQL DSN was rotated, but the store is SQLite".to_owned(),
            )),
        }
    }

    /// Opens a store from a URL: `sqlite://PATH` or `postgres://…` (`postgresql://…`). A SQLite
    /// file is created if missing. Errors never repeat the URL, which may hold a password.
    pub fn from_url(url: &str, clock: Arc<dyn Clock + Send + Sync>) -> Result<Store, StoreError> {
        match StoreUrl::parse(url)? {
            StoreUrl::Postgres(dsn) => Ok(Store::Postgres(PgStore::connect_lazy(
                dsn,
                default_pool_size(Backend::Postgres),
                clock,
            )?)),
            StoreUrl::Sqlite(path) => Ok(Store::Sqlite(SqliteStore::open(
                path,
                default_pool_size(Backend::Sqlite),
                clock,
            )?)),
        }
    }

    /// Like [`Store::from_url`], but a SQLite file must already exist (a source to read from
    /// is never created by mistake).
    pub fn open_existing(
        url: &str,
        clock: Arc<dyn Clock + Send + Sync>,
    ) -> Result<Store, StoreError> {
        if let StoreUrl::Sqlite(path) = StoreUrl::parse(url)?
            && !path.is_file()
        {
            return Err(StoreError::Config(format!(
                "no SQLite database at {}",
                path.display()
            )));
        }
        Store::from_url(url, clock)
    }

    /// Whether the store's tables exist (its migrations ran).
    pub async fn is_migrated(&self) -> Result<bool, StoreError> {
        let probe = match self {
            Store::Postgres(s) => sqlx::query("SELECT 1 FROM events LIMIT 1")
                .execute(s.pool())
                .await
                .map(|_| ()),
            Store::Sqlite(s) => sqlx::query("SELECT 1 FROM events LIMIT 1")
                .execute(s.pool())
                .await
                .map(|_| ()),
        };
        match probe {
            Ok(()) => Ok(true),
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("42P01")
                    || e.message().contains("no such table") =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The permit a merge under `lease` needs: the proof that the lease is held now. When a
    /// commit guarded by the lease (`just_committed`) has just gone through and the lease has
    /// at least half of `ttl` left at `now`, that commit is the proof; otherwise the lease is
    /// renewed here, which fails with [`StoreError::StaleLease`] if it was lost (so a fenced
    /// worker stops before touching the target). Returns the lease as it now stands.
    pub async fn merge_permit(
        &self,
        lease: &Lease,
        ttl: std::time::Duration,
        just_committed: bool,
        now: DateTime<Utc>,
    ) -> Result<(Lease, converge_core::pipeline::MergePermit), StoreError> {
        let remaining = (lease.expires_at() - now).to_std().unwrap_or_default();
        let lease = if just_committed && remaining >= ttl / 2 {
            lease.clone()
        } else {
            self.extend_lease(lease, ttl).await?
        };
        let permit =
            converge_core::pipeline::MergePermit::issue(lease.key().clone(), lease.token().value());
        Ok((lease, permit))
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Postgres(_) => Backend::Postgres,
            Store::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Forwards each contract operation to the backend's implementation.
impl Store {
    /// Reads an intent under the write lock, lets `decide` plan a commit from it, and commits
    /// the plan in the same transaction: one read, and a row that cannot change in between
    /// (an absent intent created meanwhile makes the commit [`StoreError::Stale`]). A plan
    /// with a guard lease is refused; a plan of `None` writes nothing. `decide` must be
    /// quick: writers wait on it.
    pub async fn decide_and_commit<T>(
        &self,
        intent_id: &str,
        decide: impl FnOnce(Option<&StoredIntent>) -> (Option<Commit>, T),
    ) -> Result<T, StoreError> {
        match self {
            Store::Postgres(s) => s.decide_and_commit(intent_id, decide).await,
            Store::Sqlite(s) => s.decide_and_commit(intent_id, decide).await,
        }
    }
}

impl Store {
    /// Reads the READY and VALIDATED intents of `repo` whose source is `branch` under
    /// their write locks, lets `decide` plan a commit from them, and commits the plan in the
    /// same transaction (what a push to the branch makes stale, decided from rows that cannot
    /// change meanwhile). `decide` must be quick: writers wait on it.
    pub async fn decide_on_branch<T>(
        &self,
        repo: &str,
        branch: &str,
        limit: u32,
        decide: impl FnOnce(&[StoredIntent]) -> (Option<Commit>, T),
    ) -> Result<T, StoreError> {
        match self {
            Store::Postgres(s) => s.decide_on_branch(repo, branch, limit, decide).await,
            Store::Sqlite(s) => s.decide_on_branch(repo, branch, limit, decide).await,
        }
    }
}

impl Store {
    /// Decides for several webhook deliveries in one transaction: see
    /// [`PgStore::decide_for_deliveries`].
    pub async fn decide_for_deliveries<T>(
        &self,
        members: Vec<DeliveryDecision<T>>,
    ) -> Result<Vec<Result<T, StoreError>>, StoreError> {
        match self {
            Store::Postgres(s) => s.decide_for_deliveries(members).await,
            Store::Sqlite(s) => s.decide_for_deliveries(members).await,
        }
    }
}

macro_rules! forward {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    match self {
                        Store::Postgres(s) => s.$name($($arg),*).await,
                        Store::Sqlite(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

forward! {
    /// Applies the pending migrations (on PostgreSQL, sqlx holds a session advisory lock while
    /// migrating so that concurrent starts migrate once; nothing else uses session state).
    fn migrate(&self) -> ();
    /// Whether the database answers.
    fn ping(&self) -> ();
    /// Whether the database takes a write (readiness: a full disk shows here, not in a ping).
    fn probe_write(&self) -> ();
    /// Appends events with their projection changes, commit links and outbox rows atomically.
    fn commit(&self, commit: &Commit) -> ();
    /// The current state of an intent.
    fn intent(&self, id: &str) -> Option<converge_core::Intent>;
    /// The current state of an intent with its row's version, for a decision that commits
    /// only while the row is unchanged.
    fn stored_intent(&self, id: &str) -> Option<StoredIntent>;
    /// Intents in queue order, filtered and paged.
    fn intents(&self, filter: &IntentFilter) -> Vec<converge_core::Intent>;
    /// The version of a tenant's intents (every tenant's when `None`): it changes with every
    /// committed change to them and never returns to an earlier value. Read it before the
    /// intents it versions.
    fn intents_version(&self, tenant: Option<&str>) -> i64;
    /// Moves every tenant's intents version, after intents were written outside a commit.
    fn bump_tenant_versions(&self) -> ();
    /// The actionable intents of one queue key, in queue order.
    fn queue_intents(&self, key: &converge_core::queue::QueueKey, after: Option<&IntentCursor>, limit: u32) -> Vec<converge_core::Intent>;
    /// The actionable intents of a repository whose head is a commit (any tenant or target).
    fn actionable_at_head(&self, repo: &str, head_sha: &str, limit: u32) -> Vec<converge_core::Intent>;
    /// An intent's latest decisions and latest reported check.
    fn decision_trail(&self, intent_id: &str, limit: u32) -> DecisionTrail;
    /// The decision trails of several intents in one query, in the order given.
    fn decision_trails(&self, intent_ids: &[String], limit: u32) -> Vec<DecisionTrail>;
    /// Intents counted by queue key and status.
    fn intent_counts(&self, tenant: Option<&str>) -> Vec<IntentCount>;
    /// The same, of the actionable statuses only.
    fn actionable_counts(&self, tenant: Option<&str>) -> Vec<IntentCount>;
    /// Intents per status, counted from the status index.
    fn status_counts(&self, tenant: Option<&str>) -> Vec<(converge_core::Status, i64)>;
    /// Events, newest first, filtered and paged.
    fn events(&self, filter: &EventFilter) -> Vec<StoredEvent>;
    /// The latest event of a type for each of several intents, in one query.
    fn latest_events(&self, event_type: converge_core::EventType, intent_ids: &[String]) -> Vec<StoredEvent>;
    /// Every event of a type about any of several intents, newest first.
    fn events_for(&self, event_type: converge_core::EventType, intent_ids: &[String], limit: u32) -> Vec<StoredEvent>;
    /// Commits observed for an intent.
    fn commit_links(&self, intent_id: &str) -> Vec<CommitLink>;
    /// Replays the event log into an empty intents projection.
    fn rebuild_projections(&self) -> usize;
    /// Records a webhook delivery once.
    fn record_delivery(&self, delivery_id: &str, event_name: &str, body_sha256: &str) -> DeliveryOutcome;
    /// Takes a queue key's lease if free or expired.
    fn acquire_lease(&self, key: &converge_core::queue::QueueKey, holder: &str, ttl: std::time::Duration) -> Option<Lease>;
    /// Extends a held lease.
    fn extend_lease(&self, lease: &Lease, ttl: std::time::Duration) -> Lease;
    /// Releases a held lease.
    fn release_lease(&self, lease: &Lease) -> bool;
    /// Clears a key's holder whoever it is, and its pause.
    fn force_clear_lease(&self, key: &converge_core::queue::QueueKey) -> bool;
    /// Clears expired leases.
    fn clear_expired_leases(&self) -> u64;
    /// A key's lease row.
    fn inspect_lease(&self, key: &converge_core::queue::QueueKey) -> Option<LeaseState>;
    /// Every lease row.
    fn leases(&self) -> Vec<LeaseState>;
    /// The stored trains of a repository's keys.
    fn trains_of_repo(&self, repo: &str) -> Vec<(converge_core::queue::QueueKey, String)>;
    /// Pauses a held key after a failure of its environment (backoff by failures in a row).
    fn hold_key(&self, lease: &Lease, reason: &str) -> KeyHold;
    /// Ends a held key's pause.
    fn release_key_hold(&self, lease: &Lease) -> bool;
    /// Ends the pause of a key nobody holds.
    fn release_idle_key_hold(&self, key: &converge_core::queue::QueueKey) -> bool;
    /// Stores a document a held key keeps in its lease row.
    fn save_key_document(&self, lease: &Lease, document: KeyDocument, text: Option<&str>) -> ();
    /// A document a key keeps in its lease row.
    fn key_document(&self, key: &converge_core::queue::QueueKey, document: KeyDocument) -> Option<String>;
    /// Claims unsent outbox rows.
    fn claim_outbox(&self, topic: &str, claimer: &str, limit: u32, claim_ttl: std::time::Duration) -> Vec<OutboxEntry>;
    /// Marks an outbox row sent.
    fn mark_outbox_sent(&self, seq: i64) -> bool;
    /// Marks several outbox rows sent in one statement.
    fn mark_outbox_rows_sent(&self, seqs: &[i64]) -> u64;
    /// Gives a claimed outbox row back.
    fn release_outbox(&self, seq: i64) -> bool;
    /// Outbox rows not sent yet.
    fn unsent_outbox_count(&self) -> i64;
    /// The oldest unsent row of each topic starting with a prefix.
    fn first_unsent_per_topic(&self, prefix: &str, limit: u32) -> Vec<OutboxEntry>;
    /// Stores an API key record.
    fn put_api_key(&self, key: &ApiKeyRecord) -> ();
    /// Finds a live API key by hash.
    fn find_api_key(&self, key_hash: &str) -> Option<ApiKeyRecord>;
    /// The live keys configured from one origin.
    fn api_keys_from(&self, origin: &str) -> Vec<String>;
    /// Sets a key's expiry.
    fn expire_api_key(&self, key_hash: &str, at: DateTime<Utc>) -> bool;
    /// Counts requests in a tenant's rate-limit window (a block of them at once).
    fn hit_rate_limit(&self, tenant: &str, window_start: DateTime<Utc>, hits: i64) -> i64;
    /// Forgets old rate-limit windows.
    fn prune_rate_limits(&self, cutoff: DateTime<Utc>) -> u64;
    /// Claims an idempotency key for a request (or finds its first answer).
    fn claim_idempotency_key(&self, scope: &str, key: &str, request_sha256: &str, ttl: chrono::Duration, in_progress_ttl: chrono::Duration) -> IdempotencyClaim;
    /// Records the answer to the request that claimed a key.
    fn complete_idempotency_key(&self, scope: &str, key: &str, status: u16, body: &str) -> ();
    /// Gives a key back (its request failed on our side: a retry runs again).
    fn release_idempotency_key(&self, scope: &str, key: &str) -> ();
    /// Starts a dashboard session (and forgets expired ones).
    fn create_session(&self, id_sha256: &str, key_hash: &str, expires_at: DateTime<Utc>) -> ();
    /// The key hash a live dashboard session stands for.
    fn session_key(&self, id_sha256: &str) -> Option<String>;
    /// Ends a dashboard session.
    fn delete_session(&self, id_sha256: &str) -> ();
    /// Flags an operator has set.
    fn flags(&self) -> Vec<FlagSetting>;
    /// Sets a flag.
    fn set_flag(&self, name: &str, enabled: bool, by: &str) -> ();
    /// A tenant's risk policy.
    fn risk_policy(&self, tenant: &str) -> Option<VersionedDocument>;
    /// Replaces a tenant's risk policy.
    fn put_risk_policy(&self, tenant: &str, data: &serde_json::Value) -> i64;
    /// A tenant's compliance thresholds.
    fn compliance_thresholds(&self, tenant: &str) -> Option<VersionedDocument>;
    /// Replaces a tenant's compliance thresholds.
    fn put_compliance_thresholds(&self, tenant: &str, data: &serde_json::Value) -> ();
    /// Counts and means of a tenant's events in a time window.
    fn window_tally(&self, tenant: Option<&str>, from: DateTime<Utc>, until: Option<DateTime<Utc>>) -> converge_core::analytics::WindowTally;
    /// All-time decision counts of a tenant, from the maintained tallies.
    fn log_totals(&self, tenant: Option<&str>) -> converge_core::analytics::LogTotals;
    /// Events per day and type of a tenant, from the maintained tallies.
    fn daily_tallies(&self, tenant: Option<&str>, from_day: &str, event_types: &[converge_core::EventType]) -> Vec<DailyTally>;
    /// A tenant's intents as the health and debt formulas count them.
    fn intent_tally(&self, tenant: Option<&str>, stale_before: DateTime<Utc>) -> converge_core::analytics::IntentTally;
    /// The newest merges since a time: when merged, when created.
    fn merge_times(&self, tenant: Option<&str>, since: DateTime<Utc>, limit: u32) -> Vec<(DateTime<Utc>, DateTime<Utc>)>;
    /// An agent's policy in a tenant, with its version.
    fn agent_policy(&self, agent_id: &str, tenant: &str) -> Option<VersionedDocument>;
    /// The agent policies of a tenant (every tenant's when `None`), by tenant and agent.
    fn agent_policies(&self, tenant: Option<&str>, limit: u32) -> Vec<VersionedDocument>;
    /// Queues with intents waiting, the fullest first: how many, and since when.
    fn queue_ages(&self, tenant: Option<&str>, limit: u32) -> Vec<QueueAge>;
    /// The intake mode an operator set for a tenant (`""`: the global one).
    fn intake_override(&self, tenant: &str) -> Option<IntakeOverride>;
    /// The tenants that have intents (`""` for none), in name order.
    fn tenants(&self, limit: u32) -> Vec<String>;
    /// Review tasks pending or assigned.
    fn waiting_review_count(&self, tenant: Option<&str>) -> u64;
    /// An audit chain's head (`""`: events without a tenant).
    fn audit_head(&self, chain: &str) -> Option<converge_core::audit::Head>;
    /// The anchor retention left in an audit chain.
    fn audit_anchor(&self, chain: &str) -> Option<converge_core::audit::Anchor>;
    /// A page of an audit chain's events after a position, in chain order.
    fn audit_links(&self, chain: &str, after_index: i64, limit: u32) -> Vec<ChainedEvent>;
    /// An event of the chain's tenant that is in no chain.
    fn first_unchained_event(&self, chain: &str) -> Option<String>;
    /// Every audit chain that has had events.
    fn audit_chain_names(&self) -> Vec<String>;
    /// Chains events written before the audit chain existed.
    fn seal_unchained_events(&self) -> u64;
    /// Prunes a verified prefix of a chain older than a cutoff, behind a signed anchor.
    fn prune_chain(&self, chain: &str, cutoff: DateTime<Utc>, key: &converge_core::audit::SigningKey, batch: u32) -> u64;
    /// Deletes outbox rows sent before a cutoff.
    fn prune_sent_outbox(&self, cutoff: DateTime<Utc>, batch: u32) -> u64;
    /// Freezes of a tenant (all tenants' when `None`), newest first.
    fn freezes(&self, tenant: Option<&str>, include_lifted: bool, limit: u32) -> Vec<converge_core::freeze::Freeze>;
    /// One freeze by id.
    fn freeze(&self, id: &str) -> Option<converge_core::freeze::Freeze>;
    /// The freezes not lifted that cover a queue key.
    fn freezes_of_key(&self, key: &converge_core::queue::QueueKey) -> Vec<converge_core::freeze::Freeze>;
    /// A review task with its version.
    fn review_task(&self, id: &str) -> Option<StoredReview>;
    /// Review tasks, newest first, filtered.
    fn review_tasks(&self, filter: &ReviewFilter) -> Vec<converge_core::review::ReviewTask>;
    /// Every review task of these intents.
    fn review_tasks_of(&self, intent_ids: &[String]) -> Vec<converge_core::review::ReviewTask>;
    /// Open tasks past their deadline and not escalated yet.
    fn overdue_reviews(&self, now: DateTime<Utc>, limit: u32) -> Vec<StoredReview>;
    /// Review tasks counted by status and reviewer, and the overdue ones.
    fn review_counts(&self, tenant: Option<&str>, now: DateTime<Utc>) -> ReviewCounts;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

    use super::*;

    fn config(settings: &[(&str, &str)]) -> Result<StoreConfig, StoreError> {
        StoreConfig::from_lookup(|name| {
            settings
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn the_pool_size_defaults_by_backend_and_a_set_one_is_honoured_or_refused() {
        let cores = std::thread::available_parallelism().unwrap().get();
        let sqlite_readers = u32::try_from(cores.clamp(2, 4)).unwrap();
        assert_eq!(config(&[]).unwrap().pool_size, sqlite_readers);
        let postgres = [
            ("CONVERGE_DB_BACKEND", "postgres"),
            ("CONVERGE_PG_DSN", "postgres://u@h/d"),
        ];
        assert_eq!(config(&postgres).unwrap().pool_size, 4);
        assert_eq!(
            config(&[("CONVERGE_DB_POOL_SIZE", "7")]).unwrap().pool_size,
            7
        );
        for refused in ["0", "101", "four"] {
            let error = config(&[("CONVERGE_DB_POOL_SIZE", refused)]).err().unwrap();
            assert!(
                error.to_string().contains("CONVERGE_DB_POOL_SIZE"),
                "{error}"
            );
        }
    }
}
