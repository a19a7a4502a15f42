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

use sqlx::PgPool;

use crate::error::{ClientError, Result};

/// A client for one database. Cheap to clone (it shares the pool).
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) pool: PgPool,
}

impl Client {
    pub fn new(pool: PgPool) -> Client {
        Client { pool }
    }

    /// Connects with a small pool (for command-line use).
    pub async fn connect(url: &str) -> Result<Client> {
        let pool = crate::db::connect(url, 4).await.map_err(|e| {
            ClientError::Unavailable(format!("{}: {e}", crate::db::redact_url(url)))
        })?;
        Ok(Client { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `absurd.get_schema_version()`, or `None` when the database has no absurd schema.
    pub async fn schema_version(&self) -> Result<Option<String>> {
        crate::db::schema_version(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
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
