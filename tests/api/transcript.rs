//! The request sequence of the drf-chunked-upload transcript, sent to
//! chunkd: the same statuses and bodies (ids, dates and URLs aside), except
//! for the deliberate differences, each marked. Then the transcript's curl
//! session, verbatim.

use crate::all_backends;
use crate::common::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const HELLO: &[u8; 40] = b"hello chunked world! 0123456789 the end\n";
const HELLO_MD5: &str = "6d29a9e5c8ea214320cd61f0fa34a6ce";

/// The upload JSON with its variable parts checked and then blanked.
fn shape(server: &Server, mut json: Value) -> Value {
    let id = json["id"].as_str().expect("an id").to_owned();
    assert_eq!(json["url"], server.url(&format!("/upload/{id}/")));
    assert_eq!(json["file"], server.url(&format!("/upload/{id}/file")));
    for key in ["created_at", "expires_at"] {
        assert!(chrono::DateTime::parse_from_rfc3339(json[key].as_str().unwrap()).is_ok());
    }
    let object = json.as_object_mut().unwrap();
    for key in ["id", "url", "file", "created_at", "expires_at"] {
        object.insert(key.into(), json!("…"));
    }
    if !object["completed_at"].is_null() {
        object.insert("completed_at".into(), json!("…"));
    }
    json
}

fn upload(filename: &str, offset: u64, total: u64, complete: Option<&str>) -> Value {
    json!({"id": "…", "url": "…", "file": "…", "filename": filename, "offset": offset, "total": total,
           "created_at": "…", "expires_at": "…", "status": if complete.is_some() { 2 } else { 1 },
           "completed_at": if complete.is_some() { json!("…") } else { Value::Null },
           "user": "transcript", "md5": complete})
}

fn transcript_sequence(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("transcript");
    let bench = store.token("bench");
    let server = Server::start(&store, &[]);
    let client = Client::new(&server, &token);
    let check = |resp: Response, status: u16, body: Value| {
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let got = if status == 200 {
            shape(&server, resp.json())
        } else {
            resp.json()
        };
        assert_eq!((resp.status, got), (status, body));
    };
    let ctype = multipart_type();

    // 1-3: create, append, resume query.
    let first = client.put_chunk("/upload/", "bytes 0-15/40", Some("hello.txt"), &HELLO[..16]);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    check(first, 200, upload("hello.txt", 16, 40, None));
    check(
        client.put_chunk(&path, "bytes 16-31/40", None, &HELLO[16..32]),
        200,
        upload("hello.txt", 32, 40, None),
    );
    check(client.get(&path), 200, upload("hello.txt", 32, 40, None));
    // 4-5: wrong offsets.
    check(
        client.put_chunk(&path, "bytes 16-31/40", None, &HELLO[16..32]),
        400,
        json!({"detail": "Offsets do not match", "expected_offset": 32, "provided_offset": 16}),
    );
    check(
        client.put_chunk(&path, "bytes 36-39/40", None, &HELLO[36..]),
        400,
        json!({"detail": "Offsets do not match", "expected_offset": 32, "provided_offset": 36}),
    );
    // 6-10: bad headers and bodies.
    check(
        client.send(
            "PUT",
            &path,
            &[("Content-Type", &ctype)],
            &multipart(&[Part::File("file", "chunk.bin", b"the end\n")]),
        ),
        400,
        json!({"detail": "Error in request headers"}),
    );
    check(
        client.put_chunk(&path, "bytes 32-39/*", None, b"the end\n"),
        400,
        json!({"detail": "Error in request headers"}),
    );
    check(
        client.put_chunk(&path, "bytes 32-39/40", None, b"the e"),
        400,
        json!({"detail": "File size doesn't match headers: file size is 5 but 8 reported"}),
    );
    check(
        client.put_chunk(&path, "bytes 32-39/38", None, b"the end\n"),
        400,
        json!({"detail": "End of chunk exceeds reported total (38 bytes)"}),
    );
    check(
        client.send(
            "PUT",
            &path,
            &[
                ("Content-Range", "bytes 32-39/40"),
                ("Content-Type", &ctype),
            ],
            &multipart(&[Part::Text("filename", "x")]),
        ),
        400,
        json!({"detail": "No chunk file was submitted"}),
    );
    // 11: difference 3, completion needs every byte (drf: "checksum does not match").
    check(
        client.complete(&id, HELLO_MD5),
        400,
        json!({"detail": "Upload is incomplete", "offset": 32, "total": 40}),
    );
    // 12-15: last chunk, completion.
    check(
        client.put_chunk(&path, "bytes 32-39/40", None, &HELLO[32..]),
        200,
        upload("hello.txt", 40, 40, None),
    );
    check(
        client.send(
            "POST",
            &path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"",
        ),
        400,
        json!({"detail": "Checksum of type 'md5' is required"}),
    );
    check(
        client.complete(&id, "00000000000000000000000000000000"),
        400,
        json!({"detail": "checksum does not match"}),
    );
    check(
        client.complete(&id, HELLO_MD5),
        200,
        upload("hello.txt", 40, 40, Some(HELLO_MD5)),
    );
    let part_files = store.part_files();
    assert_eq!(part_files, vec![(format!("{id}.done"), 40)]);
    // 16: PUT after completion.
    check(
        client.put_chunk(&path, "bytes 40-40/41", None, b"!"),
        400,
        json!({"detail": "Upload has already been marked as \"complete\""}),
    );
    // 17: difference 4, a repeated completion answers 200 (drf: 400).
    check(
        client.complete(&id, HELLO_MD5),
        200,
        upload("hello.txt", 40, 40, Some(HELLO_MD5)),
    );
    // 18: GET a completed upload.
    check(
        client.get(&path),
        200,
        upload("hello.txt", 40, 40, Some(HELLO_MD5)),
    );
    // 19-22: difference 8, unknown and malformed ids get the same JSON 404.
    let unknown = "/upload/00000000-49fc-46f5-a6bb-cf8e91f45360/";
    let not_found = json!({"detail": "Not found."});
    check(
        client.put_chunk(unknown, "bytes 0-3/4", None, b"abcd"),
        404,
        not_found.clone(),
    );
    check(
        client.send(
            "POST",
            unknown,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("md5={HELLO_MD5}").as_bytes(),
        ),
        404,
        not_found.clone(),
    );
    check(client.get(unknown), 404, not_found.clone());
    check(client.get("/upload/not-a-uuid/"), 404, not_found.clone());
    // 23: difference 8, no 301 without the trailing slash.
    check(
        client.get(&format!("/upload/{id}")),
        200,
        upload("hello.txt", 40, 40, Some(HELLO_MD5)),
    );
    // 24-25: credentials.
    let body = multipart(&[
        Part::Text("filename", "a"),
        Part::File("file", "chunk.bin", b"abcd"),
    ]);
    check(
        server.request(
            "PUT",
            "/upload/",
            &[("Content-Range", "bytes 0-3/4"), ("Content-Type", &ctype)],
            &body,
        ),
        401,
        json!({"detail": "Authentication credentials were not provided."}),
    );
    check(
        server.request(
            "PUT",
            "/upload/",
            &[
                ("Authorization", "Token bad"),
                ("Content-Range", "bytes 0-3/4"),
                ("Content-Type", &ctype),
            ],
            &body,
        ),
        401,
        json!({"detail": "Invalid token."}),
    );
    // 26: no filename.
    check(
        client.put_chunk("/upload/", "bytes 0-3/4", None, b"abcd"),
        400,
        json!({"detail": {"filename": ["This field is required."]}}),
    );
    // 27, 27b: differences 1 and 2 (drf: 200 for both).
    check(
        client.put_chunk("/upload/", "bytes 100-103/200", Some("odd.bin"), b"abcd"),
        400,
        json!({"detail": "Offsets do not match", "expected_offset": 0, "provided_offset": 100}),
    );
    check(
        client.put_chunk("/upload/", "bytes 0-4/4", Some("five.bin"), b"abcde"),
        400,
        json!({"detail": "End of chunk exceeds reported total (4 bytes)"}),
    );
    // 27c: another owner's upload.
    check(
        Client::new(&server, &bench).get(&path),
        404,
        not_found.clone(),
    );
    // 28: the whole file in one POST.
    let whole = b"whole file in one request\n";
    check(
        client.send(
            "POST",
            "/upload/",
            &[("Content-Type", &ctype)],
            &multipart(&[
                Part::Text("filename", "whole.txt"),
                Part::Text("md5", "ee6e8653a97910ab430c62bcdbfb1209"),
                Part::File("file", "chunk.bin", whole),
            ]),
        ),
        200,
        upload(
            "whole.txt",
            26,
            26,
            Some("ee6e8653a97910ab430c62bcdbfb1209"),
        ),
    );
    // 29: the list, newest first.
    let list = client.get("/upload/");
    assert_eq!(list.status, 200);
    let shaped: Vec<Value> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| shape(&server, u.clone()))
        .collect();
    assert_eq!(
        shaped,
        vec![
            upload(
                "whole.txt",
                26,
                26,
                Some("ee6e8653a97910ab430c62bcdbfb1209")
            ),
            upload("hello.txt", 40, 40, Some(HELLO_MD5))
        ]
    );
    // 30: difference 9, DELETE aborts (drf: 405).
    let deleted = client.send("DELETE", &path, &[], b"");
    assert_eq!(deleted.status, 204);
    assert_eq!(client.get(&path).status, 404);
    check(
        client.send("PATCH", "/upload/", &[], b""),
        405,
        json!({"detail": "Method \"PATCH\" not allowed."}),
    );

    // 31-34: expiry, through a second server on the same database whose
    // uploads expire after a second.
    let quick = Server::start(&store, &["--expiration", "1s"]);
    let quick_client = Client::new(&quick, &token);
    let old = quick_client.put_chunk("/upload/", "bytes 0-3/8", Some("old.bin"), b"abcd");
    assert_eq!(old.status, 200);
    let old_path = format!("/upload/{}/", old.json()["id"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(1100));
    check(
        client.put_chunk(&old_path, "bytes 4-7/8", None, b"efgh"),
        410,
        json!({"detail": "Upload has expired"}),
    );
    check(
        client.send(
            "POST",
            &old_path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"md5=e2fc714c4727ee9395f324cd2e7f331f",
        ),
        410,
        json!({"detail": "Upload has expired"}),
    );
    let expired = client.get(&old_path);
    assert_eq!(expired.status, 200);
    assert_eq!(expired.json()["offset"], 4);
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(args)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (body.to_owned(), code.to_owned())
}

fn curl_session_from_the_transcript(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("transcript");
    let server = Server::start(&store, &[]);
    let files = TempDir::new("curl");
    let data = bytes(3_000_000, 9);
    for i in 0..3 {
        std::fs::write(
            files.0.join(format!("part{i}")),
            &data[i * 1_000_000..(i + 1) * 1_000_000],
        )
        .unwrap();
    }
    let auth = format!("Authorization: Token {token}");
    let at = |i: usize| format!("file=@{}", files.0.join(format!("part{i}")).display());
    let (body, code) = curl(&[
        "-sS",
        "-X",
        "PUT",
        "-H",
        &auth,
        "-H",
        "Content-Range: bytes 0-999999/3000000",
        "-F",
        "filename=random.bin",
        "-F",
        &at(0),
        "-w",
        "\n%{http_code}",
        &server.url("/upload/"),
    ]);
    assert_eq!(code, "200", "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    let url = json["url"].as_str().unwrap().to_owned();
    assert_eq!(json["offset"], 1_000_000);
    for (i, range) in [
        (1, "bytes 1000000-1999999/3000000"),
        (2, "bytes 2000000-2999999/3000000"),
    ] {
        let (body, code) = curl(&[
            "-sS",
            "-X",
            "PUT",
            "-H",
            &auth,
            "-H",
            &format!("Content-Range: {range}"),
            "-F",
            &at(i),
            "-w",
            "\n%{http_code}",
            &url,
        ]);
        assert_eq!(code, "200", "{body}");
    }
    let (body, code) = curl(&[
        "-sS",
        "-X",
        "POST",
        "-H",
        &auth,
        "-d",
        &format!("md5={}", md5_hex(&data)),
        "-w",
        "\n%{http_code}",
        &url,
    ]);
    assert_eq!(code, "200", "{body}");
    let done: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(done["status"], 2);
    assert_eq!(done["offset"], 3_000_000);
    let out = Command::new("curl")
        .args(["-sS", "-H", &auth, done["file"].as_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.stdout, data);
}

all_backends!(transcript_sequence, curl_session_from_the_transcript);
