//! The DSA-110 pipeline's monitoring figures, computed from the queue tables: the task metrics
//! of its `GET /metrics` (counts, wait and execution percentiles, rates over 1, 5 and 15
//! minutes), and its worker registry (heartbeats reported by workers, merged with what the
//! runs tables say about every worker). Read-only but for [`Client::record_worker_heartbeat`].
//!
//! Every figure is bounded in the work it takes: the counts are one pass over each queue's
//! task table (as [`Client::queue_stats`] does); everything computed from runs looks only at
//! the runs created in the last [`METRICS_RUN_WINDOW_HOURS`] (a range of the runs' UUIDv7
//! primary key), and the percentiles at the latest [`METRICS_SAMPLE_RUNS`] of those that
//! started.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use uuid::Uuid;

use crate::client::{check_queue_name, quote_literal, table, Client};
use crate::error::{ClientError, Result};
use crate::types::{WorkerActivity, MAX_WINDOW_MINUTES};
use crate::vocab::FailureCategory;

/// Runs created longer ago than this are not looked at by [`Client::task_metrics`].
pub const METRICS_RUN_WINDOW_HOURS: i64 = 24;
/// The percentiles of [`Client::task_metrics`] are over at most this many runs, the latest
/// started.
pub const METRICS_SAMPLE_RUNS: i64 = 1000;

/// The longest worker id a heartbeat may carry, in bytes (also a check in the table).
pub const MAX_WORKER_ID_BYTES: usize = 255;
/// How many workers the heartbeat table holds at most; a heartbeat of a new worker beyond
/// that is refused ([`HeartbeatOutcome::recorded`] false).
pub const MAX_HEARTBEAT_WORKERS: i64 = 10_000;
/// Workers not heard from for this long are deleted when a new worker registers.
pub const HEARTBEAT_RETENTION_SECS: i64 = 24 * 3600;

/// A worker heard from at most this long ago is `active` (the seed's threshold).
pub const ACTIVE_SECS: f64 = 10.0;
/// ... and at most this long ago `idle`; later `stale`.
pub const STALE_AFTER_SECS: f64 = 60.0;
/// A worker not heard from for longer than this is `crashed`.
pub const CRASHED_AFTER_SECS: f64 = 180.0;

/// Task figures over the selected queues (see [`Client::task_metrics`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct TaskMetrics {
    /// The database's time of the figures.
    pub now: DateTime<Utc>,
    /// Tasks in the tables, by state, and those ever started.
    pub total: i64,
    pub started: i64,
    pub pending: i64,
    pub running: i64,
    pub sleeping: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Runs completed (failed) in the last 1, 5 and 15 minutes.
    pub completed_1m: i64,
    pub completed_5m: i64,
    pub completed_15m: i64,
    pub failed_1m: i64,
    pub failed_5m: i64,
    pub failed_15m: i64,
    /// Runs of the window that failed for the run time limit.
    pub timed_out: i64,
    /// Runs the wait times are taken from, and those of them that finished (execution times).
    pub wait_samples: i64,
    pub execution_samples: i64,
    /// Seconds from a run's creation to its start.
    pub avg_wait_secs: Option<f64>,
    pub p50_wait_secs: Option<f64>,
    pub p95_wait_secs: Option<f64>,
    pub p99_wait_secs: Option<f64>,
    /// Seconds from a run's start to its completion or failure.
    pub avg_execution_secs: Option<f64>,
    pub p50_execution_secs: Option<f64>,
    pub p95_execution_secs: Option<f64>,
    pub p99_execution_secs: Option<f64>,
}

/// A worker's row in the heartbeat table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, FromRow)]
pub struct WorkerHeartbeat {
    pub worker_id: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub current_task_id: Option<Uuid>,
    /// Distinct tasks it has reported (each change of task counts once).
    pub task_count: i64,
    pub heartbeats: i64,
}

/// What [`Client::record_worker_heartbeat`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, FromRow)]
pub struct HeartbeatOutcome {
    /// False: a new worker, and the table is full ([`MAX_HEARTBEAT_WORKERS`]).
    pub recorded: bool,
    /// The workers in the table, when a new one was added or refused.
    pub workers: Option<i64>,
}

/// A worker's state, from how long ago it was last heard from (the seed's thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Heard from in the last [`ACTIVE_SECS`], or holding a live lease.
    Active,
    /// Heard from in the last [`STALE_AFTER_SECS`].
    Idle,
    /// Heard from in the last [`CRASHED_AFTER_SECS`].
    Stale,
    /// Not heard from for longer.
    Crashed,
}

impl WorkerState {
    /// The state of a worker last heard from `age_secs` ago.
    pub fn from_age(age_secs: f64) -> WorkerState {
        if age_secs <= ACTIVE_SECS {
            WorkerState::Active
        } else if age_secs <= STALE_AFTER_SECS {
            WorkerState::Idle
        } else if age_secs <= CRASHED_AFTER_SECS {
            WorkerState::Stale
        } else {
            WorkerState::Crashed
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Active => "active",
            WorkerState::Idle => "idle",
            WorkerState::Stale => "stale",
            WorkerState::Crashed => "crashed",
        }
    }
}

/// One worker of the registry: its runs in the window and its heartbeats, merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredWorker {
    pub worker_id: String,
    pub state: WorkerState,
    /// The last time it was heard from: its latest heartbeat, run start, completion or failure,
    /// or now while it holds a live lease.
    pub last_activity: Option<DateTime<Utc>>,
    /// The first time it was seen in the window (its first heartbeat, or its first run start).
    pub first_seen: Option<DateTime<Utc>>,
    pub current_task_id: Option<Uuid>,
    /// Runs of the window (running, completed, failed), or the tasks its heartbeats reported,
    /// whichever is more.
    pub task_count: i64,
    /// It holds runs whose lease expired (it stopped renewing them).
    pub timed_out: bool,
    /// From the runs tables (`None` for a worker known only from heartbeats).
    pub activity: Option<WorkerActivity>,
    /// From the heartbeat table (`None` for a worker that never sent one).
    pub heartbeat: Option<WorkerHeartbeat>,
}

/// Every worker seen in a window (see [`Client::worker_registry`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRegistry {
    /// The database's time, against which the states are computed.
    pub now: DateTime<Utc>,
    pub minutes: i64,
    /// Most recently heard from first.
    pub workers: Vec<RegisteredWorker>,
}

impl WorkerRegistry {
    /// Merges runs and heartbeats by worker id and derives each worker's state at `now`.
    pub fn merge(
        now: DateTime<Utc>,
        minutes: i64,
        activity: Vec<WorkerActivity>,
        heartbeats: Vec<WorkerHeartbeat>,
    ) -> WorkerRegistry {
        let mut by_id: std::collections::BTreeMap<String, RegisteredWorker> = Default::default();
        let blank = |id: &str| RegisteredWorker {
            worker_id: id.to_string(),
            state: WorkerState::Crashed,
            last_activity: None,
            first_seen: None,
            current_task_id: None,
            task_count: 0,
            timed_out: false,
            activity: None,
            heartbeat: None,
        };
        for a in activity {
            let w = by_id
                .entry(a.worker_id.clone())
                .or_insert_with(|| blank(&a.worker_id));
            w.activity = Some(a);
        }
        for h in heartbeats {
            let w = by_id
                .entry(h.worker_id.clone())
                .or_insert_with(|| blank(&h.worker_id));
            w.heartbeat = Some(h);
        }
        let mut workers: Vec<RegisteredWorker> = by_id
            .into_values()
            .map(|mut w| {
                let a = w.activity.as_ref();
                let h = w.heartbeat.as_ref();
                let live = a.is_some_and(|a| a.live_claims > 0);
                let times = [
                    a.and_then(|a| a.last_seen),
                    h.map(|h| h.last_seen),
                    live.then_some(now),
                ];
                w.last_activity = times.into_iter().flatten().max();
                w.first_seen = [a.and_then(|a| a.first_seen), h.map(|h| h.first_seen)]
                    .into_iter()
                    .flatten()
                    .min();
                w.current_task_id = a
                    .and_then(|a| a.current_task_id)
                    .or_else(|| h.and_then(|h| h.current_task_id));
                w.task_count = a
                    .map_or(0, |a| a.running + a.completed + a.failed)
                    .max(h.map_or(0, |h| h.task_count));
                w.timed_out = !live && a.is_some_and(|a| a.expired_claims > 0);
                w.state = match w.last_activity {
                    Some(t) => WorkerState::from_age(seconds_between(t, now)),
                    None => WorkerState::Crashed,
                };
                w
            })
            .collect();
        workers.sort_by(|x, y| {
            y.last_activity
                .cmp(&x.last_activity)
                .then_with(|| x.worker_id.cmp(&y.worker_id))
        });
        WorkerRegistry {
            now,
            minutes,
            workers,
        }
    }

    /// How many workers are in `state`.
    pub fn count(&self, state: WorkerState) -> usize {
        self.workers.iter().filter(|w| w.state == state).count()
    }
}

/// Seconds from `a` to `b` (negative when `a` is later), with millisecond precision.
fn seconds_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

impl Client {
    /// The task figures of `queue`, or of every queue: counts by state (every task), rates
    /// of completed and failed runs over the last 1, 5 and 15 minutes and the timed-out runs
    /// (runs created in the last [`METRICS_RUN_WINDOW_HOURS`]), and wait and execution time
    /// percentiles (interpolated) over the latest [`METRICS_SAMPLE_RUNS`] started runs of
    /// that window.
    pub async fn task_metrics(&self, queue: Option<&str>) -> Result<TaskMetrics> {
        let queues = match queue {
            Some(q) => {
                check_queue_name(q)?;
                vec![q.to_string()]
            }
            None => self.queues_with_tables().await?,
        };
        let union = |f: &dyn Fn(&str) -> String| {
            if queues.is_empty() {
                return String::new();
            }
            queues
                .iter()
                .map(|q| f(q))
                .collect::<Vec<_>>()
                .join(" union all ")
        };
        let tasks = union(&|q: &str| {
            format!(
                "select count(*) as total,
                   count(*) filter (where first_started_at is not null) as started,
                   count(*) filter (where state = 'pending') as pending,
                   count(*) filter (where state = 'running') as running,
                   count(*) filter (where state = 'sleeping') as sleeping,
                   count(*) filter (where state = 'completed') as completed,
                   count(*) filter (where state = 'failed') as failed,
                   count(*) filter (where state = 'cancelled') as cancelled
                 from {t}",
                t = table("t", q)
            )
        });
        let runs = union(&|q: &str| {
            format!(
                "select run_id, state, created_at, started_at, completed_at, failed_at,
                   failure_reason->>'name' as failure_name
                 from {r} where run_id >= (select id from floor_)",
                r = table("r", q)
            )
        });
        let (tasks, runs) = if queues.is_empty() {
            (
                "select 0::int8 as total, 0::int8 as started, 0::int8 as pending, 0::int8 as running, \
                 0::int8 as sleeping, 0::int8 as completed, 0::int8 as failed, 0::int8 as cancelled"
                    .to_string(),
                "select null::uuid as run_id, null::text as state, null::timestamptz as created_at, \
                 null::timestamptz as started_at, null::timestamptz as completed_at, \
                 null::timestamptz as failed_at, null::text as failure_name where false"
                    .to_string(),
            )
        } else {
            (tasks, runs)
        };
        let timeouts = FailureCategory::Timeout
            .names()
            .map(|n| quote_literal(n.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        // The smallest UUIDv7 of the window's first millisecond: runs' ids are UUIDv7s made by
        // the database when the run is created, so the window is a range of the primary key.
        let sql = format!(
            "with now_ as (select absurd.current_time() as now),
             floor_ as (select (lpad(to_hex((extract(epoch from now - make_interval(hours => $1)) * 1000)::int8), 12, '0')
                                || '70008000000000000000')::uuid as id from now_),
             tasks as ({tasks}),
             runs as ({runs}),
             sample as (
               select extract(epoch from started_at - created_at)::float8 as wait,
                 case when state in ('completed', 'failed')
                      then extract(epoch from coalesce(completed_at, failed_at) - started_at)::float8 end as exec
               from runs where started_at is not null and created_at is not null
               order by run_id desc limit $2)
             select (select now from now_) as now,
               t.total, t.started, t.pending, t.running, t.sleeping, t.completed, t.failed, t.cancelled,
               r.completed_1m, r.completed_5m, r.completed_15m, r.failed_1m, r.failed_5m, r.failed_15m,
               r.timed_out,
               s.wait_samples, s.execution_samples,
               s.avg_wait_secs, s.p50_wait_secs, s.p95_wait_secs, s.p99_wait_secs,
               s.avg_execution_secs, s.p50_execution_secs, s.p95_execution_secs, s.p99_execution_secs
             from
               (select coalesce(sum(total), 0)::int8 as total, coalesce(sum(started), 0)::int8 as started,
                  coalesce(sum(pending), 0)::int8 as pending, coalesce(sum(running), 0)::int8 as running,
                  coalesce(sum(sleeping), 0)::int8 as sleeping, coalesce(sum(completed), 0)::int8 as completed,
                  coalesce(sum(failed), 0)::int8 as failed, coalesce(sum(cancelled), 0)::int8 as cancelled
                from tasks) t,
               (select
                  count(*) filter (where state = 'completed' and completed_at > n.now - interval '1 minute') as completed_1m,
                  count(*) filter (where state = 'completed' and completed_at > n.now - interval '5 minutes') as completed_5m,
                  count(*) filter (where state = 'completed' and completed_at > n.now - interval '15 minutes') as completed_15m,
                  count(*) filter (where state = 'failed' and failed_at > n.now - interval '1 minute') as failed_1m,
                  count(*) filter (where state = 'failed' and failed_at > n.now - interval '5 minutes') as failed_5m,
                  count(*) filter (where state = 'failed' and failed_at > n.now - interval '15 minutes') as failed_15m,
                  count(*) filter (where state = 'failed' and failure_name in ({timeouts})) as timed_out
                from runs, now_ n) r,
               (select count(wait) as wait_samples, count(exec) as execution_samples,
                  avg(wait) as avg_wait_secs,
                  percentile_cont(0.5) within group (order by wait) as p50_wait_secs,
                  percentile_cont(0.95) within group (order by wait) as p95_wait_secs,
                  percentile_cont(0.99) within group (order by wait) as p99_wait_secs,
                  avg(exec) as avg_execution_secs,
                  percentile_cont(0.5) within group (order by exec) as p50_execution_secs,
                  percentile_cont(0.95) within group (order by exec) as p95_execution_secs,
                  percentile_cont(0.99) within group (order by exec) as p99_execution_secs
                from sample) s"
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(METRICS_RUN_WINDOW_HOURS as i32)
            .bind(METRICS_SAMPLE_RUNS)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, queue))
    }

    /// Records a heartbeat of `worker_id` (1 to [`MAX_WORKER_ID_BYTES`] bytes, no NUL),
    /// reporting `task_id` as its current task. A new worker is refused
    /// ([`HeartbeatOutcome::recorded`] false) while the table holds
    /// [`MAX_HEARTBEAT_WORKERS`] workers heard from in the last [`HEARTBEAT_RETENTION_SECS`].
    pub async fn record_worker_heartbeat(
        &self,
        worker_id: &str,
        task_id: Option<Uuid>,
    ) -> Result<HeartbeatOutcome> {
        check_worker_id(worker_id)?;
        sqlx::query_as(
            "select recorded, workers from absurd.record_worker_heartbeat($1, $2, $3, $4)",
        )
        .bind(worker_id)
        .bind(task_id)
        .bind(MAX_HEARTBEAT_WORKERS as i32)
        .bind(HEARTBEAT_RETENTION_SECS as i32)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// The heartbeats of the workers heard from in the last `minutes` (1 to
    /// [`MAX_WINDOW_MINUTES`]), most recent first; none on a schema without the heartbeat
    /// table (one installed by `absurdctl init`).
    pub async fn worker_heartbeats(&self, minutes: i64) -> Result<Vec<WorkerHeartbeat>> {
        check_minutes(minutes)?;
        let exists: bool =
            sqlx::query_scalar("select to_regclass('absurd.worker_heartbeats') is not null")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| ClientError::from_sqlx(e, None))?;
        if !exists {
            return Ok(vec![]);
        }
        sqlx::query_as(
            "select worker_id, first_seen, last_seen, current_task_id, task_count, heartbeats
             from absurd.worker_heartbeats
             where last_seen >= absurd.current_time() - make_interval(mins => $1)
             order by last_seen desc, worker_id
             limit $2",
        )
        .bind(minutes as i32)
        .bind(MAX_HEARTBEAT_WORKERS)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// Every worker seen in the last `minutes` (1 to [`MAX_WINDOW_MINUTES`]): from the runs it
    /// claimed ([`Client::worker_activity`]) and from its heartbeats, with its state now.
    pub async fn worker_registry(&self, minutes: i64) -> Result<WorkerRegistry> {
        check_minutes(minutes)?;
        let activity = self.worker_activity(minutes).await?;
        let heartbeats = self.worker_heartbeats(minutes).await?;
        let now: DateTime<Utc> = sqlx::query_scalar("select absurd.current_time()")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))?;
        Ok(WorkerRegistry::merge(now, minutes, activity, heartbeats))
    }
}

fn check_minutes(minutes: i64) -> Result<()> {
    if !(1..=MAX_WINDOW_MINUTES).contains(&minutes) {
        return Err(ClientError::InvalidInput(format!(
            "minutes must be between 1 and {MAX_WINDOW_MINUTES}, got {minutes}"
        )));
    }
    Ok(())
}

/// A worker id: 1 to [`MAX_WORKER_ID_BYTES`] bytes, without NUL.
pub fn check_worker_id(worker_id: &str) -> Result<()> {
    if worker_id.is_empty() || worker_id.len() > MAX_WORKER_ID_BYTES {
        return Err(ClientError::InvalidInput(format!(
            "worker_id must be 1 to {MAX_WORKER_ID_BYTES} bytes long, got {} bytes",
            worker_id.len()
        )));
    }
    if worker_id.contains('\0') {
        return Err(ClientError::InvalidInput(
            "worker_id must not contain NUL characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(id: &str, last_seen: DateTime<Utc>, live: i64, expired: i64) -> WorkerActivity {
        WorkerActivity {
            worker_id: id.into(),
            last_seen: Some(last_seen),
            running: live + expired,
            completed: 2,
            failed: 0,
            sandbox_failures: 0,
            subprocess_failures: 0,
            timeouts: 0,
            first_seen: Some(last_seen - chrono::Duration::seconds(30)),
            current_task_id: None,
            live_claims: live,
            expired_claims: expired,
        }
    }

    #[test]
    fn states_follow_the_seed_thresholds() {
        for (age, state) in [
            (0.0, WorkerState::Active),
            (10.0, WorkerState::Active),
            (10.5, WorkerState::Idle),
            (60.0, WorkerState::Idle),
            (61.0, WorkerState::Stale),
            (180.0, WorkerState::Stale),
            (180.5, WorkerState::Crashed),
        ] {
            assert_eq!(WorkerState::from_age(age), state, "{age}");
        }
    }

    #[test]
    fn a_live_lease_is_activity_and_heartbeats_merge_by_id() {
        let now: DateTime<Utc> = "2025-01-01T12:00:00Z".parse().unwrap();
        let ago = |s| now - chrono::Duration::seconds(s);
        let hb = WorkerHeartbeat {
            worker_id: "py".into(),
            first_seen: ago(3600),
            last_seen: ago(5),
            current_task_id: None,
            task_count: 7,
            heartbeats: 100,
        };
        let r = WorkerRegistry::merge(
            now,
            60,
            vec![
                activity("busy", ago(3000), 1, 0),
                activity("gone", ago(400), 0, 1),
                activity("py", ago(120), 0, 0),
            ],
            vec![hb],
        );
        let by = |id: &str| r.workers.iter().find(|w| w.worker_id == id).unwrap();
        assert_eq!(by("busy").state, WorkerState::Active);
        assert_eq!(by("busy").last_activity, Some(now));
        assert_eq!(by("gone").state, WorkerState::Crashed);
        assert!(by("gone").timed_out);
        assert_eq!(by("py").state, WorkerState::Active);
        assert_eq!(by("py").task_count, 7);
        assert_eq!(by("py").first_seen, Some(ago(3600)));
        assert_eq!(
            r.workers
                .iter()
                .map(|w| w.worker_id.as_str())
                .collect::<Vec<_>>(),
            ["busy", "py", "gone"]
        );
        assert_eq!(r.count(WorkerState::Active), 2);
    }

    #[test]
    fn worker_ids_are_bounded() {
        assert!(check_worker_id("w-1").is_ok());
        assert!(check_worker_id("").is_err());
        assert!(check_worker_id(&"x".repeat(256)).is_err());
        assert!(check_worker_id("a\0b").is_err());
    }
}
