-- Budgets added through the admin API, besides those in the config file. spec is the budget as JSON.
CREATE TABLE budgets (
    id             TEXT PRIMARY KEY,
    spec           TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    created_by     TEXT
)
