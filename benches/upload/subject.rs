//! What a scenario runs against: chunkd on a backend, or a peer server,
//! started fresh for each scenario.

use crate::common::*;
use crate::measure::*;
use crate::report::*;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What a scenario runs against: a fresh server for each scenario.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    Chunkd(Backend),
    /// rustus 0.5, the tus server the tus target is set against: its binary.
    Rustus(&'a Path),
}

impl Subject<'_> {
    pub fn name(self) -> String {
        match self {
            Subject::Chunkd(backend) => format!("{backend:?}").to_lowercase(),
            Subject::Rustus(_) => "rustus".into(),
        }
    }

    /// The server's flags with and without fdatasync of every chunk.
    pub fn sync_flags(self, sync: bool) -> &'static [&'static str] {
        match (self, sync) {
            (Subject::Chunkd(_), true) => &[],
            (Subject::Chunkd(_), false) => &["--sync", "false"],
            (Subject::Rustus(_), true) => &["--force-fsync", "true"],
            (Subject::Rustus(_), false) => &[],
        }
    }

    pub fn start(self, flags: &[&str]) -> Running {
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
pub struct Running {
    pub server: Server,
    /// The Authorization header (rustus ignores it).
    pub auth: String,
    pub files: Files,
}

/// What a server keeps, removed after its scenario.
pub enum Files {
    /// The database and data directory.
    Chunkd(Store),
    /// The data directory.
    Rustus(TempDir),
}

impl Running {
    /// The row of the scenario just run on this server.
    pub fn row(&self, bytes: u64, timed: Timed, latencies: Vec<Duration>) -> Row {
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

    /// The MD5 of the bytes stored for an upload, read from its file (or
    /// its object).
    pub fn stored_md5(&self, id: &str) -> String {
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
            Files::Chunkd(Store { s3: Some(s3), .. }) => {
                return object_md5(&s3.name, &format!("{id}.done")).expect("the stored object");
            }
            // Under the day's folder, with the extension of a finished upload.
            Files::Chunkd(store) => find(&store.data.0, id),
            // Beside `{id}.info`.
            Files::Rustus(dir) => Some(dir.0.join(id)),
        };
        md5sum(&path.expect("the stored file")).0
    }
}
