//! Part files: where the bytes of an upload live while it is in progress
//! (`{id}.part`) and once it is complete (`{id}.done`).
//!
//! The trait is synchronous on purpose: every call is file-system work that the
//! engine runs on the blocking thread pool (but for writes that only copy
//! into the page cache, see `PartWriter::cached`).

mod local;
pub mod s3;

pub use local::LocalDisk;
pub use s3::S3Store;

use std::io;
use uuid::Uuid;

/// Where one upload's bytes live: a directory relative to the storage root
/// (expanded from the path template when the upload was created) and the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartKey {
    pub dir: String,
    pub id: Uuid,
    /// The upload's length, when known: object storage sizes its parts by it.
    pub total: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the disk is full")]
    NoSpace,
    #[error("part file missing")]
    Missing,
    /// The part file is shorter than the committed offset: bytes that were
    /// acknowledged are gone, so the upload cannot continue.
    #[error("part file holds {found} bytes but {expected} were committed")]
    Damaged { expected: u64, found: u64 },
    #[error("storage I/O error: {0}")]
    Io(io::Error),
    /// Object storage failed or refused a request.
    #[error("object storage: {0}")]
    Remote(String),
    /// Object storage cannot give back the bytes of an upload in progress
    /// (a multipart upload's parts are not readable before it completes).
    #[error("the bytes of an upload in progress cannot be read back from object storage")]
    Unreadable,
}

impl From<io::Error> for StorageError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            // ENOSPC and EDQUOT both mean "no room left for these bytes".
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StorageError::NoSpace,
            io::ErrorKind::NotFound => StorageError::Missing,
            _ => StorageError::Io(err),
        }
    }
}

/// Block alignment for direct writes: a `PartWriter` may send the whole
/// `ALIGN`-sized blocks of a large write straight to the disk when the
/// buffers' memory and their file positions agree modulo `ALIGN`, so writers
/// that care about speed lay out their buffers that way.
pub const ALIGN: usize = 4096;

pub type StorageResult<T> = Result<T, StorageError>;

/// A file of some upload, found by walking the storage.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub key: PartKey,
    /// When it was last written.
    pub modified: std::time::SystemTime,
}

/// An open part file being written.
pub trait PartWriter: Send + Sync {
    /// Writes all of `bufs`, one after the other, from byte `pos` (no
    /// shared cursor).
    fn write_at(&self, bufs: &[&[u8]], pos: u64) -> StorageResult<()>;
    /// Whether a write only copies into the page cache, waiting for no
    /// disk (no syncing, no direct I/O): quick enough to run on the
    /// request's own thread, where a hand-over to another would cost more.
    fn cached(&self) -> bool;
    /// Makes every byte written so far durable (fdatasync), and a new
    /// file's directory entry.
    fn sync(&self) -> StorageResult<()>;
    /// Cuts the file back to `len` bytes and syncs.
    fn truncate(&self, len: u64) -> StorageResult<()>;
    /// Told once the offset of the bytes synced is committed.
    fn committed(&self) {}
}

/// An open completed file being read.
pub trait PartReader: Send + Sync {
    fn size(&self) -> u64;
    /// Reads up to `buf.len()` bytes at `pos`; returns how many were read.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> StorageResult<usize>;
}

pub trait PartStore: Send + Sync {
    /// Creates a new, empty part file; fails if it exists. Its directory
    /// entry becomes durable with the writer's first `sync`.
    fn create(&self, key: &PartKey) -> StorageResult<Box<dyn PartWriter>>;
    /// Opens an existing part file to append at `committed`: bytes past it
    /// (left by a request that died before committing) are cut off. The
    /// upload is in progress, so a completed file found in place of its
    /// part file is taken back (a completion cut off before its row).
    fn open_at(&self, key: &PartKey, committed: u64) -> StorageResult<Box<dyn PartWriter>>;
    /// Opens a part file for reading, e.g. to re-hash it; a completed file
    /// found in its place is taken back, as with `open_at`.
    fn open_part_reader(&self, key: &PartKey) -> StorageResult<Box<dyn PartReader>>;
    /// Turns the part file into the completed file. Idempotent: a
    /// completed file that is already in place counts as success. Not
    /// durable by itself: a rename lost to a power failure leaves the part
    /// file, which the engine verifies and renames again when the complete
    /// upload is next read.
    fn finalize(&self, key: &PartKey) -> StorageResult<()>;
    /// Opens the completed file for reading.
    fn open_done(&self, key: &PartKey) -> StorageResult<Box<dyn PartReader>>;
    /// Removes whatever files the upload has; missing files are not an error.
    fn remove(&self, key: &PartKey) -> StorageResult<()>;
    /// Calls `visit` with every upload file in the storage, a part file or
    /// a completed one (an upload with both is visited twice).
    fn visit_files(&self, visit: &mut dyn FnMut(StoredFile)) -> StorageResult<()>;
    /// Checks that the storage takes a new file (for readiness checks).
    fn check(&self) -> StorageResult<()>;
    /// Whether `open_part_reader` can read an upload in progress back. Where
    /// it cannot, each commit saves a hash state of every byte committed.
    fn parts_readable(&self) -> bool {
        true
    }
}
