//! What operators watch. Liveness and readiness: `/healthz` answers while
//! the process serves and touches nothing; `/readyz` turns 503, naming what
//! fails, when the database refuses connections or no file can be created
//! in the data directory, and back to 200 when they recover. Metrics:
//! `/metrics` after a known sequence of requests, read by the Prometheus
//! project's own parser. Shutdown: on SIGTERM a chunk in flight finishes,
//! one that does not within `--shutdown-timeout` is cut and rolled back, and
//! the process exits 0. Logs: with `--log-format json` every line is a JSON
//! object, a request's with its id (also in `X-Request-Id`), owner, upload,
//! status, bytes and duration. Progress: a chunk in flight shows in
//! `received` (chunked JSON) and `Upload-Received` (tus HEAD), in the process
//! receiving it at once and in another through the lease's renewals, while
//! the acknowledged offset stays where it was.

use crate::both_backends;
use crate::common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A directory made immutable (`chattr +i`): no entry can be created in
/// it, not even by root, whom permission bits do not stop. Undone on drop.
struct Immutable(PathBuf);

impl Immutable {
    fn new(dir: &Path) -> Immutable {
        let set = Command::new("chattr").arg("+i").arg(dir).status();
        assert!(set.is_ok_and(|s| s.success()), "chattr +i {dir:?} failed");
        Immutable(dir.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

fn readiness_follows_the_database_and_the_storage(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let all_ok = json!({"status": "ok", "database": "ok", "storage": "ok"});
    let ready = client.get("/readyz");
    assert_eq!((ready.status, ready.json()), (200, all_ok.clone()));

    {
        let _immutable = Immutable::new(&setup.store.data.0);
        let ready = client.get("/readyz");
        assert_eq!(ready.status, 503, "{}", ready.text());
        assert_eq!(ready.json()["status"], "unavailable");
        assert_eq!(ready.json()["database"], "ok");
        assert_ne!(ready.json()["storage"], "ok");
        assert_eq!(client.get("/healthz").status, 200);
    }
    assert_eq!(client.get("/readyz").json(), all_ok);
    assert!(
        setup.store.part_files().is_empty(),
        "the probe leaves no file"
    );

    if let Some(pg) = &setup.store.pg {
        pg.allow_connections(false);
        let ready = client.get("/readyz");
        assert_eq!(ready.status, 503, "{}", ready.text());
        assert_ne!(ready.json()["database"], "ok");
        assert_eq!(ready.json()["storage"], "ok");
        let live = client.get("/healthz");
        assert_eq!((live.status, live.json()), (200, json!({"status": "ok"})));
        pg.allow_connections(true);
        eventually("ready again once the database lets connections in", || {
            client.get("/readyz").status == 200
        });
        // And it serves uploads again.
        let created = client.put_raw("/upload/?filename=r.bin", "bytes 0-2/3", b"abc");
        assert_eq!(created.status, 200, "{}", created.text());
    }
}

/// Each sample of an exposition as `name{label="value",...}` (labels
/// sorted) → value, as prometheus_client's OpenMetrics parser reads it.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let python = python_with(
        "venv-prometheus",
        "prometheus_client",
        "prometheus-client==0.21.1",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/openmetrics.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let sample: serde_json::Value = serde_json::from_str(line).unwrap();
            let labels: BTreeMap<String, String> =
                serde_json::from_value(sample["labels"].clone()).unwrap();
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let name = sample["name"].as_str().unwrap();
            let key = if labels.is_empty() {
                name.to_owned()
            } else {
                format!("{name}{{{}}}", labels.join(","))
            };
            (key, sample["value"].as_f64().unwrap())
        })
        .collect()
}

fn metrics_count_what_happened(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = bytes(6, 1);

    // Chunked: created in two chunks, completed, downloaded.
    let created = client.put_raw("/upload/?filename=a.bin", "bytes 0-2/6", &data[..3]);
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    assert_eq!(client.put_raw(&path, "bytes 3-5/6", &data[3..]).status, 200);
    assert_eq!(client.complete(&id, &md5_hex(&data)).status, 200);
    let download = client.get(&format!("/upload/{id}/file"));
    assert_eq!(
        (download.status, download.body.clone()),
        (200, data.clone())
    );
    // Chunked: created, then aborted.
    let aborted = client.put_raw("/upload/?filename=b.bin", "bytes 0-1/9", b"ab");
    let aborted = aborted.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        client
            .send("DELETE", &format!("/upload/{aborted}/"), &[], b"")
            .status,
        204
    );
    // tus: one finished by its PATCH, one left in progress.
    let mut tus_ids = Vec::new();
    for len in ["4", "10"] {
        let resp = client.send("POST", "/files/", &[TUS, ("Upload-Length", len)], b"");
        assert_eq!(resp.status, 201, "{}", resp.text());
        tus_ids.push(resp.location_id());
    }
    for (id, body) in tus_ids.iter().zip([&b"wxyz"[..], b"123"]) {
        let patch = client.send(
            "PATCH",
            &format!("/files/{id}"),
            &[TUS, STREAM, ("Upload-Offset", "0")],
            body,
        );
        assert_eq!(patch.status, 204, "{}", patch.text());
    }
    // A refused request is counted with its status.
    assert_eq!(client.get("/upload/no-such-upload/").status, 404);

    let scraped = client.get("/metrics");
    assert_eq!(scraped.status, 200);
    assert!(scraped
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let metrics = parse_metrics(&scraped.text());
    let value = |key: &str| {
        metrics
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("no {key} in {metrics:#?}"))
    };
    for (key, expected) in [
        ("chunkd_uploads_created_total", 4.0),
        ("chunkd_uploads_finished_total", 2.0),
        ("chunkd_uploads_terminated_total", 1.0),
        ("chunkd_uploads_expired_total", 0.0),
        ("chunkd_uploads_failed_total", 0.0),
        ("chunkd_uploads_in_progress", 1.0),
        ("chunkd_bytes_received_total", 6.0 + 2.0 + 4.0 + 3.0),
        ("chunkd_requests_refused_total", 0.0),
    ] {
        assert_eq!(value(key), expected, "{key}");
    }
    for (method, protocol, status, expected) in [
        ("PUT", "chunked", 200, 3.0),
        ("POST", "chunked", 200, 1.0),
        ("GET", "chunked", 200, 1.0),
        ("GET", "chunked", 404, 1.0),
        ("DELETE", "chunked", 204, 1.0),
        ("POST", "tus", 201, 2.0),
        ("PATCH", "tus", 204, 2.0),
    ] {
        let key = format!(
            r#"chunkd_requests_total{{method="{method}",protocol="{protocol}",status="{status}"}}"#
        );
        assert_eq!(value(&key), expected, "{key}");
    }
    // Three chunked PUTs, two PATCHes, and the two tus creations, whose
    // rows go through the same stages without bytes: each once a stage.
    for stage in ["receive", "sync", "commit", "total"] {
        let key = format!(r#"chunkd_chunk_duration_seconds_count{{stage="{stage}"}}"#);
        assert_eq!(value(&key), 7.0, "{key}");
    }
    assert!(value("chunkd_bytes_sent_total") >= 6.0);
}

/// Starts a chunk of 10 bytes at `offset` of the 30-byte upload `id` and
/// sends its first 5.
fn half_a_chunk(setup: &Setup, id: &str, data: &[u8], offset: usize) -> std::net::TcpStream {
    let client = setup.client();
    let range = format!("bytes {offset}-{}/30", offset + 9);
    partial_request(
        &setup.server,
        "PUT",
        &format!("/upload/{id}/"),
        &[("Authorization", &client.auth), ("Content-Range", &range)],
        10,
        &data[offset..offset + 5],
    )
}

fn sigterm_lets_chunks_in_flight_finish_and_cuts_the_rest(backend: Backend) {
    let mut setup = Setup::new(backend, &["--shutdown-timeout", "10s"]);
    let client = setup.client();
    let data = bytes(30, 5);
    let created = client.put_raw("/upload/?filename=s.bin", "bytes 0-9/30", &data[..10]);
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();

    // A chunk in flight when SIGTERM comes finishes, and is acknowledged.
    let mut in_flight = half_a_chunk(&setup, &id, &data, 10);
    std::thread::sleep(Duration::from_millis(300));
    let addr = setup.server.addr.clone();
    let exited = setup.server.terminate(Duration::from_millis(500));
    assert!(
        exited.is_none(),
        "exited with a chunk in flight: {exited:?}"
    );
    eventually("new connections are refused", || {
        std::net::TcpStream::connect(&addr).is_err()
    });
    in_flight.write_all(&data[15..20]).unwrap();
    let finished = read_response(in_flight);
    assert_eq!(finished.status, 200, "{}", finished.text());
    assert_eq!(finished.json()["offset"], 20);
    let exited = setup.server.terminate(Duration::from_secs(10));
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");

    // A chunk that does not finish within the timeout is cut off, and
    // rolled back: the upload resumes at its acknowledged offset.
    let mut setup = Setup {
        server: Server::start(&setup.store, &["--shutdown-timeout", "1s"]),
        ..setup
    };
    let stalled = half_a_chunk(&setup, &id, &data, 20);
    std::thread::sleep(Duration::from_millis(300));
    let exited = setup.server.terminate(Duration::from_secs(10));
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    drop(stalled);
    let setup = Setup {
        server: Server::start(&setup.store, &[]),
        ..setup
    };
    let client = setup.client();
    let path = format!("/upload/{id}/");
    assert_eq!(client.get(&path).json()["offset"], 20);
    let last = client.put_raw(&path, "bytes 20-29/30", &data[20..]);
    assert_eq!(last.status, 200, "{}", last.text());
    assert_eq!(client.complete(&id, &md5_hex(&data)).status, 200);
    let download = client.get(&format!("/upload/{id}/file"));
    assert_eq!(download.body, data);
}

fn json_logs_name_each_request(backend: Backend) {
    let setup = Setup::new(backend, &["--log-format", "json"]);
    let client = setup.client();
    let created = client.put_raw("/upload/?filename=l.bin", "bytes 0-3/8", b"abcd");
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let generated = created.header("x-request-id").unwrap().to_owned();
    assert_eq!(generated.len(), 32, "{generated}");
    let path = format!("/upload/{id}/");
    let given = client.send("GET", &path, &[("X-Request-Id", "proxy-7.a_b:c")], b"");
    assert_eq!(given.header("x-request-id"), Some("proxy-7.a_b:c"));
    let forged = client.send("GET", &path, &[("X-Request-Id", "two words")], b"");
    assert_ne!(forged.header("x-request-id"), Some("two words"));

    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&setup.server.log)
            .unwrap()
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    };
    let line_of = |request_id: &str| {
        lines()
            .into_iter()
            .find(|line| line["request_id"] == request_id)
    };
    eventually("the requests are logged", || {
        line_of("proxy-7.a_b:c").is_some()
    });
    let line = line_of("proxy-7.a_b:c").unwrap();
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], path.as_str());
    assert_eq!(line["status"], 200);
    assert_eq!(line["owner"], "alice");
    assert_eq!(line["upload_id"], id.as_str());
    assert_eq!(line["bytes"], given.body.len() as u64);
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(line["time"].as_str().unwrap().starts_with("20"));
    let creation = line_of(&generated).unwrap();
    assert_eq!(
        (&creation["method"], &creation["status"], &creation["owner"]),
        (&json!("PUT"), &json!(200), &json!("alice"))
    );
    // Lines that are not a request's carry their text in `message`.
    assert!(lines().iter().any(|line| line["message"].is_string()));
}

fn progress_shows_a_chunk_in_flight(backend: Backend) {
    let flags = ["--lease-time", "400ms"];
    let setup = Setup::new(backend, &flags);
    let other = Server::start(&setup.store, &flags);
    let client = setup.client();
    let elsewhere = Client::new(&other, &setup.token);
    let data = bytes(200_000, 9);
    let created = client.put_raw(
        "/upload/?filename=p.bin",
        "bytes 0-99999/200000",
        &data[..100_000],
    );
    assert_eq!(created.status, 200, "{}", created.text());
    // Nothing in flight: the JSON is drf-chunked-upload's, without it.
    assert_eq!(created.json().get("received"), None);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");

    // 60 KB of the next chunk's 100 KB, in pieces, slower than the lease
    // is renewed.
    let mut in_flight = partial_request(
        &setup.server,
        "PUT",
        &path,
        &[
            ("Authorization", &client.auth),
            ("Content-Range", "bytes 100000-199999/200000"),
        ],
        100_000,
        &data[100_000..110_000],
    );
    for piece in 1..6 {
        std::thread::sleep(Duration::from_millis(150));
        let start = 100_000 + piece * 10_000;
        in_flight.write_all(&data[start..start + 10_000]).unwrap();
    }
    eventually("this process sees every byte received", || {
        client.get(&path).json()["received"] == 160_000
    });
    assert_eq!(client.get(&path).json()["offset"], 100_000);
    let head = client.send("HEAD", &format!("/files/{id}"), &[TUS], b"");
    assert_eq!(head.header("upload-offset"), Some("100000"));
    assert_eq!(head.header("upload-received"), Some("160000"));
    // The other process learns it from the lease's renewals.
    eventually("the other process sees the chunk in flight", || {
        let seen = elsewhere.get(&path).json();
        let received = seen["received"].as_u64().unwrap_or(0);
        seen["offset"] == 100_000 && received > 100_000 && received <= 160_000
    });

    in_flight.write_all(&data[160_000..]).unwrap();
    let done = read_response(in_flight);
    assert_eq!(done.status, 200, "{}", done.text());
    for seen in [client.get(&path).json(), elsewhere.get(&path).json()] {
        assert_eq!(
            (&seen["offset"], seen.get("received")),
            (&json!(200_000), None)
        );
    }
    let head = client.send("HEAD", &format!("/files/{id}"), &[TUS], b"");
    assert_eq!(head.header("upload-received"), None);
}

both_backends!(
    progress_shows_a_chunk_in_flight,
    readiness_follows_the_database_and_the_storage,
    metrics_count_what_happened,
    json_logs_name_each_request,
    sigterm_lets_chunks_in_flight_finish_and_cuts_the_rest
);
