-- Readiness writes here (one row, overwritten): a store that can be read but not written to
-- (a full disk, a read-only file system) is not ready.
CREATE TABLE store_probe (
    id          INTEGER PRIMARY KEY,
    probed_at   TEXT NOT NULL
);
