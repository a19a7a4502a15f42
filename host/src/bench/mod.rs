//! `absurd-host bench`: the benchmark suite. It prints figures; it asserts nothing.
//!
//! Each scenario module measures one thing against a real PostgreSQL server (every
//! measurement in a fresh database of its own), with real `absurd-host worker` processes and
//! real components, and returns [`report::Figure`]s:
//!
//! * [`throughput`]: end-to-end drains (wasm and builtin, one and two processes), spawning,
//!   claiming with a backlog, and the Python reference worker on the same server;
//! * [`python`]: Python guests (`absurd-host build-py`): first run, warm run, drain against
//!   the reference worker, RSS with 256 in flight;
//! * [`latency`]: pickup latency of an idle worker;
//! * [`pgcost`]: Postgres backend CPU per task, our schema against the upstream one;
//! * [`memory`]: worker RSS with many tasks in flight, and its drift over many tasks;
//! * [`pool`]: many worker processes on one database, straight and through PgBouncer:
//!   tasks/s and the PostgreSQL connections they hold;
//! * [`sandbox`]: per-run sandbox overhead, component load time, epoch and fuel cost, and
//!   timeout precision (in this process, no database);
//! * [`workflow`]: a chain of five no-op stages run by the workflow component, spawn to
//!   result, and how soon a fan-out's parent is woken after its last child.
//!
//! [`report`] prints a table per scenario as it finishes and, as the last line of output, one
//! JSON object with every figure.

pub mod env;
pub mod latency;
pub mod memory;
pub mod pgcost;
pub mod pool;
pub mod python;
pub mod report;
pub mod sandbox;
pub mod throughput;
pub mod workflow;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::args::GlobalArgs;
use report::{Figure, Target};

/// Options of `absurd-host bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A short run (small task counts, one repetition): what CI runs. The figures are printed
    /// but are too small to compare with the targets.
    #[arg(long)]
    pub quick: bool,
    /// Scenarios to run, comma-separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SCENARIO")]
    pub only: Vec<Scenario>,
    /// Repetitions of each measurement; figures are medians [default: 3, or 1 with --quick].
    #[arg(long, value_name = "N")]
    pub reps: Option<usize>,
    /// Tasks per end-to-end drain [default: 20000, or 2000 with --quick].
    #[arg(long, value_name = "N")]
    pub tasks: Option<usize>,
    /// Directory with the example components (echo.wasm, zoo.wasm, noop.wasm, workflow.wasm,
    /// fanout.wasm), as built by
    /// scripts/build-examples [default: ~/.cache/absurd-host/components].
    #[arg(long, value_name = "DIR")]
    pub components: Option<PathBuf>,
    /// The Python virtualenv with absurd-sdk and absurdctl 0.5.1 (made by scripts/setup-python),
    /// for the reference worker, the Python spawner and the upstream schema [default: .venv in
    /// the repository]. Without it those measurements are skipped.
    #[arg(long, value_name = "DIR")]
    pub venv: Option<PathBuf>,
    /// Where the private PostgreSQL cluster lives when no --database-url is given.
    #[arg(long, value_name = "DIR", default_value = ".absurd/bench-pgdata")]
    pub data_dir: PathBuf,
}

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// End-to-end throughput of our worker (wasm echo, builtin no-op; 1 and 2 processes).
    E2e,
    /// The Python absurd-sdk worker on the same workload, and the ratio to ours.
    Reference,
    /// Python guests (built with build-py), in this process: first run with a cold and a warm
    /// precompile cache, warm run p50.
    PythonRun,
    /// Python guests end to end: one worker's drain, against the reference worker's best.
    PythonE2e,
    /// Python guests: worker RSS with 256 in flight.
    PythonMemory,
    /// Spawning through our client, one at a time and batched.
    Spawn,
    /// Spawn-to-start latency of an idle worker.
    Pickup,
    /// Postgres backend CPU per task, our schema and the upstream one.
    PgCost,
    /// Claim cost and throughput with 1k/10k/100k tasks waiting.
    Backlog,
    /// Worker RSS with many tasks in flight, and its drift.
    Memory,
    /// 1, 4 and 16 worker processes (1 and 4 with --quick), straight and through PgBouncer in
    /// transaction mode: tasks/s and peak PostgreSQL connections.
    Pool,
    /// Per-run sandbox overhead, load time, epoch/fuel cost, timeout precision.
    Sandbox,
    /// A workflow of five chained no-op stages, spawn to result; a fan-out's fan-in wake-up.
    Workflow,
}

/// What every scenario needs to know.
pub struct Plan {
    pub quick: bool,
    pub reps: usize,
    pub tasks: usize,
    pub repo: PathBuf,
    pub config: PathBuf,
    pub components: PathBuf,
    pub has_wasm_noop: bool,
    pub has_zoo: bool,
}

fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    if cwd.join("bench/python").is_dir() {
        return cwd;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    built.canonicalize().unwrap_or(cwd)
}

fn default_components() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("."));
    std::env::var_os("ABSURD_COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("absurd-host/components"))
}

/// Runs the benchmark; returns whether every scenario ran.
pub async fn run(global: &GlobalArgs, args: &BenchArgs) -> Result<bool> {
    let repo = repo_root();
    let components = args.components.clone().unwrap_or_else(default_components);
    // Removed when dropped, also when a step below fails.
    let scratch = tempfile::Builder::new()
        .prefix("absurd-bench-")
        .tempdir()
        .context("creating the benchmark's scratch directory")?;
    let plan = Plan {
        quick: args.quick,
        reps: args.reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        tasks: args
            .tasks
            .unwrap_or(if args.quick { 2000 } else { 20_000 })
            .max(100),
        config: env::write_config(scratch.path(), &components)?,
        has_wasm_noop: components.join("noop.wasm").is_file(),
        has_zoo: components.join("zoo.wasm").is_file(),
        repo,
        components,
    };
    let venv = args.venv.clone().unwrap_or_else(|| plan.repo.join(".venv"));
    let python = Some(venv.join("bin/python")).filter(|p| p.is_file());
    let absurdctl = Some(venv.join("bin/absurdctl")).filter(|p| p.is_file());
    if python.is_none() {
        println!(
            "note: no Python venv at {} (scripts/setup-python makes it): the reference worker, \
             the Python spawner and the upstream schema are skipped",
            venv.display()
        );
    }

    let db = crate::devmode::DevDatabase::open(global, Some(&args.data_dir)).await?;
    let server = env::Server::connect(&db.url).await?;
    let meta = machine(&server, &plan).await;
    println!(
        "absurd-host bench{}",
        if plan.quick { " --quick" } else { "" }
    );
    println!("machine: {}", meta["machine"]);
    println!(
        "postgres {} at {}; {} repetition(s), {} tasks per drain",
        meta["postgres"].as_str().unwrap_or("?"),
        db.describe(),
        plan.reps,
        plan.tasks
    );

    let wanted = |s: Scenario| args.only.is_empty() || args.only.contains(&s);
    let mut all: Vec<Figure> = Vec::new();
    let mut failed = Vec::new();
    let mut ours = (f64::NAN, f64::NAN);
    let mut theirs = (f64::NAN, f64::NAN);
    for scenario in Scenario::value_variants() {
        if !wanted(*scenario) {
            continue;
        }
        let name = scenario
            .to_possible_value()
            .expect("named")
            .get_name()
            .to_string();
        let started = Instant::now();
        let result = match scenario {
            Scenario::E2e => throughput::e2e(&server, &plan).await.map(|(f, one, two)| {
                ours = (one, two);
                f
            }),
            Scenario::Reference => match &python {
                Some(py) => throughput::reference(&server, &plan, py, absurdctl.as_deref())
                    .await
                    .map(|(f, one, two)| {
                        theirs = (one, two);
                        f
                    }),
                None => Ok(Vec::new()),
            },
            Scenario::PythonRun => python::in_process(&plan).await,
            Scenario::PythonE2e => python::e2e(&server, &plan, theirs.0).await,
            Scenario::PythonMemory => python::memory(&server, &plan).await,
            Scenario::Spawn => throughput::spawn(&server, &plan).await,
            Scenario::Pickup => latency::pickup(&server, &plan, python.as_deref()).await,
            Scenario::PgCost => pgcost::pg_cost(&server, &plan, absurdctl.as_deref()).await,
            Scenario::Backlog => throughput::backlog(&server, &plan).await,
            Scenario::Memory => memory::memory(&server, &plan).await,
            Scenario::Pool => pool::pool(&server, &plan, &db.url).await,
            Scenario::Workflow => workflow::workflow(&server, &plan).await,
            Scenario::Sandbox => {
                sandbox::run(&sandbox::SandboxBenchOptions {
                    components_dir: plan.components.clone(),
                    quick: plan.quick,
                    reps: plan.reps,
                })
                .await
            }
        };
        match result {
            Ok(mut figures) => {
                if *scenario == Scenario::Reference && !figures.is_empty() {
                    figures.push(
                        Figure::new("reference", "ratio.1proc", ours.0 / theirs.0, "x")
                            .target(Target::AtLeast(10.0))
                            .note("our wasm echo drain / the reference's best, one process each"),
                    );
                    figures.push(
                        Figure::new("reference", "ratio.2proc", ours.1 / theirs.1, "x")
                            .target(Target::AtLeast(10.0))
                            .note("two processes each"),
                    );
                }
                let title = format!("{name} ({:.0} s)", started.elapsed().as_secs_f64());
                print!("{}", report::table(&title, &figures));
                all.extend(figures);
            }
            Err(e) => {
                println!("\n== {name}: FAILED: {e:#}");
                failed.push(name);
            }
        }
    }
    drop(scratch);
    drop(server);
    db.shutdown().await;

    let missed: Vec<String> = all
        .iter()
        .filter(|f| {
            f.target
                .is_some_and(|t| !f.value.is_finite() || !t.met(f.value))
        })
        .map(Figure::key)
        .collect();
    println!(
        "\nsummary: {} figures, {} with targets missed{}{}",
        all.len(),
        missed.len(),
        if missed.is_empty() {
            String::new()
        } else {
            format!(" ({})", missed.join(", "))
        },
        if failed.is_empty() {
            String::new()
        } else {
            format!("; scenarios failed: {}", failed.join(", "))
        }
    );
    let mut meta = meta;
    meta["failed_scenarios"] = json!(failed);
    println!("{}", report::json_line(&all, meta));
    Ok(failed.is_empty())
}

/// The machine and versions, for the record.
async fn machine(server: &env::Server, plan: &Plan) -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    json!({
        "machine": format!("{model}, {cores} CPUs, {mem_gib:.0} GiB"),
        "postgres": server.version().await,
        "absurd_host": env!("CARGO_PKG_VERSION"),
        "quick": plan.quick,
        "reps": plan.reps,
        "tasks": plan.tasks,
        "components": plan.components.display().to_string(),
    })
}
