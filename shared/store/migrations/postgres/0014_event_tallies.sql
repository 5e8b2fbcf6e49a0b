-- Counts of events per tenant ('' for none), type and UTC day ('YYYY-MM-DD'), kept by every
-- commit in the transaction that appends the events, so that all-time and per-day analytics
-- (integration metrics, the compliance report, the dashboard's charts) read a few rows instead
-- of the log. `mergeable` counts the simulation.completed events whose `mergeable` is true.
-- Retention prunes events, not these counts.
CREATE TABLE event_tallies (
    tenant      TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    day         TEXT NOT NULL,
    events      BIGINT NOT NULL,
    mergeable   BIGINT NOT NULL,
    PRIMARY KEY (tenant, event_type, day)
);
INSERT INTO event_tallies (tenant, event_type, day, events, mergeable)
SELECT COALESCE(tenant_id, ''), event_type, to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
       COUNT(*), COUNT(*) FILTER (WHERE payload->'mergeable' = 'true'::jsonb)
FROM events
GROUP BY 1, 2, 3;

-- The windowed analytics (the last 24 and 48 hours) read a tenant's events of a few types by time.
CREATE INDEX events_tenant_type_time_idx ON events (tenant_id, event_type, timestamp);
CREATE INDEX events_type_time_idx ON events (event_type, timestamp);
