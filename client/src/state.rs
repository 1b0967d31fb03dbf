//! What a run leaves behind to be resumed: the upload URLs of one file sent
//! to one endpoint, in a small JSON file named after a hash of the file's
//! identity (path, size, modification time) and the endpoint. A changed file
//! has another identity, so it never resumes into a stale upload.

use crate::error::{Error, Result};
use crate::source::to_hex;
use chunkd_md5::Md5;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Saved {
    /// The upload's URL; with `--parallel`, one per part.
    pub uploads: Vec<String>,
    /// The concatenated upload of the parts, once made.
    #[serde(default)]
    pub concatenated: Option<String>,
}

pub struct StateFile {
    path: PathBuf,
}

/// `$CHUNKUP_STATE_DIR`, else `$XDG_CACHE_HOME/chunkup`, else `~/.cache/chunkup`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHUNKUP_STATE_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("chunkup")
}

impl StateFile {
    pub fn new(dir: &Path, key: &str) -> StateFile {
        let mut name = Md5::new();
        name.update(key.as_bytes());
        let name = to_hex(&name.finalize());
        StateFile {
            path: dir.join(format!("{name}.json")),
        }
    }

    /// What an earlier run saved; nothing if the file is missing or unreadable.
    pub fn load(&self) -> Option<Saved> {
        let text = std::fs::read(&self.path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Written to a temporary file and renamed, so a crash leaves the old
    /// state or the new one, never half of one.
    pub fn save(&self, saved: &Saved) -> Result<()> {
        let context = format!("cannot write the resume state {}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::local(&context))?;
        }
        let temp = self.path.with_extension("tmp");
        let json = serde_json::to_vec(saved).expect("state serializes");
        let mut file = std::fs::File::create(&temp).map_err(Error::local(&context))?;
        // Synced before the rename: after a power cut the state is there
        // (or the old one is), never an empty file.
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(Error::local(&context))?;
        std::fs::rename(&temp, &self.path).map_err(Error::local(&context))
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes every saved state that names `url` (after an abort).
pub fn forget_url(dir: &Path, url: &str) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let file = StateFile { path: entry.path() };
        if let Some(saved) = file.load() {
            if saved.uploads.iter().any(|u| u == url) || saved.concatenated.as_deref() == Some(url)
            {
                file.remove();
            }
        }
    }
}
