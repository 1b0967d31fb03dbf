//! New uploads: a first chunk staged, then recorded; a whole upload
//! recorded complete at once; tus concatenation.

use super::checksum::{HashFeed, Hasher};
use super::error::{EngineError, EngineResult};
use super::write::{pump, Rollback, WriteGuard};
use super::{
    checksum_matches, expand_path_template, run_blocking, BodyLength, BodyRules, Caller,
    ChecksumAlgo, Completion, Engine, Hashing, NewUpload, PARTIAL, UNHASHED,
};
use crate::meta::{MetaResult, MetaStore, OwnerLimits, UploadRecord};
use crate::storage::{PartKey, PartWriter, StorageError};
use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::Stream;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// A new upload's bytes, received but not yet synced nor recorded, and the
/// feed of their hash.
pub struct Staged {
    file: StagedFile,
    feed: HashFeed,
    /// When its request began to be received.
    began: Instant,
}

impl Staged {
    /// How many bytes were received.
    pub fn received(&self) -> u64 {
        self.file.len
    }
}

/// Inserts a new upload's row, within its owner's limits.
fn insert_upload(meta: &dyn MetaStore, row: &UploadRecord, limits: &OwnerLimits) -> MetaResult<()> {
    meta.insert_upload(row, limits)
}

/// A new upload's part file.
struct StagedFile {
    id: Uuid,
    key: PartKey,
    created_at: DateTime<Utc>,
    len: u64,
    guard: Arc<WriteGuard>,
}

/// The most parts one tus final upload may join: each is a file opened
/// while the request runs.
const MAX_CONCAT_PARTS: usize = 256;

impl Engine {
    /// Refuses early what the insertion of a new upload (`new_upload`) or
    /// more bytes of one would pass of its owner's limits (`wanted`: the
    /// bytes asked for beyond what is counted); the insertion checks again,
    /// as one step with it, against concurrent creations.
    pub async fn check_owner_limits(
        &self,
        caller: &Caller,
        wanted: u64,
        new_upload: bool,
    ) -> EngineResult<()> {
        if new_upload {
            Self::check_grant(caller, Some(wanted), None)?;
        }
        let limits = self.settings.owner_limits;
        if limits.is_unlimited() {
            return Ok(());
        }
        let owner = caller.owner().map(str::to_owned);
        let usage = self
            .read_meta(move |meta| meta.owner_usage(owner.as_deref()))
            .await?;
        limits
            .check(&usage, wanted, new_upload)
            .map_err(EngineError::OverLimit)
    }

    /// What an application's token allows its bearer to create: an upload
    /// of `total` bytes (when known) named `filename` (when known).
    pub(super) fn check_grant(
        caller: &Caller,
        total: Option<u64>,
        filename: Option<&str>,
    ) -> EngineResult<()> {
        let Caller::Granted { grant, .. } = caller else {
            return Ok(());
        };
        if grant.upload.is_some() {
            return Err(EngineError::Forbidden("the token is for one upload only"));
        }
        if let Some(total) = total {
            grant.check_total(total)?;
        }
        match filename {
            Some(name) => grant.check_filename(name),
            None => Ok(()),
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
        let began = Instant::now();
        let total = match rules.length {
            BodyLength::Exact(len) => Some(len),
            _ => None,
        };
        let (id, key, created_at, writer, guard) = self.new_part(total).await?;
        let feed = HashFeed::open(self.whole_hasher(hashing));
        let pumped = pump(writer, guard.clone(), 0, feed, self.intake(rules), body).await?;
        self.metrics.stage_took("receive", began);
        Ok(Staged {
            began,
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
        total: Option<u64>,
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
        let key = PartKey { dir, id, total };
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
            received: None,
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
        mut new: NewUpload,
        completion: Completion,
    ) -> EngineResult<UploadRecord> {
        let Staged { file, feed, began } = staged;
        let len = file.len;
        let total = new.total.unwrap_or(len);
        self.admit(caller, &mut new, Some(total)).await?;
        let record = if completion != Completion::Request && new.total == Some(len) {
            let hasher = feed.finish().await?;
            self.record_complete(file, hasher, caller, new, None)
                .await?
        } else {
            let (saved, feed) = self.hash_to_save(feed).await?;
            let record = self.new_record(&file, caller, new, &saved);
            let (meta, guard, row) = (self.meta.clone(), file.guard, record.clone());
            let (metrics, limits) = (self.metrics.clone(), self.settings.owner_limits);
            run_blocking(move || {
                metrics.timed("sync", || guard.sync())?;
                metrics.timed("commit", || meta.insert_upload(&row, &limits))?;
                guard.mark_committed();
                Ok(())
            })
            .await?;
            self.metrics.created.inc();
            self.feeds.park(record.id, record.offset, feed);
            record
        };
        self.metrics.bytes_received.inc_by(len);
        self.metrics.stage_took("total", began);
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
        self.check_total(staged.received())?;
        let (record, ()) = self
            .record_staged(staged, caller, filename, Some(checksum), insert_upload)
            .await?;
        Ok(record)
    }

    /// Records all the bytes of `staged` as a new complete upload named
    /// `filename`: admitted, its checksum verified (when given), its row
    /// inserted by `insert`, which gives what it gave.
    pub(super) async fn record_staged<T, F>(
        &self,
        staged: Staged,
        caller: &Caller,
        filename: String,
        checksum: Option<&str>,
        insert: F,
    ) -> EngineResult<(UploadRecord, T)>
    where
        F: FnOnce(&dyn MetaStore, &UploadRecord, &OwnerLimits) -> MetaResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let Staged { file, feed, .. } = staged;
        let len = file.len;
        let mut new = NewUpload {
            filename,
            total: Some(len),
            ..NewUpload::default()
        };
        self.admit(caller, &mut new, Some(len)).await?;
        let hasher = feed.finish().await?;
        let recorded = self
            .record_complete_with(file, hasher, caller, new, checksum, insert)
            .await?;
        self.metrics.bytes_received.inc_by(len);
        Ok(recorded)
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
        let (record, ()) = self
            .record_complete_with(staged, hasher, caller, new, checksum, insert_upload)
            .await?;
        Ok(record)
    }

    /// `record_complete`, with the row inserted by `insert` (which may
    /// write more in its transaction), and what `insert` gave.
    async fn record_complete_with<T, F>(
        &self,
        staged: StagedFile,
        hasher: Hasher,
        caller: &Caller,
        new: NewUpload,
        checksum: Option<&str>,
        insert: F,
    ) -> EngineResult<(UploadRecord, T)>
    where
        F: FnOnce(&dyn MetaStore, &UploadRecord, &OwnerLimits) -> MetaResult<T> + Send + 'static,
        T: Send + 'static,
    {
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
        let (metrics, limits) = (self.metrics.clone(), self.settings.owner_limits);
        let given = run_blocking(move || {
            metrics.timed("sync", || guard.sync())?;
            storage.finalize(&key)?;
            let inserted = metrics.timed("commit", || insert(meta.as_ref(), &row, &limits));
            if inserted.is_err() {
                // The completed file has no row to show it: it goes, as the
                // part file would (a leftover is an orphan for the sweep).
                let _ = storage.remove(&key);
            }
            let given = inserted?;
            guard.mark_committed();
            Ok(given)
        })
        .await?;
        self.metrics.created.inc();
        self.metrics.finished.inc();
        Ok((record, given))
    }

    /// Joins completed partial uploads, in order, into a new completed
    /// upload (tus concatenation). The bytes are copied through one buffer
    /// and hashed on the way, so memory stays flat.
    pub async fn concat(
        &self,
        caller: &Caller,
        parts: &[Uuid],
        hashing: Hashing,
        mut new: NewUpload,
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
        self.admit(caller, &mut new, Some(total)).await?;
        let mut readers = Vec::with_capacity(sources.len());
        for part in &sources {
            readers.push((self.open_completed(caller, part).await?, part.offset));
        }
        let new = NewUpload {
            total: Some(total),
            ..new
        };
        let (id, key, created_at, writer, guard) = self.new_part(Some(total)).await?;
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
}
