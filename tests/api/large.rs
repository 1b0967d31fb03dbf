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

fn one_gib_upload_keeps_memory_flat(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("alice");
    let server = Server::start(&store, &[]);
    let auth = format!("Token {token}");
    let mut hasher = md5::Md5::new();
    let mut id = String::new();
    let mut n = 0u64;
    for start in (0..GIB).step_by(CHUNK as usize) {
        let path = if start == 0 {
            "/upload/?filename=big.bin".to_owned()
        } else {
            format!("/upload/{id}/")
        };
        let range = format!("bytes {start}-{}/{GIB}", start + CHUNK - 1);
        let mut stream = connect(&server.addr);
        stream
            .write_all(&request_head(
                "PUT",
                &path,
                &server.addr,
                &[("Authorization", &auth), ("Content-Range", &range)],
                Some(CHUNK),
            ))
            .unwrap();
        for _ in 0..CHUNK / PIECE as u64 {
            let data = piece(n);
            n += 1;
            hasher.update(&data);
            stream.write_all(&data).unwrap();
        }
        let resp = read_response(stream);
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["offset"], start + CHUNK);
        id = resp.json()["id"].as_str().unwrap().to_owned();
    }
    let md5: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let client = Client::new(&server, &token);
    let done = client.complete(&id, &md5);
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(store.part_files(), vec![(format!("{id}.done"), GIB)]);

    // Download it back, hashing as it streams.
    let mut stream = connect(&server.addr);
    stream
        .write_all(&request_head(
            "GET",
            &format!("/upload/{id}/file"),
            &server.addr,
            &[("Authorization", &auth)],
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
    let download_md5: String = downloaded
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(download_md5, md5);

    let peak = server.peak_rss();
    eprintln!(
        "server peak RSS after 1 GiB up and down: {} MiB",
        peak >> 20
    );
    assert!(peak < 64 << 20, "server peak RSS {} MiB", peak >> 20);
}

both_backends!(one_gib_upload_keeps_memory_flat);
