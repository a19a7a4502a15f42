//! The client's errors: one variant per thing a caller may want to handle on its own, with the
//! three Absurd SQLSTATEs (`AB001`–`AB003`) first.

/// Errors from the client. The three Absurd SQLSTATEs get variants of their own.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `AB001`: the task was cancelled; stop working on it and report nothing.
    #[error("task has been cancelled (AB001)")]
    Cancelled,
    /// `AB002`: the run already failed (its lease expired and another claim failed it).
    #[error("run has already failed (AB002): {0}")]
    RunFailed(String),
    /// `AB003`: the retry strategy is invalid.
    #[error("invalid retry_strategy (AB003): {0}")]
    InvalidRetryStrategy(String),
    /// The database refused the request (an Absurd function raised an error).
    #[error("{0}")]
    Rejected(String),
    /// The queue's tables do not exist.
    #[error("queue {0:?} does not exist (create it with `absurd-host queue create {0}`)")]
    QueueNotFound(String),
    /// Bad input caught before reaching the database.
    #[error("{0}")]
    InvalidInput(String),
    /// The database has no `absurd` schema (or a partial one).
    #[error("the database has no absurd schema ({0}); run `absurd-host migrate` first")]
    SchemaMissing(String),
    /// A timed wait ended before its condition held.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The database could not be reached.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl ClientError {
    /// True for the errors that mean "this run is no longer ours": `AB001` and `AB002`.
    pub fn is_run_lost(&self) -> bool {
        matches!(self, ClientError::Cancelled | ClientError::RunFailed(_))
    }

    /// Maps a driver error to a client error; `queue` names the queue whose tables a missing
    /// relation (`42P01`) belongs to.
    pub(crate) fn from_sqlx(e: sqlx::Error, queue: Option<&str>) -> ClientError {
        if let sqlx::Error::Database(db) = &e {
            let msg = db.message().to_string();
            match db.code().as_deref() {
                Some("AB001") => return ClientError::Cancelled,
                Some("AB002") => return ClientError::RunFailed(msg),
                Some("AB003") => return ClientError::InvalidRetryStrategy(msg),
                Some("P0001") => return ClientError::Rejected(msg),
                Some("42P01") => {
                    return match queue {
                        Some(q) => ClientError::QueueNotFound(q.to_string()),
                        None => ClientError::Rejected(msg),
                    }
                }
                Some("3F000") | Some("42883") => return ClientError::SchemaMissing(msg),
                // The input was not valid JSON, not a UUID, out of range, …
                Some(c) if c.starts_with("22") => return ClientError::InvalidInput(msg),
                _ => {}
            }
        }
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => ClientError::Unavailable(e.to_string()),
            other => ClientError::Database(other),
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
