//! The write path of an existing upload: lock it and check the chunk's
//! range (`begin_append`), stream the chunk into its part file
//! (`AppendSession::receive`, through `write::pump`), then sync it and
//! commit the new offset and hash state, and with the last byte the
//! completion (`ReceivedChunk::commit`).

use super::checksum::{ChecksumAlgo, HashFeed, Hasher};
use super::error::{EngineError, EngineResult};
use super::lock::{InFlight, UploadLock};
use super::write::{pump, Rollback, WriteGuard};
use super::{
    finalize_after_commit, hash_file, run_blocking, BodyRules, Caller, Completion, Engine,
};
use crate::meta::{ChunkCommit, Completed, UploadRecord};
use crate::storage::{PartKey, PartWriter};
use bytes::Bytes;
use chrono::{SubsecRound, Utc};
use futures_util::{ready, Stream};
use std::fmt::Display;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use uuid::Uuid;

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

    /// Names the upload `filename`, under the rules on names (a FilePond
    /// upload is named by its chunks). Done before the chunk is taken in;
    /// a chunk refused later leaves the name given.
    pub async fn rename(&mut self, caller: &Caller, filename: &str) -> EngineResult<()> {
        if self.upload.filename == filename {
            return Ok(());
        }
        self.engine.check_filename(filename)?;
        if let Caller::Granted { grant, .. } = caller {
            grant.check_filename(filename)?;
        }
        let (meta, id, token, name) = (
            self.engine.meta.clone(),
            self.upload.id,
            self.lock.token().to_owned(),
            filename.to_owned(),
        );
        if !run_blocking(move || Ok(meta.rename_upload(id, &token, &name)?)).await? {
            return Err(EngineError::LeaseLost);
        }
        self.upload.filename = filename.to_owned();
        Ok(())
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
            mut lock,
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
        let body = TrackedBody {
            body,
            chunk: lock.track_chunk(from),
        };
        let guard = WriteGuard::new(
            engine.storage.clone(),
            key.clone(),
            writer.clone(),
            Rollback::TruncateTo(from),
            Some(lock),
        );
        let intake = engine.intake(rules);
        let began = Instant::now();
        let pumped = pump(writer, guard.clone(), from, feed, intake, body).await?;
        engine.metrics.stage_took("receive", began);
        let to = from + pumped.len;
        let total = match (completion, upload.total) {
            // The body's end is the upload's: a known total must be it.
            (Completion::EndOfBody, Some(total)) if pumped.whole && total != to => {
                return Err(EngineError::TotalMismatch {
                    total,
                    provided: to,
                });
            }
            (Completion::EndOfBody, _) if pumped.whole => Some(to),
            (_, total) => total,
        };
        let last = completion != Completion::Request && total == Some(to);
        let (commit, feed) = if last {
            let hasher = pumped.feed.finish().await?;
            let commit = ChunkCommit {
                from,
                to,
                hash_state: hasher.save(),
                total,
                completed: Some(Completed {
                    checksum: hasher.hex(),
                    at: Utc::now().trunc_subsecs(6),
                }),
            };
            (commit, None)
        } else {
            let (saved, feed) = engine.hash_to_save(pumped.feed).await?;
            let commit = ChunkCommit {
                from,
                to,
                hash_state: saved.save(),
                total,
                completed: None,
            };
            (commit, Some(feed))
        };
        Ok(ReceivedChunk {
            engine,
            upload,
            key,
            token,
            guard,
            commit,
            feed,
            began,
        })
    }
}

/// A chunk's body, counted as it arrives (`InFlight`), that breaks off
/// when a newer request on its upload preempts it.
struct TrackedBody<S> {
    body: S,
    chunk: Arc<InFlight>,
}

impl<S, E> Stream for TrackedBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    type Item = Result<Bytes, String>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.chunk.is_preempted(cx.waker()) {
            return Poll::Ready(Some(Err("ended by a newer request on the upload".into())));
        }
        let piece = match ready!(Pin::new(&mut this.body).poll_next(cx)) {
            Some(Ok(bytes)) => {
                this.chunk.received(bytes.len());
                Ok(bytes)
            }
            Some(Err(err)) => Err(err.to_string()),
            None => return Poll::Ready(None),
        };
        Poll::Ready(Some(piece))
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
    /// When its body began to be received.
    began: Instant,
}

impl ReceivedChunk<'_> {
    /// The hex digest with `algo` of every byte of the upload this chunk
    /// completes (None if it does not): the engine's own when it hashes
    /// with `algo`, else read back from the part file.
    pub async fn whole_digest(&self, algo: ChecksumAlgo) -> EngineResult<Option<String>> {
        let Some(completed) = &self.commit.completed else {
            return Ok(None);
        };
        if ChecksumAlgo::parse(&self.upload.checksum_algo) == Some(algo) {
            return Ok(completed.checksum.clone());
        }
        let (storage, key, len) = (
            self.engine.storage.clone(),
            self.key.clone(),
            self.commit.to,
        );
        let hasher = run_blocking(move || {
            hash_file(
                storage.open_part_reader(&key)?.as_ref(),
                Hasher::new(algo),
                len,
            )
        })
        .await?;
        Ok(hasher.hex())
    }

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
            began,
        } = self;
        guard.keep_alive().await?;
        let (meta, storage, id, job_commit, metrics) = (
            engine.meta.clone(),
            engine.storage.clone(),
            upload.id,
            commit.clone(),
            engine.metrics.clone(),
        );
        let committed = run_blocking(move || {
            metrics.timed("sync", || guard.sync())?;
            let committed =
                metrics.timed("commit", || meta.commit_chunk(id, &token, &job_commit))?;
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
        engine
            .metrics
            .bytes_received
            .inc_by(commit.to - commit.from);
        if commit.completed.is_some() {
            engine.metrics.finished.inc();
        }
        engine.metrics.stage_took("total", began);
        upload.offset = commit.to;
        upload.total = commit.total;
        upload.hash_state = commit.hash_state;
        if let Some(completed) = commit.completed {
            upload.complete = true;
            upload.checksum = completed.checksum;
            upload.completed_at = Some(completed.at);
        }
        Ok(upload)
    }
}

impl Engine {
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
                if let Caller::Granted { grant, .. } = caller {
                    grant.check_total(provided)?;
                }
                // Its bytes so far were counted; the rest of the told total
                // is asked for now.
                self.check_owner_limits(caller, provided - upload.offset, false)
                    .await?;
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
}
