-- A call answered by the route's fallback_response after every target failed.
ALTER TABLE records ADD COLUMN degraded INTEGER NOT NULL DEFAULT 0;
