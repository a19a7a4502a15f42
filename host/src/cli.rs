//! The `absurd-host` command line: argument definitions and the admin commands.
//!
//! Every database command takes `--database-url` (or `ABSURD_DATABASE_URL`) and prints
//! human-readable text by default, or one JSON document with `--json`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use uuid::Uuid;

use crate::api::model;
use crate::args::{ApiArgs, GlobalArgs, WorkerArgs};
use crate::config::{AbsurdConfig, DEFAULT_DATABASE_URL};
use absurd_client::{
    Cancellation, Client, RetryOptions, RetryStrategy, SpawnOptions, TaskDetails, TaskFilter,
};

#[derive(Debug, Parser)]
#[command(
    name = "absurd-host",
    version,
    about = "A worker host for Absurd durable tasks",
    long_about = "absurd-host claims Absurd 0.5.1 tasks from PostgreSQL and runs them as sandboxed \
WebAssembly components or supervised native subprocesses. It also installs the `absurd` schema \
and administers queues, tasks and events.\n\n\
Configuration comes from the DSA-110 pipeline's ABSURD_* environment variables; command-line flags override them.",
    after_help = "Examples:\n  absurd-host migrate --database-url postgresql://postgres@localhost/absurd\n  \
absurd-host queue create dsa110-pipeline\n  \
absurd-host task spawn calibration-solve --queue dsa110-pipeline --params '{\"inputs\":{\"ms_path\":\"/data/x.ms\"}}'\n  \
absurd-host task result 0190f3c4-... --wait 60"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Parses the command line, exiting with clap's message and code (2) on bad input.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`Cli::try_parse_from`], except that a refused value clap read from an environment
/// variable is reported against that variable: clap names the flag either way, and
/// `--concurrency` is the wrong thing to point at when `ABSURD_WORKER_CONCURRENCY=four` came
/// from a unit file.
pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    Cli::try_parse_from(&args).map_err(|e| name_the_variable(e, &args))
}

fn name_the_variable(e: clap::Error, args: &[std::ffi::OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return e;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return e;
    };
    // `arg` is how clap shows the flag: `--concurrency <N>`.
    let Some(long) = arg
        .split_whitespace()
        .next()
        .and_then(|a| a.strip_prefix("--"))
    else {
        return e;
    };
    let flag = format!("--{long}");
    let given = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if given {
        return e;
    }
    // The value came from the environment: the variable behind this flag that holds it.
    let mut variable = None;
    let mut stack = vec![Cli::command()];
    while let Some(cmd) = stack.pop() {
        for a in cmd.get_arguments() {
            if let (Some(l), Some(env)) = (a.get_long(), a.get_env()) {
                if l == long && std::env::var_os(env).is_some_and(|v| v.to_string_lossy() == *value)
                {
                    variable = Some(env.to_string_lossy().into_owned());
                }
            }
        }
        stack.extend(cmd.get_subcommands().cloned());
    }
    let Some(variable) = variable else {
        return e;
    };
    use std::error::Error as _;
    let reason = match (e.source(), e.get(ContextKind::ValidValue)) {
        (Some(source), _) => source.to_string(),
        (None, Some(ContextValue::Strings(valid))) => {
            format!("possible values: {}", valid.join(", "))
        }
        _ => "refused".to_string(),
    };
    // No usage line: it would be the top command's, and the fix is in the environment.
    clap::Error::raw(
        e.kind(),
        format!("invalid value '{value}' in {variable} (the environment variable behind {flag}): {reason}\n"),
    )
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the `absurd` schema (idempotent).
    ///
    /// Refuses a database whose `absurd` schema was installed by something else (such as
    /// `absurdctl init`) or by a newer absurd-host. With --adopt-seed, takes over the
    /// DSA-110 seed's database instead (stop the seed's workers and API first).
    Migrate {
        /// Print the whole schema as one SQL script (one transaction) instead of applying it.
        #[arg(long, conflicts_with = "adopt_seed")]
        dump_sql: bool,
        /// Adopt the DSA-110 seed's database, in one transaction: rename its `absurd` schema
        /// to `absurd_seed`, install absurd-host's, carry its unfinished tasks (pending,
        /// claimed, retrying) over into their queues (created as needed) with their params and
        /// attempt counts, and copy its finished ones into the read-only history that
        /// `GET /api/absurd/seed/tasks` lists. Safe to run again: nothing is carried or copied
        /// twice. Prints a report (`--json` for JSON).
        #[arg(long)]
        adopt_seed: bool,
        /// With --adopt-seed: do it all, report, and roll everything back.
        #[arg(long, requires = "adopt_seed")]
        dry_run: bool,
    },
    /// Print the schema version reported by `absurd.get_schema_version()`.
    SchemaVersion,
    /// Create, list, drop and inspect queues.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Spawn, inspect, list, cancel and retry tasks.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Emit events that wake waiting tasks.
    #[command(subcommand)]
    Event(EventCmd),
    /// Start workflows (DAGs of tasks run by a `workflow` task) and show their nodes.
    #[command(subcommand)]
    Workflow(WorkflowCmd),
    /// Submit an observation group, as the streaming bridge's `submit_group`: starts the
    /// `calibrator` (--calibrator) or `standard-pipeline` workflow of --config, once per group
    /// (idempotency key `group:<GROUP_ID>`; submitting again prints the same task).
    #[command(
        after_help = "Example:\n  absurd-host submit-group 2025-10-17T14:40:09 /data/incoming/2025-10-17T14:40:09_sb*.hdf5 \\\n    --config /etc/absurd-host/absurd-host.toml"
    )]
    SubmitGroup(SubmitGroupArgs),
    /// Run tasks: claim them from the queue(s) and execute them with the configured handlers.
    ///
    /// Runs until SIGTERM or SIGINT, then stops claiming, lets running tasks finish within
    /// --shutdown-grace, and hands the rest back to the queue. A second signal skips the wait.
    Worker(WorkerArgs),
    /// Serve the HTTP API (the DSA-110 pipeline's /api/absurd endpoints, health, Prometheus metrics).
    ///
    /// Listens on 127.0.0.1:8080 by default. A non-loopback --listen address is refused
    /// unless ABSURD_API_TOKEN is set; clients then send `Authorization: Bearer <token>` on
    /// every route except /api/absurd/health. Runs until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Delete finished tasks and consumed events by retention (one pass), in bounded batches.
    ///
    /// Retention per final state comes from the flags, else from the [maintenance] section of
    /// the --config file. `--dry-run` counts what would go and changes nothing. To maintain
    /// continuously, enable [maintenance] in the workers' configuration instead: one worker
    /// per database is elected to do it.
    #[command(
        after_help = "Examples:\n  absurd-host maintain --completed-days 7 --failed-days 30 --dry-run\n  \
absurd-host maintain --config /etc/absurd-host/absurd-host.toml --json"
    )]
    Maintain(crate::maintain::MaintainArgs),
    /// Print the detailed health report of `GET /api/absurd/health/detailed`: database
    /// latency, queue depth, oldest pending age, workers, alerts and warnings. Exits 1 when
    /// the status is `critical` or `down`.
    Health,
    /// Run a development host: without a database URL, a private PostgreSQL cluster in
    /// ./.absurd/pgdata (or --data-dir), migrated, with the worker and the HTTP API (config
    /// default: examples/absurd-host.toml). Ctrl-C stops it all; the next run reuses the data.
    Dev(crate::devmode::DevArgs),
    /// Run dev mode with a showcase of example tasks (echo, durable sleep + event, a pipeline
    /// chain, contained misbehaving guests) and print a summary. `scripts/demo` builds the
    /// example components and runs this.
    Demo(crate::devmode::DemoArgs),
    /// Validate the configuration, the task types (wasm components against the WIT world,
    /// native programs) and the database connection and schema, without running anything.
    /// Exits 1 if any check failed.
    Check(crate::check::CheckArgs),
    /// Benchmark this host against a real PostgreSQL: end-to-end throughput (wasm and builtin
    /// tasks, one and two worker processes), the Python reference worker side by side, spawn
    /// rate, pickup latency, Postgres CPU per task (our schema and the upstream one), backlog
    /// scaling and memory. Every measurement runs in a fresh database of its own on the
    /// server given by --database-url (it needs CREATEDB), or on a private cluster started
    /// for the run. Prints a table per scenario and, last, one JSON line with every figure.
    /// `--quick` is the short run CI does; docs/performance.md has the full figures.
    Bench(crate::bench::BenchArgs),
    /// Build a Python module of `absurd_guest` tasks into a task component
    /// (`absurd-host build-py app.py -o app.wasm`), with componentize-py, against this host's
    /// own WIT and Python SDK. Installs componentize-py into a venv in the cache directory on
    /// first use; bundles pure-Python requirements; caches components by the hash of their
    /// sources. Prints the component's size, exports and imports.
    #[command(name = "build-py")]
    BuildPy(crate::buildpy::BuildPyArgs),
}

/// Options of `absurd-host serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub connections: crate::connections::ConnectionArgs,
    /// Host configuration file (absurd-host.toml): its `[workflows.<name>]` are the workflows
    /// `POST /api/absurd/workflows` and `POST /api/absurd/groups` start by name, and its
    /// `[database]` section gives the defaults of the connection flags.
    #[arg(long, env = "ABSURD_HOST_CONFIG", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCmd {
    /// Start a workflow of the --config file's `[workflows.<NAME>]`.
    #[command(
        after_help = "Example:\n  absurd-host workflow start quick-imaging --config deploy/absurd-host.toml \\\n    --inputs '{\"input_path\": \"/data/incoming\", \"start_time\": \"2025-10-17T14:39:39\", \"end_time\": \"2025-10-17T14:45:09\"}'"
    )]
    Start(WorkflowStartArgs),
    /// Show a workflow: its nodes, their states and child tasks.
    Show(TaskRef),
}

#[derive(Debug, Args)]
pub struct WorkflowStartArgs {
    /// The workflow's name (`[workflows.<NAME>]` of --config).
    pub name: String,
    /// The host configuration file that defines it.
    #[arg(long, env = "ABSURD_HOST_CONFIG", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    /// Inputs for every node, as a JSON object (over the definition's inputs).
    #[arg(long, value_name = "JSON")]
    pub inputs: Option<String>,
    /// The pipeline configuration for every node, as JSON (replaces the definition's).
    #[arg(long, value_name = "JSON")]
    pub workflow_config: Option<String>,
    /// The workflow task's queue [default: the definition's `queue`, else ABSURD_QUEUE_NAME].
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
    /// Starting twice with the same key prints the first workflow.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// The workflow task's max_attempts [default: ABSURD_MAX_RETRIES + 1].
    #[arg(long)]
    pub max_attempts: Option<i64>,
}

#[derive(Debug, Args)]
pub struct SubmitGroupArgs {
    /// The group id (the bridge uses the observation time, YYYY-MM-DDTHH:MM:SS).
    pub group_id: String,
    /// The group's files; `input_path` is the directory of the first.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
    /// A calibrator transit: run the `calibrator` workflow, not `standard-pipeline`.
    #[arg(long)]
    pub calibrator: bool,
    /// The observation time t (RFC 3339, or YYYY-MM-DDTHH:MM:SS in UTC): start_time = t - 30 s,
    /// end_time = t + 5 min [default: GROUP_ID read as a time].
    #[arg(long, value_name = "TIME")]
    pub observed_at: Option<String>,
    /// The host configuration file that defines the workflows.
    #[arg(long, env = "ABSURD_HOST_CONFIG", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    /// The pipeline configuration for every node, as JSON.
    #[arg(long, value_name = "JSON")]
    pub workflow_config: Option<String>,
    /// The workflow task's queue [default: the definition's `queue`, else ABSURD_QUEUE_NAME].
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Create a queue (no-op if it exists).
    Create { queue: String },
    /// List queues.
    List,
    /// Drop a queue and every task, run, checkpoint and event in it.
    Drop {
        queue: String,
        /// Required: confirms that the queue's data is to be deleted.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Counts by state, oldest pending age and recent throughput (every queue when none is given).
    Stats { queue: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Spawn a task.
    Spawn(SpawnArgs),
    /// Show a task with its runs, checkpoints and waits.
    Get(TaskRef),
    /// List tasks, newest first.
    List(ListArgs),
    /// Cancel a task (no-op if it already finished).
    Cancel(TaskRef),
    /// Retry a failed task, in place or as a new task.
    Retry {
        #[command(flatten)]
        task: TaskRef,
        /// Spawn a new task with the same name and params instead of retrying in place.
        #[arg(long)]
        spawn_new: bool,
        /// New max_attempts (default: one more attempt than it had).
        #[arg(long)]
        max_attempts: Option<i32>,
    },
    /// Show a task's state and its result or failure.
    Result {
        #[command(flatten)]
        task: TaskRef,
        /// Wait up to this many seconds for the task to finish.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<f64>,
    },
}

#[derive(Debug, Args)]
pub struct TaskRef {
    /// The task id.
    pub task_id: Uuid,
    /// The task's queue (looked up when omitted).
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// The task name (the handler that runs it).
    pub task_name: String,
    /// Queue to spawn into.
    #[arg(long, short = 'q', env = "ABSURD_QUEUE_NAME", default_value = crate::config::DEFAULT_QUEUE_NAME)]
    pub queue: String,
    /// Params as a JSON document.
    #[arg(long, default_value = "{}")]
    pub params: String,
    /// One param: `key=text` or `key:=json` (repeatable; merged into --params).
    #[arg(long = "param", short = 'P', value_name = "KEY=VALUE")]
    pub param: Vec<String>,
    /// One header: `key=text` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    pub header: Vec<String>,
    /// Maximum number of attempts [default: ABSURD_MAX_RETRIES + 1].
    #[arg(long)]
    pub max_attempts: Option<i32>,
    /// Retry backoff kind [default: exponential, 30 s doubling up to 1 h].
    #[arg(long, value_parser = ["none", "fixed", "exponential"])]
    pub retry_kind: Option<String>,
    /// Retry base delay in seconds.
    #[arg(long)]
    pub retry_base: Option<f64>,
    /// Exponential retry factor.
    #[arg(long)]
    pub retry_factor: Option<f64>,
    /// Maximum retry delay in seconds.
    #[arg(long)]
    pub retry_max: Option<f64>,
    /// Cancel the task if it has not started within this many seconds.
    #[arg(long)]
    pub max_delay: Option<i64>,
    /// Cancel the task this many seconds after it first started.
    #[arg(long)]
    pub max_duration: Option<i64>,
    /// Spawning twice with the same key returns the first task.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// The run's wall-clock limit in whole seconds (1 to 31536000). It lowers the task type's
    /// timeout, never raises it (a larger value is clamped by the worker). Stored as the
    /// task's `timeout_sec` header.
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub timeout_sec: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this queue (default: every queue).
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
    /// Only tasks in this state; also the DSA-110 pipeline's names: `claimed` (= running) and
    /// `retrying` (waiting for its next attempt).
    #[arg(long, short = 's', value_parser = ["pending", "running", "sleeping", "completed", "failed", "cancelled", "claimed", "retrying"])]
    pub state: Option<String>,
    /// Only tasks with this name.
    #[arg(long, short = 'n')]
    pub task_name: Option<String>,
    /// Page size (1–1000).
    #[arg(long, short = 'l', default_value_t = 50)]
    pub limit: i64,
    /// Continue after this cursor (printed at the end of the previous page).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Only tasks enqueued at or after this time (RFC 3339, e.g. 2025-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub since: Option<DateTime<Utc>>,
    /// Only tasks enqueued before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub until: Option<DateTime<Utc>>,
    /// Only tasks whose params (as JSON text) contain this text, ignoring case.
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
}

fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time (e.g. 2025-01-01T00:00:00Z): {e}"))
}

#[derive(Debug, Subcommand)]
pub enum EventCmd {
    /// Emit an event (the first emit of a name wins; later ones are ignored).
    Emit {
        /// The event name.
        name: String,
        #[arg(long, short = 'q', env = "ABSURD_QUEUE_NAME", default_value = crate::config::DEFAULT_QUEUE_NAME)]
        queue: String,
        /// Payload as JSON (default: JSON null).
        #[arg(long)]
        payload: Option<String>,
    },
}

/// Parses `key=text` / `key:=json` pairs into a JSON object.
pub fn parse_pairs(pairs: &[String], what: &str) -> Result<serde_json::Map<String, Value>> {
    let mut map = serde_json::Map::new();
    for pair in pairs {
        if let Some((k, v)) = pair.split_once(":=") {
            let value: Value = serde_json::from_str(v)
                .with_context(|| format!("{what} {pair:?}: {v:?} after `:=` is not valid JSON"))?;
            map.insert(k.to_string(), value);
        } else if let Some((k, v)) = pair.split_once('=') {
            map.insert(k.to_string(), Value::String(v.to_string()));
        } else {
            bail!("{what} {pair:?} must look like key=value or key:=json");
        }
    }
    Ok(map)
}

pub fn parse_json(what: &str, raw: &str) -> Result<Value> {
    serde_json::from_str(raw).with_context(|| format!("{what} is not valid JSON: {raw:?}"))
}

impl SpawnArgs {
    fn build(&self, config: &AbsurdConfig) -> Result<(Value, SpawnOptions)> {
        let mut params = parse_json("--params", &self.params)?;
        let extra = parse_pairs(&self.param, "--param")?;
        if !extra.is_empty() {
            match params.as_object_mut() {
                Some(obj) => obj.extend(extra),
                None => bail!(
                    "--param needs --params to be a JSON object, got {}",
                    self.params
                ),
            }
        }
        let headers = parse_pairs(&self.header, "--header")?;
        // The value as JSON when it is JSON (`30`, `1.5`), else as text, so that the error
        // names what was given.
        let timeout = self.timeout_sec.as_deref().map(|raw| {
            serde_json::from_str::<Value>(raw.trim())
                .ok()
                .filter(Value::is_number)
                .unwrap_or_else(|| Value::String(raw.to_string()))
        });
        let headers = model::with_timeout_header(Some(headers), timeout.as_ref())
            .map_err(|e| anyhow::anyhow!("--timeout-sec / --header: {}", e.detail))?
            .unwrap_or_default();
        let any_retry =
            self.retry_base.is_some() || self.retry_factor.is_some() || self.retry_max.is_some();
        let retry_strategy = match (&self.retry_kind, any_retry) {
            (None, false) => crate::config::default_retry_strategy(),
            (kind, _) => RetryStrategy {
                kind: kind.clone().unwrap_or_else(|| "exponential".into()),
                base_seconds: self.retry_base,
                factor: self.retry_factor,
                max_seconds: self.retry_max,
            },
        };
        let cancellation =
            (self.max_delay.is_some() || self.max_duration.is_some()).then_some(Cancellation {
                max_delay: self.max_delay,
                max_duration: self.max_duration,
            });
        let opts = SpawnOptions {
            headers: (!headers.is_empty()).then_some(Value::Object(headers)),
            retry_strategy: Some(retry_strategy),
            max_attempts: Some(
                self.max_attempts
                    .unwrap_or_else(|| config.default_max_attempts()),
            ),
            cancellation,
            idempotency_key: self.idempotency_key.clone(),
        };
        Ok((params, opts))
    }
}

/// Runs an admin command.
pub async fn run_admin(cli: Cli, config: AbsurdConfig) -> Result<()> {
    let json_out = cli.global.json;
    let url = cli
        .global
        .database_url
        .clone()
        .or_else(|| config.database_url.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
    if let Command::Migrate { dump_sql: true, .. } = cli.command {
        print!("{}", absurd_client::db::dump_sql());
        return Ok(());
    }
    let redacted = absurd_client::db::redact_url(&url);
    let client = Client::connect(&url)
        .await
        .with_context(|| format!("cannot connect to {redacted}"))?;
    match cli.command {
        Command::Migrate {
            adopt_seed: true,
            dry_run,
            ..
        } => {
            let report = absurd_client::seed::adopt(
                client.pool(),
                &crate::config::default_retry_strategy(),
                dry_run,
            )
            .await
            .with_context(|| format!("cannot adopt the seed's database at {redacted}"))?;
            if json_out {
                emit(&report);
            } else {
                print_adopt_report(&redacted, &report);
            }
        }
        Command::Migrate { .. } => {
            let report = absurd_client::db::migrate(client.pool()).await?;
            if json_out {
                emit(&model::SchemaReport {
                    applied: Some(
                        report
                            .applied
                            .iter()
                            .map(|(v, d)| model::AppliedMigration {
                                version: *v,
                                description: d.clone(),
                            })
                            .collect(),
                    ),
                    schema_version: Some(report.schema_version.clone()),
                });
            } else if report.applied.is_empty() {
                println!(
                    "{redacted}: schema is up to date (absurd {})",
                    report.schema_version
                );
            } else {
                for (v, d) in &report.applied {
                    println!("applied migration {v}: {d}");
                }
                println!("{redacted}: schema is now absurd {}", report.schema_version);
            }
        }
        Command::SchemaVersion => {
            let v = client.schema_version().await?;
            if json_out {
                emit(&model::SchemaReport {
                    applied: None,
                    schema_version: v,
                });
            } else {
                println!("{}", v.as_deref().unwrap_or("unknown (no absurd schema)"));
            }
        }
        Command::Queue(cmd) => queue_cmd(&client, cmd, json_out).await?,
        Command::Task(cmd) => task_cmd(&client, cmd, &config, json_out).await?,
        Command::Workflow(cmd) => workflow_cmd(&client, cmd, &config, json_out).await?,
        Command::SubmitGroup(args) => submit_group_cmd(&client, &args, &config, json_out).await?,
        Command::Worker(_) => unreachable!("the worker is started by main"),
        Command::Serve(_) => unreachable!("the API server is started by main"),
        Command::Health => {
            let settings = crate::api::ApiSettings::new(None, None, &config)?;
            let (_, report) = crate::api::health::report(&client, &settings).await;
            let status = report.status.as_str();
            if json_out {
                emit(&report);
            } else {
                println!("{status}: {}", report.message);
                for a in report.alerts.iter().chain(&report.warnings) {
                    let level = match a.level {
                        model::HealthLevel::Alert => "alert",
                        model::HealthLevel::Warning => "warning",
                    };
                    println!("  {level}: {}", a.message);
                }
                if let Some(d) = report.queue_depth {
                    let active = report.workers.as_ref().map_or(0, |w| w.active);
                    println!("  queue depth {d}, active workers {active}");
                }
            }
            if matches!(
                report.status,
                model::HealthStatus::Critical | model::HealthStatus::Down
            ) {
                bail!("health is {status}");
            }
        }
        Command::Dev(_)
        | Command::Demo(_)
        | Command::Check(_)
        | Command::Bench(_)
        | Command::BuildPy(_)
        | Command::Maintain(_) => {
            unreachable!("started by main")
        }
        Command::Event(EventCmd::Emit {
            name,
            queue,
            payload,
        }) => {
            let payload = payload
                .as_deref()
                .map(|p| parse_json("--payload", p))
                .transpose()?;
            client.emit_event(&queue, &name, payload.as_ref()).await?;
            if json_out {
                emit(&model::EventResponse {
                    queue_name: queue,
                    event_name: name,
                    emitted: true,
                });
            } else {
                println!("emitted {name:?} on queue {queue:?}");
            }
        }
    }
    Ok(())
}

/// Prints one `--json` document: a type of [`crate::api::model`], the shape the HTTP API
/// gives for the same thing.
fn print_adopt_report(db: &str, r: &absurd_client::seed::AdoptReport) {
    let counts = |pairs: &[(&str, i64)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if r.dry_run {
        println!("{db}: adopting the seed's database (dry run: everything below was rolled back)");
    } else {
        println!("{db}: adopted the seed's database");
    }
    if r.renamed {
        println!("  the seed's schema `absurd` is now `{}`", r.seed_schema);
    } else {
        println!(
            "  the seed's schema was already `{}` (adopted before)",
            r.seed_schema
        );
    }
    if r.migrations_applied.is_empty() {
        println!(
            "  absurd-host's schema was up to date (absurd {})",
            r.schema_version
        );
    } else {
        println!(
            "  installed absurd-host's schema: {} migrations (absurd {})",
            r.migrations_applied.len(),
            r.schema_version
        );
    }
    let seed: Vec<(&str, i64)> = r.seed_tasks.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    println!(
        "  the seed's tasks: {}",
        if seed.is_empty() {
            "none".to_string()
        } else {
            counts(&seed)
        }
    );
    println!(
        "  carried over as Absurd tasks: {} (already carried by an earlier run: {})",
        r.carried_total, r.already_carried
    );
    for q in &r.carried {
        let created = if r.queues_created.contains(&q.queue_name) {
            " (queue created)"
        } else {
            ""
        };
        println!(
            "    {}{created}: {}",
            q.queue_name,
            counts(&[
                ("pending", q.pending),
                ("claimed", q.claimed),
                ("retrying", q.retrying)
            ])
        );
    }
    if !r.timeouts_dropped.is_empty() {
        let ids: Vec<String> = r.timeouts_dropped.iter().map(Uuid::to_string).collect();
        println!(
            "  timeout_sec left out (not 1 to {} s; the task type's timeout applies): {}",
            absurd_client::headers::MAX_TIMEOUT_SEC,
            ids.join(", ")
        );
    }
    println!(
        "  finished tasks copied into absurd.seed_history: {} (already there: {})",
        r.history_copied, r.history_already
    );
}

fn emit<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

async fn queue_cmd(client: &Client, cmd: QueueCmd, json_out: bool) -> Result<()> {
    match cmd {
        QueueCmd::Create { queue } => {
            client.create_queue(&queue).await?;
            if json_out {
                emit(&model::QueueChange {
                    queue_name: queue,
                    created: true,
                    dropped: false,
                });
            } else {
                println!("queue {queue:?} is ready");
            }
        }
        QueueCmd::List => {
            let queues = client.list_queues().await?;
            if json_out {
                emit(&queues);
            } else if queues.is_empty() {
                println!("no queues (create one with `absurd-host queue create NAME`)");
            } else {
                for q in queues {
                    println!("{q}");
                }
            }
        }
        QueueCmd::Drop { queue, yes } => {
            if !yes {
                bail!("dropping queue {queue:?} deletes all of its tasks; pass --yes to confirm");
            }
            client.drop_queue(&queue).await?;
            if json_out {
                emit(&model::QueueChange {
                    queue_name: queue,
                    created: false,
                    dropped: true,
                });
            } else {
                println!("dropped queue {queue:?}");
            }
        }
        QueueCmd::Stats { queue: None } => {
            let mut all = vec![];
            for q in client.list_queues().await? {
                all.push(client.queue_stats(&q).await?);
            }
            if json_out {
                emit(&all.iter().map(model::QueueStats::from).collect::<Vec<_>>());
            } else {
                for s in all {
                    println!(
                        "{}  pending {}  running {}  sleeping {}  completed {}  failed {}  cancelled {}  (total {})",
                        s.queue_name, s.pending, s.running, s.sleeping, s.completed, s.failed, s.cancelled, s.total
                    );
                }
            }
        }
        QueueCmd::Stats { queue: Some(queue) } => {
            if !client.queue_exists(&queue).await? {
                bail!("queue {queue:?} does not exist");
            }
            let s = client.queue_stats(&queue).await?;
            if json_out {
                emit(&model::QueueStats::from(&s));
            } else {
                println!("queue {}", s.queue_name);
                println!(
                    "  pending {}  running {}  sleeping {}  completed {}  failed {}  cancelled {}  (total {})",
                    s.pending, s.running, s.sleeping, s.completed, s.failed, s.cancelled, s.total
                );
                match s.oldest_pending_age_secs {
                    Some(a) => println!("  oldest pending: {}", human_age(a)),
                    None => println!("  oldest pending: none"),
                }
                println!(
                    "  completed in the last 1/5/15 min: {}/{}/{}",
                    s.completed_last_1m, s.completed_last_5m, s.completed_last_15m
                );
            }
        }
    }
    Ok(())
}

async fn resolve_queue(client: &Client, task: &TaskRef) -> Result<String> {
    if let Some(q) = &task.queue {
        return Ok(q.clone());
    }
    client
        .find_task_queue(task.task_id)
        .await?
        .with_context(|| format!("task {} was not found in any queue", task.task_id))
}

async fn task_cmd(
    client: &Client,
    cmd: TaskCmd,
    config: &AbsurdConfig,
    json_out: bool,
) -> Result<()> {
    match cmd {
        TaskCmd::Spawn(args) => {
            let (params, opts) = args.build(config)?;
            let s = client
                .spawn(&args.queue, &args.task_name, &params, &opts)
                .await?;
            if json_out {
                emit(&model::SpawnResponse::new(&s, &args.queue, &args.task_name));
            } else if s.created {
                println!(
                    "spawned {} {} on {:?} (run {})",
                    args.task_name, s.task_id, args.queue, s.run_id
                );
            } else {
                println!(
                    "task {} already exists for idempotency key {:?} (attempt {})",
                    s.task_id,
                    args.idempotency_key.unwrap_or_default(),
                    s.attempt
                );
            }
        }
        TaskCmd::Get(task) => {
            let queue = resolve_queue(client, &task).await?;
            let Some(t) = client.get_task(&queue, task.task_id).await? else {
                bail!("task {} not found in queue {queue:?}", task.task_id);
            };
            if json_out {
                emit(&model::TaskDetails::from(&t));
            } else {
                print_task(&t);
            }
        }
        TaskCmd::List(args) => {
            let (state, retrying) = match args.state {
                None => (None, false),
                Some(s) => {
                    serde_json::from_value::<model::StatusFilter>(Value::String(s))?.to_client()
                }
            };
            let filter = TaskFilter {
                queue: args.queue,
                state,
                task_name: args.task_name,
                limit: Some(args.limit),
                cursor: args.cursor,
                enqueued_after: args.since,
                enqueued_before: args.until,
                search: args.search,
                retrying,
            };
            let page = client.list_tasks(&filter).await?;
            if json_out {
                emit(&model::TaskList::new(&page, args.limit));
            } else {
                for t in &page.tasks {
                    println!(
                        "{}  {:<9}  {}/{}  {}  {}",
                        t.task_id,
                        t.state.as_str(),
                        t.attempts,
                        t.max_attempts
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| "∞".into()),
                        t.queue_name,
                        t.task_name
                    );
                }
                println!("{} of {} matching task(s)", page.tasks.len(), page.total);
                if let Some(c) = page.next_cursor {
                    println!("next page: --cursor {c}");
                }
            }
        }
        TaskCmd::Cancel(task) => {
            let queue = resolve_queue(client, &task).await?;
            client.cancel_task(&queue, task.task_id).await?;
            let r = client
                .task_result(&queue, task.task_id)
                .await?
                .with_context(|| format!("task {} not found in queue {queue:?}", task.task_id))?;
            if json_out {
                emit(&model::CancelResponse::new(
                    task.task_id,
                    &queue,
                    r.state.into(),
                ));
            } else {
                println!("task {} is {}", task.task_id, r.state);
            }
        }
        TaskCmd::Retry {
            task,
            spawn_new,
            max_attempts,
        } => {
            let queue = resolve_queue(client, &task).await?;
            let s = client
                .retry_task(
                    &queue,
                    task.task_id,
                    &RetryOptions {
                        spawn_new,
                        max_attempts,
                    },
                )
                .await?;
            if json_out {
                emit(&model::RetryResponse::new(&s, &queue));
            } else if s.created {
                println!("spawned new task {} (run {})", s.task_id, s.run_id);
            } else {
                println!(
                    "task {} retried in place: attempt {} (run {})",
                    s.task_id, s.attempt, s.run_id
                );
            }
        }
        TaskCmd::Result { task, wait } => {
            let queue = resolve_queue(client, &task).await?;
            let r = match wait {
                Some(secs) => {
                    let d = Duration::try_from_secs_f64(secs).map_err(|_| {
                        anyhow::anyhow!("--wait {secs} is not a valid number of seconds")
                    })?;
                    client.await_result(&queue, task.task_id, d).await?
                }
                None => client
                    .task_result(&queue, task.task_id)
                    .await?
                    .with_context(|| {
                        format!("task {} not found in queue {queue:?}", task.task_id)
                    })?,
            };
            if json_out {
                emit(&model::TaskResult::from(&r));
            } else {
                println!("{}: {}", r.task_id, r.state);
                if let Some(v) = &r.result {
                    println!("result: {}", serde_json::to_string_pretty(v)?);
                }
                if let Some(v) = &r.failure_reason {
                    println!("failure: {}", serde_json::to_string_pretty(v)?);
                }
            }
        }
    }
    Ok(())
}

/// The API's settings for `config`, with the workflows of the file at `path`.
fn workflow_settings(
    config: &AbsurdConfig,
    path: Option<&std::path::Path>,
) -> Result<crate::api::ApiSettings> {
    let mut s = crate::api::ApiSettings::for_config(config);
    s.workflows = std::sync::Arc::new(crate::workflow::Workflows::load(path)?);
    Ok(s)
}

fn api_err(e: crate::api::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.detail)
}

fn json_object(flag: &str, raw: &str) -> Result<serde_json::Map<String, Value>> {
    match parse_json(flag, raw)? {
        Value::Object(m) => Ok(m),
        other => bail!("{flag} must be a JSON object, got {other}"),
    }
}

async fn workflow_cmd(
    client: &Client,
    cmd: WorkflowCmd,
    config: &AbsurdConfig,
    json_out: bool,
) -> Result<()> {
    use crate::api::workflows;
    match cmd {
        WorkflowCmd::Start(a) => {
            let settings = workflow_settings(config, a.config.as_deref())?;
            let req = model::WorkflowStartRequest {
                name: Some(a.name.clone()),
                inputs: a
                    .inputs
                    .as_deref()
                    .map(|raw| json_object("--inputs", raw))
                    .transpose()?,
                config: a
                    .workflow_config
                    .as_deref()
                    .map(|raw| parse_json("--workflow-config", raw))
                    .transpose()?,
                queue_name: a.queue.clone(),
                idempotency_key: a.idempotency_key.clone(),
                max_attempts: a.max_attempts,
                nodes: None,
            };
            let plan = workflows::Plan::from_request(req, &settings).map_err(api_err)?;
            let w = workflows::start(client, &settings, plan)
                .await
                .map_err(api_err)?;
            if json_out {
                emit(&w);
            } else if w.created {
                println!(
                    "started workflow {}: task {} in queue {} ({} nodes)",
                    a.name, w.task_id, w.queue_name, w.nodes
                );
            } else {
                println!(
                    "workflow {} was already started with this idempotency key: task {} in queue {}",
                    a.name, w.task_id, w.queue_name
                );
            }
        }
        WorkflowCmd::Show(t) => {
            let v = workflows::show(client, t.task_id, t.queue.as_deref())
                .await
                .map_err(api_err)?;
            if json_out {
                emit(&v);
            } else {
                print_workflow(&v);
            }
        }
    }
    Ok(())
}

fn print_workflow(v: &model::WorkflowView) {
    println!(
        "workflow {}  task {}  queue {}  {}  attempt {}",
        v.name.as_deref().unwrap_or("(inline)"),
        v.task_id,
        v.queue_name,
        word(&v.status),
        v.attempts
    );
    if let Some(e) = &v.error {
        println!("  error: {e}");
    }
    let width = v.nodes.iter().map(|n| n.id.len()).max().unwrap_or(4).max(4);
    println!(
        "  {:width$}  {:10}  {:36}  depends on",
        "node", "state", "child task"
    );
    for n in &v.nodes {
        let child = n
            .task_id
            .map(|t| t.to_string())
            .unwrap_or_else(|| "–".into());
        let deps = if n.depends_on.is_empty() {
            "–".to_string()
        } else {
            n.depends_on.join(", ")
        };
        let task = if n.task == n.id {
            String::new()
        } else {
            format!("  (task {})", n.task)
        };
        println!(
            "  {:width$}  {:10}  {:36}  {deps}{task}{}",
            n.id,
            word(&n.state),
            child,
            if n.optional { "  (optional)" } else { "" }
        );
        if let Some(e) = &n.error {
            println!("  {:width$}  error: {e}", "");
        }
    }
}

/// The word the API writes for a state (`running`, `skipped`, ...).
fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn submit_group_cmd(
    client: &Client,
    a: &SubmitGroupArgs,
    config: &AbsurdConfig,
    json_out: bool,
) -> Result<()> {
    let settings = workflow_settings(config, a.config.as_deref())?;
    let req = model::GroupRequest {
        group_id: a.group_id.clone(),
        file_paths: a.files.clone(),
        is_calibrator: a.calibrator,
        observed_at: a.observed_at.clone(),
        config: a
            .workflow_config
            .as_deref()
            .map(|raw| parse_json("--workflow-config", raw))
            .transpose()?,
        queue_name: a.queue.clone(),
        priority: None,
    };
    let g = crate::api::workflows::submit_group(client, &settings, req)
        .await
        .map_err(api_err)?;
    if json_out {
        emit(&g);
    } else if g.created {
        println!(
            "group {}: started workflow {} as task {} in queue {}",
            g.group_id, g.workflow, g.task_id, g.queue_name
        );
    } else {
        println!(
            "group {} was already submitted: workflow {} is task {} in queue {}",
            g.group_id, g.workflow, g.task_id, g.queue_name
        );
    }
    Ok(())
}

fn print_task(t: &TaskDetails) {
    let s = &t.summary;
    println!(
        "task {} ({}) on queue {}",
        s.task_id, s.task_name, s.queue_name
    );
    println!(
        "  state {}  attempts {}/{}",
        s.state,
        s.attempts,
        s.max_attempts
            .map(|m| m.to_string())
            .unwrap_or_else(|| "∞".into())
    );
    println!("  enqueued {}", s.enqueue_at.to_rfc3339());
    println!("  params {}", t.params);
    if let Some(h) = &t.headers {
        println!("  headers {h}");
    }
    if let Ok(Some(secs)) = absurd_client::headers::timeout_sec(t.headers.as_ref()) {
        println!("  timeout {secs} s (the task's own; its type's timeout if that is lower)");
    }
    if let Some(p) = &t.completed_payload {
        println!("  result {p}");
    }
    for r in &t.runs {
        println!(
            "  run {} attempt {} {}{}",
            r.run_id,
            r.attempt,
            r.state,
            r.claimed_by
                .as_deref()
                .map(|w| format!(" by {w}"))
                .unwrap_or_default()
        );
        if let Some(f) = &r.failure_reason {
            println!("    failure {f}");
        }
    }
    for c in &t.checkpoints {
        println!(
            "  checkpoint {} ({}) = {}",
            c.checkpoint_name, c.status, c.state
        );
    }
    for w in &t.waits {
        println!(
            "  waiting for event {:?} (step {})",
            w.event_name, w.step_name
        );
    }
}

fn human_age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{:.1} h", s as f64 / 3600.0),
    }
}

/// `absurd-host worker`: runs until `shutdown` is cancelled.
pub async fn run_worker(
    global: &GlobalArgs,
    args: &WorkerArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    let config = args.config(global)?;
    let settings = args.settings(&config)?;
    let registry = absurd_engine::dispatch::Registry::load(args.config.as_ref())?;
    let schedules = config_schedules(args, &config)?;
    // The file's workflows are checked at start, whether or not this worker serves the API.
    let workflows = std::sync::Arc::new(crate::workflow::Workflows::load(args.config.as_deref())?);
    if registry.is_empty() {
        tracing::warn!(
            "no task types are configured (see --config); every task will be deferred for other workers"
        );
    }
    let url = config.database_url_or_default().to_string();
    let redacted = absurd_client::db::redact_url(&url);
    let connections =
        crate::connections::Connections::resolve(&args.connections, args.config.as_deref())?;
    let maintenance = crate::maintain::Settings::load(args.config.as_ref())?;
    connections.check_maintenance(maintenance.enabled)?;
    // Claimers, lease renewal, settling and (without a listen URL) the listener share the
    // pool; by default it is sized to the load.
    let client = connections
        .worker_client(&url, settings.concurrency)
        .await?;
    connections.warn_if_pooled(&client, &url).await;
    tracing::info!(
        max_connections = connections.worker_pool_size(settings.concurrency),
        pooling = connections.pooling.as_str(),
        listen_url = connections.listen_url.is_some(),
        "worker pool"
    );
    match client.schema_version().await? {
        Some(v) => tracing::info!(schema_version = %v, database = %redacted, "connected"),
        None => bail!(
            "{redacted} has no absurd schema; run `absurd-host migrate` (or `absurdctl init`) first"
        ),
    }
    if !args.no_create_queues {
        for q in &settings.queues {
            client.ensure_queue(q).await?;
        }
    }
    let scheduler = start_scheduler(args, &client, &schedules, &settings, &shutdown).await?;
    let counters = absurd_engine::metrics::Counters::default();
    // Maintenance: a candidate for the database's one maintaining worker, if configured.
    let maintainer = maintenance.enabled.then(|| {
        tokio::spawn(crate::maintain::lead_when_elected(
            client.clone(),
            maintenance,
            settings.worker_id.clone(),
            counters.clone(),
            shutdown.clone(),
        ))
    });
    if !args.api {
        let worker = absurd_engine::worker::run_with_counters(
            client,
            registry,
            settings,
            counters,
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        if let Some(m) = maintainer {
            let _ = m.await;
        }
        if let Some(s) = scheduler {
            s.await.context("scheduler task panicked")?;
        }
        return worker.map(|_| ());
    }
    // The API: its own small pool, the worker's counters, stopped with the worker.
    let mut api_settings = api_settings(&args.api_args, &config)?;
    api_settings.workflows = workflows;
    api_settings
        .extra_pools
        .push(("worker".into(), client.pool().clone()));
    let clients = connections.api_clients(&url, api_settings.statement_timeout)?;
    api_settings.set_read_client(clients.reads);
    let listener = crate::api::bind(&api_settings).await?;
    let api_client = clients.primary;
    let api = tokio::spawn(crate::api::serve_on(
        listener,
        api_client,
        api_settings,
        counters.clone(),
        shutdown.clone(),
    ));
    let worker = absurd_engine::worker::run_with_counters(
        client,
        registry,
        settings,
        counters,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let served = api.await;
    if let Some(m) = maintainer {
        let _ = m.await;
    }
    if let Some(s) = scheduler {
        s.await.context("scheduler task panicked")?;
    }
    worker?;
    served.context("API task panicked")??;
    Ok(())
}

/// The `[[schedules]]` of the worker's configuration file, checked (a schedule without
/// `queue_name` goes to the worker's first queue).
fn config_schedules(
    args: &WorkerArgs,
    config: &AbsurdConfig,
) -> Result<Vec<absurd_engine::schedule::Schedule>> {
    let Some(path) = &args.config else {
        return Ok(Vec::new());
    };
    let file = absurd_engine::dispatch::HostConfig::load(path)?;
    absurd_engine::schedule::from_config(&file.schedules, &config.queue_name)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Stores the file's schedules and starts the scheduler loop (unless `--no-scheduler`). A
/// database without the schedules table (a schema installed by `absurdctl init`) runs no
/// scheduler; a file with schedules is then refused.
async fn start_scheduler(
    args: &WorkerArgs,
    client: &Client,
    schedules: &[absurd_engine::schedule::Schedule],
    settings: &absurd_engine::worker::WorkerSettings,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    if !client.schedules_supported().await? {
        if !schedules.is_empty() {
            bail!(
                "the configuration file has [[schedules]], but the database's absurd schema has no \
                 schedules table (absurd-host's migration 0017): run `absurd-host migrate` if \
                 absurd-host installed the schema; a schema installed by `absurdctl init` has no \
                 schedules, so remove the [[schedules]] to run on it"
            );
        }
        tracing::info!("no schedules table in this database (run `absurd-host migrate` for schedules); scheduler not started");
        return Ok(None);
    }
    if !args.no_create_queues {
        for s in schedules {
            client.ensure_queue(&s.queue_name).await?;
        }
    }
    absurd_engine::schedule::install_config(client, schedules).await?;
    let in_file: std::collections::HashSet<&str> =
        schedules.iter().map(|s| s.name.as_str()).collect();
    for row in client
        .list_schedules(absurd_engine::schedule::MAX_SCHEDULES)
        .await?
    {
        if row.source == "config" && !in_file.contains(row.schedule_name.as_str()) {
            tracing::info!(
                schedule = %row.schedule_name,
                "schedule from a configuration file that this worker's file does not define; \
                 if it is obsolete, delete it (DELETE /api/absurd/schedules/{{name}})"
            );
        }
    }
    if args.no_scheduler {
        tracing::info!("--no-scheduler: this worker fires no schedule");
        return Ok(None);
    }
    let sched_settings = absurd_engine::schedule::SchedulerSettings::new(
        settings.poll_interval,
        settings.default_max_attempts,
    );
    Ok(Some(tokio::spawn(absurd_engine::schedule::run(
        client.clone(),
        sched_settings,
        shutdown.clone(),
    ))))
}

fn api_settings(args: &ApiArgs, config: &AbsurdConfig) -> Result<crate::api::ApiSettings> {
    let token = std::env::var("ABSURD_API_TOKEN").ok();
    let settings = crate::api::ApiSettings::new(args.listen.as_deref(), token, config)?;
    settings.check()?;
    Ok(settings)
}

/// `absurd-host serve`: serves the HTTP API until `shutdown` is cancelled. Starts even when
/// the database is unreachable (health then reports `down`, other routes 503).
pub async fn run_serve(
    global: &GlobalArgs,
    args: &ServeArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    let config = AbsurdConfig::from_env()?;
    let mut settings = api_settings(&args.api, &config)?;
    settings.workflows =
        std::sync::Arc::new(crate::workflow::Workflows::load(args.config.as_deref())?);
    let url = global
        .database_url
        .clone()
        .or_else(|| config.database_url.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
    let connections =
        crate::connections::Connections::resolve(&args.connections, args.config.as_deref())?;
    let clients = connections.api_clients(&url, settings.statement_timeout)?;
    let mut settings = settings;
    settings.set_read_client(clients.reads);
    let client = clients.primary;
    let redacted = absurd_client::db::redact_url(&url);
    match tokio::time::timeout(Duration::from_secs(5), client.schema_version()).await {
        Ok(Ok(Some(v))) => tracing::info!(schema_version = %v, database = %redacted, "connected"),
        Ok(Ok(None)) => {
            tracing::warn!(database = %redacted, "the database has no absurd schema; run `absurd-host migrate`")
        }
        Ok(Err(e)) => {
            tracing::warn!(database = %redacted, error = %e, "database unreachable for now; serving anyway")
        }
        Err(_) => {
            tracing::warn!(database = %redacted, "database did not answer within 5 s; serving anyway")
        }
    }
    let listener = crate::api::bind(&settings).await?;
    crate::api::serve_on(
        listener,
        client,
        settings,
        absurd_engine::metrics::Counters::default(),
        shutdown,
    )
    .await
}
