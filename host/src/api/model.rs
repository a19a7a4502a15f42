//! Every JSON shape of the API, defined once: the request bodies and query strings the
//! handlers decode, the responses they send, and the OpenAPI schemas (`utoipa`) generated from
//! them. `absurd-host --json` prints the same types, so a task, a page of tasks or a queue's
//! statistics look the same from the command line as over HTTP.
//!
//! The client library's types ([`absurd_client`]) are the database's view; the `From` impls
//! here turn them into the API's (the DSA-110 pipeline's field names: `status`, `created_at`,
//! `claimed`, ...).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ApiError;
use absurd_client as client;
use absurd_client::vocab::FailureCategory;

/// The longest queue name (Absurd's table names are `t_<queue>`, within PostgreSQL's 63 bytes).
pub const MAX_QUEUE_NAME_BYTES: usize = 57;
/// The longest task name, event name and idempotency key.
pub const MAX_NAME_BYTES: usize = 255;
/// The largest `max_attempts`.
pub const MAX_ATTEMPTS: i64 = 1000;
/// The largest retry delay, in seconds.
pub const MAX_RETRY_SECONDS: f64 = 86400.0;
/// The default page size of `GET /tasks`, and the largest.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;
/// The default window of `GET /workers` and `GET /queues/{queue_name}/throughput`, in minutes.
pub const DEFAULT_WINDOW_MINUTES: i64 = 60;

/// Times are written as RFC 3339 with a numeric offset (`2025-01-01T12:00:00.5+00:00`).
mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::Serializer;

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&t.to_rfc3339()),
                None => s.serialize_none(),
            }
        }
    }
}

/// A field given as JSON `null` stays `Some(Value::Null)`: present, unlike an absent field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// An optional integer field. JSON has one number type: `3.0` is the integer 3 (as JSON Schema
/// says), `3.5` is not an integer, and a whole number past `i64` is out of range.
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::{Error, Unexpected};
    let n = match Option::<Value>::deserialize(d)? {
        None => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(_) => {
            return Err(D::Error::invalid_type(
                Unexpected::Other("value"),
                &"an integer",
            ))
        }
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        // Within 2^53 every whole float is exact.
        Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Ok(Some(x as i64)),
        Some(x) if x.fract() != 0.0 => {
            Err(D::Error::invalid_type(Unexpected::Float(x), &"an integer"))
        }
        _ => Err(D::Error::invalid_value(
            Unexpected::Other("a whole number out of range"),
            &"an integer",
        )),
    }
}

// ---- errors --------------------------------------------------------------------------------

/// `{"detail": "..."}`: every error the API answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong. A 4xx names the bad field or value; a 5xx names the kind of failure and
    /// the id of its line in the server log, never the database's text.
    pub detail: String,
}

// ---- vocabulary ----------------------------------------------------------------------------

/// A task's or run's state. The DSA-110 pipeline's `claimed` is `running`; `sleeping` waits
/// for a timer or an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Pending,
    Running,
    Sleeping,
    Completed,
    Failed,
    Cancelled,
}

impl From<client::State> for TaskState {
    fn from(s: client::State) -> TaskState {
        match s {
            client::State::Pending => TaskState::Pending,
            client::State::Running => TaskState::Running,
            client::State::Sleeping => TaskState::Sleeping,
            client::State::Completed => TaskState::Completed,
            client::State::Failed => TaskState::Failed,
            client::State::Cancelled => TaskState::Cancelled,
        }
    }
}

impl From<TaskState> for client::State {
    fn from(s: TaskState) -> client::State {
        match s {
            TaskState::Pending => client::State::Pending,
            TaskState::Running => client::State::Running,
            TaskState::Sleeping => client::State::Sleeping,
            TaskState::Completed => client::State::Completed,
            TaskState::Failed => client::State::Failed,
            TaskState::Cancelled => client::State::Cancelled,
        }
    }
}

// ---- free-form JSON ------------------------------------------------------------------------

/// The pattern of a string without U+0000, which PostgreSQL can store neither in `text` nor in
/// `jsonb` (the API answers 400 for one).
const NO_NUL: &str = "^[^\\u0000]*$";

/// The schema `Json`: any JSON value whose strings and keys hold no U+0000, at any depth.
/// What the API accepts inside `params`, `headers` and event payloads.
pub struct Json;

/// The schema `JsonObject`: a JSON object of [`Json`] values.
pub struct JsonObject;

fn no_nul_string() -> utoipa::openapi::ObjectBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(NO_NUL))
}

impl utoipa::PartialSchema for Json {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
        use utoipa::openapi::Ref;
        AnyOfBuilder::new()
            .description(Some(
                "Any JSON value; no string or key may contain U+0000, which PostgreSQL's jsonb cannot store",
            ))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(no_nul_string())
            .item(ArrayBuilder::new().items(Ref::from_schema_name("Json")))
            .item(Ref::from_schema_name("JsonObject"))
            .into()
    }
}

impl ToSchema for Json {
    fn name() -> std::borrow::Cow<'static, str> {
        "Json".into()
    }
}

impl utoipa::PartialSchema for JsonObject {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::Ref;
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A JSON object; no string or key may contain U+0000, which PostgreSQL's jsonb cannot store",
            ))
            .property_names(Some(no_nul_string()))
            .additional_properties(Some(Ref::from_schema_name("Json")))
            .into()
    }
}

impl ToSchema for JsonObject {
    fn name() -> std::borrow::Cow<'static, str> {
        "JsonObject".into()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((Json::name().into(), Json::schema()));
    }
}

// ---- requests ------------------------------------------------------------------------------

/// `POST /tasks`. Unknown fields are refused, so that a typo does not pass silently.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// The queue; it must exist (`absurd-host queue create`, or a worker creates its queues).
    #[schema(min_length = 1, max_length = 57, pattern = "^[^\\u0000]*$")]
    pub queue_name: String,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub task_name: String,
    /// The task's input: a JSON object of at most 256 KiB (default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JsonObject>)]
    pub params: Option<Map<String, Value>>,
    /// Default `ABSURD_MAX_RETRIES + 1`.
    #[serde(
        default,
        deserialize_with = "int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<i64>,
    /// Default exponential: 30 s doubling to 1 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<RetryStrategy>,
    /// Free-form metadata stored with the task (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JsonObject>)]
    pub headers: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,
    /// With a key already used, the response is the existing task with `created: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$")]
    pub idempotency_key: Option<String>,
    /// Accepted for the DSA-110 pipeline's clients and ignored (Absurd has no priorities); a
    /// non-zero value adds a warning.
    #[serde(
        default,
        deserialize_with = "int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = -2147483648i64, maximum = 2147483647)]
    pub priority: Option<i64>,
    /// The run's wall-clock limit in seconds (1 to 31,536,000, a year). It lowers the task
    /// type's timeout (its `timeout`, else `ABSURD_TASK_TIMEOUT`) and never raises it: a larger
    /// value is clamped to the type's by the worker, which logs it. Stored as the task's
    /// `timeout_sec` header, which SDK clients can set themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 31536000)]
    pub timeout_sec: Option<Value>,
}

/// How failed runs are retried.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryStrategy {
    /// Default `exponential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<RetryKind>,
    /// The first delay, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400)]
    pub base_seconds: Option<f64>,
    /// Each delay is the previous one times this (`exponential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400)]
    pub factor: Option<f64>,
    /// The longest delay, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86400)]
    pub max_seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetryKind {
    None,
    Fixed,
    Exponential,
}

impl RetryKind {
    fn as_str(self) -> &'static str {
        match self {
            RetryKind::None => "none",
            RetryKind::Fixed => "fixed",
            RetryKind::Exponential => "exponential",
        }
    }
}

/// When Absurd cancels the task by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancellation {
    /// Cancel if not started within this many seconds.
    #[serde(
        default,
        deserialize_with = "int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub max_delay: Option<i64>,
    /// Cancel this many seconds after the first start.
    #[serde(
        default,
        deserialize_with = "int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub max_duration: Option<i64>,
}

/// `POST /tasks/{task_id}/retry` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// `true`: spawn a new task with the same input; `false` (default): retry in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_new: Option<bool>,
    /// A new `max_attempts` (it must exceed the attempts made when retrying in place).
    #[serde(
        default,
        deserialize_with = "int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<i64>,
}

/// `POST /events`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// Default `ABSURD_QUEUE_NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 57, pattern = "^[^\\u0000]*$")]
    pub queue_name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub event_name: String,
    /// Any JSON, handed to the tasks waiting for the event.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Json)]
    pub payload: Option<Value>,
}

fn int_in(field: &str, v: Option<i64>, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    match v {
        Some(n) if !(min..=max).contains(&n) => Err(ApiError::bad_request(format!(
            "{field} must be an integer between {min} and {max}, got {n}"
        ))),
        v => Ok(v),
    }
}

/// A queue name's length (the API's own check, before the database's).
pub fn check_queue_name(field: &str, q: &str) -> Result<(), ApiError> {
    if q.is_empty() {
        return Err(ApiError::bad_request(format!("{field} must not be empty")));
    }
    if q.len() > MAX_QUEUE_NAME_BYTES {
        return Err(ApiError::bad_request(format!(
            "{field} {q:?} is {} bytes long; the limit is {MAX_QUEUE_NAME_BYTES}",
            q.len()
        )));
    }
    Ok(())
}

/// A required name: not blank, at most [`MAX_NAME_BYTES`].
fn check_name(field: &str, s: &str) -> Result<(), ApiError> {
    if s.trim().is_empty() {
        return Err(ApiError::bad_request(format!("{field} must not be empty")));
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(ApiError::bad_request(format!(
            "{field} is {} bytes long; the limit is {MAX_NAME_BYTES}",
            s.len()
        )));
    }
    Ok(())
}

impl RetryStrategy {
    /// Checks the ranges, and gives the client's form (kind default `exponential`).
    pub fn to_client(&self) -> Result<client::RetryStrategy, ApiError> {
        let num = |f: &str, v: Option<f64>| match v {
            Some(x) if !(x.is_finite() && (0.0..=MAX_RETRY_SECONDS).contains(&x)) => {
                Err(ApiError::bad_request(format!(
                    "retry_strategy.{f} must be a number between 0 and {MAX_RETRY_SECONDS}, got {x}"
                )))
            }
            v => Ok(v),
        };
        Ok(client::RetryStrategy {
            kind: self.kind.unwrap_or(RetryKind::Exponential).as_str().into(),
            base_seconds: num("base_seconds", self.base_seconds)?,
            factor: num("factor", self.factor)?,
            max_seconds: num("max_seconds", self.max_seconds)?,
        })
    }
}

impl Cancellation {
    pub fn to_client(&self) -> Result<client::Cancellation, ApiError> {
        let max = i32::MAX as i64;
        Ok(client::Cancellation {
            max_delay: int_in("cancellation.max_delay", self.max_delay, 0, max)?,
            max_duration: int_in("cancellation.max_duration", self.max_duration, 0, max)?,
        })
    }
}

/// A spawn request after its checks.
pub struct CheckedSpawn {
    pub queue_name: String,
    pub task_name: String,
    pub params: Value,
    pub options: client::SpawnOptions,
    pub warnings: Vec<String>,
}

impl SpawnRequest {
    /// Checks every field; the options left unset get the given defaults. `max_params_bytes`
    /// limits the serialised params (413 above).
    pub fn check(
        self,
        default_max_attempts: i32,
        max_params_bytes: usize,
    ) -> Result<CheckedSpawn, ApiError> {
        check_queue_name("queue_name", &self.queue_name)?;
        check_name("task_name", &self.task_name)?;
        let params = Value::Object(self.params.unwrap_or_default());
        let size = params.to_string().len();
        if size > max_params_bytes {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("params is {size} bytes of JSON; the limit is {max_params_bytes} bytes"),
            ));
        }
        let max_attempts = int_in("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS)?;
        let retry = self
            .retry_strategy
            .as_ref()
            .map(RetryStrategy::to_client)
            .transpose()?;
        let cancellation = self
            .cancellation
            .as_ref()
            .map(Cancellation::to_client)
            .transpose()?;
        if let Some(k) = &self.idempotency_key {
            if k.is_empty() || k.len() > MAX_NAME_BYTES {
                return Err(ApiError::bad_request(format!(
                    "idempotency_key must be 1 to {MAX_NAME_BYTES} bytes long, got {}",
                    k.len()
                )));
            }
        }
        let mut warnings = vec![];
        let priority = int_in("priority", self.priority, i32::MIN as i64, i32::MAX as i64)?;
        if priority.is_some_and(|p| p != 0) {
            warnings.push("priority is ignored: Absurd queues have no priorities (tasks are claimed in order of availability)".to_string());
        }
        let headers = with_timeout_header(self.headers, self.timeout_sec.as_ref())?;
        Ok(CheckedSpawn {
            queue_name: self.queue_name,
            task_name: self.task_name,
            params,
            options: client::SpawnOptions {
                headers: headers.map(Value::Object),
                retry_strategy: Some(retry.unwrap_or_else(crate::config::default_retry_strategy)),
                max_attempts: Some(max_attempts.map_or(default_max_attempts, |m| m as i32)),
                cancellation,
                idempotency_key: self.idempotency_key,
            },
            warnings,
        })
    }
}

/// The spawn's headers with its `timeout_sec` (the field, or the header of that name) checked
/// and stored as the `timeout_sec` header, where every worker reads it.
pub fn with_timeout_header(
    headers: Option<Map<String, Value>>,
    field: Option<&Value>,
) -> Result<Option<Map<String, Value>>, ApiError> {
    use absurd_client::headers::{check_timeout_sec, TIMEOUT_HEADER};
    let in_headers = headers
        .as_ref()
        .and_then(|h| h.get(TIMEOUT_HEADER))
        .filter(|v| !v.is_null());
    let from_header = in_headers
        .map(check_timeout_sec)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("headers.{e}")))?;
    let Some(field) = field else {
        return Ok(headers);
    };
    let secs = check_timeout_sec(field).map_err(ApiError::bad_request)?;
    if from_header.is_some_and(|h| h != secs) {
        return Err(ApiError::bad_request(format!(
            "timeout_sec is {secs} but headers.{TIMEOUT_HEADER} is {}; give one of them",
            from_header.unwrap_or_default()
        )));
    }
    let mut headers = headers.unwrap_or_default();
    headers.insert(TIMEOUT_HEADER.into(), Value::from(secs));
    Ok(Some(headers))
}

impl RetryRequest {
    pub fn to_client(&self) -> Result<client::RetryOptions, ApiError> {
        Ok(client::RetryOptions {
            spawn_new: self.spawn_new.unwrap_or(false),
            max_attempts: int_in("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS)?
                .map(|m| m as i32),
        })
    }
}

impl EventRequest {
    /// Checks the names; the queue defaults to `default_queue`. Gives the queue.
    pub fn check(&self, default_queue: &str) -> Result<String, ApiError> {
        let queue = self.queue_name.as_deref().unwrap_or(default_queue);
        check_queue_name("queue_name", queue)?;
        check_name("event_name", &self.event_name)?;
        Ok(queue.to_string())
    }
}

// ---- query strings -------------------------------------------------------------------------

/// A query parameter's value: parsed from its text, and described for an error message.
pub trait QueryValue: Sized {
    /// What a value must be, after "is not": `"an integer"`.
    const EXPECTED: &'static str;
    fn parse(raw: &str) -> Option<Self>;
}

impl QueryValue for String {
    const EXPECTED: &'static str = "text";
    fn parse(raw: &str) -> Option<Self> {
        Some(raw.to_string())
    }
}

impl QueryValue for i64 {
    const EXPECTED: &'static str = "an integer";
    fn parse(raw: &str) -> Option<Self> {
        raw.parse().ok()
    }
}

impl QueryValue for Uuid {
    const EXPECTED: &'static str = "a cursor returned by a listing";
    fn parse(raw: &str) -> Option<Self> {
        Uuid::parse_str(raw).ok()
    }
}

impl QueryValue for TaskState {
    const EXPECTED: &'static str =
        "a task state (pending, running, sleeping, completed, failed, cancelled)";
    fn parse(raw: &str) -> Option<Self> {
        raw.parse::<client::State>().ok().map(TaskState::from)
    }
}

/// The `status` filter of `GET /tasks`: a task state, or one of the DSA-110 pipeline's names
/// for them. `claimed` is `running`; `retrying` is a task waiting for its next attempt
/// (pending or sleeping, past its first attempt, the attempt not started yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    Pending,
    Running,
    Sleeping,
    Completed,
    Failed,
    Cancelled,
    /// The seed's name for `running`.
    Claimed,
    /// Waiting for a retry.
    Retrying,
}

impl StatusFilter {
    /// The state filter and the "waiting for a retry" filter it stands for.
    pub fn to_client(self) -> (Option<client::State>, bool) {
        match self {
            StatusFilter::Pending => (Some(client::State::Pending), false),
            StatusFilter::Running | StatusFilter::Claimed => (Some(client::State::Running), false),
            StatusFilter::Sleeping => (Some(client::State::Sleeping), false),
            StatusFilter::Completed => (Some(client::State::Completed), false),
            StatusFilter::Failed => (Some(client::State::Failed), false),
            StatusFilter::Cancelled => (Some(client::State::Cancelled), false),
            StatusFilter::Retrying => (None, true),
        }
    }
}

impl QueryValue for StatusFilter {
    const EXPECTED: &'static str =
        "a task state (pending, running, sleeping, completed, failed, cancelled) \
         or one of the DSA-110 pipeline's names (claimed, retrying)";
    fn parse(raw: &str) -> Option<Self> {
        serde_json::from_value(Value::String(raw.to_string())).ok()
    }
}

impl QueryValue for DateTime<Utc> {
    const EXPECTED: &'static str = "an RFC 3339 time (e.g. 2025-01-01T00:00:00Z)";
    fn parse(raw: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(raw)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// An optional free-text query parameter: an empty value counts as absent.
fn query_opt<'de, D: Deserializer<'de>, T: QueryValue>(d: D) -> Result<Option<T>, D::Error> {
    let raw = String::deserialize(d)?;
    if raw.is_empty() {
        return Ok(None);
    }
    query_value(raw)
}

/// An optional query parameter: when given, even empty, it must be a valid value.
fn query_strict<'de, D: Deserializer<'de>, T: QueryValue>(d: D) -> Result<Option<T>, D::Error> {
    query_value(String::deserialize(d)?)
}

fn query_value<E: serde::de::Error, T: QueryValue>(raw: String) -> Result<Option<T>, E> {
    T::parse(&raw)
        .map(Some)
        .ok_or_else(|| E::custom(format!("{raw:?} is not {}", T::EXPECTED)))
}

/// `GET /tasks`: filters (combined with AND) and the page. An empty value of a free-text filter
/// (`task_name`, `q`) means no filter; any other parameter must be a valid value when given.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTasksQuery {
    /// Only this queue (default: every queue).
    #[serde(default, deserialize_with = "query_strict")]
    #[param(
        min_length = 1,
        max_length = 57,
        pattern = "^[^\\u0000]*$",
        nullable = false
    )]
    pub queue_name: Option<String>,
    /// A task state, or the DSA-110 pipeline's `claimed` (= `running`) or `retrying`
    /// (waiting for the next attempt).
    #[serde(default, deserialize_with = "query_strict")]
    #[param(inline, nullable = false)]
    pub status: Option<StatusFilter>,
    /// Only tasks of this name.
    #[serde(default, deserialize_with = "query_opt")]
    #[param(pattern = "^[^\\u0000]*$", nullable = false)]
    pub task_name: Option<String>,
    /// Page size.
    #[serde(default, deserialize_with = "query_strict")]
    #[param(minimum = 1, maximum = 1000, default = 100, nullable = false)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (omitted: the first page).
    #[serde(default, deserialize_with = "query_strict")]
    #[param(nullable = false)]
    pub cursor: Option<Uuid>,
    /// Only tasks enqueued at or after this time (RFC 3339).
    #[serde(default, deserialize_with = "query_strict")]
    #[param(nullable = false)]
    pub enqueued_after: Option<DateTime<Utc>>,
    /// Only tasks enqueued before this time (RFC 3339).
    #[serde(default, deserialize_with = "query_strict")]
    #[param(nullable = false)]
    pub enqueued_before: Option<DateTime<Utc>>,
    /// Only tasks whose params, as JSON text, contain this text (case-insensitive; `%`, `_`
    /// and `\` are literal).
    #[serde(default, deserialize_with = "query_opt")]
    #[param(max_length = 200, pattern = "^[^\\u0000]*$", nullable = false)]
    pub q: Option<String>,
}

impl ListTasksQuery {
    /// Checks the ranges; gives the client's filter.
    pub fn to_filter(&self) -> Result<client::TaskFilter, ApiError> {
        if let Some(q) = &self.queue_name {
            check_queue_name("queue_name", q)?;
        }
        let limit = int_in("limit", self.limit, 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
        if let Some(t) = &self.q {
            let n = t.chars().count();
            if n > client::MAX_SEARCH_CHARS {
                return Err(ApiError::bad_request(format!(
                    "q is {n} characters long; the limit is {}",
                    client::MAX_SEARCH_CHARS
                )));
            }
            if t.contains('\0') {
                return Err(ApiError::bad_request("q must not contain NUL characters"));
            }
        }
        let (state, retrying) = self.status.map_or((None, false), StatusFilter::to_client);
        Ok(client::TaskFilter {
            queue: self.queue_name.clone(),
            state,
            retrying,
            task_name: self.task_name.clone(),
            limit: Some(limit),
            cursor: self.cursor.map(|c| c.to_string()),
            enqueued_after: self.enqueued_after,
            enqueued_before: self.enqueued_before,
            search: self.q.clone(),
        })
    }
}

/// The optional `queue_name` of the task routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskQueueQuery {
    /// The task's queue (looked up in every queue when omitted).
    #[serde(default, deserialize_with = "query_strict")]
    #[param(
        min_length = 1,
        max_length = 57,
        pattern = "^[^\\u0000]*$",
        nullable = false
    )]
    pub queue_name: Option<String>,
}

/// The window of `GET /workers` and `GET /queues/{queue_name}/throughput`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// The window's length in minutes.
    #[serde(default, deserialize_with = "query_strict")]
    #[param(minimum = 1, maximum = 1440, default = 60, nullable = false)]
    pub minutes: Option<i64>,
}

impl WindowQuery {
    pub fn minutes(&self) -> Result<i64, ApiError> {
        Ok(
            int_in("minutes", self.minutes, 1, client::MAX_WINDOW_MINUTES)?
                .unwrap_or(DEFAULT_WINDOW_MINUTES),
        )
    }
}

// ---- responses: tasks ----------------------------------------------------------------------

/// A spawned task (or the existing one for its idempotency key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SpawnResponse {
    pub task_id: Uuid,
    /// The first run.
    pub run_id: Uuid,
    pub attempt: i32,
    /// `false` when an existing task was returned for the idempotency key.
    pub created: bool,
    pub queue_name: String,
    pub task_name: String,
    /// Why fields of the request were ignored (`priority`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl SpawnResponse {
    pub fn new(s: &client::Spawned, queue_name: &str, task_name: &str) -> SpawnResponse {
        SpawnResponse {
            task_id: s.task_id,
            run_id: s.run_id,
            attempt: s.attempt,
            created: s.created,
            queue_name: queue_name.to_string(),
            task_name: task_name.to_string(),
            warnings: vec![],
        }
    }
}

/// A task as listed: the DSA-110 pipeline's `TaskResponse` fields with Absurd's states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskSummary {
    pub task_id: Uuid,
    pub queue_name: String,
    pub task_name: String,
    pub status: TaskState,
    pub attempts: i32,
    /// `attempts - 1`.
    pub retry_count: i32,
    pub max_attempts: Option<i32>,
    /// When the task was enqueued.
    #[serde(serialize_with = "rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub first_started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub cancelled_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
    /// The task's input. In a listing it is null when its JSON text is over 16 KiB
    /// (`params_bytes` then gives its size; `GET /tasks/{task_id}` has it whole).
    #[schema(value_type = Value)]
    pub params: Option<Value>,
    /// In listings, the size of `params` as JSON text, when they were left out for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_bytes: Option<i64>,
    /// Always 0: the DSA-110 pipeline's field, kept for its clients; Absurd has no priorities.
    pub priority: i32,
    /// When the last run started (was claimed by a worker); null until it starts.
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub claimed_at: Option<DateTime<Utc>>,
    /// When the last run completed or failed.
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub completed_at: Option<DateTime<Utc>>,
    /// The last run's worker.
    pub worker_id: Option<String>,
    /// The result of a completed task (always null in listings).
    #[schema(value_type = Value)]
    pub result: Option<Value>,
    /// `"<name>: <message>"` of the last failure (always null in listings).
    pub error: Option<String>,
}

impl From<&client::TaskSummary> for TaskSummary {
    fn from(s: &client::TaskSummary) -> TaskSummary {
        TaskSummary {
            task_id: s.task_id,
            queue_name: s.queue_name.clone(),
            task_name: s.task_name.clone(),
            status: s.state.into(),
            attempts: s.attempts,
            retry_count: (s.attempts - 1).max(0),
            max_attempts: s.max_attempts,
            created_at: s.enqueue_at,
            first_started_at: s.first_started_at,
            cancelled_at: s.cancelled_at,
            idempotency_key: s.idempotency_key.clone(),
            params: s.params.clone(),
            params_bytes: match (&s.params, s.params_bytes) {
                (None, Some(n)) if n > client::MAX_LISTED_PARAMS_BYTES => Some(n),
                _ => None,
            },
            priority: 0,
            claimed_at: s.claimed_at,
            completed_at: s.completed_at,
            worker_id: s.worker_id.clone(),
            result: None,
            error: None,
        }
    }
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub run_id: Uuid,
    pub attempt: i32,
    pub state: TaskState,
    /// The worker that claimed it.
    pub worker_id: Option<String>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub claim_expires_at: Option<DateTime<Utc>>,
    /// Null while it waits for an event without a timeout.
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub available_at: Option<DateTime<Utc>>,
    pub wake_event: Option<String>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub failed_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub created_at: Option<DateTime<Utc>>,
    #[schema(value_type = Value)]
    pub result: Option<Value>,
    /// `{"name", "message", ...}` of a failed run.
    #[schema(value_type = Value)]
    pub failure_reason: Option<Value>,
}

impl From<&client::RunInfo> for Run {
    fn from(r: &client::RunInfo) -> Run {
        Run {
            run_id: r.run_id,
            attempt: r.attempt,
            state: r.state.into(),
            worker_id: r.claimed_by.clone(),
            claim_expires_at: r.claim_expires_at,
            available_at: r.available_at,
            wake_event: r.wake_event.clone(),
            started_at: r.started_at,
            completed_at: r.completed_at,
            failed_at: r.failed_at,
            created_at: r.created_at,
            result: r.result.clone(),
            failure_reason: r.failure_reason.clone(),
        }
    }
}

/// A step's saved state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    pub checkpoint_name: String,
    #[schema(value_type = Value)]
    pub state: Value,
    pub status: String,
    pub owner_run_id: Option<Uuid>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<&client::Checkpoint> for Checkpoint {
    fn from(c: &client::Checkpoint) -> Checkpoint {
        Checkpoint {
            checkpoint_name: c.checkpoint_name.clone(),
            state: c.state.clone(),
            status: c.status.clone(),
            owner_run_id: c.owner_run_id,
            updated_at: c.updated_at,
        }
    }
}

/// An event a run waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Wait {
    pub run_id: Uuid,
    pub step_name: String,
    pub event_name: String,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub timeout_at: Option<DateTime<Utc>>,
}

impl From<&client::WaitInfo> for Wait {
    fn from(w: &client::WaitInfo) -> Wait {
        Wait {
            run_id: w.run_id,
            step_name: w.step_name.clone(),
            event_name: w.event_name.clone(),
            timeout_at: w.timeout_at,
        }
    }
}

/// A task with its runs, checkpoints and event waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskDetails {
    #[serde(flatten)]
    pub summary: TaskSummary,
    #[schema(value_type = Value)]
    pub headers: Option<Value>,
    #[schema(value_type = Value)]
    pub retry_strategy: Option<Value>,
    #[schema(value_type = Value)]
    pub cancellation: Option<Value>,
    /// The task's own timeout in seconds (its `timeout_sec` header), null when it has none
    /// (or an unusable one): the run's limit is the lower of this and the task type's timeout.
    pub timeout_sec: Option<u32>,
    pub runs: Vec<Run>,
    pub checkpoints: Vec<Checkpoint>,
    pub waits: Vec<Wait>,
}

/// A readable error from a run's failure reason (`{"name","message",…}`).
fn error_text(reason: &Value) -> String {
    match (
        reason.get("name").and_then(Value::as_str),
        reason.get("message").and_then(Value::as_str),
    ) {
        (Some(n), Some(m)) => format!("{n}: {m}"),
        (None, Some(m)) => m.to_string(),
        _ => reason.to_string(),
    }
}

impl From<&client::TaskDetails> for TaskDetails {
    fn from(t: &client::TaskDetails) -> TaskDetails {
        let last = t.runs.last();
        let mut summary = TaskSummary::from(&t.summary);
        summary.result = t.completed_payload.clone();
        summary.error = match t.summary.state {
            client::State::Completed => None,
            _ => last.and_then(|r| r.failure_reason.as_ref()).map(error_text),
        };
        summary.params = Some(t.params.clone());
        summary.params_bytes = None;
        summary.claimed_at = last.and_then(|r| r.started_at);
        summary.completed_at = last.and_then(|r| r.completed_at.or(r.failed_at));
        summary.worker_id = last.and_then(|r| r.claimed_by.clone());
        TaskDetails {
            summary,
            headers: t.headers.clone(),
            retry_strategy: t.retry_strategy.clone(),
            cancellation: t.cancellation.clone(),
            timeout_sec: absurd_client::headers::timeout_sec(t.headers.as_ref())
                .ok()
                .flatten(),
            runs: t.runs.iter().map(Run::from).collect(),
            checkpoints: t.checkpoints.iter().map(Checkpoint::from).collect(),
            waits: t.waits.iter().map(Wait::from).collect(),
        }
    }
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskSummary>,
    /// Tasks matching the filter over all pages.
    pub total: i64,
    pub limit: i64,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

impl TaskList {
    pub fn new(page: &client::TaskPage, limit: i64) -> TaskList {
        TaskList {
            tasks: page.tasks.iter().map(TaskSummary::from).collect(),
            total: page.total,
            limit,
            next_cursor: page.next_cursor.clone(),
        }
    }
}

/// `DELETE /tasks/{task_id}` (and `absurd-host task cancel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CancelResponse {
    pub message: String,
    pub task_id: Uuid,
    pub queue_name: String,
    /// The task's state after the cancellation: `cancelled` unless it had already finished.
    pub status: TaskState,
}

impl CancelResponse {
    pub fn new(task_id: Uuid, queue_name: &str, status: TaskState) -> CancelResponse {
        let message = if status == TaskState::Cancelled {
            format!("Task {task_id} cancelled")
        } else {
            format!("Task {task_id} is {}", client::State::from(status))
        };
        CancelResponse {
            message,
            task_id,
            queue_name: queue_name.to_string(),
            status,
        }
    }
}

/// A retried task: the same task with a new run, or a new task (`created`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetryResponse {
    pub task_id: Uuid,
    pub run_id: Uuid,
    pub attempt: i32,
    /// `true` when a new task was spawned (`spawn_new`).
    pub created: bool,
    pub queue_name: String,
    pub status: TaskState,
}

impl RetryResponse {
    pub fn new(s: &client::Spawned, queue_name: &str) -> RetryResponse {
        RetryResponse {
            task_id: s.task_id,
            run_id: s.run_id,
            attempt: s.attempt,
            created: s.created,
            queue_name: queue_name.to_string(),
            status: TaskState::Pending,
        }
    }
}

/// An emitted event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventResponse {
    pub queue_name: String,
    pub event_name: String,
    pub emitted: bool,
}

// ---- responses: queues and workers ---------------------------------------------------------

/// Completions over the last 1, 5 and 15 minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecentThroughput {
    pub completed_last_1m: i64,
    pub completed_last_5m: i64,
    pub completed_last_15m: i64,
    pub per_minute_1m: f64,
    pub per_minute_5m: f64,
    pub per_minute_15m: f64,
}

/// A queue's tasks by state, the oldest pending age and the recent throughput.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueStats {
    pub queue_name: String,
    pub pending: i64,
    /// The DSA-110 pipeline's name for `running`.
    pub claimed: i64,
    pub running: i64,
    pub sleeping: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub total: i64,
    /// Seconds since the oldest pending task was enqueued; null with none pending.
    pub oldest_pending_age_seconds: Option<f64>,
    pub throughput: RecentThroughput,
}

impl From<&client::QueueStats> for QueueStats {
    fn from(s: &client::QueueStats) -> QueueStats {
        QueueStats {
            queue_name: s.queue_name.clone(),
            pending: s.pending,
            claimed: s.running,
            running: s.running,
            sleeping: s.sleeping,
            completed: s.completed,
            failed: s.failed,
            cancelled: s.cancelled,
            total: s.total,
            oldest_pending_age_seconds: s.oldest_pending_age_secs,
            throughput: RecentThroughput {
                completed_last_1m: s.completed_last_1m,
                completed_last_5m: s.completed_last_5m,
                completed_last_15m: s.completed_last_15m,
                per_minute_1m: s.completed_last_1m as f64,
                per_minute_5m: s.completed_last_5m as f64 / 5.0,
                per_minute_15m: s.completed_last_15m as f64 / 15.0,
            },
        }
    }
}

/// Runs completed and failed in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ThroughputBucket {
    /// The start of the minute (UTC).
    #[serde(serialize_with = "rfc3339::serialize")]
    pub minute: DateTime<Utc>,
    /// Runs completed in the minute.
    pub completed: i64,
    /// Runs failed in the minute (each failed attempt counts).
    pub failed: i64,
}

impl From<&client::ThroughputBucket> for ThroughputBucket {
    fn from(b: &client::ThroughputBucket) -> ThroughputBucket {
        ThroughputBucket {
            minute: b.minute,
            completed: b.completed,
            failed: b.failed,
        }
    }
}

/// A queue's completions and failures per minute, oldest first, zero-filled; the last bucket
/// is the current minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Throughput {
    pub queue_name: String,
    pub minutes: i64,
    pub buckets: Vec<ThroughputBucket>,
}

/// A worker's state, from how long ago it was last heard from: `active` within 10 s (or
/// while it holds a live lease), `idle` within 60 s, `stale` within 180 s, else `crashed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStateName {
    Active,
    Idle,
    Stale,
    Crashed,
}

impl From<client::monitor::WorkerState> for WorkerStateName {
    fn from(s: client::monitor::WorkerState) -> WorkerStateName {
        use client::monitor::WorkerState as S;
        match s {
            S::Active => WorkerStateName::Active,
            S::Idle => WorkerStateName::Idle,
            S::Stale => WorkerStateName::Stale,
            S::Crashed => WorkerStateName::Crashed,
        }
    }
}

/// A worker seen in the window: from the runs it claimed and the heartbeats it sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Worker {
    pub worker_id: String,
    pub state: WorkerStateName,
    /// The last time it was heard from: its latest heartbeat, run start, completion or
    /// failure, or now while it holds a live lease.
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub last_seen: Option<DateTime<Utc>>,
    /// The first time it was seen in the window (first heartbeat or first run start).
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub first_seen: Option<DateTime<Utc>>,
    /// `last_seen - first_seen`, in seconds (0 when either is unknown).
    pub uptime_seconds: f64,
    /// Its runs in the window (running, completed, failed), or the tasks its heartbeats
    /// reported, whichever is more.
    pub task_count: i64,
    /// The task of its latest running run, else the task its last heartbeat reported.
    pub current_task_id: Option<Uuid>,
    /// It holds running runs whose lease expired (it stopped renewing them).
    pub timed_out: bool,
    /// Heartbeats received (`POST /workers/{worker_id}/heartbeat`); 0 for a worker that sends none.
    pub heartbeats: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    /// Failed runs whose failure is the WebAssembly sandbox's (names in `failure_names`).
    pub sandbox_failures: i64,
    /// Failed runs whose failure is a native subprocess's (names in `failure_names`).
    pub subprocess_failures: i64,
    /// Failed runs that hit the run time limit (names in `failure_names`).
    pub timeouts: i64,
}

impl From<&client::monitor::RegisteredWorker> for Worker {
    fn from(w: &client::monitor::RegisteredWorker) -> Worker {
        let a = w.activity.as_ref();
        let uptime_seconds = match (w.first_seen, w.last_activity) {
            (Some(f), Some(l)) if l > f => (l - f).num_milliseconds() as f64 / 1000.0,
            _ => 0.0,
        };
        Worker {
            worker_id: w.worker_id.clone(),
            state: w.state.into(),
            last_seen: w.last_activity,
            first_seen: w.first_seen,
            uptime_seconds,
            task_count: w.task_count,
            current_task_id: w.current_task_id,
            timed_out: w.timed_out,
            heartbeats: w.heartbeat.as_ref().map_or(0, |h| h.heartbeats),
            running: a.map_or(0, |a| a.running),
            completed: a.map_or(0, |a| a.completed),
            failed: a.map_or(0, |a| a.failed),
            sandbox_failures: a.map_or(0, |a| a.sandbox_failures),
            subprocess_failures: a.map_or(0, |a| a.subprocess_failures),
            timeouts: a.map_or(0, |a| a.timeouts),
        }
    }
}

/// Workers seen in the window, most recently heard from first, with the count per state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub minutes: i64,
    pub workers: Vec<Worker>,
    /// Workers listed.
    pub total: usize,
    pub active: usize,
    pub idle: usize,
    pub stale: usize,
    pub crashed: usize,
    /// For each failure count of a worker (`sandbox_failures`, `subprocess_failures`,
    /// `timeouts`), the failure names it counts.
    pub failure_names: BTreeMap<String, Vec<String>>,
}

impl WorkerList {
    pub fn new(registry: &client::monitor::WorkerRegistry) -> WorkerList {
        use client::monitor::WorkerState as S;
        WorkerList {
            minutes: registry.minutes,
            workers: registry.workers.iter().map(Worker::from).collect(),
            total: registry.workers.len(),
            active: registry.count(S::Active),
            idle: registry.count(S::Idle),
            stale: registry.count(S::Stale),
            crashed: registry.count(S::Crashed),
            failure_names: client::WorkerActivity::counted_failures()
                .into_iter()
                .map(|(field, category): (&str, FailureCategory)| {
                    (
                        field.to_string(),
                        category.names().map(|n| n.as_str().to_string()).collect(),
                    )
                })
                .collect(),
        }
    }
}

/// `GET /workers/metrics`: the worker pool in figures (the DSA-110 pipeline's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerMetrics {
    pub minutes: i64,
    pub total_workers: usize,
    pub active_workers: usize,
    pub idle_workers: usize,
    pub stale_workers: usize,
    pub crashed_workers: usize,
    /// Workers holding running runs whose lease expired.
    pub timed_out_workers: usize,
    pub avg_tasks_per_worker: f64,
    pub avg_worker_uptime_sec: f64,
}

impl WorkerMetrics {
    pub fn new(list: &WorkerList) -> WorkerMetrics {
        let n = list.workers.len();
        let avg = |f: &dyn Fn(&Worker) -> f64| {
            if n == 0 {
                0.0
            } else {
                list.workers.iter().map(f).sum::<f64>() / n as f64
            }
        };
        WorkerMetrics {
            minutes: list.minutes,
            total_workers: n,
            active_workers: list.active,
            idle_workers: list.idle,
            stale_workers: list.stale,
            crashed_workers: list.crashed,
            timed_out_workers: list.workers.iter().filter(|w| w.timed_out).count(),
            avg_tasks_per_worker: avg(&|w| w.task_count as f64),
            avg_worker_uptime_sec: avg(&|w| w.uptime_seconds),
        }
    }
}

/// The optional `task_id` of `POST /workers/{worker_id}/heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HeartbeatQuery {
    /// The task the worker is running now (omitted: none).
    #[serde(default, deserialize_with = "query_strict")]
    #[param(nullable = false)]
    pub task_id: Option<Uuid>,
}

/// A recorded heartbeat, as the DSA-110 pipeline answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// Always `ok`.
    pub status: String,
    pub worker_id: String,
}

/// The optional `queue_name` of `GET /metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// Only this queue (default: every queue).
    #[serde(default, deserialize_with = "query_strict")]
    #[param(
        min_length = 1,
        max_length = 57,
        pattern = "^[^\\u0000]*$",
        nullable = false
    )]
    pub queue_name: Option<String>,
}

/// `GET /metrics`: the DSA-110 pipeline's 25 task metrics, computed from the queue tables, and
/// what they were computed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskMetrics {
    /// Tasks in the tables (every task spawned and not yet cleaned up).
    pub total_spawned: i64,
    /// Tasks that have started at least once.
    pub total_claimed: i64,
    pub total_completed: i64,
    pub total_failed: i64,
    pub total_cancelled: i64,
    /// Runs created in the last `window_hours` that failed for the run time limit.
    pub total_timed_out: i64,
    pub current_pending: i64,
    /// Running tasks (the seed's `claimed`).
    pub current_claimed: i64,
    /// Seconds from a run's creation to its start, over `wait_samples` runs (0 with none).
    pub avg_wait_time_sec: f64,
    pub p50_wait_time_sec: f64,
    pub p95_wait_time_sec: f64,
    pub p99_wait_time_sec: f64,
    /// Seconds from a run's start to its completion or failure, over `execution_samples` runs.
    pub avg_execution_time_sec: f64,
    pub p50_execution_time_sec: f64,
    pub p95_execution_time_sec: f64,
    pub p99_execution_time_sec: f64,
    /// Runs completed per second over the last 1, 5 and 15 minutes.
    pub throughput_1min: f64,
    pub throughput_5min: f64,
    pub throughput_15min: f64,
    /// Completed runs over completed and failed runs in the window (1.0 with none).
    pub success_rate_1min: f64,
    pub success_rate_5min: f64,
    pub success_rate_15min: f64,
    /// Failed runs over completed and failed runs in the window (0.0 with none).
    pub error_rate_1min: f64,
    pub error_rate_5min: f64,
    pub error_rate_15min: f64,
    /// The queue, or null for every queue.
    pub queue_name: Option<String>,
    /// Tasks sleeping (waiting for a timer, an event or a retry's delay).
    pub current_sleeping: i64,
    /// Runs created this many hours back at most are looked at (rates, timeouts, samples).
    pub window_hours: i64,
    /// The runs the wait percentiles are over (the latest started, at most 1,000).
    pub wait_samples: i64,
    /// Those of them that finished, which the execution percentiles are over.
    pub execution_samples: i64,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub computed_at: DateTime<Utc>,
}

impl TaskMetrics {
    pub fn new(m: &client::monitor::TaskMetrics, queue_name: Option<String>) -> TaskMetrics {
        let per_sec = |n: i64, secs: f64| n as f64 / secs;
        let success = |c: i64, f: i64| {
            if c + f == 0 {
                1.0
            } else {
                c as f64 / (c + f) as f64
            }
        };
        let error = |c: i64, f: i64| {
            if c + f == 0 {
                0.0
            } else {
                f as f64 / (c + f) as f64
            }
        };
        let z = |v: Option<f64>| v.unwrap_or(0.0);
        TaskMetrics {
            total_spawned: m.total,
            total_claimed: m.started,
            total_completed: m.completed,
            total_failed: m.failed,
            total_cancelled: m.cancelled,
            total_timed_out: m.timed_out,
            current_pending: m.pending,
            current_claimed: m.running,
            avg_wait_time_sec: z(m.avg_wait_secs),
            p50_wait_time_sec: z(m.p50_wait_secs),
            p95_wait_time_sec: z(m.p95_wait_secs),
            p99_wait_time_sec: z(m.p99_wait_secs),
            avg_execution_time_sec: z(m.avg_execution_secs),
            p50_execution_time_sec: z(m.p50_execution_secs),
            p95_execution_time_sec: z(m.p95_execution_secs),
            p99_execution_time_sec: z(m.p99_execution_secs),
            throughput_1min: per_sec(m.completed_1m, 60.0),
            throughput_5min: per_sec(m.completed_5m, 300.0),
            throughput_15min: per_sec(m.completed_15m, 900.0),
            success_rate_1min: success(m.completed_1m, m.failed_1m),
            success_rate_5min: success(m.completed_5m, m.failed_5m),
            success_rate_15min: success(m.completed_15m, m.failed_15m),
            error_rate_1min: error(m.completed_1m, m.failed_1m),
            error_rate_5min: error(m.completed_5m, m.failed_5m),
            error_rate_15min: error(m.completed_15m, m.failed_15m),
            queue_name,
            current_sleeping: m.sleeping,
            window_hours: client::monitor::METRICS_RUN_WINDOW_HOURS,
            wait_samples: m.wait_samples,
            execution_samples: m.execution_samples,
            computed_at: m.now,
        }
    }
}

// ---- responses: health ---------------------------------------------------------------------

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `healthy` while the process serves; `disabled` with `ABSURD_ENABLED=false`.
    pub status: String,
    pub message: String,
    /// `ABSURD_QUEUE_NAME`.
    pub queue: String,
    pub version: String,
    pub uptime_seconds: f64,
}

/// The overall state of `GET /health/detailed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No alert and no warning.
    Healthy,
    /// Warnings only.
    Degraded,
    /// At least one alert.
    Critical,
    /// The database is unreachable (503).
    Down,
    /// `ABSURD_ENABLED=false`: nothing is checked (200, as the DSA-110 pipeline answered).
    Disabled,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Critical => "critical",
            HealthStatus::Down => "down",
            HealthStatus::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthLevel {
    Alert,
    Warning,
}

/// One alert or warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthItem {
    pub level: HealthLevel,
    pub message: String,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub timestamp: DateTime<Utc>,
}

/// Workers seen from the runs tables and from their heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkersSeen {
    /// Distinct workers holding a live claim.
    pub active: usize,
    /// `active`, and those that started a run in the last 5 minutes.
    pub recent: usize,
    /// The ids of `recent`.
    pub ids: Vec<String>,
    /// The worker registry of `GET /workers` (its last hour): workers seen, and those
    /// `active` (heard from in the last 10 s or holding a live lease).
    pub registered: usize,
    pub registered_active: usize,
}

/// One queue in `GET /health/detailed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueHealth {
    pub queue_name: String,
    pub pending: i64,
    pub running: i64,
    /// `pending + running`.
    pub depth: i64,
    pub oldest_pending_age_seconds: Option<f64>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub last_completed_at: Option<DateTime<Utc>>,
    /// Running tasks whose worker stopped renewing their claim.
    pub expired_claims: i64,
}

/// `GET /health/detailed` (and `absurd-host health --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthDetailed {
    pub status: HealthStatus,
    pub message: String,
    /// `ABSURD_QUEUE_NAME`.
    pub queue: String,
    pub database_available: bool,
    /// The `select 1` probe; null when the database is unreachable.
    pub database_latency_ms: Option<f64>,
    /// Pending and running tasks over all queues but the dead-letter queue.
    pub queue_depth: Option<i64>,
    pub oldest_pending_age_seconds: Option<f64>,
    /// Tasks in the dead-letter queue (no worker claims them).
    pub dead_letters_pending: Option<i64>,
    pub worker_pool_healthy: bool,
    /// Why the worker pool is (not) healthy, as the DSA-110 pipeline said it.
    pub worker_pool_message: String,
    pub workers: Option<WorkersSeen>,
    pub queues: Vec<QueueHealth>,
    pub alerts: Vec<HealthItem>,
    pub warnings: Vec<HealthItem>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub checked_at: DateTime<Utc>,
}

// ---- command-line only ---------------------------------------------------------------------

/// `absurd-host task result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_id: Uuid,
    pub state: TaskState,
    pub result: Option<Value>,
    pub failure_reason: Option<Value>,
}

impl From<&client::TaskResult> for TaskResult {
    fn from(r: &client::TaskResult) -> TaskResult {
        TaskResult {
            task_id: r.task_id,
            state: r.state.into(),
            result: r.result.clone(),
            failure_reason: r.failure_reason.clone(),
        }
    }
}

/// `absurd-host queue create` and `queue drop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueChange {
    pub queue_name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
}

/// One migration applied by `absurd-host migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
}

/// `absurd-host migrate` and `schema-version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Vec<AppliedMigration>>,
    pub schema_version: Option<String>,
}

// ---- the seed's finished tasks ---------------------------------------------------------------

/// A finished task of the DSA-110 seed, kept read-only by `absurd-host migrate --adopt-seed`
/// (`absurd.seed_history`) with the seed's own fields and states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeedTask {
    pub task_id: Uuid,
    pub queue_name: String,
    pub task_name: String,
    #[schema(value_type = Value)]
    pub params: Value,
    pub priority: i32,
    pub timeout_sec: Option<i32>,
    pub status: SeedStatus,
    pub worker_id: Option<String>,
    /// The seed's attempt count.
    pub attempt: i32,
    /// `attempt - 1`, as for Absurd's tasks.
    pub retry_count: i32,
    pub max_retries: i32,
    /// The result (always null in listings).
    #[schema(value_type = Value)]
    pub result: Option<Value>,
    /// The error text (always null in listings).
    pub error: Option<String>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub claimed_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub completed_at: Option<DateTime<Utc>>,
    pub wait_time_sec: Option<f64>,
    pub execution_time_sec: Option<f64>,
    /// When the adoption copied it.
    #[serde(serialize_with = "rfc3339::serialize")]
    pub copied_at: DateTime<Utc>,
}

/// The state of a finished seed task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeedStatus {
    Completed,
    Failed,
    Cancelled,
}

impl SeedStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SeedStatus::Completed => "completed",
            SeedStatus::Failed => "failed",
            SeedStatus::Cancelled => "cancelled",
        }
    }
}

impl QueryValue for SeedStatus {
    const EXPECTED: &'static str = "a finished seed state (completed, failed, cancelled)";
    fn parse(raw: &str) -> Option<Self> {
        [
            SeedStatus::Completed,
            SeedStatus::Failed,
            SeedStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

impl From<&client::seed::SeedTask> for SeedTask {
    fn from(t: &client::seed::SeedTask) -> SeedTask {
        SeedTask {
            task_id: t.task_id,
            queue_name: t.queue_name.clone(),
            task_name: t.task_name.clone(),
            params: t.params.clone(),
            priority: t.priority,
            timeout_sec: t.timeout_sec,
            status: SeedStatus::parse(&t.status).unwrap_or(SeedStatus::Failed),
            worker_id: t.worker_id.clone(),
            attempt: t.attempt,
            retry_count: (t.attempt - 1).max(0),
            max_retries: t.max_retries,
            result: t.result.clone(),
            error: t.error.clone(),
            created_at: t.created_at,
            claimed_at: t.claimed_at,
            completed_at: t.completed_at,
            wait_time_sec: t.wait_time_sec,
            execution_time_sec: t.execution_time_sec,
            copied_at: t.copied_at,
        }
    }
}

/// A page of the seed's finished tasks, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeedTaskList {
    pub tasks: Vec<SeedTask>,
    /// Tasks matching the filter over all pages.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// `GET /seed/tasks`: filters (combined with AND) and the page.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeedTasksQuery {
    /// Only this queue.
    #[serde(default, deserialize_with = "query_strict")]
    #[param(
        min_length = 1,
        max_length = 57,
        pattern = "^[^\\u0000]*$",
        nullable = false
    )]
    pub queue_name: Option<String>,
    #[serde(default, deserialize_with = "query_strict")]
    #[param(inline, nullable = false)]
    pub status: Option<SeedStatus>,
    /// Page size.
    #[serde(default, deserialize_with = "query_strict")]
    #[param(minimum = 1, maximum = 1000, default = 100, nullable = false)]
    pub limit: Option<i64>,
    /// Tasks to skip.
    #[serde(default, deserialize_with = "query_strict")]
    #[param(minimum = 0, maximum = 1000000, default = 0, nullable = false)]
    pub offset: Option<i64>,
}

impl SeedTasksQuery {
    pub fn to_filter(&self) -> Result<client::seed::SeedFilter, ApiError> {
        if let Some(q) = &self.queue_name {
            check_queue_name("queue_name", q)?;
        }
        Ok(client::seed::SeedFilter {
            queue: self.queue_name.clone(),
            status: self.status.map(|s| s.as_str().to_string()),
            limit: int_in("limit", self.limit, 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT),
            offset: int_in("offset", self.offset, 0, client::seed::MAX_SEED_OFFSET)?.unwrap_or(0),
        })
    }
}

// ---- schedules -----------------------------------------------------------------------------

/// The pattern of a schedule name (it appears in URLs and idempotency keys).
pub const SCHEDULE_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";

/// What the scheduler does with ticks it missed (no worker was running, or the schedule was
/// disabled): `skip` spawns a tick only on time (at most 60 s late), `one` spawns the latest
/// missed tick, `all` spawns every missed tick, oldest first (at most 100 per schedule per pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatchUpPolicy {
    #[default]
    Skip,
    One,
    All,
}

impl CatchUpPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUpPolicy::Skip => "skip",
            CatchUpPolicy::One => "one",
            CatchUpPolicy::All => "all",
        }
    }
    fn parse(s: &str) -> CatchUpPolicy {
        match s {
            "one" => CatchUpPolicy::One,
            "all" => CatchUpPolicy::All,
            _ => CatchUpPolicy::Skip,
        }
    }
}

/// Where a schedule was defined: a worker's `absurd-host.toml` (`config`; change it there) or
/// this API (`api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleOrigin {
    Config,
    Api,
}

/// The schema `TimeZone`: an IANA time zone name, one of those absurd-host knows.
pub struct TimeZoneName;

impl utoipa::PartialSchema for TimeZoneName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "An IANA time zone name; the cron fields are local time there (daylight-saving aware)",
            ))
            .enum_values(Some(absurd_engine::schedule::timezone_names()))
            .into()
    }
}

impl ToSchema for TimeZoneName {
    fn name() -> std::borrow::Cow<'static, str> {
        "TimeZone".into()
    }
}

/// `POST /schedules`: a new schedule. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleCreate {
    /// Unique; letters, digits, `.`, `_` and `-`.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
    )]
    pub name: String,
    /// Five fields separated by spaces, minute (0-59) hour (0-23) day-of-month (1-31) month
    /// (1-12) day-of-week (0-7, 0 and 7 are Sunday), each a comma list of `*`, `*/S`, `N`,
    /// `N-M` or `N-M/S` (a range may wrap, as `22-2`), or `@hourly`, `@daily`, `@midnight`,
    /// `@weekly`, `@monthly`, `@yearly`, `@annually`. `0 * * * *` is hourly.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^(?:(?:\*(?:/[1-9][0-9]?)?|[0-5]?[0-9](?:-[0-5]?[0-9](?:/[1-9][0-9]?)?)?)(?:,(?:\*(?:/[1-9][0-9]?)?|[0-5]?[0-9](?:-[0-5]?[0-9](?:/[1-9][0-9]?)?)?))* +(?:\*(?:/[1-9][0-9]?)?|(?:[01]?[0-9]|2[0-3])(?:-(?:[01]?[0-9]|2[0-3])(?:/[1-9][0-9]?)?)?)(?:,(?:\*(?:/[1-9][0-9]?)?|(?:[01]?[0-9]|2[0-3])(?:-(?:[01]?[0-9]|2[0-3])(?:/[1-9][0-9]?)?)?))* +(?:\*(?:/[1-9][0-9]?)?|(?:0?[1-9]|[12][0-9]|3[01])(?:-(?:0?[1-9]|[12][0-9]|3[01])(?:/[1-9][0-9]?)?)?)(?:,(?:\*(?:/[1-9][0-9]?)?|(?:0?[1-9]|[12][0-9]|3[01])(?:-(?:0?[1-9]|[12][0-9]|3[01])(?:/[1-9][0-9]?)?)?))* +(?:\*(?:/[1-9][0-9]?)?|(?:0?[1-9]|1[0-2])(?:-(?:0?[1-9]|1[0-2])(?:/[1-9][0-9]?)?)?)(?:,(?:\*(?:/[1-9][0-9]?)?|(?:0?[1-9]|1[0-2])(?:-(?:0?[1-9]|1[0-2])(?:/[1-9][0-9]?)?)?))* +(?:\*(?:/[1-9][0-9]?)?|[0-7](?:-[0-7](?:/[1-9][0-9]?)?)?)(?:,(?:\*(?:/[1-9][0-9]?)?|[0-7](?:-[0-7](?:/[1-9][0-9]?)?)?))*|@(?:hourly|daily|midnight|weekly|monthly|yearly|annually))$"
    )]
    pub cron: String,
    /// Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<TimeZoneName>)]
    pub timezone: Option<String>,
    /// The task each tick spawns.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub task_name: String,
    /// The queue it is spawned into; it must exist.
    #[schema(min_length = 1, max_length = 57, pattern = "^[^\\u0000]*$")]
    pub queue_name: String,
    /// The task's input: a JSON object of at most 256 KiB (default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JsonObject>)]
    pub params: Option<Map<String, Value>>,
    /// Default `skip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUpPolicy>,
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl ScheduleCreate {
    /// The name and the definition's fields apart.
    pub fn split(self) -> (String, ScheduleSpec) {
        (
            self.name,
            ScheduleSpec {
                cron: self.cron,
                timezone: self.timezone,
                task_name: self.task_name,
                queue_name: self.queue_name,
                params: self.params,
                catch_up: self.catch_up,
                enabled: self.enabled,
            },
        )
    }
}

/// A schedule's definition: `PUT /schedules/{name}` replaces it whole (fields left out take
/// their defaults). Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Five fields separated by spaces, minute (0-59) hour (0-23) day-of-month (1-31) month
    /// (1-12) day-of-week (0-7, 0 and 7 are Sunday), each a comma list of `*`, `*/S`, `N`,
    /// `N-M` or `N-M/S` (a range may wrap, as `22-2`), or `@hourly`, `@daily`, `@midnight`,
    /// `@weekly`, `@monthly`, `@yearly`, `@annually`. `0 * * * *` is hourly.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^(?:(?:\*(?:/[1-9][0-9]?)?|[0-5]?[0-9](?:-[0-5]?[0-9](?:/[1-9][0-9]?)?)?)(?:,(?:\*(?:/[1-9][0-9]?)?|[0-5]?[0-9](?:-[0-5]?[0-9](?:/[1-9][0-9]?)?)?))* +(?:\*(?:/[1-9][0-9]?)?|(?:[01]?[0-9]|2[0-3])(?:-(?:[01]?[0-9]|2[0-3])(?:/[1-9][0-9]?)?)?)(?:,(?:\*(?:/[1-9][0-9]?)?|(?:[01]?[0-9]|2[0-3])(?:-(?:[01]?[0-9]|2[0-3])(?:/[1-9][0-9]?)?)?))* +(?:\*(?:/[1-9][0-9]?)?|(?:0?[1-9]|[12][0-9]|3[01])(?:-(?:0?[1-9]|[12][0-9]|3[01])(?:/[1-9][0-9]?)?)?)(?:,(?:\*(?:/[1-9][0-9]?)?|(?:0?[1-9]|[12][0-9]|3[01])(?:-(?:0?[1-9]|[12][0-9]|3[01])(?:/[1-9][0-9]?)?)?))* +(?:\*(?:/[1-9][0-9]?)?|(?:0?[1-9]|1[0-2])(?:-(?:0?[1-9]|1[0-2])(?:/[1-9][0-9]?)?)?)(?:,(?:\*(?:/[1-9][0-9]?)?|(?:0?[1-9]|1[0-2])(?:-(?:0?[1-9]|1[0-2])(?:/[1-9][0-9]?)?)?))* +(?:\*(?:/[1-9][0-9]?)?|[0-7](?:-[0-7](?:/[1-9][0-9]?)?)?)(?:,(?:\*(?:/[1-9][0-9]?)?|[0-7](?:-[0-7](?:/[1-9][0-9]?)?)?))*|@(?:hourly|daily|midnight|weekly|monthly|yearly|annually))$"
    )]
    pub cron: String,
    /// Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<TimeZoneName>)]
    pub timezone: Option<String>,
    /// The task each tick spawns.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub task_name: String,
    /// The queue it is spawned into; it must exist.
    #[schema(min_length = 1, max_length = 57, pattern = "^[^\\u0000]*$")]
    pub queue_name: String,
    /// The task's input: a JSON object of at most 256 KiB (default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JsonObject>)]
    pub params: Option<Map<String, Value>>,
    /// Default `skip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUpPolicy>,
    /// Default `true`; a disabled schedule fires nothing (its missed ticks follow `catch_up`
    /// once enabled again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl ScheduleSpec {
    /// The definition, with the defaults, checked: errors name the field and the value.
    pub fn check(
        &self,
        name: &str,
    ) -> Result<absurd_client::schedules::ScheduleDefinition, ApiError> {
        let def = absurd_client::schedules::ScheduleDefinition {
            schedule_name: name.to_string(),
            cron: self.cron.clone(),
            timezone: self.timezone.clone().unwrap_or_else(|| "UTC".into()),
            task_name: self.task_name.clone(),
            queue_name: self.queue_name.clone(),
            params: Value::Object(self.params.clone().unwrap_or_default()),
            catch_up: self.catch_up.unwrap_or_default().as_str().to_string(),
            enabled: self.enabled.unwrap_or(true),
        };
        match absurd_engine::schedule::Schedule::new(&def) {
            Ok(s) => Ok(s.definition()),
            Err(e) if e.field == "params" && e.message.contains("limit") => Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                e.message,
            )),
            Err(e) => Err(ApiError::bad_request(e.message)),
        }
    }
}

/// A schedule with its last and next runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleInfo {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub task_name: String,
    pub queue_name: String,
    #[schema(value_type = JsonObject)]
    pub params: Value,
    pub catch_up: CatchUpPolicy,
    pub enabled: bool,
    pub source: ScheduleOrigin,
    /// Bumped by every change of the definition.
    pub revision: i64,
    /// Every tick at or before this time has been handled (spawned or skipped by `catch_up`).
    #[serde(serialize_with = "rfc3339::serialize")]
    pub last_tick: DateTime<Utc>,
    /// The tick of the last task spawned.
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub last_run_at: Option<DateTime<Utc>>,
    /// The last task spawned (in `queue_name` as it was then).
    pub last_task_id: Option<Uuid>,
    /// When it was spawned (by the database clock).
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub last_spawned_at: Option<DateTime<Utc>>,
    /// The next tick that will spawn a task; null when disabled. In the past when it is due
    /// and no scheduler has fired it yet (no worker running).
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub next_run_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
    /// What is odd about the schedule: a cron expression that no date matches never fires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ScheduleInfo {
    /// The row as the API shows it; `now` (the database clock) places the next run.
    pub fn new(row: &absurd_client::schedules::ScheduleRow, now: DateTime<Utc>) -> ScheduleInfo {
        use absurd_engine::schedule::{CatchUp, Schedule, SKIP_GRACE};
        let checked = Schedule::from_row(row).ok();
        let warnings = match &checked {
            Some(s) if s.never_fires() => vec![format!(
                "cron {:?} never fires: no date matches it",
                row.cron
            )],
            _ => vec![],
        };
        let next_run_at = checked.filter(|s| s.enabled).and_then(|s| {
            let from = match s.catch_up {
                // A tick later than the grace is skipped: the next is after that.
                CatchUp::Skip => row
                    .last_tick
                    .max(now - chrono::Duration::from_std(SKIP_GRACE).unwrap_or_default()),
                CatchUp::One => match s.latest_at_or_before(now) {
                    Some(t) if t > row.last_tick => return Some(t),
                    _ => row.last_tick,
                },
                CatchUp::All => row.last_tick,
            };
            s.next_after(from)
        });
        ScheduleInfo {
            name: row.schedule_name.clone(),
            cron: row.cron.clone(),
            timezone: row.timezone.clone(),
            task_name: row.task_name.clone(),
            queue_name: row.queue_name.clone(),
            params: row.params.clone(),
            catch_up: CatchUpPolicy::parse(&row.catch_up),
            enabled: row.enabled,
            source: if row.source == "config" {
                ScheduleOrigin::Config
            } else {
                ScheduleOrigin::Api
            },
            revision: row.revision,
            last_tick: row.last_tick,
            last_run_at: row.last_spawned_tick,
            last_task_id: row.last_task_id,
            last_spawned_at: row.last_spawned_at,
            next_run_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            warnings,
        }
    }
}

/// `GET /schedules`: every schedule, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleInfo>,
    pub total: i64,
    /// The database clock when listed (what `next_run_at` is relative to).
    #[serde(serialize_with = "rfc3339::serialize")]
    pub now: DateTime<Utc>,
}

/// `DELETE /schedules/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleDeleted {
    pub name: String,
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_the_client_vocabulary() {
        for s in client::State::ALL {
            let ours = TaskState::from(s);
            assert_eq!(client::State::from(ours), s);
            assert_eq!(serde_json::to_value(ours).unwrap(), s.as_str());
        }
    }

    #[test]
    fn the_documented_cron_pattern_is_the_parsers() {
        let doc = crate::api::openapi::document();
        for schema in ["ScheduleCreate", "ScheduleSpec"] {
            assert_eq!(
                doc["components"]["schemas"][schema]["properties"]["cron"]["pattern"],
                absurd_engine::schedule::cron_pattern(),
                "{schema}"
            );
        }
    }

    #[test]
    fn times_keep_a_numeric_offset() {
        let t: DateTime<Utc> = "2025-01-01T12:00:00.5Z".parse().unwrap();
        let b = ThroughputBucket {
            minute: t,
            completed: 1,
            failed: 0,
        };
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["minute"], "2025-01-01T12:00:00.500+00:00");
        let back: ThroughputBucket = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
    }
}

/// `GET /maintenance`: the newest maintenance passes (`absurd-host maintain`, or the elected
/// worker's), newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MaintenanceRuns {
    pub runs: Vec<MaintenanceRun>,
}

/// One recorded maintenance pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MaintenanceRun {
    pub run_id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The worker that ran it (`maintain:<pid>` for the one-shot command).
    pub worker_id: String,
    /// What was deleted: `queues` (per queue: `completed`, `failed`, `cancelled`, `events`),
    /// `totals`, `retention_seconds`, `unfinished`.
    #[schema(value_type = Object)]
    pub report: Value,
    /// Why the pass failed, if it did.
    pub error: Option<String>,
}

impl From<client::maintenance::MaintenanceRun> for MaintenanceRun {
    fn from(r: client::maintenance::MaintenanceRun) -> MaintenanceRun {
        MaintenanceRun {
            run_id: r.run_id,
            started_at: r.started_at,
            finished_at: r.finished_at,
            worker_id: r.worker_id,
            report: r.report,
            error: r.error,
        }
    }
}

// ---- workflows -----------------------------------------------------------------------------

pub use crate::workflow::NodeSpec;

/// The longest `group_id` of `POST /groups` (its idempotency key is `group:<group_id>`).
pub const MAX_GROUP_ID_BYTES: usize = MAX_NAME_BYTES - "group:".len();
/// The most `file_paths` of one group (a DSA-110 group has 16 subband files). With
/// [`MAX_PATH_CHARS`] it keeps a group's inputs well under the workflow's 256 KiB of params.
pub const MAX_GROUP_FILES: usize = 64;
/// The longest file path of a group, in characters.
pub const MAX_PATH_CHARS: usize = 1024;

/// The schema `AbsolutePath`: a file path starting with `/`, at most 1024 characters, without
/// U+0000.
pub struct AbsolutePath;

impl utoipa::PartialSchema for AbsolutePath {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("An absolute file path"))
            .min_length(Some(1))
            .max_length(Some(MAX_PATH_CHARS))
            .pattern(Some("^/[^\\u0000]*$"))
            .into()
    }
}

impl ToSchema for AbsolutePath {
    fn name() -> std::borrow::Cow<'static, str> {
        "AbsolutePath".into()
    }
}

/// `POST /workflows`: a workflow of the server's configuration by `name`, or an inline DAG
/// (`nodes`). Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowStartRequest {
    /// Without `nodes`: the `[workflows.<name>]` of the server's `absurd-host.toml` to start.
    /// With `nodes`: a name to show for the inline DAG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]+$")]
    pub name: Option<String>,
    /// An inline DAG: 1 to 256 nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 256)]
    pub nodes: Option<Vec<NodeSpec>>,
    /// Passed to every node as `inputs`, over the definition's inputs (key by key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JsonObject>)]
    pub inputs: Option<Map<String, Value>>,
    /// Passed to every node as `config` (the pipeline's configuration); replaces the
    /// definition's. `null` is kept (the pipeline then reads its environment).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Json)]
    pub config: Option<Value>,
    /// The workflow task's queue; default: the definition's `queue`, else `ABSURD_QUEUE_NAME`.
    /// Nodes without a queue of their own run there too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 57, pattern = "^[^\\u0000]*$")]
    pub queue_name: Option<String>,
    /// With a key already used in the queue, the existing workflow is returned
    /// (`created: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$")]
    pub idempotency_key: Option<String>,
    /// The workflow task's `max_attempts` (default `ABSURD_MAX_RETRIES + 1`); a retried
    /// workflow finds the children it already spawned.
    #[serde(
        default,
        deserialize_with = "int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<i64>,
}

/// `POST /tasks/with-deps`: tasks with dependencies, run as one inline workflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithDepsRequest {
    /// 1 to 256 tasks.
    #[schema(min_items = 1, max_items = 256)]
    pub tasks: Vec<WithDepsTask>,
    /// A name to show for the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]+$")]
    pub name: Option<String>,
    /// The workflow task's queue, and that of every task without a `queue_name`; default
    /// `ABSURD_QUEUE_NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 57, pattern = "^[^\\u0000]*$")]
    pub queue_name: Option<String>,
    /// Passed to every task as `inputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JsonObject>)]
    pub inputs: Option<Map<String, Value>>,
    /// Passed to every task as `config`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Json)]
    pub config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$")]
    pub idempotency_key: Option<String>,
}

/// One task of `POST /tasks/with-deps`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithDepsTask {
    /// The id other tasks name in `depends_on`; default: `task_name` (1 to 64 characters of
    /// `[A-Za-z0-9_.-]`, unique).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]+$")]
    pub id: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub task_name: String,
    /// The task's params; the workflow sets their `config`, `inputs`, `outputs` (the merged
    /// `outputs` of the tasks it depends on) and `chain_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JsonObject>)]
    pub params: Option<Map<String, Value>>,
    /// Default: the request's `queue_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 57, pattern = "^[^\\u0000]*$")]
    pub queue_name: Option<String>,
    /// Ids of the tasks that must complete first (at most 32, each once).
    #[serde(default)]
    #[schema(max_items = 32)]
    pub depends_on: Vec<String>,
    /// Its failure does not fail the others (those depending on it are skipped).
    #[serde(default)]
    pub optional: bool,
    #[serde(
        default,
        deserialize_with = "int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<i64>,
}

/// A started workflow (or the existing one for its idempotency key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowStarted {
    /// The `workflow` task; `GET /workflows/{task_id}` shows its DAG.
    pub task_id: Uuid,
    pub run_id: Uuid,
    pub attempt: i32,
    /// `false` when an existing workflow was returned for the idempotency key.
    pub created: bool,
    pub queue_name: String,
    /// Always `workflow`.
    pub task_name: String,
    /// The definition's name, if it has one.
    pub name: Option<String>,
    /// How many nodes it runs.
    pub nodes: i64,
}

/// `POST /groups`: the streaming bridge's `submit_group`. Starts the `calibrator` workflow
/// (`is_calibrator`) or `standard-pipeline` once per group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    /// The group (1 to 249 bytes): the workflow's idempotency key is `group:<group_id>`. The
    /// DSA-110 bridge uses the observation time, e.g. `2025-10-17T14:40:09`.
    #[schema(
        min_length = 1,
        max_length = 249,
        pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
    )]
    pub group_id: String,
    /// The group's HDF5 files (1 to 64 absolute paths); `input_path` is the directory of
    /// the first.
    #[schema(value_type = Vec<AbsolutePath>, min_items = 1, max_items = 64)]
    pub file_paths: Vec<String>,
    /// Run the `calibrator` workflow instead of `standard-pipeline`.
    #[serde(default)]
    pub is_calibrator: bool,
    /// The observation time `t` (RFC 3339, or `YYYY-MM-DDTHH:MM:SS` in UTC): `start_time` is
    /// `t - 30 s` and `end_time` `t + 5 min`. Default: `group_id` read as a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    /// Passed to every node as `config`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Json)]
    pub config: Option<Value>,
    /// The workflow task's queue; default: the definition's, else `ABSURD_QUEUE_NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 57, pattern = "^[^\\u0000]*$")]
    pub queue_name: Option<String>,
    /// Accepted for the bridge's callers and ignored (Absurd has no priorities).
    #[serde(
        default,
        deserialize_with = "int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = -2147483648i64, maximum = 2147483647)]
    pub priority: Option<i64>,
}

/// A submitted group: its workflow task, new or the one the group already had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupSubmitted {
    pub group_id: String,
    /// `calibrator` or `standard-pipeline`.
    pub workflow: String,
    pub task_id: Uuid,
    pub run_id: Uuid,
    /// `false`: the group had been submitted already; this is its workflow.
    pub created: bool,
    pub queue_name: String,
    /// `group:<group_id>`.
    pub idempotency_key: String,
    /// The inputs every node gets: `input_path`, `file_list`, `group_id`, `start_time`,
    /// `end_time`.
    #[schema(value_type = Object)]
    pub inputs: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The state of a workflow's node: its child task's state, `pending` before it is spawned,
/// or `skipped` (a node it depends on failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Pending,
    Running,
    Sleeping,
    Completed,
    Failed,
    Cancelled,
    Skipped,
}

impl From<client::State> for NodeState {
    fn from(s: client::State) -> NodeState {
        match s {
            client::State::Pending => NodeState::Pending,
            client::State::Running => NodeState::Running,
            client::State::Sleeping => NodeState::Sleeping,
            client::State::Completed => NodeState::Completed,
            client::State::Failed => NodeState::Failed,
            client::State::Cancelled => NodeState::Cancelled,
        }
    }
}

/// One node of a workflow, with its child task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowNode {
    pub id: String,
    /// The task name it runs.
    pub task: String,
    /// The child's queue.
    pub queue_name: String,
    pub depends_on: Vec<String>,
    pub optional: bool,
    /// The finished workflow's word for it when it has one, else its child's state.
    pub state: NodeState,
    /// The child task, once spawned.
    pub task_id: Option<Uuid>,
    pub attempts: Option<i32>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub created_at: Option<DateTime<Utc>>,
    /// `"<name>: <message>"` of the child's last failure (the message cut at 2,000
    /// characters).
    pub error: Option<String>,
    /// The node's `outputs`, from the finished workflow's result.
    #[schema(value_type = Value)]
    pub outputs: Option<Value>,
}

/// `GET /workflows/{task_id}`: a workflow task and its DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowView {
    pub task_id: Uuid,
    pub queue_name: String,
    /// The definition's name, if it has one.
    pub name: Option<String>,
    /// The workflow task's state.
    pub status: TaskState,
    pub attempts: i32,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub finished_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
    /// The nodes, in the definition's order.
    pub nodes: Vec<WorkflowNode>,
    #[schema(value_type = Json)]
    pub inputs: Value,
    #[schema(value_type = Json)]
    pub config: Value,
    /// The workflow task's result, once completed.
    #[schema(value_type = Json)]
    pub result: Option<Value>,
    /// `"<name>: <message>"` of the workflow task's last failure.
    pub error: Option<String>,
}
