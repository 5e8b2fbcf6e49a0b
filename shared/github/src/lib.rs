//! GitHub: webhook signature verification, typed webhook payloads and what they mean for the
//! queue. Still to come here (issue "The GitHub App"): App authentication (JWT → installation
//! token) and the adapters behind the domain's ports over the REST API with octocrab — merge
//! simulation, check outcomes, publishing decisions as check runs, and exact merges.

pub mod signature;
pub mod webhook;
