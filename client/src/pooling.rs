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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::pool::PoolConnection;
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
    /// `Direct` mode on a pool of at least [`WARM_MIN_POOL`] connections: the connection the
    /// last statement ran on, kept for the next one (see [`Warm`]).
    warm: Option<Arc<Warm>>,
}

/// How long a connection stays warm after its statement: a statement that follows within
/// this time runs on it instead of on the pool's next idle connection.
const WARM_FOR: Duration = Duration::from_millis(50);

/// The smallest pool that keeps a warm connection: the warm one is checked out of the pool
/// while it waits, so at least two others stay free for transactions and the pool's other
/// users.
const WARM_MIN_POOL: u32 = 3;

/// The connection a statement of a `Direct` [`Db`] ran on last, while it is warm.
///
/// sqlx's pool hands out its idle connections first in, first out, so a worker claiming one
/// run at a time sends its statements to each of its connections in turn, and each lands on
/// a server backend whose caches the others have since pushed out of the CPU's: a worker
/// draining no-op tasks one at a time cost PostgreSQL about 90 µs more CPU per task on five
/// connections than on two (docs/performance.md, "After the warm connection"). Reusing the
/// connection that was used last keeps one backend busy and its caches warm. A sweeper task
/// hands the connection back to the pool once it has been idle for [`WARM_FOR`], so a
/// closing pool waits at most that long for it.
#[derive(Default)]
struct Warm {
    slot: Mutex<Option<(PoolConnection<Postgres>, Instant)>>,
    /// Whether a sweeper task is running.
    sweeping: AtomicBool,
}

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Warm")
    }
}

impl Warm {
    fn for_pool(pool: &PgPool) -> Option<Arc<Warm>> {
        (pool.options().get_max_connections() >= WARM_MIN_POOL).then(Arc::default)
    }

    /// The warm connection, unless it has cooled down (it goes back to the pool then), else
    /// one from the pool.
    async fn acquire(&self, pool: &PgPool) -> Result<PoolConnection<Postgres>, Error> {
        let taken = self.slot.lock().unwrap().take();
        match taken {
            Some((conn, at)) if at.elapsed() < WARM_FOR && !pool.is_closed() => Ok(conn),
            cold => {
                drop(cold);
                pool.acquire().await
            }
        }
    }

    /// Keeps `conn` warm for the next statement; an older warm connection goes back to the
    /// pool.
    fn keep(self: &Arc<Warm>, pool: &PgPool, conn: PoolConnection<Postgres>) {
        if pool.is_closed() {
            return;
        }
        let older = self.slot.lock().unwrap().replace((conn, Instant::now()));
        drop(older);
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }
}

/// Hands the warm connection back to the pool once it has been idle for [`WARM_FOR`]; ends
/// when the slot is empty, or when the [`Db`] is gone.
async fn sweep(warm: Weak<Warm>) {
    loop {
        tokio::time::sleep(WARM_FOR).await;
        let Some(w) = warm.upgrade() else {
            return;
        };
        let cold = {
            let mut slot = w.slot.lock().unwrap();
            match &*slot {
                Some((_, at)) if at.elapsed() < WARM_FOR => continue,
                _ => slot.take(),
            }
        };
        drop(cold);
        w.sweeping.store(false, Ordering::Release);
        // A connection kept since the slot was emptied found a sweeper running: go on for it.
        if w.slot.lock().unwrap().is_none() || w.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
    }
}

impl Db {
    /// Connections straight to the server.
    pub fn direct(pool: PgPool) -> Db {
        Db {
            warm: Warm::for_pool(&pool),
            pool,
            begin: None,
        }
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
            Pooling::Direct => return Db::direct(pool),
            Pooling::Transaction => Some(match set_local {
                Some(s) => format!("begin; set local {s}; deallocate all"),
                None => POOLED_BEGIN.to_string(),
            }),
        };
        Db {
            pool,
            begin,
            warm: None,
        }
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
            let Some(warm) = self.warm.clone() else {
                return (&self.pool).fetch_many(query);
            };
            // On the warm connection, read whole (as in `Transaction` mode) so that the
            // connection is free again when the first item is handed out.
            let pool = self.pool.clone();
            let all = async move {
                let mut conn = warm.acquire(&pool).await?;
                let items: Vec<_> = (&mut *conn).fetch_many(query).try_collect().await?;
                warm.keep(&pool, conn);
                Ok::<_, Error>(items)
            };
            return Box::pin(futures_util::stream::once(all).flat_map(|r| {
                futures_util::stream::iter(match r {
                    Ok(items) => items.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            }));
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
            let Some(warm) = self.warm.clone() else {
                return (&self.pool).fetch_optional(query);
            };
            let pool = self.pool.clone();
            return Box::pin(async move {
                let mut conn = warm.acquire(&pool).await?;
                // On an error the connection goes back to the pool, which checks it.
                let row = (&mut *conn).fetch_optional(query).await?;
                warm.keep(&pool, conn);
                Ok(row)
            });
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
