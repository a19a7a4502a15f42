//! `absurd-host worker` as operators run it: real processes against real PostgreSQL.

mod common;
use common::{no_backoff as opts, setup, terminal};

use std::time::{Duration, Instant};

use absurd_client::{Client, State, TaskFilter};
use common::{temp_file, wait_for, WorkerProc};
use serde_json::{json, Value};
use uuid::Uuid;

const CONFIG: &str = r#"
[tasks.echo]
kind = "builtin"

[tasks.slow]
kind = "builtin"
builtin = "sleep"

[tasks.limited]
kind = "builtin"
builtin = "sleep"
timeout = 1

[tasks.boom]
kind = "builtin"
builtin = "fail"

[tasks.nap]
kind = "builtin"

[tasks.wait-event]
kind = "builtin"
"#;

fn config() -> std::path::PathBuf {
    temp_file("absurd-host.toml", CONFIG)
}

/// Tasks spawned into the dead-letter queue for `task`.
async fn dead_letters(client: &Client, dlq: &str, task: Uuid) -> Vec<Value> {
    if !client.queue_exists(dlq).await.unwrap() {
        return vec![];
    }
    let page = client
        .list_tasks(&TaskFilter {
            queue: Some(dlq.into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = vec![];
    for t in page.tasks {
        let d = client.get_task(dlq, t.task_id).await.unwrap().unwrap();
        assert_eq!(d.summary.task_name, "dead-letter");
        if d.params["original_task_id"] == json!(task) {
            out.push(d.params);
        }
    }
    out
}

#[tokio::test]
async fn completes_tasks_and_records_the_worker() {
    let (db, client) = setup("jobs").await;
    let _w = WorkerProc::start(
        &db.url,
        &config(),
        &["--queue", "jobs", "--worker-id", "w-one"],
    );
    let mut ids = vec![];
    for i in 0..20 {
        ids.push(
            client
                .spawn("jobs", "echo", &json!({"i": i}), &opts(3))
                .await
                .unwrap()
                .task_id,
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let r = terminal(&client, "jobs", *id, Duration::from_secs(30)).await;
        assert_eq!(r.state, State::Completed);
        assert_eq!(r.result, Some(json!({"i": i})));
        let t = client.get_task("jobs", *id).await.unwrap().unwrap();
        assert_eq!(t.runs.len(), 1, "exactly one run");
        assert_eq!(t.runs[0].claimed_by.as_deref(), Some("w-one"));
    }
}

#[tokio::test]
async fn idle_worker_wakes_on_notify_not_on_poll() {
    let (db, client) = setup("wake").await;
    let w = WorkerProc::start(
        &db.url,
        &config(),
        &["--queue", "wake", "--poll-interval", "5"],
    );
    // Let the worker reach its idle wait (its first claim finds nothing).
    wait_for(
        "the worker to start listening",
        Duration::from_secs(20),
        || async { w.log_text().contains("worker starting").then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let spawned_at = Instant::now();
        let id = client
            .spawn("wake", "echo", &json!({}), &opts(1))
            .await
            .unwrap()
            .task_id;
        terminal(&client, "wake", id, Duration::from_secs(10)).await;
        worst = worst.max(spawned_at.elapsed());
        let t = client.get_task("wake", id).await.unwrap().unwrap();
        let pickup = t.runs[0].started_at.unwrap() - t.summary.enqueue_at;
        assert!(
            pickup < chrono::Duration::milliseconds(1000),
            "picked up after {pickup}; with a 5 s poll interval only a notification explains < 1 s"
        );
    }
    assert!(
        worst < Duration::from_secs(2),
        "spawn-to-completion took {worst:?}"
    );
}

#[tokio::test]
async fn sleeping_task_wakes_on_time_without_a_poll_tick() {
    let (db, client) = setup("naps").await;
    let _w = WorkerProc::start(
        &db.url,
        &config(),
        &["--queue", "naps", "--poll-interval", "30"],
    );
    let id = client
        .spawn("naps", "nap", &json!({"seconds": 1.5}), &opts(1))
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, "naps", id, Duration::from_secs(15)).await;
    assert_eq!(r.state, State::Completed);
    assert_eq!(r.result, Some(json!("rested")));
    let t = client.get_task("naps", id).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 1, "sleeping reuses the run");
    let total = t.runs[0].completed_at.unwrap() - t.summary.enqueue_at;
    assert!(
        total >= chrono::Duration::milliseconds(1400),
        "woke too early: {total}"
    );
    assert!(
        total < chrono::Duration::seconds(10),
        "woke by poll, not by timer: {total}"
    );
    assert_eq!(t.checkpoints.len(), 1);
    assert_eq!(t.checkpoints[0].checkpoint_name, "nap");
}

#[tokio::test]
async fn event_wakes_a_waiting_task() {
    let (db, client) = setup("ev").await;
    let _w = WorkerProc::start(
        &db.url,
        &config(),
        &["--queue", "ev", "--poll-interval", "30"],
    );
    let id = client
        .spawn(
            "ev",
            "wait-event",
            &json!({"event": "ms-ready:1"}),
            &opts(1),
        )
        .await
        .unwrap()
        .task_id;
    wait_for(
        "the task to sleep on its event",
        Duration::from_secs(15),
        || async {
            let t = client.get_task("ev", id).await.unwrap().unwrap();
            (t.summary.state == State::Sleeping).then_some(())
        },
    )
    .await;
    client
        .emit_event("ev", "ms-ready:1", Some(&json!({"path": "/d/x.ms"})))
        .await
        .unwrap();
    let r = terminal(&client, "ev", id, Duration::from_secs(10)).await;
    assert_eq!(r.state, State::Completed);
    assert_eq!(
        r.result,
        Some(json!({"event": "ms-ready:1", "payload": {"path": "/d/x.ms"}}))
    );
}

#[tokio::test]
async fn timeout_fails_retries_then_dead_letters_once() {
    let (db, client) = setup("slowq").await;
    let _w = WorkerProc::start(
        &db.url,
        &config(),
        &["--queue", "slowq", "--worker-id", "w-t"],
    );
    let id = client
        .spawn("slowq", "limited", &json!({"seconds": 30}), &opts(2))
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, "slowq", id, Duration::from_secs(30)).await;
    assert_eq!(r.state, State::Failed);
    let reason = r.failure_reason.unwrap();
    assert_eq!(reason["name"], "$Timeout");
    assert_eq!(reason["message"], "Task timed out after 1 seconds");
    let t = client.get_task("slowq", id).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 2, "retried once, per max_attempts = 2");
    assert!(t.runs.iter().all(|r| r.state == State::Failed));
    let dl = wait_for("the dead letter", Duration::from_secs(20), || async {
        let d = dead_letters(&client, "slowq-dlq", id).await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    // Give the periodic sweep time to (wrongly) add a second copy.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let dl2 = dead_letters(&client, "slowq-dlq", id).await;
    assert_eq!(dl2.len(), 1, "dead-lettered exactly once: {dl2:?}");
    let p = &dl[0];
    assert_eq!(p["original_task_name"], "limited");
    assert_eq!(p["original_queue"], "slowq");
    assert_eq!(p["params"], json!({"seconds": 30}));
    assert_eq!(p["error"]["name"], "$Timeout");
    assert_eq!(p["attempts"], 2);
    assert_eq!(p["worker_id"], "w-t");
    assert!(p["dead_lettered_at"].as_str().is_some());
}

#[tokio::test]
async fn permanent_failure_is_not_retried() {
    let (db, client) = setup("perm").await;
    let _w = WorkerProc::start(
        &db.url,
        &config(),
        &["--queue", "perm", "--dlq-enabled", "false"],
    );
    let id = client
        .spawn(
            "perm",
            "boom",
            &json!({"message": "bad input", "permanent": true}),
            &opts(5),
        )
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, "perm", id, Duration::from_secs(20)).await;
    assert_eq!(r.state, State::Failed);
    assert_eq!(r.failure_reason.unwrap()["message"], "bad input");
    let t = client.get_task("perm", id).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 1);
    assert!(
        !client.queue_exists("perm-dlq").await.unwrap(),
        "DLQ disabled"
    );
}

#[tokio::test]
async fn sigkilled_worker_loses_nothing() {
    let (db, client) = setup("crash").await;
    let cfg = config();
    let mut a = WorkerProc::start(
        &db.url,
        &cfg,
        &[
            "--queue",
            "crash",
            "--worker-id",
            "w-a",
            "--claim-timeout",
            "2",
        ],
    );
    let survivor = client
        .spawn("crash", "slow", &json!({"seconds": 1}), &opts(3))
        .await
        .unwrap()
        .task_id;
    let last_chance = client
        .spawn("crash", "slow", &json!({"seconds": 1}), &opts(1))
        .await
        .unwrap()
        .task_id;
    wait_for(
        "worker A to be running both tasks",
        Duration::from_secs(20),
        || async {
            let mut n = 0;
            for id in [survivor, last_chance] {
                let t = client.get_task("crash", id).await.unwrap().unwrap();
                if t.summary.state == State::Running {
                    n += 1;
                }
            }
            (n == 2).then_some(())
        },
    )
    .await;
    a.signal(libc::SIGKILL);
    a.wait_exit(Duration::from_secs(10)).expect("worker A died");
    let _b = WorkerProc::start(
        &db.url,
        &cfg,
        &[
            "--queue",
            "crash",
            "--worker-id",
            "w-b",
            "--claim-timeout",
            "2",
        ],
    );

    let r = terminal(&client, "crash", survivor, Duration::from_secs(40)).await;
    assert_eq!(r.state, State::Completed, "completed by the other worker");
    let t = client.get_task("crash", survivor).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 2);
    assert_eq!(t.runs[0].state, State::Failed);
    assert_eq!(
        t.runs[0].failure_reason.as_ref().unwrap()["name"],
        "$ClaimTimeout"
    );
    assert_eq!(
        t.runs[0].failure_reason.as_ref().unwrap()["workerId"],
        "w-a"
    );
    assert_eq!(t.runs[1].state, State::Completed);
    assert_eq!(t.runs[1].claimed_by.as_deref(), Some("w-b"));

    // The task that had no attempts left fails with $ClaimTimeout and is dead-lettered.
    let r = terminal(&client, "crash", last_chance, Duration::from_secs(40)).await;
    assert_eq!(r.state, State::Failed);
    assert_eq!(r.failure_reason.unwrap()["name"], "$ClaimTimeout");
    let dl = wait_for(
        "the lease-expiry dead letter",
        Duration::from_secs(30),
        || async {
            let d = dead_letters(&client, "crash-dlq", last_chance).await;
            (!d.is_empty()).then_some(d)
        },
    )
    .await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["error"]["name"], "$ClaimTimeout");
    assert_eq!(dl[0]["worker_id"], "w-a");
}

#[tokio::test]
async fn sigterm_drains_running_tasks_and_exits_zero() {
    let (db, client) = setup("drain").await;
    let mut w = WorkerProc::start(&db.url, &config(), &["--queue", "drain"]);
    let id = client
        .spawn("drain", "slow", &json!({"seconds": 2}), &opts(1))
        .await
        .unwrap()
        .task_id;
    wait_for("the task to run", Duration::from_secs(20), || async {
        let t = client.get_task("drain", id).await.unwrap().unwrap();
        (t.summary.state == State::Running).then_some(())
    })
    .await;
    w.signal(libc::SIGTERM);
    let status = w
        .wait_exit(Duration::from_secs(30))
        .expect("worker exits after draining");
    assert!(status.success(), "exit status {status:?}\n{}", w.log_text());
    let r = client.task_result("drain", id).await.unwrap().unwrap();
    assert_eq!(
        r.state,
        State::Completed,
        "the running task finished before exit"
    );
}

#[tokio::test]
async fn sigterm_hands_back_what_outlives_the_grace_period() {
    let (db, client) = setup("handback").await;
    let cfg = config();
    let mut w = WorkerProc::start(
        &db.url,
        &cfg,
        &[
            "--queue",
            "handback",
            "--shutdown-grace",
            "0.5",
            "--worker-id",
            "w-first",
        ],
    );
    let id = client
        .spawn("handback", "slow", &json!({"seconds": 3}), &opts(1))
        .await
        .unwrap()
        .task_id;
    wait_for("the task to run", Duration::from_secs(20), || async {
        let t = client.get_task("handback", id).await.unwrap().unwrap();
        (t.summary.state == State::Running).then_some(())
    })
    .await;
    w.signal(libc::SIGTERM);
    let status = w.wait_exit(Duration::from_secs(30)).expect("worker exits");
    assert!(status.success(), "exit status {status:?}");
    let t = client.get_task("handback", id).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 1, "handed back without spending an attempt");
    assert!(
        matches!(t.summary.state, State::Sleeping | State::Pending),
        "handed back, got {:?}",
        t.summary.state
    );
    // Another worker picks it up at once, well before any 60 s lease would have expired.
    let started = Instant::now();
    let _w2 = WorkerProc::start(
        &db.url,
        &cfg,
        &["--queue", "handback", "--worker-id", "w-second"],
    );
    let r = terminal(&client, "handback", id, Duration::from_secs(30)).await;
    assert_eq!(r.state, State::Completed);
    assert!(started.elapsed() < Duration::from_secs(25));
    let t = client.get_task("handback", id).await.unwrap().unwrap();
    assert_eq!(t.runs[0].claimed_by.as_deref(), Some("w-second"));
}

#[tokio::test]
async fn unknown_tasks_are_deferred_or_failed_on_request() {
    let (db, client) = setup("mixed").await;
    let cfg = config();
    let w = WorkerProc::start(&db.url, &cfg, &["--queue", "mixed"]);
    let id = client
        .spawn("mixed", "mystery", &json!({}), &opts(3))
        .await
        .unwrap()
        .task_id;
    let t = wait_for(
        "the unknown task to be deferred",
        Duration::from_secs(20),
        || async {
            let t = client.get_task("mixed", id).await.unwrap().unwrap();
            (t.summary.state == State::Sleeping).then_some(t)
        },
    )
    .await;
    let run = &t.runs[0];
    let delay = run.available_at.unwrap() - run.started_at.unwrap();
    assert!(
        delay >= chrono::Duration::seconds(14) && delay <= chrono::Duration::seconds(31),
        "deferred by {delay}"
    );
    assert_eq!(t.runs.len(), 1, "deferring does not spend an attempt");
    drop(w);

    let _w = WorkerProc::start(
        &db.url,
        &cfg,
        &[
            "--queue",
            "mixed",
            "--fail-unknown",
            "--dlq-enabled",
            "false",
        ],
    );
    let id2 = client
        .spawn("mixed", "mystery2", &json!({}), &opts(3))
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, "mixed", id2, Duration::from_secs(20)).await;
    assert_eq!(r.state, State::Failed);
    assert_eq!(r.failure_reason.unwrap()["name"], "$UnknownTask");
}

#[tokio::test]
async fn cancelled_task_is_stopped_without_a_report() {
    let (db, client) = setup("cancel").await;
    let _w = WorkerProc::start(
        &db.url,
        &config(),
        &["--queue", "cancel", "--claim-timeout", "3"],
    );
    let id = client
        .spawn("cancel", "slow", &json!({"seconds": 30}), &opts(1))
        .await
        .unwrap()
        .task_id;
    wait_for("the task to run", Duration::from_secs(20), || async {
        let t = client.get_task("cancel", id).await.unwrap().unwrap();
        (t.summary.state == State::Running).then_some(())
    })
    .await;
    client.cancel_task("cancel", id).await.unwrap();
    // The next lease renewal (every second) notices and stops the task; a second task then
    // runs in the freed slot.
    let next = client
        .spawn("cancel", "echo", &json!({"after": "cancel"}), &opts(1))
        .await
        .unwrap()
        .task_id;
    let r = terminal(&client, "cancel", next, Duration::from_secs(20)).await;
    assert_eq!(r.state, State::Completed);
    let t = client.get_task("cancel", id).await.unwrap().unwrap();
    assert_eq!(t.summary.state, State::Cancelled);
    assert_eq!(t.runs.len(), 1);
    assert_eq!(t.runs[0].state, State::Cancelled);
    assert!(
        t.runs[0].failure_reason.is_none() && t.runs[0].result.is_none(),
        "nothing reported"
    );
}

#[tokio::test]
async fn bad_configuration_is_refused_with_the_variable_named() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args(["worker", "--queue", "q"])
        .env("ABSURD_WORKER_CONCURRENCY", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "clap's usage-error code: {err}");
    assert!(
        err.contains("ABSURD_WORKER_CONCURRENCY") && err.contains("got 0"),
        "{err}"
    );

    let bad = temp_file("absurd-host.toml", "[tasks.x]\nkind = \"builtin\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args(["worker", "--queue", "q", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[tasks.x]") && err.contains("unknown builtin"),
        "{err}"
    );
}

#[tokio::test]
async fn two_workers_complete_2000_python_spawned_tasks_exactly_once() {
    let (db, client) = setup("bulk").await;
    let cfg = config();
    let _a = WorkerProc::start(
        &db.url,
        &cfg,
        &[
            "--queue",
            "bulk",
            "--worker-id",
            "bulk-a",
            "--concurrency",
            "8",
        ],
    );
    let _b = WorkerProc::start(
        &db.url,
        &cfg,
        &[
            "--queue",
            "bulk",
            "--worker-id",
            "bulk-b",
            "--concurrency",
            "8",
        ],
    );
    // The real Python absurd-sdk spawns them while both workers are running.
    let out = std::process::Command::new(common::venv_bin("python"))
        .arg(common::repo_root().join("tests/interop/sdk_spawn.py"))
        .args([
            "--url",
            &db.url,
            "--queue",
            "bulk",
            "--task",
            "echo",
            "--count",
            "2000",
            "--idempotency-key",
            "",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spawned: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spawned["task_ids"].as_array().unwrap().len(), 2000);

    wait_for(
        "all 2000 tasks to complete",
        Duration::from_secs(240),
        || async {
            let done: i64 =
                sqlx::query_scalar("select count(*) from absurd.t_bulk where state = 'completed'")
                    .fetch_one(&db.pool)
                    .await
                    .unwrap();
            (done == 2000).then_some(())
        },
    )
    .await;
    let (tasks, runs, completed_runs): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from absurd.t_bulk), (select count(*) from absurd.r_bulk), \
                (select count(*) from absurd.r_bulk where state = 'completed')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (tasks, runs, completed_runs),
        (2000, 2000, 2000),
        "one run per task, each completed once"
    );
    let wrong: i64 = sqlx::query_scalar(
        "select count(*) from absurd.t_bulk where completed_payload is distinct from params",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0, "every result is the task's own params");
    let per_worker: Vec<(String, i64)> =
        sqlx::query_as("select claimed_by, count(*) from absurd.r_bulk group by 1 order by 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        per_worker.len(),
        2,
        "both workers took part: {per_worker:?}"
    );
    let _ = client;
}

#[tokio::test]
async fn postgres_restart_during_runs_loses_nothing() {
    // A private cluster: the shared one must never be restarted by a test.
    let data = std::env::temp_dir().join(format!("absurd-pgrestart-{}", Uuid::new_v4().simple()));
    let d = data.clone();
    let pg =
        tokio::task::spawn_blocking(move || absurd_host::embedded::EmbeddedPostgres::start(&d))
            .await
            .unwrap()
            .expect("start a private PostgreSQL");
    let pg = std::sync::Arc::new(pg);
    let url = pg.url();
    let pool = absurd_client::db::connect(&url, 4).await.unwrap();
    absurd_client::db::migrate(&pool).await.unwrap();
    let client = Client::new(pool.clone());
    client.create_queue("pgr").await.unwrap();
    let w = WorkerProc::start(
        &url,
        &config(),
        &[
            "--queue",
            "pgr",
            "--claim-timeout",
            "15",
            "--concurrency",
            "6",
        ],
    );

    let mut ids = vec![];
    for i in 0..6 {
        ids.push(
            client
                .spawn("pgr", "slow", &json!({"seconds": 3, "i": i}), &opts(3))
                .await
                .unwrap()
                .task_id,
        );
    }
    wait_for("the slow tasks to run", Duration::from_secs(30), || async {
        let running: i64 =
            sqlx::query_scalar("select count(*) from absurd.t_pgr where state = 'running'")
                .fetch_one(&pool)
                .await
                .ok()?;
        (running >= 3).then_some(())
    })
    .await;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.restart())
        .await
        .unwrap()
        .expect("restart PostgreSQL");
    // Spawned after the restart: the worker must have reconnected (claims and listener).
    for i in 0..10 {
        let id = loop {
            match client
                .spawn("pgr", "echo", &json!({"after": i}), &opts(3))
                .await
            {
                Ok(s) => break s.task_id,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        ids.push(id);
    }
    for id in &ids {
        let r = terminal(&client, "pgr", *id, Duration::from_secs(90)).await;
        assert_eq!(r.state, State::Completed, "{r:?}");
    }
    let doubles: i64 = sqlx::query_scalar(
        "select count(*) from (select task_id from absurd.r_pgr where state = 'completed' group by 1 having count(*) > 1) x",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(doubles, 0, "no task completed twice");
    assert!(w.log_text().contains("worker starting"));
    drop(w);
    pool.close().await;
    drop(pg);
    let _ = std::fs::remove_dir_all(&data);
}

/// A claim stamps its run with the clock it read when it began, and commits a moment later. A
/// run claimed in a transaction still open while the dead-letter sweep reads its horizon, and
/// failed after, must still fall inside the next sweep's window: otherwise a failure its worker
/// could not copy would never be dead-lettered.
#[tokio::test]
async fn a_claim_committed_after_the_sweep_horizon_is_still_in_the_next_window() {
    let (db, client) = setup("dlh").await;
    let task = client
        .spawn("dlh", "boom", &json!({}), &opts(1))
        .await
        .unwrap()
        .task_id;
    let mut claim = db.pool.begin().await.unwrap();
    let run: Uuid = sqlx::query_scalar("select run_id from absurd.claim_task('dlh', 'w', 60, 1)")
        .fetch_one(&mut *claim)
        .await
        .unwrap();
    let horizon = client.dead_letter_horizon("dlh").await.unwrap();
    claim.commit().await.unwrap();
    client
        .fail_run("dlh", run, &json!({"name": "Boom", "message": "x"}), None)
        .await
        .unwrap();
    client.ensure_queue("dlh-dlq").await.unwrap();
    let found = client
        .failed_tasks_since("dlh", "dlh-dlq", horizon, 10)
        .await
        .unwrap();
    let found: Vec<(Uuid, Uuid)> = found.iter().map(|t| (t.task_id, t.run_id)).collect();
    assert_eq!(found, vec![(task, run)], "horizon {horizon}");
}
