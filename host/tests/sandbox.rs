//! The wasm sandbox through a real worker: example components, the misbehaving-guest zoo,
//! durable replay, and crash isolation.

mod common;
use common::{setup, terminal};

use std::time::Duration;

use absurd_client::{RetryStrategy, SpawnOptions, State};
use common::{components_dir, temp_file, wait_for, WorkerProc};
use serde_json::{json, Value};
use uuid::Uuid;

fn config(extra: &str) -> std::path::PathBuf {
    let dir = components_dir();
    let data = temp_file("granted.txt", "granted file contents\n");
    let data_dir = data.parent().unwrap();
    let text = format!(
        r#"
[sandbox]
memory_mb = 128
pool_instances = 64

[tasks.echo]
kind = "wasm"
component = "{dir}/echo.wasm"

[tasks.zoo]
kind = "wasm"
component = "{dir}/zoo.wasm"
memory_mb = 64
timeout = 3
# The host-call loop below must meet its timeout, not the step count limit.
max_steps = 1000000000000
max_result_bytes = 1048576
max_log_bytes = 65536

[tasks.zoo-roomy]
kind = "wasm"
component = "{dir}/zoo.wasm"
memory_mb = 64
timeout = 120
max_result_bytes = 1048576
max_log_bytes = 65536

[tasks.zoo-fuel]
kind = "wasm"
component = "{dir}/zoo.wasm"
fuel = 300000000
timeout = 60

[tasks.zoo-granted]
kind = "wasm"
component = "{dir}/zoo.wasm"
scratch = true
env = ["ABSURD_TEST_GRANTED"]
dirs = [{{ host = "{data_dir}", guest = "/data", mode = "ro" }}]

[tasks.durable]
kind = "wasm"
component = "{dir}/durable.wasm"

[tasks.calibration-plan]
kind = "wasm"
component = "{dir}/pipeline.wasm"
spawn_tasks = ["calibration-solve"]

[tasks.calibration-solve]
kind = "builtin"
builtin = "echo"
{extra}
"#,
        dir = dir.display(),
        data_dir = data_dir.display(),
    );
    temp_file("absurd-host.toml", &text)
}

fn once() -> SpawnOptions {
    common::no_backoff(1)
}

#[tokio::test]
async fn echo_component_runs_a_python_spawned_task() {
    let (db, client) = setup("wasm-echo").await;
    let _w = WorkerProc::start(&db.url, &config(""), &["--queue", "wasm-echo"]);
    // Spawned by the real Python absurd-sdk.
    let out = std::process::Command::new(common::venv_bin("python"))
        .arg("-c")
        .arg(
            "import sys, json; from absurd_sdk import Absurd; \
             a = Absurd(sys.argv[1], queue_name='wasm-echo'); \
             r = a.spawn('echo', {'x': 41, 'from': 'python'}, queue='wasm-echo', max_attempts=2); \
             print(r['task_id'] if isinstance(r, dict) else r.task_id)",
        )
        .arg(&db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: Uuid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let r = terminal(&client, "wasm-echo", id, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    assert_eq!(r.result, Some(json!({"x": 41, "from": "python"})));
}

/// Every zoo member, at once, next to healthy tasks: each fails (or completes) with its exact
/// cause, the healthy tasks complete, and the host keeps serving.
#[tokio::test]
async fn zoo_members_fail_alone_with_their_exact_cause() {
    let (db, client) = setup("zoo").await;
    std::env::set_var("ABSURD_TEST_GRANTED", "granted-value");
    let w = WorkerProc::start(
        &db.url,
        &config(""),
        &["--queue", "zoo", "--concurrency", "16"],
    );

    let cases: Vec<(&str, Value)> = vec![
        ("zoo", json!({"mode": "infinite-loop"})),
        ("zoo-fuel", json!({"mode": "infinite-loop"})),
        ("zoo-roomy", json!({"mode": "deep-recursion"})),
        ("zoo-roomy", json!({"mode": "memory-bomb"})),
        ("zoo-roomy", json!({"mode": "huge-step-allocation"})),
        ("zoo-roomy", json!({"mode": "panic"})),
        ("zoo-roomy", json!({"mode": "unreachable"})),
        (
            "zoo-roomy",
            json!({"mode": "huge-result", "bytes": 4_000_000}),
        ),
        (
            "zoo-roomy",
            json!({"mode": "log-flood", "lines": 20_000, "bytes": 2_000_000}),
        ),
        ("zoo-roomy", json!({"mode": "read-passwd"})),
        ("zoo-roomy", json!({"mode": "read-env"})),
        ("zoo-roomy", json!({"mode": "open-socket"})),
        ("zoo", json!({"mode": "block-poll"})),
        (
            "zoo",
            json!({"mode": "hostcall-loop", "calls": 1_000_000_000_000u64}),
        ),
        (
            "zoo-roomy",
            json!({"mode": "sleep-wake", "count": 4, "seconds": 0.2}),
        ),
    ];
    let mut zoo = vec![];
    for (task, params) in &cases {
        zoo.push(
            client
                .spawn("zoo", task, params, &once())
                .await
                .unwrap()
                .task_id,
        );
    }
    let mut healthy = vec![];
    for i in 0..20 {
        healthy.push(
            client
                .spawn("zoo", "echo", &json!({"i": i}), &once())
                .await
                .unwrap()
                .task_id,
        );
    }
    for (i, id) in healthy.iter().enumerate() {
        let r = terminal(&client, "zoo", *id, Duration::from_secs(90)).await;
        assert_eq!(r.result, Some(json!({"i": i})), "healthy task {i}: {r:?}");
    }
    let mut results = vec![];
    for id in &zoo {
        results.push(terminal(&client, "zoo", *id, Duration::from_secs(120)).await);
    }
    let failure = |i: usize| -> (String, Value) {
        let r = &results[i];
        assert_eq!(r.state, State::Failed, "{:?}: {r:?}", cases[i]);
        let f = r.failure_reason.clone().unwrap();
        (f["name"].as_str().unwrap().to_string(), f)
    };
    let result = |i: usize| -> Value {
        let r = &results[i];
        assert_eq!(r.state, State::Completed, "{:?}: {r:?}", cases[i]);
        r.result.clone().unwrap()
    };

    assert_eq!(
        failure(0).0,
        "$Timeout",
        "infinite loop under a wall-clock limit"
    );
    assert_eq!(
        failure(1).0,
        "$OutOfFuel",
        "infinite loop under a fuel budget"
    );
    let (name, f) = failure(2);
    assert_eq!(
        (name.as_str(), f["details"]["cause"].as_str()),
        ("$Trap", Some("stack overflow"))
    );
    assert_eq!(failure(3).0, "$MemoryLimit");
    assert_eq!(failure(4).0, "$MemoryLimit");
    let (name, f) = failure(5);
    assert_eq!(
        (name.as_str(), f["details"]["cause"].as_str()),
        ("$Trap", Some("panic"))
    );
    assert!(
        f["details"]["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("deliberate panic"),
        "{f}"
    );
    let (name, f) = failure(6);
    assert_eq!(
        (name.as_str(), f["details"]["cause"].as_str()),
        ("$Trap", Some("unreachable"))
    );
    assert_eq!(failure(7).0, "$ResultTooLarge");
    let flood = result(8);
    assert!(flood.is_object(), "log flood completes: {flood}");
    let passwd = result(9);
    assert_eq!(passwd["read"], false, "no filesystem: {passwd}");
    let env = result(10);
    assert!(
        !env.to_string().contains("/root") && !env.to_string().contains("PATH"),
        "no host env: {env}"
    );
    let sock = result(11);
    assert_eq!(sock["outcome"]["connected"], false, "no network: {sock}");
    assert_eq!(
        failure(12).0,
        "$Timeout",
        "blocked in a WASI poll, stopped by the host-side race"
    );
    assert_eq!(failure(13).0, "$Timeout", "host-call loop");
    assert_eq!(result(14)["sleeps"], 4, "slept and was woken four times");

    // Still serving.
    let after = client
        .spawn("zoo", "echo", &json!({"after": "zoo"}), &once())
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, "zoo", after, Duration::from_secs(30)).await;
    assert_eq!(r.result, Some(json!({"after": "zoo"})));
    drop(w);
}

/// A task's own `timeout_sec` (the header, as the Python SDK's `spawn(headers=...)` sets it)
/// lowers its type's timeout for a wasm guest and never raises it; an unusable one fails the
/// task at once, naming the value.
#[tokio::test]
async fn a_task_timeout_sec_lowers_the_wasm_deadline_and_never_raises_it() {
    let (db, client) = setup("wasm-tmo").await;
    let w = WorkerProc::start(
        &db.url,
        &config(""),
        &["--queue", "wasm-tmo", "--concurrency", "4"],
    );
    // Lowered: zoo-roomy's timeout is 120 s; the task asks for 1 s, through the real SDK.
    let started = std::time::Instant::now();
    let out = std::process::Command::new(common::venv_bin("python"))
        .arg("-c")
        .arg(
            "import sys; from absurd_sdk import Absurd; \
             a = Absurd(sys.argv[1], queue_name='wasm-tmo'); \
             r = a.spawn('zoo-roomy', {'mode': 'infinite-loop'}, queue='wasm-tmo', max_attempts=1, \
                         headers={'timeout_sec': 1}); \
             print(r['task_id'] if isinstance(r, dict) else r.task_id)",
        )
        .arg(&db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lowered: Uuid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // Not raised: zoo's timeout is 3 s; the task asks for 100 s.
    let raised = client
        .spawn(
            "wasm-tmo",
            "zoo",
            &json!({"mode": "infinite-loop"}),
            &SpawnOptions {
                headers: Some(json!({"timeout_sec": 100})),
                ..once()
            },
        )
        .await
        .unwrap()
        .task_id;
    // Unusable: refused before the guest starts, without further attempts.
    let bad = client
        .spawn(
            "wasm-tmo",
            "echo",
            &json!({"x": 1}),
            &SpawnOptions {
                headers: Some(json!({"timeout_sec": "soon"})),
                ..common::no_backoff(3)
            },
        )
        .await
        .unwrap()
        .task_id;

    let r = terminal(&client, "wasm-tmo", lowered, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();
    assert_eq!(r.state, State::Failed, "{r:?}");
    let f = r.failure_reason.unwrap();
    assert_eq!(f["name"], "$Timeout", "{f}");
    assert_eq!(f["details"]["cause"], "interrupt", "{f}");
    assert_eq!(f["details"]["timeout_seconds"], 1.0, "{f}");
    assert_eq!(f["details"]["timeout_sec_requested"], 1, "{f}");
    assert_eq!(f["details"]["type_timeout_seconds"], 120.0, "{f}");
    assert_eq!(f["details"]["timeout_sec_clamped"], false, "{f}");
    assert!(
        elapsed < Duration::from_secs(30),
        "interrupted at the task's 1 s, not the type's 120 s: {elapsed:?}"
    );

    let r = terminal(&client, "wasm-tmo", raised, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Failed, "{r:?}");
    let f = r.failure_reason.unwrap();
    assert_eq!(f["name"], "$Timeout", "{f}");
    assert_eq!(
        f["details"]["timeout_seconds"], 3.0,
        "clamped to the type's: {f}"
    );
    assert_eq!(f["details"]["timeout_sec_requested"], 100, "{f}");
    assert_eq!(f["details"]["timeout_sec_clamped"], true, "{f}");
    assert!(
        w.log_text().contains("clamped to the type's"),
        "the clamp is logged"
    );

    let r = terminal(&client, "wasm-tmo", bad, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Failed, "{r:?}");
    let f = r.failure_reason.unwrap();
    assert_eq!(f["name"], "$InvalidTaskData", "{f}");
    assert_eq!(f["retryable"], false, "{f}");
    assert!(
        f["message"].as_str().unwrap().contains(
            "timeout_sec must be a whole number of seconds from 1 to 31536000, got \"soon\""
        ),
        "{f}"
    );
    let t = client.get_task("wasm-tmo", bad).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 1, "permanent: no second attempt");
}

/// A wasm type that opts in (`status_error_fails = true`) fails a run whose result is
/// `{"status": "error"|"failed", ...}`, with the failure a native program gets for it; a type
/// that does not opt in completes with that result as before.
#[tokio::test]
async fn status_error_results_fail_the_run_when_the_type_opts_in() {
    let (db, client) = setup("wasm-dsa").await;
    let extra = format!(
        "[tasks.echo-dsa]\nkind = \"wasm\"\ncomponent = \"{}/echo.wasm\"\nstatus_error_fails = true\n",
        components_dir().display()
    );
    let _w = WorkerProc::start(
        &db.url,
        &config(&extra),
        &["--queue", "wasm-dsa", "--dlq-enabled", "false"],
    );
    let report = json!({
        "status": "error", "message": "Validation failed: MS not found",
        "errors": ["MS not found"], "retryable": false
    });
    let spawn = |task: &'static str, params: Value, attempts: i32| {
        let client = client.clone();
        async move {
            client
                .spawn("wasm-dsa", task, &params, &common::no_backoff(attempts))
                .await
                .unwrap()
                .task_id
        }
    };
    let permanent = spawn("echo-dsa", report.clone(), 3).await;
    let retried = spawn(
        "echo-dsa",
        json!({"status": "FAILED", "errors": ["a", {"b": 1}]}),
        2,
    )
    .await;
    let fine = spawn("echo-dsa", json!({"status": "success", "outputs": {}}), 1).await;
    let not_opted_in = spawn("echo", report.clone(), 1).await;

    let r = terminal(&client, "wasm-dsa", permanent, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Failed, "{r:?}");
    let f = r.failure_reason.unwrap();
    assert_eq!(f["name"], "$TaskReportedError", "{f}");
    assert_eq!(f["message"], "Validation failed: MS not found");
    assert_eq!(f["details"]["result"], report);
    assert_eq!(f["retryable"], false);
    let t = client
        .get_task("wasm-dsa", permanent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.runs.len(), 1, "\"retryable\": false makes it permanent");

    let r = terminal(&client, "wasm-dsa", retried, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Failed, "{r:?}");
    let f = r.failure_reason.unwrap();
    assert_eq!(f["name"], "$TaskReportedError", "{f}");
    assert_eq!(f["message"], "a; {\"b\":1}");
    let t = client.get_task("wasm-dsa", retried).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 2, "retried like any retryable failure");

    let r = terminal(&client, "wasm-dsa", fine, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let r = terminal(&client, "wasm-dsa", not_opted_in, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    assert_eq!(r.result, Some(report));
}

#[tokio::test]
async fn granted_capabilities_are_visible_and_nothing_else() {
    let (db, client) = setup("grants").await;
    std::env::set_var("ABSURD_TEST_GRANTED", "granted-value");
    let _w = WorkerProc::start(&db.url, &config(""), &["--queue", "grants"]);
    let env = client
        .spawn(
            "grants",
            "zoo-granted",
            &json!({"mode": "read-env"}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, "grants", env, Duration::from_secs(60)).await;
    let text = r.result.unwrap().to_string();
    assert!(
        text.contains("ABSURD_TEST_GRANTED") && text.contains("granted-value"),
        "{text}"
    );
    assert!(!text.contains("PATH"), "only the named variable: {text}");
    let passwd = client
        .spawn(
            "grants",
            "zoo-granted",
            &json!({"mode": "read-passwd"}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, "grants", passwd, Duration::from_secs(60)).await;
    assert_eq!(
        r.result.unwrap()["read"],
        false,
        "a granted /data does not open /etc"
    );
}

#[tokio::test]
async fn durable_component_resumes_from_checkpoints_after_sleep_and_event() {
    let (db, client) = setup("durable").await;
    let _w = WorkerProc::start(
        &db.url,
        &config(""),
        &["--queue", "durable", "--poll-interval", "30"],
    );
    let id = client
        .spawn(
            "durable",
            "durable",
            &json!({"input": "ms-1", "sleep_seconds": 1, "event": "ready:1"}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    // It sleeps, wakes on its own, then waits for the event.
    wait_for(
        "the task to wait for its event",
        Duration::from_secs(30),
        || async {
            let t = client.get_task("durable", id).await.unwrap().unwrap();
            (!t.waits.is_empty()).then_some(())
        },
    )
    .await;
    client
        .emit_event("durable", "ready:1", Some(&json!({"go": true})))
        .await
        .unwrap();
    let r = terminal(&client, "durable", id, Duration::from_secs(30)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let out = r.result.unwrap();
    assert_eq!(out["event"], json!({"go": true}));
    // Three executions (start, after the sleep, after the event); each step ran once.
    assert_eq!(out["executed_now"], json!(["publish"]), "{out}");
    let t = client.get_task("durable", id).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 1, "suspensions reuse the run");
    let names: Vec<&str> = t
        .checkpoints
        .iter()
        .map(|c| c.checkpoint_name.as_str())
        .collect();
    for n in [
        "fetch",
        "cool-down",
        "process",
        "$awaitEvent:ready:1",
        "publish",
    ] {
        assert!(names.contains(&n), "checkpoint {n} in {names:?}");
    }
}

#[tokio::test]
async fn durable_component_survives_a_sigkilled_worker_without_rerunning_steps() {
    let (db, client) = setup("durable-kill").await;
    let cfg = config("");
    let mut a = WorkerProc::start(
        &db.url,
        &cfg,
        &[
            "--queue",
            "durable-kill",
            "--claim-timeout",
            "2",
            "--worker-id",
            "w-a",
        ],
    );
    let id = client
        .spawn(
            "durable-kill",
            "durable",
            &json!({"sleep_seconds": 0, "event": "k", "timeout_seconds": 1, "work_ms": 20000}),
            &SpawnOptions {
                max_attempts: Some(3),
                retry_strategy: Some(RetryStrategy::none()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .task_id;
    // Kill A while `process` is working (after `fetch` was checkpointed).
    wait_for(
        "fetch to be checkpointed",
        Duration::from_secs(30),
        || async {
            let t = client.get_task("durable-kill", id).await.unwrap().unwrap();
            t.checkpoints
                .iter()
                .any(|c| c.checkpoint_name == "fetch")
                .then_some(())
        },
    )
    .await;
    a.signal(libc::SIGKILL);
    a.wait_exit(Duration::from_secs(10)).unwrap();
    let first_run = client
        .get_task("durable-kill", id)
        .await
        .unwrap()
        .unwrap()
        .runs[0]
        .run_id;
    // B must not spend 20 s in `process` again to pass quickly, but correctness is what we
    // check: `fetch` is replayed from attempt 1, `process` runs again (it never completed).
    let _b = WorkerProc::start(
        &db.url,
        &cfg,
        &[
            "--queue",
            "durable-kill",
            "--claim-timeout",
            "30",
            "--worker-id",
            "w-b",
        ],
    );
    let r = terminal(&client, "durable-kill", id, Duration::from_secs(90)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let out = r.result.unwrap();
    assert_eq!(
        out["executions"][0]["run_id"],
        json!(first_run.to_string()),
        "fetch replayed from the first run: {out}"
    );
    assert_eq!(out["event_timed_out"], true);
    let t = client.get_task("durable-kill", id).await.unwrap().unwrap();
    assert_eq!(
        t.runs[0].failure_reason.as_ref().unwrap()["name"],
        "$ClaimTimeout"
    );
    let fetches = t
        .checkpoints
        .iter()
        .filter(|c| c.checkpoint_name.starts_with("fetch"))
        .count();
    assert_eq!(fetches, 1, "fetch was not executed twice");
}

#[tokio::test]
async fn pipeline_component_validates_params_and_spawns_the_next_task() {
    let (db, client) = setup("pipe").await;
    let _w = WorkerProc::start(&db.url, &config(""), &["--queue", "pipe"]);
    let bad = client
        .spawn(
            "pipe",
            "calibration-plan",
            &json!({"config": null, "inputs": {"ms_path": 5}, "outputs": {}}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, "pipe", bad, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Failed);
    let f = r.failure_reason.unwrap();
    assert_eq!(f["name"], "$InvalidParams");
    assert!(
        f["message"].as_str().unwrap().contains("ms_path"),
        "names the field: {f}"
    );
    let t = client.get_task("pipe", bad).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 1, "permanent: no retry");

    let good = client
        .spawn(
            "pipe",
            "calibration-plan",
            &json!({"config": null, "inputs": {"ms_path": "/data/2025-01-01T00:00:00.ms"}, "outputs": {}}),
            &SpawnOptions { max_attempts: Some(2), ..Default::default() },
        )
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, "pipe", good, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let out = r.result.unwrap();
    let next: Uuid = out["chain_next_task_id"].as_str().unwrap().parse().unwrap();
    let n = terminal(&client, "pipe", next, Duration::from_secs(60)).await;
    assert_eq!(n.state, State::Completed);
    assert_eq!(
        n.result.as_ref().unwrap()["inputs"]["ms_path"],
        "/data/2025-01-01T00:00:00.ms"
    );
}

#[tokio::test]
async fn broken_component_is_refused_at_start_naming_the_file() {
    let junk = temp_file("broken.wasm", "this is not wasm");
    let cfg = temp_file(
        "absurd-host.toml",
        &format!(
            "[tasks.bad]\nkind = \"wasm\"\ncomponent = \"{}\"\n",
            junk.display()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args([
            "worker",
            "--queue",
            "q",
            "--database-url",
            "postgres://127.0.0.1:1/none",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.wasm") && err.contains("not a WebAssembly component"),
        "{err}"
    );
}

/// A task a wasm component started is finished by the Python SDK's own worker: the component's
/// checkpoints follow the SDKs' naming, so the Python handler replays them instead of rerunning.
#[tokio::test]
async fn python_worker_resumes_a_task_a_wasm_component_started() {
    let (db, client) = setup("handoff").await;
    let mut w = WorkerProc::start(&db.url, &config(""), &["--queue", "handoff"]);
    let id = client
        .spawn(
            "handoff",
            "durable",
            &json!({"input": "from-wasm", "sleep_seconds": 2}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    // The component ran `fetch`, checkpointed the wake-up time and suspended.
    let t = wait_for(
        "the component to suspend",
        Duration::from_secs(30),
        || async {
            let t = client.get_task("handoff", id).await.unwrap().unwrap();
            (t.summary.state == State::Sleeping).then_some(t)
        },
    )
    .await;
    w.signal(libc::SIGTERM);
    w.wait_exit(Duration::from_secs(30)).expect("worker stops");
    let wasm_run = t.runs[0].run_id.to_string();

    let script = r#"
import json, sys, time
from absurd_sdk import Absurd
app = Absurd(sys.argv[1], queue_name="handoff")
ran = []
@app.register_task("durable")
def durable(params, ctx):
    fetch = ctx.step("fetch", lambda: ran.append("fetch") or {"step": "fetch", "run_id": "python"})
    ctx.sleep_for("cool-down", 2)
    return {"fetch": fetch, "python_ran": ran}
deadline = time.time() + 60
while time.time() < deadline:
    app.work_batch(worker_id="python-worker", claim_timeout=30, batch_size=1)
    r = app.fetch_task_result(sys.argv[2])
    if r is not None and r.state in ("completed", "failed", "cancelled"):
        break
    time.sleep(0.2)
"#;
    let out = std::process::Command::new(common::venv_bin("python"))
        .arg("-c")
        .arg(script)
        .arg(&db.url)
        .arg(id.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = client.task_result("handoff", id).await.unwrap().unwrap();
    assert_eq!(r.state, State::Completed, "{r:?}");
    let result = r.result.unwrap();
    assert_eq!(
        result["python_ran"],
        json!([]),
        "Python replayed fetch instead of running it: {result}"
    );
    assert_eq!(
        result["fetch"]["run_id"],
        json!(wasm_run),
        "the component's checkpoint: {result}"
    );
    let t = client.get_task("handoff", id).await.unwrap().unwrap();
    assert_eq!(
        t.runs.last().unwrap().claimed_by.as_deref(),
        Some("python-worker")
    );
}

/// A component that imports an interface the host does not grant (here `wasi:http`) is refused
/// when the host starts, naming the file and the import.
#[tokio::test]
async fn component_with_an_ungranted_import_is_refused_at_start() {
    let bytes = wat::parse_str(
        r#"(component
             (import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func))))
           )"#,
    )
    .unwrap();
    let dir = common::temp_dir();
    let wasm = dir.join("wants-http.wasm");
    std::fs::write(&wasm, bytes).unwrap();
    let cfg = temp_file(
        "absurd-host.toml",
        &format!(
            "[tasks.http]\nkind = \"wasm\"\ncomponent = \"{}\"\n",
            wasm.display()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args([
            "worker",
            "--queue",
            "q",
            "--database-url",
            "postgres://127.0.0.1:1/none",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wants-http.wasm") && err.contains("wasi:http/outgoing-handler@0.2.0"),
        "names the file and the import: {err}"
    );
}
