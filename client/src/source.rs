//! The bytes to upload: a file, read where it lies, or standard input,
//! spooled to a temporary file as it is needed so that any range can be sent
//! again after a failure. Ranges are read with positioned reads, so parts of
//! one file can go out from several threads at once.

use crate::error::{Error, Result};
use chunkd_md5::Md5;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

pub struct Source {
    file: File,
    name: String,
    /// How many bytes can be read now, and standard input while it has more.
    /// Behind a lock so that readers of ranges (several threads with
    /// `--parallel`) share the source.
    spooling: Mutex<Spooling>,
    /// A file's identity for resuming: path, size and modification time.
    identity: Option<String>,
    spool: Option<PathBuf>,
}

impl Source {
    pub fn open(path: &Path) -> Result<Source> {
        let context = format!("cannot read {}", path.display());
        let file = File::open(path).map_err(Error::local(&context))?;
        let meta = file.metadata().map_err(Error::local(&context))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!("{} is not a file", path.display())));
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let canonical = path.canonicalize().map_err(Error::local(&context))?;
        Ok(Source {
            name: file_name(path),
            spooling: Mutex::new(Spooling {
                available: meta.len(),
                stdin: None,
            }),
            identity: Some(format!("{}\0{}\0{mtime}", canonical.display(), meta.len())),
            file,
            spool: None,
        })
    }

    /// Standard input, spooled into a new file under `spool_dir`.
    pub fn stdin(spool_dir: &Path, name: &str) -> Result<Source> {
        std::fs::create_dir_all(spool_dir)
            .map_err(Error::local("cannot create the spool folder"))?;
        remove_orphan_spools(spool_dir);
        let path = spool_dir.join(format!("spool-{}-{}", std::process::id(), random_u64()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::local(format!("cannot create {}", path.display())))?;
        Ok(Source {
            file,
            name: name.to_owned(),
            spooling: Mutex::new(Spooling {
                available: 0,
                stdin: Some(io::stdin()),
            }),
            identity: None,
            spool: Some(path),
        })
    }

    /// The name the upload gets on the server.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn rename(&mut self, name: &str) {
        name.clone_into(&mut self.name);
    }

    /// What identifies a file between runs; none for standard input, which
    /// cannot be read again.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The size, once all of it is known.
    pub fn size(&self) -> Option<u64> {
        let spooling = self.spooling.lock().expect("spool lock");
        spooling.stdin.is_none().then_some(spooling.available)
    }

    /// Makes the bytes up to `end` readable, spooling standard input as far
    /// as needed; answers how far they go (less than `end` at the end).
    pub fn fill_to(&self, end: u64) -> Result<u64> {
        let mut spooling = self.spooling.lock().expect("spool lock");
        if spooling.stdin.is_none() {
            return Ok(spooling.available.min(end));
        }
        let mut buf = vec![0u8; 256 * 1024];
        while spooling.available < end {
            let Some(stdin) = &spooling.stdin else { break };
            let want = buf.len().min((end - spooling.available) as usize);
            let n = match stdin.lock().read(&mut buf[..want]) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(Error::local("cannot read standard input")(err)),
            };
            if n == 0 {
                spooling.stdin = None;
                break;
            }
            self.file
                .write_all_at(&buf[..n], spooling.available)
                .map_err(Error::local("cannot write the spool file"))?;
            spooling.available += n as u64;
        }
        Ok(spooling.available.min(end))
    }

    /// A reader of `start..end`.
    pub fn range(&self, start: u64, end: u64) -> Range<'_> {
        Range {
            file: &self.file,
            pos: start,
            end,
        }
    }

    /// Reads `start..end` through `each`, a buffer at a time.
    fn feed(&self, start: u64, end: u64, mut each: impl FnMut(&[u8])) -> Result<()> {
        let mut range = self.range(start, end);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = range
                .read(&mut buf)
                .map_err(Error::local("cannot read the file"))?;
            if n == 0 {
                return Ok(());
            }
            each(&buf[..n]);
        }
    }

    /// The MD5 of `start..end`, and `carry` (a whole-file MD5) carried
    /// forward over it in the same read.
    pub fn md5_of(&self, start: u64, end: u64, mut carry: Option<&mut Md5>) -> Result<[u8; 16]> {
        let mut chunk = Md5::new();
        self.feed(start, end, |bytes| {
            chunk.update(bytes);
            if let Some(carry) = carry.as_mut() {
                carry.update(bytes);
            }
        })?;
        Ok(chunk.finalize())
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(spool) = &self.spool {
            let _ = std::fs::remove_file(spool);
        }
    }
}

struct Spooling {
    available: u64,
    stdin: Option<io::Stdin>,
}

/// Removes the spool files of runs that were killed: their process id
/// (`spool-PID-…`) no longer runs. Only where /proc tells.
fn remove_orphan_spools(dir: &Path) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("spool-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !proc.join(pid.to_string()).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A byte range of the source, read with positioned reads.
pub struct Range<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Range<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file became shorter while it was being uploaded",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A reader that feeds what it reads through an MD5, if it has one.
pub struct Hashing<'m, R> {
    pub inner: R,
    pub md5: Option<&'m mut Md5>,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(md5) = self.md5.as_mut() {
            md5.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// The MD5 of the whole source, computed up to the acknowledged offset.
#[derive(Clone)]
pub struct FileDigest {
    md5: Md5,
    at: u64,
}

impl FileDigest {
    pub fn new() -> Self {
        FileDigest {
            md5: Md5::new(),
            at: 0,
        }
    }

    /// The state after `start..end` was hashed by `md5_of` into `md5`.
    pub fn advanced(md5: Md5, end: u64) -> Self {
        FileDigest { md5, at: end }
    }

    pub fn state(&self) -> Md5 {
        self.md5.clone()
    }

    /// Brings the digest to `offset`, reading what it has not seen (from the
    /// start again if the offset went back).
    pub fn advance_to(&mut self, source: &Source, offset: u64) -> Result<()> {
        if offset < self.at {
            *self = FileDigest::new();
        }
        let mut md5 = self.md5.clone();
        source.feed(self.at, offset, |bytes| md5.update(bytes))?;
        *self = FileDigest { md5, at: offset };
        Ok(())
    }

    pub fn hex(&self) -> String {
        to_hex(&self.md5.clone().finalize())
    }
}

impl Default for FileDigest {
    fn default() -> Self {
        Self::new()
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload".to_owned())
}

pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // The system's randomness is there on every platform this runs on; the
    // clock is a fallback that is still good enough for jitter.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        return u64::from(nanos) ^ u64::from(std::process::id()) << 32;
    }
    u64::from_le_bytes(bytes)
}
