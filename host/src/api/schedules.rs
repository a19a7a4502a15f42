//! Schedules: `/api/absurd/schedules` (list, get, create, replace, delete), over the
//! `absurd.schedules` table (migration 0017) through [`absurd_client::Client`].
//!
//! The checks are the scheduler's own (`absurd_engine::schedule`): a bad cron expression, time
//! zone or catch-up policy is a 400 naming the value. Schedules of a worker's `absurd-host.toml`
//! (`source: config`) are edited in the file, not here (409); deleting one works, and a worker
//! whose file still defines it stores it again at its next start.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::Json;

use super::error::ApiError;
use super::extract::ApiJson;
use super::model::{
    ErrorBody, ScheduleCreate, ScheduleDeleted, ScheduleInfo, ScheduleList, ScheduleSpec,
};
use super::AppState;
use absurd_client::schedules::ScheduleSource;
use absurd_engine::schedule::{check_name, MAX_SCHEDULES};

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The `{name}` of a schedule route, checked.
pub(crate) struct ScheduleName(String);

impl<S: Send + Sync> FromRequestParts<S> for ScheduleName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, st)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!("invalid path parameter: {}", e.body_text()))
            })?;
        check_name(&raw).map_err(|e| ApiError::bad_request(e.message))?;
        Ok(ScheduleName(raw))
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Schedule {name:?} not found"))
}

/// 404 unless the queue exists (checked before the definition's values, as for spawning).
async fn existing_queue(st: &AppState, queue: &str) -> Result<(), ApiError> {
    super::model::check_queue_name("queue_name", queue)?;
    if !st.client.queue_exists(queue).await? {
        return Err(ApiError::not_found(format!(
            "Queue {queue:?} not found (create it with `absurd-host queue create {queue}`)"
        )));
    }
    Ok(())
}

/// Every schedule, by name, with its last and next runs.
#[utoipa::path(
    get,
    path = "/api/absurd/schedules",
    operation_id = "listSchedules",
    tag = "schedules",
    responses((status = 200, description = "Every schedule (at most 1000)", body = ScheduleList))
)]
pub(crate) async fn list(State(st): State<AppState>) -> ApiResult<ScheduleList> {
    let rows = st.client.list_schedules(MAX_SCHEDULES).await?;
    let now = st.client.database_time().await?;
    let schedules: Vec<ScheduleInfo> = rows.iter().map(|r| ScheduleInfo::new(r, now)).collect();
    Ok(Json(ScheduleList {
        total: schedules.len() as i64,
        schedules,
        now,
    }))
}

/// One schedule.
#[utoipa::path(
    get,
    path = "/api/absurd/schedules/{name}",
    operation_id = "getSchedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule", min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleInfo),
        (status = 400, description = "`name` is not a schedule name", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
    )
)]
pub(crate) async fn get_one(
    State(st): State<AppState>,
    ScheduleName(name): ScheduleName,
) -> ApiResult<ScheduleInfo> {
    let row = st
        .client
        .get_schedule(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    let now = st.client.database_time().await?;
    Ok(Json(ScheduleInfo::new(&row, now)))
}

/// Create a schedule. It never fires for ticks before its creation.
#[utoipa::path(
    post,
    path = "/api/absurd/schedules",
    operation_id = "createSchedule",
    tag = "schedules",
    request_body(content = ScheduleCreate, content_type = "application/json"),
    responses(
        (status = 200, description = "Created", body = ScheduleInfo),
        (status = 400, description = "Invalid input (a cron expression, time zone or catch-up policy absurd-host cannot use); `detail` names the field and the value", body = ErrorBody),
        (status = 404, description = "The queue does not exist", body = ErrorBody),
        (status = 409, description = "A schedule of that name exists, or there are already 1000 schedules", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB, or `params` over 256 KiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<ScheduleCreate>,
) -> ApiResult<ScheduleInfo> {
    let (name, spec) = req.split();
    check_name(&name).map_err(|e| ApiError::bad_request(e.message))?;
    existing_queue(&st, &spec.queue_name).await?;
    let def = spec.check(&name)?;
    let Some(row) = st
        .client
        .create_schedule(&def, ScheduleSource::Api, MAX_SCHEDULES)
        .await?
    else {
        if st.client.get_schedule(&name).await?.is_some() {
            return Err(ApiError::conflict(format!(
                "Schedule {name:?} already exists (replace it with PUT /api/absurd/schedules/{name})"
            )));
        }
        return Err(ApiError::conflict(format!(
            "there are already {MAX_SCHEDULES} schedules (the limit); delete one first"
        )));
    };
    tracing::info!(schedule = %name, cron = %row.cron, timezone = %row.timezone, task_name = %row.task_name, queue = %row.queue_name, "schedule created through the API");
    let now = st.client.database_time().await?;
    Ok(Json(ScheduleInfo::new(&row, now)))
}

/// Replace a schedule's definition (its last run and the ticks already handled are kept).
#[utoipa::path(
    put,
    path = "/api/absurd/schedules/{name}",
    operation_id = "replaceSchedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule", min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    request_body(content = ScheduleSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced", body = ScheduleInfo),
        (status = 400, description = "Invalid input; `detail` names the field and the value", body = ErrorBody),
        (status = 404, description = "No such schedule, or the queue does not exist", body = ErrorBody),
        (status = 409, description = "The schedule is defined in a worker's absurd-host.toml: change it there", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB, or `params` over 256 KiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
    )
)]
pub(crate) async fn replace(
    State(st): State<AppState>,
    ScheduleName(name): ScheduleName,
    ApiJson(spec): ApiJson<ScheduleSpec>,
) -> ApiResult<ScheduleInfo> {
    let current = st
        .client
        .get_schedule(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    if current.source == "config" {
        return Err(config_owned(&name));
    }
    existing_queue(&st, &spec.queue_name).await?;
    let def = spec.check(&name)?;
    let row = match st
        .client
        .update_schedule(&def, Some(ScheduleSource::Api))
        .await?
    {
        Some(row) => row,
        // Deleted, or taken over by a worker's file, meanwhile.
        None => match st.client.get_schedule(&name).await? {
            Some(_) => return Err(config_owned(&name)),
            None => return Err(not_found(&name)),
        },
    };
    tracing::info!(schedule = %name, revision = row.revision, "schedule replaced through the API");
    let now = st.client.database_time().await?;
    Ok(Json(ScheduleInfo::new(&row, now)))
}

fn config_owned(name: &str) -> ApiError {
    ApiError::conflict(format!(
        "Schedule {name:?} is defined in a worker's absurd-host.toml ([[schedules]]); change it there (workers store the file's schedules when they start)"
    ))
}

/// Delete a schedule (the tasks it spawned are kept). A schedule of a worker's
/// `absurd-host.toml` comes back when a worker whose file defines it starts.
#[utoipa::path(
    delete,
    path = "/api/absurd/schedules/{name}",
    operation_id = "deleteSchedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule", min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    responses(
        (status = 200, description = "Deleted", body = ScheduleDeleted),
        (status = 400, description = "`name` is not a schedule name", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(st): State<AppState>,
    ScheduleName(name): ScheduleName,
) -> ApiResult<ScheduleDeleted> {
    if !st.client.delete_schedule(&name).await? {
        return Err(not_found(&name));
    }
    tracing::info!(schedule = %name, "schedule deleted through the API");
    Ok(Json(ScheduleDeleted {
        name,
        deleted: true,
    }))
}
