//! The admin command line against real databases: migrate, schema-version, queue, task and
//! event commands, in text and `--json`.

mod common;

use std::process::{Command, Output};

use common::TestDb;
use serde_json::Value;

fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args(args)
        .args(["--database-url", url])
        .env_remove("ABSURD_DATABASE_URL")
        .env_remove("ABSURD_QUEUE_NAME")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(url: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&ok(&cli(url, &a))).unwrap()
}

#[tokio::test]
async fn migrate_is_idempotent_and_dump_sql_installs_the_same_schema() {
    let db = TestDb::empty().await;
    let first = ok(&cli(&db.url, &["migrate"]));
    assert!(
        first.contains("applied migration 1") && first.contains("absurd 0.5.1"),
        "{first}"
    );
    let again = ok(&cli(&db.url, &["migrate"]));
    assert!(again.contains("up to date"), "{again}");
    assert_eq!(ok(&cli(&db.url, &["schema-version"])).trim(), "0.5.1");

    // The dump is one transaction that psql applies to an empty database.
    let dump = ok(&cli(&db.url, &["migrate", "--dump-sql"]));
    let other = TestDb::empty().await;
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &other.url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(dump.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok(&cli(&other.url, &["schema-version"])).trim(), "0.5.1");
}

#[tokio::test]
async fn migrate_refuses_a_schema_installed_by_absurdctl() {
    let db = TestDb::upstream().await;
    let out = cli(&db.url, &["migrate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not install") && err.contains("absurdctl init"),
        "{err}"
    );
    // Nothing was written.
    let history: bool =
        sqlx::query_scalar("select to_regclass('absurd.absurd_host_migrations') is not null")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(!history);
}

/// `migrate --adopt-seed` on a database built with the seed's own table: one transaction
/// (a bad row leaves everything as it was), a dry run that changes nothing, the unfinished
/// tasks carried over with their params and attempt counts into their queues, the finished
/// ones kept read-only, and a second run that carries and copies nothing twice.
#[tokio::test]
async fn migrate_adopt_seed_carries_the_seeds_tasks_over_once() {
    use common::seed_task;
    use serde_json::json;
    let db = TestDb::seed().await;
    let url = db.url.as_str();
    let p = &db.pool;
    let pending = seed_task(
        p,
        "dsa110-pipeline",
        "calibration-solve",
        json!({"inputs": {"ms_path": "/data/a.ms"}}),
        5,
        Some(120),
        "pending",
        0,
        None,
        None,
    )
    .await;
    let retrying = seed_task(
        p,
        "dsa110-pipeline",
        "imaging",
        json!({"n": 2}),
        0,
        None,
        "retrying",
        2,
        None,
        Some("first try failed"),
    )
    .await;
    let claimed = seed_task(
        p,
        "dsa110-pipeline",
        "conversion",
        json!({"n": 3}),
        0,
        None,
        "claimed",
        1,
        None,
        None,
    )
    .await;
    let odd_timeout = seed_task(
        p,
        "housekeeping",
        "session-cleanup",
        json!({}),
        0,
        Some(0),
        "pending",
        0,
        None,
        None,
    )
    .await;
    let done = seed_task(
        p,
        "dsa110-pipeline",
        "calibration-solve",
        json!({"n": 5}),
        0,
        None,
        "completed",
        1,
        Some(json!({"status": "success", "outputs": {"x": 1}})),
        None,
    )
    .await;
    let failed = seed_task(
        p,
        "dsa110-pipeline",
        "imaging",
        json!({"n": 6}),
        0,
        Some(60),
        "failed",
        1,
        None,
        Some("Validation failed: MS not found"),
    )
    .await;
    seed_task(
        p,
        "old-queue",
        "imaging",
        json!({"n": 7}),
        0,
        None,
        "cancelled",
        0,
        None,
        None,
    )
    .await;
    let seed_count = |schema: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "select count(*) from {schema}.tasks"
        )))
        .fetch_one(p)
        .await
        .unwrap()
    };
    let regclass = |name: &'static str| async move {
        sqlx::query_scalar::<_, bool>("select to_regclass($1) is not null")
            .bind(name)
            .fetch_one(p)
            .await
            .unwrap()
    };

    // A row no Absurd task can hold stops it all, named, and nothing is changed.
    let bad = seed_task(
        p,
        &"q".repeat(60),
        "imaging",
        json!({}),
        0,
        None,
        "pending",
        0,
        None,
        None,
    )
    .await;
    let out = cli(url, &["migrate", "--adopt-seed"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(&bad.to_string()) && e.contains("the limit is 57"),
        "{e}"
    );
    assert_eq!(seed_count("absurd").await, 8, "the seed is where it was");
    assert!(
        !regclass("absurd.absurd_host_migrations").await && !regclass("absurd_seed.tasks").await
    );
    sqlx::query("delete from absurd.tasks where task_id = $1")
        .bind(bad)
        .execute(p)
        .await
        .unwrap();

    // The dry run reports what a run does, and changes nothing.
    let dry = json(url, &["migrate", "--adopt-seed", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["renamed"], true);
    assert_eq!(dry["carried_total"], 4, "{dry}");
    assert_eq!(dry["history_copied"], 3, "{dry}");
    assert_eq!(seed_count("absurd").await, 7);
    assert!(
        !regclass("absurd.absurd_host_migrations").await && !regclass("absurd_seed.tasks").await
    );

    let r = json(url, &["migrate", "--adopt-seed"]);
    assert_eq!(r["dry_run"], false);
    assert_eq!(r["renamed"], true);
    assert_eq!(r["seed_schema"], "absurd_seed");
    assert_eq!(r["schema_version"], "0.5.1");
    assert!(
        r["migrations_applied"].as_array().unwrap().len() >= 14,
        "{r}"
    );
    assert_eq!(
        r["seed_tasks"],
        json!({"pending": 2, "retrying": 1, "claimed": 1, "completed": 1, "failed": 1, "cancelled": 1})
    );
    assert_eq!(
        r["queues_created"],
        json!(["dsa110-pipeline", "housekeeping"])
    );
    assert_eq!(
        r["carried"],
        json!([
            {"queue_name": "dsa110-pipeline", "pending": 1, "claimed": 1, "retrying": 1},
            {"queue_name": "housekeeping", "pending": 1, "claimed": 0, "retrying": 0}
        ])
    );
    assert_eq!(r["carried_total"], 4);
    assert_eq!(r["already_carried"], 0);
    assert_eq!(r["timeouts_dropped"], json!([odd_timeout]));
    assert_eq!(
        (r["history_copied"].as_i64(), r["history_already"].as_i64()),
        (Some(3), Some(0))
    );
    // The seed's table is aside, whole.
    assert_eq!(seed_count("absurd_seed").await, 7);
    assert_eq!(ok(&cli(url, &["schema-version"])).trim(), "0.5.1");

    // Each carried task: same name and params, its attempts counted on, its timeout_sec kept.
    let client = absurd_client::Client::new(db.pool.clone());
    let carried: Vec<(uuid::Uuid, String, uuid::Uuid)> =
        sqlx::query_as("select seed_task_id, queue_name, task_id from absurd.seed_carried")
            .fetch_all(p)
            .await
            .unwrap();
    assert_eq!(carried.len(), 4);
    let new_id = |seed: uuid::Uuid| carried.iter().find(|c| c.0 == seed).unwrap().2.to_string();
    let t = json(url, &["task", "get", &new_id(pending)]);
    assert_eq!(t["task_name"], "calibration-solve");
    assert_eq!(t["queue_name"], "dsa110-pipeline");
    assert_eq!(t["params"], json!({"inputs": {"ms_path": "/data/a.ms"}}));
    assert_eq!(t["status"], "pending");
    assert_eq!(
        (t["attempts"].as_i64(), t["max_attempts"].as_i64()),
        (Some(1), Some(4))
    );
    assert_eq!(t["timeout_sec"], 120);
    assert_eq!(t["headers"]["seed"]["task_id"], json!(pending));
    assert_eq!(t["headers"]["seed"]["priority"], 5);
    let t = json(url, &["task", "get", &new_id(retrying)]);
    assert_eq!(
        (t["attempts"].as_i64(), t["retry_count"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(t["headers"]["seed"]["status"], "retrying");
    let t = json(url, &["task", "get", &new_id(claimed)]);
    assert_eq!(t["attempts"], 2, "the abandoned claim counts as an attempt");
    assert_eq!(t["headers"]["seed"]["worker_id"], "seed-worker-1");
    let t = json(url, &["task", "get", &new_id(odd_timeout)]);
    assert_eq!(t["timeout_sec"], serde_json::Value::Null);
    // A worker claims them in the seed's order (priority first), at their next attempt.
    let runs = client.claim("dsa110-pipeline", "w", 30, 3).await.unwrap();
    assert_eq!(runs[0].task_id.to_string(), new_id(pending));
    let attempt_of = |seed| {
        runs.iter()
            .find(|r| r.task_id.to_string() == new_id(seed))
            .unwrap()
            .attempt
    };
    assert_eq!((attempt_of(retrying), attempt_of(claimed)), (3, 2));

    // The finished ones are in the read-only history.
    let (status, error): (String, Option<String>) =
        sqlx::query_as("select status, error from absurd.seed_history where task_id = $1")
            .bind(failed)
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("failed", Some("Validation failed: MS not found"))
    );
    let e = sqlx::query("update absurd.seed_history set status = 'completed' where task_id = $1")
        .bind(done)
        .execute(p)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    let e = sqlx::query("delete from absurd.seed_history")
        .execute(p)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");

    // Again: nothing twice, even after a carried task was finished and cleaned up.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "delete from absurd.t_housekeeping where task_id = '{}'",
        new_id(odd_timeout)
    )))
    .execute(p)
    .await
    .unwrap();
    let again = json(url, &["migrate", "--adopt-seed"]);
    assert_eq!(again["renamed"], false);
    assert_eq!(again["migrations_applied"], json!([]));
    assert_eq!(
        (
            again["carried_total"].as_i64(),
            again["already_carried"].as_i64()
        ),
        (Some(0), Some(4))
    );
    assert_eq!(
        (
            again["history_copied"].as_i64(),
            again["history_already"].as_i64()
        ),
        (Some(0), Some(3))
    );
    let text = ok(&cli(url, &["migrate", "--adopt-seed"]));
    assert!(
        text.contains("already `absurd_seed`") && text.contains("earlier run: 4"),
        "{text}"
    );
    let n: i64 = sqlx::query_scalar("select count(*) from absurd.t_housekeeping")
        .fetch_one(p)
        .await
        .unwrap();
    assert_eq!(n, 0, "the cleaned-up task is not carried again");
    // Plain migrate accepts the adopted database.
    assert!(ok(&cli(url, &["migrate"])).contains("up to date"));
}

/// `--adopt-seed` refuses a database with no seed in it, and one installed by `absurdctl init`.
#[tokio::test]
async fn migrate_adopt_seed_refuses_what_is_not_the_seed() {
    let db = TestDb::migrated().await;
    let out = cli(&db.url, &["migrate", "--adopt-seed", "--dry-run"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("no seed database to adopt"), "{e}");
    let db = TestDb::upstream().await;
    let out = cli(&db.url, &["migrate", "--adopt-seed"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("did not install"), "{e}");
    let out = cli(&db.url, &["migrate", "--dry-run"]);
    assert!(!out.status.success(), "--dry-run needs --adopt-seed");
}

#[tokio::test]
async fn task_and_event_commands_cover_a_task_lifecycle() {
    let db = TestDb::migrated().await;
    let url = db.url.as_str();
    assert!(ok(&cli(url, &["queue", "create", "jobs"])).contains("\"jobs\" is ready"));
    assert_eq!(json(url, &["queue", "list"]), serde_json::json!(["jobs"]));

    let s = json(
        url,
        &[
            "task",
            "spawn",
            "echo",
            "-q",
            "jobs",
            "--params",
            r#"{"x":1}"#,
            "-P",
            "y:=2",
            "-H",
            "trace=abc",
            "--idempotency-key",
            "k1",
        ],
    );
    assert_eq!(s["created"], true);
    let id = s["task_id"].as_str().unwrap().to_string();
    let again = json(
        url,
        &[
            "task",
            "spawn",
            "echo",
            "-q",
            "jobs",
            "--idempotency-key",
            "k1",
        ],
    );
    assert_eq!(again["task_id"], id.as_str());
    assert_eq!(again["created"], false);

    // Defaults: max_attempts = ABSURD_MAX_RETRIES + 1, exponential back-off.
    let t = json(url, &["task", "get", &id]);
    assert_eq!(t["params"], serde_json::json!({"x": 1, "y": 2}));
    assert_eq!(t["headers"], serde_json::json!({"trace": "abc"}));
    assert_eq!(t["max_attempts"], 4);
    assert_eq!(t["retry_strategy"]["kind"], "exponential");
    assert_eq!(t["queue_name"], "jobs");
    assert_eq!(t["timeout_sec"], Value::Null);

    // A task's own timeout: the `timeout_sec` header, shown by `task get`.
    ok(&cli(url, &["queue", "create", "tmo"]));
    let s = json(
        url,
        &[
            "task",
            "spawn",
            "echo",
            "-q",
            "tmo",
            "--timeout-sec",
            "90",
            "-H",
            "trace=t",
        ],
    );
    let tid = s["task_id"].as_str().unwrap().to_string();
    let tt = json(url, &["task", "get", &tid]);
    assert_eq!(tt["timeout_sec"], 90);
    assert_eq!(
        tt["headers"],
        serde_json::json!({"trace": "t", "timeout_sec": 90})
    );
    assert!(ok(&cli(url, &["task", "get", &tid])).contains("timeout 90 s"));
    let text = ok(&cli(url, &["task", "get", &id]));
    assert!(
        text.contains("state pending") && text.contains("attempts 1/4"),
        "{text}"
    );

    let page = json(url, &["task", "list", "-q", "jobs", "--state", "pending"]);
    assert_eq!(page["total"], 1);

    // A worker's part, done by hand: claim and fail for good, then retry from the CLI.
    let client = absurd_client::Client::new(db.pool.clone());
    let run = client.claim("jobs", "w", 30, 1).await.unwrap().remove(0);
    // The DSA-110 pipeline's name for a running task.
    let claimed = json(url, &["task", "list", "-q", "jobs", "--state", "claimed"]);
    assert_eq!(claimed["total"], 1, "{claimed}");
    assert_eq!(claimed["tasks"][0]["task_id"], id.as_str());
    let retrying = json(url, &["task", "list", "-q", "jobs", "--state", "retrying"]);
    assert_eq!(retrying["total"], 0, "{retrying}");
    sqlx::query("update absurd.t_jobs set max_attempts = 1")
        .execute(&db.pool)
        .await
        .unwrap();
    client
        .fail_run(
            "jobs",
            run.run_id,
            &serde_json::json!({"name": "E", "message": "boom"}),
            None,
        )
        .await
        .unwrap();
    let r = json(url, &["task", "result", &id]);
    assert_eq!(r["state"], "failed");
    assert_eq!(r["failure_reason"]["message"], "boom");
    let new = json(url, &["task", "retry", &id, "--spawn-new"]);
    assert_eq!(new["created"], true);
    let retried = json(url, &["task", "retry", &id]);
    assert_eq!(retried["attempt"], 2);
    assert_eq!(retried["created"], false);
    let out = cli(url, &["task", "retry", &id]);
    assert!(!out.status.success(), "retrying a pending task is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not currently failed"));
    assert_eq!(new["created"], true);

    // Cancel the new copy, so that the retried original is the only claimable task.
    // `--json` prints the API's shapes: `DELETE /tasks/{task_id}`'s here.
    let c = json(url, &["task", "cancel", new["task_id"].as_str().unwrap()]);
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["queue_name"], "jobs");
    assert_eq!(c["task_id"], new["task_id"]);
    // Waiting: an event-driven completion observed by `task result --wait`.
    let run = client.claim("jobs", "w", 30, 1).await.unwrap().remove(0);
    let suspended = client
        .await_event(
            "jobs",
            run.task_id,
            run.run_id,
            "$awaitEvent:go",
            "go",
            None,
        )
        .await
        .unwrap();
    assert!(suspended.should_suspend);
    assert!(ok(&cli(
        url,
        &[
            "event",
            "emit",
            "go",
            "-q",
            "jobs",
            "--payload",
            r#"{"ok":true}"#
        ]
    ))
    .contains("emitted"));
    let woken = client.claim("jobs", "w", 30, 1).await.unwrap().remove(0);
    assert_eq!(woken.event_payload, Some(serde_json::json!({"ok": true})));
    client
        .complete_run("jobs", woken.run_id, &serde_json::json!("done"))
        .await
        .unwrap();
    let r = json(
        url,
        &["task", "result", &woken.task_id.to_string(), "--wait", "10"],
    );
    assert_eq!(r["state"], "completed");
    assert_eq!(r["result"], "done");

    // Stats, drop.
    let stats = json(url, &["queue", "stats", "jobs"]);
    assert_eq!(stats["cancelled"], 1);
    let out = cli(url, &["queue", "drop", "jobs"]);
    assert!(!out.status.success(), "drop needs --yes");
    ok(&cli(url, &["queue", "drop", "jobs", "--yes"]));
    ok(&cli(url, &["queue", "drop", "tmo", "--yes"]));
    assert_eq!(json(url, &["queue", "list"]), serde_json::json!([]));
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_message() {
    let db = TestDb::migrated().await;
    let url = db.url.as_str();
    let err = |args: &[&str]| {
        let out = cli(url, args);
        assert!(!out.status.success(), "{args:?} must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(&["task", "spawn", "echo", "-q", "jobs", "--params", "{bad"]);
    assert!(e.contains("--params is not valid JSON"), "{e}");
    let e = err(&["task", "spawn", "echo", "-q", &"q".repeat(58)]);
    assert!(e.contains("limit is 57"), "{e}");
    let e = err(&[
        "task",
        "spawn",
        "echo",
        "-q",
        "jobs",
        "--retry-kind",
        "fixed",
        "--retry-base=99999999",
    ]);
    assert!(e.contains("AB003") || e.contains("base_seconds"), "{e}");
    for (bad, shown) in [
        ("0", "got 0"),
        ("-3", "got -3"),
        ("2.5", "got 2.5"),
        ("soon", "got \"soon\""),
        ("99999999999", "got 99999999999"),
    ] {
        let e = err(&["task", "spawn", "echo", "-q", "jobs", "--timeout-sec", bad]);
        assert!(
            e.contains("timeout_sec must be a whole number of seconds from 1 to 31536000")
                && e.contains(shown),
            "{bad}: {e}"
        );
    }
    let e = err(&["task", "get", "not-a-uuid"]);
    assert!(e.contains("not-a-uuid"), "{e}");
    let out = cli("postgres://postgres@127.0.0.1:1/none", &["queue", "list"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("cannot connect to postgres://postgres@127.0.0.1:1/none"),
        "{e}"
    );
}

#[tokio::test]
async fn bench_prints_tables_and_a_final_json_line() {
    // The benchmark asserts nothing about speed; this checks that it runs against a real
    // server, reports every figure of the scenarios asked for, and ends with the JSON line.
    let admin = common::admin_url();
    let out = Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args([
            "bench",
            "--quick",
            "--only",
            "spawn,pg-cost,workflow",
            "--tasks",
            "200",
        ])
        .arg("--database-url")
        .arg(&admin)
        .arg("--components")
        .arg(common::components_dir())
        .env("ABSURD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run absurd-host bench");
    let pid = out.id();
    let out = out.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("== spawn")
            && stdout.contains("== pg-cost")
            && stdout.contains("== workflow"),
        "{stdout}"
    );
    let last = stdout.lines().last().expect("output");
    let v: Value = serde_json::from_str(last).expect("the last line is JSON");
    let figures = v["figures"].as_object().expect("figures");
    for key in [
        "spawn.single",
        "spawn.batched",
        "pg_cost.ours.one_at_a_time",
        "pg_cost.ours.batched",
        "pg_cost.upstream.one_at_a_time",
        "pg_cost.upstream.batched",
        "workflow.chain5.p50",
        "workflow.chain5.p99",
        "workflow.fanout.parent_done",
    ] {
        let value = figures[key]["value"].as_f64();
        assert!(
            value.is_some_and(|x| x.is_finite() && x > 0.0),
            "{key} = {:?} in {last}",
            figures.get(key)
        );
    }
    assert_eq!(figures["pg_cost.ours.batched"]["target"], "<= 100");
    assert_eq!(figures["workflow.chain5.p50"]["target"], "<= 25.0");
    assert!(figures["workflow.fanout.wake"]["value"]
        .as_f64()
        .is_some_and(f64::is_finite));
    assert!(v["meta"]["machine"].as_str().unwrap().contains("CPUs"));
    // Every database it made is gone.
    let pool = absurd_client::db::connect(&admin, 1).await.unwrap();
    let left: i64 = sqlx::query_scalar(
        "select count(*) from pg_database where datname like 'absurd\\_bench\\_' || $1 || '\\_%'",
    )
    .bind(pid.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
}
