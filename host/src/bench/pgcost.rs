//! Postgres cost: backend CPU time per completed task, for our schema and for the upstream
//! schema that `absurdctl init` installs, with the same worker (this host) claiming one at a
//! time (concurrency 1) and in batches (concurrency 100). `ours_listened` is our schema while
//! an API has live-update subscribers (migration 0015's triggers then `NOTIFY absurd_live` on
//! every state change; a listener drains them): the cost of live updates to the worker's
//! backends. (The listener's own backend is not counted.)
//!
//! The CPU is read from `/proc/<pid>/stat` of the backends serving the worker's connections,
//! so it needs the server on this machine (as a local URL or the embedded cluster) and
//! permission to read those files; elsewhere the figures are reported as not measured.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::env::{self, BenchDb, Server, WorkerProc, WorkerSpec};
use super::report::{median, spread, Figure, Target};
use super::Plan;

const QUEUE: &str = "bench";

pub async fn pg_cost(
    server: &Server,
    plan: &Plan,
    absurdctl: Option<&Path>,
) -> Result<Vec<Figure>> {
    let n = if plan.quick { 400 } else { 4000 };
    let mut figures = Vec::new();
    let mut schemas = vec!["ours", "ours_listened"];
    if absurdctl.is_some() {
        schemas.push("upstream");
    }
    for schema in schemas {
        for (mode, conc, target) in [("one_at_a_time", 1, 400.0), ("batched", 100, 100.0)] {
            let mut values = Vec::new();
            for _ in 0..plan.reps {
                let db = match (schema, absurdctl) {
                    ("upstream", Some(ctl)) => server.upstream(ctl, "pgcost_up", QUEUE).await?,
                    _ => server.fresh("pgcost", QUEUE).await?,
                };
                let r = cost_once(server, plan, &db, n, conc, schema == "ours_listened").await;
                server.drop_db(db).await;
                values.push(r?);
            }
            let mut f = Figure::new("pg_cost", format!("{schema}.{mode}"), median(&values), "µs")
                .note(format!(
                    "backend CPU per task, {n} no-op tasks, worker concurrency {conc}; {}",
                    spread(&values)
                ));
            if schema == "ours" {
                f = f.target(Target::AtMost(target));
            }
            figures.push(f);
        }
    }
    Ok(figures)
}

async fn cost_once(
    server: &Server,
    plan: &Plan,
    db: &BenchDb,
    n: usize,
    conc: usize,
    listened: bool,
) -> Result<f64> {
    let _listener = if listened {
        db.client.renew_live_updates(3600).await?;
        let mut l = db.client.live_listener().await?;
        l.listen().await?;
        // Drained as they come, as the API does.
        Some(AbortOnDrop(tokio::spawn(async move {
            while l.recv().await.is_ok() {}
        })))
    } else {
        None
    };
    // Spawned first, like the backlog scenario: a claim that runs beside a big uncommitted
    // spawn steps over its invisible index entries, which measures the spawner, not the claim.
    env::spawn_bulk(&db.pool, QUEUE, "noop", n).await?;
    let mut workers = vec![WorkerProc::start(&WorkerSpec {
        url: &db.url,
        config: &plan.config,
        queue: QUEUE,
        concurrency: conc,
        worker_id: format!("bench-pgcost-{}", std::process::id()),
        app: "absurd-bench",
    })?];
    // Every backend serving the worker is new, so its whole CPU time counts (connection
    // start-up included, a few milliseconds in all).
    env::wait_completed(
        &db.pool,
        QUEUE,
        n as i64,
        Duration::from_secs(600),
        &mut workers,
    )
    .await?;
    let after = server.backend_cpu(&db.name, "absurd-bench").await;
    drop(workers);
    if after.is_empty() {
        return Ok(f64::NAN);
    }
    Ok(1e6 * after.values().sum::<f64>() / n as f64)
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
