//! Statements for measuring queues from outside, as `absurd-host bench` does: fixtures (tasks
//! spawned in bulk, tasks put to sleep), readings taken from the database's own clock and
//! counters, and which server backends serve a given client.
//!
//! None of these is part of the Absurd protocol. They read and write the per-queue tables of a
//! schema installed by `absurd-host migrate` or `absurdctl init` (the tables are the same), and
//! are meant for test and benchmark databases, not for a production queue.

use serde_json::Value;
use sqlx::PgPool;

use crate::client::table;

/// Spawns tasks `task` numbered `first..=last` through `absurd.spawn_task` in one statement,
/// with params `{"i": k}`. Returns how many were spawned.
pub async fn spawn_numbered(
    pool: &PgPool,
    queue: &str,
    task: &str,
    first: i32,
    last: i32,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from (
             select absurd.spawn_task($1, $2, jsonb_build_object('i', g), '{}'::jsonb)
             from generate_series($3::int, $4::int) g) s",
    )
    .bind(queue)
    .bind(task)
    .bind(first)
    .bind(last)
    .fetch_one(pool)
    .await
}

/// Spawns `n` tasks `task` with the same `params` in one statement. Returns how many were
/// spawned.
pub async fn spawn_copies(
    pool: &PgPool,
    queue: &str,
    task: &str,
    params: &Value,
    n: i32,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from (
             select absurd.spawn_task($1, $2, $3, '{}'::jsonb) from generate_series(1, $4::int)) s",
    )
    .bind(queue)
    .bind(task)
    .bind(sqlx::types::Json(params))
    .bind(n)
    .fetch_one(pool)
    .await
}

/// Puts every pending task named `task` to sleep for `secs` seconds, as a durable sleep
/// would (runs first, then tasks, in one transaction): a backlog of sleepers that claims
/// must skip.
pub async fn put_to_sleep(
    pool: &PgPool,
    queue: &str,
    task: &str,
    secs: f64,
) -> Result<(), sqlx::Error> {
    let (r, t) = (table("r", queue), table("t", queue));
    let mut tx = pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "update {r} set state = 'sleeping', available_at = now() + make_interval(secs => $2)
         where state = 'pending' and task_id in (select task_id from {t} where task_name = $1)"
    )))
    .bind(task)
    .bind(secs)
    .execute(&mut *tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "update {t} set state = 'sleeping' where state = 'pending' and task_name = $1"
    )))
    .bind(task)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// `VACUUM ANALYZE` of the database: fresh planner statistics (and visibility map) after a
/// bulk load, so that a measurement starts from the plans a settled queue gets.
pub async fn refresh_statistics(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("vacuum analyze")
        .execute(pool)
        .await
        .map(|_| ())
}

/// How many runs of the queue are in `state` (`pending`, `running`, `completed`, ...).
pub async fn runs_in_state(pool: &PgPool, queue: &str, state: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from {} where state = $1",
        table("r", queue)
    )))
    .bind(state)
    .fetch_one(pool)
    .await
}

/// A drain as the database timed it: the completed runs claimed by a worker whose id starts
/// with `worker_prefix`, and the seconds from the first one's start to the last one's
/// completion (`None` when there are none).
pub async fn drain_rate(
    pool: &PgPool,
    queue: &str,
    worker_prefix: &str,
) -> Result<(i64, Option<f64>), sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select count(*), extract(epoch from max(completed_at) - min(started_at))::float8
         from {} where state = 'completed' and claimed_by like $1 || '%'",
        table("r", queue)
    )))
    .bind(worker_prefix)
    .fetch_one(pool)
    .await
}

/// For every task's first run that has started: milliseconds from the task's enqueueing to
/// the run's start (the pick-up latency).
pub async fn first_run_waits_ms(pool: &PgPool, queue: &str) -> Result<Vec<f64>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select extract(epoch from r.started_at - t.enqueue_at)::float8 * 1000
         from {} r join {} t using (task_id) where r.attempt = 1 and r.started_at is not null",
        table("r", queue),
        table("t", queue)
    )))
    .fetch_all(pool)
    .await
}

/// For every completed task named `task_name`: its id, and the milliseconds from the task's
/// enqueueing to its run's completion (spawn to result, as the database timed it).
pub async fn task_spans_ms(
    pool: &PgPool,
    queue: &str,
    task_name: &str,
) -> Result<Vec<(uuid::Uuid, f64)>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select t.task_id, extract(epoch from r.completed_at - t.enqueue_at)::float8 * 1000
         from {} r join {} t using (task_id)
         where t.task_name = $1 and r.state = 'completed' and r.completed_at is not null",
        table("r", queue),
        table("t", queue)
    )))
    .bind(task_name)
    .fetch_all(pool)
    .await
}

/// A fan-in as the database timed it, from the completion of the last completed run of the
/// tasks named `child_name` in `child_queue` (the children): milliseconds until the last claim of `parent`'s
/// completed run (its last wake-up), and until that run's completion. `None`s when the
/// parent has not completed or no child has.
pub async fn fan_in_wake_ms(
    pool: &PgPool,
    child_queue: &str,
    queue: &str,
    parent: uuid::Uuid,
    child_name: &str,
) -> Result<(Option<f64>, Option<f64>), sqlx::Error> {
    let row: Option<(Option<f64>, Option<f64>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "with last as (
             select max(r.completed_at) as at
             from {cr} r join {ct} t using (task_id)
             where t.task_name = $2 and r.state = 'completed'
         )
         select extract(epoch from p.started_at - last.at)::float8 * 1000,
                extract(epoch from p.completed_at - last.at)::float8 * 1000
         from {r} p, last
         where p.task_id = $1 and p.state = 'completed'",
        cr = table("r", child_queue),
        ct = table("t", child_queue),
        r = table("r", queue)
    )))
    .bind(parent)
    .bind(child_name)
    .fetch_optional(pool)
    .await?;
    Ok(row.unwrap_or((None, None)))
}

/// Process ids of the server backends connected to database `db` with `application_name`
/// `app` (from `pg_stat_activity`; any database of the server can be asked).
pub async fn backend_pids(pool: &PgPool, db: &str, app: &str) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "select pid from pg_stat_activity where datname = $1 and application_name = $2",
    )
    .bind(db)
    .bind(app)
    .fetch_all(pool)
    .await
}

/// How many of those backends are idle in a `LISTEN`: a worker that has started and waits
/// for wake-ups.
pub async fn listening_backends(pool: &PgPool, db: &str, app: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from pg_stat_activity
         where datname = $1 and application_name = $2 and query ilike 'listen%'",
    )
    .bind(db)
    .bind(app)
    .fetch_one(pool)
    .await
}
