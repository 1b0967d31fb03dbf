//! The protocol-neutral upload engine. It owns every invariant: an offset is
//! committed only after its bytes are durable, together with a hash state
//! that covers a prefix of them (the rest is hashed from the part file by
//! whoever goes on, see `feeds`); requests on one upload never interleave; a
//! failed request leaves the upload exactly as it was.
//!
//! By concern: `create` (new uploads), `append` (a chunk's way from its
//! request to its commit), `write` (a body streamed into a part file),
//! `complete` (completion and reading), `sweep` (removal), `lock`
//! (mutexes and leases), `checksum` and `feeds` (hashing), `pages` (write
//! buffers), `metrics` (counters, readiness). This file holds the engine's settings, its policy checks and
//! what they all share (finding and locking an upload, its hash state):
//! the one file every other one imports.

mod append;
mod attachments;
pub mod checksum;
mod complete;
mod create;
mod error;
mod events;
mod feeds;
mod fetch;
mod hook;
mod lock;
mod metrics;
mod pages;
mod sweep;
mod write;

pub use append::{AppendSession, ReceivedChunk};
pub use complete::Download;
pub use create::Staged;

/// An upload as the engine shows it to adapters.
pub use crate::meta::UploadRecord as Upload;
/// What an owner may hold, and what it holds.
pub use crate::meta::{AttachmentKey, AttachmentRecord, OverLimit, OwnerLimits, OwnerUsage};
pub use checksum::ChecksumAlgo;
pub use error::{EngineError, EngineResult};
pub use events::{drop_old_events, EventDelivery, Webhook};
use hook::PreCreateHook;
pub use metrics::{EngineMetrics, Readiness};

use crate::meta::{ListQuery, MetaResult, MetaStore, Sees, UploadRecord, Viewer};
use crate::storage::{PartKey, PartReader, PartStore, StorageError};
use checksum::{HashFeed, Hasher};
use chrono::{DateTime, Utc};
use feeds::ParkedFeeds;
use lock::{Leased, Locks, UploadLock};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
pub use write::Progress;
use write::{BodyCheck, Expected, Intake};

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

/// The largest size a database row can hold.
const MAX_TOTAL: u64 = i64::MAX as u64;

#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub expiration: Duration,
    /// How long a session attachment lives.
    pub attachment_expiration: Duration,
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
    /// Per owner (`--quota-bytes`, `--max-uploads-in-progress`).
    pub owner_limits: OwnerLimits,
    /// Where the application is asked about each new upload.
    pub hook_url: Option<String>,
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
    /// The bearer of a token the application issued for `name` (a JWT),
    /// which allows what its `grant` says.
    Granted {
        name: String,
        grant: Grant,
    },
    Anonymous,
}

/// What an application-issued token narrows its bearer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The largest upload it may create.
    pub max_bytes: Option<u64>,
    /// The extensions (lower case, without the dot) it may create.
    pub extensions: Option<Vec<String>>,
    /// The one upload it may act on; it creates none.
    pub upload: Option<Uuid>,
}

impl Grant {
    /// Whether an upload of `total` bytes is within its size.
    fn check_total(&self, total: u64) -> EngineResult<()> {
        match self.max_bytes {
            Some(limit) if total > limit => Err(EngineError::TooLarge { limit }),
            _ => Ok(()),
        }
    }

    /// Whether it may create a file named `name`.
    fn check_filename(&self, name: &str) -> EngineResult<()> {
        match &self.extensions {
            Some(allowed) if !allowed.contains(&extension(name)) => {
                Err(EngineError::ExtensionNotAllowed)
            }
            _ => Ok(()),
        }
    }
}

impl Caller {
    /// The owner it acts as; None when anonymous.
    pub fn owner(&self) -> Option<&str> {
        match self {
            Caller::Owner { name, .. } | Caller::Granted { name, .. } => Some(name),
            Caller::Anonymous => None,
        }
    }

    /// Whether its token lets it act on the upload `id` at all.
    fn may_act_on(&self, id: Uuid) -> bool {
        match self {
            Caller::Granted { grant, .. } => grant.upload.is_none_or(|only| only == id),
            _ => true,
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

/// The media type a file's name implies (`application/octet-stream` for
/// none).
pub fn media_type_of(name: &str) -> String {
    mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

/// A file name's extension, lower case, without the dot ("" if none).
fn extension(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, ext)| ext.to_lowercase())
        .unwrap_or_default()
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
    /// The end of this request's body, unless it breaks off: the upload's
    /// total is where the body ends (the IETF draft's `Upload-Complete:
    /// ?1`). Otherwise as `LastByte`.
    EndOfBody,
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
    /// The name comes later, with a chunk (FilePond): `filename` is a
    /// placeholder, and no rule on names is applied to it.
    pub named_later: bool,
}

pub struct Engine {
    meta: Arc<dyn MetaStore>,
    storage: Arc<dyn PartStore>,
    settings: EngineSettings,
    locks: Arc<Locks>,
    feeds: ParkedFeeds,
    metrics: EngineMetrics,
    hook: Option<Arc<PreCreateHook>>,
}

impl Engine {
    pub fn new(
        meta: Arc<dyn MetaStore>,
        storage: Arc<dyn PartStore>,
        settings: EngineSettings,
    ) -> Self {
        let locks = Arc::new(Locks::new(meta.clone(), settings.lease_time));
        let hook = settings
            .hook_url
            .clone()
            .map(|url| Arc::new(PreCreateHook::new(url)));
        Engine {
            hook,
            meta,
            storage,
            settings,
            locks,
            feeds: ParkedFeeds::default(),
            metrics: EngineMetrics::default(),
        }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
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
            total: upload.total,
        }
    }

    fn visible(&self, upload: &UploadRecord, caller: &Caller) -> bool {
        if !caller.may_act_on(upload.id) {
            return false;
        }
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
        let ext = extension(name);
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

    /// An upload, with where a chunk in flight on it has reached: as this
    /// process counts it, or as the process receiving it last reported.
    pub async fn get(&self, caller: &Caller, id: Uuid) -> EngineResult<UploadRecord> {
        let mut upload = self.find(caller, id).await?;
        if let Some(here) = self.locks.received(id) {
            upload.received = Some(upload.received.map_or(here, |there| there.max(here)));
        }
        Ok(upload)
    }

    /// Ends a request of this process in flight on an upload: its body
    /// breaks off where it is, as if its client had gone. For clients that
    /// resume while their previous request still looks alive here (the IETF
    /// draft's zombie). A caller who may not see the upload ends nothing.
    pub async fn preempt(&self, caller: &Caller, id: Uuid) -> EngineResult<()> {
        if self.locks.received(id).is_some() {
            self.find(caller, id).await?;
            self.locks.preempt(id);
        }
        Ok(())
    }

    /// An upload once no request is writing to it: the offset it reports
    /// is the one its next append must start at.
    pub async fn settled(&self, caller: &Caller, id: Uuid) -> EngineResult<UploadRecord> {
        let (_lock, upload, taken) = self.lock_then(caller, id, |_| Ok(())).await?;
        taken?;
        Ok(upload)
    }

    pub async fn list(
        &self,
        caller: &Caller,
        complete: Option<bool>,
        limit: u32,
    ) -> EngineResult<Vec<UploadRecord>> {
        let owner = match caller {
            _ if !self.settings.owner_restricted => None,
            // A token for one upload lists nothing: it knows its upload.
            Caller::Granted { grant, .. } if grant.upload.is_some() => return Ok(Vec::new()),
            Caller::Owner { name, .. } | Caller::Granted { name, .. } => Some(name.clone()),
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
        // An application's token has no row to check: it only expires.
        let token_hash = match caller {
            Caller::Owner { token_hash, .. } => Some(token_hash.clone()),
            Caller::Granted { .. } | Caller::Anonymous => None,
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
        if !caller.may_act_on(id) {
            return Err(EngineError::NotFound);
        }
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
        if run_blocking(move || Ok(meta.mark_failed(id, &token)?)).await? {
            self.metrics.failed.inc();
        }
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

    /// The hash state to commit with a chunk, and the feed to keep for the
    /// next: what the feed covers so far (the rest is caught up from the
    /// part file if the feed is lost), or, where parts cannot be read back,
    /// all of it, waited for.
    async fn hash_to_save(&self, feed: HashFeed) -> EngineResult<(Hasher, HashFeed)> {
        if self.storage.parts_readable() {
            return Ok((feed.checkpoint()?, feed));
        }
        let hasher = feed.finish().await?;
        Ok((hasher.clone(), HashFeed::open(hasher)))
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
}

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;
