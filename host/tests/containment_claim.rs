//! A claim can never be poisoned (issue #14, part 3): rows written straight into the tables,
//! as another Absurd client (or plain SQL) could write them, fail only their own run, and
//! every other run of the batch and the queue proceeds. Each test runs a real worker process
//! on the fast claim path (`absurd.lease_<queue>`) and, where it matters, on `claim_task` (the
//! fast path dropped, as on a schema without it).

mod common;

use std::time::Duration;

use absurd_client::{Client, State, TaskFilter, TaskResult};
use serde_json::{json, Value};
use uuid::Uuid;

use common::{no_backoff, setup, temp_file, terminal, wait_for, WorkerProc};

const CONFIG: &str = r#"
[tasks.echo]
kind = "builtin"

[tasks.steps]
kind = "builtin"

[tasks.wait-event]
kind = "builtin"
"#;

/// JSON nested `depth` arrays deep: Postgres takes it, serde_json stops at 128.
fn deep_json(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

async fn exec(client: &Client, sql: &str, binds: &[&str]) {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(client.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Makes the worker use `claim_task`: without the queue's fast path it falls back to it.
async fn drop_fast_path(client: &Client, q: &str) {
    exec(
        client,
        &format!("drop function absurd.\"lease_{q}\"(text, integer, integer)"),
        &[],
    )
    .await;
    assert!(!client.has_fast_paths(q).await.unwrap());
}

async fn spawn(client: &Client, q: &str, task: &str, params: Value) -> Uuid {
    client
        .spawn(q, task, &params, &no_backoff(3))
        .await
        .unwrap()
        .task_id
}

fn worker(db_url: &str, q: &str) -> WorkerProc {
    let config = temp_file("absurd-host.toml", CONFIG);
    WorkerProc::start(db_url, &config, &["--queue", q, "--concurrency", "32"])
}

/// The task failed for good, once, with `name`; returns its message.
fn failed_permanently(r: &TaskResult, name: &str) -> String {
    assert_eq!(r.state, State::Failed, "{r:?}");
    let reason = r.failure_reason.as_ref().expect("a failure reason");
    assert_eq!(reason["name"], json!(name), "{reason}");
    assert_eq!(reason["retryable"], json!(false), "{reason}");
    reason["message"].as_str().unwrap_or_default().to_string()
}

/// How many runs the task has (read with SQL: its params may not decode).
async fn runs_of(client: &Client, q: &str, task: Uuid) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from absurd.\"r_{q}\" where task_id = $1"
    )))
    .bind(task)
    .fetch_one(client.pool())
    .await
    .unwrap()
}

/// Whether `task` was copied into the dead-letter queue `dlq`.
async fn dead_lettered(client: &Client, dlq: &str, task: Uuid) -> bool {
    if !client.queue_exists(dlq).await.unwrap() {
        return false;
    }
    let page = client
        .list_tasks(&TaskFilter {
            queue: Some(dlq.into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    for t in page.tasks {
        let d = client.get_task(dlq, t.task_id).await.unwrap().unwrap();
        if d.params["original_task_id"] == json!(task) {
            return true;
        }
    }
    false
}

/// One task with params 200 arrays deep among 20 ordinary ones, all claimable at once (one
/// claim batch): the 20 complete, the deep one fails alone, permanently, naming `params`.
async fn deep_params_fail_alone(fast: bool) {
    let q = if fast { "deepf" } else { "deepc" };
    let (db, client) = setup(q).await;
    if !fast {
        drop_fast_path(&client, q).await;
    }
    let deep = spawn(&client, q, "echo", json!({})).await;
    exec(
        &client,
        &format!("update absurd.\"t_{q}\" set params = $1::jsonb where task_id = $2::uuid"),
        &[&deep_json(200), &deep.to_string()],
    )
    .await;
    let mut ordinary = Vec::new();
    for i in 0..20 {
        ordinary.push(spawn(&client, q, "echo", json!({"i": i})).await);
    }
    let _w = worker(&db.url, q);
    for (i, id) in ordinary.iter().enumerate() {
        let r = terminal(&client, q, *id, Duration::from_secs(60)).await;
        assert_eq!(r.state, State::Completed, "{r:?}");
        assert_eq!(r.result, Some(json!({"i": i})));
    }
    let r = terminal(&client, q, deep, Duration::from_secs(60)).await;
    let msg = failed_permanently(&r, "$InvalidTaskData");
    assert!(
        msg.starts_with("params: recursion limit exceeded")
            && msg.contains("nested deeper than 128 levels"),
        "{msg}"
    );
    assert_eq!(runs_of(&client, q, deep).await, 1, "not retried");
    let dlq = format!("{q}-dlq");
    wait_for("the dead letter", Duration::from_secs(30), || async {
        dead_lettered(&client, &dlq, deep).await.then_some(())
    })
    .await;
}

#[tokio::test]
async fn deep_params_fail_alone_on_the_fast_path() {
    deep_params_fail_alone(true).await;
}

#[tokio::test]
async fn deep_params_fail_alone_on_claim_task() {
    deep_params_fail_alone(false).await;
}

/// Deep headers, a deep event payload (delivered by the claim that wakes the run, and by
/// `await_event` itself), a deep checkpoint and an over-limit event payload: each fails its own
/// run clearly; ordinary tasks beside them complete.
async fn deep_data_fails_alone(fast: bool) {
    let q = if fast { "dataf" } else { "datac" };
    let (db, client) = setup(q).await;
    if !fast {
        drop_fast_path(&client, q).await;
    }
    let deep = deep_json(200);

    let headers = spawn(&client, q, "echo", json!({"h": 1})).await;
    exec(
        &client,
        &format!("update absurd.\"t_{q}\" set headers = $1::jsonb where task_id = $2::uuid"),
        &[&deep, &headers.to_string()],
    )
    .await;

    // A checkpoint the `steps` builtin would replay.
    let checkpoint = spawn(&client, q, "steps", json!({"count": 2})).await;
    exec(
        &client,
        &format!(
            "insert into absurd.\"c_{q}\" (task_id, checkpoint_name, state, status) \
             values ($2::uuid, 'step', $1::jsonb, 'committed')"
        ),
        &[&deep, &checkpoint.to_string()],
    )
    .await;

    // An event emitted before its waiter runs: await_event returns the payload at once.
    exec(
        &client,
        &format!("select absurd.emit_event('{q}', 'early', $1::jsonb)"),
        &[&deep],
    )
    .await;
    let early = spawn(&client, q, "wait-event", json!({"event": "early"})).await;

    // Events emitted while their waiters sleep: the claim that wakes them carries the payload.
    let woken_deep = spawn(&client, q, "wait-event", json!({"event": "late-deep"})).await;
    let woken_big = spawn(&client, q, "wait-event", json!({"event": "late-big"})).await;

    let mut ordinary = Vec::new();
    for i in 0..5 {
        ordinary.push(spawn(&client, q, "echo", json!({"i": i})).await);
    }
    let _w = worker(&db.url, q);
    for id in [woken_deep, woken_big] {
        wait_for("the waiter to sleep", Duration::from_secs(30), || async {
            let t = client.get_task(q, id).await.unwrap().unwrap();
            (t.summary.state == State::Sleeping).then_some(())
        })
        .await;
    }
    exec(
        &client,
        &format!("select absurd.emit_event('{q}', 'late-deep', $1::jsonb)"),
        &[&deep],
    )
    .await;
    // 2 MiB, over the default max_event_payload_bytes (1 MiB).
    exec(
        &client,
        &format!(
            "select absurd.emit_event('{q}', 'late-big', to_jsonb(repeat('x', 2 * 1024 * 1024)))"
        ),
        &[],
    )
    .await;
    let after = spawn(&client, q, "echo", json!({"after": true})).await;

    for id in ordinary.iter().chain([&after]) {
        let r = terminal(&client, q, *id, Duration::from_secs(60)).await;
        assert_eq!(r.state, State::Completed, "{r:?}");
    }
    let cases = [
        (
            headers,
            "$InvalidTaskData",
            "headers: recursion limit exceeded",
        ),
        (
            checkpoint,
            "$InvalidTaskData",
            "checkpoint \"step\": recursion limit exceeded",
        ),
        (
            early,
            "$InvalidTaskData",
            "the event payload: recursion limit exceeded",
        ),
        (
            woken_deep,
            "$InvalidTaskData",
            "event_payload: recursion limit exceeded",
        ),
        (
            woken_big,
            "$LimitExceeded",
            "the event payload is 2097154 bytes; the limit is 1048576 (max_event_payload_bytes)",
        ),
    ];
    for (id, name, start) in cases {
        let r = terminal(&client, q, id, Duration::from_secs(60)).await;
        let msg = failed_permanently(&r, name);
        assert!(msg.starts_with(start), "{start:?}: {msg}");
        assert_eq!(runs_of(&client, q, id).await, 1, "{start:?}: not retried");
    }
}

#[tokio::test]
async fn deep_headers_payloads_and_checkpoints_fail_alone_on_the_fast_path() {
    deep_data_fails_alone(true).await;
}

#[tokio::test]
async fn deep_headers_payloads_and_checkpoints_fail_alone_on_claim_task() {
    deep_data_fails_alone(false).await;
}

/// Three 90 MB checkpoints (270 MB, over Postgres' 256 MiB jsonb cap if aggregated) on one
/// claimable task, and five 15 MiB ones (each within max_checkpoint_bytes, 75 MiB together)
/// on another: an ordinary task beside them completes promptly, the expired lease of a dead
/// worker is still swept, and the two fail alone, permanently, naming their limits.
#[tokio::test]
async fn huge_checkpoints_do_not_stall_the_queue() {
    let q = "huge";
    let (db, client) = setup(q).await;

    // A run leased by a worker that died: the next claim's sweep must fail it and retry it.
    let orphan = spawn(&client, q, "echo", json!({"orphan": true})).await;
    let leased = client.claim(q, "w-dead", 1, 1).await.unwrap();
    assert_eq!(leased[0].task_id, orphan);

    let huge = spawn(&client, q, "steps", json!({"count": 3})).await;
    let many = spawn(&client, q, "steps", json!({"count": 5})).await;
    for (task, count, mib) in [(huge, 3, 90), (many, 5, 15)] {
        exec(
            &client,
            &format!(
                "insert into absurd.\"c_{q}\" (task_id, checkpoint_name, state, status) \
                 select $1::uuid, case when i = 1 then 'step' else 'step#' || i end, \
                        to_jsonb(repeat('x', {mib} * 1024 * 1024)), 'committed' \
                 from generate_series(1, {count}) i"
            ),
            &[&task.to_string()],
        )
        .await;
    }
    let ordinary = spawn(&client, q, "echo", json!({"ordinary": true})).await;

    let _w = worker(&db.url, q);
    let r = terminal(&client, q, ordinary, Duration::from_secs(30)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");

    let r = terminal(&client, q, huge, Duration::from_secs(60)).await;
    let msg = failed_permanently(&r, "$LimitExceeded");
    assert_eq!(
        msg,
        "checkpoint \"step\" is 94371842 bytes; the limit is 16777216 (max_checkpoint_bytes)"
    );
    let r = terminal(&client, q, many, Duration::from_secs(60)).await;
    let msg = failed_permanently(&r, "$LimitExceeded");
    assert_eq!(
        msg,
        "the total of the task's checkpoints is 78643210 bytes; the limit is 67108864 \
         (max_checkpoint_total_bytes)"
    );

    let r = terminal(&client, q, orphan, Duration::from_secs(60)).await;
    assert_eq!(r.state, State::Completed, "{r:?}");
    let t = client.get_task(q, orphan).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 2);
    assert_eq!(
        t.runs[0].failure_reason.as_ref().unwrap()["name"],
        json!("$ClaimTimeout")
    );
}
