//! Part files on a local disk.

use super::{PartKey, PartReader, PartStore, PartWriter, StorageError, StorageResult};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub struct LocalDisk {
    root: PathBuf,
    file_mode: u32,
    incomplete_ext: String,
    complete_ext: String,
    /// Without it, nothing is fsynced: faster, but what was acknowledged can
    /// be lost in a power failure (not in a crash of the process).
    sync: bool,
}

impl LocalDisk {
    pub fn new(
        root: PathBuf,
        file_mode: u32,
        incomplete_ext: &str,
        complete_ext: &str,
        sync: bool,
    ) -> Self {
        LocalDisk {
            root,
            file_mode,
            incomplete_ext: incomplete_ext.to_owned(),
            complete_ext: complete_ext.to_owned(),
            sync,
        }
    }

    fn file(&self, file: File) -> LocalFile {
        LocalFile {
            file,
            sync: self.sync,
        }
    }

    /// fsync of a directory, so that a created or renamed entry survives a
    /// crash.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.sync {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn dir(&self, key: &PartKey) -> PathBuf {
        self.root.join(&key.dir)
    }

    fn path(&self, key: &PartKey, ext: &str) -> PathBuf {
        self.dir(key).join(format!("{}{}", key.id, ext))
    }

    fn part_path(&self, key: &PartKey) -> PathBuf {
        self.path(key, &self.incomplete_ext)
    }

    fn done_path(&self, key: &PartKey) -> PathBuf {
        self.path(key, &self.complete_ext)
    }
}

/// Starts writing these bytes to the disk now, so that the fdatasync
/// before the offset is acknowledged waits for the last ones only, instead
/// of the disk flush of a whole chunk following its hashing.
fn start_write_back(file: &File, pos: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(pos), Ok(len)) = (i64::try_from(pos), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid open descriptor; the call only schedules write-back
    // and reads no memory of ours. A failure is harmless: fdatasync follows.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), pos, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

struct LocalFile {
    file: File,
    sync: bool,
}

impl PartWriter for LocalFile {
    fn write_at(&self, buf: &[u8], pos: u64) -> StorageResult<()> {
        self.file.write_all_at(buf, pos)?;
        if self.sync {
            start_write_back(&self.file, pos, buf.len());
        }
        Ok(())
    }

    fn sync(&self) -> StorageResult<()> {
        if self.sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn truncate(&self, len: u64) -> StorageResult<()> {
        self.file.set_len(len)?;
        self.sync()
    }
}

impl PartReader for LocalFile {
    fn size(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> StorageResult<usize> {
        Ok(self.file.read_at(buf, pos)?)
    }
}

impl PartStore for LocalDisk {
    fn create(&self, key: &PartKey) -> StorageResult<Box<dyn PartWriter>> {
        let dir = self.dir(key);
        fs::create_dir_all(&dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(self.file_mode)
            .open(self.part_path(key))?;
        self.sync_dir(&dir)?;
        Ok(Box::new(self.file(file)))
    }

    fn open_at(&self, key: &PartKey, committed: u64) -> StorageResult<Box<dyn PartWriter>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.part_path(key))?;
        let found = file.metadata()?.len();
        if found < committed {
            return Err(StorageError::Damaged {
                expected: committed,
                found,
            });
        }
        let file = self.file(file);
        if found > committed {
            file.truncate(committed)?;
        }
        Ok(Box::new(file))
    }

    fn open_part_reader(&self, key: &PartKey) -> StorageResult<Box<dyn PartReader>> {
        Ok(Box::new(self.file(File::open(self.part_path(key))?)))
    }

    fn finalize(&self, key: &PartKey) -> StorageResult<()> {
        let done = self.done_path(key);
        match fs::rename(self.part_path(key), &done) {
            Ok(()) => {}
            // A crash after the rename but before the row was updated leaves
            // the completed file already in place.
            Err(err) if err.kind() == io::ErrorKind::NotFound && done.exists() => {}
            Err(err) => return Err(err.into()),
        }
        self.sync_dir(&self.dir(key))?;
        Ok(())
    }

    fn open_done(&self, key: &PartKey) -> StorageResult<Box<dyn PartReader>> {
        Ok(Box::new(self.file(File::open(self.done_path(key))?)))
    }

    fn remove(&self, key: &PartKey) -> StorageResult<()> {
        for path in [self.part_path(key), self.done_path(key)] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    fn check(&self) -> StorageResult<()> {
        fs::create_dir_all(&self.root)?;
        let meta = fs::metadata(&self.root)?;
        if meta.permissions().readonly() {
            return Err(StorageError::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "storage root is read-only",
            )));
        }
        Ok(())
    }
}
