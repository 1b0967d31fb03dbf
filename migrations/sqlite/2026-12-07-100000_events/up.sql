-- The outbox: an event for each upload that completes, fails or goes,
-- written by triggers in the transaction of that change, whichever
-- statement makes it. Delivered events are deleted. Times are text in
-- the form diesel writes, so that they compare as text.
CREATE TABLE upload_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
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

CREATE TRIGGER uploads_finished AFTER UPDATE OF status ON uploads
    FOR EACH ROW WHEN NEW.status IN (2, 3) AND OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO upload_events (upload_id, kind, owner, filename, total,
        upload_offset, checksum, metadata, happened_at, next_attempt_at)
    VALUES (NEW.id, CASE NEW.status WHEN 2 THEN 'completed' ELSE 'failed' END,
        NEW.owner, NEW.filename,
        CASE WHEN NEW.length_deferred THEN NULL ELSE NEW.total END,
        NEW.upload_offset, NEW.checksum,
        NEW.metadata, strftime('%Y-%m-%d %H:%M:%f', 'now'),
        strftime('%Y-%m-%d %H:%M:%f', 'now'));
END;

CREATE TRIGGER uploads_gone AFTER DELETE ON uploads
BEGIN
    INSERT INTO upload_events (upload_id, kind, owner, filename, total,
        upload_offset, checksum, metadata, happened_at, next_attempt_at)
    VALUES (OLD.id, CASE
            WHEN OLD.status <> 2
                AND OLD.expires_at <= strftime('%Y-%m-%d %H:%M:%f', 'now') THEN 'expired'
            WHEN OLD.status = 2 THEN 'deleted'
            ELSE 'aborted'
        END,
        OLD.owner, OLD.filename,
        CASE WHEN OLD.length_deferred THEN NULL ELSE OLD.total END,
        OLD.upload_offset, OLD.checksum,
        OLD.metadata, strftime('%Y-%m-%d %H:%M:%f', 'now'),
        strftime('%Y-%m-%d %H:%M:%f', 'now'));
END;
