DROP TRIGGER uploads_gone;
DROP TRIGGER uploads_finished;
DROP TABLE upload_events;
