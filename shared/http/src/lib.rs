//! HTTP: the axum routers served by the `api` and `webhook` functions and by `converge serve`,
//! with the auth and rate-limit layers, the one error-to-HTTP mapping and the dashboard.
//!
//! Status: not built yet (issue "The HTTP API"); the crate exists so the workspace has its
//! final shape. It exports nothing.
