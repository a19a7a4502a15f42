//! The DSA-110 seed's finished tasks, as `absurd-host migrate --adopt-seed` kept them
//! (`absurd.seed_history`, read-only): listed apart from Absurd's tasks, with the seed's own
//! fields and states, so that nothing the seed ran is lost from view after the move. The
//! seed's unfinished tasks became ordinary Absurd tasks and are under `/tasks`.

use axum::extract::State;
use axum::Json;

use super::error::ApiError;
use super::extract::{ApiQuery, TaskId};
use super::model::{ErrorBody, SeedTask, SeedTaskList, SeedTasksQuery};
use super::AppState;

/// List the seed's finished tasks, newest first (empty unless the database was adopted from
/// the seed).
#[utoipa::path(
    get,
    path = "/api/absurd/seed/tasks",
    operation_id = "listSeedTasks",
    tag = "tasks",
    params(SeedTasksQuery),
    responses(
        (status = 200, description = "A page of the seed's finished tasks; `result` and `error` are null in it", body = SeedTaskList),
        (status = 400, description = "Invalid query parameter; `detail` names it and the value", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<SeedTasksQuery>,
) -> Result<Json<SeedTaskList>, ApiError> {
    let filter = q.to_filter()?;
    let page = st.client.list_seed_history(&filter).await?;
    Ok(Json(SeedTaskList {
        tasks: page.tasks.iter().map(SeedTask::from).collect(),
        total: page.total,
        limit: filter.limit,
        offset: filter.offset,
    }))
}

/// One finished task of the seed, with its result and error.
#[utoipa::path(
    get,
    path = "/api/absurd/seed/tasks/{task_id}",
    operation_id = "getSeedTask",
    tag = "tasks",
    params(("task_id" = uuid::Uuid, Path, description = "The seed's task id")),
    responses(
        (status = 200, description = "The task", body = SeedTask),
        (status = 400, description = "`task_id` is not a UUID", body = ErrorBody),
        (status = 404, description = "No finished seed task has this id", body = ErrorBody),
    )
)]
pub(crate) async fn get_one(
    State(st): State<AppState>,
    TaskId(task_id): TaskId,
) -> Result<Json<SeedTask>, ApiError> {
    match st.client.get_seed_task(task_id).await? {
        Some(t) => Ok(Json(SeedTask::from(&t))),
        None => Err(ApiError::not_found(format!(
            "Seed task {task_id} not found"
        ))),
    }
}
