//! Removing uploads: aborted by their client, expired, or files that no row
//! knows.

use super::error::{EngineError, EngineResult};
use super::lock::{Leased, UploadLock};
use super::{run_blocking, Caller, Engine};
use crate::meta::{UploadRecord, Viewer};
use crate::storage::PartKey;
use chrono::Utc;
use uuid::Uuid;

/// How many read timeouts a file no row knows is left alone after it was
/// last written: a creation under way writes its body at least every few
/// (its pipeline holds a couple of segments, which fill at the least
/// progress allowed within a read timeout each).
const ORPHAN_GRACE_TIMEOUTS: u32 = 4;

/// Files looked up in the database together by the orphan sweep.
const ORPHAN_BATCH: usize = 256;

impl Engine {
    /// Removes an upload, row and bytes.
    pub async fn abort(&self, caller: &Caller, id: Uuid) -> EngineResult<()> {
        let (lock, upload) = self.lock(caller, id).await?;
        self.remove_locked(lock, &upload).await?;
        self.metrics.terminated.inc();
        Ok(())
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
            self.metrics.expired.inc();
            removed.push(upload);
        }
        Ok(removed)
    }
}
