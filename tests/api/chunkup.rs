//! chunkup, the command-line client, against a real chunkd: both protocols,
//! standard input, connections cut mid-request, the server killed and
//! restarted, the client killed and run again, every exit code, and each
//! output mode (terminal, log lines, quiet, JSON).

use crate::both_backends;
use crate::common::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A place for chunkup's files: the file to send and its resume state.
struct Workdir {
    dir: TempDir,
    token: String,
}

impl Workdir {
    fn new(setup: &Setup) -> Self {
        Workdir {
            dir: TempDir::new("chunkup"),
            token: setup.token.clone(),
        }
    }

    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.dir.0.join(name);
        std::fs::write(&path, data).unwrap();
        path
    }

    /// Saved resume states (not spool files, nor a state being written).
    fn state_files(&self) -> usize {
        std::fs::read_dir(self.dir.0.join("state"))
            .map(|dir| {
                dir.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// chunkup with this workdir's token and state folder; retries come
    /// quickly so that tests do not wait.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(chunkup());
        cmd.args(args)
            .env("CHUNKUP_TOKEN", &self.token)
            .env("CHUNKUP_STATE_DIR", self.dir.0.join("state"))
            .env_remove("XDG_CACHE_HOME")
            .stdin(Stdio::null());
        // No proxy of the machine's may come between chunkup and the test server.
        for var in PROXY_VARS {
            cmd.env_remove(var).env_remove(var.to_lowercase());
        }
        if args[0] == "push" || args[0] == "status" || args[0] == "abort" {
            cmd.args(["--retry-delay", "0.05"]);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `push … --json`, which must succeed: its result object.
    fn push_json(&self, file: &Path, url: &str, extra: &[&str]) -> Value {
        let mut args = vec!["push", file.to_str().unwrap(), url, "--json"];
        args.extend_from_slice(extra);
        succeeded(&self.run(&args))
    }
}

fn succeeded(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "chunkup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The id at the end of an upload URL of either protocol.
fn id_of(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap()
}

/// The upload behind a URL that chunkup printed, from the server: its JSON
/// and its bytes, checked against `data`.
fn assert_stored(client: &Client, url: &str, data: &[u8], name: &str) {
    let id = id_of(url);
    let upload = client.get(&format!("/upload/{id}/"));
    assert_eq!(upload.status, 200, "{}", upload.text());
    let json = upload.json();
    assert_eq!(json["status"], 2, "{json}");
    assert_eq!(json["md5"], md5_hex(data));
    assert_eq!(json["filename"], name);
    let file = client.get(&format!("/upload/{id}/file"));
    assert_eq!(file.status, 200);
    assert!(file.body == data, "the stored bytes differ");
}

fn pushes_files_and_standard_input_over_both_protocols(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let work = Workdir::new(&setup);
    let data = bytes(3 * 1024 * 1024 + 17, 1);
    let file = work.file("build.tar", &data);
    let chunk = ["--chunk-size", "256KiB"];

    let chunked = work.push_json(&file, &setup.server.url("/upload/"), &chunk);
    assert_eq!(chunked["protocol"], "chunked");
    assert_eq!(chunked["size"], data.len() as u64);
    assert_eq!(chunked["md5"], md5_hex(&data));
    assert_eq!(chunked["resumed_from"], 0);
    assert_stored(
        &client,
        chunked["url"].as_str().unwrap(),
        &data,
        "build.tar",
    );

    // tus is recognised from the endpoint's OPTIONS answer.
    let tus = work.push_json(&file, &setup.server.url("/files/"), &chunk);
    assert_eq!(tus["protocol"], "tus");
    assert_eq!(tus["md5"], md5_hex(&data));
    assert_stored(&client, tus["url"].as_str().unwrap(), &data, "build.tar");

    let mut parallel = chunk.to_vec();
    parallel.extend(["--parallel", "3"]);
    let parts = work.push_json(&file, &setup.server.url("/files/"), &parallel);
    assert_eq!(parts["parts"], 3);
    assert_stored(&client, parts["url"].as_str().unwrap(), &data, "build.tar");

    let empty = work.file("empty.txt", b"");
    for endpoint in ["/upload/", "/files/"] {
        let done = work.push_json(&empty, &setup.server.url(endpoint), &[]);
        assert_eq!(done["size"], 0);
        assert_stored(&client, done["url"].as_str().unwrap(), b"", "empty.txt");
    }

    // Standard input: spooled for the chunked protocol (it needs the total
    // first), streamed over tus with the length told with the last chunk
    // (or an empty last chunk, for a multiple of the chunk size), or known
    // from the start when it is less than one chunk; spooled whole again
    // for --parallel.
    let orphan = work.dir.0.join("state/spool-999999999-7");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"left by a killed run").unwrap();
    for (endpoint, len, parallel) in [
        ("/upload/", 700_001, "1"),
        ("/files/", 700_001, "1"),
        ("/files/", 131_072, "1"),
        ("/files/", 100, "1"),
        ("/files/", 700_001, "2"),
    ] {
        let piped = bytes(len, len as u64);
        let mut child = work
            .command(&[
                "push",
                "-",
                &setup.server.url(endpoint),
                "--name",
                "piped.log",
                "--chunk-size",
                "64KiB",
                "--parallel",
                parallel,
                "--json",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&piped).unwrap();
        let done = succeeded(&child.wait_with_output().unwrap());
        assert_eq!(done["size"], len as u64, "{endpoint}");
        assert_eq!(done["md5"], md5_hex(&piped));
        assert_stored(&client, done["url"].as_str().unwrap(), &piped, "piped.log");
    }
    // Finished pushes leave no resume state (nor spool files) behind, and
    // the spool of a killed run (pid 999999999 runs nowhere) went with them.
    assert_eq!(work.state_files(), 0);
    assert!(!orphan.exists());
    assert_eq!(
        std::fs::read_dir(work.dir.0.join("state")).unwrap().count(),
        0
    );
}

fn finishes_through_connections_cut_at_random_points(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let work = Workdir::new(&setup);
    let data = bytes(4 * 1024 * 1024 + 3, 2);
    let file = work.file("artifact.zip", &data);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    for (round, endpoint) in ["/upload/", "/files/", "/upload/", "/files/"]
        .iter()
        .enumerate()
    {
        let cut_every = 300_000 + (seed * (round as u64 + 7)) % 400_000;
        let proxy = CuttingProxy::start(&setup.server.addr, cut_every, 5);
        let url = format!("http://{}{endpoint}", proxy.addr);
        let done = work.push_json(&file, &url, &["--chunk-size", "512KiB"]);
        assert_eq!(proxy.cuts(), 5, "cut every {cut_every} bytes");
        assert!(done["retries"].as_u64().unwrap() >= 1, "{done}");
        assert_eq!(done["md5"], md5_hex(&data));
        assert_stored(
            &client,
            done["url"].as_str().unwrap(),
            &data,
            "artifact.zip",
        );
    }
}

/// Polls the server until the only upload of the owner has between one
/// chunk and all but one chunk.
fn wait_for_partial(client: &Client, total: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = client.get("/upload/").json();
        if let Some(offset) = list[0]["offset"].as_u64() {
            assert!(
                offset < total,
                "the upload finished before the interruption"
            );
            if offset > 0 {
                return offset;
            }
        }
        assert!(Instant::now() < deadline, "the upload did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn resumes_when_the_server_is_killed_and_restarted(backend: Backend) {
    for endpoint in ["/upload/", "/files/"] {
        let store = Store::new(backend);
        let token = store.token("alice");
        let first = Server::start(&store, &[]);
        let addr = first.addr.clone();
        let setup = Setup {
            store,
            token,
            server: first,
        };
        let work = Workdir::new(&setup);
        let data = bytes(48 * 1024 * 1024, 3);
        let file = work.file("big.bin", &data);
        let url = format!("http://{addr}{endpoint}");
        let child = work.spawn(&[
            "push",
            file.to_str().unwrap(),
            &url,
            "--chunk-size",
            "64KiB",
            "--json",
            "--retries",
            "30",
        ]);
        wait_for_partial(&setup.client(), data.len() as u64);
        let Setup {
            store,
            token,
            server,
        } = setup;
        drop(server); // kill -9
        std::thread::sleep(Duration::from_millis(300));
        let second = Server::start_at(&store, &addr, &[]);
        let done = succeeded(&child.wait_with_output().unwrap());
        assert!(done["retries"].as_u64().unwrap() >= 1, "{done}");
        assert_eq!(done["md5"], md5_hex(&data));
        assert_stored(
            &Client::new(&second, &token),
            done["url"].as_str().unwrap(),
            &data,
            "big.bin",
        );
    }
}

fn resumes_when_the_client_is_killed_and_run_again(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let work = Workdir::new(&setup);
    let data = bytes(48 * 1024 * 1024, 4);
    let file = work.file("nightly.img", &data);
    for (endpoint, parallel) in [("/upload/", "1"), ("/files/", "1"), ("/files/", "3")] {
        let url = setup.server.url(endpoint);
        let args = [
            "push",
            file.to_str().unwrap(),
            &url,
            "--chunk-size",
            "64KiB",
            "--parallel",
            parallel,
            "--json",
        ];
        let mut child = work.spawn(&args);
        let mut reached = wait_for_partial(&client, data.len() as u64);
        // The chunked protocol creates the upload with its first chunk, and
        // the client saves the URL when the answer comes back: wait for that.
        eventually("the resume state", || work.state_files() == 1);
        reached = reached.max(wait_for_partial(&client, data.len() as u64));
        child.kill().unwrap(); // as a reboot or Ctrl-C would
        child.wait().unwrap();
        assert_eq!(work.state_files(), 1);
        let done = succeeded(&work.run(&args));
        let resumed = done["resumed_from"].as_u64().unwrap();
        assert!(resumed >= reached && resumed < data.len() as u64, "{done}");
        assert_stored(&client, done["url"].as_str().unwrap(), &data, "nightly.img");
        assert_eq!(work.state_files(), 0);
        // The finished upload goes first in the owner's list; clear it so
        // the next round's wait sees only its own.
        let id = id_of(done["url"].as_str().unwrap());
        assert_eq!(
            client
                .send("DELETE", &format!("/upload/{id}/"), &[], b"")
                .status,
            204
        );
    }
}

#[test]
fn exit_codes_status_and_abort() {
    let setup = Setup::new(Backend::Sqlite, &[]);
    let client = setup.client();
    let work = Workdir::new(&setup);
    let data = bytes(2 * 1024 * 1024, 5);
    let file = work.file("report.pdf", &data);
    let file = file.to_str().unwrap();
    let upload_url = setup.server.url("/upload/");

    // 2: usage.
    for args in [
        vec!["push", file, &upload_url, "--chunk-size", "0"],
        vec!["push", file, &upload_url, "--parallel", "2"],
        vec!["push", file],
    ] {
        let out = work.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // 1: a local error.
    let missing = work.run(&["push", "/nonexistent/file", &upload_url]);
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("cannot read /nonexistent/file"));

    // 3: the server refuses (a bad token), with its message, at once.
    let refused = work.run(&["push", file, &upload_url, "--token", "wrong", "--json"]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(
        stderr(&refused).contains("Invalid token."),
        "{}",
        stderr(&refused)
    );
    let report: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(report["exit_code"], 3);
    assert_eq!(report["status"], 401);

    // 5: retries exhausted, here on a network that drops every connection
    // once and a client allowed no retry; the upload stays half done.
    let proxy = CuttingProxy::start(&setup.server.addr, 900_000, 1);
    let via_proxy = format!("http://{}/upload/", proxy.addr);
    let args = [
        "push",
        file,
        &via_proxy,
        "--chunk-size",
        "512KiB",
        "--retries",
        "0",
    ];
    let gave_up = work.run(&args);
    assert_eq!(gave_up.status.code(), Some(5), "{}", stderr(&gave_up));
    assert!(
        stderr(&gave_up).contains("gave up after 1 attempts"),
        "{}",
        stderr(&gave_up)
    );
    let list = client.get("/upload/").json();
    // The URL as chunkup knows it: through the proxy (which has made its
    // one cut and passes everything now).
    let partial_url = list[0]["url"]
        .as_str()
        .unwrap()
        .replace(&setup.server.addr, &proxy.addr);
    let offset = list[0]["offset"].as_u64().unwrap();
    assert!(offset > 0 && offset < data.len() as u64);
    // A server that does not answer at all: 5 too.
    let closed = work.run(&["push", file, "http://127.0.0.1:9/upload/", "--retries", "2"]);
    assert_eq!(closed.status.code(), Some(5), "{}", stderr(&closed));
    assert_eq!(stderr(&closed).matches("retrying in").count(), 2);

    // status tells where the half-done upload stands.
    let status = work.run(&["status", &partial_url, "--json"]);
    let status = succeeded(&status);
    assert_eq!(status["offset"], offset);
    assert_eq!(status["total"], data.len() as u64);
    assert_eq!(status["complete"], false);
    let plain = work.run(&["status", &partial_url]);
    let text = String::from_utf8_lossy(&plain.stdout).into_owned();
    assert!(
        text.contains(&format!("offset:   {offset} of {} bytes", data.len())),
        "{text}"
    );
    assert!(text.contains("state:    incomplete"));

    // 4: the file changed in place (same size, same mtime) while half of it
    // was on the server: the resumed upload's checksum cannot match.
    let mtime = std::fs::metadata(file).unwrap().modified().unwrap();
    let mut changed = data.clone();
    changed[0] ^= 0xff;
    std::fs::write(file, &changed).unwrap();
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let mismatch = work.run(&["push", file, &via_proxy, "--chunk-size", "512KiB"]);
    assert_eq!(mismatch.status.code(), Some(4), "{}", stderr(&mismatch));
    assert!(stderr(&mismatch).contains("checksum mismatch"));
    assert!(
        stderr(&mismatch).contains(&format!("resuming {partial_url} at byte {offset}")),
        "{}",
        stderr(&mismatch)
    );

    // abort removes the upload and the state that pointed at it.
    assert_eq!(work.state_files(), 1);
    let aborted = work.run(&["abort", &partial_url]);
    assert_eq!(aborted.status.code(), Some(0), "{}", stderr(&aborted));
    assert_eq!(work.state_files(), 0);
    assert_eq!(
        client
            .get(&format!("/upload/{}/", id_of(&partial_url)))
            .status,
        404
    );
    let gone = work.run(&["status", &partial_url]);
    assert_eq!(gone.status.code(), Some(3), "{}", stderr(&gone));
    assert!(stderr(&gone).contains("Not found."));
}

/// A large file in large chunks, from disk and from standard input: the
/// client's memory does not grow with either.
#[test]
fn memory_stays_flat_whatever_the_file_and_chunk_size() {
    let setup = Setup::new(Backend::Sqlite, &["--sync", "false"]);
    let client = setup.client();
    let work = Workdir::new(&setup);
    let path = work.dir.0.join("huge.bin");
    {
        let mut out = std::fs::File::create(&path).unwrap();
        for n in 0..256 {
            out.write_all(&bytes(1024 * 1024, 100 + n)).unwrap();
        }
    }
    let file = path.to_str().unwrap();
    for (endpoint, stdin) in [("/upload/", false), ("/files/", false), ("/files/", true)] {
        let url = setup.server.url(endpoint);
        let source = if stdin { "-" } else { file };
        let mut child = work
            .command(&["push", source, &url, "--chunk-size", "64MiB", "--json"])
            .stdin(if stdin {
                Stdio::from(std::fs::File::open(&path).unwrap())
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut peak = 0u64;
        while child.try_wait().unwrap().is_none() {
            peak = peak.max(peak_rss_of(child.id()).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(10));
        }
        let done = succeeded(&child.wait_with_output().unwrap());
        assert!(peak > 0, "the client's memory was never read");
        assert!(
            peak < 32 << 20,
            "chunkup peaked at {} KiB for a 256 MiB file in 64 MiB chunks",
            peak >> 10
        );
        let id = id_of(done["url"].as_str().unwrap());
        let stored = client.get(&format!("/upload/{id}/")).json();
        assert_eq!(stored["total"], 256 * 1024 * 1024);
        assert_eq!(stored["md5"], done["md5"]);
    }
}

/// A server that serves one request at a time answers the other part's
/// requests with 503 and `Retry-After: 1`: chunkup waits as asked and ends.
#[test]
fn waits_as_a_busy_server_asks() {
    let setup = Setup::new(Backend::Sqlite, &["--max-requests", "1"]);
    let client = setup.client();
    let work = Workdir::new(&setup);
    let data = bytes(6 * 1024 * 1024, 8);
    let file = work.file("two.bin", &data);
    let began = Instant::now();
    let url = setup.server.url("/files/");
    let args = ["--chunk-size", "1MiB", "--parallel", "2", "--retries", "30"];
    let out = work.run(&[&["push", file.to_str().unwrap(), &url][..], &args[..]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = stderr(&out);
    let waits = log.matches("the server asks to wait 1s").count();
    assert!(waits >= 1, "no 503 met: {log}");
    // Every wait lasted the second asked for, not the 50 ms backoff.
    assert!(
        began.elapsed() >= Duration::from_secs(waits as u64),
        "{log}"
    );
    let upload_url = String::from_utf8(out.stdout).unwrap();
    assert_stored(&client, upload_url.trim(), &data, "two.bin");
}

const PROXY_VARS: [&str; 4] = ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"];

/// A minimal HTTP CONNECT proxy (what corporate networks put in front of CI
/// runners): answers each CONNECT with 200 and relays bytes both ways;
/// counts the tunnels it opened.
fn connect_proxy() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tunnels = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = tunnels.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                }
                let mut words = request_line.split_whitespace();
                assert_eq!(words.next(), Some("CONNECT"), "{request_line}");
                let target = TcpStream::connect(words.next().unwrap()).unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let mut to_client = client;
                to_client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let (mut from_target, mut to_target) = (target.try_clone().unwrap(), target);
                let mut to_client_copy = to_client.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_target, &mut to_client_copy);
                    let _ = to_client_copy.shutdown(std::net::Shutdown::Both);
                });
                // What the reader buffered after the CONNECT head goes first.
                let buffered = reader.buffer().to_vec();
                let _ = to_target.write_all(&buffered);
                let mut rest = reader.into_inner();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = rest.read(&mut buf) {
                    if n == 0 || to_target.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_target.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, tunnels)
}

/// chunkup goes through the proxy named by HTTP_PROXY (or HTTPS_PROXY,
/// ALL_PROXY), as CI runners behind a company proxy need.
#[test]
fn goes_through_the_proxy_of_the_environment() {
    let setup = Setup::new(Backend::Sqlite, &[]);
    let client = setup.client();
    let work = Workdir::new(&setup);
    let data = bytes(1024 * 1024 + 5, 9);
    let file = work.file("proxied.bin", &data);
    let (proxy, tunnels) = connect_proxy();
    for (var, endpoint) in [("HTTP_PROXY", "/upload/"), ("HTTPS_PROXY", "/files/")] {
        let before = tunnels.load(std::sync::atomic::Ordering::SeqCst);
        let url = setup.server.url(endpoint);
        let out = work
            .command(&[
                "push",
                file.to_str().unwrap(),
                &url,
                "--chunk-size",
                "256KiB",
            ])
            .env(var, format!("http://{proxy}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            tunnels.load(std::sync::atomic::Ordering::SeqCst) > before,
            "{var} unused"
        );
        let upload_url = String::from_utf8(out.stdout).unwrap();
        assert_stored(&client, upload_url.trim(), &data, "proxied.bin");
    }
    // NO_PROXY exempts the server: no new tunnel.
    let before = tunnels.load(std::sync::atomic::Ordering::SeqCst);
    let url = setup.server.url("/upload/");
    let out = work
        .command(&["push", file.to_str().unwrap(), &url, "--no-resume"])
        .env("HTTP_PROXY", format!("http://{proxy}"))
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(tunnels.load(std::sync::atomic::Ordering::SeqCst), before);
}

/// An upload that expired between two runs is replaced by a new one.
#[test]
fn starts_a_new_upload_when_the_old_one_expired() {
    let setup = Setup::new(Backend::Sqlite, &["--expiration", "2s"]);
    let client = setup.client();
    let work = Workdir::new(&setup);
    let data = bytes(2 * 1024 * 1024, 7);
    let file = work.file("late.bin", &data);
    let file = file.to_str().unwrap();
    for endpoint in ["/upload/", "/files/"] {
        let proxy = CuttingProxy::start(&setup.server.addr, 900_000, 1);
        let url = format!("http://{}{endpoint}", proxy.addr);
        let args = ["push", file, &url, "--chunk-size", "512KiB", "--retries"];
        let gave_up = work.run(&[&args[..], &["0"]].concat());
        assert_eq!(gave_up.status.code(), Some(5), "{}", stderr(&gave_up));
        std::thread::sleep(Duration::from_millis(2100));
        let again = work.run(&[&args[..], &["3"]].concat());
        assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
        let log = stderr(&again);
        // (A chunked upload still answers GET when expired; tus's HEAD says 410.)
        assert_eq!(log.contains("resuming"), endpoint == "/upload/", "{log}");
        assert!(log.contains("starting a new upload"), "{log}");
        let new_url = String::from_utf8(again.stdout).unwrap();
        assert_stored(&client, new_url.trim(), &data, "late.bin");
    }
}

#[test]
fn output_for_terminals_logs_scripts_and_machines() {
    let setup = Setup::new(Backend::Sqlite, &[]);
    let work = Workdir::new(&setup);
    let data = bytes(1024 * 1024, 6);
    let file = work.file("out.bin", &data);
    let file = file.to_str().unwrap();
    let url = setup.server.url("/upload/");
    let push = |extra: &[&str]| {
        let mut args = vec!["push", file, &url, "--chunk-size", "128KiB", "--no-resume"];
        args.extend_from_slice(extra);
        work.run(&args)
    };

    // Not a terminal: plain lines, each with the amount, percent and rate.
    let logged = push(&["--progress-interval", "0"]);
    assert_eq!(logged.status.code(), Some(0));
    let stdout = String::from_utf8(logged.stdout.clone()).unwrap();
    assert!(
        stdout.starts_with(&url) && stdout.ends_with("/\n") && stdout.lines().count() == 1,
        "{stdout}"
    );
    let log = stderr(&logged);
    assert!(
        log.contains(&format!("chunkup: uploading to {url}")),
        "{log}"
    );
    assert!(log.contains("chunkup: 1.0 MiB of 1.0 MiB (100%)"), "{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains("MiB/s") || l.contains("KiB/s"))
            .count()
            >= 8,
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "no terminal codes in a log: {log}");

    // --quiet: the URL alone.
    let quiet = push(&["--quiet"]);
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(stderr(&quiet), "");
    assert!(String::from_utf8_lossy(&quiet.stdout).starts_with(&url));

    // --json: one object on standard output, nothing else.
    let json = push(&["--json"]);
    assert_eq!(stderr(&json), "");
    let result = succeeded(&json);
    for key in [
        "url",
        "protocol",
        "size",
        "md5",
        "resumed_from",
        "retries",
        "parts",
    ] {
        assert!(result.get(key).is_some(), "{key} missing from {result}");
    }

    // A terminal (script(1) gives chunkup one): a redrawn progress bar.
    let mut inner = work.command(&["push", file, &url, "--chunk-size", "16KiB", "--no-resume"]);
    let command_line = format!(
        "{} push {file} {url} --chunk-size 16K --no-resume --retry-delay 0.05",
        chunkup().display()
    );
    inner.env("TERM", "xterm");
    let envs: Vec<(String, String)> = inner
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
        .collect();
    let tty = Command::new("script")
        .args(["-qefc", &command_line, "/dev/null"])
        .envs(envs)
        .stdin(Stdio::null())
        .output()
        .expect("script(1), from util-linux");
    assert_eq!(
        tty.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&tty.stdout)
    );
    let screen = String::from_utf8_lossy(&tty.stdout).into_owned();
    assert!(screen.contains("ETA"), "{screen}");
    assert!(
        screen.contains("\u{1b}["),
        "terminal codes expected: {screen}"
    );
    assert!(screen.contains("/1.00 MiB"), "{screen}");
}

both_backends!(
    pushes_files_and_standard_input_over_both_protocols,
    finishes_through_connections_cut_at_random_points,
    resumes_when_the_server_is_killed_and_restarted,
    resumes_when_the_client_is_killed_and_run_again,
);
