//! Memory: the worker's resident set with 1,000 sandboxed tasks in flight, each blocked in a
//! host call (the zoo guest in a WASI sleep), and its drift over many trivial tasks.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::env::{self, Server, WorkerProc, WorkerSpec};
use super::report::{Figure, Target};
use super::Plan;

const QUEUE: &str = "bench";

pub async fn memory(server: &Server, plan: &Plan) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    if plan.has_zoo {
        let in_flight = if plan.quick { 200 } else { 1000 };
        let db = server.fresh("memory", QUEUE).await?;
        let r = blocked(server, plan, &db, in_flight).await;
        server.drop_db(db).await;
        let (idle, full) = r?;
        figures.push(
            Figure::new("memory", "rss_idle", idle, "MiB").note("worker started, no task running"),
        );
        figures.push(
            Figure::new("memory", format!("rss_{in_flight}_in_flight"), full, "MiB")
                .target(Target::AtMost(200.0))
                .note(format!(
                    "{in_flight} wasm tasks blocked in a WASI sleep at once"
                )),
        );
    }
    let n = if plan.quick { 10_000 } else { 100_000 };
    let db = server.fresh("drift", QUEUE).await?;
    let r = drift(plan, &db, n).await;
    server.drop_db(db).await;
    let (first, last, slope) = r?;
    figures.push(
        Figure::new("memory", "drift.rss_after_10pct", first, "MiB").note(format!(
            "{n} wasm echo tasks through one worker, RSS sampled every 0.2 s"
        )),
    );
    figures.push(Figure::new("memory", "drift.rss_at_end", last, "MiB"));
    figures.push(
        Figure::new("memory", "drift.slope", slope, "MiB/100k tasks")
            .note("least-squares slope of RSS against tasks completed, after the first 10%"),
    );
    Ok(figures)
}

async fn blocked(server: &Server, plan: &Plan, db: &env::BenchDb, n: usize) -> Result<(f64, f64)> {
    let w = WorkerProc::start(&WorkerSpec {
        url: &db.url,
        config: &plan.config,
        queue: QUEUE,
        concurrency: n,
        worker_id: format!("bench-memory-{}", std::process::id()),
        app: "absurd-bench",
    })?;
    env::wait_listening(server, &db.name, "absurd-bench", Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = env::proc_rss_mib(w.pid()).unwrap_or(f64::NAN);
    absurd_client::measure::spawn_copies(
        &db.pool,
        QUEUE,
        "block",
        &serde_json::json!({"mode": "block-poll"}),
        n as i32,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while env::runs_in_state(&db.pool, QUEUE, "running").await? < n as i64 {
        if Instant::now() > deadline {
            bail!(
                "fewer than {n} tasks were running after 2 minutes; worker log:\n{}",
                w.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Claimed is not yet instantiated: give the last ones a moment to reach their sleep.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full = env::proc_rss_mib(w.pid()).unwrap_or(f64::NAN);
    Ok((idle, full))
}

async fn drift(plan: &Plan, db: &env::BenchDb, n: usize) -> Result<(f64, f64, f64)> {
    env::spawn_bulk(&db.pool, QUEUE, "wasm-echo", n).await?;
    let mut workers = vec![WorkerProc::start(&WorkerSpec {
        url: &db.url,
        config: &plan.config,
        queue: QUEUE,
        concurrency: 256,
        worker_id: format!("bench-drift-{}", std::process::id()),
        app: "absurd-bench",
    })?];
    let pid = workers[0].pid();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = env::completed(&db.pool, QUEUE).await?;
        if let Some(rss) = env::proc_rss_mib(pid) {
            samples.push((done as f64, rss));
        }
        if done >= n as i64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {done} of {n} tasks completed in 10 minutes");
        }
        if let Some(status) = workers[0].child.try_wait()? {
            bail!(
                "the worker exited ({status}); its log:\n{}",
                workers[0].log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(workers);
    let tail: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(done, _)| *done >= 0.1 * n as f64)
        .collect();
    let first = tail.first().map(|s| s.1).unwrap_or(f64::NAN);
    let last = tail.last().map(|s| s.1).unwrap_or(f64::NAN);
    Ok((first, last, slope(&tail) * 100_000.0))
}

/// Least-squares slope of y against x; NaN with fewer than 3 points.
fn slope(points: &[(f64, f64)]) -> f64 {
    if points.len() < 3 {
        return f64::NAN;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        return f64::NAN;
    }
    sxy / sxx
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        assert!((super::slope(&pts) - 2.0).abs() < 1e-9);
        assert!(super::slope(&pts[..2]).is_nan());
    }
}
