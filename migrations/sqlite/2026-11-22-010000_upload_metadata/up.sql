ALTER TABLE uploads ADD COLUMN metadata TEXT;
