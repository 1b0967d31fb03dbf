CREATE TABLE uploads (
    id TEXT PRIMARY KEY NOT NULL,
    owner TEXT,
    filename TEXT NOT NULL,
    total BIGINT NOT NULL,
    upload_offset BIGINT NOT NULL,
    status SMALLINT NOT NULL,
    checksum_algo TEXT NOT NULL,
    hash_state BYTEA NOT NULL,
    checksum TEXT,
    storage_dir TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    completed_at TIMESTAMP,
    lock_token TEXT,
    lock_until TIMESTAMP
);
CREATE INDEX uploads_owner_created ON uploads (owner, created_at);
CREATE INDEX uploads_status_expires ON uploads (status, expires_at);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL
);
