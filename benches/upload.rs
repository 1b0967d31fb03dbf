//! Throughput and memory of chunkd, against the machine's own limits.
//!
//!     cargo bench --bench upload
//!
//! For each backend (SQLite, PostgreSQL; CHUNKD_BENCH_BACKENDS=sqlite to
//! pick) and a fresh server per scenario, prints MB/s, chunk latency
//! p50/p99 and the server's peak RSS:
//!   (a) one 1 GiB upload in 8 MiB chunks, (b) the same in 1 MiB chunks,
//!   (c) 64 concurrent uploads of 16 MiB in 1 MiB chunks,
//!   (d) the completion POST of the 1 GiB upload,
//! and, in the same run, `md5sum` of the same bytes and a plain write of
//! them to disk (with fdatasync).

#[path = "../tests/api/common.rs"]
mod common;

use common::*;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// One chunk: `len` bytes at `start` of an upload of `total` bytes, read
/// from `file` at `file_pos`.
struct Chunk {
    file_pos: u64,
    start: u64,
    len: u64,
    total: u64,
}

/// Sends one raw chunk, streaming it from the file.
fn put_chunk(
    server: &Server,
    auth: &str,
    path: &str,
    file: &File,
    chunk: Chunk,
) -> (Response, Duration) {
    let began = Instant::now();
    let mut stream = connect(&server.addr);
    let range = format!(
        "bytes {}-{}/{}",
        chunk.start,
        chunk.start + chunk.len - 1,
        chunk.total
    );
    stream
        .write_all(&request_head(
            "PUT",
            path,
            &server.addr,
            &[("Authorization", auth), ("Content-Range", &range)],
            Some(chunk.len),
        ))
        .unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut sent = 0;
    while sent < chunk.len {
        let n = (chunk.len - sent).min(MIB) as usize;
        file.read_exact_at(&mut buf[..n], chunk.file_pos + sent)
            .unwrap();
        stream.write_all(&buf[..n]).unwrap();
        sent += n as u64;
    }
    let resp = read_response(stream);
    assert_eq!(resp.status, 200, "{}", resp.text());
    (resp, began.elapsed())
}

/// Uploads the `len` bytes of `file` from `offset` in chunks; returns the
/// id and each chunk's latency.
fn upload(
    server: &Server,
    auth: &str,
    file: &File,
    offset: u64,
    len: u64,
    chunk: u64,
) -> (String, Vec<Duration>) {
    let mut id = String::new();
    let mut latencies = Vec::new();
    let mut sent = 0;
    while sent < len {
        let n = (len - sent).min(chunk);
        let path = if sent == 0 {
            "/upload/?filename=bench.bin".to_owned()
        } else {
            format!("/upload/{id}/")
        };
        let (resp, took) = put_chunk(
            server,
            auth,
            &path,
            file,
            Chunk {
                file_pos: offset + sent,
                start: sent,
                len: n,
                total: len,
            },
        );
        id = resp.json()["id"].as_str().unwrap().to_owned();
        latencies.push(took);
        sent += n;
    }
    (id, latencies)
}

struct Row {
    label: String,
    bytes: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    peak_rss: u64,
}

fn print_row(backend: &str, row: &mut Row) {
    row.latencies.sort();
    println!(
        "{backend:<9} {:<40} {:>8.0} MB/s  p50 {:>7.1} ms  p99 {:>7.1} ms  peak RSS {:>4} MiB",
        row.label,
        mb_per_s(row.bytes, row.elapsed),
        percentile(&row.latencies, 0.5),
        percentile(&row.latencies, 0.99),
        row.peak_rss >> 20
    );
}

fn md5sum(path: &std::path::Path) -> (String, Duration) {
    let began = Instant::now();
    let out = Command::new("md5sum").arg(path).output().expect("md5sum");
    let took = began.elapsed();
    let text = String::from_utf8(out.stdout).unwrap();
    (text.split_whitespace().next().unwrap().to_owned(), took)
}

fn main() {
    let backends: Vec<Backend> = std::env::var("CHUNKD_BENCH_BACKENDS")
        .unwrap_or_else(|_| "sqlite,postgres".into())
        .split(',')
        .map(|b| match b.trim() {
            "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => panic!("unknown backend {other}"),
        })
        .collect();
    let scratch = TempDir::new("bench");
    let source = scratch.0.join("source.bin");
    {
        let mut file = File::create(&source).unwrap();
        for n in 0..GIB / MIB {
            file.write_all(&bytes(MIB as usize, n)).unwrap();
        }
        file.sync_all().unwrap();
    }
    // Warm the page cache, then measure the machine.
    md5sum(&source);
    let (md5, md5_took) = md5sum(&source);
    let plain = scratch.0.join("plain.bin");
    let data = bytes(MIB as usize, 7);
    let began = Instant::now();
    {
        let file = File::create(&plain).unwrap();
        for n in 0..GIB / MIB {
            file.write_all_at(&data, n * MIB).unwrap();
        }
        file.sync_data().unwrap();
    }
    let write_took = began.elapsed();
    std::fs::remove_file(&plain).unwrap();
    println!(
        "machine   md5sum of 1 GiB: {:.0} MB/s; plain write of 1 GiB + fdatasync: {:.0} MB/s",
        mb_per_s(GIB, md5_took),
        mb_per_s(GIB, write_took)
    );

    let file = File::open(&source).unwrap();
    for backend in backends {
        let name = format!("{backend:?}").to_lowercase();
        for (flags, note) in [(&[][..], ""), (&["--sync", "false"][..], ", --sync false")] {
            for (label, chunk) in [
                ("(a) 1 GiB in 8 MiB chunks", 8 * MIB),
                ("(b) 1 GiB in 1 MiB chunks", MIB),
            ] {
                let (mut row, completion) = sequential(backend, &file, &md5, chunk, flags);
                row.label = format!("{label}{note}");
                print_row(&name, &mut row);
                if chunk == 8 * MIB && note.is_empty() {
                    println!(
                        "{name:<9} (d) completion POST of 1 GiB: {:.1} ms",
                        completion.as_secs_f64() * 1e3
                    );
                }
            }
            let mut row = concurrent(backend, &file, flags);
            row.label = format!("(c) 64 concurrent x 16 MiB, 1 MiB chunks{note}");
            print_row(&name, &mut row);
        }
    }
}

/// One 1 GiB upload in chunks of `chunk` bytes on a fresh server; the row
/// and the completion latency.
fn sequential(
    backend: Backend,
    file: &File,
    md5: &str,
    chunk: u64,
    flags: &[&str],
) -> (Row, Duration) {
    let store = Store::new(backend);
    let auth = format!("Token {}", store.token("bench"));
    let server = Server::start(&store, flags);
    let began = Instant::now();
    let (id, latencies) = upload(&server, &auth, file, 0, GIB, chunk);
    let elapsed = began.elapsed();
    let completion = Instant::now();
    let resp = server.request(
        "POST",
        &format!("/upload/{id}/"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("md5={md5}").as_bytes(),
    );
    let completion = completion.elapsed();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let row = Row {
        label: String::new(),
        bytes: GIB,
        elapsed,
        latencies,
        peak_rss: server.peak_rss(),
    };
    (row, completion)
}

/// 64 uploads of 16 MiB at once, in 1 MiB chunks, on a fresh server.
fn concurrent(backend: Backend, file: &File, flags: &[&str]) -> Row {
    let store = Store::new(backend);
    let auth = format!("Token {}", store.token("bench"));
    let server = Server::start(&store, flags);
    let began = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..64u64)
            .map(|i| {
                let (server, auth) = (&server, &auth);
                scope.spawn(move || upload(server, auth, file, i * 16 * MIB, 16 * MIB, MIB).1)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    Row {
        label: String::new(),
        bytes: GIB,
        elapsed: began.elapsed(),
        latencies,
        peak_rss: server.peak_rss(),
    }
}
