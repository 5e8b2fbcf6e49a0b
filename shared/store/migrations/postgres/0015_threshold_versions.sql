-- Compliance thresholds are written with the event that records them, at the version they
-- were read (a change made meanwhile fails the write instead of being overwritten).
ALTER TABLE compliance_thresholds ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
