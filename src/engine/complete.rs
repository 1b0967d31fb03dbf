//! Completion by the client's checksum, and reading a complete upload's
//! bytes.

use super::checksum::Hasher;
use super::error::{EngineError, EngineResult};
use super::{checksum_matches, finalize_after_commit, hash_file, run_blocking, Caller, Engine};
use crate::meta::{Completed, UploadRecord};
use crate::storage::{PartKey, PartReader, PartStore, StorageError};
use bytes::Bytes;
use chrono::{SubsecRound, Utc};
use futures_util::Stream;
use std::sync::Arc;
use uuid::Uuid;

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

impl Engine {
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
        // The part file must still hold every committed byte (and nothing
        // past them), as for an append.
        let (check_storage, check_key) = (storage.clone(), key.clone());
        let checked =
            run_blocking(move || Ok(check_storage.open_at(&check_key, len).map(drop)?)).await;
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
        self.metrics.finished.inc();
        upload.complete = true;
        upload.checksum = completed.checksum;
        upload.completed_at = Some(completed.at);
        Ok(upload)
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
    pub(super) async fn open_completed(
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
            let verify = |reader: &dyn PartReader| {
                let found = reader.size();
                if found != len {
                    return Err(EngineError::Lost(format!(
                        "upload file holds {found} bytes of {len}"
                    )));
                }
                if let Some(algo) = algo {
                    let hasher = hash_file(reader, Hasher::new(algo), len)?;
                    if hasher.hex() != checksum {
                        return Err(EngineError::Lost(
                            "upload file does not match its checksum".into(),
                        ));
                    }
                }
                Ok(())
            };
            // Verified before it is finalized where its bytes can be read
            // back; in object storage, where parts cannot, after.
            match storage.open_part_reader(&job_key) {
                Ok(reader) => {
                    verify(reader.as_ref())?;
                    storage.finalize(&job_key)?;
                }
                Err(StorageError::Unreadable) => {
                    storage.finalize(&job_key)?;
                    verify(storage.open_done(&job_key)?.as_ref())?;
                }
                Err(err) => return Err(err.into()),
            }
            log::warn!(
                "upload {}: completed file finalized after a crash",
                job_key.id
            );
            Ok(())
        })
        .await?;
        open(self.storage.clone(), key)
            .await?
            .ok_or_else(|| EngineError::Damaged("completed file missing".into()))
    }
}
