-- The pipeline stages each call went through, in order, comma-separated: where a
-- refused or failed call stopped.
ALTER TABLE records ADD COLUMN stages TEXT
