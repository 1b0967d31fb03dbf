//! The outbox's statements. Its rows are written by triggers (see the
//! migration `events`) in the transaction of the change they tell of;
//! here they are claimed, delivered and removed. None of these commits
//! waits for the disk: a claim or a removal lost in a crash means one
//! more delivery, which the receiver's idempotency key absorbs.

use super::rows::naive;
use super::DieselStore;
use crate::meta::schema::upload_events as events;
use crate::meta::{MetaError, MetaResult, Outbox, UploadEvent};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::dsl::{exists, not};
use diesel::prelude::*;
use uuid::Uuid;

/// An event's row, as the deliverer reads it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = events)]
struct EventRow {
    seq: i64,
    upload_id: String,
    kind: String,
    owner: Option<String>,
    filename: String,
    total: Option<i64>,
    upload_offset: i64,
    checksum: Option<String>,
    metadata: Option<String>,
    happened_at: NaiveDateTime,
    attempts: i32,
}

impl EventRow {
    fn into_event(self) -> MetaResult<UploadEvent> {
        let corrupt = |reason: &str| MetaError::CorruptRow {
            id: self.upload_id.clone(),
            reason: format!("event {}: {reason}", self.seq),
        };
        Ok(UploadEvent {
            seq: self.seq,
            upload_id: Uuid::parse_str(&self.upload_id).map_err(|_| corrupt("id is not a UUID"))?,
            total: self
                .total
                .map(u64::try_from)
                .transpose()
                .map_err(|_| corrupt("negative total"))?,
            offset: u64::try_from(self.upload_offset).map_err(|_| corrupt("negative offset"))?,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            kind: self.kind,
            owner: self.owner,
            filename: self.filename,
            checksum: self.checksum,
            metadata: self.metadata,
            happened_at: self.happened_at.and_utc(),
        })
    }
}

impl Outbox for DieselStore {
    fn claim_events(
        &self,
        token: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> MetaResult<Vec<UploadEvent>> {
        let (mut conn, _turn) = self.writer(false)?;
        let now = naive(now);
        let unclaimed = || {
            events::claimed_until
                .is_null()
                .or(events::claimed_until.le(now))
        };
        let earlier = diesel::alias!(events as earlier);
        let heads = events::table
            .select(events::seq)
            .filter(events::next_attempt_at.le(now))
            .filter(unclaimed())
            .filter(not(exists(
                earlier
                    .filter(earlier.field(events::upload_id).eq(events::upload_id))
                    .filter(earlier.field(events::seq).lt(events::seq)),
            )))
            .order(events::seq)
            .limit(i64::from(limit))
            .load::<i64>(&mut *conn)?;
        // Whether each is still unclaimed is checked again by the claim
        // itself, on the row: of two processes that picked the same events,
        // the second claims none.
        diesel::update(
            events::table
                .filter(events::seq.eq_any(heads))
                .filter(unclaimed()),
        )
        .set((
            events::claim_token.eq(token),
            events::claimed_until.eq(naive(until)),
        ))
        .execute(&mut *conn)?;
        // Each claim's token is new: these are the rows it took.
        events::table
            .filter(events::claim_token.eq(token))
            .select(EventRow::as_select())
            .order(events::seq)
            .load(&mut *conn)?
            .into_iter()
            .map(EventRow::into_event)
            .collect()
    }

    fn remove_event(&self, seq: i64, token: &str) -> MetaResult<()> {
        let (mut conn, _turn) = self.writer(false)?;
        diesel::delete(
            events::table
                .filter(events::seq.eq(seq))
                .filter(events::claim_token.eq(token)),
        )
        .execute(&mut *conn)?;
        Ok(())
    }

    fn retry_event(&self, seq: i64, token: &str, next_attempt_at: DateTime<Utc>) -> MetaResult<()> {
        let (mut conn, _turn) = self.writer(false)?;
        diesel::update(
            events::table
                .filter(events::seq.eq(seq))
                .filter(events::claim_token.eq(token)),
        )
        .set((
            events::attempts.eq(events::attempts + 1),
            events::next_attempt_at.eq(naive(next_attempt_at)),
            events::claim_token.eq(None::<String>),
            events::claimed_until.eq(None::<NaiveDateTime>),
        ))
        .execute(&mut *conn)?;
        Ok(())
    }

    fn remove_events_before(&self, before: DateTime<Utc>) -> MetaResult<u64> {
        // The sweep's own pool: a process keeps no connection of its own
        // for this chore of each sweep.
        let (mut conn, _turn) = self.durable()?;
        let removed = diesel::delete(events::table.filter(events::happened_at.lt(naive(before))))
            .execute(&mut *conn)?;
        Ok(removed as u64)
    }
}
