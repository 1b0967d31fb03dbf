ALTER TABLE uploads DROP COLUMN received;
