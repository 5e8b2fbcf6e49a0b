-- Intents by head commit (technical.initial_base_commit): a completed check on a commit finds
-- the intents whose head it is with one probe, not by reading every actionable intent of the
-- repository. Queries must spell the expression exactly so to use the index.
CREATE INDEX intents_head_idx ON intents (json_extract(technical, '$.initial_base_commit'));
