ALTER TABLE uploads DROP COLUMN length_deferred;
