//! The OpenAPI 3 document of the API, written by hand, served at
//! `GET /api/absurd/openapi.json`.

use axum::Json;
use serde_json::{json, Value};

use absurd_client::vocab::FailureCategory;

pub(crate) async fn serve_document() -> Json<Value> {
    Json(document())
}

fn err_ref() -> Value {
    json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
}

fn errors(codes: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for (code, text) in codes {
        m.insert(
            code.to_string(),
            json!({"description": text, "content": err_ref()}),
        );
    }
    m.insert("401".into(), json!({"description": "Missing or wrong bearer token (only when a token is configured)", "content": err_ref()}));
    m.insert(
        "503".into(),
        json!({"description": "The database is unreachable", "content": err_ref()}),
    );
    m
}

fn ok(description: &str, schema: Value, more: &[(&str, &str)]) -> Value {
    let mut m = errors(more);
    m.insert(
        "200".into(),
        json!({"description": description, "content": {"application/json": {"schema": schema}}}),
    );
    Value::Object(m)
}

/// "Failed runs named $A, $B or $C", from the one list of failure names.
fn failed_runs_named(category: FailureCategory) -> String {
    let names: Vec<&str> = category.names().map(|n| n.as_str()).collect();
    match names.split_last() {
        Some((last, [])) => format!("Failed runs named {last}"),
        Some((last, rest)) => format!("Failed runs named {} or {last}", rest.join(", ")),
        None => "Always 0".to_string(),
    }
}

fn sref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn task_id_param() -> Value {
    json!({"name": "task_id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}})
}

fn queue_query(description: &str) -> Value {
    json!({"name": "queue_name", "in": "query", "required": false, "description": description,
           "schema": {"type": "string", "minLength": 1, "maxLength": 57}})
}

fn nullable(t: &str) -> Value {
    json!({"type": t, "nullable": true})
}

/// The whole document.
pub fn document() -> Value {
    let bad = ("400", "Invalid input; `detail` names the field");
    let not_found = ("404", "Unknown task or queue");
    let conflict = ("409", "The task is not in a state that allows this");
    let too_large = ("413", "Request body (1 MiB) or params (256 KiB) too large");
    let media = ("415", "A request body must be sent as application/json");
    let mut paths = serde_json::Map::new();
    paths.insert("/api/absurd/tasks".into(), json!({
                "post": {
                    "operationId": "spawnTask",
                    "summary": "Spawn a task",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": sref("SpawnRequest")}}},
                    "responses": ok("Spawned (or the existing task for the idempotency key)", sref("SpawnResponse"), &[bad, not_found, too_large, media]),
                },
                "get": {
                    "operationId": "listTasks",
                    "summary": "List tasks, newest first, with the total matching and a cursor",
                    "parameters": [
                        queue_query("Only this queue (default: every queue)"),
                        {"name": "status", "in": "query", "required": false,
                         "schema": {"type": "string", "enum": ["pending", "running", "sleeping", "completed", "failed", "cancelled"]}},
                        {"name": "task_name", "in": "query", "required": false, "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                        {"name": "cursor", "in": "query", "required": false, "description": "next_cursor of the previous page (empty: first page)", "schema": {"type": "string"}},
                        {"name": "enqueued_after", "in": "query", "required": false, "description": "Only tasks enqueued at or after this time (RFC 3339; empty: no bound)", "schema": {"type": "string", "format": "date-time"}},
                        {"name": "enqueued_before", "in": "query", "required": false, "description": "Only tasks enqueued before this time (RFC 3339; empty: no bound)", "schema": {"type": "string", "format": "date-time"}},
                        {"name": "q", "in": "query", "required": false, "description": "Only tasks whose params, as JSON text, contain this text (case-insensitive; % _ \\ are literal; empty: no filter)", "schema": {"type": "string", "maxLength": 200}}
                    ],
                    "responses": ok("A page of tasks", sref("TaskList"), &[bad, not_found]),
                }
            }));
    paths.insert("/api/absurd/tasks/{task_id}".into(), json!({
                "get": {
                    "operationId": "getTask",
                    "summary": "A task with its runs, checkpoints and event waits",
                    "parameters": [task_id_param(), queue_query("The task's queue (looked up when omitted)")],
                    "responses": ok("The task", sref("TaskDetails"), &[bad, not_found]),
                },
                "delete": {
                    "operationId": "cancelTask",
                    "summary": "Cancel a task",
                    "parameters": [task_id_param(), queue_query("The task's queue (looked up when omitted)")],
                    "responses": ok("Cancelled", sref("CancelResponse"), &[bad, not_found, conflict]),
                }
            }));
    paths.insert("/api/absurd/tasks/{task_id}/retry".into(), json!({
                "post": {
                    "operationId": "retryTask",
                    "summary": "Retry a failed task, in place or as a new task",
                    "parameters": [task_id_param(), queue_query("The task's queue (looked up when omitted)")],
                    "requestBody": {"required": false, "content": {"application/json": {"schema": sref("RetryRequest")}}},
                    "responses": ok("Retried", sref("RetryResponse"), &[bad, not_found, conflict, too_large, media]),
                }
            }));
    paths.insert("/api/absurd/events".into(), json!({
                "post": {
                    "operationId": "emitEvent",
                    "summary": "Emit an event (wakes tasks waiting for it; the first emit of a name wins)",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": sref("EventRequest")}}},
                    "responses": ok("Emitted", sref("EventResponse"), &[bad, not_found, too_large, media]),
                }
            }));
    paths.insert("/api/absurd/queues".into(), json!({
                "get": {
                    "operationId": "listQueues",
                    "summary": "Queue names",
                    "responses": ok("Queue names", json!({"type": "array", "items": {"type": "string"}}), &[]),
                }
            }));
    paths.insert("/api/absurd/queues/stats".into(), json!({
                "get": {
                    "operationId": "allQueueStats",
                    "summary": "Statistics of every queue",
                    "responses": ok("Statistics", json!({"type": "array", "items": sref("QueueStats")}), &[]),
                }
            }));
    paths.insert("/api/absurd/queues/{queue_name}/stats".into(), json!({
                "get": {
                    "operationId": "queueStats",
                    "summary": "Counts per state, oldest pending age and throughput over 1/5/15 minutes",
                    "parameters": [{"name": "queue_name", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}],
                    "responses": ok("Statistics", sref("QueueStats"), &[bad, not_found]),
                }
            }));
    let minutes = json!({"name": "minutes", "in": "query", "required": false, "description": "Window length in minutes",
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1440, "default": 60}});
    paths.insert("/api/absurd/queues/{queue_name}/throughput".into(), json!({
                "get": {
                    "operationId": "queueThroughput",
                    "summary": "Completed and failed runs per minute over the window, oldest first, zero-filled (the last bucket is the current minute)",
                    "parameters": [{"name": "queue_name", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}, minutes.clone()],
                    "responses": ok("Per-minute counts", sref("Throughput"), &[bad, not_found]),
                }
            }));
    paths.insert("/api/absurd/workers".into(), json!({
                "get": {
                    "operationId": "listWorkers",
                    "summary": "Workers seen in the window (claimed runs started in it or running now, over all queues) with their runs by state and failure kind",
                    "parameters": [minutes],
                    "responses": ok("Workers, most recently seen first", sref("WorkerList"), &[bad]),
                }
            }));
    paths.insert("/api/absurd/health".into(), json!({
                "get": {
                    "operationId": "health",
                    "summary": "Liveness; does not touch the database; never needs the token",
                    "security": [{}],
                    "responses": {"200": {"description": "Always healthy while the process serves", "content": {"application/json": {"schema": sref("Health")}}}},
                }
            }));
    paths.insert("/api/absurd/health/detailed".into(), json!({
                "get": {
                    "operationId": "healthDetailed",
                    "summary": "Database reachability and latency, queue depth, oldest pending age, active workers, alerts and warnings",
                    "responses": {
                        "200": {"description": "healthy, degraded or critical", "content": {"application/json": {"schema": sref("HealthDetailed")}}},
                        "401": {"description": "Missing or wrong bearer token", "content": err_ref()},
                        "503": {"description": "down: the database is unreachable", "content": {"application/json": {"schema": sref("HealthDetailed")}}}
                    },
                }
            }));
    paths.insert("/api/absurd/metrics/prometheus".into(), json!({
                "get": {
                    "operationId": "metricsSeedPath",
                    "summary": "Prometheus metrics (same as /metrics)",
                    "responses": {
                        "200": {"description": "Text exposition format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}},
                        "401": {"description": "Missing or wrong bearer token", "content": err_ref()}
                    },
                }
            }));
    paths.insert("/api/absurd/openapi.json".into(), json!({
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "OpenAPI 3 document", "content": {"application/json": {"schema": {"type": "object"}}}},
                        "401": {"description": "Missing or wrong bearer token", "content": err_ref()}
                    },
                }
            }));
    paths.insert("/metrics".into(), json!({
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics: task counters by queue and task name, run duration and pickup latency histograms, in-flight gauge, sandbox traps, subprocess exits, database pool",
                    "responses": {
                        "200": {"description": "Text exposition format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}},
                        "401": {"description": "Missing or wrong bearer token", "content": err_ref()}
                    },
                }
            }));
    let mut schemas = serde_json::Map::new();
    schemas.insert("Error".into(), json!({"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}));
    schemas.insert(
        "RetryStrategy".into(),
        json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "kind": {"type": "string", "enum": ["none", "fixed", "exponential"]},
                "base_seconds": {"type": "number", "minimum": 0, "maximum": 86400},
                "factor": {"type": "number", "minimum": 0, "maximum": 86400},
                "max_seconds": {"type": "number", "minimum": 0, "maximum": 86400}
            }
        }),
    );
    schemas.insert("Cancellation".into(), json!({
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "max_delay": {"type": "integer", "minimum": 0, "maximum": 2147483647, "description": "Cancel if not started within this many seconds"},
                        "max_duration": {"type": "integer", "minimum": 0, "maximum": 2147483647, "description": "Cancel this many seconds after the first start"}
                    }
                }));
    schemas.insert("SpawnRequest".into(), json!({
                    "type": "object", "additionalProperties": false, "required": ["queue_name", "task_name"],
                    "properties": {
                        "queue_name": {"type": "string", "minLength": 1, "maxLength": 57},
                        "task_name": {"type": "string", "minLength": 1, "maxLength": 255},
                        "params": {"type": "object", "nullable": true, "default": {}, "description": "At most 256 KiB of JSON"},
                        "max_attempts": {"type": "integer", "nullable": true, "minimum": 1, "maximum": 1000, "description": "Default ABSURD_MAX_RETRIES + 1"},
                        "retry_strategy": sref("RetryStrategy"),
                        "headers": {"type": "object", "nullable": true},
                        "cancellation": sref("Cancellation"),
                        "idempotency_key": {"type": "string", "nullable": true, "minLength": 1, "maxLength": 255},
                        "priority": {"type": "integer", "nullable": true, "minimum": -2147483648, "maximum": 2147483647, "description": "Accepted for the DSA-110 pipeline's clients and ignored (Absurd has no priorities); a non-zero value adds a warning"},
                        "timeout_sec": {"type": "integer", "nullable": true, "minimum": 0, "maximum": 2147483647, "description": "Accepted for the DSA-110 pipeline's clients and ignored (the worker's per-type timeout applies); adds a warning"}
                    }
                }));
    schemas.insert("SpawnResponse".into(), json!({
                    "type": "object", "required": ["task_id", "run_id", "attempt", "created", "queue_name", "task_name"],
                    "properties": {
                        "task_id": {"type": "string", "format": "uuid"},
                        "run_id": {"type": "string", "format": "uuid"},
                        "attempt": {"type": "integer"},
                        "created": {"type": "boolean", "description": "false when an existing task was returned for the idempotency key"},
                        "queue_name": {"type": "string"},
                        "task_name": {"type": "string"},
                        "warnings": {"type": "array", "items": {"type": "string"}}
                    }
                }));
    schemas.insert("TaskSummary".into(), json!({
                    "type": "object",
                    "required": ["task_id", "queue_name", "task_name", "status", "attempts", "created_at"],
                    "properties": {
                        "task_id": {"type": "string", "format": "uuid"},
                        "queue_name": {"type": "string"},
                        "task_name": {"type": "string"},
                        "status": {"type": "string", "enum": ["pending", "running", "sleeping", "completed", "failed", "cancelled"]},
                        "attempts": {"type": "integer"},
                        "retry_count": {"type": "integer", "description": "attempts - 1"},
                        "max_attempts": nullable("integer"),
                        "created_at": {"type": "string", "format": "date-time"},
                        "first_started_at": {"type": "string", "format": "date-time", "nullable": true},
                        "cancelled_at": {"type": "string", "format": "date-time", "nullable": true},
                        "idempotency_key": nullable("string"),
                        "result": {"nullable": true, "description": "Always null in listings"},
                        "error": {"type": "string", "nullable": true, "description": "Always null in listings"}
                    }
                }));
    schemas.insert(
        "Run".into(),
        json!({
            "type": "object",
            "properties": {
                "run_id": {"type": "string", "format": "uuid"},
                "attempt": {"type": "integer"},
                "state": {"type": "string"},
                "worker_id": nullable("string"),
                "claim_expires_at": {"type": "string", "nullable": true},
                "available_at": {"type": "string", "nullable": true},
                "wake_event": nullable("string"),
                "started_at": {"type": "string", "nullable": true},
                "completed_at": {"type": "string", "nullable": true},
                "failed_at": {"type": "string", "nullable": true},
                "created_at": {"type": "string", "nullable": true},
                "result": {"nullable": true},
                "failure_reason": {"nullable": true}
            }
        }),
    );
    schemas.insert("TaskDetails".into(), json!({
                    "allOf": [sref("TaskSummary"), {
                        "type": "object",
                        "properties": {
                            "params": {},
                            "headers": {"nullable": true},
                            "retry_strategy": {"nullable": true},
                            "cancellation": {"nullable": true},
                            "claimed_at": {"type": "string", "nullable": true, "description": "Last run's start"},
                            "completed_at": {"type": "string", "nullable": true, "description": "Last run's completion or failure"},
                            "worker_id": nullable("string"),
                            "runs": {"type": "array", "items": sref("Run")},
                            "checkpoints": {"type": "array", "items": {"type": "object"}},
                            "waits": {"type": "array", "items": {"type": "object"}}
                        }
                    }]
                }));
    schemas.insert("TaskList".into(), json!({
                    "type": "object", "required": ["tasks", "total", "limit"],
                    "properties": {
                        "tasks": {"type": "array", "items": sref("TaskSummary")},
                        "total": {"type": "integer", "description": "Tasks matching the filter over all pages"},
                        "limit": {"type": "integer"},
                        "next_cursor": {"type": "string", "nullable": true}
                    }
                }));
    schemas.insert("CancelResponse".into(), json!({
                    "type": "object", "required": ["message", "task_id", "status"],
                    "properties": {"message": {"type": "string"}, "task_id": {"type": "string"}, "queue_name": {"type": "string"}, "status": {"type": "string"}}
                }));
    schemas.insert(
        "RetryRequest".into(),
        json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "spawn_new": {"type": "boolean", "nullable": true, "default": false},
                "max_attempts": {"type": "integer", "nullable": true, "minimum": 1, "maximum": 1000}
            }
        }),
    );
    schemas.insert("RetryResponse".into(), json!({
                    "type": "object", "required": ["task_id", "run_id", "attempt", "created"],
                    "properties": {
                        "task_id": {"type": "string"}, "run_id": {"type": "string"}, "attempt": {"type": "integer"},
                        "created": {"type": "boolean"}, "queue_name": {"type": "string"}, "status": {"type": "string"}
                    }
                }));
    schemas.insert("EventRequest".into(), json!({
                    "type": "object", "additionalProperties": false, "required": ["event_name"],
                    "properties": {
                        "queue_name": {"type": "string", "nullable": true, "minLength": 1, "maxLength": 57, "description": "Default ABSURD_QUEUE_NAME"},
                        "event_name": {"type": "string", "minLength": 1, "maxLength": 255},
                        "payload": {"description": "Any JSON"}
                    }
                }));
    schemas.insert("EventResponse".into(), json!({
                    "type": "object",
                    "properties": {"queue_name": {"type": "string"}, "event_name": {"type": "string"}, "emitted": {"type": "boolean"}}
                }));
    schemas.insert("QueueStats".into(), json!({
                    "type": "object",
                    "required": ["queue_name", "pending", "claimed", "completed", "failed", "cancelled", "total"],
                    "properties": {
                        "queue_name": {"type": "string"},
                        "pending": {"type": "integer"},
                        "claimed": {"type": "integer", "description": "The DSA-110 pipeline's name for running"},
                        "running": {"type": "integer"},
                        "sleeping": {"type": "integer"},
                        "completed": {"type": "integer"},
                        "failed": {"type": "integer"},
                        "cancelled": {"type": "integer"},
                        "total": {"type": "integer"},
                        "oldest_pending_age_seconds": {"type": "number", "nullable": true},
                        "throughput": {"type": "object"}
                    }
                }));
    schemas.insert("Throughput".into(), json!({
                    "type": "object", "required": ["queue_name", "minutes", "buckets"],
                    "properties": {
                        "queue_name": {"type": "string"},
                        "minutes": {"type": "integer"},
                        "buckets": {"type": "array", "items": {
                            "type": "object", "required": ["minute", "completed", "failed"],
                            "properties": {
                                "minute": {"type": "string", "format": "date-time", "description": "Start of the minute (UTC)"},
                                "completed": {"type": "integer", "description": "Runs completed in the minute"},
                                "failed": {"type": "integer", "description": "Runs failed in the minute (each failed attempt counts)"}
                            }
                        }}
                    }
                }));
    schemas.insert(
        "WorkerList".into(),
        json!({
            "type": "object", "required": ["minutes", "workers", "failure_names"],
            "properties": {
                "minutes": {"type": "integer"},
                "workers": {"type": "array", "items": sref("Worker")},
                "failure_names": {
                    "type": "object",
                    "description": "For each failure count of a worker (sandbox_failures, subprocess_failures, timeouts), the failure names it counts",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}}
                }
            }
        }),
    );
    schemas.insert("Worker".into(), json!({
                    "type": "object",
                    "required": ["worker_id", "last_seen", "running", "completed", "failed", "sandbox_failures", "subprocess_failures", "timeouts"],
                    "properties": {
                        "worker_id": {"type": "string"},
                        "last_seen": {"type": "string", "format": "date-time", "nullable": true, "description": "Latest start, completion or failure of its runs"},
                        "running": {"type": "integer"},
                        "completed": {"type": "integer"},
                        "failed": {"type": "integer"},
                        "sandbox_failures": {"type": "integer", "description": failed_runs_named(FailureCategory::Sandbox)},
                        "subprocess_failures": {"type": "integer", "description": failed_runs_named(FailureCategory::Subprocess)},
                        "timeouts": {"type": "integer", "description": failed_runs_named(FailureCategory::Timeout)}
                    }
                }));
    schemas.insert("Health".into(), json!({
                    "type": "object", "required": ["status", "message"],
                    "properties": {"status": {"type": "string"}, "message": {"type": "string"}, "queue": {"type": "string"},
                                   "version": {"type": "string"}, "uptime_seconds": {"type": "number"}}
                }));
    schemas.insert("HealthDetailed".into(), json!({
                    "type": "object", "required": ["status", "message", "database_available", "alerts", "warnings"],
                    "properties": {
                        "status": {"type": "string", "enum": ["healthy", "degraded", "critical", "down"]},
                        "message": {"type": "string"},
                        "database_available": {"type": "boolean"},
                        "database_latency_ms": {"type": "number", "nullable": true},
                        "queue_depth": {"type": "integer", "nullable": true},
                        "oldest_pending_age_seconds": {"type": "number", "nullable": true},
                        "worker_pool_healthy": {"type": "boolean"},
                        "workers": {"type": "object", "nullable": true},
                        "queues": {"type": "array", "items": {"type": "object"}},
                        "alerts": {"type": "array", "items": {"type": "object"}},
                        "warnings": {"type": "array", "items": {"type": "object"}}
                    }
                }));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "absurd-host API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The DSA-110 pipeline's /api/absurd endpoints, served by absurd-host over Absurd 0.5.1 on PostgreSQL. \
    Errors are {\"detail\": ...}. When the server has a token (required off loopback), every route except GET /api/absurd/health needs `Authorization: Bearer <token>`."
        },
        "security": [{"bearer": []}, {}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        }
    })
}

/// `(METHOD, path)` of every operation in the document.
pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            if let Some(ops) = item.as_object() {
                for method in ops.keys() {
                    if ["get", "post", "put", "delete", "patch", "head", "options"]
                        .contains(&method.as_str())
                    {
                        out.push((method.to_ascii_uppercase(), path.clone()));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_and_router_list_the_same_routes() {
        let doc = document();
        let mut routes: Vec<(String, String)> = super::super::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(operations(&doc), routes);
    }
}
