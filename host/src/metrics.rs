//! Counters kept by the worker, for logs and for the metrics endpoint (`GET /metrics`, see
//! `api::prometheus`).
//!
//! Everything here is process-local and in memory: counts by `(queue, task name, event)`,
//! run-duration and pickup-latency histograms, the in-flight gauge, sandbox traps by cause
//! and native subprocess exits by class. A [`Counters`] is cheap to clone (clones share
//! the same numbers), so the worker and the HTTP API of one process see the same values.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::vocab::FailureName;

/// What happened to a run, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Event {
    Claimed,
    Completed,
    Failed,
    TimedOut,
    Suspended,
    Lost,
    Deferred,
    HandedBack,
    DeadLettered,
    /// A task spawned through this process's HTTP API.
    Spawned,
}

impl Event {
    pub const ALL: [Event; 10] = [
        Event::Spawned,
        Event::Claimed,
        Event::Completed,
        Event::Failed,
        Event::DeadLettered,
        Event::TimedOut,
        Event::Suspended,
        Event::Lost,
        Event::Deferred,
        Event::HandedBack,
    ];

    /// Snake-case name, used in metric names (`absurd_tasks_<name>_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Claimed => "claimed",
            Event::Completed => "completed",
            Event::Failed => "failed",
            Event::TimedOut => "timed_out",
            Event::Suspended => "suspended",
            Event::Lost => "lost",
            Event::Deferred => "deferred",
            Event::HandedBack => "handed_back",
            Event::DeadLettered => "dead_lettered",
            Event::Spawned => "spawned",
        }
    }
}

/// Upper bounds (seconds) of the run-duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 1800.0,
];
/// Upper bounds (seconds) of the pickup-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// A cumulative histogram with fixed bucket bounds (Prometheus semantics: `counts[i]` is the
/// number of observations `<= bounds[i]`; `+Inf` is `count`).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let v = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

#[derive(Debug, Default)]
struct Extra {
    /// Run durations by `(queue, task name, outcome)`.
    durations: BTreeMap<(String, String, String), Histogram>,
    /// Pickup latency by queue.
    pickup: BTreeMap<String, Histogram>,
    /// Runs executing now, by `(queue, task name)`.
    in_flight: BTreeMap<(String, String), i64>,
    /// Sandbox (wasm) traps by cause.
    traps: BTreeMap<String, u64>,
    /// Native subprocess exits by class.
    exits: BTreeMap<String, u64>,
}

type EventCounts = BTreeMap<(String, String, Event), u64>;

/// Counts by `(queue, task name, event)`, plus histograms and gauges.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    inner: Arc<Mutex<EventCounts>>,
    extra: Arc<Mutex<Extra>>,
}

/// A copy of everything in a [`Counters`], taken at once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub events: Vec<((String, String, Event), u64)>,
    pub durations: Vec<((String, String, String), Histogram)>,
    pub pickup: Vec<(String, Histogram)>,
    pub in_flight: Vec<((String, String), i64)>,
    pub traps: Vec<(String, u64)>,
    pub exits: Vec<(String, u64)>,
}

/// Decrements the in-flight gauge when dropped (see [`Counters::start_run`]).
pub struct InFlight {
    counters: Counters,
    key: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut extra = self.counters.extra.lock().unwrap();
        if let Some(n) = extra.in_flight.get_mut(&self.key) {
            *n -= 1;
        }
    }
}

impl Counters {
    pub fn add(&self, queue: &str, task: &str, event: Event) {
        *self
            .inner
            .lock()
            .unwrap()
            .entry((queue.to_string(), task.to_string(), event))
            .or_insert(0) += 1;
    }

    /// Sum over queues and task names.
    pub fn total(&self, event: Event) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, _, e), _)| *e == event)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn snapshot(&self) -> Vec<((String, String, Event), u64)> {
        self.inner
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Marks a run as executing until the returned guard is dropped.
    pub fn start_run(&self, queue: &str, task: &str) -> InFlight {
        let key = (queue.to_string(), task.to_string());
        *self
            .extra
            .lock()
            .unwrap()
            .in_flight
            .entry(key.clone())
            .or_insert(0) += 1;
        InFlight {
            counters: self.clone(),
            key,
        }
    }

    /// Records how long a run executed; `outcome` is `completed`, `failed`, `suspended`, ….
    pub fn observe_run(&self, queue: &str, task: &str, outcome: &str, seconds: f64) {
        self.extra
            .lock()
            .unwrap()
            .durations
            .entry((queue.to_string(), task.to_string(), outcome.to_string()))
            .or_insert_with(|| Histogram::new(&DURATION_BUCKETS))
            .observe(seconds);
    }

    /// Records the time from a run becoming claimable to its claim.
    pub fn observe_pickup(&self, queue: &str, seconds: f64) {
        self.extra
            .lock()
            .unwrap()
            .pickup
            .entry(queue.to_string())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(seconds);
    }

    /// Counts a sandbox trap (`stack overflow`, `out of fuel`, `memory limit`, …).
    pub fn trap(&self, cause: &str) {
        *self
            .extra
            .lock()
            .unwrap()
            .traps
            .entry(cause.to_string())
            .or_insert(0) += 1;
    }

    /// Counts a native subprocess ending (`success`, `nonzero_exit`, `signal`, …).
    pub fn subprocess_exit(&self, class: &str) {
        *self
            .extra
            .lock()
            .unwrap()
            .exits
            .entry(class.to_string())
            .or_insert(0) += 1;
    }

    /// Runs executing now, over all queues.
    pub fn in_flight(&self) -> i64 {
        self.extra.lock().unwrap().in_flight.values().sum()
    }

    /// Everything, for the metrics endpoint.
    pub fn full_snapshot(&self) -> Snapshot {
        let events = self.snapshot();
        let extra = self.extra.lock().unwrap();
        Snapshot {
            events,
            durations: extra
                .durations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pickup: extra
                .pickup
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            in_flight: extra
                .in_flight
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            traps: extra.traps.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            exits: extra.exits.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

/// The sandbox trap cause of a failure from a `wasm` handler, if it was one.
pub fn trap_cause(name: FailureName, details: &serde_json::Value) -> Option<String> {
    let cause = details.get("cause").and_then(|c| c.as_str());
    match name {
        FailureName::Trap => Some(cause.unwrap_or("trap").to_string()),
        FailureName::OutOfFuel => Some("out of fuel".into()),
        FailureName::MemoryLimit => Some("memory limit".into()),
        FailureName::Timeout if cause == Some("interrupt") => Some("interrupt".into()),
        _ => None,
    }
}

/// The exit class of a failure from a `native` handler: the failure name without its `$`,
/// in snake case (`$ProgramFailed` → `program_failed`). Only the host's names become labels,
/// so that the label set stays bounded.
pub fn exit_class(name: FailureName) -> String {
    let mut out = String::new();
    for (i, ch) in name.as_str().trim_start_matches('$').chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::new(&LATENCY_BUCKETS);
        h.observe(0.003);
        h.observe(100.0);
        assert_eq!(h.count, 2);
        assert_eq!(h.counts[0], 0);
        assert_eq!(h.counts[2], 1); // <= 0.005
        assert_eq!(*h.counts.last().unwrap(), 1);
    }

    #[test]
    fn in_flight_guard_counts_down() {
        let c = Counters::default();
        let g = c.start_run("q", "t");
        assert_eq!(c.in_flight(), 1);
        drop(g);
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn classes() {
        assert_eq!(exit_class(FailureName::ProgramFailed), "program_failed");
        assert_eq!(exit_class(FailureName::Timeout), "timeout");
        assert_eq!(
            exit_class(FailureName::TaskReportedError),
            "task_reported_error"
        );
        assert_eq!(
            trap_cause(FailureName::OutOfFuel, &serde_json::Value::Null).as_deref(),
            Some("out of fuel")
        );
        assert_eq!(
            trap_cause(
                FailureName::Timeout,
                &serde_json::json!({"cause": "interrupt"})
            )
            .as_deref(),
            Some("interrupt")
        );
        assert_eq!(
            trap_cause(FailureName::Timeout, &serde_json::Value::Null),
            None
        );
    }
}
