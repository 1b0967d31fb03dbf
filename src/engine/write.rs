//! The one write path: a body stream goes into a part file at an offset,
//! hashed as it passes, in batches written on the blocking pool while the
//! next batch is read. Nothing is acknowledged here: the caller commits the
//! new offset only after `pump` returned, i.e. after the bytes were synced.

use super::checksum::Hasher;
use super::error::{EngineError, EngineResult};
use super::lock::UploadLock;
use super::{detach_blocking, run_blocking};
use crate::storage::{PartKey, PartStore, PartWriter};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Bytes gathered before one write to disk: large enough to keep the
/// syscall and thread-hop cost negligible, small enough that many
/// concurrent uploads keep memory flat (two buffers per request).
const BATCH: usize = 128 * 1024;

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

type Job = JoinHandle<EngineResult<(Hasher, Vec<u8>)>>;

struct Pipeline {
    writer: Arc<dyn PartWriter>,
    guard: Arc<WriteGuard>,
    pos: u64,
    hasher: Option<Hasher>,
    spare: Vec<u8>,
    job: Option<Job>,
}

impl Pipeline {
    /// Waits for the write in flight; takes back the hasher and its buffer.
    async fn settle(&mut self) -> EngineResult<()> {
        if let Some(job) = self.job.take() {
            let (hasher, mut buf) = job
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))??;
            buf.clear();
            self.hasher = Some(hasher);
            self.spare = buf;
        }
        Ok(())
    }

    /// Hands `buf` to a disk job (hash, then write at the current position).
    async fn submit(&mut self, buf: &mut Vec<u8>) -> EngineResult<()> {
        self.settle().await?;
        let data = std::mem::replace(buf, std::mem::take(&mut self.spare));
        let mut hasher = self.hasher.take().ok_or_else(|| {
            EngineError::Internal("hasher missing from the write pipeline".into())
        })?;
        let (writer, guard, pos) = (self.writer.clone(), self.guard.clone(), self.pos);
        self.pos += data.len() as u64;
        self.job = Some(tokio::task::spawn_blocking(move || {
            hasher.update(&data);
            writer.write_at(&data, pos)?;
            drop(guard);
            Ok((hasher, data))
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
    let mut pipeline = Pipeline {
        writer: writer.clone(),
        guard: guard.clone(),
        pos: start,
        hasher: Some(hasher),
        spare: Vec::with_capacity(BATCH),
        job: None,
    };
    let mut buf = Vec::with_capacity(BATCH);
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
        // Exact batches: a buffer never outgrows its capacity.
        let mut rest = &next[..];
        while !rest.is_empty() {
            let take = rest.len().min(BATCH - buf.len());
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buf.len() == BATCH {
                if let Some(lock) = guard.lock() {
                    if let Err(err) = lock.keep_alive().await {
                        break 'body Err(err);
                    }
                }
                if let Err(err) = pipeline.submit(&mut buf).await {
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
    if !buf.is_empty() {
        pipeline.submit(&mut buf).await?;
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
