//! Requests on one upload never interleave: a second request waits for the
//! lock and then gets 409; a silent client is cut off and frees the lock.

use crate::both_backends;
use crate::common::*;
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

/// Starts a raw chunk PUT and sends only `sent` of its bytes.
fn stalled_put(
    server: &Server,
    auth: &str,
    path: &str,
    range: &str,
    data: &[u8],
    sent: usize,
) -> std::net::TcpStream {
    partial_request(
        server,
        "PUT",
        path,
        &[
            ("Authorization", auth),
            ("Content-Range", range),
            ("Content-Type", "application/octet-stream"),
        ],
        data.len() as u64,
        &data[..sent],
    )
}

fn a_second_request_waits_then_gets_busy(backend: Backend) {
    let setup = Setup::new(backend, &["--lock-timeout", "1s", "--read-timeout", "20s"]);
    let client = setup.client();
    let first = client.put_raw("/upload/?filename=l.bin", "bytes 0-9/30", b"0123456789");
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    let data = b"abcdefghij";
    let mut holder = stalled_put(
        &setup.server,
        &client.auth,
        &path,
        "bytes 10-19/30",
        data,
        4,
    );
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let busy = client.put_raw(&path, "bytes 10-19/30", b"ABCDEFGHIJ");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited for the lock"
    );
    assert_eq!(
        (busy.status, busy.json()),
        (409, json!({"detail": "Upload is busy", "offset": 10}))
    );
    let complete = client.complete(&id, "x");
    assert_eq!(
        (complete.status, complete.json()),
        (409, json!({"detail": "Upload is busy", "offset": 10}))
    );
    let delete = client.send("DELETE", &path, &[], b"");
    assert_eq!(delete.status, 409);

    // The holder finishes: its bytes count, the busy request's do not.
    holder.write_all(&data[4..]).unwrap();
    let done = read_response(holder);
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["offset"], 20);
    let last = client.put_raw(&path, "bytes 20-29/30", b"klmnopqrst");
    assert_eq!(last.status, 200);
    assert_eq!(
        client
            .complete(&id, &md5_hex(b"0123456789abcdefghijklmnopqrst"))
            .status,
        200
    );
}

fn a_silent_client_is_cut_off_and_frees_the_upload(backend: Backend) {
    let setup = Setup::new(backend, &["--read-timeout", "1s", "--lock-timeout", "5s"]);
    let client = setup.client();
    let first = client.put_raw("/upload/?filename=s.bin", "bytes 0-9/20", b"0123456789");
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    let holder = stalled_put(
        &setup.server,
        &client.auth,
        &path,
        "bytes 10-19/20",
        b"abcdefghij",
        3,
    );
    let started = Instant::now();
    let cut = read_response(holder);
    assert_eq!(
        (cut.status, cut.json()),
        (
            408,
            json!({"detail": "Timed out waiting for the request body"})
        )
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    eventually("the partial chunk is cut off", || {
        setup.store.part_files() == vec![(format!("{id}.part"), 10)]
    });
    let next = client.put_raw(&path, "bytes 10-19/20", b"abcdefghij");
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(
        client
            .complete(&id, &md5_hex(b"0123456789abcdefghij"))
            .status,
        200
    );
}

/// Many clients race the same chunk: exactly one wins, the others learn
/// the offset or that the upload is busy, and the file stays exact.
fn racing_chunks_have_one_winner(backend: Backend) {
    let setup = Setup::new(backend, &["--lock-timeout", "5s"]);
    race_rounds(&[setup.client()], 8, 200_000, 4);
}

both_backends!(
    a_second_request_waits_then_gets_busy,
    a_silent_client_is_cut_off_and_frees_the_upload,
    racing_chunks_have_one_winner,
);
