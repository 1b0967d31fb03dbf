//! Upload rows and tokens: a small trait, implemented with diesel over
//! PostgreSQL (production) and SQLite (the zero-setup default).
//!
//! The trait is synchronous: the engine calls it on the blocking thread pool,
//! except what an in-process database does in microseconds
//! (`reads_in_place`, `try_lease_now`).

mod diesel_store;
mod schema;

pub use diesel_store::{DatabaseUrl, DieselStore};

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database connection error: {0}")]
    Connection(String),
    #[error("database migration error: {0}")]
    Migration(String),
    /// A commit that another request's transaction carried failed.
    #[error("database commit failed: {0}")]
    Commit(String),
    #[error("corrupt row {id}: {reason}")]
    CorruptRow { id: String, reason: String },
    #[error("{0}")]
    OverLimit(OverLimit),
}

/// What one owner may hold (anonymous uploads count as one owner).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerLimits {
    /// Bytes of every upload kept, complete or not: the total declared by
    /// those in progress (their bytes so far while their length is
    /// deferred), the size of the rest.
    pub bytes: Option<u64>,
    /// Uploads in progress.
    pub uploads_in_progress: Option<u64>,
}

/// What an owner holds, as `OwnerLimits` counts it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerUsage {
    /// None: anonymous uploads.
    pub owner: Option<String>,
    pub bytes: u64,
    pub uploads: u64,
    pub uploads_in_progress: u64,
}

/// A limit of `OwnerLimits` that a new upload would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverLimit {
    #[error("storage quota exceeded: {used} of {limit} bytes in use, {wanted} more asked")]
    Bytes { used: u64, wanted: u64, limit: u64 },
    #[error("too many uploads in progress: {limit} at most")]
    UploadsInProgress { limit: u64 },
}

impl OwnerLimits {
    pub fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.uploads_in_progress.is_none()
    }

    /// Whether an owner who holds `usage` may add `wanted` bytes, in a new
    /// upload (which also counts as one more in progress) or not.
    pub fn check(
        &self,
        usage: &OwnerUsage,
        wanted: u64,
        new_upload: bool,
    ) -> Result<(), OverLimit> {
        if let Some(limit) = self.uploads_in_progress {
            if new_upload && usage.uploads_in_progress >= limit {
                return Err(OverLimit::UploadsInProgress { limit });
            }
        }
        if let Some(limit) = self.bytes {
            if usage.bytes.saturating_add(wanted) > limit {
                return Err(OverLimit::Bytes {
                    used: usage.bytes,
                    wanted,
                    limit,
                });
            }
        }
        Ok(())
    }
}

pub type MetaResult<T> = Result<T, MetaError>;

/// One upload as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRecord {
    pub id: Uuid,
    pub owner: Option<String>,
    pub filename: String,
    /// None while the client has not said (tus creation-defer-length).
    pub total: Option<u64>,
    pub offset: u64,
    pub complete: bool,
    pub checksum_algo: String,
    /// The saved hasher state after `offset` bytes.
    pub hash_state: Vec<u8>,
    /// The final hex digest, once complete.
    pub checksum: Option<String>,
    pub storage_dir: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The upload can no longer continue: its stored bytes were lost.
    pub failed: bool,
    /// The client's metadata, as it sent it (tus `Upload-Metadata`).
    pub metadata: Option<String>,
    /// tus concatenation: `partial`, or `final;` and the parts' URLs.
    pub concat: Option<String>,
    /// Where the chunk in flight has reached (its start plus its bytes
    /// received so far), as the lease holder last reported it; None when
    /// no chunk is in flight. Never written by `insert_upload`.
    pub received: Option<u64>,
}

impl UploadRecord {
    /// Where a chunk in flight has reached, when that is past the
    /// committed offset: what a progress bar shows beyond it.
    pub fn in_flight_to(&self) -> Option<u64> {
        self.received.filter(|&reached| reached > self.offset)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub owner: String,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
}

/// One chunk's commit: the upload's new offset and hash state, and what
/// else the upload becomes with these bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkCommit {
    pub from: u64,
    pub to: u64,
    /// The saved hasher state after some prefix of the `to` bytes.
    pub hash_state: Vec<u8>,
    /// The upload's total once committed (None: still deferred). A total
    /// the client tells with a chunk is recorded only with that chunk, so
    /// a refused chunk leaves it untold.
    pub total: Option<u64>,
    /// Set when these bytes complete the upload: it is then complete in
    /// the same statement that records its last byte.
    pub completed: Option<Completed>,
}

/// What an upload records when it completes.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// The final hex digest; None for an upload that is not hashed.
    pub checksum: Option<String>,
    pub at: DateTime<Utc>,
}

/// Which uploads a listing returns.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// `None`: every owner's uploads.
    pub owner: Option<String>,
    pub complete: Option<bool>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LeaseOutcome {
    /// The lease is ours; the row as it is under it.
    Acquired(Box<UploadRecord>),
    Busy,
    /// No such upload, or none the viewer may see, or the viewer's token
    /// is gone.
    Missing,
}

/// Whose uploads a lease may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub sees: Sees,
    /// The hash of the caller's token, if it has one: the lease is taken
    /// only while the token exists, checked in the same statement, so a
    /// caller known from an earlier request needs no lookup of its own.
    pub token_hash: Option<String>,
}

impl Viewer {
    /// The server itself (cleanup).
    pub const SERVER: Viewer = Viewer {
        sees: Sees::Everyone,
        token_hash: None,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sees {
    /// Everyone's uploads (owners are not restricted).
    Everyone,
    /// Uploads without an owner, and this owner's (None: an anonymous
    /// caller, who sees ownerless uploads only).
    Owner(Option<String>),
}

/// What happened to an upload, as the outbox holds it until delivered:
/// written in the transaction of the change itself.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadEvent {
    /// Its place in the outbox: events of one upload are delivered in its
    /// order.
    pub seq: i64,
    pub upload_id: Uuid,
    /// `completed`, `failed`, `aborted`, `expired` or `deleted`.
    pub kind: String,
    pub owner: Option<String>,
    pub filename: String,
    /// None while the length was deferred.
    pub total: Option<u64>,
    pub offset: u64,
    pub checksum: Option<String>,
    pub metadata: Option<String>,
    pub happened_at: DateTime<Utc>,
    /// Deliveries tried and failed so far.
    pub attempts: u32,
}

/// The outbox of upload events. Several processes deliver from one
/// database: each claims events for a while (`token`, `until`) before it
/// delivers them, and an event is claimable only while no earlier event of
/// its upload is left, so that one upload's events go in order.
pub trait Outbox: Send + Sync {
    /// Claims up to `limit` events due by `now`, each the oldest left of
    /// its upload, that nobody else holds.
    fn claim_events(
        &self,
        token: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> MetaResult<Vec<UploadEvent>>;
    /// Removes a claimed event: delivered, or given up on.
    fn remove_event(&self, seq: i64, token: &str) -> MetaResult<()>;
    /// Releases a claimed event whose delivery failed, to be tried again
    /// at `next_attempt_at`.
    fn retry_event(&self, seq: i64, token: &str, next_attempt_at: DateTime<Utc>) -> MetaResult<()>;
    /// Removes the events that happened before `before`, delivered or
    /// not; returns how many.
    fn remove_events_before(&self, before: DateTime<Utc>) -> MetaResult<u64>;
}

/// A lease is the cross-process lock on one upload: a token and an expiry
/// time in its row. Every change of an upload is made by its lease holder
/// and checks the token (fencing), so a holder that lost its lease changes
/// nothing.
/// Where an attachment is: its holder (`owner:<name>`, or `session:<hash of
/// a visitor's cookie>`), its bundle and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentKey {
    pub holder: String,
    pub bundle: String,
    pub name: String,
}

/// A session attachment: a name in a bundle, standing for a complete upload.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentRecord {
    pub key: AttachmentKey,
    pub upload_id: Uuid,
    pub media_type: String,
    pub created_at: DateTime<Utc>,
    /// The upload's size.
    pub size: u64,
}

/// Session attachments. An attachment's upload goes with it: replacing or
/// removing one deletes its upload's row, whose file the orphan sweep then
/// removes.
pub trait Attachments: Send + Sync {
    /// Inserts the complete upload `upload` and names it `key`, in one
    /// transaction with the owner's limits checked; the upload `key` named
    /// before goes. Its id is returned.
    fn insert_attachment(
        &self,
        upload: &UploadRecord,
        limits: &OwnerLimits,
        key: &AttachmentKey,
        media_type: &str,
    ) -> MetaResult<Option<Uuid>>;
    /// Names the complete upload `upload_id` `key` (an upload attached
    /// after it arrived by another protocol); the upload `key` named
    /// before goes. Its id is returned.
    fn attach_upload(
        &self,
        key: &AttachmentKey,
        upload_id: Uuid,
        media_type: &str,
        at: DateTime<Utc>,
    ) -> MetaResult<Option<Uuid>>;
    /// A bundle's attachments, by name.
    fn list_attachments(&self, holder: &str, bundle: &str) -> MetaResult<Vec<AttachmentRecord>>;
    fn get_attachment(&self, key: &AttachmentKey) -> MetaResult<Option<AttachmentRecord>>;
    /// Removes one attachment (`name`), or a whole bundle, with their
    /// uploads; the ids of the uploads removed.
    fn remove_attachments(
        &self,
        holder: &str,
        bundle: &str,
        name: Option<&str>,
    ) -> MetaResult<Vec<Uuid>>;
    /// Removes the attachments made before `cutoff`, with their uploads.
    fn remove_attachments_before(&self, cutoff: DateTime<Utc>) -> MetaResult<Vec<Uuid>>;
}

pub trait MetaStore: Attachments + Send + Sync {
    /// Inserts a new upload if its owner stays within `limits` with it,
    /// checked and inserted as one step against concurrent insertions
    /// (else `MetaError::OverLimit`).
    fn insert_upload(&self, upload: &UploadRecord, limits: &OwnerLimits) -> MetaResult<()>;
    /// What `owner` (None: anonymous) holds.
    fn owner_usage(&self, owner: Option<&str>) -> MetaResult<OwnerUsage>;
    /// What every owner holds, by owner.
    fn usage_by_owner(&self) -> MetaResult<Vec<OwnerUsage>>;
    fn get_upload(&self, id: Uuid) -> MetaResult<Option<UploadRecord>>;
    /// Newest first.
    fn list_uploads(&self, query: &ListQuery) -> MetaResult<Vec<UploadRecord>>;
    /// How many uploads are in progress: neither complete nor failed.
    fn count_in_progress(&self) -> MetaResult<u64>;
    /// Incomplete uploads whose expiry time is at or before `now`.
    fn expired_uploads(&self, now: DateTime<Utc>) -> MetaResult<Vec<UploadRecord>>;

    /// Which of `ids` have a row.
    fn known_uploads(&self, ids: &[Uuid]) -> MetaResult<Vec<Uuid>>;

    /// Takes the lease of an upload `viewer` may see, if it is free or its
    /// holder let it run out, and reads the row in the same statement.
    /// Leases need not survive a power loss (everything they guard is
    /// committed durably), so taking one does not wait for the disk.
    fn try_lease(
        &self,
        id: Uuid,
        viewer: &Viewer,
        token: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> MetaResult<LeaseOutcome>;
    /// `try_lease`, if that takes no waiting here and now: an in-process
    /// database whose writer is free. None otherwise (the caller then runs
    /// `try_lease` off its thread).
    fn try_lease_now(
        &self,
        _id: Uuid,
        _viewer: &Viewer,
        _token: &str,
        _now: DateTime<Utc>,
        _until: DateTime<Utc>,
    ) -> Option<MetaResult<LeaseOutcome>> {
        None
    }
    /// Whether reads are in-process and take microseconds, so that running
    /// them on the caller's thread costs less than handing them to another.
    fn reads_in_place(&self) -> bool {
        false
    }
    /// Extends a lease still held, with where the chunk in flight has
    /// reached (`received`); false if it was lost.
    fn renew_lease(
        &self,
        id: Uuid,
        token: &str,
        until: DateTime<Utc>,
        received: Option<u64>,
    ) -> MetaResult<bool>;
    fn release_lease(&self, id: Uuid, token: &str) -> MetaResult<()>;
    /// Advances the offset and the hash state together, with what else the
    /// upload becomes with these bytes (its told total, its completion),
    /// and releases the lease; false (nothing changed) unless the lease is
    /// held, the upload is in progress and its offset is still
    /// `commit.from`.
    fn commit_chunk(&self, id: Uuid, token: &str, commit: &ChunkCommit) -> MetaResult<bool>;
    /// Marks the upload complete and releases the lease; false if the lease
    /// was lost.
    fn mark_complete(&self, id: Uuid, token: &str, completed: &Completed) -> MetaResult<bool>;
    /// Marks the upload failed for good; false if the lease was lost.
    fn mark_failed(&self, id: Uuid, token: &str) -> MetaResult<bool>;
    /// Names the upload anew (FilePond tells the name only with its
    /// chunks); false if the lease was lost.
    fn rename_upload(&self, id: Uuid, token: &str, filename: &str) -> MetaResult<bool>;
    /// Deletes the row; false if the lease was lost.
    fn delete_upload(&self, id: Uuid, token: &str) -> MetaResult<bool>;

    fn insert_token(&self, token: &TokenRecord) -> MetaResult<()>;
    fn token_owner(&self, token_hash: &str) -> MetaResult<Option<String>>;
    fn list_tokens(&self) -> MetaResult<Vec<TokenRecord>>;
    fn delete_token(&self, id: &str) -> MetaResult<bool>;

    fn ping(&self) -> MetaResult<()>;
}
