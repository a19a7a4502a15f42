//! Dead-letter: copying every task that ends `failed` into the dead-letter queue, once.
//!
//! Exactly-once comes from the database, not from the worker: each copy is spawned with the
//! idempotency key `dead-letter:<queue>:<task id>:<failed run id>`, so however many hosts
//! notice the same failure, `spawn_task` creates one `dead-letter` task. (A task retried by
//! hand and failed again has a new last run, and is dead-lettered again.)
//!
//! Failures are noticed two ways: right after this worker's own failure ends a task (on our
//! schema `absurd.fail_run_outcome` returns the task's row with the failure, so the copy needs
//! no read), and by a periodic sweep that finds failures written elsewhere (lease expiry swept
//! by any claim, another worker, an SDK). The sweep only looks at failed runs claimed since the
//! oldest run that was still in flight at the previous sweep (less a minute for claims not yet
//! committed then), through the `(state, available_at)` index.

use absurd_client::dead_letter::FailedTask;
use absurd_client::{Client, ClientError, SpawnOptions};
use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::{info, warn};
use uuid::Uuid;

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
        match self.client.failed_task(&self.queue, task_id).await? {
            Some(task) => self.copy_failed(&task).await,
            None => Ok(false),
        }
    }

    /// Copies a failed task, as [`route`](Self::route) reads it (and
    /// `absurd.fail_run_outcome` returns it, so the worker that failed it need not read it
    /// again), into the dead-letter queue. Returns whether this call made the copy.
    pub async fn copy_failed(&self, task: &FailedTask) -> Result<bool, ClientError> {
        let (task_id, run_id) = (task.task_id, task.run_id);
        let task_name = &task.task_name;
        let params = json!({
            "original_task_id": task_id,
            "original_task_name": task_name,
            "original_queue": self.queue,
            "params": task.params,
            "error": task.failure_reason,
            "attempts": task.attempts,
            "dead_lettered_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "worker_id": task.claimed_by.clone().unwrap_or_else(|| self.worker_id.clone()),
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
        // Where the next sweep may start: no run still in flight now can end up with an
        // earlier claim time.
        let next_since: DateTime<Utc> = self.client.dead_letter_horizon(&self.queue).await?;
        // First sweep: everything (runs claimed since the epoch), through the same index.
        let since = self.since.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let rows = self
            .client
            .failed_tasks_since(&self.queue, &self.dlq, since, 500)
            .await?;
        let mut copied = Vec::new();
        for task in &rows {
            if self.copy_failed(task).await? {
                copied.push(task.task_name.clone());
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
