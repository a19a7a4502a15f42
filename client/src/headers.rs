//! Task headers with a meaning to the host: per-task settings that a spawner stores in the
//! task's `headers` object, so that every spawner can set them the same way: the HTTP API and
//! the CLI (`timeout_sec`, `--timeout-sec`), and any Absurd SDK
//! (`spawn(..., headers={"timeout_sec": 30})`).
//!
//! * [`TIMEOUT_HEADER`] (`"timeout_sec"`): the run's wall-clock limit in whole seconds, 1 to
//!   [`MAX_TIMEOUT_SEC`]. It lowers the task type's timeout (its `timeout`, else
//!   `ABSURD_TASK_TIMEOUT`) and never raises it: a larger value is clamped to the type's.

use serde_json::Value;

/// The header key of a task's own timeout, in seconds.
pub const TIMEOUT_HEADER: &str = "timeout_sec";

/// The largest `timeout_sec` accepted: 365 days. Anything larger is a mistake (a timestamp or
/// milliseconds), not a timeout; it is refused rather than clamped.
pub const MAX_TIMEOUT_SEC: i64 = 365 * 24 * 3600;

/// A `timeout_sec` value: a whole number of seconds from 1 to [`MAX_TIMEOUT_SEC`] (`30.0`
/// counts as 30; `"30"`, `0`, `-1`, `1.5` and `1e12` are refused, the error naming the value).
pub fn check_timeout_sec(v: &Value) -> Result<u32, String> {
    let whole = match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
                .map(|x| x as i64)
        }),
        _ => None,
    };
    match whole {
        Some(n) if (1..=MAX_TIMEOUT_SEC).contains(&n) => Ok(n as u32),
        _ => Err(format!(
            "{TIMEOUT_HEADER} must be a whole number of seconds from 1 to {MAX_TIMEOUT_SEC}, got {}",
            shown(v)
        )),
    }
}

/// A task's own timeout from its headers: `None` when it has none (no headers, or no
/// `timeout_sec` key, or a JSON `null` there).
pub fn timeout_sec(headers: Option<&Value>) -> Result<Option<u32>, String> {
    match headers.and_then(|h| h.get(TIMEOUT_HEADER)) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => check_timeout_sec(v).map(Some),
    }
}

/// A value for an error message, cut to a readable length.
fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.len() <= 64 {
        return text;
    }
    let mut end = 60;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timeouts_are_whole_seconds_in_range() {
        assert_eq!(check_timeout_sec(&json!(30)), Ok(30));
        assert_eq!(check_timeout_sec(&json!(30.0)), Ok(30));
        assert_eq!(check_timeout_sec(&json!(MAX_TIMEOUT_SEC)), Ok(31_536_000));
        for bad in [
            json!(0),
            json!(-5),
            json!(1.5),
            json!("30"),
            json!(true),
            json!(MAX_TIMEOUT_SEC + 1),
            json!(1e300),
            json!([1]),
        ] {
            let e = check_timeout_sec(&bad).unwrap_err();
            assert!(
                e.starts_with(
                    "timeout_sec must be a whole number of seconds from 1 to 31536000, got "
                ),
                "{e}"
            );
            assert!(e.contains(&shown(&bad)), "{e} names {bad}");
        }
        let long = json!("x".repeat(1000));
        assert!(check_timeout_sec(&long).unwrap_err().len() < 200);
    }

    #[test]
    fn headers_without_the_key_have_no_timeout() {
        assert_eq!(timeout_sec(None), Ok(None));
        assert_eq!(timeout_sec(Some(&json!({"trace": 1}))), Ok(None));
        assert_eq!(timeout_sec(Some(&json!({"timeout_sec": null}))), Ok(None));
        assert_eq!(timeout_sec(Some(&json!([1, 2]))), Ok(None));
        assert_eq!(timeout_sec(Some(&json!({"timeout_sec": 7}))), Ok(Some(7)));
        assert!(timeout_sec(Some(&json!({"timeout_sec": 0}))).is_err());
    }
}
