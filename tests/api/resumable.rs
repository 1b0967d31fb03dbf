//! The IETF draft "Resumable Uploads for HTTP" at /resumable/: each interop
//! version's messages over raw HTTP, what URLSession sends (a creation cut
//! off after its 104, then HEAD and PATCH), the 104 seen on the wire, the
//! zombie request a new one ends, Repr-Digest, and tus-js-client's two
//! draft protocols.

use crate::both_backends;
use crate::common::*;
use crate::tus::{real_client_survives_cut_connections, real_client_uploads, tus_js_command};
use md5::Digest;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const PROBLEM_TYPES: &str = "https://iana.org/assignments/http-problem-types#";

/// One request in interop version `version` (none when 0).
fn draft(
    client: &Client,
    version: u8,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let number = version.to_string();
    let mut all = headers.to_vec();
    if version > 0 {
        all.push(("Upload-Draft-Interop-Version", &number));
    }
    client.send(method, path, &all, body)
}

/// The header that says whether an upload completes, in `version`'s words.
fn completes(version: u8, complete: bool) -> (&'static str, &'static str) {
    match (version, complete) {
        (3, true) => ("Upload-Incomplete", "?0"),
        (3, false) => ("Upload-Incomplete", "?1"),
        (_, true) => ("Upload-Complete", "?1"),
        (_, false) => ("Upload-Complete", "?0"),
    }
}

/// Asserts how a response says whether the upload is complete.
fn assert_completeness(resp: &Response, version: u8, complete: bool) {
    let (name, value) = completes(version, complete);
    assert_eq!(
        resp.header(name),
        Some(value),
        "{version}: {:?}",
        resp.headers
    );
    let other = if version == 3 {
        "Upload-Complete"
    } else {
        "Upload-Incomplete"
    };
    assert_eq!(resp.header(other), None, "{version}");
}

fn path_of(resp: &Response) -> String {
    format!("/resumable/{}", resp.location_id())
}

fn offset_of(resp: &Response) -> u64 {
    resp.header("upload-offset").unwrap().parse().unwrap()
}

/// Asserts a refusal's status, and its body: a problem document of `kind`
/// from version 6 on (untyped where the version has no such type), plain
/// text before.
fn assert_refused(resp: &Response, version: u8, status: u16, kind: Option<(&str, u8)>) {
    assert_eq!(resp.status, status, "{version}: {}", resp.text());
    if version < 6 {
        assert!(resp
            .header("content-type")
            .unwrap()
            .starts_with("text/plain"));
        return;
    }
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
    let problem = resp.json();
    assert_eq!(problem["status"], status);
    match kind {
        Some((kind, since)) if version >= since => {
            assert_eq!(
                problem["type"],
                format!("{PROBLEM_TYPES}{kind}"),
                "{version}"
            );
        }
        _ => assert!(problem.get("type").is_none(), "{version}: {problem}"),
    }
}

/// Every interop version: careful creation, offset retrieval, appends and
/// their refusals, completion, and cancellation, each in that version's
/// header names, statuses and bodies.
fn each_interop_version(backend: Backend) {
    let setup = Setup::new(backend, &["--max-bytes", "1MiB"]);
    let client = setup.client();
    for version in 3..=9u8 {
        let data = bytes(200_000, u64::from(version));
        let create = draft(
            &client,
            version,
            "POST",
            "/resumable/",
            &[
                completes(version, false),
                ("Upload-Length", "200000"),
                (
                    "Content-Disposition",
                    "inline; filename*=UTF-8''r%C3%A9sum%C3%A9.bin",
                ),
            ],
            b"",
        );
        assert_eq!(create.status, 201, "{version}: {}", create.text());
        assert_completeness(&create, version, false);
        assert_eq!(offset_of(&create), 0);
        let limit = create.header("upload-limit");
        if version >= 7 {
            let limit = limit.unwrap();
            assert!(
                limit.contains("max-size=1048576") && limit.contains("max-age="),
                "{limit}"
            );
        } else if version == 6 {
            assert!(limit.unwrap().contains("expires="));
        } else {
            assert_eq!(limit, None, "no Upload-Limit before -04");
        }
        let path = path_of(&create);

        let head = draft(&client, version, "HEAD", &path, &[], b"");
        assert_eq!(head.status, 204);
        assert_eq!(head.header("cache-control"), Some("no-store"));
        assert_eq!(offset_of(&head), 0);
        assert_completeness(&head, version, false);
        let length = head.header("upload-length");
        assert_eq!(length, (version >= 6).then_some("200000"), "{version}");

        // Before -04 any content type appends; since, only partial-upload.
        let append = |offset: &str, complete: bool, ctype: &str, body: &[u8]| {
            let headers = [
                ("Upload-Offset", offset),
                completes(version, complete),
                ("Content-Type", ctype),
            ];
            draft(&client, version, "PATCH", &path, &headers, body)
        };
        let untyped = append("0", false, "application/octet-stream", &data[..1000]);
        if version >= 6 {
            assert_eq!(untyped.status, 415, "{version}");
            let first = append("0", false, "application/partial-upload", &data[..1000]);
            assert_eq!(first.status, 204, "{version}: {}", first.text());
        } else {
            assert_eq!(untyped.status, 204, "{version}: {}", untyped.text());
        }

        let stale = append("0", false, "application/partial-upload", &data[..10]);
        assert_refused(&stale, version, 409, Some(("mismatching-upload-offset", 6)));
        assert_eq!(offset_of(&stale), 1000, "the offset to resume at");
        if version >= 6 {
            assert_eq!(stale.json()["expected-offset"], 1000);
            assert_eq!(stale.json()["provided-offset"], 0);
        }

        let middle = append(
            "1000",
            false,
            "application/partial-upload",
            &data[1000..150_000],
        );
        assert_eq!(middle.status, 204);
        assert_completeness(&middle, version, false);
        assert_eq!(offset_of(&middle), 150_000);

        // The last part says the upload completes: the answer is the
        // stored file's.
        let last = append(
            "150000",
            true,
            "application/partial-upload",
            &data[150_000..],
        );
        assert_eq!(last.status, 200, "{version}: {}", last.text());
        assert_completeness(&last, version, true);
        let stored = last.json();
        assert_eq!(stored["checksum"], md5_hex(&data));
        assert_eq!(stored["filename"], "résumé.bin");
        assert_eq!(stored["size"], 200_000);
        let id = create.location_id();
        assert_eq!(client.get(&format!("/upload/{id}/file")).body, data);
        assert_eq!(client.get(&format!("/upload/{id}/")).json()["status"], 2);

        let head = draft(&client, version, "HEAD", &path, &[], b"");
        assert_eq!((head.status, offset_of(&head)), (204, 200_000));
        assert_completeness(&head, version, true);

        // Appending to a completed upload: an empty request that completes
        // it again is answered as before; anything else is refused.
        let again = append("200000", true, "application/partial-upload", b"");
        assert_eq!(again.status, 200);
        let empty = append("200000", false, "application/partial-upload", b"");
        assert_refused(&empty, version, 400, Some(("completed-upload", 6)));
        let more = append("200000", true, "application/partial-upload", b"x");
        assert_refused(&more, version, 400, Some(("inconsistent-upload-length", 7)));
        assert_eq!(client.get(&format!("/upload/{id}/file")).body, data);

        let cancel = draft(&client, version, "DELETE", &path, &[], b"");
        assert_eq!(cancel.status, 204);
        let gone = draft(&client, version, "HEAD", &path, &[], b"");
        assert_eq!(gone.status, 404);
    }
}

/// Creation with the whole representation, of 0 bytes and more, with and
/// without a known length; the refusals of a creation.
fn whole_uploads_and_refused_creations(backend: Backend) {
    let setup = Setup::new(backend, &["--max-bytes", "1MiB"]);
    let client = setup.client();
    for (len, version) in [(0usize, 9u8), (1, 3), (300_000, 6), (300_000, 0)] {
        let data = bytes(len, 3);
        let create = draft(
            &client,
            version,
            "POST",
            "/resumable/",
            &[completes(version, true)],
            &data,
        );
        assert_eq!(create.status, 201, "{len}: {}", create.text());
        assert_eq!(create.json()["checksum"], md5_hex(&data));
        let id = create.location_id();
        assert_eq!(client.get(&format!("/upload/{id}/file")).body, data);
    }
    // Streamed with no length said anywhere: the content's end is the
    // upload's.
    let data = bytes(200_000, 4);
    let mut stream = connect(&setup.server.addr);
    let head = request_head(
        "POST",
        "/resumable/",
        &setup.server.addr,
        &[
            ("Authorization", &client.auth),
            completes(9, true),
            ("Transfer-Encoding", "chunked"),
        ],
        None,
    );
    stream.write_all(&head).unwrap();
    for piece in data.chunks(70_000) {
        write!(stream, "{:x}\r\n", piece.len()).unwrap();
        stream.write_all(piece).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let streamed = read_response(stream);
    assert_eq!(streamed.status, 201, "{}", streamed.text());
    assert_eq!(streamed.json()["checksum"], md5_hex(&data));
    assert_eq!(streamed.header("upload-length"), Some("200000"));

    // The draft on the tus endpoint, for clients pointed at it.
    let on_tus = draft(&client, 6, "POST", "/files/", &[completes(6, true)], b"abc");
    assert_eq!(on_tus.status, 201, "{}", on_tus.text());
    assert!(on_tus.header("location").unwrap().contains("/resumable/"));

    let listed = client.get("/upload/?status=2").json();
    assert_eq!(listed.as_array().unwrap().len(), 6, "{listed}");

    let refused = |headers: &[(&str, &str)], body: &[u8]| {
        draft(&client, 8, "POST", "/resumable/", headers, body)
    };
    let unsaid = refused(&[], b"abc");
    assert_refused(&unsaid, 8, 400, None);
    let inconsistent = refused(&[completes(8, true), ("Upload-Length", "5")], b"abc");
    assert_refused(
        &inconsistent,
        8,
        400,
        Some(("inconsistent-upload-length", 7)),
    );
    let large = refused(&[completes(8, false), ("Upload-Length", "2000000")], b"");
    assert_refused(&large, 8, 413, None);
    assert_eq!(large.header("upload-limit"), Some("max-size=1048576"));
    let anonymous = request(
        &setup.server.addr,
        "POST",
        "/resumable/",
        &[completes(8, true), ("Upload-Draft-Interop-Version", "8")],
        b"abc",
    );
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        client.get("/upload/").json().as_array().unwrap().len(),
        6,
        "no refused creation left an upload"
    );

    let options = client.send("OPTIONS", "/resumable/", &[], b"");
    assert_eq!(options.status, 204);
    assert_eq!(
        options.header("accept-patch"),
        Some("application/partial-upload")
    );
    assert!(options
        .header("upload-limit")
        .unwrap()
        .contains("max-size=1048576"));
    let wrong_method = client.send("PUT", "/resumable/", &[], b"");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST, OPTIONS"));
}

/// Reads from `stream` until a whole response head is in; None if none
/// comes within `wait`.
fn read_head(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8(raw).unwrap())
}

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// What URLSession does when its first request is cut off: the creation
/// with the whole file, a 104 before any byte of it is sent, the
/// connection lost mid-way, then HEAD and a PATCH that finishes. Per
/// interop version, the 104 comes on the wire before any content is read,
/// echoes the version, and names the upload resource.
fn creation_cut_off_after_its_104_is_resumed(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = bytes(1 << 20, 9);
    for version in [3u8, 4, 5, 6, 7, 8, 9] {
        let number = version.to_string();
        let mut stream = connect(&setup.server.addr);
        let head = request_head(
            "POST",
            "/resumable/",
            &setup.server.addr,
            &[
                ("Authorization", &client.auth),
                ("Upload-Draft-Interop-Version", &number),
                completes(version, true),
                ("Content-Disposition", "inline; filename=\"photo.heic\""),
            ],
            Some(data.len() as u64),
        );
        stream.write_all(&head).unwrap();
        // Not a byte of content is sent before the 104 arrives.
        let interim = read_head(&mut stream, Duration::from_secs(10)).expect("a 104");
        assert!(
            interim.starts_with("HTTP/1.1 104 Upload Resumption Supported\r\n"),
            "{interim}"
        );
        assert_eq!(
            field(&interim, "upload-draft-interop-version"),
            Some(&*number)
        );
        assert_eq!(field(&interim, "upload-limit").is_some(), version >= 6);
        let location = field(&interim, "location").unwrap();
        let path = location.split_once("/resumable/").unwrap().1;
        let path = format!("/resumable/{path}");

        stream.write_all(&data[..400_000]).unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        reset(stream);

        // The offset told is where the next append must start, whether the
        // server has noticed the lost connection yet or not.
        let head = draft(&client, version, "HEAD", &path, &[], b"");
        assert_eq!(head.status, 204, "{version}: {}", head.text());
        assert_completeness(&head, version, false);
        let offset = offset_of(&head);
        assert!(offset <= 400_000, "{offset}");
        let at = offset.to_string();
        let rest = draft(
            &client,
            version,
            "PATCH",
            &path,
            &[
                ("Upload-Offset", &at),
                completes(version, true),
                ("Content-Type", "application/partial-upload"),
            ],
            &data[offset as usize..],
        );
        assert_eq!(rest.status, 200, "{version}: {}", rest.text());
        assert_eq!(rest.json()["checksum"], md5_hex(&data));
        assert_eq!(rest.json()["filename"], "photo.heic");
        let id = path.rsplit('/').next().unwrap();
        assert_eq!(client.get(&format!("/upload/{id}/file")).body, data);
    }
}

/// No 104 without a known interop version, nor to HTTP/1.0: the head
/// alone gets no answer until the content is sent, and the first response
/// is then the final one.
fn no_104_without_a_known_version(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "HTTP/1.1"),
        (&[("Upload-Draft-Interop-Version", "2")], "HTTP/1.1"),
        (&[("Upload-Draft-Interop-Version", "10")], "HTTP/1.1"),
        (&[("Upload-Draft-Interop-Version", "8")], "HTTP/1.0"),
    ];
    for (version, http) in cases {
        let mut headers = vec![
            ("Authorization", client.auth.as_str()),
            ("Upload-Complete", "?1"),
        ];
        headers.extend_from_slice(version);
        let head = request_head(
            "POST",
            "/resumable/",
            &setup.server.addr,
            &headers,
            Some(10),
        );
        let head = String::from_utf8(head)
            .unwrap()
            .replacen("HTTP/1.1", http, 1);
        let mut stream = connect(&setup.server.addr);
        stream.write_all(head.as_bytes()).unwrap();
        assert_eq!(
            read_head(&mut stream, Duration::from_millis(1500)),
            None,
            "{version:?} {http}: nothing before the content"
        );
        stream.write_all(b"0123456789").unwrap();
        let answer = read_head(&mut stream, Duration::from_secs(10)).unwrap();
        assert!(answer.contains(" 201 Created\r\n"), "{answer}");
    }
    // With a known version, the 104 comes first, then the final response.
    let mut stream = connect(&setup.server.addr);
    let head = request_head(
        "POST",
        "/resumable/",
        &setup.server.addr,
        &[
            ("Authorization", &client.auth),
            ("Upload-Complete", "?1"),
            ("Upload-Draft-Interop-Version", "9"),
        ],
        Some(10),
    );
    stream.write_all(&head).unwrap();
    let first = read_head(&mut stream, Duration::from_secs(10)).unwrap();
    assert!(first.starts_with("HTTP/1.1 104 "), "{first}");
    stream.write_all(b"0123456789").unwrap();
    let last = read_head(&mut stream, Duration::from_secs(10)).unwrap();
    assert!(last.starts_with("HTTP/1.1 201 "), "{last}");
}

/// Polls the tus view of an upload until the request in flight on it has
/// brought `reached` bytes in.
fn wait_until_received(client: &Client, id: &str, reached: u64) {
    eventually("the zombie's bytes to arrive", || {
        let head = client.send("HEAD", &format!("/files/{id}"), &[TUS], b"");
        head.header("upload-received") == Some(&reached.to_string())
    });
}

/// A request still in flight on an upload (its client gave up on it, the
/// server cannot tell) is ended by the next request on the upload, which is
/// served at once with the offset the zombie reached: offset retrieval,
/// append, and cancellation. Without it, each would wait for the lock
/// timeout. Another owner's request ends nothing.
fn a_new_request_ends_the_zombie(backend: Backend) {
    let setup = Setup::new(backend, &["--lock-timeout", "30s"]);
    let client = setup.client();
    let bob_token = setup.store.token("bob");
    let bob = Client::new(&setup.server, &bob_token);
    let data = bytes(1 << 20, 5);
    for next in ["HEAD", "PATCH", "DELETE"] {
        let create = draft(
            &client,
            9,
            "POST",
            "/resumable/",
            &[completes(9, false), ("Upload-Length", "1048576")],
            b"",
        );
        let (path, id) = (path_of(&create), create.location_id());
        let zombie = partial_request(
            &setup.server,
            "PATCH",
            &path,
            &[
                ("Authorization", &client.auth),
                ("Upload-Draft-Interop-Version", "9"),
                ("Upload-Offset", "0"),
                completes(9, true),
                ("Content-Type", "application/partial-upload"),
            ],
            data.len() as u64,
            &data[..300_000],
        );
        wait_until_received(&client, &id, 300_000);

        let headers = [
            ("Upload-Offset", "0"),
            completes(9, true),
            ("Content-Type", "application/partial-upload"),
        ];
        let stranger = draft(&bob, 9, next, &path, &headers, b"");
        assert_eq!(stranger.status, 404, "{next}");
        std::thread::sleep(Duration::from_millis(200));
        wait_until_received(&client, &id, 300_000);

        let began = Instant::now();
        let resp = match next {
            "PATCH" => draft(
                &client,
                9,
                "PATCH",
                &path,
                &[
                    ("Upload-Offset", "300000"),
                    completes(9, true),
                    ("Content-Type", "application/partial-upload"),
                ],
                &data[300_000..],
            ),
            method => draft(&client, 9, method, &path, &[], b""),
        };
        let took = began.elapsed();
        assert!(took < Duration::from_secs(10), "{next} waited {took:?}");
        match next {
            "HEAD" => assert_eq!((resp.status, offset_of(&resp)), (204, 300_000)),
            "PATCH" => {
                assert_eq!(resp.status, 200, "{}", resp.text());
                assert_eq!(client.get(&format!("/upload/{id}/file")).body, data);
            }
            _ => {
                assert_eq!(resp.status, 204);
                assert_eq!(draft(&client, 9, "HEAD", &path, &[], b"").status, 404);
            }
        }
        drop(zombie);
    }
}

fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// `Repr-Digest` on the request that completes an upload is checked: a
/// wrong one refuses the request and leaves the upload as it was; md5
/// (the engine's own hash) and sha-256 (read back) that match complete it.
fn repr_digest_is_checked_at_completion(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = bytes(500_000, 8);
    let md5 = base64(&md5::Md5::digest(&data));
    let sha256 = base64(&sha2::Sha256::digest(&data));
    let wrong = base64(&sha2::Sha256::digest(b"other"));
    for (digest, accepted) in [
        (format!("sha-256=:{wrong}:, md5=:{md5}:"), false),
        (format!("sha-256=:{sha256}:"), true),
        (format!("md5=:{md5}:, crc32c=:AAAAAA==:"), true),
    ] {
        let create = draft(
            &client,
            8,
            "POST",
            "/resumable/",
            &[completes(8, false)],
            &data[..200_000],
        );
        assert_eq!(offset_of(&create), 200_000);
        let path = path_of(&create);
        let last = draft(
            &client,
            8,
            "PATCH",
            &path,
            &[
                ("Upload-Offset", "200000"),
                completes(8, true),
                ("Content-Type", "application/partial-upload"),
                ("Repr-Digest", &digest),
            ],
            &data[200_000..],
        );
        let head = draft(&client, 8, "HEAD", &path, &[], b"");
        if accepted {
            assert_eq!(last.status, 200, "{digest}: {}", last.text());
            assert_eq!(offset_of(&head), 500_000);
            assert_completeness(&head, 8, true);
        } else {
            assert_refused(&last, 8, 400, None);
            assert_eq!(offset_of(&head), 200_000, "the refused part is not kept");
            assert_completeness(&head, 8, false);
        }
    }
    let whole = draft(
        &client,
        9,
        "POST",
        "/resumable/",
        &[completes(9, true), ("Repr-Digest", &format!("md5=:{md5}:"))],
        &data,
    );
    assert_eq!(whole.status, 201, "{}", whole.text());
    let bad = draft(
        &client,
        9,
        "POST",
        "/resumable/",
        &[completes(9, true), ("Repr-Digest", "md5=:not base64!:")],
        &data,
    );
    assert_refused(&bad, 9, 400, None);
}

/// An upload made through the draft is an upload like any other: tus
/// continues it, the draft finishes it, `/upload/` lists and serves it;
/// left alone, it expires (410) and the sweep removes it.
fn an_upload_like_any_other(backend: Backend) {
    let setup = Setup::new(backend, &["--expiration", "2s"]);
    let client = setup.client();
    let data = bytes(300_000, 12);
    let create = draft(
        &client,
        9,
        "POST",
        "/resumable/",
        &[
            completes(9, false),
            ("Upload-Length", "300000"),
            ("Content-Disposition", "inline; filename=\"mixed.bin\""),
        ],
        &data[..100_000],
    );
    let (path, id) = (path_of(&create), create.location_id());
    let tus_head = client.send("HEAD", &format!("/files/{id}"), &[TUS], b"");
    assert_eq!(tus_head.header("upload-offset"), Some("100000"));
    let tus_patch = client.send(
        "PATCH",
        &format!("/files/{id}"),
        &[TUS, STREAM, ("Upload-Offset", "100000")],
        &data[100_000..200_000],
    );
    assert_eq!(tus_patch.status, 204);
    let head = draft(&client, 9, "HEAD", &path, &[], b"");
    assert_eq!(offset_of(&head), 200_000);
    let last = draft(
        &client,
        9,
        "PATCH",
        &path,
        &[
            ("Upload-Offset", "200000"),
            completes(9, true),
            ("Content-Type", "application/partial-upload"),
        ],
        &data[200_000..],
    );
    assert_eq!(last.status, 200, "{}", last.text());
    let listed = client.get(&format!("/upload/{id}/")).json();
    assert_eq!(
        (listed["status"].as_u64(), listed["filename"].as_str()),
        (Some(2), Some("mixed.bin"))
    );
    assert_eq!(listed["md5"], md5_hex(&data));
    assert_eq!(client.get(&format!("/upload/{id}/file")).body, data);

    let idle = draft(
        &client,
        9,
        "POST",
        "/resumable/",
        &[completes(9, false)],
        b"abc",
    );
    let idle_path = path_of(&idle);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(draft(&client, 9, "HEAD", &idle_path, &[], b"").status, 410);
    let (ok, out, err) = setup.store.run(&["cleanup"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 expired uploads removed"), "{out}");
    assert_eq!(draft(&client, 9, "HEAD", &idle_path, &[], b"").status, 404);
    assert_eq!(
        draft(&client, 9, "HEAD", &path, &[], b"").status,
        204,
        "complete ones stay"
    );
}

fn draft_command(protocol: &'static str) -> impl Fn(&[&str]) -> Command {
    move |args| tus_js_command(&[args, &[protocol]].concat())
}

/// tus-js-client's `ietf-draft-03` (interop version 5) and
/// `ietf-draft-05` (6): 0 B, 1 B, 300 KB, and 3 MiB aborted and resumed.
fn tus_js_client_speaks_both_drafts(backend: Backend) {
    let sizes = [
        (0, "whole"),
        (1, "whole"),
        (300_000, "whole"),
        (3 << 20, "resume"),
    ];
    for protocol in ["ietf-draft-03", "ietf-draft-05"] {
        real_client_uploads(backend, "/resumable/", &sizes, &draft_command(protocol));
    }
}

/// Through a proxy that cuts the connection twice mid-body, tus-js-client
/// asks for the offset and resumes, in both draft protocols.
fn tus_js_client_resumes_cut_draft_uploads(backend: Backend) {
    for protocol in ["ietf-draft-03", "ietf-draft-05"] {
        real_client_survives_cut_connections(
            backend,
            "/resumable/",
            8 << 20,
            &draft_command(protocol),
        );
    }
}

both_backends!(
    each_interop_version,
    whole_uploads_and_refused_creations,
    creation_cut_off_after_its_104_is_resumed,
    no_104_without_a_known_version,
    a_new_request_ends_the_zombie,
    repr_digest_is_checked_at_completion,
    an_upload_like_any_other,
    tus_js_client_speaks_both_drafts,
    tus_js_client_resumes_cut_draft_uploads,
);
