//! `GET /api/absurd/maintenance`: the last maintenance passes, for the dashboard.

use axum::extract::State;
use axum::Json;

use super::error::ApiError;
use super::model::MaintenanceRuns;
use super::AppState;

/// How many passes the route returns (the table keeps 100).
const SHOWN: i64 = 20;

/// The newest maintenance passes (at most 20), newest first. Empty where none ran, or on a
/// schema without absurd-host's maintenance table.
#[utoipa::path(
    get,
    path = "/api/absurd/maintenance",
    operation_id = "maintenanceRuns",
    tag = "health",
    responses(
        (status = 200, description = "The newest passes, newest first", body = MaintenanceRuns),
    )
)]
pub(crate) async fn runs(State(st): State<AppState>) -> Result<Json<MaintenanceRuns>, ApiError> {
    let runs = st.client.maintenance_runs(SHOWN).await?;
    Ok(Json(MaintenanceRuns {
        runs: runs.into_iter().map(Into::into).collect(),
    }))
}
