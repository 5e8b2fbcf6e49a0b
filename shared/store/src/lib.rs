//! State: the store contract and its PostgreSQL (production) and SQLite (embedded default)
//! implementations on sqlx — the event log, the intent projection updated in the same
//! transaction, queue leases with fencing tokens, webhook deliveries, the outbox, API keys and
//! rate counters, migrations, and backfill between the two backends.
//!
//! Status: not built yet (issue "State"); the crate exists so the workspace has its final
//! shape. It exports nothing.
