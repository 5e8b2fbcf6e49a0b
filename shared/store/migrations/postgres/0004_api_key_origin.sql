-- Where a key was configured: NULL for keys made through the API or CONVERGE_API_KEYS,
-- 'secret:<arn>' for keys seeded from a Secrets Manager secret, which then revokes the keys it
-- no longer lists.
ALTER TABLE api_keys ADD COLUMN origin TEXT;
