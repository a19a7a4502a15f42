//! Extractors that decode requests into the typed [`super::model`] structs, with errors that
//! name the bad field and value (`max_attempts must be an integer, got a string`), always as
//! `{"detail": ...}` with status 400 (413 and 415 for the body's size and type).
//!
//! Bodies are decoded in two steps: the text must be a JSON object (else 400 "not valid JSON"
//! or "must be a JSON object"), then the object is decoded into the struct through
//! `serde_path_to_error`, so that an error knows the path of its field
//! (`retry_strategy.kind`) and the value found there.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::{Path as FieldPath, Segment};
use uuid::Uuid;

use super::error::ApiError;
use super::model::check_queue_name;
use super::AppState;

/// A JSON request body decoded into `T`. As `Option<ApiJson<T>>`, an empty body is `None`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> OptionalFromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &AppState) -> Result<Option<Self>, ApiError> {
        let limit = st.settings.max_body_bytes;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = Bytes::from_request(req, st).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than the limit of {limit} bytes"),
                )
            } else {
                ApiError::bad_request(format!("cannot read the request body: {}", rej.body_text()))
            }
        })?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        check_json_type(&content_type)?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
        if value.is_null() {
            // `null` is no body, as an empty one is.
            return Ok(None);
        }
        if !value.is_object() {
            return Err(ApiError::bad_request(format!(
                "request body must be a JSON object, got {}",
                kind(&value)
            )));
        }
        match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => Ok(Some(ApiJson(t))),
            Err(e) => {
                let path = path_text(e.path());
                let found = lookup(&value, e.path());
                Err(ApiError::bad_request(explain(
                    &path,
                    &e.inner().to_string(),
                    found,
                )))
            }
        }
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, ApiError> {
        <ApiJson<T> as OptionalFromRequest<AppState>>::from_request(req, st)
            .await?
            .ok_or_else(|| ApiError::bad_request("request body is empty; expected a JSON object"))
    }
}

/// `application/json` or `application/<something>+json`, else 415.
fn check_json_type(content_type: &str) -> Result<(), ApiError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "Content-Type must be application/json (got {:?})",
            if content_type.is_empty() {
                "none"
            } else {
                content_type
            }
        ),
    ))
}

/// The query string decoded into `T`. Parameters `T` does not name are ignored (as FastAPI
/// does); one it names given twice is refused.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
        serde_path_to_error::deserialize::<_, T>(de)
            .map(ApiQuery)
            .map_err(|e| {
                let msg = e.inner().to_string();
                if let Some(name) = between(&msg, "duplicate field `", "`") {
                    return ApiError::bad_request(format!(
                        "query parameter {name} is given more than once"
                    ));
                }
                ApiError::bad_request(format!("{} {msg}", path_text(e.path())))
            })
    }
}

/// The `{task_id}` of a task route.
#[derive(Debug, Clone, Copy)]
pub struct TaskId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, ApiError> {
        let raw = path_param(parts, st).await?;
        Uuid::parse_str(&raw)
            .map(TaskId)
            .map_err(|_| ApiError::bad_request(format!("task_id {raw:?} is not a valid UUID")))
    }
}

/// The `{queue_name}` of a queue route.
#[derive(Debug, Clone)]
pub struct QueueName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for QueueName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, ApiError> {
        let raw = path_param(parts, st).await?;
        check_queue_name("queue_name", &raw)?;
        Ok(QueueName(raw))
    }
}

/// The `{worker_id}` of a worker route: 1 to 255 bytes, no NUL.
#[derive(Debug, Clone)]
pub struct WorkerIdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for WorkerIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, ApiError> {
        let raw = path_param(parts, st).await?;
        absurd_client::monitor::check_worker_id(&raw)?;
        Ok(WorkerIdPath(raw))
    }
}

async fn path_param<S: Send + Sync>(parts: &mut Parts, st: &S) -> Result<String, ApiError> {
    Path::<String>::from_request_parts(parts, st)
        .await
        .map(|Path(s)| s)
        .map_err(|e| ApiError::bad_request(format!("invalid path parameter: {}", e.body_text())))
}

// ---- error text ----------------------------------------------------------------------------

/// `retry_strategy.kind`, `runs[0]`; empty at the top.
fn path_text(path: &FieldPath) -> String {
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// The value at `path` in `root`, if there is one.
fn lookup<'a>(root: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    let mut v = root;
    for seg in path.iter() {
        v = match seg {
            Segment::Map { key } => v.get(key)?,
            Segment::Seq { index } => v.get(index)?,
            _ => return None,
        };
    }
    Some(v)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The text between `start` and the next `end` in `s`.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// The names in a serde list such as "`a`, `b`, `c`".
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// What serde's "expected ..." means, in the API's words.
fn expected_words(exp: &str) -> &str {
    let e = exp.trim();
    if e.starts_with("struct ") || e == "a map" {
        "a JSON object"
    } else if e.starts_with("enum ") || e == "variant identifier" {
        "a string"
    } else if e == "a sequence" {
        "an array"
    } else if [
        "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "usize",
    ]
    .contains(&e)
    {
        "an integer"
    } else if e == "f64" || e == "f32" {
        "a number"
    } else {
        e
    }
}

/// The detail of a body field that did not decode, from serde's message, the field's path and
/// the value found there.
fn explain(path: &str, msg: &str, found: Option<&Value>) -> String {
    let field = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(name) = between(msg, "missing field `", "`") {
        return format!("{} is required", field(name));
    }
    if let Some(name) = between(msg, "unknown field `", "`") {
        // The path ends with the unknown key itself: name its object.
        let parent = path
            .strip_suffix(name)
            .map_or(path, |p| p.trim_end_matches('.'));
        let prefix = if parent.is_empty() {
            String::new()
        } else {
            format!("{parent}: ")
        };
        let allowed = msg
            .split_once(", expected")
            .map_or(vec![], |(_, rest)| backticked(rest));
        return if allowed.is_empty() {
            format!("{prefix}unknown field {name:?}")
        } else {
            format!(
                "{prefix}unknown field {name:?} (expected one of: {})",
                allowed.join(", ")
            )
        };
    }
    if let Some(variant) = between(msg, "unknown variant `", "`") {
        let rest = &msg[msg.find(", expected").unwrap_or(msg.len())..];
        return format!(
            "{path} must be one of {}, got {variant:?}",
            backticked(rest).join(", ")
        );
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        let exp = rest.split_once(", expected ").map_or("", |(_, e)| e);
        let got = found.map_or("something else", kind);
        return format!("{path} must be {}, got {got}", expected_words(exp));
    }
    if msg.starts_with("invalid value: ") {
        let got = found.map_or_else(|| "another value".to_string(), Value::to_string);
        return format!("{path} is out of range, got {got}");
    }
    if path.is_empty() {
        msg.to_string()
    } else {
        format!("{path}: {msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::{EventRequest, SpawnRequest};
    use serde_json::json;

    fn detail<T: DeserializeOwned + std::fmt::Debug>(v: Value) -> String {
        let e = serde_path_to_error::deserialize::<_, T>(&v).unwrap_err();
        explain(
            &path_text(e.path()),
            &e.inner().to_string(),
            lookup(&v, e.path()),
        )
    }

    #[test]
    fn body_errors_name_the_field_and_what_was_found() {
        let cases = [
            (json!({"task_name": "x"}), "queue_name is required"),
            (
                json!({"queue_name": "q", "task_name": 5}),
                "task_name must be a string, got a number",
            ),
            (
                json!({"queue_name": "q", "task_name": "x", "params": [1]}),
                "params must be a JSON object, got an array",
            ),
            (
                json!({"queue_name": "q", "task_name": "x", "max_attempts": "3"}),
                "max_attempts must be an integer, got a string",
            ),
            (
                json!({"queue_name": "q", "task_name": "x", "max_attempts": 1.5}),
                "max_attempts must be an integer, got a number",
            ),
            (
                json!({"queue_name": "q", "task_name": "x", "retry_strategy": 3}),
                "retry_strategy must be a JSON object, got a number",
            ),
            (
                json!({"queue_name": "q", "task_name": "x", "retry_strategy": {"kind": "linear"}}),
                "retry_strategy.kind must be one of none, fixed, exponential, got \"linear\"",
            ),
            (
                json!({"queue_name": "q", "task_name": "x", "retry_strategy": {"bogus": 1}}),
                "retry_strategy: unknown field \"bogus\" (expected one of: kind, base_seconds, factor, max_seconds)",
            ),
            (
                json!({"queue_name": "q", "task_name": "x", "cancellation": {"max_delay": "soon"}}),
                "cancellation.max_delay must be an integer, got a string",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(detail::<SpawnRequest>(v.clone()), want, "{v}");
        }
        // JSON has one number type: a whole float is an integer.
        let v = json!({"queue_name": "q", "task_name": "x", "max_attempts": 3.0, "priority": -2});
        let r: SpawnRequest = serde_json::from_value(v).unwrap();
        assert_eq!((r.max_attempts, r.priority), (Some(3), Some(-2)));
        assert_eq!(
            detail::<SpawnRequest>(
                json!({"queue_name": "q", "task_name": "x", "max_attempts": 1e20})
            ),
            "max_attempts is out of range, got 1e+20"
        );
        let d = detail::<SpawnRequest>(json!({"queue_name": "q", "task_name": "x", "colour": 1}));
        assert!(
            d.starts_with("unknown field \"colour\" (expected one of: queue_name, task_name"),
            "{d}"
        );
        assert_eq!(
            detail::<EventRequest>(json!({"queue_name": "q"})),
            "event_name is required"
        );
    }

    #[test]
    fn media_types() {
        assert!(check_json_type("application/json").is_ok());
        assert!(check_json_type("Application/JSON; charset=utf-8").is_ok());
        assert!(check_json_type("application/merge-patch+json").is_ok());
        let e = check_json_type("text/plain").unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(check_json_type("").unwrap_err().detail.contains("none"));
    }
}
