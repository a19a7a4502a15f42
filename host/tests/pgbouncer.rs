//! Many hosts on one PostgreSQL: worker processes through PgBouncer in transaction-pooling
//! mode, with and without a direct listen URL, and the API reading from a read URL.
//!
//! Each PgBouncer test starts its own `pgbouncer` (Debian's package, 1.18: no protocol-level
//! prepared statements in transaction mode) on a free port, pointing at the test server, with
//! few server connections and round-robin server choice, so that statements of different
//! clients share and swap server connections all the time. `scripts/setup-pgbouncer` (run by
//! `scripts/test`) installs it; a test is skipped, saying so, only when the binary is missing
//! and that script cannot install it.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use absurd_client::{Client, SpawnOptions};
use absurd_engine::metrics::Counters;
use absurd_host::api::ApiSettings;
use axum::body::Body;
use common::{temp_dir, temp_file, wait_for, TestDb, WorkerProc};
use serde_json::{json, Value};
use sqlx::Connection;
use tower::ServiceExt;

const QUEUE: &str = "bounced";
const TASKS: usize = 300;
/// Tasks that fail for good (and go to the dead-letter queue), beside them.
const FAILS: usize = 20;
const WORKERS: usize = 4;

/// The pgbouncer binary, installing Debian's package through `scripts/setup-pgbouncer` when
/// it is missing; `None` only when that fails.
fn pgbouncer_binary() -> Option<PathBuf> {
    fn find() -> Option<PathBuf> {
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
    if let Some(b) = find() {
        return Some(b);
    }
    let script = common::repo_root().join("scripts/setup-pgbouncer");
    let out = Command::new(&script).output();
    match out {
        Ok(o) if o.status.success() => find(),
        Ok(o) => {
            eprintln!(
                "skipped: pgbouncer is not installed and {} failed:\n{}{}",
                script.display(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("skipped: cannot run {}: {e}", script.display());
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private pgbouncer process in transaction-pooling mode, killed when dropped.
struct Bouncer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Bouncer {
    async fn start(binary: &Path) -> Bouncer {
        let dir = temp_dir();
        // pgbouncer refuses to run as root; as root it is started with `-u postgres`, which
        // must be able to read its files.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let (host, pg_port, user) = server();
        let users = dir.join("users.txt");
        std::fs::write(&users, format!("\"{user}\" \"\"\n")).unwrap();
        let port = free_port();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host={host} port={pg_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 admin_users = {user}\n\
                 pool_mode = transaction\n\
                 default_pool_size = 4\n\
                 max_client_conn = 1000\n\
                 server_round_robin = 1\n\
                 ignore_startup_parameters = extra_float_digits\n",
                users = users.display()
            ),
        )
        .unwrap();
        let log = dir.join("pgbouncer.log");
        let mut cmd = Command::new(binary);
        if root {
            cmd.arg("-u").arg("postgres");
        }
        cmd.arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("start pgbouncer");
        let bouncer = Bouncer { child, port, log };
        let probe = bouncer.url("postgres");
        wait_for(
            "pgbouncer to accept connections",
            Duration::from_secs(30),
            || {
                let probe = probe.clone();
                async move {
                    let mut c = sqlx::PgConnection::connect(&probe).await.ok()?;
                    let one: i32 = sqlx::raw_sql(sqlx::AssertSqlSafe("select 1"))
                        .fetch_one(&mut c)
                        .await
                        .ok()
                        .map(|r| sqlx::Row::get(&r, 0))?;
                    (one == 1).then_some(())
                }
            },
        )
        .await;
        bouncer
    }

    fn url(&self, database: &str) -> String {
        let (_, _, user) = server();
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// Transactions PgBouncer ran for `database` (`SHOW STATS` on its admin console).
    async fn transactions(&self, database: &str) -> i64 {
        let mut admin = sqlx::PgConnection::connect(&self.url("pgbouncer"))
            .await
            .expect("pgbouncer's admin console");
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe("show stats"))
            .fetch_all(&mut admin)
            .await
            .expect("SHOW STATS");
        rows.iter()
            .find(|r| {
                sqlx::Row::try_get::<String, _>(*r, "database")
                    .ok()
                    .as_deref()
                    == Some(database)
            })
            // The admin console answers in text; the counters are numeric.
            .map(|r| {
                sqlx::Row::try_get_unchecked::<String, _>(r, "total_xact_count")
                    .expect("total_xact_count")
                    .parse()
                    .expect("a count")
            })
            .unwrap_or(0)
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- pgbouncer log ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

const CONFIG: &str = r#"
[tasks.steps]
kind = "builtin"
builtin = "steps"

[tasks.fail]
kind = "builtin"
builtin = "fail"
"#;

/// Spawns [`TASKS`] `steps` tasks (two checkpoints each, one attempt allowed) and [`FAILS`]
/// `fail` tasks (three attempts allowed, failing for good at the first), runs [`WORKERS`]
/// worker processes on them through `bouncer`, and checks that every `steps` task completed
/// exactly once, with its result, and every `fail` task failed once and reached the
/// dead-letter queue once.
async fn run_fleet(bouncer: &Bouncer, db: &TestDb, extra_env: &[(&str, &str)]) -> Vec<WorkerProc> {
    let client = Client::new(db.pool.clone());
    client.create_queue(QUEUE).await.unwrap();
    let tasks: Vec<(String, Value)> = (0..TASKS)
        .map(|i| ("steps".to_string(), json!({"count": 2, "i": i})))
        .collect();
    let options = SpawnOptions {
        max_attempts: Some(1),
        ..Default::default()
    };
    let spawned = client.spawn_batch(QUEUE, &tasks, &options).await.unwrap();
    assert_eq!(spawned.len(), TASKS);
    let fails: Vec<(String, Value)> = (0..FAILS)
        .map(|i| ("fail".to_string(), json!({"permanent": true, "i": i})))
        .collect();
    let fail_options = SpawnOptions {
        max_attempts: Some(3),
        ..Default::default()
    };
    client
        .spawn_batch(QUEUE, &fails, &fail_options)
        .await
        .unwrap();

    let config = temp_file("absurd-host.toml", CONFIG);
    let pooled_url = bouncer.url(&db.name);
    let workers: Vec<WorkerProc> = (0..WORKERS)
        .map(|i| {
            let id = format!("bounced-{i}");
            start_worker(
                &pooled_url,
                &config,
                &[
                    "--queue",
                    QUEUE,
                    "--concurrency",
                    "8",
                    "--poll-interval",
                    "0.1",
                    "--db-pooling",
                    "transaction",
                    "--db-max-connections",
                    "4",
                    "--worker-id",
                    &id,
                ],
                extra_env,
            )
        })
        .collect();

    let done = wait_for(
        "every task to finish through PgBouncer",
        Duration::from_secs(240),
        || {
            let pool = db.pool.clone();
            async move {
                let (finished,): (i64,) = sqlx::query_as(
                    "select count(*) from absurd.t_bounced where state in ('completed', 'failed', 'cancelled')",
                )
                .fetch_one(&pool)
                .await
                .ok()?;
                (finished as usize == TASKS + FAILS).then_some(finished)
            }
        },
    )
    .await;
    assert_eq!(done as usize, TASKS + FAILS);

    // Exactly once: every task completed, each with one run (its first attempt), and every
    // result is what the task computes.
    let (completed, runs, first_attempts, right_results, workers_seen): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "select (select count(*) from absurd.t_bounced where state = 'completed'),
                    (select count(*) from absurd.r_bounced r join absurd.t_bounced t using (task_id)
                      where t.task_name = 'steps'),
                    (select count(*) from absurd.r_bounced where attempt = 1 and state = 'completed'),
                    (select count(*) from absurd.t_bounced
                      where completed_payload = '[0, 1]'::jsonb),
                    (select count(distinct claimed_by) from absurd.r_bounced)",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let logs: String = workers.iter().map(|w| w.log_text()).collect();
    assert_eq!(completed as usize, TASKS, "completed tasks\n{logs}");
    assert_eq!(runs as usize, TASKS, "one run per task\n{logs}");
    assert_eq!(
        first_attempts as usize, TASKS,
        "every run completed on its first attempt"
    );
    assert_eq!(right_results as usize, TASKS, "every result is [0, 1]");
    eprintln!("{TASKS} tasks completed by {workers_seen} of {WORKERS} workers");
    // The failures: each task failed at its one run, and was copied to the dead-letter queue
    // once.
    let (failed, fail_runs): (i64, i64) = sqlx::query_as(
        "select (select count(*) from absurd.t_bounced where state = 'failed' and task_name = 'fail'),
                (select count(*) from absurd.r_bounced r join absurd.t_bounced t using (task_id)
                  where t.task_name = 'fail')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(failed as usize, FAILS, "failed tasks\n{logs}");
    assert_eq!(fail_runs as usize, FAILS, "one run per failed task\n{logs}");
    wait_for(
        "every failed task in the dead-letter queue",
        Duration::from_secs(60),
        || {
            let pool = db.pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar(r#"select count(*) from absurd."t_bounced-dlq""#)
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                (n as usize >= FAILS).then_some(())
            }
        },
    )
    .await;
    let dead: i64 = sqlx::query_scalar(r#"select count(*) from absurd."t_bounced-dlq""#)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(dead as usize, FAILS, "each failed task dead-lettered once");
    for w in &workers {
        let log = w.log_text();
        assert!(
            !log.contains("prepared statement"),
            "a prepared-statement error through PgBouncer:\n{log}"
        );
    }
    // The workers' statements went through PgBouncer, each in a transaction of its own.
    let through = bouncer.transactions(&db.name).await;
    assert!(
        through as usize >= TASKS * 2,
        "PgBouncer ran only {through} transactions for {TASKS} tasks"
    );
    workers
}

/// `absurd-host worker` on `url` with `config`, `args` and extra environment variables (the
/// connection variables of the test's own environment removed).
fn start_worker(url: &str, config: &Path, args: &[&str], env: &[(&str, &str)]) -> WorkerProc {
    let log = temp_file("worker.log", "");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_absurd-host"));
    cmd.arg("worker")
        .arg("--database-url")
        .arg(url)
        .arg("--config")
        .arg(config)
        .args(args);
    for var in [
        "ABSURD_QUEUE_NAME",
        "ABSURD_DATABASE_URL",
        "ABSURD_LISTEN_URL",
        "ABSURD_DB_POOLING",
        "ABSURD_DB_MAX_CONNECTIONS",
        "ABSURD_API_MAX_CONNECTIONS",
        "ABSURD_API_READ_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .env("ABSURD_LOG", "info,sqlx=warn,absurd_engine=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let child = cmd.spawn().expect("start absurd-host worker");
    WorkerProc { child, log }
}

/// The test server's host, port and user.
fn server() -> (String, u16, String) {
    let o: sqlx::postgres::PgConnectOptions = common::admin_url().parse().unwrap();
    (
        o.get_host().to_string(),
        o.get_port(),
        o.get_username().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_workers_complete_every_task_once_polling_without_a_listen_url() {
    let Some(binary) = pgbouncer_binary() else {
        return;
    };
    let bouncer = Bouncer::start(&binary).await;
    let db = TestDb::migrated().await;
    let workers = run_fleet(&bouncer, &db, &[]).await;
    for w in &workers {
        let log = w.log_text();
        assert!(
            log.contains("claiming on the poll interval"),
            "a pooled worker without a listen URL says it polls:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_workers_complete_every_task_once_listening_on_a_direct_url() {
    let Some(binary) = pgbouncer_binary() else {
        return;
    };
    let bouncer = Bouncer::start(&binary).await;
    let db = TestDb::migrated().await;
    let direct = format!("{}?application_name=absurd-listen", db.url);
    let workers = run_fleet(&bouncer, &db, &[("ABSURD_LISTEN_URL", &direct)]).await;
    // Each worker's LISTEN session is a direct one, named by the listen URL.
    let (listening,): (i64,) = sqlx::query_as(
        "select count(*) from pg_stat_activity
          where datname = current_database() and application_name = 'absurd-listen'
            and query ilike 'listen%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        listening as usize, WORKERS,
        "one direct LISTEN session per worker"
    );
    for w in &workers {
        let log = w.log_text();
        assert!(
            !log.contains("claiming on the poll interval"),
            "a worker with a listen URL listens:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_worker_with_maintenance_needs_a_listen_url() {
    let db = TestDb::migrated().await;
    let config = temp_file(
        "absurd-host.toml",
        &format!(
            "{CONFIG}\n[maintenance]\nenabled = true\n[maintenance.retention]\ncompleted = 7\n"
        ),
    );
    let mut w = start_worker(
        &db.url,
        &config,
        &["--queue", QUEUE, "--db-pooling", "transaction"],
        &[],
    );
    let status = w
        .wait_exit(Duration::from_secs(60))
        .expect("the worker refuses to start");
    assert!(!status.success());
    let log = w.log_text();
    assert!(
        log.contains("needs a direct session") && log.contains("ABSURD_LISTEN_URL"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connection_settings_are_refused_naming_the_value() {
    let db = TestDb::migrated().await;
    let config = temp_file("absurd-host.toml", CONFIG);
    for (args, env, needle) in [
        (
            vec!["--db-max-connections", "1"],
            vec![],
            "must be between 2 and 10000 connections, got 1",
        ),
        (
            vec![],
            vec![("ABSURD_DB_POOLING", "statement")],
            "\"statement\" is not a pooling mode",
        ),
        (
            vec![],
            vec![("ABSURD_API_MAX_CONNECTIONS", "many")],
            "\"many\" is not an integer",
        ),
        (
            vec![],
            vec![("ABSURD_LISTEN_URL", "postgresql://u:hunter2@h:port/x")],
            "postgresql://u:***@h:port/x",
        ),
    ] {
        let mut all: Vec<&str> = vec!["--queue", QUEUE];
        all.extend(args.iter());
        let mut w = start_worker(&db.url, &config, &all, &env);
        let status = w
            .wait_exit(Duration::from_secs(60))
            .expect("the worker refuses to start");
        assert!(!status.success());
        let log = w.log_text();
        assert!(log.contains(needle), "{args:?} {env:?}: {log}");
        assert!(!log.contains("hunter2"), "{log}");
    }
}

async fn get(router: &axum::Router, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", absurd_host::api::DEFAULT_LISTEN);
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(serde_json::to_vec(&b).unwrap())
        }
        None => Body::empty(),
    };
    let resp = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The read-only routes read from the read URL, writes and health go to the database URL.
/// The "replica" here is a second database, so where each request went shows in what it
/// finds; the read URL also names its sessions, which shows in `pg_stat_activity`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_from_the_read_url_and_writes_to_the_database_url() {
    let primary = TestDb::migrated().await;
    let replica = TestDb::migrated().await;
    let pc = Client::new(primary.pool.clone());
    let rc = Client::new(replica.pool.clone());
    pc.create_queue(QUEUE).await.unwrap();
    rc.create_queue(QUEUE).await.unwrap();
    let only_on_replica = rc
        .spawn(QUEUE, "steps", &json!({}), &SpawnOptions::default())
        .await
        .unwrap()
        .task_id;

    let connections = absurd_host::connections::Connections {
        api_read_url: Some(format!("{}?application_name=absurd-api-read", replica.url)),
        ..Default::default()
    };
    let mut settings = ApiSettings::default();
    let clients = connections
        .api_clients(&primary.url, settings.statement_timeout)
        .unwrap();
    settings.set_read_client(clients.reads);
    let router = absurd_host::api::router(clients.primary, settings, Counters::default());

    let (status, body) = get(
        &router,
        "GET",
        &format!("/api/absurd/tasks/{only_on_replica}?queue_name={QUEUE}"),
        None,
    )
    .await;
    assert_eq!(
        status, 200,
        "the task that exists only on the read URL: {body}"
    );
    let (status, body) = get(
        &router,
        "POST",
        "/api/absurd/tasks",
        Some(json!({"task_name": "steps", "queue_name": QUEUE, "params": {}})),
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let spawned = body["task_id"].as_str().expect("task_id").to_string();
    let on_primary: i64 =
        sqlx::query_scalar("select count(*) from absurd.t_bounced where task_id = $1::uuid")
            .bind(&spawned)
            .fetch_one(&primary.pool)
            .await
            .unwrap();
    assert_eq!(on_primary, 1, "the write went to the database URL");
    let (status, body) = get(&router, "GET", "/api/absurd/health", None).await;
    assert_eq!(status, 200, "{body}");

    let (read_sessions,): (i64,) = sqlx::query_as(
        "select count(*) from pg_stat_activity where application_name = 'absurd-api-read' and datname = $1",
    )
    .bind(&replica.name)
    .fetch_one(&primary.pool)
    .await
    .unwrap();
    assert!(
        read_sessions >= 1,
        "the read pool's sessions are on the replica"
    );
    let (misrouted,): (i64,) = sqlx::query_as(
        "select count(*) from pg_stat_activity where application_name = 'absurd-api-read' and datname = $1",
    )
    .bind(&primary.name)
    .fetch_one(&primary.pool)
    .await
    .unwrap();
    assert_eq!(misrouted, 0);
}

/// The API through PgBouncer in transaction mode: spawning and reading work, and its
/// `statement_timeout` holds in every transaction (a `set local`, not a session's `SET`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_works_through_pgbouncer_with_its_statement_timeout() {
    let Some(binary) = pgbouncer_binary() else {
        return;
    };
    let bouncer = Bouncer::start(&binary).await;
    let db = TestDb::migrated().await;
    Client::new(db.pool.clone())
        .create_queue(QUEUE)
        .await
        .unwrap();
    let connections = absurd_host::connections::Connections {
        pooling: absurd_client::pooling::Pooling::Transaction,
        ..Default::default()
    };
    let settings = ApiSettings {
        statement_timeout: Duration::from_millis(4321),
        ..Default::default()
    };
    let clients = connections
        .api_clients(&bouncer.url(&db.name), settings.statement_timeout)
        .unwrap();
    for _ in 0..20 {
        let shown: String = sqlx::query_scalar("show statement_timeout")
            .fetch_one(clients.primary.db())
            .await
            .unwrap();
        assert_eq!(shown, "4321ms");
    }
    let router = absurd_host::api::router(clients.primary, settings, Counters::default());
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, body) = get(
            &router,
            "POST",
            "/api/absurd/tasks",
            Some(json!({"task_name": "steps", "queue_name": QUEUE, "params": {"i": i}})),
        )
        .await;
        assert!(status == 200 || status == 201, "{status} {body}");
        ids.push(body["task_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let (status, body) = get(
            &router,
            "GET",
            &format!("/api/absurd/tasks/{id}?queue_name={QUEUE}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = get(&router, "GET", "/api/absurd/health", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(bouncer.transactions(&db.name).await >= 40);
}

/// Explicit transactions (`Db::begin`, what schedule firing and permanent failures use) and
/// single statements with parameters, from many tasks at once, through PgBouncer's four
/// server connections: every statement gets its own parameters back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_statements_from_many_clients_through_pgbouncer() {
    let Some(binary) = pgbouncer_binary() else {
        return;
    };
    let bouncer = Bouncer::start(&binary).await;
    let db = TestDb::migrated().await;
    let pooled = absurd_client::db::connect_db(
        &bouncer.url(&db.name),
        16,
        absurd_client::pooling::Pooling::Transaction,
    )
    .await
    .unwrap();
    let mut jobs = tokio::task::JoinSet::new();
    for job in 0..16i64 {
        let pooled = pooled.clone();
        jobs.spawn(async move {
            for round in 0..20i64 {
                let mut tx = pooled.begin().await.unwrap();
                for k in 0..3i64 {
                    let want = job * 10_000 + round * 10 + k;
                    let (got, text): (i64, String) = sqlx::query_as("select $1::int8, $2::text")
                        .bind(want)
                        .bind(want.to_string())
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                    assert_eq!((got, text), (want, want.to_string()));
                }
                tx.commit().await.unwrap();
                let want = -(job * 10_000 + round);
                let got: i64 = sqlx::query_scalar("select $1::int8")
                    .bind(want)
                    .fetch_one(&pooled)
                    .await
                    .unwrap();
                assert_eq!(got, want);
            }
        });
    }
    while let Some(r) = jobs.join_next().await {
        r.unwrap();
    }
    assert!(bouncer.transactions(&db.name).await >= 16 * 20 * 2);
}

/// A worker told nothing about the pooler in front warns, naming the setting: the server
/// sees its connections arrive on another port than the URL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_not_told_about_the_pooler_says_what_to_set() {
    let Some(binary) = pgbouncer_binary() else {
        return;
    };
    let bouncer = Bouncer::start(&binary).await;
    let db = TestDb::migrated().await;
    let config = temp_file("absurd-host.toml", CONFIG);
    let w = start_worker(&bouncer.url(&db.name), &config, &["--queue", QUEUE], &[]);
    wait_for(
        "the warning about the pooler",
        Duration::from_secs(60),
        || {
            let log = w.log_text();
            async move {
                log.contains("set ABSURD_DB_POOLING=transaction")
                    .then_some(())
            }
        },
    )
    .await;
    // Straight to the server, no such warning.
    let direct = start_worker(&db.url, &config, &["--queue", QUEUE], &[]);
    wait_for(
        "the direct worker to start",
        Duration::from_secs(60),
        || {
            let log = direct.log_text();
            async move { log.contains("worker pool").then_some(()) }
        },
    )
    .await;
    assert!(!direct.log_text().contains("ABSURD_DB_POOLING"));
}
