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
            "spawn,pg-cost",
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
        stdout.contains("== spawn") && stdout.contains("== pg-cost"),
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
    ] {
        let value = figures[key]["value"].as_f64();
        assert!(
            value.is_some_and(|x| x.is_finite() && x > 0.0),
            "{key} = {:?} in {last}",
            figures.get(key)
        );
    }
    assert_eq!(figures["pg_cost.ours.batched"]["target"], "<= 100");
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
