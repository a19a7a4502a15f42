//! `durable`: a multi-step task that sleeps and awaits an event between checkpointed steps.
//!
//! ```text
//! step "fetch" → sleep_for "cool-down" → step "process" → await_event <event> → step "publish"
//! ```
//!
//! Every step's checkpoint value records the run and attempt that produced it, so a test can
//! prove replay: after the sleep, the event or a crash, `fetch` still carries the first run's
//! id, and `executed_now` lists only the steps whose code ran in the final execution.
//!
//! Params (all optional):
//! - `input` (any JSON): returned by `fetch` (default `"hello"`)
//! - `sleep_seconds` (number ≥ 0, default 1): the cool-down
//! - `event` (string, default `"durable-demo"`): the awaited event
//! - `timeout_seconds` (integer): await timeout; without it the task waits indefinitely
//! - `work_ms` (integer): time `process` spends working (a wall-clock sleep inside the step),
//!   to give a test a window to kill the worker mid-step
//! - `fail_first_attempt` (`"process"` | `"publish"`): fail with a retryable `DemoFailure`
//!   just before that step on attempt 1, to exercise retry + replay

use std::cell::RefCell;
use std::time::Duration;

use absurd_guest::{Context, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_input")]
    input: Value,
    #[serde(default = "default_sleep")]
    sleep_seconds: f64,
    #[serde(default = "default_event")]
    event: String,
    timeout_seconds: Option<u32>,
    work_ms: Option<u64>,
    fail_first_attempt: Option<FailPoint>,
}

#[derive(Deserialize, PartialEq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum FailPoint {
    Process,
    Publish,
}

fn default_input() -> Value {
    json!("hello")
}
fn default_sleep() -> f64 {
    1.0
}
fn default_event() -> String {
    "durable-demo".to_string()
}

/// A step's checkpoint value: what it computed, and which execution computed it.
#[derive(Serialize, Deserialize, Clone)]
struct StepRecord {
    step: String,
    run_id: String,
    attempt: u32,
    value: Value,
}

#[derive(Serialize)]
struct Summary {
    fetch: Value,
    process: Value,
    event: Option<Value>,
    event_timed_out: bool,
    publish: Value,
    /// Each step's record, in order: who produced it.
    executions: Vec<StepRecord>,
    /// Steps whose code ran in this (the final) execution.
    executed_now: Vec<String>,
    run_id: String,
    attempt: u32,
}

fn durable(ctx: &Context, params: Params) -> Result<Summary, TaskError> {
    let cool_down = Duration::try_from_secs_f64(params.sleep_seconds)
        .map_err(|e| TaskError::invalid_params("sleep_seconds", e))?;
    let info = ctx.info();
    let ran_now = RefCell::new(Vec::<String>::new());

    // Runs `compute` as step `name`, recording who produced the value.
    let record = |name: &str, compute: &dyn Fn() -> Result<Value, TaskError>| {
        ctx.step(name, || {
            absurd_guest::info!(
                "durable: running step {name} (task {}, run {}, attempt {})",
                info.task_id,
                info.run_id,
                info.attempt
            );
            ran_now.borrow_mut().push(name.to_string());
            Ok(StepRecord {
                step: name.to_string(),
                run_id: info.run_id.clone(),
                attempt: info.attempt,
                value: compute()?,
            })
        })
    };
    let fail_here = |point: FailPoint| -> Result<(), TaskError> {
        if params.fail_first_attempt == Some(point) && info.attempt == 1 {
            return Err(TaskError::retryable(
                "DemoFailure",
                "deliberate failure on the first attempt",
            ));
        }
        Ok(())
    };

    let fetch = record("fetch", &|| Ok(json!({ "input": params.input })))?;

    ctx.sleep_for("cool-down", cool_down);

    fail_here(FailPoint::Process)?;
    let process = record("process", &|| {
        if let Some(ms) = params.work_ms {
            std::thread::sleep(Duration::from_millis(ms));
        }
        Ok(json!({ "processed": fetch.value, "length": fetch.value.to_string().len() }))
    })?;

    let timeout = params
        .timeout_seconds
        .map(|s| Duration::from_secs(u64::from(s)));
    let event: Option<Value> = ctx.await_event(&params.event, None, timeout)?;
    absurd_guest::info!("durable: event {} -> {:?}", params.event, event);

    fail_here(FailPoint::Publish)?;
    let publish = record("publish", &|| {
        Ok(json!({ "published": process.value, "event": event }))
    })?;

    Ok(Summary {
        fetch: fetch.value.clone(),
        process: process.value.clone(),
        event_timed_out: event.is_none(),
        event,
        publish: publish.value.clone(),
        executions: vec![fetch, process, publish],
        executed_now: ran_now.into_inner(),
        run_id: info.run_id.clone(),
        attempt: info.attempt,
    })
}

absurd_guest::export_task!(durable);
