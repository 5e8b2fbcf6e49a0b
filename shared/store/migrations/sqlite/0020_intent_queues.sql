-- The actionable intents of each queue key (tenant, repository, target) in queue order: a
-- worker's round reads its key's page as one range of this index instead of filtering every
-- actionable intent of the deployment. Queries repeat the expressions and the condition as
-- written here (values spelled out): SQLite uses an expression or partial index only then.
CREATE INDEX intents_key_idx ON intents
    (COALESCE(tenant_id, ''), COALESCE(json_extract(technical, '$.repo'), ''), target, priority, created_at, id)
    WHERE status IN ('READY', 'VALIDATED', 'QUEUED');
