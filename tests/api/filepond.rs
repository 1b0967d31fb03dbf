//! The FilePond server API at /filepond/ over raw HTTP: process (whole and
//! chunked), patch with FilePond's traps (the empty last chunk, a raw UTF-8
//! Upload-Name, a chunk cut in the middle), HEAD, revert, load and restore,
//! and every refusal.

use crate::both_backends;
use crate::common::*;
use std::io::Write;
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

both_backends!(whole_files, refusals, chunked_uploads_and_their_traps);
