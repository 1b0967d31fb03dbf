//! What an owner holds, summed in the database: the declared size of each
//! upload (its bytes so far while its length is deferred), and how many
//! are in progress.

use super::{AnyConnection, STATUS_UPLOADING};
use crate::meta::schema::uploads;
use crate::meta::OwnerUsage;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

/// The three sums, as SQL that PostgreSQL and SQLite both take (SUM of a
/// BIGINT is NUMERIC in PostgreSQL, hence the casts).
fn sums() -> (
    diesel::expression::SqlLiteral<BigInt>,
    diesel::expression::SqlLiteral<BigInt>,
    diesel::expression::SqlLiteral<BigInt>,
) {
    (
        sql::<BigInt>(
            "CAST(COALESCE(SUM(CASE WHEN length_deferred THEN upload_offset ELSE total END), 0) AS BIGINT)",
        ),
        sql::<BigInt>("COUNT(*)"),
        sql::<BigInt>(&format!(
            "CAST(COALESCE(SUM(CASE WHEN status = {STATUS_UPLOADING} THEN 1 ELSE 0 END), 0) AS BIGINT)"
        )),
    )
}

fn usage(owner: Option<String>, (bytes, uploads, in_progress): (i64, i64, i64)) -> OwnerUsage {
    OwnerUsage {
        owner,
        bytes: bytes.unsigned_abs(),
        uploads: uploads.unsigned_abs(),
        uploads_in_progress: in_progress.unsigned_abs(),
    }
}

pub fn of_owner(conn: &mut AnyConnection, owner: Option<&str>) -> QueryResult<OwnerUsage> {
    let sums = match owner {
        Some(name) => uploads::table
            .filter(uploads::owner.eq(name))
            .select(sums())
            .get_result(conn)?,
        None => uploads::table
            .filter(uploads::owner.is_null())
            .select(sums())
            .get_result(conn)?,
    };
    Ok(usage(owner.map(str::to_owned), sums))
}

pub fn by_owner(conn: &mut AnyConnection) -> QueryResult<Vec<OwnerUsage>> {
    let (bytes, count, in_progress) = sums();
    let rows: Vec<(Option<String>, i64, i64, i64)> = uploads::table
        .group_by(uploads::owner)
        .select((uploads::owner, bytes, count, in_progress))
        .order(uploads::owner)
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(owner, bytes, count, in_progress)| usage(owner, (bytes, count, in_progress)))
        .collect())
}
