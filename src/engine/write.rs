//! The one write path: a body stream goes into a part file at an offset.
//! A body that is synced goes into segments laid out for direct writes:
//! each full segment goes at once to the hasher (the MD5 lane service)
//! and, alone or with the next few, to a write on the blocking pool, while
//! the next segment fills. A body that is not synced only copies into the
//! page cache, so each piece the connection received goes to the hasher
//! and is written in place as it is: a hand-over to another thread, or a
//! copy into a segment, would cost more than the write. Nothing is
//! acknowledged here: the caller syncs the bytes and commits the new offset
//! after `pump` returned. The hash need not have caught up by then: the
//! caller saves what the feed covers so far, and keeps the feed.
//!
//! It is longer than most files here because it is one pipeline (budgets,
//! segments, the pump and its rollback guard), best read in one place.

use super::checksum::{HashFeed, Hasher};
use super::error::{EngineError, EngineResult};
use super::lock::UploadLock;
use super::pages::{Pages, SEGMENT_BUDGET};
use super::{blocking_failed, detach_blocking};
use crate::storage::{PartKey, PartStore, PartWriter, ALIGN};
use bytes::Bytes;
use chunkd_md5::Shared;
use futures_util::{Stream, StreamExt};
use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;

/// Bytes of one segment: the hasher starts on a body after this many, and
/// a request holds only a few at once, so many concurrent uploads keep
/// memory flat. A request may hold more than it writes together (`Shape`),
/// so that one segment always fills while the others are written.
const SEGMENT: usize = 128 * 1024;

/// How a request's segments go to the disk.
#[derive(Clone, Copy)]
struct Shape {
    /// Segments written together, with one `pwritev`.
    per_write: usize,
    /// Segments a request may hold at once: filling, being hashed, being
    /// written.
    held: usize,
}

/// Most requests: two segments written together, three held (64 uploads
/// at once then keep under 64 MiB, and write half as often as one segment
/// at a time would).
const SMALL: Shape = Shape {
    per_write: 2,
    held: 3,
};

/// The request that holds the large-write budget: direct writes of 1 MiB,
/// two under way while a third fills, keep the disk's queue full where
/// single 128 KiB ones leave it waiting (docs/benchmarks/tuning.md).
const LARGE: Shape = Shape {
    per_write: 8,
    held: 24,
};

/// Large writes for one request at a time, so that memory stays flat
/// however many uploads run at once (and many of them keep the disk busy
/// anyway).
static LARGE_WRITES: Semaphore = Semaphore::const_new(1);

static SEGMENTS: Semaphore = Semaphore::const_new(SEGMENT_BUDGET);

/// Pieces as received that all unsynced requests together may hold, each
/// keeping a connection's read buffer of up to 128 KiB. Fewer do not pay:
/// a body that waits longer for the hasher piles up in the connection's
/// read buffers instead (docs/benchmarks/tuning.md).
const RECEIVED_BUDGET: usize = 80;
static RECEIVED: Semaphore = Semaphore::const_new(RECEIVED_BUDGET);

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

    /// Waits for `step` of reading the body (a multipart form's next part,
    /// say) within the same deadline; `ReadTimeout` past it.
    pub async fn within<F: std::future::Future>(&self, step: F) -> EngineResult<F::Output> {
        tokio::time::timeout_at(self.deadline, step)
            .await
            .map_err(|_| EngineError::ReadTimeout)
    }

    /// Starts a new period, after a part of the body that was read under
    /// a progress rule of its own.
    pub fn restart(&mut self) {
        self.credit = 0;
        self.deadline = tokio::time::Instant::now() + self.timeout;
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
        self.writer.committed();
    }

    /// Renews the upload's lease when due (see `UploadLock::keep_alive`).
    pub async fn keep_alive(&self) -> EngineResult<()> {
        match &self.lock {
            Some(lock) => lock.keep_alive().await,
            None => Ok(()),
        }
    }

    /// Makes the bytes written durable, before they are committed.
    pub fn sync(&self) -> EngineResult<()> {
        Ok(self.writer.sync()?)
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
    /// The body ended by itself, rather than breaking off.
    pub whole: bool,
    /// Fed every byte written; it may still be hashing the last ones.
    pub feed: HashFeed,
}

/// The request's and the process's hold on bytes in memory (a segment, or
/// a piece as received), given back when they are hashed and written.
type Hold = (OwnedSemaphorePermit, SemaphorePermit<'static>);

/// A piece of the body as the connection received it, written and hashed
/// without a copy. It keeps the connection's read buffer it lies in from
/// being reused, so it holds a place in a budget (`RECEIVED`) as a
/// segment does.
struct Received {
    bytes: Bytes,
    _held: Hold,
}

impl AsRef<[u8]> for Received {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// One segment of body bytes, laid out in memory at the same alignment as
/// their place in the file (see `storage::ALIGN`), and ending on an aligned
/// file position, so that the disk gets whole blocks straight from it.
struct Segment {
    mem: Pages,
    /// Where the bytes start in `mem`.
    skew: usize,
    len: usize,
    /// How many bytes fit: up to the first aligned file position at least
    /// `SEGMENT - ALIGN` bytes on.
    room: usize,
    _held: Hold,
}

impl Segment {
    /// An empty segment for bytes that go to file position `pos`.
    fn new(pos: u64, held: Hold) -> Self {
        let mem = Pages::take(SEGMENT + ALIGN);
        let in_block = (pos % ALIGN as u64) as usize;
        let addr = mem.as_ptr() as usize % ALIGN;
        Segment {
            mem,
            skew: (in_block + ALIGN - addr) % ALIGN,
            len: 0,
            room: SEGMENT - in_block,
            _held: held,
        }
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

impl AsRef<[u8]> for Segment {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

struct Pipeline {
    writer: Arc<dyn PartWriter>,
    guard: Arc<WriteGuard>,
    shape: Shape,
    /// Segments the request may still take.
    held: Arc<Semaphore>,
    /// What all requests' holds come from: `SEGMENTS` for a synced body,
    /// `RECEIVED` for one taken as received.
    budget: &'static Semaphore,
    /// File position of the next byte of the body.
    pos: u64,
    /// The segment being filled, once taken.
    filling: Option<Segment>,
    hashing: HashFeed,
    /// Full segments waiting to be written together, and where they go.
    group: Vec<Arc<Segment>>,
    group_at: u64,
    /// Writes under way, oldest first, each on a blocking thread.
    writing: VecDeque<JoinHandle<EngineResult<()>>>,
    /// Held while this request writes large.
    _large: Option<SemaphorePermit<'static>>,
}

impl Pipeline {
    fn new(writer: Arc<dyn PartWriter>, guard: Arc<WriteGuard>, pos: u64, feed: HashFeed) -> Self {
        let (shape, large) = match LARGE_WRITES.try_acquire() {
            Ok(permit) => (LARGE, Some(permit)),
            Err(_) => (SMALL, None),
        };
        let budget = if writer.cached() {
            &RECEIVED
        } else {
            &SEGMENTS
        };
        Pipeline {
            writer,
            guard,
            shape,
            held: Arc::new(Semaphore::new(shape.held)),
            budget,
            pos,
            filling: None,
            hashing: feed,
            group: Vec::with_capacity(shape.per_write),
            group_at: pos,
            writing: VecDeque::new(),
            _large: large,
        }
    }

    /// The segment to fill, taken once the request may hold one more.
    async fn filling(&mut self) -> EngineResult<&mut Segment> {
        if self.filling.is_none() {
            let held = self.hold().await?;
            self.filling = Some(Segment::new(self.pos, held));
        }
        Ok(self.filling.as_mut().expect("taken above"))
    }

    /// A hold on one more segment, or piece as received: when the request
    /// already holds its share, or all requests the budget, it waits for
    /// the hasher and the disk to give one back.
    async fn hold(&mut self) -> EngineResult<Hold> {
        let closed = |_| EngineError::Internal("segment budget closed".into());
        let budget = self.budget;
        match (self.held.clone().try_acquire_owned(), budget.try_acquire()) {
            (Ok(mine), Ok(process)) => Ok((mine, process)),
            (mine, process) => {
                // Segments waiting in an incomplete write group are given
                // back only once the group is written: a request that
                // waited for the budget holding them could wait forever,
                // with every other waiting request holding the rest. So it
                // writes them first.
                if process.is_err() && !self.group.is_empty() {
                    self.write_group()?;
                }
                self.hashing.set_waiting(true);
                let mine = match mine {
                    Ok(mine) => Ok(mine),
                    Err(_) => self.held.clone().acquire_owned().await,
                };
                let process = match process {
                    Ok(process) => Ok(process),
                    Err(_) => budget.acquire().await,
                };
                self.hashing.set_waiting(false);
                Ok((mine.map_err(closed)?, process.map_err(closed)?))
            }
        }
    }

    /// Takes the next piece of the body.
    async fn take(&mut self, bytes: Bytes) -> EngineResult<()> {
        self.guard.keep_alive().await?;
        if self.writer.cached() {
            return self.write_received(bytes).await;
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let segment = self.filling().await?;
            rest = &rest[segment.fill(rest)..];
            if segment.is_full() {
                self.submit(false).await?;
            }
        }
        Ok(())
    }

    /// Hashes a piece of a body that is not synced and writes it in place,
    /// as received.
    async fn write_received(&mut self, bytes: Bytes) -> EngineResult<()> {
        let held = self.hold().await?;
        let at = self.pos;
        self.pos += bytes.len() as u64;
        let piece: Shared = Arc::new(Received { bytes, _held: held });
        self.hashing.push(piece.clone()).await?;
        Ok(self.writer.write_at(&[(*piece).as_ref()], at)?)
    }

    /// Hands the filled segment to the hasher and into the write group; the
    /// group is written once complete. `last`: the body is over, write what
    /// there is now.
    async fn submit(&mut self, last: bool) -> EngineResult<()> {
        if let Some(full) = self.filling.take().filter(|segment| segment.len > 0) {
            self.pos += full.len as u64;
            let full = Arc::new(full);
            self.hashing.push(full.clone()).await?;
            self.group.push(full);
        }
        if self.group.len() == self.shape.per_write || (last && !self.group.is_empty()) {
            self.write_group()?;
        }
        Ok(())
    }

    fn write_group(&mut self) -> EngineResult<()> {
        // A write that already failed fails the request now.
        while self.writing.front().is_some_and(|w| w.is_finished()) {
            let finished = self.writing.pop_front().expect("checked above");
            if let Some(written) = futures_util::FutureExt::now_or_never(finished) {
                written.map_err(blocking_failed)??;
            }
        }
        let group = std::mem::replace(&mut self.group, Vec::with_capacity(self.shape.per_write));
        let at = std::mem::replace(&mut self.group_at, self.pos);
        let (writer, guard) = (self.writer.clone(), self.guard.clone());
        self.writing.push_back(tokio::task::spawn_blocking(move || {
            write_group_at(writer.as_ref(), &group, at)?;
            drop(guard);
            Ok(())
        }));
        Ok(())
    }

    /// Waits for every write; the first error, once all of them are over,
    /// so that no disk job outlives the request's rollback.
    async fn settle_writes(&mut self) -> EngineResult<()> {
        let mut result = Ok(());
        while let Some(writing) = self.writing.pop_front() {
            let written = match writing.await {
                Ok(written) => written,
                Err(err) => Err(blocking_failed(err)),
            };
            result = result.and(written);
        }
        result
    }
}

fn write_group_at(writer: &dyn PartWriter, group: &[Arc<Segment>], at: u64) -> EngineResult<()> {
    let bufs: Vec<&[u8]> = group.iter().map(|segment| segment.bytes()).collect();
    Ok(writer.write_at(&bufs, at)?)
}

/// Streams `body` into the part file from `start`, and into `feed`, which
/// covers the bytes before `start`. On success every byte is written and
/// fed; the caller syncs them (`WriteGuard::sync`) in the job that commits
/// them. On a failure the feed is dropped with the request.
pub async fn pump<S, E>(
    writer: Arc<dyn PartWriter>,
    guard: Arc<WriteGuard>,
    start: u64,
    feed: HashFeed,
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
    let mut pipeline = Pipeline::new(writer.clone(), guard.clone(), start, feed);
    let mut seen: u64 = 0;
    let mut progress = Progress::new(read_timeout);
    let result = loop {
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
        if let Err(err) = pipeline.take(next).await {
            break Err(err);
        }
    };
    // Never leave a disk job running past this point on a failure either:
    // the caller's rollback must come after the last write.
    let settled = pipeline.settle_writes().await;
    let broke_off = matches!(result, Err(EngineError::Body(_) | EngineError::ReadTimeout));
    if !(keep_partial && broke_off) {
        result?;
    }
    let whole = !broke_off;
    settled?;
    if exact && seen != limit {
        return Err(EngineError::SizeMismatch {
            actual: seen,
            declared: limit,
        });
    }
    guard.keep_alive().await?;
    pipeline.submit(true).await?;
    pipeline.settle_writes().await?;
    if let Some(BodyCheck { hasher, digest }) = check {
        if hasher.digest().as_ref() != Some(&digest) {
            return Err(EngineError::BodyChecksumMismatch);
        }
    }
    Ok(Pumped {
        len: seen,
        whole,
        feed: pipeline.hashing,
    })
}
