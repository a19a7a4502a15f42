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
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sqlx::PgPool;

use super::model::TaskMetrics;
use super::AppState;
use absurd_engine::metrics::process::ProcessCollector;
use absurd_engine::metrics::Counters;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The same metrics at the DSA-110 pipeline's path, and the DSA-110 pipeline's own metric
/// names, computed from the queue tables as `GET /api/absurd/metrics` computes them.
#[utoipa::path(
    get,
    path = "/api/absurd/metrics/prometheus",
    operation_id = "metricsSeedPath",
    tag = "meta",
    responses(
        (status = 200, description = "Text exposition format 0.0.4: those of /metrics, and the DSA-110 pipeline's absurd_tasks_total, absurd_tasks_current, absurd_wait_time_seconds, absurd_execution_time_seconds, absurd_throughput_per_minute, absurd_success_rate, absurd_error_rate (absurd_task_metrics_up is 0 when the database could not be read)", body = String, content_type = "text/plain"),
        (status = 500, description = "The metrics could not be encoded", body = String, content_type = "text/plain"),
    )
)]
pub(crate) async fn metrics_seed_path(State(st): State<AppState>) -> Response {
    let seed = match st.client.task_metrics(None).await {
        Ok(m) => Some(TaskMetrics::new(&m, None)),
        Err(e) => {
            tracing::warn!(error = %e, "the DSA-110 task metrics could not be read; scraping without them");
            None
        }
    };
    respond(&st, Some(seed))
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
    respond(&st, None)
}

/// The exposition as a response; `seed` is `Some` on the DSA-110 pipeline's path (with the
/// figures, or `None` when they could not be read).
fn respond(st: &AppState, seed: Option<Option<TaskMetrics>>) -> Response {
    let mut pools: Vec<(String, PgPool)> = vec![("api".to_string(), st.client.pool().clone())];
    pools.extend(st.settings.extra_pools.iter().cloned());
    match render_with(
        &st.counters,
        pools,
        st.started.elapsed().as_secs_f64(),
        seed,
    ) {
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
    render_with(counters, pools, uptime_secs, None)
}

/// The whole exposition, with the DSA-110 pipeline's metrics when `seed` is `Some`.
fn render_with(
    counters: &Counters,
    pools: Vec<(String, PgPool)>,
    uptime_secs: f64,
    seed: Option<Option<TaskMetrics>>,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    if let Some(seed) = seed {
        registry.register_collector(Box::new(SeedMetrics(seed)));
    }
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

/// The DSA-110 pipeline's metric names, from [`TaskMetrics`] (`None`: the database could not
/// be read, and only `absurd_task_metrics_up 0` is written).
#[derive(Debug)]
struct SeedMetrics(Option<TaskMetrics>);

impl Collector for SeedMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let up = encoder.encode_descriptor(
            "absurd_task_metrics_up",
            "1 when the DSA-110 task metrics below were read from the database, 0 when not.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(self.0.is_some())).encode(up)?;
        let Some(m) = &self.0 else {
            return Ok(());
        };
        // Tasks by state from the tables (a task cleaned up is no longer counted, so this
        // "counter" can go down; the DSA-110 pipeline typed it so).
        let mut family = encoder.encode_descriptor(
            "absurd_tasks",
            "Tasks by status, from the queue tables (the DSA-110 pipeline's names).",
            None,
            MetricType::Counter,
        )?;
        for (status, n) in [
            ("spawned", m.total_spawned),
            ("claimed", m.total_claimed),
            ("completed", m.total_completed),
            ("failed", m.total_failed),
            ("cancelled", m.total_cancelled),
            ("timed_out", m.total_timed_out),
        ] {
            let labels = [("status", status)];
            ConstCounter::new(n.max(0) as u64).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "absurd_tasks_current",
            "Tasks pending, claimed (running) and sleeping now.",
            None,
            MetricType::Gauge,
        )?;
        for (status, n) in [
            ("pending", m.current_pending),
            ("claimed", m.current_claimed),
            ("sleeping", m.current_sleeping),
        ] {
            let labels = [("status", status)];
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }
        let quantiles = |encoder: &mut DescriptorEncoder,
                         name: &str,
                         help: &str,
                         values: [(&str, f64); 3],
                         avg: f64|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (q, v) in values {
                let labels = [("quantile", q)];
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
            let avg_name = format!("{name}_avg");
            let family = encoder.encode_descriptor(
                &avg_name,
                "The mean of the same.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(avg).encode(family)
        };
        quantiles(
            &mut encoder,
            "absurd_wait_time_seconds",
            "Seconds from a run's creation to its start, by quantile (latest 1,000 started runs of the last 24 hours).",
            [
                ("0.5", m.p50_wait_time_sec),
                ("0.95", m.p95_wait_time_sec),
                ("0.99", m.p99_wait_time_sec),
            ],
            m.avg_wait_time_sec,
        )?;
        quantiles(
            &mut encoder,
            "absurd_execution_time_seconds",
            "Seconds from a run's start to its completion or failure, by quantile (the same runs, those finished).",
            [
                ("0.5", m.p50_execution_time_sec),
                ("0.95", m.p95_execution_time_sec),
                ("0.99", m.p99_execution_time_sec),
            ],
            m.avg_execution_time_sec,
        )?;
        let windows = |encoder: &mut DescriptorEncoder,
                       name: &str,
                       help: &str,
                       values: [f64; 3]|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (w, v) in ["1m", "5m", "15m"].into_iter().zip(values) {
                let labels = [("window", w)];
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        };
        windows(
            &mut encoder,
            "absurd_throughput_per_minute",
            "Runs completed per minute over the window.",
            [
                m.throughput_1min * 60.0,
                m.throughput_5min * 60.0,
                m.throughput_15min * 60.0,
            ],
        )?;
        windows(
            &mut encoder,
            "absurd_success_rate",
            "Completed runs over finished runs in the window (0-1; 1 with none).",
            [
                m.success_rate_1min,
                m.success_rate_5min,
                m.success_rate_15min,
            ],
        )?;
        windows(
            &mut encoder,
            "absurd_error_rate",
            "Failed runs over finished runs in the window (0-1; 0 with none).",
            [m.error_rate_1min, m.error_rate_5min, m.error_rate_15min],
        )
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
