//! `fanout`: fan-out/fan-in over child tasks with absurd:task@0.2.0's `await-task-result`.
//! Built against 0.2.0 (its own workspace, absurd-guest's feature `wit-0-2-0`): the example
//! that the host keeps running 0.2.0 components unchanged beside 0.2.1 ones.
//!
//! Params:
//! - `task` (text): the children's task name
//! - `items` (list): one child per item, spawned with the item as its params; the result's
//!   `results` lists the children's outcomes in the same order (`join_all`)
//! - `then` (optional, any JSON): after the fan-in, one more child spawned with these params
//!   and awaited with `spawn_and_wait`; its result is the result's `then`
//! - `queue` (optional text): the children's queue (default: this task's)
//! - `timeout_seconds` (optional): wait at most this long for the first child alone; the
//!   result is then `{"timed_out": true}` if it has not ended
//!
//! Each spawn is a checkpointed step with an idempotency key (`spawn_once`), so re-runs after
//! a wait find the same children.

use std::time::Duration;

use absurd_guest::{Context, SpawnOptions, TaskError, TaskOutcome};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    task: String,
    #[serde(default)]
    items: Vec<Value>,
    then: Option<Value>,
    queue: Option<String>,
    timeout_seconds: Option<u64>,
}

fn outcome_json(o: &TaskOutcome) -> Value {
    match o {
        TaskOutcome::Completed(r) => json!({"state": "completed", "result": r}),
        TaskOutcome::Failed(f) => json!({"state": "failed", "failure": f}),
        TaskOutcome::Cancelled => json!({"state": "cancelled"}),
    }
}

fn fanout(ctx: &Context, p: Params) -> Result<Value, TaskError> {
    let options = || {
        let o = SpawnOptions::new().max_attempts(1);
        match &p.queue {
            Some(q) => o.queue(q.clone()),
            None => o,
        }
    };
    let mut ids = Vec::with_capacity(p.items.len());
    for item in &p.items {
        ids.push(ctx.spawn_once(&p.task, item, options())?);
    }
    if let (Some(secs), Some(first)) = (p.timeout_seconds, ids.first()) {
        let waited =
            ctx.await_task_result(first, p.queue.as_deref(), Some(Duration::from_secs(secs)));
        if waited.is_none() {
            return Ok(json!({"timed_out": true, "children": ids}));
        }
    }
    let outcomes = ctx.join_all(&ids, p.queue.as_deref())?;
    let results: Vec<Value> = outcomes.iter().map(outcome_json).collect();
    let then = match &p.then {
        Some(params) => Some(ctx.spawn_and_wait::<_, Value>(&p.task, params, options())?),
        None => None,
    };
    Ok(json!({"children": ids, "results": results, "then": then}))
}

absurd_guest::export_task!(fanout);
