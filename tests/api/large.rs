//! A 1 GiB upload and download through a server whose memory stays flat.

use crate::both_backends;
use crate::common::*;
use md5::Digest;
use std::io::{BufRead, BufReader, Read, Write};

const GIB: u64 = 1 << 30;
const CHUNK: u64 = 64 << 20;
const PIECE: usize = 1 << 20;

/// The byte pattern of piece `n`: cheap to make, different everywhere.
fn piece(n: u64) -> Vec<u8> {
    let mut data = vec![0u8; PIECE];
    for (i, word) in data.chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64).to_le_bytes());
    }
    data
}

/// Sends 1 GiB in `CHUNK`s, each request's head made by `head(start,
/// id)` (`id`: what `answered` made of the previous answer); the MD5 of the
/// bytes sent, and the id.
fn send_gib(
    server: &Server,
    head: impl Fn(u64, &str) -> Vec<u8>,
    answered: impl Fn(u64, &Response) -> String,
) -> (String, String) {
    let mut hasher = md5::Md5::new();
    let mut id = String::new();
    let mut n = 0u64;
    for start in (0..GIB).step_by(CHUNK as usize) {
        let mut stream = connect(&server.addr);
        stream.write_all(&head(start, &id)).unwrap();
        for _ in 0..CHUNK / PIECE as u64 {
            let data = piece(n);
            n += 1;
            hasher.update(&data);
            stream.write_all(&data).unwrap();
        }
        let resp = read_response(stream);
        assert_eq!(resp.status, 200, "{}", resp.text());
        id = answered(start, &resp);
    }
    (hex(hasher.finalize().as_slice()), id)
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads `path`, hashing as it streams; its MD5.
fn download_md5(server: &Server, auth: &str, path: &str) -> String {
    let mut stream = connect(&server.addr);
    stream
        .write_all(&request_head(
            "GET",
            path,
            &server.addr,
            &[("Authorization", auth)],
            None,
        ))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut length = 0u64;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    assert_eq!(length, GIB);
    let mut downloaded = md5::Md5::new();
    let mut buf = vec![0u8; PIECE];
    let mut got = 0u64;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        downloaded.update(&buf[..n]);
        got += n as u64;
    }
    assert_eq!(got, GIB);
    hex(downloaded.finalize().as_slice())
}

fn assert_flat(server: &Server, what: &str) {
    let peak = server.peak_rss();
    eprintln!("server peak RSS after {what}: {} MiB", peak >> 20);
    assert!(peak < 64 << 20, "server peak RSS {} MiB", peak >> 20);
}

fn one_gib_upload_keeps_memory_flat(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("alice");
    let server = Server::start(&store, &[]);
    let auth = format!("Token {token}");
    let head = |start: u64, id: &str| {
        let path = if start == 0 {
            "/upload/?filename=big.bin".to_owned()
        } else {
            format!("/upload/{id}/")
        };
        let range = format!("bytes {start}-{}/{GIB}", start + CHUNK - 1);
        let headers = [("Authorization", auth.as_str()), ("Content-Range", &range)];
        request_head("PUT", &path, &server.addr, &headers, Some(CHUNK))
    };
    let (md5, id) = send_gib(&server, head, |start, resp| {
        assert_eq!(resp.json()["offset"], start + CHUNK);
        resp.json()["id"].as_str().unwrap().to_owned()
    });
    let client = Client::new(&server, &token);
    let done = client.complete(&id, &md5);
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(store.part_files(), vec![(format!("{id}.done"), GIB)]);
    assert_eq!(
        download_md5(&server, &auth, &format!("/upload/{id}/file")),
        md5
    );
    assert_flat(&server, "1 GiB up and down");
}

/// The same through FilePond's chunked upload: its start, its chunks
/// named by raw UTF-8 headers, the empty last chunk, and its load.
fn one_gib_filepond_upload_keeps_memory_flat(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("alice");
    let server = Server::start(&store, &[]);
    let client = Client::new(&server, &token);
    let auth = client.auth.clone();
    let ctype = multipart_type();
    let started = client.send(
        "POST",
        "/filepond/",
        &[
            ("Content-Type", &ctype),
            ("Upload-Length", &GIB.to_string()),
        ],
        &multipart(&[Part::Text("filepond", "{}")]),
    );
    assert_eq!(started.status, 200, "{}", started.text());
    let id = started.text();
    let head = |start: u64, _: &str| {
        let (offset, total) = (start.to_string(), GIB.to_string());
        let headers = [
            ("Authorization", auth.as_str()),
            STREAM,
            ("Upload-Offset", &offset),
            ("Upload-Length", &total),
            ("Upload-Name", "très grand.bin"),
        ];
        let path = format!("/filepond/?patch={id}");
        request_head("PATCH", &path, &server.addr, &headers, Some(CHUNK))
    };
    let (md5, answered) = send_gib(&server, head, |_, resp| resp.text());
    assert_eq!(answered, id);
    let total = GIB.to_string();
    let last = client.send(
        "PATCH",
        &format!("/filepond/?patch={id}"),
        &[
            STREAM,
            ("Upload-Offset", &total),
            ("Upload-Length", &total),
            ("Upload-Name", "très grand.bin"),
        ],
        b"",
    );
    assert_eq!(last.status, 200, "{}", last.text());
    let listed = client.get(&format!("/upload/{id}/")).json();
    assert_eq!(
        (listed["md5"].as_str(), listed["filename"].as_str()),
        (Some(md5.as_str()), Some("très grand.bin"))
    );
    assert_eq!(
        download_md5(&server, &auth, &format!("/filepond/?load={id}")),
        md5
    );
    assert_flat(&server, "1 GiB up and down through FilePond");
}

both_backends!(
    one_gib_upload_keeps_memory_flat,
    one_gib_filepond_upload_keeps_memory_flat
);
