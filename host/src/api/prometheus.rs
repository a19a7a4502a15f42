//! `GET /metrics` (and the DSA-110 pipeline's `GET /api/absurd/metrics/prometheus`): the
//! Prometheus text exposition format, version 0.0.4, encoded by `prometheus-client`.
//!
//! A scrape builds a small registry: the worker's [`Counters`] (shared families, so nothing
//! is copied), the database pools and uptime read now, the build info, and the standard
//! `process_*` metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sqlx::PgPool;

use super::AppState;
use absurd_engine::metrics::process::ProcessCollector;
use absurd_engine::metrics::Counters;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The same metrics at the DSA-110 pipeline's path.
#[utoipa::path(
    get,
    path = "/api/absurd/metrics/prometheus",
    operation_id = "metricsSeedPath",
    tag = "meta",
    responses(
        (status = 200, description = "Text exposition format 0.0.4 (the same as /metrics)", body = String, content_type = "text/plain"),
        (status = 500, description = "The metrics could not be encoded", body = String, content_type = "text/plain"),
    )
)]
pub(crate) async fn metrics_seed_path(st: State<AppState>) -> Response {
    metrics(st).await
}

/// Prometheus metrics: task counters by queue and task name, run duration and pickup latency
/// histograms, in-flight gauge, sandbox traps, subprocess exits, database pools, and the
/// standard `process_*` metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "meta",
    responses(
        (status = 200, description = "Text exposition format 0.0.4", body = String, content_type = "text/plain"),
        (status = 500, description = "The metrics could not be encoded", body = String, content_type = "text/plain"),
    )
)]
pub(crate) async fn metrics(State(st): State<AppState>) -> Response {
    let mut pools: Vec<(String, PgPool)> = vec![("api".to_string(), st.client.pool().clone())];
    pools.extend(st.settings.extra_pools.iter().cloned());
    match render(&st.counters, pools, st.started.elapsed().as_secs_f64()) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not encode the metrics",
            )
                .into_response()
        }
    }
}

/// The whole exposition.
pub fn render(
    counters: &Counters,
    pools: Vec<(String, PgPool)>,
    uptime_secs: f64,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    counters.register(&mut registry);
    registry.register_collector(Box::new(Pools(pools)));
    registry.register(
        "absurd_host_uptime_seconds",
        "Seconds since this process's API started",
        ConstGauge::new(uptime_secs),
    );
    // An info metric is written `absurd_host_build_info{version="…"} 1`, typed gauge in 0.0.4.
    registry.register(
        "absurd_host_build",
        "Always 1; the version is a label",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(ProcessCollector));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The database pools' connections, read at scrape time.
#[derive(Debug)]
struct Pools(Vec<(String, PgPool)>);

impl Collector for Pools {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "absurd_db_pool_connections",
            "Open database connections by pool and state.",
            None,
            MetricType::Gauge,
        )?;
        for (name, pool) in &self.0 {
            let size = pool.size() as usize;
            let idle = pool.num_idle().min(size);
            for (state, n) in [("idle", idle), ("in_use", size - idle)] {
                let labels = [("pool", name.as_str()), ("state", state)];
                ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "absurd_db_pool_max_connections",
            "Configured maximum connections by pool.",
            None,
            MetricType::Gauge,
        )?;
        for (name, pool) in &self.0 {
            let labels = [("pool", name.as_str())];
            let max = i64::from(pool.options().get_max_connections());
            ConstGauge::new(max).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use absurd_client::vocab::FailureName;
    use absurd_engine::metrics::{Event, Exit, Outcome, TaskTable};

    #[test]
    fn renders_counters_histograms_and_process_metrics() {
        let c = Counters::default();
        c.add("q\"x", "echo", Event::Completed);
        let table = TaskTable::new(&c, &["q".to_string()], ["echo"]);
        let m = table.get("q", "echo");
        m.observe_run(Outcome::Completed, 0.02);
        m.observe_pickup(1800.5);
        c.trap("out of fuel");
        c.subprocess_exit(Exit::Failed(FailureName::ProgramFailed));
        c.subprocess_exit(Exit::Success);
        c.subprocess_exit(Exit::Success);
        let text = render(&c, vec![], 1.5).unwrap();
        for line in [
            "absurd_tasks_completed_total{queue=\"q\\\"x\",task_name=\"echo\"} 1\n",
            "absurd_task_run_duration_seconds_bucket{queue=\"q\",task_name=\"echo\",outcome=\"completed\",le=\"0.025\"} 1\n",
            "absurd_task_run_duration_seconds_bucket{queue=\"q\",task_name=\"echo\",outcome=\"completed\",le=\"0.01\"} 0\n",
            "absurd_task_run_duration_seconds_bucket{queue=\"q\",task_name=\"echo\",outcome=\"completed\",le=\"1800\"} 1\n",
            "absurd_task_run_duration_seconds_count{queue=\"q\",task_name=\"echo\",outcome=\"completed\"} 1\n",
            "absurd_task_pickup_latency_seconds_bucket{queue=\"q\",le=\"30\"} 0\n",
            "absurd_task_pickup_latency_seconds_bucket{queue=\"q\",le=\"+Inf\"} 1\n",
            "absurd_task_pickup_latency_seconds_sum{queue=\"q\"} 1800.5\n",
            "absurd_sandbox_traps_total{cause=\"out of fuel\"} 1\n",
            "absurd_subprocess_exits_total{class=\"program_failed\"} 1\n",
            "absurd_subprocess_exits_total{class=\"success\"} 2\n",
            // Listed before anything was counted.
            "# HELP absurd_tasks_spawned_total Tasks spawned through this process's HTTP API.\n",
            "# TYPE absurd_tasks_spawned_total counter\n",
            "# TYPE absurd_tasks_in_flight gauge\n",
            "# TYPE absurd_db_pool_connections gauge\n",
            "absurd_host_uptime_seconds 1.5\n",
            "# TYPE absurd_host_build_info gauge\n",
            concat!("absurd_host_build_info{version=\"", env!("CARGO_PKG_VERSION"), "\"} 1\n"),
            "# TYPE process_cpu_seconds_total counter\n",
            "# TYPE process_start_time_seconds gauge\n",
        ] {
            assert!(text.contains(line), "lacks {line:?}:\n{text}");
        }
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name}in:\n{text}"));
            let v: f64 = line[name.len()..].parse().unwrap();
            // A test process may not have used a whole clock tick of CPU yet.
            let least = if name.starts_with("process_cpu") {
                0.0
            } else {
                1.0
            };
            assert!(v >= least, "{line}");
        }
        // No help text ends in two full stops (the library adds one).
        assert!(!text.contains("..\n"), "{text}");
    }
}
