//! Reading a completed object: one streamed GET from the first position
//! asked for, continued while reads follow one another, so a download
//! neither buffers the object nor pays a request per read; a read
//! elsewhere (a Range request) starts a new GET there.

use super::bucket::{storage_error, Bucket};
use crate::storage::{PartReader, StorageError, StorageResult};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::path::Path;
use std::sync::{Arc, Mutex};

type Body = BoxStream<'static, object_store::Result<Bytes>>;

pub struct S3Reader {
    bucket: Arc<Bucket>,
    path: Path,
    size: u64,
    open: Mutex<Option<OpenGet>>,
}

/// A GET under way: the next byte it gives is at `pos`.
struct OpenGet {
    pos: u64,
    pending: Bytes,
    body: Body,
}

impl S3Reader {
    pub fn new(bucket: Arc<Bucket>, path: Path, size: u64) -> S3Reader {
        S3Reader {
            bucket,
            path,
            size,
            open: Mutex::new(None),
        }
    }
}

impl PartReader for S3Reader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> StorageResult<usize> {
        if pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut get = match open.take() {
            Some(get) if get.pos == pos => get,
            _ => OpenGet {
                pos,
                pending: Bytes::new(),
                body: self.bucket.get_from(&self.path, pos)?,
            },
        };
        while get.pending.is_empty() {
            let body = get.body;
            let (body, next) = self.bucket.run(async move {
                let mut body = body;
                let next = body.next().await;
                (body, next)
            });
            get.body = body;
            match next {
                Some(Ok(bytes)) => get.pending = bytes,
                Some(Err(err)) => return Err(storage_error(err)),
                None => {
                    return Err(StorageError::Damaged {
                        expected: self.size,
                        found: get.pos,
                    })
                }
            }
        }
        let n = buf.len().min(get.pending.len());
        buf[..n].copy_from_slice(&get.pending.split_to(n));
        get.pos += n as u64;
        *open = Some(get);
        Ok(n)
    }
}
