//! absurd-engine: runs Absurd tasks. The modules follow a run's path through a worker:
//!
//! * [`claim`]: taking runs from a queue as soon as they are ready (wake-up notifications,
//!   timers, polling), only as many as there are free slots;
//! * [`dispatch`]: task name → handler, from `absurd-host.toml`;
//! * [`execute`]: the handler trait and the durable task context, with one module per handler
//!   kind: [`execute::builtin`], [`execute::native`] (supervised subprocesses) and
//!   [`execute::wasm`] (wasmtime components, limits, capabilities);
//! * [`settle`]: completing, failing (permanent or not), handing back, and
//!   [`settle::dead_letter`]: every write fenced by run id;
//! * [`lease`]: renewing the claims of running tasks and noticing lost ones;
//! * [`worker`]: the loop that ties them together, with graceful shutdown.
//!
//! Beside the data path, [`schedule`]: cron ticks that spawn tasks, exactly once across workers.
//!
//! Around them: [`limits`] (what a run may make the host hold or the database store) and
//! [`metrics`] (the counters and histograms behind `/metrics`).
//!
//! The engine writes no SQL: every statement is an [`absurd_client::Client`] call.

pub mod claim;
pub mod dispatch;
pub mod execute;
pub mod lease;
pub mod limits;
pub mod metrics;
pub mod schedule;
pub mod settle;
pub mod worker;
