//! absurd-host: the binary around the engine. A worker host for Absurd durable tasks.
//!
//! The workspace has three crates, each depending only on the ones before it:
//!
//! * `absurd-client` (`client/`): every SQL statement, with typed rows and errors; usable on
//!   its own as a Rust client for Absurd;
//! * `absurd-engine` (`engine/`): claim → dispatch → execute (`builtin`, `native`, `wasm`) →
//!   settle (complete, fail, hand back, dead-letter) → lease, and the worker loop;
//! * `absurd-host` (this crate): the `absurd-host` command and the tooling around the engine.
//!
//! This crate's modules:
//!
//! * [`cli`]: the `absurd-host` command line and its admin commands, with [`args`] (the
//!   global, worker and API arguments every command shares) and [`config`] (the `ABSURD_*`
//!   environment);
//! * [`api`]: the HTTP API (the DSA-110 pipeline's `/api/absurd` endpoints, health, metrics,
//!   the dashboard);
//! * [`devmode`]: `absurd-host dev` and `demo`, on [`embedded`] PostgreSQL when no database
//!   is given;
//! * [`check`]: `absurd-host check`, validating a worker's configuration without running it;
//! * [`bench`]: `absurd-host bench`, the benchmark;
//! * [`buildpy`]: `absurd-host build-py`, building Python task components;
//! * [`workflow`]: workflow definitions (`[workflows.<name>]` and inline DAGs), checked
//!   before the API or `absurd-host workflow` spawns a `workflow` task.

pub mod api;
pub mod args;
pub mod bench;
pub mod buildpy;
pub mod check;
pub mod cli;
pub mod config;
pub mod connections;
pub mod devmode;
pub mod embedded;
pub mod maintain;
pub mod workflow;
