//! Uploads in an S3-compatible bucket, through `object_store`. Nothing of
//! an upload lives on one process's disk: its multipart upload, parts and
//! tail pieces are objects named by a state object per offset (`state`),
//! so any process can continue any upload. A completed upload is one
//! object, `{dir}/{id}{complete_ext}`; an upload in progress is the objects
//! under `{dir}/{id}{incomplete_ext}/`.

mod bucket;
mod budget;
mod reader;
mod state;
mod writer;

use super::{PartKey, PartReader, PartStore, PartWriter, StorageError, StorageResult, StoredFile};
use bucket::Bucket;
use budget::Budget;
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, PutPayload, RetryConfig};
use reader::S3Reader;
use state::{parse_state, Piece, UploadState, MULTIPART};
use std::sync::Arc;
use std::time::Duration;
use writer::S3Writer;

pub use writer::{part_size_for, MAX_PARTS};

/// S3's smallest part but the last.
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 << 30;

/// Where and how to reach the bucket, and how to use it.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Prepended to every object's name (no leading or trailing slash).
    pub prefix: String,
    /// For S3-compatible servers; http:// is allowed here.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub virtual_hosted_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Size of every part but the last, unless the upload's length needs
    /// larger ones to stay within `MAX_PARTS`.
    pub part_size: u64,
    /// Bytes all uploads together may hold in memory for their parts.
    pub buffer: u64,
    /// The largest upload: sizes the parts of uploads of unknown length.
    pub max_bytes: Option<u64>,
    pub complete_ext: String,
    pub incomplete_ext: String,
}

/// `s3://bucket/prefix` as (bucket, prefix).
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

/// The objects of one upload.
pub struct UploadPaths {
    id: uuid::Uuid,
    /// The completed object (also the multipart upload's).
    done: Path,
    /// The folder of its objects while in progress.
    in_progress: Path,
}

impl UploadPaths {
    fn child(&self, name: &str) -> Path {
        self.in_progress.clone().join(name)
    }

    fn state(&self, len: u64) -> Path {
        self.child(&state::state_name(len))
    }

    fn piece(&self, piece: Piece) -> Path {
        self.child(&state::piece_name(piece))
    }

    fn marker(&self) -> Path {
        self.child(MULTIPART)
    }
}

pub struct S3Store {
    bucket: Arc<Bucket>,
    settings: S3Settings,
}

/// An object of an upload in progress, by the last part of its name.
struct Found {
    name: String,
    path: Path,
}

impl S3Store {
    pub fn new(settings: S3Settings) -> anyhow::Result<S3Store> {
        // The HTTP client's TLS takes the process's default crypto provider:
        // ring, already in the tree. Installed once; a second call is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_virtual_hosted_style_request(settings.virtual_hosted_style)
            // Failing soon, not after minutes of retries: the client's
            // request fails and it resumes, which loses nothing.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
                ..RetryConfig::default()
            })
            .with_client_options(ClientOptions::new().with_timeout(Duration::from_secs(120)));
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &settings.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &settings.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder.build()?;
        Ok(S3Store {
            bucket: Arc::new(Bucket::new(
                store,
                settings.prefix.clone(),
                Budget::new(settings.buffer),
            )),
            settings,
        })
    }

    fn paths(&self, key: &PartKey) -> UploadPaths {
        let base = match key.dir.as_str() {
            "" => key.id.to_string(),
            dir => format!("{dir}/{}", key.id),
        };
        UploadPaths {
            id: key.id,
            done: self
                .bucket
                .path(&format!("{base}{}", self.settings.complete_ext)),
            in_progress: self
                .bucket
                .path(&format!("{base}{}", self.settings.incomplete_ext)),
        }
    }

    fn writer(&self, key: &PartKey, opened: UploadState) -> Box<dyn PartWriter> {
        let part_size = part_size_for(self.settings.part_size, key.total, self.settings.max_bytes);
        Box::new(S3Writer::new(
            self.bucket.clone(),
            self.paths(key),
            part_size,
            opened,
        ))
    }

    /// The objects of an upload in progress.
    fn in_progress(&self, paths: &UploadPaths) -> StorageResult<Vec<Found>> {
        let mut found = Vec::new();
        self.bucket.list(&paths.in_progress, &mut |object| {
            if let Some(name) = object.location.filename() {
                found.push(Found {
                    name: name.to_owned(),
                    path: object.location.clone(),
                });
            }
        })?;
        Ok(found)
    }

    fn read_state(&self, path: &Path) -> StorageResult<UploadState> {
        let bytes = self.bucket.get(path)?;
        serde_json::from_slice(&bytes)
            .map_err(|err| StorageError::Remote(format!("unreadable upload state: {err}")))
    }

    /// The tail pieces' bytes, with their memory taken from the budget
    /// while they are held.
    fn with_tail<T>(
        &self,
        paths: &UploadPaths,
        state: &UploadState,
        use_tail: impl FnOnce(Vec<Bytes>) -> StorageResult<T>,
    ) -> StorageResult<T> {
        let held = state.in_tail();
        self.bucket.budget.take(held)?;
        let used = self
            .bucket
            .read_pieces(paths, &state.tail)
            .and_then(use_tail);
        self.bucket.budget.give(held);
        used
    }
}

impl PartStore for S3Store {
    fn create(&self, key: &PartKey) -> StorageResult<Box<dyn PartWriter>> {
        Ok(self.writer(key, UploadState::default()))
    }

    /// The state of the committed offset. What it made obsolete (the state
    /// before it, the tail pieces that went into parts) is deleted in the
    /// background; what requests that never committed left stays until the
    /// upload completes or goes.
    fn open_at(&self, key: &PartKey, committed: u64) -> StorageResult<Box<dyn PartWriter>> {
        let paths = self.paths(key);
        let remembered = self
            .bucket
            .committed_state(key.id, committed)
            .ok_or(StorageError::Missing);
        let mut state = match remembered.or_else(|_| self.read_state(&paths.state(committed))) {
            Err(StorageError::Missing) if committed == 0 => UploadState::default(),
            Err(StorageError::Missing) => {
                return Err(StorageError::Damaged {
                    expected: committed,
                    found: 0,
                })
            }
            read => read?,
        };
        if state.len != committed {
            return Err(StorageError::Damaged {
                expected: committed,
                found: state.len,
            });
        }
        let obsolete = state
            .consumed
            .drain(..)
            .map(|piece| paths.piece(piece))
            .chain(state.previous.take().map(|len| paths.state(len)));
        self.bucket.delete_later(obsolete.collect());
        Ok(self.writer(key, state))
    }

    fn open_part_reader(&self, _key: &PartKey) -> StorageResult<Box<dyn PartReader>> {
        Err(StorageError::Unreadable)
    }

    /// Completes the multipart upload with the tail as its last part (or,
    /// with no part sent yet, puts the tail as the object), then removes
    /// the upload's other objects. Done already (the object there, of the
    /// state's length) counts as success.
    fn finalize(&self, key: &PartKey) -> StorageResult<()> {
        self.bucket.forget_committed(key.id);
        let paths = self.paths(key);
        let found = self.in_progress(&paths)?;
        let latest = found
            .iter()
            .filter_map(|object| Some((parse_state(&object.name)?, &object.path)))
            .max_by_key(|(len, _)| *len);
        let state = match latest {
            Some((_, path)) => self.read_state(path)?,
            // No state: finished and cleaned up, or empty and never synced.
            None => match self.bucket.head(&paths.done) {
                Ok(_) => return Ok(()),
                Err(StorageError::Missing) if key.total.unwrap_or(0) == 0 => UploadState::default(),
                Err(err) => return Err(err),
            },
        };
        if let Some(total) = key.total.filter(|&total| total != state.len) {
            return Err(StorageError::Damaged {
                expected: total,
                found: state.len,
            });
        }
        let finished = match self.bucket.head(&paths.done) {
            Ok(done) => done.size == state.len,
            Err(StorageError::Missing) => false,
            Err(err) => return Err(err),
        };
        if !finished {
            self.with_tail(&paths, &state, |tail| match &state.multipart {
                None => self.bucket.put(&paths.done, tail.into_iter().collect()),
                Some(multipart) => {
                    let mut etags = state.parts.clone();
                    if !tail.is_empty() {
                        etags.push(self.bucket.put_part(
                            &paths.done,
                            &multipart.id,
                            etags.len(),
                            tail.into_iter().collect(),
                        )?);
                    }
                    self.bucket.complete(&paths.done, &multipart.id, etags)
                }
            })?;
        }
        if let Some(recorded) = self.bucket.recorded_multipart(&paths)? {
            if state.multipart.as_ref() != Some(&recorded) {
                self.bucket.abort(&paths.done, &recorded.id)?;
            }
        }
        for object in &found {
            self.bucket.delete(&object.path)?;
        }
        Ok(())
    }

    fn open_done(&self, key: &PartKey) -> StorageResult<Box<dyn PartReader>> {
        let path = self.paths(key).done;
        let size = self.bucket.head(&path)?.size;
        Ok(Box::new(S3Reader::new(self.bucket.clone(), path, size)))
    }

    /// Aborts the upload's multipart upload, if it has one, and deletes
    /// every object it has.
    fn remove(&self, key: &PartKey) -> StorageResult<()> {
        self.bucket.forget_committed(key.id);
        let paths = self.paths(key);
        if let Some(recorded) = self.bucket.recorded_multipart(&paths)? {
            self.bucket.abort(&paths.done, &recorded.id)?;
        }
        for object in self.in_progress(&paths)? {
            self.bucket.delete(&object.path)?;
        }
        self.bucket.delete(&paths.done)
    }

    fn visit_files(&self, visit: &mut dyn FnMut(StoredFile)) -> StorageResult<()> {
        let root = self.bucket.path("");
        let (done_ext, part_ext) = (&self.settings.complete_ext, &self.settings.incomplete_ext);
        self.bucket.list(&root, &mut |object| {
            let parts: Vec<String> = object
                .location
                .prefix_match(&root)
                .map(|parts| parts.map(|part| part.as_ref().to_owned()).collect())
                .unwrap_or_default();
            // `{dir}/{id}{done_ext}`, or an object in `{dir}/{id}{part_ext}/`.
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            let found = match parts.as_slice() {
                [dir @ .., name] if name.ends_with(done_ext.as_str()) => {
                    Some((dir, name.strip_suffix(done_ext.as_str())))
                }
                [dir @ .., folder, _] => Some((dir, folder.strip_suffix(part_ext.as_str()))),
                _ => None,
            };
            let Some((dir, Some(id))) = found else {
                return;
            };
            if let Ok(id) = uuid::Uuid::try_parse(id) {
                visit(StoredFile {
                    key: PartKey {
                        dir: dir.join("/"),
                        id,
                        total: None,
                    },
                    modified: object.last_modified.into(),
                });
            }
        })
    }

    fn parts_readable(&self) -> bool {
        false
    }

    /// Puts and deletes a probe object.
    fn check(&self) -> StorageResult<()> {
        let probe = self
            .bucket
            .path(&format!(".chunkd-probe-{}", uuid::Uuid::new_v4().simple()));
        self.bucket.put(&probe, PutPayload::default())?;
        self.bucket.delete(&probe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_bucket_and_prefix() {
        assert_eq!(
            parse_url("s3://b/some/prefix/"),
            Some(("b".into(), "some/prefix".into()))
        );
        assert_eq!(parse_url("s3://b"), Some(("b".into(), String::new())));
        assert_eq!(parse_url("s3:///x"), None);
        assert_eq!(parse_url("/data"), None);
    }
}
