-- A queue key paused by a failure of its environment (target checked out, GitHub unreachable,
-- permission denied, App key missing): why, since when, until when no round runs, and how many
-- failures in a row (the backoff doubles with each). Cleared by the next round that succeeds.
ALTER TABLE queue_leases ADD COLUMN hold_reason TEXT;
ALTER TABLE queue_leases ADD COLUMN hold_since TIMESTAMPTZ;
ALTER TABLE queue_leases ADD COLUMN hold_until TIMESTAMPTZ;
ALTER TABLE queue_leases ADD COLUMN hold_failures BIGINT NOT NULL DEFAULT 0;
