//! The `native` handler kind with real processes: stand-in programs (tests/fixtures/native)
//! run by a real `absurd-host worker` against a real PostgreSQL, one database per test.
//! The CASA tests at the end run real CASA when its venv exists (`scripts/setup-casa`).

mod common;
use common::{failure, no_backoff as opts, setup, terminal};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use absurd_client::{Client, State, TaskResult};
use common::{temp_file, wait_for, WorkerProc};
use serde_json::{json, Value};
use uuid::Uuid;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/native")
        .join(name)
}

fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("absurd-native-test-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A config with the stand-in tasks; their work directories go under `root`.
fn config(root: &Path, extra: &str) -> PathBuf {
    let task = fixture("task.py");
    let flood = fixture("flood.sh");
    let root = root.display();
    let text = format!(
        r#"
[native]
workdir_root = "{root}"
grace = 1

[tasks.fixture]
kind = "native"
program = "{task}"
args = ["{{params}}", "--task={{task_name}}", "--attempt={{attempt}}", "{{{{literal}}}}"]
env = {{ FIXTURE_GREETING = "hello", FIXTURE_WORKDIR = "{{workdir}}" }}
env_remove = ["FIXTURE_SECRET"]

[tasks.hang]
kind = "native"
program = "{task}"
args = ["{{params}}"]
timeout = 6
grace = 30

[tasks.limited]
kind = "native"
program = "{task}"
args = ["{{params}}"]
cpu_seconds = 1
open_files = 64
memory_mb = 4096
timeout = 60

[tasks.flood]
kind = "native"
program = "{flood}"
args = ["300"]
keep_workdir = "always"
{extra}
"#,
        task = task.display(),
        flood = flood.display(),
    );
    temp_file("absurd-host.toml", &text)
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
        Duration::from_secs(60),
    )
    .await
}

/// True while `pid` is a live process (not gone, not a zombie waiting for its reaper).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
    }
}

/// Live processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[2].parse::<i32>() == Ok(pgid) && f[0] != "Z" && f[0] != "X" {
            out.push(pid);
        }
    }
    out
}

/// Children of `ppid` (any state).
fn children_of(ppid: i32) -> Vec<(i32, String)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 1 && f[1].parse::<i32>() == Ok(ppid) {
            let comm = head
                .split_once('(')
                .map(|x| x.1.to_string())
                .unwrap_or_default();
            out.push((pid, format!("{comm} {}", f[0])));
        }
    }
    out
}

/// Waits for the hang fixture's pid file: (child, grandchild).
async fn hang_pids(pid_file: &Path) -> (i32, i32) {
    wait_for(
        "the program to write its pids",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(pid_file).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            Some((
                v["child"].as_i64()? as i32,
                v["grandchild"].as_i64()? as i32,
            ))
        },
    )
    .await
}

async fn assert_group_gone(child: i32, grandchild: i32, limit: Duration) {
    wait_for(
        "the program and its grandchild to be gone",
        limit,
        || async {
            (!alive(child) && !alive(grandchild) && group_members(child).is_empty()).then_some(())
        },
    )
    .await;
}

fn vm_rss_kb(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn success_returns_the_result_file() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let w = WorkerProc::start(&db.url, &config(&root, ""), &["--queue", "nat"]);
    let (id, r) = run_one(
        &client,
        "nat",
        "fixture",
        json!({"mode": "ok", "ms": "/d/x.ms", "show_env": ["FIXTURE_GREETING", "FIXTURE_WORKDIR", "FIXTURE_SECRET", "ABSURD_TASK_ID", "ABSURD_RESULT_FILE"]}),
        1,
    )
    .await;
    assert_eq!(r.state, State::Completed, "{r:?}\n{}", w.log_text());
    let v = r.result.unwrap();
    assert_eq!(v["status"], "success");
    // params.json: the task's params plus the task info.
    let received = &v["received"];
    assert_eq!(received["params"]["ms"], "/d/x.ms");
    let t = client.get_task("nat", id).await.unwrap().unwrap();
    assert_eq!(received["task"]["task_id"], json!(id));
    assert_eq!(received["task"]["run_id"], json!(t.runs[0].run_id));
    assert_eq!(received["task"]["attempt"], 1);
    assert_eq!(received["task"]["queue"], "nat");
    assert_eq!(received["task"]["task_name"], "fixture");
    assert_eq!(received["task"]["headers"], json!({}));
    // cwd is the per-run work directory, under workdir_root, holding params.json.
    let cwd = v["cwd"].as_str().unwrap();
    assert!(Path::new(cwd).starts_with(&root), "{cwd}");
    assert_eq!(v["params_file_is_in_cwd"], true);
    // Placeholders expanded, literal braces kept, no shell.
    assert_eq!(
        v["argv"],
        json!([
            format!("{cwd}/params.json"),
            "--task=fixture",
            "--attempt=1",
            "{literal}"
        ])
    );
    assert_eq!(v["env"]["FIXTURE_GREETING"], "hello");
    assert_eq!(v["env"]["FIXTURE_WORKDIR"], cwd);
    assert_eq!(v["env"]["FIXTURE_SECRET"], Value::Null);
    assert_eq!(v["env"]["ABSURD_TASK_ID"], json!(id.to_string()));
    assert_eq!(v["env"]["ABSURD_RESULT_FILE"], format!("{cwd}/result.json"));
    // keep_workdir = "on-failure": removed after a success.
    assert!(
        !Path::new(cwd).exists(),
        "the work directory of a success is removed"
    );
    let log = w.log_text();
    assert!(
        log.contains("fixture starting in mode ok"),
        "stdout streamed into the log:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn exit_zero_without_a_result_is_a_retryable_failure() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let _w = WorkerProc::start(
        &db.url,
        &config(&root, ""),
        &["--queue", "nat", "--dlq-enabled", "false"],
    );
    let (id, r) = run_one(&client, "nat", "fixture", json!({"mode": "no-result"}), 2).await;
    let f = failure(&r);
    assert_eq!(f["name"], "$NoResult");
    let msg = f["message"].as_str().unwrap();
    assert!(
        msg.contains("exited 0 without writing a valid result.json"),
        "{msg}"
    );
    assert_eq!(f["details"]["exit_code"], 0);
    let t = client.get_task("nat", id).await.unwrap().unwrap();
    assert_eq!(
        t.runs.len(),
        2,
        "retried: exit 0 without a result may be transient"
    );
    // keep_workdir = "on-failure": the directory is kept, with the saved output.
    let workdir = PathBuf::from(f["details"]["workdir"].as_str().unwrap());
    assert_eq!(f["details"]["workdir_kept"], true);
    let stdout = std::fs::read_to_string(workdir.join("stdout.log")).unwrap();
    assert!(stdout.contains("fixture starting in mode no-result"));
    assert!(workdir.join("params.json").exists());

    let (_, r) = run_one(&client, "nat", "fixture", json!({"mode": "bad-result"}), 1).await;
    let f = failure(&r);
    assert_eq!(f["name"], "$NoResult");
    assert!(
        f["message"].as_str().unwrap().contains("not valid JSON"),
        "{f}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn reported_errors_fail_the_task() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let _w = WorkerProc::start(
        &db.url,
        &config(&root, ""),
        &["--queue", "nat", "--dlq-enabled", "false"],
    );
    let (id, r) = run_one(
        &client,
        "nat",
        "fixture",
        json!({"mode": "report-error", "retryable": false}),
        3,
    )
    .await;
    let f = failure(&r);
    assert_eq!(f["name"], "$TaskReportedError");
    assert_eq!(f["message"], "Validation failed: MS not found");
    assert_eq!(f["details"]["result"]["errors"], json!(["MS not found"]));
    assert_eq!(f["retryable"], false);
    let t = client.get_task("nat", id).await.unwrap().unwrap();
    assert_eq!(
        t.runs.len(),
        1,
        "\"retryable\": false in the result makes the failure permanent"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn non_zero_exit_is_classified_with_tails() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let _w = WorkerProc::start(
        &db.url,
        &config(&root, ""),
        &["--queue", "nat", "--dlq-enabled", "false"],
    );
    let (_, r) = run_one(
        &client,
        "nat",
        "fixture",
        json!({"mode": "exit", "code": 7}),
        1,
    )
    .await;
    let f = failure(&r);
    assert_eq!(f["name"], "$ProgramFailed");
    let d = &f["details"];
    assert_eq!(d["exit_code"], 7);
    assert_eq!(d["signal"], Value::Null);
    assert_eq!(d["cause"], "calibration");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("exited with code 7"),
        "{f}"
    );
    assert!(
        d["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("No match found"),
        "{d}"
    );
    let severe = d["casa_severe"].as_array().unwrap();
    assert_eq!(
        severe.len(),
        1,
        "the benign TAI_UTC line is left out: {severe:?}"
    );
    assert!(severe[0]
        .as_str()
        .unwrap()
        .contains("Task gaincal raised an exception"));
    assert!(
        d["hints"]
            .as_array()
            .unwrap()
            .contains(&json!("python_traceback")),
        "{d}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn signals_are_classified() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let _w = WorkerProc::start(
        &db.url,
        &config(&root, ""),
        &["--queue", "nat", "--dlq-enabled", "false"],
    );
    let (_, r) = run_one(&client, "nat", "fixture", json!({"mode": "segv"}), 1).await;
    let f = failure(&r);
    assert_eq!(f["name"], "$ProgramKilled");
    assert_eq!(f["details"]["signal"], libc::SIGSEGV);
    assert_eq!(f["details"]["signal_name"], "SIGSEGV");
    assert_eq!(f["details"]["cause"], "segfault");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("segmentation fault"),
        "{f}"
    );

    let (_, r) = run_one(&client, "nat", "fixture", json!({"mode": "kill9"}), 1).await;
    let f = failure(&r);
    assert_eq!(f["details"]["signal"], libc::SIGKILL);
    assert_eq!(f["details"]["cause"], "oom");
    assert!(
        f["message"].as_str().unwrap().contains("likely OOM-killed"),
        "{f}"
    );

    let (_, r) = run_one(&client, "nat", "fixture", json!({"mode": "abort"}), 1).await;
    let f = failure(&r);
    assert_eq!(f["details"]["signal_name"], "SIGABRT");
    assert_eq!(f["details"]["cause"], "abort");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn resource_limits_apply_to_the_program() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let _w = WorkerProc::start(
        &db.url,
        &config(&root, ""),
        &["--queue", "nat", "--dlq-enabled", "false"],
    );
    let (_, r) = run_one(&client, "nat", "limited", json!({"mode": "limits"}), 1).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let v = r.result.unwrap();
    assert_eq!(v["RLIMIT_CPU"][0], 1);
    assert_eq!(v["RLIMIT_NOFILE"], json!([64, 64]));
    assert_eq!(v["RLIMIT_AS"], json!([4096u64 << 20, 4096u64 << 20]));
    // One CPU-second of spinning: SIGXCPU, classified as the CPU limit.
    let (_, r) = run_one(&client, "nat", "limited", json!({"mode": "spin"}), 1).await;
    let f = failure(&r);
    assert_eq!(f["name"], "$ProgramKilled", "{f}");
    assert_eq!(f["details"]["signal_name"], "SIGXCPU", "{f}");
    assert_eq!(f["details"]["cause"], "cpu_limit");
    let _ = std::fs::remove_dir_all(&root);
}

/// The timeout is a hard stop: the group gets SIGTERM `grace` before the deadline (`grace`,
/// 30 s here, capped at half the 6 s timeout) and SIGKILL at the deadline, so not even a
/// grandchild that ignores SIGTERM outlives it.
#[tokio::test]
async fn timeout_kills_the_program_and_its_grandchild() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let w = WorkerProc::start(
        &db.url,
        &config(&root, ""),
        &["--queue", "nat", "--dlq-enabled", "false"],
    );
    let pid_file = root.join("hang.pids");
    let id = client
        .spawn(
            "nat",
            "hang",
            &json!({"mode": "hang", "pid_file": pid_file}),
            &opts(1),
        )
        .await
        .unwrap()
        .task_id;
    let (child, grandchild) = hang_pids(&pid_file).await;
    // Alive once started: SIGTERM did not go out at once (30 s before a 6 s deadline).
    assert!(alive(child) && alive(grandchild));
    assert_eq!(
        group_members(child).len(),
        2,
        "the program leads its own group, with the grandchild in it"
    );
    // The program dies of the SIGTERM that comes half-way (3 s) through: before the deadline,
    // so the task is not finished yet, and the grandchild, which ignores SIGTERM, lives on.
    wait_for(
        "the program to die of the early SIGTERM",
        Duration::from_secs(30),
        || async { (!alive(child)).then_some(()) },
    )
    .await;
    let now = client.task_result("nat", id).await.unwrap();
    assert!(
        now.as_ref().is_none_or(|r| !r.state.is_terminal()),
        "SIGTERM must come before the deadline: {now:?}"
    );
    assert!(alive(grandchild), "the grandchild ignores SIGTERM");
    let r = terminal(&client, "nat", id, Duration::from_secs(30)).await;
    let f = failure(&r);
    assert_eq!(f["name"], "$Timeout");
    // SIGKILL at the deadline, not `grace` (30 s) after it.
    assert_group_gone(child, grandchild, Duration::from_secs(15)).await;
    // Reaped: no zombie left among the worker's children (only its watchdogs, if any, alive).
    wait_for(
        "the program to be reaped",
        Duration::from_secs(10),
        || async { (!children_of(w.pid()).iter().any(|(p, _)| *p == child)).then_some(()) },
    )
    .await;
    let _ = std::fs::remove_dir_all(&root);
}

/// A task's own `timeout_sec` header lowers the type's timeout (here the default 3600 s):
/// the program's group is stopped at the task's deadline, grandchild included.
#[tokio::test]
async fn a_task_timeout_sec_kills_the_program_at_its_own_deadline() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let _w = WorkerProc::start(
        &db.url,
        &config(&root, ""),
        &["--queue", "nat", "--dlq-enabled", "false"],
    );
    let pid_file = root.join("hang.pids");
    let started = Instant::now();
    let id = client
        .spawn(
            "nat",
            "fixture",
            &json!({"mode": "hang", "pid_file": pid_file}),
            &absurd_client::SpawnOptions {
                // 10 s, not less: on a busy machine the program may need seconds to start and
                // write its pids, and a deadline that passes first leaves nothing to check.
                headers: Some(json!({"timeout_sec": 10})),
                ..opts(1)
            },
        )
        .await
        .unwrap()
        .task_id;
    let (child, grandchild) = hang_pids(&pid_file).await;
    let r = terminal(&client, "nat", id, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    let f = failure(&r);
    assert_eq!(f["name"], "$Timeout", "{f}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .starts_with("Task timed out after 10 seconds"),
        "{f}"
    );
    assert_eq!(f["details"]["timeout_seconds"], 10.0, "{f}");
    assert_eq!(f["details"]["timeout_sec_requested"], 10, "{f}");
    assert_eq!(f["details"]["timeout_sec_clamped"], false, "{f}");
    assert!(
        elapsed < Duration::from_secs(120),
        "stopped at the task's 10 s, not the type's 3600 s: {elapsed:?}"
    );
    assert_group_gone(child, grandchild, Duration::from_secs(15)).await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn cancelling_a_running_task_kills_the_program() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let w = WorkerProc::start(
        &db.url,
        &config(&root, ""),
        &[
            "--queue",
            "nat",
            "--claim-timeout",
            "3",
            "--dlq-enabled",
            "false",
        ],
    );
    let pid_file = root.join("hang.pids");
    // No per-type timeout for this one: only the cancellation can stop it.
    let id = client
        .spawn(
            "nat",
            "fixture",
            &json!({"mode": "hang", "pid_file": pid_file}),
            &opts(1),
        )
        .await
        .unwrap()
        .task_id;
    let (child, grandchild) = hang_pids(&pid_file).await;
    client.cancel_task("nat", id).await.unwrap();
    assert_group_gone(child, grandchild, Duration::from_secs(30)).await;
    let r = terminal(&client, "nat", id, Duration::from_secs(10)).await;
    assert_eq!(r.state, State::Cancelled);
    wait_for(
        "the worker to log the stop",
        Duration::from_secs(10),
        || async {
            w.log_text()
                .contains("stopped the program's process group")
                .then_some(())
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn a_sigkilled_host_takes_the_program_and_its_grandchild_along() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let mut w = WorkerProc::start(&db.url, &config(&root, ""), &["--queue", "nat"]);
    let pid_file = root.join("hang.pids");
    client
        .spawn(
            "nat",
            "fixture",
            &json!({"mode": "hang", "pid_file": pid_file}),
            &opts(1),
        )
        .await
        .unwrap();
    let (child, grandchild) = hang_pids(&pid_file).await;
    w.signal(libc::SIGKILL);
    w.wait_exit(Duration::from_secs(10))
        .expect("the worker dies");
    // The program by its parent-death signal, the grandchild by the host's watchdog.
    assert_group_gone(child, grandchild, Duration::from_secs(20)).await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn an_output_flood_keeps_host_memory_bounded() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let w = WorkerProc::start(&db.url, &config(&root, ""), &["--queue", "nat"]);
    let id = client
        .spawn("nat", "flood", &json!({}), &opts(1))
        .await
        .unwrap()
        .task_id;
    let mut max_rss = 0;
    let started = Instant::now();
    let r = wait_for("the flood task to finish", Duration::from_secs(300), || {
        if let Some(kb) = vm_rss_kb(w.pid()) {
            max_rss = max_rss.max(kb);
        }
        let client = client.clone();
        async move {
            client
                .task_result("nat", id)
                .await
                .unwrap()
                .filter(|r| r.state.is_terminal())
        }
    })
    .await;
    eprintln!(
        "flood of 330 MiB took {:?}; worker peak VmRSS {} MiB",
        started.elapsed(),
        max_rss / 1024
    );
    assert_eq!(r.state, State::Completed, "{r:?}\n{}", w.log_text());
    assert_eq!(
        r.result,
        Some(json!({"status": "success", "flooded_mib": 300}))
    );
    assert!(max_rss > 0, "sampled the worker's memory");
    assert!(
        max_rss < 200 * 1024,
        "worker VmRSS peaked at {} MiB",
        max_rss / 1024
    );
    // keep_workdir = "always": the capped logs are there.
    let dir = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("flood-")
        })
        .expect("the flood work directory");
    let cap = 64 * 1024 * 1024;
    let size = std::fs::metadata(dir.join("stdout.log")).unwrap().len();
    assert!(size > cap && size < cap + 512, "stdout.log is {size} bytes");
    let mut f = std::fs::File::open(dir.join("stdout.log")).unwrap();
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(cap)).unwrap();
    let mut end = String::new();
    f.read_to_string(&mut end).unwrap();
    assert!(end.contains("truncated at 67108864 bytes"), "{end}");
    let err_size = std::fs::metadata(dir.join("stderr.log")).unwrap().len();
    assert_eq!(
        err_size,
        30 * 1024 * 1024,
        "stderr is under the cap and saved whole"
    );
    let log = w.log_text();
    assert!(
        log.contains("rate-limited"),
        "the log says lines were not all traced"
    );
    assert!(
        log.len() < 20 * 1024 * 1024,
        "the worker log stayed small: {} bytes",
        log.len()
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn configuration_mistakes_stop_the_host_naming_the_task_and_key() {
    use absurd_engine::dispatch::{HostConfig, Registry};
    let load = |text: &str| {
        let c = HostConfig::parse(text).unwrap();
        Registry::from_config(&c, None).map_err(|e| e.to_string())
    };
    let task = fixture("task.py");
    let ok = format!(
        "[tasks.t]\nkind = \"native\"\nprogram = \"{}\"\n",
        task.display()
    );
    let r = load(&ok).unwrap();
    assert_eq!(r.get("t").unwrap().handler.kind().as_str(), "native");
    let e = load(&format!("{ok}workdir = \"/tmp\"\n")).err().unwrap();
    assert!(
        e.contains("[tasks.t]") && e.contains("unknown key `workdir`"),
        "{e}"
    );
    let e = load(&format!("{ok}args = [\"{{ms_path}}\"]\n"))
        .err()
        .unwrap();
    assert!(
        e.contains("[tasks.t]") && e.contains("unknown placeholder `{ms_path}`"),
        "{e}"
    );
    let e = load("[tasks.t]\nkind = \"native\"\nprogram = \"./missing.py\"\n")
        .err()
        .unwrap();
    assert!(
        e.contains("[tasks.t]") && e.contains("does not exist"),
        "{e}"
    );
    let e = load(&format!("[native]\nshell = true\n{ok}"))
        .err()
        .unwrap();
    assert!(e.contains("unknown key `shell` in [native]"), "{e}");
}

#[tokio::test]
async fn shutdown_stops_the_program_and_hands_the_task_back() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let mut w = WorkerProc::start(
        &db.url,
        &config(&root, ""),
        &["--queue", "nat", "--shutdown-grace", "1"],
    );
    let pid_file = root.join("hang.pids");
    let id = client
        .spawn(
            "nat",
            "fixture",
            &json!({"mode": "hang", "pid_file": pid_file}),
            &opts(3),
        )
        .await
        .unwrap()
        .task_id;
    let (child, grandchild) = hang_pids(&pid_file).await;
    w.signal(libc::SIGTERM);
    let status = w
        .wait_exit(Duration::from_secs(60))
        .expect("the worker exits after its grace period");
    assert!(status.success(), "{status:?}\n{}", w.log_text());
    assert_group_gone(child, grandchild, Duration::from_secs(20)).await;
    let t = client.get_task("nat", id).await.unwrap().unwrap();
    assert!(
        matches!(t.summary.state, State::Pending | State::Sleeping),
        "handed back to the queue: {:?}",
        t.summary.state
    );
    let _ = std::fs::remove_dir_all(&root);
}

// ---- Containment (issue #14, part 5): nothing a program starts outlives its run, secrets
// stay with the host, default limits, private work directories, no symlinks followed. ----

/// A config of small shell programs that leave processes behind. Each writes the pid of the
/// process it left to `<root>/left.pid`.
fn containment_config(root: &Path, extra: &str) -> PathBuf {
    let task = fixture("task.py");
    let pid_file = root.join("left.pid");
    let secret = root.join("secret.json");
    // Written atomically, so the test never reads half a pid.
    let record = r#"echo $! > \"$PID_FILE.tmp\" && mv \"$PID_FILE.tmp\" \"$PID_FILE\""#;
    let text = format!(
        r#"
[native]
workdir_root = "{root}"
grace = 1
env = {{ PID_FILE = "{pid_file}", SECRET_FILE = "{secret}" }}

# Exits 0 at once, leaving `sleep` in a session of its own (holding the output pipes).
[tasks.setsid]
kind = "native"
program = "/bin/sh"
args = ["-c", "setsid sleep 1000 & {record}; echo '{{{{}}}}' > result.json"]

# A daemon made the classic way: a double fork and setsid, its parent gone before the
# program exits.
[tasks.double-fork]
kind = "native"
program = "/bin/sh"
args = ["-c", "(setsid sh -c 'sleep 1000 </dev/null >/dev/null 2>&1 & {record}' &); while [ ! -f \"$PID_FILE\" ]; do sleep 0.05; done; echo '{{{{}}}}' > result.json"]

# Leaves a daemon, then hangs until stopped.
[tasks.setsid-hang]
kind = "native"
program = "/bin/sh"
args = ["-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 & {record}; exec sleep 1000"]

[tasks.setsid-timeout]
kind = "native"
program = "/bin/sh"
args = ["-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 & {record}; exec sleep 1000"]
timeout = 4

[tasks.fixture]
kind = "native"
program = "{task}"
args = ["{{params}}"]

[tasks.fixture-pass]
kind = "native"
program = "{task}"
args = ["{{params}}"]
env_pass = ["PGPASSWORD", "ABSURD_API_TOKEN"]

[tasks.limited]
kind = "native"
program = "{task}"
args = ["{{params}}"]
processes = 100
file_size_mb = 1

# Writes 2 MiB with a 1 MiB file size limit.
[tasks.big-file]
kind = "native"
program = "/bin/sh"
args = ["-c", "exec head -c 2097152 /dev/zero > big"]
file_size_mb = 1

# Puts a symbolic link to a file outside its work directory where its result goes.
[tasks.symlink-result]
kind = "native"
program = "/bin/sh"
args = ["-c", "ln -s \"$SECRET_FILE\" result.json"]
{extra}
"#,
        root = root.display(),
        pid_file = pid_file.display(),
        secret = secret.display(),
        task = task.display(),
    );
    temp_file("absurd-host.toml", &text)
}

/// The pid the program left behind, once written.
async fn left_pid(root: &Path) -> i32 {
    let f = root.join("left.pid");
    wait_for(
        "the program to record its daemon",
        Duration::from_secs(30),
        || async { std::fs::read_to_string(&f).ok()?.trim().parse::<i32>().ok() },
    )
    .await
}

async fn assert_gone(pid: i32, what: &str) {
    wait_for(what, Duration::from_secs(30), || async {
        (!alive(pid)).then_some(())
    })
    .await;
}

/// The session id of `pid` (field 6 of /proc/<pid>/stat).
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::test]
async fn a_setsid_daemon_does_not_outlive_a_successful_run() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let w = WorkerProc::start(&db.url, &containment_config(&root, ""), &["--queue", "nat"]);
    let (_, r) = run_one(&client, "nat", "setsid", json!({}), 1).await;
    assert_eq!(r.state, State::Completed, "{r:?}\n{}", w.log_text());
    let pid = left_pid(&root).await;
    assert_gone(pid, "the setsid daemon to be killed with its run").await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn a_double_forked_daemon_does_not_outlive_its_run() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let w = WorkerProc::start(&db.url, &containment_config(&root, ""), &["--queue", "nat"]);
    let (_, r) = run_one(&client, "nat", "double-fork", json!({}), 1).await;
    assert_eq!(r.state, State::Completed, "{r:?}\n{}", w.log_text());
    let pid = left_pid(&root).await;
    assert_gone(pid, "the double-forked daemon to be killed with its run").await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn a_daemon_does_not_outlive_a_timeout() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let w = WorkerProc::start(
        &db.url,
        &containment_config(&root, ""),
        &["--queue", "nat", "--dlq-enabled", "false"],
    );
    let id = client
        .spawn("nat", "setsid-timeout", &json!({}), &opts(1))
        .await
        .unwrap()
        .task_id;
    let pid = left_pid(&root).await;
    assert!(alive(pid), "the daemon runs while the program does");
    let r = terminal(&client, "nat", id, Duration::from_secs(60)).await;
    assert_eq!(failure(&r)["name"], "$Timeout", "{}", w.log_text());
    assert_gone(pid, "the daemon to be killed at the timeout").await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn a_daemon_does_not_outlive_a_cancellation() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let _w = WorkerProc::start(
        &db.url,
        &containment_config(&root, ""),
        &[
            "--queue",
            "nat",
            "--claim-timeout",
            "3",
            "--dlq-enabled",
            "false",
        ],
    );
    let id = client
        .spawn("nat", "setsid-hang", &json!({}), &opts(1))
        .await
        .unwrap()
        .task_id;
    let pid = left_pid(&root).await;
    client.cancel_task("nat", id).await.unwrap();
    assert_gone(pid, "the daemon to be killed at the cancellation").await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn a_daemon_does_not_outlive_a_sigkilled_worker() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let mut w = WorkerProc::start(&db.url, &containment_config(&root, ""), &["--queue", "nat"]);
    client
        .spawn("nat", "setsid-hang", &json!({}), &opts(1))
        .await
        .unwrap();
    let pid = left_pid(&root).await;
    assert!(alive(pid));
    assert_eq!(
        session_of(pid),
        Some(pid),
        "the daemon leads a session of its own"
    );
    w.signal(libc::SIGKILL);
    w.wait_exit(Duration::from_secs(10))
        .expect("the worker dies");
    assert_gone(pid, "the daemon to be killed when the worker dies").await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn a_daemon_does_not_outlive_a_worker_shutdown() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let mut w = WorkerProc::start(
        &db.url,
        &containment_config(&root, ""),
        &["--queue", "nat", "--shutdown-grace", "1"],
    );
    client
        .spawn("nat", "setsid-hang", &json!({}), &opts(3))
        .await
        .unwrap();
    let pid = left_pid(&root).await;
    w.signal(libc::SIGTERM);
    w.wait_exit(Duration::from_secs(60))
        .expect("the worker exits after its grace period");
    assert_gone(pid, "the daemon to be killed at shutdown").await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn programs_do_not_inherit_the_workers_secrets() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let config = containment_config(&root, "");
    // The worker takes its database URL from the environment, as deployed.
    let log = temp_file("worker.log", "");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .arg("worker")
        .arg("--config")
        .arg(&config)
        .args(["--queue", "nat"])
        .env_remove("ABSURD_QUEUE_NAME")
        .env("ABSURD_DATABASE_URL", &db.url)
        .env("ABSURD_API_TOKEN", "api-token-value")
        .env("PGPASSWORD", "pg-password-value")
        .env("DATABASE_URL", &db.url)
        .env("DEPLOY_TOKEN", "deploy-token-value")
        .env("PGHOST", "127.0.0.1")
        .env(
            "ABSURD_LOG",
            "info,sqlx=warn,absurd_host=debug,absurd_engine=debug,absurd_client=debug",
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start absurd-host worker");
    let w = WorkerProc { child, log };
    let names = [
        "ABSURD_DATABASE_URL",
        "ABSURD_API_TOKEN",
        "PGPASSWORD",
        "DATABASE_URL",
        "DEPLOY_TOKEN",
        "PGHOST",
        "ABSURD_TASK_ID",
    ];
    let (id, r) = run_one(
        &client,
        "nat",
        "fixture",
        json!({"mode": "ok", "show_env": names}),
        1,
    )
    .await;
    assert_eq!(r.state, State::Completed, "{r:?}\n{}", w.log_text());
    let env = &r.result.as_ref().unwrap()["env"];
    for secret in &names[..5] {
        assert_eq!(
            env[secret],
            Value::Null,
            "{secret} reached the program: {env}"
        );
    }
    assert_eq!(env["PGHOST"], "127.0.0.1", "not a secret: passed on");
    assert_eq!(env["ABSURD_TASK_ID"], json!(id.to_string()));
    // A task type that names secrets in `env_pass` gets those, and only those.
    let (_, r) = run_one(
        &client,
        "nat",
        "fixture-pass",
        json!({"mode": "ok", "show_env": names}),
        1,
    )
    .await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let env = &r.result.as_ref().unwrap()["env"];
    assert_eq!(env["PGPASSWORD"], "pg-password-value");
    assert_eq!(env["ABSURD_API_TOKEN"], "api-token-value");
    assert_eq!(env["ABSURD_DATABASE_URL"], Value::Null);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn process_and_file_size_limits_have_defaults_and_overrides() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let w = WorkerProc::start(
        &db.url,
        &containment_config(&root, ""),
        &["--queue", "nat", "--dlq-enabled", "false"],
    );
    let (_, r) = run_one(&client, "nat", "fixture", json!({"mode": "limits"}), 1).await;
    assert_eq!(r.state, State::Completed, "{r:?}\n{}", w.log_text());
    let v = r.result.unwrap();
    // The defaults, unless the host's own hard limit is lower.
    let hard = |res| {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(res, &mut l) };
        l.rlim_max
    };
    let nproc = 8192u64.min(hard(libc::RLIMIT_NPROC));
    let fsize = (64u64 << 30).min(hard(libc::RLIMIT_FSIZE));
    assert_eq!(v["RLIMIT_NPROC"], json!([nproc, nproc]), "{v}");
    assert_eq!(v["RLIMIT_FSIZE"], json!([fsize, fsize]), "{v}");
    let (_, r) = run_one(&client, "nat", "limited", json!({"mode": "limits"}), 1).await;
    let v = r.result.unwrap();
    assert_eq!(v["RLIMIT_NPROC"], json!([100, 100]), "{v}");
    assert_eq!(v["RLIMIT_FSIZE"], json!([1 << 20, 1 << 20]), "{v}");
    // Writing past the file size limit: SIGXFSZ, classified.
    let (_, r) = run_one(&client, "nat", "big-file", json!({}), 1).await;
    let f = failure(&r);
    assert_eq!(f["name"], "$ProgramKilled", "{f}");
    assert_eq!(f["details"]["signal_name"], "SIGXFSZ", "{f}");
    assert_eq!(f["details"]["cause"], "file_size_limit", "{f}");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn work_directories_are_private_and_a_symlinked_result_is_not_followed() {
    let (db, client) = setup("nat").await;
    let root = scratch_dir();
    let w = WorkerProc::start(
        &db.url,
        &containment_config(&root, ""),
        &["--queue", "nat", "--dlq-enabled", "false"],
    );
    let (_, r) = run_one(&client, "nat", "fixture", json!({"mode": "ok"}), 1).await;
    assert_eq!(r.state, State::Completed, "{r:?}\n{}", w.log_text());
    assert_eq!(r.result.unwrap()["cwd_mode"], 0o700);
    std::fs::write(root.join("secret.json"), r#"{"stolen": true}"#).unwrap();
    let (_, r) = run_one(&client, "nat", "symlink-result", json!({}), 1).await;
    let f = failure(&r);
    assert_eq!(f["name"], "$NoResult", "{f}");
    let message = f["message"].as_str().unwrap();
    assert!(message.contains("symbolic link"), "{message}");
    let _ = std::fs::remove_dir_all(&root);
}
