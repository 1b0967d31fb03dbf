//! Throughput and memory of chunkd, against the machine's own limits.
//!
//!     cargo bench --bench upload
//!
//! For each backend (SQLite, PostgreSQL), each protocol (chunked at
//! /upload/, tus at /files/, and tus with `--hash-tus false`), with and
//! without `--sync`, and a fresh server
//! per scenario, prints MB/s, chunk latency p50/p99, the server's peak RSS
//! and CPU time (and on PostgreSQL the CPU time of the database processes
//! serving it), and the share of the machine's time that the hypervisor
//! gave to other guests meanwhile ("steal"):
//!   (a) one 1 GiB upload in 8 MiB chunks, (b) the same in 1 MiB chunks,
//!   (c) 64 concurrent uploads of 16 MiB in 1 MiB chunks,
//!   (d) the completion POST of the 1 GiB upload (chunked protocol), and
//!   of one of 10 GiB (the 1 GiB source sent ten times over) after it,
//!   (e) 2,000 small uploads of 256 KiB, 32 at once, each in one request
//!   that creates it, carries all its bytes and completes it (tus
//!   creation-with-upload; the chunked protocol's `POST /upload/` with
//!   its MD5), in uploads per second,
//! and, in the same run, `md5sum` of the same bytes, a plain write of them
//! to disk (with fdatasync) and a bare receive of (c) (`bare_receive`).
//! Each row runs `md5sum` again just before it, and prints its MB/s as a
//! multiple of that ("x md5sum").
//!
//! With `s3` among the backends (PostgreSQL, the bytes in a bucket of the
//! S3 emulator, moto), each round also measures the emulator's own ceiling:
//! the bytes of (a) and of (c) pushed straight into it with multipart
//! uploads of 8 MiB parts (chunkd's default), one part at a time per upload.
//!
//! A part of it, by comma lists in CHUNKD_BENCH_BACKENDS (sqlite,postgres,s3),
//! CHUNKD_BENCH_PROTOCOLS (chunked,tus,tus-unhashed), CHUNKD_BENCH_SYNC (on,off) and
//! CHUNKD_BENCH_SCENARIOS (a,b,c,d,e; the 1 GiB completion comes with a,
//! d is the 10 GiB upload and its completion, e the small uploads). CHUNKD_BENCH_ROUNDS=n
//! runs all of it n times over (each round measures the machine again) and
//! ends with each figure's median and range: on a shared machine one run's
//! figures drift by a third.

mod client;
mod emulator;
// The integration tests' harness (servers, stores, raw HTTP). It names the
// server binary with `CARGO_BIN_EXE_chunkd`, which cargo sets only for this
// package's tests and benches, so it is a module tree they both include
// rather than a crate of its own.
#[path = "../../tests/api/common/mod.rs"]
mod common;
mod measure;
mod report;
mod scenarios;
mod subject;

use client::*;
use common::*;
use emulator::*;
use measure::*;
use report::*;
use scenarios::*;
use std::fs::File;
use std::io::Write;
use subject::*;

/// The items of a comma list in `var`, or `all` when it is not set.
fn picked(var: &str, all: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| all.into())
        .split(',')
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

fn main() {
    let backends = picked("CHUNKD_BENCH_BACKENDS", "sqlite,postgres");
    let protocols = picked("CHUNKD_BENCH_PROTOCOLS", "chunked,tus,tus-unhashed");
    let syncs = picked("CHUNKD_BENCH_SYNC", "on,off");
    let scenarios = picked("CHUNKD_BENCH_SCENARIOS", "a,b,c,d,e");
    let rounds: usize = std::env::var("CHUNKD_BENCH_ROUNDS")
        .map(|n| n.parse().expect("CHUNKD_BENCH_ROUNDS: a number"))
        .unwrap_or(1)
        .max(1);
    let rustus = std::env::var_os("CHUNKD_BENCH_RUSTUS").map(std::path::PathBuf::from);
    let default_congestion =
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap_or_default();
    println!(
        "client    TCP congestion control {} (the machine's default: {})",
        String::from_utf8_lossy(CLIENT_CONGESTION),
        default_congestion.trim()
    );
    let mut subjects: Vec<Subject> = backends
        .iter()
        .map(|b| match b.as_str() {
            "sqlite" => Subject::Chunkd(Backend::Sqlite),
            "postgres" => Subject::Chunkd(Backend::Postgres),
            "s3" => Subject::Chunkd(Backend::S3),
            other => panic!("unknown backend {other}"),
        })
        .collect();
    subjects.extend(rustus.as_deref().map(Subject::Rustus));
    let mut cases = Vec::new();
    for &subject in &subjects {
        for protocol in Protocol::ALL {
            // rustus speaks tus and hashes nothing: its rows are the tus ones.
            let speaks = match subject {
                Subject::Chunkd(_) => true,
                Subject::Rustus(_) => protocol == Protocol::Tus,
            };
            if !speaks || !protocols.iter().any(|p| p == protocol.name()) {
                continue;
            }
            for sync in [true, false] {
                if !syncs.iter().any(|s| s == if sync { "on" } else { "off" }) {
                    continue;
                }
                for scenario in ['a', 'b', 'c', 'd', 'e'] {
                    // The 10 GiB upload is for its completion: the chunked
                    // protocol's, on the server as it is by default.
                    let runs = scenario != 'd' || (protocol == Protocol::Chunked && sync);
                    if runs && scenarios.iter().any(|s| s == &scenario.to_string()) {
                        cases.push(Case {
                            subject,
                            protocol,
                            sync,
                            scenario,
                        });
                    }
                }
            }
        }
    }
    let scratch = TempDir::new("bench");
    let source = scratch.0.join("source.bin");
    {
        let mut file = File::create(&source).unwrap();
        for n in 0..GIB / MIB {
            file.write_all(&bytes(MIB as usize, n)).unwrap();
        }
        file.sync_all().unwrap();
    }
    let file = File::open(&source).unwrap();
    let expected = Expected {
        one_gib: md5sum(&source).0,
        ten_gib: cases
            .iter()
            .any(|case| case.scenario == 'd')
            .then(|| md5_repeated(&source, 10)),
    };
    let mut all = Vec::new();
    for round in 1..=rounds {
        if rounds > 1 {
            println!("\nround {round} of {rounds}");
        }
        // The page cache is warm from here on.
        let line = machine(&source, &file, &scratch.0);
        line.print();
        let ceiling = backends
            .iter()
            .any(|b| b == "s3")
            .then(|| emulator_ceiling(&file));
        ceiling.iter().for_each(Line::print);
        // Each round starts at another case, so that a slow spell of the
        // machine does not fall on the same rows every round.
        let first = (round - 1) * cases.len() / rounds;
        let mut by_case: Vec<Vec<Line>> = cases.iter().map(|_| Vec::new()).collect();
        for i in (0..cases.len()).map(|i| (first + i) % cases.len()) {
            by_case[i] = cases[i].run(&file, &source, &expected);
            by_case[i].iter().for_each(Line::print);
        }
        all.push(
            std::iter::once(line)
                .chain(ceiling)
                .chain(by_case.into_iter().flatten())
                .collect(),
        );
    }
    if rounds > 1 {
        print_summary(&all);
    }
}
