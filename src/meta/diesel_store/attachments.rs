//! The statements of session attachments. Each change is one transaction:
//! an attachment and the upload it stands for come and go together.

use super::rows::naive;
use super::{insert_within_limits, AnyConnection, DieselStore};
use crate::meta::schema::{attachments, uploads};
use crate::meta::{
    AttachmentKey, AttachmentRecord, Attachments, MetaError, MetaResult, OwnerLimits, UploadRecord,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

type Row = (String, String, String, String, String, NaiveDateTime, i64);

/// What an attachment's row is read as: its own columns, and its upload's
/// size.
const COLUMNS: (
    attachments::holder,
    attachments::bundle,
    attachments::name,
    attachments::upload_id,
    attachments::media_type,
    attachments::created_at,
    uploads::upload_offset,
) = (
    attachments::holder,
    attachments::bundle,
    attachments::name,
    attachments::upload_id,
    attachments::media_type,
    attachments::created_at,
    uploads::upload_offset,
);

fn record(row: Row) -> MetaResult<AttachmentRecord> {
    let (holder, bundle, name, upload_id, media_type, created_at, size) = row;
    let corrupt = |reason: &str| MetaError::CorruptRow {
        id: upload_id.clone(),
        reason: format!("attachment: {reason}"),
    };
    Ok(AttachmentRecord {
        upload_id: Uuid::parse_str(&upload_id).map_err(|_| corrupt("id is not a UUID"))?,
        size: u64::try_from(size).map_err(|_| corrupt("negative size"))?,
        key: AttachmentKey {
            holder,
            bundle,
            name,
        },
        media_type,
        created_at: created_at.and_utc(),
    })
}

fn parse_ids(ids: Vec<String>) -> MetaResult<Vec<Uuid>> {
    ids.into_iter()
        .map(|id| {
            Uuid::parse_str(&id).map_err(|_| MetaError::CorruptRow {
                id,
                reason: "attachment: id is not a UUID".into(),
            })
        })
        .collect()
}

/// Names `upload_id` `key`; the upload named so before goes (its id).
fn name_upload(
    conn: &mut AnyConnection,
    key: &AttachmentKey,
    upload_id: Uuid,
    media_type: &str,
    at: DateTime<Utc>,
) -> MetaResult<Option<Uuid>> {
    let this = attachments::table.find((&key.holder, &key.bundle, &key.name));
    let before: Option<String> = this.select(attachments::upload_id).first(conn).optional()?;
    let id = upload_id.to_string();
    let replaced = before.filter(|before| *before != id);
    if let Some(before) = &replaced {
        diesel::delete(uploads::table.find(before)).execute(conn)?;
    }
    diesel::delete(this).execute(conn)?;
    diesel::insert_into(attachments::table)
        .values((
            attachments::holder.eq(&key.holder),
            attachments::bundle.eq(&key.bundle),
            attachments::name.eq(&key.name),
            attachments::upload_id.eq(&id),
            attachments::media_type.eq(media_type),
            attachments::created_at.eq(naive(at)),
        ))
        .execute(conn)?;
    Ok(parse_ids(replaced.into_iter().collect())?.pop())
}

impl Attachments for DieselStore {
    fn insert_attachment(
        &self,
        upload: &UploadRecord,
        limits: &OwnerLimits,
        key: &AttachmentKey,
        media_type: &str,
    ) -> MetaResult<Option<Uuid>> {
        let (mut conn, _turn) = self.durable()?;
        insert_within_limits(&mut conn, upload, limits, |conn| {
            name_upload(conn, key, upload.id, media_type, upload.created_at)
        })
    }

    fn attach_upload(
        &self,
        key: &AttachmentKey,
        upload_id: Uuid,
        media_type: &str,
        at: DateTime<Utc>,
    ) -> MetaResult<Option<Uuid>> {
        let (mut conn, _turn) = self.durable()?;
        let conn: &mut AnyConnection = &mut conn;
        conn.transaction(|conn| name_upload(conn, key, upload_id, media_type, at))
    }

    fn list_attachments(&self, holder: &str, bundle: &str) -> MetaResult<Vec<AttachmentRecord>> {
        let rows: Vec<Row> = attachments::table
            .inner_join(uploads::table.on(uploads::id.eq(attachments::upload_id)))
            .filter(attachments::holder.eq(holder))
            .filter(attachments::bundle.eq(bundle))
            .order(attachments::name)
            .select(COLUMNS)
            .load(&mut *self.lookup()?)?;
        rows.into_iter().map(record).collect()
    }

    fn get_attachment(&self, key: &AttachmentKey) -> MetaResult<Option<AttachmentRecord>> {
        let row: Option<Row> = attachments::table
            .inner_join(uploads::table.on(uploads::id.eq(attachments::upload_id)))
            .filter(attachments::holder.eq(&key.holder))
            .filter(attachments::bundle.eq(&key.bundle))
            .filter(attachments::name.eq(&key.name))
            .select(COLUMNS)
            .first(&mut *self.lookup()?)
            .optional()?;
        row.map(record).transpose()
    }

    fn remove_attachments(
        &self,
        holder: &str,
        bundle: &str,
        name: Option<&str>,
    ) -> MetaResult<Vec<Uuid>> {
        let (mut conn, _turn) = self.durable()?;
        let conn: &mut AnyConnection = &mut conn;
        conn.transaction(|conn| {
            let mut chosen = attachments::table
                .filter(attachments::holder.eq(holder))
                .filter(attachments::bundle.eq(bundle))
                .into_boxed();
            if let Some(name) = name {
                chosen = chosen.filter(attachments::name.eq(name));
            }
            let ids: Vec<String> = chosen.select(attachments::upload_id).load(conn)?;
            diesel::delete(uploads::table.filter(uploads::id.eq_any(&ids))).execute(conn)?;
            diesel::delete(
                attachments::table
                    .filter(attachments::holder.eq(holder))
                    .filter(attachments::bundle.eq(bundle))
                    .filter(attachments::upload_id.eq_any(&ids)),
            )
            .execute(conn)?;
            parse_ids(ids)
        })
    }

    fn remove_attachments_before(&self, cutoff: DateTime<Utc>) -> MetaResult<Vec<Uuid>> {
        let (mut conn, _turn) = self.durable()?;
        let conn: &mut AnyConnection = &mut conn;
        let old = attachments::created_at.lt(naive(cutoff));
        conn.transaction(|conn| {
            let ids: Vec<String> = attachments::table
                .filter(old)
                .select(attachments::upload_id)
                .load(conn)?;
            diesel::delete(uploads::table.filter(uploads::id.eq_any(&ids))).execute(conn)?;
            diesel::delete(attachments::table.filter(old)).execute(conn)?;
            parse_ids(ids)
        })
    }
}
