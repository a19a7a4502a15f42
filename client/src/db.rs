//! Connecting to Postgres and installing the `absurd` schema.
//!
//! The schema is created by the SQL files in `migrations/` at the top of the repository,
//! embedded in the binary at compile time and applied with sqlx's migrator. The migration
//! history lives in `absurd.absurd_host_migrations`, inside the schema it describes, so that
//! dropping the schema also forgets its history.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

/// The Absurd schema version our migrations implement.
pub const SCHEMA_VERSION: &str = "0.5.1";

/// Name of the table recording which of our migrations have been applied.
const HISTORY_TABLE: &str = "absurd.absurd_host_migrations";

static EMBEDDED: Migrator = sqlx::migrate!("../migrations");

/// The migrator for the embedded migrations, with the history table inside the schema.
pub fn migrator() -> Migrator {
    let mut m = Migrator {
        migrations: Cow::Borrowed(&EMBEDDED.migrations),
        ..Migrator::DEFAULT
    };
    m.create_schema("absurd");
    m.dangerous_set_table_name(HISTORY_TABLE);
    m
}

/// Errors from [`migrate`], each saying what was found and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the database already has an `absurd` schema (version {version}) that absurd-host did not \
         install (no {HISTORY_TABLE} table); refusing to modify it. It was probably installed by \
         `absurdctl init`: absurd-host's worker and client run against it as it is, without \
         `absurd-host migrate`"
    )]
    ForeignSchema { version: String },
    #[error(
        "the database's absurd schema was migrated by a newer absurd-host (it has migration {version} \
         \"{description}\", which this binary does not know); upgrade absurd-host instead of \
         migrating with this one"
    )]
    NewerSchema { version: i64, description: String },
    #[error(
        "the server runs PostgreSQL {version}; absurd-host's schema needs PostgreSQL {} or later \
         (migration 0010 uses pg_column_compression, new in 14); nothing was changed",
        MIN_SERVER_VERSION_NUM / 10_000
    )]
    ServerTooOld { version: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The oldest PostgreSQL the schema installs on, as `server_version_num` (14.0). Core
/// `gen_random_uuid()` needs 13; `pg_column_compression` (migration 0010) needs 14.
pub const MIN_SERVER_VERSION_NUM: i32 = 140_000;

/// Refuses a server older than [`MIN_SERVER_VERSION_NUM`]; `version` is its
/// `server_version`, for the message.
pub fn check_server_version(version_num: i32, version: &str) -> Result<(), MigrateError> {
    if version_num < MIN_SERVER_VERSION_NUM {
        return Err(MigrateError::ServerTooOld {
            version: version.to_string(),
        });
    }
    Ok(())
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Migrations applied by this call, as `(version, description)`.
    pub applied: Vec<(i64, String)>,
    /// The schema version reported by `absurd.get_schema_version()` afterwards.
    pub schema_version: String,
}

/// Opens a pool. Connection errors name the host and database, never the password.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // No ping before every use: it doubles the round trips of the worker's hot path. A
        // connection that died while idle fails its next statement instead, which every caller
        // already treats as "database unavailable, retry" (and sqlx then replaces it).
        .test_before_acquire(false)
        .connect_with(opts)
        .await
}

/// Opens a pool of at most `max_connections` whose connections reach the server as `pooling`
/// says (see [`crate::pooling`]); connects one connection at once, so that a wrong URL fails
/// here.
pub async fn connect_db(
    url: &str,
    max_connections: u32,
    pooling: crate::pooling::Pooling,
) -> Result<crate::pooling::Db, sqlx::Error> {
    let mut opts: PgConnectOptions = url.parse()?;
    if pooling == crate::pooling::Pooling::Transaction {
        opts = crate::pooling::pooled_options(opts);
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect_with(opts)
        .await?;
    Ok(crate::pooling::Db::new(pool, pooling))
}

/// [`lazy_pool_with_statement_timeout`] whose connections reach the server as `pooling` says:
/// in `Transaction` mode the timeout is a `set local` in every transaction's opening
/// statement instead of a session's `SET`.
pub fn lazy_db_with_statement_timeout(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    statement_timeout: Duration,
    pooling: crate::pooling::Pooling,
) -> Result<crate::pooling::Db, sqlx::Error> {
    use crate::pooling::{pooled_options, Db, Pooling};
    match pooling {
        Pooling::Direct => Ok(Db::direct(lazy_pool_with_statement_timeout(
            url,
            max_connections,
            acquire_timeout,
            statement_timeout,
        )?)),
        Pooling::Transaction => {
            let opts = pooled_options(url.parse()?);
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(acquire_timeout)
                .connect_lazy_with(opts);
            let set = format!(
                "statement_timeout = {}",
                statement_timeout.as_millis().clamp(1, i32::MAX as u128)
            );
            Ok(Db::with_begin(pool, Pooling::Transaction, Some(&set)))
        }
    }
}

/// Opens a pool without connecting yet (the first use connects), for a server that must start
/// while the database is unreachable. A use waits at most `acquire_timeout` for a connection.
///
/// Every connection gets `statement_timeout` set when it opens (a `SET`, not a startup option,
/// so that it also works through PgBouncer): no statement on this pool, and none of the locks
/// it holds, outlives that.
pub fn lazy_pool_with_statement_timeout(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    statement_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    let set = format!(
        "set statement_timeout = {}",
        statement_timeout.as_millis().clamp(1, i32::MAX as u128)
    );
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .after_connect(move |conn, _meta| {
            let set = set.clone();
            Box::pin(async move {
                sqlx::raw_sql(sqlx::AssertSqlSafe(set))
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect_lazy_with(opts))
}

/// Creates database `name` on the server `conn` is connected to, unless it exists. Returns
/// whether it was created. Needs the `CREATEDB` privilege when it creates.
pub async fn create_database_if_missing(
    conn: &mut sqlx::PgConnection,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
    if exists {
        return Ok(false);
    }
    create_database(&mut *conn, name).await?;
    Ok(true)
}

/// Creates database `name` (an error if it exists). Needs the `CREATEDB` privilege.
pub async fn create_database<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create database {}",
        quote_ident(name)
    )))
    .execute(conn)
    .await
    .map(|_| ())
}

/// Drops database `name` if it exists, disconnecting its sessions first (`with (force)`,
/// PostgreSQL 13 and later).
pub async fn drop_database<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop database if exists {} with (force)",
        quote_ident(name)
    )))
    .execute(conn)
    .await
    .map(|_| ())
}

/// A SQL identifier, double-quoted (inner quotes doubled).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Applies every pending embedded migration. Idempotent.
///
/// Refuses a database whose `absurd` schema was installed by something else (for example
/// `absurdctl init`) or by a newer absurd-host, rather than guessing.
pub async fn migrate(pool: &PgPool) -> Result<MigrateReport, MigrateError> {
    let mut conn = pool.acquire().await?;
    migrate_on(&mut conn).await
}

/// [`migrate`] on one connection, which may be inside a transaction (each migration is then a
/// savepoint of it, and all of them are undone with it): how `--adopt-seed` installs the
/// schema in the transaction that moves the seed's tasks.
pub async fn migrate_on(conn: &mut PgConnection) -> Result<MigrateReport, MigrateError> {
    let (version_num, version): (String, String) = sqlx::query_as(
        "select current_setting('server_version_num'), current_setting('server_version')",
    )
    .fetch_one(&mut *conn)
    .await?;
    check_server_version(version_num.parse().unwrap_or(0), &version)?;
    let schema_exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_namespace where nspname = 'absurd')")
            .fetch_one(&mut *conn)
            .await?;
    let history_exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
        .bind(HISTORY_TABLE)
        .fetch_one(&mut *conn)
        .await?;
    if schema_exists && !history_exists {
        let version = schema_version_on(conn)
            .await?
            .unwrap_or_else(|| "unknown".into());
        return Err(MigrateError::ForeignSchema { version });
    }
    let migrator = migrator();
    let mut already: Vec<i64> = Vec::new();
    if history_exists {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "select version, description from absurd.absurd_host_migrations order by version",
        )
        .fetch_all(&mut *conn)
        .await?;
        for (version, description) in rows {
            if !migrator.version_exists(version) {
                return Err(MigrateError::NewerSchema {
                    version,
                    description,
                });
            }
            already.push(version);
        }
    }
    migrator.run(&mut *conn).await?;
    let applied = migrator
        .iter()
        .filter(|m| !already.contains(&m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    let schema_version = schema_version_on(conn)
        .await?
        .unwrap_or_else(|| "unknown".into());
    Ok(MigrateReport {
        applied,
        schema_version,
    })
}

/// The whole schema as one plain SQL script, for operators with their own migration tooling.
/// It applies in a single transaction and does not record absurd-host's migration history.
pub fn dump_sql() -> String {
    let mut out = String::from(
        "-- absurd schema 0.5.1, generated by absurd-host migrate --dump-sql\nbegin;\n",
    );
    for m in EMBEDDED.iter() {
        out.push_str(&format!(
            "\n-- migration {}: {}\n",
            m.version, m.description
        ));
        out.push_str(m.sql.as_str());
        out.push('\n');
    }
    out.push_str("commit;\n");
    out
}

/// `absurd.get_schema_version()`, or `None` when the database has no absurd schema.
pub async fn schema_version(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    schema_version_on(&mut conn).await
}

/// [`schema_version`] on one connection.
pub async fn schema_version_on(conn: &mut PgConnection) -> Result<Option<String>, sqlx::Error> {
    let has_fn: bool = sqlx::query_scalar(
        "select exists(select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
         where n.nspname = 'absurd' and p.proname = 'get_schema_version')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !has_fn {
        return Ok(None);
    }
    sqlx::query_scalar("select absurd.get_schema_version()")
        .fetch_one(&mut *conn)
        .await
        .map(Some)
}

/// Embedded migrations missing from the history; `None` when there is no history table (a
/// schema installed by another tool, or none).
pub async fn pending_migrations(pool: &PgPool) -> Result<Option<usize>, sqlx::Error> {
    let has_history: bool = sqlx::query_scalar("select to_regclass($1) is not null")
        .bind(HISTORY_TABLE)
        .fetch_one(pool)
        .await?;
    if !has_history {
        return Ok(None);
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("select version from absurd.absurd_host_migrations where success")
            .fetch_all(pool)
            .await?;
    Ok(Some(
        EMBEDDED
            .iter()
            .filter(|mig| !applied.contains(&mig.version))
            .count(),
    ))
}

/// The server's version (`show server_version`), as PostgreSQL reports it.
pub async fn server_version(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("show server_version")
        .fetch_one(pool)
        .await
}

/// The connection string with every password replaced by `***`, for error messages and logs:
/// the password of a URL's user info (which may itself contain `@`), a `password=` query
/// parameter, and a `password=` key of a `key=value` connection string.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, after)) = url.split_once("://") else {
        return redact_key_values(url);
    };
    let (main, query) = match after.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (after, None),
    };
    let main = match main.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => main.to_string(),
        },
        None => main.to_string(),
    };
    let mut out = format!("{scheme}://{main}");
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// `host=db password=secret` → `host=db password=***` (a quoted value may hold spaces).
fn redact_key_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("password") {
        let (before, from) = rest.split_at(i);
        out.push_str(before);
        let at_key_start = before.is_empty() || before.ends_with(char::is_whitespace);
        let after_key = from["password".len()..].trim_start();
        match after_key.strip_prefix('=') {
            Some(value) if at_key_start => {
                let value = value.trim_start();
                let end = if let Some(quoted) = value.strip_prefix('\'') {
                    // Through the closing quote (a backslash escapes one character).
                    let mut escaped = false;
                    let mut end = value.len();
                    for (j, c) in quoted.char_indices() {
                        match c {
                            '\\' if !escaped => escaped = true,
                            '\'' if !escaped => {
                                end = j + 2;
                                break;
                            }
                            _ => escaped = false,
                        }
                    }
                    end
                } else {
                    value.find(char::is_whitespace).unwrap_or(value.len())
                };
                out.push_str("password=***");
                rest = &value[end..];
            }
            _ => {
                out.push_str("password");
                rest = &from["password".len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn servers_older_than_14_are_refused_by_name() {
        let err = super::check_server_version(130_011, "13.11 (Debian 13.11-1)").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("PostgreSQL 13.11 (Debian 13.11-1)"), "{text}");
        assert!(text.contains("PostgreSQL 14 or later"), "{text}");
        assert!(super::check_server_version(90_624, "9.6.24").is_err());
        assert!(super::check_server_version(140_000, "14.0").is_ok());
        assert!(super::check_server_version(170_002, "17.2").is_ok());
    }

    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgresql://u:secret@h:5432/db"),
            "postgresql://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgresql://u@h/db"), "postgresql://u@h/db");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("postgresql://u:p@ss@h/db?sslmode=require&password=x&Password=y"),
            "postgresql://u:***@h/db?sslmode=require&password=***&Password=***"
        );
        assert_eq!(
            redact_url("postgresql://u@h/db?password=secret"),
            "postgresql://u@h/db?password=***"
        );
        assert_eq!(
            redact_url("host=db user=u password=secret dbname=x"),
            "host=db user=u password=*** dbname=x"
        );
        assert_eq!(
            redact_url("host=db password = 'a b\\' c' dbname=x"),
            "host=db password=*** dbname=x"
        );
        assert_eq!(redact_url("mypassword=1"), "mypassword=1");
    }

    #[test]
    fn dump_sql_is_one_transaction_with_every_migration() {
        let sql = dump_sql();
        assert!(sql.starts_with("-- absurd schema"));
        assert!(sql.trim_end().ends_with("commit;"));
        for m in EMBEDDED.iter() {
            assert!(sql.contains(m.sql.as_str()));
        }
    }
}
