//! Containment beyond linear memory (issue #14): what a run reaches through its imports and the
//! host's bookkeeping is bounded, refused with an error that names the limit, and never panics
//! the host or keeps a run alive past its end.
//!
//! Every test runs a real `absurd-host worker` on a fresh database, with the `zoo` component's
//! `host-calls` mode making the raw import calls (sizes are built inside the guest), or with
//! builtin task types.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use absurd_client::{Client, State, TaskResult};
use common::{components_dir, no_backoff, setup, temp_file, terminal, WorkerProc};
use serde_json::{json, Value};
use uuid::Uuid;

const MIB: u64 = 1024 * 1024;

/// A host configuration with the zoo under a few names, builtins, and `extra` appended.
fn config(extra: &str) -> PathBuf {
    let dir = components_dir();
    let text = format!(
        r#"
[sandbox]
memory_mb = 128

[tasks.zoo]
kind = "wasm"
component = "{dir}/zoo.wasm"
timeout = 5

[tasks.zoo-small]
kind = "wasm"
component = "{dir}/zoo.wasm"
timeout = 20
max_spawns = 10
max_emits = 3
max_checkpoint_bytes = 1048576
max_checkpoint_total_bytes = 3145728
max_open_handles = 64
scratch = true
emit_events = ["ok.*"]
await_events = ["ok.*"]

[tasks.zoo-granted]
kind = "wasm"
component = "{dir}/zoo.wasm"
timeout = 20
spawn_queues = ["elsewhere", "{{queue}}-dlq"]
spawn_tasks = ["solve"]

[tasks.solve]
kind = "native"
program = "/bin/true"

[tasks.echo]
kind = "builtin"

[tasks.sleep]
kind = "builtin"
timeout = 2

[tasks.panic]
kind = "builtin"
{extra}
"#,
        dir = dir.display(),
    );
    temp_file("absurd-host.toml", &text)
}

/// The config with `{queue}` filled in (the granted dead-letter queue is per test).
fn config_for(queue: &str) -> PathBuf {
    let text = std::fs::read_to_string(config("")).unwrap();
    temp_file("absurd-host.toml", &text.replace("{queue}", queue))
}

fn calls(calls: Value) -> Value {
    json!({"mode": "host-calls", "calls_list": calls})
}

async fn spawn(client: &Client, queue: &str, task: &str, params: Value) -> Uuid {
    client
        .spawn(queue, task, &params, &no_backoff(1))
        .await
        .unwrap()
        .task_id
}

async fn finish(client: &Client, queue: &str, id: Uuid) -> TaskResult {
    terminal(client, queue, id, Duration::from_secs(90)).await
}

/// The failure of a failed task: its name and message.
fn failure(r: &TaskResult) -> (String, String) {
    assert_eq!(r.state, State::Failed, "{r:?}");
    let f = r.failure_reason.as_ref().expect("a failure reason");
    (
        f["name"].as_str().unwrap_or_default().to_string(),
        f["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// Asserts a permanent `$LimitExceeded` naming `key`, with one run only.
async fn assert_limit(client: &Client, queue: &str, id: Uuid, key: &str) -> String {
    let r = finish(client, queue, id).await;
    let (name, message) = failure(&r);
    assert_eq!(name, "$LimitExceeded", "{message}");
    assert!(
        message.contains(&format!("({key}")),
        "names {key}: {message}"
    );
    let f = r.failure_reason.unwrap();
    assert_eq!(f["details"]["limit"], key, "{f}");
    assert_eq!(f["retryable"], false, "permanent: {f}");
    message
}

fn vm_hwm_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// An ordinary task still completes beside the misbehaving ones, so the worker is serving,
/// and (unless the test panicked the host on purpose) nothing in it panicked.
async fn worker_serves(client: &Client, queue: &str, w: &mut WorkerProc) {
    worker_alive(client, queue, w).await;
    assert!(
        !w.log_text().contains("panicked"),
        "no panic in the worker log:\n{}",
        w.log_text()
    );
}

async fn worker_alive(client: &Client, queue: &str, w: &mut WorkerProc) {
    let id = spawn(client, queue, "echo", json!({"still": "serving"})).await;
    let r = finish(client, queue, id).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    assert!(w.child.try_wait().unwrap().is_none(), "the worker is alive");
}

/// `sleep-for("s", 1e300)` panicked the host (DateTime + TimeDelta overflow) and left the run
/// `running` forever with a renewed lease; the builtin `sleep` had the same class of bug.
#[tokio::test]
async fn absurd_durations_fail_the_run_instead_of_panicking_the_host() {
    let (db, client) = setup("dur").await;
    let mut w = WorkerProc::start(&db.url, &config(""), &["--queue", "dur"]);
    let huge = spawn(
        &client,
        "dur",
        "zoo",
        calls(json!([{"op": "sleep-for", "seconds": 1e300}])),
    )
    .await;
    let far = spawn(
        &client,
        "dur",
        "zoo",
        calls(json!([{"op": "sleep-until", "millis": i64::MAX}])),
    )
    .await;
    let builtin = spawn(&client, "dur", "sleep", json!({"seconds": 1e300})).await;

    for id in [huge, far] {
        let r = finish(&client, "dur", id).await;
        let (name, message) = failure(&r);
        assert_eq!(name, "$InvalidCall", "{message}");
        assert!(message.contains("sleep"), "names the call: {message}");
    }
    // The builtin's sleep is cut by its timeout (2 s), as any run's is.
    let r = finish(&client, "dur", builtin).await;
    assert_eq!(failure(&r).0, "$Timeout");
    worker_serves(&client, "dur", &mut w).await;
}

/// A panic in host code fails only its run (retryable, `$HostPanic`), its lease is no longer
/// renewed, and the worker keeps serving.
#[tokio::test]
async fn a_host_panic_fails_only_its_run_and_ends_its_lease() {
    let (db, client) = setup("hp").await;
    let mut w = WorkerProc::start(&db.url, &config(""), &["--queue", "hp"]);
    let id = client
        .spawn(
            "hp",
            "panic",
            &json!({"message": "boom in the host"}),
            &no_backoff(2),
        )
        .await
        .unwrap()
        .task_id;
    let r = finish(&client, "hp", id).await;
    let (name, message) = failure(&r);
    assert_eq!(name, "$HostPanic");
    assert!(message.contains("boom in the host"), "{message}");
    let t = client.get_task("hp", id).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 2, "retryable: both attempts ran");
    // No run of the task is left running (an orphaned lease kept it `running` before).
    let running: i64 = sqlx::query_scalar(
        "select count(*) from absurd.r_hp where task_id = $1 and state = 'running'",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(running, 0);
    worker_alive(&client, "hp", &mut w).await;
}

/// 200 distinct 8 MiB step names took the worker from 18 MiB to 1.7 GiB. Now the first one is
/// refused before the host keeps it, and so is the 10,001st small one.
#[tokio::test]
async fn step_names_are_bounded_in_size_and_number() {
    let (db, client) = setup("steps").await;
    let mut w = WorkerProc::start(&db.url, &config(""), &["--queue", "steps"]);
    let big = spawn(
        &client,
        "steps",
        "zoo",
        calls(json!([{"op": "begin-steps", "count": 200, "bytes": 8 * MIB}])),
    )
    .await;
    let message = assert_limit(&client, "steps", big, "max_name_bytes").await;
    assert!(message.contains("step name is 8388608 bytes"), "{message}");
    let many = spawn(
        &client,
        "steps",
        "zoo",
        calls(json!([{"op": "begin-steps", "count": 20_000, "bytes": 16}])),
    )
    .await;
    assert_limit(&client, "steps", many, "max_steps").await;
    let hwm_mib = vm_hwm_kib(w.pid()) / 1024;
    // 128 MiB of guest memory plus the runtime; the unbounded host map reached 1.7 GiB.
    assert!(hwm_mib < 600, "worker peak RSS {hwm_mib} MiB");
    worker_serves(&client, "steps", &mut w).await;
}

/// A 50 MB step name or a 10 MB event name failed as `$HostError: index row requires ...`:
/// a database error leaking out. Now each is a limit, named.
#[tokio::test]
async fn oversized_names_and_values_are_limits_not_database_errors() {
    let (db, client) = setup("names").await;
    let mut w = WorkerProc::start(&db.url, &config(""), &["--queue", "names"]);
    let cases = [
        // Past twice the largest per-call limit: refused by wasmtime before it is copied.
        (
            "zoo",
            json!([{"op": "begin-steps", "count": 1, "bytes": 50_000_000u64}]),
            "host_call_bytes",
        ),
        (
            "zoo",
            json!([{"op": "begin-steps", "count": 1, "bytes": 5_000_000u64}]),
            "max_name_bytes",
        ),
        (
            "zoo",
            json!([{"op": "emit", "name_bytes": 10_000_000u64}]),
            "max_name_bytes",
        ),
        (
            "zoo",
            json!([{"op": "await", "name_bytes": 10_000_000u64}]),
            "max_name_bytes",
        ),
        (
            "zoo",
            json!([{"op": "spawn", "task_bytes": 5_000_000u64}]),
            "max_name_bytes",
        ),
        (
            "zoo",
            json!([{"op": "emit", "name": "ok.big", "payload_bytes": 2 * MIB}]),
            "max_event_payload_bytes",
        ),
        (
            "zoo",
            json!([{"op": "spawn", "params_bytes": 5 * MIB}]),
            "max_spawn_params_bytes",
        ),
        (
            "zoo",
            json!([{"op": "log", "bytes": MIB}]),
            "max_log_line_bytes",
        ),
        (
            "zoo",
            json!([{"op": "fail", "message_bytes": MIB}]),
            "max_failure_message_bytes",
        ),
        (
            "zoo",
            json!([{"op": "fail", "details_bytes": 2 * MIB}]),
            "max_failure_details_bytes",
        ),
        (
            "zoo",
            json!([{"op": "fail", "name_bytes": 4096}]),
            "max_name_bytes",
        ),
        (
            "zoo-small",
            json!([{"op": "complete-step", "bytes": 2 * MIB}]),
            "max_checkpoint_bytes",
        ),
        (
            "zoo-small",
            json!([{"op": "complete-step", "bytes": 900_000}, {"op": "complete-step", "bytes": 900_000},
                   {"op": "complete-step", "bytes": 900_000}, {"op": "complete-step", "bytes": 900_000}]),
            "max_checkpoint_total_bytes",
        ),
    ];
    let mut ids = Vec::new();
    for (task, list, key) in cases {
        ids.push((spawn(&client, "names", task, calls(list)).await, key));
    }
    for (id, key) in ids {
        let message = assert_limit(&client, "names", id, key).await;
        assert!(!message.contains("index row"), "{message}");
    }
    // Nothing over the limits reached the database.
    let (names, values): (Option<i32>, Option<i32>) = sqlx::query_as(
        "select max(octet_length(checkpoint_name)), max(octet_length(state::text)) from absurd.c_names",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(names.unwrap_or(0) <= 1024 + 11, "{names:?}");
    assert!(values.unwrap_or(0) as u64 <= MIB + 16, "{values:?}");
    let events: i64 = sqlx::query_scalar("select count(*) from absurd.e_names")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(events, 0, "no oversized event was stored");
    worker_serves(&client, "names", &mut w).await;
}

/// A guest looping on `spawn` put ~1,300 tasks in the queue within its 5 s timeout; emits were
/// unbounded too. Both are counted per run now.
#[tokio::test]
async fn spawns_and_emits_are_counted_per_run() {
    let (db, client) = setup("count").await;
    let mut w = WorkerProc::start(&db.url, &config(""), &["--queue", "count"]);
    let spawner = spawn(
        &client,
        "count",
        "zoo-small",
        calls(json!([{"op": "spawn", "task": "zoo", "count": 5000}])),
    )
    .await;
    assert_limit(&client, "count", spawner, "max_spawns").await;
    let spawned: i64 = sqlx::query_scalar(
        "select count(*) from absurd.t_count where task_name = 'zoo' and params->>'mode' = 'ok'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(spawned, 10, "exactly max_spawns tasks were spawned");

    let emitter = spawn(
        &client,
        "count",
        "zoo-small",
        calls(json!([{"op": "emit", "name": "ok.e", "count": 100}])),
    )
    .await;
    assert_limit(&client, "count", emitter, "max_emits").await;
    worker_serves(&client, "count", &mut w).await;
}

/// `spawn` accepted any queue (the dead-letter queue included) and any task name (native
/// types included), and `emit-event` any event name. Grants decide now.
#[tokio::test]
async fn spawns_and_events_need_grants() {
    let (db, client) = setup("grant").await;
    client.create_queue("elsewhere").await.unwrap();
    client.create_queue("grant-dlq").await.unwrap();
    client.create_queue("other").await.unwrap();
    let mut w = WorkerProc::start(&db.url, &config_for("grant"), &["--queue", "grant"]);
    let refused = [
        (
            "zoo",
            json!([{"op": "spawn", "queue": "grant-dlq"}]),
            "spawn_queues",
        ),
        (
            "zoo",
            json!([{"op": "spawn", "queue": "other"}]),
            "spawn_queues",
        ),
        (
            "zoo",
            json!([{"op": "spawn", "task": "solve"}]),
            "spawn_tasks",
        ),
        (
            "zoo",
            json!([{"op": "spawn", "task": "unknown-name"}]),
            "spawn_tasks",
        ),
        (
            "zoo-granted",
            json!([{"op": "spawn", "queue": "other"}]),
            "spawn_queues",
        ),
        (
            "zoo-small",
            json!([{"op": "emit", "name": "nope"}]),
            "emit_events",
        ),
        (
            "zoo-small",
            json!([{"op": "await", "name": "nope"}]),
            "await_events",
        ),
    ];
    let mut ids = Vec::new();
    for (task, list, grant) in refused {
        ids.push((spawn(&client, "grant", task, calls(list)).await, grant));
    }
    for (id, grant) in ids {
        let r = finish(&client, "grant", id).await;
        let (name, message) = failure(&r);
        assert_eq!(name, "$NotGranted", "{message}");
        assert!(
            message.contains(grant),
            "names the grant {grant}: {message}"
        );
    }
    let granted = spawn(
        &client,
        "grant",
        "zoo-granted",
        calls(json!([
            {"op": "spawn", "queue": "elsewhere"},
            {"op": "spawn", "queue": "grant-dlq"},
            {"op": "spawn", "task": "solve"},
            {"op": "spawn"}
        ])),
    )
    .await;
    let r = finish(&client, "grant", granted).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    // The tasks the granted type spawned (the dead-letter queue also holds the refused runs'
    // dead letters, whose params are the host-calls).
    for (table, n) in [("t_elsewhere", 1), ("t_grant-dlq", 1)] {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select count(*) from absurd.\"{table}\" where params->>'mode' = 'ok'"
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(count, n, "{table}");
    }
    let emitted = spawn(
        &client,
        "grant",
        "zoo-small",
        calls(json!([{"op": "emit", "name": "ok.done"}])),
    )
    .await;
    assert_eq!(
        finish(&client, "grant", emitted).await.state,
        State::Completed
    );
    worker_serves(&client, "grant", &mut w).await;
}

/// `heartbeat(u32::MAX)` set a lease of 68 years; a guest could also open files until the host
/// ran out of descriptors.
#[tokio::test]
async fn heartbeats_and_open_handles_are_bounded() {
    let (db, client) = setup("hb").await;
    let mut w = WorkerProc::start(&db.url, &config(""), &["--queue", "hb"]);
    let hb = spawn(
        &client,
        "hb",
        "zoo",
        calls(json!([{"op": "heartbeat", "seconds": u32::MAX}])),
    )
    .await;
    let message = assert_limit(&client, "hb", hb, "timeout").await;
    assert!(message.contains("4294967295"), "{message}");
    let far_leases: i64 = sqlx::query_scalar(
        "select count(*) from absurd.r_hb where claim_expires_at > now() + interval '1 day'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(far_leases, 0);
    let ok = spawn(
        &client,
        "hb",
        "zoo",
        calls(json!([{"op": "heartbeat", "seconds": 3}])),
    )
    .await;
    assert_eq!(finish(&client, "hb", ok).await.state, State::Completed);

    let files = spawn(
        &client,
        "hb",
        "zoo-small",
        calls(json!([{"op": "open-files", "dir": "/scratch", "count": 5000}])),
    )
    .await;
    assert_limit(&client, "hb", files, "max_open_handles").await;
    worker_serves(&client, "hb", &mut w).await;
}

/// Limits are configuration: a bad value stops the host with the key and the value named.
#[test]
fn bad_limit_values_are_named_at_start() {
    let text = std::fs::read_to_string(config(""))
        .unwrap()
        .replace("max_spawns = 10", "max_spawns = 0");
    let cfg = temp_file("absurd-host.toml", &text);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args(["check", "--config"])
        .arg(&cfg)
        .env(
            "ABSURD_DATABASE_URL",
            common::db_url("absurd_host_no_such_db"),
        )
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("max_spawns must be"), "{text}");
    assert!(text.contains("zoo-small"), "{text}");
}

/// `absurd-host check` shows each wasm type's grants.
#[test]
fn check_shows_grants() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args(["check", "--config"])
        .arg(config_for("q"))
        .env(
            "ABSURD_DATABASE_URL",
            common::db_url("absurd_host_no_such_db"),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("task zoo-granted grants"), "{text}");
    assert!(
        text.contains("spawn into: its own queue, elsewhere, q-dlq"),
        "{text}"
    );
    assert!(text.contains("solve"), "{text}");
    assert!(text.contains("emit events: ok.*"), "{text}");
    assert!(text.contains("max_spawns = 10"), "{text}");
}
