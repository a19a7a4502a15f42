//! Many worker processes on one database: tasks/s and the PostgreSQL connections they hold
//! (the peak of `pg_stat_activity` during the drain), with 1, 4 and 16 processes (1 and 4
//! with `--quick`), each straight to PostgreSQL and through PgBouncer in transaction-pooling
//! mode (`--db-pooling transaction`, with a direct `ABSURD_LISTEN_URL` for wake-ups).
//!
//! PgBouncer is Debian's `pgbouncer` binary (`scripts/setup-pgbouncer`), started here on a
//! free port with `default_pool_size` [`BOUNCER_POOL`]; without it the pooled rows are
//! skipped, saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;

use super::env::{self, Server, WorkerProc, WorkerSpec};
use super::report::{median, Figure};
use super::Plan;

const QUEUE: &str = "bench";
const APP: &str = "absurd-bench";
/// Server connections PgBouncer keeps per database.
pub const BOUNCER_POOL: usize = 10;
/// Tasks in flight per worker process.
const CONCURRENCY: usize = 16;

/// The scenario.
pub async fn pool(server: &Server, plan: &Plan, server_url: &str) -> Result<Vec<Figure>> {
    let counts: &[usize] = if plan.quick { &[1, 4] } else { &[1, 4, 16] };
    let tasks = if plan.quick {
        1000
    } else {
        plan.tasks.min(10_000)
    };
    let bouncer = match binary() {
        Some(b) => Some(Bouncer::start(&b, server_url).await?),
        None => {
            println!(
                "note: no pgbouncer binary (scripts/setup-pgbouncer installs it): the pooled \
                 rows of the pool scenario are skipped"
            );
            None
        }
    };
    let mut figures = Vec::new();
    for &n in counts {
        for pooled in [false, true] {
            if pooled && bouncer.is_none() {
                continue;
            }
            let mut rates = Vec::new();
            let mut peaks = Vec::new();
            for _ in 0..plan.reps {
                let (rate, peak) =
                    drain(server, plan, bouncer.as_ref().filter(|_| pooled), n, tasks).await?;
                rates.push(rate);
                peaks.push(peak as f64);
            }
            let mode = if pooled { "pgbouncer" } else { "direct" };
            let how = if pooled {
                format!(
                    "through PgBouncer (transaction mode, pool of {BOUNCER_POOL}), LISTEN direct"
                )
            } else {
                "straight to PostgreSQL".to_string()
            };
            figures.push(
                Figure::new("pool", format!("{mode}.{n}proc"), median(&rates), "tasks/s").note(
                    format!("{n} worker process(es) × concurrency {CONCURRENCY}, {tasks} builtin no-ops, {how}"),
                ),
            );
            figures.push(
                Figure::new(
                    "pool",
                    format!("{mode}.{n}proc.connections"),
                    median(&peaks),
                    "conns",
                )
                .note("peak PostgreSQL backends of the workers (pg_stat_activity)"),
            );
        }
    }
    Ok(figures)
}

/// One drain; returns (tasks/s, peak backends).
async fn drain(
    server: &Server,
    plan: &Plan,
    bouncer: Option<&Bouncer>,
    processes: usize,
    n: usize,
) -> Result<(f64, usize)> {
    let db = server.fresh("pool", QUEUE).await?;
    let result = async {
        env::spawn_bulk(&db.pool, QUEUE, "noop", n).await?;
        let peak = Arc::new(AtomicUsize::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let sampler = {
            let (peak, stop, name) = (peak.clone(), stop.clone(), db.name.clone());
            let admin = server.admin().clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    if let Ok(pids) = absurd_client::measure::backend_pids(&admin, &name, APP).await
                    {
                        peak.fetch_max(pids.len(), Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let (url, args, listen) = match bouncer {
            None => (db.url.clone(), Vec::new(), None),
            Some(b) => (
                b.url(&db.name),
                vec!["--db-pooling", "transaction"],
                Some(env::with_param(&db.url, "application_name", APP)),
            ),
        };
        let envs: Vec<(&str, &str)> = listen
            .as_deref()
            .map(|l| vec![("ABSURD_LISTEN_URL", l)])
            .unwrap_or_default();
        let mut workers = (0..processes)
            .map(|i| {
                WorkerProc::start_with(
                    &WorkerSpec {
                        url: &url,
                        config: &plan.config,
                        queue: QUEUE,
                        concurrency: CONCURRENCY,
                        worker_id: format!("bench-pool-{}-{i}", std::process::id()),
                        app: APP,
                    },
                    &args,
                    &envs,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let limit = Duration::from_secs(120 + n as u64 / 50);
        let waited = env::wait_completed(&db.pool, QUEUE, n as i64, limit, &mut workers).await;
        stop.cancel();
        let _ = sampler.await;
        drop(workers);
        waited?;
        let (done, secs) = env::drain_rate(&db.pool, QUEUE, "bench-pool").await?;
        Ok((done as f64 / secs, peak.load(Ordering::Relaxed)))
    }
    .await;
    server.drop_db(db).await;
    result
}

fn binary() -> Option<PathBuf> {
    let sbin = PathBuf::from("/usr/sbin/pgbouncer");
    if sbin.is_file() {
        return Some(sbin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("pgbouncer"))
            .find(|p| p.is_file())
    })
}

/// A private PgBouncer in transaction mode in front of the benchmark's server, killed when
/// dropped.
struct Bouncer {
    child: Child,
    port: u16,
    user: String,
    _dir: tempfile::TempDir,
}

impl Bouncer {
    async fn start(binary: &Path, server_url: &str) -> Result<Bouncer> {
        let o: PgConnectOptions = server_url.parse()?;
        let host = match o.get_socket() {
            Some(dir) => dir.display().to_string(),
            None => o.get_host().to_string(),
        };
        let user = o.get_username().to_string();
        let dir = tempfile::Builder::new()
            .prefix("absurd-bench-pgbouncer-")
            .tempdir()?;
        let root = rustix::process::geteuid().is_root();
        if root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        let users = dir.path().join("users.txt");
        std::fs::write(&users, format!("\"{user}\" \"\"\n"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host={host} port={}\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                 listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\n\
                 pool_mode = transaction\ndefault_pool_size = {BOUNCER_POOL}\n\
                 max_client_conn = 2000\nignore_startup_parameters = extra_float_digits\n",
                o.get_port(),
                users.display()
            ),
        )?;
        let mut cmd = Command::new(binary);
        if root {
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let b = Bouncer {
            child,
            port,
            user,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if sqlx::PgConnection::connect(&b.url("postgres"))
                .await
                .is_ok()
            {
                return Ok(b);
            }
            if Instant::now() > deadline {
                bail!("pgbouncer did not accept connections on port {port} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{database}",
            self.user, self.port
        )
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
