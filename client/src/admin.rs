//! Administration: queues, spawning and reading tasks, cancelling and retrying them, events,
//! and cleanup. What `absurdctl`, the CLI and the HTTP API do; no worker needed.

use std::time::Duration;

use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::client::{check_queue_name, quote_literal, table, Client};
use crate::error::{ClientError, Result};
use crate::types::{
    Checkpoint, CleanupRow, RetryOptions, RunInfo, SpawnOptions, Spawned, TaskDetails, TaskFilter,
    TaskPage, TaskResult, TaskSummary, WaitInfo, MAX_LISTED_PARAMS_BYTES, MAX_SEARCH_CHARS,
};

/// The columns of [`TaskSummary`] but its queue name, in a task table.
const TASK_COLUMNS: &str = "task_id, task_name, state, attempts, max_attempts, enqueue_at, \
     first_started_at, cancelled_at, last_attempt_run, idempotency_key";

/// The columns of [`Checkpoint`], in a checkpoint table or a function's result (a SQL null
/// state reads as JSON `null`).
pub(crate) const CHECKPOINT_COLUMNS: &str =
    "checkpoint_name, coalesce(state, 'null'::jsonb) as state, status, owner_run_id, updated_at";

/// A task table's row, as [`Client::get_task`] reads it.
#[derive(FromRow)]
struct TaskRow {
    #[sqlx(flatten)]
    summary: TaskSummary,
    params: Option<Value>,
    headers: Option<Value>,
    retry_strategy: Option<Value>,
    cancellation: Option<Value>,
    completed_payload: Option<Value>,
}

impl Client {
    // ---- queues -------------------------------------------------------------------------

    pub async fn create_queue(&self, queue: &str) -> Result<()> {
        check_queue_name(queue)?;
        sqlx::query("select absurd.create_queue($1)")
            .bind(queue)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    /// Creates the queue only if it is not registered yet. Unlike `create_queue`, which
    /// re-runs its idempotent DDL (and so takes table locks), this is a plain read when the
    /// queue exists, safe to call while other sessions spawn into it.
    pub async fn ensure_queue(&self, queue: &str) -> Result<()> {
        if self.queue_exists(queue).await? {
            return Ok(());
        }
        // Sessions creating the same queue at once (workers dead-lettering at the same moment
        // into a DLQ that does not exist yet) can deadlock on the DDL's locks (40P01) or trip
        // over each other's catalog rows (23505, 42P07); PostgreSQL aborts all but one.
        // So our own callers take turns: a transaction-scoped advisory lock on the queue's
        // name serialises them, and the later ones find the queue made. Other clients (the
        // Absurd SDKs) do not take it; for them `create_queue` being idempotent is enough: an
        // aborted call tries again, and then finds the queue made by the one that went through.
        let mut retries = 0;
        loop {
            match self.create_queue_in_turn(queue).await {
                Err(ClientError::Database(sqlx::Error::Database(ref db)))
                    if retries < 5
                        && matches!(db.code().as_deref(), Some("40P01" | "23505" | "42P07")) =>
                {
                    retries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 * retries)).await;
                }
                done => return done,
            }
        }
    }

    /// `create_queue` under an advisory lock on the queue's name, held until it commits.
    async fn create_queue_in_turn(&self, queue: &str) -> Result<()> {
        check_queue_name(queue)?;
        let on = |e: sqlx::Error| ClientError::from_sqlx(e, Some(queue));
        let mut tx = self.pool.begin().await.map_err(on)?;
        sqlx::query(
            "select pg_advisory_xact_lock(hashtextextended('absurd.create_queue ' || $1, 0))",
        )
        .bind(queue)
        .execute(&mut *tx)
        .await
        .map_err(on)?;
        sqlx::query("select absurd.create_queue($1)")
            .bind(queue)
            .execute(&mut *tx)
            .await
            .map_err(on)?;
        tx.commit().await.map_err(on)
    }

    pub async fn drop_queue(&self, queue: &str) -> Result<()> {
        sqlx::query("select absurd.drop_queue($1)")
            .bind(queue)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    pub async fn list_queues(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("select queue_name from absurd.list_queues()")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    pub async fn queue_exists(&self, queue: &str) -> Result<bool> {
        sqlx::query_scalar("select exists(select 1 from absurd.queues where queue_name = $1)")
            .bind(queue)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    // ---- spawning and reading tasks ----------------------------------------------------

    pub async fn spawn(
        &self,
        queue: &str,
        task_name: &str,
        params: &Value,
        options: &SpawnOptions,
    ) -> Result<Spawned> {
        check_queue_name(queue)?;
        if task_name.trim().is_empty() {
            return Err(ClientError::InvalidInput(
                "task name must not be empty".into(),
            ));
        }
        if let Some(m) = options.max_attempts {
            if m < 1 {
                return Err(ClientError::InvalidInput(format!(
                    "max_attempts must be >= 1, got {m}"
                )));
            }
        }
        let opts = serde_json::to_value(options).expect("options serialise");
        sqlx::query_as(
            "select task_id, run_id, attempt, created from absurd.spawn_task($1, $2, $3, $4)",
        )
        .bind(queue)
        .bind(task_name)
        .bind(params)
        .bind(&opts)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// Spawns many tasks in one statement (one transaction), with the same `options` each;
    /// returns them in the order given.
    pub async fn spawn_batch(
        &self,
        queue: &str,
        tasks: &[(String, Value)],
        options: &SpawnOptions,
    ) -> Result<Vec<Spawned>> {
        check_queue_name(queue)?;
        if let Some(i) = tasks.iter().position(|(name, _)| name.trim().is_empty()) {
            return Err(ClientError::InvalidInput(format!(
                "task name {i} of the batch is empty"
            )));
        }
        let opts = serde_json::to_value(options).expect("options serialise");
        let names: Vec<&str> = tasks.iter().map(|(n, _)| n.as_str()).collect();
        let params: Vec<Value> = tasks.iter().map(|(_, p)| p.clone()).collect();
        sqlx::query_as(
            "select s.task_id, s.run_id, s.attempt, s.created \
             from unnest($2::text[], $3::jsonb[]) with ordinality as u (task_name, params, i) \
             cross join lateral absurd.spawn_task($1, u.task_name, u.params, $4) s \
             order by u.i",
        )
        .bind(queue)
        .bind(&names)
        .bind(&params)
        .bind(&opts)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// The task with its runs (oldest first), checkpoints and event waits; `None` if unknown.
    pub async fn get_task(&self, queue: &str, task_id: Uuid) -> Result<Option<TaskDetails>> {
        check_queue_name(queue)?;
        let q = |e| ClientError::from_sqlx(e, Some(queue));
        let sql = format!(
            "select $2::text as queue_name, {TASK_COLUMNS}, params, headers, retry_strategy, \
               cancellation, completed_payload \
             from {} where task_id = $1",
            table("t", queue)
        );
        let Some(row) = sqlx::query_as::<_, TaskRow>(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .bind(queue)
            .fetch_optional(&self.pool)
            .await
            .map_err(q)?
        else {
            return Ok(None);
        };
        let sql = format!(
            "select run_id, attempt, state, claimed_by, claim_expires_at, \
               case when available_at = 'infinity' then null else available_at end as available_at, \
               wake_event, event_payload, started_at, completed_at, failed_at, result, \
               failure_reason, created_at \
             from {} where task_id = $1 order by attempt, run_id",
            table("r", queue)
        );
        let runs: Vec<RunInfo> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q)?;
        let sql = format!(
            "select {CHECKPOINT_COLUMNS} from {} \
             where task_id = $1 order by updated_at, checkpoint_name",
            table("c", queue)
        );
        let checkpoints: Vec<Checkpoint> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q)?;
        let sql = format!(
            "select run_id, step_name, event_name, \
               case when timeout_at = 'infinity' then null else timeout_at end as timeout_at \
             from {} where task_id = $1 order by created_at",
            table("w", queue)
        );
        let waits: Vec<WaitInfo> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q)?;
        let mut summary = row.summary;
        // The params are the details' own; the last run's figures are the listing's.
        summary.params = None;
        summary.params_bytes = None;
        if let Some(last) = runs.last() {
            summary.claimed_at = last.started_at;
            summary.completed_at = last.completed_at.or(last.failed_at);
            summary.worker_id = last.claimed_by.clone();
        }
        Ok(Some(TaskDetails {
            summary,
            params: row.params.unwrap_or(Value::Null),
            headers: row.headers,
            retry_strategy: row.retry_strategy,
            cancellation: row.cancellation,
            completed_payload: row.completed_payload,
            runs,
            checkpoints,
            waits,
        }))
    }

    /// Finds which queue holds a task (for commands given only a task id).
    pub async fn find_task_queue(&self, task_id: Uuid) -> Result<Option<String>> {
        for queue in self.list_queues().await? {
            let sql = format!("select 1 from {} where task_id = $1", table("t", &queue));
            let hit = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(task_id)
                .fetch_optional(&self.pool)
                .await;
            match hit {
                Ok(Some(_)) => return Ok(Some(queue)),
                Ok(None) => {}
                // A registered queue whose tables were dropped by hand: skip it.
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => {}
                Err(e) => return Err(ClientError::from_sqlx(e, Some(&queue))),
            }
        }
        Ok(None)
    }

    /// Lists tasks newest first, with the total number matching the filter.
    pub async fn list_tasks(&self, filter: &TaskFilter) -> Result<TaskPage> {
        let limit = filter.limit.unwrap_or(50);
        if !(1..=1000).contains(&limit) {
            return Err(ClientError::InvalidInput(format!(
                "limit must be between 1 and 1000, got {limit}"
            )));
        }
        let cursor: Option<Uuid> = match &filter.cursor {
            None => None,
            Some(c) => Some(Uuid::parse_str(c).map_err(|_| {
                ClientError::InvalidInput(format!(
                    "cursor {c:?} is not a cursor returned by a listing"
                ))
            })?),
        };
        let pattern = match &filter.search {
            None => None,
            Some(t) if t.is_empty() => None,
            Some(t) => {
                let n = t.chars().count();
                if n > MAX_SEARCH_CHARS {
                    return Err(ClientError::InvalidInput(format!(
                        "search text is {n} characters long; the limit is {MAX_SEARCH_CHARS}"
                    )));
                }
                if t.contains('\0') {
                    return Err(ClientError::InvalidInput(
                        "search text must not contain NUL characters".into(),
                    ));
                }
                Some(contains_pattern(t))
            }
        };
        let queues = match &filter.queue {
            Some(q) => {
                check_queue_name(q)?;
                vec![q.clone()]
            }
            None => self.list_queues().await?,
        };
        if queues.is_empty() {
            return Ok(TaskPage {
                tasks: vec![],
                total: 0,
                next_cursor: None,
            });
        }
        // One union over the selected queues; $1 = state, $2 = task name, $3/$4 = enqueued
        // after/before, $5 = params search pattern; the page adds $6 = cursor, $7 = limit,
        // $8 = the largest params listed.
        let retrying = |q: &str| {
            if filter.retrying {
                // Waiting for a retry: past the first attempt, the current one not started.
                format!(
                    " and state in ('pending', 'sleeping') and attempts > 1 \
                     and exists (select 1 from {r} r where r.run_id = last_attempt_run \
                                 and r.started_at is null)",
                    r = table("r", q)
                )
            } else {
                String::new()
            }
        };
        let per_queue = |extra: &str| -> String {
            queues
                .iter()
                .map(|q| {
                    format!(
                        "select {lit} as queue_name, {TASK_COLUMNS}{extra} from {t} \
                         where ($1::text is null or state = $1) and ($2::text is null or task_name = $2) \
                           and ($3::timestamptz is null or enqueue_at >= $3) \
                           and ($4::timestamptz is null or enqueue_at < $4) \
                           and ($5::text is null or params::text ilike $5 escape '\\'){retrying}",
                        lit = quote_literal(q),
                        t = table("t", q),
                        retrying = retrying(q),
                    )
                })
                .collect::<Vec<_>>()
                .join(" union all ")
        };
        let count_sql = format!("select count(*) from ({}) x", per_queue(""));
        let state = filter.state.map(|s| s.as_str().to_string());
        let qerr = |e| ClientError::from_sqlx(e, filter.queue.as_deref());
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
            .bind(&state)
            .bind(&filter.task_name)
            .bind(filter.enqueued_after)
            .bind(filter.enqueued_before)
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await
            .map_err(qerr)?;
        // The page, then for its rows only: the last run (one index probe in its queue's run
        // table) and the params when they are small enough to list.
        let last_run = queues
            .iter()
            .map(|q| {
                format!(
                    "select r.started_at as claimed_at, coalesce(r.completed_at, r.failed_at) as completed_at, \
                       r.claimed_by as worker_id \
                     from {r} r where p.queue_name = {lit} and r.run_id = p.last_attempt_run",
                    r = table("r", q),
                    lit = quote_literal(q),
                )
            })
            .collect::<Vec<_>>()
            .join(" union all ");
        let columns = TASK_COLUMNS
            .split(',')
            .map(|c| format!("p.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let page_sql = format!(
            "with p as (select * from ({union}) x where ($6::uuid is null or task_id < $6) \
                        order by task_id desc limit $7) \
             select p.queue_name, {columns}, lr.claimed_at, lr.completed_at, lr.worker_id, \
               case when s.n <= $8 then p.listed_params end as params, s.n::int8 as params_bytes \
             from p \
               cross join lateral (select octet_length(p.listed_params::text) as n) s \
               left join lateral ({last_run}) lr on true \
             order by p.task_id desc",
            union = per_queue(", params as listed_params"),
        );
        let mut tasks: Vec<TaskSummary> = sqlx::query_as(sqlx::AssertSqlSafe(page_sql))
            .bind(&state)
            .bind(&filter.task_name)
            .bind(filter.enqueued_after)
            .bind(filter.enqueued_before)
            .bind(&pattern)
            .bind(cursor)
            .bind(limit + 1)
            .bind(MAX_LISTED_PARAMS_BYTES)
            .fetch_all(&self.pool)
            .await
            .map_err(qerr)?;
        let next_cursor = if tasks.len() as i64 > limit {
            tasks.truncate(limit as usize);
            tasks.last().map(|t| t.task_id.to_string())
        } else {
            None
        };
        Ok(TaskPage {
            tasks,
            total,
            next_cursor,
        })
    }

    pub async fn cancel_task(&self, queue: &str, task_id: Uuid) -> Result<()> {
        check_queue_name(queue)?;
        sqlx::query("select absurd.cancel_task($1, $2)")
            .bind(queue)
            .bind(task_id)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    pub async fn retry_task(
        &self,
        queue: &str,
        task_id: Uuid,
        options: &RetryOptions,
    ) -> Result<Spawned> {
        check_queue_name(queue)?;
        let opts = serde_json::to_value(options).expect("options serialise");
        sqlx::query_as(
            "select task_id, run_id, attempt, created from absurd.retry_task($1, $2, $3)",
        )
        .bind(queue)
        .bind(task_id)
        .bind(&opts)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// `get_task_result`; `None` for an unknown task.
    pub async fn task_result(&self, queue: &str, task_id: Uuid) -> Result<Option<TaskResult>> {
        check_queue_name(queue)?;
        sqlx::query_as(
            "select task_id, state, result, failure_reason from absurd.get_task_result($1, $2)",
        )
        .bind(queue)
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// Polls `get_task_result` (25 ms growing to 1 s) until the task is terminal or
    /// `timeout` passes.
    pub async fn await_result(
        &self,
        queue: &str,
        task_id: Uuid,
        timeout: Duration,
    ) -> Result<TaskResult> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(25);
        loop {
            let r = self.task_result(queue, task_id).await?.ok_or_else(|| {
                ClientError::Rejected(format!("Task \"{task_id}\" not found in queue \"{queue}\""))
            })?;
            if r.state.is_terminal() {
                return Ok(r);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout(format!(
                    "task {task_id} is still {} after {:.1?}",
                    r.state, timeout
                )));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    pub async fn emit_event(
        &self,
        queue: &str,
        event_name: &str,
        payload: Option<&Value>,
    ) -> Result<()> {
        check_queue_name(queue)?;
        if event_name.trim().is_empty() {
            return Err(ClientError::InvalidInput(
                "event name must not be empty".into(),
            ));
        }
        sqlx::query("select absurd.emit_event($1, $2, $3)")
            .bind(queue)
            .bind(event_name)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    // ---- maintenance ---------------------------------------------------------------------

    pub async fn cleanup_tasks(&self, queue: &str, ttl_secs: i32, limit: i32) -> Result<i32> {
        sqlx::query_scalar("select absurd.cleanup_tasks($1, $2, $3)")
            .bind(queue)
            .bind(ttl_secs)
            .bind(limit)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    pub async fn cleanup_events(&self, queue: &str, ttl_secs: i32, limit: i32) -> Result<i32> {
        sqlx::query_scalar("select absurd.cleanup_events($1, $2, $3)")
            .bind(queue)
            .bind(ttl_secs)
            .bind(limit)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    pub async fn cleanup_all_queues(&self, queue: Option<&str>) -> Result<Vec<CleanupRow>> {
        sqlx::query_as(
            "select queue_name, tasks_deleted, events_deleted from absurd.cleanup_all_queues($1)",
        )
        .bind(queue)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, queue))
    }
}

/// An `ILIKE` pattern matching `text` anywhere, with `%`, `_` and `\` taken literally.
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_take_wildcards_literally() {
        assert_eq!(contains_pattern("abc"), "%abc%");
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
        assert_eq!(contains_pattern(""), "%%");
    }
}
