//! The host-import fuzzer (issue #14, part 8): many runs of the `fuzz` guest
//! (`examples/fuzz`), each calling every host import with extreme arguments chosen by its seed,
//! on a real worker with small limits, so that the limits are actually met.
//!
//! It asserts that
//! - the worker never panics (no `panicked` in its log, no `$HostPanic` run), stays alive, and
//!   exits 0 on SIGTERM;
//! - its peak RSS (`VmHWM`) stays under a bound derived from the limits (see [`rss_bound_mib`]);
//! - every run ends as the protocol allows: completed, failed with a known failure name, a child
//!   cancelled (by its policy or by its parent),
//!   sleeping (for a wake time or an event), or pending for a later retry; none stays
//!   `running`, and no database error leaks as a `$HostError`;
//! - no row in the database exceeds the configured limits (checkpoints, events, waits, spawned
//!   tasks and their number per execution, failure reasons, results);
//! - a guest reaches no queue and no task type it was not granted (no spawn into a foreign
//!   queue, the dead-letter queue, or a native type).
//!
//! Knobs (environment):
//! - `ABSURD_FUZZ_RUNS`: root runs (default 500, the CI scale: about 20 s; try 5000 for a long run);
//! - `ABSURD_FUZZ_SEED`: seed of the first run (default 1; `random` picks one). Run `i` uses
//!   seed `SEED + i`; every failure message names the seeds of the runs at fault, and
//!   `ABSURD_FUZZ_SEED=<seed> ABSURD_FUZZ_RUNS=1` replays one run alone;
//! - `ABSURD_FUZZ_OPS`: import calls per run (default 12);
//! - `ABSURD_FUZZ_SCALE`: the largest strings a guest builds, in MiB (default 16; the guest has
//!   `memory_mb = 64`);
//! - `ABSURD_FUZZ_CONCURRENCY`: worker slots (default 4);
//! - `ABSURD_FUZZ_MAX_RSS_MB`: override the RSS bound.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{components_dir, temp_file, TestDb};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const QUEUE: &str = "fuzz";
/// A queue the guest is not granted (it exists, so only a capability check can refuse it).
const FOREIGN_QUEUE: &str = "other";

/// The limits the test configures: small, so that the fuzz guest meets every one of them.
/// Keys as in `[sandbox]` of absurd-host.toml.
struct Limits {
    name: i64,
    steps: i64,
    checkpoint: i64,
    checkpoint_total: i64,
    event_payload: i64,
    spawn_params: i64,
    spawn_headers: i64,
    spawns: i64,
    emits: i64,
    log_line: i64,
    failure_message: i64,
    failure_details: i64,
    open_handles: i64,
    result: i64,
    log_bytes: i64,
    memory_mb: i64,
}

const LIMITS: Limits = Limits {
    name: 256,
    steps: 100,
    checkpoint: 65536,
    checkpoint_total: 262144,
    event_payload: 16384,
    spawn_params: 32768,
    spawn_headers: 4096,
    spawns: 5,
    emits: 5,
    log_line: 4096,
    failure_message: 4096,
    failure_details: 16384,
    open_handles: 64,
    result: 1048576,
    log_bytes: 65536,
    memory_mb: 64,
};

/// Failure names a run may end with: the host's own, those of unknown and native task types
/// (children spawned by guests), and the ones the fuzz guest returns itself.
const HOST_FAILURES: &[&str] = &[
    "$LimitExceeded",
    "$InvalidCall",
    "$Timeout",
    "$Trap",
    "$MemoryLimit",
    "$InvalidResult",
    "$ResultTooLarge",
    "$SpawnError",
    "$UnknownTask",
    "$ClaimTimeout",
    "$NotGranted",
    // A native child (`native-echo`), should a guest manage to spawn one.
    "$ProgramFailed",
    "$ProgramKilled",
    "$NoResult",
];

fn guest_failure(name: &str) -> bool {
    name.is_empty() || name == "FuzzError" || name.starts_with("fuzz-")
}

/// Text of a database error that must never reach a failure reason as such.
const LEAKED_DB_ERRORS: &[&str] = &[
    "index row",
    "jsonb",
    "stack depth",
    "unsupported Unicode",
    "invalid input syntax",
    "violates",
    "error returned from database",
    "exceeds the maximum",
    "out of range for type",
    "invalid byte sequence",
    "SQLSTATE",
];

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a non-negative integer")),
        Err(_) => default,
    }
}

fn base_seed() -> u64 {
    match std::env::var("ABSURD_FUZZ_SEED").as_deref() {
        Ok("random") => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            (t.as_nanos() as u64) % 1_000_000_000
        }
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("ABSURD_FUZZ_SEED={v:?}: a number or `random`")),
        Err(_) => 1,
    }
}

fn config() -> PathBuf {
    let l = &LIMITS;
    let text = format!(
        r#"
[sandbox]
memory_mb = {memory_mb}
pool_instances = 16
max_result_bytes = {result}
max_log_bytes = {log_bytes}
max_name_bytes = {name}
max_steps = {steps}
max_checkpoint_bytes = {checkpoint}
max_checkpoint_total_bytes = {checkpoint_total}
max_event_payload_bytes = {event_payload}
max_spawn_params_bytes = {spawn_params}
max_spawn_headers_bytes = {spawn_headers}
max_spawns = {spawns}
max_emits = {emits}
max_log_line_bytes = {log_line}
max_failure_message_bytes = {failure_message}
max_failure_details_bytes = {failure_details}
max_open_handles = {open_handles}

[tasks.fuzz]
kind = "wasm"
component = "{dir}/fuzz.wasm"
timeout = 5
scratch = true

# A native type a guest must not be able to spawn (it is not granted to the fuzz type).
[tasks.native-echo]
kind = "native"
program = "/bin/true"
timeout = 5
"#,
        memory_mb = l.memory_mb,
        result = l.result,
        log_bytes = l.log_bytes,
        name = l.name,
        steps = l.steps,
        checkpoint = l.checkpoint,
        checkpoint_total = l.checkpoint_total,
        event_payload = l.event_payload,
        spawn_params = l.spawn_params,
        spawn_headers = l.spawn_headers,
        spawns = l.spawns,
        emits = l.emits,
        log_line = l.log_line,
        failure_message = l.failure_message,
        failure_details = l.failure_details,
        open_handles = l.open_handles,
        dir = components_dir().display(),
    );
    temp_file("absurd-host.toml", &text)
}

/// The peak RSS the worker may reach, in MiB. Per slot: the guest's linear memory
/// (`memory_mb`), plus the host's copy of the largest string a guest can hand to an import
/// (`scale` MiB) and up to 3 more copies of it while the host looks at it (JSON parsing,
/// the value it builds, the text it sends to Postgres) -- unless a limit refuses it first,
/// which is the point. Plus 256 MiB for the worker itself (engine, compiled component, the
/// database pool, the runtime). Then doubled, so that only growth outside the limits (like the
/// 1.7 GiB of kept step names in the issue) fails it, not allocator slack.
fn rss_bound_mib(concurrency: u64, scale_mib: u64) -> u64 {
    let per_slot = LIMITS.memory_mb as u64 + 4 * scale_mib;
    2 * (concurrency * per_slot + 256)
}

fn vm_hwm_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The length of jsonb's text form (`x::text`) written compactly: jsonb adds a space after
/// every `,` and `:` outside strings, which the guest's (compact) text did not have. Its
/// other differences (re-escaping, numbers) only ever make jsonb's text shorter for what the
/// fuzz guest writes, so this is at most the length of the text the host was given.
fn compact_len(canonical: &str) -> i64 {
    let (mut n, mut in_str, mut esc) = (0i64, false, false);
    for b in canonical.bytes() {
        if in_str {
            n += 1;
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
            n += 1;
            if b == b'"' {
                in_str = true;
            }
        }
    }
    n
}

/// Collected violations, each naming the seed to reproduce it.
#[derive(Default)]
struct Report {
    violations: BTreeMap<String, Vec<String>>,
}

impl Report {
    fn add(&mut self, check: &str, what: String) {
        self.violations
            .entry(check.to_string())
            .or_default()
            .push(what);
    }

    fn text(&self) -> String {
        let mut s = String::new();
        for (check, items) in &self.violations {
            let _ = writeln!(s, "== {check}: {} violation(s)", items.len());
            for i in items.iter().take(15) {
                let _ = writeln!(s, "   {i}");
            }
            if items.len() > 15 {
                let _ = writeln!(s, "   ... and {} more", items.len() - 15);
            }
        }
        s
    }
}

/// Maps any task of the fuzz queue (a root, or a child spawned by a root's run) to the seed
/// of its root run, for messages.
struct Seeds {
    by_task: BTreeMap<Uuid, u64>,
    by_run: BTreeMap<Uuid, u64>,
}

impl Seeds {
    async fn load(pool: &PgPool) -> Seeds {
        let rows: Vec<(Uuid, Uuid, Option<i64>)> = sqlx::query_as(
            "select t.task_id, r.run_id, (t.params->>'seed')::bigint
             from absurd.t_fuzz t join absurd.r_fuzz r using (task_id)
             where t.task_name = 'fuzz' and jsonb_typeof(t.params) = 'object'
               and t.params ? 'seed'",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let mut s = Seeds {
            by_task: BTreeMap::new(),
            by_run: BTreeMap::new(),
        };
        for (task, run, seed) in rows {
            if let Some(seed) = seed {
                s.by_task.insert(task, seed as u64);
                s.by_run.insert(run, seed as u64);
            }
        }
        s
    }

    /// `seed N` for a root task, or for a child through the run in its `$t` tag.
    fn of(&self, task: Option<Uuid>, tag: Option<&str>) -> String {
        if let Some(seed) = task.and_then(|t| self.by_task.get(&t)) {
            return format!("seed {seed}");
        }
        let run = tag
            .and_then(|t| t.split('/').next())
            .and_then(|r| r.parse::<Uuid>().ok());
        match run.and_then(|r| self.by_run.get(&r)) {
            Some(seed) => format!("seed {seed} (spawned by it)"),
            None => "seed unknown".to_string(),
        }
    }
}

/// The worker under test. Unlike `common::WorkerProc` it does not print its whole log when
/// the test fails (a fuzzed worker's log is long): failures quote the part that matters.
struct Worker {
    child: std::process::Child,
    log: PathBuf,
}

impl Worker {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_worker(db_url: &str, concurrency: u64) -> Worker {
    let log = temp_file("worker.log", "");
    let child = Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .arg("worker")
        .arg("--database-url")
        .arg(db_url)
        .arg("--config")
        .arg(config())
        .args(["--queue", QUEUE, "--concurrency"])
        .arg(concurrency.to_string())
        .args([
            "--claim-timeout",
            "15",
            "--poll-interval",
            "0.5",
            "--fail-unknown",
            "--shutdown-grace",
            "20",
        ])
        .env_remove("ABSURD_QUEUE_NAME")
        .env_remove("ABSURD_DATABASE_URL")
        // Warnings only: guests flood the log (bounded per run, but many runs); panics are
        // printed whatever the level.
        .env("ABSURD_LOG", "warn,sqlx=error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start absurd-host worker");
    Worker { child, log }
}

fn tail(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn short(s: &str) -> String {
    if s.len() <= 200 {
        s.to_string()
    } else {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &s[..end], s.len())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_imports_stay_within_limits() {
    let runs = env_u64("ABSURD_FUZZ_RUNS", 500);
    let ops = env_u64("ABSURD_FUZZ_OPS", 12);
    let scale = env_u64("ABSURD_FUZZ_SCALE", 16);
    let concurrency = env_u64("ABSURD_FUZZ_CONCURRENCY", 4);
    let seed0 = base_seed();
    let rss_bound = env_u64("ABSURD_FUZZ_MAX_RSS_MB", rss_bound_mib(concurrency, scale));
    let repro = format!(
        "reproduce with ABSURD_FUZZ_SEED={seed0} ABSURD_FUZZ_RUNS={runs} ABSURD_FUZZ_OPS={ops} \
         ABSURD_FUZZ_SCALE={scale} ABSURD_FUZZ_CONCURRENCY={concurrency}"
    );
    eprintln!("fuzz: {runs} runs from seed {seed0}, {ops} ops each; {repro}");
    let started = Instant::now();

    let db = TestDb::migrated().await;
    let client = absurd_client::Client::new(db.pool.clone());
    client.create_queue(QUEUE).await.unwrap();
    client.create_queue(FOREIGN_QUEUE).await.unwrap();
    let mut worker = start_worker(&db.url, concurrency);

    for i in 0..runs {
        let seed = seed0 + i;
        let params =
            json!({"seed": seed, "ops": ops, "scale": scale, "fs": seed.is_multiple_of(2)});
        client
            .spawn(QUEUE, "fuzz", &params, &common::no_backoff(2))
            .await
            .unwrap();
    }

    // Drained: nothing running and nothing claimable now. Runs left sleeping (a long sleep,
    // an event that never comes) or pending with a later retry time are fine.
    let mut report = Report::default();
    let limit = Duration::from_secs(120 + runs / 2);
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = worker.child.try_wait().unwrap() {
            panic!(
                "the worker died ({status}) while fuzzed; {repro}\n---- log tail ----\n{}",
                tail(&worker.log_text(), 8000)
            );
        }
        let busy: i64 = sqlx::query_scalar(
            "select count(*) from absurd.r_fuzz
             where state = 'running'
                or (state in ('pending', 'sleeping') and available_at <= now())",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if busy == 0 {
            break;
        }
        if Instant::now() > deadline {
            // Reported with everything else found, after the worker stopped.
            let seeds = Seeds::load(&db.pool).await;
            let stuck: Vec<(Uuid, String, String, Option<String>)> = sqlx::query_as(
                "select r.task_id, r.state, t.task_name, t.params->>'$t'
                 from absurd.r_fuzz r join absurd.t_fuzz t using (task_id)
                 where r.state = 'running'
                    or (r.state in ('pending', 'sleeping') and r.available_at <= now())",
            )
            .fetch_all(&db.pool)
            .await
            .unwrap();
            for (task, state, name, tag) in stuck {
                report.add(
                    "runs that never settle (never timed out, or a slot never freed)",
                    format!(
                        "task {task} ({}) still {state} after {limit:?}: {}",
                        short(&name),
                        seeds.of(Some(task), tag.as_deref())
                    ),
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained = started.elapsed();

    let hwm_mib = vm_hwm_kib(worker.pid()).expect("read VmHWM of the worker") / 1024;
    if hwm_mib > rss_bound {
        report.add(
            "worker RSS",
            format!("peak RSS {hwm_mib} MiB > bound {rss_bound} MiB (runs from seed {seed0})"),
        );
    }
    unsafe {
        libc::kill(worker.pid(), libc::SIGTERM);
    }
    match worker.wait_exit(Duration::from_secs(60)) {
        Some(s) if s.success() => {}
        Some(s) => report.add("worker exit", format!("exited {s} on SIGTERM, not 0")),
        None => report.add("worker exit", "did not exit within 60 s of SIGTERM".into()),
    }
    let log = worker.log_text();
    for line in log.lines().filter(|l| l.contains("panicked")) {
        report.add("worker log", format!("panic: {}", short(line)));
    }

    check_states(&db.pool, &mut report).await;
    check_rows(&db.pool, &mut report).await;
    check_grants(&db.pool, &mut report).await;

    let summary: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "select state, failure_reason->>'name', count(*) from absurd.r_fuzz
         group by 1, 2 order by 3 desc",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut outcomes = String::new();
    for (state, name, n) in &summary {
        let _ = write!(
            outcomes,
            "{n} {state}{} · ",
            name.as_deref()
                .map(|n| format!(" {}", short(n)))
                .unwrap_or_default()
        );
    }
    eprintln!(
        "fuzz: drained in {drained:?}, peak RSS {hwm_mib} MiB (bound {rss_bound} MiB); \
         runs: {outcomes}"
    );
    assert!(
        report.violations.is_empty(),
        "the host-import fuzzer found violations:\n{}\n{repro}",
        report.text()
    );
}

/// Every run ended (or waits) as the protocol allows, with a known failure name and no
/// database error leaking through.
async fn check_states(pool: &PgPool, report: &mut Report) {
    let seeds = Seeds::load(pool).await;
    /// Task, run state, task name, failure name and message, the `$t` tag of its params, and
    /// whether the task has a cancellation policy, and whether it is a root run (with a seed).
    type Row = (
        Uuid,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        bool,
        bool,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select r.task_id, r.state, t.task_name, r.failure_reason->>'name',
                    r.failure_reason->>'message', t.params->>'$t',
                    t.cancellation is not null,
                    jsonb_typeof(t.params) = 'object' and t.params ? 'seed'
             from absurd.r_fuzz r join absurd.t_fuzz t using (task_id)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (task, state, task_name, name, message, tag, has_policy, root) in rows {
        let who = || format!("task {task} ({})", seeds.of(Some(task), tag.as_deref()));
        match state.as_str() {
            "completed" | "sleeping" => {}
            // Handed back for a later attempt (a retry with back-off).
            "pending" => {}
            // A child the fuzz guest spawned with a cancellation policy (absurd:task@0.2.0).
            "cancelled" if has_policy => {}
            // A child its parent cancelled (`cancel-child`, absurd:task@0.2.1). A root run of
            // the fuzzer is never cancelled.
            "cancelled" if !root => {}
            "failed" => {
                let name = name.unwrap_or_default();
                let message = message.unwrap_or_default();
                if !(HOST_FAILURES.contains(&name.as_str())
                    || task_name == "fuzz" && guest_failure(&name))
                {
                    report.add(
                        "failure names",
                        format!("{}: {} — {}", who(), short(&name), short(&message)),
                    );
                }
                if let Some(m) = LEAKED_DB_ERRORS.iter().find(|m| message.contains(**m)) {
                    report.add(
                        "leaked database errors",
                        format!(
                            "{}: {} says {m:?}: {}",
                            who(),
                            short(&name),
                            short(&message)
                        ),
                    );
                }
            }
            other => report.add(
                "run states",
                format!("{}: {other} after the worker stopped", who()),
            ),
        }
    }
}

/// Candidate rows come from a cheap SQL filter on jsonb's text length; their exact length is
/// then measured with [`compact_len`].
async fn json_over(
    pool: &PgPool,
    sql: &'static str,
    limit: i64,
) -> Vec<(Uuid, Option<String>, i64)> {
    let rows: Vec<(Uuid, Option<String>, String)> = sqlx::query_as(sql)
        .bind(limit)
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(task, tag, text)| (task, tag, compact_len(&text)))
        .filter(|(_, _, n)| *n > limit)
        .collect()
}

/// No row holds more than the configured limits allow.
async fn check_rows(pool: &PgPool, report: &mut Report) {
    let l = &LIMITS;
    let seeds = Seeds::load(pool).await;
    // A checkpoint name is a step name plus `#N` (up to 11 bytes), or `$awaitEvent:` (12)
    // and an event name.
    let cp_name = l.name + 12 + 11;

    let names: Vec<(Uuid, i64)> = sqlx::query_as(
        "select task_id, octet_length(checkpoint_name)::bigint from absurd.c_fuzz
         where octet_length(checkpoint_name) > $1",
    )
    .bind(cp_name)
    .fetch_all(pool)
    .await
    .unwrap();
    for (task, n) in names {
        report.add(
            "checkpoint names (max_name_bytes)",
            format!(
                "task {task} ({}): {n} bytes > {cp_name}",
                seeds.of(Some(task), None)
            ),
        );
    }
    for (task, _, n) in json_over(
        pool,
        "select task_id, null::text, state::text from absurd.c_fuzz
         where octet_length(state::text) > $1",
        l.checkpoint,
    )
    .await
    {
        report.add(
            "checkpoint values (max_checkpoint_bytes)",
            format!(
                "task {task} ({}): {n} bytes > {}",
                seeds.of(Some(task), None),
                l.checkpoint
            ),
        );
    }
    // Per task: an execution may use max_steps checkpoint names (steps, sleeps, event waits),
    // and the fuzz guest's executions replay the same calls, so a task never holds more.
    let counts: Vec<(Uuid, i64)> = sqlx::query_as(
        "select task_id, count(*) from absurd.c_fuzz group by task_id having count(*) > $1",
    )
    .bind(l.steps)
    .fetch_all(pool)
    .await
    .unwrap();
    for (task, n) in counts {
        report.add(
            "checkpoints per task (max_steps)",
            format!(
                "task {task} ({}): {n} checkpoints > {}",
                seeds.of(Some(task), None),
                l.steps
            ),
        );
    }
    let totals: Vec<(Uuid, Vec<String>)> = sqlx::query_as(
        "select task_id, array_agg(state::text) from absurd.c_fuzz
         group by task_id having sum(octet_length(state::text)) > $1",
    )
    .bind(l.checkpoint_total)
    .fetch_all(pool)
    .await
    .unwrap();
    for (task, texts) in totals {
        let n: i64 = texts.iter().map(|t| compact_len(t)).sum();
        if n > l.checkpoint_total {
            report.add(
                "checkpoints per task (max_checkpoint_total_bytes)",
                format!(
                    "task {task} ({}): {n} bytes > {}",
                    seeds.of(Some(task), None),
                    l.checkpoint_total
                ),
            );
        }
    }

    // Events: names, payloads, and emits per execution (tagged payloads).
    let events: Vec<(i64, Option<String>)> = sqlx::query_as(
        "select octet_length(event_name)::bigint, payload->>'$t' from absurd.e_fuzz
         where octet_length(event_name) > $1",
    )
    .bind(l.name)
    .fetch_all(pool)
    .await
    .unwrap();
    for (n, tag) in events {
        report.add(
            "event names (max_name_bytes)",
            format!(
                "{n} bytes > {} ({})",
                l.name,
                seeds.of(None, tag.as_deref())
            ),
        );
    }
    let payloads: Vec<(Option<String>, String)> = sqlx::query_as(
        "select case when jsonb_typeof(payload) = 'object' then payload->>'$t' end,
                payload::text
         from absurd.e_fuzz where octet_length(payload::text) > $1",
    )
    .bind(l.event_payload)
    .fetch_all(pool)
    .await
    .unwrap();
    for (tag, text) in payloads {
        let n = compact_len(&text);
        if n > l.event_payload {
            report.add(
                "event payloads (max_event_payload_bytes)",
                format!(
                    "{n} bytes > {} ({})",
                    l.event_payload,
                    seeds.of(None, tag.as_deref())
                ),
            );
        }
    }
    let emits: Vec<(String, i64)> = sqlx::query_as(
        "select payload->>'$t', count(*) from absurd.e_fuzz
         where jsonb_typeof(payload) = 'object' and payload ? '$t'
         group by 1 having count(*) > $1",
    )
    .bind(l.emits)
    .fetch_all(pool)
    .await
    .unwrap();
    for (tag, n) in emits {
        report.add(
            "emits per execution (max_emits)",
            format!("{n} events > {} ({})", l.emits, seeds.of(None, Some(&tag))),
        );
    }
    // Waits and the payloads runs received.
    let waits: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "select task_id, octet_length(step_name)::bigint, octet_length(event_name)::bigint
         from absurd.w_fuzz where octet_length(step_name) > $1 or octet_length(event_name) > $2",
    )
    .bind(cp_name)
    .bind(l.name)
    .fetch_all(pool)
    .await
    .unwrap();
    for (task, step, event) in waits {
        report.add(
            "waits (max_name_bytes)",
            format!(
                "task {task} ({}): step name {step} bytes, event name {event} bytes",
                seeds.of(Some(task), None)
            ),
        );
    }

    // Spawned tasks in every queue a guest can name.
    for (table, dlq) in [
        ("absurd.t_fuzz", false),
        ("absurd.t_other", false),
        ("absurd.\"t_fuzz-dlq\"", true),
    ] {
        check_spawned(pool, table, dlq, &seeds, report).await;
    }

    // Failure reasons and results of runs. The host's own wording (a truncation note, the
    // limit it names) gets 1 KiB beyond the message limit.
    let failures: Vec<(Uuid, String, i64, i64, String)> = sqlx::query_as(
        "select task_id, left(coalesce(failure_reason->>'name', ''), 40),
                coalesce(octet_length(failure_reason->>'name'), 0)::bigint,
                coalesce(octet_length(failure_reason->>'message'), 0)::bigint,
                coalesce(failure_reason->'details', 'null'::jsonb)::text
         from absurd.r_fuzz
         where failure_reason is not null
           and (octet_length(failure_reason->>'name') > $1
                or octet_length(failure_reason->>'message') > $2
                or octet_length((failure_reason->'details')::text) > $3)",
    )
    .bind(l.name)
    .bind(l.failure_message + 1024)
    .bind(l.failure_details)
    .fetch_all(pool)
    .await
    .unwrap();
    for (task, failure, name, message, details) in failures {
        let details = compact_len(&details);
        let who = format!("{}, {failure:?}", seeds.of(Some(task), None));
        if name > l.name {
            report.add(
                "failure names (max_name_bytes)",
                format!("task {task} ({who}): name {name} bytes > {}", l.name),
            );
        }
        if message > l.failure_message + 1024 {
            report.add(
                "failure messages (max_failure_message_bytes)",
                format!(
                    "task {task} ({who}): message {message} bytes > {} + 1024",
                    l.failure_message
                ),
            );
        }
        if details > l.failure_details {
            report.add(
                "failure details (max_failure_details_bytes)",
                format!(
                    "task {task} ({who}): details {details} bytes > {}",
                    l.failure_details
                ),
            );
        }
    }
    for (table, what) in [
        ("result", "results (max_result_bytes)"),
        (
            "event_payload",
            "received payloads (max_event_payload_bytes)",
        ),
    ] {
        let limit = if table == "result" {
            l.result
        } else {
            l.event_payload
        };
        let sql: &'static str = if table == "result" {
            "select task_id, null::text, result::text from absurd.r_fuzz
             where octet_length(result::text) > $1"
        } else {
            "select task_id, null::text, event_payload::text from absurd.r_fuzz
             where octet_length(event_payload::text) > $1"
        };
        for (task, _, n) in json_over(pool, sql, limit).await {
            report.add(
                what,
                format!(
                    "task {task} ({}): {n} bytes > {limit}",
                    seeds.of(Some(task), None)
                ),
            );
        }
    }
}

/// Spawned tasks' names, params, headers and idempotency keys, and spawns per execution.
async fn check_spawned(pool: &PgPool, table: &str, dlq: bool, seeds: &Seeds, report: &mut Report) {
    let l = &LIMITS;
    // Roots (spawned by the test) and dead-letter copies (made by the host, holding a failed
    // task's params and failure reason) are measured against their own bounds below.
    let sql = format!(
        "select task_id, task_name, octet_length(task_name)::bigint,
                coalesce(octet_length(idempotency_key), 0)::bigint,
                case when jsonb_typeof(params) = 'object' then params->>'$t' end,
                case when jsonb_typeof(headers) = 'object' then headers->>'$t' end,
                case when octet_length(params::text) > $2 then params::text end,
                case when octet_length(headers::text) > $3 then headers::text end
         from {table}
         where octet_length(task_name) > $1 or octet_length(idempotency_key) > $1
            or octet_length(params::text) > $2 or octet_length(headers::text) > $3"
    );
    // A dead-letter copy holds the failed task's params (at most max_spawn_params_bytes) and
    // its failure reason (name, message, details), plus a little bookkeeping.
    let params_limit = if dlq {
        l.spawn_params + l.name + l.failure_message + 1024 + l.failure_details + 4096
    } else {
        l.spawn_params
    };
    type Row = (
        Uuid,
        String,
        i64,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(l.name)
        .bind(params_limit)
        .bind(l.spawn_headers)
        .fetch_all(pool)
        .await
        .unwrap();
    for (task, task_name, name_len, key_len, ptag, htag, params, headers) in rows {
        if seeds.by_task.contains_key(&task) {
            continue; // a root: the test spawned it
        }
        let who = format!(
            "{table} task {task} ({})",
            seeds.of(None, ptag.as_deref().or(htag.as_deref()))
        );
        if name_len > l.name {
            report.add(
                "spawned task names (max_name_bytes)",
                format!("{who}: {name_len} bytes > {}", l.name),
            );
        }
        if key_len > l.name {
            report.add(
                "idempotency keys (max_name_bytes)",
                format!("{who}: {key_len} bytes > {}", l.name),
            );
        }
        if let Some(n) = params
            .map(|p| compact_len(&p))
            .filter(|n| *n > params_limit)
        {
            report.add(
                "spawned params (max_spawn_params_bytes)",
                format!("{who} ({task_name:.40}): {n} bytes > {params_limit}"),
            );
        }
        if let Some(n) = headers
            .map(|h| compact_len(&h))
            .filter(|n| *n > l.spawn_headers)
        {
            report.add(
                "spawned headers (max_spawn_headers_bytes)",
                format!("{who}: {n} bytes > {}", l.spawn_headers),
            );
        }
    }
    // Spawns per execution: children carry their parent execution's tag in params or headers.
    let sql = format!(
        "select tag, count(*) from (
            select coalesce(
                case when jsonb_typeof(params) = 'object' then params->>'$t' end,
                case when jsonb_typeof(headers) = 'object' then headers->>'$t' end) as tag
            from {table} where task_name <> 'dead-letter') s
         where tag is not null group by tag having count(*) > $1"
    );
    let per_exec: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(l.spawns)
        .fetch_all(pool)
        .await
        .unwrap();
    for (tag, n) in per_exec {
        report.add(
            "spawns per execution (max_spawns)",
            format!(
                "{table}: {n} tasks > {} ({})",
                l.spawns,
                seeds.of(None, Some(&tag))
            ),
        );
    }
}

/// Part 4 of the issue: by default a guest may spawn only wasm task types into its own queue.
async fn check_grants(pool: &PgPool, report: &mut Report) {
    let seeds = Seeds::load(pool).await;
    for (table, filter) in [
        ("absurd.t_other", "true"),
        ("absurd.\"t_fuzz-dlq\"", "task_name <> 'dead-letter'"),
        ("absurd.t_fuzz", "task_name = 'native-echo'"),
    ] {
        let sql = format!(
            "select task_id, task_name,
                    coalesce(case when jsonb_typeof(params) = 'object' then params->>'$t' end,
                             case when jsonb_typeof(headers) = 'object' then headers->>'$t' end)
             from {table} where {filter}"
        );
        let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .unwrap();
        for (task, name, tag) in rows {
            report.add(
                "spawn grants (own queue, wasm types only)",
                format!(
                    "{table}: task {task} `{}` spawned by a guest ({})",
                    short(&name),
                    seeds.of(None, tag.as_deref())
                ),
            );
        }
    }
}
