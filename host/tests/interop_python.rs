//! Interoperability with the unmodified Python `absurd-sdk==0.5.1` and `absurdctl==0.5.1`.
//!
//! Each test runs on a fresh database, once with absurd-host's own migrations
//! ([`TestDb::migrated`]) and, where it makes sense, once with the upstream schema installed by
//! `absurdctl init` ([`TestDb::upstream`]), so a failure on one side only points at our SQL.
//! The Python side is driven through the scripts in `tests/interop/` (each prints one JSON
//! object) and `absurdctl` as a CLI; every external process runs with a deadline.
//!
//! Needs the virtualenv made by `scripts/setup-python`; without it the tests fail saying so.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use absurd_client::{Client, RetryOptions, SpawnOptions, State, TaskFilter};
use common::{repo_root, venv_bin, TestDb};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Generous: a Python interpreter start plus a few queries; hitting it means a hang.
const PY_TIMEOUT: Duration = Duration::from_secs(60);
const CTL_TIMEOUT: Duration = Duration::from_secs(30);

// ---- running the Python side -----------------------------------------------------------

fn interop_script(name: &str) -> PathBuf {
    let p = repo_root().join("tests").join("interop").join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// Output of a finished external process.
struct Ran {
    what: String,
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn expect_ok(self) -> Ran {
        assert!(
            self.ok,
            "{} failed\n--- stdout\n{}\n--- stderr\n{}",
            self.what, self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "{} did not print one JSON object ({e})\n--- stdout\n{}\n--- stderr\n{}",
                self.what, self.stdout, self.stderr
            )
        })
    }

    fn contains(&self, needle: &str) -> bool {
        self.stdout.contains(needle)
    }

    fn assert_contains(&self, needles: &[&str]) {
        for n in needles {
            assert!(
                self.contains(n),
                "{}: output lacks {n:?}\n--- stdout\n{}\n--- stderr\n{}",
                self.what,
                self.stdout,
                self.stderr
            );
        }
    }
}

/// Waits for `child` with a deadline; on expiry it is killed (kill_on_drop) and the test fails.
async fn finish(what: String, child: Child, timeout: Duration) -> Ran {
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ran {
            what,
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("{what}: waiting for the process failed: {e}"),
        Err(_) => panic!("{what}: still running after {timeout:?}; killed"),
    }
}

fn python_command(db: &TestDb, queue: &str, script: &str, args: &[&str]) -> (String, Command) {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(interop_script(script))
        .arg("--url")
        .arg(&db.url)
        .arg("--queue")
        .arg(queue)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    (format!("{script} --queue {queue} {}", args.join(" ")), cmd)
}

/// Starts a script in the background (e.g. a worker that must run while Rust emits an event).
fn py_start(db: &TestDb, queue: &str, script: &str, args: &[&str]) -> (String, Child) {
    let (what, mut cmd) = python_command(db, queue, script, args);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    (what, child)
}

/// Runs a script to completion and returns its JSON output; fails the test if it fails.
async fn py(db: &TestDb, queue: &str, script: &str, args: &[&str]) -> Value {
    let (what, child) = py_start(db, queue, script, args);
    finish(what, child, PY_TIMEOUT).await.expect_ok().json()
}

/// Runs a script expected to fail; returns its stderr.
async fn py_err(db: &TestDb, queue: &str, script: &str, args: &[&str]) -> String {
    let (what, child) = py_start(db, queue, script, args);
    let ran = finish(what, child, PY_TIMEOUT).await;
    assert!(
        !ran.ok,
        "{} unexpectedly succeeded: {}",
        ran.what, ran.stdout
    );
    ran.stderr
}

/// Runs `absurdctl <args> -d <url>`.
async fn ctl(db: &TestDb, args: &[&str]) -> Ran {
    let mut cmd = Command::new(venv_bin("absurdctl"));
    cmd.args(args)
        .arg("-d")
        .arg(&db.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("absurdctl {}", args.join(" "));
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    finish(what, child, CTL_TIMEOUT).await
}

async fn ctl_ok(db: &TestDb, args: &[&str]) -> Ran {
    ctl(db, args).await.expect_ok()
}

/// The uuid after `label` (e.g. `Task ID:`) in absurdctl output.
fn uuid_after(ran: &Ran, label: &str) -> Uuid {
    let line = ran
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("{}: no {label:?} line in\n{}", ran.what, ran.stdout));
    line.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: bad uuid {line:?}: {e}", ran.what))
}

fn ids(v: &Value) -> Vec<Uuid> {
    v["task_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no task_ids in {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().parse().unwrap())
        .collect()
}

fn id_list(ids: &[Uuid]) -> String {
    ids.iter()
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `absurdctl list-tasks` prints one `key=value` line per field and a blank line between
/// tasks; returns the block of the given task.
fn list_tasks_block(ran: &Ran, task: Uuid) -> String {
    let head = format!("task_id={task}");
    let start = ran
        .stdout
        .find(&head)
        .unwrap_or_else(|| panic!("{}: task {task} not listed\n{}", ran.what, ran.stdout));
    let rest = &ran.stdout[start..];
    rest.split("\n\n").next().unwrap().to_string()
}

// ---- Rust-side helpers -----------------------------------------------------------------

async fn result_of(
    client: &Client,
    queue: &str,
    task: Uuid,
) -> (State, Option<Value>, Option<Value>) {
    let r = client
        .task_result(queue, task)
        .await
        .expect("task_result")
        .unwrap_or_else(|| panic!("task {task} unknown to get_task_result"));
    assert_eq!(r.task_id, task);
    (r.state, r.result, r.failure_reason)
}

/// Polls until the task reaches `state` (deadline 20 s).
async fn wait_for_state(client: &Client, queue: &str, task: Uuid, state: State) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let t = client
            .get_task(queue, task)
            .await
            .expect("get_task")
            .expect("task exists");
        if t.summary.state == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {task} is {} after 20 s, expected {state}",
            t.summary.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- scenario 1: Python spawns, Python's worker runs, Rust reads -------------------------

async fn python_spawns_python_works_rust_reads(db: TestDb) {
    let client = Client::new(db.pool.clone());
    let q = "pyq";
    client.create_queue(q).await.unwrap();

    let echo = py(
        &db,
        q,
        "sdk_spawn.py",
        &["--task", "echo", "--count", "2", "--max-attempts", "3"],
    )
    .await;
    assert_eq!(
        echo["duplicate_same"],
        json!(true),
        "idempotent re-spawn: {echo}"
    );
    assert_eq!(
        echo["raw_duplicate"]["created"],
        json!(false),
        "created flag: {echo}"
    );
    let echo_ids = ids(&echo);
    assert_eq!(echo_ids.len(), 2);
    let double = ids(&py(
        &db,
        q,
        "sdk_spawn.py",
        &["--task", "double", "--params", r#"{"x":21}"#],
    )
    .await)[0];
    let fail = ids(&py(
        &db,
        q,
        "sdk_spawn.py",
        &[
            "--task",
            "fail",
            "--max-attempts",
            "2",
            "--params",
            r#"{"message":"kaput"}"#,
        ],
    )
    .await)[0];
    let sleepy = ids(&py(
        &db,
        q,
        "sdk_spawn.py",
        &["--task", "sleepy", "--params", r#"{"seconds":1}"#],
    )
    .await)[0];
    let event = format!("order.packed:{}", Uuid::new_v4());
    let waiter_params = json!({ "event": event }).to_string();
    let waiter = ids(&py(
        &db,
        q,
        "sdk_spawn.py",
        &["--task", "waiter", "--params", &waiter_params],
    )
    .await)[0];

    // What the SDK stored, as the Rust client reads it.
    let t = client
        .get_task(q, echo_ids[0])
        .await
        .unwrap()
        .expect("spawned task");
    assert_eq!(t.summary.task_name, "echo");
    assert_eq!(t.summary.state, State::Pending);
    assert_eq!(t.summary.max_attempts, Some(3));
    assert_eq!(t.summary.idempotency_key.as_deref(), Some("pyq:echo:first"));
    assert_eq!(t.params, json!({"i": 0}));
    assert_eq!(t.headers, Some(json!({"trace": "abc"})));
    let page = client
        .list_tasks(&TaskFilter {
            queue: Some(q.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.total, 6,
        "six distinct tasks (the duplicate spawn made none): {page:?}"
    );

    let all = id_list(&[echo_ids.clone(), vec![double, fail, sleepy, waiter]].concat());
    let (what, worker) = py_start(
        &db,
        q,
        "sdk_worker.py",
        &[
            "--task-id",
            &all,
            "--deadline",
            "40",
            "--worker-id",
            "py-worker-1",
        ],
    );

    // The waiter suspends on the event; Rust sees the sleeping run, then wakes it.
    wait_for_state(&client, q, waiter, State::Sleeping).await;
    let t = client.get_task(q, waiter).await.unwrap().unwrap();
    let run = t.runs.last().unwrap();
    assert_eq!(run.state, State::Sleeping);
    assert_eq!(run.wake_event.as_deref(), Some(event.as_str()));
    assert_eq!(
        run.available_at, None,
        "event wait without timeout = 'infinity'"
    );
    assert_eq!(t.waits.len(), 1, "{t:?}");
    assert_eq!(t.waits[0].step_name, format!("$awaitEvent:{event}"));
    assert_eq!(t.waits[0].event_name, event);
    client
        .emit_event(q, &event, Some(&json!({"from": "rust", "n": 7})))
        .await
        .unwrap();

    let out = finish(what, worker, Duration::from_secs(60))
        .await
        .expect_ok()
        .json();
    assert_eq!(
        out["states"],
        json!({"completed": 5, "failed": 1}),
        "worker: {out}"
    );
    assert_eq!(out["invocations"]["fail"], json!(2), "two attempts: {out}");
    assert_eq!(
        out["invocations"]["sleepy"],
        json!(2),
        "sleep, then replay: {out}"
    );
    assert_eq!(
        out["invocations"]["waiter"],
        json!(2),
        "suspend, then replay: {out}"
    );

    // Results through the Rust client.
    for (k, id) in echo_ids.iter().enumerate() {
        assert_eq!(
            result_of(&client, q, *id).await,
            (State::Completed, Some(json!({"i": k})), None)
        );
    }
    assert_eq!(
        result_of(&client, q, double).await,
        (State::Completed, Some(json!({"y": 42})), None)
    );
    let t = client.get_task(q, double).await.unwrap().unwrap();
    assert_eq!(t.checkpoints.len(), 1, "{t:?}");
    assert_eq!(t.checkpoints[0].checkpoint_name, "double");
    assert_eq!(t.checkpoints[0].state, json!(42));
    assert_eq!(t.checkpoints[0].status, "committed");
    assert_eq!(t.checkpoints[0].owner_run_id, Some(t.runs[0].run_id));
    assert_eq!(t.runs[0].claimed_by.as_deref(), Some("py-worker-1"));
    let cps = client
        .get_checkpoints(q, double, t.runs[0].run_id)
        .await
        .unwrap();
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0].state, json!(42));

    let (state, result, failure) = result_of(&client, q, fail).await;
    assert_eq!((state, result), (State::Failed, None));
    let failure = failure.expect("failure_reason of a failed task");
    assert_eq!(failure["name"], json!("RuntimeError"), "{failure}");
    assert_eq!(failure["message"], json!("kaput"), "{failure}");
    assert!(
        failure["traceback"]
            .as_str()
            .unwrap_or("")
            .contains("RuntimeError: kaput"),
        "{failure}"
    );
    let t = client.get_task(q, fail).await.unwrap().unwrap();
    assert_eq!(t.summary.attempts, 2);
    assert_eq!(
        t.runs
            .iter()
            .map(|r| (r.attempt, r.state))
            .collect::<Vec<_>>(),
        vec![(1, State::Failed), (2, State::Failed)]
    );
    assert!(t
        .runs
        .iter()
        .all(|r| r.failed_at.is_some() && r.failure_reason.is_some()));

    assert_eq!(
        result_of(&client, q, sleepy).await,
        (State::Completed, Some(json!({"slept": true, "i": 0})), None)
    );
    let t = client.get_task(q, sleepy).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 1, "sleeping reuses the run: {t:?}");
    assert_eq!(t.checkpoints.len(), 1);
    assert_eq!(t.checkpoints[0].checkpoint_name, "nap");
    let wake = t.checkpoints[0]
        .state
        .as_str()
        .expect("sleep checkpoint is an ISO time string");
    chrono::DateTime::parse_from_rfc3339(wake).unwrap_or_else(|e| panic!("nap = {wake:?}: {e}"));

    assert_eq!(
        result_of(&client, q, waiter).await,
        (
            State::Completed,
            Some(json!({"event": event, "payload": {"from": "rust", "n": 7}})),
            None
        )
    );
    let t = client.get_task(q, waiter).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 1, "an event wake reuses the run: {t:?}");
    assert_eq!(
        t.runs[0].event_payload,
        Some(json!({"from": "rust", "n": 7}))
    );
    assert!(t.waits.is_empty(), "{t:?}");
    assert_eq!(t.checkpoints.len(), 1);
    assert_eq!(
        t.checkpoints[0].checkpoint_name,
        format!("$awaitEvent:{event}")
    );
    assert_eq!(t.checkpoints[0].state, json!({"from": "rust", "n": 7}));

    let completed = client
        .list_tasks(&TaskFilter {
            queue: Some(q.into()),
            state: Some(State::Completed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(completed.total, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_spawns_python_works_rust_reads_migrated() {
    python_spawns_python_works_rust_reads(TestDb::migrated().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_spawns_python_works_rust_reads_upstream() {
    python_spawns_python_works_rust_reads(TestDb::upstream().await).await;
}

// ---- scenario 2: Rust spawns, Python's worker runs, Python reads -------------------------

async fn rust_spawns_python_works(db: TestDb) {
    let client = Client::new(db.pool.clone());
    let q = "rsq";
    client.create_queue(q).await.unwrap();
    let opts = SpawnOptions {
        max_attempts: Some(2),
        headers: Some(json!({"trace": "from-rust"})),
        ..Default::default()
    };
    let echo = client
        .spawn(q, "echo", &json!({"hello": "world", "n": [1, 2]}), &opts)
        .await
        .unwrap();
    assert!(echo.created);
    assert_eq!(echo.attempt, 1);
    let double = client
        .spawn(q, "double", &json!({"x": 5}), &opts)
        .await
        .unwrap();
    let fail = client
        .spawn(
            q,
            "fail",
            &json!({"message": "rust asked for it"}),
            &SpawnOptions {
                max_attempts: Some(1),
                ..opts.clone()
            },
        )
        .await
        .unwrap();
    let keyed = SpawnOptions {
        idempotency_key: Some("once".into()),
        ..opts.clone()
    };
    let k1 = client
        .spawn(q, "echo", &json!({"k": 1}), &keyed)
        .await
        .unwrap();
    let k2 = client
        .spawn(q, "echo", &json!({"k": 2}), &keyed)
        .await
        .unwrap();
    assert!(k1.created && !k2.created, "{k1:?} {k2:?}");
    assert_eq!(
        (k1.task_id, k1.run_id, k1.attempt),
        (k2.task_id, k2.run_id, k2.attempt)
    );

    let tasks = [echo.task_id, double.task_id, fail.task_id, k1.task_id];
    let out = py(
        &db,
        q,
        "sdk_worker.py",
        &["--task-id", &id_list(&tasks), "--deadline", "30"],
    )
    .await;
    assert_eq!(out["states"], json!({"completed": 3, "failed": 1}), "{out}");

    let args: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let res = py(&db, q, "sdk_results.py", &args).await;
    let r = &res["results"];
    assert_eq!(
        r[echo.task_id.to_string()],
        json!({"state": "completed", "result": {"hello": "world", "n": [1, 2]}, "failure": null})
    );
    assert_eq!(
        r[double.task_id.to_string()],
        json!({"state": "completed", "result": {"y": 10}, "failure": null})
    );
    assert_eq!(
        r[k1.task_id.to_string()],
        json!({"state": "completed", "result": {"k": 1}, "failure": null})
    );
    let f = &r[fail.task_id.to_string()];
    assert_eq!(f["state"], json!("failed"), "{f}");
    assert_eq!(f["result"], Value::Null);
    assert_eq!(f["failure"]["name"], json!("RuntimeError"), "{f}");
    assert_eq!(f["failure"]["message"], json!("rust asked for it"), "{f}");

    // Unknown task id: the SDK gets None.
    let unknown = Uuid::now_v7();
    let res = py(&db, q, "sdk_results.py", &[&unknown.to_string()]).await;
    assert_eq!(res["results"][unknown.to_string()], Value::Null);
    assert_eq!(client.task_result(q, unknown).await.unwrap(), None);

    // Rust agrees with Python.
    assert_eq!(
        result_of(&client, q, double.task_id).await,
        (State::Completed, Some(json!({"y": 10})), None)
    );
    let t = client.get_task(q, double.task_id).await.unwrap().unwrap();
    assert_eq!(
        t.checkpoints
            .iter()
            .map(|c| (c.checkpoint_name.as_str(), c.state.clone()))
            .collect::<Vec<_>>(),
        vec![("double", json!(10))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_spawns_python_works_migrated() {
    rust_spawns_python_works(TestDb::migrated().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_spawns_python_works_upstream() {
    rust_spawns_python_works(TestDb::upstream().await).await;
}

// ---- scenario 3: Rust is a foreign worker for tasks Python spawned ------------------------

async fn rust_works_python_spawned(db: TestDb) {
    let client = Client::new(db.pool.clone());
    let q = "compat";
    ctl_ok(&db, &["create-queue", q])
        .await
        .assert_contains(&["Queue 'compat' created successfully"]);

    let spawned = py(
        &db,
        q,
        "sdk_spawn.py",
        &[
            "--task",
            "compat-echo",
            "--params",
            r#"{"x":41}"#,
            "--max-attempts",
            "3",
            "--idempotency-key",
            "k1",
        ],
    )
    .await;
    assert_eq!(spawned["duplicate_same"], json!(true), "{spawned}");
    let task = ids(&spawned)[0];

    let claimed = client.claim(q, "rust-worker-1", 30, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let c = &claimed[0];
    assert_eq!(c.task_id, task);
    assert_eq!(c.task_name, "compat-echo");
    assert_eq!(c.attempt, 1);
    assert_eq!(c.params, json!({"x": 41, "i": 0}));
    assert_eq!(c.headers, Some(json!({"trace": "abc"})));
    assert_eq!(c.max_attempts, Some(3));
    assert_eq!(c.retry_strategy, None);
    assert_eq!(
        (c.wake_event.clone(), c.event_payload.clone()),
        (None, None)
    );
    assert!(client
        .get_checkpoints(q, task, c.run_id)
        .await
        .unwrap()
        .is_empty());
    // Python sees it running.
    let res = py(&db, q, "sdk_results.py", &[&task.to_string()]).await;
    assert_eq!(res["results"][task.to_string()]["state"], json!("running"));

    client
        .set_checkpoint(q, task, "double", &json!(82), c.run_id, Some(30))
        .await
        .unwrap();
    client
        .complete_run(q, c.run_id, &json!({"y": 82}))
        .await
        .unwrap();

    assert_eq!(
        result_of(&client, q, task).await,
        (State::Completed, Some(json!({"y": 82})), None)
    );
    let res = py(&db, q, "sdk_results.py", &[&task.to_string()]).await;
    assert_eq!(
        res["results"][task.to_string()],
        json!({"state": "completed", "result": {"y": 82}, "failure": null})
    );

    let listed = ctl_ok(&db, &["list-tasks", "-q", q]).await;
    let block = list_tasks_block(&listed, task);
    for needle in [
        "status=completed",
        "attempts=1/3",
        "task_name=compat-echo",
        "queue=compat",
    ] {
        assert!(
            block.contains(needle),
            "list-tasks lacks {needle:?}:\n{block}"
        );
    }
    let dump = ctl_ok(&db, &["dump-task", &format!("--task-id={task}")]).await;
    dump.assert_contains(&[
        "Current status:    completed",
        "Worker ID:         rust-worker-1",
        "Attempt:           1 of 3",
        "FINAL STATE",
        "\"y\": 82",
        "double (committed)",
        "\"trace\": \"abc\"",
    ]);

    // Failing as a foreign worker: attempt 1 fails, retry, attempt 2 fails, task failed.
    let spawned = py(
        &db,
        q,
        "sdk_spawn.py",
        &[
            "--task",
            "flaky",
            "--max-attempts",
            "2",
            "--idempotency-key",
            "",
        ],
    )
    .await;
    let flaky = ids(&spawned)[0];
    for attempt in 1..=2 {
        let claimed = client.claim(q, "rust-worker-1", 30, 1).await.unwrap();
        assert_eq!(claimed.len(), 1, "attempt {attempt}: {claimed:?}");
        assert_eq!((claimed[0].task_id, claimed[0].attempt), (flaky, attempt));
        let reason = json!({"name": "RustError", "message": format!("attempt {attempt} failed"), "traceback": null});
        client
            .fail_run(q, claimed[0].run_id, &reason, None)
            .await
            .unwrap();
    }
    assert!(client
        .claim(q, "rust-worker-1", 30, 1)
        .await
        .unwrap()
        .is_empty());
    let res = py(&db, q, "sdk_results.py", &[&flaky.to_string()]).await;
    assert_eq!(
        res["results"][flaky.to_string()],
        json!({"state": "failed", "result": null,
               "failure": {"name": "RustError", "message": "attempt 2 failed", "traceback": null}})
    );
    let listed = ctl_ok(&db, &["list-tasks", "-q", q, "-s", "failed"]).await;
    let block = list_tasks_block(&listed, flaky);
    assert!(
        block.contains("status=failed") && block.contains("attempts=2/2"),
        "{block}"
    );
    assert!(
        !listed.contains(&task.to_string()),
        "status filter: {}",
        listed.stdout
    );
    let dump = ctl_ok(&db, &["dump-task", &format!("--task-id={flaky}")]).await;
    dump.assert_contains(&[
        "Current status:    failed",
        "FAILURE",
        "attempt 2 failed",
        "Attempt:           2 of 2",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_works_python_spawned_migrated() {
    rust_works_python_spawned(TestDb::migrated().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_works_python_spawned_upstream() {
    rust_works_python_spawned(TestDb::upstream().await).await;
}

// ---- scenario 4: absurdctl operates a database, Rust checks --------------------------------

async fn absurdctl_operates(db: TestDb) {
    let client = Client::new(db.pool.clone());
    let q = "ctlq";

    ctl_ok(&db, &["schema-version"])
        .await
        .assert_contains(&["0.5.1"]);
    ctl_ok(&db, &["create-queue", q])
        .await
        .assert_contains(&["Queue 'ctlq' created successfully"]);
    ctl_ok(&db, &["create-queue", "other"]).await;
    assert_eq!(
        client.list_queues().await.unwrap(),
        vec!["ctlq".to_string(), "other".to_string()]
    );
    let lq = ctl_ok(&db, &["list-queues"]).await;
    assert_eq!(
        lq.stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>(),
        vec!["ctlq", "other"]
    );

    // spawn-task with params, headers, retry strategy and cancellation policy.
    let sp = ctl_ok(
        &db,
        &[
            "spawn-task",
            "-q",
            q,
            "report",
            "-P",
            "x:=41",
            "-P",
            "user.name=Alice",
            "-H",
            "trace=abc",
            "--max-attempts",
            "2",
            "--retry-kind",
            "fixed",
            "--retry-base",
            "0",
            "--max-duration",
            "3600",
        ],
    )
    .await;
    sp.assert_contains(&["Task spawned successfully", "Attempt: 1"]);
    let task = uuid_after(&sp, "Task ID:");
    let run1 = uuid_after(&sp, "Run ID:");
    let t = client
        .get_task(q, task)
        .await
        .unwrap()
        .expect("spawned by absurdctl");
    assert_eq!(t.summary.task_name, "report");
    assert_eq!(t.summary.state, State::Pending);
    assert_eq!(t.summary.max_attempts, Some(2));
    assert_eq!(t.summary.last_attempt_run, Some(run1));
    assert_eq!(t.params, json!({"x": 41, "user": {"name": "Alice"}}));
    assert_eq!(t.headers, Some(json!({"trace": "abc"})));
    assert_eq!(
        t.retry_strategy,
        Some(json!({"kind": "fixed", "base_seconds": 0}))
    );
    assert_eq!(t.cancellation, Some(json!({"max_duration": 3600})));

    let listed = ctl_ok(&db, &["list-tasks", "-q", q]).await;
    let block = list_tasks_block(&listed, task);
    assert!(
        block.contains("status=pending")
            && block.contains("attempts=1/2")
            && block.contains(&format!("run_id={run1}")),
        "{block}"
    );
    listed.assert_contains(&["Total: 1 task(s)"]);

    // Rust fails both attempts; absurdctl retries in place.
    for _ in 0..2 {
        let c = client.claim(q, "rust-w", 30, 1).await.unwrap();
        assert_eq!(c.len(), 1);
        client
            .fail_run(
                q,
                c[0].run_id,
                &json!({"name": "E", "message": "no", "traceback": null}),
                None,
            )
            .await
            .unwrap();
    }
    assert_eq!(result_of(&client, q, task).await.0, State::Failed);
    let rt = ctl_ok(&db, &["retry-task", "-q", q, &task.to_string()]).await;
    rt.assert_contains(&["Task retried successfully", "Attempt: 3"]);
    assert_eq!(uuid_after(&rt, "Task ID:"), task);
    let t = client.get_task(q, task).await.unwrap().unwrap();
    assert_eq!(t.summary.state, State::Pending);
    assert_eq!((t.summary.attempts, t.summary.max_attempts), (3, Some(3)));
    assert_eq!(t.runs.len(), 3);
    assert_eq!(t.summary.last_attempt_run, Some(uuid_after(&rt, "Run ID:")));
    // Retrying a task that is not failed is refused.
    let again = ctl(&db, &["retry-task", "-q", q, &task.to_string()]).await;
    assert!(
        !again.ok,
        "retry of a pending task must fail: {}",
        again.stdout
    );
    assert!(
        again.stderr.contains("is not currently failed"),
        "{}",
        again.stderr
    );

    // cancel-task.
    ctl_ok(&db, &["cancel-task", "-q", q, &task.to_string()])
        .await
        .assert_contains(&[&format!("Task {task} cancelled in queue 'ctlq'")]);
    let t = client.get_task(q, task).await.unwrap().unwrap();
    assert_eq!(t.summary.state, State::Cancelled);
    assert!(t.summary.cancelled_at.is_some());
    assert_eq!(t.runs.last().unwrap().state, State::Cancelled);
    ctl_ok(&db, &["cancel-task", "-q", q, &task.to_string()]).await; // no-op on a terminal task
    let listed = ctl_ok(&db, &["list-tasks", "-q", q, "-s", "cancelled"]).await;
    assert!(list_tasks_block(&listed, task).contains("status=cancelled"));

    // retry-task --spawn-new on a failed task.
    let sp = ctl_ok(
        &db,
        &[
            "spawn-task",
            "-q",
            q,
            "once",
            "--params",
            r#"{"a":1}"#,
            "--max-attempts",
            "1",
        ],
    )
    .await;
    let once = uuid_after(&sp, "Task ID:");
    let c = client.claim(q, "rust-w", 30, 1).await.unwrap();
    assert_eq!(c[0].task_id, once);
    client
        .fail_run(
            q,
            c[0].run_id,
            &json!({"name": "E", "message": "once"}),
            None,
        )
        .await
        .unwrap();
    let rt = ctl_ok(
        &db,
        &[
            "retry-task",
            "-q",
            q,
            &once.to_string(),
            "--spawn-new",
            "--max-attempts",
            "4",
        ],
    )
    .await;
    rt.assert_contains(&["Task respawned successfully", "Attempt: 1"]);
    let fresh = uuid_after(&rt, "Task ID:");
    assert_ne!(fresh, once);
    let t = client.get_task(q, fresh).await.unwrap().unwrap();
    assert_eq!(
        (
            t.summary.task_name.as_str(),
            t.summary.state,
            t.summary.max_attempts
        ),
        ("once", State::Pending, Some(4))
    );
    assert_eq!(t.params, json!({"a": 1}));
    assert_eq!(result_of(&client, q, once).await.0, State::Failed);

    // emit-event wakes a run that Rust suspended on the event.
    let waiting = client
        .spawn(
            q,
            "waits",
            &json!({}),
            &SpawnOptions {
                max_attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut claimed = client.claim(q, "rust-w", 30, 5).await.unwrap();
    claimed.retain(|c| c.task_id == waiting.task_id);
    assert_eq!(claimed.len(), 1);
    let out = client
        .await_event(
            q,
            waiting.task_id,
            claimed[0].run_id,
            "$awaitEvent:order.shipped",
            "order.shipped",
            None,
        )
        .await
        .unwrap();
    assert!(out.should_suspend);
    assert_eq!(
        client
            .get_task(q, waiting.task_id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .state,
        State::Sleeping
    );
    ctl_ok(
        &db,
        &[
            "emit-event",
            "-q",
            q,
            "order.shipped",
            "-P",
            "orderId=123",
            "-P",
            "n:=2",
        ],
    )
    .await
    .assert_contains(&["Event 'order.shipped' emitted successfully to queue 'ctlq'"]);
    let t = client.get_task(q, waiting.task_id).await.unwrap().unwrap();
    assert_eq!(t.summary.state, State::Pending);
    assert_eq!(t.runs[0].state, State::Pending);
    assert_eq!(
        t.runs[0].event_payload,
        Some(json!({"orderId": "123", "n": 2}))
    );
    assert_eq!(t.checkpoints.len(), 1);
    assert_eq!(t.checkpoints[0].state, json!({"orderId": "123", "n": 2}));
    let stored: Value =
        sqlx::query_scalar("select payload from absurd.e_ctlq where event_name = 'order.shipped'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored, json!({"orderId": "123", "n": 2}));
    // The re-claimed run sees the payload; the checkpoint short-circuits the await.
    let c = client.claim(q, "rust-w", 30, 1).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].event_payload, Some(json!({"orderId": "123", "n": 2})));
    let again = client
        .await_event(
            q,
            waiting.task_id,
            c[0].run_id,
            "$awaitEvent:order.shipped",
            "order.shipped",
            None,
        )
        .await
        .unwrap();
    assert!(!again.should_suspend);
    assert_eq!(again.payload, Some(json!({"orderId": "123", "n": 2})));
    client
        .complete_run(q, c[0].run_id, &json!("done"))
        .await
        .unwrap();

    // dump-task on the woken task shows the worker, the checkpoint and the result.
    let dump = ctl_ok(
        &db,
        &["dump-task", &format!("--task-id={}", waiting.task_id)],
    )
    .await;
    dump.assert_contains(&[
        "Current status:    completed",
        "Worker ID:         rust-w",
        "$awaitEvent:order.shipped (committed)",
        "\"done\"",
    ]);
    let dump = ctl_ok(&db, &["dump-task", &format!("--run-id={}", waiting.run_id)]).await;
    dump.assert_contains(&[&waiting.task_id.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurdctl_operates_migrated() {
    absurdctl_operates(TestDb::migrated().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurdctl_operates_upstream() {
    absurdctl_operates(TestDb::upstream().await).await;
}

/// `absurdctl init` installs the upstream schema, and the Rust client works against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurdctl_init_then_rust_client() {
    let db = TestDb::empty().await;
    ctl_ok(&db, &["init"])
        .await
        .assert_contains(&["Absurd schema initialized successfully"]);
    let client = Client::new(db.pool.clone());
    assert_eq!(
        client.schema_version().await.unwrap().as_deref(),
        Some("0.5.1")
    );
    client.create_queue("q").await.unwrap();
    let s = client
        .spawn("q", "t", &json!({"a": 1}), &SpawnOptions::default())
        .await
        .unwrap();
    let c = client.claim("q", "w", 30, 1).await.unwrap();
    assert_eq!(c[0].task_id, s.task_id);
    client
        .complete_run("q", c[0].run_id, &json!(1))
        .await
        .unwrap();
    assert_eq!(
        result_of(&client, "q", s.task_id).await,
        (State::Completed, Some(json!(1)), None)
    );
    // init is not re-runnable (upstream behaviour): a second run fails.
    assert!(!ctl(&db, &["init"]).await.ok);
}

/// absurd-host's migrations and absurdctl agree on the version, and a migrated database is
/// refused by a second `absurdctl init` just like an initialised one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurdctl_sees_migrated_schema_version() {
    let db = TestDb::migrated().await;
    ctl_ok(&db, &["schema-version"])
        .await
        .assert_contains(&["0.5.1"]);
    assert!(
        !ctl(&db, &["init"]).await.ok,
        "absurdctl init must refuse an installed schema"
    );
}

// ---- scenario 5: SDK queue/task operations, Rust checks -------------------------------------

async fn sdk_operations(db: TestDb) {
    let client = Client::new(db.pool.clone());
    let q = "opsq";
    let out = py(&db, q, "sdk_ops.py", &["create-queue"]).await;
    assert_eq!(out["queues"], json!(["opsq"]));
    assert_eq!(
        client.list_queues().await.unwrap(),
        vec!["opsq".to_string()]
    );
    py(&db, q, "sdk_ops.py", &["create-queue", "extra"]).await;
    assert_eq!(
        client.list_queues().await.unwrap(),
        vec!["extra".to_string(), "opsq".to_string()]
    );
    assert_eq!(
        py(&db, q, "sdk_ops.py", &["list-queues"]).await["queues"],
        json!(["extra", "opsq"])
    );
    let out = py(&db, q, "sdk_ops.py", &["drop-queue", "extra"]).await;
    assert_eq!(out["queues"], json!(["opsq"]));
    assert_eq!(
        client.list_queues().await.unwrap(),
        vec!["opsq".to_string()]
    );
    let pol = py(&db, q, "sdk_ops.py", &["queue-policy"]).await;
    assert_eq!(
        pol["policy"]["storage_mode"],
        json!("unpartitioned"),
        "{pol}"
    );
    assert_eq!(pol["policy"]["cleanup_limit"], json!(1000), "{pol}");

    // emit-event: a run suspended by Rust is woken by the SDK's emit.
    let w = client
        .spawn(
            q,
            "w",
            &json!(null),
            &SpawnOptions {
                max_attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let c = client.claim(q, "rust-w", 30, 1).await.unwrap();
    assert!(
        client
            .await_event(
                q,
                w.task_id,
                c[0].run_id,
                "$awaitEvent:ping",
                "ping",
                Some(600)
            )
            .await
            .unwrap()
            .should_suspend
    );
    let t = client.get_task(q, w.task_id).await.unwrap().unwrap();
    assert!(
        t.runs[0].available_at.is_some(),
        "a wait with timeout has a finite available_at"
    );
    py(
        &db,
        q,
        "sdk_ops.py",
        &["emit-event", "ping", "--payload", r#"{"p":1}"#],
    )
    .await;
    let t = client.get_task(q, w.task_id).await.unwrap().unwrap();
    assert_eq!(
        (t.summary.state, t.runs[0].event_payload.clone()),
        (State::Pending, Some(json!({"p": 1})))
    );
    // A second emit with the same name changes nothing (first write wins); null payload emit.
    py(
        &db,
        q,
        "sdk_ops.py",
        &["emit-event", "ping", "--payload", r#"{"p":2}"#],
    )
    .await;
    py(&db, q, "sdk_ops.py", &["emit-event", "nothing"]).await;
    let rows: Vec<(String, Option<Value>)> =
        sqlx::query_as("select event_name, payload from absurd.e_opsq order by event_name")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            ("nothing".to_string(), Some(Value::Null)),
            ("ping".to_string(), Some(json!({"p": 1})))
        ]
    );

    // cancel.
    let victim = client
        .spawn(q, "victim", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    let out = py(
        &db,
        q,
        "sdk_ops.py",
        &["cancel", &victim.task_id.to_string()],
    )
    .await;
    assert_eq!(out["snapshot"]["state"], json!("cancelled"));
    let t = client.get_task(q, victim.task_id).await.unwrap().unwrap();
    assert_eq!(
        (t.summary.state, t.runs[0].state),
        (State::Cancelled, State::Cancelled)
    );
    // A cancelled run cannot be completed: AB001.
    let err = client
        .complete_run(q, victim.run_id, &json!(1))
        .await
        .unwrap_err();
    assert!(err.is_run_lost(), "{err:?}");

    // retry in place and spawn_new.
    let failing = client
        .spawn(
            q,
            "flaky",
            &json!({"v": 1}),
            &SpawnOptions {
                max_attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut c = client.claim(q, "rust-w", 30, 5).await.unwrap();
    c.retain(|c| c.task_id == failing.task_id);
    client
        .fail_run(q, c[0].run_id, &json!({"name": "E", "message": "x"}), None)
        .await
        .unwrap();
    let stderr = py_err(
        &db,
        q,
        "sdk_ops.py",
        &["retry", &victim.task_id.to_string()],
    )
    .await;
    assert!(stderr.contains("is not currently failed"), "{stderr}");
    let out = py(
        &db,
        q,
        "sdk_ops.py",
        &["retry", &failing.task_id.to_string()],
    )
    .await;
    assert_eq!(
        (
            out["task_id"].as_str().unwrap(),
            out["attempt"].clone(),
            out["created"].clone()
        ),
        (failing.task_id.to_string().as_str(), json!(2), json!(false)),
        "{out}"
    );
    let t = client.get_task(q, failing.task_id).await.unwrap().unwrap();
    assert_eq!(
        (t.summary.state, t.summary.attempts, t.summary.max_attempts),
        (State::Pending, 2, Some(2))
    );
    let c = client.claim(q, "rust-w", 30, 1).await.unwrap();
    assert_eq!((c[0].task_id, c[0].attempt), (failing.task_id, 2));
    client
        .fail_run(q, c[0].run_id, &json!({"name": "E", "message": "y"}), None)
        .await
        .unwrap();
    let out = py(
        &db,
        q,
        "sdk_ops.py",
        &[
            "retry",
            &failing.task_id.to_string(),
            "--spawn-new",
            "--max-attempts",
            "5",
        ],
    )
    .await;
    assert_eq!(
        (out["attempt"].clone(), out["created"].clone()),
        (json!(1), json!(true)),
        "{out}"
    );
    let fresh: Uuid = out["task_id"].as_str().unwrap().parse().unwrap();
    assert_ne!(fresh, failing.task_id);
    let t = client.get_task(q, fresh).await.unwrap().unwrap();
    assert_eq!(
        (
            t.summary.task_name.as_str(),
            t.summary.max_attempts,
            t.params.clone()
        ),
        ("flaky", Some(5), json!({"v": 1}))
    );
    // Rust's own retry_task agrees with the SDK's.
    let r = client
        .retry_task(
            q,
            failing.task_id,
            &RetryOptions {
                spawn_new: false,
                max_attempts: Some(4),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (r.task_id, r.attempt, r.created),
        (failing.task_id, 3, false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_operations_migrated() {
    sdk_operations(TestDb::migrated().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_operations_upstream() {
    sdk_operations(TestDb::upstream().await).await;
}

// ---- scenario 5b: a partitioned queue and its policy through the SDK and absurdctl ---------

/// Whether `absurd.<table>` exists.
async fn table_exists(db: &TestDb, table: &str) -> bool {
    sqlx::query_scalar("select to_regclass(format('absurd.%I', $1::text)) is not null")
        .bind(table)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn partitioned_queue_and_policy(db: TestDb) {
    let client = Client::new(db.pool.clone());
    let q = "pq";
    // The SDK creates the queue partitioned, with a policy: detach weeks empty for a day, and
    // three weeks of look-back, so that past (empty) weeks exist once partitions are ensured.
    let policy =
        r#"{"detach_mode": "empty", "detach_min_age": "1 day", "partition_lookback": "21 days"}"#;
    py(
        &db,
        q,
        "sdk_ops.py",
        &[
            "create-queue",
            "--storage-mode",
            "partitioned",
            "--policy",
            policy,
        ],
    )
    .await;
    let got = client
        .get_queue_policy(q)
        .await
        .unwrap()
        .expect("policy row");
    assert_eq!(
        (
            got.storage_mode.as_str(),
            got.detach_mode.as_str(),
            got.partition_lookback.as_str()
        ),
        ("partitioned", "empty", "21 days"),
        "{got:?}"
    );
    let parent_kind: String = sqlx::query_scalar(
        "select relkind::text from pg_class where oid = 'absurd.t_pq'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(parent_kind, "p", "t_pq must be a partitioned table");

    // absurdctl: the same mode again is fine (and ensures the partitions the policy now asks
    // for); another mode is refused with upstream's message.
    ctl_ok(&db, &["create-queue", q, "--storage-mode", "partitioned"]).await;
    let other = ctl(&db, &["create-queue", q]).await;
    assert!(
        !other.ok,
        "{}: an unpartitioned re-create must fail",
        other.what
    );
    assert!(
        format!("{}{}", other.stdout, other.stderr)
            .contains(r#"Queue "pq" already exists with storage mode "partitioned""#),
        "{}\n{}",
        other.stdout,
        other.stderr
    );

    // Policy reads and writes: absurdctl prints it; the SDK's bad value is refused by name.
    let shown = ctl_ok(&db, &["queue-policy", q]).await;
    for line in [
        "storage_mode: partitioned",
        "detach_mode: empty",
        "default_partition: enabled",
    ] {
        assert!(
            shown.stdout.contains(line),
            "{line:?} not in\n{}",
            shown.stdout
        );
    }
    ctl_ok(&db, &["queue-policy", q, "--cleanup-limit", "77"]).await;
    assert_eq!(
        client
            .get_queue_policy(q)
            .await
            .unwrap()
            .unwrap()
            .cleanup_limit,
        77
    );
    let err = py_err(
        &db,
        q,
        "sdk_ops.py",
        &[
            "set-queue-policy",
            "--policy",
            r#"{"partition_lookahead": "-1 day"}"#,
        ],
    )
    .await;
    assert!(
        err.contains("partition_lookahead must be non-negative"),
        "{err}"
    );
    let out = py(
        &db,
        q,
        "sdk_ops.py",
        &[
            "set-queue-policy",
            "--policy",
            r#"{"cleanup_ttl": "12345 seconds"}"#,
        ],
    )
    .await;
    assert_eq!(
        client
            .get_queue_policy(q)
            .await
            .unwrap()
            .unwrap()
            .cleanup_ttl,
        "03:25:45",
        "{out}"
    );

    // Old empty weeks are detach candidates; absurdctl lists them, detaches one, and detaches
    // and drops another.
    let candidates = client.list_detach_candidates(Some(q)).await.unwrap();
    let weeks: Vec<String> = candidates
        .iter()
        .filter(|c| c.parent_table == "t_pq")
        .map(|c| c.partition_table.clone())
        .collect();
    assert!(weeks.len() >= 2, "two past weeks at least: {candidates:?}");
    let listed = ctl_ok(&db, &["list-detach-candidates", "--queue", q]).await;
    for w in &weeks {
        assert!(
            listed.stdout.contains(w.as_str()),
            "{w} not in\n{}",
            listed.stdout
        );
    }
    let detached = ctl_ok(&db, &["detach-candidate", "--queue", q, &weeks[0]]).await;
    assert!(
        detached.stdout.contains("Detach succeeded"),
        "{}",
        detached.stdout
    );
    assert!(table_exists(&db, &weeks[0]).await, "detached, not dropped");
    let dropped = ctl_ok(
        &db,
        &["detach-candidate", "--queue", q, &weeks[1], "--drop"],
    )
    .await;
    assert!(
        dropped.stdout.contains("Drop succeeded"),
        "{}",
        dropped.stdout
    );
    assert!(!table_exists(&db, &weeks[1]).await, "{} dropped", weeks[1]);
    let left = client.list_detach_candidates(Some(q)).await.unwrap();
    assert!(
        !left
            .iter()
            .any(|c| c.partition_table == weeks[0] || c.partition_table == weeks[1]),
        "{left:?}"
    );

    // Idempotency through the registry, and absurdctl cleanup frees the key.
    let opts = SpawnOptions {
        idempotency_key: Some("once".into()),
        ..Default::default()
    };
    let first = client
        .spawn(q, "job", &json!({"n": 1}), &opts)
        .await
        .unwrap();
    let again = client
        .spawn(q, "job", &json!({"n": 2}), &opts)
        .await
        .unwrap();
    assert!(first.created && !again.created, "{first:?} {again:?}");
    assert_eq!(again.task_id, first.task_id);
    client.cancel_task(q, first.task_id).await.unwrap();
    ctl_ok(&db, &["cleanup", q, "0"]).await;
    assert!(
        client.get_task(q, first.task_id).await.unwrap().is_none(),
        "cleaned up"
    );
    let third = client
        .spawn(q, "job", &json!({"n": 3}), &opts)
        .await
        .unwrap();
    assert!(third.created && third.task_id != first.task_id, "{third:?}");

    // The SDK drops the queue, parents, weeks and registry together.
    py(&db, q, "sdk_ops.py", &["drop-queue"]).await;
    for t in ["t_pq", "r_pq", "i_pq"] {
        assert!(!table_exists(&db, t).await, "{t} dropped with the queue");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_queue_and_policy_migrated() {
    partitioned_queue_and_policy(TestDb::migrated().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_queue_and_policy_upstream() {
    partitioned_queue_and_policy(TestDb::upstream().await).await;
}

// ---- scenario 6: a Rust worker's lease expires; the Python worker takes over ---------------

async fn python_worker_sweeps_rust_expired_lease(db: TestDb) {
    let client = Client::new(db.pool.clone());
    let q = "leaseq";
    client.create_queue(q).await.unwrap();
    let s = client
        .spawn(
            q,
            "echo",
            &json!({"v": 1}),
            &SpawnOptions {
                max_attempts: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let c = client.claim(q, "rust-slow", 1, 1).await.unwrap();
    assert_eq!(c[0].run_id, s.run_id);
    // Wait (by the database clock, with a deadline) until the 1 s lease has expired.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let expired: bool = sqlx::query_scalar(
            "select claim_expires_at < absurd.current_time() from absurd.r_leaseq where run_id = $1",
        )
        .bind(s.run_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if expired {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The Python worker's claim_task fails the expired run; attempt 2 runs in Python.
    let out = py(
        &db,
        q,
        "sdk_worker.py",
        &["--task-id", &s.task_id.to_string(), "--deadline", "30"],
    )
    .await;
    assert_eq!(out["states"], json!({"completed": 1}), "{out}");
    // The slow Rust worker has lost its run: AB002.
    let err = client
        .complete_run(q, s.run_id, &json!("late"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, absurd_client::ClientError::RunFailed(_)),
        "{err:?}"
    );
    let t = client.get_task(q, s.task_id).await.unwrap().unwrap();
    assert_eq!(t.summary.state, State::Completed);
    assert_eq!(t.completed_payload, Some(json!({"v": 1})));
    assert_eq!(t.runs.len(), 2, "{t:?}");
    assert_eq!((t.runs[0].attempt, t.runs[0].state), (1, State::Failed));
    let reason = t.runs[0].failure_reason.clone().unwrap();
    assert_eq!(reason["name"], json!("$ClaimTimeout"), "{reason}");
    assert_eq!(reason["workerId"], json!("rust-slow"), "{reason}");
    assert_eq!(reason["attempt"], json!(1), "{reason}");
    assert!(reason["claimExpiredAt"].is_string(), "{reason}");
    assert_eq!((t.runs[1].attempt, t.runs[1].state), (2, State::Completed));
    assert_eq!(t.runs[1].claimed_by.as_deref(), Some("py-worker-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_sweeps_rust_expired_lease_migrated() {
    python_worker_sweeps_rust_expired_lease(TestDb::migrated().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_sweeps_rust_expired_lease_upstream() {
    python_worker_sweeps_rust_expired_lease(TestDb::upstream().await).await;
}
