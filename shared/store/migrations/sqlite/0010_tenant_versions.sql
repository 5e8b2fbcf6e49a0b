-- One row per tenant (the empty name for intents without one), bumped by every commit that
-- changes one of the tenant's intents, as that commit's last statement. The number only grows
-- and grows in commit order, so a reader that saw it unchanged knows the tenant's intents are
-- as they were: the pages a server keeps are keyed on it.
CREATE TABLE tenant_versions (
    tenant TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO tenant_versions (tenant, version)
SELECT DISTINCT COALESCE(tenant_id, ''), 1 FROM intents;
