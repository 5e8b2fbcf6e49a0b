-- Dashboard sign-ins: the browser holds an opaque session id; only its SHA-256 is kept here,
-- with the hash of the API key it stands for, until it expires or its holder signs out.
CREATE TABLE dashboard_sessions (
    id_sha256   TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX dashboard_sessions_expires_idx ON dashboard_sessions (expires_at);
