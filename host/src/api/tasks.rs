//! Tasks, events and queues: thin handlers over [`absurd_client::Client`], with input
//! validation that names the offending field.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use absurd_client::{
    Cancellation, QueueStats, RetryOptions, RetryStrategy, RunInfo, SpawnOptions,
    State as TaskState, TaskDetails, TaskFilter, TaskSummary, WorkerActivity, MAX_SEARCH_CHARS,
    MAX_WINDOW_MINUTES,
};
use absurd_engine::metrics::Event;

type ApiResult<T = Json<Value>> = Result<T, ApiError>;
type QueryMap = Result<Query<Vec<(String, String)>>, QueryRejection>;

// ---- input helpers ---------------------------------------------------------------------------

/// The body as a JSON object with only `allowed` keys. An empty body is `{}` when
/// `optional`. A non-empty body must be sent as `application/json`.
fn json_object(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    allowed: &[&str],
    optional: bool,
    limit: usize,
) -> ApiResult<Map<String, Value>> {
    let body = body.map_err(|rej| {
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
        if optional {
            return Ok(Map::new());
        }
        return Err(ApiError::bad_request(
            "request body is empty; expected a JSON object",
        ));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type must be application/json (got {:?})",
                if ct.is_empty() { "none" } else { ct }
            ),
        ));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(format!(
            "request body must be a JSON object, got {}",
            kind(&value)
        )));
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field {k:?} (expected one of: {})",
            allowed.join(", ")
        )));
    }
    Ok(map)
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

fn opt_str(map: &Map<String, Value>, field: &str) -> ApiResult<Option<String>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ApiError::bad_request(format!(
            "{field} must be a string, got {}",
            kind(v)
        ))),
    }
}

fn req_str(map: &Map<String, Value>, field: &str) -> ApiResult<String> {
    match opt_str(map, field)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!("{field} must not be empty"))),
        None => Err(ApiError::bad_request(format!("{field} is required"))),
    }
}

fn opt_int(map: &Map<String, Value>, field: &str, min: i64, max: i64) -> ApiResult<Option<i64>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) if (min..=max).contains(&i) => Ok(Some(i)),
            _ => Err(ApiError::bad_request(format!(
                "{field} must be an integer between {min} and {max}, got {n}"
            ))),
        },
        Some(v) => Err(ApiError::bad_request(format!(
            "{field} must be an integer, got {}",
            kind(v)
        ))),
    }
}

fn opt_bool(map: &Map<String, Value>, field: &str) -> ApiResult<Option<bool>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::bad_request(format!(
            "{field} must be a boolean, got {}",
            kind(v)
        ))),
    }
}

fn opt_object<'a>(
    map: &'a Map<String, Value>,
    field: &str,
) -> ApiResult<Option<&'a Map<String, Value>>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(v) => Err(ApiError::bad_request(format!(
            "{field} must be a JSON object, got {}",
            kind(v)
        ))),
    }
}

fn check_queue(field: &str, q: &str) -> ApiResult<()> {
    if q.is_empty() {
        return Err(ApiError::bad_request(format!("{field} must not be empty")));
    }
    if q.len() > 57 {
        return Err(ApiError::bad_request(format!(
            "{field} {q:?} is {} bytes long; the limit is 57",
            q.len()
        )));
    }
    Ok(())
}

fn parse_task_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::bad_request(format!("task_id {raw:?} is not a valid UUID")))
}

/// Query parameters, restricted to `allowed` (others are ignored, as FastAPI does).
fn query(q: QueryMap, allowed: &[&str]) -> ApiResult<Vec<(String, String)>> {
    let Query(pairs) =
        q.map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &pairs {
        if allowed.contains(&k.as_str()) && !seen.insert(k.clone()) {
            return Err(ApiError::bad_request(format!(
                "query parameter {k} is given more than once"
            )));
        }
    }
    Ok(pairs
        .into_iter()
        .filter(|(k, _)| allowed.contains(&k.as_str()))
        .collect())
}

type PathArg = Result<Path<String>, PathRejection>;

fn path_arg(p: PathArg) -> ApiResult<String> {
    p.map(|Path(s)| s)
        .map_err(|e| ApiError::bad_request(format!("invalid path parameter: {}", e.body_text())))
}

fn get_param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// An optional RFC 3339 time query parameter (empty counts as absent).
fn time_param(pairs: &[(String, String)], name: &str) -> ApiResult<Option<DateTime<Utc>>> {
    match get_param(pairs, name) {
        None | Some("") => Ok(None),
        Some(v) => DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "{name} {v:?} is not an RFC 3339 time (e.g. 2025-01-01T00:00:00Z)"
                ))
            }),
    }
}

/// The queue holding `task_id`: `queue_name` if given (it must exist), else looked up.
async fn task_queue(st: &AppState, task_id: Uuid, queue: Option<&str>) -> ApiResult<String> {
    if let Some(q) = queue {
        check_queue("queue_name", q)?;
        if !st.client.queue_exists(q).await? {
            return Err(ApiError::not_found(format!("Queue {q:?} not found")));
        }
        return Ok(q.to_string());
    }
    st.client
        .find_task_queue(task_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Task {task_id} not found")))
}

// ---- response shapes -------------------------------------------------------------------------

fn ts(t: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    t.map(|t| Value::String(t.to_rfc3339()))
        .unwrap_or(Value::Null)
}

/// The DSA-110 pipeline's TaskResponse fields (`status`, `created_at`, `claimed_at`, …) with Absurd's.
fn summary_json(s: &TaskSummary) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("task_id".into(), json!(s.task_id));
    m.insert("queue_name".into(), json!(s.queue_name));
    m.insert("task_name".into(), json!(s.task_name));
    m.insert("status".into(), json!(s.state.as_str()));
    m.insert("attempts".into(), json!(s.attempts));
    m.insert("retry_count".into(), json!((s.attempts - 1).max(0)));
    m.insert("max_attempts".into(), json!(s.max_attempts));
    m.insert(
        "created_at".into(),
        Value::String(s.enqueue_at.to_rfc3339()),
    );
    m.insert("first_started_at".into(), ts(s.first_started_at));
    m.insert("cancelled_at".into(), ts(s.cancelled_at));
    m.insert("idempotency_key".into(), json!(s.idempotency_key));
    m
}

fn run_json(r: &RunInfo) -> Value {
    json!({
        "run_id": r.run_id,
        "attempt": r.attempt,
        "state": r.state.as_str(),
        "worker_id": r.claimed_by,
        "claim_expires_at": ts(r.claim_expires_at),
        "available_at": ts(r.available_at),
        "wake_event": r.wake_event,
        "started_at": ts(r.started_at),
        "completed_at": ts(r.completed_at),
        "failed_at": ts(r.failed_at),
        "created_at": ts(r.created_at),
        "result": r.result,
        "failure_reason": r.failure_reason,
    })
}

/// A readable error string from a run's failure reason (`{"name","message",…}`).
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

fn details_json(t: &TaskDetails) -> Value {
    let mut m = summary_json(&t.summary);
    let last = t.runs.last();
    m.insert("params".into(), t.params.clone());
    m.insert("headers".into(), json!(t.headers));
    m.insert("retry_strategy".into(), json!(t.retry_strategy));
    m.insert("cancellation".into(), json!(t.cancellation));
    m.insert("claimed_at".into(), ts(last.and_then(|r| r.started_at)));
    m.insert(
        "completed_at".into(),
        ts(last.and_then(|r| r.completed_at.or(r.failed_at))),
    );
    m.insert(
        "worker_id".into(),
        json!(last.and_then(|r| r.claimed_by.clone())),
    );
    m.insert("result".into(), json!(t.completed_payload));
    let error = match t.summary.state {
        TaskState::Completed => Value::Null,
        _ => last
            .and_then(|r| r.failure_reason.as_ref())
            .map(|f| Value::String(error_text(f)))
            .unwrap_or(Value::Null),
    };
    m.insert("error".into(), error);
    m.insert(
        "runs".into(),
        Value::Array(t.runs.iter().map(run_json).collect()),
    );
    m.insert(
        "checkpoints".into(),
        Value::Array(
            t.checkpoints
                .iter()
                .map(|c| {
                    json!({"checkpoint_name": c.checkpoint_name, "state": c.state, "status": c.status,
                           "owner_run_id": c.owner_run_id, "updated_at": ts(c.updated_at)})
                })
                .collect(),
        ),
    );
    m.insert(
        "waits".into(),
        Value::Array(
            t.waits
                .iter()
                .map(|w| json!({"run_id": w.run_id, "step_name": w.step_name, "event_name": w.event_name, "timeout_at": ts(w.timeout_at)}))
                .collect(),
        ),
    );
    Value::Object(m)
}

pub(crate) fn stats_json(s: &QueueStats) -> Value {
    json!({
        "queue_name": s.queue_name,
        "pending": s.pending,
        "claimed": s.running,
        "running": s.running,
        "sleeping": s.sleeping,
        "completed": s.completed,
        "failed": s.failed,
        "cancelled": s.cancelled,
        "total": s.total,
        "oldest_pending_age_seconds": s.oldest_pending_age_secs,
        "throughput": {
            "completed_last_1m": s.completed_last_1m,
            "completed_last_5m": s.completed_last_5m,
            "completed_last_15m": s.completed_last_15m,
            "per_minute_1m": s.completed_last_1m as f64,
            "per_minute_5m": s.completed_last_5m as f64 / 5.0,
            "per_minute_15m": s.completed_last_15m as f64 / 15.0,
        },
    })
}

// ---- handlers --------------------------------------------------------------------------------

const SPAWN_FIELDS: &[&str] = &[
    "queue_name",
    "task_name",
    "params",
    "max_attempts",
    "retry_strategy",
    "headers",
    "cancellation",
    "idempotency_key",
    "priority",
    "timeout_sec",
];

fn retry_strategy(o: &Map<String, Value>) -> ApiResult<RetryStrategy> {
    const FIELDS: &[&str] = &["kind", "base_seconds", "factor", "max_seconds"];
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "retry_strategy: unknown field {k:?} (expected one of: {})",
            FIELDS.join(", ")
        )));
    }
    let kind = opt_str(o, "kind")
        .map_err(|e| ApiError::bad_request(format!("retry_strategy.{}", e.detail)))?;
    let kind = kind.unwrap_or_else(|| "exponential".into());
    if !["none", "fixed", "exponential"].contains(&kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "retry_strategy.kind must be none, fixed or exponential, got {kind:?}"
        )));
    }
    let num = |f: &str| -> ApiResult<Option<f64>> {
        match o.get(f) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x.is_finite() && (0.0..=86400.0).contains(&x) => Ok(Some(x)),
                _ => Err(ApiError::bad_request(format!(
                    "retry_strategy.{f} must be a number between 0 and 86400, got {n}"
                ))),
            },
            Some(v) => Err(ApiError::bad_request(format!(
                "retry_strategy.{f} must be a number, got {}",
                kind_of(v)
            ))),
        }
    };
    Ok(RetryStrategy {
        kind,
        base_seconds: num("base_seconds")?,
        factor: num("factor")?,
        max_seconds: num("max_seconds")?,
    })
}

fn kind_of(v: &Value) -> &'static str {
    kind(v)
}

fn cancellation(o: &Map<String, Value>) -> ApiResult<Cancellation> {
    const FIELDS: &[&str] = &["max_delay", "max_duration"];
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "cancellation: unknown field {k:?} (expected one of: {})",
            FIELDS.join(", ")
        )));
    }
    let int = |f: &str| {
        opt_int(o, f, 0, i32::MAX as i64)
            .map_err(|e| ApiError::bad_request(format!("cancellation.{}", e.detail)))
    };
    Ok(Cancellation {
        max_delay: int("max_delay")?,
        max_duration: int("max_duration")?,
    })
}

/// `POST /tasks`.
pub(crate) async fn spawn(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let map = json_object(
        &headers,
        body,
        SPAWN_FIELDS,
        false,
        st.settings.max_body_bytes,
    )?;
    let queue = req_str(&map, "queue_name")?;
    check_queue("queue_name", &queue)?;
    let task_name = req_str(&map, "task_name")?;
    if task_name.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "task_name is {} bytes long; the limit is 255",
            task_name.len()
        )));
    }
    let params = match map.get("params") {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "params must be a JSON object, got {}",
                kind(v)
            )))
        }
    };
    let size = params.to_string().len();
    if size > st.settings.max_params_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "params is {size} bytes of JSON; the limit is {} bytes",
                st.settings.max_params_bytes
            ),
        ));
    }
    let max_attempts = opt_int(&map, "max_attempts", 1, 1000)?.map(|m| m as i32);
    let retry = opt_object(&map, "retry_strategy")?
        .map(retry_strategy)
        .transpose()?;
    let headers_v = opt_object(&map, "headers")?.map(|o| Value::Object(o.clone()));
    let cancel = opt_object(&map, "cancellation")?
        .map(cancellation)
        .transpose()?;
    let idempotency_key = opt_str(&map, "idempotency_key")?;
    if let Some(k) = &idempotency_key {
        if k.is_empty() || k.len() > 255 {
            return Err(ApiError::bad_request(
                "idempotency_key must be 1 to 255 bytes long",
            ));
        }
    }
    let mut warnings = vec![];
    if opt_int(&map, "priority", i32::MIN as i64, i32::MAX as i64)?.is_some_and(|p| p != 0) {
        warnings.push("priority is ignored: Absurd queues have no priorities (tasks are claimed in order of availability)");
    }
    if opt_int(&map, "timeout_sec", 0, i32::MAX as i64)?.is_some() {
        warnings.push(
            "timeout_sec is ignored: the run time limit is the worker's (the task type's `timeout`, else ABSURD_TASK_TIMEOUT); \
             to cancel a task after a total time use cancellation.max_duration",
        );
    }
    let opts = SpawnOptions {
        headers: headers_v,
        retry_strategy: Some(retry.unwrap_or_else(crate::config::default_retry_strategy)),
        max_attempts: Some(max_attempts.unwrap_or(st.settings.default_max_attempts)),
        cancellation: cancel,
        idempotency_key,
    };
    if !st.client.queue_exists(&queue).await? {
        return Err(ApiError::not_found(format!(
            "Queue {queue:?} not found (create it with `absurd-host queue create {queue}`)"
        )));
    }
    let s = st.client.spawn(&queue, &task_name, &params, &opts).await?;
    if s.created {
        st.counters.add(&queue, &task_name, Event::Spawned);
    }
    let mut out = json!({
        "task_id": s.task_id,
        "run_id": s.run_id,
        "attempt": s.attempt,
        "created": s.created,
        "queue_name": queue,
        "task_name": task_name,
    });
    if !warnings.is_empty() {
        out["warnings"] = json!(warnings);
    }
    Ok(Json(out))
}

/// `GET /tasks`.
pub(crate) async fn list(State(st): State<AppState>, q: QueryMap) -> ApiResult {
    let pairs = query(
        q,
        &[
            "queue_name",
            "status",
            "task_name",
            "limit",
            "cursor",
            "enqueued_after",
            "enqueued_before",
            "q",
        ],
    )?;
    let queue = get_param(&pairs, "queue_name").map(str::to_string);
    if let Some(q) = &queue {
        check_queue("queue_name", q)?;
        if !st.client.queue_exists(q).await? {
            return Err(ApiError::not_found(format!("Queue {q:?} not found")));
        }
    }
    let state = match get_param(&pairs, "status") {
        None | Some("") => None,
        Some(s) => Some(s.parse::<TaskState>().map_err(|_| {
            ApiError::bad_request(format!(
                "status {s:?} is not a task state (pending, running, sleeping, completed, failed, cancelled)"
            ))
        })?),
    };
    let limit = match get_param(&pairs, "limit") {
        None => 100,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit must be an integer between 1 and 1000, got {l:?}"
                )))
            }
        },
    };
    let cursor = get_param(&pairs, "cursor")
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    if let Some(c) = &cursor {
        if Uuid::parse_str(c).is_err() {
            return Err(ApiError::bad_request(format!(
                "cursor {c:?} is not a cursor returned by a listing"
            )));
        }
    }
    let enqueued_after = time_param(&pairs, "enqueued_after")?;
    let enqueued_before = time_param(&pairs, "enqueued_before")?;
    let search = get_param(&pairs, "q")
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    if let Some(t) = &search {
        let n = t.chars().count();
        if n > MAX_SEARCH_CHARS {
            return Err(ApiError::bad_request(format!(
                "q is {n} characters long; the limit is {MAX_SEARCH_CHARS}"
            )));
        }
        if t.contains('\0') {
            return Err(ApiError::bad_request("q must not contain NUL characters"));
        }
    }
    let filter = TaskFilter {
        queue,
        state,
        task_name: get_param(&pairs, "task_name")
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        limit: Some(limit),
        cursor,
        enqueued_after,
        enqueued_before,
        search,
    };
    let page = st.client.list_tasks(&filter).await?;
    let tasks: Vec<Value> = page
        .tasks
        .iter()
        .map(|t| {
            let mut m = summary_json(t);
            m.insert("result".into(), Value::Null);
            m.insert("error".into(), Value::Null);
            Value::Object(m)
        })
        .collect();
    Ok(Json(
        json!({"tasks": tasks, "total": page.total, "limit": limit, "next_cursor": page.next_cursor}),
    ))
}

/// `GET /tasks/{task_id}`.
pub(crate) async fn get_one(State(st): State<AppState>, raw: PathArg, q: QueryMap) -> ApiResult {
    let task_id = parse_task_id(&path_arg(raw)?)?;
    let pairs = query(q, &["queue_name"])?;
    let queue = task_queue(&st, task_id, get_param(&pairs, "queue_name")).await?;
    let t = st
        .client
        .get_task(&queue, task_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Task {task_id} not found")))?;
    Ok(Json(details_json(&t)))
}

/// `DELETE /tasks/{task_id}`: cancel.
pub(crate) async fn cancel(State(st): State<AppState>, raw: PathArg, q: QueryMap) -> ApiResult {
    let task_id = parse_task_id(&path_arg(raw)?)?;
    let pairs = query(q, &["queue_name"])?;
    let queue = task_queue(&st, task_id, get_param(&pairs, "queue_name")).await?;
    let before = st
        .client
        .task_result(&queue, task_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Task {task_id} not found")))?;
    if before.state.is_terminal() {
        return Err(ApiError::conflict(format!(
            "Task {task_id} is already {}; it cannot be cancelled",
            before.state
        )));
    }
    st.client.cancel_task(&queue, task_id).await?;
    let after = st.client.task_result(&queue, task_id).await?;
    let status = after.map(|r| r.state.as_str()).unwrap_or("cancelled");
    if status != "cancelled" {
        return Err(ApiError::conflict(format!(
            "Task {task_id} finished as {status} before it could be cancelled"
        )));
    }
    Ok(Json(
        json!({"message": format!("Task {task_id} cancelled"), "task_id": task_id, "queue_name": queue, "status": status}),
    ))
}

/// `POST /tasks/{task_id}/retry`.
pub(crate) async fn retry(
    State(st): State<AppState>,
    raw: PathArg,
    q: QueryMap,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let task_id = parse_task_id(&path_arg(raw)?)?;
    let pairs = query(q, &["queue_name"])?;
    let map = json_object(
        &headers,
        body,
        &["spawn_new", "max_attempts"],
        true,
        st.settings.max_body_bytes,
    )?;
    let spawn_new = opt_bool(&map, "spawn_new")?.unwrap_or(false);
    let max_attempts = opt_int(&map, "max_attempts", 1, 1000)?.map(|m| m as i32);
    let queue = task_queue(&st, task_id, get_param(&pairs, "queue_name")).await?;
    let current = st
        .client
        .task_result(&queue, task_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Task {task_id} not found")))?;
    if current.state != TaskState::Failed {
        return Err(ApiError::conflict(format!(
            "Task {task_id} is {}; only failed tasks can be retried",
            current.state
        )));
    }
    let s = st
        .client
        .retry_task(
            &queue,
            task_id,
            &RetryOptions {
                spawn_new,
                max_attempts,
            },
        )
        .await?;
    Ok(Json(json!({
        "task_id": s.task_id,
        "run_id": s.run_id,
        "attempt": s.attempt,
        "created": s.created,
        "queue_name": queue,
        "status": "pending",
    })))
}

/// `POST /events`.
pub(crate) async fn emit_event(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let map = json_object(
        &headers,
        body,
        &["queue_name", "event_name", "payload"],
        false,
        st.settings.max_body_bytes,
    )?;
    let queue = opt_str(&map, "queue_name")?.unwrap_or_else(|| st.settings.default_queue.clone());
    check_queue("queue_name", &queue)?;
    let event = req_str(&map, "event_name")?;
    if event.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "event_name is {} bytes long; the limit is 255",
            event.len()
        )));
    }
    if !st.client.queue_exists(&queue).await? {
        return Err(ApiError::not_found(format!("Queue {queue:?} not found")));
    }
    let payload = map.get("payload").cloned();
    st.client
        .emit_event(&queue, &event, payload.as_ref())
        .await?;
    Ok(Json(
        json!({"queue_name": queue, "event_name": event, "emitted": true}),
    ))
}

/// `GET /queues`: the queue names, as the DSA-110 pipeline returned them.
pub(crate) async fn list_queues(State(st): State<AppState>) -> ApiResult {
    Ok(Json(json!(st.client.list_queues().await?)))
}

/// `GET /queues/stats`: every queue's statistics.
pub(crate) async fn all_queue_stats(State(st): State<AppState>) -> ApiResult {
    let mut out = vec![];
    for q in st.client.list_queues().await? {
        match st.client.queue_stats(&q).await {
            Ok(s) => out.push(stats_json(&s)),
            // Registered but its tables were dropped by hand: skip it.
            Err(absurd_client::ClientError::QueueNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `GET /queues/{queue_name}/stats`.
pub(crate) async fn queue_stats(State(st): State<AppState>, queue: PathArg) -> ApiResult {
    let queue = path_arg(queue)?;
    check_queue("queue_name", &queue)?;
    if !st.client.queue_exists(&queue).await? {
        return Err(ApiError::not_found(format!("Queue {queue:?} not found")));
    }
    Ok(Json(stats_json(&st.client.queue_stats(&queue).await?)))
}

/// The `minutes` query parameter: default 60, 1 to [`MAX_WINDOW_MINUTES`].
fn minutes_param(q: QueryMap) -> ApiResult<i64> {
    let pairs = query(q, &["minutes"])?;
    match get_param(&pairs, "minutes") {
        None | Some("") => Ok(60),
        Some(m) => match m.parse::<i64>() {
            Ok(n) if (1..=MAX_WINDOW_MINUTES).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "minutes must be an integer between 1 and {MAX_WINDOW_MINUTES}, got {m:?}"
            ))),
        },
    }
}

/// `GET /workers`: every worker seen in the window, with its runs by state and failure kind.
pub(crate) async fn workers(State(st): State<AppState>, q: QueryMap) -> ApiResult {
    let minutes = minutes_param(q)?;
    let workers: Vec<Value> = st
        .client
        .worker_activity(minutes)
        .await?
        .iter()
        .map(|w| {
            json!({
                "worker_id": w.worker_id,
                "last_seen": ts(w.last_seen),
                "running": w.running,
                "completed": w.completed,
                "failed": w.failed,
                "sandbox_failures": w.sandbox_failures,
                "subprocess_failures": w.subprocess_failures,
                "timeouts": w.timeouts,
            })
        })
        .collect();
    // Which failure names each count counts, from the one list of them, so that the dashboard
    // explains its columns without a copy that could fall behind.
    let failure_names: Map<String, Value> = WorkerActivity::counted_failures()
        .into_iter()
        .map(|(field, category)| {
            (
                field.to_string(),
                json!(category.names().collect::<Vec<_>>()),
            )
        })
        .collect();
    Ok(Json(
        json!({"minutes": minutes, "workers": workers, "failure_names": failure_names}),
    ))
}

/// `GET /queues/{queue_name}/throughput`: completions and failures per minute.
pub(crate) async fn queue_throughput(
    State(st): State<AppState>,
    queue: PathArg,
    q: QueryMap,
) -> ApiResult {
    let queue = path_arg(queue)?;
    check_queue("queue_name", &queue)?;
    let minutes = minutes_param(q)?;
    if !st.client.queue_exists(&queue).await? {
        return Err(ApiError::not_found(format!("Queue {queue:?} not found")));
    }
    let buckets: Vec<Value> = st
        .client
        .throughput(&queue, minutes)
        .await?
        .iter()
        .map(|b| json!({"minute": b.minute.to_rfc3339(), "completed": b.completed, "failed": b.failed}))
        .collect();
    Ok(Json(
        json!({"queue_name": queue, "minutes": minutes, "buckets": buckets}),
    ))
}
