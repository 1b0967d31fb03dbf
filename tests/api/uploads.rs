//! Uploads that succeed: multipart and raw chunks, resume after a dropped
//! connection, completion, downloads.

use crate::all_backends;
use crate::common::*;
use std::io::Write;

fn multipart_chunks_then_download(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = bytes(300_001, 1);
    let done = client.upload("data.bin", &data, 65_536);
    assert_eq!(done["status"], 2);
    assert_eq!(done["offset"], 300_001);
    assert_eq!(done["total"], 300_001);
    assert_eq!(done["md5"], md5_hex(&data));
    assert_eq!(done["user"], "alice");
    let id = done["id"].as_str().unwrap();
    assert_eq!(done["url"], setup.server.url(&format!("/upload/{id}/")));
    assert_eq!(
        done["file"],
        setup.server.url(&format!("/upload/{id}/file"))
    );
    let file = client.get(&format!("/upload/{id}/file"));
    assert_eq!(file.status, 200);
    assert_eq!(file.body, data);
    assert_eq!(
        file.header("etag"),
        Some(format!("\"{}\"", md5_hex(&data)).as_str())
    );
    // The completed file is stored as {id}.done, nothing else remains.
    assert_eq!(
        setup.store.part_files(),
        vec![(format!("{id}.done"), 300_001)]
    );
}

fn raw_chunks_with_content_disposition(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = bytes(10_000, 2);
    let first = client.send(
        "PUT",
        "/upload/",
        &[
            ("Content-Range", "bytes 0-4999/10000"),
            ("Content-Type", "application/octet-stream"),
            (
                "Content-Disposition",
                "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%20%E6%97%A5%E6%9C%AC.bin",
            ),
        ],
        &data[..5000],
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let json = first.json();
    assert_eq!(json["filename"], "résumé 日本.bin");
    assert_eq!(json["offset"], 5000);
    let id = json["id"].as_str().unwrap().to_owned();
    // No Content-Type at all is a raw body too (curl -T).
    let second = client.send(
        "PUT",
        &format!("/upload/{id}"),
        &[("Content-Range", "bytes 5000-9999/10000")],
        &data[5000..],
    );
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json()["offset"], 10_000);
    // The checksum as JSON, in upper case.
    let done = client.send(
        "POST",
        &format!("/upload/{id}/"),
        &[("Content-Type", "application/json")],
        format!("{{\"md5\": \"{}\"}}", md5_hex(&data).to_uppercase()).as_bytes(),
    );
    assert_eq!(done.status, 200, "{}", done.text());
    let file = client.get(&format!("/upload/{id}/file"));
    assert_eq!(file.body, data);
    assert_eq!(
        file.header("content-disposition"),
        Some("attachment; filename=\"r_sum_ __.bin\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%E6%97%A5%E6%9C%AC.bin")
    );
}

fn raw_filename_from_query_and_multipart_completion(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let first = client.put_raw("/upload/?filename=n%C3%B8te.txt", "bytes 0-2/3", b"abc");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["filename"], "nøte.txt");
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let ctype = multipart_type();
    let done = client.send(
        "POST",
        &format!("/upload/{id}/"),
        &[("Content-Type", &ctype)],
        &multipart(&[Part::Text("md5", &md5_hex(b"abc"))]),
    );
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["status"], 2);
}

fn single_request_uploads_including_empty_files(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let ctype = multipart_type();
    for data in [&b""[..], &b"whole file in one request\n"[..]] {
        let md5 = md5_hex(data);
        let resp = client.send(
            "POST",
            "/upload/",
            &[("Content-Type", &ctype)],
            &multipart(&[
                Part::Text("filename", "whole.txt"),
                Part::Text("md5", &md5),
                Part::File("file", "chunk.bin", data),
            ]),
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
        let json = resp.json();
        assert_eq!(json["status"], 2);
        assert_eq!(json["offset"], data.len());
        assert_eq!(json["total"], data.len());
        assert_eq!(json["md5"], md5);
        let file = client.get(&format!("/upload/{}/file", json["id"].as_str().unwrap()));
        assert_eq!(file.status, 200);
        assert_eq!(file.body, data);
    }
    // Raw, with the checksum and name in the query; the md5 field before the file.
    let raw = client.send(
        "POST",
        &format!("/upload/?filename=raw.bin&md5={}", md5_hex(b"raw bytes")),
        &[("Content-Type", "application/octet-stream")],
        b"raw bytes",
    );
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(raw.json()["offset"], 9);
    // A wrong checksum keeps nothing (drf leaves an orphan upload).
    let before = setup.store.part_files();
    let wrong = client.send(
        "POST",
        "/upload/?filename=bad.bin&md5=00000000000000000000000000000000",
        &[("Content-Type", "application/octet-stream")],
        b"some bytes",
    );
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.json()["detail"], "checksum does not match");
    eventually("the rejected file is removed", || {
        setup.store.part_files() == before
    });
    assert_eq!(client.get("/upload/").json().as_array().unwrap().len(), 3);
}

fn completion_is_idempotent(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = b"0123456789";
    let first = client.put_chunk("/upload/", "bytes 0-9/10", Some("a.txt"), data);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let once = client.complete(&id, &md5_hex(data));
    assert_eq!(once.status, 200);
    let twice = client.complete(&id, &md5_hex(data).to_uppercase());
    assert_eq!(twice.status, 200);
    assert_eq!(once.json(), twice.json());
    let other = client.complete(&id, &md5_hex(b"other"));
    assert_eq!(other.status, 400);
    assert_eq!(
        other.json()["detail"],
        "Upload has already been marked as \"complete\""
    );
}

/// The client dies mid-chunk: the setup.server keeps nothing of that chunk, and
/// the upload resumes from the offset a GET reports.
fn resume_after_a_dropped_connection(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = bytes(3_000_000, 3);
    let first = client.put_raw(
        "/upload/?filename=big.bin",
        "bytes 0-999999/3000000",
        &data[..1_000_000],
    );
    assert_eq!(first.status, 200);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");

    // Half of the second chunk, then the connection drops.
    let auth = client.auth.clone();
    let broken = partial_request(
        &setup.server,
        "PUT",
        &path,
        &[
            ("Authorization", &auth),
            ("Content-Range", "bytes 1000000-1999999/3000000"),
            ("Content-Type", "application/octet-stream"),
        ],
        1_000_000,
        &data[1_000_000..1_600_000],
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    drop(broken);

    let part = format!("{id}.part");
    eventually("the broken chunk is cut off", || {
        setup.store.part_files() == vec![(part.clone(), 1_000_000)]
    });
    let state = client.get(&path);
    assert_eq!(state.json()["offset"], 1_000_000);
    assert_eq!(state.header("cache-control"), Some("no-store"));

    // The same broken chunk again, as multipart this time.
    let body = multipart(&[Part::File("file", "c", &data[1_000_000..2_000_000])]);
    let ctype = multipart_type();
    let broken = partial_request(
        &setup.server,
        "PUT",
        &path,
        &[
            ("Authorization", &auth),
            ("Content-Range", "bytes 1000000-1999999/3000000"),
            ("Content-Type", &ctype),
        ],
        body.len() as u64,
        &body[..700_000],
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    drop(broken);
    eventually("the broken multipart chunk is cut off", || {
        setup.store.part_files() == vec![(part.clone(), 1_000_000)]
    });

    for start in [1_000_000usize, 2_000_000] {
        let range = format!("bytes {}-{}/3000000", start, start + 999_999);
        let resp = client.put_chunk(&path, &range, None, &data[start..start + 1_000_000]);
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let done = client.complete(&id, &md5_hex(&data));
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(client.get(&format!("{path}file")).body, data);
}

/// Requests on one connection that stays open, as chunkup's, browsers'
/// and the benchmark's are: chunks of both protocols larger than the
/// connection's read-ahead, the completion, and each answer right with
/// nothing of one request leaking into the next. A chunk at a wrong offset
/// is refused; the server may close the connection then (when it answers
/// before the body is in), and the client opens another, as HTTP clients do.
fn requests_on_one_kept_alive_connection(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let auth = setup.client().auth;
    let addr = &setup.server.addr;
    let mut kept = None;
    let mut exchange = |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let head = kept_alive_head(method, path, addr, &all, Some(body.len() as u64));
        let resp = exchange_kept(
            &mut kept,
            || connect(addr),
            &head,
            |conn| {
                // The server may answer (and close) before reading the whole body.
                let _ = conn.write_all(body);
            },
        );
        assert!(
            resp.status >= 400 || kept.is_some(),
            "{method} {path}: closed after a success"
        );
        resp
    };
    let raw = ("Content-Type", "application/octet-stream");
    let data = bytes(700_000, 9);
    let first = exchange(
        "PUT",
        "/upload/?filename=kept.bin",
        &[raw, ("Content-Range", "bytes 0-299999/700000")],
        &data[..300_000],
    );
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["offset"], 300_000);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    // A chunk at an offset already taken.
    let stale = exchange(
        "PUT",
        &path,
        &[raw, ("Content-Range", "bytes 0-299999/700000")],
        &data[300_000..600_000],
    );
    assert_eq!(stale.status, 400, "{}", stale.text());
    assert_eq!(stale.json()["expected_offset"], 300_000);
    let second = exchange(
        "PUT",
        &path,
        &[raw, ("Content-Range", "bytes 300000-699999/700000")],
        &data[300_000..],
    );
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json()["offset"], 700_000);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let md5 = format!("md5={}", md5_hex(&data));
    let done = exchange("POST", &path, &form, md5.as_bytes());
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["md5"], md5_hex(&data));

    // tus on the same connection.
    let tus = ("Tus-Resumable", "1.0.0");
    let created = exchange("POST", "/files/", &[tus, ("Upload-Length", "700000")], b"");
    assert_eq!(created.status, 201, "{}", created.text());
    let tus_id = created.location_id();
    let file = format!("/files/{tus_id}");
    for (at, end) in [(0, 450_000), (450_000, 700_000)] {
        let offset = at.to_string();
        let patched = exchange(
            "PATCH",
            &file,
            &[
                tus,
                ("Content-Type", "application/offset+octet-stream"),
                ("Upload-Offset", &offset),
            ],
            &data[at..end],
        );
        assert_eq!(patched.status, 204, "{}", patched.text());
        assert_eq!(
            patched.header("upload-offset"),
            Some(end.to_string().as_str())
        );
    }
    assert_eq!(setup.client().get(&format!("{path}file")).body, data);
    let stored = setup.client().get(&format!("/upload/{tus_id}/file"));
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(stored.body, data);
}

fn range_downloads(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = bytes(1000, 4);
    let done = client.upload("r.bin", &data, 1000);
    let path = format!("/upload/{}/file", done["id"].as_str().unwrap());
    let etag = format!("\"{}\"", md5_hex(&data));

    let part = client.send("GET", &path, &[("Range", "bytes=100-199")], b"");
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 100-199/1000"));
    assert_eq!(part.body, &data[100..200]);
    let tail = client.send("GET", &path, &[("Range", "bytes=-10")], b"");
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, &data[990..]);
    let open = client.send("GET", &path, &[("Range", "bytes=900-")], b"");
    assert_eq!(open.body, &data[900..]);
    let beyond = client.send("GET", &path, &[("Range", "bytes=1000-")], b"");
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some("bytes */1000"));
    let stale = client.send(
        "GET",
        &path,
        &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")],
        b"",
    );
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, data);
    let fresh = client.send(
        "GET",
        &path,
        &[("Range", "bytes=0-9"), ("If-Range", &etag)],
        b"",
    );
    assert_eq!(fresh.status, 206);
    let cached = client.send("GET", &path, &[("If-None-Match", &etag)], b"");
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    let head = client.send("HEAD", &path, &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1000"));
    assert!(head.body.is_empty());
}

fn listing_filters_and_orders(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    client.upload("one.txt", b"one", 3);
    let open = client.put_chunk("/upload/", "bytes 0-1/4", Some("two.txt"), b"tw");
    assert_eq!(open.status, 200);
    client.upload("three.txt", b"three", 5);
    let names = |query: &str| -> Vec<String> {
        let resp = client.get(&format!("/upload/{query}"));
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["filename"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(""), ["three.txt", "two.txt", "one.txt"]);
    assert_eq!(names("?status=2"), ["three.txt", "one.txt"]);
    assert_eq!(names("?status=1"), ["two.txt"]);
    assert_eq!(names("?limit=1"), ["three.txt"]);
    assert_eq!(client.get("/upload/?limit=0").status, 400);
    assert_eq!(client.get("/upload/?status=3").status, 400);
}

fn abort_removes_row_and_bytes(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let open = client.put_chunk("/upload/", "bytes 0-1/4", Some("two.txt"), b"tw");
    let id = open.json()["id"].as_str().unwrap().to_owned();
    let done = client.upload("done.txt", b"done", 4);
    assert_eq!(setup.store.part_files().len(), 2);
    for id in [id.as_str(), done["id"].as_str().unwrap()] {
        let resp = client.send("DELETE", &format!("/upload/{id}/"), &[], b"");
        assert_eq!(resp.status, 204);
        assert_eq!(client.get(&format!("/upload/{id}/")).status, 404);
    }
    assert_eq!(setup.store.part_files(), vec![]);
    assert_eq!(client.get("/upload/").json(), serde_json::json!([]));
}

fn sha256_checksums_when_configured(backend: Backend) {
    let setup = Setup::new(backend, &["--checksum", "sha256"]);
    let client = setup.client();
    let first = client.put_chunk("/upload/", "bytes 0-2/3", Some("s.txt"), b"abc");
    let id = first.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(first.json()["sha256"], serde_json::Value::Null);
    let missing = client.complete(&id, &md5_hex(b"abc"));
    assert_eq!(
        missing.json()["detail"],
        "Checksum of type 'sha256' is required"
    );
    let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let done = client.send(
        "POST",
        &format!("/upload/{id}/"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("sha256={sha}").as_bytes(),
    );
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["sha256"], sha);
}

all_backends!(
    multipart_chunks_then_download,
    raw_chunks_with_content_disposition,
    raw_filename_from_query_and_multipart_completion,
    single_request_uploads_including_empty_files,
    completion_is_idempotent,
    resume_after_a_dropped_connection,
    requests_on_one_kept_alive_connection,
    range_downloads,
    listing_filters_and_orders,
    abort_removes_row_and_bytes,
    sha256_checksums_when_configured,
);
