-- Agent policies (converge_core::agents) per agent and tenant ('' for intents without one),
-- written with the event that records them at the version they were read.
CREATE TABLE agent_policies (
    agent_id    TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    policy      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant, agent_id)
);
