//! Throughput: draining a queue of trivial tasks end to end (our worker and the Python
//! reference worker, side by side), spawning through our client, and claiming with a backlog.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::env::{self, BenchDb, Server, WorkerProc, WorkerSpec};
use super::report::{median, spread, Figure, Target};
use super::Plan;

const QUEUE: &str = "bench";

/// One drain: `n` tasks named `task` spawned first, then `processes` workers of `concurrency`
/// take them all. Returns tasks/s from the first claim to the last completion.
/// What one drain measured.
struct Drain {
    /// Tasks per second, first claim to last completion.
    rate: f64,
    /// CPU time per task of the worker processes, and of the Postgres backends serving them
    /// (both from their start, which is just before the first claim).
    worker_cpu_us: f64,
    pg_cpu_us: f64,
}

async fn drain_once(
    server: &Server,
    plan: &Plan,
    task: &str,
    n: usize,
    processes: usize,
    concurrency: usize,
) -> Result<Drain> {
    let db = server.fresh("e2e", QUEUE).await?;
    let result = async {
        env::spawn_bulk(&db.pool, QUEUE, task, n).await?;
        let mut workers = start_workers(&db, plan, processes, concurrency, "e2e")?;
        let limit = Duration::from_secs(120 + n as u64 / 100);
        env::wait_completed(&db.pool, QUEUE, n as i64, limit, &mut workers).await?;
        let worker_cpu: f64 = workers
            .iter()
            .filter_map(|w| env::proc_cpu_secs(w.pid()))
            .sum();
        let pg_cpu: f64 = server
            .backend_cpu(&db.name, "absurd-bench")
            .await
            .values()
            .sum();
        drop(workers);
        let (done, secs) = env::drain_rate(&db.pool, QUEUE, "bench-e2e").await?;
        Ok(Drain {
            rate: done as f64 / secs,
            worker_cpu_us: 1e6 * worker_cpu / n as f64,
            pg_cpu_us: 1e6 * pg_cpu / n as f64,
        })
    }
    .await;
    server.drop_db(db).await;
    result
}

fn start_workers(
    db: &BenchDb,
    plan: &Plan,
    processes: usize,
    concurrency: usize,
    label: &str,
) -> Result<Vec<WorkerProc>> {
    (0..processes)
        .map(|i| {
            WorkerProc::start(&WorkerSpec {
                url: &db.url,
                config: &plan.config,
                queue: QUEUE,
                concurrency,
                worker_id: format!("bench-{label}-{}-{i}", std::process::id()),
                app: "absurd-bench",
            })
        })
        .collect()
}

/// Median tasks/s of `plan.reps` drains.
/// Median tasks/s of `plan.reps` drains, the rates, and the median CPU per task of the
/// workers and of Postgres.
async fn drain(
    server: &Server,
    plan: &Plan,
    task: &str,
    processes: usize,
    concurrency: usize,
) -> Result<(f64, Vec<f64>, (f64, f64))> {
    let mut drains = Vec::new();
    for _ in 0..plan.reps {
        drains.push(drain_once(server, plan, task, plan.tasks, processes, concurrency).await?);
    }
    let rates: Vec<f64> = drains.iter().map(|d| d.rate).collect();
    let worker: Vec<f64> = drains.iter().map(|d| d.worker_cpu_us).collect();
    let pg: Vec<f64> = drains.iter().map(|d| d.pg_cpu_us).collect();
    Ok((median(&rates), rates, (median(&worker), median(&pg))))
}

/// End-to-end throughput of our worker. Returns the figures and the best one-process and
/// two-process wasm rates (for the comparison with the reference).
pub async fn e2e(server: &Server, plan: &Plan) -> Result<(Vec<Figure>, f64, f64)> {
    let mut figures = Vec::new();
    // Best concurrency, found with one short drain each (the warm-up as well).
    let candidates: &[usize] = if plan.quick {
        &[64, 256]
    } else {
        &[16, 64, 256, 1024]
    };
    let probe_n = (plan.tasks / 2).max(500);
    let mut best = (0usize, 0.0f64);
    let mut tried = Vec::new();
    for &c in candidates {
        let rate = drain_once(server, plan, "wasm-echo", probe_n, 1, c)
            .await?
            .rate;
        tried.push(format!("{c}: {rate:.0}/s"));
        if rate > best.1 {
            best = (c, rate);
        }
    }
    let conc = best.0;
    let note = |rates: &[f64]| {
        format!(
            "concurrency {conc}, {} tasks, {}",
            plan.tasks,
            spread(rates)
        )
    };
    // CPU per task beside a one-process rate: where the time of a drain goes.
    let cpu = |figures: &mut Vec<Figure>, name: &str, (worker, pg): (f64, f64)| {
        figures.push(
            Figure::new("e2e", format!("{name}.worker_cpu_per_task"), worker, "µs")
                .note("CPU of the worker process per task"),
        );
        figures.push(
            Figure::new("e2e", format!("{name}.pg_cpu_per_task"), pg, "µs")
                .note("CPU of the Postgres backends serving it, per task"),
        );
    };
    let (wasm1, r, c) = drain(server, plan, "wasm-echo", 1, conc).await?;
    figures.push(
        Figure::new("e2e", "wasm_echo.1proc", wasm1, "tasks/s")
            .target(Target::AtLeast(5000.0))
            .note(format!(
                "{}; concurrency tried: {}",
                note(&r),
                tried.join(", ")
            )),
    );
    cpu(&mut figures, "wasm_echo.1proc", c);
    let mut wasm_trivial = ("echo", wasm1);
    if plan.has_wasm_noop {
        let (v, r, c) = drain(server, plan, "wasm-noop", 1, conc).await?;
        figures.push(Figure::new("e2e", "wasm_noop.1proc", v, "tasks/s").note(note(&r)));
        cpu(&mut figures, "wasm_noop.1proc", c);
        wasm_trivial = ("noop", v);
    }
    let (builtin1, r, c) = drain(server, plan, "noop", 1, conc).await?;
    figures.push(Figure::new("e2e", "builtin_noop.1proc", builtin1, "tasks/s").note(note(&r)));
    cpu(&mut figures, "builtin_noop.1proc", c);
    figures.push(
        Figure::new(
            "e2e",
            "wasm_vs_builtin",
            100.0 * wasm_trivial.1 / builtin1,
            "%",
        )
        .target(Target::AtLeast(95.0))
        .note(format!(
            "wasm {} throughput as a share of the builtin no-op's",
            wasm_trivial.0
        )),
    );
    if plan.has_wasm_noop {
        figures.push(
            Figure::new("e2e", "wasm_echo_vs_builtin", 100.0 * wasm1 / builtin1, "%")
                .note("wasm echo (a Rust guest with serde_json) against the builtin no-op"),
        );
    }
    let (wasm2, r, _) = drain(server, plan, "wasm-echo", 2, conc).await?;
    figures.push(Figure::new("e2e", "wasm_echo.2proc", wasm2, "tasks/s").note(note(&r)));
    let (b2, r, _) = drain(server, plan, "noop", 2, conc).await?;
    figures.push(Figure::new("e2e", "builtin_noop.2proc", b2, "tasks/s").note(note(&r)));
    Ok((figures, wasm1, wasm2))
}

/// Spawning through our client: one call per task, and batches in one statement.
pub async fn spawn(server: &Server, plan: &Plan) -> Result<Vec<Figure>> {
    let n = plan.tasks.min(if plan.quick { 1000 } else { 5000 });
    let mut single = Vec::new();
    let mut batched = Vec::new();
    for _ in 0..plan.reps {
        let db = server.fresh("spawn", QUEUE).await?;
        let r = async {
            let params = json!({"i": 1});
            let opts = absurd_client::SpawnOptions::default();
            let t = Instant::now();
            for _ in 0..n {
                db.client.spawn(QUEUE, "noop", &params, &opts).await?;
            }
            single.push(n as f64 / t.elapsed().as_secs_f64());
            let items: Vec<(String, serde_json::Value)> = (0..1000)
                .map(|i| ("noop".to_string(), json!({"i": i})))
                .collect();
            let t = Instant::now();
            let mut spawned = 0;
            while spawned < n * 4 {
                spawned += db.client.spawn_batch(QUEUE, &items, &opts).await?.len();
            }
            batched.push(spawned as f64 / t.elapsed().as_secs_f64());
            anyhow::Ok(())
        }
        .await;
        server.drop_db(db).await;
        r?;
    }
    Ok(vec![
        Figure::new("spawn", "single", median(&single), "tasks/s").note(format!(
            "one spawn_task call per task, sequential; {}",
            spread(&single)
        )),
        Figure::new("spawn", "batched", median(&batched), "tasks/s").note(format!(
            "Client::spawn_batch, 1,000 tasks per call; {}",
            spread(&batched)
        )),
    ])
}

/// Claiming with a backlog: per-task Postgres CPU claiming one at a time, and throughput,
/// with `backlog` tasks waiting and 1,000 more sleeping far in the future beside them.
pub async fn backlog(server: &Server, plan: &Plan) -> Result<Vec<Figure>> {
    let sizes: &[usize] = if plan.quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let mut figures = Vec::new();
    for &b in sizes {
        let db = server.fresh("backlog", QUEUE).await?;
        let r = backlog_once(server, plan, &db, b).await;
        server.drop_db(db).await;
        let (cpu_us, rate) = r?;
        let label = if b >= 1000 {
            format!("{}k", b / 1000)
        } else {
            b.to_string()
        };
        figures.push(
            Figure::new(
                "backlog",
                format!("{label}.pg_cpu_per_task_one_at_a_time"),
                cpu_us,
                "µs",
            )
            .target(Target::AtMost(500.0))
            .note("Postgres backend CPU per claimed+completed task, concurrency 1"),
        );
        figures.push(
            Figure::new("backlog", format!("{label}.throughput"), rate, "tasks/s")
                .note("builtin no-op, one worker process, concurrency 256"),
        );
    }
    Ok(figures)
}

async fn backlog_once(server: &Server, plan: &Plan, db: &BenchDb, b: usize) -> Result<(f64, f64)> {
    env::spawn_bulk(&db.pool, QUEUE, "sleeper", 1000).await?;
    // Put the sleepers to sleep for a year, as a durable sleep would.
    absurd_client::measure::put_to_sleep(&db.pool, QUEUE, "sleeper", 365.0 * 86_400.0).await?;
    env::spawn_bulk(&db.pool, QUEUE, "noop", b).await?;
    absurd_client::measure::refresh_statistics(&db.pool).await?;

    // One at a time: the per-claim cost.
    let measured = (b / 2).min(if plan.quick { 300 } else { 2000 }) as i64;
    let mut w = start_workers(db, plan, 1, 1, "backlog1")?;
    env::wait_listening(server, &db.name, "absurd-bench", Duration::from_secs(30)).await?;
    let before = server.backend_cpu(&db.name, "absurd-bench").await;
    env::wait_completed(&db.pool, QUEUE, measured, Duration::from_secs(300), &mut w).await?;
    let after = server.backend_cpu(&db.name, "absurd-bench").await;
    let done_then = env::completed(&db.pool, QUEUE).await?;
    drop(w);
    let cpu_us = 1e6 * env::cpu_delta(&before, &after) / done_then as f64;

    // Throughput on what is left.
    let mut w = start_workers(db, plan, 1, 256, "backlogN")?;
    env::wait_completed(&db.pool, QUEUE, b as i64, Duration::from_secs(600), &mut w).await?;
    drop(w);
    let (n, secs) = env::drain_rate(&db.pool, QUEUE, "bench-backlogN").await?;
    Ok((cpu_us, n as f64 / secs))
}

/// The Python `absurd-sdk` 0.5.1 worker draining the same workload on the same server.
/// Returns the figures and its best one-process and two-process rates.
pub async fn reference(
    server: &Server,
    plan: &Plan,
    python: &Path,
    absurdctl: Option<&Path>,
) -> Result<(Vec<Figure>, f64, f64)> {
    let script = plan.repo.join("bench/python/reference_worker.py");
    if !script.is_file() {
        bail!("{} is missing", script.display());
    }
    let n = if plan.quick { 300 } else { 2000 };
    let mut figures = Vec::new();
    let mut best = ("", 0usize, 0.0f64);
    for (mode, conc) in [("sync", 1), ("sync", 8), ("async", 1), ("async", 8)] {
        let mut rates = Vec::new();
        for _ in 0..plan.reps {
            rates.push(reference_once(server, python, &script, mode, conc, 1, n, None).await?);
        }
        let m = median(&rates);
        if m > best.2 {
            best = (mode, conc, m);
        }
        figures.push(
            Figure::new("reference", format!("{mode}_c{conc}.1proc"), m, "tasks/s").note(format!(
                "Python absurd-sdk 0.5.1 start_worker, {n} no-op tasks; {}",
                spread(&rates)
            )),
        );
    }
    let mut rates = Vec::new();
    for _ in 0..plan.reps {
        rates.push(reference_once(server, python, &script, best.0, best.1, 2, n, None).await?);
    }
    let two = median(&rates);
    figures.push(
        Figure::new(
            "reference",
            format!("{}_c{}.2proc", best.0, best.1),
            two,
            "tasks/s",
        )
        .note(format!(
            "two processes, the best one-process setting; {}",
            spread(&rates)
        )),
    );
    // The same, on the schema its users have: the upstream SQL installed by `absurdctl init`
    // (our schema's claim is cheaper, which makes the reference faster on it).
    if let Some(ctl) = absurdctl {
        for procs in [1, 2] {
            let mut rates = Vec::new();
            for _ in 0..plan.reps {
                let up = Some(ctl);
                rates.push(
                    reference_once(server, python, &script, best.0, best.1, procs, n, up).await?,
                );
            }
            figures.push(
                Figure::new(
                    "reference",
                    format!("upstream_schema.{}_c{}.{procs}proc", best.0, best.1),
                    median(&rates),
                    "tasks/s",
                )
                .note(format!("on an `absurdctl init` schema; {}", spread(&rates))),
            );
        }
    }
    Ok((figures, best.2, two))
}

#[allow(clippy::too_many_arguments)]
async fn reference_once(
    server: &Server,
    python: &Path,
    script: &Path,
    mode: &str,
    concurrency: usize,
    processes: usize,
    n: usize,
    upstream: Option<&Path>,
) -> Result<f64> {
    let db = match upstream {
        Some(ctl) => server.upstream(ctl, "reference_up", QUEUE).await?,
        None => server.fresh("reference", QUEUE).await?,
    };
    let r = async {
        env::spawn_bulk(&db.pool, QUEUE, "noop", n).await?;
        let mut children = Vec::new();
        for _ in 0..processes {
            children.push(
                Command::new(python)
                    .arg(script)
                    .args(["--dsn", &db.url, "--queue", QUEUE, "--mode", mode])
                    .args(["--concurrency", &concurrency.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .with_context(|| format!("cannot run {}", python.display()))?,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(120 + n as u64 / 10);
        let outcome = loop {
            let done = env::completed(&db.pool, QUEUE).await?;
            if done >= n as i64 {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err(anyhow::anyhow!(
                    "the reference worker completed only {done} of {n} tasks in time"
                ));
            }
            if let Some(status) = children
                .iter_mut()
                .find_map(|c| c.try_wait().ok().flatten())
            {
                break Err(anyhow::anyhow!(
                    "the reference worker exited early ({status})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for c in &mut children {
            let pid = rustix::process::Pid::from_child(c);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        for c in &mut children {
            let stop_by = Instant::now() + Duration::from_secs(10);
            while Instant::now() < stop_by && matches!(c.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        outcome?;
        let (done, secs) = env::drain_rate(&db.pool, QUEUE, "").await?;
        Ok(done as f64 / secs)
    }
    .await;
    server.drop_db(db).await;
    r
}
