//! A refused request changes nothing: hostile forms are cut off with flat
//! memory and on time, a request refused after its chunk was written rolls
//! the chunk back, limits hold however a body is framed, and nothing a
//! request or a crash leaves behind outlives a sweep.

use crate::both_backends;
use crate::common::*;
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

/// A request sent whole from another thread while the server may answer
/// and close first; its response if one came.
fn send_whole(addr: &str, head: Vec<u8>, body: Vec<u8>) -> Option<Response> {
    let mut stream = connect(addr);
    let _ = stream
        .write_all(&head)
        .and_then(|()| stream.write_all(&body));
    try_read_response(stream).ok()
}

/// A chunked-encoding body of `data`, in pieces of `piece` bytes.
fn chunked_encoding(data: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in data.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn tus_create(client: &Client, headers: &[(&str, &str)]) -> String {
    let mut all = vec![TUS];
    all.extend_from_slice(headers);
    let resp = client.send("POST", "/files/", &all, b"");
    assert_eq!(resp.status, 201, "{}", resp.text());
    resp.location_id()
}

fn tus_head(client: &Client, id: &str) -> Response {
    let resp = client.send("HEAD", &format!("/files/{id}"), &[TUS], b"");
    assert_eq!(resp.status, 200);
    resp
}

/// A form of many small fields, with no file or before it, is refused
/// after the first few, and the server's memory stays flat.
fn many_form_fields_keep_memory_flat(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let field = "v".repeat(60_000);
    let names: Vec<String> = (0..3000).map(|n| format!("f{n}")).collect();
    let mut parts: Vec<Part> = names.iter().map(|name| Part::Text(name, &field)).collect();
    let without_file = multipart(&parts);
    parts.push(Part::File("file", "x.bin", b"0123456789"));
    let with_file_last = multipart(&parts);
    let ctype = multipart_type();
    for (path, body) in [
        ("/upload/", without_file),
        ("/upload/?filename=x.bin", with_file_last),
    ] {
        let head = request_head(
            "PUT",
            path,
            &setup.server.addr,
            &[
                ("Authorization", &client.auth),
                ("Content-Range", "bytes 0-9/10"),
                ("Content-Type", &ctype),
            ],
            Some(body.len() as u64),
        );
        if let Some(resp) = send_whole(&setup.server.addr, head, body) {
            assert!([400, 413].contains(&resp.status), "{}", resp.text());
        }
    }
    let peak = setup.server.peak_rss();
    assert!(peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
    assert_eq!(client.get("/upload/").json(), json!([]));
    assert!(setup.store.part_files().is_empty());
}

/// A form that sends a small field every 700 ms, with a read timeout of
/// 1 s, is cut off by the progress rule over its whole body.
fn a_trickling_form_is_cut_off(backend: Backend) {
    let setup = Setup::new(backend, &["--read-timeout", "1s"]);
    let client = setup.client();
    let ctype = multipart_type();
    let mut stream = connect(&setup.server.addr);
    stream
        .write_all(&request_head(
            "PUT",
            "/upload/?filename=t.bin",
            &setup.server.addr,
            &[
                ("Authorization", &client.auth),
                ("Content-Range", "bytes 0-9/10"),
                ("Content-Type", &ctype),
            ],
            Some(10_000_000),
        ))
        .unwrap();
    let started = Instant::now();
    for n in 0..30 {
        let field = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f{n}\"\r\n\r\n{}\r\n",
            "x".repeat(60)
        );
        if stream.write_all(field.as_bytes()).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(700));
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let answer = try_read_response(stream);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "held open for {took:?}");
    if let Ok(resp) = answer {
        assert_eq!(resp.status, 408, "{}", resp.text());
    }
}

/// A multipart chunk whose file part is followed by a field that is
/// refused, or by a body cut short, changes nothing: the same chunk then
/// goes in at the same offset.
fn a_form_refused_after_its_file_moves_nothing(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = bytes(20_000, 5);
    let created = client.put_raw(
        "/upload/?filename=f.bin",
        "bytes 0-9999/20000",
        &data[..10_000],
    );
    assert_eq!(created.status, 200);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    let too_long = "y".repeat(70_000);
    let close = format!("--{BOUNDARY}--\r\n");
    let mut not_utf8 = multipart(&[Part::File("file", "c.bin", &data[10_000..])]);
    not_utf8.truncate(not_utf8.len() - close.len());
    not_utf8.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n").as_bytes(),
    );
    not_utf8.extend_from_slice(&[0xff, 0xfe, b'\r', b'\n']);
    not_utf8.extend_from_slice(close.as_bytes());
    let mut truncated = multipart(&[Part::File("file", "c.bin", &data[10_000..])]);
    truncated.truncate(truncated.len() - 10);
    let ctype = multipart_type();
    let bodies = [
        multipart(&[
            Part::File("file", "c.bin", &data[10_000..]),
            Part::Text("note", &too_long),
        ]),
        not_utf8,
        truncated,
    ];
    for (n, body) in bodies.into_iter().enumerate() {
        let resp = client.send(
            "PUT",
            &path,
            &[
                ("Content-Range", "bytes 10000-19999/20000"),
                ("Content-Type", &ctype),
            ],
            &body,
        );
        assert!([400, 413].contains(&resp.status), "{n}: {}", resp.text());
        assert_eq!(client.get(&path).json()["offset"], 10_000, "{n}");
    }
    let resp = client.put_chunk(&path, "bytes 10000-19999/20000", None, &data[10_000..]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(client.complete(&id, &md5_hex(&data)).status, 200);
    assert!(client.get(&format!("{path}file")).body == data);
}

/// A tus PATCH refused for its offset does not tell the deferred length.
fn a_refused_patch_leaves_the_length_deferred(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let id = tus_create(&client, &[("Upload-Defer-Length", "1")]);
    let resp = client.send(
        "PATCH",
        &format!("/files/{id}"),
        &[
            TUS,
            STREAM,
            ("Upload-Offset", "5"),
            ("Upload-Length", "100"),
        ],
        b"hello",
    );
    assert_eq!(resp.status, 409, "{}", resp.text());
    let head = tus_head(&client, &id);
    assert_eq!(head.header("upload-defer-length"), Some("1"));
    assert_eq!(head.header("upload-length"), None);
    assert_eq!(head.header("upload-offset"), Some("0"));
    // A PATCH refused for its body checksum does not tell it either.
    let resp = client.send(
        "PATCH",
        &format!("/files/{id}"),
        &[
            TUS,
            STREAM,
            ("Upload-Offset", "0"),
            ("Upload-Length", "5"),
            ("Upload-Checksum", "md5 AAAAAAAAAAAAAAAAAAAAAA=="),
        ],
        b"hello",
    );
    assert_eq!(resp.status, 460, "{}", resp.text());
    assert_eq!(
        tus_head(&client, &id).header("upload-defer-length"),
        Some("1")
    );
}

/// `--max-chunk-bytes` holds for bodies without a Content-Length: tus
/// PATCH and creation-with-upload, and the chunked protocol's POST.
fn the_chunk_limit_holds_for_chunked_encoding(backend: Backend) {
    let setup = Setup::new(backend, &["--max-chunk-bytes", "1000"]);
    let client = setup.client();
    let data = bytes(5000, 9);
    let body = chunked_encoding(&data, 700);
    let addr = &setup.server.addr;
    let id = tus_create(&client, &[("Upload-Length", "5000")]);
    let head = request_head(
        "PATCH",
        &format!("/files/{id}"),
        addr,
        &[
            ("Authorization", &client.auth),
            TUS,
            STREAM,
            ("Upload-Offset", "0"),
            ("Transfer-Encoding", "chunked"),
        ],
        None,
    );
    let resp = send_whole(addr, head, body.clone()).expect("an answer");
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(tus_head(&client, &id).header("upload-offset"), Some("0"));
    let head = request_head(
        "POST",
        "/files/",
        addr,
        &[
            ("Authorization", &client.auth),
            TUS,
            STREAM,
            ("Upload-Length", "5000"),
            ("Transfer-Encoding", "chunked"),
        ],
        None,
    );
    let resp = send_whole(addr, head, body.clone()).expect("an answer");
    assert_eq!(resp.status, 413, "{}", resp.text());
    let head = request_head(
        "POST",
        &format!("/upload/?filename=c.bin&md5={}", md5_hex(&data)),
        addr,
        &[
            ("Authorization", &client.auth),
            ("Content-Type", "application/octet-stream"),
            ("Transfer-Encoding", "chunked"),
        ],
        None,
    );
    let resp = send_whole(addr, head, body).expect("an answer");
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(client.get("/upload/").json().as_array().unwrap().len(), 1);
    eventually("refused bodies leave no file", || {
        setup.store.part_files() == vec![(format!("{id}.part"), 0)]
    });
}

/// A deferred upload already past a lowered `--max-bytes` takes no more.
fn a_deferred_upload_past_a_lowered_limit_takes_nothing(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("alice");
    let server = Server::start(&store, &["--max-bytes", "2000"]);
    let client = Client::new(&server, &token);
    let id = tus_create(&client, &[("Upload-Defer-Length", "1")]);
    let resp = client.send(
        "PATCH",
        &format!("/files/{id}"),
        &[TUS, STREAM, ("Upload-Offset", "0")],
        &bytes(1500, 1),
    );
    assert_eq!(resp.status, 204, "{}", resp.text());
    drop(client);
    drop(server);
    let server = Server::start(&store, &["--max-bytes", "1000"]);
    let client = Client::new(&server, &token);
    let resp = client.send(
        "PATCH",
        &format!("/files/{id}"),
        &[TUS, STREAM, ("Upload-Offset", "1500")],
        &bytes(10, 2),
    );
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(tus_head(&client, &id).header("upload-offset"), Some("1500"));
}

/// A final upload may name each partial upload once, and a bounded number
/// of them.
fn a_final_upload_names_each_part_once(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let id = tus_create(
        &client,
        &[("Upload-Length", "5"), ("Upload-Concat", "partial")],
    );
    let resp = client.send(
        "PATCH",
        &format!("/files/{id}"),
        &[TUS, STREAM, ("Upload-Offset", "0")],
        b"hello",
    );
    assert_eq!(resp.status, 204);
    let part = format!("/files/{id}");
    let twice = format!("final;{part} {part}");
    let resp = client.send("POST", "/files/", &[TUS, ("Upload-Concat", &twice)], b"");
    assert_eq!(resp.status, 400, "{}", resp.text());
    let many: Vec<String> = (0..300)
        .map(|_| format!("/files/{}", uuid::Uuid::new_v4()))
        .collect();
    let many = format!("final;{}", many.join(" "));
    let resp = client.send("POST", "/files/", &[TUS, ("Upload-Concat", &many)], b"");
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(client.get("/upload/").json().as_array().unwrap().len(), 1);
    assert_eq!(setup.store.part_files(), vec![(format!("{id}.done"), 5)]);
}

/// Files no row knows: a creation reset right after its headers or in
/// its body, or with a malformed chunk size, leaves none (a tus creation
/// keeps what arrived, as an upload); one left by `kill -9` during a
/// first chunk goes at the next sweep, which says so.
fn no_orphan_outlives_a_sweep(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("alice");
    let server = Server::start(&store, &[]);
    let client = Client::new(&server, &token);
    let addr = server.addr.clone();
    for n in 0..20 {
        let path = format!("/upload/?filename=r{n}.bin");
        let stream = partial_request(
            &server,
            "PUT",
            &path,
            &[
                ("Authorization", &client.auth),
                ("Content-Range", "bytes 0-99999/100000"),
            ],
            100_000,
            &bytes(n * 1000, 4),
        );
        reset(stream);
    }
    let head = request_head(
        "PUT",
        "/upload/?filename=z.bin",
        &addr,
        &[
            ("Authorization", &client.auth),
            ("Content-Range", "bytes 0-99999/100000"),
            ("Transfer-Encoding", "chunked"),
        ],
        None,
    );
    let resp = send_whole(&addr, head, b"10\r\n0123456789abcdef\r\nzz\r\n".to_vec());
    if let Some(resp) = resp {
        assert_eq!(resp.status, 400, "{}", resp.text());
    }
    eventually("reset creations leave no file", || {
        store.part_files().is_empty()
    });
    assert_eq!(client.get("/upload/").json(), json!([]));

    let mut first_chunk = partial_request(
        &server,
        "PUT",
        "/upload/?filename=k.bin",
        &[
            ("Authorization", &client.auth),
            ("Content-Range", "bytes 0-2999999/3000000"),
        ],
        3_000_000,
        &bytes(1_500_000, 3),
    );
    first_chunk.flush().unwrap();
    eventually("the first chunk is on the disk", || {
        store.part_files().iter().any(|(_, len)| *len > 0)
    });
    drop(client);
    drop(server);
    let orphans = store.part_files();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    // Still being written, as far as a sweep can tell: left alone.
    let (ok, out, err) = store.run(&["cleanup"]);
    assert!(ok, "{err}");
    assert!(out.contains("0 files without an upload removed"), "{out}");
    assert_eq!(store.part_files(), orphans);
    // Not written for longer than the grace of a creation under way.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for path in walk_files(&store.data.0) {
        if path.to_string_lossy().contains(".part") {
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(hour_ago).unwrap();
        }
    }
    let (ok, out, err) = store.run(&["cleanup"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 files without an upload removed"), "{out}");
    assert!(store.part_files().is_empty());
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Duration and size flags that no clock or row can hold are refused at
/// startup with a clear message, not a panic on the first request.
fn absurd_flags_are_refused_at_startup(backend: Backend) {
    let store = Store::new(backend);
    for (flag, value) in [
        ("--lease-time", "100000000d"),
        ("--expiration", "3650000d"),
        ("--lock-timeout", "100000000d"),
        ("--read-timeout", "0s"),
        ("--max-chunk-bytes", "0"),
        ("--max-bytes", "16000000TiB"),
    ] {
        for command in ["serve", "cleanup"] {
            let (ok, _, err) = store.run(&[command, flag, value]);
            assert!(!ok, "{command} {flag} {value} was accepted");
            assert!(
                err.contains(flag) && !err.contains("panicked"),
                "{command} {flag} {value}: {err}"
            );
        }
    }
}

/// tus headers that are not ASCII, and metadata over 4 KiB, are refused
/// rather than read as absent.
fn tus_headers_must_be_ascii(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let addr = &setup.server.addr;
    let raw = |method: &str, path: &str, extra: &[u8], body: &[u8]| {
        let mut head = request_head(
            method,
            path,
            addr,
            &[("Authorization", &client.auth), TUS, STREAM],
            Some(body.len() as u64),
        );
        head.truncate(head.len() - 2);
        head.extend_from_slice(extra);
        head.extend_from_slice(b"\r\n");
        let mut stream = connect(addr);
        stream.write_all(&head).unwrap();
        stream.write_all(body).unwrap();
        read_response(stream)
    };
    let resp = raw(
        "POST",
        "/files/",
        "Upload-Length: 5\r\nUpload-Metadata: filename \u{e9}t\u{e9}\r\n".as_bytes(),
        b"",
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    let id = tus_create(&client, &[("Upload-Length", "5")]);
    let resp = raw(
        "PATCH",
        &format!("/files/{id}"),
        "Upload-Offset: 0\r\nUpload-Checksum: md5 \u{e9}\u{e9}\r\n".as_bytes(),
        b"hello",
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(tus_head(&client, &id).header("upload-offset"), Some("0"));
    let metadata = format!("filename {}", "QUFB".repeat(1100));
    let resp = client.send(
        "POST",
        "/files/",
        &[TUS, ("Upload-Length", "5"), ("Upload-Metadata", &metadata)],
        b"",
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(client.get("/upload/").json().as_array().unwrap().len(), 1);
}

/// The SQLite file gets the data files' mode; an origin that is not
/// allowed gets `Vary: Origin`; malformed requests are not logged as
/// server errors.
fn small_leaks_are_closed(backend: Backend) {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new(backend, &["--cors-origins", "https://app.example"]);
    let client = setup.client();
    if backend == Backend::Sqlite {
        let mode = std::fs::metadata(setup.store.data.0.join("chunkd.sqlite3"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }
    let resp = client.send(
        "GET",
        "/upload/",
        &[("Origin", "https://evil.example")],
        b"",
    );
    assert_eq!(resp.status, 200);
    assert!(resp.header("vary").unwrap().contains("Origin"));
    assert_eq!(resp.header("access-control-allow-origin"), None);
    let resp = client.put_raw("/upload/?filename=m.bin", "bytes 0-nine/10", b"0123456789");
    assert_eq!(resp.status, 400);
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /upload/ HTTP/1.1\r\nHost: x\r\nX-Bad: \x01\x02\r\n\r\n",
    ] {
        let resp = send_whole(&setup.server.addr, garbage.to_vec(), Vec::new());
        assert_eq!(resp.map(|r| r.status), Some(400));
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(&setup.server.log).unwrap();
    assert!(log.contains("request parse error"), "{log}");
    assert!(!log.contains(" ERROR "), "{log}");
}

both_backends!(
    many_form_fields_keep_memory_flat,
    a_trickling_form_is_cut_off,
    a_form_refused_after_its_file_moves_nothing,
    a_refused_patch_leaves_the_length_deferred,
    the_chunk_limit_holds_for_chunked_encoding,
    a_deferred_upload_past_a_lowered_limit_takes_nothing,
    a_final_upload_names_each_part_once,
    no_orphan_outlives_a_sweep,
    absurd_flags_are_refused_at_startup,
    tus_headers_must_be_ascii,
    small_leaks_are_closed,
);
