//! The worker protocol: what a worker does with a run it has claimed. Completing and failing
//! it, scheduling it (sleeps, hand-backs), renewing its lease, its checkpoints and event
//! waits. Every write names the run; the schema refuses a stale run (`AB002`) or a cancelled
//! task (`AB001`), which the client reports as [`ClientError::is_run_lost`].
//!
//! Claiming itself is [`crate::claimed`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use crate::admin::CHECKPOINT_COLUMNS;
use crate::claimed::{payload_from_row, ReadLimits};
use crate::client::{check_queue_name, sql_limit, table, Client};
use crate::dead_letter::FailedTask;
use crate::error::{ClientError, Result};
use crate::failure::Failure;
use crate::types::{AwaitOutcome, Checkpoint, ClaimedRun, State};

/// How a worker's failure of a run ended (see [`Client::fail_run_for_worker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedRun {
    /// The run's failure was the task's last attempt: the task is `failed` now.
    pub task_failed: bool,
}

/// A leased run's state, and its task's (see [`Client::lease_states`]).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LeaseState {
    pub run_id: Uuid,
    #[sqlx(try_from = "String")]
    pub state: State,
    #[sqlx(try_from = "String")]
    pub task_state: State,
}

/// For each run a batch completion was given, its state afterwards: `completed` (by this call,
/// or already), or the state that kept it from completing (`cancelled`, `failed`, `pending`,
/// ..., `missing`).
pub type CompletedStates = Vec<(Uuid, String)>;

/// What failing a run through `absurd.fail_run_outcome` (migration 0013) did.
#[derive(Debug, Clone, PartialEq)]
pub struct FailOutcome {
    /// The task's state afterwards: `pending`/`sleeping` (a retry is scheduled), `failed`
    /// (that was its last attempt), `cancelled` (the retry would pass its `max_duration`).
    pub task_state: State,
    /// The failed task as its dead-letter copy reads it, returned by the same call; only when
    /// `task_state` is `failed`.
    pub failed_task: Option<FailedTask>,
}

impl Client {
    /// Completes many runs in one statement through the queue's fast path (`done_<queue>`,
    /// migration 0011). Returns, for each run, its state afterwards (see [`CompletedStates`]).
    pub async fn complete_runs_fast(
        &self,
        queue: &str,
        runs: &[Uuid],
        results: &[Value],
    ) -> Result<CompletedStates> {
        let sql = format!("select run_id, state from {}($1, $2)", table("done", queue));
        let rows: Vec<(Uuid, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(runs)
            .bind(results)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(rows)
    }

    pub async fn complete_run(&self, queue: &str, run_id: Uuid, result: &Value) -> Result<()> {
        sqlx::query("select absurd.complete_run($1, $2, $3)")
            .bind(queue)
            .bind(run_id)
            .bind(result)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    /// `fail_run`: the run fails with `reason`; the task is retried at `retry_at` (or by its
    /// retry strategy) while it has attempts left.
    pub async fn fail_run(
        &self,
        queue: &str,
        run_id: Uuid,
        reason: &Value,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        sqlx::query("select absurd.fail_run($1, $2, $3, $4)")
            .bind(queue)
            .bind(run_id)
            .bind(reason)
            .bind(retry_at)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    /// `schedule_run` at an absolute time.
    pub async fn schedule_run(
        &self,
        queue: &str,
        run_id: Uuid,
        wake_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("select absurd.schedule_run($1, $2, $3)")
            .bind(queue)
            .bind(run_id)
            .bind(wake_at)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    /// `schedule_run` `secs` from now by the database clock (as the SDKs do).
    pub async fn schedule_run_in(&self, queue: &str, run_id: Uuid, secs: f64) -> Result<()> {
        sqlx::query(
            "select absurd.schedule_run($1, $2, absurd.current_time() + make_interval(secs => $3))",
        )
        .bind(queue)
        .bind(run_id)
        .bind(secs)
        .execute(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    pub async fn extend_claim(&self, queue: &str, run_id: Uuid, extend_by_secs: i32) -> Result<()> {
        sqlx::query("select absurd.extend_claim($1, $2, $3)")
            .bind(queue)
            .bind(run_id)
            .bind(extend_by_secs)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    pub async fn set_checkpoint(
        &self,
        queue: &str,
        task_id: Uuid,
        step_name: &str,
        state: &Value,
        owner_run: Uuid,
        extend_claim_by: Option<i32>,
    ) -> Result<()> {
        sqlx::query("select absurd.set_task_checkpoint_state($1, $2, $3, $4, $5, $6)")
            .bind(queue)
            .bind(task_id)
            .bind(step_name)
            .bind(state)
            .bind(owner_run)
            .bind(extend_claim_by)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    pub async fn get_checkpoint(
        &self,
        queue: &str,
        task_id: Uuid,
        step_name: &str,
    ) -> Result<Option<Checkpoint>> {
        let sql = format!(
            "select {CHECKPOINT_COLUMNS} from absurd.get_task_checkpoint_state($1, $2, $3)"
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(queue)
            .bind(task_id)
            .bind(step_name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// The committed checkpoints visible to `run_id` (what a replaying worker loads).
    pub async fn get_checkpoints(
        &self,
        queue: &str,
        task_id: Uuid,
        run_id: Uuid,
    ) -> Result<Vec<Checkpoint>> {
        let sql = format!(
            "select {CHECKPOINT_COLUMNS} from absurd.get_task_checkpoint_states($1, $2, $3)"
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(queue)
            .bind(task_id)
            .bind(run_id)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    pub async fn await_event(
        &self,
        queue: &str,
        task_id: Uuid,
        run_id: Uuid,
        step_name: &str,
        event_name: &str,
        timeout_secs: Option<i32>,
    ) -> Result<AwaitOutcome> {
        sqlx::query_as(
            "select should_suspend, payload from absurd.await_event($1, $2, $3, $4, $5, $6)",
        )
        .bind(queue)
        .bind(task_id)
        .bind(run_id)
        .bind(step_name)
        .bind(event_name)
        .bind(timeout_secs)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// [`Client::await_event`] for a running task: the payload is measured in SQL and sent
    /// only when within `limits`; one over them, or one that cannot be read (JSON nested too
    /// deep, say), is `Ok((false, Err(failure)))`, to fail the run permanently.
    #[allow(clippy::too_many_arguments)]
    pub async fn await_event_bounded(
        &self,
        queue: &str,
        task_id: Uuid,
        run_id: Uuid,
        step_name: &str,
        event_name: &str,
        timeout_secs: Option<i32>,
        limits: &ReadLimits,
    ) -> Result<(bool, Result<Option<Value>, Failure>)> {
        let row = sqlx::query(
            "select a.should_suspend, s.bytes, \
                    case when s.bytes <= $7::int8 then a.payload end as event_payload \
             from absurd.await_event($1, $2, $3, $4, $5, $6) a \
             cross join lateral (select octet_length(a.payload::text)::int8 as bytes) s",
        )
        .bind(queue)
        .bind(task_id)
        .bind(run_id)
        .bind(step_name)
        .bind(event_name)
        .bind(timeout_secs)
        .bind(sql_limit(limits.max_event_payload_bytes))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let suspend: bool = row
            .try_get("should_suspend")
            .map_err(ClientError::Database)?;
        Ok((suspend, payload_from_row(&row, limits)?))
    }

    /// Fails a claimed run for a worker, and says whether that ended its task: the one call
    /// that settles a failure. With `permanent`, the task gets no further attempts: its
    /// `max_attempts` is lowered to this attempt in the same transaction as `fail_run`.
    ///
    /// A refusal ([`ClientError::Rejected`]) of a run that is already `failed` counts as done:
    /// it is a retried write whose first commit's reply was lost. Other refusals, and a lost
    /// run ([`ClientError::is_run_lost`]), are returned.
    pub async fn fail_run_for_worker(
        &self,
        queue: &str,
        run: &ClaimedRun,
        reason: &Value,
        permanent: bool,
    ) -> Result<FailedRun> {
        let written = if permanent {
            self.fail_run_permanently(queue, run, reason).await
        } else {
            self.fail_run(queue, run.run_id, reason, None).await
        };
        match written {
            Ok(()) => {}
            Err(ClientError::Rejected(msg)) => {
                if self.run_state(queue, run.task_id, run.run_id).await != Some(State::Failed) {
                    return Err(ClientError::Rejected(msg));
                }
            }
            Err(e) => return Err(e),
        }
        let task_failed = matches!(
            self.task_result(queue, run.task_id).await,
            Ok(Some(r)) if r.state == State::Failed
        );
        Ok(FailedRun { task_failed })
    }

    /// Whether the schema has `absurd.fail_run_outcome` (migration 0013).
    pub async fn has_fail_outcome(&self) -> Result<bool> {
        sqlx::query_scalar(
            "select to_regprocedure('absurd.fail_run_outcome(text,uuid,jsonb,boolean,timestamptz)') is not null",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Fails the run like [`Client::fail_run`] and says in the same call what that did to its
    /// task (`absurd.fail_run_outcome`, migration 0013): one round trip. With `last_attempt`,
    /// the task's `max_attempts` is first lowered to this run's attempt, so the task fails for
    /// good. The fence is `fail_run`'s: `AB001`/`AB002` leave everything as it was. On a schema
    /// without the function, [`ClientError::SchemaMissing`].
    pub async fn fail_run_outcome(
        &self,
        queue: &str,
        run_id: Uuid,
        reason: &Value,
        last_attempt: bool,
    ) -> Result<FailOutcome> {
        check_queue_name(queue)?;
        let row = sqlx::query(
            "select task_id, task_state, task_name, params, attempts, run_id, failure_reason, claimed_by \
             from absurd.fail_run_outcome($1, $2, $3, $4, null)",
        )
        .bind(queue)
        .bind(run_id)
        .bind(reason)
        .bind(last_attempt)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let state: String = row.try_get("task_state").map_err(ClientError::Database)?;
        let task_state: State = state.parse()?;
        let failed_task = if task_state == State::Failed {
            Some(FailedTask::from_row(&row).map_err(ClientError::Database)?)
        } else {
            None
        };
        Ok(FailOutcome {
            task_state,
            failed_task,
        })
    }

    /// [`Client::fail_run_for_worker`] in one call ([`Client::fail_run_outcome`]): the task's
    /// fate and, when it ended `failed`, its dead-letter row come back with the failure. A
    /// refusal of a run that is already `failed` (a retried write whose first commit's reply
    /// was lost) resolves as [`Client::fail_run_for_worker`] does, without the row.
    pub async fn fail_run_for_worker_in_one_call(
        &self,
        queue: &str,
        run: &ClaimedRun,
        reason: &Value,
        permanent: bool,
    ) -> Result<(FailedRun, Option<FailedTask>)> {
        match self
            .fail_run_outcome(queue, run.run_id, reason, permanent)
            .await
        {
            Ok(out) => Ok((
                FailedRun {
                    task_failed: out.task_state == State::Failed,
                },
                out.failed_task,
            )),
            Err(ClientError::Rejected(msg)) => {
                if self.run_state(queue, run.task_id, run.run_id).await != Some(State::Failed) {
                    return Err(ClientError::Rejected(msg));
                }
                let task_failed = matches!(
                    self.task_result(queue, run.task_id).await,
                    Ok(Some(r)) if r.state == State::Failed
                );
                Ok((FailedRun { task_failed }, None))
            }
            Err(e) => Err(e),
        }
    }

    /// `fail_run` with no further attempts: the task's `max_attempts` is lowered to this
    /// attempt in the same transaction.
    async fn fail_run_permanently(
        &self,
        queue: &str,
        run: &ClaimedRun,
        reason: &Value,
    ) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        let sql = format!(
            "update {} set max_attempts = $2 where task_id = $1 and (max_attempts is null or max_attempts > $2)",
            table("t", queue)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run.task_id)
            .bind(run.attempt)
            .execute(&mut *tx)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        sqlx::query("select absurd.fail_run($1, $2, $3, null)")
            .bind(queue)
            .bind(run.run_id)
            .bind(reason)
            .execute(&mut *tx)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        tx.commit()
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// The state of a run, to resolve a write whose commit was not seen acknowledged; `None`
    /// when it cannot be read.
    pub async fn run_state(&self, queue: &str, task_id: Uuid, run_id: Uuid) -> Option<State> {
        let task = self.get_task(queue, task_id).await.ok()??;
        task.runs
            .iter()
            .find(|r| r.run_id == run_id)
            .map(|r| r.state)
    }

    /// The state of each of `runs` and of its task, to find the leases that are no longer
    /// the worker's before renewing the others. Runs that no longer exist are left out.
    pub async fn lease_states(&self, queue: &str, runs: &[Uuid]) -> Result<Vec<LeaseState>> {
        let sql = format!(
            "select r.run_id, r.state, t.state as task_state
             from {r} r join {t} t on t.task_id = r.task_id where r.run_id = any($1)",
            r = table("r", queue),
            t = table("t", queue)
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(runs)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// `extend_claim` for many runs in one statement; fails as a whole when any one of them
    /// is refused (then renew them one by one with [`Client::extend_claim`]).
    pub async fn extend_claims(
        &self,
        queue: &str,
        runs: &[Uuid],
        extend_by_secs: i32,
    ) -> Result<()> {
        sqlx::query("select absurd.extend_claim($1, x, $3) from unnest($2::uuid[]) as x")
            .bind(queue)
            .bind(runs)
            .bind(extend_by_secs)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    /// The database's clock, `absurd.current_time()` (which honours `absurd.fake_now`).
    pub async fn current_time(&self, queue: &str) -> Result<DateTime<Utc>> {
        sqlx::query_scalar("select absurd.current_time()")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// Records one execution step in the caller's `ledger` table: the statement of the
    /// `ledger` builtin task of the reliability suite (see `absurd_engine::execute::builtin`).
    pub async fn insert_ledger_row(
        &self,
        run: &ClaimedRun,
        worker_id: &str,
        step: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("insert into ledger (task_id, run_id, attempt, worker_id, step) values ($1, $2, $3, $4, $5)")
            .bind(run.task_id)
            .bind(run.run_id)
            .bind(run.attempt)
            .bind(worker_id)
            .bind(step)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
