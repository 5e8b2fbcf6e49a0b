//! GitHub: App authentication (JWT → installation token), webhook signature verification and
//! typed payloads, and the adapters behind the domain's ports over the REST API with octocrab —
//! merge simulation, check outcomes, publishing decisions as check runs, and exact merges.
//!
//! Status: not built yet (issue "The GitHub App"); the crate exists so the workspace has its
//! final shape. It exports nothing.
