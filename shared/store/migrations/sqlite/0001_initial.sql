-- Converge state on SQLite. Timestamps are TEXT in one fixed UTC format
-- (YYYY-MM-DDTHH:MM:SS.ffffffZ, so text order is time order), JSON is TEXT.

-- The source of truth: every decision, in append order (seq).
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    trace_id    TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    intent_id   TEXT,
    agent_id    TEXT,
    tenant_id   TEXT,
    payload     TEXT NOT NULL,
    evidence    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_intent_idx ON events (intent_id, seq);
CREATE INDEX events_type_idx ON events (event_type, seq);
CREATE INDEX events_tenant_idx ON events (tenant_id, seq);
CREATE INDEX events_timestamp_idx ON events (timestamp);

-- Projection of the events: the current state of each intent.
CREATE TABLE intents (
    id               TEXT PRIMARY KEY,
    source           TEXT NOT NULL,
    target           TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    risk_level       TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    semantic         TEXT NOT NULL,
    technical        TEXT NOT NULL,
    checks_required  TEXT NOT NULL,
    dependencies     TEXT NOT NULL,
    retries          INTEGER NOT NULL,
    tenant_id        TEXT,
    plan_id          TEXT,
    origin_type      TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX intents_queue_idx ON intents (status, priority, created_at, id);
CREATE INDEX intents_tenant_idx ON intents (tenant_id);

CREATE TABLE intent_commit_links (
    intent_id    TEXT NOT NULL,
    repo         TEXT NOT NULL,
    sha          TEXT NOT NULL,
    role         TEXT NOT NULL,
    observed_at  TEXT NOT NULL,
    PRIMARY KEY (intent_id, sha, role)
);
CREATE INDEX intent_commit_links_sha_idx ON intent_commit_links (sha);

CREATE TABLE webhook_deliveries (
    delivery_id  TEXT PRIMARY KEY,
    event_name   TEXT NOT NULL,
    body_sha256  TEXT NOT NULL,
    received_at  TEXT NOT NULL
);

-- One row per queue key, kept forever so fencing tokens only grow.
CREATE TABLE queue_leases (
    tenant       TEXT NOT NULL,
    repo         TEXT NOT NULL,
    target       TEXT NOT NULL,
    holder       TEXT,
    token        INTEGER NOT NULL,
    acquired_at  TEXT,
    expires_at   TEXT,
    PRIMARY KEY (tenant, repo, target)
);

CREATE TABLE outbox (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    topic          TEXT NOT NULL,
    payload        TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    claimed_by     TEXT,
    claimed_until  TEXT,
    sent_at        TEXT
);
CREATE INDEX outbox_unsent_idx ON outbox (seq) WHERE sent_at IS NULL;

CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    tenant_id   TEXT,
    scopes      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT
);

CREATE TABLE rate_limit_counters (
    tenant        TEXT NOT NULL,
    window_start  TEXT NOT NULL,
    hits          INTEGER NOT NULL,
    PRIMARY KEY (tenant, window_start)
);

CREATE TABLE risk_policies (
    tenant      TEXT PRIMARY KEY,
    data        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE compliance_thresholds (
    tenant      TEXT PRIMARY KEY,
    data        TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
