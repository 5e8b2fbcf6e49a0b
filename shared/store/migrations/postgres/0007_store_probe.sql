-- Readiness writes here (one row, overwritten): a store that can be read but not written to
-- (a full disk, a read-only file system) is not ready.
CREATE TABLE store_probe (
    id          BIGINT PRIMARY KEY,
    probed_at   TIMESTAMPTZ NOT NULL
);
