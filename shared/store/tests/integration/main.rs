//! Tests of the stores: one contract both backends meet (crash safety is tested by the test
//! support package, which owns the writer it kills: `tests/tests/integration/crash.rs`).
//!
//! One test binary per crate: every file here is a module of it, so a build links one
//! executable instead of one per file (disk and link time on CI's 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

mod contract;
mod sqlite_writer;
mod support;
