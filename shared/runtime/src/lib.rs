//! Runtime wiring: the one configuration struct (environment + Secrets Manager), the SQS
//! client, OpenTelemetry export, and the assembly of application state for each function and
//! for the local server.
//!
//! Status: not built yet (issues "The worker" and "Serverless packaging"); the crate exists so
//! the workspace has its final shape. It exports nothing.
