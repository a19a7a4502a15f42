//! Pickup latency: an idle worker, and tasks spawned one at a time at a steady rate by another
//! process (the Python SDK, or our CLI); spawn-to-start measured by the database's clock
//! (`enqueue_at` of the task, written as `spawn_task` starts, to `started_at` of its run,
//! written as the claim starts).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::env::{self, BenchDb, Server, WorkerProc, WorkerSpec};
use super::report::{quantile, Figure, Target};
use super::Plan;

const QUEUE: &str = "bench";

pub async fn pickup(server: &Server, plan: &Plan, python: Option<&Path>) -> Result<Vec<Figure>> {
    let (count, rate) = if plan.quick { (40, 20.0) } else { (400, 20.0) };
    let mut figures = Vec::new();
    let mut spawners: Vec<&str> = vec!["cli"];
    if python.is_some() {
        spawners.insert(0, "python");
    }
    for spawner in spawners {
        let db = server.fresh("pickup", QUEUE).await?;
        let r = pickup_once(server, plan, &db, spawner, python, count, rate).await;
        server.drop_db(db).await;
        let lat = r?;
        let note =
            format!("{count} tasks spawned one at a time at {rate}/s by {spawner}; idle worker");
        figures.push(
            Figure::new(
                "pickup",
                format!("{spawner}.p50"),
                quantile(&lat, 0.5),
                "ms",
            )
            .target(Target::AtMost(5.0))
            .note(note),
        );
        figures.push(
            Figure::new(
                "pickup",
                format!("{spawner}.p99"),
                quantile(&lat, 0.99),
                "ms",
            )
            .target(Target::AtMost(25.0)),
        );
        figures.push(Figure::new(
            "pickup",
            format!("{spawner}.max"),
            quantile(&lat, 1.0),
            "ms",
        ));
    }
    Ok(figures)
}

async fn pickup_once(
    server: &Server,
    plan: &Plan,
    db: &BenchDb,
    spawner: &str,
    python: Option<&Path>,
    count: usize,
    rate: f64,
) -> Result<Vec<f64>> {
    let mut workers = vec![WorkerProc::start(&WorkerSpec {
        url: &db.url,
        config: &plan.config,
        queue: QUEUE,
        concurrency: 16,
        worker_id: format!("bench-pickup-{}", std::process::id()),
        app: "absurd-bench",
    })?];
    env::wait_listening(server, &db.name, "absurd-bench", Duration::from_secs(30)).await?;
    // Let it settle into its idle wait.
    tokio::time::sleep(Duration::from_millis(500)).await;

    match (spawner, python) {
        ("python", Some(py)) => {
            let script = plan.repo.join("bench/python/spawn_steady.py");
            let out = tokio::task::spawn_blocking({
                let (py, script, url) = (py.to_path_buf(), script.clone(), db.url.clone());
                move || {
                    Command::new(py)
                        .arg(script)
                        .args(["--dsn", &url, "--queue", QUEUE, "--task-name", "noop"])
                        .args(["--count", &count.to_string(), "--rate", &rate.to_string()])
                        .stdin(Stdio::null())
                        .output()
                }
            })
            .await??;
            if !out.status.success() {
                bail!(
                    "spawn_steady.py failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        _ => {
            // Our CLI: one `absurd-host task spawn` process per task, on an absolute schedule.
            let exe = std::env::current_exe()?;
            let start = Instant::now();
            for k in 0..count {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let status = tokio::process::Command::new(&exe)
                    .args(["task", "spawn", "noop", "--queue", QUEUE])
                    .args(["--params", &format!("{{\"i\": {k}}}")])
                    .arg("--database-url")
                    .arg(&db.url)
                    .env("ABSURD_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .await
                    .context("cannot run `absurd-host task spawn`")?;
                if !status.success() {
                    bail!("`absurd-host task spawn` failed ({status})");
                }
            }
        }
    }
    env::wait_completed(
        &db.pool,
        QUEUE,
        count as i64,
        Duration::from_secs(60),
        &mut workers,
    )
    .await?;
    drop(workers);
    Ok(absurd_client::measure::first_run_waits_ms(&db.pool, QUEUE).await?)
}
