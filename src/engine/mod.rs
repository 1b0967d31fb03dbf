//! The protocol-neutral upload engine. It owns every invariant: an offset is
//! committed only after its bytes are durable, together with a hash state
//! that covers a prefix of them (the rest is hashed from the part file by
//! whoever goes on, see `feeds`); requests on one upload never interleave; a
//! failed request leaves the upload exactly as it was.

pub mod checksum;
mod error;
mod feeds;
mod lock;
mod pages;
mod write;

/// An upload as the engine shows it to adapters.
pub use crate::meta::UploadRecord as Upload;
pub use checksum::ChecksumAlgo;
pub use error::{EngineError, EngineResult};

use crate::meta::{
    ChunkCommit, Completed, ListQuery, MetaResult, MetaStore, Sees, UploadRecord, Viewer,
};
use crate::storage::{PartKey, PartReader, PartStore, PartWriter, StorageError};
use bytes::Bytes;
use checksum::{HashFeed, Hasher};
use chrono::{DateTime, SubsecRound, Utc};
use feeds::ParkedFeeds;
use futures_util::Stream;
use lock::{Leased, Locks, UploadLock};
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
pub use write::Progress;
use write::{pump, BodyCheck, Expected, Intake, Rollback, WriteGuard};

/// Runs file-system or database work on the blocking pool.
pub async fn run_blocking<T, F>(work: F) -> EngineResult<T>
where
    F: FnOnce() -> EngineResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(blocking_failed)?
}

/// A blocking job that panicked or was cancelled.
pub(crate) fn blocking_failed(err: tokio::task::JoinError) -> EngineError {
    EngineError::Internal(format!("blocking task failed: {err}"))
}

/// Runs clean-up work on the blocking pool without waiting for it (from
/// `Drop`); inline when there is no runtime.
pub(crate) fn detach_blocking<F: FnOnce() + Send + 'static>(work: F) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(work)),
        Err(_) => work(),
    }
}

/// Turns the part file of an upload whose row was just marked complete into
/// its completed file. A failure loses nothing: the part file holds the
/// bytes and the next download renames it (`Engine::open_completed`).
fn finalize_after_commit(storage: &dyn PartStore, key: &PartKey) {
    if let Err(err) = storage.finalize(key) {
        log::warn!(
            "upload {}: complete, but its completed file is not in place yet: {err}",
            key.id
        );
    }
}

/// `hasher` caught up to `len` bytes from `reader`.
fn hash_file(reader: &dyn PartReader, mut hasher: Hasher, len: u64) -> EngineResult<Hasher> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = hasher.hashed_len();
    while pos < len {
        let want = usize::try_from(len - pos).map_or(buf.len(), |n| n.min(buf.len()));
        let got = reader.read_at(&mut buf[..want], pos)?;
        if got == 0 {
            return Err(StorageError::Damaged {
                expected: len,
                found: pos,
            }
            .into());
        }
        hasher.update(&buf[..got]);
        pos += got as u64;
    }
    Ok(hasher)
}

/// The most parts one tus final upload may join: each is a file opened
/// while the request runs.
const MAX_CONCAT_PARTS: usize = 256;

/// How many read timeouts a file no row knows is left alone after it was
/// last written: a creation under way writes its body at least every few
/// (its pipeline holds a couple of segments, which fill at the least
/// progress allowed within a read timeout each).
const ORPHAN_GRACE_TIMEOUTS: u32 = 4;

/// Files looked up in the database together by the orphan sweep.
const ORPHAN_BATCH: usize = 256;

/// The largest size a database row can hold.
const MAX_TOTAL: u64 = i64::MAX as u64;

#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub expiration: Duration,
    /// strftime pattern of the directory (under the data directory) where
    /// new uploads are stored; already validated.
    pub path_template: String,
    pub checksum: ChecksumAlgo,
    pub owner_restricted: bool,
    pub max_bytes: Option<u64>,
    pub min_bytes: u64,
    /// Lower case, without the dot.
    pub allowed_extensions: Vec<String>,
    /// `type/subtype` or `type/*`, lower case.
    pub allowed_media_types: Vec<String>,
    pub max_chunk_bytes: Option<u64>,
    pub lock_timeout: Duration,
    pub read_timeout: Duration,
    /// How long the lock of a process that died outlives it.
    pub lease_time: Duration,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The holder of a token of `name`; every lease it takes checks that
    /// the token (by its hash) still exists.
    Owner {
        name: String,
        token_hash: String,
    },
    Anonymous,
}

impl Caller {
    /// The owner whose token it holds; None when anonymous.
    fn owner(&self) -> Option<&str> {
        match self {
            Caller::Owner { name, .. } => Some(name),
            Caller::Anonymous => None,
        }
    }
}

/// How long a request body must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    Exact(u64),
    /// At most this many bytes; more is `TooLarge`.
    UpTo(u64),
    /// Any length the size and chunk limits allow.
    Unlimited,
}

/// How the engine takes a request body in.
#[derive(Debug, Clone)]
pub struct BodyRules {
    pub length: BodyLength,
    /// A body that breaks off keeps (and acknowledges) what arrived.
    pub keep_partial: bool,
    /// The digest the body must have; on a mismatch nothing is kept.
    pub check: Option<(ChecksumAlgo, Vec<u8>)>,
}

impl BodyRules {
    pub fn exact(len: u64) -> Self {
        BodyRules {
            length: BodyLength::Exact(len),
            keep_partial: false,
            check: None,
        }
    }

    pub fn unlimited() -> Self {
        BodyRules {
            length: BodyLength::Unlimited,
            keep_partial: false,
            check: None,
        }
    }
}

/// Expands the storage path template for a time; None if the pattern is
/// invalid or would leave the data directory.
pub fn expand_path_template(template: &str, at: DateTime<Utc>) -> Option<String> {
    use std::fmt::Write;
    let mut dir = String::new();
    write!(dir, "{}", at.format(template)).ok()?;
    let path = std::path::Path::new(&dir);
    let inside = path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    inside.then_some(dir)
}

/// The DRF field-error texts, which drf clients may show to people.
fn check_filename(name: &str) -> EngineResult<()> {
    if name.trim().is_empty() {
        return Err(EngineError::InvalidFilename("This field may not be blank."));
    }
    if name.chars().count() > 255 {
        return Err(EngineError::InvalidFilename(
            "Ensure this field has no more than 255 characters.",
        ));
    }
    if name.contains('\0') {
        return Err(EngineError::InvalidFilename(
            "Null characters are not allowed.",
        ));
    }
    Ok(())
}

/// tus's mark of an upload made to be concatenated.
pub const PARTIAL: &str = "partial";

/// Whether a new upload is hashed whole as its bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashing {
    /// With the configured checksum, saved with every chunk, so that its
    /// digest is known at completion.
    Whole,
    /// Not at all: the upload never has a checksum. Saves the hash's CPU
    /// where the client checks nothing (tus with `--hash-tus false`).
    Off,
}

/// What completes an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Its last byte (tus): the commit that brings the offset to the total
    /// completes the upload in the same statement, so no moment, dropped
    /// request or crash leaves all its bytes in and the upload incomplete.
    LastByte,
    /// A request of its own, with the client's checksum (`complete`).
    Request,
}

/// The `checksum_algo` of an upload that is not hashed.
const UNHASHED: &str = "none";

/// Whether the checksum a client gave is an upload's digest (`None`: the
/// upload is not hashed). Without one from the client, any digest will do.
fn checksum_matches(digest: Option<&str>, given: Option<&str>) -> bool {
    given.is_none_or(|given| digest.is_some_and(|d| d.eq_ignore_ascii_case(given.trim())))
}

/// What a client says of a new upload.
#[derive(Debug, Clone, Default)]
pub struct NewUpload {
    pub filename: String,
    /// None: the client will tell later (tus creation-defer-length).
    pub total: Option<u64>,
    /// tus `Upload-Metadata`, as sent.
    pub metadata: Option<String>,
    /// tus `Upload-Concat`: `partial`, or `final;` and the parts.
    pub concat: Option<String>,
}

/// A new upload's bytes, received but not yet synced nor recorded, and the
/// feed of their hash.
pub struct Staged {
    file: StagedFile,
    feed: HashFeed,
}

/// A new upload's part file.
struct StagedFile {
    id: Uuid,
    key: PartKey,
    created_at: DateTime<Utc>,
    len: u64,
    guard: Arc<WriteGuard>,
}

pub struct Engine {
    meta: Arc<dyn MetaStore>,
    storage: Arc<dyn PartStore>,
    settings: EngineSettings,
    locks: Arc<Locks>,
    feeds: ParkedFeeds,
}

impl Engine {
    pub fn new(
        meta: Arc<dyn MetaStore>,
        storage: Arc<dyn PartStore>,
        settings: EngineSettings,
    ) -> Self {
        let locks = Arc::new(Locks::new(meta.clone(), settings.lease_time));
        Engine {
            meta,
            storage,
            settings,
            locks,
            feeds: ParkedFeeds::default(),
        }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Whether the database answers and the storage is usable.
    pub async fn check_health(&self) -> EngineResult<()> {
        let (meta, storage) = (self.meta.clone(), self.storage.clone());
        run_blocking(move || {
            meta.ping()?;
            storage.check()?;
            Ok(())
        })
        .await
    }

    /// What the upload is hashed whole with; None when it is not.
    fn algo(&self, upload: &UploadRecord) -> EngineResult<Option<ChecksumAlgo>> {
        if upload.checksum_algo == UNHASHED {
            return Ok(None);
        }
        ChecksumAlgo::parse(&upload.checksum_algo)
            .map(Some)
            .ok_or_else(|| {
                EngineError::Internal(format!(
                    "upload {} uses unknown checksum {}",
                    upload.id, upload.checksum_algo
                ))
            })
    }

    fn key(upload: &UploadRecord) -> PartKey {
        PartKey {
            dir: upload.storage_dir.clone(),
            id: upload.id,
        }
    }

    fn visible(&self, upload: &UploadRecord, caller: &Caller) -> bool {
        match &upload.owner {
            // Anonymous uploads are reachable through their URL alone.
            None => true,
            Some(owner) if caller.owner() == Some(owner.as_str()) => true,
            _ => !self.settings.owner_restricted,
        }
    }

    /// The size of a file, against the limits (before any byte is read).
    pub fn check_total(&self, total: u64) -> EngineResult<()> {
        // Sizes are stored as BIGINT: nothing larger can be recorded.
        let limit = self.size_limit();
        if total > limit {
            return Err(EngineError::TooLarge { limit });
        }
        if total < self.settings.min_bytes {
            return Err(EngineError::TooSmall {
                min: self.settings.min_bytes,
            });
        }
        Ok(())
    }

    /// The largest file this server takes.
    pub fn size_limit(&self) -> u64 {
        self.settings.max_bytes.unwrap_or(MAX_TOTAL).min(MAX_TOTAL)
    }

    /// The length of one request body, against the chunk limit.
    pub fn check_chunk_len(&self, len: u64) -> EngineResult<()> {
        match self.settings.max_chunk_bytes {
            Some(limit) if len > limit => Err(EngineError::ChunkTooLarge { limit }),
            _ => Ok(()),
        }
    }

    /// The original name of a new upload, against the allowed extensions and
    /// media types (the type is the one its extension implies).
    pub fn check_filename(&self, name: &str) -> EngineResult<()> {
        check_filename(name)?;
        let ext = name
            .rsplit_once('.')
            .map(|(_, ext)| ext.to_lowercase())
            .unwrap_or_default();
        let allowed = &self.settings.allowed_extensions;
        if !allowed.is_empty() && !allowed.contains(&ext) {
            return Err(EngineError::ExtensionNotAllowed);
        }
        let types = &self.settings.allowed_media_types;
        if !types.is_empty() {
            let guessed = mime_guess::from_ext(&ext).first_or_octet_stream();
            let essence = guessed.essence_str().to_lowercase();
            let family = format!("{}/*", guessed.type_().as_str().to_lowercase());
            if !types.iter().any(|t| *t == essence || *t == family) {
                return Err(EngineError::MediaTypeNotAllowed);
            }
        }
        Ok(())
    }

    /// Runs a read of the metadata: in place where the database is
    /// in-process, else on the blocking pool.
    pub async fn read_meta<T, F>(&self, read: F) -> EngineResult<T>
    where
        F: FnOnce(&dyn MetaStore) -> MetaResult<T> + Send + 'static,
        T: Send + 'static,
    {
        if self.meta.reads_in_place() {
            return Ok(read(self.meta.as_ref())?);
        }
        let meta = self.meta.clone();
        run_blocking(move || Ok(read(meta.as_ref())?)).await
    }

    async fn find(&self, caller: &Caller, id: Uuid) -> EngineResult<UploadRecord> {
        let upload = self.read_meta(move |meta| meta.get_upload(id)).await?;
        upload
            .filter(|u| self.visible(u, caller))
            .ok_or(EngineError::NotFound)
    }

    pub async fn get(&self, caller: &Caller, id: Uuid) -> EngineResult<UploadRecord> {
        self.find(caller, id).await
    }

    pub async fn list(
        &self,
        caller: &Caller,
        complete: Option<bool>,
        limit: u32,
    ) -> EngineResult<Vec<UploadRecord>> {
        let owner = match caller {
            _ if !self.settings.owner_restricted => None,
            Caller::Owner { name, .. } => Some(name.clone()),
            // Anonymous uploads are reachable only through their URL.
            Caller::Anonymous => return Ok(Vec::new()),
        };
        let query = ListQuery {
            owner,
            complete,
            limit,
        };
        let meta = self.meta.clone();
        run_blocking(move || Ok(meta.list_uploads(&query)?)).await
    }

    /// Whose uploads `caller` may see.
    fn viewer(&self, caller: &Caller) -> Viewer {
        let sees = if self.settings.owner_restricted {
            Sees::Owner(caller.owner().map(str::to_owned))
        } else {
            Sees::Everyone
        };
        let token_hash = match caller {
            Caller::Owner { token_hash, .. } => Some(token_hash.clone()),
            Caller::Anonymous => None,
        };
        Viewer { sees, token_hash }
    }

    /// Takes the locks of a visible upload, waiting up to the lock timeout,
    /// and reads it under them.
    async fn lock(&self, caller: &Caller, id: Uuid) -> EngineResult<(UploadLock, UploadRecord)> {
        let (lock, upload, done) = self.lock_then(caller, id, |_| Ok(())).await?;
        done?;
        Ok((lock, upload))
    }

    /// `lock`, running `then` on the row under the lease in the same
    /// blocking job; its result comes with the locks.
    async fn lock_then<T, F>(
        &self,
        caller: &Caller,
        id: Uuid,
        then: F,
    ) -> EngineResult<(UploadLock, UploadRecord, EngineResult<T>)>
    where
        F: FnOnce(&UploadRecord) -> EngineResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + self.settings.lock_timeout;
        let local = match self.locks.try_local(id) {
            Some(local) => local,
            None => {
                // Another request of this process holds it. A caller who may
                // not see the upload learns nothing and waits for nothing.
                self.find(caller, id).await?;
                match self.locks.local(id, deadline).await {
                    Some(local) => local,
                    None => return Err(self.busy(caller, id).await),
                }
            }
        };
        match UploadLock::lease(id, self.viewer(caller), local, deadline, &self.locks, then).await?
        {
            Leased::Held(lock, upload, done) => Ok((lock, *upload, done)),
            Leased::Missing => Err(EngineError::NotFound),
            Leased::Busy => Err(self.busy(caller, id).await),
        }
    }

    /// The refusal of a request that could not take the upload in time.
    async fn busy(&self, caller: &Caller, id: Uuid) -> EngineError {
        match self.find(caller, id).await {
            Ok(upload) => EngineError::Busy {
                offset: upload.offset,
            },
            Err(err) => err,
        }
    }

    /// Turns the loss of an upload's stored bytes into a failure recorded in
    /// its row: the upload can no longer continue, and says so.
    async fn record_loss<T>(
        &self,
        lock: &UploadLock,
        id: Uuid,
        result: EngineResult<T>,
    ) -> EngineResult<T> {
        let reason = match &result {
            Err(EngineError::Damaged(reason)) => reason.clone(),
            _ => return result,
        };
        log::error!("upload {id}: stored data lost ({reason}); marking it failed");
        let (meta, token) = (self.meta.clone(), lock.token().to_owned());
        run_blocking(move || Ok(meta.mark_failed(id, &token)?)).await?;
        Err(EngineError::Lost(reason))
    }

    /// Refuses to go on with an upload whose bytes were lost.
    fn check_not_failed(upload: &UploadRecord) -> EngineResult<()> {
        if upload.failed {
            return Err(EngineError::Lost("marked failed earlier".into()));
        }
        Ok(())
    }

    /// A feed of the hash of the upload's first `upload.offset` bytes: the
    /// one this process kept, or the saved state, caught up from the part
    /// file.
    async fn feed_at(&self, upload: &UploadRecord) -> EngineResult<HashFeed> {
        match self.feeds.take(upload.id, upload.offset) {
            Some(feed) => Ok(feed),
            None => Ok(HashFeed::open(self.hasher_at(upload).await?)),
        }
    }

    /// The hash of the upload's first `upload.offset` bytes, all hashed.
    async fn final_hash(&self, upload: &UploadRecord) -> EngineResult<Hasher> {
        let hasher = self.feed_at(upload).await?.finish().await?;
        if hasher.hashed_len() != upload.offset {
            return Err(EngineError::Internal(format!(
                "upload {}: hashed {} bytes of {}",
                upload.id,
                hasher.hashed_len(),
                upload.offset
            )));
        }
        Ok(hasher)
    }

    /// The saved hash state, caught up to `upload.offset` from the part
    /// file; the whole file is re-hashed when the state is unusable.
    async fn hasher_at(&self, upload: &UploadRecord) -> EngineResult<Hasher> {
        let Some(algo) = self.algo(upload)? else {
            return Ok(Hasher::unhashed(upload.offset));
        };
        let hasher = match Hasher::restore(algo, &upload.hash_state, upload.offset) {
            Some(hasher) => hasher,
            None => {
                log::warn!(
                    "upload {}: saved hash state unusable, re-hashing the part file",
                    upload.id
                );
                Hasher::new(algo)
            }
        };
        if hasher.hashed_len() == upload.offset {
            return Ok(hasher);
        }
        let (storage, key, len) = (self.storage.clone(), Self::key(upload), upload.offset);
        run_blocking(move || hash_file(storage.open_part_reader(&key)?.as_ref(), hasher, len)).await
    }

    /// A hasher for a new upload: with the configured checksum, or none.
    fn whole_hasher(&self, hashing: Hashing) -> Hasher {
        match hashing {
            Hashing::Whole => Hasher::new(self.settings.checksum),
            Hashing::Off => Hasher::unhashed(0),
        }
    }

    /// Receives the bytes of a new upload into a new part file, hashed as
    /// `hashing` says. The body follows `rules`: an exact length, or any
    /// up to the size and chunk limits.
    pub async fn receive_new<S, E>(
        &self,
        hashing: Hashing,
        rules: BodyRules,
        body: S,
    ) -> EngineResult<Staged>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let (id, key, created_at, writer, guard) = self.new_part().await?;
        let feed = HashFeed::open(self.whole_hasher(hashing));
        let pumped = pump(writer, guard.clone(), 0, feed, self.intake(rules), body).await?;
        Ok(Staged {
            file: StagedFile {
                id,
                key,
                created_at,
                len: pumped.len,
                guard,
            },
            feed: pumped.feed,
        })
    }

    /// A new, empty part file for a new upload, removed again unless the
    /// upload is recorded.
    async fn new_part(
        &self,
    ) -> EngineResult<(
        Uuid,
        PartKey,
        DateTime<Utc>,
        Arc<dyn PartWriter>,
        Arc<WriteGuard>,
    )> {
        let created_at = Utc::now().trunc_subsecs(6);
        let id = Uuid::new_v4();
        let dir = expand_path_template(&self.settings.path_template, created_at)
            .ok_or_else(|| EngineError::Internal("invalid path template".into()))?;
        let key = PartKey { dir, id };
        let (storage, job_key) = (self.storage.clone(), key.clone());
        // The guard is made in the job that creates the file: if the
        // request is dropped meanwhile, dropping the job's result removes
        // the file again.
        let (writer, guard) = run_blocking(move || {
            let writer: Arc<dyn PartWriter> = Arc::from(storage.create(&job_key)?);
            let guard = WriteGuard::new(storage, job_key, writer.clone(), Rollback::Remove, None);
            Ok((writer, guard))
        })
        .await?;
        Ok((id, key, created_at, writer, guard))
    }

    /// The engine's limits applied to a body's rules.
    fn intake(&self, rules: BodyRules) -> Intake {
        // Every body that is not of an exact, already checked length is
        // counted against the chunk limit as it streams, whatever its
        // Content-Length said (or with none, as with chunked encoding).
        let (limit, past_limit) = match rules.length {
            BodyLength::Exact(len) => (len, None),
            BodyLength::UpTo(limit) => (limit, Some(EngineError::TooLarge { limit })),
            BodyLength::Unlimited => {
                let limit = self.size_limit();
                (limit, Some(EngineError::TooLarge { limit }))
            }
        };
        let expected = match (past_limit, self.settings.max_chunk_bytes) {
            (None, _) => Expected::Exact(limit),
            (Some(_), Some(chunk)) if chunk < limit => {
                Expected::AtMost(chunk, EngineError::ChunkTooLarge { limit: chunk })
            }
            (Some(err), _) => Expected::AtMost(limit, err),
        };
        Intake {
            expected,
            read_timeout: self.settings.read_timeout,
            keep_partial: rules.keep_partial,
            check: rules.check.map(|(algo, digest)| BodyCheck {
                hasher: Hasher::new(algo),
                digest,
            }),
        }
    }

    fn new_record(
        &self,
        staged: &StagedFile,
        caller: &Caller,
        new: NewUpload,
        hashed: &Hasher,
    ) -> UploadRecord {
        let expiration =
            chrono::TimeDelta::from_std(self.settings.expiration).unwrap_or(chrono::TimeDelta::MAX);
        UploadRecord {
            id: staged.id,
            owner: caller.owner().map(str::to_owned),
            filename: new.filename,
            total: new.total,
            offset: staged.len,
            complete: false,
            checksum_algo: hashed
                .algo()
                .map_or(UNHASHED, ChecksumAlgo::name)
                .to_owned(),
            hash_state: hashed.save(),
            checksum: None,
            storage_dir: staged.key.dir.clone(),
            created_at: staged.created_at,
            expires_at: staged
                .created_at
                .checked_add_signed(expiration)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            completed_at: None,
            failed: false,
            metadata: new.metadata,
            concat: new.concat,
        }
    }

    /// Records a new upload whose first chunk was staged; complete at once
    /// when that chunk is all of it and its last byte completes it.
    pub async fn create(
        &self,
        staged: Staged,
        caller: &Caller,
        new: NewUpload,
        completion: Completion,
    ) -> EngineResult<UploadRecord> {
        self.check_filename(&new.filename)?;
        let Staged { file, feed } = staged;
        if completion == Completion::LastByte && new.total == Some(file.len) {
            let hasher = feed.finish().await?;
            return self.record_complete(file, hasher, caller, new, None).await;
        }
        let record = self.new_record(&file, caller, new, &feed.checkpoint()?);
        let (meta, guard, row) = (self.meta.clone(), file.guard, record.clone());
        run_blocking(move || {
            guard.sync()?;
            meta.insert_upload(&row)?;
            guard.mark_committed();
            Ok(())
        })
        .await?;
        self.feeds.park(record.id, record.offset, feed);
        Ok(record)
    }

    /// Records a new upload that arrived whole, verifying its checksum.
    pub async fn create_complete(
        &self,
        staged: Staged,
        caller: &Caller,
        filename: String,
        checksum: Option<&str>,
    ) -> EngineResult<UploadRecord> {
        let algo = self.settings.checksum;
        let checksum = checksum.ok_or(EngineError::ChecksumRequired { algo: algo.name() })?;
        self.check_filename(&filename)?;
        let Staged { file, feed } = staged;
        self.check_total(file.len)?;
        let new = NewUpload {
            filename,
            total: Some(file.len),
            ..NewUpload::default()
        };
        let hasher = feed.finish().await?;
        self.record_complete(file, hasher, caller, new, Some(checksum))
            .await
    }

    /// Records a new upload whose bytes are all staged, as complete, if
    /// their digest is `checksum` (when given).
    async fn record_complete(
        &self,
        staged: StagedFile,
        hasher: Hasher,
        caller: &Caller,
        new: NewUpload,
        checksum: Option<&str>,
    ) -> EngineResult<UploadRecord> {
        let digest = hasher.clone().hex();
        if !checksum_matches(digest.as_deref(), checksum) {
            return Err(EngineError::ChecksumMismatch);
        }
        let mut record = self.new_record(&staged, caller, new, &hasher);
        record.complete = true;
        record.checksum = digest;
        record.completed_at = Some(Utc::now().trunc_subsecs(6));
        let (meta, storage, guard, key, row) = (
            self.meta.clone(),
            self.storage.clone(),
            staged.guard,
            staged.key,
            record.clone(),
        );
        run_blocking(move || {
            guard.sync()?;
            storage.finalize(&key)?;
            meta.insert_upload(&row)?;
            guard.mark_committed();
            Ok(())
        })
        .await?;
        Ok(record)
    }

    /// Joins completed partial uploads, in order, into a new completed
    /// upload (tus concatenation). The bytes are copied through one buffer
    /// and hashed on the way, so memory stays flat.
    pub async fn concat(
        &self,
        caller: &Caller,
        parts: &[Uuid],
        hashing: Hashing,
        new: NewUpload,
    ) -> EngineResult<UploadRecord> {
        if parts.len() > MAX_CONCAT_PARTS {
            return Err(EngineError::BadConcat("too many parts"));
        }
        let distinct: std::collections::HashSet<&Uuid> = parts.iter().collect();
        if distinct.len() != parts.len() {
            return Err(EngineError::BadConcat("a part is named more than once"));
        }
        let mut sources = Vec::with_capacity(parts.len());
        let mut total: u64 = 0;
        for &id in parts {
            let part = self.find(caller, id).await?;
            if !part.complete || part.concat.as_deref() != Some(PARTIAL) {
                return Err(EngineError::NotConcatenable);
            }
            total = total.saturating_add(part.offset);
            sources.push(part);
        }
        self.check_total(total)?;
        self.check_filename(&new.filename)?;
        let mut readers = Vec::with_capacity(sources.len());
        for part in &sources {
            readers.push((self.open_completed(caller, part).await?, part.offset));
        }
        let new = NewUpload {
            total: Some(total),
            ..new
        };
        let (id, key, created_at, writer, guard) = self.new_part().await?;
        let (mut hasher, job_guard) = (self.whole_hasher(hashing), guard.clone());
        let hasher = run_blocking(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut pos = 0;
            for (reader, size) in &readers {
                let mut read = 0;
                while read < *size {
                    let want = usize::try_from(size - read).map_or(buf.len(), |n| n.min(buf.len()));
                    let got = reader.read_at(&mut buf[..want], read)?;
                    if got == 0 {
                        return Err(StorageError::Missing.into());
                    }
                    hasher.update(&buf[..got]);
                    writer.write_at(&[&buf[..got]], pos)?;
                    (read, pos) = (read + got as u64, pos + got as u64);
                }
            }
            drop(job_guard);
            Ok(hasher)
        })
        .await?;
        let staged = StagedFile {
            id,
            key,
            created_at,
            len: total,
            guard,
        };
        self.record_complete(staged, hasher, caller, new, None)
            .await
    }

    /// Locks an upload and checks that a chunk starting at `start` may be
    /// appended to it (and, when the request states it, that the total is
    /// the upload's). The body is read only afterwards, by
    /// `AppendSession::write`.
    pub async fn begin_append(
        &self,
        caller: &Caller,
        id: Uuid,
        start: u64,
        total: Option<u64>,
    ) -> EngineResult<AppendSession<'_>> {
        // The part file opens under the lease, in the same job: bytes past
        // the committed offset (a chunk cut by a crash) are cut off there.
        let storage = self.storage.clone();
        let (lock, upload, opened) = self
            .lock_then(caller, id, move |upload| {
                if upload.complete || upload.failed {
                    return Ok(None);
                }
                let writer: Arc<dyn PartWriter> =
                    Arc::from(storage.open_at(&Self::key(upload), upload.offset)?);
                Ok(Some(writer))
            })
            .await?;
        if upload.complete {
            return Err(EngineError::AlreadyComplete);
        }
        Self::check_not_failed(&upload)?;
        if upload.expires_at <= Utc::now() {
            return Err(EngineError::Expired);
        }
        let mut upload = upload;
        match (upload.total, total) {
            (Some(known), Some(provided)) if known != provided => {
                return Err(EngineError::TotalMismatch {
                    total: known,
                    provided,
                });
            }
            // The client now says the total it deferred: recorded with the
            // chunk's commit, so a refused chunk leaves it untold.
            (None, Some(provided)) => {
                if provided < upload.offset {
                    return Err(EngineError::TotalBelowOffset {
                        total: provided,
                        offset: upload.offset,
                    });
                }
                self.check_total(provided)?;
                upload.total = Some(provided);
            }
            _ => {}
        }
        if start != upload.offset {
            return Err(EngineError::OffsetMismatch {
                expected: upload.offset,
                provided: start,
            });
        }
        Ok(AppendSession {
            engine: self,
            upload,
            lock,
            opened,
        })
    }

    /// Completes an upload whose bytes all arrived, if the checksum matches.
    /// Repeating a successful completion answers the same upload.
    pub async fn complete(
        &self,
        caller: &Caller,
        id: Uuid,
        checksum: Option<&str>,
    ) -> EngineResult<UploadRecord> {
        let seen = self.find(caller, id).await?;
        let algo = self.algo(&seen)?.ok_or(EngineError::Unhashed)?;
        let given = checksum.ok_or(EngineError::ChecksumRequired { algo: algo.name() })?;
        let already = |upload: UploadRecord| {
            if checksum_matches(upload.checksum.as_deref(), Some(given)) {
                Ok(upload)
            } else {
                Err(EngineError::AlreadyComplete)
            }
        };
        if seen.complete {
            return already(seen);
        }
        let (lock, mut upload) = self.lock(caller, id).await?;
        if upload.complete {
            return already(upload);
        }
        if upload.expires_at <= Utc::now() {
            return Err(EngineError::Expired);
        }
        Self::check_not_failed(&upload)?;
        if upload.total != Some(upload.offset) {
            return Err(EngineError::Incomplete {
                offset: upload.offset,
                total: upload.total,
            });
        }
        let hashed = self.final_hash(&upload).await;
        let digest = self.record_loss(&lock, id, hashed).await?.hex();
        if !checksum_matches(digest.as_deref(), Some(given)) {
            return Err(EngineError::ChecksumMismatch);
        }
        let completed = Completed {
            checksum: digest,
            at: Utc::now().trunc_subsecs(6),
        };
        let (meta, storage, key, token, len) = (
            self.meta.clone(),
            self.storage.clone(),
            Self::key(&upload),
            lock.token().to_owned(),
            upload.offset,
        );
        let record = completed.clone();
        let (check_storage, check_key) = (storage.clone(), key.clone());
        let checked = run_blocking(move || {
            let found = check_storage.open_part_reader(&check_key)?.size();
            if found == len {
                Ok(())
            } else {
                Err(StorageError::Damaged {
                    expected: len,
                    found,
                }
                .into())
            }
        })
        .await;
        self.record_loss(&lock, id, checked).await?;
        // One job, which the locks go with: once started it runs to its end
        // even if the request is dropped. The row is marked first; the
        // rename that follows it is redone at the next download if a crash
        // comes between them (`open_completed`).
        let marked = run_blocking(move || {
            let marked = meta.mark_complete(id, &token, &record)?;
            if marked {
                finalize_after_commit(storage.as_ref(), &key);
            }
            drop(lock);
            Ok(marked)
        })
        .await?;
        if !marked {
            return Err(EngineError::LeaseLost);
        }
        upload.complete = true;
        upload.checksum = completed.checksum;
        upload.completed_at = Some(completed.at);
        Ok(upload)
    }

    /// Removes an upload, row and bytes.
    pub async fn abort(&self, caller: &Caller, id: Uuid) -> EngineResult<()> {
        let (lock, upload) = self.lock(caller, id).await?;
        self.remove_locked(lock, &upload).await
    }

    /// Deletes the row first: a crash in between leaves an orphan file, never
    /// a row whose bytes are gone.
    async fn remove_locked(&self, lock: UploadLock, upload: &UploadRecord) -> EngineResult<()> {
        let (meta, storage, key, token) = (
            self.meta.clone(),
            self.storage.clone(),
            Self::key(upload),
            lock.token().to_owned(),
        );
        let id = upload.id;
        self.feeds.forget(id);
        let deleted = run_blocking(move || {
            let deleted = meta.delete_upload(id, &token)?;
            if deleted {
                storage.remove(&key)?;
            }
            drop(lock);
            Ok(deleted)
        })
        .await?;
        if deleted {
            Ok(())
        } else {
            Err(EngineError::LeaseLost)
        }
    }

    /// Opens the bytes of a completed upload for download.
    pub async fn open_download(&self, caller: &Caller, id: Uuid) -> EngineResult<Download> {
        let upload = self.find(caller, id).await?;
        if !upload.complete {
            return Err(EngineError::Incomplete {
                offset: upload.offset,
                total: upload.total,
            });
        }
        let reader = self.open_completed(caller, &upload).await?;
        Ok(Download { upload, reader })
    }

    /// The completed file of a complete upload. Where a crash came between
    /// the row's completion and the rename of its part file, the part file
    /// is verified against the row (its length, and its digest against the
    /// recorded checksum) and renamed now, under the upload's locks.
    async fn open_completed(
        &self,
        caller: &Caller,
        upload: &UploadRecord,
    ) -> EngineResult<Arc<dyn PartReader>> {
        let open = |storage: Arc<dyn PartStore>, key: PartKey| {
            run_blocking(move || match storage.open_done(&key) {
                Ok(reader) => Ok(Some(Arc::from(reader))),
                Err(StorageError::Missing) => Ok(None),
                Err(err) => Err(err.into()),
            })
        };
        let key = Self::key(upload);
        if let Some(reader) = open(self.storage.clone(), key.clone()).await? {
            return Ok(reader);
        }
        let (_lock, _) = self.lock(caller, upload.id).await?;
        let algo = self.algo(upload)?;
        let (storage, job_key, len, checksum) = (
            self.storage.clone(),
            key.clone(),
            upload.offset,
            upload.checksum.clone(),
        );
        run_blocking(move || {
            if storage.open_done(&job_key).is_ok() {
                return Ok(());
            }
            let reader = storage.open_part_reader(&job_key)?;
            let found = reader.size();
            if found != len {
                return Err(EngineError::Lost(format!(
                    "part file holds {found} bytes of {len}"
                )));
            }
            if let Some(algo) = algo {
                let hasher = hash_file(reader.as_ref(), Hasher::new(algo), len)?;
                if hasher.hex() != checksum {
                    return Err(EngineError::Lost(
                        "part file does not match its checksum".into(),
                    ));
                }
            }
            log::warn!(
                "upload {}: completed file renamed after a crash",
                job_key.id
            );
            Ok(storage.finalize(&job_key)?)
        })
        .await?;
        open(self.storage.clone(), key)
            .await?
            .ok_or_else(|| EngineError::Damaged("completed file missing".into()))
    }

    /// Removes the files that no upload row knows and that nothing wrote
    /// for a while: what a creation left when its server died before the
    /// row was inserted. A creation still under way writes at least every
    /// few read timeouts, or is cut off; returns what was removed.
    pub async fn remove_orphans(&self) -> EngineResult<Vec<PartKey>> {
        let (meta, storage) = (self.meta.clone(), self.storage.clone());
        let grace = self.settings.read_timeout * ORPHAN_GRACE_TIMEOUTS;
        run_blocking(move || {
            let cutoff = std::time::SystemTime::now()
                .checked_sub(grace)
                .unwrap_or(std::time::UNIX_EPOCH);
            let mut removed = Vec::new();
            let mut batch = Vec::with_capacity(ORPHAN_BATCH);
            let mut failed = Ok(());
            let mut settle = |batch: &mut Vec<PartKey>| -> EngineResult<()> {
                let ids: Vec<Uuid> = batch.iter().map(|key| key.id).collect();
                let known: std::collections::HashSet<Uuid> =
                    meta.known_uploads(&ids)?.into_iter().collect();
                for key in batch.drain(..) {
                    // An upload with both files is visited twice.
                    if !known.contains(&key.id) && !removed.contains(&key) {
                        storage.remove(&key)?;
                        removed.push(key);
                    }
                }
                Ok(())
            };
            storage.visit_files(&mut |file| {
                if failed.is_err() || file.modified > cutoff {
                    return;
                }
                batch.push(file.key);
                if batch.len() == ORPHAN_BATCH {
                    failed = settle(&mut batch);
                }
            })?;
            failed?;
            settle(&mut batch)?;
            Ok(removed)
        })
        .await
    }

    /// Deletes every expired incomplete upload that no request holds; returns
    /// what was removed.
    pub async fn remove_expired(&self) -> EngineResult<Vec<UploadRecord>> {
        let meta = self.meta.clone();
        let expired = run_blocking(move || Ok(meta.expired_uploads(Utc::now())?)).await?;
        let mut removed = Vec::new();
        for candidate in expired {
            let id = candidate.id;
            let busy = || log::info!("upload {id}: expired but busy, left for the next clean-up");
            let Some(local) = self.locks.try_local(id) else {
                busy();
                continue;
            };
            let now = tokio::time::Instant::now();
            let (lock, upload) =
                match UploadLock::lease(id, Viewer::SERVER, local, now, &self.locks, |_| Ok(()))
                    .await?
                {
                    Leased::Held(lock, upload, _) => (lock, *upload),
                    Leased::Busy => {
                        busy();
                        continue;
                    }
                    Leased::Missing => continue,
                };
            if upload.complete || upload.expires_at > Utc::now() {
                continue;
            }
            self.remove_locked(lock, &upload).await?;
            removed.push(upload);
        }
        Ok(removed)
    }
}

/// Bytes read from disk per step of a download.
const DOWNLOAD_STEP: u64 = 256 * 1024;

/// A complete upload's bytes, opened for reading.
pub struct Download {
    pub upload: UploadRecord,
    reader: Arc<dyn PartReader>,
}

impl Download {
    /// How many bytes the file holds.
    pub fn size(&self) -> u64 {
        self.reader.size()
    }

    /// `count` bytes from `start`, read a step at a time on the blocking
    /// pool, so that memory stays flat however large the file.
    pub fn bytes(&self, start: u64, count: u64) -> impl Stream<Item = EngineResult<Bytes>> {
        let reader = self.reader.clone();
        futures_util::stream::unfold((reader, start, count), |(reader, pos, left)| async move {
            if left == 0 {
                return None;
            }
            let step = left.min(DOWNLOAD_STEP);
            let source = Arc::clone(&reader);
            let read = run_blocking(move || {
                let mut buf = vec![0u8; step as usize];
                let got = source.read_at(&mut buf, pos)?;
                if got == 0 {
                    return Err(StorageError::Damaged {
                        expected: pos + step,
                        found: pos,
                    }
                    .into());
                }
                buf.truncate(got);
                Ok(Bytes::from(buf))
            })
            .await;
            Some(match read {
                Ok(bytes) => {
                    let n = bytes.len() as u64;
                    (Ok(bytes), (reader, pos + n, left - n))
                }
                Err(err) => (Err(err), (reader, pos, 0)),
            })
        })
    }
}

/// An upload locked for one chunk whose range was accepted.
pub struct AppendSession<'a> {
    engine: &'a Engine,
    upload: UploadRecord,
    lock: UploadLock,
    /// Its part file, opened under the lease (Some for an upload that is
    /// neither complete nor failed).
    opened: EngineResult<Option<Arc<dyn PartWriter>>>,
}

impl<'a> AppendSession<'a> {
    pub fn upload(&self) -> &UploadRecord {
        &self.upload
    }

    /// How many bytes the chunk may have: up to the upload's total, or the
    /// size limit while the total is deferred.
    pub fn room(&self) -> EngineResult<u64> {
        let limit = self.upload.total.unwrap_or(self.engine.size_limit());
        limit
            .checked_sub(self.upload.offset)
            .ok_or(EngineError::TooLarge { limit })
    }

    /// Streams the chunk in and commits it (`receive`, then `commit`).
    pub async fn write<S, E>(
        self,
        rules: BodyRules,
        body: S,
        completion: Completion,
    ) -> EngineResult<UploadRecord>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        self.receive(rules, body, completion).await?.commit().await
    }

    /// Streams the chunk into the part file, written but not committed:
    /// the caller commits it once the rest of its request is accepted, and
    /// dropping it instead rolls it back.
    pub async fn receive<S, E>(
        self,
        rules: BodyRules,
        body: S,
        completion: Completion,
    ) -> EngineResult<ReceivedChunk<'a>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let AppendSession {
            engine,
            upload,
            lock,
            opened,
        } = self;
        let fed = engine.feed_at(&upload).await;
        let feed = engine.record_loss(&lock, upload.id, fed).await?;
        let (key, from) = (Engine::key(&upload), upload.offset);
        let opened = opened.and_then(|writer| {
            writer.ok_or_else(|| EngineError::Internal("no part file was opened".into()))
        });
        let writer = engine.record_loss(&lock, upload.id, opened).await?;
        let token = lock.token().to_owned();
        let guard = WriteGuard::new(
            engine.storage.clone(),
            key.clone(),
            writer.clone(),
            Rollback::TruncateTo(from),
            Some(lock),
        );
        let intake = engine.intake(rules);
        let pumped = pump(writer, guard.clone(), from, feed, intake, body).await?;
        let to = from + pumped.len;
        let last = completion == Completion::LastByte && upload.total == Some(to);
        let (commit, feed) = if last {
            let hasher = pumped.feed.finish().await?;
            let commit = ChunkCommit {
                from,
                to,
                hash_state: hasher.save(),
                total: upload.total,
                completed: Some(Completed {
                    checksum: hasher.hex(),
                    at: Utc::now().trunc_subsecs(6),
                }),
            };
            (commit, None)
        } else {
            let commit = ChunkCommit {
                from,
                to,
                hash_state: pumped.feed.checkpoint()?.save(),
                total: upload.total,
                completed: None,
            };
            (commit, Some(pumped.feed))
        };
        Ok(ReceivedChunk {
            engine,
            upload,
            key,
            token,
            guard,
            commit,
            feed,
        })
    }
}

/// A chunk written to its part file, not yet committed: dropped, it is
/// rolled back.
pub struct ReceivedChunk<'a> {
    engine: &'a Engine,
    upload: UploadRecord,
    key: PartKey,
    token: String,
    guard: Arc<WriteGuard>,
    commit: ChunkCommit,
    /// The feed of the upload's hash, kept for its next chunk (None once
    /// the upload completes).
    feed: Option<HashFeed>,
}

impl ReceivedChunk<'_> {
    /// Syncs the chunk's bytes and commits the new offset and hash state;
    /// with the upload's last byte, if that completes it, the completion
    /// goes in the same commit.
    pub async fn commit(self) -> EngineResult<UploadRecord> {
        let ReceivedChunk {
            engine,
            mut upload,
            key,
            token,
            guard,
            commit,
            feed,
        } = self;
        guard.keep_alive().await?;
        let (meta, storage, id, job_commit) = (
            engine.meta.clone(),
            engine.storage.clone(),
            upload.id,
            commit.clone(),
        );
        let committed = run_blocking(move || {
            guard.sync()?;
            let committed = meta.commit_chunk(id, &token, &job_commit)?;
            if committed {
                guard.mark_committed();
                if job_commit.completed.is_some() {
                    // Still under the guard's locks.
                    finalize_after_commit(storage.as_ref(), &key);
                }
            }
            Ok(committed)
        })
        .await?;
        if !committed {
            return Err(EngineError::LeaseLost);
        }
        if let Some(feed) = feed {
            engine.feeds.park(upload.id, commit.to, feed);
        }
        upload.offset = commit.to;
        upload.hash_state = commit.hash_state;
        if let Some(completed) = commit.completed {
            upload.complete = true;
            upload.checksum = completed.checksum;
            upload.completed_at = Some(completed.at);
        }
        Ok(upload)
    }
}

#[cfg(test)]
mod tests {
    use super::checksum_matches;

    #[test]
    fn a_given_checksum_must_be_the_digest() {
        let digest = Some("6d29a9e5c8ea214320cd61f0fa34a6ce");
        assert!(checksum_matches(
            digest,
            Some(" 6D29A9E5C8EA214320CD61F0FA34A6CE ")
        ));
        assert!(!checksum_matches(
            digest,
            Some("d41d8cd98f00b204e9800998ecf8427e")
        ));
        // An unhashed upload matches no checksum, but needs none.
        assert!(!checksum_matches(
            None,
            Some("6d29a9e5c8ea214320cd61f0fa34a6ce")
        ));
        assert!(checksum_matches(None, None));
        assert!(checksum_matches(digest, None));
    }
}
