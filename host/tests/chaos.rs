//! Reliability under chaos: fleets of real `absurd-host worker` processes against real
//! PostgreSQL while workers are killed, paused, drained, their connections terminated, their
//! tables locked, their database restarted, their clock moved, and poison tasks crash their
//! sandboxes. Every scenario ends with the same invariant checks, made by queries (see
//! [`check`] and docs/reliability.md).
//!
//! Scale: `ABSURD_CHAOS_SCALE` (default 1) multiplies task counts and disturbance durations,
//! for a soak: `ABSURD_CHAOS_SCALE=20 cargo test -p absurd-host --test chaos -- --nocapture`.
//!
//! Every scenario runs on both storage modes: `NAME` on an unpartitioned queue,
//! `NAME_partitioned` on a partitioned one (spec §5.13).
//!
//! Mutation check: `ABSURD_CHAOS_MUTATE=<name>` breaks one guarantee in each scenario's scratch
//! database (never in the repository), so that the scenario's invariant check must fail:
//! `complete-unfenced` (the queue's completion no longer checks the run's state), `no-replay` (runs see
//! no checkpoints), `no-sweep` (claims never fail expired leases), `retry-forever` (fail_run
//! ignores max_attempts), `real-clock` (current_time ignores `absurd.fake_now`), `no-notify`
//! (no wake-up notifications) and `unlogged-queue` (the queue's tables are UNLOGGED, so a crash
//! truncates them). See docs/reliability.md.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use absurd_client::partitions::StorageMode;
use absurd_client::{Client, RetryStrategy, SpawnOptions};
use common::{components_dir, TestDb};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

// ---- scale and scheduling ---------------------------------------------------------------------

fn scale() -> f64 {
    std::env::var("ABSURD_CHAOS_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0)
}

fn scaled(n: usize) -> usize {
    ((n as f64) * scale()).round().max(1.0) as usize
}

fn scaled_secs(s: f64) -> Duration {
    Duration::from_secs_f64(s * scale())
}

/// At most two fleets at once: the suite shares a small machine with other tests, and the
/// lease timings below assume workers get CPU within a second or so.
static FLEETS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// A random number in `lo..hi` (the test needs no reproducible sequence, only variety).
fn rnd(lo: u64, hi: u64) -> u64 {
    lo + (Uuid::new_v4().as_u128() % u128::from(hi - lo)) as u64
}

// ---- the fleet --------------------------------------------------------------------------------

/// One `absurd-host worker` process, killed when dropped; its log is printed if the test fails.
struct Worker {
    child: Child,
    log: PathBuf,
    id: String,
}

impl Worker {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
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
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("---- worker {} log (last lines) ----", self.id);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Workers of one scenario. Each carries `ABSURD_CHAOS_FLEET=<marker>` in its environment
/// (inherited by any child it starts, so leaked children are found even after reparenting) and
/// `TMPDIR` under the fleet's own directory, which also holds native work directories.
struct Fleet {
    url: String,
    cfg: PathBuf,
    queue: String,
    dir: PathBuf,
    marker: String,
    args: Vec<String>,
    workers: Vec<Worker>,
    started: usize,
    kills: usize,
}

impl Fleet {
    fn new(url: &str, queue: &str, extra_config: &str, args: &[&str]) -> Fleet {
        let dir = std::env::temp_dir().join(format!("absurd-chaos-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let cfg = dir.join("absurd-host.toml");
        std::fs::write(&cfg, config_text(&dir, extra_config)).unwrap();
        Fleet {
            url: url.to_string(),
            cfg,
            queue: queue.to_string(),
            dir,
            marker: Uuid::new_v4().simple().to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            workers: vec![],
            started: 0,
            kills: 0,
        }
    }

    fn start_one(&mut self) -> Worker {
        self.started += 1;
        let id = format!("w{}", self.started);
        let log = self.dir.join(format!("{id}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_absurd-host"))
            .arg("worker")
            .arg("--database-url")
            .arg(&self.url)
            .arg("--config")
            .arg(&self.cfg)
            .args(["--queue", &self.queue, "--worker-id", &id])
            .args(&self.args)
            .env_remove("ABSURD_QUEUE_NAME")
            .env_remove("ABSURD_DATABASE_URL")
            .env("ABSURD_LOG", "info,sqlx=warn")
            .env("ABSURD_CHAOS_FLEET", &self.marker)
            .env("TMPDIR", self.dir.join("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start absurd-host worker");
        Worker { child, log, id }
    }

    fn start(&mut self, n: usize) {
        for _ in 0..n {
            let w = self.start_one();
            self.workers.push(w);
        }
    }

    /// SIGKILLs one worker at random and starts a replacement.
    fn kill_random(&mut self) {
        let i = rnd(0, self.workers.len() as u64) as usize;
        let mut w = self.workers.swap_remove(i);
        w.signal(libc::SIGKILL);
        w.wait_exit(Duration::from_secs(10))
            .expect("a SIGKILLed worker exits");
        self.kills += 1;
        let fresh = self.start_one();
        self.workers.push(fresh);
    }

    /// SIGTERMs every worker and waits for each to exit (0) within `limit`.
    fn drain(&mut self, limit: Duration) -> usize {
        // A process signalled before it installed its handler dies of the signal (as any
        // process would); wait until each worker is up, which is after the handler is in place.
        for w in &self.workers {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !std::fs::read_to_string(&w.log)
                .unwrap_or_default()
                .contains("worker starting")
            {
                assert!(Instant::now() < deadline, "worker {} never started", w.id);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for w in &self.workers {
            w.signal(libc::SIGTERM);
        }
        let mut n = 0;
        for w in &mut self.workers {
            let status = w
                .wait_exit(limit)
                .unwrap_or_else(|| panic!("worker {} did not drain within {limit:?}", w.id));
            assert!(status.success(), "worker {} drained with {status}", w.id);
            n += 1;
        }
        self.workers.clear();
        n
    }

    /// Processes still carrying this fleet's marker (after every worker has exited: leaks).
    fn marked_processes(&self) -> Vec<i32> {
        let needle = format!("ABSURD_CHAOS_FLEET={}", self.marker);
        let mut out = vec![];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(env) = std::fs::read(e.path().join("environ")) {
                if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                    out.push(pid);
                }
            }
        }
        out
    }

    /// Entries left in the fleet's TMPDIR and native work root.
    fn leftover_files(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        for sub in ["tmp", "work"] {
            for e in std::fs::read_dir(self.dir.join(sub)).unwrap().flatten() {
                out.push(e.path());
            }
        }
        out
    }

    /// Stops every worker (gracefully) and checks for leaked processes and files. Each SIGKILLed
    /// worker may have left the work directories of its in-flight native runs (at most 4).
    async fn finish(&mut self, figures: &mut Figures) {
        self.drain(Duration::from_secs(40));
        // Children die with their worker (PR_SET_PDEATHSIG) but may take a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut leaked = self.marked_processes();
        while !leaked.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            leaked = self.marked_processes();
        }
        if !leaked.is_empty() {
            figures.violation(format!("leaked child processes: {leaked:?}"));
        }
        let files = self.leftover_files();
        // A SIGKILLed worker cannot remove the work directory of a run it was executing.
        if files.len() > self.kills * 4 {
            figures.violation(format!(
                "{} temp entries left (kills {}): {files:?}",
                files.len(),
                self.kills
            ));
        }
        figures.leftover_workdirs += files.len();
        figures.kills += self.kills;
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.workers.clear();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn native_available() -> bool {
    // The host is built with the native kind (engine/src/dispatch.rs) and `sh` exists.
    Path::new("/bin/sh").exists()
}

fn config_text(dir: &Path, extra: &str) -> String {
    let comps = components_dir();
    format!(
        r#"
[sandbox]
memory_mb = 64
pool_instances = 16

[native]
workdir_root = "{work}"
keep_workdir = "never"
grace = 1

[tasks.ledger]
kind = "builtin"

[tasks.slow]
kind = "builtin"
builtin = "sleep"

[tasks.nap]
kind = "builtin"

[tasks.wait-event]
kind = "builtin"

[tasks.wasm-echo]
kind = "wasm"
component = "{comps}/echo.wasm"

[tasks.poison-wasm]
kind = "wasm"
component = "{comps}/zoo.wasm"
memory_mb = 32
timeout = 10
max_attempts = 3

[tasks.native-sh]
kind = "native"
program = "/bin/sh"
args = ["-c", "sleep 0.2; echo 1 > result.json"]

[tasks.poison-native]
kind = "native"
program = "/bin/sh"
args = ["-c", "kill -9 $$"]
max_attempts = 3
{extra}
"#,
        work = dir.join("work").display(),
        comps = comps.display(),
    )
}

// ---- the database side ------------------------------------------------------------------------

tokio::task_local! {
    /// The storage mode of the queue the running scenario works in (see [`prepare`]).
    static MODE: StorageMode;
}

/// Declares a scenario's two tests: on an unpartitioned queue (under its own name) and on a
/// partitioned one (`_partitioned`).
macro_rules! both_modes {
    ($body:ident => $plain:ident, $partitioned:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $plain() {
            MODE.scope(StorageMode::Unpartitioned, $body()).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $partitioned() {
            MODE.scope(StorageMode::Partitioned, $body()).await
        }
    };
}

/// A scratch database with the ledger table, the queue, and any requested mutation.
async fn prepare(pool: &PgPool, queue: &str) {
    sqlx::raw_sql(
        "create table ledger (task_id uuid not null, run_id uuid not null, attempt int not null, \
         worker_id text not null, step text not null, at timestamptz not null default clock_timestamp())",
    )
    .execute(pool)
    .await
    .unwrap();
    let mode = MODE.try_with(|m| *m).unwrap_or(StorageMode::Unpartitioned);
    Client::new(pool.clone())
        .create_queue_with_mode(queue, mode)
        .await
        .unwrap();
    mutate(pool, queue).await;
}

/// Applies `ABSURD_CHAOS_MUTATE` to this scratch database (see the module docs). Most mutations
/// replace a schema function with a broken copy of itself; `unlogged-queue` alters the queue's
/// tables instead.
async fn mutate(pool: &PgPool, queue: &str) {
    let Ok(which) = std::env::var("ABSURD_CHAOS_MUTATE") else {
        return;
    };
    // The claim and the completion the worker runs (and that claim_task / complete_run call
    // on this schema, migration 0011) are the queue's own functions; a one-queue worker
    // completes and claims through next_<queue> (migration 0012), which has its own copy of
    // the single-run completion and of the claim's sweeps, so those mutations break both.
    let lease_fn = format!("absurd.\"lease_{queue}\"");
    let done_fn = format!("absurd.\"done_{queue}\"");
    let next_fn = format!("absurd.\"next_{queue}\"");
    let edits: Vec<(&str, &str, &str)> = match which.as_str() {
        "complete-unfenced" => vec![
            (
                done_fn.as_str(),
                "where r.run_id = i.run_id and (r.state = 'running') is true",
                "where r.run_id = i.run_id",
            ),
            (
                next_fn.as_str(),
                "where r.run_id = p_run_ids[1] and (r.state = 'running') is true",
                "where r.run_id = p_run_ids[1]",
            ),
        ],
        "no-replay" => vec![(
            "absurd.get_task_checkpoint_states",
            "return query",
            "return; return query",
        )],
        "no-sweep" => vec![
            (
                lease_fn.as_str(),
                "r.claim_expires_at <= v_now",
                "r.claim_expires_at <= v_now and false",
            ),
            (
                next_fn.as_str(),
                "r.claim_expires_at <= v_now",
                "r.claim_expires_at <= v_now and false",
            ),
        ],
        // fail_run always schedules another attempt: max_attempts (and the host's permanent
        // failures, which lower it) are ignored, so a poison task is never failed for good.
        "retry-forever" => vec![(
            "absurd.fail_run",
            "v_retry := v_max_attempts is null or",
            "v_retry := true or v_max_attempts is null or",
        )],
        // current_time() ignores absurd.fake_now: the database clock is the real one again.
        "real-clock" => vec![(
            "absurd.current_time",
            "if v_fake is null or",
            "if true or v_fake is null or",
        )],
        // No wake-up notifications: idle workers find new work only by polling.
        "no-notify" => vec![(
            "absurd._host_notify_ready",
            "pg_notify('absurd_wakeup', p_queue_name)",
            "null::void",
        )],
        // The settling functions stop waiting for locks: after 200 ms they fail with
        // `lock_timeout` instead. The shipped host retries such writes while its lease lasts,
        // so the long-lock scenario still passes under this mutation alone; it fails when the
        // host's settle retry is removed as well (a scratch build, see docs/reliability.md).
        "lock-timeout" => {
            for f in [
                format!("{done_fn}(uuid[], jsonb[])").as_str(),
                format!("{next_fn}(uuid[], jsonb[], text, integer, integer)").as_str(),
                "absurd.complete_run(text, uuid, jsonb)",
                "absurd.fail_run(text, uuid, jsonb, timestamptz)",
                "absurd.fail_run_outcome(text, uuid, jsonb, boolean, timestamptz)",
                "absurd.set_task_checkpoint_state(text, uuid, text, jsonb, uuid, integer)",
            ] {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "alter function {f} set lock_timeout = '200ms'"
                )))
                .execute(pool)
                .await
                .unwrap();
            }
            eprintln!("MUTATION {which} applied to the settling functions");
            return;
        }
        // The queue's tables become UNLOGGED (a tempting speed-up): a crash of PostgreSQL
        // truncates them, acknowledged commits included.
        "unlogged-queue" => {
            for kind in ["t", "r", "c", "e", "w"] {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "alter table {} set unlogged",
                    t(queue, kind)
                )))
                .execute(pool)
                .await
                .unwrap();
            }
            eprintln!("MUTATION {which} applied to the tables of queue {queue}");
            return;
        }
        other => panic!("unknown ABSURD_CHAOS_MUTATE {other:?}"),
    };
    for (func, from, to) in edits {
        let def: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select pg_get_functiondef('{func}'::regproc)"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        assert!(
            def.contains(from),
            "mutation {which}: {from:?} not in {def}"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(def.replacen(from, to, 1)))
            .execute(pool)
            .await
            .unwrap();
        eprintln!("MUTATION {which} applied to {func}");
    }
}

fn opts(max_attempts: i32, key: &str) -> SpawnOptions {
    SpawnOptions {
        max_attempts: Some(max_attempts),
        retry_strategy: Some(RetryStrategy::none()),
        idempotency_key: Some(key.to_string()),
        ..Default::default()
    }
}

/// Spawns, retrying while the database is unavailable. The idempotency key makes a retry after
/// an unacknowledged commit return the same task instead of a second one.
async fn spawn(client: &Client, queue: &str, name: &str, params: Value, max_attempts: i32) -> Uuid {
    let key = Uuid::new_v4().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client
            .spawn(queue, name, &params, &opts(max_attempts, &key))
            .await
        {
            Ok(s) => return s.task_id,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot spawn {name}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A producer's mix: mostly ledger tasks, some that compute without checkpoints (`slow`),
/// some wasm and (if available) native ones.
async fn spawn_mix(client: &Client, queue: &str, i: usize, work_ms: u64, spawned: &mut Vec<Uuid>) {
    let (name, params) = match i % 8 {
        5 => ("slow", json!({"seconds": 0.4})),
        6 => ("wasm-echo", json!({"i": i})),
        7 if native_available() => ("native-sh", json!({"i": i})),
        _ => ("ledger", json!({"steps": 3, "work_ms": work_ms})),
    };
    spawned.push(spawn(client, queue, name, params, 25).await);
}

/// What a scenario measured; printed, and copied into docs/reliability.md.
#[derive(Debug, Default)]
struct Figures {
    tasks: i64,
    completed: i64,
    failed: i64,
    runs: i64,
    executions: i64,
    re_executions: i64,
    lease_expiries: i64,
    crash_window_reexecutions: i64,
    dead_lettered: i64,
    kills: usize,
    pauses: usize,
    pg_restarts: usize,
    backends_terminated: i64,
    listen_terminated: i64,
    locks_held: usize,
    drains: usize,
    leftover_workdirs: usize,
    violations: Vec<String>,
}

impl Figures {
    fn violation(&mut self, v: String) {
        self.violations.push(v);
    }

    fn report(&self, scenario: &str, started: Instant) {
        eprintln!(
            "CHAOS {scenario}: {:.1}s tasks={} completed={} failed={} runs={} executions={} re_executions={} \
             lease_expiries={} crash_window_reexecutions={} dead_lettered={} kills={} pauses={} \
             pg_restarts={} backends_terminated={} listen_terminated={} locks_held={} drains={} \
             leftover_workdirs={} violations={}",
            started.elapsed().as_secs_f64(),
            self.tasks,
            self.completed,
            self.failed,
            self.runs,
            self.executions,
            self.re_executions,
            self.lease_expiries,
            self.crash_window_reexecutions,
            self.dead_lettered,
            self.kills,
            self.pauses,
            self.pg_restarts,
            self.backends_terminated,
            self.listen_terminated,
            self.locks_held,
            self.drains,
            self.leftover_workdirs,
            self.violations.len()
        );
        assert!(
            self.violations.is_empty(),
            "{scenario}: {} invariant violation(s):\n  {}",
            self.violations.len(),
            self.violations.join("\n  ")
        );
    }
}

fn t(queue: &str, kind: &str) -> String {
    format!("absurd.\"{kind}_{queue}\"")
}

async fn strings(pool: &PgPool, sql: String) -> Vec<String> {
    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn count(pool: &PgPool, sql: String) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until every spawned task is terminal (or `limit` passes: the check reports the rest).
async fn settle(pool: &PgPool, queue: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let sql = format!(
        "select count(*) from {} where state not in ('completed', 'failed', 'cancelled')",
        t(queue, "t")
    );
    while Instant::now() < deadline {
        if let Ok(0) = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_one(pool)
            .await
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The invariants, by queries. `may_fail` are the tasks allowed to end failed (poison tasks,
/// event timeouts); any other failure is a violation.
async fn check(
    pool: &PgPool,
    queue: &str,
    spawned: &[Uuid],
    may_fail: &HashSet<Uuid>,
    figures: &mut Figures,
) {
    let (tt, rt, ct) = (t(queue, "t"), t(queue, "r"), t(queue, "c"));
    let dlq = format!("{queue}-dlq");
    let dt = t(&dlq, "t");
    let ids: Vec<Uuid> = spawned.to_vec();

    // No lost task: every spawned task exists, and there are no others.
    let lost: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select id from unnest($1::uuid[]) id where not exists (select 1 from {tt} t where t.task_id = id)"
    )))
    .bind(&ids)
    .fetch_all(pool)
    .await
    .unwrap();
    if !lost.is_empty() {
        figures.violation(format!("lost tasks: {lost:?}"));
    }
    figures.tasks = count(pool, format!("select count(*) from {tt}")).await;
    if figures.tasks != spawned.len() as i64 {
        figures.violation(format!(
            "{} tasks in the queue, {} spawned",
            figures.tasks,
            spawned.len()
        ));
    }
    // Every task terminal.
    for id in strings(
        pool,
        format!("select task_id::text || ' ' || state from {tt} where state not in ('completed', 'failed', 'cancelled')"),
    )
    .await
    {
        figures.violation(format!("not terminal: {id}"));
    }
    // Exactly-once completion: a completed task has exactly one completed run, it is the task's
    // last attempt, and no other task state coexists with a completed run.
    for v in strings(
        pool,
        format!(
            "select t.task_id::text || ' ' || t.state || ' has ' || count(r.*) || ' completed runs' \
             from {tt} t left join {rt} r on r.task_id = t.task_id and r.state = 'completed' \
             group by t.task_id, t.state \
             having (t.state = 'completed' and count(r.*) <> 1) or (t.state <> 'completed' and count(r.*) > 0)"
        ),
    )
    .await
    {
        figures.violation(format!("completion not exactly once: {v}"));
    }
    for v in strings(
        pool,
        format!(
            "select r.run_id::text from {rt} r join {tt} t on t.task_id = r.task_id \
             where r.state = 'completed' and (t.last_attempt_run is distinct from r.run_id \
               or r.failed_at is not null \
               or exists (select 1 from {rt} r2 where r2.task_id = r.task_id and r2.attempt > r.attempt))"
        ),
    )
    .await
    {
        figures.violation(format!("run {v} completed although it was not the live attempt"));
    }
    // Unexpected failures.
    let failed: Vec<(Uuid, Option<Value>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select t.task_id, (select r.failure_reason from {rt} r where r.run_id = t.last_attempt_run) \
         from {tt} t where t.state = 'failed'"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    for (id, reason) in &failed {
        if !may_fail.contains(id) {
            figures.violation(format!("task {id} failed: {reason:?}"));
        }
    }
    // Durable steps: once a run checkpointed a step (its `:done` row), no execution of the
    // same or a later attempt runs it again (a run handed back on shutdown or woken from a
    // sleep keeps its attempt number, hence the time order). A zombie of an *earlier* attempt
    // may still be computing; its checkpoint writes are refused (AB002). Re-executions before
    // any checkpoint are the documented crash window.
    for v in strings(
        pool,
        "select l.task_id::text || ' ' || l.step || ' re-executed by attempt ' || l.attempt \
         from ledger l where l.step like 'step%' and l.step not like '%:done' and exists (\
           select 1 from ledger d where d.task_id = l.task_id and d.step = l.step || ':done' \
           and d.attempt <= l.attempt and d.at < l.at)"
            .into(),
    )
    .await
    {
        figures.violation(format!("checkpointed step ran again: {v}"));
    }
    for v in strings(
        pool,
        format!(
            "select t.task_id::text from {tt} t where t.task_name = 'ledger' and t.state = 'completed' \
             and ((select count(distinct l.step) from ledger l where l.task_id = t.task_id \
                   and l.step like 'step%' and l.step not like '%:done') <> (t.params->>'steps')::int \
               or (select count(*) from {ct} c where c.task_id = t.task_id \
                   and c.checkpoint_name like 'step%') <> (t.params->>'steps')::int)"
        ),
    )
    .await
    {
        figures.violation(format!("completed ledger task {v} did not execute and checkpoint every step"));
    }
    figures.crash_window_reexecutions = count(
        pool,
        "select count(*) from (select 1 from ledger where step like 'step%' and step not like '%:done' \
         group by task_id, step having count(*) > 1) d"
            .into(),
    )
    .await;
    figures.executions = count(
        pool,
        "select count(*) from ledger where step = 'run'".into(),
    )
    .await;
    figures.re_executions = count(
        pool,
        "select count(*) - count(distinct task_id) from ledger where step = 'run'".into(),
    )
    .await;
    figures.completed = count(
        pool,
        format!("select count(*) from {tt} where state = 'completed'"),
    )
    .await;
    figures.failed = failed.len() as i64;
    figures.runs = count(pool, format!("select count(*) from {rt}")).await;
    figures.lease_expiries = count(
        pool,
        format!("select count(*) from {rt} where failure_reason->>'name' = '$ClaimTimeout'"),
    )
    .await;

    // Dead letters: every failed task exactly once, nothing else. Copies are made right after
    // a worker's own fail_run or by the periodic sweep; give the sweep time.
    if !failed.is_empty() || count(pool, format!("select count(*) from pg_tables where schemaname = 'absurd' and tablename = 't_{dlq}'")).await > 0 {
        let per_task = format!(
            "select t.task_id::text || ' ' || t.state || ' dead-lettered ' || \
             (select count(*) from {dt} d where d.params->>'original_task_id' = t.task_id::text) || ' times' \
             from {tt} t where (select count(*) from {dt} d where d.params->>'original_task_id' = t.task_id::text) \
               <> case when t.state = 'failed' then 1 else 0 end"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut wrong = vec![];
        while Instant::now() < deadline {
            wrong = match sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(per_task.clone()))
                .fetch_all(pool)
                .await
            {
                Ok(w) => w,
                Err(e) => vec![format!("dead-letter queue not readable: {e}")],
            };
            if wrong.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for w in wrong {
            figures.violation(format!("dead letters: {w}"));
        }
        figures.dead_lettered = count(pool, format!("select count(*) from {dt}")).await;
    }
}

/// The load every scenario runs: `n` tasks spawned over `over`, returned as they are spawned.
fn producer(
    client: Client,
    queue: String,
    n: usize,
    over: Duration,
    work_ms: u64,
) -> tokio::task::JoinHandle<Vec<Uuid>> {
    tokio::spawn(async move {
        let mut spawned = vec![];
        let pause = over / n as u32;
        for i in 0..n {
            spawn_mix(&client, &queue, i, work_ms, &mut spawned).await;
            tokio::time::sleep(pause).await;
        }
        spawned
    })
}

/// A connection of the test's own, outside every pool (for the disturbances).
async fn admin(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap()
}

// ---- scenarios --------------------------------------------------------------------------------

both_modes!(sigkill_and_pause_workers_under_load_scenario => sigkill_and_pause_workers_under_load, sigkill_and_pause_workers_under_load_partitioned);
/// SIGKILL a random worker every ~2 s under load (ledger, wasm and native tasks in flight) and
/// SIGSTOP another past its lease now and then, so that it wakes up as a zombie whose writes must
/// all be refused.
async fn sigkill_and_pause_workers_under_load_scenario() {
    let _slot = FLEETS.acquire().await.unwrap();
    let started = Instant::now();
    let q = "kill";
    let db = TestDb::migrated().await;
    prepare(&db.pool, q).await;
    let client = Client::new(db.pool.clone());
    let mut fleet = Fleet::new(
        &db.url,
        q,
        "",
        &["--concurrency", "4", "--claim-timeout", "2"],
    );
    fleet.start(3);
    let mut figures = Figures::default();
    let duration = scaled_secs(14.0);
    let load = producer(client.clone(), q.into(), scaled(160), duration, 150);
    let end = Instant::now() + duration;
    let mut round = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rnd(1200, 2500))).await;
        round += 1;
        if round % 3 == 0 {
            // Pause a worker past its 2 s lease: its runs are swept and re-claimed elsewhere;
            // when it continues, its settle and checkpoint writes must be refused (AB002).
            let w = &fleet.workers[rnd(0, fleet.workers.len() as u64) as usize];
            w.signal(libc::SIGSTOP);
            tokio::time::sleep(Duration::from_millis(4500)).await;
            w.signal(libc::SIGCONT);
            figures.pauses += 1;
        } else {
            fleet.kill_random();
        }
    }
    let spawned = load.await.unwrap();
    settle(&db.pool, q, Duration::from_secs(60)).await;
    fleet.finish(&mut figures).await;
    check(&db.pool, q, &spawned, &HashSet::new(), &mut figures).await;
    figures.report("sigkill_and_pause_workers_under_load", started);
}

both_modes!(stolen_leases_are_fenced_scenario => stolen_leases_are_fenced, stolen_leases_are_fenced_partitioned);
/// Steal leases under load: expire the lease of every running run once a second (what a network
/// partition, a long GC pause or a stalled host looks like from the database), so that other
/// workers sweep and re-claim those runs while their first worker is still executing them. The
/// first worker's writes (checkpoints, completion) must all be refused by run id and state.
async fn stolen_leases_are_fenced_scenario() {
    let _slot = FLEETS.acquire().await.unwrap();
    let started = Instant::now();
    let q = "stolen";
    let db = TestDb::migrated().await;
    prepare(&db.pool, q).await;
    let client = Client::new(db.pool.clone());
    // A long lease: the first worker renews it only every 10 s, so it learns of the theft by
    // having its writes refused, not by its renewal.
    let mut fleet = Fleet::new(
        &db.url,
        q,
        "",
        &["--concurrency", "4", "--claim-timeout", "30"],
    );
    fleet.start(3);
    let mut figures = Figures::default();
    let duration = scaled_secs(10.0);
    let load = producer(client.clone(), q.into(), scaled(100), duration, 200);
    let mut thief = admin(&db.url).await;
    let end = Instant::now() + duration;
    let mut stolen = 0u64;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rnd(600, 1400))).await;
        stolen += sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "update {} set claim_expires_at = absurd.current_time() - interval '1 second' \
             where state = 'running' and claim_expires_at is not null",
            t(q, "r")
        )))
        .execute(&mut thief)
        .await
        .unwrap()
        .rows_affected();
    }
    let spawned = load.await.unwrap();
    settle(&db.pool, q, Duration::from_secs(60)).await;
    fleet.finish(&mut figures).await;
    check(&db.pool, q, &spawned, &HashSet::new(), &mut figures).await;
    eprintln!("CHAOS stolen_leases_are_fenced: leases stolen {stolen}");
    if figures.lease_expiries == 0 {
        figures.violation("no stolen lease was swept: the scenario tested nothing".into());
    }
    figures.report("stolen_leases_are_fenced", started);
}

both_modes!(postgres_restarts_mid_load_scenario => postgres_restarts_mid_load, postgres_restarts_mid_load_partitioned);
/// Restart the (private, embedded) PostgreSQL cluster mid-load: fast restarts and crash-like
/// immediate stops.
async fn postgres_restarts_mid_load_scenario() {
    let _slot = FLEETS.acquire().await.unwrap();
    let started = Instant::now();
    let q = "pgrestart";
    let data = std::env::temp_dir().join(format!("absurd-chaos-pg-{}", Uuid::new_v4().simple()));
    let d2 = data.clone();
    let pg = std::sync::Arc::new(
        tokio::task::spawn_blocking(move || absurd_host::embedded::EmbeddedPostgres::start(&d2))
            .await
            .unwrap()
            .expect("start an embedded PostgreSQL cluster"),
    );
    let url = pg.url();
    let pool = absurd_client::db::connect(&url, 4).await.unwrap();
    absurd_client::db::migrate(&pool).await.unwrap();
    prepare(&pool, q).await;
    let client = Client::new(pool.clone());
    let mut fleet = Fleet::new(&url, q, "", &["--concurrency", "4", "--claim-timeout", "5"]);
    fleet.start(2);
    let mut figures = Figures::default();
    let duration = scaled_secs(16.0);
    let load = producer(client.clone(), q.into(), scaled(120), duration, 100);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rnd(2500, 4000))).await;
        let pg2 = pg.clone();
        let crash = figures.pg_restarts % 2 == 1;
        tokio::task::spawn_blocking(move || {
            if crash {
                pg2.stop_now()?;
                std::thread::sleep(Duration::from_millis(500));
                pg2.start_again()
            } else {
                pg2.restart()
            }
        })
        .await
        .unwrap()
        .expect("restart PostgreSQL");
        figures.pg_restarts += 1;
    }
    let spawned = load.await.unwrap();
    settle(&pool, q, Duration::from_secs(90)).await;
    fleet.finish(&mut figures).await;
    check(&pool, q, &spawned, &HashSet::new(), &mut figures).await;
    pool.close().await;
    drop(pg);
    let _ = std::fs::remove_dir_all(&data);
    figures.report("postgres_restarts_mid_load", started);
}

both_modes!(terminated_backends_including_listen_scenario => terminated_backends_including_listen, terminated_backends_including_listen_partitioned);
/// Terminate every backend of the workers (pool and LISTEN connections) once a second; at the
/// end, an idle fleet must still be woken by NOTIFY (the poll interval is longer than the wait).
async fn terminated_backends_including_listen_scenario() {
    let _slot = FLEETS.acquire().await.unwrap();
    let started = Instant::now();
    let q = "term";
    let db = TestDb::migrated().await;
    prepare(&db.pool, q).await;
    let client = Client::new(db.pool.clone());
    let mut fleet = Fleet::new(
        &db.url,
        q,
        "",
        &[
            "--concurrency",
            "4",
            "--claim-timeout",
            "5",
            "--poll-interval",
            "20",
        ],
    );
    fleet.start(2);
    let mut figures = Figures::default();
    let duration = scaled_secs(12.0);
    let load = producer(client.clone(), q.into(), scaled(120), duration, 100);
    let mut killer = admin(&db.url).await;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let (all, listen): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where pg_terminate_backend(pid)), \
                    count(*) filter (where query ilike 'listen%') \
             from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
        )
        .fetch_one(&mut killer)
        .await
        .unwrap();
        figures.backends_terminated += all;
        figures.listen_terminated += listen;
    }
    let mut spawned = load.await.unwrap();
    settle(&db.pool, q, Duration::from_secs(60)).await;
    // Idle fleet, LISTEN connections re-established: a new task is picked up by notification,
    // well before the 20 s poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let late = spawn(&client, q, "ledger", json!({"steps": 1}), 25).await;
    spawned.push(late);
    settle(&db.pool, q, Duration::from_secs(10)).await;
    let woke = t0.elapsed();
    if woke > Duration::from_secs(9) {
        figures.violation(format!("idle fleet took {woke:?} to notice a new task after the LISTEN connections were terminated"));
    }
    eprintln!("CHAOS terminated_backends_including_listen: wake-up after the storm {woke:?}");
    fleet.finish(&mut figures).await;
    check(&db.pool, q, &spawned, &HashSet::new(), &mut figures).await;
    assert!(
        figures.listen_terminated > 0,
        "the storm never hit a LISTEN connection"
    );
    figures.report("terminated_backends_including_listen", started);
}

both_modes!(long_lock_on_the_runs_table_scenario => long_lock_on_the_runs_table, long_lock_on_the_runs_table_partitioned);
/// Hold a SHARE ROW EXCLUSIVE lock on the runs table for 3 s (times the scale, at most 10 s),
/// again and again under load.
async fn long_lock_on_the_runs_table_scenario() {
    let _slot = FLEETS.acquire().await.unwrap();
    let started = Instant::now();
    let q = "locked";
    let db = TestDb::migrated().await;
    prepare(&db.pool, q).await;
    let client = Client::new(db.pool.clone());
    let (hold, lease) = lock_and_lease(scale());
    // The lease outlasts the lock with room to spare, so no run may lose its lease: a held
    // lock must only delay claims, renewals and settles, never cost an attempt.
    let lease_arg = lease.as_secs().to_string();
    let mut fleet = Fleet::new(
        &db.url,
        q,
        "",
        &["--concurrency", "4", "--claim-timeout", &lease_arg],
    );
    fleet.start(2);
    let mut figures = Figures::default();
    let duration = scaled_secs(10.0);
    let load = producer(client.clone(), q.into(), scaled(80), duration, 100);
    let mut locker = admin(&db.url).await;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut tx = locker.begin().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "lock table {} in share row exclusive mode",
            t(q, "r")
        )))
        .execute(&mut *tx)
        .await
        .unwrap();
        tokio::time::sleep(hold).await;
        tx.commit().await.unwrap();
        figures.locks_held += 1;
    }
    let spawned = load.await.unwrap();
    settle(&db.pool, q, Duration::from_secs(60)).await;
    fleet.finish(&mut figures).await;
    check(&db.pool, q, &spawned, &HashSet::new(), &mut figures).await;
    if figures.lease_expiries > 0 {
        figures.violation(format!(
            "{} runs lost their lease while the table was locked",
            figures.lease_expiries
        ));
    }
    figures.report("long_lock_on_the_runs_table", started);
}

/// How long [`long_lock_on_the_runs_table`] holds its lock at `scale`, and the lease that
/// must outlast it. The two scale together: a worker renews every lease / 3, so a renewal can be
/// blocked for the whole hold and the lease must cover hold + lease / 3 with a margin. 3 s
/// against 8 s (scale 1) keeps a margin of 2.3 s; the lease stays 8/3 of the hold at larger
/// scales, so the margin grows with it, and never drops below 8 s at smaller ones. The hold is
/// capped at 10 s: a soak repeats the lock more often rather than holding it for minutes.
fn lock_and_lease(scale: f64) -> (Duration, Duration) {
    let hold = (3.0 * scale).min(10.0);
    let lease = (hold * 8.0 / 3.0).ceil().max(8.0);
    (
        Duration::from_secs_f64(hold),
        Duration::from_secs_f64(lease),
    )
}

#[test]
fn the_lease_outlasts_the_lock_at_every_scale() {
    assert_eq!(
        lock_and_lease(1.0),
        (Duration::from_secs(3), Duration::from_secs(8)),
        "the default scale is unchanged"
    );
    for scale in [0.1, 0.5, 1.0, 2.0, 4.0, 20.0, 100.0] {
        let (hold, lease) = lock_and_lease(scale);
        // A renewal due just as the lock is taken waits for the whole hold, after waiting up
        // to a renewal period already: it must still land at least 2 s before expiry.
        let worst = hold + lease / 3;
        assert!(
            worst + Duration::from_secs(2) <= lease,
            "scale {scale}: a {hold:?} lock against a {lease:?} lease"
        );
    }
}

both_modes!(sigterm_drains_without_losing_work_scenario => sigterm_drains_without_losing_work, sigterm_drains_without_losing_work_partitioned);
/// SIGTERM the whole fleet mid-load: each worker stops claiming, lets short runs finish, hands
/// back long ones after its grace period, and exits 0; a new fleet finishes the rest. Nothing is
/// lost and no lease had to expire.
async fn sigterm_drains_without_losing_work_scenario() {
    let _slot = FLEETS.acquire().await.unwrap();
    let started = Instant::now();
    let q = "drain";
    let db = TestDb::migrated().await;
    prepare(&db.pool, q).await;
    let client = Client::new(db.pool.clone());
    let mut fleet = Fleet::new(
        &db.url,
        q,
        "",
        &[
            "--concurrency",
            "4",
            "--claim-timeout",
            "30",
            "--shutdown-grace",
            "1",
        ],
    );
    fleet.start(2);
    let mut figures = Figures::default();
    let mut spawned = vec![];
    // Some runs outlast the 1 s grace (5 steps × 800 ms) and must be handed back.
    for i in 0..scaled(8) {
        spawned.push(
            spawn(
                &client,
                q,
                "ledger",
                json!({"steps": 5, "work_ms": 800, "i": i}),
                25,
            )
            .await,
        );
    }
    let load = producer(client.clone(), q.into(), scaled(60), scaled_secs(6.0), 50);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        figures.drains += fleet.drain(Duration::from_secs(20));
        fleet.start(2);
    }
    spawned.extend(load.await.unwrap());
    settle(&db.pool, q, Duration::from_secs(60)).await;
    fleet.finish(&mut figures).await;
    figures.drains += 2;
    check(&db.pool, q, &spawned, &HashSet::new(), &mut figures).await;
    if figures.lease_expiries > 0 {
        figures.violation(format!(
            "{} runs waited for their lease to expire instead of being handed back",
            figures.lease_expiries
        ));
    }
    if figures.re_executions == 0 {
        figures.violation("no run outlasted the grace period: hand-back was not exercised".into());
    }
    figures.report("sigterm_drains_without_losing_work", started);
}

both_modes!(poison_tasks_are_dead_lettered_and_never_block_the_queue_scenario => poison_tasks_are_dead_lettered_and_never_block_the_queue, poison_tasks_are_dead_lettered_and_never_block_the_queue_partitioned);
/// Poison tasks crash their sandbox (wasm panic, memory bomb) or their subprocess (SIGKILL)
/// on every attempt: each ends failed after 3 attempts, dead-lettered exactly once, and the
/// healthy tasks around them keep completing.
async fn poison_tasks_are_dead_lettered_and_never_block_the_queue_scenario() {
    let _slot = FLEETS.acquire().await.unwrap();
    let started = Instant::now();
    let q = "poison";
    let db = TestDb::migrated().await;
    prepare(&db.pool, q).await;
    let client = Client::new(db.pool.clone());
    let mut fleet = Fleet::new(
        &db.url,
        q,
        "",
        &["--concurrency", "4", "--claim-timeout", "10"],
    );
    fleet.start(2);
    let mut figures = Figures::default();
    let mut poison = HashSet::new();
    let mut spawned = vec![];
    for i in 0..scaled(4) {
        let mode = if i % 2 == 0 { "panic" } else { "memory-bomb" };
        // The spawner asks for 10 attempts; the task type caps them at 3.
        let id = spawn(&client, q, "poison-wasm", json!({"mode": mode}), 10).await;
        poison.insert(id);
        spawned.push(id);
        if native_available() {
            let id = spawn(&client, q, "poison-native", json!({}), 10).await;
            poison.insert(id);
            spawned.push(id);
        }
    }
    if !native_available() {
        eprintln!("SKIPPED: native poison tasks (no /bin/sh)");
    }
    let load = producer(client.clone(), q.into(), scaled(60), scaled_secs(6.0), 50);
    spawned.extend(load.await.unwrap());
    settle(&db.pool, q, Duration::from_secs(90)).await;
    fleet.finish(&mut figures).await;
    check(&db.pool, q, &spawned, &poison, &mut figures).await;
    let rt = t(q, "r");
    for id in &poison {
        let (state, runs): (String, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select t.state, (select count(*) from {rt} r where r.task_id = t.task_id) from {} t where t.task_id = $1",
            t(q, "t")
        )))
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if state != "failed" || runs != 3 {
            figures.violation(format!(
                "poison task {id}: {state} after {runs} runs (want failed after 3)"
            ));
        }
    }
    figures.report(
        "poison_tasks_are_dead_lettered_and_never_block_the_queue",
        started,
    );
}

both_modes!(fake_clock_drives_event_timeouts_scenario => fake_clock_drives_event_timeouts, fake_clock_drives_event_timeouts_partitioned);
/// Event timeouts (and delivered events) follow the database clock, moved with
/// `absurd.fake_now` (set per database, seen by every new connection; the workers' existing
/// connections are terminated so that they reconnect and see it).
async fn fake_clock_drives_event_timeouts_scenario() {
    fake_clock_scenario("fake_clock_drives_event_timeouts", false).await;
}

both_modes!(fake_clock_drives_durable_sleep_scenario => fake_clock_drives_durable_sleep, fake_clock_drives_durable_sleep_partitioned);
/// Durable sleeps under `absurd.fake_now`: wake-up times are computed and compared on the
/// database clock, as claims compare `available_at`. (Found by this scenario: judged by the
/// host's clock, a napping task under a moved database clock woke early or rescheduled itself
/// in a hot loop; the same would happen with clock skew between a host and PostgreSQL.)
async fn fake_clock_drives_durable_sleep_scenario() {
    fake_clock_scenario("fake_clock_drives_durable_sleep", true).await;
}

async fn fake_clock_scenario(scenario: &str, with_naps: bool) {
    let _slot = FLEETS.acquire().await.unwrap();
    let started = Instant::now();
    let q = "clock";
    let db = TestDb::migrated().await;
    let set_clock = |at: &'static str| {
        let url = db.url.clone();
        let name = db.name.clone();
        async move {
            let mut c = admin(&url).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "alter database \"{name}\" set absurd.fake_now = '{at}'"
            )))
            .execute(&mut c)
            .await
            .unwrap();
            sqlx::query(
                "select pg_terminate_backend(pid) from pg_stat_activity \
                 where datname = current_database() and pid <> pg_backend_pid()",
            )
            .execute(&mut c)
            .await
            .unwrap();
        }
    };
    set_clock("2030-01-01T00:00:00Z").await;
    let pool = absurd_client::db::connect(&db.url, 4).await.unwrap();
    prepare(&pool, q).await;
    let client = Client::new(pool.clone());
    let mut fleet = Fleet::new(
        &db.url,
        q,
        "",
        &["--concurrency", "8", "--claim-timeout", "30"],
    );
    fleet.start(2);
    let mut figures = Figures::default();
    let n = scaled(6);
    let mut spawned = vec![];
    let mut timeouts = HashSet::new();
    let mut naps = vec![];
    for i in 0..n {
        if with_naps {
            let id = spawn(&client, q, "nap", json!({"seconds": 3600}), 1).await;
            naps.push(id);
            spawned.push(id);
        }
        let id = spawn(
            &client,
            q,
            "wait-event",
            json!({"event": format!("never-{i}"), "timeout": 3600}),
            1,
        )
        .await;
        timeouts.insert(id);
        spawned.push(id);
        let id = spawn(
            &client,
            q,
            "wait-event",
            json!({"event": format!("sent-{i}"), "timeout": 3600}),
            1,
        )
        .await;
        spawned.push(id);
    }
    // Everything suspends; nothing ends by the real clock.
    let suspended = format!(
        "select count(*) from {} where state = 'sleeping'",
        t(q, "t")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&pool, suspended.clone()).await < spawned.len() as i64 {
        assert!(Instant::now() < deadline, "tasks did not all suspend");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&pool, suspended.clone()).await,
        spawned.len() as i64,
        "a task woke early"
    );
    for i in 0..n {
        client
            .emit_event(q, &format!("sent-{i}"), Some(&json!({"i": i})))
            .await
            .unwrap();
    }
    // Let the woken tasks finish first: moving the clock two hours while one of them is still
    // running would (rightly) expire its 30 s lease.
    let completed = format!(
        "select count(*) from {} where state = 'completed'",
        t(q, "t")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pool, completed.clone()).await < n as i64 {
        assert!(Instant::now() < deadline, "woken tasks did not complete");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Two hours later (by the database clock): naps end, unsent events time out.
    set_clock("2030-01-01T02:00:00Z").await;
    settle(&pool, q, Duration::from_secs(60)).await;
    fleet.finish(&mut figures).await;
    check(&pool, q, &spawned, &timeouts, &mut figures).await;
    for id in &naps {
        let r = client.task_result(q, *id).await.unwrap().unwrap();
        if r.result != Some(json!("rested")) {
            figures.violation(format!("nap {id}: {r:?}"));
        }
    }
    if figures.failed != n as i64 {
        figures.violation(format!(
            "{} tasks failed, want the {n} event timeouts",
            figures.failed
        ));
    }
    pool.close().await;
    figures.report(scenario, started);
}
