//! Tasks that wait for other tasks, and tasks' children (migration 0019).
//!
//! A run waits for another task's result through `absurd.await_task_result`, which suspends it
//! as an event wait does; a trigger on every queue's task table wakes it when the awaited task
//! finishes, whoever finished it. A task spawned from a run through
//! [`Client::spawn_child`] is recorded as that task's child, and cancelled with it.
//!
//! A run waits for whichever of several tasks ends first through
//! `absurd.await_any_task_result` (migration 0023), on an event only that wait uses; the same
//! trigger emits it when the first of them ends. A run cancels one of its children with
//! [`Client::cancel_child`].
//!
//! A schema installed by `absurdctl init` has none of this: [`Client::has_task_results`] says
//! so, and the engine then polls [`Client::task_result`] instead.

use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

use crate::claimed::{
    claim_sql, claimed_from_row, inline_checkpoints, invalid_data, limit_exceeded, Claimed,
    ReadLimits,
};
use crate::client::{check_queue_name, sql_limit, Client};
use crate::error::{ClientError, Result};
use crate::failure::Failure;
use crate::types::{SpawnOptions, Spawned};

/// The prefix of the internal event a waiter waits on: `<prefix><child queue>:<task id>`.
pub const TASK_DONE_EVENT_PREFIX: &str = "$absurd_host.task_done:";

/// The default step name of a wait for `task_id`'s result (the SDKs' convention).
pub fn await_step_name(task_id: &Uuid) -> String {
    format!("$awaitTaskResult:{task_id}")
}

/// What every spawn of a child checks before it asks the database; returns the options as the
/// SQL functions take them.
fn child_spawn_checks(
    queue: &str,
    task_name: &str,
    options: &SpawnOptions,
    parent_queue: &str,
) -> Result<Value> {
    check_queue_name(queue)?;
    check_queue_name(parent_queue)?;
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
    Ok(serde_json::to_value(options).expect("options serialise"))
}

/// The worker a spawn claims a run for, with [`Client::spawn_child_and_claim`].
#[derive(Debug, Clone, Copy)]
pub struct ClaimFor<'a> {
    pub worker_id: &'a str,
    pub claim_timeout_secs: i32,
    pub limits: &'a ReadLimits,
}

impl Client {
    /// Whether the schema has migration 0019's `absurd.await_task_result` and
    /// `absurd.spawn_child_task`, and migration 0023's `absurd.await_any_task_result` (a schema
    /// installed by `absurdctl init` has none of them).
    pub async fn has_task_results(&self) -> Result<bool> {
        sqlx::query_scalar(
            "select to_regprocedure('absurd.await_task_result(text,uuid,uuid,text,text,uuid,integer)') is not null \
                and to_regprocedure('absurd.spawn_child_task(text,text,jsonb,jsonb,text,uuid)') is not null \
                and to_regprocedure('absurd.await_any_task_result(text,uuid,uuid,text,text[],uuid[],integer)') is not null",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Waits, for the running run `run_id` of `task_id` in `queue`, for the task
    /// `child_task_id` of `child_queue` to finish (`absurd.await_task_result`). Returns
    /// `(true, _)` when the run is suspended now; else the outcome
    /// (`{"state", "result" | "failure"}`), `None` when `timeout_secs` passed first. The
    /// outcome is measured in SQL and sent only within `max_bytes`; one over it, or one that
    /// cannot be read, is `Ok((false, Err(failure)))`, to fail the run permanently.
    #[allow(clippy::too_many_arguments)]
    pub async fn await_task_result_bounded(
        &self,
        queue: &str,
        task_id: Uuid,
        run_id: Uuid,
        step_name: &str,
        child_queue: &str,
        child_task_id: Uuid,
        timeout_secs: Option<i32>,
        max_bytes: u64,
    ) -> Result<(bool, Result<Option<Value>, Failure>)> {
        check_queue_name(queue)?;
        check_queue_name(child_queue)?;
        let row = sqlx::query(
            "select a.should_suspend, s.bytes, \
                    case when s.bytes <= $8::int8 then a.payload end as outcome \
             from absurd.await_task_result($1, $2, $3, $4, $5, $6, $7) a \
             cross join lateral (select octet_length(a.payload::text)::int8 as bytes) s",
        )
        .bind(queue)
        .bind(task_id)
        .bind(run_id)
        .bind(step_name)
        .bind(child_queue)
        .bind(child_task_id)
        .bind(timeout_secs)
        .bind(sql_limit(max_bytes))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let suspend: bool = row
            .try_get("should_suspend")
            .map_err(ClientError::Database)?;
        let bytes: Option<i64> = row.try_get("bytes").map_err(ClientError::Database)?;
        if let Some(n) = bytes.filter(|n| *n as u64 > max_bytes) {
            return Ok((
                false,
                Err(limit_exceeded(
                    "the awaited task's outcome",
                    n as u64,
                    "max_checkpoint_bytes",
                    max_bytes,
                )),
            ));
        }
        let outcome = match row.try_get::<Option<Value>, _>("outcome") {
            Ok(v) => Ok(v),
            Err(e) => Err(invalid_data("the awaited task's outcome", &e)),
        };
        Ok((suspend, outcome))
    }

    /// Waits, for the running run `run_id` of `task_id` in `queue`, until any of `tasks`
    /// (`(queue, task id)` pairs, in the caller's order) has ended
    /// (`absurd.await_any_task_result`, migration 0023). Returns `(true, _)` when the run is
    /// suspended now; else the answer (`{"index", "task_id", "queue", "state", "result" |
    /// "failure"}`), `None` when `timeout_secs` passed first. Measured in SQL and sent only
    /// within `max_bytes`, as [`Client::await_task_result_bounded`].
    #[allow(clippy::too_many_arguments)]
    pub async fn await_any_task_result_bounded(
        &self,
        queue: &str,
        task_id: Uuid,
        run_id: Uuid,
        step_name: &str,
        tasks: &[(String, Uuid)],
        timeout_secs: Option<i32>,
        max_bytes: u64,
    ) -> Result<(bool, Result<Option<Value>, Failure>)> {
        check_queue_name(queue)?;
        for (q, _) in tasks {
            check_queue_name(q)?;
        }
        let queues: Vec<&str> = tasks.iter().map(|(q, _)| q.as_str()).collect();
        let ids: Vec<Uuid> = tasks.iter().map(|(_, id)| *id).collect();
        let row = sqlx::query(
            "select a.should_suspend, s.bytes, \
                    case when s.bytes <= $8::int8 then a.payload end as outcome \
             from absurd.await_any_task_result($1, $2, $3, $4, $5, $6, $7) a \
             cross join lateral (select octet_length(a.payload::text)::int8 as bytes) s",
        )
        .bind(queue)
        .bind(task_id)
        .bind(run_id)
        .bind(step_name)
        .bind(&queues)
        .bind(&ids)
        .bind(timeout_secs)
        .bind(sql_limit(max_bytes))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let suspend: bool = row
            .try_get("should_suspend")
            .map_err(ClientError::Database)?;
        let bytes: Option<i64> = row.try_get("bytes").map_err(ClientError::Database)?;
        if let Some(n) = bytes.filter(|n| *n as u64 > max_bytes) {
            return Ok((
                false,
                Err(limit_exceeded(
                    "the awaited task's outcome",
                    n as u64,
                    "max_checkpoint_bytes",
                    max_bytes,
                )),
            ));
        }
        let outcome = match row.try_get::<Option<Value>, _>("outcome") {
            Ok(v) => Ok(v),
            Err(e) => Err(invalid_data("the awaited task's outcome", &e)),
        };
        Ok((suspend, outcome))
    }

    /// Cancels `child_task_id` of `child_queue` if it is a child of `parent_task_id` of
    /// `parent_queue` (recorded by [`Client::spawn_child`]): `None` when it is not,
    /// `Some(true)` when it was cancelled now, `Some(false)` when it had ended already.
    pub async fn cancel_child(
        &self,
        parent_queue: &str,
        parent_task_id: Uuid,
        child_queue: &str,
        child_task_id: Uuid,
    ) -> Result<Option<bool>> {
        check_queue_name(parent_queue)?;
        check_queue_name(child_queue)?;
        let (is_child, state): (bool, Option<String>) = sqlx::query_as(
            "select exists (select 1 from absurd.task_children c \
                            where c.parent_queue = $1 and c.parent_task_id = $2 \
                              and c.child_queue = $3 and c.child_task_id = $4), \
                    (select g.state from absurd.get_task_result($3, $4) g)",
        )
        .bind(parent_queue)
        .bind(parent_task_id)
        .bind(child_queue)
        .bind(child_task_id)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(child_queue)))?;
        if !is_child {
            return Ok(None);
        }
        if matches!(
            state.as_deref(),
            None | Some("completed" | "failed" | "cancelled")
        ) {
            return Ok(Some(false));
        }
        sqlx::query("select absurd.cancel_task($1, $2)")
            .bind(child_queue)
            .bind(child_task_id)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(child_queue)))?;
        Ok(Some(true))
    }

    /// The outcome of `task_id` in `queue` as `absurd.await_task_result` would give it
    /// (`{"state", "result" | "failure"}`), `None` while it has not finished, measured in SQL
    /// first like [`Client::await_task_result_bounded`]. For schemas without migration 0019.
    /// An unknown task is [`ClientError::Rejected`].
    pub async fn task_outcome_bounded(
        &self,
        queue: &str,
        task_id: Uuid,
        max_bytes: u64,
    ) -> Result<Result<Option<Value>, Failure>> {
        check_queue_name(queue)?;
        let row = sqlx::query(
            "with r as (select g.state, \
                   case g.state \
                     when 'completed' then jsonb_build_object('state', 'completed', 'result', coalesce(g.result, 'null'::jsonb)) \
                     when 'failed' then jsonb_build_object('state', 'failed', 'failure', coalesce(g.failure_reason, 'null'::jsonb)) \
                     when 'cancelled' then jsonb_build_object('state', 'cancelled') \
                   end as payload \
                 from absurd.get_task_result($1, $2) g) \
             select s.bytes, case when s.bytes <= $3::int8 then r.payload end as outcome \
             from r cross join lateral (select octet_length(r.payload::text)::int8 as bytes) s",
        )
        .bind(queue)
        .bind(task_id)
        .bind(sql_limit(max_bytes))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let Some(row) = row else {
            return Err(ClientError::Rejected(format!(
                "Task \"{task_id}\" not found in queue \"{queue}\""
            )));
        };
        let bytes: Option<i64> = row.try_get("bytes").map_err(ClientError::Database)?;
        if let Some(n) = bytes.filter(|n| *n as u64 > max_bytes) {
            return Ok(Err(limit_exceeded(
                "the awaited task's outcome",
                n as u64,
                "max_checkpoint_bytes",
                max_bytes,
            )));
        }
        Ok(match row.try_get::<Option<Value>, _>("outcome") {
            Ok(v) => Ok(v),
            Err(e) => Err(invalid_data("the awaited task's outcome", &e)),
        })
    }

    /// Spawns a task (as [`Client::spawn`]) as a child of `parent_task_id` of `parent_queue`
    /// (`absurd.spawn_child_task`): cancelling the parent cancels the child while it has not
    /// finished. A parent cancelled already refuses the spawn with [`ClientError::Cancelled`].
    pub async fn spawn_child(
        &self,
        queue: &str,
        task_name: &str,
        params: &Value,
        options: &SpawnOptions,
        parent_queue: &str,
        parent_task_id: Uuid,
    ) -> Result<Spawned> {
        let opts = child_spawn_checks(queue, task_name, options, parent_queue)?;
        sqlx::query_as(
            "select task_id, run_id, attempt, created \
             from absurd.spawn_child_task($1, $2, $3, $4, $5, $6)",
        )
        .bind(queue)
        .bind(task_name)
        .bind(params)
        .bind(&opts)
        .bind(parent_queue)
        .bind(parent_task_id)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// [`Client::spawn_child`] and, in the same statement, the checkpoint `checkpoint_name` of
    /// the spawning run `parent_run_id` holding the new task's id (as JSON text), so that a
    /// re-execution of the parent replays the spawn without asking the database again. The
    /// checkpoint write renews the parent's lease by `extend_claim_by` and fences it as
    /// `set_task_checkpoint_state` does (a cancelled parent spawns nothing).
    #[allow(clippy::too_many_arguments)]
    pub async fn spawn_child_checkpointed(
        &self,
        queue: &str,
        task_name: &str,
        params: &Value,
        options: &SpawnOptions,
        parent_queue: &str,
        parent_task_id: Uuid,
        parent_run_id: Uuid,
        checkpoint_name: &str,
        extend_claim_by: Option<i32>,
    ) -> Result<Spawned> {
        let opts = child_spawn_checks(queue, task_name, options, parent_queue)?;
        sqlx::query_as(
            "with s as (select task_id, run_id, attempt, created \
                        from absurd.spawn_child_task($1, $2, $3, $4, $5, $6)), \
                  c as (select absurd.set_task_checkpoint_state($5, $6, $7, to_jsonb(s.task_id::text), $8, $9) \
                        from s) \
             select s.task_id, s.run_id, s.attempt, s.created from s, c",
        )
        .bind(queue)
        .bind(task_name)
        .bind(params)
        .bind(&opts)
        .bind(parent_queue)
        .bind(parent_task_id)
        .bind(checkpoint_name)
        .bind(parent_run_id)
        .bind(extend_claim_by)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// Whether the schema has `absurd.spawn_child_and_claim` (migration 0027).
    pub async fn has_spawn_and_claim(&self) -> Result<bool> {
        sqlx::query_scalar(
            "select to_regprocedure('absurd.spawn_child_and_claim(text,text,jsonb,jsonb,text,uuid,uuid,text,integer,text,integer)') is not null",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// [`Client::spawn_child_checkpointed`] and, in the same transaction, a claim of one run of
    /// `queue` for `claim`'s worker through the queue's claim function, exactly as that
    /// worker's claim loop would claim: the oldest ready run, the new task's unless older runs
    /// wait (`absurd.spawn_child_and_claim`, migration 0027). A queue without the claim
    /// function claims nothing. Needs [`Client::has_spawn_and_claim`].
    #[allow(clippy::too_many_arguments)]
    pub async fn spawn_child_and_claim(
        &self,
        queue: &str,
        task_name: &str,
        params: &Value,
        options: &SpawnOptions,
        parent_queue: &str,
        parent_task_id: Uuid,
        parent_run_id: Uuid,
        checkpoint_name: &str,
        extend_claim_by: Option<i32>,
        claim: ClaimFor<'_>,
    ) -> Result<(Spawned, Option<Claimed>)> {
        let opts = child_spawn_checks(queue, task_name, options, parent_queue)?;
        let sql = claim_sql(
            "absurd.spawn_child_and_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            ", f.checkpoints, f.spawned_task_id, f.spawned_run_id, f.spawned_attempt, f.created",
            12,
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(queue)
            .bind(task_name)
            .bind(params)
            .bind(&opts)
            .bind(parent_queue)
            .bind(parent_task_id)
            .bind(parent_run_id)
            .bind(checkpoint_name)
            .bind(extend_claim_by)
            .bind(claim.worker_id)
            .bind(claim.claim_timeout_secs)
            .bind(sql_limit(claim.limits.max_event_payload_bytes))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let err = |e: sqlx::Error| ClientError::from_sqlx(e, Some(queue));
        let spawned = Spawned {
            task_id: row.try_get("spawned_task_id").map_err(err)?,
            run_id: row.try_get("spawned_run_id").map_err(err)?,
            attempt: row.try_get("spawned_attempt").map_err(err)?,
            created: row.try_get("created").map_err(err)?,
        };
        let claimed = match row.try_get::<Option<Uuid>, _>("run_id") {
            Ok(Some(_)) => claimed_from_row(&row, claim.limits).map(|mut c| {
                c.checkpoints = inline_checkpoints(&row);
                c
            }),
            _ => None,
        };
        Ok((spawned, claimed))
    }

    /// The children recorded for a task that has not finished: `(queue, task id)` pairs.
    pub async fn task_children(
        &self,
        parent_queue: &str,
        parent_task_id: Uuid,
    ) -> Result<Vec<(String, Uuid)>> {
        check_queue_name(parent_queue)?;
        sqlx::query_as(
            "select child_queue, child_task_id from absurd.task_children \
             where parent_queue = $1 and parent_task_id = $2 order by created_at, child_task_id",
        )
        .bind(parent_queue)
        .bind(parent_task_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(parent_queue)))
    }
}
