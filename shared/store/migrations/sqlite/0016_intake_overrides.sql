-- An operator's intake mode per tenant ('' for the global one); no row: auto.
CREATE TABLE intake_overrides (
    tenant      TEXT PRIMARY KEY,
    mode        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    set_by      TEXT NOT NULL,
    set_at      TEXT NOT NULL
);
