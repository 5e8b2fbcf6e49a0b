//! GitHub: webhook signature verification, typed webhook payloads and what they mean for the
//! queue; the GitHub App (octocrab clients per installation, JWT and token handling); and the
//! domain's ports over the REST API — merge simulation, check outcomes and exact merges.

#[cfg(feature = "app")]
pub mod adapters;
#[cfg(feature = "app")]
pub mod app;
#[cfg(feature = "app")]
pub mod conversation;
pub mod signature;
pub mod webhook;
