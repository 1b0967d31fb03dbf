//! Part files on a local disk. One concern, with its own tests of the
//! direct-write arithmetic (the reason for its length): writes split into
//! a buffered head, whole aligned blocks sent with `O_DIRECT`, and a
//! buffered tail.

use super::{
    PartKey, PartReader, PartStore, PartWriter, StorageError, StorageResult, StoredFile, ALIGN,
};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

    /// Wraps an open part file; when syncing, also opens it a second time
    /// for direct writes (see `LocalFile::direct`). A file system that
    /// refuses O_DIRECT (EINVAL) just gets buffered writes.
    fn file(&self, file: File, path: &Path) -> io::Result<LocalFile> {
        let direct = if self.sync {
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
            {
                Ok(direct) => Some(direct),
                Err(err) if err.raw_os_error() == Some(libc::EINVAL) => None,
                Err(err) => return Err(err),
            }
        } else {
            None
        };
        Ok(LocalFile {
            file,
            direct,
            sync: self.sync,
            unsynced_dir: Mutex::new(None),
        })
    }

    fn reader(&self, file: File) -> LocalFile {
        LocalFile {
            file,
            direct: None,
            sync: self.sync,
            unsynced_dir: Mutex::new(None),
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

    /// Takes back the bytes of an upload still in progress that were
    /// renamed to the completed file by a completion that never reached
    /// the database (servers before completion was made one step). The
    /// row is the truth: the upload is incomplete, so its bytes are a
    /// part file again, and the completion that comes next verifies them.
    fn reclaim(&self, key: &PartKey) -> io::Result<()> {
        let (part, done) = (self.part_path(key), self.done_path(key));
        if part.exists() || !done.exists() {
            return Ok(());
        }
        log::warn!(
            "upload {}: taking back a completed file of an upload in progress",
            key.id
        );
        match fs::rename(&done, &part) {
            Err(err) if err.kind() == io::ErrorKind::NotFound && part.exists() => {}
            renamed => renamed?,
        }
        self.sync_dir(&self.dir(key))
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

/// The smallest write that goes direct. Each direct write waits for the
/// disk and costs the virtual disk a notification; smaller ones are better
/// merged by the page cache's write-back.
const DIRECT_MIN: usize = 64 * 1024;

/// The whole aligned blocks of a write at `pos` of the bytes `bufs`: the
/// file position where they start, and the pieces of `bufs` that make them.
/// None when some piece's memory does not agree with its file position
/// modulo `ALIGN` (then the write goes through the page cache).
fn aligned_blocks<'b>(bufs: &[&'b [u8]], pos: u64) -> Option<(u64, Vec<&'b [u8]>)> {
    let align = ALIGN as u64;
    let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
    let start = pos.div_ceil(align) * align;
    let end = (pos + total) / align * align;
    if start >= end {
        return None;
    }
    let mut pieces = Vec::with_capacity(bufs.len());
    let mut at = pos;
    for buf in bufs {
        let (from, to) = (at.max(start), (at + buf.len() as u64).min(end));
        if from < to {
            let piece = &buf[(from - at) as usize..(to - at) as usize];
            let aligned = (piece.as_ptr() as usize).is_multiple_of(ALIGN)
                && piece.len().is_multiple_of(ALIGN);
            if !aligned {
                return None;
            }
            pieces.push(piece);
        }
        at += buf.len() as u64;
    }
    Some((start, pieces))
}

/// Calls `write` with the bytes of `bufs` that fall in the file range
/// `[from, to)`, where `bufs` start at file position `pos`.
fn for_range(
    bufs: &[&[u8]],
    pos: u64,
    (from, to): (u64, u64),
    mut write: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    let mut at = pos;
    for buf in bufs {
        let (lo, hi) = (at.max(from), (at + buf.len() as u64).min(to));
        if lo < hi {
            write(&buf[(lo - at) as usize..(hi - at) as usize], lo)?;
        }
        at += buf.len() as u64;
    }
    Ok(())
}

/// Writes all of `pieces` at `pos` with as few `pwritev` calls as it takes;
/// returns how many bytes went (fewer when the descriptor refuses direct
/// writes, EINVAL, or stops short).
fn write_vectored_direct(direct: &File, pieces: &[&[u8]], pos: u64) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut iov: Vec<libc::iovec> = pieces
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    let total: u64 = pieces.iter().map(|p| p.len() as u64).sum();
    let (mut done, mut first) = (0u64, 0usize);
    while done < total {
        let count = (iov.len() - first).min(libc::UIO_MAXIOV as usize) as libc::c_int;
        // SAFETY: every iovec points into a live slice of `pieces`, and the
        // descriptor is open.
        let wrote = unsafe {
            libc::pwritev(
                direct.as_raw_fd(),
                iov[first..].as_ptr(),
                count,
                (pos + done) as libc::off_t,
            )
        };
        if wrote < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EINVAL) => return Ok(done),
                _ => return Err(err),
            }
        }
        if wrote == 0 {
            return Ok(done);
        }
        done += wrote as u64;
        // Skip what went, and cut into the iovec it stopped in.
        let mut left = wrote as usize;
        while left > 0 && first < iov.len() {
            if left >= iov[first].iov_len {
                left -= iov[first].iov_len;
                first += 1;
            } else {
                // SAFETY: stays within the same slice.
                iov[first].iov_base = unsafe { iov[first].iov_base.cast::<u8>().add(left) }.cast();
                iov[first].iov_len -= left;
                left = 0;
            }
        }
        // A short direct write ends where the disk stopped taking whole
        // blocks; the rest goes buffered.
        if !done.is_multiple_of(ALIGN as u64) {
            return Ok(done);
        }
    }
    Ok(done)
}

struct LocalFile {
    file: File,
    /// The directory of a file just created, until its first sync makes
    /// its entry durable with its bytes: nothing about a new file needs to
    /// last before the first of its bytes is acknowledged.
    unsynced_dir: Mutex<Option<PathBuf>>,
    /// The same file opened with O_DIRECT, used when syncing: whole aligned
    /// blocks go from our buffer straight to the disk. That saves the copy
    /// into the page cache and its write-back, which cost as much CPU as the
    /// MD5, and lets the disk work while the next batch is hashed.
    direct: Option<File>,
    sync: bool,
}

impl LocalFile {
    fn write_buffered(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all_at(buf, pos)?;
        if self.sync {
            start_write_back(&self.file, pos, buf.len());
        }
        Ok(())
    }
}

impl PartWriter for LocalFile {
    fn write_at(&self, bufs: &[&[u8]], pos: u64) -> StorageResult<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let end = pos + total;
        let direct = self
            .direct
            .as_ref()
            .filter(|_| total >= DIRECT_MIN as u64)
            .and_then(|direct| Some((direct, aligned_blocks(bufs, pos)?)));
        let buffered = |range| for_range(bufs, pos, range, |b, at| self.write_buffered(b, at));
        let Some((direct, (start, pieces))) = direct else {
            return Ok(buffered((pos, end))?);
        };
        // The head before the first whole block, the blocks direct, then
        // whatever the direct write did not take and the tail, buffered.
        buffered((pos, start))?;
        let went = write_vectored_direct(direct, &pieces, start)?;
        buffered((start + went, end))?;
        Ok(())
    }

    fn cached(&self) -> bool {
        !self.sync
    }

    fn sync(&self) -> StorageResult<()> {
        if self.sync {
            self.file.sync_data()?;
            let dir = self
                .unsynced_dir
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(dir) = dir {
                File::open(dir)?.sync_all()?;
            }
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
        let path = self.part_path(key);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(self.file_mode)
            .open(&path)?;
        let mut file = self.file(file, &path)?;
        *file
            .unsynced_dir
            .get_mut()
            .unwrap_or_else(|e| e.into_inner()) = Some(dir);
        Ok(Box::new(file))
    }

    fn open_at(&self, key: &PartKey, committed: u64) -> StorageResult<Box<dyn PartWriter>> {
        self.reclaim(key)?;
        let path = self.part_path(key);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let found = file.metadata()?.len();
        if found < committed {
            return Err(StorageError::Damaged {
                expected: committed,
                found,
            });
        }
        let file = self.file(file, &path)?;
        if found > committed {
            file.truncate(committed)?;
        }
        Ok(Box::new(file))
    }

    fn open_part_reader(&self, key: &PartKey) -> StorageResult<Box<dyn PartReader>> {
        self.reclaim(key)?;
        Ok(Box::new(self.reader(File::open(self.part_path(key))?)))
    }

    fn finalize(&self, key: &PartKey) -> StorageResult<()> {
        let done = self.done_path(key);
        match fs::rename(self.part_path(key), &done) {
            Ok(()) => Ok(()),
            // Renamed already, by an earlier try.
            Err(err) if err.kind() == io::ErrorKind::NotFound && done.exists() => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    fn open_done(&self, key: &PartKey) -> StorageResult<Box<dyn PartReader>> {
        Ok(Box::new(self.reader(File::open(self.done_path(key))?)))
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

    fn visit_files(&self, visit: &mut dyn FnMut(StoredFile)) -> StorageResult<()> {
        // Directories to read, relative to the root: a list, not recursion,
        // so a deep tree costs no stack.
        let mut dirs = vec![PathBuf::new()];
        while let Some(rel) = dirs.pop() {
            let entries = match fs::read_dir(self.root.join(&rel)) {
                Ok(entries) => entries,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err.into()),
            };
            for entry in entries {
                let entry = entry?;
                let kind = entry.file_type()?;
                let name = entry.file_name();
                if kind.is_dir() {
                    dirs.push(rel.join(&name));
                    continue;
                }
                let Some(name) = name.to_str().filter(|_| kind.is_file()) else {
                    continue;
                };
                let stem = [&self.incomplete_ext, &self.complete_ext]
                    .iter()
                    .find_map(|ext| name.strip_suffix(ext.as_str()));
                let (Some(id), Some(dir)) = (
                    stem.and_then(|stem| uuid::Uuid::try_parse(stem).ok()),
                    rel.to_str(),
                ) else {
                    continue;
                };
                visit(StoredFile {
                    key: PartKey {
                        dir: dir.to_owned(),
                        id,
                        total: None,
                    },
                    modified: entry.metadata()?.modified()?,
                });
            }
        }
        Ok(())
    }

    fn check(&self) -> StorageResult<()> {
        Self::check_root(&self.root)
    }
}

impl LocalDisk {
    /// Creates the storage root if needed and checks that a file can be
    /// created in it, as an upload's is: permission bits alone say nothing
    /// to root, nor of a read-only mount or an immutable directory.
    pub fn check_root(root: &Path) -> StorageResult<()> {
        fs::create_dir_all(root)?;
        let probe = root.join(format!(".chunkd-probe-{}", uuid::Uuid::new_v4().simple()));
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)?;
        fs::remove_file(&probe)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    /// Whole blocks go direct only when memory and file position agree.
    #[test]
    fn aligned_blocks_need_memory_that_agrees_with_the_file() {
        let mem = vec![7u8; 6 * ALIGN];
        let skew = (ALIGN - mem.as_ptr() as usize % ALIGN) % ALIGN;
        // At file position 100, memory at 100 past an aligned address.
        let buf = &mem[skew + 100..skew + 100 + 3 * ALIGN];
        let (start, pieces) = aligned_blocks(&[buf], 100).expect("aligned");
        assert_eq!(start, ALIGN as u64);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].len(), 2 * ALIGN);
        assert_eq!(pieces[0].as_ptr() as usize % ALIGN, 0);
        // The same bytes meant for position 0: memory disagrees.
        assert!(aligned_blocks(&[buf], 0).is_none());
        // Shorter than the way to the next boundary.
        assert!(aligned_blocks(&[&buf[..10]], 100).is_none());
        // Two pieces meeting on a boundary: both in the direct range.
        let (a, b) = (
            &mem[skew..skew + 2 * ALIGN],
            &mem[skew + 3 * ALIGN..skew + 5 * ALIGN + 9],
        );
        let (start, pieces) = aligned_blocks(&[a, b], 0).expect("aligned");
        let covered: usize = pieces.iter().map(|p| p.len()).sum();
        assert_eq!((start, covered, pieces.len()), (0, 4 * ALIGN, 2));
    }

    /// Memory holding `bytes` at the same alignment as file position `pos`,
    /// plus `off` bytes (off 0: fit for direct writes).
    fn laid_out(bytes: &[u8], pos: u64, off: usize) -> (Vec<u8>, usize) {
        let mut mem = vec![0u8; bytes.len() + 2 * ALIGN];
        let base = (ALIGN - mem.as_ptr() as usize % ALIGN) % ALIGN;
        let at = base + (pos % ALIGN as u64) as usize + off;
        mem[at..at + bytes.len()].copy_from_slice(bytes);
        (mem, at)
    }

    /// A group of segments written with one call: a first one that starts
    /// mid-block, whole middle ones, a last one that ends mid-block; and
    /// the same with a middle one whose memory is a byte off (all of it
    /// then goes through the page cache). Both land exactly.
    #[test]
    fn segment_groups_land_exactly() {
        let root = std::env::temp_dir().join(format!("chunkd-local-{}", Uuid::new_v4()));
        let disk = LocalDisk::new(root.clone(), 0o600, ".part", ".done", true);
        for misaligned in [0, 1] {
            let key = PartKey {
                dir: "t".into(),
                id: Uuid::new_v4(),
                total: None,
            };
            let writer = disk.create(&key).unwrap();
            let start = 1000u64;
            let segment = 32 * ALIGN;
            let cuts = [start, 8 * ALIGN as u64, (8 * ALIGN + segment) as u64];
            let end = cuts[2] + segment as u64 + 777;
            let expected: Vec<u8> = (0..end).map(|i| (i * 7 % 253) as u8).collect();
            let bounds = [cuts[0], cuts[1], cuts[2], end];
            let laid: Vec<(Vec<u8>, usize, usize)> = bounds
                .windows(2)
                .enumerate()
                .map(|(n, w)| {
                    let bytes = &expected[w[0] as usize..w[1] as usize];
                    let off = if n == 1 { misaligned } else { 0 };
                    let (mem, at) = laid_out(bytes, w[0], off);
                    (mem, at, bytes.len())
                })
                .collect();
            let bufs: Vec<&[u8]> = laid.iter().map(|(m, at, len)| &m[*at..at + len]).collect();
            writer.write_at(&[&expected[..start as usize]], 0).unwrap();
            writer.write_at(&bufs, start).unwrap();
            writer.sync().unwrap();
            let stored = fs::read(disk.part_path(&key)).unwrap();
            assert_eq!(stored.len() as u64, end);
            assert!(stored == expected, "stored bytes differ ({misaligned})");
        }
        fs::remove_dir_all(root).unwrap();
    }

    /// Writes of every alignment, through the direct and the buffered path,
    /// leave exactly the bytes written, on a real file.
    #[test]
    fn writes_at_any_alignment_land_exactly() {
        let root = std::env::temp_dir().join(format!("chunkd-local-{}", Uuid::new_v4()));
        let disk = LocalDisk::new(root.clone(), 0o600, ".part", ".done", true);
        let key = PartKey {
            dir: "t".into(),
            id: Uuid::new_v4(),
            total: None,
        };
        let writer = disk.create(&key).unwrap();
        // Pieces large enough to go direct where they can.
        let unit = DIRECT_MIN;
        let total = 9 * unit + 123;
        let expected: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
        let mut mem = vec![0u8; total + 2 * ALIGN];
        let base = (ALIGN - mem.as_ptr() as usize % ALIGN) % ALIGN;
        // Pieces that start and end on and off block boundaries; even ones
        // are laid out to match their position (direct), odd ones a byte off
        // (buffered).
        let cuts = [0, 100, unit, 3 * unit + 5, 3 * unit + 6, 8 * unit, total];
        for (n, piece) in cuts.windows(2).enumerate() {
            let (from, to) = (piece[0], piece[1]);
            let at = base + from % ALIGN + n % 2;
            mem[at..at + to - from].copy_from_slice(&expected[from..to]);
            writer
                .write_at(&[&mem[at..at + to - from]], from as u64)
                .unwrap();
        }
        writer.sync().unwrap();
        let stored = fs::read(disk.part_path(&key)).unwrap();
        assert_eq!(stored.len(), total);
        assert!(stored == expected, "stored bytes differ");
        fs::remove_dir_all(root).unwrap();
    }
}
