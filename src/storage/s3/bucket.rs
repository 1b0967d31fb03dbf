//! The bucket's calls, each run on a small runtime of object storage's
//! own and waited for: `object_store` is async, and the engine calls
//! storage from its blocking pool (or, for a reader, wherever it reads).

use super::budget::Budget;
use super::state::{Multipart, Piece, UploadState};
use super::UploadPaths;
use crate::storage::{StorageError, StorageResult};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::HashMap;
use std::future::Future;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use uuid::Uuid;

/// Object storage's calls run here, whatever thread asks: the engine's
/// blocking pool, or an actix worker, whose runtime is not for this.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chunkd-s3")
            .enable_all()
            .build()
            .expect("a runtime for object storage")
    })
}

pub fn storage_error(err: object_store::Error) -> StorageError {
    match err {
        object_store::Error::NotFound { .. } => StorageError::Missing,
        err => StorageError::Remote(err.to_string()),
    }
}

/// The bucket and what every upload's writer shares.
pub struct Bucket {
    store: Arc<AmazonS3>,
    prefix: String,
    pub budget: Arc<Budget>,
    /// The committed state of uploads this process wrote last, so that
    /// their next request need not read it back: a committed state is never
    /// changed, and an upload's committed offset passes each value once.
    committed: Mutex<HashMap<Uuid, UploadState>>,
}

/// Committed states kept; past it they are all let go.
const COMMITTED_KEPT: usize = 256;

impl Bucket {
    pub fn new(store: AmazonS3, prefix: String, budget: Budget) -> Bucket {
        Bucket {
            store: Arc::new(store),
            prefix,
            budget: Arc::new(budget),
            committed: Mutex::new(HashMap::new()),
        }
    }

    fn committed_states(&self) -> MutexGuard<'_, HashMap<Uuid, UploadState>> {
        self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn remember_committed(&self, id: Uuid, state: UploadState) {
        let mut states = self.committed_states();
        if states.len() >= COMMITTED_KEPT {
            states.clear();
        }
        states.insert(id, state);
    }

    /// The committed state of `len` bytes of upload `id`, if remembered.
    pub fn committed_state(&self, id: Uuid, len: u64) -> Option<UploadState> {
        self.committed_states()
            .get(&id)
            .filter(|state| state.len == len)
            .cloned()
    }

    pub fn forget_committed(&self, id: Uuid) {
        self.committed_states().remove(&id);
    }

    /// Runs `work` on the object storage runtime and waits for it.
    pub fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        runtime().spawn(async move {
            let _ = done.send(work.await);
        });
        result
            .recv()
            .expect("the object storage runtime finishes what it is given")
    }

    pub fn path(&self, rel: &str) -> Path {
        match self.prefix.as_str() {
            "" => Path::from(rel),
            prefix => Path::from(format!("{prefix}/{rel}")),
        }
    }

    pub fn put(&self, path: &Path, payload: PutPayload) -> StorageResult<()> {
        let (store, path) = (self.store.clone(), path.clone());
        self.run(async move { store.put(&path, payload).await })
            .map(drop)
            .map_err(storage_error)
    }

    pub fn get(&self, path: &Path) -> StorageResult<Bytes> {
        let (store, path) = (self.store.clone(), path.clone());
        self.run(async move { store.get(&path).await?.bytes().await })
            .map_err(storage_error)
    }

    /// The object from `pos` on, as it streams in.
    pub fn get_from(
        &self,
        path: &Path,
        pos: u64,
    ) -> StorageResult<BoxStream<'static, object_store::Result<Bytes>>> {
        let (store, path) = (self.store.clone(), path.clone());
        let options = GetOptions::default().with_range(Some(pos..));
        self.run(async move { store.get_opts(&path, options).await })
            .map(|got| got.into_stream())
            .map_err(storage_error)
    }

    pub fn head(&self, path: &Path) -> StorageResult<ObjectMeta> {
        let (store, path) = (self.store.clone(), path.clone());
        self.run(async move { store.head(&path).await })
            .map_err(storage_error)
    }

    /// Deletes objects in the background: nothing waits for it, and one
    /// not deleted is deleted with the rest of its upload.
    pub fn delete_later(&self, paths: Vec<Path>) {
        if paths.is_empty() {
            return;
        }
        let store = self.store.clone();
        runtime().spawn(async move {
            for path in paths {
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(err) => log::warn!("{path} not deleted: {err}"),
                }
            }
        });
    }

    /// Deletes an object; one already gone is not an error.
    pub fn delete(&self, path: &Path) -> StorageResult<()> {
        let (store, path) = (self.store.clone(), path.clone());
        match self.run(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(storage_error(err)),
        }
    }

    /// Calls `visit` with every object under `prefix`, a page at a time.
    pub fn list(&self, prefix: &Path, visit: &mut dyn FnMut(ObjectMeta)) -> StorageResult<()> {
        const PAGE: usize = 1000;
        let mut objects = self.store.list(Some(prefix));
        loop {
            let (rest, page) = self.run(async move {
                let mut page = Vec::with_capacity(PAGE);
                while page.len() < PAGE {
                    match objects.next().await {
                        Some(Ok(object)) => page.push(object),
                        Some(Err(err)) => return (objects, Err(err)),
                        None => break,
                    }
                }
                (objects, Ok(page))
            });
            objects = rest;
            let page = page.map_err(storage_error)?;
            let last = page.len() < PAGE;
            page.into_iter().for_each(&mut *visit);
            if last {
                return Ok(());
            }
        }
    }

    pub fn create_multipart(&self, path: &Path) -> StorageResult<String> {
        let (store, path) = (self.store.clone(), path.clone());
        self.run(async move { store.create_multipart(&path).await })
            .map_err(storage_error)
    }

    pub fn put_part(
        &self,
        path: &Path,
        id: &str,
        index: usize,
        payload: PutPayload,
    ) -> StorageResult<String> {
        self.send_part(path, id, index, payload, 0)
            .recv()
            .expect("the object storage runtime finishes what it is given")
    }

    /// Sends a part in the background: its ETag comes on the channel, and
    /// the `held` bytes of the budget go back once it is sent.
    pub fn send_part(
        &self,
        path: &Path,
        id: &str,
        index: usize,
        payload: PutPayload,
        held: u64,
    ) -> Receiver<StorageResult<String>> {
        let (store, path, id) = (self.store.clone(), path.clone(), id.to_owned());
        let budget = self.budget.clone();
        let (sent, etag) = std::sync::mpsc::sync_channel(1);
        runtime().spawn(async move {
            let part = store.put_part(&path, &id, index, payload).await;
            budget.give(held);
            let _ = sent.send(part.map(|part| part.content_id).map_err(storage_error));
        });
        etag
    }

    pub fn complete(&self, path: &Path, id: &str, etags: Vec<String>) -> StorageResult<()> {
        let (store, path, id) = (self.store.clone(), path.clone(), id.to_owned());
        let parts = etags
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        self.run(async move { store.complete_multipart(&path, &id, parts).await })
            .map(drop)
            .map_err(storage_error)
    }

    /// Aborts a multipart upload; one already gone is not an error.
    pub fn abort(&self, path: &Path, id: &str) -> StorageResult<()> {
        let (store, path, id) = (self.store.clone(), path.clone(), id.to_owned());
        match self.run(async move { store.abort_multipart(&path, &id).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(storage_error(err)),
        }
    }

    /// The multipart upload recorded for an upload, if any.
    pub fn recorded_multipart(&self, paths: &UploadPaths) -> StorageResult<Option<Multipart>> {
        match self.get(&paths.marker()) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(StorageError::Missing) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The bytes of tail pieces, read back whole.
    pub fn read_pieces(&self, paths: &UploadPaths, tail: &[Piece]) -> StorageResult<Vec<Bytes>> {
        tail.iter()
            .map(|&piece| {
                let bytes = self.get(&paths.piece(piece))?;
                if bytes.len() as u64 != piece.end - piece.start {
                    return Err(StorageError::Damaged {
                        expected: piece.end,
                        found: piece.start + bytes.len() as u64,
                    });
                }
                Ok(bytes)
            })
            .collect()
    }
}
