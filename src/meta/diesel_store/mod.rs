//! The metadata store over diesel: one code path for PostgreSQL and SQLite
//! through `#[derive(MultiConnection)]`, pooled with r2d2. Here: the
//! connections, the pools and the trait's statements; `url` (which
//! database), `rows` (rows and records), `commit` (group commit of
//! chunks), `prepared` (statements kept prepared), `tests`. The trait's
//! statements stay together here, one short method each, which is most of
//! its length.

use super::schema::{tokens, uploads};
use super::{
    ChunkCommit, Completed, LeaseOutcome, ListQuery, MetaError, MetaResult, MetaStore, OwnerLimits,
    OwnerUsage, Sees, TokenRecord, UploadRecord, Viewer,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use uuid::Uuid;

mod attachments;
mod commit;
mod events;
mod prepared;
mod rows;
mod url;

pub use url::DatabaseUrl;

use commit::{lock_turn, CommitQueue, QueuedCommit};
use prepared::Prepared;
mod usage;
use rows::{held, naive, to_db, TokenRow, UploadRow};

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
            // What an earlier holder reported is not this one's.
            uploads::received.eq(None::<i64>),
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

fn insert_row(conn: &mut AnyConnection, upload: &UploadRecord) -> MetaResult<()> {
    diesel::insert_into(uploads::table)
        .values(UploadRow::from_record(upload))
        .execute(conn)?;
    Ok(())
}

/// Inserts `upload` in a transaction that checks its owner's limits first
/// and runs `then` after.
fn insert_within_limits<T>(
    conn: &mut AnyConnection,
    upload: &UploadRecord,
    limits: &OwnerLimits,
    then: impl FnOnce(&mut AnyConnection) -> MetaResult<T>,
) -> MetaResult<T> {
    let owner = upload.owner.as_deref();
    conn.transaction(|conn| {
        if !limits.is_unlimited() {
            // Insertions of one owner queue here, so that each sees what
            // the one before it inserted. SQLite has one writer at a time.
            if let AnyConnection::Postgresql(pg) = conn {
                diesel::sql_query("SELECT pg_advisory_xact_lock(727276, hashtext($1))")
                    .bind::<diesel::sql_types::Text, _>(owner.unwrap_or(""))
                    .execute(pg)?;
            }
            let usage = usage::of_owner(conn, owner)?;
            let wanted = upload.total.unwrap_or(upload.offset);
            limits
                .check(&usage, wanted, true)
                .map_err(MetaError::OverLimit)?;
        }
        insert_row(conn, upload)?;
        then(conn)
    })
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
    fn insert_upload(&self, upload: &UploadRecord, limits: &OwnerLimits) -> MetaResult<()> {
        let (mut conn, _turn) = self.durable()?;
        if limits.is_unlimited() {
            insert_row(&mut conn, upload)?;
            return Ok(());
        }
        insert_within_limits(&mut conn, upload, limits, |_| Ok(()))
    }

    fn owner_usage(&self, owner: Option<&str>) -> MetaResult<OwnerUsage> {
        Ok(usage::of_owner(&mut *self.lookup()?, owner)?)
    }

    fn usage_by_owner(&self) -> MetaResult<Vec<OwnerUsage>> {
        Ok(usage::by_owner(&mut *self.lookup()?)?)
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

    fn count_in_progress(&self) -> MetaResult<u64> {
        let count: i64 = uploads::table
            .filter(uploads::status.eq(STATUS_UPLOADING))
            .count()
            .get_result(&mut *self.lookup()?)?;
        Ok(count.unsigned_abs())
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

    fn renew_lease(
        &self,
        id: Uuid,
        token: &str,
        until: DateTime<Utc>,
        received: Option<u64>,
    ) -> MetaResult<bool> {
        let (mut conn, _turn) = self.writer(false)?;
        Ok(Prepared(
            diesel::update(held(id, token))
                .set((
                    uploads::lock_until.eq(naive(until)),
                    uploads::received.eq(received.map(to_db)),
                ))
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

    fn rename_upload(&self, id: Uuid, token: &str, filename: &str) -> MetaResult<bool> {
        let (mut conn, _turn) = self.durable()?;
        let renamed = diesel::update(held(id, token))
            .set(uploads::filename.eq(filename))
            .execute(&mut *conn)?;
        Ok(renamed == 1)
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
mod tests;
