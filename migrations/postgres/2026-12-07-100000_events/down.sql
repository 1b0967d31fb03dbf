DROP TRIGGER uploads_gone ON uploads;
DROP TRIGGER uploads_finished ON uploads;
DROP FUNCTION chunkd_upload_event();
DROP TABLE upload_events;
