//! Sandbox benchmark (prints figures; not a test).
//!
//!     scripts/build-examples
//!     cargo run -p absurd-host --example sandbox_bench -- [COMPONENTS_DIR] [RUNS]
//!
//! Measures, with the example components:
//! * per-run sandbox overhead of the `echo` component: Store + instantiate + call + drop;
//! * loading a precompiled component from the on-disk cache;
//! * timeout precision: deadline vs observed, for a spinning guest (stopped by the epoch
//!   deadline) and for a guest blocked in a WASI poll (stopped by the host-side race).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use absurd_host::client::{ClaimedRun, Client};
use absurd_host::execute::{ContextSettings, TaskContext, TaskError};
use absurd_host::sandbox::build_handlers;
use serde_json::{json, Value};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ctx(client: &Client, task: &str, params: Value, deadline: Option<Duration>) -> TaskContext {
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
            deadline: deadline.map(|d| tokio::time::Instant::now() + d),
            spawn_defaults: Default::default(),
        },
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| {
        format!(
            "{}/.cache/absurd-host/components",
            std::env::var("HOME").unwrap_or_default()
        )
    }));
    let runs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5000);
    let cache = std::env::temp_dir().join(format!("absurd-bench-cache-{}", std::process::id()));
    let table = |component: &str| -> toml::Table {
        toml::from_str(&format!(
            "component = \"{}\"",
            dir.join(component).display()
        ))
        .unwrap()
    };
    let defaults: toml::Table = toml::from_str(&format!(
        "memory_mb = 64\npool_instances = 64\ncache_dir = \"{}\"",
        cache.display()
    ))?;
    let echo_t = table("echo.wasm");
    let zoo_t = table("zoo.wasm");

    // First build compiles (and fills the cache); the second loads precompiled artifacts.
    let t = Instant::now();
    build_handlers(&defaults, &[("echo", &echo_t), ("zoo", &zoo_t)], &dir)
        .map_err(|(n, e)| anyhow::anyhow!("{n}: {e}"))?;
    let cold = t.elapsed();
    let mut loads = Vec::new();
    let mut handlers = None;
    for _ in 0..20 {
        let t = Instant::now();
        let h = build_handlers(&defaults, &[("echo", &echo_t), ("zoo", &zoo_t)], &dir)
            .map_err(|(n, e)| anyhow::anyhow!("{n}: {e}"))?;
        loads.push(t.elapsed());
        handlers = Some(h);
    }
    loads.sort();
    let handlers = handlers.unwrap();
    let echo = handlers
        .iter()
        .find(|(n, _)| n == "echo")
        .unwrap()
        .1
        .clone();
    let zoo = handlers.iter().find(|(n, _)| n == "zoo").unwrap().1.clone();

    // The guests used here make no durable calls, so the client never connects.
    let pool =
        sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://bench@127.0.0.1:1/none")?;
    let client = Client::new(pool);

    for _ in 0..200 {
        echo.run(ctx(&client, "echo", json!({"warm": true}), None))
            .await
            .ok();
    }
    let mut times = Vec::with_capacity(runs);
    let all = Instant::now();
    for i in 0..runs {
        let c = ctx(&client, "echo", json!({"i": i}), None);
        let t = Instant::now();
        let r = echo.run(c).await;
        times.push(t.elapsed());
        assert!(r.is_ok(), "echo failed: {:?}", r.err());
    }
    let total = all.elapsed();
    times.sort();

    let mut spin = Vec::new();
    let mut blocked = Vec::new();
    let deadline = Duration::from_millis(200);
    for _ in 0..5 {
        let t = Instant::now();
        let r = zoo
            .run(ctx(
                &client,
                "zoo",
                json!({"mode": "infinite-loop"}),
                Some(deadline),
            ))
            .await;
        spin.push(t.elapsed());
        assert!(
            matches!(r, Err(TaskError::Failed(ref f)) if f.name == "$Timeout"),
            "{r:?}"
        );
        // A guest blocked in a host call cannot see epochs: the worker's race stops it.
        let t = Instant::now();
        let r = tokio::time::timeout(
            deadline,
            zoo.run(ctx(
                &client,
                "zoo",
                json!({"mode": "block-poll"}),
                Some(deadline),
            )),
        )
        .await;
        blocked.push(t.elapsed());
        assert!(r.is_err(), "block-poll should only end by the race");
    }
    spin.sort();
    blocked.sort();
    let _ = std::fs::remove_dir_all(&cache);

    println!(
        "absurd-host sandbox benchmark ({} cores, {})",
        std::thread::available_parallelism()?.get(),
        cpu_model()
    );
    println!("  components: {}", dir.display());
    println!("  compile + cache both components (cold):   {:>9.1?}", cold);
    println!(
        "  load both from the precompiled cache:     p50 {:>9.1?}  p99 {:>9.1?}",
        percentile(&loads, 0.5),
        percentile(&loads, 0.99)
    );
    println!("  echo run (store+instantiate+call+drop), n={runs}:");
    println!(
        "      p50 {:>9.1?}   p99 {:>9.1?}   max {:>9.1?}   {:.0} runs/s sequential",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1],
        runs as f64 / total.as_secs_f64()
    );
    println!("  timeout precision, deadline {deadline:?}:");
    println!(
        "      spinning guest (epoch interrupt):      min {:>7.1?}  median {:>7.1?}  max {:>7.1?}",
        spin[0],
        percentile(&spin, 0.5),
        spin[spin.len() - 1]
    );
    println!(
        "      guest blocked in WASI poll (race):     min {:>7.1?}  median {:>7.1?}  max {:>7.1?}",
        blocked[0],
        percentile(&blocked, 0.5),
        blocked[blocked.len() - 1]
    );
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
