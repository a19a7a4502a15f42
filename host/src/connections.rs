//! Connections to PostgreSQL: how many a worker and the API hold, whether they go through a
//! pooler in transaction mode (PgBouncer), the direct URL for sessions of their own
//! (`LISTEN`, the maintenance leader's advisory lock) and the URL the API reads from (a
//! replica).
//!
//! Each setting is a flag, an `ABSURD_*` variable (the flag wins) and a key of the
//! `[database]` section of `absurd-host.toml` (used when neither is given):
//!
//! | flag | variable | `[database]` key | default |
//! |---|---|---|---|
//! | `--db-max-connections` | `ABSURD_DB_MAX_CONNECTIONS` | `max_connections` | concurrency + 4, at most 64 |
//! | `--api-max-connections` | `ABSURD_API_MAX_CONNECTIONS` | `api_max_connections` | 8 |
//! | `--db-pooling` | `ABSURD_DB_POOLING` | `pooling` | `direct` |
//! | `--listen-url` | `ABSURD_LISTEN_URL` | `listen_url` | none |
//! | `--api-read-url` | `ABSURD_API_READ_URL` | `api_read_url` | none (the database URL) |

use std::path::Path;
use std::time::Duration;

use absurd_client::pooling::{Db, Pooling};
use absurd_client::Client;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

/// The fewest connections a pool may have: a worker's wake-up listener holds one of its pool
/// when no listen URL is given, and the claimers need another.
pub const MIN_POOL_CONNECTIONS: u32 = 2;
/// The most: PostgreSQL's own `max_connections` is rarely set above a few thousand.
pub const MAX_POOL_CONNECTIONS: u32 = 10_000;
/// The API pool's default size.
pub const DEFAULT_API_MAX_CONNECTIONS: u32 = 8;
/// The worker pool's default: its concurrency plus this, up to [`DEFAULT_WORKER_CAP`].
pub const WORKER_POOL_EXTRA: u32 = 4;
pub const DEFAULT_WORKER_CAP: u32 = 64;

/// The connection flags of `worker` and `serve`.
#[derive(Debug, Args, Clone, Default)]
pub struct ConnectionArgs {
    /// Most connections the worker's pool opens (claims, settling, leases, the scheduler)
    /// [default: concurrency + 4, at most 64; `[database] max_connections`].
    #[arg(long, env = "ABSURD_DB_MAX_CONNECTIONS", value_name = "N", value_parser = pool_size)]
    pub db_max_connections: Option<u32>,
    /// Most connections the API's pool opens (`serve`, `worker --api`) [default: 8;
    /// `[database] api_max_connections`]. The read URL's pool, if any, has as many again.
    #[arg(long, env = "ABSURD_API_MAX_CONNECTIONS", value_name = "N", value_parser = pool_size)]
    pub api_max_connections: Option<u32>,
    /// How the database URL reaches PostgreSQL: `direct`, or `transaction` for a pooler in
    /// transaction-pooling mode such as PgBouncer (no session state on its connections)
    /// [default: direct; `[database] pooling`].
    #[arg(long, env = "ABSURD_DB_POOLING", value_name = "MODE", value_parser = Pooling::parse)]
    pub db_pooling: Option<Pooling>,
    /// A direct URL (not through a transaction-mode pooler) for the sessions that need one:
    /// the wake-up and live-update LISTEN connections and the maintenance leader's advisory
    /// lock. Without it, behind a pooler, the worker claims on its poll interval
    /// [`[database] listen_url`].
    #[arg(
        long,
        env = "ABSURD_LISTEN_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub listen_url: Option<String>,
    /// The URL the API's read-only endpoints read from, e.g. a streaming replica; writes and
    /// health checks use the database URL [`[database] api_read_url`].
    #[arg(
        long,
        env = "ABSURD_API_READ_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub api_read_url: Option<String>,
}

fn pool_size(raw: &str) -> Result<u32, String> {
    let n: i64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not an integer"))?;
    check_pool_size(n)
}

fn check_pool_size(n: i64) -> Result<u32, String> {
    if !(MIN_POOL_CONNECTIONS as i64..=MAX_POOL_CONNECTIONS as i64).contains(&n) {
        return Err(format!(
            "must be between {MIN_POOL_CONNECTIONS} and {MAX_POOL_CONNECTIONS} connections, got {n}"
        ));
    }
    Ok(n as u32)
}

/// The `[database]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    max_connections: Option<i64>,
    api_max_connections: Option<i64>,
    pooling: Option<String>,
    listen_url: Option<String>,
    api_read_url: Option<String>,
}

/// The resolved connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connections {
    /// The worker pool's size; `None`: the default for the worker's concurrency.
    pub max_connections: Option<u32>,
    pub api_max_connections: u32,
    pub pooling: Pooling,
    pub listen_url: Option<String>,
    pub api_read_url: Option<String>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            max_connections: None,
            api_max_connections: DEFAULT_API_MAX_CONNECTIONS,
            pooling: Pooling::Direct,
            listen_url: None,
            api_read_url: None,
        }
    }
}

impl Connections {
    /// The flags (and variables) over the `[database]` section of the file at `path`.
    pub fn resolve(args: &ConnectionArgs, path: Option<&Path>) -> Result<Connections> {
        let table = match path {
            Some(p) => absurd_engine::dispatch::HostConfig::load(p)?.database,
            None => None,
        };
        let from_file = match &table {
            Some(t) => Self::from_table(t)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.unwrap().display()))?,
            None => Connections::default(),
        };
        let c = Connections {
            max_connections: args.db_max_connections.or(from_file.max_connections),
            api_max_connections: args
                .api_max_connections
                .unwrap_or(from_file.api_max_connections),
            pooling: args.db_pooling.unwrap_or(from_file.pooling),
            listen_url: nonempty(args.listen_url.clone()).or(from_file.listen_url),
            api_read_url: nonempty(args.api_read_url.clone()).or(from_file.api_read_url),
        };
        if let Some(u) = &c.listen_url {
            check_url("ABSURD_LISTEN_URL / --listen-url", u)?;
        }
        if let Some(u) = &c.api_read_url {
            check_url("ABSURD_API_READ_URL / --api-read-url", u)?;
        }
        Ok(c)
    }

    /// The `[database]` section on its own; errors name the key and the value.
    pub fn from_table(table: &toml::Table) -> Result<Connections, String> {
        let s: Section = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| format!("[database]: {}", e.message()))?;
        let mut c = Connections::default();
        if let Some(n) = s.max_connections {
            c.max_connections =
                Some(check_pool_size(n).map_err(|e| format!("[database] max_connections {e}"))?);
        }
        if let Some(n) = s.api_max_connections {
            c.api_max_connections =
                check_pool_size(n).map_err(|e| format!("[database] api_max_connections {e}"))?;
        }
        if let Some(p) = s.pooling {
            c.pooling = Pooling::parse(&p).map_err(|e| format!("[database] pooling: {e}"))?;
        }
        c.listen_url = nonempty(s.listen_url);
        c.api_read_url = nonempty(s.api_read_url);
        for (key, url) in [
            ("listen_url", &c.listen_url),
            ("api_read_url", &c.api_read_url),
        ] {
            if let Some(u) = url {
                check_url(&format!("[database] {key}"), u).map_err(|e| e.to_string())?;
            }
        }
        Ok(c)
    }

    /// The worker pool's size for `concurrency` tasks in flight.
    pub fn worker_pool_size(&self, concurrency: usize) -> u32 {
        self.max_connections.unwrap_or_else(|| {
            (u32::try_from(concurrency).unwrap_or(u32::MAX))
                .saturating_add(WORKER_POOL_EXTRA)
                .min(DEFAULT_WORKER_CAP)
        })
    }

    /// One line for `absurd-host check` and the log.
    pub fn describe(&self, concurrency: usize) -> String {
        format!(
            "worker pool of {} connections, API pool of {}, pooling {}, {}, {}",
            self.worker_pool_size(concurrency),
            self.api_max_connections,
            self.pooling.as_str(),
            match (&self.listen_url, self.pooling) {
                (Some(_), _) => "LISTEN on the direct listen URL",
                (None, Pooling::Direct) => "LISTEN on a pool connection",
                (None, Pooling::Transaction) => "no LISTEN: claims on the poll interval",
            },
            if self.api_read_url.is_some() {
                "API reads from the read URL"
            } else {
                "API reads from the database URL"
            }
        )
    }

    /// The session options (`listen_url`), parsed.
    fn session_options(&self) -> Result<Option<PgConnectOptions>> {
        self.listen_url
            .as_deref()
            .map(|u| parse_url("ABSURD_LISTEN_URL / --listen-url", u))
            .transpose()
    }

    /// Refuses what cannot work: the maintenance leader's advisory lock behind a
    /// transaction-mode pooler without a direct URL.
    pub fn check_maintenance(&self, maintenance_enabled: bool) -> Result<()> {
        if maintenance_enabled && self.pooling == Pooling::Transaction && self.listen_url.is_none()
        {
            bail!(
                "[maintenance] enabled = true needs a direct session for the leader's advisory lock, \
                 and ABSURD_DB_POOLING=transaction sends the database URL through a pooler: set \
                 ABSURD_LISTEN_URL (--listen-url, [database] listen_url) to a direct URL, or run \
                 `absurd-host maintain` from cron with a direct URL instead"
            );
        }
        Ok(())
    }

    /// The worker's client: a pool of [`Connections::worker_pool_size`] connections
    /// (connected once here), with the listen URL for its sessions.
    pub async fn worker_client(&self, url: &str, concurrency: usize) -> Result<Client> {
        let redacted = absurd_client::db::redact_url(url);
        let db =
            absurd_client::db::connect_db(url, self.worker_pool_size(concurrency), self.pooling)
                .await
                .with_context(|| format!("cannot connect to {redacted}"))?;
        let mut client = Client::with_db(db);
        if let Some(o) = self.session_options()? {
            client = client.with_session_options(o);
        }
        Ok(client)
    }

    /// A cheap check for a pooler the settings do not mention: in `direct` mode, when the
    /// server sees the connection arrive on another TCP port than the URL's, warns that a
    /// pooler in transaction mode needs `ABSURD_DB_POOLING=transaction` (a port mapping gives
    /// the same sign, so it only warns).
    pub async fn warn_if_pooled(&self, client: &Client, url: &str) {
        if self.pooling != Pooling::Direct {
            return;
        }
        let Ok(o) = url.parse::<PgConnectOptions>() else {
            return;
        };
        if o.get_socket().is_some() {
            return;
        }
        if let Ok(Some(server)) = client.server_port().await {
            if server != i32::from(o.get_port()) {
                tracing::warn!(
                    url_port = o.get_port(),
                    server_port = server,
                    "the server sees this connection on another port than the database URL's: \
                     if a pooler in transaction mode (PgBouncer) is in between, set \
                     ABSURD_DB_POOLING=transaction and ABSURD_LISTEN_URL to a direct URL"
                );
            }
        }
    }

    /// The API's clients, opened lazily: the one for writes (and health), on `url`, and the
    /// one for reads, on the read URL when there is one.
    pub fn api_clients(&self, url: &str, statement_timeout: Duration) -> Result<ApiClients> {
        let open = |u: &str| -> Result<Db> {
            absurd_client::db::lazy_db_with_statement_timeout(
                u,
                self.api_max_connections,
                Duration::from_secs(3),
                statement_timeout,
                self.pooling,
            )
            .with_context(|| format!("invalid database URL {}", absurd_client::db::redact_url(u)))
        };
        let mut primary = Client::with_db(open(url)?);
        if let Some(o) = self.session_options()? {
            primary = primary.with_session_options(o);
        }
        let reads = match &self.api_read_url {
            Some(u) => Some(Client::with_db(open(u)?)),
            None => None,
        };
        Ok(ApiClients { primary, reads })
    }
}

/// The API's clients (see [`Connections::api_clients`]).
pub struct ApiClients {
    pub primary: Client,
    pub reads: Option<Client>,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|u| !u.trim().is_empty())
}

fn parse_url(what: &str, url: &str) -> Result<PgConnectOptions> {
    url.parse::<PgConnectOptions>()
        .map_err(|e| anyhow::anyhow!("invalid {what} {}: {e}", absurd_client::db::redact_url(url)))
}

fn check_url(what: &str, url: &str) -> Result<()> {
    parse_url(what, url).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_section_is_read_and_checked() {
        let c = Connections::from_table(&table(
            "max_connections = 12\napi_max_connections = 3\npooling = \"transaction\"\n\
             listen_url = \"postgresql://u@db:5432/x\"\napi_read_url = \"postgresql://u@replica/x\"",
        ))
        .unwrap();
        assert_eq!(c.max_connections, Some(12));
        assert_eq!(c.worker_pool_size(100), 12);
        assert_eq!(c.api_max_connections, 3);
        assert_eq!(c.pooling, Pooling::Transaction);
        assert_eq!(c.listen_url.as_deref(), Some("postgresql://u@db:5432/x"));
        assert!(c.api_read_url.is_some());
        assert_eq!(Connections::default().worker_pool_size(4), 8);
        assert_eq!(Connections::default().worker_pool_size(500), 64);

        for (text, needle) in [
            (
                "max_connections = 1",
                "max_connections must be between 2 and 10000 connections, got 1",
            ),
            (
                "api_max_connections = 0",
                "api_max_connections must be between 2 and 10000 connections, got 0",
            ),
            ("max_connections = 20000", "got 20000"),
            (
                "pooling = \"statement\"",
                "\"statement\" is not a pooling mode",
            ),
            (
                "listen_url = \"postgresql://u:secret@h:port/x\"",
                "[database] listen_url postgresql://u:***@h:port/x",
            ),
            ("max_conections = 3", "unknown field `max_conections`"),
        ] {
            let e = Connections::from_table(&table(text)).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(!e.contains("secret"), "{text}: {e}");
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("absurd-conn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("absurd-host.toml");
        std::fs::write(
            &path,
            "[database]\nmax_connections = 5\npooling = \"transaction\"\n",
        )
        .unwrap();
        let args = ConnectionArgs {
            db_max_connections: Some(9),
            ..ConnectionArgs::default()
        };
        let c = Connections::resolve(&args, Some(&path)).unwrap();
        assert_eq!(c.max_connections, Some(9));
        assert_eq!(c.pooling, Pooling::Transaction);
        assert!(c.check_maintenance(true).is_err());
        assert!(c.check_maintenance(false).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pool_sizes_name_the_value() {
        assert_eq!(pool_size("16"), Ok(16));
        assert!(pool_size("1").unwrap_err().contains("got 1"));
        assert!(pool_size("lots").unwrap_err().contains("\"lots\""));
    }
}
