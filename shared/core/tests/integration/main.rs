//! Tests of the domain: the pipeline end to end on in-memory doubles, and its properties.
//!
//! One test binary per crate: every file here is a module of it, so a build links one
//! executable instead of one per file (disk and link time on CI's 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

mod pipeline;
mod properties;
mod support;
mod train;
