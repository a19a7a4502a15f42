//! The arguments shared by the commands that run or check a worker: the global flags
//! ([`GlobalArgs`]), the worker's ([`WorkerArgs`], also taken by `check`, `dev` and `demo`)
//! and the API's listen address ([`ApiArgs`]). Every command module imports them from here,
//! so that none of them imports another command's module.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::config::{value, AbsurdConfig};

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// PostgreSQL URL of the database holding the `absurd` schema
    /// [default: postgresql://postgres:postgres@localhost/dsa110_absurd]
    #[arg(
        long,
        global = true,
        env = "ABSURD_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Print one JSON document instead of text (for scripts).
    #[arg(long, global = true)]
    pub json: bool,

    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "ABSURD_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the HTTP API listens (for `serve` and `worker --api`). The bearer token is read
/// from `ABSURD_API_TOKEN` only (never a flag, so that it does not show in `ps`).
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Address for the HTTP API, IP:PORT [default: 127.0.0.1:8080]. A non-loopback address
    /// needs ABSURD_API_TOKEN.
    #[arg(long, env = "ABSURD_API_LISTEN", value_name = "IP:PORT")]
    pub listen: Option<String>,
}

/// Options of `absurd-host worker`. Each one can also be set by the environment variable
/// shown; the flag wins.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Queue to claim from; repeat (or separate with commas) for several queues.
    #[arg(
        long = "queue",
        short = 'q',
        env = "ABSURD_QUEUE_NAME",
        value_delimiter = ',',
        value_name = "QUEUE"
    )]
    pub queues: Vec<String>,
    /// Tasks in flight at once, over all queues [default: 4].
    #[arg(long, env = "ABSURD_WORKER_CONCURRENCY", value_name = "N", value_parser = value::positive_count)]
    pub concurrency: Option<u32>,
    /// Fallback poll period in seconds, for when no wake-up notification arrives [default: 1.0].
    #[arg(long, env = "ABSURD_WORKER_POLL_INTERVAL", value_name = "SECONDS", value_parser = value::positive_seconds)]
    pub poll_interval: Option<Duration>,
    /// Hard wall-clock limit per run in whole seconds; per-type `timeout` overrides it
    /// [default: 3600].
    #[arg(long, env = "ABSURD_TASK_TIMEOUT", value_name = "SECONDS", value_parser = value::whole_seconds)]
    pub task_timeout: Option<Duration>,
    /// Lease length in whole seconds; renewed every third of it while a task runs. A worker
    /// that dies loses its tasks to other workers this long after its last renewal.
    #[arg(
        long,
        env = "ABSURD_CLAIM_TIMEOUT",
        default_value = "60",
        value_name = "SECONDS",
        value_parser = value::lease_seconds
    )]
    pub claim_timeout: Duration,
    /// Retries for tasks this host spawns (max_attempts = retries + 1) [default: 3].
    #[arg(long, env = "ABSURD_MAX_RETRIES", value_name = "N", value_parser = value::count)]
    pub max_retries: Option<u32>,
    /// Copy tasks that end failed into the dead-letter queue: true/false, 1/0, yes/no or
    /// on/off [default: true].
    #[arg(long, env = "ABSURD_DLQ_ENABLED", value_name = "BOOL", value_parser = value::boolean, action = clap::ArgAction::Set)]
    pub dlq_enabled: Option<bool>,
    /// Dead-letter queue (created if missing) [default: <queue>-dlq].
    #[arg(long, env = "ABSURD_DLQ_QUEUE_NAME", value_name = "QUEUE")]
    pub dlq_queue: Option<String>,
    /// Worker id recorded on claimed runs [default: <hostname>:<pid>:<random 8 hex>].
    #[arg(long, env = "ABSURD_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Host configuration file declaring the task types (absurd-host.toml).
    #[arg(long, env = "ABSURD_HOST_CONFIG", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    /// Fail tasks whose name has no handler here, instead of deferring them 15–30 s for
    /// another worker (the Absurd SDKs' behaviour, which lets mixed fleets share a queue).
    #[arg(long)]
    pub fail_unknown: bool,
    /// Seconds to let running tasks finish after SIGTERM before handing them back.
    #[arg(
        long,
        env = "ABSURD_SHUTDOWN_GRACE",
        default_value = "30",
        value_name = "SECONDS",
        value_parser = value::seconds_or_zero
    )]
    pub shutdown_grace: Duration,
    /// Do not create the queues at start (by default missing queues are created).
    #[arg(long)]
    pub no_create_queues: bool,
    /// Do not run the scheduler in this worker (the `[[schedules]]` of --config are still
    /// stored). Any number of workers may run it; each tick is spawned once.
    #[arg(long)]
    pub no_scheduler: bool,
    /// Also serve the HTTP API from this process (see `absurd-host serve`); its /metrics then
    /// shows this worker's counters.
    #[arg(long)]
    pub api: bool,
    #[command(flatten)]
    pub api_args: ApiArgs,
    #[command(flatten)]
    pub connections: crate::connections::ConnectionArgs,
}

impl WorkerArgs {
    /// The configuration: each `ABSURD_*` variable comes from its flag (which clap fills from
    /// the environment when the flag is absent, and has already checked, naming the flag or
    /// the variable that gave the value); the combination is validated in one place.
    pub fn config(&self, global: &GlobalArgs) -> Result<AbsurdConfig> {
        let queue = match self.queues.as_slice() {
            [] => None,
            [first, ..] => Some(first.clone()),
        };
        let lookup = |name: &str| -> Option<String> {
            match name {
                "ABSURD_ENABLED" => std::env::var(name).ok(),
                "ABSURD_DATABASE_URL" => global.database_url.clone(),
                "ABSURD_QUEUE_NAME" => queue.clone(),
                "ABSURD_DLQ_QUEUE_NAME" => self.dlq_queue.clone(),
                // The typed flags below.
                _ => None,
            }
        };
        let mut config = AbsurdConfig::read(lookup)?;
        let defaults = config.clone();
        config.worker_concurrency = self.concurrency.unwrap_or(defaults.worker_concurrency);
        config.worker_poll_interval = self.poll_interval.unwrap_or(defaults.worker_poll_interval);
        config.task_timeout = self.task_timeout.unwrap_or(defaults.task_timeout);
        config.max_retries = self.max_retries.unwrap_or(defaults.max_retries);
        config.dlq_enabled = self.dlq_enabled.unwrap_or(defaults.dlq_enabled);
        config.validate()?;
        for q in &self.queues {
            crate::config::validate_queue_name("--queue", q)?;
        }
        Ok(config)
    }

    pub fn settings(&self, config: &AbsurdConfig) -> Result<absurd_engine::worker::WorkerSettings> {
        let queues = if self.queues.is_empty() {
            vec![config.queue_name.clone()]
        } else {
            let mut q = self.queues.clone();
            q.dedup();
            q
        };
        if let Some(dlq) = config.dlq_enabled.then_some(&config.dlq_queue_name) {
            if queues.contains(dlq) {
                bail!("invalid ABSURD_DLQ_QUEUE_NAME: {dlq:?} is also a queue this worker claims from");
            }
        }
        Ok(absurd_engine::worker::WorkerSettings {
            queues,
            worker_id: self
                .worker_id
                .clone()
                .filter(|w| !w.trim().is_empty())
                .unwrap_or_else(absurd_engine::worker::default_worker_id),
            concurrency: config.worker_concurrency as usize,
            poll_interval: config.worker_poll_interval,
            claim_timeout: self.claim_timeout,
            task_timeout: config.task_timeout,
            fail_unknown: self.fail_unknown,
            shutdown_grace: self.shutdown_grace,
            dlq: config.dlq_enabled.then(|| config.dlq_queue_name.clone()),
            dlq_sweep_interval: Duration::from_secs(5),
            default_max_attempts: config.default_max_attempts(),
            // The [sandbox] limits max_checkpoint_bytes, max_checkpoint_total_bytes and
            // max_event_payload_bytes, once configurable.
        })
    }
}
