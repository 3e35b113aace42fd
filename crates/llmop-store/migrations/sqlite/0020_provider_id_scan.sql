-- The provider's answer id joins the records' time index, so that a search by it needs
-- no index of its own: without `records_upstream_id` (random keys, about a page written
-- per record), a search by a provider id scans this narrow index newest first and reads
-- only the rows that match (docs/records.md, "Searching by the provider's id").
DROP INDEX records_created;
CREATE INDEX records_created ON records (created_at_ms, request_id, upstream_id)
