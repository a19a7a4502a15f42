//! Python task components (guest-sdk-py, examples/python) built by `absurd-host build-py` and
//! run through a real worker: the examples, the Python zoo with the Rust zoo's exact failure
//! causes, and `check` explaining a component built against another WIT version.
//!
//! The components are built once per test process with the real componentize-py (installed by
//! scripts/setup-componentize-py, else by build-py itself on first use) and cached by the hash of
//! their sources in ~/.cache/absurd-host/py-components, so only a change to the SDK, the WIT or
//! an example rebuilds one (about 13 s each).

mod common;
use common::{setup, temp_file, terminal, wait_for, WorkerProc};

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use absurd_client::State;
use serde_json::{json, Value};

/// The examples built into components: zoo, calibration_plan, durable_demo, fanout, echo.
fn py_components() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let out_dir = common::temp_dir();
        for name in ["zoo", "calibration_plan", "durable_demo", "fanout", "echo"] {
            let app = common::repo_root()
                .join("examples/python")
                .join(format!("{name}.py"));
            let wasm = out_dir.join(format!("{name}.wasm"));
            let out = Command::new(env!("CARGO_BIN_EXE_absurd-host"))
                .arg("build-py")
                .arg(&app)
                .arg("-o")
                .arg(&wasm)
                .output()
                .expect("run absurd-host build-py");
            assert!(
                out.status.success(),
                "build-py {name} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let report = String::from_utf8_lossy(&out.stdout);
            assert!(
                report
                    .lines()
                    .any(|l| l.trim_start().starts_with("exports:") && l.contains("run"))
                    && report.contains("absurd:task/durable@0.2.0"),
                "build-py prints the exports and imports: {report}"
            );
            assert!(wasm.is_file());
        }
        out_dir
    })
    .clone()
}

/// The worker configuration, written once; its components are compiled into the precompile
/// cache by `absurd-host check` before any worker starts, so that the tests' workers (started
/// in parallel) load them instead of each compiling the same 19 MB components.
fn config() -> PathBuf {
    static CONFIG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let cfg = write_config();
            let out = Command::new(env!("CARGO_BIN_EXE_absurd-host"))
                .args(["check", "--no-database", "--config"])
                .arg(&cfg)
                .output()
                .expect("run absurd-host check");
            assert!(
                out.status.success(),
                "check refused the Python components:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            cfg
        })
        .clone()
}

fn write_config() -> PathBuf {
    let dir = py_components();
    let echo = common::components_dir().join("echo.wasm");
    let text = format!(
        r#"
[sandbox]
memory_mb = 256
pool_instances = 64

[tasks.echo]
kind = "wasm"
component = "{echo}"

[tasks.zoo]
kind = "wasm"
component = "{dir}/zoo.wasm"
memory_mb = 128
timeout = 3
max_result_bytes = 1048576
max_log_bytes = 65536

[tasks.zoo-roomy]
kind = "wasm"
component = "{dir}/zoo.wasm"
memory_mb = 128
timeout = 120
max_result_bytes = 1048576
max_log_bytes = 65536

[tasks.zoo-fuel]
kind = "wasm"
component = "{dir}/zoo.wasm"
fuel = 3000000000
timeout = 60

[tasks.calibration-plan]
kind = "wasm"
component = "{dir}/calibration_plan.wasm"
spawn_tasks = ["calibration-solve"]

[tasks.calibration-solve]
kind = "builtin"
builtin = "echo"

[tasks.durable]
kind = "wasm"
component = "{dir}/durable_demo.wasm"

[tasks.py-fanout]
kind = "wasm"
component = "{dir}/fanout.wasm"
spawn_tasks = ["py-echo", "fail", "wait-event"]

[tasks.py-echo]
kind = "wasm"
component = "{dir}/echo.wasm"

[tasks.fail]
kind = "builtin"
builtin = "fail"

[tasks.wait-event]
kind = "builtin"
builtin = "wait-event"
"#,
        echo = echo.display(),
        dir = dir.display(),
    );
    temp_file("absurd-host.toml", &text)
}

fn once() -> absurd_client::SpawnOptions {
    common::no_backoff(1)
}

/// The calibration planner validates its params by field, checkpoints its plan, spawns the
/// next task of the chain, and logs through Python's `logging` into the host's log.
#[tokio::test]
async fn python_calibration_planner_plans_spawns_and_names_bad_fields() {
    let (db, client) = setup("py-plan").await;
    let w = WorkerProc::start(&db.url, &config(), &["--queue", "py-plan"]);
    let good = client
        .spawn(
            "py-plan",
            "calibration-plan",
            &json!({"inputs": {"ms_path": "/data/2025-06-01T12:00:00.ms",
                               "calibration_params": {"refant": 104, "solve_delay": true}}}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    let bad = client
        .spawn(
            "py-plan",
            "calibration-plan",
            &json!({"inputs": {"ms_path": "/data/x.ms",
                               "calibration_params": {"gain_calmode": "amp"}}}),
            &common::no_backoff(3),
        )
        .await
        .unwrap()
        .task_id;

    let r = terminal(&client, "py-plan", good, Duration::from_secs(120)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let out = r.result.unwrap();
    assert_eq!(out["status"], "success", "{out}");
    assert_eq!(
        out["outputs"]["calibration_plan"]["solves"],
        json!(["delay", "bandpass", "gains"])
    );
    let next: uuid::Uuid = out["chain_next_task_id"].as_str().unwrap().parse().unwrap();
    let solved = terminal(&client, "py-plan", next, Duration::from_secs(60)).await;
    assert_eq!(solved.state, State::Completed, "{solved:?}");
    assert_eq!(
        solved.result.unwrap()["outputs"]["calibration_tables"],
        out["outputs"]["calibration_tables"]
    );
    let t = client.get_task("py-plan", good).await.unwrap().unwrap();
    assert!(
        t.checkpoints.iter().any(|c| c.checkpoint_name == "plan"),
        "the plan is checkpointed"
    );

    let r = terminal(&client, "py-plan", bad, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Failed, "{r:?}");
    let f = r.failure_reason.unwrap();
    assert_eq!(f["name"], "$InvalidParams", "{f}");
    assert_eq!(
        f["details"]["path"], "inputs.calibration_params.gain_calmode",
        "{f}"
    );
    let t = client.get_task("py-plan", bad).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 1, "a permanent failure is not retried");

    let log = wait_for("the planner's log line", Duration::from_secs(30), || {
        let text = w.log_text();
        async move {
            text.lines()
                .find(|l| l.contains("calibration-plan: /data/2025-06-01T12:00:00.ms solves"))
                .map(str::to_string)
        }
    })
    .await;
    assert!(
        log.contains(&good.to_string()),
        "tagged with the task id: {log}"
    );
}

/// A step, a sleep and an event: the task suspends twice and its step replays its value.
#[tokio::test]
async fn python_durable_example_sleeps_waits_for_an_event_and_replays_its_step() {
    let (db, client) = setup("py-durable").await;
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", "py-durable"]);
    let id = client
        .spawn(
            "py-durable",
            "durable",
            &json!({"input": "ms-7", "sleep_seconds": 1, "event": "ready:7"}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    wait_for(
        "the task to wait for its event",
        Duration::from_secs(120),
        || async {
            let t = client.get_task("py-durable", id).await.unwrap().unwrap();
            (!t.waits.is_empty()).then_some(())
        },
    )
    .await;
    client
        .emit_event("py-durable", "ready:7", Some(&json!({"go": true})))
        .await
        .unwrap();
    let r = terminal(&client, "py-durable", id, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let out = r.result.unwrap();
    assert_eq!(out["event"], json!({"go": true}), "{out}");
    assert_eq!(out["fetched"], "ms-7");
    let t = client.get_task("py-durable", id).await.unwrap().unwrap();
    assert_eq!(out["fetched_by_run"], json!(t.runs[0].run_id.to_string()));
    let names: Vec<&str> = t
        .checkpoints
        .iter()
        .map(|c| c.checkpoint_name.as_str())
        .collect();
    for n in ["fetch", "cool-down", "$awaitEvent:ready:7"] {
        assert!(names.contains(&n), "checkpoint {n} in {names:?}");
    }
}

/// The Python zoo, at once, next to healthy tasks: each member fails (or completes) with the
/// same exact cause as its Rust twin (host/tests/sandbox.rs), and the host keeps serving.
#[tokio::test]
async fn python_zoo_members_fail_alone_with_the_rust_zoos_causes() {
    let (db, client) = setup("py-zoo").await;
    let w = WorkerProc::start(
        &db.url,
        &config(),
        &["--queue", "py-zoo", "--concurrency", "16"],
    );
    let cases: Vec<(&str, Value)> = vec![
        ("zoo", json!({"mode": "infinite-loop"})),
        ("zoo-fuel", json!({"mode": "infinite-loop"})),
        ("zoo-roomy", json!({"mode": "deep-recursion"})),
        ("zoo-roomy", json!({"mode": "memory-bomb"})),
        (
            "zoo-roomy",
            json!({"mode": "huge-result", "bytes": 4_000_000}),
        ),
        (
            "zoo-roomy",
            json!({"mode": "log-flood", "lines": 20_000, "bytes": 2_000_000}),
        ),
        ("zoo-roomy", json!({"mode": "read-passwd"})),
        ("zoo-roomy", json!({"mode": "open-socket"})),
        ("zoo", json!({"mode": "block-poll"})),
        ("zoo-roomy", json!({"mode": "no-such-mode"})),
        (
            "zoo-roomy",
            json!({"mode": "deep-recursion", "unlimited": true}),
        ),
        ("zoo-roomy", json!({"mode": "huge-allocation"})),
        (
            "zoo-roomy",
            json!({"mode": "huge-allocation", "bytes": 2_147_483_000u64}),
        ),
    ];
    let mut zoo = vec![];
    for (task, params) in &cases {
        zoo.push(
            client
                .spawn("py-zoo", task, params, &once())
                .await
                .unwrap()
                .task_id,
        );
    }
    let mut healthy = vec![];
    for i in 0..10 {
        healthy.push(
            client
                .spawn(
                    "py-zoo",
                    "zoo-roomy",
                    &json!({"mode": "ok", "i": i}),
                    &once(),
                )
                .await
                .unwrap()
                .task_id,
        );
    }
    for id in &healthy {
        let r = terminal(&client, "py-zoo", *id, Duration::from_secs(180)).await;
        assert_eq!(r.result, Some(json!({"ok": true})), "healthy task: {r:?}");
    }
    let mut results = vec![];
    for id in &zoo {
        results.push(terminal(&client, "py-zoo", *id, Duration::from_secs(180)).await);
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
        ("$Trap", Some("stack overflow")),
        "{f}"
    );
    assert_eq!(failure(3).0, "$MemoryLimit", "{}", failure(3).1);
    assert_eq!(failure(4).0, "$ResultTooLarge");
    let flood = result(5);
    assert_eq!(flood["log_lines"], 20_000, "log flood completes: {flood}");
    let passwd = result(6);
    assert_eq!(passwd["read"], false, "no filesystem: {passwd}");
    let sock = result(7);
    assert_eq!(sock["outcome"]["connected"], false, "no network: {sock}");
    assert_eq!(failure(8).0, "$Timeout", "blocked in a WASI poll");
    let (name, f) = failure(9);
    assert_eq!(name, "ValueError", "a Python exception: {f}");
    assert!(
        f["details"]["traceback"]
            .as_str()
            .unwrap()
            .contains("unknown mode"),
        "{f}"
    );
    assert_eq!(
        failure(10).0,
        "$MemoryLimit",
        "recursion limit lifted: {}",
        failure(10).1
    );
    assert_eq!(
        failure(11).0,
        "$MemoryLimit",
        "1 GiB at once: {}",
        failure(11).1
    );
    assert_eq!(
        failure(12).0,
        "$MemoryLimit",
        "2 GiB at once: {}",
        failure(12).1
    );

    let after = client
        .spawn("py-zoo", "echo", &json!({"after": "zoo"}), &once())
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, "py-zoo", after, Duration::from_secs(60)).await;
    assert_eq!(r.result, Some(json!({"after": "zoo"})));
    drop(w);
}

/// `check` says which WIT version a component that does not link was built against.
#[test]
fn check_names_the_wit_version_a_component_was_built_against() {
    let bytes = wat::parse_str(
        r#"(component
             (import "absurd:task/log@9.1.0" (instance (export "log" (func (param "message" string)))))
           )"#,
    )
    .unwrap();
    let dir = common::temp_dir();
    let wasm = dir.join("future.wasm");
    std::fs::write(&wasm, bytes).unwrap();
    let cfg = temp_file(
        "absurd-host.toml",
        &format!(
            "[tasks.future]\nkind = \"wasm\"\ncomponent = \"{}\"\n",
            wasm.display()
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args(["check", "--no-database", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("built against absurd:task@9.1.0")
            && text.contains(
                "this host provides absurd:task@0.1.0, absurd:task@0.2.0 and absurd:task@0.2.1"
            ),
        "{text}"
    );
}

/// A Python parent (examples/python/fanout.py) spawns children and waits for their results
/// with `await_task_result` (WIT 0.2.0): completed, failed and cancelled children come back as
/// their outcomes, `spawn_and_wait` of a failing child fails the parent with `$ChildFailed`,
/// and a wait with a timeout gives up.
#[tokio::test]
async fn python_parent_awaits_its_childrens_results() {
    let q = "py-await";
    let (db, client) = setup(q).await;
    let _w = WorkerProc::start(&db.url, &config(), &["--queue", q, "--concurrency", "4"]);
    let spawn = |params: Value| {
        let client = &client;
        async move {
            client
                .spawn(q, "py-fanout", &params, &once())
                .await
                .unwrap()
                .task_id
        }
    };
    // Generous: a worker compiles the components its precompile cache lacks when it starts.
    let limit = Duration::from_secs(300);

    // Python children that complete, then one more awaited with spawn_and_wait.
    let ok = spawn(
        json!({"task": "py-echo", "items": [{"n": 1}, {"n": 2}, {"n": 3}], "then": {"last": true}}),
    )
    .await;
    // Children that fail for good.
    let failed =
        spawn(json!({"task": "fail", "items": [{"message": "bad ms", "permanent": true}]})).await;
    // spawn_and_wait of a child that fails: the parent fails permanently.
    let child_failed = client
        .spawn(
            q,
            "py-fanout",
            &json!({"task": "fail", "then": {"message": "no solution", "permanent": true}}),
            &common::no_backoff(3),
        )
        .await
        .unwrap()
        .task_id;

    let r = terminal(&client, q, ok, limit).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let out = r.result.unwrap();
    assert_eq!(
        out["results"],
        json!([{"state": "completed", "result": {"n": 1}},
               {"state": "completed", "result": {"n": 2}},
               {"state": "completed", "result": {"n": 3}}]),
        "{out}"
    );
    assert_eq!(out["then"], json!({"last": true}));
    let echoes = client
        .list_tasks(&absurd_client::TaskFilter {
            queue: Some(q.to_string()),
            task_name: Some("py-echo".to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        echoes.total, 4,
        "each child spawned once across the re-runs: {echoes:?}"
    );
    let t = client.get_task(q, ok).await.unwrap().unwrap();
    let awaited = t
        .checkpoints
        .iter()
        .filter(|c| c.checkpoint_name.starts_with("$awaitTaskResult:"))
        .count();
    assert_eq!(
        awaited, 4,
        "each outcome is checkpointed: {:?}",
        t.checkpoints
    );

    let r = terminal(&client, q, failed, limit).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let out = r.result.unwrap();
    assert_eq!(out["results"][0]["state"], "failed", "{out}");
    assert_eq!(
        out["results"][0]["failure"]["name"], "BuiltinFailure",
        "{out}"
    );
    assert_eq!(out["results"][0]["failure"]["message"], "bad ms", "{out}");

    let r = terminal(&client, q, child_failed, limit).await;
    assert_eq!(r.state, State::Failed, "{r:?}");
    let f = r.failure_reason.unwrap();
    assert_eq!(f["name"], "$ChildFailed", "{f}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .ends_with("failed: no solution"),
        "{f}"
    );
    assert_eq!(f["details"]["failure"]["name"], "BuiltinFailure", "{f}");
    let t = client.get_task(q, child_failed).await.unwrap().unwrap();
    assert_eq!(
        t.runs.len(),
        1,
        "$ChildFailed is permanent, not retried: {t:?}"
    );

    // A child that never ends: first the wait times out, then a second parent sees it
    // cancelled.
    let timed_out =
        spawn(json!({"task": "wait-event", "items": [{"event": "never"}], "timeout_seconds": 1}))
            .await;
    let r = terminal(&client, q, timed_out, limit).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let out = r.result.unwrap();
    assert_eq!(out["timed_out"], true, "{out}");
    let waiting = spawn(json!({"task": "wait-event", "items": [{"event": "never again"}]})).await;
    let child = wait_for("the child to be spawned", limit, || async {
        let t = client.get_task(q, waiting).await.unwrap().unwrap();
        t.checkpoints
            .iter()
            .find(|c| c.checkpoint_name == "$spawn:wait-event")
            .map(|c| c.state.as_str().unwrap().parse::<uuid::Uuid>().unwrap())
    })
    .await;
    client.cancel_task(q, child).await.unwrap();
    let r = terminal(&client, q, waiting, limit).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    assert_eq!(
        r.result.unwrap()["results"],
        json!([{"state": "cancelled"}])
    );
}

/// A task a Python component started is finished by the Absurd Python SDK's own worker: the
/// component's checkpoints carry the SDKs' names, so the SDK replays `fetch` instead of
/// running it again.
#[tokio::test]
async fn python_sdk_worker_resumes_a_task_a_python_component_started() {
    let (db, client) = setup("py-handoff").await;
    let mut w = WorkerProc::start(&db.url, &config(), &["--queue", "py-handoff"]);
    let id = client
        .spawn(
            "py-handoff",
            "durable",
            &json!({"input": "from-python-wasm", "sleep_seconds": 2}),
            &once(),
        )
        .await
        .unwrap()
        .task_id;
    let t = wait_for(
        "the component to suspend",
        Duration::from_secs(120),
        || async {
            let t = client.get_task("py-handoff", id).await.unwrap().unwrap();
            (t.summary.state == State::Sleeping).then_some(t)
        },
    )
    .await;
    w.signal(libc::SIGTERM);
    w.wait_exit(Duration::from_secs(30)).expect("worker stops");
    let wasm_run = t.runs[0].run_id.to_string();

    let script = r#"
import sys, time
from absurd_sdk import Absurd
app = Absurd(sys.argv[1], queue_name="py-handoff")
ran = []
@app.register_task("durable")
def durable(params, ctx):
    fetch = ctx.step("fetch", lambda: ran.append("fetch") or {"input": "python", "run_id": "python"})
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
    let out = Command::new(common::venv_bin("python"))
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
    let r = client.task_result("py-handoff", id).await.unwrap().unwrap();
    assert_eq!(r.state, State::Completed, "{r:?}");
    let result = r.result.unwrap();
    assert_eq!(result["python_ran"], json!([]), "replayed: {result}");
    assert_eq!(
        result["fetch"],
        json!({"input": "from-python-wasm", "run_id": wasm_run}),
        "the component's checkpoint: {result}"
    );
}
