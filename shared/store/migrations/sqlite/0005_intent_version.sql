-- Optimistic concurrency: an intent's version is the number of events applied to its row, so a
-- decision made from a read can commit only if the row is still the one it read
-- (Commit::expect), and a rebuild from the log gives every row the version it had.
ALTER TABLE intents ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
