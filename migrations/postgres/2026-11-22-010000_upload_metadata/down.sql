ALTER TABLE uploads DROP COLUMN metadata;
