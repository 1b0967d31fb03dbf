//! What a scenario is measured with: elapsed and stolen time, CPU time,
//! md5sum, and the machine's own limits.

use crate::client::*;
use crate::common::*;
use crate::report::*;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The machine's CPU time so far, and how much of it the hypervisor gave
/// to other guests (steal), in ticks.
#[derive(Clone, Copy)]
pub struct MachineTime {
    pub total: u64,
    pub steal: u64,
}

impl MachineTime {
    pub fn now() -> Self {
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
    pub fn stolen_since(self) -> f64 {
        let now = MachineTime::now();
        let total = (now.total - self.total).max(1);
        100.0 * (now.steal - self.steal) as f64 / total as f64
    }
}

/// Measures a scenario's time, and the machine's time stolen meanwhile.
pub struct Timer {
    pub began: Instant,
    pub machine: MachineTime,
}

pub struct Timed {
    pub elapsed: Duration,
    /// Percent of the machine's time.
    pub steal: f64,
}

impl Timer {
    pub fn start() -> Self {
        Timer {
            began: Instant::now(),
            machine: MachineTime::now(),
        }
    }

    pub fn stop(&self) -> Timed {
        Timed {
            elapsed: self.began.elapsed(),
            steal: self.machine.stolen_since(),
        }
    }
}

/// The user and system CPU time of a process so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's stat");
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// The digest md5sum printed.
pub fn digest_of(md5sum_output: Vec<u8>) -> String {
    let text = String::from_utf8(md5sum_output).unwrap();
    text.split_whitespace().next().unwrap().to_owned()
}

pub fn md5sum(path: &std::path::Path) -> (String, Duration) {
    let began = Instant::now();
    let out = Command::new("md5sum").arg(path).output().expect("md5sum");
    (digest_of(out.stdout), began.elapsed())
}

/// The MD5 of `source` repeated `times` over, as md5sum reads it from a
/// pipe.
pub fn md5_repeated(source: &Path, times: u64) -> String {
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

/// Scenario (c) with nothing but the bytes' way in: the same 64 x 16 MiB
/// in 1 MiB requests, each upload's on one connection and sent with
/// sendfile(2), as the benchmark's client sends them, to a listener that
/// only reads each body and writes it into the page cache (a thread per
/// connection; no HTTP, hash or database). What the loopback and the page
/// cache allow on the machine, in MB/s.
pub fn bare_receive(file: &File, scratch: &Path) -> f64 {
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
pub fn machine(source: &Path, file: &File, scratch: &Path) -> Line {
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
