//! The bad-input catalogue: each mistake gets a clear error and changes nothing (no task, no
//! queue, no schema change). See docs/reliability.md.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use absurd_client::{Client, RetryStrategy, SpawnOptions, State};
use common::{components_dir, temp_file, wait_for, TestDb, WorkerProc};
use serde_json::json;
use sqlx::PgPool;

const NOWHERE: &str = "postgres://postgres@127.0.0.1:1/none";

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args(args)
        .env_remove("ABSURD_DATABASE_URL")
        .env_remove("ABSURD_QUEUE_NAME")
        .env_remove("ABSURD_HOST_CONFIG")
        .output()
        .expect("run absurd-host")
}

/// Asserts a non-zero exit whose stderr contains every one of `needles`; returns stderr.
fn refused(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected failure, got {}: {err}",
        out.status
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    err
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn tasks_in(pool: &PgPool, queue: &str) -> i64 {
    count(pool, &format!("select count(*) from absurd.\"t_{queue}\"")).await
}

async fn setup(queue: &str) -> (TestDb, Client) {
    let db = TestDb::migrated().await;
    let client = Client::new(db.pool.clone());
    client.create_queue(queue).await.unwrap();
    (db, client)
}

/// `--params '{bad'`: names the flag and the text; no task.
#[tokio::test]
async fn malformed_json_params_are_refused() {
    let (db, _) = setup("bad").await;
    for params in ["{bad", "[1, 2", "", "{\"a\": }"] {
        let out = host(&[
            "task",
            "spawn",
            "echo",
            "--queue",
            "bad",
            "--params",
            params,
            "--database-url",
            &db.url,
        ]);
        refused(&out, &["--params is not valid JSON"]);
    }
    let out = host(&[
        "task",
        "spawn",
        "echo",
        "--queue",
        "bad",
        "-P",
        "n:={oops",
        "--database-url",
        &db.url,
    ]);
    refused(&out, &["--param", "not valid JSON"]);
    assert_eq!(tasks_in(&db.pool, "bad").await, 0, "no task was created");
}

/// An invalid retry strategy is refused by the schema (AB003) before anything is written.
#[tokio::test]
async fn invalid_retry_strategies_are_refused_with_ab003() {
    let (db, _) = setup("retry").await;
    for extra in [
        &["--retry-kind", "exponential", "--retry-base=-5"][..],
        &["--retry-kind", "fixed", "--retry-base", "1000000"][..],
        &["--retry-kind", "exponential", "--retry-factor=-1"][..],
    ] {
        let mut args = vec![
            "task",
            "spawn",
            "echo",
            "--queue",
            "retry",
            "--database-url",
            &db.url,
        ];
        args.extend_from_slice(extra);
        let out = host(&args);
        refused(&out, &["AB003", "retry"]);
    }
    // Not even a kind the CLI knows.
    let out = host(&[
        "task",
        "spawn",
        "echo",
        "--queue",
        "retry",
        "--retry-kind",
        "linear",
        "--database-url",
        &db.url,
    ]);
    refused(&out, &["linear"]);
    assert_eq!(tasks_in(&db.pool, "retry").await, 0);
}

/// Queue names longer than 57 bytes (the limit that keeps `absurd."r_<name>_…"` index names
/// within PostgreSQL's 63 bytes): refused, with the limit named; no queue made.
#[tokio::test]
async fn invalid_queue_names_are_refused() {
    let db = TestDb::migrated().await;
    let long = "q".repeat(58);
    let out = host(&["queue", "create", &long, "--database-url", &db.url]);
    refused(&out, &["57"]);
    let out = host(&[
        "task",
        "spawn",
        "echo",
        "--queue",
        &long,
        "--database-url",
        &db.url,
    ]);
    refused(&out, &["57"]);
    let out = host(&["queue", "create", "", "--database-url", &db.url]);
    refused(&out, &["empty"]);
    // The worker refuses it at start too, before touching the database.
    let cfg = temp_file("absurd-host.toml", "[tasks.echo]\nkind = \"builtin\"\n");
    let out = host(&[
        "worker",
        "--queue",
        &long,
        "--database-url",
        &db.url,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    refused(&out, &["57"]);
    assert_eq!(
        count(&db.pool, "select count(*) from absurd.queues").await,
        0,
        "no queue was created"
    );
    assert_eq!(
        count(
            &db.pool,
            "select count(*) from pg_tables where schemaname = 'absurd' and tablename like 't\\_%'"
        )
        .await,
        0
    );
}

fn worker_refuses(config_text: &str, needles: &[&str]) -> String {
    let cfg = temp_file("absurd-host.toml", config_text);
    let out = host(&[
        "worker",
        "--queue",
        "q",
        "--database-url",
        NOWHERE,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    // Configuration is checked before the database is contacted: the error is about the file.
    let err = refused(&out, needles);
    assert!(err.contains("absurd-host.toml"), "names the file: {err}");
    err
}

/// Unknown keys and wrong types in the host configuration stop the worker at start, naming
/// the file and the entry.
#[test]
fn config_with_unknown_keys_or_wrong_types_is_refused() {
    worker_refuses(
        "[tasks.echo]\nkind = \"builtin\"\n[typo]\nx = 1\n",
        &["typo"],
    );
    worker_refuses(
        "[tasks.echo]\nkind = \"builtin\"\ntimout = 3\n",
        &["timout"],
    );
    worker_refuses(
        "[tasks.echo]\nkind = \"builtin\"\ntimeout = \"soon\"\n",
        &["timeout"],
    );
    worker_refuses(
        "[tasks.echo]\nkind = \"builtin\"\nmax_attempts = \"three\"\n",
        &["max_attempts"],
    );
    worker_refuses("[tasks.echo]\nkind = \"teleport\"\n", &["teleport"]);
    worker_refuses(
        "[tasks.echo]\nkind = \"builtin\"\nbuiltin = \"nope\"\n",
        &["nope"],
    );
    worker_refuses("[tasks.echo\nkind = \"builtin\"\n", &["absurd-host.toml"]);
}

/// A truncated component and a core module (not a component) are refused at start.
#[test]
fn truncated_or_non_component_wasm_is_refused() {
    let echo = std::fs::read(components_dir().join("echo.wasm")).unwrap();
    let dir = common::temp_dir();
    let truncated = dir.join("truncated.wasm");
    std::fs::write(&truncated, &echo[..echo.len() / 2]).unwrap();
    // The smallest valid core module: magic and version 1.
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    for (file, what) in [(&truncated, "truncated.wasm"), (&core, "core.wasm")] {
        let err = worker_refuses(
            &format!(
                "[tasks.bad]\nkind = \"wasm\"\ncomponent = \"{}\"\n",
                file.display()
            ),
            &[what],
        );
        assert!(
            err.contains("not a WebAssembly component") || err.contains("compile"),
            "{err}"
        );
    }
    let missing: PathBuf = dir.join("missing.wasm");
    worker_refuses(
        &format!(
            "[tasks.bad]\nkind = \"wasm\"\ncomponent = \"{}\"\n",
            missing.display()
        ),
        &["missing.wasm"],
    );
}

/// A native program that does not exist is refused at start, naming it.
#[test]
fn missing_native_program_is_refused() {
    let dispatch = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../engine/src/dispatch.rs"),
    )
    .unwrap();
    if !dispatch.contains("Native") {
        eprintln!("SKIPPED missing_native_program_is_refused: this host has no native kind");
        return;
    }
    let root = common::temp_dir().join("work");
    worker_refuses(
        &format!(
            "[native]\nworkdir_root = \"{}\"\n[tasks.gone]\nkind = \"native\"\nprogram = \"/nonexistent/bin/calibrate\"\n",
            root.display()
        ),
        &["/nonexistent/bin/calibrate"],
    );
}

/// An unreachable database: non-zero exit, the message names the host (and not a password).
#[test]
fn unreachable_database_names_the_host() {
    for (url, host_name) in [
        ("postgres://someone:s3cret@127.0.0.1:1/absurd", "127.0.0.1"),
        (
            "postgres://someone:s3cret@no-such-host.invalid/absurd",
            "no-such-host.invalid",
        ),
    ] {
        for args in [
            &["task", "list"][..],
            &["migrate"][..],
            &["queue", "create", "jobs"][..],
        ] {
            let mut a = args.to_vec();
            a.extend_from_slice(&["--database-url", url]);
            let out = host(&a);
            let err = refused(&out, &[host_name]);
            assert!(!err.contains("s3cret"), "password leaked: {err}");
        }
    }
}

/// `absurd-host migrate` on a database whose schema `absurdctl init` installed: refused, and
/// the schema is left exactly as it was.
#[tokio::test]
async fn migrate_refuses_a_foreign_schema_and_changes_nothing() {
    let db = TestDb::upstream().await;
    let fingerprint = "select md5(string_agg(x, ',' order by x)) from ( \
        select 'rel:' || c.relname || ':' || c.relkind::text as x from pg_class c \
          join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'absurd' \
        union all select 'fn:' || md5(pg_get_functiondef(p.oid)) from pg_proc p \
          join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'absurd' and p.prokind = 'f') s";
    let before: String = sqlx::query_scalar(fingerprint)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let out = host(&["migrate", "--database-url", &db.url]);
    let err = refused(&out, &["absurd"]);
    assert!(
        err.to_lowercase().contains("installed by") || err.contains("absurdctl"),
        "says who installed it: {err}"
    );
    let after: String = sqlx::query_scalar(fingerprint)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(before, after, "the schema was not modified");
}

fn pipeline_config() -> PathBuf {
    let dir = components_dir();
    temp_file(
        "absurd-host.toml",
        &format!(
            "[tasks.calibration-plan]\nkind = \"wasm\"\ncomponent = \"{}/pipeline.wasm\"\n\
             [tasks.calibration-solve]\nkind = \"builtin\"\nbuiltin = \"echo\"\n",
            dir.display()
        ),
    )
}

/// Params of the wrong shape for a typed guest: `$InvalidParams` naming the field, permanent
/// (one run although three were allowed), and nothing spawned downstream.
#[tokio::test]
async fn wrong_shape_params_for_a_typed_guest_fail_permanently() {
    let (db, client) = setup("typed").await;
    let _w = WorkerProc::start(&db.url, &pipeline_config(), &["--queue", "typed"]);
    let opts = SpawnOptions {
        max_attempts: Some(3),
        retry_strategy: Some(RetryStrategy::none()),
        ..Default::default()
    };
    let mut ids = vec![];
    for (params, field) in [
        (
            json!({"config": null, "inputs": {"ms_path": 5}, "outputs": {}}),
            "ms_path",
        ),
        (json!({"config": null, "outputs": {}}), "inputs"),
    ] {
        let id = client
            .spawn("typed", "calibration-plan", &params, &opts)
            .await
            .unwrap()
            .task_id;
        ids.push((id, field));
    }
    for (id, field) in ids {
        let r = wait_for(
            "the typed task to fail",
            Duration::from_secs(60),
            || async {
                client
                    .task_result("typed", id)
                    .await
                    .unwrap()
                    .filter(|r| r.state.is_terminal())
            },
        )
        .await;
        assert_eq!(r.state, State::Failed, "{r:?}");
        let f = r.failure_reason.unwrap();
        assert_eq!(f["name"], "$InvalidParams", "{f}");
        assert!(
            f["message"].as_str().unwrap().contains(field),
            "names {field}: {f}"
        );
        let t = client.get_task("typed", id).await.unwrap().unwrap();
        assert_eq!(t.runs.len(), 1, "permanent: no retry");
        assert!(t.checkpoints.is_empty(), "no step ran");
    }
    assert_eq!(
        tasks_in(&db.pool, "typed").await,
        2,
        "nothing spawned downstream"
    );
}

/// A task name no handler knows is deferred 15–30 s (for a worker that knows it), not failed:
/// no attempt is burnt, and the params are untouched.
#[tokio::test]
async fn unknown_task_names_are_deferred_not_failed() {
    let (db, client) = setup("unknown").await;
    let cfg = temp_file("absurd-host.toml", "[tasks.echo]\nkind = \"builtin\"\n");
    let _w = WorkerProc::start(&db.url, &cfg, &["--queue", "unknown"]);
    let id = client
        .spawn(
            "unknown",
            "no-such-task",
            &json!({"keep": "me"}),
            &SpawnOptions {
                max_attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .task_id;
    let delay: f64 = wait_for(
        "the task to be deferred",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar::<_, f64>(
                "select extract(epoch from r.available_at - clock_timestamp())::float8 \
             from absurd.\"r_unknown\" r where r.task_id = $1 and r.started_at is not null \
             and r.state in ('pending', 'sleeping') and r.available_at > clock_timestamp()",
            )
            .bind(id)
            .fetch_optional(&db.pool)
            .await
            .unwrap()
        },
    )
    .await;
    assert!((10.0..=31.0).contains(&delay), "deferred by {delay} s");
    let t = client.get_task("unknown", id).await.unwrap().unwrap();
    assert!(!t.summary.state.is_terminal(), "{:?}", t.summary.state);
    assert_eq!(t.runs.len(), 1, "no attempt was burnt");
    assert_eq!(t.params, json!({"keep": "me"}));
    assert_eq!(tasks_in(&db.pool, "unknown").await, 1);
    // And a worker told to fail unknown names fails it, naming it.
    drop(_w);
}

/// Odd characters in queue names (quotes, spaces, semicolons) are accepted verbatim, as the
/// Absurd SDKs accept them, and always quoted: they can never run as SQL.
#[tokio::test]
async fn odd_queue_names_are_quoted_never_executed() {
    let db = TestDb::migrated().await;
    let evil = "x\"; drop table absurd.queues; --";
    let out = host(&["queue", "create", evil, "--database-url", &db.url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = host(&[
        "task",
        "spawn",
        "echo",
        "--queue",
        evil,
        "--params",
        "{\"n\": 1}",
        "--database-url",
        &db.url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queues: Vec<String> = sqlx::query_scalar("select queue_name from absurd.queues")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(queues, vec![evil.to_string()], "absurd.queues survived");
    let tasks: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from absurd.\"t_{}\"",
        evil.replace('"', "\"\"")
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tasks, 1);
}

/// A typed flag's bad value exits 2 (clap's usage error) naming what the user gave: the flag
/// when it was on the command line, the variable when the value came from the environment.
#[test]
fn bad_numbers_name_the_flag_or_the_variable_that_gave_them() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_absurd-host"));
        cmd.args(args)
            .args(["--database-url", NOWHERE])
            .env_remove("ABSURD_QUEUE_NAME")
            .env_remove("ABSURD_HOST_CONFIG");
        for var in [
            "ABSURD_WORKER_CONCURRENCY",
            "ABSURD_WORKER_POLL_INTERVAL",
            "ABSURD_TASK_TIMEOUT",
            "ABSURD_CLAIM_TIMEOUT",
            "ABSURD_MAX_RETRIES",
            "ABSURD_DLQ_ENABLED",
            "ABSURD_SHUTDOWN_GRACE",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        cmd.output().expect("run absurd-host")
    };
    let usage_error = |out: &Output, needles: &[&str], absent: &str| {
        let err = refused(out, needles);
        assert_eq!(out.status.code(), Some(2), "exit code: {err}");
        assert!(
            !err.contains(absent),
            "names {absent:?}, which was not given: {err}"
        );
    };

    // On the command line: the flag, never the variable behind it.
    let out = run(&["worker", "--concurrency", "four"], &[]);
    usage_error(
        &out,
        &["--concurrency", "'four'", "not an integer"],
        "ABSURD_WORKER_CONCURRENCY",
    );
    let out = run(&["worker", "--concurrency=0"], &[]);
    usage_error(
        &out,
        &["--concurrency", "got 0"],
        "ABSURD_WORKER_CONCURRENCY",
    );
    let out = run(&["check", "--poll-interval=-1"], &[]);
    usage_error(
        &out,
        &["--poll-interval", "-1"],
        "ABSURD_WORKER_POLL_INTERVAL",
    );
    let out = run(&["worker", "--task-timeout", "1.5"], &[]);
    usage_error(&out, &["--task-timeout", "1.5"], "ABSURD_TASK_TIMEOUT");
    let out = run(&["worker", "--claim-timeout", "1.5"], &[]);
    usage_error(
        &out,
        &["--claim-timeout", "whole number of seconds"],
        "ABSURD_CLAIM_TIMEOUT",
    );
    let out = run(&["worker", "--max-retries=-1"], &[]);
    usage_error(&out, &["--max-retries", "got -1"], "ABSURD_MAX_RETRIES");
    let out = run(&["worker", "--dlq-enabled", "ture"], &[]);
    usage_error(
        &out,
        &["--dlq-enabled", "ture", "yes/no"],
        "ABSURD_DLQ_ENABLED",
    );
    let out = run(&["worker", "--shutdown-grace", "soon"], &[]);
    usage_error(&out, &["--shutdown-grace", "soon"], "ABSURD_SHUTDOWN_GRACE");

    // From the environment: the variable (the user never typed the flag).
    let out = run(&["worker"], &[("ABSURD_WORKER_CONCURRENCY", "four")]);
    usage_error(
        &out,
        &["ABSURD_WORKER_CONCURRENCY", "'four'", "not an integer"],
        "'--concurrency <N>'",
    );
    let out = run(&["dev"], &[("ABSURD_CLAIM_TIMEOUT", "0.5")]);
    usage_error(&out, &["ABSURD_CLAIM_TIMEOUT", "0.5"], "'--claim-timeout");
    let out = run(&["worker"], &[("ABSURD_DLQ_ENABLED", "maybe")]);
    usage_error(&out, &["ABSURD_DLQ_ENABLED", "maybe"], "'--dlq-enabled");
    let out = run(&["worker"], &[("ABSURD_SHUTDOWN_GRACE", "-3")]);
    usage_error(&out, &["ABSURD_SHUTDOWN_GRACE", "-3"], "'--shutdown-grace");

    // The flag wins over a bad variable, and every boolean spelling is accepted: these get
    // past the flags to the (missing) host configuration file.
    let missing = "/nonexistent/absurd-host.toml";
    for dlq in ["true", "false", "1", "0", "yes", "no", "on", "off", "OFF"] {
        let out = run(
            &[
                "worker",
                "--queue",
                "q",
                "--concurrency",
                "2",
                "--dlq-enabled",
                dlq,
                "--config",
                missing,
            ],
            &[("ABSURD_WORKER_CONCURRENCY", "four")],
        );
        let err = refused(&out, &[missing]);
        assert_eq!(out.status.code(), Some(1), "{dlq}: {err}");
    }
}
