// One schema for PostgreSQL and SQLite: only types that diesel's
// MultiConnection supports (ids are TEXT, times are naive UTC).

diesel::table! {
    uploads (id) {
        id -> Text,
        owner -> Nullable<Text>,
        filename -> Text,
        total -> BigInt,
        upload_offset -> BigInt,
        status -> SmallInt,
        checksum_algo -> Text,
        hash_state -> Binary,
        checksum -> Nullable<Text>,
        storage_dir -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        completed_at -> Nullable<Timestamp>,
        lock_token -> Nullable<Text>,
        lock_until -> Nullable<Timestamp>,
        metadata -> Nullable<Text>,
        concat -> Nullable<Text>,
        length_deferred -> Bool,
        received -> Nullable<BigInt>,
    }
}

diesel::table! {
    tokens (id) {
        id -> Text,
        owner -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    attachments (holder, bundle, name) {
        holder -> Text,
        bundle -> Text,
        name -> Text,
        upload_id -> Text,
        media_type -> Text,
        created_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(attachments, uploads);

// A lease checks the caller's token in its own statement.
diesel::allow_tables_to_appear_in_same_query!(uploads, tokens);

diesel::table! {
    upload_events (seq) {
        seq -> BigInt,
        upload_id -> Text,
        kind -> Text,
        owner -> Nullable<Text>,
        filename -> Text,
        total -> Nullable<BigInt>,
        upload_offset -> BigInt,
        checksum -> Nullable<Text>,
        metadata -> Nullable<Text>,
        happened_at -> Timestamp,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        claim_token -> Nullable<Text>,
        claimed_until -> Nullable<Timestamp>,
    }
}
