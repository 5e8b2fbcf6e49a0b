-- A commit's log tail of one tenant (its events joining the tenant's audit chain, the chain's
-- head, the tallies and the tenant's version) is written while the transaction commits, by a
-- deferred trigger, instead of by a statement before COMMIT. The chain's head is locked for
-- the tail's own work and the commit only, not through a round trip to the client and back:
-- that round trip (a busy client is slow to send COMMIT) was what capped a tenant's commits.
--
-- The commit leaves its tail here, a row an event, and the trigger writes it and removes the
-- rows, so no row outlives its transaction (hence unlogged: nothing here needs to survive a
-- crash). Rows, not one document: the events arrive as bound columns, as they would for an
-- insert into `events`, with nothing to parse (a JSON document of the tail measured twice the
-- database's time for the tail).
CREATE UNLOGGED TABLE log_tails (
    xact             XID8 NOT NULL DEFAULT pg_current_xact_id(),
    -- The event's place in the commit, from 1.
    position         BIGINT NOT NULL,
    chain            TEXT NOT NULL,
    id               TEXT NOT NULL,
    trace_id         TEXT NOT NULL,
    at               TIMESTAMPTZ NOT NULL,
    event_type       TEXT NOT NULL,
    intent_id        TEXT,
    agent_id         TEXT,
    tenant_id        TEXT,
    payload          JSONB NOT NULL,
    evidence         JSONB NOT NULL,
    -- converge_core::audit::link_record of the event.
    record           TEXT NOT NULL,
    -- The first row only: the commit's tallies (column by column) and the tenants whose
    -- intents it changes.
    tally_tenants    TEXT[],
    tally_types      TEXT[],
    tally_days       TEXT[],
    tally_events     BIGINT[],
    tally_mergeable  BIGINT[],
    tenants          TEXT[],
    PRIMARY KEY (xact, position)
) WITH (toast_tuple_target = 8160);

CREATE FUNCTION write_log_tail() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_index BIGINT;
    head_hash  TEXT;
BEGIN
    -- The head is locked by a statement of its own: a commit that waited for it re-reads one
    -- row, not the whole tail statement.
    SELECT next_index, last_hash INTO head_index, head_hash
    FROM audit_chains WHERE tenant = NEW.chain FOR UPDATE;
    IF NOT FOUND THEN
        -- A tenant's first event makes its chain's head (converge_core::audit::GENESIS).
        INSERT INTO audit_chains (tenant, next_index, last_hash)
        VALUES (NEW.chain, 0, '0000000000000000000000000000000000000000000000000000000000000000')
        ON CONFLICT (tenant) DO NOTHING;
        SELECT next_index, last_hash INTO STRICT head_index, head_hash
        FROM audit_chains WHERE tenant = NEW.chain FOR UPDATE;
    END IF;
    -- Each event's index follows its predecessor's, and its hash is
    -- sha256_hex(previous hash | index | record), as in converge_core::audit. Sequence numbers
    -- are taken under the head's lock, in the events' order: a tenant's log order is its chain
    -- order.
    WITH RECURSIVE incoming AS (
        SELECT position, id, trace_id, at, event_type, intent_id, agent_id, tenant_id, payload,
               evidence, record
        FROM log_tails WHERE xact = NEW.xact
    ), chained (position, chain_index, chain_hash) AS (
        SELECT CAST(0 AS BIGINT), head_index - 1, head_hash
        UNION ALL
        SELECT i.position, c.chain_index + 1,
               encode(sha256(convert_to(
                   c.chain_hash || '|' || CAST(c.chain_index + 1 AS TEXT) || '|' || i.record,
                   'UTF8')), 'hex')
        FROM chained AS c JOIN incoming AS i ON i.position = c.position + 1
    ), moved AS (
        UPDATE audit_chains SET next_index = last.chain_index + 1, last_hash = last.chain_hash
        FROM (SELECT chain_index, chain_hash FROM chained ORDER BY position DESC LIMIT 1) AS last
        WHERE audit_chains.tenant = NEW.chain
    ), tallied AS (
        INSERT INTO event_tallies (tenant, event_type, day, events, mergeable)
        SELECT t.tenant, t.event_type, t.day, t.events, t.mergeable
        FROM unnest(NEW.tally_tenants, NEW.tally_types, NEW.tally_days, NEW.tally_events,
                    NEW.tally_mergeable) AS t (tenant, event_type, day, events, mergeable)
        ON CONFLICT (tenant, event_type, day) DO UPDATE SET
            events = event_tallies.events + excluded.events,
            mergeable = event_tallies.mergeable + excluded.mergeable
    ), versions AS (
        INSERT INTO tenant_versions (tenant, version)
        SELECT v.tenant, 1 FROM unnest(NEW.tenants) AS v (tenant)
        ON CONFLICT (tenant) DO UPDATE SET version = tenant_versions.version + 1
    )
    INSERT INTO events (id, trace_id, timestamp, event_type, intent_id, agent_id, tenant_id,
                        payload, evidence, chain_index, chain_hash)
    SELECT i.id, i.trace_id, i.at, i.event_type, i.intent_id, i.agent_id, i.tenant_id,
           i.payload, i.evidence, c.chain_index, c.chain_hash
    FROM incoming AS i JOIN chained AS c ON c.position = i.position
    ORDER BY i.position;
    DELETE FROM log_tails WHERE xact = NEW.xact;
    RETURN NULL;
END
$$;

-- Once a commit: on its first event's row.
CREATE CONSTRAINT TRIGGER log_tail_at_commit AFTER INSERT ON log_tails
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.position = 1) EXECUTE FUNCTION write_log_tail();
