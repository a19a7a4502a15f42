//! [`TaskError`]: how a task fails.

use std::fmt;

use serde::Serialize;

use crate::bindings;

/// Whether a failure is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retried according to the task's retry policy.
    Retryable,
    /// Failed at once, without further attempts (bad params, impossible request).
    Permanent,
}

/// A task failure. The host stores it on the run as `{"name", "message", "details"}`.
///
/// Build one with [`TaskError::retryable`] or [`TaskError::permanent`], optionally adding
/// [`TaskError::with_details`]. Any `std::error::Error` (serde_json, io, parse errors, …)
/// converts into a *retryable* `$GuestError` through `?`.
///
/// `TaskError` deliberately does not implement `std::error::Error` itself (like
/// `anyhow::Error`), which is what lets `?` accept every error type.
#[derive(Clone, PartialEq)]
pub struct TaskError {
    kind: ErrorKind,
    name: String,
    message: String,
    details: Option<serde_json::Value>,
}

/// Error name used when params do not match the handler's params type.
pub const INVALID_PARAMS: &str = "$InvalidParams";
/// Error name used for errors converted through `?` / `From`.
pub const GUEST_ERROR: &str = "$GuestError";
/// Error name used when a host call reports a failure (for example a rejected spawn).
pub const HOST_ERROR: &str = "$HostError";
/// Error name used when a stored checkpoint value does not decode into the step's type.
pub const CHECKPOINT_MISMATCH: &str = "$CheckpointMismatch";
/// Error name used when an awaited event's payload does not decode into the requested type.
pub const INVALID_EVENT_PAYLOAD: &str = "$InvalidEventPayload";

impl TaskError {
    /// A failure with an explicit kind.
    pub fn new(kind: ErrorKind, name: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            kind,
            name: name.into(),
            message: message.into(),
            details: None,
        }
    }

    /// A failure that is retried according to the task's retry policy.
    pub fn retryable(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retryable, name, message)
    }

    /// A failure that fails the task at once, without further attempts.
    pub fn permanent(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, name, message)
    }

    /// A permanent `$InvalidParams` error about one field, for validation done after
    /// deserialisation: `TaskError::invalid_params("inputs.ms_path", "must end with .ms")`.
    /// The message reads ``invalid params: field `inputs.ms_path`: must end with .ms`` and
    /// `details.path` holds the field path.
    pub fn invalid_params(field: &str, problem: impl fmt::Display) -> Self {
        Self::permanent(
            INVALID_PARAMS,
            format!("invalid params: field `{field}`: {problem}"),
        )
        .with_details(serde_json::json!({ "path": field }))
    }

    /// Attaches extra JSON, stored under `details`. Anything serialisable works, e.g.
    /// `serde_json::json!({...})`; a value that fails to serialise is stored as its error text.
    pub fn with_details(mut self, details: impl Serialize) -> Self {
        self.details = Some(
            serde_json::to_value(details)
                .unwrap_or_else(|e| serde_json::Value::String(format!("<details: {e}>"))),
        );
        self
    }

    /// Makes the error permanent (keeps name, message and details).
    pub fn into_permanent(mut self) -> Self {
        self.kind = ErrorKind::Permanent;
        self
    }

    /// Makes the error retryable (keeps name, message and details).
    pub fn into_retryable(mut self) -> Self {
        self.kind = ErrorKind::Retryable;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKind::Permanent
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn details(&self) -> Option<&serde_json::Value> {
        self.details.as_ref()
    }

    pub(crate) fn into_wit(self) -> bindings::TaskError {
        bindings::TaskError {
            kind: match self.kind {
                ErrorKind::Retryable => bindings::absurd::task::types::ErrorKind::Retryable,
                ErrorKind::Permanent => bindings::absurd::task::types::ErrorKind::Permanent,
            },
            name: self.name,
            message: self.message,
            details: self.details.map(|d| d.to_string()),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("TaskError");
        s.field("kind", &self.kind)
            .field("name", &self.name)
            .field("message", &self.message);
        if let Some(d) = &self.details {
            s.field("details", &format_args!("{d}"));
        }
        s.finish()
    }
}

/// `?` on any error type: a retryable `$GuestError` whose message is the error and its
/// sources, joined by `: `.
impl<E: std::error::Error + 'static> From<E> for TaskError {
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        TaskError::retryable(GUEST_ERROR, message)
    }
}
