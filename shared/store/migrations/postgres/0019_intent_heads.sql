-- Intents by head commit (technical.initial_base_commit): a completed check on a commit finds
-- the intents whose head it is with one probe, not by reading every actionable intent of the
-- repository.
CREATE INDEX intents_head_idx ON intents ((technical->>'initial_base_commit'));
