-- The pipeline stages each call went through, in order, comma-separated: where a
-- refused or failed call stopped.
ALTER TABLE records ADD COLUMN stages TEXT;
-- Indexes on columns most calls leave empty hold only the rows that have a value: an
-- anonymous call no longer updates four B-trees it will never be found through.
-- (A lookup by equality implies IS NOT NULL, so both databases still use them.)
DROP INDEX records_feature;
CREATE INDEX records_feature ON records (feature, created_at_ms) WHERE feature IS NOT NULL;
DROP INDEX records_user;
CREATE INDEX records_user ON records (user_id, created_at_ms) WHERE user_id IS NOT NULL;
DROP INDEX records_session;
CREATE INDEX records_session ON records (session_id, created_at_ms) WHERE session_id IS NOT NULL;
DROP INDEX records_shadow_of;
CREATE INDEX records_shadow_of ON records (shadow_of) WHERE shadow_of IS NOT NULL
