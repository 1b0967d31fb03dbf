//! The S3 emulator's own ceiling, measured in the same run as chunkd's S3
//! rows: the bytes of (a) and of (c) pushed straight into it by a plain
//! client (object_store's multipart upload, one part at a time per upload),
//! with no chunkd between. (a) is given for its parts alone, to set beside
//! the chunked protocol's (a), whose completion is a request of its own,
//! and with its completion, to set beside tus's, whose last PATCH completes.

use crate::common::*;
use crate::measure::*;
use crate::report::*;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const PART: u64 = 8 * MIB;

/// A multipart upload of `len` bytes of `file` from `from`, into `name`;
/// how long its parts took, and its completion.
async fn push(
    store: &dyn ObjectStore,
    file: &File,
    from: u64,
    len: u64,
    name: String,
) -> (Duration, Duration) {
    let began = Instant::now();
    let mut upload = store.put_multipart(&Path::from(name)).await.unwrap();
    for pos in (from..from + len).step_by(PART as usize) {
        let mut part = vec![0u8; PART.min(from + len - pos) as usize];
        file.read_exact_at(&mut part, pos).unwrap();
        upload.put_part(part.into()).await.unwrap();
    }
    let parts = began.elapsed();
    upload.complete().await.unwrap();
    (parts, began.elapsed() - parts)
}

pub fn emulator_ceiling(file: &File) -> Line {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bucket = new_bucket();
    let store = AmazonS3Builder::new()
        .with_endpoint(emulator())
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clock = MachineTime::now();
    let (parts, completion) = runtime.block_on(push(&store, file, 0, GIB, "one.bin".into()));
    delete_objects(&bucket);
    let began = Instant::now();
    runtime.block_on(futures_util::future::join_all((0..64u64).map(|i| {
        push(
            &store,
            file,
            i * 16 * MIB,
            16 * MIB,
            format!("many-{i}.bin"),
        )
    })));
    let many = mb_per_s(GIB, began.elapsed());
    delete_objects(&bucket);
    Line {
        subject: "emulator".into(),
        label: String::new(),
        figures: Figures::Emulator {
            parts: mb_per_s(GIB, parts),
            whole: mb_per_s(GIB, parts + completion),
            many,
            steal: clock.stolen_since(),
        },
    }
}
