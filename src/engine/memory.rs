//! In-memory implementations of the metadata and storage traits, for the
//! engine's unit tests: the same contracts as the diesel store and the
//! local disk (leases fence every change, an upload's bytes are a part
//! file until renamed to a completed one), without a database or a disk.

use crate::meta::{
    AttachmentKey, AttachmentRecord, Attachments, ChunkCommit, Completed, LeaseOutcome, ListQuery,
    MetaError, MetaResult, MetaStore, OwnerLimits, OwnerUsage, Sees, TokenRecord, UploadRecord,
    Viewer,
};
use crate::storage::{
    PartKey, PartReader, PartStore, PartWriter, StorageError, StorageResult, StoredFile,
};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use uuid::Uuid;

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A row and the lease on it.
struct Row {
    upload: UploadRecord,
    lease: Option<(String, DateTime<Utc>)>,
    /// What the lease holder last reported of its chunk in flight.
    received: Option<u64>,
}

#[derive(Default)]
pub struct MemoryMeta {
    rows: Mutex<HashMap<Uuid, Row>>,
    tokens: Mutex<Vec<TokenRecord>>,
    attachments: Mutex<Vec<Attached>>,
}

/// An attachment: its key, its upload, its media type, when it was made.
type Attached = (AttachmentKey, Uuid, String, DateTime<Utc>);

impl MemoryMeta {
    /// Changes the row of `id` with `change` if `token` holds its lease
    /// and `when` allows; whether it did.
    fn change_held(
        &self,
        id: Uuid,
        token: &str,
        when: impl FnOnce(&UploadRecord) -> bool,
        change: impl FnOnce(&mut Row),
    ) -> bool {
        let mut rows = locked(&self.rows);
        match rows.get_mut(&id) {
            Some(row)
                if row.lease.as_ref().is_some_and(|(t, _)| t == token) && when(&row.upload) =>
            {
                change(row);
                true
            }
            _ => false,
        }
    }

    /// A row as it is, lease and all (tests reach past the engine here).
    pub fn set(&self, upload: UploadRecord) {
        locked(&self.rows).insert(
            upload.id,
            Row {
                upload,
                lease: None,
                received: None,
            },
        );
    }
}

impl MemoryMeta {
    /// Removes the attachments `chosen` picks, and their uploads.
    fn remove_chosen(&self, chosen: impl Fn(&AttachmentKey, &DateTime<Utc>) -> bool) -> Vec<Uuid> {
        let mut attachments = locked(&self.attachments);
        let mut rows = locked(&self.rows);
        let mut removed = Vec::new();
        attachments.retain(|(key, id, _, at)| {
            let gone = chosen(key, at);
            if gone {
                rows.remove(id);
                removed.push(*id);
            }
            !gone
        });
        removed
    }
}

impl Attachments for MemoryMeta {
    fn insert_attachment(
        &self,
        upload: &UploadRecord,
        limits: &OwnerLimits,
        key: &AttachmentKey,
        media_type: &str,
    ) -> MetaResult<Option<Uuid>> {
        self.insert_upload(upload, limits)?;
        self.attach_upload(key, upload.id, media_type, upload.created_at)
    }

    fn attach_upload(
        &self,
        key: &AttachmentKey,
        upload_id: Uuid,
        media_type: &str,
        at: DateTime<Utc>,
    ) -> MetaResult<Option<Uuid>> {
        let replaced = self
            .remove_chosen(|k, _| k == key)
            .pop()
            .filter(|id| *id != upload_id);
        let entry = (key.clone(), upload_id, media_type.to_owned(), at);
        locked(&self.attachments).push(entry);
        Ok(replaced)
    }

    fn list_attachments(&self, holder: &str, bundle: &str) -> MetaResult<Vec<AttachmentRecord>> {
        let rows = locked(&self.rows);
        let mut found: Vec<AttachmentRecord> = locked(&self.attachments)
            .iter()
            .filter(|(key, ..)| key.holder == holder && key.bundle == bundle)
            .filter_map(|(key, id, media_type, at)| {
                Some(AttachmentRecord {
                    key: key.clone(),
                    upload_id: *id,
                    media_type: media_type.clone(),
                    created_at: *at,
                    size: rows.get(id)?.upload.offset,
                })
            })
            .collect();
        found.sort_by(|a, b| a.key.name.cmp(&b.key.name));
        Ok(found)
    }

    fn get_attachment(&self, key: &AttachmentKey) -> MetaResult<Option<AttachmentRecord>> {
        let listed = self.list_attachments(&key.holder, &key.bundle)?;
        Ok(listed.into_iter().find(|a| a.key == *key))
    }

    fn remove_attachments(
        &self,
        holder: &str,
        bundle: &str,
        name: Option<&str>,
    ) -> MetaResult<Vec<Uuid>> {
        Ok(self.remove_chosen(|key, _| {
            key.holder == holder && key.bundle == bundle && name.is_none_or(|n| key.name == n)
        }))
    }

    fn remove_attachments_before(&self, cutoff: DateTime<Utc>) -> MetaResult<Vec<Uuid>> {
        Ok(self.remove_chosen(|_, at| *at < cutoff))
    }
}

fn in_progress(upload: &UploadRecord) -> bool {
    !upload.complete && !upload.failed
}

impl MetaStore for MemoryMeta {
    fn insert_upload(&self, upload: &UploadRecord, limits: &OwnerLimits) -> MetaResult<()> {
        let usage = self.owner_usage(upload.owner.as_deref())?;
        let wanted = upload.total.unwrap_or(upload.offset);
        limits
            .check(&usage, wanted, true)
            .map_err(MetaError::OverLimit)?;
        self.set(upload.clone());
        Ok(())
    }

    fn owner_usage(&self, owner: Option<&str>) -> MetaResult<OwnerUsage> {
        let mut usage = OwnerUsage {
            owner: owner.map(str::to_owned),
            ..OwnerUsage::default()
        };
        for row in locked(&self.rows).values() {
            let upload = &row.upload;
            if upload.owner.as_deref() == owner {
                usage.bytes += upload.total.unwrap_or(upload.offset);
                usage.uploads += 1;
                usage.uploads_in_progress += u64::from(!upload.complete && !upload.failed);
            }
        }
        Ok(usage)
    }

    fn usage_by_owner(&self) -> MetaResult<Vec<OwnerUsage>> {
        let mut owners: Vec<Option<String>> = locked(&self.rows)
            .values()
            .map(|row| row.upload.owner.clone())
            .collect();
        owners.sort();
        owners.dedup();
        owners
            .iter()
            .map(|owner| self.owner_usage(owner.as_deref()))
            .collect()
    }

    fn get_upload(&self, id: Uuid) -> MetaResult<Option<UploadRecord>> {
        Ok(locked(&self.rows).get(&id).map(|row| {
            let leased = row
                .lease
                .as_ref()
                .is_some_and(|(_, ends)| *ends > Utc::now());
            UploadRecord {
                received: row.received.filter(|_| leased),
                ..row.upload.clone()
            }
        }))
    }

    fn count_in_progress(&self) -> MetaResult<u64> {
        let rows = locked(&self.rows);
        let in_progress = rows
            .values()
            .filter(|row| !row.upload.complete && !row.upload.failed);
        Ok(in_progress.count() as u64)
    }

    fn list_uploads(&self, query: &ListQuery) -> MetaResult<Vec<UploadRecord>> {
        let mut uploads: Vec<UploadRecord> = locked(&self.rows)
            .values()
            .map(|row| row.upload.clone())
            .filter(|u| query.owner.is_none() || u.owner == query.owner)
            .filter(|u| query.complete.is_none_or(|complete| u.complete == complete))
            .collect();
        uploads.sort_by_key(|u| std::cmp::Reverse((u.created_at, u.id)));
        uploads.truncate(query.limit as usize);
        Ok(uploads)
    }

    fn expired_uploads(&self, now: DateTime<Utc>) -> MetaResult<Vec<UploadRecord>> {
        Ok(locked(&self.rows)
            .values()
            .filter(|row| !row.upload.complete && row.upload.expires_at <= now)
            .map(|row| row.upload.clone())
            .collect())
    }

    fn known_uploads(&self, ids: &[Uuid]) -> MetaResult<Vec<Uuid>> {
        let rows = locked(&self.rows);
        Ok(ids
            .iter()
            .filter(|id| rows.contains_key(id))
            .copied()
            .collect())
    }

    fn try_lease(
        &self,
        id: Uuid,
        viewer: &Viewer,
        token: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> MetaResult<LeaseOutcome> {
        let token_valid = viewer
            .token_hash
            .as_ref()
            .is_none_or(|hash| locked(&self.tokens).iter().any(|t| &t.token_hash == hash));
        let mut rows = locked(&self.rows);
        let Some(row) = rows.get_mut(&id) else {
            return Ok(LeaseOutcome::Missing);
        };
        let visible = match &viewer.sees {
            Sees::Everyone => true,
            Sees::Owner(owner) => row.upload.owner.is_none() || row.upload.owner == *owner,
        };
        if !visible || !token_valid {
            return Ok(LeaseOutcome::Missing);
        }
        if row.lease.as_ref().is_some_and(|(_, ends)| *ends >= now) {
            return Ok(LeaseOutcome::Busy);
        }
        row.lease = Some((token.to_owned(), until));
        row.received = None;
        Ok(LeaseOutcome::Acquired(Box::new(row.upload.clone())))
    }

    fn renew_lease(
        &self,
        id: Uuid,
        token: &str,
        until: DateTime<Utc>,
        received: Option<u64>,
    ) -> MetaResult<bool> {
        Ok(self.change_held(
            id,
            token,
            |_| true,
            |row| {
                row.lease = Some((token.to_owned(), until));
                row.received = received;
            },
        ))
    }

    fn release_lease(&self, id: Uuid, token: &str) -> MetaResult<()> {
        self.change_held(id, token, |_| true, |row| row.lease = None);
        Ok(())
    }

    fn commit_chunk(&self, id: Uuid, token: &str, commit: &ChunkCommit) -> MetaResult<bool> {
        let when = |u: &UploadRecord| in_progress(u) && u.offset == commit.from;
        Ok(self.change_held(id, token, when, |row| {
            let upload = &mut row.upload;
            upload.offset = commit.to;
            upload.hash_state = commit.hash_state.clone();
            upload.total = commit.total;
            if let Some(done) = &commit.completed {
                upload.complete = true;
                upload.checksum = done.checksum.clone();
                upload.completed_at = Some(done.at);
            }
            row.lease = None;
        }))
    }

    fn mark_complete(&self, id: Uuid, token: &str, completed: &Completed) -> MetaResult<bool> {
        Ok(self.change_held(id, token, in_progress, |row| {
            row.upload.complete = true;
            row.upload.checksum = completed.checksum.clone();
            row.upload.completed_at = Some(completed.at);
            row.lease = None;
        }))
    }

    fn mark_failed(&self, id: Uuid, token: &str) -> MetaResult<bool> {
        Ok(self.change_held(id, token, |_| true, |row| row.upload.failed = true))
    }

    fn rename_upload(&self, id: Uuid, token: &str, filename: &str) -> MetaResult<bool> {
        let renamed = |row: &mut Row| row.upload.filename = filename.to_owned();
        Ok(self.change_held(id, token, |_| true, renamed))
    }

    fn delete_upload(&self, id: Uuid, token: &str) -> MetaResult<bool> {
        let held = self.change_held(id, token, |_| true, |_| {});
        if held {
            locked(&self.rows).remove(&id);
        }
        Ok(held)
    }

    fn insert_token(&self, token: &TokenRecord) -> MetaResult<()> {
        locked(&self.tokens).push(token.clone());
        Ok(())
    }

    fn token_owner(&self, token_hash: &str) -> MetaResult<Option<String>> {
        Ok(locked(&self.tokens)
            .iter()
            .find(|t| t.token_hash == token_hash)
            .map(|t| t.owner.clone()))
    }

    fn list_tokens(&self) -> MetaResult<Vec<TokenRecord>> {
        Ok(locked(&self.tokens).clone())
    }

    fn delete_token(&self, id: &str) -> MetaResult<bool> {
        let mut tokens = locked(&self.tokens);
        let before = tokens.len();
        tokens.retain(|t| t.id != id);
        Ok(tokens.len() != before)
    }

    fn ping(&self) -> MetaResult<()> {
        Ok(())
    }
}

/// One file's bytes and when they were last written.
struct File {
    bytes: Vec<u8>,
    modified: SystemTime,
}

type Shared = Arc<Mutex<File>>;

/// Which of an upload's two files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    Part,
    Done,
}

#[derive(Default)]
pub struct MemoryStorage {
    files: Mutex<HashMap<(Uuid, Kind), (String, Shared)>>,
}

impl MemoryStorage {
    /// The bytes of a file, if it exists.
    pub fn bytes(&self, id: Uuid, kind: Kind) -> Option<Vec<u8>> {
        let files = locked(&self.files);
        files.get(&(id, kind)).map(|(_, f)| locked(f).bytes.clone())
    }

    /// Moves a file to the other name, as a crash or an older server
    /// could leave it.
    pub fn rename(&self, id: Uuid, from: Kind, to: Kind) {
        let mut files = locked(&self.files);
        let file = files.remove(&(id, from)).expect("the file to rename");
        files.insert((id, to), file);
    }

    /// Sets a file's bytes, or its time of last write.
    pub fn tamper(&self, id: Uuid, kind: Kind, bytes: Option<Vec<u8>>, modified: SystemTime) {
        let files = locked(&self.files);
        let mut file = locked(&files.get(&(id, kind)).expect("the file").1);
        if let Some(bytes) = bytes {
            file.bytes = bytes;
        }
        file.modified = modified;
    }

    fn get(&self, key: &PartKey, kind: Kind) -> StorageResult<Shared> {
        let files = locked(&self.files);
        files
            .get(&(key.id, kind))
            .map(|(_, f)| f.clone())
            .ok_or(StorageError::Missing)
    }
}

struct Handle(Shared);

impl PartWriter for Handle {
    fn write_at(&self, bufs: &[&[u8]], pos: u64) -> StorageResult<()> {
        let mut file = locked(&self.0);
        let mut at = pos as usize;
        for buf in bufs {
            if file.bytes.len() < at + buf.len() {
                file.bytes.resize(at + buf.len(), 0);
            }
            file.bytes[at..at + buf.len()].copy_from_slice(buf);
            at += buf.len();
        }
        file.modified = SystemTime::now();
        Ok(())
    }

    fn cached(&self) -> bool {
        true
    }

    fn sync(&self) -> StorageResult<()> {
        Ok(())
    }

    fn truncate(&self, len: u64) -> StorageResult<()> {
        locked(&self.0).bytes.truncate(len as usize);
        Ok(())
    }
}

impl PartReader for Handle {
    fn size(&self) -> u64 {
        locked(&self.0).bytes.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> StorageResult<usize> {
        let file = locked(&self.0);
        let from = (pos as usize).min(file.bytes.len());
        let n = buf.len().min(file.bytes.len() - from);
        buf[..n].copy_from_slice(&file.bytes[from..from + n]);
        Ok(n)
    }
}

impl PartStore for MemoryStorage {
    fn create(&self, key: &PartKey) -> StorageResult<Box<dyn PartWriter>> {
        let mut files = locked(&self.files);
        if files.contains_key(&(key.id, Kind::Part)) {
            return Err(StorageError::Io(std::io::ErrorKind::AlreadyExists.into()));
        }
        let file = Arc::new(Mutex::new(File {
            bytes: Vec::new(),
            modified: SystemTime::now(),
        }));
        files.insert((key.id, Kind::Part), (key.dir.clone(), file.clone()));
        Ok(Box::new(Handle(file)))
    }

    fn open_at(&self, key: &PartKey, committed: u64) -> StorageResult<Box<dyn PartWriter>> {
        self.reclaim(key);
        let file = self.get(key, Kind::Part)?;
        let found = locked(&file).bytes.len() as u64;
        if found < committed {
            return Err(StorageError::Damaged {
                expected: committed,
                found,
            });
        }
        locked(&file).bytes.truncate(committed as usize);
        Ok(Box::new(Handle(file)))
    }

    fn open_part_reader(&self, key: &PartKey) -> StorageResult<Box<dyn PartReader>> {
        self.reclaim(key);
        Ok(Box::new(Handle(self.get(key, Kind::Part)?)))
    }

    fn finalize(&self, key: &PartKey) -> StorageResult<()> {
        let mut files = locked(&self.files);
        match files.remove(&(key.id, Kind::Part)) {
            Some(file) => {
                files.insert((key.id, Kind::Done), file);
                Ok(())
            }
            None if files.contains_key(&(key.id, Kind::Done)) => Ok(()),
            None => Err(StorageError::Missing),
        }
    }

    fn open_done(&self, key: &PartKey) -> StorageResult<Box<dyn PartReader>> {
        Ok(Box::new(Handle(self.get(key, Kind::Done)?)))
    }

    fn remove(&self, key: &PartKey) -> StorageResult<()> {
        let mut files = locked(&self.files);
        files.remove(&(key.id, Kind::Part));
        files.remove(&(key.id, Kind::Done));
        Ok(())
    }

    fn visit_files(&self, visit: &mut dyn FnMut(StoredFile)) -> StorageResult<()> {
        let found: Vec<StoredFile> = locked(&self.files)
            .iter()
            .map(|((id, _), (dir, file))| StoredFile {
                key: PartKey {
                    dir: dir.clone(),
                    id: *id,
                    total: None,
                },
                modified: locked(file).modified,
            })
            .collect();
        found.into_iter().for_each(visit);
        Ok(())
    }

    fn check(&self) -> StorageResult<()> {
        Ok(())
    }
}

impl MemoryStorage {
    /// As the local disk does: a completed file where an upload in
    /// progress expects its part file is taken back.
    fn reclaim(&self, key: &PartKey) {
        let mut files = locked(&self.files);
        if !files.contains_key(&(key.id, Kind::Part)) {
            if let Some(file) = files.remove(&(key.id, Kind::Done)) {
                files.insert((key.id, Kind::Part), file);
            }
        }
    }
}
