//! Tests of what the store guarantees under a crash, through the test support's writer binary
//! (`converge-store-crash-writer`), which only this package can start by name.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

mod crash;
