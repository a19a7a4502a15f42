//! What the scenarios run in: fresh databases on the server under test, `absurd-host worker`
//! processes, bulk spawning, and reading timings and CPU counters.
//!
//! Timings come from the database's own clock (`started_at` of the first claimed run,
//! `completed_at` of the last completed one), so they do not depend on when the benchmark
//! happened to look. CPU time comes from `/proc/<pid>/stat` of the Postgres backends that
//! served a worker (found by the `application_name` the benchmark gives its connections).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::PgPool;

use absurd_client::{measure, Client};

/// The PostgreSQL server under test; every scenario gets its own fresh database on it.
pub struct Server {
    url: String,
    admin: PgPool,
    seq: AtomicUsize,
}

/// A database made for one measurement; [`Server::drop_db`] removes it.
pub struct BenchDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    pub client: Client,
}

impl Server {
    pub async fn connect(url: &str) -> Result<Server> {
        let admin = absurd_client::db::connect(url, 2)
            .await
            .with_context(|| format!("cannot connect to {}", absurd_client::db::redact_url(url)))?;
        Ok(Server {
            url: url.to_string(),
            admin,
            seq: AtomicUsize::new(0),
        })
    }

    /// The pool on the server's admin database (for `pg_stat_activity` readings).
    pub fn admin(&self) -> &PgPool {
        &self.admin
    }

    pub async fn version(&self) -> String {
        absurd_client::db::server_version(&self.admin)
            .await
            .unwrap_or_else(|_| "unknown".into())
    }

    async fn create(&self, label: &str) -> Result<String> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("absurd_bench_{}_{n}_{label}", std::process::id());
        absurd_client::db::create_database(&self.admin, &name)
            .await
            .with_context(|| {
                format!("cannot create database {name} (the benchmark needs CREATEDB)")
            })?;
        Ok(name)
    }

    async fn open(&self, name: String) -> Result<BenchDb> {
        let url = with_database(&self.url, &name);
        let pool = absurd_client::db::connect(&url, 4).await?;
        Ok(BenchDb {
            client: Client::new(pool.clone()),
            name,
            url,
            pool,
        })
    }

    /// A fresh database migrated by absurd-host, with `queue` created.
    pub async fn fresh(&self, label: &str, queue: &str) -> Result<BenchDb> {
        let name = self.create(label).await?;
        let db = self.open(name).await?;
        absurd_client::db::migrate(&db.pool).await?;
        db.client.create_queue(queue).await?;
        Ok(db)
    }

    /// A fresh database whose schema `absurdctl init` installed (the upstream 0.5.1 SQL), with
    /// `queue` created by `absurdctl create-queue`.
    pub async fn upstream(&self, absurdctl: &Path, label: &str, queue: &str) -> Result<BenchDb> {
        let name = self.create(label).await?;
        let url = with_database(&self.url, &name);
        for args in [
            vec!["init", "-d", &url],
            vec!["create-queue", queue, "-d", &url],
        ] {
            let out = Command::new(absurdctl)
                .args(&args)
                .output()
                .with_context(|| format!("cannot run {}", absurdctl.display()))?;
            if !out.status.success() {
                bail!(
                    "absurdctl {} failed: {}{}",
                    args[0],
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        self.open(name).await
    }

    pub async fn drop_db(&self, db: BenchDb) {
        db.pool.close().await;
        if let Err(e) = absurd_client::db::drop_database(&self.admin, &db.name).await {
            eprintln!("bench: could not drop database {}: {e}", db.name);
        }
    }

    /// CPU seconds used so far by each backend connected to `db` as `app`.
    pub async fn backend_cpu(&self, db: &str, app: &str) -> HashMap<i32, f64> {
        let pids = measure::backend_pids(&self.admin, db, app)
            .await
            .unwrap_or_default();
        pids.into_iter()
            .filter_map(|p| proc_cpu_secs(p as u32).map(|s| (p, s)))
            .collect()
    }
}

/// CPU seconds between two [`Server::backend_cpu`] samples; backends that appeared in
/// between count in full.
pub fn cpu_delta(before: &HashMap<i32, f64>, after: &HashMap<i32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, s)| s - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}

/// `url` pointing at database `db` instead (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let prefix = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

/// `url` with one more query parameter.
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat`.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some(ticks / hz.max(1.0))
}

/// Minor page faults of a process so far (`/proc/<pid>/stat`): each is a page the process
/// touched for the first time in its mapping, such as a copy-on-write copy of a page of a wasm
/// memory image. Load-independent, unlike times.
pub fn proc_minor_faults(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    fields.get(7)?.parse().ok()
}

/// Resident set size of a process in MiB, from `/proc/<pid>/status`.
pub fn proc_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A process's proportional set size (`Pss` of /proc/PID/smaps_rollup), in MiB: resident
/// memory with each shared page divided among its mappings. Pooled wasm instances map the
/// same copy-on-write memory image once per slot, which RSS counts once per slot.
pub fn proc_pss_mib(pid: u32) -> Option<f64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Spawns `n` tasks named `task` in batches of 1,000 per statement, through `spawn_task` (so
/// this works on either schema). Params are `{"i": k}`.
pub async fn spawn_bulk(pool: &PgPool, queue: &str, task: &str, n: usize) -> Result<()> {
    let mut start = 0usize;
    while start < n {
        let end = (start + 1000).min(n);
        measure::spawn_numbered(pool, queue, task, start as i32, end as i32 - 1)
            .await
            .context("spawning the benchmark's tasks")?;
        start = end;
    }
    Ok(())
}

/// Completed runs of the queue.
pub async fn completed(pool: &PgPool, queue: &str) -> Result<i64> {
    runs_in_state(pool, queue, "completed").await
}

/// Runs of the queue in `state`.
pub async fn runs_in_state(pool: &PgPool, queue: &str, state: &str) -> Result<i64> {
    Ok(measure::runs_in_state(pool, queue, state).await?)
}

/// Waits until at least `n` runs of the queue are completed; fails after `limit`, or at once
/// if one of `workers` has exited.
pub async fn wait_completed(
    pool: &PgPool,
    queue: &str,
    n: i64,
    limit: Duration,
    workers: &mut [WorkerProc],
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let done = completed(pool, queue).await?;
        if done >= n {
            return Ok(());
        }
        for w in workers.iter_mut() {
            if let Some(status) = w.child.try_wait()? {
                bail!(
                    "the worker exited ({status}) with {done} of {n} tasks done; its log:\n{}",
                    w.log_tail()
                );
            }
        }
        if Instant::now() > deadline {
            bail!("only {done} of {n} tasks completed within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Throughput of a drain as the database saw it: completed runs (claimed by a worker id
/// starting with `worker_prefix`) divided by the time from the first claim to the last
/// completion. Returns (tasks, seconds).
pub async fn drain_rate(pool: &PgPool, queue: &str, worker_prefix: &str) -> Result<(i64, f64)> {
    let (n, secs) = measure::drain_rate(pool, queue, worker_prefix).await?;
    Ok((n, secs.unwrap_or(f64::NAN)))
}

/// A running `absurd-host worker`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct WorkerProc {
    pub child: Child,
    log: PathBuf,
}

/// How to start one worker process.
pub struct WorkerSpec<'a> {
    pub url: &'a str,
    pub config: &'a Path,
    pub queue: &'a str,
    pub concurrency: usize,
    pub worker_id: String,
    /// Recorded as the connections' `application_name`, to find their backends.
    pub app: &'a str,
}

impl WorkerProc {
    pub fn start(spec: &WorkerSpec) -> Result<WorkerProc> {
        Self::start_with(spec, &[], &[])
    }

    /// [`WorkerProc::start`] with more arguments and environment variables.
    pub fn start_with(
        spec: &WorkerSpec,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<WorkerProc> {
        let exe = std::env::current_exe().context("cannot find the absurd-host executable")?;
        let log = std::env::temp_dir().join(format!("{}.log", spec.worker_id.replace(':', "-")));
        let url = with_param(spec.url, "application_name", spec.app);
        let child = Command::new(exe)
            .arg("worker")
            .arg("--database-url")
            .arg(&url)
            .arg("--config")
            .arg(spec.config)
            .args(["--queue", spec.queue])
            .args(["--concurrency", &spec.concurrency.to_string()])
            .args(["--worker-id", &spec.worker_id])
            .args(["--dlq-enabled", "false", "--no-create-queues"])
            // The default log level, as in production.
            .env_remove("ABSURD_LOG")
            .env_remove("ABSURD_QUEUE_NAME")
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start `absurd-host worker`")?;
        Ok(WorkerProc { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, up to 10 s to exit, then SIGKILL.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Waits until a connection of `app` on `db` is listening for wake-ups: the worker is then
/// started, idle and ready.
pub async fn wait_listening(server: &Server, db: &str, app: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let n = measure::listening_backends(&server.admin, db, app).await?;
        if n > 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the worker did not start listening within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes the worker configuration the scenarios use into `dir` and returns its path:
/// `noop` (builtin), `echo` (builtin), `wasm-echo` and, when built, `wasm-noop` (components
/// from `components`), `block` (the zoo guest blocked in a WASI sleep), and, when built,
/// `workflow` and `fanout` (which may spawn any task type of the host).
pub fn write_config(dir: &Path, components: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut toml = String::from(
        "# written by absurd-host bench\n[sandbox]\nmemory_mb = 64\n\n\
         [tasks.noop]\nkind = \"builtin\"\n\n[tasks.echo]\nkind = \"builtin\"\n\n",
    );
    let component = |name: &str| components.join(format!("{name}.wasm"));
    if !component("echo").is_file() {
        bail!(
            "{} is missing: build the example components first (scripts/build-examples), or pass --components",
            component("echo").display()
        );
    }
    toml.push_str(&format!(
        "[tasks.wasm-echo]\nkind = \"wasm\"\ncomponent = {:?}\n\n",
        component("echo")
    ));
    if component("noop").is_file() {
        toml.push_str(&format!(
            "[tasks.wasm-noop]\nkind = \"wasm\"\ncomponent = {:?}\n\n",
            component("noop")
        ));
    }
    if component("zoo").is_file() {
        toml.push_str(&format!(
            "[tasks.block]\nkind = \"wasm\"\ncomponent = {:?}\ntimeout = 600\n\n",
            component("zoo")
        ));
    }
    // The workflow runner and the fan-out example, spawning the builtin noop.
    for name in ["workflow", "fanout"] {
        if component(name).is_file() {
            toml.push_str(&format!(
                "[tasks.{name}]\nkind = \"wasm\"\ncomponent = {:?}\ntimeout = 300\nspawn_tasks = [\"*\"]\nspawn_queues = [\"*\"]\n\n",
                component(name)
            ));
        }
    }
    let path = dir.join("absurd-host.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_point_at_another_database() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5432/postgres", "b1"),
            "postgres://u@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgresql://u@/db?host=/tmp/s&port=5", "b2"),
            "postgresql://u@/b2?host=/tmp/s&port=5"
        );
        assert_eq!(
            with_database("postgres://127.0.0.1", "b3"),
            "postgres://127.0.0.1/b3"
        );
        assert_eq!(
            with_param("postgres://h/db", "application_name", "x"),
            "postgres://h/db?application_name=x"
        );
        assert_eq!(
            with_param("postgres://h/db?port=1", "a", "b"),
            "postgres://h/db?port=1&a=b"
        );
    }

    #[test]
    fn cpu_deltas_count_new_backends_in_full() {
        let before = HashMap::from([(1, 1.0), (2, 2.0)]);
        let after = HashMap::from([(1, 1.5), (2, 2.0), (3, 0.25)]);
        assert!((cpu_delta(&before, &after) - 0.75).abs() < 1e-9);
    }

    #[test]
    fn own_process_has_cpu_and_rss() {
        let pid = std::process::id();
        assert!(proc_cpu_secs(pid).is_some());
        assert!(proc_rss_mib(pid).unwrap() > 0.0);
    }
}
