//! tus 1.0.0 at /files/: every status of the protocol over raw HTTP, and
//! the real clients, tuspy (PyPI) and tus-js-client (npm, under Node).

use crate::all_backends;
use crate::common::*;
use md5::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn tus(
    client: &Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut all = vec![TUS];
    all.extend_from_slice(headers);
    client.send(method, path, &all, body)
}

/// Creates an upload of `length` bytes; its path.
fn create(client: &Client, length: u64, metadata: &str) -> String {
    let len = length.to_string();
    let resp = tus(
        client,
        "POST",
        "/files/",
        &[("Upload-Length", &len), ("Upload-Metadata", metadata)],
        b"",
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let location = resp.header("location").unwrap().to_owned();
    let base = format!("http://{}", client.server.addr);
    location.strip_prefix(&base).unwrap().to_owned()
}

fn offset_of(resp: &Response) -> u64 {
    resp.header("upload-offset").unwrap().parse().unwrap()
}

fn sha1_b64(data: &[u8]) -> String {
    let digest = sha1::Sha1::digest(data);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in digest.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

fn core_protocol_and_extensions(backend: Backend) {
    let setup = Setup::new(backend, &["--max-bytes", "10MiB"]);
    let client = setup.client();
    let options = client.send("OPTIONS", "/files/", &[], b"");
    assert_eq!(options.status, 204);
    assert_eq!(options.header("tus-version"), Some("1.0.0"));
    assert_eq!(options.header("tus-max-size"), Some("10485760"));
    assert_eq!(
        options.header("tus-checksum-algorithm"),
        Some("md5,sha1,sha256")
    );
    assert_eq!(
        options.header("tus-extension"),
        Some("creation,creation-with-upload,creation-defer-length,expiration,checksum,termination,concatenation")
    );

    let unversioned = client.send("POST", "/files/", &[("Upload-Length", "5")], b"");
    assert_eq!(
        (unversioned.status, unversioned.header("tus-version")),
        (412, Some("1.0.0"))
    );
    for headers in [
        &[][..],
        &[("Upload-Length", "-1")],
        &[("Upload-Length", "5"), ("Upload-Metadata", "name !!")],
        &[("Upload-Defer-Length", "2")],
        &[("Upload-Defer-Length", "1"), ("Upload-Length", "5")],
    ] {
        assert_eq!(
            tus(&client, "POST", "/files/", headers, b"").status,
            400,
            "{headers:?}"
        );
    }
    assert_eq!(
        tus(
            &client,
            "POST",
            "/files/",
            &[("Upload-Length", "10485761")],
            b""
        )
        .status,
        413
    );

    let data = bytes(300_000, 7);
    // "filename" is base64 of "hello.bin".
    let path = create(&client, 300_000, "filename aGVsbG8uYmlu,flag");
    let head = tus(&client, "HEAD", &path, &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(offset_of(&head), 0);
    assert_eq!(head.header("upload-length"), Some("300000"));
    assert_eq!(
        head.header("upload-metadata"),
        Some("filename aGVsbG8uYmlu,flag")
    );
    assert_eq!(head.header("cache-control"), Some("no-store"));
    assert!(head.header("upload-expires").unwrap().ends_with("GMT"));

    let wrong_type = tus(
        &client,
        "PATCH",
        &path,
        &[
            ("Upload-Offset", "0"),
            ("Content-Type", "application/octet-stream"),
        ],
        &data[..10],
    );
    assert_eq!(wrong_type.status, 415);
    assert_eq!(
        tus(&client, "PATCH", &path, &[STREAM], &data[..10]).status,
        400
    );
    assert_eq!(
        tus(
            &client,
            "PATCH",
            &path,
            &[STREAM, ("Upload-Offset", "5")],
            &data[..10]
        )
        .status,
        409
    );
    let too_long = tus(
        &client,
        "PATCH",
        &path,
        &[STREAM, ("Upload-Offset", "0")],
        &vec![0u8; 300_001],
    );
    assert_eq!(too_long.status, 413);
    let unknown_algo = tus(
        &client,
        "PATCH",
        &path,
        &[
            STREAM,
            ("Upload-Offset", "0"),
            ("Upload-Checksum", "crc32 AAAA"),
        ],
        &data[..10],
    );
    assert_eq!(unknown_algo.status, 400);
    let wrong_sum = sha1_b64(b"other bytes");
    let mismatch = tus(
        &client,
        "PATCH",
        &path,
        &[
            STREAM,
            ("Upload-Offset", "0"),
            ("Upload-Checksum", &format!("sha1 {wrong_sum}")),
        ],
        &data[..100_000],
    );
    assert_eq!(mismatch.status, 460);
    assert_eq!(
        offset_of(&tus(&client, "HEAD", &path, &[], b"")),
        0,
        "a chunk failing its checksum is discarded"
    );

    let sum = sha1_b64(&data[..100_000]);
    let first = tus(
        &client,
        "PATCH",
        &path,
        &[
            STREAM,
            ("Upload-Offset", "0"),
            ("Upload-Checksum", &format!("sha1 {sum}")),
        ],
        &data[..100_000],
    );
    assert_eq!((first.status, offset_of(&first)), (204, 100_000));
    // A body cut off midway keeps what arrived.
    let auth = client.auth.clone();
    let cut = partial_request(
        &setup.server,
        "PATCH",
        &path,
        &[
            TUS,
            STREAM,
            ("Authorization", &auth),
            ("Upload-Offset", "100000"),
        ],
        200_000,
        &data[100_000..170_000],
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(cut);
    eventually("the partial body is kept", || {
        offset_of(&tus(&client, "HEAD", &path, &[], b"")) == 170_000
    });
    // X-HTTP-Method-Override, then the last bytes complete the upload.
    let last = tus(
        &client,
        "POST",
        &path,
        &[
            STREAM,
            ("X-HTTP-Method-Override", "PATCH"),
            ("Upload-Offset", "170000"),
        ],
        &data[170_000..],
    );
    assert_eq!((last.status, offset_of(&last)), (204, 300_000));
    assert_eq!(last.header("upload-expires"), None);

    // A completed tus upload is an upload like any other.
    let id = path.trim_start_matches("/files/");
    let json = client.get(&format!("/upload/{id}/")).json();
    assert_eq!(
        (json["status"].as_u64(), json["filename"].as_str()),
        (Some(2), Some("hello.bin"))
    );
    assert_eq!(json["md5"], md5_hex(&data));
    assert_eq!(client.get(&format!("/upload/{id}/file")).body, data);

    // creation-with-upload, then termination.
    let len = "10".to_string();
    let with_body = tus(
        &client,
        "POST",
        "/files/",
        &[STREAM, ("Upload-Length", &len)],
        b"01234",
    );
    assert_eq!((with_body.status, offset_of(&with_body)), (201, 5));
    let other = with_body.location_id();
    assert_eq!(
        tus(&client, "DELETE", &format!("/files/{other}"), &[], b"").status,
        204
    );
    assert_eq!(
        tus(&client, "HEAD", &format!("/files/{other}"), &[], b"").status,
        404
    );
    assert_eq!(tus(&client, "GET", "/files/", &[], b"").status, 405);

    // Someone else's upload does not exist.
    let bob = setup.store.token("bob");
    let bob = Client::new(&setup.server, &bob);
    assert_eq!(tus(&bob, "HEAD", &path, &[], b"").status, 404);
}

fn concatenation_joins_partial_uploads(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = bytes(500_000, 9);
    let pieces = [&data[..200_000], &data[200_000..]];
    let mut parts = Vec::new();
    for piece in pieces {
        let len = piece.len().to_string();
        let resp = tus(
            &client,
            "POST",
            "/files/",
            &[("Upload-Length", &len), ("Upload-Concat", "partial")],
            b"",
        );
        assert_eq!(resp.status, 201);
        let id = resp.location_id();
        let path = format!("/files/{id}");
        assert_eq!(
            tus(&client, "HEAD", &path, &[], b"").header("upload-concat"),
            Some("partial")
        );
        parts.push(path);
    }
    // A part still incomplete cannot be joined.
    let both = format!("final;{} {}", parts[0], parts[1]);
    assert_eq!(
        tus(&client, "POST", "/files/", &[("Upload-Concat", &both)], b"").status,
        400
    );
    for (path, piece) in parts.iter().zip(pieces) {
        assert_eq!(
            tus(
                &client,
                "PATCH",
                path,
                &[STREAM, ("Upload-Offset", "0")],
                piece
            )
            .status,
            204
        );
    }
    // Full URLs work as well as paths.
    let base = format!("http://{}", setup.server.addr);
    let urls = format!("final;{base}{} {base}{}", parts[0], parts[1]);
    // "am9pbmVkLmJpbg==" is base64 of "joined.bin".
    let done = tus(
        &client,
        "POST",
        "/files/",
        &[
            ("Upload-Concat", &urls),
            ("Upload-Metadata", "filename am9pbmVkLmJpbg=="),
        ],
        b"",
    );
    assert_eq!(done.status, 201, "{}", done.text());
    let id = done.location_id();
    let path = format!("/files/{id}");
    let head = tus(&client, "HEAD", &path, &[], b"");
    assert_eq!(head.header("upload-concat"), Some(both.as_str()));
    assert_eq!(
        (offset_of(&head), head.header("upload-length")),
        (500_000, Some("500000"))
    );
    assert_eq!(
        tus(
            &client,
            "PATCH",
            &path,
            &[STREAM, ("Upload-Offset", "500000")],
            b"x"
        )
        .status,
        403
    );
    let json = client.get(&format!("/upload/{id}/")).json();
    assert_eq!(
        (json["filename"].as_str(), json["md5"].as_str()),
        (Some("joined.bin"), Some(md5_hex(&data).as_str()))
    );
    assert_eq!(client.get(&format!("/upload/{id}/file")).body, data);
    // Only partial uploads can be joined.
    let plain = create(&client, 1, "");
    assert_eq!(
        tus(
            &client,
            "POST",
            "/files/",
            &[("Upload-Concat", &format!("final;{plain}"))],
            b""
        )
        .status,
        400
    );
    assert_eq!(
        tus(
            &client,
            "POST",
            "/files/",
            &[("Upload-Concat", "final;")],
            b""
        )
        .status,
        400
    );
}

fn deferred_length_is_told_later(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = bytes(150_000, 12);
    let resp = tus(
        &client,
        "POST",
        "/files/",
        &[("Upload-Defer-Length", "1")],
        b"",
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let id = resp.location_id();
    let path = format!("/files/{id}");
    let head = tus(&client, "HEAD", &path, &[], b"");
    assert_eq!(
        (
            head.header("upload-defer-length"),
            head.header("upload-length")
        ),
        (Some("1"), None)
    );
    assert_eq!(
        client.get(&format!("/upload/{id}/")).json()["total"],
        serde_json::Value::Null
    );
    let first = tus(
        &client,
        "PATCH",
        &path,
        &[STREAM, ("Upload-Offset", "0")],
        &data[..100_000],
    );
    assert_eq!((first.status, offset_of(&first)), (204, 100_000));
    let below = tus(
        &client,
        "PATCH",
        &path,
        &[
            STREAM,
            ("Upload-Offset", "100000"),
            ("Upload-Length", "99999"),
        ],
        &data[100_000..],
    );
    assert_eq!(below.status, 400);
    let last = tus(
        &client,
        "PATCH",
        &path,
        &[
            STREAM,
            ("Upload-Offset", "100000"),
            ("Upload-Length", "150000"),
        ],
        &data[100_000..],
    );
    assert_eq!((last.status, offset_of(&last)), (204, 150_000));
    let head = tus(&client, "HEAD", &path, &[], b"");
    assert_eq!(head.header("upload-length"), Some("150000"));
    let json = client.get(&format!("/upload/{id}/")).json();
    assert_eq!(
        (json["status"].as_u64(), json["total"].as_u64()),
        (Some(2), Some(150_000))
    );
    assert_eq!(client.get(&format!("/upload/{id}/file")).body, data);
    // Once known, the length cannot change.
    let other = tus(
        &client,
        "POST",
        "/files/",
        &[("Upload-Defer-Length", "1")],
        b"",
    );
    let other = format!("/files/{}", other.location_id());
    assert_eq!(
        tus(
            &client,
            "PATCH",
            &other,
            &[STREAM, ("Upload-Offset", "0"), ("Upload-Length", "10")],
            b"01234"
        )
        .status,
        204
    );
    assert_eq!(
        tus(
            &client,
            "PATCH",
            &other,
            &[STREAM, ("Upload-Offset", "5"), ("Upload-Length", "11")],
            b"56789"
        )
        .status,
        400
    );
}

/// A PATCH while another holds the upload waits, then gets 423.
fn a_held_upload_is_locked(backend: Backend) {
    let setup = Setup::new(backend, &["--lock-timeout", "500ms"]);
    let client = setup.client();
    let path = create(&client, 20, "");
    let auth = client.auth.clone();
    let mut held = partial_request(
        &setup.server,
        "PATCH",
        &path,
        &[
            TUS,
            STREAM,
            ("Authorization", &auth),
            ("Upload-Offset", "0"),
        ],
        10,
        b"01234",
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let locked = tus(
        &client,
        "PATCH",
        &path,
        &[STREAM, ("Upload-Offset", "0")],
        b"abcdefghij",
    );
    assert_eq!(
        (locked.status, locked.header("tus-resumable")),
        (423, Some("1.0.0"))
    );
    held.write_all(b"56789").unwrap();
    let done = read_response(held);
    assert_eq!((done.status, offset_of(&done)), (204, 10));
}

fn expired_uploads_are_gone(backend: Backend) {
    let setup = Setup::new(backend, &["--expiration", "1s"]);
    let client = setup.client();
    let path = create(&client, 10, "");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(tus(&client, "HEAD", &path, &[], b"").status, 410);
    assert_eq!(
        tus(
            &client,
            "PATCH",
            &path,
            &[STREAM, ("Upload-Offset", "0")],
            b"0123456789"
        )
        .status,
        410
    );
}

fn browsers_get_cors_and_proxied_locations(backend: Backend) {
    let setup = Setup::new(
        backend,
        &["--cors-origins", "https://app.example", "--trust-proxy"],
    );
    let client = setup.client();
    let preflight = client.send(
        "OPTIONS",
        "/files/",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "PATCH"),
            (
                "Access-Control-Request-Headers",
                "tus-resumable,upload-offset",
            ),
        ],
        b"",
    );
    assert_eq!(preflight.status, 200);
    let methods = preflight.header("access-control-allow-methods").unwrap();
    assert!(methods.contains("PATCH"), "{methods}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("tus-resumable,upload-offset")
    );
    let created = tus(
        &client,
        "POST",
        "/files/",
        &[
            ("Origin", "https://app.example"),
            ("Upload-Length", "3"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "up.example"),
        ],
        b"",
    );
    assert_eq!(
        created.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let exposed = created
        .header("access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "upload-offset",
        "location",
        "upload-length",
        "tus-resumable",
        "upload-expires",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
    assert!(created
        .header("location")
        .unwrap()
        .starts_with("https://up.example/files/"));
    let foreign = tus(
        &client,
        "POST",
        "/files/",
        &[("Origin", "https://evil.example"), ("Upload-Length", "3")],
        b"",
    );
    assert_eq!(foreign.status, 201);
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    // tus discovery is an OPTIONS without Access-Control-Request-Method, and
    // stays the protocol's own answer.
    let discovery = client.send(
        "OPTIONS",
        "/files/",
        &[("Origin", "https://app.example")],
        b"",
    );
    assert_eq!(discovery.status, 204);
    assert!(discovery.header("tus-version").is_some());
    let foreign_preflight = client.send(
        "OPTIONS",
        "/files/",
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "PATCH"),
        ],
        b"",
    );
    assert_eq!(
        foreign_preflight.header("access-control-allow-origin"),
        None
    );
}

fn tuspy_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| python_with("venv", "tusclient", "tuspy==1.1.0"))
}

fn tus_js_modules() -> &'static Path {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES.get_or_init(|| node_modules_with("tus-js-client@4.3.1"))
}

/// Runs a client script; the upload id it printed last.
fn upload_with(mut command: Command) -> String {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = stdout.lines().last().unwrap().trim().to_owned();
    url.rsplit('/').next().unwrap().to_owned()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Uploads files of several sizes, whole and resumed, with `client` to
/// `endpoint`; checks the stored bytes.
pub(crate) fn real_client_uploads(
    backend: Backend,
    endpoint: &str,
    cases: &[(usize, &str)],
    client_command: &dyn Fn(&[&str]) -> Command,
) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let files = TempDir::new("tus-files");
    let endpoint = setup.server.url(endpoint);
    for (seed, &(size, mode)) in cases.iter().enumerate() {
        let data = bytes(size, 40 + seed as u64);
        let file = files.0.join(format!("f{seed}.bin"));
        std::fs::write(&file, &data).unwrap();
        let chunk = (1 << 20).to_string();
        let id = upload_with(client_command(&[
            &endpoint,
            &setup.token,
            file.to_str().unwrap(),
            &chunk,
            mode,
        ]));
        let json = client.get(&format!("/upload/{id}/")).json();
        assert_eq!(json["status"], 2, "{json}");
        assert_eq!(json["md5"], md5_hex(&data));
        assert_eq!(
            client.get(&format!("/upload/{id}/file")).body,
            data,
            "size {size}, {mode}"
        );
    }
}

pub(crate) const SIZES: [(usize, &str); 4] = [
    (0, "whole"),
    (1, "whole"),
    (300_001, "whole"),
    (3 << 20, "resume"),
];

/// Through a proxy that cuts the connection twice in the middle of a body,
/// `client` retries, asks the server for its offset, and finishes.
pub(crate) fn real_client_survives_cut_connections(
    backend: Backend,
    endpoint: &str,
    chunk: usize,
    client_command: &dyn Fn(&[&str]) -> Command,
) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let proxy = CuttingProxy::start(&setup.server.addr, 700_000, 2);
    let files = TempDir::new("tus-cut");
    let data = bytes(3 << 20, 77);
    let file = files.0.join("cut.bin");
    std::fs::write(&file, &data).unwrap();
    let endpoint = format!("http://{}{endpoint}", proxy.addr);
    let chunk = chunk.to_string();
    let id = upload_with(client_command(&[
        &endpoint,
        &setup.token,
        file.to_str().unwrap(),
        &chunk,
        "whole",
    ]));
    assert_eq!(proxy.cuts(), 2, "the proxy cut the connection twice");
    assert_eq!(client.get(&format!("/upload/{id}/file")).body, data);
    assert_eq!(
        client.get(&format!("/upload/{id}/")).json()["md5"],
        md5_hex(&data)
    );
}

fn tuspy_command(args: &[&str]) -> Command {
    let mut command = Command::new(tuspy_python());
    command.arg(script("tuspy_upload.py")).args(args);
    command
}

pub(crate) fn tus_js_command(args: &[&str]) -> Command {
    let mut command = Command::new("node");
    command
        .arg(script("tus_js_upload.js"))
        .args(args)
        .env("NODE_PATH", tus_js_modules());
    command
}

/// tuspy sends checksums: a cut body is discarded and sent again.
fn tuspy_survives_cut_connections(backend: Backend) {
    real_client_survives_cut_connections(backend, "/files/", 1 << 20, &tuspy_command);
}

/// tus-js-client sends the file in one PATCH: the cut body's bytes are
/// kept, and it resumes from the middle.
fn tus_js_client_survives_cut_connections(backend: Backend) {
    real_client_survives_cut_connections(backend, "/files/", 8 << 20, &tus_js_command);
}

fn tuspy_uploads_and_resumes(backend: Backend) {
    real_client_uploads(backend, "/files/", &SIZES, &tuspy_command);
}

fn tus_js_client_uploads_resumes_and_parallelizes(backend: Backend) {
    let more = [(3 << 20, "parallel"), (2 << 20, "deferred")];
    let cases = [SIZES.as_slice(), &more].concat();
    real_client_uploads(backend, "/files/", &cases, &tus_js_command);
}

/// `--hash-tus false`: tus uploads are stored byte for byte, resumed after
/// a restart, joined, and checked chunk by chunk, but have no checksum of
/// their whole; uploads through `/upload/` are hashed all the same.
fn unhashed_when_tus_hashing_is_off(backend: Backend) {
    const OFF: &[&str] = &["--hash-tus", "false"];
    let mut setup = Setup::new(backend, OFF);
    let data = bytes(300_000, 21);
    let path = create(&setup.client(), 300_000, "filename ZmFzdC5iaW4=");
    let first = tus(
        &setup.client(),
        "PATCH",
        &path,
        &[STREAM, ("Upload-Offset", "0")],
        &data[..100_000],
    );
    assert_eq!((first.status, offset_of(&first)), (204, 100_000));
    // A chunk checksum is still checked: 460, and nothing kept.
    let wrong = sha1_b64(b"other bytes");
    let checked = format!("sha1 {wrong}");
    let refused = tus(
        &setup.client(),
        "PATCH",
        &path,
        &[
            STREAM,
            ("Upload-Offset", "100000"),
            ("Upload-Checksum", &checked),
        ],
        &data[100_000..150_000],
    );
    assert_eq!(refused.status, 460);
    // A new server process resumes it from the row alone.
    setup.server = Server::start(&setup.store, OFF);
    let client = setup.client();
    let head = tus(&client, "HEAD", &path, &[], b"");
    assert_eq!(offset_of(&head), 100_000);
    let right = format!("sha1 {}", sha1_b64(&data[100_000..]));
    let rest = tus(
        &client,
        "PATCH",
        &path,
        &[
            STREAM,
            ("Upload-Offset", "100000"),
            ("Upload-Checksum", &right),
        ],
        &data[100_000..],
    );
    assert_eq!((rest.status, offset_of(&rest)), (204, 300_000));
    let id = path.trim_start_matches("/files/");
    let json = client.get(&format!("/upload/{id}/")).json();
    assert_eq!(
        (json["status"].as_u64(), json["offset"].as_u64()),
        (Some(2), Some(300_000))
    );
    assert!(json["md5"].is_null(), "{json}");
    let file = client.get(&format!("/upload/{id}/file"));
    assert_eq!(file.body, data);
    let untagged = format!("\"{}\"", id.replace('-', ""));
    assert_eq!(file.header("etag"), Some(untagged.as_str()));
    // Completion with a checksum cannot check one: 409, and nothing changes.
    let half = create(&client, 10, "");
    let half_id = half.trim_start_matches("/files/");
    tus(
        &client,
        "PATCH",
        &half,
        &[STREAM, ("Upload-Offset", "0")],
        b"01234",
    );
    let completed = client.complete(half_id, &md5_hex(b"01234"));
    assert_eq!(completed.status, 409, "{}", completed.text());
    assert_eq!(offset_of(&tus(&client, "HEAD", &half, &[], b"")), 5);
    // Joined parts are not hashed either.
    let parts: Vec<String> = [&data[..1000], &data[1000..2500]]
        .iter()
        .map(|piece| {
            let len = piece.len().to_string();
            let resp = tus(
                &client,
                "POST",
                "/files/",
                &[
                    ("Upload-Length", &len),
                    ("Upload-Concat", "partial"),
                    STREAM,
                ],
                piece,
            );
            assert_eq!(resp.status, 201);
            format!("/files/{}", resp.location_id())
        })
        .collect();
    let both = format!("final;{} {}", parts[0], parts[1]);
    let joined = tus(&client, "POST", "/files/", &[("Upload-Concat", &both)], b"");
    assert_eq!(joined.status, 201);
    let joined_id = joined.location_id();
    assert!(client.get(&format!("/upload/{joined_id}/")).json()["md5"].is_null());
    assert_eq!(
        client.get(&format!("/upload/{joined_id}/file")).body,
        &data[..2500]
    );
    // The chunked protocol hashes its uploads all the same.
    let chunked = client.upload("chunked.bin", &data, 64 * 1024);
    assert_eq!(chunked["md5"].as_str(), Some(md5_hex(&data).as_str()));
}

all_backends!(
    core_protocol_and_extensions,
    unhashed_when_tus_hashing_is_off,
    expired_uploads_are_gone,
    browsers_get_cors_and_proxied_locations,
    tuspy_uploads_and_resumes,
    tus_js_client_uploads_resumes_and_parallelizes,
    concatenation_joins_partial_uploads,
    deferred_length_is_told_later,
    tuspy_survives_cut_connections,
    tus_js_client_survives_cut_connections,
    a_held_upload_is_locked,
);
