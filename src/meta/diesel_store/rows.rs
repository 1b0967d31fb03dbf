//! Upload and token rows as diesel maps them, and their conversion to the
//! records the trait speaks.

use super::{STATUS_COMPLETE, STATUS_FAILED, STATUS_UPLOADING};
use crate::meta::schema::{tokens, uploads};
use crate::meta::{MetaError, MetaResult, UploadRecord};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = uploads)]
pub(super) struct UploadRow {
    id: String,
    owner: Option<String>,
    filename: String,
    total: i64,
    upload_offset: i64,
    status: i16,
    checksum_algo: String,
    hash_state: Vec<u8>,
    checksum: Option<String>,
    storage_dir: String,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    completed_at: Option<NaiveDateTime>,
    lock_token: Option<String>,
    lock_until: Option<NaiveDateTime>,
    metadata: Option<String>,
    concat: Option<String>,
    length_deferred: bool,
    received: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = tokens)]
pub(super) struct TokenRow {
    pub(super) id: String,
    pub(super) owner: String,
    pub(super) token_hash: String,
    pub(super) created_at: NaiveDateTime,
}

pub(super) fn naive(time: DateTime<Utc>) -> NaiveDateTime {
    time.naive_utc()
}

/// Offsets are u64 in the engine and BIGINT in the database; every value
/// the engine hands over was checked against the size limit, far below
/// i64::MAX.
pub(super) fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) type UploadById =
    diesel::dsl::Filter<uploads::table, diesel::dsl::Eq<uploads::id, String>>;
pub(super) type HeldUpload<'a> =
    diesel::dsl::Filter<UploadById, diesel::dsl::Eq<uploads::lock_token, &'a str>>;

/// The row of an upload whose lease `token` holds: every change of an
/// upload goes through it, so a holder that lost its lease changes nothing.
pub(super) fn held(id: Uuid, token: &str) -> HeldUpload<'_> {
    uploads::table
        .filter(uploads::id.eq(id.to_string()))
        .filter(uploads::lock_token.eq(token))
}

impl UploadRow {
    pub(super) fn from_record(r: &UploadRecord) -> Self {
        UploadRow {
            id: r.id.to_string(),
            owner: r.owner.clone(),
            filename: r.filename.clone(),
            total: to_db(r.total.unwrap_or(0)),
            upload_offset: to_db(r.offset),
            status: match (r.complete, r.failed) {
                (true, _) => STATUS_COMPLETE,
                (false, true) => STATUS_FAILED,
                (false, false) => STATUS_UPLOADING,
            },
            checksum_algo: r.checksum_algo.clone(),
            hash_state: r.hash_state.clone(),
            checksum: r.checksum.clone(),
            storage_dir: r.storage_dir.clone(),
            created_at: naive(r.created_at),
            expires_at: naive(r.expires_at),
            completed_at: r.completed_at.map(naive),
            lock_token: None,
            lock_until: None,
            metadata: r.metadata.clone(),
            concat: r.concat.clone(),
            length_deferred: r.total.is_none(),
            received: None,
        }
    }

    pub(super) fn into_record(self) -> MetaResult<UploadRecord> {
        let corrupt = |reason: &str| MetaError::CorruptRow {
            id: self.id.clone(),
            reason: reason.to_owned(),
        };
        let id = Uuid::parse_str(&self.id).map_err(|_| corrupt("id is not a UUID"))?;
        let total = u64::try_from(self.total).map_err(|_| corrupt("negative total"))?;
        let offset = u64::try_from(self.upload_offset).map_err(|_| corrupt("negative offset"))?;
        // What a holder reported counts only while its lease runs.
        let leased = self
            .lock_until
            .is_some_and(|until| until.and_utc() > Utc::now());
        let received = self
            .received
            .filter(|_| leased)
            .and_then(|n| u64::try_from(n).ok());
        Ok(UploadRecord {
            id,
            owner: self.owner,
            filename: self.filename,
            total: (!self.length_deferred).then_some(total),
            offset,
            complete: self.status == STATUS_COMPLETE,
            checksum_algo: self.checksum_algo,
            hash_state: self.hash_state,
            checksum: self.checksum,
            storage_dir: self.storage_dir,
            created_at: self.created_at.and_utc(),
            expires_at: self.expires_at.and_utc(),
            completed_at: self.completed_at.map(|t| t.and_utc()),
            failed: self.status == STATUS_FAILED,
            metadata: self.metadata,
            concat: self.concat,
            received,
        })
    }
}
