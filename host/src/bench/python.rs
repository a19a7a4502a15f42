//! Python guests (scenarios `python-run`, `python-e2e`, `python-memory`): task components built from Python with
//! `absurd-host build-py` (`examples/python/echo.py` and `zoo.py`, about 19 MB each).
//!
//! * **First run after start**: loading the component (from a cold precompile cache: a
//!   cranelift compile; from a warm one: a deserialize) plus its first run, in this process.
//! * **Warm run**: `WasmHandler::run` of the trivial `echo` task, one run at a time, after a
//!   warm-up, with the pooling allocator: p50 and p99 (target: p50 <= 1 ms).
//! * **End-to-end drain**: trivial Python tasks through one worker process (target: at least
//!   2.5x the Python SDK reference worker's best, measured by the `reference` scenario of the
//!   same run).
//! * **Memory**: the worker's RSS with 256 Python tasks in flight, each blocked in a WASI
//!   sleep (target: <= 1 GiB).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::json;

use super::env::{self, Server, WorkerProc, WorkerSpec};
use super::report::{median, quantile, spread, Figure, Target};
use super::sandbox::{bench_context, detached_client, load_handler, new_sandbox};
use super::Plan;

const SCENARIO: &str = "python";
const QUEUE: &str = "bench";
const WARM_P50_TARGET_MS: f64 = 1.0;
const RATIO_TARGET: f64 = 2.5;
const RSS_TARGET_MIB: f64 = 1024.0;
const IN_FLIGHT: usize = 256;
/// Each Python run's memory cap (CPython's pre-initialised image plus room to work).
const MEMORY_MB: u64 = 128;

/// `py-echo.wasm` and `py-zoo.wasm` in the components directory, built (or taken from the
/// build cache) from examples/python when missing.
pub fn ensure_components(plan: &Plan) -> Result<()> {
    for (stem, out) in [("echo", "py-echo"), ("zoo", "py-zoo")] {
        let wasm = plan.components.join(format!("{out}.wasm"));
        if wasm.is_file() {
            continue;
        }
        let app = plan.repo.join("examples/python").join(format!("{stem}.py"));
        crate::buildpy::build(&crate::buildpy::BuildPyArgs {
            app,
            output: wasm,
            requirements: None,
            componentize_py: std::env::var_os("ABSURD_COMPONENTIZE_PY").map(PathBuf::from),
            python: PathBuf::from("python3"),
            cache_dir: None,
            no_cache: false,
            quiet: true,
        })
        .with_context(|| format!("building examples/python/{stem}.py"))?;
    }
    Ok(())
}

/// The workers' configuration: `py-echo` and `py-block` (the Python zoo blocked in a WASI
/// sleep), with room for CPython's memory image.
fn write_config(plan: &Plan) -> Result<PathBuf> {
    let dir = plan
        .config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join("absurd-host-python.toml");
    let text = format!(
        "# written by absurd-host bench (python)\n[sandbox]\nmemory_mb = {MEMORY_MB}\npool_instances = {pool}\n\n\
         [tasks.py-echo]\nkind = \"wasm\"\ncomponent = {echo:?}\n\n\
         [tasks.py-block]\nkind = \"wasm\"\ncomponent = {zoo:?}\ntimeout = 600\n",
        pool = IN_FLIGHT + 64,
        echo = plan.components.join("py-echo.wasm"),
        zoo = plan.components.join("py-zoo.wasm"),
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Scenario `python-e2e`: one worker draining trivial Python tasks; `reference_best` is the
/// reference worker's best one-process rate of this run (NaN when it was not measured).
pub async fn e2e(server: &Server, plan: &Plan, reference_best: f64) -> Result<Vec<Figure>> {
    ensure_components(plan)?;
    let config = write_config(plan)?;
    let mut figures = Vec::new();
    let candidates: &[usize] = if plan.quick {
        &[32]
    } else {
        &[16, 32, 64, 128]
    };
    let n = if plan.quick {
        500
    } else {
        (plan.tasks / 4).max(2000)
    };
    let mut rates = Vec::new();
    let mut tried = Vec::new();
    for &c in candidates {
        let mut reps = Vec::new();
        for _ in 0..plan.reps {
            reps.push(drain_once(server, &config, n, c).await?);
        }
        let rate = median(&reps);
        tried.push(format!("{c}: {rate:.0}/s"));
        rates.push((c, rate, reps));
    }
    let (conc, best, reps) = rates
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("a candidate");
    figures.push(
        Figure::new(SCENARIO, "e2e.tasks_per_s", best, "tasks/s").note(format!(
            "py-echo, one worker, concurrency {conc}, {n} tasks, {} (tried {})",
            spread(&reps),
            tried.join(", ")
        )),
    );
    figures.push(
        Figure::new(SCENARIO, "e2e.ratio_to_reference", best / reference_best, "x")
            .target(Target::AtLeast(RATIO_TARGET))
            .note("our Python-guest drain / the reference worker's best (one process each, this run; NaN without --only reference)"),
    );
    Ok(figures)
}

/// Scenario `python-memory`: the worker's RSS with 256 Python tasks in flight.
pub async fn memory(server: &Server, plan: &Plan) -> Result<Vec<Figure>> {
    ensure_components(plan)?;
    let config = write_config(plan)?;
    let mut figures = Vec::new();
    let db = server.fresh("python-memory", QUEUE).await?;
    let r = blocked_rss(server, &config, &db, IN_FLIGHT).await;
    server.drop_db(db).await;
    let (idle, full, pss) = r?;
    figures.push(
        Figure::new(SCENARIO, "rss_idle", idle, "MiB")
            .note("worker started with the Python task types loaded"),
    );
    figures.push(
        Figure::new(SCENARIO, format!("rss_{IN_FLIGHT}_in_flight"), full, "MiB")
            .target(Target::AtMost(RSS_TARGET_MIB))
            .note(format!(
                "{IN_FLIGHT} Python tasks blocked in a WASI sleep at once"
            )),
    );
    figures.push(
        Figure::new(SCENARIO, format!("pss_{IN_FLIGHT}_in_flight"), pss, "MiB").note(
            "the same, proportional set size: RSS counts the shared copy-on-write memory image once per instance",
        ),
    );
    Ok(figures)
}

/// First run (cold and warm precompile cache) and warm per-run time, in this process.
pub async fn in_process(plan: &Plan) -> Result<Vec<Figure>> {
    ensure_components(plan)?;
    let mut figures = Vec::new();
    let client = detached_client()?;
    let scratch = tempfile::Builder::new()
        .prefix("absurd-bench-python-")
        .tempdir()
        .context("a scratch directory")?;
    let dir = &plan.components;
    for cache in ["cold", "warm"] {
        let started = Instant::now();
        let sandbox = new_sandbox(scratch.path(), "pooling")?;
        let handler = load_handler(&sandbox, dir, "py-echo")?;
        let loaded = started.elapsed();
        let params = json!({"first": true});
        let r = handler
            .run(bench_context(
                &client,
                "echo",
                params.clone(),
                Duration::from_secs(60),
            ))
            .await;
        let total = started.elapsed();
        if !matches!(&r, Ok(v) if *v == params) {
            bail!("py-echo returned {r:?}");
        }
        figures.push(
            Figure::new(
                SCENARIO,
                format!("first_run.{cache}_cache"),
                total.as_secs_f64() * 1e3,
                "ms",
            )
            .note(format!(
                "engine + load ({:.0} ms, {}) + first run",
                loaded.as_secs_f64() * 1e3,
                if cache == "cold" {
                    "compiling"
                } else {
                    "precompiled, from the cache"
                }
            )),
        );
    }

    let sandbox = new_sandbox(scratch.path(), "pooling")?;
    let handler = load_handler(&sandbox, dir, "py-echo")?;
    let (warmup, runs) = if plan.quick { (20, 200) } else { (200, 5000) };
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut cpu = Vec::new();
    let mut faults = Vec::new();
    let me = std::process::id();
    for _ in 0..plan.reps {
        let mut times = Vec::with_capacity(runs);
        let mut start = None;
        for i in 0..warmup + runs {
            if i == warmup {
                start = Some((env::proc_cpu_secs(me), env::proc_minor_faults(me)));
            }
            let params = json!({"i": i, "text": "hello"});
            let ctx = bench_context(&client, "echo", params.clone(), Duration::from_secs(60));
            let started = Instant::now();
            let r = handler.run(ctx).await;
            let took = started.elapsed();
            if !matches!(&r, Ok(v) if *v == params) {
                bail!("py-echo returned {r:?} for {params}");
            }
            if i >= warmup {
                times.push(took.as_secs_f64() * 1e3);
            }
        }
        p50.push(quantile(&times, 0.5));
        p99.push(quantile(&times, 0.99));
        if let Some((Some(c0), Some(f0))) = start {
            if let (Some(c1), Some(f1)) = (env::proc_cpu_secs(me), env::proc_minor_faults(me)) {
                cpu.push((c1 - c0) * 1e3 / runs as f64);
                faults.push(f1.saturating_sub(f0) as f64 / runs as f64);
            }
        }
    }
    figures.push(
        Figure::new(SCENARIO, "warm_run.p50", median(&p50), "ms")
            .target(Target::AtMost(WARM_P50_TARGET_MS))
            .note(format!(
                "py-echo, Store+instantiate+call+drop, pooling, {runs} runs x {}; p50 {}",
                plan.reps,
                spread(&p50)
            )),
    );
    figures.push(
        Figure::new(SCENARIO, "warm_run.p99", median(&p99), "ms")
            .note(format!("p99 {}", spread(&p99))),
    );
    if !cpu.is_empty() {
        figures.push(
            Figure::new(SCENARIO, "warm_run.cpu_ms", median(&cpu), "ms").note(format!(
                "CPU time of this process per warm run (less sensitive to other load than the wall-clock p50) {}",
                spread(&cpu)
            )),
        );
        figures.push(
            Figure::new(SCENARIO, "warm_run.minor_faults", median(&faults), "faults").note(format!(
                "minor page faults per warm run (copy-on-write and first-touch faults of the instance's memory, tables and stack; load-independent) {}",
                spread(&faults)
            )),
        );
    }
    Ok(figures)
}

async fn drain_once(server: &Server, config: &Path, n: usize, concurrency: usize) -> Result<f64> {
    let db = server.fresh("python-e2e", QUEUE).await?;
    let result = async {
        env::spawn_bulk(&db.pool, QUEUE, "py-echo", n).await?;
        let mut workers = vec![WorkerProc::start(&WorkerSpec {
            url: &db.url,
            config,
            queue: QUEUE,
            concurrency,
            worker_id: format!("bench-python-{}", std::process::id()),
            app: "absurd-bench",
        })?];
        let limit = Duration::from_secs(120 + n as u64 / 20);
        env::wait_completed(&db.pool, QUEUE, n as i64, limit, &mut workers).await?;
        drop(workers);
        let (done, secs) = env::drain_rate(&db.pool, QUEUE, "bench-python").await?;
        Ok(done as f64 / secs)
    }
    .await;
    server.drop_db(db).await;
    result
}

async fn blocked_rss(
    server: &Server,
    config: &Path,
    db: &env::BenchDb,
    n: usize,
) -> Result<(f64, f64, f64)> {
    let w = WorkerProc::start(&WorkerSpec {
        url: &db.url,
        config,
        queue: QUEUE,
        concurrency: n,
        worker_id: format!("bench-python-memory-{}", std::process::id()),
        app: "absurd-bench",
    })?;
    env::wait_listening(server, &db.name, "absurd-bench", Duration::from_secs(60)).await?;
    let idle = env::proc_rss_mib(w.pid()).unwrap_or(f64::NAN);
    absurd_client::measure::spawn_copies(
        &db.pool,
        QUEUE,
        "py-block",
        &json!({"mode": "block-poll"}),
        n as i32,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while env::runs_in_state(&db.pool, QUEUE, "running").await? < n as i64 {
        if Instant::now() > deadline {
            bail!(
                "fewer than {n} Python tasks were running after 5 minutes; worker log:\n{}",
                w.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Claimed is not yet instantiated: sample until the RSS stops growing.
    let mut full = env::proc_rss_mib(w.pid()).unwrap_or(f64::NAN);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = env::proc_rss_mib(w.pid()).unwrap_or(f64::NAN);
        if (now - full).abs() < 1.0 {
            full = full.max(now);
            break;
        }
        full = full.max(now);
    }
    let pss = env::proc_pss_mib(w.pid()).unwrap_or(f64::NAN);
    Ok((idle, full, pss))
}
