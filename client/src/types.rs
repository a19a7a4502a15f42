//! The data the client reads and writes: states, options, and one typed row per kind of
//! result (`FromRow`), serialisable as the JSON the CLI and the API print.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::error::{ClientError, Result};
use crate::vocab::FailureCategory;

/// The six states shared by tasks and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Running,
    Sleeping,
    Completed,
    Failed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Running,
        State::Sleeping,
        State::Completed,
        State::Failed,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Sleeping => "sleeping",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// For typed rows: a `state` column, read as text.
impl TryFrom<String> for State {
    type Error = ClientError;
    fn try_from(s: String) -> Result<State> {
        s.parse()
    }
}

impl std::str::FromStr for State {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<State> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                ClientError::InvalidInput(format!(
                    "unknown state {s:?} (expected one of pending, running, sleeping, completed, failed, cancelled)"
                ))
            })
    }
}

/// `retry_strategy` JSON: `{"kind": "none"|"fixed"|"exponential", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryStrategy {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seconds: Option<f64>,
}

impl RetryStrategy {
    pub fn exponential(base_seconds: f64, factor: f64, max_seconds: f64) -> Self {
        RetryStrategy {
            kind: "exponential".into(),
            base_seconds: Some(base_seconds),
            factor: Some(factor),
            max_seconds: Some(max_seconds),
        }
    }
    pub fn fixed(base_seconds: f64) -> Self {
        RetryStrategy {
            kind: "fixed".into(),
            base_seconds: Some(base_seconds),
            factor: None,
            max_seconds: None,
        }
    }
    pub fn none() -> Self {
        RetryStrategy {
            kind: "none".into(),
            base_seconds: None,
            factor: None,
            max_seconds: None,
        }
    }
}

/// Cancellation policy JSON: `{"max_delay": s, "max_duration": s}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<i64>,
}

/// Options of `spawn_task`. Unset fields are left out of the options JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpawnOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<RetryStrategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Row returned by `spawn_task` and `retry_task`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, FromRow)]
pub struct Spawned {
    pub task_id: Uuid,
    pub run_id: Uuid,
    pub attempt: i32,
    pub created: bool,
}

/// Options of `retry_task`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryOptions {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub spawn_new: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
}

/// A run handed to a worker by `claim_task`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedRun {
    pub run_id: Uuid,
    pub task_id: Uuid,
    pub attempt: i32,
    pub task_name: String,
    pub params: Value,
    pub retry_strategy: Option<Value>,
    pub max_attempts: Option<i32>,
    pub headers: Option<Value>,
    pub wake_event: Option<String>,
    pub event_payload: Option<Value>,
}

impl ClaimedRun {
    /// The run without its params, headers and event payload (which may be large): what the
    /// worker keeps to settle the run while the handler owns the rest.
    pub fn identity(&self) -> ClaimedRun {
        ClaimedRun {
            run_id: self.run_id,
            task_id: self.task_id,
            attempt: self.attempt,
            task_name: self.task_name.clone(),
            params: Value::Null,
            retry_strategy: self.retry_strategy.clone(),
            max_attempts: self.max_attempts,
            headers: None,
            wake_event: self.wake_event.clone(),
            event_payload: None,
        }
    }
}

/// A checkpoint row (a SQL null `state` reads as JSON `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct Checkpoint {
    pub checkpoint_name: String,
    pub state: Value,
    pub status: String,
    pub owner_run_id: Option<Uuid>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Result of `await_event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct AwaitOutcome {
    /// True: the run is now sleeping on the event; the worker must stop executing it.
    pub should_suspend: bool,
    pub payload: Option<Value>,
}

/// Result of `get_task_result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct TaskResult {
    pub task_id: Uuid,
    #[sqlx(try_from = "String")]
    pub state: State,
    pub result: Option<Value>,
    pub failure_reason: Option<Value>,
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct RunInfo {
    pub run_id: Uuid,
    pub attempt: i32,
    #[sqlx(try_from = "String")]
    pub state: State,
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<DateTime<Utc>>,
    /// `None` when the run waits for an event without a timeout (`'infinity'` in the table).
    pub available_at: Option<DateTime<Utc>>,
    pub wake_event: Option<String>,
    pub event_payload: Option<Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub result: Option<Value>,
    pub failure_reason: Option<Value>,
    pub created_at: Option<DateTime<Utc>>,
}

/// A task row, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct TaskSummary {
    pub queue_name: String,
    pub task_id: Uuid,
    pub task_name: String,
    #[sqlx(try_from = "String")]
    pub state: State,
    pub attempts: i32,
    pub max_attempts: Option<i32>,
    pub enqueue_at: DateTime<Utc>,
    pub first_started_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub last_attempt_run: Option<Uuid>,
    pub idempotency_key: Option<String>,
    /// When the last run started (was claimed); `None` until it starts.
    #[sqlx(default)]
    #[serde(default)]
    pub claimed_at: Option<DateTime<Utc>>,
    /// When the last run completed or failed.
    #[sqlx(default)]
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// The last run's worker.
    #[sqlx(default)]
    #[serde(default)]
    pub worker_id: Option<String>,
    /// The task's params, in listings only, and only when their JSON text is at most
    /// [`MAX_LISTED_PARAMS_BYTES`] (`params_bytes` says how large they are); a task read with
    /// `get_task` has them in [`TaskDetails::params`].
    #[sqlx(default)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// The length of the params' JSON text, in listings only.
    #[sqlx(default)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_bytes: Option<i64>,
}

/// The largest params a listing carries per task (their JSON text, in bytes); larger ones are
/// left out of the listing (`params` `None`, `params_bytes` their size). This bounds a page of
/// 1,000 tasks to about 16 MiB of params.
pub const MAX_LISTED_PARAMS_BYTES: i64 = 16 * 1024;

/// A task with everything known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetails {
    #[serde(flatten)]
    pub summary: TaskSummary,
    pub params: Value,
    pub headers: Option<Value>,
    pub retry_strategy: Option<Value>,
    pub cancellation: Option<Value>,
    pub completed_payload: Option<Value>,
    pub runs: Vec<RunInfo>,
    pub checkpoints: Vec<Checkpoint>,
    /// Events the task's runs are registered to wait for: `(step_name, event_name, timeout_at)`.
    pub waits: Vec<WaitInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct WaitInfo {
    pub run_id: Uuid,
    pub step_name: String,
    pub event_name: String,
    pub timeout_at: Option<DateTime<Utc>>,
}

/// Filters for [`Client::list_tasks`](crate::client::Client::list_tasks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFilter {
    /// Only this queue; `None` lists every queue.
    pub queue: Option<String>,
    pub state: Option<State>,
    pub task_name: Option<String>,
    /// Page size (default 50, at most 1000).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only tasks enqueued at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_after: Option<DateTime<Utc>>,
    /// Only tasks enqueued before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_before: Option<DateTime<Utc>>,
    /// Only tasks whose params, as JSON text, contain this (case-insensitive; at most
    /// [`MAX_SEARCH_CHARS`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// Only tasks waiting for a retry: pending or sleeping, past their first attempt, and
    /// their current attempt not started yet (the DSA-110 pipeline's `retrying`). Combined
    /// with `state` like every other filter.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retrying: bool,
}

/// The longest text search accepted by [`Client::list_tasks`](crate::client::Client::list_tasks).
pub const MAX_SEARCH_CHARS: usize = 200;

/// A page of tasks, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    pub tasks: Vec<TaskSummary>,
    /// How many tasks match the filter in total (over all pages).
    pub total: i64,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Per-queue statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct QueueStats {
    pub queue_name: String,
    pub pending: i64,
    pub running: i64,
    pub sleeping: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub total: i64,
    /// Seconds since the oldest still-pending task was enqueued.
    pub oldest_pending_age_secs: Option<f64>,
    /// Runs completed in the last 1, 5 and 15 minutes.
    pub completed_last_1m: i64,
    pub completed_last_5m: i64,
    pub completed_last_15m: i64,
}

/// What a worker did in a time window, from the runs it claimed (see
/// [`Client::worker_activity`](crate::client::Client::worker_activity)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, FromRow)]
pub struct WorkerActivity {
    pub worker_id: String,
    /// The latest start, completion or failure of its runs.
    pub last_seen: Option<DateTime<Utc>>,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    /// Failed runs whose failure is the WebAssembly sandbox's ([`FailureCategory::Sandbox`]).
    pub sandbox_failures: i64,
    /// Failed runs whose failure is a native subprocess's ([`FailureCategory::Subprocess`]).
    pub subprocess_failures: i64,
    /// Failed runs that hit the run time limit ([`FailureCategory::Timeout`]).
    pub timeouts: i64,
    /// The earliest start of its runs in the window.
    pub first_seen: Option<DateTime<Utc>>,
    /// The task of its latest run still running, if any.
    pub current_task_id: Option<Uuid>,
    /// Its running runs whose lease is live (it renews them: it is alive).
    pub live_claims: i64,
    /// Its running runs whose lease has expired (it stopped renewing them).
    pub expired_claims: i64,
}

impl WorkerActivity {
    /// Which failure names each count of [`WorkerActivity`] counts, by field name.
    pub fn counted_failures() -> [(&'static str, FailureCategory); 3] {
        [
            ("sandbox_failures", FailureCategory::Sandbox),
            ("subprocess_failures", FailureCategory::Subprocess),
            ("timeouts", FailureCategory::Timeout),
        ]
    }
}

/// Completions and failures of one queue per minute (see [`Client::throughput`](crate::client::Client::throughput)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, FromRow)]
pub struct ThroughputBucket {
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    pub completed: i64,
    pub failed: i64,
}

/// The longest window of [`Client::worker_activity`](crate::client::Client::worker_activity) and [`Client::throughput`](crate::client::Client::throughput): a day.
pub const MAX_WINDOW_MINUTES: i64 = 1440;

/// Rows deleted by `cleanup_all_queues` for one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, FromRow)]
pub struct CleanupRow {
    pub queue_name: String,
    pub tasks_deleted: i32,
    pub events_deleted: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_options_serialise_only_what_is_set() {
        let o = SpawnOptions {
            max_attempts: Some(3),
            retry_strategy: Some(RetryStrategy::exponential(2.0, 2.0, 300.0)),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({"max_attempts": 3, "retry_strategy": {"kind": "exponential", "base_seconds": 2.0, "factor": 2.0, "max_seconds": 300.0}})
        );
        assert_eq!(
            serde_json::to_value(SpawnOptions::default()).unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            serde_json::to_value(RetryOptions::default()).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn states_round_trip() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), s);
        }
        assert!("done".parse::<State>().is_err());
    }
}

#[cfg(test)]
mod json_numbers {
    /// PostgreSQL's jsonb prints a number such as 1.7976931348623157e308 in full decimal
    /// notation; reading it back must give the same number, not an "out of range" error.
    #[test]
    fn numbers_near_the_f64_limit_survive_jsonb_output() {
        let text = format!("{{\"x\": 17976931348623157{}}}", "0".repeat(292));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["x"].as_f64(), Some(f64::MAX));
    }
}
