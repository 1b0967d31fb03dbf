-- The outbox: an event for each upload that completes, fails or goes,
-- written by triggers in the transaction of that change, whichever
-- statement makes it. Delivered events are deleted.
CREATE TABLE upload_events (
    seq BIGSERIAL PRIMARY KEY,
    upload_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT,
    filename TEXT NOT NULL,
    total BIGINT,
    upload_offset BIGINT NOT NULL,
    checksum TEXT,
    metadata TEXT,
    happened_at TIMESTAMP NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    claim_token TEXT,
    claimed_until TIMESTAMP
);
CREATE INDEX upload_events_upload ON upload_events (upload_id, seq);

CREATE FUNCTION chunkd_upload_event() RETURNS trigger AS $$
DECLARE
    now_utc TIMESTAMP := now() AT TIME ZONE 'UTC';
    upload uploads;
    event TEXT;
    event_seq BIGINT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        upload := OLD;
        event := CASE
            WHEN OLD.status <> 2 AND OLD.expires_at <= now_utc THEN 'expired'
            WHEN OLD.status = 2 THEN 'deleted'
            ELSE 'aborted'
        END;
    ELSE
        upload := NEW;
        event := CASE NEW.status WHEN 2 THEN 'completed' ELSE 'failed' END;
    END IF;
    INSERT INTO upload_events (upload_id, kind, owner, filename, total,
        upload_offset, checksum, metadata, happened_at, next_attempt_at)
    VALUES (upload.id, event, upload.owner, upload.filename,
        CASE WHEN upload.length_deferred THEN NULL ELSE upload.total END,
        upload.upload_offset, upload.checksum, upload.metadata, now_utc, now_utc)
    RETURNING upload_events.seq INTO event_seq;
    PERFORM pg_notify('chunkd_events', json_build_object(
        'seq', event_seq, 'event', event, 'upload_id', upload.id)::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER uploads_finished AFTER UPDATE OF status ON uploads
    FOR EACH ROW WHEN (NEW.status IN (2, 3) AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION chunkd_upload_event();
CREATE TRIGGER uploads_gone AFTER DELETE ON uploads
    FOR EACH ROW EXECUTE FUNCTION chunkd_upload_event();
