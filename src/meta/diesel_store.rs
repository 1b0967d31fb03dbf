//! The metadata store over diesel: one code path for PostgreSQL and SQLite
//! through `#[derive(MultiConnection)]`, pooled with r2d2.

use super::schema::{tokens, uploads};
use super::{
    ChunkCommit, Completed, LeaseOutcome, ListQuery, MetaError, MetaResult, MetaStore, Sees,
    TokenRecord, UploadRecord, Viewer,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use uuid::Uuid;

#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// WAL lets readers run beside the writer; the busy timeout makes writers of
/// other processes wait instead of failing.
const SQLITE_PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 15000; PRAGMA foreign_keys = ON;";

/// Durable commits: a committed offset survives a power loss, not just a
/// crash.
const SQLITE_DURABLE: &str = "PRAGMA synchronous = FULL";

/// Commits that need not survive a power loss (leases, and everything with
/// `--sync false`) are not synced; in WAL mode the database stays
/// consistent, and the next durable commit syncs them along.
const SQLITE_NOT_DURABLE: &str = "PRAGMA synchronous = NORMAL";

/// The same for PostgreSQL: such a commit does not wait for its WAL flush.
const PG_NOT_DURABLE: &str = "SET synchronous_commit = off";

/// Serializes migrations of processes that start together on one database.
const PG_MIGRATION_LOCK: &str = "SELECT pg_advisory_lock(727274)";
const PG_MIGRATION_UNLOCK: &str = "SELECT pg_advisory_unlock(727274)";

const STATUS_UPLOADING: i16 = 1;
const STATUS_COMPLETE: i16 = 2;
const STATUS_FAILED: i16 = 3;

/// Which database holds the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// `postgres://` and `postgresql://` URLs select PostgreSQL; `sqlite://PATH`
    /// or a plain path select that SQLite file; no URL selects
    /// `chunkd.sqlite3` in the data directory.
    pub fn resolve(url: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(DatabaseUrl::Sqlite(data_dir.join("chunkd.sqlite3"))),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(DatabaseUrl::Postgres(u.to_owned()))
            }
            Some(u) if u.starts_with("sqlite://") => {
                Ok(DatabaseUrl::Sqlite(PathBuf::from(&u["sqlite://".len()..])))
            }
            Some(u) if !u.contains("://") => Ok(DatabaseUrl::Sqlite(PathBuf::from(u))),
            Some(u) => Err(format!(
                "unsupported database URL {u:?}: use postgres://… or a SQLite file path"
            )),
        }
    }

    /// For logs: the backend and where it is, without credentials.
    pub fn describe(&self) -> String {
        match self {
            DatabaseUrl::Postgres(url) => {
                let host = url.rsplit('@').next().unwrap_or(url);
                let host = host
                    .trim_start_matches("postgres://")
                    .trim_start_matches("postgresql://");
                format!("PostgreSQL at {host}")
            }
            DatabaseUrl::Sqlite(path) => format!("SQLite at {}", path.display()),
        }
    }
}

/// Opens connections; `durable: false`: their commits do not wait for the
/// disk (the lease and lookup pools, and every pool with `--sync false`).
struct Manager {
    url: DatabaseUrl,
    durable: bool,
}

impl ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = ConnectionError;

    fn connect(&self) -> Result<AnyConnection, ConnectionError> {
        let setup = |conn: &mut AnyConnection, settings: &str| {
            conn.batch_execute(settings)
                .map_err(ConnectionError::CouldntSetupConfiguration)
        };
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                let mut conn =
                    diesel::PgConnection::establish(url).map(AnyConnection::Postgresql)?;
                if !self.durable {
                    setup(&mut conn, PG_NOT_DURABLE)?;
                }
                Ok(conn)
            }
            DatabaseUrl::Sqlite(path) => {
                let conn = diesel::SqliteConnection::establish(&path.to_string_lossy())?;
                let mut conn = AnyConnection::Sqlite(conn);
                setup(&mut conn, SQLITE_PRAGMAS)?;
                let durability = if self.durable {
                    SQLITE_DURABLE
                } else {
                    SQLITE_NOT_DURABLE
                };
                setup(&mut conn, durability)?;
                Ok(conn)
            }
        }
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), ConnectionError> {
        conn.ping()
            .map_err(ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        conn.is_broken()
    }
}

pub struct DieselStore {
    pool: Pool<Manager>,
    /// Connections whose commits need not be durable: leases.
    lease_pool: Pool<Manager>,
    /// SQLite: connections for the lookups a request makes first (its
    /// token, its upload), answered on the request's own thread: apart from
    /// the others, so that they never wait for one a commit holds.
    lookup_pool: Option<Pool<Manager>>,
    url: DatabaseUrl,
    /// This process's turn to write. On SQLite every write takes it: SQLite
    /// takes one writer at a time, and writers of this process queue here
    /// instead of in SQLite's busy handler, which sleeps a millisecond and
    /// more between tries. On PostgreSQL only a batch of chunk commits does.
    write_turn: Mutex<()>,
    /// Chunk commits waiting for the turn.
    commit_queue: Mutex<CommitQueue>,
}

/// A chunk's commit, for the upload whose lease `token` holds.
struct QueuedCommit {
    id: Uuid,
    token: String,
    commit: ChunkCommit,
}

/// The status an upload has once `commit` is in.
fn status_after(commit: &ChunkCommit) -> i16 {
    if commit.completed.is_some() {
        STATUS_COMPLETE
    } else {
        STATUS_UPLOADING
    }
}

impl QueuedCommit {
    /// Whether it changed the row. Every column a commit may change is
    /// set, to what it already is where this commit leaves it, so that
    /// the statement's text never varies.
    fn run(&self, conn: &mut AnyConnection) -> QueryResult<bool> {
        let c = &self.commit;
        let completed = c.completed.as_ref();
        Prepared(
            diesel::update(
                held(self.id, &self.token)
                    .filter(uploads::upload_offset.eq(to_db(c.from)))
                    .filter(uploads::status.eq(STATUS_UPLOADING)),
            )
            .set((
                uploads::upload_offset.eq(to_db(c.to)),
                uploads::hash_state.eq(&c.hash_state),
                uploads::total.eq(to_db(c.total.unwrap_or(0))),
                uploads::length_deferred.eq(c.total.is_none()),
                uploads::status.eq(status_after(c)),
                uploads::checksum.eq(completed.and_then(|done| done.checksum.as_deref())),
                uploads::completed_at.eq(completed.map(|done| naive(done.at))),
                uploads::lock_token.eq(None::<String>),
                uploads::lock_until.eq(None::<NaiveDateTime>),
            ))
            .returning(uploads::id),
        )
        .changed_row(conn)
    }
}

/// Group commit of chunks. The commits of concurrent uploads queue here,
/// and whoever gets the turn next commits all that are queued at once; the
/// others find their outcome here when their turn comes. On SQLite, which
/// commits one writer at a time, that is one transaction and one fsync of
/// the WAL for them all. On PostgreSQL it is one statement for them all: a
/// statement costs its server CPU however few rows it changes, and one WAL
/// flush.
#[derive(Default)]
struct CommitQueue {
    next_ticket: u64,
    queued: Vec<(u64, QueuedCommit)>,
    /// Outcomes of commits another request's batch carried.
    done: HashMap<u64, Result<bool, String>>,
}

/// The commits of a batch in one UPDATE (PostgreSQL): each field of theirs
/// bound as one array, the arrays unnested into rows. It returns the
/// position (from 1) of each commit that changed its row. Its SQL never
/// varies, so it stays prepared.
struct CommitBatch {
    ids: Vec<String>,
    tokens: Vec<String>,
    froms: Vec<i64>,
    tos: Vec<i64>,
    hash_states: Vec<Vec<u8>>,
    totals: Vec<i64>,
    deferred: Vec<bool>,
    statuses: Vec<i16>,
    checksums: Vec<Option<String>>,
    completed_ats: Vec<Option<NaiveDateTime>>,
}

impl CommitBatch {
    fn of(commits: &[(u64, QueuedCommit)]) -> Self {
        fn field<T>(commits: &[(u64, QueuedCommit)], f: impl Fn(&QueuedCommit) -> T) -> Vec<T> {
            commits.iter().map(|(_, queued)| f(queued)).collect()
        }
        CommitBatch {
            ids: field(commits, |q| q.id.to_string()),
            tokens: field(commits, |q| q.token.clone()),
            froms: field(commits, |q| to_db(q.commit.from)),
            tos: field(commits, |q| to_db(q.commit.to)),
            hash_states: field(commits, |q| q.commit.hash_state.clone()),
            totals: field(commits, |q| to_db(q.commit.total.unwrap_or(0))),
            deferred: field(commits, |q| q.commit.total.is_none()),
            statuses: field(commits, |q| status_after(&q.commit)),
            checksums: field(commits, |q| {
                q.commit.completed.as_ref().and_then(|c| c.checksum.clone())
            }),
            completed_ats: field(commits, |q| {
                q.commit.completed.as_ref().map(|c| naive(c.at))
            }),
        }
    }

    /// Whether each commit, in order, changed its row.
    fn run(self, conn: &mut diesel::PgConnection) -> QueryResult<Vec<bool>> {
        let mut changed = vec![false; self.ids.len()];
        for position in self.load::<i64>(conn)? {
            if let Some(slot) = usize::try_from(position - 1)
                .ok()
                .and_then(|i| changed.get_mut(i))
            {
                *slot = true;
            }
        }
        Ok(changed)
    }
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for CommitBatch {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Binary, Bool, Nullable, SmallInt, Text, Timestamp};
        out.push_sql(
            "UPDATE uploads SET upload_offset = c.to_offset, hash_state = c.hash_state, \
             total = c.total, length_deferred = c.deferred, status = c.status, \
             checksum = c.checksum, completed_at = c.completed_at, \
             lock_token = NULL, lock_until = NULL FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.tokens)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.froms)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.tos)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Binary>, _>(&self.hash_states)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.totals)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Bool>, _>(&self.deferred)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SmallInt>, _>(&self.statuses)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.checksums)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Timestamp>>, _>(&self.completed_ats)?;
        out.push_sql(
            ") WITH ORDINALITY AS c(id, token, from_offset, to_offset, hash_state, total, \
             deferred, status, checksum, completed_at, position) \
             WHERE uploads.id = c.id AND uploads.lock_token = c.token \
             AND uploads.upload_offset = c.from_offset AND uploads.status = ",
        );
        out.push_bind_param::<SmallInt, _>(&STATUS_UPLOADING)?;
        out.push_sql(" RETURNING c.position");
        Ok(())
    }
}

impl diesel::query_builder::QueryId for CommitBatch {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for CommitBatch {
    type SqlType = diesel::sql_types::BigInt;
}

impl RunQueryDsl<diesel::PgConnection> for CommitBatch {}

fn lock_queue(queue: &Mutex<CommitQueue>) -> MutexGuard<'_, CommitQueue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_turn(turn: &Mutex<()>) -> MutexGuard<'_, ()> {
    turn.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = uploads)]
struct UploadRow {
    id: String,
    owner: Option<String>,
    filename: String,
    total: i64,
    upload_offset: i64,
    status: i16,
    checksum_algo: String,
    hash_state: Vec<u8>,
    checksum: Option<String>,
    storage_dir: String,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    completed_at: Option<NaiveDateTime>,
    lock_token: Option<String>,
    lock_until: Option<NaiveDateTime>,
    metadata: Option<String>,
    concat: Option<String>,
    length_deferred: bool,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = tokens)]
struct TokenRow {
    id: String,
    owner: String,
    token_hash: String,
    created_at: NaiveDateTime,
}

fn naive(time: DateTime<Utc>) -> NaiveDateTime {
    time.naive_utc()
}

/// Offsets are u64 in the engine and BIGINT in the database; every value
/// the engine hands over was checked against the size limit, far below
/// i64::MAX.
fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

type UploadById = diesel::dsl::Filter<uploads::table, diesel::dsl::Eq<uploads::id, String>>;
type HeldUpload<'a> =
    diesel::dsl::Filter<UploadById, diesel::dsl::Eq<uploads::lock_token, &'a str>>;

/// The row of an upload whose lease `token` holds: every change of an
/// upload goes through it, so a holder that lost its lease changes nothing.
fn held(id: Uuid, token: &str) -> HeldUpload<'_> {
    uploads::table
        .filter(uploads::id.eq(id.to_string()))
        .filter(uploads::lock_token.eq(token))
}

impl UploadRow {
    fn from_record(r: &UploadRecord) -> Self {
        UploadRow {
            id: r.id.to_string(),
            owner: r.owner.clone(),
            filename: r.filename.clone(),
            total: to_db(r.total.unwrap_or(0)),
            upload_offset: to_db(r.offset),
            status: match (r.complete, r.failed) {
                (true, _) => STATUS_COMPLETE,
                (false, true) => STATUS_FAILED,
                (false, false) => STATUS_UPLOADING,
            },
            checksum_algo: r.checksum_algo.clone(),
            hash_state: r.hash_state.clone(),
            checksum: r.checksum.clone(),
            storage_dir: r.storage_dir.clone(),
            created_at: naive(r.created_at),
            expires_at: naive(r.expires_at),
            completed_at: r.completed_at.map(naive),
            lock_token: None,
            lock_until: None,
            metadata: r.metadata.clone(),
            concat: r.concat.clone(),
            length_deferred: r.total.is_none(),
        }
    }

    fn into_record(self) -> MetaResult<UploadRecord> {
        let corrupt = |reason: &str| MetaError::CorruptRow {
            id: self.id.clone(),
            reason: reason.to_owned(),
        };
        let id = Uuid::parse_str(&self.id).map_err(|_| corrupt("id is not a UUID"))?;
        let total = u64::try_from(self.total).map_err(|_| corrupt("negative total"))?;
        let offset = u64::try_from(self.upload_offset).map_err(|_| corrupt("negative offset"))?;
        Ok(UploadRecord {
            id,
            owner: self.owner,
            filename: self.filename,
            total: (!self.length_deferred).then_some(total),
            offset,
            complete: self.status == STATUS_COMPLETE,
            checksum_algo: self.checksum_algo,
            hash_state: self.hash_state,
            checksum: self.checksum,
            storage_dir: self.storage_dir,
            created_at: self.created_at.and_utc(),
            expires_at: self.expires_at.and_utc(),
            completed_at: self.completed_at.map(|t| t.and_utc()),
            failed: self.status == STATUS_FAILED,
            metadata: self.metadata,
            concat: self.concat,
        })
    }
}

/// An UPDATE whose SQL text never varies, kept prepared. diesel prepares
/// every UPDATE anew (its SET list could vary), so PostgreSQL would parse
/// and plan the lease and the commit of every chunk again. The statements wrapped here have fixed SQL; their cache
/// key is that SQL. They are loaded (`RETURNING`), never `execute`d: that
/// path passes the query by reference, which hides the override.
struct Prepared<Q>(Q);

impl<Q> Prepared<Q> {
    /// Runs an `UPDATE … RETURNING id`: whether it changed its row.
    fn changed_row<'q>(self, conn: &mut AnyConnection) -> QueryResult<bool>
    where
        Self: diesel::query_dsl::LoadQuery<'q, AnyConnection, String>,
    {
        Ok(self.get_result::<String>(conn).optional()?.is_some())
    }
}

impl<Q> diesel::query_builder::QueryId for Prepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, DB> diesel::query_builder::QueryFragment<DB> for Prepared<Q>
where
    DB: diesel::backend::Backend,
    Q: diesel::query_builder::QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, pass: diesel::query_builder::AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, Conn> RunQueryDsl<Conn> for Prepared<Q> {}

/// A connection from `pool`.
fn checkout(pool: &Pool<Manager>) -> MetaResult<PooledConnection<Manager>> {
    pool.get().map_err(|e| MetaError::Connection(e.to_string()))
}

/// Takes the lease on `conn`, during this process's turn to write.
fn lease_on(
    mut conn: PooledConnection<Manager>,
    turn: Option<MutexGuard<'_, ()>>,
    (id, viewer, token): (Uuid, &Viewer, &str),
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> MetaResult<LeaseOutcome> {
    use diesel::sql_types::Bool;
    use diesel::IntoSql;
    let (everyone, owner) = match &viewer.sees {
        Sees::Everyone => (true, ""),
        // Owners are never empty: "" matches ownerless uploads only.
        Sees::Owner(owner) => (false, owner.as_deref().unwrap_or("")),
    };
    let (tokenless, token_hash) = match &viewer.token_hash {
        None => (true, ""),
        Some(hash) => (false, hash.as_str()),
    };
    let id = id.to_string();
    // One statement shape for every viewer (prepared once), its flags bound.
    let visible = uploads::owner
        .is_null()
        .or(uploads::owner.eq(owner))
        .or(everyone.into_sql::<Bool>())
        .and(tokenless.into_sql::<Bool>().or(diesel::dsl::exists(
            tokens::table.filter(tokens::token_hash.eq(token_hash)),
        )));
    let taken = Prepared(
        diesel::update(
            uploads::table
                .filter(uploads::id.eq(&id))
                .filter(visible)
                .filter(
                    uploads::lock_token
                        .is_null()
                        .or(uploads::lock_until.lt(naive(now))),
                ),
        )
        .set((
            uploads::lock_token.eq(token),
            uploads::lock_until.eq(naive(until)),
        ))
        // All columns, in the order of `UploadRow`'s fields (`as_returning`
        // does not work over a MultiConnection).
        .returning(uploads::all_columns),
    )
    .get_result::<UploadRow>(&mut *conn)
    .optional()?;
    drop(turn);
    if let Some(row) = taken {
        return Ok(LeaseOutcome::Acquired(Box::new(row.into_record()?)));
    }
    let exists: i64 = uploads::table
        .filter(uploads::id.eq(&id))
        .filter(visible)
        .count()
        .get_result(&mut *conn)?;
    Ok(if exists == 0 {
        LeaseOutcome::Missing
    } else {
        LeaseOutcome::Busy
    })
}

/// Creates the SQLite file, and its directory, if they do not exist.
fn create_sqlite_file(path: &Path, mode: u32) -> MetaResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |what: &Path, err: std::io::Error| {
        MetaError::Connection(format!("cannot create {}: {err}", what.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => Err(failed(path, err)),
        _ => Ok(()),
    }
}

impl DieselStore {
    /// Opens a pool of at most `connections` on the database; the SQLite
    /// file is created if needed. `durable`: commits wait until they are on
    /// the disk (not only for a crash of this process, also of the machine).
    /// `file_mode`: the mode a new SQLite file is created with (SQLite
    /// gives its journal files the same).
    pub fn open(
        url: &DatabaseUrl,
        connections: u32,
        durable: bool,
        file_mode: u32,
    ) -> MetaResult<Self> {
        if let DatabaseUrl::Sqlite(path) = url {
            create_sqlite_file(path, file_mode)?;
        }
        let pool = |size, durable| {
            Pool::builder()
                .max_size(size)
                // Connections open when needed, not all at start: several
                // processes on one PostgreSQL would exhaust its
                // `max_connections` with idle ones.
                .min_idle(Some(0))
                // No ping before every use: a connection that broke is
                // dropped when a query fails on it (`has_broken`).
                .test_on_check_out(false)
                .connection_timeout(Duration::from_secs(10))
                .build(Manager {
                    url: url.clone(),
                    durable,
                })
                .map_err(|e| {
                    MetaError::Connection(format!("cannot connect to {}: {e}", url.describe()))
                })
        };
        Ok(DieselStore {
            pool: pool(connections, durable)?,
            lease_pool: pool(4, false)?,
            lookup_pool: match url {
                DatabaseUrl::Sqlite(_) => Some(pool(8, false)?),
                DatabaseUrl::Postgres(_) => None,
            },
            url: url.clone(),
            write_turn: Mutex::new(()),
            commit_queue: Mutex::default(),
        })
    }

    /// Commits `commit` with whatever else is queued.
    fn commit_queued(&self, commit: QueuedCommit) -> MetaResult<bool> {
        let queue = &self.commit_queue;
        let ticket = {
            let mut queued = lock_queue(queue);
            let ticket = queued.next_ticket;
            queued.next_ticket += 1;
            queued.queued.push((ticket, commit));
            ticket
        };
        // On SQLite the connection first, then the turn, as every writer
        // takes them. On PostgreSQL only the turn's holder needs one: those
        // who wait for it hold none.
        let early = self.is_sqlite().then(|| checkout(&self.pool));
        let (_turn, batch) = {
            let turn = lock_turn(&self.write_turn);
            let mut queued = lock_queue(queue);
            if let Some(outcome) = queued.done.remove(&ticket) {
                return outcome.map_err(MetaError::Commit);
            }
            (turn, std::mem::take(&mut queued.queued))
        };
        let mut conn = match early.unwrap_or_else(|| checkout(&self.pool)) {
            Ok(conn) => conn,
            Err(err) => {
                // Nothing of the batch ran: the others commit it themselves.
                lock_queue(queue)
                    .queued
                    .extend(batch.into_iter().filter(|(t, _)| *t != ticket));
                return Err(err);
            }
        };
        let outcomes = match (&mut *conn, batch.as_slice()) {
            (conn, [(_, alone)]) => alone.run(conn).map(|changed| vec![changed]),
            (AnyConnection::Postgresql(pg), batch) => CommitBatch::of(batch).run(pg),
            (conn, batch) => conn.transaction(|conn| {
                batch
                    .iter()
                    .map(|(_, commit)| commit.run(conn))
                    .collect::<QueryResult<Vec<bool>>>()
            }),
        };
        let mut queued = lock_queue(queue);
        let mut mine = None;
        match outcomes {
            Ok(outcomes) => {
                for ((t, _), changed) in batch.iter().zip(outcomes) {
                    if *t == ticket {
                        mine = Some(changed);
                    } else {
                        queued.done.insert(*t, Ok(changed));
                    }
                }
            }
            Err(err) => {
                let text = err.to_string();
                for (t, _) in batch.iter().filter(|(t, _)| *t != ticket) {
                    queued.done.insert(*t, Err(text.clone()));
                }
                return Err(err.into());
            }
        }
        mine.ok_or_else(|| MetaError::Commit("the commit left its batch".into()))
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    fn is_sqlite(&self) -> bool {
        matches!(self.url, DatabaseUrl::Sqlite(_))
    }

    fn conn(&self) -> MetaResult<PooledConnection<Manager>> {
        checkout(&self.pool)
    }

    fn lookup(&self) -> MetaResult<PooledConnection<Manager>> {
        checkout(self.lookup_pool.as_ref().unwrap_or(&self.pool))
    }

    /// A connection for a write, with this process's turn to write (SQLite).
    fn writer(
        &self,
        durable: bool,
    ) -> MetaResult<(PooledConnection<Manager>, Option<MutexGuard<'_, ()>>)> {
        let pool = if durable {
            &self.pool
        } else {
            &self.lease_pool
        };
        let conn = checkout(pool)?;
        let turn = self.is_sqlite().then(|| lock_turn(&self.write_turn));
        Ok((conn, turn))
    }

    /// A connection for a durable write.
    fn durable(&self) -> MetaResult<(PooledConnection<Manager>, Option<MutexGuard<'_, ()>>)> {
        self.writer(true)
    }

    /// Applies the migrations not yet applied; returns their versions.
    pub fn migrate(&self) -> MetaResult<Vec<String>> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let migrations = match conn {
            AnyConnection::Postgresql(_) => PG_MIGRATIONS,
            AnyConnection::Sqlite(_) => SQLITE_MIGRATIONS,
        };
        let is_pg = matches!(conn, AnyConnection::Postgresql(_));
        if is_pg {
            conn.batch_execute(PG_MIGRATION_LOCK)?;
        }
        let applied = conn
            .run_pending_migrations(migrations)
            .map(|versions| versions.iter().map(|v| v.to_string()).collect())
            .map_err(|e| MetaError::Migration(e.to_string()));
        if is_pg {
            conn.batch_execute(PG_MIGRATION_UNLOCK)?;
        }
        applied
    }
}

impl MetaStore for DieselStore {
    fn insert_upload(&self, upload: &UploadRecord) -> MetaResult<()> {
        let (mut conn, _turn) = self.durable()?;
        diesel::insert_into(uploads::table)
            .values(UploadRow::from_record(upload))
            .execute(&mut *conn)?;
        Ok(())
    }

    fn get_upload(&self, id: Uuid) -> MetaResult<Option<UploadRecord>> {
        uploads::table
            .find(id.to_string())
            .select(UploadRow::as_select())
            .first(&mut *self.lookup()?)
            .optional()?
            .map(UploadRow::into_record)
            .transpose()
    }

    fn list_uploads(&self, query: &ListQuery) -> MetaResult<Vec<UploadRecord>> {
        let statuses = match query.complete {
            None => vec![STATUS_UPLOADING, STATUS_COMPLETE, STATUS_FAILED],
            Some(false) => vec![STATUS_UPLOADING, STATUS_FAILED],
            Some(true) => vec![STATUS_COMPLETE],
        };
        let mut select = uploads::table
            .select(UploadRow::as_select())
            .filter(uploads::status.eq_any(statuses))
            .order((uploads::created_at.desc(), uploads::id.desc()))
            .limit(i64::from(query.limit))
            .into_boxed();
        if let Some(owner) = &query.owner {
            select = select.filter(uploads::owner.eq(owner.clone()));
        }
        select
            .load(&mut *self.conn()?)?
            .into_iter()
            .map(UploadRow::into_record)
            .collect()
    }

    fn expired_uploads(&self, now: DateTime<Utc>) -> MetaResult<Vec<UploadRecord>> {
        uploads::table
            .select(UploadRow::as_select())
            .filter(uploads::status.ne(STATUS_COMPLETE))
            .filter(uploads::expires_at.le(naive(now)))
            .order(uploads::expires_at.asc())
            .load(&mut *self.conn()?)?
            .into_iter()
            .map(UploadRow::into_record)
            .collect()
    }

    fn known_uploads(&self, ids: &[Uuid]) -> MetaResult<Vec<Uuid>> {
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        uploads::table
            .select(uploads::id)
            .filter(uploads::id.eq_any(ids))
            .load::<String>(&mut *self.conn()?)?
            .into_iter()
            .map(|id| {
                Uuid::parse_str(&id).map_err(|_| MetaError::CorruptRow {
                    id,
                    reason: "id is not a UUID".into(),
                })
            })
            .collect()
    }

    fn try_lease(
        &self,
        id: Uuid,
        viewer: &Viewer,
        token: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> MetaResult<LeaseOutcome> {
        let (conn, turn) = self.writer(false)?;
        lease_on(conn, turn, (id, viewer, token), now, until)
    }

    fn try_lease_now(
        &self,
        id: Uuid,
        viewer: &Viewer,
        token: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Option<MetaResult<LeaseOutcome>> {
        if !self.is_sqlite() {
            return None;
        }
        // Connection first, then the turn, as every writer takes them.
        let conn = self.lease_pool.try_get()?;
        let turn = self.write_turn.try_lock().ok()?;
        Some(lease_on(conn, Some(turn), (id, viewer, token), now, until))
    }

    fn reads_in_place(&self) -> bool {
        self.is_sqlite()
    }

    fn renew_lease(&self, id: Uuid, token: &str, until: DateTime<Utc>) -> MetaResult<bool> {
        let (mut conn, _turn) = self.writer(false)?;
        Ok(Prepared(
            diesel::update(held(id, token))
                .set(uploads::lock_until.eq(naive(until)))
                .returning(uploads::id),
        )
        .changed_row(&mut conn)?)
    }

    fn release_lease(&self, id: Uuid, token: &str) -> MetaResult<()> {
        let (mut conn, _turn) = self.writer(false)?;
        Prepared(
            diesel::update(held(id, token))
                .set((
                    uploads::lock_token.eq(None::<String>),
                    uploads::lock_until.eq(None::<NaiveDateTime>),
                ))
                .returning(uploads::id),
        )
        .changed_row(&mut conn)?;
        Ok(())
    }

    fn commit_chunk(&self, id: Uuid, token: &str, commit: &ChunkCommit) -> MetaResult<bool> {
        self.commit_queued(QueuedCommit {
            id,
            token: token.to_owned(),
            commit: commit.clone(),
        })
    }

    fn mark_complete(&self, id: Uuid, token: &str, completed: &Completed) -> MetaResult<bool> {
        let (mut conn, _turn) = self.durable()?;
        let marked = diesel::update(held(id, token).filter(uploads::status.eq(STATUS_UPLOADING)))
            .set((
                uploads::status.eq(STATUS_COMPLETE),
                uploads::checksum.eq(completed.checksum.as_deref()),
                uploads::completed_at.eq(naive(completed.at)),
                uploads::lock_token.eq(None::<String>),
                uploads::lock_until.eq(None::<NaiveDateTime>),
            ))
            .execute(&mut *conn)?;
        Ok(marked == 1)
    }

    fn mark_failed(&self, id: Uuid, token: &str) -> MetaResult<bool> {
        let (mut conn, _turn) = self.durable()?;
        let marked = diesel::update(held(id, token))
            .set(uploads::status.eq(STATUS_FAILED))
            .execute(&mut *conn)?;
        Ok(marked == 1)
    }

    fn delete_upload(&self, id: Uuid, token: &str) -> MetaResult<bool> {
        let (mut conn, _turn) = self.durable()?;
        let deleted = diesel::delete(held(id, token)).execute(&mut *conn)?;
        Ok(deleted == 1)
    }

    fn insert_token(&self, token: &TokenRecord) -> MetaResult<()> {
        let (mut conn, _turn) = self.durable()?;
        diesel::insert_into(tokens::table)
            .values(TokenRow {
                id: token.id.clone(),
                owner: token.owner.clone(),
                token_hash: token.token_hash.clone(),
                created_at: naive(token.created_at),
            })
            .execute(&mut *conn)?;
        Ok(())
    }

    fn token_owner(&self, token_hash: &str) -> MetaResult<Option<String>> {
        Ok(tokens::table
            .filter(tokens::token_hash.eq(token_hash))
            .select(tokens::owner)
            .first(&mut *self.lookup()?)
            .optional()?)
    }

    fn list_tokens(&self) -> MetaResult<Vec<TokenRecord>> {
        Ok(tokens::table
            .select(TokenRow::as_select())
            .order((tokens::created_at.asc(), tokens::id.asc()))
            .load(&mut *self.conn()?)?
            .into_iter()
            .map(|row| TokenRecord {
                id: row.id,
                owner: row.owner,
                token_hash: row.token_hash,
                created_at: row.created_at.and_utc(),
            })
            .collect())
    }

    fn delete_token(&self, id: &str) -> MetaResult<bool> {
        let (mut conn, _turn) = self.durable()?;
        let deleted =
            diesel::delete(tokens::table.filter(tokens::id.eq(id))).execute(&mut *conn)?;
        Ok(deleted == 1)
    }

    fn ping(&self) -> MetaResult<()> {
        self.conn()?.batch_execute("SELECT 1")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SubsecRound;

    fn versions(backend: &str) -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        assert!(!versions("postgres").is_empty());
        assert_eq!(versions("postgres"), versions("sqlite"));
    }

    thread_local! {
        /// The UPDATEs this thread ran, and those it prepared for the cache.
        static UPDATES: std::cell::RefCell<(usize, Vec<String>)> = Default::default();
    }

    struct CountUpdates;

    impl diesel::connection::Instrumentation for CountUpdates {
        fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
            use diesel::connection::InstrumentationEvent::{CacheQuery, StartQuery};
            UPDATES.with_borrow_mut(|(ran, prepared)| match event {
                StartQuery { query, .. } if query.to_string().starts_with("UPDATE") => *ran += 1,
                CacheQuery { sql, .. } if sql.starts_with("UPDATE") => prepared.push(sql.into()),
                _ => {}
            });
        }
    }

    /// A migrated store of a test alone, removed when dropped.
    struct TestStore {
        store: DieselStore,
        place: TestPlace,
    }

    enum TestPlace {
        /// The SQLite store's directory.
        Directory(PathBuf),
        /// The PostgreSQL database's name.
        Database(String),
    }

    impl std::ops::Deref for TestStore {
        type Target = DieselStore;
        fn deref(&self) -> &DieselStore {
            &self.store
        }
    }

    impl Drop for TestStore {
        fn drop(&mut self) {
            match &self.place {
                TestPlace::Directory(dir) => drop(std::fs::remove_dir_all(dir)),
                TestPlace::Database(database) => {
                    let dropped =
                        pg_admin().batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"));
                    dropped.unwrap();
                }
            }
        }
    }

    /// The local PostgreSQL (trust auth), as the integration tests use it.
    fn pg_url(database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{database}?sslmode=disable")
    }

    fn pg_admin() -> diesel::PgConnection {
        let url = pg_url("postgres");
        diesel::PgConnection::establish(&url)
            .unwrap_or_else(|e| panic!("PostgreSQL is required at {url}: {e}"))
    }

    /// A new SQLite store with `connections` in its pool, in a directory
    /// of its own.
    fn sqlite_store(connections: u32) -> TestStore {
        let dir = std::env::temp_dir().join(format!("chunkd-meta-{}", Uuid::new_v4()));
        let url = DatabaseUrl::Sqlite(dir.join("db.sqlite3"));
        let store = DieselStore::open(&url, connections, true, 0o600).unwrap();
        store.migrate().unwrap();
        TestStore {
            store,
            place: TestPlace::Directory(dir),
        }
    }

    /// A new store on a PostgreSQL database of its own.
    fn pg_store(connections: u32) -> TestStore {
        let database = format!("chunkd_unit_{}", Uuid::new_v4().simple());
        pg_admin()
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .unwrap();
        let url = DatabaseUrl::Postgres(pg_url(&database));
        let store = TestStore {
            store: DieselStore::open(&url, connections, true, 0o600).unwrap(),
            place: TestPlace::Database(database),
        };
        store.migrate().unwrap();
        store
    }

    /// A new, empty upload of 30 bytes, recorded in `store`.
    fn insert_upload(store: &DieselStore, now: DateTime<Utc>) -> UploadRecord {
        let upload = UploadRecord {
            id: Uuid::new_v4(),
            owner: None,
            filename: "f".into(),
            total: Some(30),
            offset: 0,
            complete: false,
            checksum_algo: "md5".into(),
            hash_state: Vec::new(),
            checksum: None,
            storage_dir: "d".into(),
            created_at: now,
            expires_at: now + chrono::Duration::days(1),
            completed_at: None,
            failed: false,
            metadata: None,
            concat: None,
        };
        store.insert_upload(&upload).unwrap();
        upload
    }

    /// The commit of bytes `from..to` of an upload of 30 bytes.
    fn chunk(from: u64, to: u64, hash_state: &[u8]) -> ChunkCommit {
        ChunkCommit {
            from,
            to,
            hash_state: hash_state.to_vec(),
            total: Some(30),
            completed: None,
        }
    }

    /// A lease for a token holder is taken only while the token exists.
    #[test]
    fn a_lease_needs_the_callers_token() {
        let store = sqlite_store(2);
        let now = Utc::now();
        let until = now + chrono::Duration::seconds(10);
        let upload = insert_upload(&store, now);
        let (record, _) = crate::tokens::create_token(&*store, "alice").unwrap();
        let holder = |token_hash: &str| Viewer {
            sees: Sees::Owner(Some("alice".into())),
            token_hash: Some(token_hash.into()),
        };
        let lease = |viewer: &Viewer, token: &str| {
            store
                .try_lease(upload.id, viewer, token, now, until)
                .unwrap()
        };
        assert!(matches!(
            lease(&holder(&record.token_hash), "a"),
            LeaseOutcome::Acquired(_)
        ));
        // Held: busy for a valid token, missing for any other.
        assert_eq!(lease(&holder(&record.token_hash), "b"), LeaseOutcome::Busy);
        assert_eq!(lease(&holder("0f"), "b"), LeaseOutcome::Missing);
        store.release_lease(upload.id, "a").unwrap();
        assert_eq!(lease(&holder("0f"), "b"), LeaseOutcome::Missing);
        assert!(store.delete_token(&record.id).unwrap());
        assert_eq!(
            lease(&holder(&record.token_hash), "b"),
            LeaseOutcome::Missing
        );
        assert!(matches!(
            lease(&Viewer::SERVER, "b"),
            LeaseOutcome::Acquired(_)
        ));
    }

    /// The lease, its renewal and release and the commit of a chunk run
    /// from statements prepared once per connection, not once per chunk.
    #[test]
    fn chunk_updates_stay_prepared() {
        diesel::connection::set_default_instrumentation(|| Some(Box::new(CountUpdates))).unwrap();
        let store = sqlite_store(2);
        let now = Utc::now();
        let upload = insert_upload(&store, now);
        let until = now + chrono::Duration::seconds(10);
        for n in 0..3u64 {
            for (token, commits) in [("released", false), ("committed", true)] {
                let lease = store.try_lease(upload.id, &Viewer::SERVER, token, now, until);
                assert!(matches!(lease, Ok(LeaseOutcome::Acquired(_))));
                assert!(store.renew_lease(upload.id, token, until).unwrap());
                if commits {
                    let (from, to) = (n * 10, n * 10 + 10);
                    assert!(store
                        .commit_chunk(upload.id, token, &chunk(from, to, b"s"))
                        .unwrap());
                } else {
                    store.release_lease(upload.id, token).unwrap();
                }
            }
        }
        assert_eq!(store.get_upload(upload.id).unwrap().unwrap().offset, 30);
        let (ran, mut prepared) = UPDATES.with_borrow(|updates| updates.clone());
        assert_eq!(ran, 3 * 6);
        // Four statements, each prepared once, on the one connection of its
        // pool that this thread used.
        assert_eq!(prepared.len(), 4, "{prepared:#?}");
        prepared.sort();
        prepared.dedup();
        assert_eq!(prepared.len(), 4, "{prepared:#?}");
    }

    /// Commits of many uploads at once, however they are grouped into
    /// batches, each change their own row as if alone: a commit whose
    /// lease is gone or whose offset moved changes nothing and fails alone,
    /// and one that completes its upload completes it and no other.
    fn concurrent_commits_each_change_their_own_row(store: &TestStore) {
        let now = Utc::now();
        let until = now + chrono::Duration::seconds(10);
        let uploads: Vec<UploadRecord> = (0..24).map(|_| insert_upload(store, now)).collect();
        for (n, upload) in uploads.iter().enumerate() {
            let token = format!("lease{n}");
            let lease = store.try_lease(upload.id, &Viewer::SERVER, &token, now, until);
            assert!(matches!(lease, Ok(LeaseOutcome::Acquired(_))));
        }
        // Every third commit holds no lease, every fifth (of the others)
        // starts at an offset the row is not at.
        let lost = |n: usize| n.is_multiple_of(3);
        let moved = |n: usize| n.is_multiple_of(5);
        let fails = |n: usize| lost(n) || moved(n);
        // Every fourth commit completes its upload, with a checksum when
        // it is even.
        let completes = |n: usize| n.is_multiple_of(4);
        let checksum = |n: usize| n.is_multiple_of(8).then(|| format!("sum{n}"));
        let at = now.trunc_subsecs(6);
        // All commits queue while the turn is held here, so that one batch
        // carries them all.
        let turn = lock_turn(&store.write_turn);
        let committed: Vec<bool> = std::thread::scope(|scope| {
            let commits: Vec<_> = uploads
                .iter()
                .enumerate()
                .map(|(n, upload)| {
                    let store = &store;
                    scope.spawn(move || {
                        let token = if lost(n) {
                            "lost".to_owned()
                        } else {
                            format!("lease{n}")
                        };
                        let from = if moved(n) { 10 } else { 0 };
                        let mut commit = chunk(from, from + 10, &[n as u8; 3]);
                        commit.completed = completes(n).then(|| Completed {
                            checksum: checksum(n),
                            at,
                        });
                        store.commit_chunk(upload.id, &token, &commit).unwrap()
                    })
                })
                .collect();
            while lock_queue(&store.commit_queue).queued.len() < uploads.len() {
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(turn);
            commits.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for (n, (upload, committed)) in uploads.iter().zip(committed).enumerate() {
            let row = store.get_upload(upload.id).unwrap().unwrap();
            assert_eq!(committed, !fails(n), "commit {n}");
            if fails(n) {
                assert_eq!((row.offset, row.hash_state), (0, Vec::new()), "{n}");
                assert!(!row.complete, "{n}");
                continue;
            }
            assert_eq!((row.offset, row.hash_state), (10, vec![n as u8; 3]), "{n}");
            assert_eq!(row.total, Some(30), "{n}");
            if completes(n) {
                assert!(row.complete, "{n}");
                assert_eq!(row.checksum, checksum(n), "{n}");
                assert_eq!(row.completed_at, Some(at), "{n}");
            } else {
                assert_eq!(
                    (row.complete, row.checksum, row.completed_at),
                    (false, None, None)
                );
            }
        }
    }

    #[test]
    fn concurrent_sqlite_commits_each_change_their_own_row() {
        concurrent_commits_each_change_their_own_row(&sqlite_store(4));
    }

    #[test]
    fn concurrent_postgres_commits_each_change_their_own_row() {
        concurrent_commits_each_change_their_own_row(&pg_store(4));
    }

    /// The batch's SQL never varies with its size: it stays prepared.
    #[test]
    fn a_batch_of_commits_stays_prepared() {
        use diesel::query_builder::QueryFragment;
        let commit = |n| QueuedCommit {
            id: Uuid::new_v4(),
            token: format!("t{n}"),
            commit: chunk(n, n + 1, &[1, 2]),
        };
        let sql = |n| {
            let batch = CommitBatch::of(&(0..n).map(|t| (t, commit(t))).collect::<Vec<_>>());
            assert!(batch.is_safe_to_cache_prepared(&diesel::pg::Pg).unwrap());
            diesel::debug_query::<diesel::pg::Pg, _>(&batch)
                .to_string()
                .split(" -- binds")
                .next()
                .map(str::to_owned)
        };
        assert_eq!(sql(2), sql(7));
    }

    #[test]
    fn database_urls() {
        let data = Path::new("/data");
        assert_eq!(
            DatabaseUrl::resolve(None, data),
            Ok(DatabaseUrl::Sqlite(PathBuf::from("/data/chunkd.sqlite3")))
        );
        assert_eq!(
            DatabaseUrl::resolve(Some("postgres://u:p@db/chunkd"), data),
            Ok(DatabaseUrl::Postgres("postgres://u:p@db/chunkd".into()))
        );
        assert_eq!(
            DatabaseUrl::resolve(Some("sqlite:///tmp/x.db"), data),
            Ok(DatabaseUrl::Sqlite(PathBuf::from("/tmp/x.db")))
        );
        assert!(DatabaseUrl::resolve(Some("mysql://db"), data).is_err());
        let described = DatabaseUrl::Postgres("postgres://u:secret@db:5432/c".into()).describe();
        assert!(!described.contains("secret"), "{described}");
    }
}
