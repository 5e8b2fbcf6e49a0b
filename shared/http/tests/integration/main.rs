//! Tests of the HTTP surface: Lambda adapters, OpenAPI, sample events, secret rotation.
//!
//! One test binary per crate: every file here is a module of it, so a build links one
//! executable instead of one per file (disk and link time on CI's 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

mod access;
mod lambda;
mod openapi;
mod sample_events;
mod secret_rotation;
mod support;
