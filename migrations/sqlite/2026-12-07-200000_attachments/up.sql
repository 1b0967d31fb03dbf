-- Session attachments: a name in a bundle of one holder (a token's owner,
-- or a visitor's session) stands for one complete upload. The upload's row
-- goes with its attachment; its file is then an orphan for the sweep.
CREATE TABLE attachments (
    holder TEXT NOT NULL,
    bundle TEXT NOT NULL,
    name TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    media_type TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (holder, bundle, name)
);
CREATE INDEX attachments_by_age ON attachments (created_at);
