//! `noop`: returns its params unchanged, doing as little as a task built with absurd-guest can:
//! the params text is passed through as [`RawJson`] (never parsed or serialised), and nothing
//! else runs. The benchmark's measure of the sandbox's own per-run cost.

use absurd_guest::{Context, RawJson, TaskError};

fn noop(_ctx: &Context, params: RawJson) -> Result<RawJson, TaskError> {
    Ok(params)
}

absurd_guest::export_task!(noop);
