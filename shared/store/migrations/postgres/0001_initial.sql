-- Converge state on PostgreSQL. Timestamps are timestamptz (UTC), JSON is jsonb.

-- The source of truth: every decision, in append order (seq).
CREATE TABLE events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    trace_id    TEXT NOT NULL,
    timestamp   TIMESTAMPTZ NOT NULL,
    event_type  TEXT NOT NULL,
    intent_id   TEXT,
    agent_id    TEXT,
    tenant_id   TEXT,
    payload     JSONB NOT NULL,
    evidence    JSONB NOT NULL DEFAULT '{}'
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
    created_at       TIMESTAMPTZ NOT NULL,
    created_by       TEXT NOT NULL,
    risk_level       TEXT NOT NULL,
    priority         BIGINT NOT NULL,
    semantic         JSONB NOT NULL,
    technical        JSONB NOT NULL,
    checks_required  JSONB NOT NULL,
    dependencies     JSONB NOT NULL,
    retries          BIGINT NOT NULL,
    tenant_id        TEXT,
    plan_id          TEXT,
    origin_type      TEXT NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX intents_queue_idx ON intents (status, priority, created_at, id);
CREATE INDEX intents_tenant_idx ON intents (tenant_id);

CREATE TABLE intent_commit_links (
    intent_id    TEXT NOT NULL,
    repo         TEXT NOT NULL,
    sha          TEXT NOT NULL,
    role         TEXT NOT NULL,
    observed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (intent_id, sha, role)
);
CREATE INDEX intent_commit_links_sha_idx ON intent_commit_links (sha);

CREATE TABLE webhook_deliveries (
    delivery_id  TEXT PRIMARY KEY,
    event_name   TEXT NOT NULL,
    body_sha256  TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL
);

-- One row per queue key, kept forever so fencing tokens only grow.
CREATE TABLE queue_leases (
    tenant       TEXT NOT NULL,
    repo         TEXT NOT NULL,
    target       TEXT NOT NULL,
    holder       TEXT,
    token        BIGINT NOT NULL,
    acquired_at  TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ,
    PRIMARY KEY (tenant, repo, target)
);

CREATE TABLE outbox (
    seq            BIGSERIAL PRIMARY KEY,
    topic          TEXT NOT NULL,
    payload        JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    claimed_by     TEXT,
    claimed_until  TIMESTAMPTZ,
    sent_at        TIMESTAMPTZ
);
CREATE INDEX outbox_unsent_idx ON outbox (seq) WHERE sent_at IS NULL;

CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    tenant_id   TEXT,
    scopes      JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ
);

CREATE TABLE rate_limit_counters (
    tenant        TEXT NOT NULL,
    window_start  TIMESTAMPTZ NOT NULL,
    hits          BIGINT NOT NULL,
    PRIMARY KEY (tenant, window_start)
);

CREATE TABLE risk_policies (
    tenant      TEXT PRIMARY KEY,
    data        JSONB NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE compliance_thresholds (
    tenant      TEXT PRIMARY KEY,
    data        JSONB NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
