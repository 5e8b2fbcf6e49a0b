//! End-to-end tests of Converge: the `converge` binary, its HTTP API, webhook, workers,
//! dashboard and telemetry, against real PostgreSQL, git, the SQS emulator and the GitHub fake.
//!
//! One test binary per crate: every file here is a module of it, so a build links one
//! executable instead of one per file (disk and link time on CI's 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

mod abuse;
mod agents;
mod analytics;
mod analytics_parity;
mod api;
mod audit_export;
mod backfill;
mod bad_input;
mod comment_commands;
mod concurrency;
mod dashboard;
mod demo;
mod doctor;
mod eval_input_errors;
mod freezes;
mod full_disk;
mod github_app;
mod intake;
mod lease_reset;
mod operator_cli;
mod parity;
mod policy_file;
mod queue_simulator;
mod readiness;
mod readme;
mod reads;
mod reviews;
mod risk_parity;
mod runbook;
mod serve_worker;
mod server_limits;
mod sqs_workers;
mod telemetry;
mod tenant_lists;
mod validate;
mod webhook;
mod worker_crash;
