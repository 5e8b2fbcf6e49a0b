-- The tested queue of a key (core::train, as JSON), written by the holder of its lease.
-- Losing it is safe: the next round starts a new train from the queued intents.
ALTER TABLE queue_leases ADD COLUMN train TEXT;
-- The last valid .github/converge.toml read on the key's target (an invalid one leaves it in
-- force).
ALTER TABLE queue_leases ADD COLUMN repo_config TEXT;
