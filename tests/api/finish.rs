//! The finish line: an upload whose bytes are all in is complete, whatever
//! moment its client vanished or its server died, and a retried completion
//! of an intact upload answers 200 with it. Each case repeats its reset or
//! kill at spread moments around the last byte and the completion, enough
//! rounds to land in the windows that lost uploads before completion was
//! one step.

use crate::all_backends;
use crate::common::*;
use std::io::Write;
use std::time::Duration;

/// A killed server's leases run out quickly, and requests wait for them.
const CRASH_FLAGS: &[&str] = &["--lease-time", "500ms", "--lock-timeout", "5s"];
const SIZE: usize = 300_000;
/// Where the last PATCH starts.
const LAST: usize = 200_000;

/// A reproducible spread of moments.
struct Moments(u64);

impl Moments {
    /// Up to `max_us` microseconds.
    fn next(&mut self, max_us: u64) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        Duration::from_micros((self.0 >> 33) % (max_us + 1))
    }
}

/// Sends a whole request, then resets the connection (RST, not FIN) after
/// `after`, whatever the server did by then.
fn send_then_reset(addr: &str, head: &[u8], body: &[u8], after: Duration) {
    let mut stream = connect(addr);
    stream.write_all(head).unwrap();
    stream.write_all(body).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(after);
    reset(stream);
}

fn tus_create(client: &Client, len: usize) -> String {
    let len = len.to_string();
    let resp = client.send(
        "POST",
        "/files/",
        &[
            TUS,
            ("Upload-Length", &len),
            ("Upload-Metadata", "filename ZmluaXNo"),
        ],
        b"",
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    resp.location_id()
}

fn tus_patch(client: &Client, id: &str, offset: usize, data: &[u8]) -> Response {
    let offset = offset.to_string();
    client.send(
        "PATCH",
        &format!("/files/{id}"),
        &[TUS, STREAM, ("Upload-Offset", &offset)],
        data,
    )
}

/// The head of a PATCH of `len` bytes at `offset`.
fn tus_patch_head(client: &Client, id: &str, offset: usize, len: usize) -> Vec<u8> {
    let offset = offset.to_string();
    request_head(
        "PATCH",
        &format!("/files/{id}"),
        &client.server.addr,
        &[
            ("Authorization", &client.auth),
            TUS,
            STREAM,
            ("Upload-Offset", &offset),
        ],
        Some(len as u64),
    )
}

/// A tus upload's offset and length as `HEAD` answers them.
fn tus_head(client: &Client, id: &str) -> (usize, usize) {
    let resp = client.send("HEAD", &format!("/files/{id}"), &[TUS], b"");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let number = |name| resp.header(name).unwrap().parse::<usize>().unwrap();
    (number("upload-offset"), number("upload-length"))
}

/// What every tus client concludes from `HEAD` holds: an upload whose
/// offset reached its length is complete, with its bytes and checksum; one
/// that did not resumes from its offset and completes. Returns whether
/// the upload was already complete.
fn tus_resume_and_check(client: &Client, id: &str, data: &[u8]) -> bool {
    let (offset, length) = tus_head(client, id);
    assert_eq!(length, data.len());
    let was_complete = offset == length;
    if !was_complete {
        let resp = tus_patch(client, id, offset, &data[offset..]);
        assert_eq!(resp.status, 204, "{}", resp.text());
    }
    let row = client.get(&format!("/upload/{id}/")).json();
    assert_eq!(
        row["status"], 2,
        "upload {id}: HEAD said {offset} of {length}, yet it is not complete: {row}"
    );
    assert_eq!(row["md5"], md5_hex(data), "upload {id}");
    let file = client.get(&format!("/upload/{id}/file"));
    assert_eq!(file.status, 200, "upload {id}: {}", file.text());
    assert!(file.body == data, "upload {id}: downloaded bytes differ");
    was_complete
}

/// A chunked upload of all of `data` in one chunk, not yet completed; its id.
fn chunked_whole(client: &Client, data: &[u8]) -> String {
    let range = format!("bytes 0-{}/{}", data.len() - 1, data.len());
    let created = client.put_raw("/upload/?filename=finish.bin", &range, data);
    assert_eq!(created.status, 200, "{}", created.text());
    created.json()["id"].as_str().unwrap().to_owned()
}

/// The completion POST of upload `id` with the MD5 of `data`: its head and
/// body.
fn completion_request(client: &Client, id: &str, data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let body = format!("md5={}", md5_hex(data)).into_bytes();
    let head = request_head(
        "POST",
        &format!("/upload/{id}/"),
        &client.server.addr,
        &[
            ("Authorization", &client.auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        Some(body.len() as u64),
    );
    (head, body)
}

/// A tus PATCH carrying the last bytes, its connection reset 0–6 ms after
/// them: every upload whose offset reached its length is complete.
fn tus_last_patch_reset(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let mut moments = Moments(24);
    let uploads: Vec<(String, Vec<u8>)> = (0..40)
        .map(|round| {
            let data = bytes(SIZE, round);
            let id = tus_create(&client, SIZE);
            assert_eq!(tus_patch(&client, &id, 0, &data[..LAST]).status, 204);
            let head = tus_patch_head(&client, &id, LAST, SIZE - LAST);
            send_then_reset(&setup.server.addr, &head, &data[LAST..], moments.next(6000));
            (id, data)
        })
        .collect();
    // Whatever the server still does with the last requests ends first.
    std::thread::sleep(Duration::from_millis(300));
    let complete = uploads
        .iter()
        .filter(|(id, data)| tus_resume_and_check(&client, id, data))
        .count();
    eprintln!(
        "{complete} of {} uploads were complete at HEAD",
        uploads.len()
    );
    assert!(complete > 0, "no reset came after the last byte was in");
}

/// A completion POST of the chunked protocol, its connection reset
/// 0–3 ms after it: the retried POST answers 200 with the upload, never
/// 410, and the bytes are intact.
fn chunked_completion_reset(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let mut moments = Moments(60);
    let uploads: Vec<(String, Vec<u8>)> = (0..60)
        .map(|round| {
            let data = bytes(SIZE, 100 + round);
            let id = chunked_whole(&client, &data);
            let (head, body) = completion_request(&client, &id, &data);
            send_then_reset(&setup.server.addr, &head, &body, moments.next(3000));
            (id, data)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for (id, data) in &uploads {
        let retried = client.complete(id, &md5_hex(data));
        assert_eq!(retried.status, 200, "upload {id}: {}", retried.text());
        assert_eq!(retried.json()["status"], 2, "upload {id}");
        let file = client.get(&format!("/upload/{id}/file"));
        assert!(file.body == *data, "upload {id}: downloaded bytes differ");
    }
}

/// `kill -9` of the server 0–8 ms after a tus PATCH's last byte (0–40 ms
/// with the bytes in a bucket, where the chunk's commit waits for a tail
/// and a state object to be put), then a restart: the upload is complete
/// or resumes and completes.
fn tus_kill_at_the_last_byte(backend: Backend) {
    let spread_us = if backend == Backend::S3 { 40_000 } else { 8000 };
    let store = Store::new(backend);
    let token = store.token("alice");
    let mut moments = Moments(7);
    let mut complete = 0;
    for round in 0..15 {
        let data = bytes(SIZE, 200 + round);
        let server = Server::start(&store, CRASH_FLAGS);
        let client = Client::new(&server, &token);
        let id = tus_create(&client, SIZE);
        assert_eq!(tus_patch(&client, &id, 0, &data[..LAST]).status, 204);
        let mut stream = connect(&server.addr);
        stream
            .write_all(&tus_patch_head(&client, &id, LAST, SIZE - LAST))
            .unwrap();
        stream.write_all(&data[LAST..]).unwrap();
        std::thread::sleep(moments.next(spread_us));
        drop(client);
        drop(server);
        drop(stream);
        let server = Server::start(&store, CRASH_FLAGS);
        let client = Client::new(&server, &token);
        if tus_resume_and_check(&client, &id, &data) {
            complete += 1;
        }
    }
    eprintln!("{complete} of 15 uploads were complete after the restart");
    assert!(complete > 0, "no kill came after the last byte was in");
}

/// `kill -9` of the server 0–8 ms after a completion POST, then a restart:
/// the retried POST answers 200 and the bytes are intact.
fn chunked_kill_at_the_completion(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("alice");
    let mut moments = Moments(8);
    for round in 0..15 {
        let data = bytes(SIZE, 300 + round);
        let server = Server::start(&store, CRASH_FLAGS);
        let client = Client::new(&server, &token);
        let id = chunked_whole(&client, &data);
        let (head, body) = completion_request(&client, &id, &data);
        let mut stream = connect(&server.addr);
        stream.write_all(&head).unwrap();
        stream.write_all(&body).unwrap();
        std::thread::sleep(moments.next(8000));
        drop(client);
        drop(server);
        drop(stream);
        let server = Server::start(&store, CRASH_FLAGS);
        let client = Client::new(&server, &token);
        let retried = client.complete(&id, &md5_hex(&data));
        assert_eq!(retried.status, 200, "round {round}: {}", retried.text());
        let file = client.get(&format!("/upload/{id}/file"));
        assert_eq!(file.status, 200, "round {round}: {}", file.text());
        assert!(file.body == data, "round {round}: downloaded bytes differ");
    }
}

all_backends!(
    tus_last_patch_reset,
    chunked_completion_reset,
    tus_kill_at_the_last_byte,
    chunked_kill_at_the_completion,
);
