//! How the client's statements reach PostgreSQL: on connections of its own (`Direct`), or
//! through a connection pooler in transaction-pooling mode such as PgBouncer
//! (`Transaction`).
//!
//! A pooler in transaction mode hands each *transaction* a server connection, and takes it
//! back at the first `ReadyForQuery` outside one. sqlx runs a statement with parameters as
//! two protocol exchanges (`Parse`/`Describe`/`Sync`, then `Bind`/`Execute`/`Sync`) and names
//! the statement it prepares (`sqlx_s_<n>`, counted per client connection) even when its
//! statement cache is off. Outside a transaction the two exchanges can land on different
//! server connections ("prepared statement does not exist"), and a name can already exist on
//! the server connection another client left ("already exists"). Turning the statement cache
//! off (`statement_cache_capacity(0)`) is not enough with sqlx 0.9: sixteen clients through a
//! PgBouncer 1.18 of four server connections fail at once with `prepared statement "sqlx_s_1"
//! already exists` (tried with `host/tests/pgbouncer.rs`'s many-clients test). So in
//! `Transaction` mode:
//!
//! * the statement cache is off ([`pooled_options`]), so nothing is expected to survive on a
//!   server connection;
//! * every statement run on the [`Db`] itself runs in a transaction of its own,
//!   `begin; deallocate all` … `commit`, committed before its result is returned. The
//!   transaction pins one server connection for both exchanges, and `deallocate all` clears
//!   whatever named statements an earlier client left on it, so no name can collide;
//! * [`Db::begin`] opens explicit transactions the same way.
//!
//! Nothing else is session state on these connections: no `SET` (the API's
//! `statement_timeout` becomes `set local` in the opening statement), no advisory lock, no
//! `LISTEN`, no temporary table. Those need a session of their own: see
//! [`crate::Client::with_session_options`].

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgConnectOptions, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Either, Error, Execute, Executor, PgPool, Postgres, Transaction};

/// How connections reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Straight to PostgreSQL, or through a pooler in session mode: every connection is a
    /// session of its own (the default).
    #[default]
    Direct,
    /// Through a pooler in transaction-pooling mode (PgBouncer `pool_mode = transaction`):
    /// no session state, every statement in a transaction of its own.
    Transaction,
}

impl Pooling {
    /// The setting's words: `direct`/`none`/`session`, or `transaction`/`pgbouncer`.
    pub fn parse(raw: &str) -> Result<Pooling, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "direct" | "none" | "session" => Ok(Pooling::Direct),
            "transaction" | "pgbouncer" => Ok(Pooling::Transaction),
            _ => Err(format!(
                "{raw:?} is not a pooling mode (use direct, or transaction for a pooler such as \
                 PgBouncer in transaction-pooling mode)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Direct => "direct",
            Pooling::Transaction => "transaction",
        }
    }
}

/// The connection options for a pooler in transaction mode: no statement cache, and no
/// `extra_float_digits` startup parameter (PgBouncer refuses startup parameters it does not
/// know unless `ignore_startup_parameters` lists them; PostgreSQL 12 and later print floats
/// exactly without it).
pub fn pooled_options(options: PgConnectOptions) -> PgConnectOptions {
    options.statement_cache_capacity(0).extra_float_digits(None)
}

/// The statement that opens every transaction in `Transaction` mode.
const POOLED_BEGIN: &str = "begin; deallocate all";

/// A pool of connections and how they reach the server. Statements run on `&Db` as on
/// `&PgPool` (it is a [`sqlx::Executor`]); in `Transaction` mode each one in a transaction
/// of its own (see the module's documentation). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: PgPool,
    /// `None` in `Direct` mode; else the statement opening every transaction.
    begin: Option<String>,
}

impl Db {
    /// Connections straight to the server.
    pub fn direct(pool: PgPool) -> Db {
        Db { pool, begin: None }
    }

    /// `pool`'s connections reach the server as `pooling` says. In `Transaction` mode the
    /// pool's options should be [`pooled_options`].
    pub fn new(pool: PgPool, pooling: Pooling) -> Db {
        Db::with_begin(pool, pooling, None)
    }

    /// [`Db::new`] whose transactions in `Transaction` mode also run `set local <extra>`
    /// statements (e.g. `statement_timeout = 30000`) when they open.
    pub fn with_begin(pool: PgPool, pooling: Pooling, set_local: Option<&str>) -> Db {
        let begin = match pooling {
            Pooling::Direct => None,
            Pooling::Transaction => Some(match set_local {
                Some(s) => format!("begin; set local {s}; deallocate all"),
                None => POOLED_BEGIN.to_string(),
            }),
        };
        Db { pool, begin }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn pooling(&self) -> Pooling {
        if self.begin.is_some() {
            Pooling::Transaction
        } else {
            Pooling::Direct
        }
    }

    /// Begins a transaction (in `Transaction` mode with the pooled opening statement).
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, Error> {
        match &self.begin {
            None => self.pool.begin().await,
            Some(b) => self.pool.begin_with(sqlx::AssertSqlSafe(b.clone())).await,
        }
    }
}

impl<'p> Executor<'p> for &'_ Db {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let Some(begin) = self.begin.clone() else {
            return (&self.pool).fetch_many(query);
        };
        let pool = self.pool.clone();
        // Everything is read, and the transaction committed, before the first item is
        // handed out: a caller never acts on a result that is not committed yet.
        let all = async move {
            let mut tx = pool.begin_with(sqlx::AssertSqlSafe(begin)).await?;
            let items: Vec<_> = (&mut *tx).fetch_many(query).try_collect().await?;
            tx.commit().await?;
            Ok::<_, Error>(items)
        };
        Box::pin(futures_util::stream::once(all).flat_map(|r| {
            futures_util::stream::iter(match r {
                Ok(items) => items.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        }))
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let Some(begin) = self.begin.clone() else {
            return (&self.pool).fetch_optional(query);
        };
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut tx = pool.begin_with(sqlx::AssertSqlSafe(begin)).await?;
            let row = (&mut *tx).fetch_optional(query).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, Error>>
    where
        'p: 'e,
    {
        (&self.pool).prepare_with(sql, parameters)
    }

    fn describe<'e>(
        self,
        sql: sqlx::SqlStr,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, Error>> {
        (&self.pool).describe(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_words() {
        assert_eq!(Pooling::parse("transaction"), Ok(Pooling::Transaction));
        assert_eq!(Pooling::parse(" PgBouncer "), Ok(Pooling::Transaction));
        assert_eq!(Pooling::parse("direct"), Ok(Pooling::Direct));
        let e = Pooling::parse("statement").unwrap_err();
        assert!(e.contains("\"statement\""), "{e}");
    }
}
