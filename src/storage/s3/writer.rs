//! Writing an upload in progress to the bucket. Bytes gather in memory
//! until a part is full, which goes up as the multipart upload's next part;
//! at a sync what is left goes up as a tail piece, so that every byte a
//! commit acknowledges is in the bucket. When a part fills from stored
//! pieces, they are read back and go up with it.

use super::bucket::Bucket;
use super::state::{Multipart, Piece, UploadState};
use super::UploadPaths;
use crate::storage::{PartWriter, StorageError, StorageResult};
use bytes::Bytes;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// S3's most parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;

/// How long a write waits for the writes of the bytes before it.
const WRITE_WAIT: Duration = Duration::from_secs(300);

pub struct S3Writer {
    bucket: Arc<Bucket>,
    paths: UploadPaths,
    /// The part size a new multipart upload gets.
    planned_part_size: u64,
    inner: Mutex<Inner>,
    /// Signalled after each write.
    written: Condvar,
}

struct Inner {
    /// The state it was opened at: the committed offset.
    opened: UploadState,
    /// The state so far; its `len` ends where `buffer` begins.
    state: UploadState,
    buffer: Vec<Bytes>,
    /// Bytes in `buffer`, all taken from the budget.
    buffered: u64,
    /// A write failed: the ones waiting to follow it fail too.
    failed: bool,
    /// The part on its way, not yet in `state.parts`.
    sending: Option<Sending>,
}

/// A part being sent: its index, and where its ETag comes.
struct Sending {
    index: usize,
    etag: Receiver<StorageResult<String>>,
}

impl S3Writer {
    pub fn new(
        bucket: Arc<Bucket>,
        paths: UploadPaths,
        planned_part_size: u64,
        opened: UploadState,
    ) -> S3Writer {
        S3Writer {
            bucket,
            paths,
            planned_part_size,
            inner: Mutex::new(Inner {
                state: opened.clone(),
                opened,
                buffer: Vec::new(),
                buffered: 0,
                failed: false,
                sending: None,
            }),
            written: Condvar::new(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the buffered bytes as a tail piece and lets go of their
    /// memory.
    fn store_buffer(&self, inner: &mut Inner) -> StorageResult<()> {
        if inner.buffered == 0 {
            return Ok(());
        }
        let piece = Piece {
            start: inner.state.len,
            end: inner.state.len + inner.buffered,
        };
        let bytes: Vec<Bytes> = std::mem::take(&mut inner.buffer);
        self.bucket
            .put(&self.paths.piece(piece), bytes.into_iter().collect())?;
        inner.state.tail.push(piece);
        inner.state.len = piece.end;
        self.bucket.budget.give(std::mem::take(&mut inner.buffered));
        Ok(())
    }

    /// Takes `bytes` of the budget, storing what this writer holds first
    /// when there is no room.
    fn reserve(&self, inner: &mut Inner, bytes: u64) -> StorageResult<()> {
        if self.bucket.budget.try_take(bytes) {
            return Ok(());
        }
        self.store_buffer(inner)?;
        self.bucket.budget.take(bytes)
    }

    /// The multipart upload of the state, or the one an earlier request
    /// made (recorded before its first part), or a new one.
    fn multipart(&self, inner: &mut Inner) -> StorageResult<Multipart> {
        if let Some(multipart) = &inner.state.multipart {
            return Ok(multipart.clone());
        }
        let multipart = match self.bucket.recorded_multipart(&self.paths)? {
            Some(multipart) if multipart.part_size == self.planned_part_size => multipart,
            stale => {
                if let Some(stale) = stale {
                    self.bucket.abort(&self.paths.done, &stale.id)?;
                }
                let multipart = Multipart {
                    id: self.bucket.create_multipart(&self.paths.done)?,
                    part_size: self.planned_part_size,
                };
                let record = serde_json::to_vec(&multipart).expect("a multipart record");
                self.bucket.put(&self.paths.marker(), record.into())?;
                multipart
            }
        };
        inner.state.multipart = Some(multipart.clone());
        Ok(multipart)
    }

    /// Sends the stored tail pieces and the buffer, a whole part, as the
    /// next part: in the background, while the next part gathers, once the
    /// part before it is in (its ETag is needed in order). Its memory goes
    /// back to the budget when it is sent.
    fn send_part(&self, inner: &mut Inner) -> StorageResult<()> {
        let multipart = self.multipart(inner)?;
        let mut stored = inner.state.in_tail();
        if stored > 0 && !self.bucket.budget.try_take(stored) {
            // Wait holding nothing: all of it stored, then room for it all.
            self.store_buffer(inner)?;
            stored = inner.state.in_tail();
            self.bucket.budget.take(stored)?;
        }
        let gathered = self.wait_sent(inner).and_then(|()| {
            let index = inner.state.parts.len();
            if index as u64 >= MAX_PARTS {
                return Err(StorageError::Remote(format!(
                    "the upload needs more than {MAX_PARTS} parts of {} bytes",
                    multipart.part_size
                )));
            }
            let tail = self.bucket.read_pieces(&self.paths, &inner.state.tail)?;
            Ok((index, tail))
        });
        let (index, mut payload) = match gathered {
            Ok(gathered) => gathered,
            Err(err) => {
                self.bucket.budget.give(stored);
                return Err(err);
            }
        };
        payload.append(&mut inner.buffer);
        let held = stored + std::mem::take(&mut inner.buffered);
        inner.sending = Some(Sending {
            index,
            etag: self.bucket.send_part(
                &self.paths.done,
                &multipart.id,
                index,
                payload.into_iter().collect(),
                held,
            ),
        });
        inner.state.len += held - stored;
        let consumed = std::mem::take(&mut inner.state.tail);
        inner.state.consumed.extend(consumed);
        Ok(())
    }

    /// Waits for the part being sent, and records it.
    fn wait_sent(&self, inner: &mut Inner) -> StorageResult<()> {
        let Some(sending) = inner.sending.take() else {
            return Ok(());
        };
        let etag = sending
            .etag
            .recv()
            .map_err(|_| StorageError::Remote("a part upload was dropped".into()))??;
        debug_assert_eq!(inner.state.parts.len(), sending.index);
        inner.state.parts.push(etag);
        Ok(())
    }

    /// Takes `bufs` in at the end of the bytes so far.
    fn append(&self, inner: &mut Inner, bufs: &[&[u8]]) -> StorageResult<()> {
        for buf in bufs {
            let mut rest: &[u8] = buf;
            while !rest.is_empty() {
                let part_size = inner
                    .state
                    .multipart
                    .as_ref()
                    .map_or(self.planned_part_size, |m| m.part_size);
                let in_tail = inner.state.in_tail() + inner.buffered;
                let take = (part_size - in_tail).min(rest.len() as u64);
                self.reserve(inner, take)?;
                inner
                    .buffer
                    .push(Bytes::copy_from_slice(&rest[..take as usize]));
                inner.buffered += take;
                rest = &rest[take as usize..];
                if in_tail + take == part_size {
                    self.send_part(inner)?;
                }
            }
        }
        Ok(())
    }
}

impl PartWriter for S3Writer {
    /// Writes may come from several threads at once, the later ones first:
    /// each waits for the bytes before it, since an object store takes an
    /// upload's bytes in order.
    fn write_at(&self, bufs: &[&[u8]], pos: u64) -> StorageResult<()> {
        let inner = self.inner();
        let (mut inner, waited) = self
            .written
            .wait_timeout_while(inner, WRITE_WAIT, |inner| {
                !inner.failed && inner.state.len + inner.buffered < pos
            })
            .unwrap_or_else(|e| e.into_inner());
        let end = inner.state.len + inner.buffered;
        if inner.failed || waited.timed_out() || pos != end {
            return Err(StorageError::Remote(format!(
                "a write at {pos} does not follow the bytes so far ({end})"
            )));
        }
        let written = self.append(&mut inner, bufs);
        inner.failed = written.is_err();
        self.written.notify_all();
        written
    }

    fn cached(&self) -> bool {
        false
    }

    /// Stores the buffer as a tail piece, then the state of the bytes so
    /// far: from then on they can be committed.
    fn sync(&self) -> StorageResult<()> {
        let mut inner = self.inner();
        let inner = &mut *inner;
        self.store_buffer(inner)?;
        self.wait_sent(inner)?;
        if inner.state.len == inner.opened.len {
            return Ok(());
        }
        inner.state.previous = Some(inner.opened.len).filter(|&len| len > 0);
        let state = serde_json::to_vec(&inner.state).expect("an upload state");
        self.bucket
            .put(&self.paths.state(inner.state.len), state.into())
    }

    /// Remembers the state synced, now committed, for the upload's next
    /// request in this process.
    fn committed(&self) {
        let inner = self.inner();
        if inner.state.len != inner.opened.len {
            self.bucket
                .remember_committed(self.paths.id, inner.state.clone());
        }
    }

    /// Goes back to the state it was opened at; what this writer stored
    /// past it is removed when the upload is next opened.
    fn truncate(&self, len: u64) -> StorageResult<()> {
        let mut inner = self.inner();
        if len != inner.opened.len {
            return Err(StorageError::Remote(format!(
                "cannot cut an upload in the bucket back to {len} (opened at {})",
                inner.opened.len
            )));
        }
        inner.state = inner.opened.clone();
        inner.failed = false;
        inner.sending = None;
        inner.buffer.clear();
        let held = std::mem::take(&mut inner.buffered);
        self.bucket.budget.give(held);
        Ok(())
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        let held = self.inner().buffered;
        self.bucket.budget.give(held);
    }
}

/// The part size for uploads of at most `max_bytes` when that is set, else
/// for this upload of `total` bytes (when known): the configured size, or
/// larger where it would take more than `MAX_PARTS` parts, in whole MiB.
/// It never shrinks as an upload's length becomes known, so bytes gathered
/// for a part never exceed it.
pub fn part_size_for(configured: u64, total: Option<u64>, max_bytes: Option<u64>) -> u64 {
    const MIB: u64 = 1 << 20;
    let needed = max_bytes
        .or(total)
        .map_or(0, |len| len.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB);
    configured.max(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_with_the_total() {
        let mib = 1u64 << 20;
        assert_eq!(part_size_for(8 * mib, Some(1 << 30), None), 8 * mib);
        assert_eq!(part_size_for(8 * mib, None, None), 8 * mib);
        // 1 TiB in at most 10,000 parts: 105 MiB each.
        let tib = 1u64 << 40;
        let size = part_size_for(8 * mib, Some(tib), None);
        assert_eq!(size, 105 * mib);
        assert!(tib.div_ceil(size) <= MAX_PARTS);
        assert_eq!(part_size_for(8 * mib, None, Some(tib)), 105 * mib);
        assert_eq!(part_size_for(8 * mib, Some(1 << 30), Some(tib)), 105 * mib);
    }
}
