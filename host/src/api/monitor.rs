//! The DSA-110 pipeline's monitoring routes: `GET /metrics` (its 25 task metrics, computed
//! from the queue tables), `GET /workers/metrics` and `POST /workers/{worker_id}/heartbeat`
//! (workers that report themselves, such as the pipeline's Python workers). The SQL is
//! [`absurd_client::monitor`]'s.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::error::ApiError;
use super::extract::{ApiQuery, WorkerIdPath};
use super::model::{
    check_queue_name, ErrorBody, HeartbeatQuery, HeartbeatResponse, MetricsQuery, TaskMetrics,
    WindowQuery, WorkerList, WorkerMetrics,
};
use super::AppState;
use absurd_client::monitor::{HEARTBEAT_RETENTION_SECS, MAX_HEARTBEAT_WORKERS};

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The DSA-110 pipeline's task metrics: totals, current counts, wait and execution time
/// percentiles, and throughput, success and error rates over 1, 5 and 15 minutes.
#[utoipa::path(
    get,
    path = "/api/absurd/metrics",
    operation_id = "taskMetrics",
    tag = "meta",
    params(MetricsQuery),
    responses(
        (status = 200, description = "The metrics, over one queue or every queue", body = TaskMetrics),
        (status = 400, description = "`queue_name` is invalid", body = ErrorBody),
        (status = 404, description = "The queue does not exist", body = ErrorBody),
    )
)]
pub(crate) async fn task_metrics(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> ApiResult<TaskMetrics> {
    if let Some(queue) = &q.queue_name {
        check_queue_name("queue_name", queue)?;
        if !st.client.queue_exists(queue).await? {
            return Err(ApiError::not_found(format!("Queue {queue:?} not found")));
        }
    }
    let m = st.client.task_metrics(q.queue_name.as_deref()).await?;
    Ok(Json(TaskMetrics::new(&m, q.queue_name)))
}

/// The worker pool in figures: workers by state, average tasks and uptime.
#[utoipa::path(
    get,
    path = "/api/absurd/workers/metrics",
    operation_id = "workerMetrics",
    tag = "workers",
    params(WindowQuery),
    responses(
        (status = 200, description = "The worker pool's figures over the window", body = WorkerMetrics),
        (status = 400, description = "`minutes` is not an integer from 1 to 1440", body = ErrorBody),
    )
)]
pub(crate) async fn worker_metrics(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> ApiResult<WorkerMetrics> {
    let minutes = q.minutes()?;
    let registry = st.client.worker_registry(minutes).await?;
    Ok(Json(WorkerMetrics::new(&WorkerList::new(&registry))))
}

/// Records that a worker is alive, optionally with the task it is running. For workers that
/// do not hold Absurd leases of their own (absurd-host's workers need not call it).
#[utoipa::path(
    post,
    path = "/api/absurd/workers/{worker_id}/heartbeat",
    operation_id = "workerHeartbeat",
    tag = "workers",
    params(
        ("worker_id" = String, Path, description = "The worker (1 to 255 bytes)", min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$"),
        HeartbeatQuery
    ),
    responses(
        (status = 200, description = "Recorded", body = HeartbeatResponse),
        (status = 400, description = "`worker_id` is over 255 bytes or holds NUL, or `task_id` is not a UUID", body = ErrorBody),
        (status = 429, description = "A new worker while 10,000 workers heard from in the last day are registered", body = ErrorBody),
    )
)]
pub(crate) async fn heartbeat(
    State(st): State<AppState>,
    WorkerIdPath(worker_id): WorkerIdPath,
    ApiQuery(q): ApiQuery<HeartbeatQuery>,
) -> ApiResult<HeartbeatResponse> {
    let outcome = st
        .client
        .record_worker_heartbeat(&worker_id, q.task_id)
        .await?;
    if !outcome.recorded {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "worker {worker_id:?} refused: {} workers heard from in the last {} hours are registered, \
                 the limit is {MAX_HEARTBEAT_WORKERS} (a worker not heard from for {} hours is forgotten)",
                outcome.workers.unwrap_or(MAX_HEARTBEAT_WORKERS),
                HEARTBEAT_RETENTION_SECS / 3600,
                HEARTBEAT_RETENTION_SECS / 3600,
            ),
        ));
    }
    Ok(Json(HeartbeatResponse {
        status: "ok".into(),
        worker_id,
    }))
}
