//! The `builtin` handler kind: small in-process handlers for tests, smoke checks and demos.
//!
//! | name     | does                                                                  |
//! |----------|-----------------------------------------------------------------------|
//! | `noop`   | returns `null`                                                        |
//! | `echo`   | returns its params                                                    |
//! | `fail`   | fails with `params.message` (permanent when `params.permanent`)       |
//! | `sleep`  | busy-waits `params.seconds` in the host (for timeout tests), returns them |
//! | `nap`    | durable sleep: suspends for `params.seconds`, then returns `"rested"` |
//! | `wait-event` | waits for the event `params.event` (timeout `params.timeout`), returns its payload |
//! | `steps`  | runs `params.count` checkpointed steps, returning their values         |
//! | `ledger` | like `steps`, but records every execution in a `ledger` table (below)   |
//! | `panic`  | panics in host code with `params.message` (for the containment tests)  |
//! | `stage`  | a pipeline stage of the DSA-110 chain contract, for workflow tests (below) |
//!
//! `stage` returns `{"status": "success", "outputs": <params.outputs merged with
//! params.produce>, "params": <its params>}`, or `{"status": "error", "message":
//! params.message}` (the DSA-110 convention for a failed stage) when `params.error` is true.
//!
//! `ledger` is for the reliability suite (`host/tests/chaos.rs`): it INSERTs one row into
//! `ledger (task_id uuid, run_id uuid, attempt int, worker_id text, step text)` (a table the
//! caller creates in the task's database) when an execution starts (`step = 'run'`), and one
//! more for each of `params.steps` (default 3) checkpointed steps it actually executes (not
//! replays): `step = <checkpoint name>` after `params.work_ms` (default 0) of work, just before
//! storing the step's checkpoint, and `<checkpoint name>:done` once the checkpoint is stored.
//! The rows then show whether a step ever ran again after an attempt had checkpointed it.

use std::time::Duration;

use serde_json::{json, Value};

use super::{BoxFuture, Failure, FailureName, Handler, TaskContext, TaskError};

pub const NAMES: &[&str] = &[
    "noop",
    "echo",
    "fail",
    "sleep",
    "nap",
    "wait-event",
    "steps",
    "ledger",
    "panic",
    "stage",
];

/// A builtin handler, by name.
pub struct Builtin {
    name: &'static str,
}

impl Builtin {
    pub fn new(name: &str) -> Option<Builtin> {
        NAMES
            .iter()
            .find(|n| **n == name)
            .map(|n| Builtin { name: n })
    }
}

fn param_f64(ctx: &TaskContext, key: &str, default: f64) -> Result<f64, TaskError> {
    match ctx.params().get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| {
            TaskError::Failed(
                Failure::new(
                    FailureName::InvalidParams,
                    format!("params.{key} must be a number, got {v}"),
                )
                .permanent(),
            )
        }),
    }
}

/// A span of `secs` seconds from a task's params: none for negative numbers and NaN, and
/// "forever" (the task's timeout ends it) beyond what a `Duration` holds.
fn seconds(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

/// One row in the caller's `ledger` table (see the module docs).
async fn ledger_row(ctx: &TaskContext, step: &str) -> Result<(), TaskError> {
    ctx.client()
        .insert_ledger_row(ctx.run(), ctx.worker_id(), step)
        .await
        .map_err(|e| TaskError::Failed(Failure::new("LedgerError", e.to_string())))?;
    Ok(())
}

impl Handler for Builtin {
    fn kind(&self) -> crate::execute::HandlerKind {
        crate::execute::HandlerKind::Builtin
    }

    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> {
        let name = self.name;
        Box::pin(async move {
            match name {
                "noop" => Ok(Value::Null),
                "echo" => Ok(ctx.params().clone()),
                "fail" => {
                    let message = ctx
                        .params()
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("the fail builtin always fails")
                        .to_string();
                    let mut f = Failure::new("BuiltinFailure", message);
                    if ctx.params().get("permanent").and_then(Value::as_bool) == Some(true) {
                        f = f.permanent();
                    }
                    Err(f.into())
                }
                "sleep" => {
                    let secs = param_f64(&ctx, "seconds", 1.0)?;
                    tokio::time::sleep(seconds(secs)).await;
                    Ok(json!({"slept": secs}))
                }
                "nap" => {
                    let secs = param_f64(&ctx, "seconds", 1.0)?;
                    ctx.sleep_for("nap", secs).await?;
                    Ok(json!("rested"))
                }
                "wait-event" => {
                    let event = ctx
                        .params()
                        .get("event")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            TaskError::Failed(
                                Failure::new(
                                    FailureName::InvalidParams,
                                    "params.event (a string) is required",
                                )
                                .permanent(),
                            )
                        })?
                        .to_string();
                    let timeout = ctx
                        .params()
                        .get("timeout")
                        .and_then(Value::as_i64)
                        .map(|t| t as i32);
                    match ctx.await_event(&event, None, timeout).await? {
                        Some(payload) => Ok(json!({"event": event, "payload": payload})),
                        None => Err(Failure::new(
                            "TimeoutError",
                            format!("event {event:?} did not arrive in time"),
                        )
                        .into()),
                    }
                }
                "steps" => {
                    let count = param_f64(&ctx, "count", 3.0)?.clamp(0.0, u32::MAX as f64) as u32;
                    let mut values = Vec::new();
                    for i in 0..count {
                        let name = ctx.next_checkpoint_name("step")?;
                        let v = match ctx.checkpoint(&name) {
                            Some(v) => v,
                            None => {
                                let v = json!(i * i);
                                ctx.store_checkpoint(&name, &v).await?;
                                v
                            }
                        };
                        values.push(v);
                    }
                    Ok(Value::Array(values))
                }
                "ledger" => {
                    let steps = param_f64(&ctx, "steps", 3.0)? as u32;
                    let work = param_f64(&ctx, "work_ms", 0.0)?;
                    ledger_row(&ctx, "run").await?;
                    for _ in 0..steps {
                        let name = ctx.next_checkpoint_name("step")?;
                        if ctx.checkpoint(&name).is_none() {
                            tokio::time::sleep(seconds(work / 1000.0)).await;
                            ledger_row(&ctx, &name).await?;
                            ctx.store_checkpoint(&name, &json!(name)).await?;
                            ledger_row(&ctx, &format!("{name}:done")).await?;
                        }
                    }
                    Ok(json!({"steps": steps}))
                }
                "panic" => {
                    let message = ctx
                        .params()
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("the panic builtin always panics")
                        .to_string();
                    panic!("{message}")
                }
                "stage" => {
                    let p = ctx.params();
                    if p.get("error").and_then(Value::as_bool) == Some(true) {
                        let message = p
                            .get("message")
                            .cloned()
                            .unwrap_or_else(|| json!("the stage failed"));
                        return Ok(json!({"status": "error", "message": message}));
                    }
                    let mut outputs = match p.get("outputs") {
                        Some(Value::Object(o)) => o.clone(),
                        _ => serde_json::Map::new(),
                    };
                    if let Some(Value::Object(add)) = p.get("produce") {
                        for (k, v) in add {
                            outputs.insert(k.clone(), v.clone());
                        }
                    }
                    Ok(json!({"status": "success", "outputs": outputs, "params": p}))
                }
                other => unreachable!("unknown builtin {other}"),
            }
        })
    }
}
