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
}

impl LocalDisk {
    pub fn new(root: PathBuf, file_mode: u32, incomplete_ext: &str, complete_ext: &str) -> Self {
        LocalDisk {
            root,
            file_mode,
            incomplete_ext: incomplete_ext.to_owned(),
            complete_ext: complete_ext.to_owned(),
        }
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

/// fsync of a directory, so that a created or renamed entry survives a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

struct LocalFile(File);

impl PartWriter for LocalFile {
    fn write_at(&self, buf: &[u8], pos: u64) -> StorageResult<()> {
        Ok(self.0.write_all_at(buf, pos)?)
    }

    fn sync(&self) -> StorageResult<()> {
        Ok(self.0.sync_data()?)
    }

    fn truncate(&self, len: u64) -> StorageResult<()> {
        self.0.set_len(len)?;
        Ok(self.0.sync_data()?)
    }
}

impl PartReader for LocalFile {
    fn size(&self) -> u64 {
        self.0.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> StorageResult<usize> {
        Ok(self.0.read_at(buf, pos)?)
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
        sync_dir(&dir)?;
        Ok(Box::new(LocalFile(file)))
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
        let file = LocalFile(file);
        if found > committed {
            file.truncate(committed)?;
        }
        Ok(Box::new(file))
    }

    fn open_part_reader(&self, key: &PartKey) -> StorageResult<Box<dyn PartReader>> {
        Ok(Box::new(LocalFile(File::open(self.part_path(key))?)))
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
        sync_dir(&self.dir(key))?;
        Ok(())
    }

    fn open_done(&self, key: &PartKey) -> StorageResult<Box<dyn PartReader>> {
        Ok(Box::new(LocalFile(File::open(self.done_path(key))?)))
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
