//! `echo`: returns its params unchanged (any JSON).

use absurd_guest::{Context, TaskError};
use serde_json::Value;

fn echo(_ctx: &Context, params: Value) -> Result<Value, TaskError> {
    Ok(params)
}

absurd_guest::export_task!(echo);
