ALTER TABLE uploads DROP COLUMN failure;
