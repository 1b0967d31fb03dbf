//! An S3 emulator for the tests: moto in server mode, from PyPI, one per
//! test run on 127.0.0.1, a new bucket per store; and a proxy in front of
//! it that a test can cut, for the emulator going away mid-request.

use super::tools::{python_with, run};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The emulator's endpoint, started on first use. It enforces S3's 5 MiB
/// minimum part size (EntityTooSmall at completion), as AWS does.
pub fn emulator() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let python = python_with("moto", "moto.server", "moto[server]==5.2.1");
        let server = python.with_file_name("moto_server");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (started, wait) = std::sync::mpsc::channel();
        // The emulator dies with the thread that started it (the parent-death
        // signal), so that thread waits for it as long as the test process
        // lives.
        std::thread::spawn(move || {
            let mut command = Command::new(&server);
            command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl only sets a flag of the child about to exec; it
            // touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = command.spawn().expect("moto_server starts");
            started.send(()).unwrap();
            let _ = child.wait();
        });
        wait.recv().unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        endpoint
    })
}

/// A new, empty bucket on the emulator.
pub fn new_bucket() -> String {
    let name = format!("chunkd-{}", uuid::Uuid::new_v4().simple());
    run(Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-X", "PUT"])
        .arg(format!("{}/{name}", emulator())));
    name
}

/// Deletes every object of a bucket.
pub fn delete_objects(bucket: &str) {
    for (key, _) in list_objects(emulator(), bucket, "") {
        let _ = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-X", "DELETE"])
            .arg(format!("{}/{bucket}/{key}", emulator()))
            .status();
    }
}

/// The MD5 of an object whose key contains `part`, read from the bucket.
pub fn object_md5(bucket: &str, part: &str) -> Option<String> {
    let (key, _) = list_objects(emulator(), bucket, "")
        .into_iter()
        .find(|(key, _)| key.contains(part))?;
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("curl -sf '{}/{bucket}/{key}' | md5sum", emulator()))
        .output()
        .ok()?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .split(' ')
            .next()?
            .to_owned(),
    )
}

/// Every object under `prefix` in a bucket: (key, size).
pub fn list_objects(endpoint: &str, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
    let out = Command::new("curl")
        .arg("-sf")
        .arg(format!("{endpoint}/{bucket}?prefix={prefix}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "listing {bucket} failed");
    let xml = String::from_utf8(out.stdout).unwrap();
    let field = |content: &str, tag: &str| -> Option<String> {
        let from = content.find(&format!("<{tag}>"))? + tag.len() + 2;
        let to = content[from..].find(&format!("</{tag}>"))? + from;
        Some(content[from..to].to_owned())
    };
    xml.split("<Contents>")
        .skip(1)
        .map(|content| {
            (
                field(content, "Key").unwrap(),
                field(content, "Size").unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// A TCP proxy to the emulator that can be cut (every connection closed,
/// new ones refused) and restored; it counts the bytes sent through it.
pub struct Proxy {
    pub endpoint: String,
    state: Arc<ProxyState>,
}

struct ProxyState {
    open: AtomicBool,
    sent: AtomicU64,
    live: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    pub fn start() -> Proxy {
        let upstream = emulator().trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ProxyState {
            open: AtomicBool::new(true),
            sent: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = shared.clone();
                let upstream = upstream.clone();
                if !state.open.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                {
                    let mut live = state.live.lock().unwrap();
                    live.push(client.try_clone().unwrap());
                    live.push(server.try_clone().unwrap());
                }
                let (client_in, server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let counted = state.clone();
                std::thread::spawn(move || pipe(client_in, server_out, Some(&counted.sent)));
                std::thread::spawn(move || pipe(server, client, None));
            }
        });
        Proxy { endpoint, state }
    }

    /// Bytes sent to the emulator so far.
    pub fn sent(&self) -> u64 {
        self.state.sent.load(Ordering::SeqCst)
    }

    pub fn cut(&self) {
        self.state.open.store(false, Ordering::SeqCst);
        for stream in self.state.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.state.open.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<&AtomicU64>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if let Some(count) = count {
                    count.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
