//! Dead-letter: copying every task that ends `failed` into the dead-letter queue, once.
//!
//! Exactly-once comes from the database, not from the worker: each copy is spawned with the
//! idempotency key `dead-letter:<queue>:<task id>:<failed run id>`, so however many hosts
//! notice the same failure, `spawn_task` creates one `dead-letter` task. (A task retried by
//! hand and failed again has a new last run, and is dead-lettered again.)
//!
//! Failures are noticed two ways: right after this worker's own `fail_run` ends a task, and by
//! a periodic sweep that finds failures written elsewhere (lease expiry swept by any claim,
//! another worker, an SDK). The sweep only looks at failed runs claimed since the oldest run
//! that was still in flight at the previous sweep, through the `(state, available_at)` index.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::Row;
use tracing::{info, warn};
use uuid::Uuid;

use crate::client::{table, Client, ClientError, SpawnOptions};

/// The task name of dead-letter copies.
pub const TASK_NAME: &str = "dead-letter";

pub struct DeadLetters {
    client: Client,
    queue: String,
    dlq: String,
    worker_id: String,
    /// Only failed runs claimed at or after this instant can be new since the last sweep.
    since: Option<DateTime<Utc>>,
}

fn key(queue: &str, task_id: Uuid, run_id: Uuid) -> String {
    format!("dead-letter:{queue}:{task_id}:{run_id}")
}

impl DeadLetters {
    pub fn new(client: Client, queue: &str, dlq: &str, worker_id: &str) -> DeadLetters {
        DeadLetters {
            client,
            queue: queue.to_string(),
            dlq: dlq.to_string(),
            worker_id: worker_id.to_string(),
            since: None,
        }
    }

    /// Creates the dead-letter queue if it is missing.
    pub async fn ensure_queue(&self) -> Result<(), ClientError> {
        self.client.ensure_queue(&self.dlq).await
    }

    /// Copies one failed task (if it is failed) into the dead-letter queue.
    pub async fn route(&self, task_id: Uuid) -> Result<bool, ClientError> {
        let sql = format!(
            "select t.task_id, t.task_name, t.params, t.attempts, r.run_id, r.failure_reason, r.claimed_by
             from {t} t join {r} r on r.run_id = t.last_attempt_run
             where t.task_id = $1 and t.state = 'failed'",
            t = table("t", &self.queue),
            r = table("r", &self.queue)
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_optional(self.client.pool())
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(&self.queue)))?;
        match row {
            Some(row) => self.copy(&row).await,
            None => Ok(false),
        }
    }

    async fn copy(&self, row: &sqlx::postgres::PgRow) -> Result<bool, ClientError> {
        let g = |e: sqlx::Error| ClientError::Database(e);
        let task_id: Uuid = row.try_get("task_id").map_err(g)?;
        let run_id: Uuid = row.try_get("run_id").map_err(g)?;
        let task_name: String = row.try_get("task_name").map_err(g)?;
        let claimed_by: Option<String> = row.try_get("claimed_by").map_err(g)?;
        let params = json!({
            "original_task_id": task_id,
            "original_task_name": task_name,
            "original_queue": self.queue,
            "params": readable(row, "params"),
            "error": readable(row, "failure_reason"),
            "attempts": row.try_get::<i32, _>("attempts").map_err(g)?,
            "dead_lettered_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "worker_id": claimed_by.unwrap_or_else(|| self.worker_id.clone()),
        });
        let opts = SpawnOptions {
            max_attempts: Some(1),
            idempotency_key: Some(key(&self.queue, task_id, run_id)),
            ..Default::default()
        };
        let spawned = self
            .client
            .spawn(&self.dlq, TASK_NAME, &params, &opts)
            .await?;
        if spawned.created {
            info!(%task_id, task_name, dead_letter_task = %spawned.task_id, dlq = %self.dlq, "task dead-lettered");
        }
        Ok(spawned.created)
    }

    /// Finds failed tasks not yet in the dead-letter queue and copies them. Returns the task
    /// names of the copies this call created (for the counters).
    pub async fn sweep(&mut self) -> Result<Vec<String>, ClientError> {
        let qerr = |e| ClientError::from_sqlx(e, Some(&self.queue));
        // Where the next sweep may start: no run still in flight now can end up with an
        // earlier claim time.
        let next_since: DateTime<Utc> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select least(
                (select min(available_at) from {r} where state = 'running'),
                (select min(available_at) from {r} where state = 'sleeping'),
                absurd.current_time())",
            r = table("r", &self.queue)
        )))
        .fetch_one(self.client.pool())
        .await
        .map_err(qerr)?;
        let sql = format!(
            "select t.task_id, t.task_name, t.params, t.attempts, r.run_id, r.failure_reason, r.claimed_by
             from {r} r join {t} t on t.task_id = r.task_id and t.last_attempt_run = r.run_id
             where r.state = 'failed' and r.available_at >= $1 and t.state = 'failed'
               and not exists (select 1 from {d} d
                               where d.idempotency_key = 'dead-letter:' || $2 || ':' || t.task_id || ':' || r.run_id)
             order by r.available_at
             limit 500",
            t = table("t", &self.queue),
            r = table("r", &self.queue),
            d = table("t", &self.dlq)
        );
        // First sweep: everything (runs claimed since the epoch), through the same index.
        let since = self.since.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(since)
            .bind(&self.queue)
            .fetch_all(self.client.pool())
            .await
            .map_err(qerr)?;
        let mut copied = Vec::new();
        for row in &rows {
            if self.copy(row).await? {
                copied.push(row.try_get("task_name").map_err(ClientError::Database)?);
            }
        }
        // A full page may have more behind it: keep the old starting point until drained.
        if rows.len() < 500 {
            self.since = Some(next_since);
        } else {
            warn!(queue = %self.queue, "dead-letter sweep found 500+ failed tasks; continuing next round");
        }
        Ok(copied)
    }
}

/// A JSON column of a dead task, or `{"$unreadable": reason}` when it does not decode.
fn readable(row: &sqlx::postgres::PgRow, col: &str) -> Option<Value> {
    row.try_get::<Option<Value>, _>(col).unwrap_or_else(|e| {
        let reason = match &e {
            sqlx::Error::ColumnDecode { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        Some(json!({ "$unreadable": reason }))
    })
}
