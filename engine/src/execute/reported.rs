//! The DSA-110 result convention: a task that ends "successfully" with a result object whose
//! `status` is `"error"` (or `"failed"`) has failed, and says why in `message` or `errors`:
//!
//! ```json
//! {"status": "error", "message": "Validation failed: MS not found", "errors": ["MS not found"]}
//! ```
//!
//! A native program's result always follows it (`execute::native`). A wasm (or builtin) task
//! type follows it when it opts in with `status_error_fails = true`; the worker then turns
//! such a result into the same failure a native program gets: [`reported_failure`].

use serde_json::{json, Value};

use super::{Failure, FailureName};

/// Largest reported result copied into a `$TaskReportedError` failure's details.
pub const MAX_REPORTED_RESULT: usize = 16 * 1024;

/// A result object reporting failure in the DSA-110 convention: its message (`message`, else
/// the `errors` joined with `; `, else a note naming the status).
pub fn reported_error(result: &Value) -> Option<String> {
    let obj = result.as_object()?;
    let status = obj.get("status")?.as_str()?;
    if !status.eq_ignore_ascii_case("error") && !status.eq_ignore_ascii_case("failed") {
        return None;
    }
    let message = obj
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string);
    let errors: Vec<String> = obj
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    e.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| e.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    Some(match (message, errors.is_empty()) {
        (Some(m), _) if !m.is_empty() => m,
        (_, false) => errors.join("; "),
        _ => format!("the task reported status {status:?}"),
    })
}

/// The failure for a result that reports one: `$TaskReportedError` with the report's message,
/// the report (bounded) in `details.result`, and permanent when the report says
/// `"retryable": false`. `None` for any other result.
pub fn reported_failure(result: &Value) -> Option<Failure> {
    let message = reported_error(result)?;
    let mut f = Failure::new(FailureName::TaskReportedError, message)
        .with_details(json!({"result": bounded(result)}));
    if result.get("retryable") == Some(&Value::Bool(false)) {
        f = f.permanent();
    }
    Some(f)
}

/// `v`, or a note when it is too large to copy into a failure.
pub fn bounded(v: &Value) -> Value {
    let text = v.to_string();
    if text.len() <= MAX_REPORTED_RESULT {
        v.clone()
    } else {
        let mut end = MAX_REPORTED_RESULT / 2;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        json!({"truncated": true, "bytes": text.len(), "start": &text[..end]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_errors_follow_the_dsa110_convention() {
        assert_eq!(
            reported_error(
                &json!({"status": "error", "message": "Validation failed", "errors": ["x"]})
            ),
            Some("Validation failed".into())
        );
        assert_eq!(
            reported_error(&json!({"status": "error", "errors": ["a", "b"]})),
            Some("a; b".into())
        );
        assert_eq!(
            reported_error(&json!({"status": "FAILED"})),
            Some("the task reported status \"FAILED\"".into())
        );
        assert_eq!(
            reported_error(&json!({"status": "success", "outputs": {}})),
            None
        );
        assert_eq!(reported_error(&json!([1, 2])), None);
        assert_eq!(reported_error(&json!({"status": 3})), None);
    }

    #[test]
    fn the_failure_carries_the_report_bounded() {
        let f = reported_failure(&json!({"status": "error", "message": "m"})).unwrap();
        assert_eq!(f.name, "$TaskReportedError");
        assert_eq!(f.message, "m");
        assert!(f.retryable);
        assert_eq!(f.details["result"]["message"], "m");
        let f = reported_failure(&json!({"status": "failed", "errors": ["e"], "retryable": false}))
            .unwrap();
        assert!(!f.retryable);
        let big = json!({"status": "error", "message": "x".repeat(100_000)});
        let f = reported_failure(&big).unwrap();
        assert_eq!(f.details["result"]["truncated"], true);
        assert!(f.details.to_string().len() < 2 * MAX_REPORTED_RESULT);
        assert!(reported_failure(&json!({"status": "ok"})).is_none());
    }
}
