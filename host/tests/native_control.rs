//! The control channel of native runs, through `absurd-native` (python/absurd_native.py):
//! real Python programs (tests/fixtures/native/control_tasks.py) run by a real
//! `absurd-host worker` against a real PostgreSQL, one database per test.

mod common;
use common::{failure, no_backoff as opts, setup, terminal, wait_for, WorkerProc};

use std::path::{Path, PathBuf};
use std::time::Duration;

use absurd_client::{Client, State, TaskResult};
use serde_json::{json, Value};
use uuid::Uuid;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("absurd-control-test-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A task type running `control_tasks:<function>` through absurd-native.
fn task(name: &str, function: &str, extra: &str) -> String {
    format!(
        r#"
[tasks.{name}]
kind = "native"
program = "{launcher}"
args = ["control_tasks:{function}"]
{extra}
"#,
        launcher = repo().join("python/absurd-native").display(),
    )
}

fn config(root: &Path, tasks: &[String]) -> PathBuf {
    config_with_grace(root, tasks, 1)
}

/// `config` with the programs' `grace` (seconds to exit once told to) set.
fn config_with_grace(root: &Path, tasks: &[String], grace: u32) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/native");
    let text = format!(
        r#"
[native]
workdir_root = "{root}"
grace = {grace}
env = {{ PYTHONPATH = "{fixtures}" }}
{tasks}
"#,
        root = root.display(),
        fixtures = fixtures.display(),
        tasks = tasks.concat(),
    );
    common::temp_file("absurd-host.toml", &text)
}

/// Runs one task to its end and returns its result row.
async fn run_one(
    client: &Client,
    queue: &str,
    task: &str,
    params: Value,
    attempts: i32,
) -> (Uuid, TaskResult) {
    common::run_one(
        client,
        queue,
        task,
        params,
        attempts,
        Duration::from_secs(90),
    )
    .await
}

fn journal(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("journal"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| *l == what).count()
}

#[tokio::test]
async fn a_killed_program_resumes_after_its_last_completed_step() {
    let (db, client) = setup("ctl").await;
    let root = scratch_dir();
    let dir = scratch_dir();
    let cfg = config(&root, &[task("steps", "steps", "")]);
    let _w = WorkerProc::start(&db.url, &cfg, &["--queue", "ctl"]);

    for how in ["crash", "exit"] {
        let dir = dir.join(how);
        std::fs::create_dir_all(&dir).unwrap();
        let (id, r) = run_one(&client, "ctl", "steps", json!({"dir": dir, how: true}), 2).await;
        assert_eq!(r.state, State::Completed, "{how}: {r:?}");
        let result = r.result.unwrap();
        // Step one ran in attempt 1 and was replayed in attempt 2; step two ran in attempt 2.
        assert_eq!(result["attempt"], 2, "{how}: {result}");
        assert_eq!(
            result["one"],
            json!({"n": 1, "attempt": 1}),
            "{how}: {result}"
        );
        assert_eq!(
            result["two"],
            json!({"n": 1, "attempt": 2}),
            "{how}: {result}"
        );
        assert_eq!(result["again"], "second use");
        let j = journal(&dir);
        assert_eq!(count(&j, "execution"), 2, "{how}: {j:?}");
        assert_eq!(count(&j, "one"), 1, "step one must not run again: {j:?}");
        assert_eq!(count(&j, "two"), 1, "{j:?}");
        // The first attempt failed as the program's death, not as anything else.
        let task = client.get_task("ctl", id).await.unwrap().unwrap();
        let first = task.runs.iter().find(|r| r.attempt == 1).unwrap();
        let name = first.failure_reason.as_ref().unwrap()["name"].clone();
        let expected = if how == "crash" {
            "$ProgramKilled"
        } else {
            "$ProgramFailed"
        };
        assert_eq!(name, expected, "{how}: {first:?}");
        let names: Vec<&str> = task
            .checkpoints
            .iter()
            .map(|c| c.checkpoint_name.as_str())
            .collect();
        assert!(
            names.contains(&"one") && names.contains(&"two") && names.contains(&"one#2"),
            "{names:?}"
        );
    }
}

#[tokio::test]
async fn heartbeat_extends_the_lease() {
    let (db, client) = setup("ctl").await;
    let root = scratch_dir();
    let dir = scratch_dir();
    let cfg = config(&root, &[task("hb", "heartbeat", "timeout = 3600")]);
    let _w = WorkerProc::start(&db.url, &cfg, &["--queue", "ctl", "--claim-timeout", "30"]);
    let id = client
        .spawn("ctl", "hb", &json!({"dir": dir, "seconds": 2000}), &opts(1))
        .await
        .unwrap()
        .task_id;
    // The worker's own renewals keep the lease at 30 s; only the heartbeat moves it ~2000 s on.
    wait_for(
        "the heartbeat to move the lease far out",
        Duration::from_secs(60),
        || async {
            let t = client.get_task("ctl", id).await.unwrap()?;
            let run = t.runs.last()?;
            let expires = run.claim_expires_at?;
            let now = client.current_time("ctl").await.unwrap();
            (run.state == State::Running && expires > now + chrono::TimeDelta::seconds(1000))
                .then_some(())
        },
    )
    .await;
    std::fs::write(dir.join("go"), "").unwrap();
    let r = terminal(&client, "ctl", id, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
}

#[tokio::test]
async fn spawn_creates_a_task_within_the_grants() {
    let (db, client) = setup("ctl").await;
    let root = scratch_dir();
    let cfg = config(
        &root,
        &[
            task("spawner", "spawner", "spawn_tasks = [\"child\"]"),
            task("child", "echo", ""),
            task("other", "echo", ""),
        ],
    );
    let _w = WorkerProc::start(&db.url, &cfg, &["--queue", "ctl"]);
    let (parent, r) = run_one(&client, "ctl", "spawner", json!({"child": "child"}), 1).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let child: Uuid = r.result.unwrap()["child"]["task_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let c = terminal(&client, "ctl", child, Duration::from_secs(60)).await;
    assert_eq!(c.state, State::Completed, "{c:?}");
    // The child got the params the program gave it.
    assert_eq!(c.result.unwrap()["echo"]["from"], parent.to_string());

    // A native type not granted by name: the run fails, naming the grant.
    let (_, r) = run_one(
        &client,
        "ctl",
        "spawner",
        json!({"child": "child", "ungranted": "other"}),
        1,
    )
    .await;
    let f = failure(&r);
    let text = f.to_string();
    assert!(
        text.contains("spawn_tasks") && text.contains("other"),
        "{f}"
    );
}

#[tokio::test]
async fn sleep_for_suspends_and_the_run_runs_again_to_completion() {
    let (db, client) = setup("ctl").await;
    let root = scratch_dir();
    let dir = scratch_dir();
    let cfg = config(&root, &[task("sleeper", "sleeper", "")]);
    let w = WorkerProc::start(&db.url, &cfg, &["--queue", "ctl"]);
    let (id, r) = run_one(
        &client,
        "ctl",
        "sleeper",
        json!({"dir": dir, "seconds": 1}),
        1,
    )
    .await;
    assert_eq!(r.state, State::Completed, "{r:?}\n{}", w.log_text());
    let result = r.result.unwrap();
    assert_eq!(result["before"], 1);
    assert_eq!(result["after"], 1);
    let j = journal(&dir);
    // Two executions of the program, one attempt: the sleep ended the first.
    assert_eq!(count(&j, "execution"), 2, "{j:?}");
    assert_eq!(count(&j, "before"), 1, "{j:?}");
    assert_eq!(count(&j, "execution-end"), 1, "{j:?}");
    let task = client.get_task("ctl", id).await.unwrap().unwrap();
    assert_eq!(task.runs.len(), 1, "{:?}", task.runs);
    assert!(task.checkpoints.iter().any(|c| c.checkpoint_name == "nap"));
}

/// A program still exiting after its sleep suspended the run is neither "lost" (killed by the
/// lease renewal that finds its run sleeping) nor in the way of the run's next execution: the
/// run wakes and is claimed again by the same worker while the old process still lingers, and
/// the old execution's end must not take the new one's lease out of the renewals.
#[tokio::test]
async fn a_program_slow_to_exit_after_a_sleep_keeps_neither_run_from_its_lease() {
    let (db, client) = setup("ctl").await;
    let root = scratch_dir();
    let dir = scratch_dir();
    let cfg = config_with_grace(&root, &[task("slow", "slow_to_exit", "")], 10);
    // A 1 s lease renewed every ~333 ms: the 2.5 s linger spans several renewals, and the
    // resumed execution's 4 s of work outlives its lease unless renewed.
    // Polling every 0.2 s, the worker claims the woken run again while the old process lingers.
    let w = WorkerProc::start(
        &db.url,
        &cfg,
        &[
            "--queue",
            "ctl",
            "--claim-timeout",
            "1",
            "--concurrency",
            "4",
            "--poll-interval",
            "0.2",
        ],
    );
    let (id, r) = run_one(
        &client,
        "ctl",
        "slow",
        json!({"dir": dir, "seconds": 0.2, "linger": 2.5, "work": 4}),
        1,
    )
    .await;
    let j = journal(&dir);
    assert_eq!(r.state, State::Completed, "{r:?}\n{j:?}\n{}", w.log_text());
    assert_eq!(count(&j, "execution"), 2, "{j:?}");
    // Not stopped while it exited within its grace.
    assert_eq!(count(&j, "lingered"), 1, "{j:?}\n{}", w.log_text());
    assert_eq!(count(&j, "execution-end"), 1, "{j:?}");
    let task = client.get_task("ctl", id).await.unwrap().unwrap();
    assert_eq!(task.runs.len(), 1, "{:?}", task.runs);
    assert!(
        !w.log_text().contains("run lost"),
        "no execution of this run was lost:\n{}",
        w.log_text()
    );
}

#[tokio::test]
async fn await_event_suspends_until_the_event_is_emitted() {
    let (db, client) = setup("ctl").await;
    let root = scratch_dir();
    let dir = scratch_dir();
    let cfg = config(&root, &[task("waiter", "waiter", "")]);
    let _w = WorkerProc::start(&db.url, &cfg, &["--queue", "ctl"]);
    let id = client
        .spawn(
            "ctl",
            "waiter",
            &json!({"dir": dir, "event": "ms.ready"}),
            &opts(1),
        )
        .await
        .unwrap()
        .task_id;
    wait_for(
        "the run to wait for its event",
        Duration::from_secs(60),
        || async {
            let t = client.get_task("ctl", id).await.unwrap()?;
            (t.runs.last()?.state == State::Sleeping && !t.waits.is_empty()).then_some(())
        },
    )
    .await;
    client
        .emit_event("ctl", "ms.ready", Some(&json!({"ms": "/stage/x.ms"})))
        .await
        .unwrap();
    let r = terminal(&client, "ctl", id, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    assert_eq!(r.result.unwrap()["payload"], json!({"ms": "/stage/x.ms"}));
    assert_eq!(count(&journal(&dir), "execution"), 2);
}

#[tokio::test]
async fn exceptions_fail_retryably_and_permanent_errors_do_not_retry() {
    let (db, client) = setup("ctl").await;
    let root = scratch_dir();
    let cfg = config(&root, &[task("fails", "fails", "")]);
    let _w = WorkerProc::start(&db.url, &cfg, &["--queue", "ctl"]);

    let (id, r) = run_one(&client, "ctl", "fails", json!({"mode": "exception"}), 2).await;
    let f = failure(&r).clone();
    assert_eq!(f["name"], "$TaskReportedError", "{f}");
    assert!(
        f["message"].as_str().unwrap().contains("ValueError: boom"),
        "{f}"
    );
    let t = client.get_task("ctl", id).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 2, "an exception is retried");

    let (id, r) = run_one(&client, "ctl", "fails", json!({"mode": "permanent"}), 3).await;
    let f = failure(&r).clone();
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("PermanentError: these params can never work"),
        "{f}"
    );
    let t = client.get_task("ctl", id).await.unwrap().unwrap();
    assert_eq!(
        t.runs.len(),
        1,
        "a PermanentError is not retried: {:?}",
        t.runs
    );

    let (_, r) = run_one(&client, "ctl", "fails", json!({"mode": "status"}), 1).await;
    let f = failure(&r);
    assert_eq!(f["name"], "$TaskReportedError");
    assert!(
        f["message"].as_str().unwrap().contains("stage failed"),
        "{f}"
    );
}

#[tokio::test]
async fn protocol_abuse_gets_errors_or_fails_only_that_run() {
    let (db, client) = setup("ctl").await;
    let root = scratch_dir();
    let dir = scratch_dir();
    let cfg = config(
        &root,
        &[
            task(
                "abuse",
                "abuse",
                "max_control_line_bytes = 4096\nmax_control_connections = 3",
            ),
            task(
                "flood",
                "abuse",
                "max_control_requests_per_second = 20\ntimeout = 120",
            ),
            task("capped", "abuse", "max_control_requests = 20"),
            task("fine", "echo", ""),
        ],
    );
    let w = WorkerProc::start(&db.url, &cfg, &["--queue", "ctl", "--concurrency", "4"]);

    // Garbage, a non-object, an unknown op, a missing field, a missing op: error replies, and
    // the connection and the run go on.
    let (_, r) = run_one(&client, "ctl", "abuse", json!({"mode": "garbage"}), 1).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let replies = r.result.unwrap()["replies"].clone();
    let kinds: Vec<&str> = replies
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error"]["kind"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        kinds,
        [
            "bad_request",
            "bad_request",
            "unknown_op",
            "bad_request",
            "bad_request",
            "ok"
        ],
        "{replies}"
    );
    assert!(replies[2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("frobnicate"));
    assert_eq!(replies[2]["id"], 5);
    assert!(replies[3]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`name`"));
    assert_eq!(replies[5]["protocol"], 1);

    // A connection past max_control_connections gets one error line naming the limit.
    let (_, r) = run_one(&client, "ctl", "abuse", json!({"mode": "connections"}), 1).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let replies = r.result.unwrap()["replies"].clone();
    assert_eq!(replies[0]["ok"], true, "{replies}");
    assert_eq!(replies[1]["ok"], true, "{replies}");
    assert_eq!(replies[2]["error"]["kind"], "limit", "{replies}");
    assert!(replies[2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_control_connections"));

    // An overlong line fails the run, naming the limit; it is not retried.
    let (id, r) = run_one(
        &client,
        "ctl",
        "abuse",
        json!({"mode": "overlong", "bytes": 100_000}),
        3,
    )
    .await;
    let f = failure(&r).clone();
    assert_eq!(f["name"], "$LimitExceeded", "{f}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("max_control_line_bytes"),
        "{f}"
    );
    let t = client.get_task("ctl", id).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 1);

    // A flood is cut off: the run fails naming the rate limit; the worker serves others.
    let flood_dir = dir.join("flood");
    std::fs::create_dir_all(&flood_dir).unwrap();
    let flood = client
        .spawn(
            "ctl",
            "flood",
            &json!({"mode": "flood", "dir": flood_dir}),
            &opts(1),
        )
        .await
        .unwrap()
        .task_id;
    let (_, ok) = run_one(&client, "ctl", "fine", json!({"x": 1}), 1).await;
    assert_eq!(ok.state, State::Completed);
    let r = terminal(&client, "ctl", flood, Duration::from_secs(90)).await;
    let f = failure(&r).clone();
    assert_eq!(f["name"], "$LimitExceeded", "{f}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("max_control_requests_per_second"),
        "{f}"
    );
    assert_eq!(
        count(&journal(&flood_dir), "flood-stopped:run_failed"),
        1,
        "the program was told"
    );
    // So is a program past its total of requests for the execution.
    let capped_dir = dir.join("capped");
    std::fs::create_dir_all(&capped_dir).unwrap();
    let (_, r) = run_one(
        &client,
        "ctl",
        "capped",
        json!({"mode": "flood", "dir": capped_dir}),
        1,
    )
    .await;
    let f = failure(&r).clone();
    assert_eq!(f["name"], "$LimitExceeded", "{f}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("(max_control_requests)"),
        "{f}"
    );
    assert_eq!(count(&journal(&capped_dir), "flood-stopped:run_failed"), 1);
    // Nothing the programs sent made the host panic.
    assert!(!w.log_text().contains("panicked"), "{}", w.log_text());
}

#[tokio::test]
async fn the_socket_is_in_the_workdir_and_other_runs_cannot_use_it() {
    let (db, client) = setup("ctl").await;
    let root = scratch_dir();
    let dir = scratch_dir();
    let cfg = config(&root, &[task("iso", "isolation", "timeout = 120")]);
    let _w = WorkerProc::start(&db.url, &cfg, &["--queue", "ctl", "--concurrency", "2"]);
    let serve = client
        .spawn(
            "ctl",
            "iso",
            &json!({"mode": "serve", "dir": dir}),
            &opts(1),
        )
        .await
        .unwrap()
        .task_id;
    let info: Value = wait_for(
        "the first run's socket",
        Duration::from_secs(60),
        || async {
            let text = std::fs::read_to_string(dir.join("serve.json")).ok()?;
            serde_json::from_str(&text).ok()
        },
    )
    .await;
    let socket = PathBuf::from(info["socket"].as_str().unwrap());
    let workdir = PathBuf::from(info["workdir"].as_str().unwrap());
    assert_eq!(socket.parent(), Some(workdir.as_path()), "{info}");
    assert!(workdir.starts_with(&root), "{info}");
    assert_eq!(info["mode"], "0o600");
    assert_eq!(info["is_socket"], true);

    let (_, probe) = run_one(
        &client,
        "ctl",
        "iso",
        json!({"mode": "probe", "dir": dir}),
        1,
    )
    .await;
    assert_eq!(probe.state, State::Completed, "{probe:?}");
    let replies = probe.result.unwrap()["replies"].clone();
    assert_eq!(replies[0]["ok"], false, "{replies}");
    assert_eq!(replies[0]["error"]["kind"], "forbidden", "{replies}");
    assert!(replies[0].get("task_id").is_none());

    std::fs::write(dir.join("done"), "").unwrap();
    let r = terminal(&client, "ctl", serve, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    // The socket went with its run.
    assert!(!socket.exists());
}
