//! Shared test fixtures: a fresh database per test on the real PostgreSQL server.
//!
//! The server is the one `.ci/run` (or `scripts/test`) makes sure is running; its admin URL
//! comes from `ABSURD_TEST_ADMIN_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! Every [`TestDb`] is a new database with a unique name, dropped again when the value is
//! dropped, so tests run in parallel without seeing each other.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use sqlx::{Connection, PgConnection, PgPool};

pub fn admin_url() -> String {
    std::env::var("ABSURD_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// The URL of database `name` on the admin URL's server.
pub fn db_url(name: &str) -> String {
    let admin = admin_url();
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b.to_string(), format!("?{q}")),
        None => (admin.clone(), String::new()),
    };
    let base = base
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(base);
    format!("{base}/{name}{query}")
}

/// Repository root (the directory holding the workspace `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Python virtualenv with `absurd-sdk` and `absurdctl` (made by `scripts/setup-python`).
pub fn venv() -> PathBuf {
    std::env::var_os("ABSURD_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"))
}

pub fn venv_bin(name: &str) -> PathBuf {
    let p = venv().join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `scripts/setup-python` (the README's test command does) first",
        p.display()
    );
    p
}

pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

async fn admin_conn() -> PgConnection {
    PgConnection::connect(&admin_url())
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {}: {e}", admin_url()))
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

impl TestDb {
    /// An empty database (no schema).
    pub async fn empty() -> TestDb {
        Self::create(&unique_name("ah_test"), None).await
    }

    /// A database migrated by absurd-host's own migrations.
    pub async fn migrated() -> TestDb {
        let db = Self::empty().await;
        absurd_client::db::migrate(&db.pool)
            .await
            .expect("migrate a fresh database");
        db
    }

    /// A database holding the DSA-110 seed's own schema (`tests/fixtures/seed/schema.sql`,
    /// from the pipeline spec's Appendix A), without tasks.
    pub async fn seed() -> TestDb {
        let db = Self::empty().await;
        let path = repo_root().join("host/tests/fixtures/seed/schema.sql");
        let sql = std::fs::read_to_string(&path).unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        db
    }

    /// A database whose schema was installed by `absurdctl init` (the upstream SQL).
    pub async fn upstream() -> TestDb {
        let template = upstream_template().await;
        Self::create(&unique_name("ah_up"), Some(&template)).await
    }

    async fn create(name: &str, template: Option<&str>) -> TestDb {
        let mut admin = admin_conn().await;
        let sql = match template {
            Some(t) => format!("create database \"{name}\" template \"{t}\""),
            None => format!("create database \"{name}\""),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = db_url(name);
        let pool = absurd_client::db::connect(&url, 8)
            .await
            .expect("connect to test database");
        TestDb {
            name: name.to_string(),
            url,
            pool,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort: `dropdb --force` ends the pool's connections for us.
        let _ = Command::new("dropdb")
            .args(["--if-exists", "--force"])
            .arg(format!("--maintenance-db={}", admin_url()))
            .arg(&self.name)
            .output();
    }
}

const UPSTREAM_TEMPLATE: &str = "ah_upstream_template_0_5_1";

/// Creates (once per server) a template database holding the upstream 0.5.1 schema installed
/// by the real `absurdctl init`, so each upstream test only pays for a cheap copy.
async fn upstream_template() -> String {
    let mut admin = admin_conn().await;
    // Serialise template creation across concurrently running test binaries.
    sqlx::query("select pg_advisory_lock(551551)")
        .execute(&mut admin)
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
            .bind(UPSTREAM_TEMPLATE)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if !exists {
        let building = format!("{UPSTREAM_TEMPLATE}_building");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "drop database if exists \"{building}\" with (force)"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "create database \"{building}\""
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let out = Command::new(venv_bin("absurdctl"))
            .args(["init", "-d"])
            .arg(db_url(&building))
            .output()
            .expect("run absurdctl init");
        assert!(
            out.status.success(),
            "absurdctl init failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "alter database \"{building}\" rename to \"{UPSTREAM_TEMPLATE}\""
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
    sqlx::query("select pg_advisory_unlock(551551)")
        .execute(&mut admin)
        .await
        .unwrap();
    UPSTREAM_TEMPLATE.to_string()
}

/// A task in the seed's table, as the seed's functions leave one: `(id, queue, task name,
/// params, priority, timeout_sec, status, worker, attempt, max_retries, result, error)`.
#[allow(clippy::too_many_arguments)]
pub async fn seed_task(
    pool: &PgPool,
    queue: &str,
    task_name: &str,
    params: serde_json::Value,
    priority: i32,
    timeout_sec: Option<i32>,
    status: &str,
    attempt: i32,
    result: Option<serde_json::Value>,
    error: Option<&str>,
) -> uuid::Uuid {
    let finished = ["completed", "failed", "cancelled"].contains(&status);
    sqlx::query_scalar(
        "insert into absurd.tasks (queue_name, task_name, params, priority, timeout_sec, status, \
             worker_id, attempt, result, error, created_at, claimed_at, completed_at, \
             wait_time_sec, execution_time_sec) \
         values ($1, $2, $3, $4, $5, $6, case when $7 > 0 then 'seed-worker-1' end, $7, $8, $9, \
             clock_timestamp() - interval '1 hour', \
             case when $7 > 0 then clock_timestamp() - interval '50 minutes' end, \
             case when $10 then clock_timestamp() - interval '40 minutes' end, \
             case when $7 > 0 then 600.0 end, case when $10 then 600.0 end) \
         returning task_id",
    )
    .bind(queue)
    .bind(task_name)
    .bind(params)
    .bind(priority)
    .bind(timeout_sec)
    .bind(status)
    .bind(attempt)
    .bind(result)
    .bind(error)
    .bind(finished)
    .fetch_one(pool)
    .await
    .unwrap()
}

// ---- worker processes ----------------------------------------------------------------------

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Writes `text` to a fresh temporary file and returns its path. Its directory lives until
/// the test process exits (see [`temp_dir`]).
pub fn temp_file(name: &str, text: &str) -> PathBuf {
    let p = temp_dir().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A fresh empty temporary directory, removed when the test process exits.
///
/// Tests hand these paths to worker processes and keep using them after the helper that made
/// them returns, so a guard dropped at the end of a scope would remove them too early. Each
/// `TempDir` goes instead into a registry that an `atexit` hook empties (libtest ends with
/// `exit` whether tests pass or fail), which removes the directories. A test binary killed by
/// a signal leaves them behind, as any process would.
pub fn temp_dir() -> PathBuf {
    static REGISTRY: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());
    static HOOK: std::sync::Once = std::sync::Once::new();

    extern "C" fn remove_all() {
        // Never panic here (unwinding out of an atexit hook aborts): take the list even if a
        // panicking test poisoned the lock.
        let dirs = std::mem::take(&mut *REGISTRY.lock().unwrap_or_else(|e| e.into_inner()));
        drop(dirs);
    }

    HOOK.call_once(|| {
        // SAFETY: registers a plain function with no arguments; it runs once, at exit.
        let rc = unsafe { libc::atexit(remove_all) };
        assert_eq!(rc, 0, "atexit failed");
    });
    let dir = tempfile::Builder::new()
        .prefix("absurd-host-test-")
        .tempdir()
        .unwrap();
    let path = dir.path().to_path_buf();
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
    path
}

/// A running `absurd-host worker` process, killed when dropped. Its stderr goes to a log file
/// that is printed if the test fails.
pub struct WorkerProc {
    pub child: Child,
    pub log: PathBuf,
}

impl WorkerProc {
    pub fn start(db_url: &str, config: &Path, args: &[&str]) -> WorkerProc {
        let log = temp_file("worker.log", "");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_absurd-host"));
        cmd.arg("worker")
            .arg("--database-url")
            .arg(db_url)
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("ABSURD_QUEUE_NAME")
            .env_remove("ABSURD_DATABASE_URL")
            .env(
                "ABSURD_LOG",
                "info,sqlx=warn,absurd_host=debug,absurd_engine=debug,absurd_client=debug",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("start absurd-host worker");
        WorkerProc { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- worker log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it returns `Ok`, failing the test after `limit` with `what` and the
/// last `Err` it gave (what was still missing).
pub async fn wait_for_ok<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; last check: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- example components ----------------------------------------------------------------------

/// The directory holding the example components (`echo.wasm`, `durable.wasm`, `pipeline.wasm`,
/// `zoo.wasm`), built by `scripts/build-examples` the first time a test asks for it.
pub fn components_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("scripts").join("build-examples");
        let out = Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "scripts/build-examples failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| PathBuf::from(l.rsplit(' ').next().unwrap()))
            .expect("build-examples prints the components directory last");
        assert!(
            dir.join("echo.wasm").is_file(),
            "no echo.wasm in {}",
            dir.display()
        );
        dir
    })
    .clone()
}

// ---- tasks -----------------------------------------------------------------------------------

use absurd_client::{Client, RetryStrategy, SpawnOptions, State, TaskResult};

/// Spawn options: at most `max_attempts` attempts, retried at once (no back-off).
pub fn no_backoff(max_attempts: i32) -> SpawnOptions {
    SpawnOptions {
        max_attempts: Some(max_attempts),
        retry_strategy: Some(RetryStrategy::none()),
        ..Default::default()
    }
}

/// A migrated database with `queue` created, and a client for it.
pub async fn setup(queue: &str) -> (TestDb, Client) {
    let db = TestDb::migrated().await;
    let client = Client::new(db.pool.clone());
    client.create_queue(queue).await.unwrap();
    (db, client)
}

/// Waits until the task is completed, failed or cancelled, and returns its result.
pub async fn terminal(
    client: &Client,
    queue: &str,
    task: uuid::Uuid,
    limit: Duration,
) -> TaskResult {
    wait_for(&format!("task {task} to finish"), limit, || async {
        client
            .task_result(queue, task)
            .await
            .unwrap()
            .filter(|r| r.state.is_terminal())
    })
    .await
}

/// The CASA venv `scripts/setup-casa` makes (`ABSURD_CASA_VENV` overrides it).
pub fn casa_venv() -> PathBuf {
    if let Some(v) = std::env::var_os("ABSURD_CASA_VENV") {
        return PathBuf::from(v);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    cache.join("absurd-host").join("venv-casa")
}

/// The CASA venv, or None after printing why the test is skipped (a panic instead with
/// `ABSURD_REQUIRE_CASA=1`).
pub fn casa_or_skip(test: &str) -> Option<PathBuf> {
    let venv = casa_venv();
    if venv.join(".absurd-casa-requirements").exists() && venv.join("bin/python").exists() {
        return Some(venv);
    }
    let why = format!(
        "skipped: {test}: no CASA venv at {} (run scripts/setup-casa, or set ABSURD_CASA_VENV)",
        venv.display()
    );
    if std::env::var_os("ABSURD_REQUIRE_CASA").is_some_and(|v| v == "1") {
        panic!("{why}; ABSURD_REQUIRE_CASA=1");
    }
    // Written to the process's stderr directly: libtest's capture (which hides the output of
    // passing tests) only takes print!/eprint!, so the skip stays visible in every run.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{why}");
    None
}

/// Spawns one task (no backoff, `attempts` attempts), waits up to `limit` for its end, and
/// returns its id and result row.
pub async fn run_one(
    client: &Client,
    queue: &str,
    task: &str,
    params: serde_json::Value,
    attempts: i32,
    limit: Duration,
) -> (uuid::Uuid, TaskResult) {
    let id = client
        .spawn(queue, task, &params, &no_backoff(attempts))
        .await
        .unwrap()
        .task_id;
    let r = terminal(client, queue, id, limit).await;
    (id, r)
}

/// The failure reason of a result that must be a failure.
pub fn failure(r: &TaskResult) -> &serde_json::Value {
    assert_eq!(r.state, State::Failed, "expected a failure, got {r:?}");
    r.failure_reason.as_ref().expect("a failure reason")
}
