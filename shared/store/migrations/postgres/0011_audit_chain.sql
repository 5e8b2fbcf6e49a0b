-- The audit chain (converge_core::audit): each event's position in its tenant's chain and its
-- hash, written in the transaction that appends it. Rows from before this migration are chained
-- when a process next migrates (Store::migrate seals them, oldest first).
ALTER TABLE events ADD COLUMN chain_index BIGINT;
ALTER TABLE events ADD COLUMN chain_hash TEXT;
CREATE UNIQUE INDEX events_chain_idx ON events ((COALESCE(tenant_id, '')), chain_index);
CREATE INDEX events_unchained_idx ON events (seq) WHERE chain_index IS NULL;

-- Each chain's end; its row lock orders a tenant's appends.
CREATE TABLE audit_chains (
    tenant      TEXT PRIMARY KEY,
    next_index  BIGINT NOT NULL,
    last_hash   TEXT NOT NULL
);

-- What retention pruned from each chain: the last event removed, signed.
CREATE TABLE audit_anchors (
    tenant         TEXT PRIMARY KEY,
    through_index  BIGINT NOT NULL,
    through_hash   TEXT NOT NULL,
    pruned_events  BIGINT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    signature      TEXT NOT NULL
);

-- The latest event of a type for each intent of a page (the decision export, the dashboard):
-- one index probe per intent instead of a scan of the type.
CREATE INDEX events_intent_type_idx ON events (intent_id, event_type, seq);

-- Retention deletes sent outbox rows by age.
CREATE INDEX outbox_sent_idx ON outbox (sent_at) WHERE sent_at IS NOT NULL;
