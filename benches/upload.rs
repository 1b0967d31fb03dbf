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
//! A part of it, by comma lists in CHUNKD_BENCH_BACKENDS (sqlite,postgres),
//! CHUNKD_BENCH_PROTOCOLS (chunked,tus,tus-unhashed), CHUNKD_BENCH_SYNC (on,off) and
//! CHUNKD_BENCH_SCENARIOS (a,b,c,d,e; the 1 GiB completion comes with a,
//! d is the 10 GiB upload and its completion, e the small uploads). CHUNKD_BENCH_ROUNDS=n
//! runs all of it n times over (each round measures the machine again) and
//! ends with each figure's median and range: on a shared machine one run's
//! figures drift by a third.

#[path = "../tests/api/common/mod.rs"]
mod common;

use common::*;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
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

/// Which protocol a scenario speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `PUT /upload/` with `Content-Range` (drf-chunked-upload).
    Chunked,
    /// `POST /files/`, then `PATCH` (tus 1.0).
    Tus,
    /// tus on a server that does not hash tus uploads (`--hash-tus false`).
    TusUnhashed,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Chunked, Protocol::Tus, Protocol::TusUnhashed];

    fn name(self) -> &'static str {
        match self {
            Protocol::Chunked => "chunked",
            Protocol::Tus => "tus",
            Protocol::TusUnhashed => "tus-unhashed",
        }
    }

    fn is_tus(self) -> bool {
        self != Protocol::Chunked
    }

    /// What the server needs for it, beyond the sync flags.
    fn server_flags(self) -> &'static [&'static str] {
        match self {
            Protocol::TusUnhashed => &["--hash-tus", "false"],
            _ => &[],
        }
    }
}

/// Sends `len` bytes of `file` from `file_pos` to `stream` with
/// sendfile(2): the page cache straight to the socket, so the client, which
/// shares the machine's two cores with the server, costs as little as it
/// can.
fn sendfile_all(stream: &std::net::TcpStream, file: &File, file_pos: u64, len: u64) {
    let mut pos = file_pos as libc::off_t;
    let end = (file_pos + len) as libc::off_t;
    while pos < end {
        let count = (end - pos).min(MIB as libc::off_t) as usize;
        // SAFETY: both descriptors are open for the whole call, and `pos`
        // is a valid offset that the kernel advances.
        let sent = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut pos, count) };
        assert!(sent > 0, "sendfile: {}", std::io::Error::last_os_error());
    }
}

/// The congestion control of the client's connections. Over loopback there
/// is no path to pace for, yet BBR (where it is the machine's default)
/// paces every send with timers, and that work lands in the softirq of the
/// server's receiving thread and slows the receive the benchmark measures
/// (docs/benchmarks/2026-12-04-intel-xeon-167.md). It is set before
/// connecting, since BBR leaves its pacing on when swapped out.
const CLIENT_CONGESTION: &[u8] = b"cubic";

/// The client's end of a connection to the server at `addr`, with
/// [`CLIENT_CONGESTION`].
fn client_connection(addr: impl std::net::ToSocketAddrs) -> std::net::TcpStream {
    let addr = addr.to_socket_addrs().unwrap().next().expect("an address");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    // SAFETY: a valid socket, and the option's value is the name's bytes.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            CLIENT_CONGESTION.as_ptr().cast(),
            CLIENT_CONGESTION.len() as libc::socklen_t,
        )
    };
    assert_eq!(
        set,
        0,
        "the client's congestion control: {}",
        std::io::Error::last_os_error()
    );
    socket.connect(&addr.into()).unwrap();
    let stream = std::net::TcpStream::from(socket);
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// Sends one request whose body is `len` bytes of `file` from `file_pos`,
/// streamed from the file, on the upload's connection `conn` (opened when
/// there is none, kept for the next request unless the server closes it,
/// as chunkup's and browsers' connections are); the response and its
/// latency.
fn send_from_file(
    server: &Server,
    conn: &mut Option<std::net::TcpStream>,
    head: (&str, &str, &[(&str, &str)]),
    file: &File,
    file_pos: u64,
    len: u64,
) -> (Response, Duration) {
    let (method, path, headers) = head;
    let began = Instant::now();
    let head = kept_alive_head(method, path, &server.addr, headers, Some(len));
    let resp = exchange_kept(
        conn,
        || client_connection(&server.addr),
        &head,
        |stream| sendfile_all(stream, file, file_pos, len),
    );
    assert!(
        (200..=204).contains(&resp.status),
        "{} {}",
        resp.status,
        resp.text()
    );
    (resp, began.elapsed())
}

/// Uploads `len` bytes of `file` from `offset` in chunks, starting over at
/// the file's start after its last GiB (so 10 GiB send the 1 GiB source ten
/// times over; chunks divide 1 GiB); returns the id and each chunk's
/// latency.
fn upload(
    server: &Server,
    auth: &str,
    file: &File,
    (offset, len, chunk): (u64, u64, u64),
    protocol: Protocol,
) -> (String, Vec<Duration>) {
    let mut id = String::new();
    if protocol.is_tus() {
        let length = len.to_string();
        let created = server.request(
            "POST",
            "/files/",
            &[
                ("Authorization", auth),
                ("Tus-Resumable", "1.0.0"),
                ("Upload-Length", &length),
            ],
            b"",
        );
        assert_eq!(created.status, 201, "{}", created.text());
        id = created.location_id();
    }
    let mut latencies = Vec::new();
    let mut sent = 0;
    let mut conn = None;
    while sent < len {
        let n = (len - sent).min(chunk);
        let file_pos = (offset + sent) % GIB;
        let (resp, took) = match protocol {
            Protocol::Chunked => {
                let path = if sent == 0 {
                    "/upload/?filename=bench.bin".to_owned()
                } else {
                    format!("/upload/{id}/")
                };
                let range = format!("bytes {sent}-{}/{len}", sent + n - 1);
                let headers = [("Authorization", auth), ("Content-Range", range.as_str())];
                send_from_file(
                    server,
                    &mut conn,
                    ("PUT", &path, &headers),
                    file,
                    file_pos,
                    n,
                )
            }
            Protocol::Tus | Protocol::TusUnhashed => {
                let path = format!("/files/{id}");
                let at = sent.to_string();
                let headers = [
                    ("Authorization", auth),
                    ("Tus-Resumable", "1.0.0"),
                    ("Content-Type", "application/offset+octet-stream"),
                    ("Upload-Offset", at.as_str()),
                ];
                send_from_file(
                    server,
                    &mut conn,
                    ("PATCH", &path, &headers),
                    file,
                    file_pos,
                    n,
                )
            }
        };
        if protocol == Protocol::Chunked {
            id = resp.json()["id"].as_str().unwrap().to_owned();
        }
        latencies.push(took);
        sent += n;
    }
    (id, latencies)
}

struct Row {
    bytes: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    peak_rss: u64,
    /// CPU time the server spent (user and system, all threads): steadier
    /// than throughput on a shared machine.
    server_cpu: Duration,
    /// Percent of the machine's time that the hypervisor gave to other
    /// guests meanwhile: where it is high, the row measured the neighbours.
    steal: f64,
    /// PostgreSQL: CPU time of the database's processes serving the server's
    /// connections (those open at the end: the pools keep theirs).
    database_cpu: Option<Duration>,
}

impl Row {
    fn mb_per_s(&self) -> f64 {
        mb_per_s(self.bytes, self.elapsed)
    }
}

/// A row, and the md5sum throughput measured just before it (MB/s).
fn print_row(head: &str, row: &Row, md5sum: f64) {
    let mut latencies = row.latencies.clone();
    latencies.sort();
    println!(
        "{head} {:>6.0} MB/s  {:>4.2} x md5sum {:>4.0}  p50 {:>7.1} ms  p99 {:>7.1} ms  peak RSS {:>4} MiB  server CPU {:>4.2} s  steal {:>2.0} %{}",
        row.mb_per_s(),
        row.mb_per_s() / md5sum,
        md5sum,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        row.peak_rss >> 20,
        row.server_cpu.as_secs_f64(),
        row.steal,
        row.database_cpu
            .map(|cpu| format!("  database CPU {:.2} s", cpu.as_secs_f64()))
            .unwrap_or_default()
    );
}

/// The machine's CPU time so far, and how much of it the hypervisor gave
/// to other guests (steal), in ticks.
#[derive(Clone, Copy)]
struct MachineTime {
    total: u64,
    steal: u64,
}

impl MachineTime {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .expect("the line of all CPUs")
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse().expect("a tick count"))
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is
        // counted in user already).
        MachineTime {
            total: ticks.iter().take(8).sum(),
            steal: ticks[7],
        }
    }

    /// The share of the machine's time stolen since `self`, in percent.
    fn stolen_since(self) -> f64 {
        let now = MachineTime::now();
        let total = (now.total - self.total).max(1);
        100.0 * (now.steal - self.steal) as f64 / total as f64
    }
}

/// Measures a scenario's time, and the machine's time stolen meanwhile.
struct Timer {
    began: Instant,
    machine: MachineTime,
}

struct Timed {
    elapsed: Duration,
    /// Percent of the machine's time.
    steal: f64,
}

impl Timer {
    fn start() -> Self {
        Timer {
            began: Instant::now(),
            machine: MachineTime::now(),
        }
    }

    fn stop(&self) -> Timed {
        Timed {
            elapsed: self.began.elapsed(),
            steal: self.machine.stolen_since(),
        }
    }
}

/// The user and system CPU time of a process so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's stat");
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// The digest md5sum printed.
fn digest_of(md5sum_output: Vec<u8>) -> String {
    let text = String::from_utf8(md5sum_output).unwrap();
    text.split_whitespace().next().unwrap().to_owned()
}

fn md5sum(path: &std::path::Path) -> (String, Duration) {
    let began = Instant::now();
    let out = Command::new("md5sum").arg(path).output().expect("md5sum");
    (digest_of(out.stdout), began.elapsed())
}

/// The MD5 of `source` repeated `times` over, as md5sum reads it from a
/// pipe.
fn md5_repeated(source: &Path, times: u64) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum");
    let mut stdin = child.stdin.take().unwrap();
    for _ in 0..times {
        std::io::copy(&mut File::open(source).unwrap(), &mut stdin).unwrap();
    }
    drop(stdin);
    digest_of(child.wait_with_output().unwrap().stdout)
}

/// The MD5s the uploads must end with.
struct Expected {
    one_gib: String,
    /// Of the 10 GiB upload, where (d) runs.
    ten_gib: Option<String>,
}

/// The items of a comma list in `var`, or `all` when it is not set.
fn picked(var: &str, all: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| all.into())
        .split(',')
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

/// What a scenario runs against: a fresh server for each scenario.
#[derive(Debug, Clone, Copy)]
enum Subject<'a> {
    Chunkd(Backend),
    /// rustus 0.5, the tus server the tus target is set against: its binary.
    Rustus(&'a Path),
}

impl Subject<'_> {
    fn name(self) -> String {
        match self {
            Subject::Chunkd(backend) => format!("{backend:?}").to_lowercase(),
            Subject::Rustus(_) => "rustus".into(),
        }
    }

    /// The server's flags with and without fdatasync of every chunk.
    fn sync_flags(self, sync: bool) -> &'static [&'static str] {
        match (self, sync) {
            (Subject::Chunkd(_), true) => &[],
            (Subject::Chunkd(_), false) => &["--sync", "false"],
            (Subject::Rustus(_), true) => &["--force-fsync", "true"],
            (Subject::Rustus(_), false) => &[],
        }
    }

    fn start(self, flags: &[&str]) -> Running {
        match self {
            Subject::Chunkd(backend) => {
                let store = Store::new(backend);
                let auth = format!("Token {}", store.token("bench"));
                let server = Server::start(&store, flags);
                Running {
                    server,
                    auth,
                    files: Files::Chunkd(store),
                }
            }
            Subject::Rustus(bin) => {
                let dir = TempDir::new("rustus");
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .unwrap()
                    .port();
                let log = dir.0.join("rustus.log");
                let child = Command::new(bin)
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .arg("--data-dir")
                    .arg(&dir.0)
                    .arg("--info-dir")
                    .arg(&dir.0)
                    // Its PATCH handler buffers the whole body, up to this.
                    .args(["--max-body-size", "16777216", "--workers", "2"])
                    .args(["--log-level", "ERROR"])
                    .args(flags)
                    .stdout(File::create(&log).unwrap())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("the rustus binary");
                let addr = format!("127.0.0.1:{port}");
                eventually("rustus listening", || {
                    std::net::TcpStream::connect(&addr).is_ok()
                });
                Running {
                    server: Server::running(child, addr, log),
                    auth: String::new(),
                    files: Files::Rustus(dir),
                }
            }
        }
    }
}

/// A server started for one scenario.
struct Running {
    server: Server,
    /// The Authorization header (rustus ignores it).
    auth: String,
    files: Files,
}

/// What a server keeps, removed after its scenario.
enum Files {
    /// The database and data directory.
    Chunkd(Store),
    /// The data directory.
    Rustus(TempDir),
}

impl Running {
    /// The row of the scenario just run on this server.
    fn row(&self, bytes: u64, timed: Timed, latencies: Vec<Duration>) -> Row {
        let database_cpu = match &self.files {
            Files::Chunkd(Store { pg: Some(pg), .. }) => Some(
                pg.backend_pids()
                    .into_iter()
                    .filter_map(|pid| u32::try_from(pid).ok())
                    .map(cpu_time)
                    .sum(),
            ),
            _ => None,
        };
        Row {
            bytes,
            elapsed: timed.elapsed,
            steal: timed.steal,
            latencies,
            peak_rss: self.server.peak_rss(),
            server_cpu: cpu_time(self.server.pid()),
            database_cpu,
        }
    }

    /// The MD5 of the bytes stored for an upload, read from its file.
    fn stored_md5(&self, id: &str) -> String {
        fn find(dir: &Path, id: &str) -> Option<std::path::PathBuf> {
            std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
                let path = entry.path();
                if path.is_dir() {
                    find(&path, id)
                } else {
                    entry.file_name().to_str()?.starts_with(id).then_some(path)
                }
            })
        }
        let path = match &self.files {
            // Under the day's folder, with the extension of a finished upload.
            Files::Chunkd(store) => find(&store.data.0, id),
            // Beside `{id}.info`.
            Files::Rustus(dir) => Some(dir.0.join(id)),
        };
        md5sum(&path.expect("the stored file")).0
    }
}

/// One scenario of one subject, protocol and sync setting.
#[derive(Clone, Copy)]
struct Case<'a> {
    subject: Subject<'a>,
    protocol: Protocol,
    sync: bool,
    scenario: char,
}

impl Case<'_> {
    fn label(&self, text: &str) -> String {
        let note = if self.sync { "" } else { ", no fdatasync" };
        format!("{} {text}{note}", self.protocol.name())
    }

    /// Runs it on a fresh server; its row, and the completion POST after
    /// (a) synced and after (d) on the chunked protocol. `md5sum` of
    /// `source` (the bytes `file` reads) just before it gives the row its
    /// own measure of the machine: the machine's speed drifts by a third
    /// within one round.
    fn run(&self, file: &File, source: &Path, expected: &Expected) -> Vec<Line> {
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

/// One printed figure of a round.
struct Line {
    subject: String,
    label: String,
    figures: Figures,
}

enum Figures {
    /// A scenario's row, and md5sum's MB/s just before it.
    Row(Row, f64),
    Completion(Duration),
    /// Small uploads: how many a second, and the server's peak RSS and CPU
    /// time, and the steal, as a row has them.
    Small {
        per_s: f64,
        peak_rss: u64,
        server_cpu: Duration,
        steal: f64,
    },
    /// In MB/s: md5sum, a plain write with fdatasync, the bare receive of
    /// (c); and the percent of the machine's time stolen meanwhile.
    Machine {
        md5sum: f64,
        write: f64,
        bare: f64,
        steal: f64,
    },
}

impl Line {
    fn print(&self) {
        let head = format!("{:<9} {:<48}", self.subject, self.label);
        match &self.figures {
            Figures::Row(row, md5sum) => print_row(&head, row, *md5sum),
            Figures::Completion(took) => println!("{head} {:.1} ms", took.as_secs_f64() * 1e3),
            Figures::Small {
                per_s,
                peak_rss,
                server_cpu,
                steal,
            } => println!(
                "{head} {per_s:>6.0} uploads/s  peak RSS {:>4} MiB  server CPU {:>4.2} s  steal {steal:>2.0} %",
                peak_rss >> 20,
                server_cpu.as_secs_f64()
            ),
            Figures::Machine {
                md5sum,
                write,
                bare,
                steal,
            } => println!(
                "machine   md5sum of 1 GiB: {md5sum:.0} MB/s; plain write of 1 GiB + fdatasync: {write:.0} MB/s; bare receive of (c): {bare:.0} MB/s  steal {steal:.0} %"
            ),
        }
    }
}

/// The median, lowest and highest of some figures, with `decimals`.
fn spread(mut values: Vec<f64>, decimals: usize) -> String {
    values.sort_by(f64::total_cmp);
    let (low, median, high) = (
        values[0],
        values[values.len() / 2],
        values[values.len() - 1],
    );
    format!("{median:>6.decimals$} [{low:.decimals$}-{high:.decimals$}]")
}

impl Figures {
    /// What the summary gives the spread of.
    fn numbers(&self) -> Vec<f64> {
        match self {
            Figures::Row(row, md5sum) => vec![
                row.mb_per_s(),
                row.mb_per_s() / md5sum,
                (row.peak_rss >> 20) as f64,
                row.server_cpu.as_secs_f64(),
                row.steal,
            ],
            Figures::Completion(took) => vec![took.as_secs_f64() * 1e3],
            Figures::Small {
                per_s,
                peak_rss,
                server_cpu,
                steal,
            } => vec![
                *per_s,
                (peak_rss >> 20) as f64,
                server_cpu.as_secs_f64(),
                *steal,
            ],
            Figures::Machine {
                md5sum,
                write,
                bare,
                steal,
            } => vec![*md5sum, *write, *bare, *steal],
        }
    }
}

/// After several rounds: each figure's median and range over them.
fn print_summary(rounds: &[Vec<Line>]) {
    println!("\nover {} rounds: median [lowest-highest]", rounds.len());
    for (i, first) in rounds[0].iter().enumerate() {
        let numbers: Vec<Vec<f64>> = rounds.iter().map(|r| r[i].figures.numbers()).collect();
        let of =
            |n: usize, decimals| spread(numbers.iter().map(|each| each[n]).collect(), decimals);
        let head = format!("{:<9} {:<48}", first.subject, first.label);
        match first.figures {
            Figures::Row(..) => println!(
                "{head} {} MB/s  {} x md5sum  peak RSS {} MiB  server CPU {} s  steal {} %",
                of(0, 0),
                of(1, 2),
                of(2, 0),
                of(3, 2),
                of(4, 0)
            ),
            Figures::Completion(_) => println!("{head} {} ms", of(0, 1)),
            Figures::Small { .. } => println!(
                "{head} {} uploads/s  peak RSS {} MiB  server CPU {} s  steal {} %",
                of(0, 0),
                of(1, 0),
                of(2, 2),
                of(3, 0)
            ),
            Figures::Machine { .. } => println!(
                "machine   md5sum of 1 GiB: {} MB/s; plain write of 1 GiB + fdatasync: {} MB/s; bare receive of (c): {} MB/s  steal {} %",
                of(0, 0),
                of(1, 0),
                of(2, 0),
                of(3, 0)
            ),
        }
    }
}

/// Scenario (c) with nothing but the bytes' way in: the same 64 x 16 MiB
/// in 1 MiB requests, each upload's on one connection and sent with
/// sendfile(2), as the benchmark's client sends them, to a listener that
/// only reads each body and writes it into the page cache (a thread per
/// connection; no HTTP, hash or database). What the loopback and the page
/// cache allow on the machine, in MB/s.
fn bare_receive(file: &File, scratch: &Path) -> f64 {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = scratch.join("bare");
    std::fs::create_dir_all(&dir).unwrap();
    let receive = |mut conn: TcpStream, dir: &Path| {
        let mut buf = vec![0u8; 128 * 1024];
        // Each request: which upload and which MiB of it, then the MiB.
        let mut head = [0u8; 16];
        while conn.read_exact(&mut head).is_ok() {
            let upload = u64::from_le_bytes(head[..8].try_into().unwrap());
            let mut at = u64::from_le_bytes(head[8..].try_into().unwrap()) * MIB;
            let out = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(upload.to_string()))
                .unwrap();
            let end = at + MIB;
            while at < end {
                let want = buf.len().min((end - at) as usize);
                let n = conn.read(&mut buf[..want]).unwrap();
                assert!(n > 0, "the client closed mid-request");
                out.write_all_at(&buf[..n], at).unwrap();
                at += n as u64;
            }
            conn.write_all(b"k").unwrap();
        }
    };
    let timer = Instant::now();
    std::thread::scope(|scope| {
        let dir = &dir;
        scope.spawn(move || {
            for conn in listener.incoming().take(64) {
                let conn = conn.unwrap();
                scope.spawn(move || receive(conn, dir));
            }
        });
        for upload in 0..64u64 {
            scope.spawn(move || {
                let mut conn = client_connection(addr);
                for chunk in 0..16u64 {
                    let mut head = upload.to_le_bytes().to_vec();
                    head.extend(chunk.to_le_bytes());
                    conn.write_all(&head).unwrap();
                    sendfile_all(&conn, file, (upload * 16 + chunk) * MIB, MIB);
                    conn.read_exact(&mut [0u8; 1]).unwrap();
                }
            });
        }
    });
    let took = timer.elapsed();
    std::fs::remove_dir_all(&dir).unwrap();
    mb_per_s(GIB, took)
}

/// md5sum of `source`, a plain write of as many bytes, and the bare
/// receive of (c), in MB/s.
fn machine(source: &Path, file: &File, scratch: &Path) -> Line {
    md5sum(source);
    let clock = MachineTime::now();
    let md5_took = md5sum(source).1;
    let plain = scratch.join("plain.bin");
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
    let figures = Figures::Machine {
        md5sum: mb_per_s(GIB, md5_took),
        write: mb_per_s(GIB, write_took),
        bare: bare_receive(file, scratch),
        steal: clock.stolen_since(),
    };
    Line {
        subject: "machine".into(),
        label: String::new(),
        figures,
    }
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
                .chain(by_case.into_iter().flatten())
                .collect(),
        );
    }
    if rounds > 1 {
        print_summary(&all);
    }
}

/// One upload of `len` bytes in chunks of `chunk` bytes on a fresh server;
/// the row and, for the chunked protocol, the latency of the completion POST
/// (a tus upload completes with its last PATCH).
fn sequential(
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
fn concurrent(subject: Subject, file: &File, protocol: Protocol, flags: &[&str]) -> Row {
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
const SMALL: u64 = 256 << 10;
const SMALL_UPLOADS: u64 = 2000;
const SMALL_AT_ONCE: u64 = 32;

/// `SMALL_UPLOADS` uploads of `SMALL` bytes on a fresh server, each in one
/// request that creates it, carries every byte and completes it, from
/// `SMALL_AT_ONCE` clients at once, each on its own kept-alive connection.
fn small_uploads(subject: Subject, file: &File, protocol: Protocol, flags: &[&str]) -> Figures {
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
