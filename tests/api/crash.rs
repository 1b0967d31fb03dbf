//! `kill -9` of the server at random moments of chunk uploads: after every
//! restart the acknowledged offset still holds, the client resumes from
//! it, and the final checksum matches. With `--sync false` too: nothing is
//! then synced to the disk, but a crash of the process (not of the
//! machine) still loses nothing acknowledged.

use crate::both_backends;
use crate::common::*;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const FLAGS: &[&str] = &["--lease-time", "500ms", "--lock-timeout", "5s"];
const TOTAL: usize = 160 << 20;
/// Twice the server's largest write batch (1 MiB): a kill in the second
/// half of a body leaves written but uncommitted bytes.
const CHUNK: usize = 2 << 20;

/// One raw chunk; `paced`, it comes in pieces a few milliseconds apart, so
/// that most kills land in the middle of a body.
fn try_put(
    addr: &str,
    auth: &str,
    path: &str,
    start: usize,
    data: &[u8],
    paced: bool,
) -> std::io::Result<Response> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    let end = (start + CHUNK).min(TOTAL);
    let range = format!("bytes {start}-{}/{TOTAL}", end - 1);
    stream.write_all(&request_head(
        "PUT",
        path,
        addr,
        &[("Authorization", auth), ("Content-Range", &range)],
        Some((end - start) as u64),
    ))?;
    for piece in data[start..end].chunks(CHUNK / 32) {
        stream.write_all(piece)?;
        if paced {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    try_read_response(stream)
}

fn kill_nine_at_random_moments(backend: Backend) {
    kill_nine(backend, &[], 50, 10);
}

fn kill_nine_without_sync(backend: Backend) {
    kill_nine(backend, &["--sync", "false"], 25, 4);
}

/// The same with the bytes in a bucket (5 MiB parts filled from 2 MiB
/// chunks): a kill mid-chunk leaves its bytes in memory, stored pieces or
/// sent parts that no committed state names, so no count of partial chunks
/// is asked for.
#[test]
fn kill_nine_with_the_bytes_in_a_bucket() {
    kill_nine(Backend::S3, &["--s3-part-size", "5MiB"], 25, 0);
}

/// `rounds` kills of a server started with `FLAGS` and `extra`, of which
/// at least `mid_chunk` must leave written but uncommitted bytes behind.
fn kill_nine(backend: Backend, extra: &[&str], rounds: usize, mid_chunk: usize) {
    let flags: Vec<&str> = FLAGS.iter().chain(extra).copied().collect();
    let store = Store::new(backend);
    let token = store.token("alice");
    let auth = format!("Token {token}");
    let data = bytes(TOTAL, 11);
    let first = Server::start(&store, &flags);
    let created = Client::new(&first, &token).put_raw(
        "/upload/?filename=crash.bin",
        &format!("bytes 0-{}/{TOTAL}", CHUNK - 1),
        &data[..CHUNK],
    );
    assert_eq!(created.status, 200);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    drop(first);

    let acked = AtomicU64::new(CHUNK as u64);
    // Rounds whose kill left bytes past the committed offset: the point of
    // the test is that some do.
    let mut killed_mid_chunk = 0;
    let mut seed: u64 = 0x5eed;
    for round in 0..rounds {
        let server = Server::start(&store, &flags);
        let client = Client::new(&server, &token);
        let offset = client.get(&path).json()["offset"].as_u64().unwrap();
        let acknowledged = acked.load(Ordering::SeqCst);
        assert!(
            offset >= acknowledged,
            "round {round}: offset {offset} went back below the acknowledged {acknowledged}"
        );
        assert_eq!(
            offset % CHUNK as u64,
            0,
            "round {round}: a partial chunk was committed"
        );
        let stop = AtomicBool::new(false);
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let kill_after = Duration::from_millis(20 + (seed >> 33) % 400);
        let addr = server.addr.clone();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(state) =
                        try_request(&addr, "GET", &path, &[("Authorization", &auth)], b"")
                    else {
                        return;
                    };
                    let offset = state.json()["offset"].as_u64().unwrap() as usize;
                    if offset == TOTAL {
                        return;
                    }
                    match try_put(&addr, &auth, &path, offset, &data, true) {
                        Ok(resp) if resp.status == 200 => {
                            acked.fetch_max(
                                resp.json()["offset"].as_u64().unwrap(),
                                Ordering::SeqCst,
                            );
                        }
                        Ok(resp) => assert!(
                            [409, 503].contains(&resp.status),
                            "round {round}: {} {}",
                            resp.status,
                            resp.text()
                        ),
                        Err(_) => return,
                    }
                }
            });
            std::thread::sleep(kill_after);
            drop(server);
            stop.store(true, Ordering::SeqCst);
        });
        let part = store
            .part_files()
            .into_iter()
            .find(|(name, _)| name.starts_with(&id));
        let part_len = part.map_or(0, |(_, len)| len);
        assert!(
            part_len >= acked.load(Ordering::SeqCst),
            "round {round}: the part file lost acknowledged bytes"
        );
        if part_len > acked.load(Ordering::SeqCst) {
            killed_mid_chunk += 1;
        }
    }
    eprintln!(
        "{killed_mid_chunk} of {rounds} kills left a partial chunk behind; acknowledged before the last restart: {}",
        acked.load(Ordering::SeqCst)
    );
    assert!(
        killed_mid_chunk >= mid_chunk,
        "too few kills landed in the middle of a chunk"
    );
    assert!(
        acked.load(Ordering::SeqCst) < TOTAL as u64,
        "the upload ended before the kills did"
    );

    let server = Server::start(&store, &flags);
    let client = Client::new(&server, &token);
    loop {
        let offset = client.get(&path).json()["offset"].as_u64().unwrap() as usize;
        if offset == TOTAL {
            break;
        }
        let resp = try_put(&server.addr, &auth, &path, offset, &data, false).unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let done = client.complete(&id, &md5_hex(&data));
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(client.get(&format!("{path}file")).body, data);
}

both_backends!(kill_nine_at_random_moments, kill_nine_without_sync);
