//! The store against real databases: SQLite files and PostgreSQL databases
//! of their own.

use super::commit::{lock_queue, CommitBatch};
use super::*;
use crate::meta::{Outbox, UploadEvent};
use chrono::SubsecRound;
use std::path::PathBuf;

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
        received: None,
    };
    store
        .insert_upload(&upload, &OwnerLimits::default())
        .unwrap();
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
            assert!(store
                .renew_lease(upload.id, token, until, Some(n * 10 + 5))
                .unwrap());
            let seen = store.get_upload(upload.id).unwrap().unwrap();
            assert_eq!(seen.received, Some(n * 10 + 5));
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
    let done = store.get_upload(upload.id).unwrap().unwrap();
    // What the last holder reported shows only while its lease runs.
    assert_eq!((done.offset, done.received), (30, None));
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

/// Every way an upload finishes or goes leaves its event, written by the
/// statement's own transaction; the outbox hands out each upload's oldest
/// event only, to one claimer at a time.
fn the_outbox_tells_each_change_in_order(store: &TestStore) {
    let now = Utc::now();
    let until = now + chrono::Duration::seconds(10);
    let leased = |upload: &UploadRecord| {
        let outcome = store
            .try_lease(upload.id, &Viewer::SERVER, "t", now, until)
            .unwrap();
        assert!(matches!(outcome, LeaseOutcome::Acquired(_)));
    };
    let completed = Completed {
        checksum: Some("c".into()),
        at: now,
    };
    let done_by_chunk = insert_upload(store, now);
    leased(&done_by_chunk);
    let last = ChunkCommit {
        completed: Some(completed.clone()),
        ..chunk(0, 30, b"h")
    };
    assert!(store.commit_chunk(done_by_chunk.id, "t", &last).unwrap());
    leased(&done_by_chunk);
    assert!(store.delete_upload(done_by_chunk.id, "t").unwrap());
    let aborted = insert_upload(store, now);
    leased(&aborted);
    assert!(store.delete_upload(aborted.id, "t").unwrap());
    let expired = UploadRecord {
        id: Uuid::new_v4(),
        expires_at: now - chrono::Duration::minutes(1),
        ..aborted.clone()
    };
    store
        .insert_upload(&expired, &OwnerLimits::default())
        .unwrap();
    leased(&expired);
    assert!(store.delete_upload(expired.id, "t").unwrap());
    let failed = insert_upload(store, now);
    leased(&failed);
    assert!(store.mark_failed(failed.id, "t").unwrap());
    let done_by_request = insert_upload(store, now);
    leased(&done_by_request);
    assert!(store
        .mark_complete(done_by_request.id, "t", &completed)
        .unwrap());

    let later = Utc::now() + chrono::Duration::seconds(1);
    let claim_until = later + chrono::Duration::seconds(60);
    let claim = |token: &str, at: DateTime<Utc>| {
        let events = store.claim_events(token, at, claim_until, 100).unwrap();
        let mut kinds: Vec<(Uuid, String)> = events
            .iter()
            .map(|event| (event.upload_id, event.kind.clone()))
            .collect();
        kinds.sort();
        (kinds, events)
    };
    let mut heads = vec![
        (done_by_chunk.id, "completed".to_owned()),
        (aborted.id, "aborted".to_owned()),
        (expired.id, "expired".to_owned()),
        (failed.id, "failed".to_owned()),
        (done_by_request.id, "completed".to_owned()),
    ];
    heads.sort();
    let (kinds, first) = claim("a", later);
    assert_eq!(kinds, heads);
    assert_eq!(claim("b", later).0, []);
    let of = |events: &[UploadEvent], id: Uuid| {
        events
            .iter()
            .find(|event| event.upload_id == id)
            .cloned()
            .unwrap()
    };
    let chunked = of(&first, done_by_chunk.id);
    assert_eq!(
        (chunked.offset, chunked.total, chunked.checksum.as_deref()),
        (30, Some(30), Some("c"))
    );
    // Delivered: the upload's next event comes up, and nothing else.
    store.remove_event(chunked.seq, "a").unwrap();
    let retry_at = later + chrono::Duration::seconds(30);
    store
        .retry_event(of(&first, aborted.id).seq, "a", retry_at)
        .unwrap();
    // A removal by someone who does not hold the claim changes nothing.
    store.remove_event(of(&first, failed.id).seq, "b").unwrap();
    assert_eq!(
        claim("b", later).0,
        [(done_by_chunk.id, "deleted".to_owned())]
    );
    // Once the claims ran out and the retry is due, every upload's oldest
    // event left comes up again.
    let (kinds, again) = claim("c", claim_until + chrono::Duration::seconds(1));
    let mut expected: Vec<(Uuid, String)> = heads
        .into_iter()
        .map(|(id, kind)| match id == done_by_chunk.id {
            true => (id, "deleted".to_owned()),
            false => (id, kind),
        })
        .collect();
    expected.sort();
    assert_eq!(kinds, expected);
    assert_eq!(of(&again, aborted.id).attempts, 1);
    assert_eq!(store.remove_events_before(later).unwrap(), 5);
    assert_eq!(claim("d", later + chrono::Duration::days(1)).0, []);
}

#[test]
fn the_sqlite_outbox_tells_each_change_in_order() {
    the_outbox_tells_each_change_in_order(&sqlite_store(2));
}

#[test]
fn the_postgres_outbox_tells_each_change_in_order() {
    the_outbox_tells_each_change_in_order(&pg_store(2));
}
