//! The test harness: a real `chunkd` process per test, on its own data
//! directory and its own database (SQLite file, or a PostgreSQL database
//! cloned from a migrated template), spoken to over real HTTP.

#![allow(dead_code)]

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_chunkd");
const PG_ADMIN_DATABASE: &str = "postgres";

/// The chunkup binary. It belongs to the client package, whose own tests
/// make cargo build it beside this package's test binaries.
pub fn chunkup() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test binary> -> target/<profile>/chunkup
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("a target directory")
        .join("chunkup");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// The URL of a database of the local PostgreSQL, without TLS (it runs on
/// this host: see docs/deployment.md).
fn pg_url(database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:5432/{database}?sslmode=disable")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each listed test function against SQLite and against PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::common::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name($crate::common::Backend::Postgres) } )*
        }
    };
}

/// A directory removed when the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("chunkd-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The admin connection; retried for a while when the server is full
/// (`too many clients`: other tests' servers hold connections), never
/// skipped when PostgreSQL is missing.
fn pg_admin() -> PgConnection {
    let url = pg_url(PG_ADMIN_DATABASE);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match PgConnection::establish(&url) {
            Ok(conn) => return conn,
            Err(err)
                if err.to_string().contains("too many clients") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(err) => panic!(
                "PostgreSQL is required at {url} ({err}); start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
            ),
        }
    }
}

/// The migrated template's name carries a hash of the migrations, so a
/// changed schema gets a new template.
fn template_name() -> String {
    let mut files: Vec<PathBuf> = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    for dir in std::fs::read_dir(&root).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            files.push(file.unwrap().path());
        }
    }
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        for byte in std::fs::read(file).unwrap() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("chunkd_tmpl_{hash:016x}")
}

/// A PostgreSQL database of this test alone, dropped at the end.
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    pub fn new() -> Self {
        let template = template_name();
        let mut admin = pg_admin();
        // Test processes run in parallel: one of them builds the template.
        admin
            .batch_execute("SELECT pg_advisory_lock(727275)")
            .unwrap();
        if admin
            .batch_execute(&format!("CREATE DATABASE {template}"))
            .is_ok()
        {
            let migrated = Command::new(BIN)
                .args(["migrate", "--database-url", &pg_url(&template)])
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            if !migrated.status.success() {
                let _ = admin.batch_execute(&format!("DROP DATABASE {template}"));
                panic!("migrating the template failed: {migrated:?}");
            }
        }
        admin
            .batch_execute("SELECT pg_advisory_unlock(727275)")
            .unwrap();
        let name = format!("chunkd_t_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .unwrap();
        PgDatabase { name }
    }

    pub fn url(&self) -> String {
        pg_url(&self.name)
    }

    /// The server processes of the connections open on this database.
    pub fn backend_pids(&self) -> Vec<i32> {
        use diesel::RunQueryDsl;
        let pids = format!(
            "(SELECT coalesce(array_agg(pid), '{{}}') FROM pg_stat_activity WHERE datname = '{}')",
            self.name
        );
        type Pids = diesel::sql_types::Array<diesel::sql_types::Integer>;
        diesel::select(diesel::dsl::sql::<Pids>(&pids))
            .get_result(&mut pg_admin())
            .unwrap()
    }

    /// How many connections are open on this database right now.
    pub fn connections(&self) -> usize {
        self.backend_pids().len()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = pg_admin().batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// Where a server keeps its rows and bytes: shared by servers of one test.
pub struct Store {
    pub backend: Backend,
    pub data: TempDir,
    pub logs: TempDir,
    pub pg: Option<PgDatabase>,
}

impl Store {
    pub fn new(backend: Backend) -> Self {
        Store {
            backend,
            data: TempDir::new("data"),
            logs: TempDir::new("logs"),
            pg: (backend == Backend::Postgres).then(PgDatabase::new),
        }
    }

    /// The command line of a chunkd subcommand on this store.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        cmd.arg("--data-dir").arg(&self.data.0);
        for (key, _) in std::env::vars() {
            if key.starts_with("CHUNKD_") || key == "DATABASE_URL" {
                cmd.env_remove(key);
            }
        }
        if let Some(pg) = &self.pg {
            cmd.env("CHUNKD_DATABASE_URL", pg.url());
        }
        cmd.env("RUST_LOG", "info");
        cmd
    }

    /// Runs a subcommand to its end: (exit success, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn token(&self, owner: &str) -> String {
        let (ok, out, err) = self.run(&["token", "create", "--owner", owner]);
        assert!(ok, "token create failed: {err}");
        out.trim().to_owned()
    }

    /// Every file under the data directory's upload folders, with its size.
    pub fn part_files(&self) -> Vec<(String, u64)> {
        fn walk(dir: &Path, out: &mut Vec<(String, u64)>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    if !name.starts_with("chunkd.sqlite3") {
                        out.push((name.to_owned(), entry.metadata().unwrap().len()));
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data.0, &mut out);
        out.sort();
        out
    }
}

pub struct Server {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Server {
    pub fn start(store: &Store, extra: &[&str]) -> Server {
        Server::start_at(store, "127.0.0.1:0", extra)
    }

    /// A server on a given address (to come back where a killed one was).
    pub fn start_at(store: &Store, listen: &str, extra: &[&str]) -> Server {
        let log = store
            .logs
            .0
            .join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let mut args = vec!["serve", "--listen", listen, "--workers", "2"];
        args.extend_from_slice(extra);
        let mut child = store
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("chunkd listening on http://") {
                        break addr.to_owned();
                    }
                }
                _ => panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server::running(child, addr, log)
    }

    /// A server process already listening on `addr` (the benchmark also
    /// runs another tus server), killed when dropped.
    pub fn running(child: Child, addr: String, log: PathBuf) -> Server {
        Server { child, addr, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Peak resident memory of the server process, in bytes.
    pub fn peak_rss(&self) -> u64 {
        peak_rss_of(self.pid()).expect("the server's /proc status")
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(&self.addr, method, path, headers, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The id at the end of the `Location` header (tus creation).
    pub fn location_id(&self) -> String {
        let location = self.header("location").expect("a Location header");
        location.rsplit('/').next().unwrap().to_owned()
    }
}

/// The head of a request, for tests that send its body themselves; the
/// server closes the connection once it has answered.
pub fn request_head(
    method: &str,
    path: &str,
    addr: &str,
    headers: &[(&str, &str)],
    len: Option<u64>,
) -> Vec<u8> {
    let mut with_close = vec![("Connection", "close")];
    with_close.extend_from_slice(headers);
    kept_alive_head(method, path, addr, &with_close, len)
}

/// The head of a request after which the connection stays open for the
/// next one (HTTP/1.1's default).
pub fn kept_alive_head(
    method: &str,
    path: &str,
    addr: &str,
    headers: &[(&str, &str)],
    len: Option<u64>,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(len) = len {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Starts a request whose body is `declared` bytes long but sends only
/// `sent`; the caller goes on, waits or drops the connection.
pub fn partial_request(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    declared: u64,
    sent: &[u8],
) -> TcpStream {
    let mut stream = connect(&server.addr);
    stream
        .write_all(&request_head(
            method,
            path,
            &server.addr,
            headers,
            Some(declared),
        ))
        .unwrap();
    stream.write_all(sent).unwrap();
    stream.flush().unwrap();
    stream
}

pub fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

pub fn read_response(stream: TcpStream) -> Response {
    try_read_response(stream).unwrap()
}

/// The response, or an error when the connection broke before one came.
pub fn try_read_response(mut stream: TcpStream) -> std::io::Result<Response> {
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        read?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no response",
        ));
    }
    Ok(parse_response(&raw))
}

/// One request on a connection kept between requests: `kept`'s, or a new
/// one from `open`; the head, the body that `send_body` sends, and the
/// response, after which the connection is kept for the next request
/// unless the server said it closes it.
pub fn exchange_kept(
    kept: &mut Option<TcpStream>,
    open: impl FnOnce() -> TcpStream,
    head: &[u8],
    send_body: impl FnOnce(&mut TcpStream),
) -> Response {
    let mut conn = kept.take().unwrap_or_else(open);
    conn.write_all(head).unwrap();
    send_body(&mut conn);
    let resp = read_response_on(&mut conn);
    if resp.header("connection") != Some("close") {
        *kept = Some(conn);
    }
    resp
}

/// The next response on a connection that stays open: its head, and as
/// many body bytes as its Content-Length says (none without one).
pub fn read_response_on(stream: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let fill = |stream: &mut TcpStream, raw: &mut Vec<u8>, buf: &mut [u8]| {
        let n = stream.read(buf).expect("a response");
        assert!(n > 0, "the server closed the connection mid-response");
        raw.extend_from_slice(&buf[..n]);
    };
    let body_at = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        fill(stream, &mut raw, &mut buf);
    };
    let head = parse_response(&raw[..body_at]);
    assert!(
        head.header("transfer-encoding").is_none(),
        "a chunked response on a kept connection"
    );
    let len: usize = head
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while raw.len() < body_at + len {
        fill(stream, &mut raw, &mut buf);
    }
    assert_eq!(raw.len(), body_at + len, "bytes past the response");
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body).unwrap()
}

/// A request, or an error when the server is gone.
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let len = (!body.is_empty() || matches!(method, "PUT" | "POST")).then_some(body.len() as u64);
    stream.write_all(&request_head(method, path, addr, headers, len))?;
    // The server may answer (and close) before reading the whole body. No
    // half-close: the request says Connection: close, the server closes.
    let _ = stream.write_all(body);
    try_read_response(stream)
}

pub const BOUNDARY: &str = "XbenchBoundary42";

pub enum Part<'a> {
    Text(&'a str, &'a str),
    File(&'a str, &'a str, &'a [u8]),
}

/// A multipart/form-data body like the ones drf clients send.
pub fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                        .as_bytes(),
                );
            }
            Part::File(name, filename, data) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
        }
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

/// The usual start of a test: a store, a token for alice, a server.
pub struct Setup {
    pub store: Store,
    pub token: String,
    pub server: Server,
}

impl Setup {
    pub fn new(backend: Backend, flags: &[&str]) -> Self {
        let store = Store::new(backend);
        let token = store.token("alice");
        let server = Server::start(&store, flags);
        Setup {
            store,
            token,
            server,
        }
    }

    pub fn client(&self) -> Client<'_> {
        Client::new(&self.server, &self.token)
    }
}

/// A client of one owner on one server.
pub struct Client<'a> {
    pub server: &'a Server,
    pub auth: String,
}

impl<'a> Client<'a> {
    pub fn new(server: &'a Server, token: &str) -> Self {
        Client {
            server,
            auth: format!("Token {token}"),
        }
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut all = vec![("Authorization", self.auth.as_str())];
        all.extend_from_slice(headers);
        self.server.request(method, path, &all, body)
    }

    /// A chunk as multipart, with `filename` when given (creation).
    pub fn put_chunk(
        &self,
        path: &str,
        range: &str,
        filename: Option<&str>,
        data: &[u8],
    ) -> Response {
        let mut parts = Vec::new();
        if let Some(name) = filename {
            parts.push(Part::Text("filename", name));
        }
        parts.push(Part::File("file", "chunk.bin", data));
        let ctype = multipart_type();
        self.send(
            "PUT",
            path,
            &[("Content-Range", range), ("Content-Type", &ctype)],
            &multipart(&parts),
        )
    }

    /// A chunk as a raw body.
    pub fn put_raw(&self, path: &str, range: &str, data: &[u8]) -> Response {
        self.send(
            "PUT",
            path,
            &[
                ("Content-Range", range),
                ("Content-Type", "application/octet-stream"),
            ],
            data,
        )
    }

    pub fn complete(&self, id: &str, md5: &str) -> Response {
        self.send(
            "POST",
            &format!("/upload/{id}/"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("md5={md5}").as_bytes(),
        )
    }

    pub fn get(&self, path: &str) -> Response {
        self.send("GET", path, &[], b"")
    }

    /// Uploads `data` in chunks of `chunk` bytes (multipart) and completes it.
    pub fn upload(&self, name: &str, data: &[u8], chunk: usize) -> Value {
        let total = data.len();
        let mut id = String::new();
        for start in (0..total).step_by(chunk) {
            let end = (start + chunk).min(total);
            let range = format!("bytes {}-{}/{}", start, end - 1, total);
            let path = if start == 0 {
                "/upload/".to_owned()
            } else {
                format!("/upload/{id}/")
            };
            let filename = (start == 0).then_some(name);
            let resp = self.put_chunk(&path, &range, filename, &data[start..end]);
            assert_eq!(resp.status, 200, "{}", resp.text());
            let json = resp.json();
            assert_eq!(json["offset"], end as u64);
            id = json["id"].as_str().unwrap().to_owned();
        }
        let resp = self.complete(&id, &md5_hex(data));
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.json()
    }
}

/// Clients race different bytes at the same offset of one upload, round
/// after round (`racers` requests spread over `clients`): exactly one wins
/// each round, the others learn the offset (400) or that the upload is busy
/// (409); at the end the upload holds exactly the winners' bytes.
pub fn race_rounds(clients: &[Client], racers: u64, chunk: usize, rounds: usize) {
    let total = chunk * rounds;
    let first = clients[0].put_raw(
        "/upload/?filename=race.bin",
        &format!("bytes 0-{}/{total}", chunk - 1),
        &bytes(chunk, 0),
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    let mut expected = bytes(chunk, 0);
    for round in 1..rounds {
        let start = round * chunk;
        let range = format!("bytes {start}-{}/{total}", start + chunk - 1);
        let results: Vec<(u16, Vec<u8>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..racers)
                .map(|racer| {
                    let client = &clients[racer as usize % clients.len()];
                    let (range, path) = (&range, &path);
                    scope.spawn(move || {
                        let data = bytes(chunk, 1000 * round as u64 + racer);
                        (client.put_raw(path, range, &data).status, data)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
        let winners: Vec<_> = results
            .iter()
            .filter(|(status, _)| *status == 200)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {statuses:?}");
        assert!(
            statuses.iter().all(|s| [200, 400, 409].contains(s)),
            "{statuses:?}"
        );
        expected.extend_from_slice(&winners[0].1);
    }
    let last = &clients[clients.len() - 1];
    let done = last.complete(&id, &md5_hex(&expected));
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(clients[0].get(&format!("{path}file")).body, expected);
}

/// A TCP proxy in front of a server that cuts the connection (both ways)
/// each time another `cut_every` bytes went from clients to the server,
/// `cuts` times: a network that fails mid-request.
pub struct CuttingProxy {
    pub addr: String,
    pub cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    pub fn start(target: &str, cut_every: u64, cuts: usize) -> Self {
        use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (sent, cut) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicUsize::new(0)));
        let (target, done) = (target.to_owned(), cut.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (sent, done) = (sent.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = from_client.read(&mut buf) {
                        if n == 0 || to_server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let before = sent.fetch_add(n as u64, Ordering::SeqCst);
                        let crossed = before / cut_every != (before + n as u64) / cut_every;
                        let cut_now = crossed
                            && done
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| {
                                    (d < cuts).then_some(d + 1)
                                })
                                .is_ok();
                        if cut_now {
                            let _ = from_client.shutdown(std::net::Shutdown::Both);
                            let _ = to_server.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                    }
                    let _ = to_server.shutdown(std::net::Shutdown::Write);
                });
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy { addr, cut }
    }

    /// How many connections it cut.
    pub fn cuts(&self) -> usize {
        self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Peak resident memory of a running process, in bytes (`None` once it is gone).
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Polls until `check` holds or the time is up.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
