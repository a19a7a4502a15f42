//! Maintenance without pg_cron: deleting finished tasks and consumed events by retention, in
//! bounded batches, the record of each pass, and the session lock that elects the one worker
//! that does it (migration 0018).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::types::State;

/// The advisory lock (key space of `pg_try_advisory_lock(bigint)`) whose holder is the
/// maintenance leader of a database: any number of workers may be configured to maintain,
/// the one whose session holds this lock does.
pub const LEADER_LOCK_KEY: i64 = 0x6162_7375_7264_6d61; // "absurdma"

/// One recorded maintenance pass (`absurd.maintenance_runs`).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct MaintenanceRun {
    pub run_id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub worker_id: String,
    /// What was deleted: `{"queues": {...}, "totals": {...}}` as the host wrote it.
    pub report: Value,
    pub error: Option<String>,
}

impl Client {
    /// Whether the schema has absurd-host's maintenance functions (migration 0018): not one
    /// that `absurdctl init` installed, nor an absurd-host schema not yet migrated.
    pub async fn has_maintenance(&self) -> Result<bool> {
        sqlx::query_scalar(
            "select to_regprocedure('absurd.cleanup_tasks_in_state(text,text,integer,integer)') is not null",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Deletes up to `limit` (1–100,000) tasks that reached final `state` more than
    /// `ttl_secs` ago, oldest first, with their runs, checkpoints and waits; rows another
    /// session has locked are skipped, not waited for. Returns how many were deleted.
    pub async fn cleanup_tasks_in_state(
        &self,
        queue: &str,
        state: State,
        ttl_secs: i32,
        limit: i32,
    ) -> Result<i32> {
        final_state(state)?;
        sqlx::query_scalar("select absurd.cleanup_tasks_in_state($1, $2, $3, $4)")
            .bind(queue)
            .bind(state.as_str())
            .bind(ttl_secs)
            .bind(limit)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// How many tasks [`Client::cleanup_tasks_in_state`] would delete, all batches together.
    pub async fn count_cleanup_candidates(
        &self,
        queue: &str,
        state: State,
        ttl_secs: i32,
    ) -> Result<i64> {
        final_state(state)?;
        sqlx::query_scalar("select absurd.count_cleanup_candidates($1, $2, $3)")
            .bind(queue)
            .bind(state.as_str())
            .bind(ttl_secs)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// How many events [`Client::cleanup_events`] would delete, all batches together.
    pub async fn count_event_cleanup_candidates(&self, queue: &str, ttl_secs: i32) -> Result<i64> {
        sqlx::query_scalar("select absurd.count_event_cleanup_candidates($1, $2)")
            .bind(queue)
            .bind(ttl_secs)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// Records a finished pass (the table keeps the newest 100). Returns its id.
    pub async fn record_maintenance_run(
        &self,
        started_at: DateTime<Utc>,
        worker_id: &str,
        report: &Value,
        error: Option<&str>,
    ) -> Result<i64> {
        sqlx::query_scalar("select absurd.record_maintenance_run($1, $2, $3, $4)")
            .bind(started_at)
            .bind(worker_id)
            .bind(sqlx::types::Json(report))
            .bind(error)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// The newest `limit` recorded passes, newest first. Empty on a schema without
    /// migration 0018 (for example one `absurdctl init` installed).
    pub async fn maintenance_runs(&self, limit: i64) -> Result<Vec<MaintenanceRun>> {
        let exists: bool =
            sqlx::query_scalar("select to_regclass('absurd.maintenance_runs') is not null")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| ClientError::from_sqlx(e, None))?;
        if !exists {
            return Ok(Vec::new());
        }
        sqlx::query_as(
            "select run_id, started_at, finished_at, worker_id, report, error
             from absurd.maintenance_runs order by run_id desc limit $1",
        )
        .bind(limit.clamp(0, 100))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Tries to become the database's maintenance leader: on a connection of its own (not
    /// from the pool), takes the session-level advisory lock [`LEADER_LOCK_KEY`] without
    /// waiting. `None` when another session holds it. The lock lasts as long as the returned
    /// [`Leadership`]'s connection: dropping it, or the process dying, hands it on.
    pub async fn try_lead_maintenance(&self) -> Result<Option<Leadership>> {
        // A session of its own: never one behind a transaction-mode pooler, where the lock
        // would stay on whatever server connection the pooler lent.
        let options = self.session_options().ok_or_else(|| {
            ClientError::InvalidInput(
                "the maintenance leader needs a direct session (a session-level advisory \
                 lock), and this client's connections go through a pooler in transaction \
                 mode: give a direct connection (ABSURD_LISTEN_URL)"
                    .into(),
            )
        })?;
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))?;
        let won: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK_KEY)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))?;
        if won {
            Ok(Some(Leadership { conn }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

/// The maintenance leadership of one database: the connection that holds the lock.
pub struct Leadership {
    conn: PgConnection,
}

impl Leadership {
    /// Whether the lock is still held: the connection still answers and its session still
    /// owns the lock (a server restart or a killed backend loses both).
    pub async fn still_held(&mut self) -> bool {
        sqlx::query_scalar::<_, bool>(
            "select exists(select 1 from pg_locks
                           where locktype = 'advisory' and pid = pg_backend_pid() and granted
                             and objid = ($1 & 4294967295)::oid and classid = ($1 >> 32)::oid)",
        )
        .bind(LEADER_LOCK_KEY)
        .fetch_one(&mut self.conn)
        .await
        .unwrap_or(false)
    }

    /// Gives the leadership up at once (the next candidate takes it on its next try).
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}

fn final_state(state: State) -> Result<()> {
    if state.is_terminal() {
        Ok(())
    } else {
        Err(ClientError::InvalidInput(format!(
            "cleanup state must be completed, failed or cancelled, not {}",
            state.as_str()
        )))
    }
}
