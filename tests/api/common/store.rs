//! Where a server keeps its rows and bytes: a data directory, and a SQLite
//! file in it or a PostgreSQL database of its own; with `Backend::S3`, the
//! bytes in a bucket of the S3 emulator.

use super::s3::{delete_objects, emulator, list_objects, new_bucket};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
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
    /// PostgreSQL, with the bytes in a bucket of the S3 emulator.
    S3,
}

/// The bucket of a store's bytes, and the endpoint its servers reach it at
/// (the emulator's, or a proxy's in front of it).
pub struct S3Bucket {
    pub name: String,
    pub endpoint: String,
    /// Shared by a store and its replicas: the last one gone empties it.
    emptied: Arc<EmptiedOnDrop>,
}

/// A bucket whose objects are deleted when the test is done with it, so
/// that the emulator, which keeps them in memory, does not grow all run.
struct EmptiedOnDrop(String);

impl Drop for EmptiedOnDrop {
    fn drop(&mut self) {
        delete_objects(&self.0);
    }
}

/// Where a store's objects go in its bucket.
const S3_PREFIX: &str = "chunkd";

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

    /// Lets connections in, or refuses new ones and ends those open, as a
    /// database that is down does.
    pub fn allow_connections(&self, allow: bool) {
        let mut admin = pg_admin();
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS {allow}",
                self.name
            ))
            .unwrap();
        if !allow {
            admin
                .batch_execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                    self.name
                ))
                .unwrap();
        }
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
    pub pg: Option<Arc<PgDatabase>>,
    pub s3: Option<S3Bucket>,
}

impl Store {
    pub fn new(backend: Backend) -> Self {
        Store {
            backend,
            data: TempDir::new("data"),
            logs: TempDir::new("logs"),
            pg: (backend != Backend::Sqlite).then(|| Arc::new(PgDatabase::new())),
            s3: (backend == Backend::S3).then(|| {
                let name = new_bucket();
                S3Bucket {
                    emptied: Arc::new(EmptiedOnDrop(name.clone())),
                    name,
                    endpoint: emulator().to_owned(),
                }
            }),
        }
    }

    /// Another server's store on the same database and bucket, with a data
    /// directory of its own: no disk is shared.
    pub fn replica(&self) -> Store {
        Store {
            backend: self.backend,
            data: TempDir::new("data"),
            logs: TempDir::new("logs"),
            pg: self.pg.clone(),
            s3: self.s3.as_ref().map(|s3| S3Bucket {
                name: s3.name.clone(),
                endpoint: s3.endpoint.clone(),
                emptied: s3.emptied.clone(),
            }),
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
        if let Some(s3) = &self.s3 {
            cmd.env("CHUNKD_STORAGE", format!("s3://{}/{S3_PREFIX}", s3.name))
                .env("CHUNKD_S3_ENDPOINT", &s3.endpoint)
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test");
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
    /// In a bucket, the same view: `{id}.done` and its size, and `{id}.part`
    /// for an upload in progress, of the length of its latest state.
    pub fn part_files(&self) -> Vec<(String, u64)> {
        if let Some(s3) = &self.s3 {
            return bucket_files(&list_objects(emulator(), &s3.name, S3_PREFIX));
        }
        fn walk(dir: &Path, out: &mut Vec<(String, u64)>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    // The server may remove a file between the listing and this
                    // look at it; a file that is gone is not there.
                    let size = entry.metadata().map(|m| m.len());
                    if !name.starts_with("chunkd.sqlite3") {
                        if let Ok(size) = size {
                            out.push((name.to_owned(), size));
                        }
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

/// Objects of uploads seen as files: a completed object as itself, the
/// objects in an upload's `{id}.part/` folder as one `{id}.part` as long as
/// its latest state (0 before any).
fn bucket_files(objects: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut files = std::collections::BTreeMap::new();
    for (key, size) in objects {
        let mut names = key.rsplit('/');
        let (Some(last), Some(folder)) = (names.next(), names.next()) else {
            continue;
        };
        if folder.ends_with(".part") {
            let len = last
                .strip_prefix("state-")
                .and_then(|rest| rest.strip_suffix(".json"))
                .and_then(|len| len.parse().ok())
                .unwrap_or(0);
            let file = files.entry(folder.to_owned()).or_insert(0);
            *file = len.max(*file);
        } else if !last.starts_with(".chunkd-probe") {
            files.insert(last.to_owned(), *size);
        }
    }
    files.into_iter().collect()
}
