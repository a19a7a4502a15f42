//! Analytics for dashboards and health checks: per-queue statistics, what each worker did,
//! throughput per minute, and the liveness figures of a queue. Read-only.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::client::{check_queue_name, quote_literal, table, Client};
use crate::error::{ClientError, Result};
use crate::types::{QueueStats, ThroughputBucket, WorkerActivity, MAX_WINDOW_MINUTES};
use crate::vocab::FailureCategory;

/// What the health report needs of one queue beyond its [`QueueStats`] (see
/// [`Client::queue_liveness`]).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct QueueLiveness {
    /// The latest completion of any run.
    pub last_completed: Option<DateTime<Utc>>,
    /// Runs still `running` whose lease has expired (not yet swept by a claim).
    pub expired: i64,
    /// Workers holding a live lease now.
    pub active: Vec<String>,
    /// Workers that started a run in the last five minutes.
    pub recent: Vec<String>,
}

impl Client {
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        check_queue_name(queue)?;
        let sql = format!(
            "with now_ as (select absurd.current_time() as now)
             select $1::text as queue_name,
               count(*) filter (where t.state = 'pending')   as pending,
               count(*) filter (where t.state = 'running')   as running,
               count(*) filter (where t.state = 'sleeping')  as sleeping,
               count(*) filter (where t.state = 'completed') as completed,
               count(*) filter (where t.state = 'failed')    as failed,
               count(*) filter (where t.state = 'cancelled') as cancelled,
               count(*) as total,
               extract(epoch from (select now from now_) - min(t.enqueue_at) filter (where t.state = 'pending'))::float8 as oldest_pending_age_secs,
               (select count(*) from {r} r where r.state = 'completed' and r.completed_at > (select now from now_) - interval '1 minute') as completed_last_1m,
               (select count(*) from {r} r where r.state = 'completed' and r.completed_at > (select now from now_) - interval '5 minutes') as completed_last_5m,
               (select count(*) from {r} r where r.state = 'completed' and r.completed_at > (select now from now_) - interval '15 minutes') as completed_last_15m
             from {t} t",
            t = table("t", queue),
            r = table("r", queue)
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(queue)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// The registered queues whose tables exist (a queue's tables may have been dropped by
    /// hand; readers that span every queue skip those).
    pub(crate) async fn queues_with_tables(&self) -> Result<Vec<String>> {
        let queues = self.list_queues().await?;
        let tables: Vec<String> = queues.iter().map(|q| table("r", q)).collect();
        let present: Vec<bool> = sqlx::query_scalar(
            "select to_regclass(t) is not null from unnest($1::text[]) with ordinality as x(t, i) order by i",
        )
        .bind(&tables)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))?;
        Ok(queues
            .into_iter()
            .zip(present)
            .filter_map(|(q, p)| p.then_some(q))
            .collect())
    }

    /// Every worker id seen in the last `minutes` (1 to [`MAX_WINDOW_MINUTES`]) over all
    /// queues: the `claimed_by` of runs started in the window or running now, with counts of
    /// those runs by state and by kind of failure. Most recently seen first.
    pub async fn worker_activity(&self, minutes: i64) -> Result<Vec<WorkerActivity>> {
        check_window(minutes)?;
        let queues = self.queues_with_tables().await?;
        if queues.is_empty() {
            return Ok(vec![]);
        }
        let list = |category: FailureCategory| {
            category
                .names()
                .map(|n| quote_literal(n.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let runs = queues
            .iter()
            .map(|q| {
                format!(
                    "select claimed_by, task_id, state, started_at, completed_at, failed_at, claim_expires_at, \
                       failure_reason->>'name' as failure_name \
                     from {r} where claimed_by is not null \
                       and (state = 'running' or started_at >= (select since from window_))",
                    r = table("r", q)
                )
            })
            .collect::<Vec<_>>()
            .join(" union all ");
        let sql = format!(
            "with now_ as (select absurd.current_time() as now),
             window_ as (select now - make_interval(mins => $1) as since from now_),
             runs as ({runs})
             select claimed_by as worker_id,
               max(greatest(started_at, completed_at, failed_at)) as last_seen,
               count(*) filter (where state = 'running') as running,
               count(*) filter (where state = 'completed') as completed,
               count(*) filter (where state = 'failed') as failed,
               count(*) filter (where state = 'failed' and failure_name in ({sandbox})) as sandbox_failures,
               count(*) filter (where state = 'failed' and failure_name in ({subprocess})) as subprocess_failures,
               count(*) filter (where state = 'failed' and failure_name in ({timeout})) as timeouts,
               min(started_at) as first_seen,
               (array_agg(task_id order by started_at desc) filter (where state = 'running'))[1] as current_task_id,
               count(*) filter (where state = 'running'
                 and (claim_expires_at is null or claim_expires_at >= (select now from now_))) as live_claims,
               count(*) filter (where state = 'running' and claim_expires_at < (select now from now_)) as expired_claims
             from runs group by claimed_by
             order by last_seen desc nulls last, worker_id",
            sandbox = list(FailureCategory::Sandbox),
            subprocess = list(FailureCategory::Subprocess),
            timeout = list(FailureCategory::Timeout),
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(minutes as i32)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    /// A queue's completed and failed runs per minute over the last `minutes` (1 to
    /// [`MAX_WINDOW_MINUTES`]), oldest first, one bucket per minute (zero-filled); the last
    /// bucket is the current, partial minute.
    pub async fn throughput(&self, queue: &str, minutes: i64) -> Result<Vec<ThroughputBucket>> {
        check_queue_name(queue)?;
        check_window(minutes)?;
        let sql = format!(
            "with now_ as (select date_trunc('minute', absurd.current_time()) as m),
             buckets as (
               select generate_series((select m from now_) - make_interval(mins => $1 - 1),
                                      (select m from now_), interval '1 minute') as minute),
             done as (
               select date_trunc('minute', completed_at) as minute, count(*) as n from {r}
               where state = 'completed' and completed_at >= (select min(minute) from buckets)
               group by 1),
             failed as (
               select date_trunc('minute', failed_at) as minute, count(*) as n from {r}
               where state = 'failed' and failed_at >= (select min(minute) from buckets)
               group by 1)
             select b.minute, coalesce(d.n, 0) as completed, coalesce(f.n, 0) as failed
             from buckets b
               left join done d on d.minute = b.minute
               left join failed f on f.minute = b.minute
             order by b.minute",
            r = table("r", queue)
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(minutes as i32)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// One round trip to the database (`select 1`), for health checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query_scalar::<_, i32>("select 1")
            .fetch_one(&self.pool)
            .await
            .map(|_| ())
    }

    /// The liveness figures of one queue for the health report: its latest completion, its
    /// expired leases, and the workers active now and lately.
    pub async fn queue_liveness(&self, queue: &str) -> Result<QueueLiveness> {
        let r = table("r", queue);
        let sql = format!(
            "with now_ as (select absurd.current_time() as now)
             select
               (select max(completed_at) from {r} where state = 'completed') as last_completed,
               (select count(*) from {r} where state = 'running' and claim_expires_at < (select now from now_)) as expired,
               (select coalesce(array_agg(distinct claimed_by), '{{}}'::text[]) from {r}
                  where claimed_by is not null and state = 'running'
                    and (claim_expires_at is null or claim_expires_at >= (select now from now_))) as active,
               (select coalesce(array_agg(distinct claimed_by), '{{}}'::text[]) from {r}
                  where claimed_by is not null and started_at > (select now from now_) - interval '5 minutes') as recent"
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }
}

fn check_window(minutes: i64) -> Result<()> {
    if !(1..=MAX_WINDOW_MINUTES).contains(&minutes) {
        return Err(ClientError::InvalidInput(format!(
            "minutes must be between 1 and {MAX_WINDOW_MINUTES}, got {minutes}"
        )));
    }
    Ok(())
}
