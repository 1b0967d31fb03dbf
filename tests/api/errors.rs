//! Every row of the contract's error tables: exact status and body, and
//! nothing changed by the failed request.

use crate::both_backends;
use crate::common::*;
use serde_json::json;

/// The checks of these tests on a setup.
trait Fixture {
    fn open_upload(&self) -> String;
    fn snapshot(&self, id: &str) -> (serde_json::Value, Vec<(String, u64)>);
}

impl Fixture for Setup {
    /// An upload of 40 bytes holding its first 16.
    fn open_upload(&self) -> String {
        let resp =
            self.client()
                .put_chunk("/upload/", "bytes 0-15/40", Some("hello.txt"), &HELLO[..16]);
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.json()["id"].as_str().unwrap().to_owned()
    }

    /// The upload's JSON and part files, to compare before and after.
    fn snapshot(&self, id: &str) -> (serde_json::Value, Vec<(String, u64)>) {
        (
            self.client().get(&format!("/upload/{id}/")).json(),
            self.store.part_files(),
        )
    }
}

const HELLO: &[u8; 40] = b"hello chunked world! 0123456789 the end\n";

fn expect(resp: &Response, status: u16, body: serde_json::Value) {
    assert_eq!(
        (resp.status, resp.json()),
        (status, body),
        "{:?}",
        resp.headers
    );
}

fn detail(text: &str) -> serde_json::Value {
    json!({ "detail": text })
}

fn chunk_errors_change_nothing(backend: Backend) {
    let fx = Setup::new(backend, &["--max-bytes", "1000"]);
    let client = fx.client();
    let id = fx.open_upload();
    let path = format!("/upload/{id}/");
    let before = fx.snapshot(&id);
    let ctype = multipart_type();
    let file_part = multipart(&[Part::File("file", "c", &HELLO[16..32])]);

    let no_range = client.send("PUT", &path, &[("Content-Type", &ctype)], &file_part);
    expect(&no_range, 400, detail("Error in request headers"));
    for bad in [
        "bytes 16-31/*",
        "bytes 16-31",
        "bytes=16-31/40",
        "bytes 31-16/40",
        "bytes 16-31/99999999999999999999",
    ] {
        let resp = client.put_chunk(&path, bad, None, &HELLO[16..32]);
        expect(&resp, 400, detail("Error in request headers"));
    }
    let past_end = client.put_chunk(&path, "bytes 16-40/40", None, &HELLO[16..32]);
    expect(
        &past_end,
        400,
        detail("End of chunk exceeds reported total (40 bytes)"),
    );
    let over_limit = client.put_chunk(&path, "bytes 16-31/1001", None, &HELLO[16..32]);
    expect(
        &over_limit,
        400,
        detail("Size of file exceeds the limit (1000 bytes)"),
    );
    let short = client.put_chunk(&path, "bytes 16-31/40", None, &HELLO[16..21]);
    expect(
        &short,
        400,
        detail("File size doesn't match headers: file size is 5 but 16 reported"),
    );
    let long = client.put_chunk(&path, "bytes 16-31/40", None, &HELLO[16..40]);
    expect(
        &long,
        400,
        detail("File size doesn't match headers: file size is 24 but 16 reported"),
    );
    let raw_short = client.put_raw(&path, "bytes 16-31/40", &HELLO[16..20]);
    expect(
        &raw_short,
        400,
        detail("File size doesn't match headers: file size is 4 but 16 reported"),
    );
    let no_file = client.send(
        "PUT",
        &path,
        &[
            ("Content-Range", "bytes 16-31/40"),
            ("Content-Type", &ctype),
        ],
        &multipart(&[Part::Text("filename", "x")]),
    );
    expect(&no_file, 400, detail("No chunk file was submitted"));
    let form = client.send(
        "PUT",
        &path,
        &[
            ("Content-Range", "bytes 16-31/40"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"a=b",
    );
    expect(&form, 400, detail("No chunk file was submitted"));
    let text = client.send(
        "PUT",
        &path,
        &[
            ("Content-Range", "bytes 16-31/40"),
            ("Content-Type", "text/plain"),
        ],
        b"x",
    );
    expect(
        &text,
        415,
        detail("Unsupported media type \"text/plain\" in request."),
    );
    let replay = client.put_chunk(&path, "bytes 0-15/40", None, &HELLO[..16]);
    expect(
        &replay,
        400,
        json!({"detail": "Offsets do not match", "expected_offset": 16, "provided_offset": 0}),
    );
    let gap = client.put_chunk(&path, "bytes 36-39/40", None, &HELLO[36..]);
    expect(
        &gap,
        400,
        json!({"detail": "Offsets do not match", "expected_offset": 16, "provided_offset": 36}),
    );
    let other_total = client.put_chunk(&path, "bytes 16-31/41", None, &HELLO[16..32]);
    expect(
        &other_total,
        400,
        detail("Total size does not match the upload (40 bytes)"),
    );
    let early = client.complete(&id, &md5_hex(HELLO));
    expect(
        &early,
        400,
        json!({"detail": "Upload is incomplete", "offset": 16, "total": 40}),
    );
    let patch = client.send("PATCH", &path, &[], b"");
    expect(&patch, 405, detail("Method \"PATCH\" not allowed."));
    let download = client.get(&format!("{path}file"));
    expect(
        &download,
        400,
        json!({"detail": "Upload is incomplete", "offset": 16, "total": 40}),
    );

    assert_eq!(fx.snapshot(&id), before);
    // And the upload still works.
    let next = client.put_chunk(&path, "bytes 16-39/40", None, &HELLO[16..]);
    assert_eq!(next.status, 200);
    assert_eq!(client.complete(&id, &md5_hex(HELLO)).status, 200);
}

fn completion_errors(backend: Backend) {
    let fx = Setup::new(backend, &[]);
    let client = fx.client();
    let id = fx.open_upload();
    let path = format!("/upload/{id}/");
    assert_eq!(
        client
            .put_chunk(&path, "bytes 16-39/40", None, &HELLO[16..])
            .status,
        200
    );
    let before = fx.snapshot(&id);
    let none = client.send(
        "POST",
        &path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"",
    );
    expect(&none, 400, detail("Checksum of type 'md5' is required"));
    let empty_json = client.send(
        "POST",
        &path,
        &[("Content-Type", "application/json")],
        b"{}",
    );
    expect(
        &empty_json,
        400,
        detail("Checksum of type 'md5' is required"),
    );
    let bad = client.complete(&id, "00000000000000000000000000000000");
    expect(&bad, 400, detail("checksum does not match"));
    let malformed = client.send(
        "POST",
        &path,
        &[("Content-Type", "application/json")],
        b"{md5",
    );
    expect(&malformed, 400, detail("Malformed request."));
    assert_eq!(fx.snapshot(&id), before);

    assert_eq!(client.complete(&id, &md5_hex(HELLO)).status, 200);
    let after = client.put_chunk(&path, "bytes 40-40/41", None, b"!");
    expect(
        &after,
        400,
        detail("Upload has already been marked as \"complete\""),
    );
    let other = client.complete(&id, "00000000000000000000000000000000");
    expect(
        &other,
        400,
        detail("Upload has already been marked as \"complete\""),
    );
}

fn creation_errors_store_nothing(backend: Backend) {
    let fx = Setup::new(
        backend,
        &[
            "--min-bytes",
            "4",
            "--max-chunk-bytes",
            "100",
            "--allowed-extensions",
            "txt,bin,png",
            "--allowed-media-types",
            "text/*,application/octet-stream",
        ],
    );
    let client = fx.client();
    let ctype = multipart_type();
    let no_name = client.send(
        "PUT",
        "/upload/",
        &[("Content-Range", "bytes 0-3/4"), ("Content-Type", &ctype)],
        &multipart(&[Part::File("file", "chunk.bin", b"abcd")]),
    );
    expect(
        &no_name,
        400,
        json!({"detail": {"filename": ["This field is required."]}}),
    );
    let raw_no_name = client.put_raw("/upload/", "bytes 0-3/4", b"abcd");
    expect(
        &raw_no_name,
        400,
        json!({"detail": {"filename": ["This field is required."]}}),
    );
    // The filename after the file part: the bytes were stored, then dropped.
    let late_bad_name = client.send(
        "PUT",
        "/upload/",
        &[("Content-Range", "bytes 0-3/4"), ("Content-Type", &ctype)],
        &multipart(&[
            Part::File("file", "c", b"abcd"),
            Part::Text("filename", "a.exe"),
        ]),
    );
    expect(&late_bad_name, 400, detail("File extension not allowed"));
    let not_zero = client.put_chunk("/upload/", "bytes 100-103/200", Some("odd.bin"), b"abcd");
    expect(
        &not_zero,
        400,
        json!({"detail": "Offsets do not match", "expected_offset": 0, "provided_offset": 100}),
    );
    let end_is_total = client.put_chunk("/upload/", "bytes 0-4/4", Some("five.bin"), b"abcde");
    expect(
        &end_is_total,
        400,
        detail("End of chunk exceeds reported total (4 bytes)"),
    );
    let small = client.put_chunk("/upload/", "bytes 0-2/3", Some("s.txt"), b"abc");
    expect(
        &small,
        400,
        detail("Size of file is below the minimum (4 bytes)"),
    );
    let ext = client.put_chunk("/upload/", "bytes 0-3/4", Some("a.exe"), b"abcd");
    expect(&ext, 400, detail("File extension not allowed"));
    let media = client.put_chunk("/upload/", "bytes 0-3/4", Some("a.png"), b"abcd");
    expect(&media, 400, detail("File type not allowed"));
    let chunk = client.put_chunk("/upload/", "bytes 0-100/200", Some("a.txt"), &[b'x'; 101]);
    expect(&chunk, 413, detail("Chunk exceeds the limit (100 bytes)"));
    let raw_chunk = client.send(
        "POST",
        "/upload/?filename=a.txt&md5=x",
        &[("Content-Type", "application/octet-stream")],
        &[b'x'; 101],
    );
    expect(
        &raw_chunk,
        413,
        detail("Chunk exceeds the limit (100 bytes)"),
    );
    let streamed_chunk = client.send(
        "POST",
        "/upload/",
        &[("Content-Type", &ctype)],
        &multipart(&[
            Part::Text("filename", "a.txt"),
            Part::Text("md5", "x"),
            Part::File("file", "c", &[b'x'; 101]),
        ]),
    );
    expect(
        &streamed_chunk,
        413,
        detail("Chunk exceeds the limit (100 bytes)"),
    );
    let blank = client.put_chunk("/upload/", "bytes 0-3/4", Some(""), b"abcd");
    expect(
        &blank,
        400,
        json!({"detail": {"filename": ["This field may not be blank."]}}),
    );
    let long_name = format!("{}.txt", "n".repeat(300));
    let long = client.put_chunk("/upload/", "bytes 0-3/4", Some(&long_name), b"abcd");
    expect(
        &long,
        400,
        json!({"detail": {"filename": ["Ensure this field has no more than 255 characters."]}}),
    );
    let no_md5 = client.send(
        "POST",
        "/upload/",
        &[("Content-Type", &ctype)],
        &multipart(&[
            Part::Text("filename", "a.txt"),
            Part::File("file", "c", b"abcd"),
        ]),
    );
    expect(&no_md5, 400, detail("Checksum of type 'md5' is required"));
    let no_file = client.send(
        "POST",
        "/upload/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"md5=x",
    );
    expect(&no_file, 400, detail("No chunk file was submitted"));

    eventually("every rejected file is removed", || {
        fx.store.part_files().is_empty()
    });
    assert_eq!(client.get("/upload/").json(), json!([]));
}

fn unknown_ids_and_paths(backend: Backend) {
    let fx = Setup::new(backend, &[]);
    let client = fx.client();
    let unknown = "4bbfbb5f-49fc-46f5-a6bb-cf8e91f45360";
    let not_found = detail("Not found.");
    expect(
        &client.put_chunk(&format!("/upload/{unknown}/"), "bytes 0-3/4", None, b"abcd"),
        404,
        not_found.clone(),
    );
    expect(&client.complete(unknown, "x"), 404, not_found.clone());
    expect(
        &client.get(&format!("/upload/{unknown}/")),
        404,
        not_found.clone(),
    );
    expect(
        &client.send("DELETE", &format!("/upload/{unknown}/"), &[], b""),
        404,
        not_found.clone(),
    );
    expect(
        &client.get(&format!("/upload/{unknown}/file")),
        404,
        not_found.clone(),
    );
    for path in [
        "/upload/not-a-uuid/",
        "/upload/..%2F..%2Fetc%2Fpasswd/",
        "/upload/4BBFBB5F49FC46F5A6BBCF8E91F45360/",
        "/nothing/here",
    ] {
        expect(&client.get(path), 404, not_found.clone());
    }
    // No redirect for a missing slash: the body would be lost.
    let id = fx.open_upload();
    let slashless = client.put_chunk(
        &format!("/upload/{id}"),
        "bytes 16-39/40",
        None,
        &HELLO[16..],
    );
    assert_eq!(slashless.status, 200);
}

both_backends!(
    chunk_errors_change_nothing,
    completion_errors,
    creation_errors_store_nothing,
    unknown_ids_and_paths,
);
