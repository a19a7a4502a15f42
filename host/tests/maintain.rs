//! Maintenance without pg_cron: `absurd-host maintain` (retention per final state, dry run,
//! bounded batches) against a moved clock (`absurd.fake_now`, given to the command through
//! `PGOPTIONS`) and the real one, and the elected maintaining worker with its take-over.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{setup, temp_file, wait_for, WorkerProc};
use serde_json::Value;
use sqlx::PgPool;

fn maintain(db_url: &str, args: &[&str], fake_now: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_absurd-host"));
    cmd.arg("maintain")
        .arg("--database-url")
        .arg(db_url)
        .args(args)
        .env_remove("ABSURD_DATABASE_URL")
        .env_remove("ABSURD_HOST_CONFIG")
        .env_remove("PGOPTIONS");
    if let Some(t) = fake_now {
        cmd.env("PGOPTIONS", format!("-c absurd.fake_now={t}"));
    }
    cmd.output().expect("run absurd-host maintain")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "maintain failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("maintain --json prints JSON")
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn tasks_in_state(pool: &PgPool, queue: &str, state: &str) -> i64 {
    count(
        pool,
        &format!("select count(*) from absurd.\"t_{queue}\" where state = '{state}'"),
    )
    .await
}

/// The database's time `days` from now, as `absurd.fake_now` takes it.
async fn days_from_now(pool: &PgPool, days: i64) -> String {
    sqlx::query_scalar(
        "select to_char((now() + make_interval(days => $1::int)) at time zone 'UTC',
                        'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .bind(days as i32)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// `completed` completed, `failed` failed and `cancelled` cancelled tasks, one pending, and
/// `events` emitted events, all finished at the real time now.
async fn workload(
    pool: &PgPool,
    queue: &str,
    completed: usize,
    failed: usize,
    cancelled: usize,
    events: usize,
) {
    for i in 0..completed + failed {
        sqlx::query(
            "select absurd.spawn_task($1, 'job', jsonb_build_object('i', $2::int), '{\"max_attempts\": 1}')",
        )
        .bind(queue)
        .bind(i as i32)
        .execute(pool)
        .await
        .unwrap();
    }
    let runs: Vec<uuid::Uuid> =
        sqlx::query_scalar("select run_id from absurd.claim_task($1, 'test-worker', 60, $2::int)")
            .bind(queue)
            .bind((completed + failed) as i32)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(runs.len(), completed + failed);
    for (i, run) in runs.iter().enumerate() {
        let sql = if i < completed {
            "select absurd.complete_run($1, $2, '{\"ok\": true}')"
        } else {
            "select absurd.fail_run($1, $2, '{\"name\": \"boom\", \"message\": \"x\"}', null)"
        };
        sqlx::query(sql)
            .bind(queue)
            .bind(run)
            .execute(pool)
            .await
            .unwrap();
    }
    for _ in 0..cancelled {
        let id: uuid::Uuid =
            sqlx::query_scalar("select task_id from absurd.spawn_task($1, 'job', '{}', '{}')")
                .bind(queue)
                .fetch_one(pool)
                .await
                .unwrap();
        sqlx::query("select absurd.cancel_task($1, $2)")
            .bind(queue)
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
    }
    sqlx::query("select absurd.spawn_task($1, 'waiting', '{}', '{}')")
        .bind(queue)
        .execute(pool)
        .await
        .unwrap();
    for i in 0..events {
        sqlx::query("select absurd.emit_event($1, $2, '{}')")
            .bind(queue)
            .bind(format!("ev-{i}"))
            .execute(pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn retention_per_state_on_a_moved_clock_with_a_dry_run_first() {
    let (db, _client) = setup("mq").await;
    let pool = &db.pool;
    workload(pool, "mq", 5, 3, 2, 2).await;
    assert_eq!(tasks_in_state(pool, "mq", "completed").await, 5);
    assert_eq!(tasks_in_state(pool, "mq", "failed").await, 3);
    assert_eq!(tasks_in_state(pool, "mq", "cancelled").await, 2);
    let runs_before = count(pool, "select count(*) from absurd.\"r_mq\"").await;

    // Two days later: completed tasks (1 day) are due, failed ones (3 days) are not yet.
    let in_two_days = days_from_now(pool, 2).await;
    let dry = json_of(&maintain(
        &db.url,
        &[
            "--completed-days",
            "1",
            "--failed-days",
            "3",
            "--dry-run",
            "--json",
        ],
        Some(&in_two_days),
    ));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["queues"]["mq"]["completed"], 5, "{dry}");
    assert_eq!(dry["queues"]["mq"]["failed"], 0, "{dry}");
    assert_eq!(
        dry["totals"]["cancelled"], 0,
        "no retention given for them: {dry}"
    );
    // Nothing changed, and nothing was recorded.
    assert_eq!(tasks_in_state(pool, "mq", "completed").await, 5);
    assert_eq!(
        count(pool, "select count(*) from absurd.\"r_mq\"").await,
        runs_before
    );
    assert_eq!(
        count(pool, "select count(*) from absurd.maintenance_runs").await,
        0
    );

    // The real pass, in batches of 2 (three statements for five tasks).
    let done = json_of(&maintain(
        &db.url,
        &[
            "--completed-days",
            "1",
            "--failed-days",
            "3",
            "--batch-size",
            "2",
            "--json",
        ],
        Some(&in_two_days),
    ));
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["totals"]["completed"], 5, "{done}");
    assert_eq!(done["totals"]["failed"], 0, "{done}");
    assert_eq!(done["unfinished"], serde_json::json!([]));
    assert_eq!(tasks_in_state(pool, "mq", "completed").await, 0);
    assert_eq!(tasks_in_state(pool, "mq", "failed").await, 3);
    // Their runs went with them.
    assert_eq!(
        count(pool, "select count(*) from absurd.\"r_mq\"").await,
        runs_before - 5
    );
    let recorded: Value = sqlx::query_scalar("select report from absurd.maintenance_runs")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(recorded["totals"]["completed"], 5);

    // Four days later, with every kind given: the failed, cancelled and events go; the
    // pending task stays whatever its age.
    let in_four_days = days_from_now(pool, 4).await;
    let out = maintain(
        &db.url,
        &[
            "--failed-days",
            "3",
            "--cancelled-days",
            "3",
            "--events-days",
            "3",
        ],
        Some(&in_four_days),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("deleted: 5 tasks (0 completed, 3 failed, 2 cancelled) and 2 events"),
        "{text}"
    );
    assert_eq!(tasks_in_state(pool, "mq", "failed").await, 0);
    assert_eq!(tasks_in_state(pool, "mq", "cancelled").await, 0);
    assert_eq!(tasks_in_state(pool, "mq", "pending").await, 1);
    assert_eq!(count(pool, "select count(*) from absurd.\"e_mq\"").await, 0);
}

#[tokio::test]
async fn max_batches_bounds_one_pass_and_the_next_goes_on() {
    let (db, _client) = setup("mb").await;
    let pool = &db.pool;
    workload(pool, "mb", 7, 0, 0, 0).await;
    let config = temp_file(
        "absurd-host.toml",
        "[maintenance]\nbatch_size = 2\nmax_batches = 2\n[maintenance.retention]\ncompleted = 0\n",
    );
    let args = ["--config", config.to_str().unwrap(), "--json"];
    let first = json_of(&maintain(&db.url, &args, None));
    assert_eq!(first["totals"]["completed"], 4, "{first}");
    assert_eq!(first["unfinished"], serde_json::json!(["mb: completed"]));
    assert_eq!(tasks_in_state(pool, "mb", "completed").await, 3);
    let second = json_of(&maintain(&db.url, &args, None));
    assert_eq!(second["totals"]["completed"], 3, "{second}");
    assert_eq!(second["unfinished"], serde_json::json!([]));
    assert_eq!(tasks_in_state(pool, "mb", "completed").await, 0);
}

#[tokio::test]
async fn bad_retention_is_refused_by_name_and_changes_nothing() {
    let (db, _client) = setup("mbad").await;
    workload(&db.pool, "mbad", 2, 0, 0, 0).await;
    for (args, needle) in [
        (&["--completed-days", "seven"][..], "\"seven\""),
        (&["--completed-days", "-1"][..], "-1"),
        (
            &["--completed-days", "0", "--batch-size", "0"][..],
            "batch_size = 0",
        ),
        (&[][..], "no retention given"),
    ] {
        let out = maintain(&db.url, args, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let config = temp_file(
        "absurd-host.toml",
        "[maintenance]\n[maintenance.retention]\ncompleted = \"7d\"\n",
    );
    let out = maintain(&db.url, &["--config", config.to_str().unwrap()], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[maintenance]") && err.contains("7d"), "{err}");
    assert_eq!(tasks_in_state(&db.pool, "mbad", "completed").await, 2);
}

/// The SQL functions check their own arguments too (for other clients), naming the value.
#[tokio::test]
async fn the_sql_functions_refuse_bad_arguments_by_name() {
    let (db, _client) = setup("msql").await;
    for (sql, needle) in [
        (
            "select absurd.cleanup_tasks_in_state('msql', 'pending', 0, 10)",
            "not 'pending'",
        ),
        (
            "select absurd.cleanup_tasks_in_state('msql', 'failed', -5, 10)",
            "not -5",
        ),
        (
            "select absurd.cleanup_tasks_in_state('msql', 'failed', 0, 100001)",
            "not 100001",
        ),
        (
            "select absurd.count_cleanup_candidates('msql', null, 0)",
            "not null",
        ),
        (
            "select absurd.count_event_cleanup_candidates('msql', -1)",
            "not -1",
        ),
    ] {
        let err = sqlx::query(sql).execute(&db.pool).await.unwrap_err();
        assert!(err.to_string().contains(needle), "{sql}: {err}");
    }
    assert_eq!(
        count(
            &db.pool,
            "select absurd.count_event_cleanup_candidates('msql', 0)"
        )
        .await,
        0
    );
}

/// On a schema `absurdctl init` installed, the command says what to do instead.
#[tokio::test]
async fn an_upstream_schema_is_refused_with_the_way_out() {
    let db = common::TestDb::upstream().await;
    let out = maintain(&db.url, &["--completed-days", "1"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("absurdctl cleanup") && err.contains("0018"),
        "{err}"
    );
}

/// Two workers are candidates: exactly one maintains at a time; when it dies, the other
/// takes over.
#[tokio::test]
async fn one_worker_maintains_and_another_takes_over_when_it_dies() {
    let (db, client) = setup("lead").await;
    let pool = &db.pool;
    let config = temp_file(
        "absurd-host.toml",
        "[tasks.echo]\nkind = \"builtin\"\n\n\
         [maintenance]\nenabled = true\ninterval = 1\n[maintenance.retention]\ncompleted = 0\n",
    );
    let start = |id: &str| {
        WorkerProc::start(
            &db.url,
            &config,
            &["--queue", "lead", "--worker-id", id, "--concurrency", "2"],
        )
    };
    let mut a = start("worker-a");
    let mut b = start("worker-b");
    let leader = wait_for("a maintenance pass", Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, String>(
            "select worker_id from absurd.maintenance_runs order by run_id limit 1",
        )
        .fetch_optional(pool)
        .await
        .unwrap()
    })
    .await;
    // Several passes later, every one was the same worker's.
    wait_for("three passes", Duration::from_secs(60), || async {
        (count(pool, "select count(*) from absurd.maintenance_runs").await >= 3).then_some(())
    })
    .await;
    assert_eq!(
        count(
            pool,
            "select count(distinct worker_id) from absurd.maintenance_runs"
        )
        .await,
        1
    );
    // Completed tasks are deleted by the leader's passes, in every queue (this one has no
    // worker, so that the workload's own claims are not raced).
    client.create_queue("ldata").await.unwrap();
    workload(pool, "ldata", 3, 0, 0, 0).await;
    wait_for(
        "completed tasks deleted",
        Duration::from_secs(60),
        || async { (tasks_in_state(pool, "ldata", "completed").await == 0).then_some(()) },
    )
    .await;

    // Kill the leader outright (no clean release): its session ends, the other takes over.
    let (dead, survivor) = if leader == "worker-a" {
        (&mut a, "worker-b")
    } else {
        (&mut b, "worker-a")
    };
    dead.signal(9);
    assert!(dead.wait_exit(Duration::from_secs(10)).is_some());
    wait_for(
        "the other worker's pass",
        Duration::from_secs(90),
        || async {
            (count(
                pool,
                &format!(
                    "select count(*) from absurd.maintenance_runs where worker_id = '{survivor}'"
                ),
            )
            .await
                > 0)
            .then_some(())
        },
    )
    .await;
}

// ---- partitioned queues: future weeks created, old empty weeks detached and dropped ----------

/// A client on one connection whose session clock is frozen at `at`.
async fn client_at(db_url: &str, at: &str) -> absurd_client::Client {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(db_url)
        .await
        .unwrap();
    sqlx::query("select set_config('absurd.fake_now', $1, false)")
        .bind(at)
        .execute(&pool)
        .await
        .unwrap();
    absurd_client::Client::new(pool)
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

async fn tables_like(pool: &PgPool, pattern: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select relname::text from pg_class where relnamespace = 'absurd'::regnamespace \
         and relkind = 'r' and relname like $1 order by 1",
    )
    .bind(pattern)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn partitions_follow_the_policy_on_a_moved_clock() {
    use absurd_client::partitions::{QueuePolicyUpdate, StorageMode};
    let (db, _) = setup("plain-q").await;
    // Monday 2024-03-04: the queue gets the weeks 409 (one day back) to 414 (28 days ahead).
    let t0 = "2024-03-04T12:00:00Z";
    let c0 = client_at(&db.url, t0).await;
    c0.create_queue_with_mode("mq", StorageMode::Partitioned)
        .await
        .unwrap();
    c0.set_queue_policy(
        "mq",
        &QueuePolicyUpdate {
            detach_mode: Some("empty".into()),
            detach_min_age: Some("7 days".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // A cancelled task (for retention, which works the same on partitioned queues) ...
    let gone = c0
        .spawn(
            "mq",
            "job",
            &serde_json::json!({}),
            &absurd_client::SpawnOptions {
                idempotency_key: Some("k".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    c0.cancel_task("mq", gone.task_id).await.unwrap();
    // ... and one pending task in the week of t0 (410): its t_ and r_ weeks are never
    // candidates.
    c0.spawn(
        "mq",
        "job",
        &serde_json::json!({}),
        &absurd_client::SpawnOptions::default(),
    )
    .await
    .unwrap();
    let before = tables_like(&db.pool, "%mq%").await;
    assert!(before.contains(&"t_mq_410".to_string()), "{before:?}");

    // 2024-05-13 (ten weeks on), dry: future weeks 419..424 would be created; the empty weeks
    // ending before 2024-05-06 would be detached and dropped. Nothing changes, and no
    // retention is needed for a partitioned queue to have work.
    let t1 = "2024-05-13T12:00:00Z";
    let dry = json_of(&maintain(&db.url, &["--json", "--dry-run"], Some(t1)));
    let work = &dry["partitions"]["mq"];
    let created = names(&work["created"]);
    assert!(created.contains(&"t_mq_420".to_string()), "{dry}");
    assert!(created.contains(&"w_mq_424".to_string()), "{dry}");
    assert!(!created.iter().any(|t| t.ends_with("_410")), "{dry}");
    let detached = names(&work["detached"]);
    for t in ["t_mq_409", "c_mq_410", "w_mq_410", "r_mq_414", "t_mq_414"] {
        assert!(detached.contains(&t.to_string()), "{t}: {dry}");
    }
    for t in ["t_mq_410", "r_mq_410"] {
        assert!(!detached.contains(&t.to_string()), "{t} holds rows: {dry}");
    }
    assert_eq!(names(&work["dropped"]), detached, "{dry}");
    assert!(dry["partitions"].get("plain-q").is_none(), "{dry}");
    assert_eq!(
        tables_like(&db.pool, "%mq%").await,
        before,
        "a dry run changes nothing"
    );

    // The real pass does what the dry one said, and deletes the cancelled task (freeing its
    // idempotency key).
    let done = json_of(&maintain(
        &db.url,
        &["--json", "--cancelled-days", "7"],
        Some(t1),
    ));
    assert_eq!(done["queues"]["mq"]["cancelled"], 1, "{done}");
    assert_eq!(count(&db.pool, "select count(*) from absurd.t_mq").await, 1);
    assert_eq!(count(&db.pool, "select count(*) from absurd.i_mq").await, 0);
    let work = &done["partitions"]["mq"];
    assert_eq!(names(&work["created"]), created, "{done}");
    assert_eq!(names(&work["detached"]), detached, "{done}");
    assert_eq!(names(&work["dropped"]), detached, "{done}");
    let after = tables_like(&db.pool, "%mq%").await;
    for t in &created {
        assert!(after.contains(t), "{t} created: {after:?}");
    }
    for t in &detached {
        assert!(!after.contains(t), "{t} dropped: {after:?}");
    }
    for t in ["t_mq_410", "r_mq_410", "t_mq_d"] {
        assert!(after.contains(&t.to_string()), "{t} kept: {after:?}");
    }

    // Again: nothing left to do. A week detached by hand that holds rows is kept.
    sqlx::raw_sql("alter table absurd.t_mq detach partition absurd.t_mq_410")
        .execute(&db.pool)
        .await
        .unwrap();
    let again = json_of(&maintain(&db.url, &["--json"], Some(t1)));
    let work = &again["partitions"]["mq"];
    assert!(names(&work["created"]).is_empty(), "{again}");
    assert!(names(&work["detached"]).is_empty(), "{again}");
    assert!(names(&work["dropped"]).is_empty(), "{again}");
    assert_eq!(
        names(&work["kept"]),
        vec!["t_mq_410".to_string()],
        "{again}"
    );
    assert_eq!(tables_like(&db.pool, "t_mq_410").await.len(), 1);

    // The text report says the same.
    let text = maintain(&db.url, &["--dry-run"], Some(t1));
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("detached partitions of mq kept (they hold rows): t_mq_410"),
        "{text}"
    );
}
