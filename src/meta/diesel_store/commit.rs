//! Group commit of chunks: the commits of concurrent uploads that queue
//! while one is under way go as one transaction (SQLite) or one statement
//! (PostgreSQL).

use super::prepared::Prepared;
use super::rows::{held, naive, to_db};
use super::{checkout, AnyConnection, DieselStore, STATUS_COMPLETE, STATUS_UPLOADING};
use crate::meta::schema::uploads;
use crate::meta::{ChunkCommit, MetaError, MetaResult};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use uuid::Uuid;

/// A chunk's commit, for the upload whose lease `token` holds.
pub(super) struct QueuedCommit {
    pub(super) id: Uuid,
    pub(super) token: String,
    pub(super) commit: ChunkCommit,
}

/// The status an upload has once `commit` is in.
pub(super) fn status_after(commit: &ChunkCommit) -> i16 {
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
pub(super) struct CommitQueue {
    pub(super) next_ticket: u64,
    pub(super) queued: Vec<(u64, QueuedCommit)>,
    /// Outcomes of commits another request's batch carried.
    pub(super) done: HashMap<u64, Result<bool, String>>,
}

/// The commits of a batch in one UPDATE (PostgreSQL): each field of theirs
/// bound as one array, the arrays unnested into rows. It returns the
/// position (from 1) of each commit that changed its row. Its SQL never
/// varies, so it stays prepared.
pub(super) struct CommitBatch {
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
    pub(super) fn of(commits: &[(u64, QueuedCommit)]) -> Self {
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

pub(super) fn lock_queue(queue: &Mutex<CommitQueue>) -> MutexGuard<'_, CommitQueue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn lock_turn(turn: &Mutex<()>) -> MutexGuard<'_, ()> {
    turn.lock().unwrap_or_else(|e| e.into_inner())
}

impl DieselStore {
    /// Commits `commit` with whatever else is queued.
    pub(super) fn commit_queued(&self, commit: QueuedCommit) -> MetaResult<bool> {
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
}
