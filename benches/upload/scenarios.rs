//! The scenarios (a) to (e), each on a fresh server.

use crate::client::*;
use crate::common::*;
use crate::measure::*;
use crate::report::*;
use crate::subject::*;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The MD5s the uploads must end with.
pub struct Expected {
    pub one_gib: String,
    /// Of the 10 GiB upload, where (d) runs.
    pub ten_gib: Option<String>,
}

/// One scenario of one subject, protocol and sync setting.
#[derive(Clone, Copy)]
pub struct Case<'a> {
    pub subject: Subject<'a>,
    pub protocol: Protocol,
    pub sync: bool,
    pub scenario: char,
}

impl Case<'_> {
    pub fn label(&self, text: &str) -> String {
        let note = if self.sync { "" } else { ", no fdatasync" };
        format!("{} {text}{note}", self.protocol.name())
    }

    /// Runs it on a fresh server; its row, and the completion POST after
    /// (a) synced and after (d) on the chunked protocol. `md5sum` of
    /// `source` (the bytes `file` reads) just before it gives the row its
    /// own measure of the machine: the machine's speed drifts by a third
    /// within one round.
    pub fn run(&self, file: &File, source: &Path, expected: &Expected) -> Vec<Line> {
        let md5sum_beside = mb_per_s(GIB, md5sum(source).1);
        let flags: Vec<&str> = [
            self.subject.sync_flags(self.sync),
            self.protocol.server_flags(),
        ]
        .concat();
        let name = self.subject.name();
        let line = |label: String, figures| Line {
            subject: name.clone(),
            label,
            figures,
        };
        let (text, len, chunk) = match self.scenario {
            'a' => ("(a) 1 GiB in 8 MiB chunks", GIB, 8 * MIB),
            'b' => ("(b) 1 GiB in 1 MiB chunks", GIB, MIB),
            'd' => ("(d) 10 GiB in 8 MiB chunks", 10 * GIB, 8 * MIB),
            'e' => {
                let small = small_uploads(self.subject, file, self.protocol, &flags);
                let label = self.label("(e) 2000 x 256 KiB, one request each, 32 at once");
                return vec![line(label, small)];
            }
            _ => {
                let row = concurrent(self.subject, file, self.protocol, &flags);
                let label = self.label("(c) 64 x 16 MiB at once, 1 MiB chunks");
                return vec![line(label, Figures::Row(row, md5sum_beside))];
            }
        };
        let md5 = match len {
            GIB => &expected.one_gib,
            _ => expected.ten_gib.as_ref().expect("the MD5 of 10 GiB"),
        };
        let upload = (len, chunk, self.protocol);
        let (row, completion) = sequential(self.subject, file, md5, upload, &flags);
        let mut lines = vec![line(self.label(text), Figures::Row(row, md5sum_beside))];
        if let Some(took) = completion.filter(|_| self.scenario != 'b' && self.sync) {
            let label = self.label(&format!("(d) completion POST of {} GiB", len / GIB));
            lines.push(line(label, Figures::Completion(took)));
        }
        lines
    }
}

/// One upload of `len` bytes in chunks of `chunk` bytes on a fresh server;
/// the row and, for the chunked protocol, the latency of the completion POST
/// (a tus upload completes with its last PATCH).
pub fn sequential(
    subject: Subject,
    file: &File,
    md5: &str,
    (len, chunk, protocol): (u64, u64, Protocol),
    flags: &[&str],
) -> (Row, Option<Duration>) {
    let running = subject.start(flags);
    let (server, auth) = (&running.server, running.auth.as_str());
    let timer = Timer::start();
    let (id, latencies) = upload(server, auth, file, (0, len, chunk), protocol);
    let timed = timer.stop();
    let completion = (protocol == Protocol::Chunked).then(|| {
        let started = Instant::now();
        let resp = server.request(
            "POST",
            &format!("/upload/{id}/"),
            &[
                ("Authorization", auth),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            format!("md5={md5}").as_bytes(),
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
        started.elapsed()
    });
    assert_eq!(
        running.stored_md5(&id),
        md5,
        "the stored upload is the file"
    );
    (running.row(len, timed, latencies), completion)
}

/// 64 uploads of 16 MiB at once, in 1 MiB chunks, on a fresh server.
pub fn concurrent(subject: Subject, file: &File, protocol: Protocol, flags: &[&str]) -> Row {
    let running = subject.start(flags);
    let (server, auth) = (&running.server, running.auth.as_str());
    let timer = Timer::start();
    let latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..64u64)
            .map(|i| {
                scope.spawn(move || {
                    upload(server, auth, file, (i * 16 * MIB, 16 * MIB, MIB), protocol).1
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    running.row(GIB, timer.stop(), latencies)
}

/// Scenario (e): how many small uploads of `SMALL` bytes, `SMALL_AT_ONCE`
/// at a time, a server takes a second.
pub const SMALL: u64 = 256 << 10;
pub const SMALL_UPLOADS: u64 = 2000;
pub const SMALL_AT_ONCE: u64 = 32;

/// `SMALL_UPLOADS` uploads of `SMALL` bytes on a fresh server, each in one
/// request that creates it, carries every byte and completes it, from
/// `SMALL_AT_ONCE` clients at once, each on its own kept-alive connection.
pub fn small_uploads(subject: Subject, file: &File, protocol: Protocol, flags: &[&str]) -> Figures {
    let source_at = |n: u64| n * SMALL % GIB;
    // The chunked protocol's whole-file POST carries its MD5.
    let md5s: Vec<String> = (0..SMALL_UPLOADS)
        .map(|n| {
            let mut piece = vec![0u8; SMALL as usize];
            file.read_exact_at(&mut piece, source_at(n)).unwrap();
            md5_hex(&piece)
        })
        .collect();
    let running = subject.start(flags);
    let (server, auth) = (&running.server, running.auth.as_str());
    let length = SMALL.to_string();
    let timer = Timer::start();
    let last_ids: Vec<(u64, String)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..SMALL_AT_ONCE)
            .map(|client| {
                let (md5s, length) = (&md5s, length.as_str());
                scope.spawn(move || {
                    let mut conn = None;
                    let mut last = (0, String::new());
                    for n in (client..SMALL_UPLOADS).step_by(SMALL_AT_ONCE as usize) {
                        let (resp, _) = if protocol.is_tus() {
                            let headers = [
                                ("Authorization", auth),
                                ("Tus-Resumable", "1.0.0"),
                                ("Content-Type", "application/offset+octet-stream"),
                                ("Upload-Length", length),
                            ];
                            let head = ("POST", "/files/", &headers[..]);
                            send_from_file(server, &mut conn, head, file, source_at(n), SMALL)
                        } else {
                            let path = format!("/upload/?filename=s.bin&md5={}", md5s[n as usize]);
                            let headers = [
                                ("Authorization", auth),
                                ("Content-Type", "application/octet-stream"),
                            ];
                            let head = ("POST", path.as_str(), &headers[..]);
                            send_from_file(server, &mut conn, head, file, source_at(n), SMALL)
                        };
                        let id = if protocol.is_tus() {
                            assert_eq!(resp.header("upload-offset"), Some(length));
                            resp.location_id()
                        } else {
                            resp.json()["id"].as_str().unwrap().to_owned()
                        };
                        last = (n, id);
                    }
                    last
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let timed = timer.stop();
    for (n, id) in &last_ids {
        assert_eq!(running.stored_md5(id), md5s[*n as usize], "upload {n}");
    }
    let row = running.row(SMALL * SMALL_UPLOADS, timed, Vec::new());
    Figures::Small {
        per_s: SMALL_UPLOADS as f64 / row.elapsed.as_secs_f64(),
        peak_rss: row.peak_rss,
        server_cpu: row.server_cpu,
        steal: row.steal,
    }
}
