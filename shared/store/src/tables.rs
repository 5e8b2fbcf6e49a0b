//! The tables of the store as data: names, keys and column kinds, for the code that handles
//! every table alike (backfill, checksums). Keep in step with the migrations; the contract
//! tests compare this list with the schema of both backends.

/// How a column is stored and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Text, never null.
    Text,
    /// Text or null.
    OptText,
    /// 64-bit integer, never null.
    Int,
    /// 64-bit integer or null.
    OptInt,
    /// Timestamp, never null.
    Ts,
    /// Timestamp or null.
    OptTs,
    /// JSON document.
    Json,
    /// Boolean.
    Bool,
}

/// One table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table {
    pub name: &'static str,
    /// Primary key columns, in order (used for paging).
    pub key: &'static [&'static str],
    pub columns: &'static [(&'static str, Kind)],
    /// A column filled from a sequence, which must be moved past copied values.
    pub serial: Option<&'static str>,
    /// Why the table's content changes by itself while Converge runs (so a copy's checksum is
    /// not compared); `None` for tables that hold state.
    pub ephemeral: Option<&'static str>,
    /// Rows are only ever added, never changed: a copy never overwrites a row the target has
    /// (a different row at the same key is a divergence `--verify` reports).
    pub append_only: bool,
}

use Kind::*;

pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "events",
        key: &["seq"],
        columns: &[
            ("seq", Int),
            ("id", Text),
            ("trace_id", Text),
            ("timestamp", Ts),
            ("event_type", Text),
            ("intent_id", OptText),
            ("agent_id", OptText),
            ("tenant_id", OptText),
            ("payload", Json),
            ("evidence", Json),
            ("chain_index", OptInt),
            ("chain_hash", OptText),
        ],
        serial: Some("seq"),
        ephemeral: None,
        append_only: true,
    },
    Table {
        name: "intents",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("source", Text),
            ("target", Text),
            ("status", Text),
            ("created_at", Ts),
            ("created_by", Text),
            ("risk_level", Text),
            ("priority", Int),
            ("semantic", Json),
            ("technical", Json),
            ("checks_required", Json),
            ("dependencies", Json),
            ("retries", Int),
            ("tenant_id", OptText),
            ("plan_id", OptText),
            ("origin_type", Text),
            ("updated_at", Ts),
            ("version", Int),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "intent_commit_links",
        key: &["intent_id", "sha", "role"],
        columns: &[
            ("intent_id", Text),
            ("repo", Text),
            ("sha", Text),
            ("role", Text),
            ("observed_at", Ts),
        ],
        serial: None,
        ephemeral: None,
        append_only: true,
    },
    Table {
        name: "webhook_deliveries",
        key: &["delivery_id"],
        columns: &[
            ("delivery_id", Text),
            ("event_name", Text),
            ("body_sha256", Text),
            ("received_at", Ts),
        ],
        serial: None,
        ephemeral: None,
        append_only: true,
    },
    Table {
        name: "queue_leases",
        key: &["tenant", "repo", "target"],
        columns: &[
            ("tenant", Text),
            ("repo", Text),
            ("target", Text),
            ("holder", OptText),
            ("token", Int),
            ("acquired_at", OptTs),
            ("expires_at", OptTs),
            ("hold_reason", OptText),
            ("hold_since", OptTs),
            ("hold_until", OptTs),
            ("hold_failures", Int),
            ("train", OptText),
            ("repo_config", OptText),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "outbox",
        key: &["seq"],
        columns: &[
            ("seq", Int),
            ("topic", Text),
            ("payload", Json),
            ("created_at", Ts),
            ("attempts", Int),
            ("claimed_by", OptText),
            ("claimed_until", OptTs),
            ("sent_at", OptTs),
        ],
        serial: Some("seq"),
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "api_keys",
        key: &["key_hash"],
        columns: &[
            ("key_hash", Text),
            ("role", Text),
            ("actor", Text),
            ("tenant_id", OptText),
            ("scopes", Json),
            ("created_at", Ts),
            ("expires_at", OptTs),
            ("origin", OptText),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "rate_limit_counters",
        key: &["tenant", "window_start"],
        columns: &[("tenant", Text), ("window_start", Ts), ("hits", Int)],
        serial: None,
        ephemeral: Some("rate-limit counters: every request moves them"),
        append_only: false,
    },
    Table {
        name: "risk_policies",
        key: &["tenant"],
        columns: &[
            ("tenant", Text),
            ("data", Json),
            ("version", Int),
            ("updated_at", Ts),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "feature_flags",
        key: &["name"],
        columns: &[
            ("name", Text),
            ("enabled", Bool),
            ("updated_at", Ts),
            ("updated_by", Text),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "idempotency_keys",
        key: &["scope", "key"],
        columns: &[
            ("scope", Text),
            ("key", Text),
            ("request_sha256", Text),
            ("status", Int),
            ("body", Text),
            ("created_at", Ts),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "store_probe",
        key: &["id"],
        columns: &[("id", Int), ("probed_at", Ts)],
        serial: None,
        ephemeral: Some("readiness probe: every /health/ready writes it"),
        append_only: false,
    },
    Table {
        name: "dashboard_sessions",
        key: &["id_sha256"],
        columns: &[
            ("id_sha256", Text),
            ("key_hash", Text),
            ("created_at", Ts),
            ("expires_at", Ts),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "compliance_thresholds",
        key: &["tenant"],
        columns: &[
            ("tenant", Text),
            ("data", Json),
            ("updated_at", Ts),
            ("version", Int),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "tenant_versions",
        key: &["tenant"],
        columns: &[("tenant", Text), ("version", Int)],
        serial: None,
        ephemeral: Some("versions of each tenant's intents: every commit moves them"),
        // Never lowered by a copy (a reader could take an old number for the current one); the
        // backfill bumps every tenant once the intents are copied.
        append_only: true,
    },
    Table {
        name: "audit_chains",
        key: &["tenant"],
        columns: &[("tenant", Text), ("next_index", Int), ("last_hash", Text)],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "audit_anchors",
        key: &["tenant"],
        columns: &[
            ("tenant", Text),
            ("through_index", Int),
            ("through_hash", Text),
            ("pruned_events", Int),
            ("created_at", Ts),
            ("signature", Text),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "queue_freezes",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("tenant", Text),
            ("repo", OptText),
            ("target", OptText),
            ("reason", Text),
            ("time_window", Json),
            ("created_by", Text),
            ("created_at", Ts),
            ("lifted_at", OptTs),
            ("lifted_by", OptText),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "agent_policies",
        key: &["tenant", "agent_id"],
        columns: &[
            ("agent_id", Text),
            ("tenant", Text),
            ("policy", Json),
            ("version", Int),
            ("updated_at", Ts),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "intake_overrides",
        key: &["tenant"],
        columns: &[
            ("tenant", Text),
            ("mode", Text),
            ("reason", Text),
            ("set_by", Text),
            ("set_at", Ts),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "event_tallies",
        key: &["tenant", "event_type", "day"],
        columns: &[
            ("tenant", Text),
            ("event_type", Text),
            ("day", Text),
            ("events", Int),
            ("mergeable", Int),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
    Table {
        name: "review_tasks",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("intent_id", Text),
            ("tenant", Text),
            ("status", Text),
            ("reviewer", OptText),
            ("sla_deadline", Ts),
            ("created_at", Ts),
            ("task", Json),
            ("version", Int),
        ],
        serial: None,
        ephemeral: None,
        append_only: false,
    },
];
