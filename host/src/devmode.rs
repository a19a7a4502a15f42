//! `absurd-host dev` and `absurd-host demo`: a whole host in one command, for a first run.
//!
//! Without a database URL (`--database-url` / `ABSURD_DATABASE_URL`) both start a private
//! PostgreSQL cluster ([`crate::embedded`]) in `./.absurd/pgdata` (or `--data-dir`), migrate
//! it, create the queue and run the worker with the task types of `--config` (default
//! `examples/absurd-host.toml` when it exists). The cluster is stopped on exit; the next run
//! reuses its data. With a URL they use that database instead and start nothing.
//!
//! `demo` then spawns a small showcase through the client (an echo task, a durable task that
//! sleeps and is woken by an event, a two-task pipeline chain, and misbehaving guests the
//! sandbox contains), waits for them and prints a summary table.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::ApiSettings;
use crate::args::{GlobalArgs, WorkerArgs};
use crate::embedded::{EmbeddedPostgres, StopHandle};
use absurd_client::{Client, RetryStrategy, SpawnOptions, State, TaskDetails};
use absurd_engine::dispatch::Registry;
use absurd_engine::execute::FailureName;
use absurd_engine::metrics::Counters;
use absurd_engine::worker::WorkerSettings;

/// Where the private cluster lives when `--data-dir` is not given (relative to the working
/// directory).
pub const DEFAULT_DATA_DIR: &str = ".absurd/pgdata";
/// The host configuration used when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "examples/absurd-host.toml";
/// The queue of the demo when none is given.
pub const DEMO_QUEUE: &str = "absurd-demo";

/// Options of `absurd-host dev`: the worker's, plus where the private cluster lives.
#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Data directory of the private PostgreSQL cluster, used when no database URL is given
    /// [default: ./.absurd/pgdata].
    #[arg(long, env = "ABSURD_DEV_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Options of `absurd-host demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub dev: DevArgs,
    /// Keep the host running after the summary (until Ctrl-C), to explore the tasks.
    #[arg(long)]
    pub stay: bool,
    /// Give up waiting for the showcase tasks after this many seconds.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub deadline: f64,
}

// ---- the database ----------------------------------------------------------------------------

/// The database of a dev host: the given URL, or a private cluster.
pub struct DevDatabase {
    pub url: String,
    pub embedded: Option<EmbeddedPostgres>,
}

impl DevDatabase {
    /// Opens the database named by `--database-url` / `ABSURD_DATABASE_URL`, or starts the
    /// private cluster in `data_dir` (default [`DEFAULT_DATA_DIR`]).
    pub async fn open(global: &GlobalArgs, data_dir: Option<&Path>) -> Result<DevDatabase> {
        if let Some(url) = global
            .database_url
            .as_ref()
            .filter(|u| !u.trim().is_empty())
        {
            return Ok(DevDatabase {
                url: url.clone(),
                embedded: None,
            });
        }
        let dir = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir))
            .await
            .context("the PostgreSQL start-up thread failed")?
            .context("cannot start the private PostgreSQL cluster (or give --database-url)")?;
        Ok(DevDatabase {
            url: pg.url(),
            embedded: Some(pg),
        })
    }

    pub fn stop_handle(&self) -> Option<StopHandle> {
        self.embedded.as_ref().map(EmbeddedPostgres::stop_handle)
    }

    /// One line describing the database.
    pub fn describe(&self) -> String {
        match &self.embedded {
            Some(pg) => format!(
                "{}  (private PostgreSQL {} in {}; Unix socket only, for your user alone)",
                pg.url(),
                pg.binaries().version,
                pg.data_dir().display()
            ),
            None => absurd_client::db::redact_url(&self.url),
        }
    }

    /// Stops the private cluster, if any.
    pub async fn shutdown(self) {
        if let Some(pg) = self.embedded {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = pg.stop() {
                    tracing::warn!(error = %e, "cannot stop the private PostgreSQL cluster");
                }
                drop(pg);
            })
            .await;
        }
    }
}

// ---- the host --------------------------------------------------------------------------------

/// Everything a dev host runs with.
pub struct DevHost {
    pub db: DevDatabase,
    pub client: Client,
    pub registry: Registry,
    pub settings: WorkerSettings,
    pub config_path: Option<PathBuf>,
}

/// `--config`, else [`DEFAULT_CONFIG`] when it exists.
pub fn config_path(args: &WorkerArgs) -> Option<PathBuf> {
    args.config
        .clone()
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.is_file()))
}

fn load_registry(path: Option<&PathBuf>) -> Result<Registry> {
    Registry::load(path).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("cannot read component") {
            anyhow::anyhow!(
                "{msg}\n  hint: build the example components first: scripts/build-examples --examples \
                 (scripts/demo does this)"
            )
        } else {
            anyhow::anyhow!(msg)
        }
    })
}

impl DevHost {
    /// Opens (or starts) the database, migrates it, creates the queues and loads the task
    /// types. `queue_override`: the queue to use when none was configured (the demo's own).
    pub async fn prepare(
        global: &GlobalArgs,
        args: &DevArgs,
        queue_override: Option<&str>,
        stop_slot: &StopSlot,
    ) -> Result<DevHost> {
        let absurd = args.worker.config(global)?;
        let mut settings = args.worker.settings(&absurd)?;
        if let Some(q) = queue_override.filter(|_| args.worker.queues.is_empty()) {
            settings.queues = vec![q.to_string()];
            if args.worker.dlq_queue.is_none() {
                settings.dlq = settings.dlq.map(|_| format!("{q}-dlq"));
            }
        }
        let config_path = config_path(&args.worker);
        let registry = load_registry(config_path.as_ref())?;

        let db = DevDatabase::open(global, args.data_dir.as_deref()).await?;
        stop_slot.set(db.stop_handle());
        let redacted = absurd_client::db::redact_url(&db.url);
        let pool = absurd_client::db::connect(&db.url, (settings.concurrency as u32 + 4).min(64))
            .await
            .with_context(|| format!("cannot connect to {redacted}"))?;
        match absurd_client::db::migrate(&pool).await {
            Ok(report) => {
                for (v, d) in &report.applied {
                    tracing::info!(version = v, description = %d, "applied migration");
                }
            }
            Err(absurd_client::db::MigrateError::ForeignSchema { version }) => {
                tracing::warn!(%version, "the absurd schema was installed by another tool; using it as it is");
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot migrate {redacted}")))
            }
        }
        let client = Client::new(pool);
        for q in &settings.queues {
            client.ensure_queue(q).await?;
        }
        Ok(DevHost {
            db,
            client,
            registry,
            settings,
            config_path,
        })
    }

    /// The task types as `name (kind)`.
    pub fn task_types(&self) -> String {
        let names = self.registry.names();
        if names.is_empty() {
            return "none (give --config PATH to declare task types)".into();
        }
        names
            .iter()
            .map(|n| {
                format!(
                    "{n} ({})",
                    self.registry
                        .get(n)
                        .map(|t| t.handler.kind().as_str())
                        .unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn banner(&self, title: &str, api: &ApiStatus) -> String {
        let mut s = format!("{title}\n");
        s.push_str(&format!("  database   {}\n", self.db.describe()));
        s.push_str(&format!(
            "  queue      {}\n",
            self.settings.queues.join(", ")
        ));
        if let Some(c) = &self.config_path {
            s.push_str(&format!("  config     {}\n", c.display()));
        }
        s.push_str(&format!("  task types {}\n", self.task_types()));
        s.push_str(&format!("  API        {}\n", api.describe()));
        s
    }
}

// ---- the API ---------------------------------------------------------------------------------

/// Whether the HTTP API runs next to the worker.
pub enum ApiStatus {
    Serving(String),
    Unavailable(String),
}

impl ApiStatus {
    fn describe(&self) -> String {
        match self {
            ApiStatus::Serving(url) => url.clone(),
            ApiStatus::Unavailable(why) => format!("not available ({why})"),
        }
    }
}

/// Starts the HTTP API next to the worker: on `--listen` / `ABSURD_API_LISTEN`, else on
/// 127.0.0.1:8080, or on a free loopback port when 8080 is taken. It shares the worker's
/// counters and stops with `shutdown`.
async fn start_api(
    host: &DevHost,
    args: &DevArgs,
    global: &GlobalArgs,
    counters: &Counters,
    shutdown: &CancellationToken,
) -> ApiStatus {
    let config = match args.worker.config(global) {
        Ok(c) => c,
        Err(e) => return ApiStatus::Unavailable(e.to_string()),
    };
    let token = std::env::var("ABSURD_API_TOKEN").ok();
    let mut settings =
        match ApiSettings::new(args.worker.api_args.listen.as_deref(), token, &config) {
            Ok(s) => s,
            Err(e) => return ApiStatus::Unavailable(format!("{e:#}")),
        };
    settings.default_queue = host.settings.queues[0].clone();
    match crate::workflow::Workflows::load(host.config_path.as_deref()) {
        Ok(w) => settings.workflows = std::sync::Arc::new(w),
        Err(e) => return ApiStatus::Unavailable(format!("{e:#}")),
    }
    settings
        .extra_pools
        .push(("worker".into(), host.client.pool().clone()));
    let listener = match crate::api::bind(&settings).await {
        Ok(l) => l,
        Err(e) if args.worker.api_args.listen.is_none() => {
            // The default port is busy (another dev host?): any free loopback port will do.
            tracing::info!(error = %e, "the default API port is taken; using a free one");
            settings.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            match crate::api::bind(&settings).await {
                Ok(l) => l,
                Err(e) => return ApiStatus::Unavailable(format!("{e:#}")),
            }
        }
        Err(e) => return ApiStatus::Unavailable(format!("{e:#}")),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return ApiStatus::Unavailable(e.to_string()),
    };
    let pool = match crate::api::lazy_pool(&host.db.url, settings.statement_timeout) {
        Ok(p) => p,
        Err(e) => return ApiStatus::Unavailable(format!("{e:#}")),
    };
    let shutdown = shutdown.clone();
    let counters = counters.clone();
    tokio::spawn(async move {
        if let Err(e) =
            crate::api::serve_on(listener, Client::new(pool), settings, counters, shutdown).await
        {
            tracing::error!(error = %format!("{e:#}"), "the HTTP API stopped");
        }
    });
    ApiStatus::Serving(format!("http://{addr}"))
}

// ---- signals ---------------------------------------------------------------------------------

/// Where the signal handler finds the cluster to stop on a second signal.
#[derive(Clone, Default)]
pub struct StopSlot(Arc<Mutex<Option<StopHandle>>>);

impl StopSlot {
    fn set(&self, h: Option<StopHandle>) {
        *self.0.lock().unwrap() = h;
    }
    fn stop(&self) {
        if let Some(h) = self.0.lock().unwrap().take() {
            h.stop();
        }
    }
}

/// First SIGINT/SIGTERM: drain and stop cleanly. Second: stop the cluster and exit at once.
fn install_signals(shutdown: CancellationToken, slot: StopSlot) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("install a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install a SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown requested; draining (send the signal again to exit at once)");
        shutdown.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!(
            "second signal; stopping PostgreSQL and exiting without waiting for running tasks"
        );
        let _ = tokio::task::spawn_blocking(move || slot.stop()).await;
        std::process::exit(130);
    });
    Ok(())
}

// ---- dev -------------------------------------------------------------------------------------

/// `absurd-host dev`: runs until SIGINT/SIGTERM, then drains the worker and stops the cluster.
pub async fn run_dev(global: &GlobalArgs, args: &DevArgs) -> Result<()> {
    let shutdown = CancellationToken::new();
    let slot = StopSlot::default();
    install_signals(shutdown.clone(), slot.clone())?;
    let host = DevHost::prepare(global, args, None, &slot).await?;
    if host.registry.is_empty() {
        tracing::warn!("no task types are configured (see --config); every task will be deferred for other workers");
    }
    let counters = Counters::default();
    let api = start_api(&host, args, global, &counters, &shutdown).await;
    eprintln!("{}", host.banner("absurd-host dev", &api));
    eprintln!("Press Ctrl-C to stop (PostgreSQL is stopped too; its data stays for the next run).");
    let result = absurd_engine::worker::run_with_counters(
        host.client.clone(),
        host.registry.clone(),
        host.settings.clone(),
        counters,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    host.client.pool().close().await;
    host.db.shutdown().await;
    result.map(|_| ())
}

// ---- demo ------------------------------------------------------------------------------------

/// What a showcase task should end as.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Completed,
    /// Failed with this failure name (`$Timeout`, `$MemoryLimit`, ...).
    Failed(FailureName),
}

/// One row of the summary.
struct Row {
    label: String,
    task_name: String,
    task_id: Uuid,
    expect: Expect,
    note: String,
}

/// How a showcase task ended.
struct Ended {
    state: String,
    cause: Option<(String, String)>,
    result: Option<Value>,
    duration: Option<Duration>,
    attempts: i32,
}

fn failure_cause(reason: &Value) -> (String, String) {
    let name = reason
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("error")
        .to_string();
    let message = reason
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| reason.to_string());
    (name, message)
}

fn run_span(d: &TaskDetails) -> Option<Duration> {
    let start: DateTime<Utc> = d
        .summary
        .first_started_at
        .or_else(|| d.runs.iter().filter_map(|r| r.started_at).min())?;
    let end: DateTime<Utc> = d
        .runs
        .iter()
        .filter_map(|r| r.completed_at.or(r.failed_at))
        .max()?;
    (end - start).to_std().ok()
}

async fn wait_ended(client: &Client, queue: &str, id: Uuid, until: Instant) -> Result<Ended> {
    let left = until
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10));
    let r = match client.await_result(queue, id, left).await {
        Ok(r) => r,
        Err(absurd_client::ClientError::Timeout(_)) => {
            let state = client
                .task_result(queue, id)
                .await?
                .map(|r| r.state.as_str().to_string())
                .unwrap_or_else(|| "missing".into());
            return Ok(Ended {
                state: format!("still {state} at the deadline"),
                cause: None,
                result: None,
                duration: None,
                attempts: 0,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let details = client.get_task(queue, id).await?;
    Ok(Ended {
        state: r.state.as_str().to_string(),
        cause: r.failure_reason.as_ref().map(failure_cause),
        result: r.result,
        duration: details.as_ref().and_then(run_span),
        attempts: details.map(|d| d.summary.attempts).unwrap_or(0),
    })
}

fn clip(s: &str, n: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!(
            "{}…",
            one_line
                .chars()
                .take(n.saturating_sub(1))
                .collect::<String>()
        )
    }
}

fn fmt_duration(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d < Duration::from_secs(1) => format!("{} ms", d.as_millis()),
        Some(d) => format!("{:.1} s", d.as_secs_f64()),
    }
}

const REQUIRED: &[&str] = &[
    "echo",
    "durable",
    "calibration-plan",
    "calibration-solve",
    "zoo",
];

/// `absurd-host demo`: `Ok(())` when every showcase task ended as expected.
pub async fn run_demo(global: &GlobalArgs, args: &DemoArgs) -> Result<()> {
    let shutdown = CancellationToken::new();
    let slot = StopSlot::default();
    install_signals(shutdown.clone(), slot.clone())?;
    let started = Instant::now();
    let deadline = Duration::try_from_secs_f64(args.deadline)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--deadline must be a positive number of seconds")?;

    if config_path(&args.dev.worker).is_none() {
        bail!(
            "no host configuration: run the demo from the repository root (scripts/demo does), or \
             give --config examples/absurd-host.toml"
        );
    }
    if global.database_url.is_none() {
        let dir = args
            .dev
            .data_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DATA_DIR));
        println!(
            "Starting a private PostgreSQL cluster in {}…",
            dir.display()
        );
    }
    let host = DevHost::prepare(global, &args.dev, Some(DEMO_QUEUE), &slot).await?;
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|n| host.registry.get(n).is_none())
        .collect();
    if !missing.is_empty() {
        host.db.shutdown().await;
        bail!(
            "the configuration {} lacks the demo's task types {}; use examples/absurd-host.toml",
            host.config_path
                .as_deref()
                .unwrap_or(Path::new("?"))
                .display(),
            missing.join(", ")
        );
    }
    let queue = host.settings.queues[0].clone();
    let counters = Counters::default();
    let worker = tokio::spawn(absurd_engine::worker::run_with_counters(
        host.client.clone(),
        host.registry.clone(),
        host.settings.clone(),
        counters.clone(),
        shutdown.clone(),
    ));
    let api = start_api(&host, &args.dev, global, &counters, &shutdown).await;
    println!("{}", host.banner("absurd-host demo", &api));
    println!(
        "Spawning the showcase (echo, durable, calibration-plan → calibration-solve, 2 × zoo) and \
         waiting for it (at most {:.0} s)…\n",
        deadline.as_secs_f64()
    );

    // Ctrl-C while waiting: stop at once (the tasks stay in the queue).
    let outcome = tokio::select! {
        o = showcase(&host, &queue, started + deadline, &shutdown) => o,
        _ = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted before the showcase finished")),
    };

    let mut result = match outcome {
        Ok(rows) => {
            print_summary(&host, &queue, &rows);
            let bad = rows.iter().filter(|(_, ok, _)| !ok).count();
            println!();
            let verdict = if bad == 0 {
                println!(
                    "All {} tasks ended as expected in {:.1} s: the misbehaving guests failed alone, \
                     the host and the other tasks carried on.",
                    rows.len(),
                    started.elapsed().as_secs_f64()
                );
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{bad} of {} demo tasks did not end as expected (see the table)",
                    rows.len()
                ))
            };
            print_explore(&host, &queue, &api, args.stay);
            verdict
        }
        Err(e) => Err(e),
    };

    if args.stay && result.is_ok() && !shutdown.is_cancelled() {
        println!("\nStill running (--stay): the worker keeps serving queue {queue}. Press Ctrl-C to stop.");
        shutdown.cancelled().await;
    }
    shutdown.cancel();
    let grace = host.settings.shutdown_grace + Duration::from_secs(10);
    match tokio::time::timeout(grace, worker).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) if result.is_ok() => result = Err(e.context("the worker failed")),
        Ok(Err(e)) if result.is_ok() => result = Err(anyhow::anyhow!("the worker panicked: {e}")),
        Err(_) => tracing::warn!("the worker did not stop in time"),
        _ => {}
    }
    host.client.pool().close().await;
    host.db.shutdown().await;
    result
}

fn print_explore(host: &DevHost, queue: &str, api: &ApiStatus, stay: bool) {
    println!("\nExplore:");
    match api {
        ApiStatus::Serving(url) => {
            let when = if stay {
                ""
            } else {
                "  (up while the demo runs: add --stay to keep it)"
            };
            println!("  API  {url}/api/absurd/tasks?queue_name={queue}{when}");
        }
        ApiStatus::Unavailable(why) => println!("  API  not available ({why})"),
    }
    match &host.db.embedded {
        // The cluster stops with the demo; `absurd-host dev` brings it back with the data.
        Some(_) if !stay => println!(
            "  CLI  absurd-host dev  (reuses this data and prints its URL), then in another terminal:  absurd-host task list -q {queue} --database-url <that URL>"
        ),
        _ => println!(
            "  CLI  absurd-host task list -q {queue} --database-url {}",
            absurd_client::db::redact_url(&host.db.url)
        ),
    }
}

async fn spawn(
    client: &Client,
    queue: &str,
    name: &str,
    params: Value,
    max_attempts: Option<i32>,
) -> Result<Uuid> {
    let opts = SpawnOptions {
        max_attempts,
        retry_strategy: Some(RetryStrategy::fixed(1.0)),
        ..Default::default()
    };
    let s = client
        .spawn(queue, name, &params, &opts)
        .await
        .with_context(|| format!("cannot spawn {name}"))?;
    Ok(s.task_id)
}

/// Spawns the showcase and waits for it. Returns `(row, as expected, line)` per task.
async fn showcase(
    host: &DevHost,
    queue: &str,
    until: Instant,
    shutdown: &CancellationToken,
) -> Result<Vec<(Row, bool, Ended)>> {
    let client = &host.client;
    let tag = &Uuid::new_v4().simple().to_string()[..8];
    let event = format!("demo-approval-{tag}");
    let mut rows = Vec::new();

    let echo = spawn(
        client,
        queue,
        "echo",
        json!({"hello": "world", "from": "absurd-host demo"}),
        Some(2),
    )
    .await?;
    rows.push(Row {
        label: "echo".into(),
        task_name: "echo".into(),
        task_id: echo,
        expect: Expect::Completed,
        note: "returns its params".into(),
    });
    let durable = spawn(
        client,
        queue,
        "durable",
        json!({"input": "demo", "sleep_seconds": 1, "event": event, "timeout_seconds": 120}),
        Some(2),
    )
    .await?;
    rows.push(Row {
        label: "durable (sleep + event)".into(),
        task_name: "durable".into(),
        task_id: durable,
        expect: Expect::Completed,
        note: format!("slept 1 s, woken by event {event}"),
    });
    let plan = spawn(
        client,
        queue,
        "calibration-plan",
        json!({"inputs": {"ms_path": "/data/demo/2025-01-01T00:00:00.ms"}, "chain_name": "calibrator"}),
        Some(2),
    )
    .await?;
    let loop_id = spawn(
        client,
        queue,
        "zoo",
        json!({"mode": "infinite-loop"}),
        Some(1),
    )
    .await?;
    let bomb_id = spawn(
        client,
        queue,
        "zoo",
        json!({"mode": "memory-bomb"}),
        Some(1),
    )
    .await?;

    // The durable task sleeps, then waits for the event: emit it once it waits.
    let mut emitted = false;
    while !emitted && Instant::now() < until && !shutdown.is_cancelled() {
        let waiting = client
            .get_task(queue, durable)
            .await?
            .map(|d| d.waits.iter().any(|w| w.event_name == event) || d.summary.state.is_terminal())
            .unwrap_or(false);
        if waiting {
            client
                .emit_event(
                    queue,
                    &event,
                    Some(&json!({"approved_by": "absurd-host demo"})),
                )
                .await?;
            emitted = true;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The pipeline: calibration-plan spawns calibration-solve.
    let plan_end = wait_ended(client, queue, plan, until).await?;
    let next_id = plan_end
        .result
        .as_ref()
        .and_then(|r| r.get("chain_next_task_id"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Uuid>().ok());
    let plan_row = Row {
        label: "calibration-plan".into(),
        task_name: "calibration-plan".into(),
        task_id: plan,
        expect: Expect::Completed,
        note: "spawned calibration-solve".into(),
    };
    let plan_ok = plan_end.state == State::Completed.as_str() && next_id.is_some();

    let mut ended = Vec::new();
    for row in rows {
        let e = wait_ended(client, queue, row.task_id, until).await?;
        let ok = matches_expectation(&row.expect, &e);
        ended.push((row, ok, e));
    }
    ended.push((plan_row, plan_ok, plan_end));
    match next_id {
        Some(id) => {
            let e = wait_ended(client, queue, id, until).await?;
            let row = Row {
                label: "calibration-solve".into(),
                task_name: "calibration-solve".into(),
                task_id: id,
                expect: Expect::Completed,
                note: "chained from calibration-plan".into(),
            };
            let ok = matches_expectation(&row.expect, &e);
            ended.push((row, ok, e));
        }
        None => tracing::warn!("calibration-plan did not report the task it chained to"),
    }
    for (label, id, expect, note) in [
        (
            "zoo infinite-loop",
            loop_id,
            Expect::Failed(FailureName::Timeout),
            "spins forever; stopped at the type's 5 s timeout",
        ),
        (
            "zoo memory-bomb",
            bomb_id,
            Expect::Failed(FailureName::MemoryLimit),
            "grows memory without end; capped at 64 MiB",
        ),
    ] {
        let e = wait_ended(client, queue, id, until).await?;
        let row = Row {
            label: label.into(),
            task_name: "zoo".into(),
            task_id: id,
            expect,
            note: note.into(),
        };
        let ok = matches_expectation(&row.expect, &e);
        ended.push((row, ok, e));
    }
    Ok(ended)
}

fn matches_expectation(expect: &Expect, e: &Ended) -> bool {
    match expect {
        Expect::Completed => e.state == "completed",
        Expect::Failed(name) => {
            e.state == "failed" && e.cause.as_ref().is_some_and(|(n, _)| n == name)
        }
    }
}

fn print_summary(host: &DevHost, queue: &str, rows: &[(Row, bool, Ended)]) {
    println!("Showcase on queue {queue}:\n");
    let header = ["", "task", "handler", "outcome", "duration", "attempts"];
    let mut table: Vec<[String; 6]> = vec![header.map(String::from)];
    for (row, ok, e) in rows {
        let kind = host
            .registry
            .get(&row.task_name)
            .map(|t| t.handler.kind().as_str())
            .unwrap_or("?");
        let outcome = match (&e.cause, e.state.as_str()) {
            (Some((name, msg)), "failed") => format!("failed: {name} ({})", clip(msg, 48)),
            (_, "completed") => format!("completed: {}", row.note),
            (_, other) => other.to_string(),
        };
        let mark = if *ok {
            "✓".to_string()
        } else {
            match &row.expect {
                Expect::Completed => "✗ expected completed".to_string(),
                Expect::Failed(n) => format!("✗ expected {n}"),
            }
        };
        table.push([
            mark,
            row.label.clone(),
            kind.to_string(),
            outcome,
            fmt_duration(e.duration),
            e.attempts.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in &table {
        let mut line = String::from(" ");
        for (i, cell) in r.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            line.push(' ');
            line.push_str(cell);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(pad + 1));
            }
        }
        println!("{}", line.trim_end());
    }
}
