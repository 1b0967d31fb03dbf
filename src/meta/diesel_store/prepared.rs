//! Statements whose SQL never varies, kept prepared.

use super::AnyConnection;
use diesel::prelude::*;

/// An UPDATE whose SQL text never varies, kept prepared. diesel prepares
/// every UPDATE anew (its SET list could vary), so PostgreSQL would parse
/// and plan the lease and the commit of every chunk again. The statements wrapped here have fixed SQL; their cache
/// key is that SQL. They are loaded (`RETURNING`), never `execute`d: that
/// path passes the query by reference, which hides the override.
pub(super) struct Prepared<Q>(pub(super) Q);

impl<Q> Prepared<Q> {
    /// Runs an `UPDATE … RETURNING id`: whether it changed its row.
    pub(super) fn changed_row<'q>(self, conn: &mut AnyConnection) -> QueryResult<bool>
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
