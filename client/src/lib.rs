//! absurd-client: a Rust client for [Absurd](https://github.com/earendil-works/absurd)
//! durable tasks on PostgreSQL.
//!
//! It holds every SQL statement of absurd-host, and is usable on its own: to spawn tasks and
//! wait for their results from an application, to inspect and administer queues, or to write
//! a worker of your own. It speaks Absurd 0.5.1's `absurd.*` SQL functions, so it works the
//! same against a schema installed by `absurd-host migrate` and one installed by
//! `absurdctl init`, alongside the Absurd SDKs of other languages. It does not depend on
//! wasmtime or on the rest of absurd-host.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use absurd_client::{Client, SpawnOptions, State};
//! use serde_json::json;
//!
//! # async fn example() -> Result<(), absurd_client::ClientError> {
//! let client = Client::connect("postgresql://postgres@localhost/app").await?;
//! client.ensure_queue("emails").await?;
//! let spawned = client
//!     .spawn(
//!         "emails",
//!         "send-welcome",
//!         &json!({"to": "ada@example.org"}),
//!         &SpawnOptions {
//!             max_attempts: Some(3),
//!             ..Default::default()
//!         },
//!     )
//!     .await?;
//! // Some worker (absurd-host, or an Absurd SDK) runs the task meanwhile.
//! let result = client
//!     .await_result("emails", spawned.task_id, Duration::from_secs(30))
//!     .await?;
//! assert_eq!(result.state, State::Completed);
//! # Ok(())
//! # }
//! ```
//!
//! # Modules, by concern
//!
//! * [`client`]: the [`Client`] handle (a pool; cheap to clone);
//! * [`admin`]: queues, spawning, reading, listing, cancelling and retrying tasks, events,
//!   cleanup;
//! * [`protocol`]: the worker side of a claimed run (complete, fail, schedule, lease,
//!   checkpoints, event waits), every write fenced by run id;
//! * [`claimed`]: claiming runs, reading each one's data on its own and within
//!   [`ReadLimits`], so that one unreadable row costs only its own run;
//! * [`dead_letter`]: the reads behind a dead-letter queue;
//! * [`listen`]: wake-up notifications (`LISTEN absurd_wakeup`);
//! * [`live`]: live-update notifications of task state changes (`LISTEN absurd_live`);
//! * [`analytics`]: statistics and health figures for dashboards;
//! * [`schedules`]: schedule definitions (`absurd.schedules`), and firing a tick exactly once;
//! * [`monitor`]: the DSA-110 pipeline's task metrics and worker registry (with the heartbeats
//!   workers report);
//! * [`maintenance`]: retention by final state in bounded batches, the record of each pass,
//!   and the advisory lock that elects one maintaining worker;
//! * [`measure`]: fixtures and readings for benchmarks and tests (bulk spawning, drain
//!   timings, which server backends serve a client);
//! * [`db`]: connecting, creating and dropping databases, and the schema's migrations (the
//!   repository's `migrations/`, embedded at build time);
//! * [`types`], [`error`]: the typed rows (`sqlx::FromRow`) and the typed errors;
//! * [`failure`], [`vocab`], [`jsonb`]: a run's failure as stored, the host's failure names,
//!   and what PostgreSQL's `jsonb` accepts;
//! * [`headers`]: the task headers the host reads (`timeout_sec`);
//! * [`seed`]: adopting the DSA-110 seed's database, and reading its finished tasks.
//!
//! # Errors
//!
//! Every call returns [`ClientError`]. The Absurd SQLSTATEs get variants of their own:
//! `AB001` [`ClientError::Cancelled`], `AB002` [`ClientError::RunFailed`] (both
//! [`ClientError::is_run_lost`]: stop working on the run and report nothing) and `AB003`
//! [`ClientError::InvalidRetryStrategy`]; an unreachable database is
//! [`ClientError::Unavailable`] (retry later).

pub mod admin;
pub mod analytics;
pub mod children;
pub mod claimed;
pub mod client;
pub mod db;
pub mod dead_letter;
pub mod error;
pub mod failure;
pub mod headers;
pub mod jsonb;
pub mod listen;
pub mod live;
pub mod maintenance;
pub mod measure;
pub mod monitor;
pub mod partitions;
pub mod pooling;
pub mod protocol;
pub mod schedules;
pub mod seed;
pub mod types;
pub mod vocab;
pub mod workflows;

pub use claimed::{Claimed, LoadedCheckpoints, ReadLimits};
pub use client::Client;
pub use error::{ClientError, Result};
pub use failure::Failure;
pub use types::*;
pub use vocab::{FailureCategory, FailureName};
