//! `GET /metrics` (and the DSA-110 pipeline's `GET /api/absurd/metrics/prometheus`): the Prometheus text
//! exposition format, version 0.0.4, written by hand.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use sqlx::PgPool;

use super::AppState;
use crate::metrics::{Event, Histogram, Snapshot};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let mut pools: Vec<(String, PgPool)> = vec![("api".to_string(), st.client.pool().clone())];
    pools.extend(st.settings.extra_pools.iter().cloned());
    let text = render(
        &st.counters.full_snapshot(),
        &pools,
        st.started.elapsed().as_secs_f64(),
    );
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

/// Escapes a label value (`\`, `"` and newlines).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A float as Prometheus writes it.
pub fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, pairs: &[(&str, &str)], h: &Histogram) {
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        let b = num(*bound);
        let mut p = pairs.to_vec();
        p.push(("le", &b));
        let _ = writeln!(out, "{name}_bucket{} {count}", labels(&p));
    }
    let mut p = pairs.to_vec();
    p.push(("le", "+Inf"));
    let _ = writeln!(out, "{name}_bucket{} {}", labels(&p), h.count);
    let _ = writeln!(out, "{name}_sum{} {}", labels(pairs), num(h.sum));
    let _ = writeln!(out, "{name}_count{} {}", labels(pairs), h.count);
}

fn event_help(e: Event) -> &'static str {
    match e {
        Event::Spawned => "Tasks spawned through this process's HTTP API.",
        Event::Claimed => "Runs claimed by this process's worker.",
        Event::Completed => "Runs completed by this process's worker.",
        Event::Failed => "Runs failed by this process's worker (the task may be retried).",
        Event::DeadLettered => {
            "Failed tasks copied into the dead-letter queue by this process's worker."
        }
        Event::TimedOut => "Runs stopped at their time limit.",
        Event::Suspended => "Runs that suspended (sleep or waiting for an event).",
        Event::Lost => "Runs lost while executing (cancelled, or the lease was taken over).",
        Event::Deferred => {
            "Runs of task names without a handler here, deferred for another worker."
        }
        Event::HandedBack => "Runs handed back to the queue at shutdown.",
    }
}

/// The whole exposition.
pub fn render(s: &Snapshot, pools: &[(String, PgPool)], uptime_secs: f64) -> String {
    let mut out = String::new();
    for e in Event::ALL {
        let name = format!("absurd_tasks_{}_total", e.as_str());
        header(&mut out, &name, "counter", event_help(e));
        for ((q, t, ev), n) in &s.events {
            if *ev == e {
                let _ = writeln!(
                    out,
                    "{name}{} {n}",
                    labels(&[("queue", q), ("task_name", t)])
                );
            }
        }
    }

    let name = "absurd_task_run_duration_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Time a run executed on this worker, by outcome (completed, failed, suspended, lost).",
    );
    for ((q, t, o), h) in &s.durations {
        histogram(
            &mut out,
            name,
            &[("queue", q), ("task_name", t), ("outcome", o)],
            h,
        );
    }

    let name = "absurd_task_pickup_latency_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Time from a task's first run being created (spawn) to its claim by this worker (first attempts only).",
    );
    for (q, h) in &s.pickup {
        histogram(&mut out, name, &[("queue", q)], h);
    }

    let name = "absurd_tasks_in_flight";
    header(
        &mut out,
        name,
        "gauge",
        "Runs executing on this worker now.",
    );
    for ((q, t), n) in &s.in_flight {
        let _ = writeln!(
            out,
            "{name}{} {n}",
            labels(&[("queue", q), ("task_name", t)])
        );
    }

    let name = "absurd_sandbox_traps_total";
    header(
        &mut out,
        name,
        "counter",
        "WebAssembly runs ended by a trap, by cause.",
    );
    for (c, n) in &s.traps {
        let _ = writeln!(out, "{name}{} {n}", labels(&[("cause", c)]));
    }

    let name = "absurd_subprocess_exits_total";
    header(&mut out, name, "counter", "Native subprocess runs ended, by class (success, program_failed, program_killed, timeout, ...).");
    for (c, n) in &s.exits {
        let _ = writeln!(out, "{name}{} {n}", labels(&[("class", c)]));
    }

    header(
        &mut out,
        "absurd_db_pool_connections",
        "gauge",
        "Open database connections by pool and state.",
    );
    for (p, pool) in pools {
        let size = pool.size() as usize;
        let idle = pool.num_idle().min(size);
        let _ = writeln!(
            out,
            "absurd_db_pool_connections{} {idle}",
            labels(&[("pool", p), ("state", "idle")])
        );
        let _ = writeln!(
            out,
            "absurd_db_pool_connections{} {}",
            labels(&[("pool", p), ("state", "in_use")]),
            size - idle
        );
    }
    header(
        &mut out,
        "absurd_db_pool_max_connections",
        "gauge",
        "Configured maximum connections by pool.",
    );
    for (p, pool) in pools {
        let _ = writeln!(
            out,
            "absurd_db_pool_max_connections{} {}",
            labels(&[("pool", p)]),
            pool.options().get_max_connections()
        );
    }

    header(
        &mut out,
        "absurd_host_uptime_seconds",
        "gauge",
        "Seconds since this process's API started.",
    );
    let _ = writeln!(out, "absurd_host_uptime_seconds {}", num(uptime_secs));
    header(
        &mut out,
        "absurd_host_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        out,
        "absurd_host_build_info{} 1",
        labels(&[("version", env!("CARGO_PKG_VERSION"))])
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Counters;

    #[test]
    fn renders_counters_and_histograms() {
        let c = Counters::default();
        c.add("q\"x", "echo", Event::Completed);
        c.observe_run("q", "echo", "completed", 0.02);
        c.trap("out of fuel");
        let text = render(&c.full_snapshot(), &[], 1.5);
        assert!(
            text.contains("absurd_tasks_completed_total{queue=\"q\\\"x\",task_name=\"echo\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("absurd_task_run_duration_seconds_bucket{queue=\"q\",task_name=\"echo\",outcome=\"completed\",le=\"0.025\"} 1\n"));
        assert!(text.contains("absurd_task_run_duration_seconds_bucket{queue=\"q\",task_name=\"echo\",outcome=\"completed\",le=\"0.01\"} 0\n"));
        assert!(text.contains("_count{queue=\"q\",task_name=\"echo\",outcome=\"completed\"} 1\n"));
        assert!(text.contains("absurd_sandbox_traps_total{cause=\"out of fuel\"} 1\n"));
        assert!(text.contains("# TYPE absurd_tasks_spawned_total counter\n"));
        assert_eq!(num(f64::INFINITY), "+Inf");
        assert_eq!(escape("a\\b\nc"), "a\\\\b\\nc");
    }
}
