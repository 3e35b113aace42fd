-- Each call's own identity. call_uid is unique per call (a UUIDv7 made when its record
-- is built). When a client reuses an x-request-id, the later calls are stored under
-- "<id>~<call_uid>" and keep the id they were answered with in client_request_id.
ALTER TABLE records ADD COLUMN call_uid TEXT;
ALTER TABLE records ADD COLUMN client_request_id TEXT;
-- 1 when a large field (input messages, output text) was cut to [store] max_field_bytes.
ALTER TABLE records ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;
CREATE INDEX records_client_request_id ON records (client_request_id) WHERE client_request_id IS NOT NULL
