//! The reads behind the dead-letter queue: a task that ended `failed`, with what its copy
//! records, and the failures a sweep has not copied yet. The copying itself (a `spawn_task`
//! with an idempotency key) is the engine's `settle::dead_letter`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use crate::client::{table, Client};
use crate::error::{ClientError, Result};

/// A task that ended `failed`, with its last run: what a dead-letter copy records. A JSON
/// column that does not decode reads as `{"$unreadable": reason}`, so that a task whose data
/// the host cannot read is dead-lettered all the same.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedTask {
    pub task_id: Uuid,
    pub task_name: String,
    pub attempts: i32,
    /// The failed run (the task's last attempt).
    pub run_id: Uuid,
    /// The worker that claimed the failed run.
    pub claimed_by: Option<String>,
    pub params: Option<Value>,
    pub failure_reason: Option<Value>,
}

impl<'r> FromRow<'r, PgRow> for FailedTask {
    fn from_row(row: &'r PgRow) -> Result<FailedTask, sqlx::Error> {
        Ok(FailedTask {
            task_id: row.try_get("task_id")?,
            task_name: row.try_get("task_name")?,
            attempts: row.try_get("attempts")?,
            run_id: row.try_get("run_id")?,
            claimed_by: row.try_get("claimed_by")?,
            params: readable(row, "params"),
            failure_reason: readable(row, "failure_reason"),
        })
    }
}

/// A JSON column of a dead task, or `{"$unreadable": reason}` when it does not decode.
fn readable(row: &PgRow, col: &str) -> Option<Value> {
    row.try_get::<Option<Value>, _>(col).unwrap_or_else(|e| {
        let reason = match &e {
            sqlx::Error::ColumnDecode { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        Some(json!({ "$unreadable": reason }))
    })
}

/// How long before the sweep horizon a claim may have read its clock and still be
/// uncommitted ([`Client::dead_letter_horizon`]). A claim is one statement that commits in
/// milliseconds; a minute covers one slowed by a busy server, and costs a sweep only re-reading
/// the failures of that minute (each a probe of the dead-letter queue's key index).
pub const CLAIM_COMMIT_ALLOWANCE_SECS: i32 = 60;

/// The columns of [`FailedTask`], from a task table `t` joined with its run table `r`.
const FAILED_COLUMNS: &str =
    "t.task_id, t.task_name, t.params, t.attempts, r.run_id, r.failure_reason, r.claimed_by";

impl Client {
    /// The task, if it is `failed`, with its last run.
    pub async fn failed_task(&self, queue: &str, task_id: Uuid) -> Result<Option<FailedTask>> {
        let sql = format!(
            "select {FAILED_COLUMNS}
             from {t} t join {r} r on r.run_id = t.last_attempt_run
             where t.task_id = $1 and t.state = 'failed'",
            t = table("t", queue),
            r = table("r", queue)
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// Where the next dead-letter sweep of `queue` may start: no run still in flight now can
    /// end up with an earlier claim time (the earliest `available_at` of its running and
    /// sleeping runs, or now), less [`CLAIM_COMMIT_ALLOWANCE_SECS`].
    ///
    /// The allowance is for claims in flight: a claim stamps its run with the clock it read
    /// when it began (`available_at`), and this statement cannot see that run as running
    /// until the claim commits. Without it, a run claimed a moment before the horizon and
    /// committed a moment after would start before every later sweep's window, and a failure
    /// of that run that its worker could not copy would never be dead-lettered.
    pub async fn dead_letter_horizon(&self, queue: &str) -> Result<DateTime<Utc>> {
        let sql = format!(
            "select least(
                (select min(available_at) from {r} where state = 'running'),
                (select min(available_at) from {r} where state = 'sleeping'),
                absurd.current_time()) - make_interval(secs => {CLAIM_COMMIT_ALLOWANCE_SECS})",
            r = table("r", queue)
        );
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// Up to `limit` tasks of `queue` that ended failed in a run claimed at or after `since`
    /// and have no copy in `dlq` yet (copies carry the idempotency key
    /// `dead-letter:<queue>:<task id>:<failed run id>`), oldest first, through the
    /// `(state, available_at)` index.
    pub async fn failed_tasks_since(
        &self,
        queue: &str,
        dlq: &str,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<FailedTask>> {
        let sql = format!(
            "select {FAILED_COLUMNS}
             from {r} r join {t} t on t.task_id = r.task_id and t.last_attempt_run = r.run_id
             where r.state = 'failed' and r.available_at >= $1 and t.state = 'failed'
               and not exists (select 1 from {d} d
                               where d.idempotency_key = 'dead-letter:' || $2 || ':' || t.task_id || ':' || r.run_id)
             order by r.available_at
             limit {limit}",
            t = table("t", queue),
            r = table("r", queue),
            d = table("t", dlq)
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(since)
            .bind(queue)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }
}
