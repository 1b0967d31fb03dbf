//! The FilePond server API at /filepond/ over raw HTTP: process (whole and
//! chunked), patch with FilePond's traps (the empty last chunk, a raw UTF-8
//! Upload-Name, a chunk cut in the middle), HEAD, revert, load and restore,
//! and every refusal.

use crate::both_backends;
use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// FilePond's form: its metadata under the field's name, then the file.
fn process_form(field: &str, filename: &str, data: &[u8]) -> Vec<u8> {
    multipart(&[Part::Text(field, "{}"), Part::File(field, filename, data)])
}

fn process(client: &Client, body: &[u8]) -> Response {
    let ctype = multipart_type();
    client.send("POST", "/filepond/", &[("Content-Type", &ctype)], body)
}

/// Starts a chunked upload of `total` bytes; its id.
fn start(client: &Client, total: usize) -> String {
    let (ctype, len) = (multipart_type(), total.to_string());
    let body = multipart(&[Part::Text("filepond", "{}")]);
    let resp = client.send(
        "POST",
        "/filepond/",
        &[("Content-Type", &ctype), ("Upload-Length", &len)],
        &body,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    resp.text()
}

fn chunk(
    client: &Client,
    id: &str,
    offset: usize,
    total: usize,
    name: &str,
    data: &[u8],
) -> Response {
    let (offset, total) = (offset.to_string(), total.to_string());
    client.send(
        "PATCH",
        &format!("/filepond/?patch={id}"),
        &[
            STREAM,
            ("Upload-Offset", &offset),
            ("Upload-Length", &total),
            ("Upload-Name", name),
        ],
        data,
    )
}

fn offset(client: &Client, id: &str) -> u64 {
    let head = client.send("HEAD", &format!("/filepond/?patch={id}"), &[], b"");
    assert_eq!(head.status, 200);
    head.header("upload-offset").unwrap().parse().unwrap()
}

/// A whole file: processed, loaded and restored with its name and type,
/// listed as an upload; reverted.
fn whole_files(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = b"hello, FilePond\n".repeat(1000);
    let resp = process(&client, &process_form("filepond", "notes.txt", &data));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let id = resp.text();
    for read in ["load", "restore"] {
        let file = client.get(&format!("/filepond/?{read}={id}"));
        assert_eq!(file.status, 200);
        assert_eq!(file.body, data);
        assert_eq!(file.header("content-type"), Some("text/plain"));
        assert_eq!(
            file.header("content-disposition"),
            Some("inline; filename=\"notes.txt\"; filename*=UTF-8''notes.txt")
        );
        assert_eq!(file.header("x-content-transfer-id"), Some(id.as_str()));
        assert_eq!(file.header("content-security-policy"), Some("sandbox"));
    }
    let listed = client.get(&format!("/upload/{id}/")).json();
    assert_eq!(listed["status"], 2);
    assert_eq!(listed["md5"], md5_hex(&data));

    // Browsers send a name as raw UTF-8 in the part's header.
    let resp = process(&client, &process_form("filepond", "résumé.txt", b"cv"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let listed = client.get(&format!("/upload/{}/", resp.text())).json();
    assert_eq!(listed["filename"], "résumé.txt");

    // The form may name its file field.
    let named = multipart(&[
        Part::Text("fp_upload_field", "document"),
        Part::Text("document", "{}"),
        Part::File("document", "report.pdf", b"%PDF"),
    ]);
    let resp = process(&client, &named);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let file = client.get(&format!("/filepond/?load={}", resp.text()));
    assert_eq!(
        (file.body.as_slice(), file.header("content-type")),
        (&b"%PDF"[..], Some("application/pdf"))
    );

    let revert = client.send(
        "DELETE",
        "/filepond/",
        &[("Content-Type", "text/plain")],
        id.as_bytes(),
    );
    assert_eq!(revert.status, 204);
    assert_eq!(client.get(&format!("/filepond/?load={id}")).status, 404);
    assert_eq!(client.get(&format!("/upload/{id}/")).status, 404);
    let again = client.send("DELETE", "/filepond/", &[], id.as_bytes());
    assert_eq!(again.status, 404);
}

/// Every refusal changes nothing.
fn refusals(backend: Backend) {
    let setup = Setup::new(
        backend,
        &["--max-bytes", "1MiB", "--allowed-extensions", "bin,txt"],
    );
    let client = setup.client();
    let no_file = process(&client, &multipart(&[Part::Text("filepond", "{}")]));
    assert_eq!(no_file.status, 400, "{}", no_file.text());
    let not_a_form = client.send(
        "POST",
        "/filepond/",
        &[("Content-Type", "text/plain")],
        b"x",
    );
    assert_eq!(not_a_form.status, 400);
    let wrong_type = process(&client, &process_form("filepond", "run.exe", b"MZ"));
    assert_eq!(wrong_type.status, 400, "{}", wrong_type.text());
    let large = process(
        &client,
        &process_form("filepond", "big.bin", &vec![0; (1 << 20) + 1]),
    );
    assert_eq!(large.status, 413);
    let anonymous = request(
        &setup.server.addr,
        "POST",
        "/filepond/",
        &[("Content-Type", &multipart_type())],
        &process_form("filepond", "a.txt", b"a"),
    );
    assert_eq!(anonymous.status, 401);
    assert_eq!(client.get("/upload/").json().as_array().unwrap().len(), 0);
    assert_eq!(setup.store.part_files(), vec![]);

    let id = start(&client, 10);
    let unknown = "00000000-0000-0000-0000-000000000000";
    assert_eq!(
        chunk(&client, unknown, 0, 10, "a.bin", b"0123456789").status,
        404
    );
    assert_eq!(
        chunk(&client, "not-an-id", 0, 10, "a.bin", b"0123456789").status,
        404
    );
    let missing = client.send(
        "PATCH",
        &format!("/filepond/?patch={id}"),
        &[STREAM, ("Upload-Offset", "0"), ("Upload-Length", "10")],
        b"0123456789",
    );
    assert_eq!(missing.status, 400);
    let untyped = client.send(
        "PATCH",
        &format!("/filepond/?patch={id}"),
        &[
            ("Upload-Offset", "0"),
            ("Upload-Length", "10"),
            ("Upload-Name", "a.bin"),
        ],
        b"0123456789",
    );
    assert_eq!(untyped.status, 415);
    assert_eq!(
        chunk(&client, &id, 0, 11, "a.bin", b"0123456789").status,
        400
    );
    assert_eq!(
        chunk(&client, &id, 0, 10, "a.exe", b"0123456789").status,
        400
    );
    let ahead = chunk(&client, &id, 5, 10, "a.bin", b"01234");
    assert_eq!(
        (ahead.status, ahead.header("upload-offset")),
        (409, Some("0"))
    );
    let past = chunk(&client, &id, 0, 10, "a.bin", b"0123456789AB");
    assert_eq!(past.status, 413);
    assert_eq!(offset(&client, &id), 0, "no refusal kept a byte");
    assert_eq!(
        client.get(&format!("/filepond/?load={id}")).status,
        409,
        "incomplete"
    );
    assert_eq!(client.get("/filepond/?fetch=http://127.0.0.1/").status, 403);
    assert_eq!(client.get("/filepond/").status, 400);
    let wrong_method = client.send("PUT", "/filepond/", &[], b"");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(
        wrong_method.header("allow"),
        Some("POST, PATCH, HEAD, GET, DELETE")
    );
}

/// A chunked upload as FilePond sends it: the name as raw UTF-8 bytes in
/// every chunk, a size that is a multiple of the chunk size (so an empty
/// last chunk), HEAD to resume; a chunk cut in the middle is not kept in
/// part, so FilePond's resume at a chunk boundary loses nothing.
fn chunked_uploads_and_their_traps(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let (total, size) = (300_000usize, 100_000usize);
    let data = bytes(total, 61);
    let name = "naïve 文件.bin";
    let id = start(&client, total);
    assert_eq!(
        client.get(&format!("/upload/{id}/")).json()["filename"],
        "upload"
    );

    let first = chunk(&client, &id, 0, total, name, &data[..size]);
    assert_eq!((first.status, first.text()), (200, id.clone()));
    assert_eq!(
        client.get(&format!("/upload/{id}/")).json()["filename"],
        name
    );

    // The second chunk is cut in the middle; HEAD says the first chunk's
    // end, not where the cut came.
    let (offset_text, total_text) = (size.to_string(), total.to_string());
    let cut = partial_request(
        &setup.server,
        "PATCH",
        &format!("/filepond/?patch={id}"),
        &[
            ("Authorization", &client.auth),
            STREAM,
            ("Upload-Offset", &offset_text),
            ("Upload-Length", &total_text),
            ("Upload-Name", name),
        ],
        size as u64,
        &data[size..size + 60_000],
    );
    std::thread::sleep(Duration::from_millis(300));
    reset(cut);
    assert_eq!(offset(&client, &id), size as u64);

    for at in (size..total).step_by(size) {
        let resp = chunk(&client, &id, at, total, name, &data[at..at + size]);
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let last = chunk(&client, &id, total, total, name, b"");
    assert_eq!((last.status, last.text()), (200, id.clone()));
    assert_eq!(offset(&client, &id), total as u64);
    let listed = client.get(&format!("/upload/{id}/")).json();
    assert_eq!(
        (listed["status"].as_u64(), listed["md5"].as_str()),
        (Some(2), Some(md5_hex(&data).as_str()))
    );
    let file = client.get(&format!("/filepond/?restore={id}"));
    assert_eq!(file.body, data);
    assert_eq!(
        file.header("content-disposition"),
        Some("inline; filename=\"na_ve __.bin\"; filename*=UTF-8''na%C3%AFve%20%E6%96%87%E4%BB%B6.bin")
    );

    // A name that is not UTF-8 is refused.
    let other = start(&client, 4);
    let mut stream = connect(&setup.server.addr);
    let head = request_head(
        "PATCH",
        &format!("/filepond/?patch={other}"),
        &setup.server.addr,
        &[
            ("Authorization", &client.auth),
            STREAM,
            ("Upload-Offset", "0"),
            ("Upload-Length", "4"),
        ],
        Some(4),
    );
    let head = String::from_utf8(head).unwrap();
    let (line, rest) = head.split_once("\r\n").unwrap();
    stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    stream.write_all(b"Upload-Name: caf\xe9.bin\r\n").unwrap();
    stream.write_all(rest.as_bytes()).unwrap();
    stream.write_all(b"abcd").unwrap();
    assert_eq!(read_response(stream).status, 400);
}

/// A web server on 127.0.0.1 with one file: `/redirect` sends to it,
/// any other path is it. Counts the connections it gets.
fn remote_files(data: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let answer = if head.starts_with("GET /redirect ") {
                let to = format!("http://127.0.0.1:{port}/report.pdf");
                format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
                    .into_bytes()
            } else {
                let mut ok = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len())
                    .into_bytes();
                ok.extend_from_slice(&data);
                ok
            };
            let _ = stream.write_all(&answer);
        }
    });
    (format!("{port}"), connections)
}

fn fetch(client: &Client, method: &str, url: &str) -> Response {
    let query = serde_urlencoded::to_string([("fetch", url)]).unwrap();
    client.send(method, &format!("/filepond/?{query}"), &[], b"")
}

/// Fetch, off by default, refuses every address that is not public (and
/// so never connects to the web server on 127.0.0.1) but for hosts the
/// operator lists; follows no redirect; takes no more than the size limit;
/// needs a token.
fn fetch_reaches_public_or_listed_hosts_only(backend: Backend) {
    let data = bytes(200_000, 71);
    let (port, connections) = remote_files(data.clone());
    let setup = Setup::new(backend, &["--filepond-fetch", "--anonymous", "true"]);
    let client = setup.client();
    for host in [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "[fe80::1]",
        "[fc00::1]",
        "[::ffff:127.0.0.1]",
        "2130706433",
    ] {
        let refused = fetch(&client, "GET", &format!("http://{host}:{port}/report.pdf"));
        assert_eq!(refused.status, 403, "{host}: {}", refused.text());
    }
    for url in ["ftp://example.com/a.bin", "file:///etc/passwd", "not a url"] {
        assert_eq!(fetch(&client, "GET", url).status, 403, "{url}");
    }
    let anonymous = request(
        &setup.server.addr,
        "GET",
        &format!("/filepond/?fetch=http%3A%2F%2Flocalhost%3A{port}%2Fa"),
        &[],
        b"",
    );
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no refused fetch connected"
    );
    assert_eq!(client.get("/upload/").json().as_array().unwrap().len(), 0);

    let listed = Setup::new(
        backend,
        &[
            "--filepond-fetch-hosts",
            "localhost",
            "--max-bytes",
            "300000",
        ],
    );
    let client = listed.client();
    let url = format!("http://localhost:{port}/report.pdf");
    let got = fetch(&client, "GET", &url);
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, data);
    assert_eq!(got.header("content-type"), Some("application/pdf"));
    let id = got.header("x-content-transfer-id").unwrap().to_owned();
    let stored = client.get(&format!("/upload/{id}/")).json();
    assert_eq!(
        (stored["status"].as_u64(), stored["md5"].as_str()),
        (Some(2), Some(md5_hex(&data).as_str()))
    );
    assert_eq!(stored["filename"], "report.pdf");
    let head = fetch(&client, "HEAD", &url);
    assert_eq!(head.status, 200);
    assert!(head.header("x-content-transfer-id").is_some());
    let before = connections.load(Ordering::SeqCst);
    let unlisted = fetch(
        &client,
        "GET",
        &format!("http://127.0.0.1:{port}/report.pdf"),
    );
    assert_eq!(unlisted.status, 403);
    assert_eq!(connections.load(Ordering::SeqCst), before);
    let redirected = fetch(&client, "GET", &format!("http://localhost:{port}/redirect"));
    assert_eq!(redirected.status, 502, "{}", redirected.text());

    let small = Setup::new(
        backend,
        &[
            "--filepond-fetch-hosts",
            "localhost",
            "--max-bytes",
            "100000",
        ],
    );
    let client = small.client();
    assert_eq!(fetch(&client, "GET", &url).status, 413);
    assert_eq!(client.get("/upload/").json().as_array().unwrap().len(), 0);
    assert_eq!(small.store.part_files(), vec![]);
}

both_backends!(
    whole_files,
    refusals,
    chunked_uploads_and_their_traps,
    fetch_reaches_public_or_listed_hosts_only
);
