//! A chunkd process, started on a store and killed when dropped.

use super::*;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Server {
    pub fn start(store: &Store, extra: &[&str]) -> Server {
        Server::start_at(store, "127.0.0.1:0", extra)
    }

    /// A server on a given address (to come back where a killed one was).
    pub fn start_at(store: &Store, listen: &str, extra: &[&str]) -> Server {
        let log = store
            .logs
            .0
            .join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let mut args = vec!["serve", "--listen", listen, "--workers", "2"];
        args.extend_from_slice(extra);
        let mut child = store
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("chunkd listening on http://") {
                        break addr.to_owned();
                    }
                }
                _ => panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server::running(child, addr, log)
    }

    /// A server process already listening on `addr` (the benchmark also
    /// runs another tus server), killed when dropped.
    pub fn running(child: Child, addr: String, log: PathBuf) -> Server {
        Server { child, addr, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit; its
    /// exit status, or None if it is still running.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM failed");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Peak resident memory of the server process, in bytes.
    pub fn peak_rss(&self) -> u64 {
        peak_rss_of(self.pid()).expect("the server's /proc status")
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(&self.addr, method, path, headers, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident memory of a running process, in bytes (`None` once it is gone).
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Polls until `check` holds or 10 s are up.
pub fn eventually(what: &str, check: impl FnMut() -> bool) {
    eventually_within(Duration::from_secs(10), what, check);
}

/// Polls until `check` holds or `limit` is up.
pub fn eventually_within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
