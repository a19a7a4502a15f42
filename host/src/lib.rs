//! absurd-host: a worker host for Absurd durable tasks.
//!
//! The modules follow a task's path through the host:
//!
//! * [`claim`]: taking runs from a queue as soon as they are ready (LISTEN/NOTIFY, timers, polling);
//! * [`lease`]: renewing the claims of running tasks and noticing lost ones;
//! * [`dispatch`]: task name → handler, from `absurd-host.toml`;
//! * [`execute`]: the handler trait, the durable task context, builtin and native handlers;
//! * [`sandbox`]: the `wasm` handler kind (wasmtime components, limits, capabilities);
//! * [`settle`]: completing, failing, handing back — every write fenced by run id;
//! * [`dead_letter`]: copying failed tasks into the dead-letter queue exactly once;
//! * [`worker`]: the loop that ties them together, with graceful shutdown.
//!
//! Around them: [`config`] (the `ABSURD_*` environment), [`db`] (connection and migrations),
//! [`client`] (typed calls for every Absurd operation), [`cli`] (the `absurd-host` command) and
//! [`api`] (the HTTP API: the DSA-110 pipeline's `/api/absurd` endpoints, health and metrics).

pub mod api;
pub mod bench;
pub mod check;
pub mod claim;
pub mod claimed;
pub mod cli;
pub mod client;
pub mod config;
pub mod db;
pub mod dead_letter;
pub mod devmode;
pub mod dispatch;
pub mod embedded;
pub mod execute;
pub mod failure;
pub mod jsonb;
pub mod lease;
pub mod limits;
pub mod metrics;
pub mod sandbox;
pub mod settle;
pub mod vocab;
pub mod worker;
