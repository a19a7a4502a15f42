//! Errors as `{"detail": ...}` with the right status code.
//!
//! A 5xx never carries database text (SQL, table names, driver messages): those can tell a
//! client about the schema or the server. The detail goes to the server log under a short id,
//! and the response names only the kind of failure and that id.

use super::model::ErrorBody;
use absurd_client::ClientError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error response: a status and the `detail` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
        }
    }
    /// 400, for input that is malformed or out of range; `detail` names the field.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    pub fn conflict(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, detail)
    }
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// A 5xx whose cause must stay on the server: logs `cause` with a fresh id and answers
    /// `"<public> (see the server log, id <id>)"`.
    pub fn logged(status: StatusCode, public: &str, cause: &dyn std::fmt::Display) -> ApiError {
        let id = error_id();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error_id = %id, error = %cause, "{public}");
        } else {
            tracing::warn!(error_id = %id, error = %cause, "{public}");
        }
        Self::new(status, format!("{public} (see the server log, id {id})"))
    }
}

/// A short id that ties a response to its server log line.
pub fn error_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// The public text of a 503 for an unusable database.
pub const DATABASE_UNAVAILABLE: &str = "Database unavailable";
/// The public text of a 503 for a query stopped by `statement_timeout`.
pub const DATABASE_TIMEOUT: &str =
    "Database busy: the query ran longer than the API's statement timeout";

/// SQLSTATE 57014 (`query_canceled`): what `statement_timeout` raises.
fn is_statement_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            detail: self.detail,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// True for sqlx errors that mean the database (not the request) is the problem.
fn is_connection_problem(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // 08xxx connection exceptions, 57P0x operator intervention (shutdown, crash), 53xxx
        // insufficient resources (too many connections), 3D000 no such database, 28xxx
        // authentication failed: the configured database cannot be used, whatever the request.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            ["08", "57P", "53", "3D", "28"]
                .iter()
                .any(|p| c.starts_with(p))
        }),
        sqlx::Error::Protocol(msg) => msg.contains("EOF") || msg.contains("closed"),
        _ => false,
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> ApiError {
        let text = e.to_string();
        match e {
            ClientError::Cancelled => ApiError::conflict("task has been cancelled"),
            ClientError::RunFailed(_) => ApiError::conflict(text),
            ClientError::InvalidRetryStrategy(m) => {
                ApiError::bad_request(format!("retry_strategy: {m}"))
            }
            ClientError::QueueNotFound(q) => ApiError::not_found(format!("Queue {q:?} not found")),
            ClientError::InvalidInput(m) => ApiError::bad_request(m),
            ClientError::Rejected(m) => {
                if m.contains("not found") || m.contains("does not exist") {
                    ApiError::not_found(m)
                } else if m.contains("not currently") || m.contains("greater than current attempts")
                {
                    ApiError::conflict(m)
                } else {
                    ApiError::bad_request(m)
                }
            }
            ClientError::SchemaMissing(_) => ApiError::logged(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database has no absurd schema; run `absurd-host migrate` first",
                &text,
            ),
            // A timed wait of our own (no database text in it).
            ClientError::Timeout(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, text),
            ClientError::Unavailable(_) => {
                ApiError::logged(StatusCode::SERVICE_UNAVAILABLE, DATABASE_UNAVAILABLE, &text)
            }
            ClientError::Database(ref inner) if is_statement_timeout(inner) => {
                ApiError::logged(StatusCode::SERVICE_UNAVAILABLE, DATABASE_TIMEOUT, &text)
            }
            ClientError::Database(ref inner) if is_connection_problem(inner) => {
                ApiError::logged(StatusCode::SERVICE_UNAVAILABLE, DATABASE_UNAVAILABLE, &text)
            }
            ClientError::Database(_) => {
                ApiError::logged(StatusCode::INTERNAL_SERVER_ERROR, "internal error", &text)
            }
        }
    }
}
