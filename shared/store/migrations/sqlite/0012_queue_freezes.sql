-- Operators' holds on merges (converge_core::freeze): written with their queue.frozen /
-- queue.unfrozen events, read by the worker before every merge.
CREATE TABLE queue_freezes (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    repo        TEXT,
    target      TEXT,
    reason      TEXT NOT NULL,
    time_window TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    lifted_at   TEXT,
    lifted_by   TEXT
);
CREATE INDEX queue_freezes_live_idx ON queue_freezes (tenant, created_at) WHERE lifted_at IS NULL;
