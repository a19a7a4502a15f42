//! The sandbox part of the benchmark (scenarios `sandbox` and `timeout`).
//!
//! Everything runs in this process against the example components (`scripts/build-examples`);
//! no database is needed (the guests make no durable calls, so the client never connects).
//!
//! * **Per-run overhead**: what a wasm run costs the host beyond the guest's own work:
//!   `WasmHandler::run` = Store + WASI context + instantiate + call + drop, timed one run at
//!   a time, for the minimal guest `noop` (params passed through unparsed) and for `echo`
//!   (params parsed and re-serialised with serde_json), with the pooling allocator and with
//!   on-demand allocation. p50 and p99 of each repetition; the figure is their median.
//! * **Load**: a precompiled component from the on-disk cache, checked against the linker
//!   (`Sandbox::load`): what the host does per task type when it starts.
//! * **CPU**: a CPU-bound guest (`zoo`, mode `compute`: xorshift rounds, no host calls) on
//!   three engines: no interruption at all, epochs (the default), and fuel. The overheads are
//!   relative to the first.
//! * **Timeout precision**: when a run actually stops, minus its deadline: a spinning guest
//!   (the epoch interrupt), a guest blocked in a WASI poll (stopped by the worker's race,
//!   emulated here), and a native program that ignores SIGTERM (the native handler's hard
//!   stop at the deadline).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};

use super::report::{median, quantile, spread, Figure, Target};
use absurd_client::{ClaimedRun, Client};
use absurd_engine::execute::wasm::config::{SandboxDefaults, WasmTaskConfig};
use absurd_engine::execute::wasm::{EngineOptions, Sandbox};
use absurd_engine::execute::{ContextSettings, FailureName, Handler, TaskContext, TaskError};

/// What to measure, and how much.
#[derive(Debug, Clone)]
pub struct SandboxBenchOptions {
    /// Where `noop.wasm`, `echo.wasm` and `zoo.wasm` are (`scripts/build-examples` prints it).
    pub components_dir: PathBuf,
    /// Small counts: the whole sandbox part takes seconds, not minutes.
    pub quick: bool,
    /// Repetitions of each measurement (each after its own warm-up); figures are medians.
    pub reps: usize,
}

/// How many of everything, for quick and full runs.
#[derive(Debug, Clone, Copy)]
struct Counts {
    runs: usize,
    warmup: usize,
    loads: usize,
    cpu_runs: usize,
    cpu_iterations: u64,
    timeout_trials: usize,
    wasm_deadline: Duration,
    native_deadline: Duration,
}

impl Counts {
    fn new(quick: bool) -> Counts {
        if quick {
            Counts {
                runs: 400,
                warmup: 100,
                loads: 5,
                cpu_runs: 3,
                cpu_iterations: 2_000_000,
                timeout_trials: 3,
                wasm_deadline: Duration::from_millis(100),
                native_deadline: Duration::from_millis(300),
            }
        } else {
            Counts {
                runs: 20_000,
                warmup: 1_000,
                loads: 30,
                cpu_runs: 10,
                cpu_iterations: 50_000_000,
                timeout_trials: 10,
                wasm_deadline: Duration::from_millis(200),
                native_deadline: Duration::from_millis(500),
            }
        }
    }
}

const SCENARIO: &str = "sandbox";
const TIMEOUT: &str = "timeout";
/// The per-run target for the minimal guest with the pooling allocator.
const TRIVIAL_RUN_TARGET_US: f64 = 25.0;
/// The timeout-precision target (overshoot past the deadline).
const OVERSHOOT_TARGET_MS: f64 = 25.0;

/// Runs the sandbox and timeout measurements; see the module docs.
pub async fn run(opts: &SandboxBenchOptions) -> anyhow::Result<Vec<Figure>> {
    let counts = Counts::new(opts.quick);
    run_with(opts, counts).await
}

async fn run_with(opts: &SandboxBenchOptions, counts: Counts) -> anyhow::Result<Vec<Figure>> {
    let reps = opts.reps.max(1);
    let dir = &opts.components_dir;
    for name in ["noop", "echo", "zoo"] {
        let p = dir.join(format!("{name}.wasm"));
        if !p.is_file() {
            bail!(
                "{} is missing: build the example components with scripts/build-examples",
                p.display()
            );
        }
    }
    let scratch = scratch_dir()?;
    let client = detached_client()?;
    let mut figures = Vec::new();

    // Per-run overhead, and load times from the cache the first engine fills.
    for (alloc, label) in [("pooling", "pooling"), ("on-demand", "on_demand")] {
        let sandbox = sandbox(scratch.path(), alloc, EngineOptions::default())?;
        if alloc == "pooling" && !sandbox.uses_pooling() {
            bail!("the pooling allocator is unavailable on this machine");
        }
        for guest in ["noop", "echo"] {
            let handler = handler(&sandbox, dir, guest)?;
            let mut p50 = Vec::new();
            let mut p99 = Vec::new();
            for _ in 0..reps {
                let t = time_runs(&handler, &client, guest, counts).await?;
                p50.push(quantile(&t, 0.5));
                p99.push(quantile(&t, 0.99));
            }
            let how = format!("Store+instantiate+call+drop, {} runs x {reps}", counts.runs);
            let mut f = Figure::new(
                SCENARIO,
                format!("run.{guest}.{label}.p50"),
                median(&p50),
                "µs",
            )
            .note(format!("{how}; p50 {}", spread(&p50)));
            if guest == "noop" && alloc == "pooling" {
                f = f.target(Target::AtMost(TRIVIAL_RUN_TARGET_US));
            }
            figures.push(f);
            figures.push(
                Figure::new(
                    SCENARIO,
                    format!("run.{guest}.{label}.p99"),
                    median(&p99),
                    "µs",
                )
                .note(format!("p99 {}", spread(&p99))),
            );
        }
        if alloc == "pooling" {
            for guest in ["noop", "echo"] {
                let mut p50 = Vec::new();
                for _ in 0..reps {
                    let mut t = Vec::with_capacity(counts.loads);
                    let _ = handler(&sandbox, dir, guest)?; // warm the page cache
                    for _ in 0..counts.loads {
                        let started = Instant::now();
                        let h = handler(&sandbox, dir, guest)?;
                        t.push(started.elapsed().as_secs_f64() * 1e3);
                        drop(h);
                    }
                    p50.push(quantile(&t, 0.5));
                }
                figures.push(
                    Figure::new(SCENARIO, format!("load.{guest}.p50"), median(&p50), "ms").note(
                        format!(
                            "precompiled, from the on-disk cache, plus linking; p50 {}",
                            spread(&p50)
                        ),
                    ),
                );
            }
        }
    }

    figures.extend(cpu(scratch.path(), dir, &client, counts, reps).await?);
    figures.extend(timeouts(scratch.path(), dir, &client, counts).await?);
    Ok(figures)
}

/// A client whose pool never connects: the benchmark's guests make no durable calls.
pub(super) fn detached_client() -> anyhow::Result<Client> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://bench@127.0.0.1:1/unused")
        .context("a lazy pool")?;
    Ok(Client::new(pool))
}

/// A temporary directory (precompiled cache, native work directories), removed when dropped.
fn scratch_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("absurd-bench-sandbox-")
        .tempdir()
        .context("creating the benchmark's scratch directory")
}

fn defaults(scratch: &Path, allocator: &str) -> anyhow::Result<SandboxDefaults> {
    let table: toml::Table = toml::from_str(&format!(
        "allocator = {allocator:?}\ncache_dir = {:?}",
        scratch.join("precompiled").display().to_string()
    ))?;
    SandboxDefaults::from_table(&table).map_err(|e| anyhow!(e))
}

fn sandbox(scratch: &Path, allocator: &str, engine: EngineOptions) -> anyhow::Result<Arc<Sandbox>> {
    let d = defaults(scratch, allocator)?;
    Ok(Arc::new(
        Sandbox::with_options(d, engine).map_err(|e| anyhow!(e))?,
    ))
}

fn handler(sandbox: &Arc<Sandbox>, dir: &Path, guest: &str) -> anyhow::Result<Arc<dyn Handler>> {
    let table: toml::Table = toml::from_str(&format!(
        "component = {:?}",
        dir.join(format!("{guest}.wasm")).display().to_string()
    ))?;
    let cfg = WasmTaskConfig::from_table("bench", &table, sandbox.defaults(), dir)
        .map_err(|e| anyhow!(e))?;
    let h = sandbox.load(guest, cfg).map_err(|e| anyhow!(e))?;
    Ok(Arc::new(h))
}

/// A sandbox with the default engine options (for the `python` scenario).
pub(super) fn new_sandbox(scratch: &Path, allocator: &str) -> anyhow::Result<Arc<Sandbox>> {
    sandbox(scratch, allocator, EngineOptions::default())
}

/// The task type for `<dir>/<guest>.wasm` (for the `python` scenario).
pub(super) fn load_handler(
    sandbox: &Arc<Sandbox>,
    dir: &Path,
    guest: &str,
) -> anyhow::Result<Arc<dyn Handler>> {
    handler(sandbox, dir, guest)
}

/// The context of one benchmark run (for the `python` scenario).
pub(super) fn bench_context(
    client: &Client,
    task: &str,
    params: Value,
    deadline: Duration,
) -> TaskContext {
    context(client, task, params, deadline)
}

/// The context of one benchmark run, with a deadline `deadline` from now.
fn context(client: &Client, task: &str, params: Value, deadline: Duration) -> TaskContext {
    let run = ClaimedRun {
        run_id: uuid::Uuid::now_v7(),
        task_id: uuid::Uuid::now_v7(),
        attempt: 1,
        task_name: task.into(),
        params,
        retry_strategy: None,
        max_attempts: Some(1),
        headers: None,
        wake_event: None,
        event_payload: None,
    };
    TaskContext::detached(
        client.clone(),
        "bench",
        run,
        ContextSettings {
            worker_id: "bench".into(),
            claim_timeout_secs: 60,
            deadline: Some(tokio::time::Instant::now() + deadline),
            ..Default::default()
        },
    )
}

/// Times `counts.runs` sequential runs (after `counts.warmup` untimed ones), in µs. The
/// context is built outside the timed section: it is the worker's, not the sandbox's.
async fn time_runs(
    handler: &Arc<dyn Handler>,
    client: &Client,
    guest: &str,
    counts: Counts,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(counts.runs);
    for i in 0..counts.warmup + counts.runs {
        let params = json!({"i": i, "text": "hello"});
        let ctx = context(client, guest, params.clone(), Duration::from_secs(60));
        let started = Instant::now();
        let r = handler.run(ctx).await;
        let took = started.elapsed();
        match r {
            Ok(v) if v == params => {}
            other => bail!("{guest} returned {other:?} for {params}"),
        }
        if i >= counts.warmup {
            times.push(took.as_secs_f64() * 1e6);
        }
    }
    Ok(times)
}

/// Epoch and fuel overhead on the CPU-bound guest.
async fn cpu(
    scratch: &Path,
    dir: &Path,
    client: &Client,
    counts: Counts,
    reps: usize,
) -> anyhow::Result<Vec<Figure>> {
    let engines = [
        (
            "none",
            EngineOptions {
                fuel: false,
                epochs: false,
            },
        ),
        (
            "epoch",
            EngineOptions {
                fuel: false,
                epochs: true,
            },
        ),
        (
            "fuel",
            EngineOptions {
                fuel: true,
                epochs: true,
            },
        ),
    ];
    let mut handlers = Vec::new();
    for (name, engine) in engines {
        let sandbox = sandbox(scratch, "pooling", engine)?;
        handlers.push((name, handler(&sandbox, dir, "zoo")?));
    }
    let params = json!({"mode": "compute", "iterations": counts.cpu_iterations});
    let mut per_rep: Vec<[f64; 3]> = Vec::new();
    for _ in 0..reps {
        let mut times: [Vec<f64>; 3] = Default::default();
        // Interleaved, so that a noisy neighbour slows every engine alike.
        for i in 0..counts.cpu_runs + 1 {
            for (k, (name, h)) in handlers.iter().enumerate() {
                let ctx = context(client, "zoo", params.clone(), Duration::from_secs(600));
                let started = Instant::now();
                let r = h.run(ctx).await;
                let took = started.elapsed().as_secs_f64() * 1e3;
                match r {
                    Ok(v) if v["iterations"] == json!(counts.cpu_iterations) => {}
                    other => bail!("zoo compute on the {name} engine returned {other:?}"),
                }
                if i > 0 {
                    times[k].push(took);
                }
            }
        }
        per_rep.push([median(&times[0]), median(&times[1]), median(&times[2])]);
    }
    let col = |k: usize| per_rep.iter().map(|r| r[k]).collect::<Vec<_>>();
    let overhead = |k: usize| {
        per_rep
            .iter()
            .map(|r| (r[k] / r[0] - 1.0) * 100.0)
            .collect::<Vec<_>>()
    };
    let how = format!(
        "{} xorshift rounds per run, {} runs x {reps}",
        counts.cpu_iterations, counts.cpu_runs
    );
    let mut out = Vec::new();
    for (k, (name, _)) in engines.iter().enumerate() {
        let v = col(k);
        out.push(
            Figure::new(SCENARIO, format!("cpu.{name}.ms_per_run"), median(&v), "ms")
                .note(format!("{how}; {}", spread(&v))),
        );
    }
    for (k, name) in [(1, "epoch"), (2, "fuel")] {
        let v = overhead(k);
        out.push(
            Figure::new(SCENARIO, format!("cpu.{name}.overhead"), median(&v), "%")
                .note(format!("vs no interruption; {}", spread(&v))),
        );
    }
    Ok(out)
}

/// Timeout precision: observed stop minus deadline, in ms.
async fn timeouts(
    scratch: &Path,
    dir: &Path,
    client: &Client,
    counts: Counts,
) -> anyhow::Result<Vec<Figure>> {
    let sandbox = sandbox(scratch, "pooling", EngineOptions::default())?;
    let zoo = handler(&sandbox, dir, "zoo")?;
    let d = counts.wasm_deadline;
    let ms = |t: Duration| t.as_secs_f64() * 1e3 - d.as_secs_f64() * 1e3;

    let mut spin = Vec::new();
    let mut blocked = Vec::new();
    for _ in 0..counts.timeout_trials {
        // Spinning: the epoch callback interrupts it at the first tick past the deadline.
        let ctx = context(client, "zoo", json!({"mode": "infinite-loop"}), d);
        let started = Instant::now();
        let r = tokio::time::timeout(d + Duration::from_secs(30), zoo.run(ctx)).await;
        let took = started.elapsed();
        match r {
            Ok(Err(TaskError::Failed(f))) if f.name == FailureName::Timeout => spin.push(ms(took)),
            other => bail!("the spinning guest ended with {other:?}, not $Timeout"),
        }
        // Blocked in a host call: epochs cannot reach it; the worker's race drops the run
        // (and with it the Store) at the deadline, as here.
        let ctx = context(client, "zoo", json!({"mode": "block-poll"}), d);
        let started = Instant::now();
        let r = tokio::time::timeout(d, zoo.run(ctx)).await;
        let took = started.elapsed();
        match r {
            Err(_) => blocked.push(ms(took)),
            Ok(other) => bail!("the blocked guest ended by itself: {other:?}"),
        }
    }

    let native = native_overshoots(scratch, client, counts).await?;
    let mut out = Vec::new();
    for (name, v, how) in [
        ("spin", &spin, "spinning guest, epoch interrupt"),
        (
            "blocked",
            &blocked,
            "guest blocked in a WASI poll, host-side race",
        ),
        (
            "native",
            &native,
            "native program ignoring SIGTERM, hard stop (SIGKILL) at the deadline",
        ),
    ] {
        let deadline = if name == "native" {
            counts.native_deadline
        } else {
            d
        };
        let note = format!(
            "{how}; deadline {} ms, {} trials",
            deadline.as_millis(),
            v.len()
        );
        out.push(
            Figure::new(TIMEOUT, format!("{name}.median_overshoot"), median(v), "ms")
                .target(Target::AtMost(OVERSHOOT_TARGET_MS))
                .note(note),
        );
        let max = v.iter().copied().fold(f64::NAN, f64::max);
        out.push(
            Figure::new(TIMEOUT, format!("{name}.max_overshoot"), max, "ms")
                .target(Target::AtMost(OVERSHOOT_TARGET_MS)),
        );
    }
    Ok(out)
}

/// Runs a SIGTERM-ignoring `sh` loop through the real native handler; the handler returns
/// once the program's whole group is gone, so its return is the observed stop.
async fn native_overshoots(
    scratch: &Path,
    client: &Client,
    counts: Counts,
) -> anyhow::Result<Vec<f64>> {
    let root = scratch.join("native");
    let mut task = toml::Table::new();
    task.insert("program".into(), "sh".into());
    // A fixed script: nothing in it comes from params.
    task.insert(
        "args".into(),
        toml::Value::Array(vec![
            "-c".into(),
            "trap '' TERM; while :; do sleep 1; done".into(),
        ]),
    );
    task.insert("grace".into(), 10.into());
    task.insert("keep_workdir".into(), "never".into());
    let mut defaults = toml::Table::new();
    defaults.insert("workdir_root".into(), root.display().to_string().into());
    let handler = absurd_engine::execute::native::build("bench-native", &task, &defaults, scratch)
        .map_err(|e| anyhow!(e))?
        .handler;
    let d = counts.native_deadline;
    let mut out = Vec::new();
    for _ in 0..counts.timeout_trials {
        let ctx = context(client, "bench-native", json!({}), d);
        let started = Instant::now();
        let r = tokio::time::timeout(d + Duration::from_secs(30), handler.run(ctx)).await;
        let took = started.elapsed();
        match r {
            Ok(Err(TaskError::Failed(f))) if f.name == FailureName::Timeout => {
                out.push(took.as_secs_f64() * 1e3 - d.as_secs_f64() * 1e3)
            }
            other => bail!("the SIGTERM-ignoring program ended with {other:?}, not $Timeout"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_counts_are_small() {
        let q = Counts::new(true);
        let f = Counts::new(false);
        assert!(q.runs < f.runs && q.cpu_iterations < f.cpu_iterations);
        assert!(f.runs >= 20_000);
    }
}
