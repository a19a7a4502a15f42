//! The [`Client`] handle, and the helpers every statement uses to name a queue's tables.
//!
//! The operations are `impl Client` blocks in the modules of their concern: `admin` (queues,
//! tasks, events, cleanup), `protocol` (what a worker does with a claimed run), `claimed`
//! (claiming, within read limits), `dead_letter`, `analytics` (statistics and health for
//! dashboards) and `listen` (wake-up notifications).
//!
//! Everything goes through the `absurd.*` SQL functions (so it works the same on a schema
//! installed by `absurd-host migrate` and by `absurdctl init`), except the read-only views
//! that Absurd has no function for (task details, listings, statistics), which read the
//! per-queue tables directly, as `absurdctl` does.

use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use crate::error::{ClientError, Result};
use crate::pooling::{Db, Pooling};

/// A client for one database. Cheap to clone (it shares the pool).
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) pool: Db,
    /// Where sessions of their own go (`LISTEN`, the maintenance leader's advisory lock),
    /// when that is not where the pool goes (see [`Client::with_session_options`]).
    session: Option<PgConnectOptions>,
}

impl Client {
    /// A client on `pool`, whose connections go straight to the server (or through a pooler
    /// in session mode).
    pub fn new(pool: PgPool) -> Client {
        Client {
            pool: Db::direct(pool),
            session: None,
        }
    }

    /// A client on `db` (see [`crate::pooling`]).
    pub fn with_db(db: Db) -> Client {
        Client {
            pool: db,
            session: None,
        }
    }

    /// Opens sessions of their own (the wake-up and live-update `LISTEN` connections, the
    /// maintenance leader's advisory lock) with `options`, a direct connection to the server,
    /// instead of through the pool. Needed for them when the pool goes through a pooler in
    /// transaction mode.
    pub fn with_session_options(mut self, options: PgConnectOptions) -> Client {
        self.session = Some(options);
        self
    }

    /// How the pool's connections reach the server.
    pub fn pooling(&self) -> Pooling {
        self.pool.pooling()
    }

    /// The options for a session of its own: the explicit ones, else the pool's own when
    /// its connections are sessions (`Direct`); `None` behind a transaction-mode pooler
    /// without them (then nothing may rely on session state: wake-ups fall back to polling).
    pub fn session_options(&self) -> Option<PgConnectOptions> {
        match (&self.session, self.pool.pooling()) {
            (Some(o), _) => Some(o.clone()),
            (None, Pooling::Direct) => Some(self.pool.pool().connect_options().as_ref().clone()),
            (None, Pooling::Transaction) => None,
        }
    }

    /// Whether this client can `LISTEN` (see [`Client::session_options`]).
    pub fn can_listen(&self) -> bool {
        self.session.is_some() || self.pool.pooling() == Pooling::Direct
    }

    /// A pool of one connection for a listener: from the session options when they were
    /// given, else the client's own pool (a direct one: the listener holds one of its
    /// connections, as it always has).
    pub(crate) fn listener_pool(&self) -> Result<PgPool> {
        match (&self.session, self.pool.pooling()) {
            (Some(o), _) => Ok(sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(o.clone())),
            (None, Pooling::Direct) => Ok(self.pool.pool().clone()),
            (None, Pooling::Transaction) => Err(ClientError::Unavailable(
                "LISTEN needs a session of its own, and this client's connections go through a \
                 pooler in transaction mode: give a direct connection (ABSURD_LISTEN_URL)"
                    .into(),
            )),
        }
    }

    /// Connects with a small pool (for command-line use).
    pub async fn connect(url: &str) -> Result<Client> {
        let pool = crate::db::connect(url, 4).await.map_err(|e| {
            ClientError::Unavailable(format!("{}: {e}", crate::db::redact_url(url)))
        })?;
        Ok(Client::new(pool))
    }

    pub fn pool(&self) -> &PgPool {
        self.pool.pool()
    }

    /// The pool with its pooling mode (an executor that honours it).
    pub fn db(&self) -> &Db {
        &self.pool
    }

    /// The TCP port the server's backend sees this connection arrive on
    /// (`inet_server_port()`); `None` over a Unix socket. A different port from the URL's
    /// means something sits in between: a pooler, or a port mapping.
    pub async fn server_port(&self) -> Result<Option<i32>> {
        // No parameters: the simple protocol, safe whatever the pooling.
        sqlx::query_scalar("select inet_server_port()")
            .fetch_one(self.pool.pool())
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// `absurd.get_schema_version()`, or `None` when the database has no absurd schema.
    pub async fn schema_version(&self) -> Result<Option<String>> {
        let db = |e| ClientError::from_sqlx(e, None);
        if self.pool.pooling() == Pooling::Direct {
            return crate::db::schema_version(self.pool.pool())
                .await
                .map_err(db);
        }
        // Two statements on one connection: in a transaction, so that a pooler in
        // transaction mode keeps them on one server connection.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let v = crate::db::schema_version_on(&mut tx).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(v)
    }
}

/// Quotes a queue's table name, `absurd."<prefix>_<queue>"`, the way the schema names them.
pub fn table(prefix: &str, queue: &str) -> String {
    format!("absurd.\"{prefix}_{}\"", queue.replace('"', "\"\""))
}

pub(crate) fn check_queue_name(queue: &str) -> Result<()> {
    if queue.is_empty() {
        return Err(ClientError::InvalidInput(
            "queue name must not be empty".into(),
        ));
    }
    if queue.len() > 57 {
        return Err(ClientError::InvalidInput(format!(
            "queue name {queue:?} is {} bytes long; the limit is 57",
            queue.len()
        )));
    }
    Ok(())
}

/// A SQL string literal (for queue names placed in a generated query as a value).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A size limit as a SQL `bigint`.
pub(crate) fn sql_limit(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_quoted_verbatim() {
        assert_eq!(table("t", "q1"), "absurd.\"t_q1\"");
        assert_eq!(table("r", "we\"ird q"), "absurd.\"r_we\"\"ird q\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
