//! The failure of a run, as `fail_run` stores it.

use serde_json::{json, Value};

use crate::jsonb;
use crate::vocab::FailureName;

/// A task failure, stored by `fail_run` as `{"name", "message", "details"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub name: String,
    pub message: String,
    pub details: Value,
    /// False for errors that retrying cannot fix (bad params, a guest's permanent error):
    /// the task is failed without further attempts.
    pub retryable: bool,
}

impl Failure {
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Failure {
            name: name.into(),
            message: message.into(),
            details: Value::Null,
            retryable: true,
        }
    }

    /// The failure's name if it is one of the host's own (`None` for a guest's name).
    pub fn host_name(&self) -> Option<FailureName> {
        self.name.parse().ok()
    }

    pub fn permanent(mut self) -> Self {
        self.retryable = false;
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The JSON stored in `r_<queue>.failure_reason`. NUL characters (from a guest's failure,
    /// or a program's stderr) become U+FFFD: `jsonb` cannot store them, and a failure must
    /// always be recordable.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "message": self.message});
        if !self.details.is_null() {
            v["details"] = self.details.clone();
        }
        if jsonb::has_nul(&v) {
            v = jsonb::without_nuls(v);
        }
        if !self.retryable {
            v["retryable"] = Value::Bool(false);
        }
        v
    }
}
