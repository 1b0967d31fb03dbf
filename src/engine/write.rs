//! The one write path: a body stream goes into a part file at an offset,
//! hashed as it passes, in batches written on the blocking pool while the
//! next batch is read. Nothing is acknowledged here: the caller commits the
//! new offset only after `pump` returned, i.e. after the bytes were synced.

use super::checksum::{HashJob, Hasher};
use super::error::{EngineError, EngineResult};
use super::lock::UploadLock;
use super::md5::Streaming;
use super::pages::Pages;
use super::{blocking_failed, detach_blocking, run_blocking};
use crate::storage::{PartKey, PartStore, PartWriter, ALIGN};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;

/// Bytes gathered before one write to disk: large enough to keep the
/// syscall and thread-hop cost negligible, small enough that many
/// concurrent uploads keep memory flat (two buffers per request).
const BATCH: usize = 128 * 1024;

/// The batches of a request that holds the large-batch budget: direct
/// writes of 1 MiB, two at once, keep the disk's queue full where single
/// 128 KiB ones leave it waiting (one 1 GiB PATCH with sync on, here:
/// about 245 MB/s against 175).
const LARGE_BATCH: usize = 1024 * 1024;
const LARGE_WRITES_IN_FLIGHT: usize = 2;

/// Large batches for one request at a time, so that memory stays flat
/// however many uploads run at once (and many of them keep the disk busy
/// anyway).
static LARGE_BATCHES: Semaphore = Semaphore::const_new(LARGE_WRITES_IN_FLIGHT + 1);

/// Bytes a body must move within each read timeout: a client that sends
/// nothing, or trickles a byte a second, is cut off.
const MIN_PROGRESS: u64 = 64 * 1024;

/// Reads a body under the read timeout.
pub struct Progress {
    timeout: Duration,
    deadline: tokio::time::Instant,
    credit: u64,
}

impl Progress {
    pub fn new(timeout: Duration) -> Self {
        Progress {
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            credit: 0,
        }
    }

    /// The next piece of the body; `ReadTimeout` once the body has not
    /// moved `MIN_PROGRESS` bytes within the timeout.
    pub async fn next<S, E>(&mut self, body: &mut S) -> EngineResult<Option<Bytes>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        match tokio::time::timeout_at(self.deadline, body.next()).await {
            Err(_) => Err(EngineError::ReadTimeout),
            Ok(None) => Ok(None),
            Ok(Some(Err(err))) => Err(EngineError::Body(err.to_string())),
            Ok(Some(Ok(bytes))) => {
                self.credit += bytes.len() as u64;
                if self.credit >= MIN_PROGRESS {
                    self.credit = 0;
                    self.deadline = tokio::time::Instant::now() + self.timeout;
                }
                Ok(Some(bytes))
            }
        }
    }
}

/// What to undo if the request does not commit.
#[derive(Debug, Clone, Copy)]
pub enum Rollback {
    /// A new upload: remove its file.
    Remove,
    /// An existing upload: cut the part file back to the committed offset.
    TruncateTo(u64),
}

/// Held (shared) by a request and by every disk job it started. When the
/// last holder is gone, an uncommitted write is rolled back and then the
/// locks are released, in that order, so no other request can see the
/// file before it is restored, whether the request failed, or its client
/// went away and its future was dropped mid-write.
pub struct WriteGuard {
    storage: Arc<dyn PartStore>,
    key: PartKey,
    writer: Arc<dyn PartWriter>,
    rollback: Rollback,
    lock: Option<UploadLock>,
    committed: AtomicBool,
}

impl WriteGuard {
    pub fn new(
        storage: Arc<dyn PartStore>,
        key: PartKey,
        writer: Arc<dyn PartWriter>,
        rollback: Rollback,
        lock: Option<UploadLock>,
    ) -> Arc<Self> {
        Arc::new(WriteGuard {
            storage,
            key,
            writer,
            rollback,
            lock,
            committed: AtomicBool::new(false),
        })
    }

    /// Called by the job that committed the row, before it lets go of the
    /// guard: from then on the bytes are acknowledged and must stay.
    pub fn mark_committed(&self) {
        self.committed.store(true, Ordering::SeqCst);
    }

    pub fn lock(&self) -> Option<&UploadLock> {
        self.lock.as_ref()
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let committed = self.committed.load(Ordering::SeqCst);
        let mut lock = self.lock.take();
        if committed {
            if let Some(lock) = lock.as_mut() {
                lock.lease_released_by_commit();
            }
            drop(lock);
            return;
        }
        let (storage, key, writer, rollback) = (
            self.storage.clone(),
            self.key.clone(),
            self.writer.clone(),
            self.rollback,
        );
        detach_blocking(move || {
            let undone = match rollback {
                Rollback::Remove => storage.remove(&key),
                Rollback::TruncateTo(len) => writer.truncate(len),
            };
            if let Err(err) = undone {
                log::error!(
                    "upload {}: rolling back a failed chunk failed: {err}",
                    key.id
                );
            }
            drop(lock);
        });
    }
}

/// How long the body must be.
pub enum Expected {
    /// Exactly this many bytes (a chunk with a Content-Range).
    Exact(u64),
    /// Any length up to the limit; past it, the given error.
    AtMost(u64, EngineError),
}

/// The digest one request body must have (tus `Upload-Checksum`).
pub struct BodyCheck {
    pub hasher: Hasher,
    pub digest: Vec<u8>,
}

/// How a body is taken in.
pub struct Intake {
    pub expected: Expected,
    pub read_timeout: Duration,
    /// When the body breaks off (client gone, read timeout), keep and
    /// acknowledge what arrived instead of failing (tus).
    pub keep_partial: bool,
    pub check: Option<BodyCheck>,
}

pub struct Pumped {
    pub len: u64,
    pub hasher: Hasher,
}

/// One batch of body bytes, laid out in memory at the same alignment as
/// their place in the file (see `storage::ALIGN`), and ending on an aligned
/// file position, so that the disk gets whole blocks straight from it.
struct Batch {
    mem: Pages,
    /// Where the bytes start in `mem`.
    skew: usize,
    len: usize,
    /// How many bytes fit: up to the first aligned file position at least
    /// `size - ALIGN` bytes on.
    room: usize,
}

impl Batch {
    /// `size`: a multiple of `ALIGN`.
    fn new(size: usize) -> Self {
        Batch {
            mem: Pages::take(size + ALIGN),
            skew: 0,
            len: 0,
            room: 0,
        }
    }

    /// The batch's size: its buffer has `ALIGN` more, for the skew.
    fn size(&self) -> usize {
        self.mem.len() - ALIGN
    }

    /// Empties the batch for bytes that go to file position `pos`.
    fn start_at(&mut self, pos: u64) {
        let in_block = (pos % ALIGN as u64) as usize;
        let addr = self.mem.as_ptr() as usize % ALIGN;
        self.skew = (in_block + ALIGN - addr) % ALIGN;
        self.len = 0;
        self.room = self.size() - in_block;
    }

    /// Copies in as much of `bytes` as fits; returns how much that was.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let take = bytes.len().min(self.room - self.len);
        let at = self.skew + self.len;
        self.mem[at..at + take].copy_from_slice(&bytes[..take]);
        self.len += take;
        take
    }

    fn is_full(&self) -> bool {
        self.len == self.room
    }

    fn bytes(&self) -> &[u8] {
        &self.mem[self.skew..self.skew + self.len]
    }
}

impl AsRef<[u8]> for Batch {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

struct Pipeline {
    writer: Arc<dyn PartWriter>,
    guard: Arc<WriteGuard>,
    /// File position of the batch being filled.
    pos: u64,
    filling: Batch,
    hasher: Option<Hasher>,
    /// The hash of the last batch handed over: batches are hashed one after
    /// the other, off the request's thread.
    hashing: Option<HashJob>,
    /// Writes under way, oldest first, each on a blocking thread: while the
    /// MD5 takes one core, the disk gets several direct writes at once.
    writing: VecDeque<JoinHandle<EngineResult<()>>>,
    max_writing: usize,
    /// Held while this request uses large batches.
    _large: Option<SemaphorePermit<'static>>,
    _streaming: Streaming,
}

impl Pipeline {
    fn new(writer: Arc<dyn PartWriter>, guard: Arc<WriteGuard>, pos: u64, hasher: Hasher) -> Self {
        let wanted = (LARGE_WRITES_IN_FLIGHT + 1) as u32;
        let (size, max_writing, large) = match LARGE_BATCHES.try_acquire_many(wanted) {
            Ok(permit) => (LARGE_BATCH, LARGE_WRITES_IN_FLIGHT, Some(permit)),
            Err(_) => (BATCH, 1, None),
        };
        let mut filling = Batch::new(size);
        filling.start_at(pos);
        Pipeline {
            writer,
            guard,
            pos,
            filling,
            hasher: Some(hasher),
            hashing: None,
            writing: VecDeque::new(),
            max_writing,
            _large: large,
            _streaming: Streaming::start(),
        }
    }

    async fn settle_hash(&mut self) -> EngineResult<()> {
        if let Some(hashing) = self.hashing.take() {
            self.hasher = Some(hashing.wait().await?);
        }
        Ok(())
    }

    /// Waits for the oldest write.
    async fn settle_oldest_write(&mut self) -> EngineResult<()> {
        if let Some(writing) = self.writing.pop_front() {
            writing.await.map_err(blocking_failed)??;
        }
        Ok(())
    }

    /// Waits for every job; the first error, once all of them are over, so
    /// that no disk job outlives the request's rollback.
    async fn settle(&mut self) -> EngineResult<()> {
        let mut result = self.settle_hash().await;
        while !self.writing.is_empty() {
            let written = self.settle_oldest_write().await;
            result = result.and(written);
        }
        result
    }

    /// Hands the filled batch to the disk and starts filling the next one.
    /// `last`: the body is over, and its response waits for this batch.
    async fn submit(&mut self, last: bool) -> EngineResult<()> {
        // A request still waiting for its previous hash is bound by hashing:
        // its next one is urgent. Otherwise the lane service may hold it a
        // moment to hash it beside other uploads' batches.
        let urgent = last || self.hashing.as_ref().is_some_and(|job| !job.is_done());
        self.settle_hash().await?;
        while self.writing.len() >= self.max_writing {
            self.settle_oldest_write().await?;
        }
        let mut next = Batch::new(self.filling.size());
        let at = self.pos;
        self.pos += self.filling.len as u64;
        next.start_at(self.pos);
        let batch = Arc::new(std::mem::replace(&mut self.filling, next));
        let hasher = self.hasher.take().ok_or_else(|| {
            EngineError::Internal("hasher missing from the write pipeline".into())
        })?;
        let written = batch.clone();
        self.hashing = Some(hasher.update_later(batch, urgent));
        let (writer, guard) = (self.writer.clone(), self.guard.clone());
        self.writing.push_back(tokio::task::spawn_blocking(move || {
            writer.write_at(written.bytes(), at)?;
            drop(guard);
            Ok(())
        }));
        Ok(())
    }
}

/// Streams `body` into the part file from `start`. On success every byte is
/// durable (synced) and the returned hasher covers them.
pub async fn pump<S, E>(
    writer: Arc<dyn PartWriter>,
    guard: Arc<WriteGuard>,
    start: u64,
    hasher: Hasher,
    intake: Intake,
    mut body: S,
) -> EngineResult<Pumped>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let Intake {
        expected,
        read_timeout,
        keep_partial,
        mut check,
    } = intake;
    let (limit, exact, mut overflow) = match expected {
        Expected::Exact(n) => (n, true, None),
        Expected::AtMost(n, err) => (n, false, Some(err)),
    };
    let mut pipeline = Pipeline::new(writer.clone(), guard.clone(), start, hasher);
    let mut seen: u64 = 0;
    let mut progress = Progress::new(read_timeout);
    let result = 'body: loop {
        let next = match progress.next(&mut body).await {
            Err(err) => break Err(err),
            Ok(None) => break Ok(()),
            Ok(Some(bytes)) => bytes,
        };
        seen += next.len() as u64;
        if seen > limit {
            if let Some(err) = overflow.take() {
                break Err(err);
            }
            // A body longer than its range fails; keep counting (writing
            // nothing more) to say how long it was.
            continue;
        }
        if let Some(check) = check.as_mut() {
            check.hasher.update(&next);
        }
        let mut rest = &next[..];
        while !rest.is_empty() {
            rest = &rest[pipeline.filling.fill(rest)..];
            if pipeline.filling.is_full() {
                if let Some(lock) = guard.lock() {
                    if let Err(err) = lock.keep_alive().await {
                        break 'body Err(err);
                    }
                }
                if let Err(err) = pipeline.submit(false).await {
                    break 'body Err(err);
                }
            }
        }
    };
    // Never leave a disk job running past this point on a failure either:
    // the caller's rollback must come after the last write.
    let settled = pipeline.settle().await;
    let broke_off = matches!(result, Err(EngineError::Body(_) | EngineError::ReadTimeout));
    if !(keep_partial && broke_off) {
        result?;
    }
    settled?;
    if exact && seen != limit {
        return Err(EngineError::SizeMismatch {
            actual: seen,
            declared: limit,
        });
    }
    if let Some(lock) = guard.lock() {
        lock.keep_alive().await?;
    }
    if pipeline.filling.len > 0 {
        pipeline.submit(true).await?;
        pipeline.settle().await?;
    }
    if let Some(BodyCheck { hasher, digest }) = check {
        if hasher.digest() != digest {
            return Err(EngineError::BodyChecksumMismatch);
        }
    }
    let hasher = pipeline
        .hasher
        .take()
        .ok_or_else(|| EngineError::Internal("hasher missing after the write".into()))?;
    run_blocking(move || Ok(writer.sync()?)).await?;
    Ok(Pumped { len: seen, hasher })
}
