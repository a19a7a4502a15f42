//! Tasks, events, queues and workers: thin handlers over [`absurd_client::Client`].
//!
//! Requests and responses are the typed structs of [`super::model`], decoded by the
//! extractors of [`super::extract`]; each handler's `#[utoipa::path]` is its entry in the
//! OpenAPI document. Errors every route can answer (401, 403, 500, 503) are added to the
//! document in one place, [`super::openapi`].

use axum::extract::State;
use axum::Json;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, QueueName, TaskId};
use super::model::{
    check_queue_name, CancelResponse, ErrorBody, EventRequest, EventResponse, ListTasksQuery,
    QueueStats, RetryRequest, RetryResponse, SpawnRequest, SpawnResponse, TaskDetails, TaskList,
    TaskQueueQuery, TaskState, Throughput, ThroughputBucket, WindowQuery, WorkerList,
};
use super::AppState;
use absurd_client::{ClientError, State as ClientState};
use absurd_engine::metrics::Event;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Fails with 404 unless `queue` exists.
async fn existing_queue(st: &AppState, queue: &str) -> Result<(), ApiError> {
    if !st.client.queue_exists(queue).await? {
        return Err(ApiError::not_found(format!("Queue {queue:?} not found")));
    }
    Ok(())
}

/// The queue holding `task_id`: `queue_name` if given (it must exist), else looked up.
async fn task_queue(st: &AppState, task_id: Uuid, q: &TaskQueueQuery) -> Result<String, ApiError> {
    if let Some(queue) = &q.queue_name {
        check_queue_name("queue_name", queue)?;
        existing_queue(st, queue).await?;
        return Ok(queue.clone());
    }
    st.client
        .find_task_queue(task_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Task {task_id} not found")))
}

fn task_not_found(task_id: Uuid) -> ApiError {
    ApiError::not_found(format!("Task {task_id} not found"))
}

/// Spawn a task.
#[utoipa::path(
    post,
    path = "/api/absurd/tasks",
    operation_id = "spawnTask",
    tag = "tasks",
    request_body(content = SpawnRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Spawned, or the existing task for the idempotency key (`created: false`)", body = SpawnResponse),
        (status = 400, description = "Invalid input; `detail` names the field and the value", body = ErrorBody),
        (status = 404, description = "The queue does not exist", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB, or `params` over 256 KiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
    )
)]
pub(crate) async fn spawn(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<SpawnRequest>,
) -> ApiResult<SpawnResponse> {
    let req = req.check(
        st.settings.default_max_attempts,
        st.settings.max_params_bytes,
    )?;
    let queue = &req.queue_name;
    if !st.client.queue_exists(queue).await? {
        return Err(ApiError::not_found(format!(
            "Queue {queue:?} not found (create it with `absurd-host queue create {queue}`)"
        )));
    }
    let s = st
        .client
        .spawn(queue, &req.task_name, &req.params, &req.options)
        .await?;
    if s.created {
        st.counters.add(queue, &req.task_name, Event::Spawned);
    }
    let mut out = SpawnResponse::new(&s, queue, &req.task_name);
    out.warnings = req.warnings;
    Ok(Json(out))
}

/// List tasks, newest first, with the total matching and a cursor.
#[utoipa::path(
    get,
    path = "/api/absurd/tasks",
    operation_id = "listTasks",
    tag = "tasks",
    params(ListTasksQuery),
    responses(
        (status = 200, description = "A page of tasks", body = TaskList),
        (status = 400, description = "Invalid query parameter; `detail` names it and the value", body = ErrorBody),
        (status = 404, description = "The queue does not exist", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListTasksQuery>,
) -> ApiResult<TaskList> {
    let filter = q.to_filter()?;
    if let Some(queue) = &filter.queue {
        existing_queue(&st, queue).await?;
    }
    let page = st.client.list_tasks(&filter).await?;
    Ok(Json(TaskList::new(&page, filter.limit.unwrap_or_default())))
}

/// A task with its runs, checkpoints and event waits.
#[utoipa::path(
    get,
    path = "/api/absurd/tasks/{task_id}",
    operation_id = "getTask",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task"), TaskQueueQuery),
    responses(
        (status = 200, description = "The task", body = TaskDetails),
        (status = 400, description = "`task_id` is not a UUID, or `queue_name` is invalid", body = ErrorBody),
        (status = 404, description = "No such task, or no such queue", body = ErrorBody),
    )
)]
pub(crate) async fn get_one(
    State(st): State<AppState>,
    TaskId(task_id): TaskId,
    ApiQuery(q): ApiQuery<TaskQueueQuery>,
) -> ApiResult<TaskDetails> {
    let queue = task_queue(&st, task_id, &q).await?;
    let t = st
        .client
        .get_task(&queue, task_id)
        .await?
        .ok_or_else(|| task_not_found(task_id))?;
    Ok(Json(TaskDetails::from(&t)))
}

/// Cancel a task.
#[utoipa::path(
    delete,
    path = "/api/absurd/tasks/{task_id}",
    operation_id = "cancelTask",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task"), TaskQueueQuery),
    responses(
        (status = 200, description = "Cancelled", body = CancelResponse),
        (status = 400, description = "`task_id` is not a UUID, or `queue_name` is invalid", body = ErrorBody),
        (status = 404, description = "No such task, or no such queue", body = ErrorBody),
        (status = 409, description = "The task has already finished", body = ErrorBody),
    )
)]
pub(crate) async fn cancel(
    State(st): State<AppState>,
    TaskId(task_id): TaskId,
    ApiQuery(q): ApiQuery<TaskQueueQuery>,
) -> ApiResult<CancelResponse> {
    let queue = task_queue(&st, task_id, &q).await?;
    let before = st
        .client
        .task_result(&queue, task_id)
        .await?
        .ok_or_else(|| task_not_found(task_id))?;
    if before.state.is_terminal() {
        return Err(ApiError::conflict(format!(
            "Task {task_id} is already {}; it cannot be cancelled",
            before.state
        )));
    }
    st.client.cancel_task(&queue, task_id).await?;
    let after = st.client.task_result(&queue, task_id).await?;
    let status = after.map_or(ClientState::Cancelled, |r| r.state);
    if status != ClientState::Cancelled {
        return Err(ApiError::conflict(format!(
            "Task {task_id} finished as {status} before it could be cancelled"
        )));
    }
    Ok(Json(CancelResponse::new(
        task_id,
        &queue,
        TaskState::Cancelled,
    )))
}

/// Retry a failed task, in place or as a new task.
#[utoipa::path(
    post,
    path = "/api/absurd/tasks/{task_id}/retry",
    operation_id = "retryTask",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The failed task"), TaskQueueQuery),
    request_body(content = Option<RetryRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "Retried", body = RetryResponse),
        (status = 400, description = "Invalid input; `detail` names the field and the value", body = ErrorBody),
        (status = 404, description = "No such task, or no such queue", body = ErrorBody),
        (status = 409, description = "The task is not failed", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
    )
)]
pub(crate) async fn retry(
    State(st): State<AppState>,
    TaskId(task_id): TaskId,
    ApiQuery(q): ApiQuery<TaskQueueQuery>,
    body: Option<ApiJson<RetryRequest>>,
) -> ApiResult<RetryResponse> {
    let options = body.map(|ApiJson(b)| b).unwrap_or_default().to_client()?;
    let queue = task_queue(&st, task_id, &q).await?;
    let current = st
        .client
        .task_result(&queue, task_id)
        .await?
        .ok_or_else(|| task_not_found(task_id))?;
    if current.state != ClientState::Failed {
        return Err(ApiError::conflict(format!(
            "Task {task_id} is {}; only failed tasks can be retried",
            current.state
        )));
    }
    let s = st.client.retry_task(&queue, task_id, &options).await?;
    Ok(Json(RetryResponse::new(&s, &queue)))
}

/// Emit an event (wakes the tasks waiting for it; the first emit of a name wins).
#[utoipa::path(
    post,
    path = "/api/absurd/events",
    operation_id = "emitEvent",
    tag = "events",
    request_body(content = EventRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Emitted", body = EventResponse),
        (status = 400, description = "Invalid input; `detail` names the field and the value", body = ErrorBody),
        (status = 404, description = "The queue does not exist", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
    )
)]
pub(crate) async fn emit_event(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<EventRequest>,
) -> ApiResult<EventResponse> {
    let queue = req.check(&st.settings.default_queue)?;
    existing_queue(&st, &queue).await?;
    st.client
        .emit_event(&queue, &req.event_name, req.payload.as_ref())
        .await?;
    Ok(Json(EventResponse {
        queue_name: queue,
        event_name: req.event_name,
        emitted: true,
    }))
}

/// Queue names.
#[utoipa::path(
    get,
    path = "/api/absurd/queues",
    operation_id = "listQueues",
    tag = "queues",
    responses((status = 200, description = "Queue names, as the DSA-110 pipeline returned them", body = Vec<String>))
)]
pub(crate) async fn list_queues(State(st): State<AppState>) -> ApiResult<Vec<String>> {
    Ok(Json(st.client.list_queues().await?))
}

/// Statistics of every queue.
#[utoipa::path(
    get,
    path = "/api/absurd/queues/stats",
    operation_id = "allQueueStats",
    tag = "queues",
    responses((status = 200, description = "Statistics, one entry per queue", body = Vec<QueueStats>))
)]
pub(crate) async fn all_queue_stats(State(st): State<AppState>) -> ApiResult<Vec<QueueStats>> {
    let mut out = vec![];
    for q in st.client.list_queues().await? {
        match st.client.queue_stats(&q).await {
            Ok(s) => out.push(QueueStats::from(&s)),
            // Registered but its tables were dropped by hand: skip it.
            Err(ClientError::QueueNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(out))
}

/// Counts per state, oldest pending age and throughput over 1/5/15 minutes.
#[utoipa::path(
    get,
    path = "/api/absurd/queues/{queue_name}/stats",
    operation_id = "queueStats",
    tag = "queues",
    params(("queue_name" = String, Path, description = "The queue", min_length = 1, max_length = 57)),
    responses(
        (status = 200, description = "Statistics", body = QueueStats),
        (status = 400, description = "`queue_name` is over 57 bytes", body = ErrorBody),
        (status = 404, description = "The queue does not exist", body = ErrorBody),
    )
)]
pub(crate) async fn queue_stats(
    State(st): State<AppState>,
    QueueName(queue): QueueName,
) -> ApiResult<QueueStats> {
    existing_queue(&st, &queue).await?;
    Ok(Json(QueueStats::from(
        &st.client.queue_stats(&queue).await?,
    )))
}

/// Workers seen in the window: the runs they claimed (started in it or running now, over all
/// queues) and the heartbeats they sent, with their state now and their runs by state and
/// failure kind.
#[utoipa::path(
    get,
    path = "/api/absurd/workers",
    operation_id = "listWorkers",
    tag = "workers",
    params(WindowQuery),
    responses(
        (status = 200, description = "Workers, most recently heard from first", body = WorkerList),
        (status = 400, description = "`minutes` is not an integer from 1 to 1440", body = ErrorBody),
    )
)]
pub(crate) async fn workers(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> ApiResult<WorkerList> {
    let minutes = q.minutes()?;
    let registry = st.client.worker_registry(minutes).await?;
    Ok(Json(WorkerList::new(&registry)))
}

/// Completed and failed runs per minute over the window, oldest first, zero-filled (the last
/// bucket is the current minute).
#[utoipa::path(
    get,
    path = "/api/absurd/queues/{queue_name}/throughput",
    operation_id = "queueThroughput",
    tag = "queues",
    params(("queue_name" = String, Path, description = "The queue", min_length = 1, max_length = 57), WindowQuery),
    responses(
        (status = 200, description = "Per-minute counts", body = Throughput),
        (status = 400, description = "`queue_name` is over 57 bytes, or `minutes` is not an integer from 1 to 1440", body = ErrorBody),
        (status = 404, description = "The queue does not exist", body = ErrorBody),
    )
)]
pub(crate) async fn queue_throughput(
    State(st): State<AppState>,
    QueueName(queue): QueueName,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> ApiResult<Throughput> {
    let minutes = q.minutes()?;
    existing_queue(&st, &queue).await?;
    let buckets = st
        .client
        .throughput(&queue, minutes)
        .await?
        .iter()
        .map(ThroughputBucket::from)
        .collect();
    Ok(Json(Throughput {
        queue_name: queue,
        minutes,
        buckets,
    }))
}
