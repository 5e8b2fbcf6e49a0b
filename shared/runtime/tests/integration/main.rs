//! Tests of the runtime: the queue worker, SQS, GitHub adapter, local checks, secrets.
//!
//! One test binary per crate: every file here is a module of it, so a build links one
//! executable instead of one per file (disk and link time on CI's 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

mod audit;
mod concurrency;
mod github;
mod local_checks;
mod local_git;
mod queue_properties;
mod queue_worker;
mod secrets;
mod sqs;
mod trains;
