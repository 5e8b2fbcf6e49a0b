//! Runtime wiring and the local adapters of the domain's ports.
//!
//! - [`services::Services`]: the composition root. Every process (the three functions,
//!   `converge serve`, `converge worker`, the CLI's in-process API) builds its store, ports,
//!   queues and secrets here, once, from the typed [`config::Config`].
//! - [`commands`]: the write paths the API and the webhook call (record, enqueue, record a
//!   webhook delivery, run a queue round now); [`api_keys`]: seeding the configured keys.
//! - [`local_git::GitScm`]: the `Scm` port over a git repository on this machine (the `git`
//!   CLI): merge simulation with `git merge-tree`, files changed from the merge base, and
//!   co-change history from `git log`.
//! - [`reported_checks::ReportedChecks`]: the `Checks` port over check results that CI reported
//!   to Converge (`POST /v1/intents/{id}/checks`, recorded as `check.reported` events).
//!
//! - [`secrets`]: Secrets Manager, with a short cache, and the secrets that rotate under a
//!   running process (the database DSN, the GitHub App key).
//! - [`sqs`], [`queue_worker`]: the queue and the worker rounds; [`telemetry`]: OTLP export.
//! - [`audit`]: verifying a tenant's audit chain page by page, and retention (pruning behind
//!   a signed anchor), which the sweep applies; [`export`]: the decision export, page by page;
//!   [`reviews`]: review tasks' write paths and the sweep's SLA escalation.

pub mod agents;
pub mod analytics;
pub mod api_keys;
pub mod audit;
pub mod aws;
pub mod commands;
pub mod config;
pub mod export;
pub mod intake_control;
pub mod local_checks;
pub mod local_git;
pub mod queue_simulator;
pub mod queue_worker;
pub mod reported_checks;
pub mod reviews;
pub mod routed;
pub mod secrets;
pub mod services;
pub mod sqs;
pub mod telemetry;
