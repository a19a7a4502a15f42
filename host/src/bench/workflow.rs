//! Workflows: how long the DAG runner (examples/workflow) takes to carry a chain of five
//! no-op stages from spawn to the workflow's result on an idle worker, and how soon a parent
//! waiting on a fan-out of many children (examples/fanout) is woken after the last one ends.
//! Timings come from the database's clock.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use absurd_client::{measure, SpawnOptions};

use super::env::{self, BenchDb, Server, WorkerProc, WorkerSpec};
use super::report::{median, quantile, spread, Figure, Target};
use super::Plan;

const QUEUE: &str = "bench";
const STAGES: usize = 5;
/// The fan-out's children's queue.
const KIDS: &str = "bench_kids";

/// The inline definition of a chain of `n` builtin `noop` stages.
fn chain(n: usize) -> Value {
    let nodes: Vec<Value> = (1..=n)
        .map(|i| {
            let deps: Vec<String> = if i > 1 {
                vec![format!("s{}", i - 1)]
            } else {
                vec![]
            };
            json!({"id": format!("s{i}"), "task": "noop", "depends_on": deps})
        })
        .collect();
    json!({"name": "bench-chain", "nodes": nodes, "config": null, "inputs": {}})
}

fn worker(plan: &Plan, db: &BenchDb, queue: &str, label: &str) -> Result<WorkerProc> {
    WorkerProc::start(&WorkerSpec {
        url: &db.url,
        config: &plan.config,
        queue,
        concurrency: 16,
        worker_id: format!("bench-{label}-{}", std::process::id()),
        app: "absurd-bench",
    })
}

/// Waits until task `id` has ended; fails if it did not complete, or after `limit`.
async fn completed(
    db: &BenchDb,
    id: uuid::Uuid,
    limit: Duration,
    w: &mut WorkerProc,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(r) = db.client.task_result(QUEUE, id).await? {
            if r.state.is_terminal() {
                if r.state != absurd_client::State::Completed {
                    bail!("task {id} ended {:?}: {:?}", r.state, r.failure_reason);
                }
                return Ok(());
            }
        }
        if let Some(status) = w.child.try_wait()? {
            bail!("the worker exited ({status}); its log:\n{}", w.log_tail());
        }
        if Instant::now() > deadline {
            bail!("task {id} did not finish within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn workflow(server: &Server, plan: &Plan) -> Result<Vec<Figure>> {
    for name in ["workflow", "fanout"] {
        let c = plan.components.join(format!("{name}.wasm"));
        if !c.is_file() {
            bail!(
                "{} is missing: build the example components (scripts/build-examples)",
                c.display()
            );
        }
    }
    let mut figures = Vec::new();

    // A chain of five no-op stages, one workflow at a time on an idle worker.
    let count = if plan.quick { 10 } else { 200 };
    let db = server.fresh("chain", QUEUE).await?;
    let spans = chain_once(server, plan, &db, count).await;
    server.drop_db(db).await;
    let spans = spans?;
    figures.push(
        Figure::new("workflow", "chain5.p50", quantile(&spans, 0.5), "ms")
            .target(Target::AtMost(25.0))
            .note(format!(
                "{count} workflows of {STAGES} chained builtin noop stages, one at a time on an \
                 idle worker: spawn to the workflow's completion"
            )),
    );
    figures.push(
        Figure::new("workflow", "chain5.p99", quantile(&spans, 0.99), "ms")
            .target(Target::AtMost(100.0)),
    );
    figures.push(Figure::new(
        "workflow",
        "chain5.max",
        quantile(&spans, 1.0),
        "ms",
    ));

    // A fan-out: the parent spawns n children, then waits for each (join_all).
    let children = if plan.quick { 100 } else { 1000 };
    let mut wakes = Vec::new();
    let mut dones = Vec::new();
    for _ in 0..plan.reps {
        let db = server.fresh("fanout", QUEUE).await?;
        let r = fanout_once(server, plan, &db, children).await;
        server.drop_db(db).await;
        let (wake, done) = r?;
        wakes.push(wake);
        dones.push(done);
    }
    figures.push(
        Figure::new("workflow", "fanout.wake", median(&wakes), "ms").note(format!(
            "{children} noop children of one suspended fanout task (join_all), in their own \
             queue: the last child's completion to the parent's last claim (negative: the \
             parent was already running, replaying, when it ended); {}",
            spread(&wakes)
        )),
    );
    figures.push(
        Figure::new("workflow", "fanout.parent_done", median(&dones), "ms").note(format!(
            "the last child's completion to the parent's completion (its replay of {children} \
             spawns and outcomes); {}",
            spread(&dones)
        )),
    );
    Ok(figures)
}

async fn chain_once(server: &Server, plan: &Plan, db: &BenchDb, count: usize) -> Result<Vec<f64>> {
    let mut w = worker(plan, db, QUEUE, "chain")?;
    env::wait_listening(server, &db.name, "absurd-bench", Duration::from_secs(30)).await?;
    // One workflow first, unmeasured: the component is compiled (or loaded) at its first run.
    let warm = db
        .client
        .spawn(QUEUE, "workflow", &chain(STAGES), &SpawnOptions::default())
        .await
        .context("spawning a workflow")?
        .task_id;
    completed(db, warm, Duration::from_secs(120), &mut w).await?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        // Idle between workflows: the next is spawned once the last one completed.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let id = db
            .client
            .spawn(QUEUE, "workflow", &chain(STAGES), &SpawnOptions::default())
            .await?
            .task_id;
        completed(db, id, Duration::from_secs(60), &mut w).await?;
        ids.push(id);
    }
    drop(w);
    let spans: Vec<f64> = measure::task_spans_ms(&db.pool, QUEUE, "workflow")
        .await?
        .into_iter()
        .filter(|(id, _)| *id != warm)
        .map(|(_, ms)| ms)
        .collect();
    if spans.len() != ids.len() {
        bail!("{} workflow spans for {} workflows", spans.len(), ids.len());
    }
    Ok(spans)
}

/// The fan-out's children go to a queue of their own, served by a second worker started only
/// once the parent is suspended on its first child: the parent has then spawned every child,
/// and waits; each child's completion can wake it.
async fn fanout_once(
    server: &Server,
    plan: &Plan,
    db: &BenchDb,
    children: usize,
) -> Result<(f64, f64)> {
    db.client.create_queue(KIDS).await?;
    let mut parent_worker = worker(plan, db, QUEUE, "fanout")?;
    env::wait_listening(server, &db.name, "absurd-bench", Duration::from_secs(30)).await?;
    let items: Vec<Value> = (0..children).map(|i| json!({"i": i})).collect();
    let id = db
        .client
        .spawn(
            QUEUE,
            "fanout",
            &json!({"task": "noop", "items": items, "queue": KIDS}),
            &SpawnOptions::default(),
        )
        .await?
        .task_id;
    let deadline = Instant::now() + Duration::from_secs(300);
    while env::runs_in_state(&db.pool, QUEUE, "sleeping").await? < 1 {
        if let Some(status) = parent_worker.child.try_wait()? {
            bail!(
                "the worker exited ({status}); its log:\n{}",
                parent_worker.log_tail()
            );
        }
        if Instant::now() > deadline {
            bail!("the fanout task did not spawn its {children} children within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kids_worker = worker(plan, db, KIDS, "fanout-kids")?;
    completed(db, id, Duration::from_secs(300), &mut parent_worker).await?;
    drop(kids_worker);
    drop(parent_worker);
    match measure::fan_in_wake_ms(&db.pool, KIDS, QUEUE, id, "noop").await? {
        (Some(wake), Some(done)) => Ok((wake, done)),
        other => bail!("no fan-in timing for the fanout task: {other:?}"),
    }
}
