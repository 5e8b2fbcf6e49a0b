-- Review tasks (converge_core::review): the task as JSON, beside the columns they are found
-- by; `version` moves with every change, so a change decided from a read lands only on it.
CREATE TABLE review_tasks (
    id            TEXT PRIMARY KEY,
    intent_id     TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    status        TEXT NOT NULL,
    reviewer      TEXT,
    sla_deadline  TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    task          JSONB NOT NULL,
    version       BIGINT NOT NULL
);
CREATE INDEX review_tasks_intent_idx ON review_tasks (intent_id);
CREATE INDEX review_tasks_tenant_idx ON review_tasks (tenant, created_at);
CREATE INDEX review_tasks_open_idx ON review_tasks (sla_deadline) WHERE status IN ('pending', 'assigned', 'in_review');
