//! Tests of the stores: one contract both backends meet, and crash safety.
//!
//! One test binary per crate: every file here is a module of it, so a build links one
//! executable instead of one per file (disk and link time on CI's 2 cores).

mod contract;
mod crash;
mod support;
