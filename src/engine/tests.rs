//! The engine's rules, on in-memory metadata and storage: offsets, totals,
//! completion, expiry, concatenation, recovery and the orphan sweep. No
//! HTTP, database or disk: each test runs in milliseconds.

use super::memory::{Kind, MemoryMeta, MemoryStorage};
use super::*;
use bytes::Bytes;
use futures_util::StreamExt;
use std::convert::Infallible;
use std::time::SystemTime;

/// An engine on fresh fakes, and the fakes, to look behind its back.
fn engine_with(expiration: Duration) -> (Engine, Arc<MemoryMeta>, Arc<MemoryStorage>) {
    let (meta, storage) = (
        Arc::new(MemoryMeta::default()),
        Arc::new(MemoryStorage::default()),
    );
    let settings = EngineSettings {
        expiration,
        attachment_expiration: expiration,
        path_template: "uploads".into(),
        checksum: ChecksumAlgo::Md5,
        owner_restricted: true,
        max_bytes: Some(1 << 20),
        min_bytes: 0,
        allowed_extensions: Vec::new(),
        allowed_media_types: Vec::new(),
        max_chunk_bytes: None,
        lock_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(5),
        lease_time: Duration::from_secs(10),
        owner_limits: OwnerLimits::default(),
        hook_url: None,
    };
    let engine = Engine::new(meta.clone(), storage.clone(), settings);
    (engine, meta, storage)
}

fn engine() -> (Engine, Arc<MemoryMeta>, Arc<MemoryStorage>) {
    engine_with(Duration::from_secs(3600))
}

fn body(data: &[u8]) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Unpin {
    futures_util::stream::iter(vec![Ok(Bytes::copy_from_slice(data))])
}

fn md5_of(data: &[u8]) -> String {
    let mut hasher = Hasher::new(ChecksumAlgo::Md5);
    hasher.update(data);
    hasher.hex().expect("a digest")
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

const CALLER: Caller = Caller::Anonymous;

/// A new upload of `total` bytes (None: deferred) with `first` as its
/// first chunk.
async fn create(
    engine: &Engine,
    first: &[u8],
    total: Option<u64>,
    completion: Completion,
) -> EngineResult<Upload> {
    let staged = engine
        .receive_new(
            Hashing::Whole,
            BodyRules::exact(first.len() as u64),
            body(first),
        )
        .await?;
    let new = NewUpload {
        filename: "f.bin".into(),
        total,
        ..NewUpload::default()
    };
    engine.create(staged, &CALLER, new, completion).await
}

async fn append(
    engine: &Engine,
    id: Uuid,
    start: u64,
    chunk: &[u8],
    total: Option<u64>,
    completion: Completion,
) -> EngineResult<Upload> {
    let session = engine.begin_append(&CALLER, id, start, total).await?;
    let rules = BodyRules::exact(chunk.len() as u64);
    session.write(rules, body(chunk), completion).await
}

async fn downloaded(engine: &Engine, id: Uuid) -> EngineResult<Vec<u8>> {
    let download = engine.open_download(&CALLER, id).await?;
    let mut stream = Box::pin(download.bytes(0, download.size()));
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece?);
    }
    Ok(out)
}

#[test]
fn a_given_checksum_must_be_the_digest() {
    let digest = Some("6d29a9e5c8ea214320cd61f0fa34a6ce");
    assert!(checksum_matches(
        digest,
        Some(" 6D29A9E5C8EA214320CD61F0FA34A6CE ")
    ));
    assert!(!checksum_matches(
        digest,
        Some("d41d8cd98f00b204e9800998ecf8427e")
    ));
    // An unhashed upload matches no checksum, but needs none.
    assert!(!checksum_matches(
        None,
        Some("6d29a9e5c8ea214320cd61f0fa34a6ce")
    ));
    assert!(checksum_matches(None, None));
    assert!(checksum_matches(digest, None));
}

/// A chunk goes in only at the upload's offset and with its total; the
/// stored bytes are the chunks in order.
#[tokio::test]
async fn chunks_go_in_at_the_offset_only() {
    let (engine, _, storage) = engine();
    let all = data(3000);
    let upload = create(&engine, &all[..1000], Some(3000), Completion::Request)
        .await
        .unwrap();
    let id = upload.id;
    assert_eq!((upload.offset, upload.complete), (1000, false));
    let wrong = append(
        &engine,
        id,
        500,
        &all[500..1500],
        Some(3000),
        Completion::Request,
    )
    .await;
    assert!(matches!(
        wrong,
        Err(EngineError::OffsetMismatch {
            expected: 1000,
            provided: 500
        })
    ));
    let other_total = append(
        &engine,
        id,
        1000,
        &all[1000..2000],
        Some(4000),
        Completion::Request,
    );
    assert!(matches!(
        other_total.await,
        Err(EngineError::TotalMismatch { total: 3000, .. })
    ));
    let short = engine
        .begin_append(&CALLER, id, 1000, Some(3000))
        .await
        .unwrap();
    let refused = short.write(
        BodyRules::exact(1000),
        body(&all[1000..1500]),
        Completion::Request,
    );
    assert!(matches!(
        refused.await,
        Err(EngineError::SizeMismatch { actual: 500, .. })
    ));
    let upload = append(
        &engine,
        id,
        1000,
        &all[1000..2000],
        Some(3000),
        Completion::Request,
    );
    assert_eq!(upload.await.unwrap().offset, 2000);
    assert_eq!(storage.bytes(id, Kind::Part).unwrap(), all[..2000]);
}

/// With the last byte, an upload that completes at its last byte (tus) is
/// complete in the same commit, with its checksum; one that waits for the
/// client's checksum is not, until it comes.
#[tokio::test]
async fn the_last_byte_completes_where_it_should() {
    let (engine, meta, storage) = engine();
    let all = data(2000);
    let tus = create(&engine, &all[..1000], Some(2000), Completion::LastByte)
        .await
        .unwrap();
    let done = append(
        &engine,
        tus.id,
        1000,
        &all[1000..],
        None,
        Completion::LastByte,
    )
    .await;
    let done = done.unwrap();
    assert!(done.complete);
    assert_eq!(done.checksum.as_deref(), Some(md5_of(&all).as_str()));
    let row = meta.get_upload(tus.id).unwrap().unwrap();
    assert!(row.complete && row.offset == 2000);
    assert_eq!(storage.bytes(tus.id, Kind::Done).unwrap(), all);

    let chunked = create(&engine, &all, Some(2000), Completion::Request)
        .await
        .unwrap();
    assert!(!chunked.complete);
    let early = engine.complete(&CALLER, chunked.id, Some("00")).await;
    assert!(matches!(early, Err(EngineError::ChecksumMismatch)));
    let complete = engine
        .complete(&CALLER, chunked.id, Some(&md5_of(&all)))
        .await
        .unwrap();
    assert!(complete.complete);
    // Repeated, it answers the same upload.
    let again = engine
        .complete(&CALLER, chunked.id, Some(&md5_of(&all)))
        .await
        .unwrap();
    assert_eq!(again.completed_at, complete.completed_at);
    assert_eq!(downloaded(&engine, chunked.id).await.unwrap(), all);
}

/// A creation that carries every byte of an upload that completes at its
/// last byte is recorded complete at once; a completion before the last
/// byte is refused.
#[tokio::test]
async fn whole_creations_and_early_completions() {
    let (engine, _, _) = engine();
    let all = data(700);
    let whole = create(&engine, &all, Some(700), Completion::LastByte)
        .await
        .unwrap();
    assert!(whole.complete);
    assert_eq!(downloaded(&engine, whole.id).await.unwrap(), all);
    let half = create(&engine, &all[..300], Some(700), Completion::Request)
        .await
        .unwrap();
    let early = engine.complete(&CALLER, half.id, Some(&md5_of(&all))).await;
    assert!(matches!(
        early,
        Err(EngineError::Incomplete { offset: 300, .. })
    ));
}

/// A deferred total is told with a chunk and recorded with it: a chunk
/// refused for its body leaves it untold.
#[tokio::test]
async fn a_deferred_total_is_told_with_its_chunk() {
    let (engine, meta, _) = engine();
    let all = data(900);
    let upload = create(&engine, &all[..400], None, Completion::LastByte)
        .await
        .unwrap();
    let session = engine
        .begin_append(&CALLER, upload.id, 400, Some(900))
        .await
        .unwrap();
    let rules = BodyRules {
        check: Some((ChecksumAlgo::Md5, vec![0; 16])),
        ..BodyRules::exact(500)
    };
    let refused = session
        .write(rules, body(&all[400..]), Completion::LastByte)
        .await;
    assert!(matches!(refused, Err(EngineError::BodyChecksumMismatch)));
    let row = meta.get_upload(upload.id).unwrap().unwrap();
    assert_eq!((row.total, row.offset), (None, 400));
    let below = engine
        .begin_append(&CALLER, upload.id, 400, Some(300))
        .await;
    assert!(matches!(
        below.err(),
        Some(EngineError::TotalBelowOffset { .. })
    ));
    let done = append(
        &engine,
        upload.id,
        400,
        &all[400..],
        Some(900),
        Completion::LastByte,
    );
    let done = done.await.unwrap();
    assert_eq!((done.total, done.complete), (Some(900), true));
}

/// Rules that keep what arrived of a body that breaks off, up to `room`.
fn keeping(room: u64) -> BodyRules {
    BodyRules {
        length: BodyLength::UpTo(room),
        keep_partial: true,
        check: None,
    }
}

/// A body that breaks off after `data`.
fn broken(data: &[u8]) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Unpin {
    let pieces = vec![Ok(Bytes::copy_from_slice(data)), Err("gone".to_owned())];
    futures_util::stream::iter(pieces)
}

/// `EndOfBody`: a body that ends by itself ends the upload, and its end
/// is the total; one that breaks off keeps its bytes and completes
/// nothing; one that ends short of a known total changes nothing.
#[tokio::test]
async fn the_end_of_a_body_can_be_the_end_of_the_upload() {
    let (engine, meta, _) = engine();
    let all = data(900);
    let upload = create(&engine, &[], None, Completion::LastByte)
        .await
        .unwrap();
    let session = engine
        .begin_append(&CALLER, upload.id, 0, None)
        .await
        .unwrap();
    let cut = session
        .write(keeping(900), broken(&all[..300]), Completion::EndOfBody)
        .await
        .unwrap();
    assert_eq!((cut.offset, cut.total, cut.complete), (300, None, false));

    let known = create(&engine, &[], Some(900), Completion::LastByte)
        .await
        .unwrap();
    let session = engine
        .begin_append(&CALLER, known.id, 0, None)
        .await
        .unwrap();
    let short = session
        .write(keeping(900), body(&all[..500]), Completion::EndOfBody)
        .await;
    assert!(matches!(
        short,
        Err(EngineError::TotalMismatch {
            total: 900,
            provided: 500
        })
    ));
    let row = meta.get_upload(known.id).unwrap().unwrap();
    assert_eq!((row.offset, row.complete), (0, false));

    let session = engine
        .begin_append(&CALLER, upload.id, 300, None)
        .await
        .unwrap();
    let done = session
        .write(keeping(900), body(&all[300..]), Completion::EndOfBody)
        .await
        .unwrap();
    assert_eq!(
        (done.offset, done.total, done.complete),
        (900, Some(900), true)
    );
    assert_eq!(done.checksum, Some(md5_of(&all)));
    assert_eq!(downloaded(&engine, upload.id).await.unwrap(), all);
}

/// A request in flight on an upload is ended by `preempt`: its body
/// breaks off where it is, what arrived is kept, and the upload is free
/// for the next request at once.
#[tokio::test]
async fn preempting_ends_the_request_in_flight() {
    let (engine, _, _) = engine();
    let all = data(900);
    let upload = create(&engine, &[], Some(900), Completion::LastByte)
        .await
        .unwrap();
    // A body whose client sent 200 bytes and then went quiet.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, Infallible>>();
    tx.send(Ok(Bytes::copy_from_slice(&all[..200]))).unwrap();
    let rx = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    }));
    let zombie = async {
        let session = engine
            .begin_append(&CALLER, upload.id, 0, None)
            .await
            .unwrap();
        session
            .write(keeping(900), rx, Completion::LastByte)
            .await
            .unwrap()
    };
    let next = async {
        while engine.locks.received(upload.id) != Some(200) {
            tokio::task::yield_now().await;
        }
        engine.preempt(&CALLER, upload.id).await.unwrap();
        engine.settled(&CALLER, upload.id).await.unwrap()
    };
    let (ended, settled) = tokio::join!(zombie, next);
    assert_eq!((ended.offset, ended.complete), (200, false));
    assert_eq!(settled.offset, 200);
    drop(tx);
}

/// Expired incomplete uploads are swept, rows and bytes; complete ones
/// never are.
#[tokio::test]
async fn the_sweep_removes_expired_incomplete_uploads_only() {
    let (engine, meta, storage) = engine_with(Duration::ZERO);
    let all = data(100);
    let incomplete = create(&engine, &all[..50], Some(100), Completion::Request)
        .await
        .unwrap();
    let complete = create(&engine, &all, Some(100), Completion::LastByte)
        .await
        .unwrap();
    let removed = engine.remove_expired().await.unwrap();
    assert_eq!(
        removed.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![incomplete.id]
    );
    assert!(meta.get_upload(incomplete.id).unwrap().is_none());
    assert!(storage.bytes(incomplete.id, Kind::Part).is_none());
    assert!(meta.get_upload(complete.id).unwrap().unwrap().complete);
}

/// Partial uploads join in order into a complete one; a part named twice,
/// or one still incomplete, is refused.
#[tokio::test]
async fn concatenation_joins_complete_parts_once_each() {
    let (engine, _, _) = engine();
    let (a, b) = (data(300), data(500));
    let mut ids = Vec::new();
    for part in [&a, &b] {
        let staged = engine
            .receive_new(
                Hashing::Whole,
                BodyRules::exact(part.len() as u64),
                body(part),
            )
            .await
            .unwrap();
        let new = NewUpload {
            filename: "p".into(),
            total: Some(part.len() as u64),
            concat: Some(PARTIAL.into()),
            ..NewUpload::default()
        };
        let upload = engine
            .create(staged, &CALLER, new, Completion::LastByte)
            .await
            .unwrap();
        ids.push(upload.id);
    }
    let new = || NewUpload {
        filename: "joined".into(),
        ..NewUpload::default()
    };
    let twice = engine
        .concat(&CALLER, &[ids[0], ids[0]], Hashing::Whole, new())
        .await;
    assert!(matches!(twice, Err(EngineError::BadConcat(_))));
    let joined = engine
        .concat(&CALLER, &ids, Hashing::Whole, new())
        .await
        .unwrap();
    let expected = [a.clone(), b.clone()].concat();
    assert_eq!(joined.total, Some(800));
    assert_eq!(joined.checksum.as_deref(), Some(md5_of(&expected).as_str()));
    assert_eq!(downloaded(&engine, joined.id).await.unwrap(), expected);
    let open = create(&engine, &a[..10], Some(300), Completion::Request)
        .await
        .unwrap();
    let refused = engine
        .concat(&CALLER, &[open.id], Hashing::Whole, new())
        .await;
    assert!(matches!(refused, Err(EngineError::NotConcatenable)));
}

/// A crash between a completion's row and its rename leaves the part
/// file: the next download verifies it against the row and renames it;
/// one whose bytes differ from the recorded checksum is lost, not served.
#[tokio::test]
async fn a_download_repairs_a_rename_lost_in_a_crash() {
    let (engine, _, storage) = engine();
    let all = data(1200);
    let good = create(&engine, &all, Some(1200), Completion::LastByte)
        .await
        .unwrap();
    storage.rename(good.id, Kind::Done, Kind::Part);
    assert_eq!(downloaded(&engine, good.id).await.unwrap(), all);
    assert!(storage.bytes(good.id, Kind::Part).is_none());

    let bad = create(&engine, &all, Some(1200), Completion::LastByte)
        .await
        .unwrap();
    storage.rename(bad.id, Kind::Done, Kind::Part);
    let mut other = all.clone();
    other[5] ^= 1;
    storage.tamper(bad.id, Kind::Part, Some(other), SystemTime::now());
    assert!(matches!(
        downloaded(&engine, bad.id).await,
        Err(EngineError::Lost(_))
    ));
}

/// A completed file beside an upload still in progress (a completion cut
/// off before its row, by an older server) is taken back: the retried
/// completion verifies the bytes and completes the upload.
#[tokio::test]
async fn a_completion_cut_off_before_its_row_is_finished_by_the_retry() {
    let (engine, _, storage) = engine();
    let all = data(800);
    let upload = create(&engine, &all, Some(800), Completion::Request)
        .await
        .unwrap();
    storage.rename(upload.id, Kind::Part, Kind::Done);
    let done = engine
        .complete(&CALLER, upload.id, Some(&md5_of(&all)))
        .await
        .unwrap();
    assert!(done.complete);
    assert_eq!(downloaded(&engine, upload.id).await.unwrap(), all);
}

/// Bytes past the committed offset (a chunk cut by a crash) are cut off at
/// the next chunk; a part file shorter than the offset fails the upload.
#[tokio::test]
async fn uncommitted_bytes_are_cut_and_lost_ones_fail_the_upload() {
    let (engine, meta, storage) = engine();
    let all = data(600);
    let upload = create(&engine, &all[..200], Some(600), Completion::LastByte)
        .await
        .unwrap();
    let mut longer = all[..200].to_vec();
    longer.extend_from_slice(&[9; 77]);
    storage.tamper(upload.id, Kind::Part, Some(longer), SystemTime::now());
    let next = append(
        &engine,
        upload.id,
        200,
        &all[200..400],
        None,
        Completion::LastByte,
    );
    assert_eq!(next.await.unwrap().offset, 400);
    assert_eq!(storage.bytes(upload.id, Kind::Part).unwrap(), all[..400]);

    storage.tamper(
        upload.id,
        Kind::Part,
        Some(all[..100].to_vec()),
        SystemTime::now(),
    );
    let lost = append(
        &engine,
        upload.id,
        400,
        &all[400..],
        None,
        Completion::LastByte,
    )
    .await;
    assert!(matches!(lost, Err(EngineError::Lost(_))));
    assert!(meta.get_upload(upload.id).unwrap().unwrap().failed);
}

/// Files that no row knows go once nothing wrote them for the grace;
/// files of uploads, and fresh ones, stay.
#[tokio::test]
async fn the_orphan_sweep_spares_uploads_and_fresh_files() {
    let (engine, meta, storage) = engine();
    let all = data(100);
    let kept = create(&engine, &all[..50], Some(100), Completion::Request)
        .await
        .unwrap();
    let orphan = create(&engine, &all[..50], Some(100), Completion::Request)
        .await
        .unwrap();
    let fresh = create(&engine, &all[..50], Some(100), Completion::Request)
        .await
        .unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    for upload in [&kept, &orphan] {
        storage.tamper(upload.id, Kind::Part, None, long_ago);
    }
    for upload in [&orphan, &fresh] {
        let (lock, row) = engine.lock(&CALLER, upload.id).await.unwrap();
        assert!(meta.delete_upload(row.id, lock.token()).unwrap());
    }
    let removed = engine.remove_orphans().await.unwrap();
    assert_eq!(
        removed.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![orphan.id]
    );
    assert!(storage.bytes(kept.id, Kind::Part).is_some());
    assert!(storage.bytes(fresh.id, Kind::Part).is_some());
}
