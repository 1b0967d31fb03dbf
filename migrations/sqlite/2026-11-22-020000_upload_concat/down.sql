ALTER TABLE uploads DROP COLUMN concat;
