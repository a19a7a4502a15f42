//! The pg_cron helpers (spec §5.14, migration 0021) against a real pg_cron: Debian's
//! `postgresql-15-cron` (installed by `scripts/setup-pg-cron`, which `scripts/test` runs),
//! loaded through `shared_preload_libraries` in a private cluster this test starts (an
//! embedded cluster in a temporary directory: initdb'd there, socket only, run as the
//! `postgres` OS user when the test runs as root). The jobs `enable_cron` and
//! `schedule_detach_jobs` schedule actually run, on pg_cron's own minute ticks.
//!
//! Without pg_cron (the shared test server), the helpers refuse with the spec's message and a
//! hint naming `absurd-host maintain`.

mod common;

use std::time::Duration;

use absurd_client::partitions::{QueuePolicyUpdate, StorageMode};
use absurd_client::{Client, SpawnOptions};
use absurd_host::embedded::EmbeddedPostgres;
use common::{temp_dir, venv_bin, wait_for, TestDb};
use serde_json::json;
use sqlx::PgPool;

/// pg_cron runs `* * * * *` jobs once a minute; a chain of them (plan, then detach, then
/// drop) needs a few minutes on a loaded machine.
const CRON_LIMIT: Duration = Duration::from_secs(420);

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Stops the private cluster and starts it again on the same data directory.
async fn restart(pg: EmbeddedPostgres, dir: std::path::PathBuf) -> EmbeddedPostgres {
    blocking(move || {
        pg.stop().expect("stop the private cluster");
        drop(pg);
        EmbeddedPostgres::start(&dir).expect("restart the private cluster")
    })
    .await
}

async fn scalar_text(pool: &PgPool, sql: &str) -> Option<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn exists(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar("select to_regclass(format('absurd.%I', $1::text)) is not null")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn job_names(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("select jobname::text from cron.job order by jobname")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_jobs_run_in_a_private_cluster_with_pg_cron() {
    let dir = temp_dir().join("pg");
    let d = dir.clone();
    let pg = blocking(move || EmbeddedPostgres::start(&d))
        .await
        .expect("start a private PostgreSQL cluster");
    let url = pg.url();
    let pool = absurd_client::db::connect(&url, 4).await.unwrap();
    let available: i64 =
        sqlx::query_scalar("select count(*) from pg_available_extensions where name = 'pg_cron'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        available, 1,
        "pg_cron is not installed for this PostgreSQL server: run scripts/setup-pg-cron \
         (Debian's postgresql-<version>-cron)"
    );
    // Load pg_cron at start (a restart), then (its settings known now) run its jobs in our
    // database, in background workers: the cluster has no TCP port for pg_cron's default
    // libpq connections (another restart).
    // Every job runs in a background worker of its own, and `* * * * *` jobs all start on the
    // same tick: room for all of them (the default of 8 would make some fail to start).
    for setting in [
        "alter system set shared_preload_libraries = 'pg_cron'",
        "alter system set max_worker_processes = 40",
    ] {
        sqlx::raw_sql(setting).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let pg = restart(pg, dir.clone()).await;
    let pool = absurd_client::db::connect(&url, 4).await.unwrap();
    for setting in [
        "alter system set cron.database_name = 'absurd'",
        "alter system set cron.use_background_workers = on",
    ] {
        sqlx::raw_sql(setting).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let pg = restart(pg, dir).await;
    let pool = absurd_client::db::connect(&url, 4).await.unwrap();
    sqlx::raw_sql("create extension if not exists pg_cron")
        .execute(&pool)
        .await
        .unwrap();
    absurd_client::db::migrate(&pool).await.unwrap();
    let c = Client::new(pool.clone());

    // A partitioned queue whose policy asks for three weeks back (created by the partitions
    // job, not by create_queue), finished tasks deleted at once (cleanup job), and every
    // past empty week detached and dropped (detach plan, then its detach and drop jobs).
    c.create_queue_with_mode("cq", StorageMode::Partitioned)
        .await
        .unwrap();
    c.set_queue_policy(
        "cq",
        &QueuePolicyUpdate {
            partition_lookback: Some("21 days".into()),
            cleanup_ttl: Some("0 seconds".into()),
            detach_mode: Some("empty".into()),
            detach_min_age: Some("0 seconds".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let oldest = scalar_text(
        &pool,
        "select 't_cq_' || absurd.partition_week_tag(absurd.current_time() - interval '21 days')",
    )
    .await
    .unwrap();
    assert!(
        !exists(&pool, &oldest).await,
        "{oldest} is the partitions job's to make"
    );
    let task = c
        .spawn("cq", "job", &json!({}), &SpawnOptions::default())
        .await
        .unwrap();
    c.cancel_task("cq", task.task_id).await.unwrap();

    let jobs: Vec<(String, i64)> = sqlx::query_as(
        "select job_name, job_id from absurd.enable_cron('cq', '* * * * *', '* * * * *', '* * * * *')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let scope = scalar_text(&pool, "select left(md5('cq'), 12)")
        .await
        .unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.0.clone()).collect::<Vec<_>>(),
        [
            format!("absurd_partitions_{scope}"),
            format!("absurd_cleanup_{scope}"),
            format!("absurd_detach_plan_{scope}")
        ]
    );

    // The partitions job makes the old weeks; the cleanup job deletes the cancelled task.
    wait_for(
        "the partitions and cleanup jobs to run",
        CRON_LIMIT,
        || async {
            let made = exists(&pool, &oldest).await;
            let cleaned = c.get_task("cq", task.task_id).await.unwrap().is_none();
            (made && cleaned).then_some(())
        },
    )
    .await;
    // From now on the partitions job keeps only a day back, so what is dropped stays dropped.
    c.set_queue_policy(
        "cq",
        &QueuePolicyUpdate {
            partition_lookback: Some("1 day".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // The plan job schedules a detach and a drop job for each parent's oldest week; they
    // run, the week is gone, and the drop job has unscheduled both. (A drop run counts
    // whatever status pg_cron recorded for it: the run unschedules its own job, and one run
    // on a loaded machine found the week gone and its jobs unscheduled, which only the drop
    // job does, with no drop run recorded as `succeeded`.)
    let drop_prefix = format!("absurd_drop_run_{scope}_");
    let cand_key = scalar_text(&pool, &format!("select left(md5('t_cq:{oldest}'), 12)"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + CRON_LIMIT;
    loop {
        let gone = !exists(&pool, &oldest).await;
        let ran: i64 = sqlx::query_scalar(
            "select count(*) from cron.job_run_details d \
             where d.command like '%drop_detached_partition(''' || $1 || '''%'",
        )
        .bind(&oldest)
        .fetch_one(&pool)
        .await
        .unwrap();
        let names = job_names(&pool).await;
        let pending = names
            .iter()
            .any(|n| n.starts_with(&drop_prefix) && n.ends_with(&cand_key));
        if gone && ran > 0 && !pending {
            break;
        }
        if std::time::Instant::now() > deadline {
            let runs: Vec<(String, String, String)> = sqlx::query_as(
                "select command, status, coalesce(return_message, '') from cron.job_run_details \
                 order by runid desc limit 30",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            panic!(
                "{oldest} not detached and dropped by cron jobs within {CRON_LIMIT:?} \
                 (gone {gone}, drop runs {ran}, drop job pending {pending}); jobs {names:?}; \
                 latest runs {runs:#?}"
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // disable_cron removes this queue's jobs (plans included), once.
    let removed: Vec<String> = sqlx::query_scalar("select job_name from absurd.disable_cron('cq')")
        .fetch_all(&pool)
        .await
        .unwrap();
    for j in &jobs {
        assert!(removed.contains(&j.0), "{} removed: {removed:?}", j.0);
    }
    assert!(
        !job_names(&pool).await.iter().any(|n| n.contains(&scope)),
        "{:?}",
        job_names(&pool).await
    );
    let again: Vec<String> = sqlx::query_scalar("select job_name from absurd.disable_cron('cq')")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");

    // absurdctl's `cron` command drives the same functions. Jobs it enables for the queue
    // go with drop_queue; the all-queues scope is left alone, until `cron --disable`.
    let out = absurdctl(&url, &["cron", "--enable", "--queue", "cq"]).await;
    assert!(out.contains(&format!("absurd_partitions_{scope}")), "{out}");
    absurdctl(&url, &["cron", "--enable"]).await;
    c.drop_queue("cq").await.unwrap();
    assert_eq!(
        job_names(&pool).await,
        [
            "absurd_cleanup_all",
            "absurd_detach_plan_all",
            "absurd_partitions_all"
        ]
    );
    let out = absurdctl(&url, &["cron", "--disable"]).await;
    assert!(out.contains("absurd_cleanup_all"), "{out}");
    assert!(
        job_names(&pool).await.is_empty(),
        "{:?}",
        job_names(&pool).await
    );
    pool.close().await;
    blocking(move || drop(pg)).await;
}

/// Runs `absurdctl <args> -d <url>`, which must succeed; returns its output.
async fn absurdctl(url: &str, args: &[&str]) -> String {
    let out = absurdctl_output(url, args).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "absurdctl {args:?} failed: {text}");
    text
}

async fn absurdctl_output(url: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(venv_bin("absurdctl"));
    cmd.args(args)
        .arg("-d")
        .arg(url)
        .stdin(std::process::Stdio::null());
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("absurdctl within 60 s")
        .expect("run absurdctl (scripts/setup-python makes the venv)")
}

#[tokio::test]
async fn without_pg_cron_the_helpers_point_to_maintain() {
    let db = TestDb::migrated().await;
    for call in [
        "select * from absurd.enable_cron()",
        "select * from absurd.disable_cron()",
        "select * from absurd.schedule_detach_jobs()",
    ] {
        let err = sqlx::query(call).execute(&db.pool).await.unwrap_err();
        let e = err.as_database_error().expect("a database error");
        assert_eq!(
            e.message(),
            "pg_cron is not available (missing cron.job)",
            "{call}"
        );
        let pg = e
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .expect("a PostgreSQL error");
        assert!(
            pg.hint()
                .unwrap_or_default()
                .contains("absurd-host maintain"),
            "{call}: hint {:?}",
            pg.hint()
        );
    }
    // enable_cron validates before it looks for pg_cron.
    let err = sqlx::query("select * from absurd.enable_cron('nope')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().message(),
        r#"Queue "nope" does not exist"#
    );
    // absurdctl's `cron` command gets the same refusal.
    let out = absurdctl_output(&db.url, &["cron", "--enable"]).await;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("pg_cron is not available (missing cron.job)"),
        "{text}"
    );
    // drop_queue works without pg_cron.
    let c = Client::new(db.pool.clone());
    c.create_queue("q").await.unwrap();
    c.drop_queue("q").await.unwrap();
    assert!(c.list_queues().await.unwrap().is_empty());
}
