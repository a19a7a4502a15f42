//! Coming from the DSA-110 seed's database: `absurd-host migrate --adopt-seed`, and the reads
//! of the seed's finished tasks afterwards.
//!
//! The seed kept every task in one table, `absurd.tasks` (its definition is in the pipeline
//! spec, Appendix A), in a schema that is also called `absurd`. Adopting it, in **one
//! transaction** (a crash or an error leaves the database as it was):
//!
//! 1. renames the seed's schema aside, to [`SEED_SCHEMA`] (`absurd_seed`), with its table and
//!    functions, untouched;
//! 2. installs absurd-host's schema (every migration, as `absurd-host migrate` does);
//! 3. carries the seed's unfinished tasks (`pending`, `claimed`, `retrying`) over as Absurd
//!    tasks of the same name, params and queue (queues are created as needed), in the seed's
//!    claim order (priority, then age). The next attempt is numbered after the attempts the
//!    seed made (`attempt + 1`: a `claimed` task's claim counts as an attempt, as its worker is
//!    gone), `max_attempts` is `max_retries + 1` (at least that next attempt), the seed's
//!    `timeout_sec` becomes the task's `timeout_sec` header, and a `seed` header records the
//!    seed's task id, status, priority, attempt and worker. The task keeps the seed's creation
//!    time. Each is noted in `absurd.seed_carried`, so it is carried once, ever;
//! 4. copies the finished ones (`completed`, `failed`, `cancelled`) into the read-only
//!    `absurd.seed_history`, which the API lists.
//!
//! Running it again is safe: it finds the seed aside, applies any migration still missing,
//! and carries and copies only what no earlier run did. A dry run does all of it and rolls
//! back, so its report is exactly what a real run would do.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Connection, FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::client::{check_queue_name, table, Client};
use crate::db::{self, MigrateError};
use crate::error::{ClientError, Result};
use crate::headers::MAX_TIMEOUT_SEC;
use crate::types::RetryStrategy;

/// Where the seed's schema goes.
pub const SEED_SCHEMA: &str = "absurd_seed";

/// The seed's states of an unfinished task, carried over as Absurd tasks.
pub const UNFINISHED: [&str; 3] = ["pending", "claimed", "retrying"];
/// The seed's states of a finished task, copied into the history.
pub const FINISHED: [&str; 3] = ["completed", "failed", "cancelled"];

/// The seed table's columns that adopting reads.
const SEED_COLUMNS: [&str; 17] = [
    "task_id",
    "queue_name",
    "task_name",
    "params",
    "priority",
    "timeout_sec",
    "status",
    "worker_id",
    "attempt",
    "max_retries",
    "result",
    "error",
    "created_at",
    "claimed_at",
    "completed_at",
    "wait_time_sec",
    "execution_time_sec",
];

/// Serialises adoptions of one database (a transaction-level advisory lock).
const ADOPT_LOCK: i64 = 0x0a65_5ead_0016;

/// Unusable seed rows named in an error, at most.
const MAX_NAMED_ROWS: i64 = 5;

/// Why the seed could not be adopted. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(
        "there is no seed database to adopt here: no `absurd.tasks` table of the DSA-110 seed, \
         and no `{SEED_SCHEMA}.tasks` from an earlier adoption"
    )]
    NoSeed,
    #[error(
        "the database has both the seed's `absurd` schema and a `{SEED_SCHEMA}` schema; refusing \
         to guess which is the seed. Rename or drop `{SEED_SCHEMA}` first"
    )]
    AsideTaken,
    #[error("`{schema}.tasks` is not the seed's table: it has no column {missing}")]
    NotTheSeedTable { schema: String, missing: String },
    #[error("seed tasks that cannot be carried over: {0}")]
    Unusable(String),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What an adoption did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdoptReport {
    /// True when everything was rolled back.
    pub dry_run: bool,
    /// The seed's schema, now.
    pub seed_schema: String,
    /// This run renamed the seed's `absurd` schema (false when an earlier run had).
    pub renamed: bool,
    /// absurd-host's migrations applied by this run, `(version, description)`.
    pub migrations_applied: Vec<(i64, String)>,
    pub schema_version: String,
    /// The seed's tasks by status.
    pub seed_tasks: BTreeMap<String, i64>,
    /// Queues this run created for the carried tasks.
    pub queues_created: Vec<String>,
    /// Unfinished tasks this run carried over, per queue.
    pub carried: Vec<CarriedQueue>,
    pub carried_total: i64,
    /// Unfinished tasks an earlier run had carried over already.
    pub already_carried: i64,
    /// Carried tasks whose `timeout_sec` was not usable (below 1 or above a year) and was left
    /// out: they run with their task type's timeout.
    pub timeouts_dropped: Vec<Uuid>,
    /// Finished tasks this run copied into `absurd.seed_history`.
    pub history_copied: i64,
    /// Finished tasks an earlier run had copied already.
    pub history_already: i64,
}

/// The unfinished tasks of one queue carried over, by the seed's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedQueue {
    pub queue_name: String,
    pub pending: i64,
    pub claimed: i64,
    pub retrying: i64,
}

/// What the database holds: which case of adoption this is.
#[derive(Debug, FromRow)]
struct Found {
    absurd_schema: bool,
    ours: bool,
    absurd_tasks: bool,
    aside_schema: bool,
    aside_tasks: bool,
}

/// One carried task, as the carrying statement returns it.
#[derive(Debug, FromRow)]
struct CarriedRow {
    seed_id: Uuid,
    status: String,
    attempt: i32,
    timeout_sec: Option<i32>,
    created_at: DateTime<Utc>,
    new_id: Uuid,
    new_run: Uuid,
    created: bool,
    /// Its place in the seed's claim order (1, 2, ...).
    rank: i64,
}

/// Adopts the seed's database at `pool` (see the module documentation). The carried tasks
/// get `retry_strategy` (the seed never retried, so it had none). With `dry_run` everything is
/// done and then rolled back.
pub async fn adopt(
    pool: &PgPool,
    retry_strategy: &RetryStrategy,
    dry_run: bool,
) -> std::result::Result<AdoptReport, AdoptError> {
    let mut conn = pool.acquire().await?;
    let result = adopt_on(&mut conn, retry_strategy, dry_run).await;
    // The migrator's session lock is left held when a migration fails; let it go with the
    // rolled-back transaction rather than with the connection.
    if result.is_err() {
        let _ = sqlx::query("select pg_advisory_unlock_all()")
            .execute(&mut *conn)
            .await;
    }
    result
}

async fn adopt_on(
    conn: &mut PgConnection,
    retry_strategy: &RetryStrategy,
    dry_run: bool,
) -> std::result::Result<AdoptReport, AdoptError> {
    let mut tx = conn.begin().await?;
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(ADOPT_LOCK)
        .execute(&mut *tx)
        .await?;
    let found: Found = sqlx::query_as(
        "select exists(select 1 from pg_namespace where nspname = 'absurd') as absurd_schema, \
                to_regclass('absurd.absurd_host_migrations') is not null as ours, \
                to_regclass('absurd.tasks') is not null as absurd_tasks, \
                exists(select 1 from pg_namespace where nspname = $1) as aside_schema, \
                to_regclass(format('%I.tasks', $1::text)) is not null as aside_tasks",
    )
    .bind(SEED_SCHEMA)
    .fetch_one(&mut *tx)
    .await?;

    let mut report = AdoptReport {
        dry_run,
        seed_schema: SEED_SCHEMA.into(),
        ..Default::default()
    };
    if found.absurd_schema && !found.ours {
        if !found.absurd_tasks {
            // Someone else's Absurd schema (`absurdctl init`): what plain migrate refuses.
            let version = db::schema_version_on(&mut tx)
                .await?
                .unwrap_or_else(|| "unknown".into());
            return Err(MigrateError::ForeignSchema { version }.into());
        }
        check_seed_table(&mut tx, "absurd").await?;
        if found.aside_schema {
            return Err(AdoptError::AsideTaken);
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "alter schema absurd rename to {SEED_SCHEMA}"
        )))
        .execute(&mut *tx)
        .await?;
        report.renamed = true;
    } else if found.aside_tasks {
        check_seed_table(&mut tx, SEED_SCHEMA).await?;
    } else {
        return Err(AdoptError::NoSeed);
    }

    let migrated = db::migrate_on(&mut tx).await?;
    report.migrations_applied = migrated.applied;
    report.schema_version = migrated.schema_version;

    let counts: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select status, count(*) from {SEED_SCHEMA}.tasks group by status order by status"
    )))
    .fetch_all(&mut *tx)
    .await?;
    report.seed_tasks = counts.into_iter().collect();

    check_unfinished(&mut tx).await?;
    carry_unfinished(&mut tx, retry_strategy, &mut report).await?;
    copy_finished(&mut tx, &mut report).await?;

    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(report)
}

/// The seed's table must have every column adopting reads.
async fn check_seed_table(
    conn: &mut PgConnection,
    schema: &str,
) -> std::result::Result<(), AdoptError> {
    let have: Vec<String> = sqlx::query_scalar(
        "select column_name::text from information_schema.columns \
         where table_schema = $1 and table_name = 'tasks'",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    if let Some(missing) = SEED_COLUMNS.iter().find(|c| !have.iter().any(|h| h == *c)) {
        return Err(AdoptError::NotTheSeedTable {
            schema: schema.into(),
            missing: (*missing).into(),
        });
    }
    Ok(())
}

/// Unfinished seed tasks that no Absurd task can hold (a queue name the schema refuses, a
/// blank task name) stop the adoption, naming them, before anything is carried.
async fn check_unfinished(conn: &mut PgConnection) -> std::result::Result<(), AdoptError> {
    let bad: Vec<(Uuid, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select task_id, case \
             when queue_name is null or queue_name = '' then 'its queue_name is empty' \
             when octet_length(queue_name) > 57 then \
                 format('its queue_name %s is %s bytes long; the limit is 57', \
                        left(queue_name, 64), octet_length(queue_name)) \
             else 'its task_name is empty' end \
         from {SEED_SCHEMA}.tasks \
         where status = any($1) \
           and (queue_name is null or queue_name = '' or octet_length(queue_name) > 57 \
                or task_name is null or btrim(task_name) = '') \
         order by created_at, task_id limit $2"
    )))
    .bind(&UNFINISHED[..])
    .bind(MAX_NAMED_ROWS)
    .fetch_all(&mut *conn)
    .await?;
    if bad.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = bad.iter().map(|(id, why)| format!("{id}: {why}")).collect();
    Err(AdoptError::Unusable(format!(
        "{} (fix or finish them in {SEED_SCHEMA}.tasks, then run again)",
        named.join("; ")
    )))
}

async fn carry_unfinished(
    conn: &mut PgConnection,
    retry_strategy: &RetryStrategy,
    report: &mut AdoptReport,
) -> std::result::Result<(), AdoptError> {
    let carried = "exists (select 1 from absurd.seed_carried c where c.seed_task_id = s.task_id)";
    let not_carried = format!("not {carried}");
    report.already_carried = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from {SEED_SCHEMA}.tasks s where s.status = any($1) and {carried}"
    )))
    .bind(&UNFINISHED[..])
    .fetch_one(&mut *conn)
    .await?;
    let queues: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select distinct s.queue_name from {SEED_SCHEMA}.tasks s \
         where s.status = any($1) and {not_carried} order by 1"
    )))
    .bind(&UNFINISHED[..])
    .fetch_all(&mut *conn)
    .await?;
    let strategy = serde_json::to_value(retry_strategy).expect("a retry strategy serialises");

    for queue in queues {
        check_queue_name(&queue).map_err(|e| AdoptError::Unusable(e.to_string()))?;
        let exists: bool =
            sqlx::query_scalar("select exists(select 1 from absurd.queues where queue_name = $1)")
                .bind(&queue)
                .fetch_one(&mut *conn)
                .await?;
        if !exists {
            sqlx::query("select absurd.create_queue($1)")
                .bind(&queue)
                .execute(&mut *conn)
                .await?;
            report.queues_created.push(queue.clone());
        }
        // In the seed's claim order; spawn_task validates each as any spawn.
        let rows: Vec<CarriedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "with src as ( \
                 select s.task_id, s.task_name, coalesce(s.params, '{{}}'::jsonb) as params, \
                        s.status, coalesce(s.attempt, 0) as attempt, \
                        coalesce(s.max_retries, 3) as max_retries, s.priority, s.timeout_sec, \
                        s.worker_id, s.created_at::timestamptz as created_at, \
                        s.claimed_at::timestamptz as claimed_at, \
                        row_number() over (order by s.priority desc, s.created_at, s.task_id) \
                            as rank \
                 from {SEED_SCHEMA}.tasks s \
                 where s.queue_name = $1 and s.status = any($2) and {not_carried} \
                 order by s.priority desc, s.created_at, s.task_id), \
             spawned as ( \
                 select src.*, sp.task_id as new_id, sp.run_id as new_run, sp.created \
                 from src cross join lateral absurd.spawn_task($1, src.task_name, src.params, \
                     jsonb_build_object( \
                         'max_attempts', greatest(src.max_retries + 1, src.attempt + 1, 1), \
                         'retry_strategy', $3::jsonb, \
                         'idempotency_key', 'seed:' || src.task_id::text, \
                         'headers', jsonb_strip_nulls(jsonb_build_object( \
                             'timeout_sec', case when src.timeout_sec between 1 and $4 \
                                                 then src.timeout_sec end, \
                             'seed', jsonb_build_object( \
                                 'task_id', src.task_id, 'status', src.status, \
                                 'priority', src.priority, 'attempt', src.attempt, \
                                 'worker_id', src.worker_id, 'claimed_at', src.claimed_at))))) sp), \
             noted as ( \
                 insert into absurd.seed_carried (seed_task_id, queue_name, task_id, seed_status, seed_attempt) \
                 select task_id, $1, new_id, status, attempt from spawned returning 1) \
             select task_id as seed_id, status, attempt, timeout_sec, \
                    coalesce(created_at, absurd.current_time()) as created_at, \
                    new_id, new_run, created, rank \
             from spawned order by rank"
        )))
        .bind(&queue)
        .bind(&UNFINISHED[..])
        .bind(&strategy)
        .bind(MAX_TIMEOUT_SEC as i32)
        .fetch_all(&mut *conn)
        .await?;

        // Number the next attempt after the seed's, keep its creation time, and keep the
        // seed's claim order: Absurd claims by (available_at, run_id), so each is made available
        // a microsecond after the one before, counted from the earliest of them (their spawns'
        // own times differ by more than that on a busy machine, and not always in rank order).
        let made: Vec<&CarriedRow> = rows.iter().filter(|r| r.created).collect();
        let ids: Vec<Uuid> = made.iter().map(|r| r.new_id).collect();
        let runs: Vec<Uuid> = made.iter().map(|r| r.new_run).collect();
        let next: Vec<i32> = made.iter().map(|r| r.attempt.max(0) + 1).collect();
        let ranks: Vec<i64> = made.iter().map(|r| r.rank).collect();
        let created: Vec<DateTime<Utc>> = made.iter().map(|r| r.created_at).collect();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "update {} t set attempts = v.n, enqueue_at = v.created_at \
             from unnest($1::uuid[], $2::int[], $3::timestamptz[]) as v(id, n, created_at) \
             where t.task_id = v.id",
            table("t", &queue)
        )))
        .bind(&ids)
        .bind(&next)
        .bind(&created)
        .execute(&mut *conn)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "update {r} r set attempt = v.n, \
                 available_at = b.base + v.rank * interval '1 microsecond' \
             from unnest($1::uuid[], $2::int[], $3::bigint[]) as v(id, n, rank), \
                  (select min(available_at) as base from {r} where run_id = any($1)) b \
             where r.run_id = v.id",
            r = table("r", &queue)
        )))
        .bind(&runs)
        .bind(&next)
        .bind(&ranks)
        .execute(&mut *conn)
        .await?;

        let mut per = CarriedQueue {
            queue_name: queue.clone(),
            ..Default::default()
        };
        for r in &rows {
            match r.status.as_str() {
                "pending" => per.pending += 1,
                "claimed" => per.claimed += 1,
                _ => per.retrying += 1,
            }
            if r.timeout_sec
                .is_some_and(|t| !(1..=MAX_TIMEOUT_SEC).contains(&(t as i64)))
            {
                report.timeouts_dropped.push(r.seed_id);
            }
        }
        report.carried_total += rows.len() as i64;
        report.carried.push(per);
    }
    Ok(())
}

async fn copy_finished(
    conn: &mut PgConnection,
    report: &mut AdoptReport,
) -> std::result::Result<(), AdoptError> {
    let finished: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from {SEED_SCHEMA}.tasks where status = any($1)"
    )))
    .bind(&FINISHED[..])
    .fetch_one(&mut *conn)
    .await?;
    report.history_copied = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "with copied as ( \
             insert into absurd.seed_history (task_id, queue_name, task_name, params, priority, \
                 timeout_sec, status, worker_id, attempt, max_retries, result, error, created_at, \
                 claimed_at, completed_at, wait_time_sec, execution_time_sec) \
             select task_id, coalesce(queue_name, ''), coalesce(task_name, ''), \
                 coalesce(params, '{{}}'::jsonb), coalesce(priority, 0), timeout_sec, status, \
                 worker_id, coalesce(attempt, 0), coalesce(max_retries, 3), result, error, \
                 coalesce(created_at::timestamptz, absurd.current_time()), claimed_at::timestamptz, \
                 completed_at::timestamptz, wait_time_sec, execution_time_sec \
             from {SEED_SCHEMA}.tasks where status = any($1) \
             on conflict (task_id) do nothing returning 1) \
         select count(*) from copied"
    )))
    .bind(&FINISHED[..])
    .fetch_one(&mut *conn)
    .await?;
    report.history_already = finished - report.history_copied;
    Ok(())
}

// ---- the history, for the API ---------------------------------------------------------------

/// A finished task of the seed, as `absurd.seed_history` keeps it (the seed's own columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct SeedTask {
    pub task_id: Uuid,
    pub queue_name: String,
    pub task_name: String,
    pub params: Value,
    pub priority: i32,
    pub timeout_sec: Option<i32>,
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    pub worker_id: Option<String>,
    pub attempt: i32,
    pub max_retries: i32,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub wait_time_sec: Option<f64>,
    pub execution_time_sec: Option<f64>,
    /// When the adoption copied it.
    pub copied_at: DateTime<Utc>,
}

/// Which finished seed tasks to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedFilter {
    pub queue: Option<String>,
    /// `completed`, `failed` or `cancelled`.
    pub status: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// A page of finished seed tasks, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedPage {
    pub tasks: Vec<SeedTask>,
    /// Tasks matching the filter over all pages.
    pub total: i64,
}

/// The largest page and offset [`Client::list_seed_history`] accepts.
pub const MAX_SEED_PAGE: i64 = 1000;
pub const MAX_SEED_OFFSET: i64 = 1_000_000;

const SEED_TASK_COLUMNS: &str = "task_id, queue_name, task_name, params, priority, timeout_sec, \
     status, worker_id, attempt, max_retries, result, error, created_at, claimed_at, completed_at, \
     wait_time_sec, execution_time_sec, copied_at";

impl Client {
    /// A page of the seed's finished tasks (`absurd.seed_history`), newest first; each
    /// without its `result` and `error` (read one with [`Client::get_seed_task`]). Empty on
    /// a database that never held the seed, or a schema without the history (`absurdctl
    /// init`).
    pub async fn list_seed_history(&self, filter: &SeedFilter) -> Result<SeedPage> {
        if !(1..=MAX_SEED_PAGE).contains(&filter.limit) {
            return Err(ClientError::InvalidInput(format!(
                "limit must be between 1 and {MAX_SEED_PAGE}, got {}",
                filter.limit
            )));
        }
        if !(0..=MAX_SEED_OFFSET).contains(&filter.offset) {
            return Err(ClientError::InvalidInput(format!(
                "offset must be between 0 and {MAX_SEED_OFFSET}, got {}",
                filter.offset
            )));
        }
        if let Some(s) = &filter.status {
            if !FINISHED.contains(&s.as_str()) {
                return Err(ClientError::InvalidInput(format!(
                    "status must be one of {}, got {s:?}",
                    FINISHED.join(", ")
                )));
            }
        }
        if !self.has_seed_history().await? {
            return Ok(SeedPage {
                tasks: vec![],
                total: 0,
            });
        }
        let filter_sql =
            "($1::text is null or queue_name = $1) and ($2::text is null or status = $2)";
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select count(*) from absurd.seed_history where {filter_sql}"
        )))
        .bind(&filter.queue)
        .bind(&filter.status)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))?;
        let tasks = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {} from absurd.seed_history where {filter_sql} \
             order by created_at desc, task_id desc limit $3 offset $4",
            SEED_TASK_COLUMNS
                .replace("result,", "null::jsonb as result,")
                .replace("error,", "null::text as error,")
        )))
        .bind(&filter.queue)
        .bind(&filter.status)
        .bind(filter.limit)
        .bind(filter.offset)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))?;
        Ok(SeedPage { tasks, total })
    }

    /// One finished seed task, with its result and error.
    pub async fn get_seed_task(&self, task_id: Uuid) -> Result<Option<SeedTask>> {
        if !self.has_seed_history().await? {
            return Ok(None);
        }
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {SEED_TASK_COLUMNS} from absurd.seed_history where task_id = $1"
        )))
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))
    }

    async fn has_seed_history(&self) -> Result<bool> {
        sqlx::query_scalar("select to_regclass('absurd.seed_history') is not null")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }
}
