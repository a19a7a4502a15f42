//! Counters kept by the worker, for logs and for the metrics endpoint (`GET /metrics`, see
//! `api::prometheus`).
//!
//! Everything here is process-local and in memory, held in `prometheus-client` families:
//! counts by `(queue, task name, event)`, run-duration and pickup-latency histograms, the
//! in-flight gauge, sandbox traps by cause and native subprocess exits by class. A
//! [`Counters`] is cheap to clone (clones share the same numbers), so the worker and the HTTP
//! API of one process see the same values.
//!
//! The worker's per-run path does not go through a family: it looks up a [`TaskMetrics`]
//! once per run in a [`TaskTable`] built when the worker starts (an immutable map: no lock,
//! no allocation), and every count after that is an atomic add on a handle cached in a
//! `OnceLock`. A family (a `RwLock` around a map with owned label strings) is reached only
//! the first time a series is used, and by the cold paths (API spawns, dead-letter sweeps,
//! traps).

pub mod process;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use absurd_client::vocab::FailureName;

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
    /// How many events there are (`event as usize` indexes arrays of this length).
    pub const COUNT: usize = 10;

    /// In the order the exposition lists them.
    pub const ALL: [Event; Event::COUNT] = [
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

    fn help(self) -> &'static str {
        match self {
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
}

/// How a run ended, as the `outcome` label of the run-duration histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Completed,
    Failed,
    Suspended,
    Lost,
}

impl Outcome {
    const COUNT: usize = 4;

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Suspended => "suspended",
            Outcome::Lost => "lost",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// How a native subprocess run ended, as the `class` label of `absurd_subprocess_exits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// A failure the host named; the class is [`exit_class`] of the name.
    Failed(FailureName),
    /// Any other failure, counted under one label so that the label set stays bounded.
    Other,
}

/// Upper bounds (seconds) of the run-duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 1800.0,
];
/// Upper bounds (seconds) of the pickup-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

// ---- label sets ------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TaskLabels {
    queue: String,
    task_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RunLabels {
    queue: String,
    task_name: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabels {
    cause: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

// ---- a lock-free histogram -------------------------------------------------------------------

/// A histogram with fixed bucket bounds, observed with atomic adds only.
///
/// `prometheus-client`'s own `Histogram` takes a mutex on every observation; this one plugs
/// into the same families and encoders (through [`EncodeMetric`]) without one, so that a run
/// finishing never waits on another. Buckets are stored per bucket (not cumulated), and a
/// scrape derives the count from them, so `+Inf` always equals the sum of the buckets.
#[derive(Debug, Clone)]
pub struct AtomicHistogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    bounds: &'static [f64],
    /// One per bound, then the overflow bucket.
    buckets: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram(Arc::new(HistogramCells {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn observe(&self, value: f64) {
        let v = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let cells = &self.0;
        // The first bucket whose upper bound holds `v`; past the last bound, the overflow.
        let i = cells.bounds.partition_point(|b| *b < v);
        cells.buckets[i].fetch_add(1, Ordering::Relaxed);
        let _ = cells
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let cells = &self.0;
        let counts: Vec<u64> = cells
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count = counts.iter().sum();
        // The encoder cumulates these and adds `+Inf` (the count) itself.
        let finite: Vec<(f64, u64)> = cells.bounds.iter().copied().zip(counts).collect();
        let sum = f64::from_bits(cells.sum.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(
            sum,
            count,
            &finite,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

fn duration_histogram() -> AtomicHistogram {
    AtomicHistogram::new(&DURATION_BUCKETS)
}

fn latency_histogram() -> AtomicHistogram {
    AtomicHistogram::new(&LATENCY_BUCKETS)
}

/// A metric listed (`# HELP`, `# TYPE`) even before it has a series: `prometheus-client` skips
/// empty families, but dashboards and tests look for every metric from the first scrape.
#[derive(Debug)]
struct Listed<M>(M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// `prometheus-client` ends every help text with a full stop itself.
fn help(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}

// ---- the counters ----------------------------------------------------------------------------

type HistogramFamily<L> = Family<L, AtomicHistogram, fn() -> AtomicHistogram>;

#[derive(Debug)]
struct Families {
    /// Indexed by `Event as usize`.
    events: [Family<TaskLabels, Counter>; Event::COUNT],
    /// Sums over queues and task names, for logs (a family cannot be iterated from outside).
    totals: [AtomicU64; Event::COUNT],
    durations: HistogramFamily<RunLabels>,
    pickup: HistogramFamily<QueueLabels>,
    in_flight: Family<TaskLabels, Gauge>,
    traps: Family<CauseLabels, Counter>,
    exits: Family<ClassLabels, Counter>,
    /// The exit counters, by `FailureName as usize`, then `success` and `other`: a native run
    /// counts its exit without building its label.
    exit_slots: Box<[OnceLock<Counter>]>,
    /// The `(queue, task name)` pairs that have a series of their own, at most
    /// [`MAX_TASK_SERIES`]. Reached only when a pair's handles are first made, never per run.
    task_series: Mutex<HashSet<TaskLabels>>,
    /// Maintenance (`absurd-host maintain`, the elected worker): deleted rows by kind
    /// (`completed`, `failed`, `cancelled` tasks, `events`), passes by result, and when the
    /// last pass of this process ended.
    maintenance_deleted: Family<KindLabels, Counter>,
    maintenance_passes: Family<ResultLabels, Counter>,
    maintenance_last_pass: Gauge,
}

/// How many distinct `(queue, task name)` pairs get series of their own. Task names come from
/// whoever spawns (any Absurd client, the API), and a family keeps every series for the
/// process's life, so without a bound a client could grow a worker's memory one name at a time.
/// Pairs past the bound are counted under [`OVERFLOW_LABEL`] for both labels.
pub const MAX_TASK_SERIES: usize = 1_000;

/// The queue and task-name label of the series that counts every pair past
/// [`MAX_TASK_SERIES`].
pub const OVERFLOW_LABEL: &str = "(other)";

impl Default for Families {
    fn default() -> Families {
        Families {
            events: std::array::from_fn(|_| Family::default()),
            totals: std::array::from_fn(|_| AtomicU64::new(0)),
            durations: Family::new_with_constructor(duration_histogram),
            pickup: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
            traps: Family::default(),
            exits: Family::default(),
            exit_slots: (0..FailureName::ALL.len() + 2)
                .map(|_| OnceLock::new())
                .collect(),
            task_series: Mutex::new(HashSet::new()),
            maintenance_deleted: Family::default(),
            maintenance_passes: Family::default(),
            maintenance_last_pass: Gauge::default(),
        }
    }
}

/// Counts by `(queue, task name, event)`, plus histograms and gauges.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    families: Arc<Families>,
}

impl Counters {
    /// Counts one event. For paths off the per-run one (API spawns, sweeps): it builds the
    /// labels and goes through the family; a run uses its [`TaskMetrics`].
    pub fn add(&self, queue: &str, task: &str, event: Event) {
        let labels = self.families.task_labels(queue, task);
        self.families.events[event as usize]
            .get_or_create(&labels)
            .inc();
        self.families.totals[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Sum over queues and task names.
    pub fn total(&self, event: Event) -> u64 {
        self.families.totals[event as usize].load(Ordering::Relaxed)
    }

    /// The handles of one `(queue, task name)`, each made on first use.
    pub fn task(&self, queue: &str, task: &str) -> TaskMetrics {
        TaskMetrics {
            families: self.families.clone(),
            labels: self.families.task_labels(queue, task),
            events: std::array::from_fn(|_| OnceLock::new()),
            in_flight: OnceLock::new(),
            durations: std::array::from_fn(|_| OnceLock::new()),
            pickup: OnceLock::new(),
        }
    }

    /// Counts a sandbox trap (`stack overflow`, `out of fuel`, `memory limit`, …). Only a
    /// failing run gets here, so building the label is fine.
    pub fn trap(&self, cause: &str) {
        let labels = CauseLabels {
            cause: cause.to_string(),
        };
        self.families.traps.get_or_create(&labels).inc();
    }

    /// Counts a native subprocess ending.
    pub fn subprocess_exit(&self, exit: Exit) {
        let slot = match exit {
            Exit::Failed(name) => name as usize,
            Exit::Success => FailureName::ALL.len(),
            Exit::Other => FailureName::ALL.len() + 1,
        };
        self.families.exit_slots[slot]
            .get_or_init(|| {
                let class = match exit {
                    Exit::Failed(name) => exit_class(name),
                    Exit::Success => "success".into(),
                    Exit::Other => "other".into(),
                };
                self.families
                    .exits
                    .get_or_create_owned(&ClassLabels { class })
            })
            .inc();
    }

    /// Counts rows a maintenance pass deleted; `kind` is `completed`, `failed`, `cancelled`
    /// (tasks) or `events`.
    pub fn maintenance_deleted(&self, kind: &'static str, rows: u64) {
        self.families
            .maintenance_deleted
            .get_or_create(&KindLabels { kind })
            .inc_by(rows);
    }

    /// Counts a finished maintenance pass, and when it ended (Unix seconds).
    pub fn maintenance_pass(&self, ok: bool, ended_unix_secs: i64) {
        let result = if ok { "ok" } else { "error" };
        self.families
            .maintenance_passes
            .get_or_create(&ResultLabels { result })
            .inc();
        self.families.maintenance_last_pass.set(ended_unix_secs);
    }

    /// Adds every metric to `registry` (clones share the numbers with these counters).
    pub fn register(&self, registry: &mut Registry) {
        let f = &self.families;
        for e in Event::ALL {
            // Counters are registered without `_total`: the encoder appends it.
            registry.register(
                format!("absurd_tasks_{}", e.as_str()),
                help(e.help()),
                Listed(f.events[e as usize].clone()),
            );
        }
        registry.register(
            "absurd_task_run_duration_seconds",
            "Time a run executed on this worker, by outcome (completed, failed, suspended, lost)",
            Listed(f.durations.clone()),
        );
        registry.register(
            "absurd_task_pickup_latency_seconds",
            "Time from a task's first run being created (spawn) to its claim by this worker (first attempts only)",
            Listed(f.pickup.clone()),
        );
        registry.register(
            "absurd_tasks_in_flight",
            "Runs executing on this worker now",
            Listed(f.in_flight.clone()),
        );
        registry.register(
            "absurd_sandbox_traps",
            "WebAssembly runs ended by a trap, by cause",
            Listed(f.traps.clone()),
        );
        registry.register(
            "absurd_maintenance_deleted",
            "Rows deleted by this process's maintenance passes, by kind (completed, failed, cancelled tasks; events)",
            f.maintenance_deleted.clone(),
        );
        registry.register(
            "absurd_maintenance_passes",
            "Maintenance passes this process ran, by result (ok, error)",
            f.maintenance_passes.clone(),
        );
        registry.register(
            "absurd_maintenance_last_pass_timestamp_seconds",
            "When this process's last maintenance pass ended (Unix time; 0 before the first)",
            f.maintenance_last_pass.clone(),
        );
        registry.register(
            "absurd_subprocess_exits",
            "Native subprocess runs ended, by class (success, program_failed, program_killed, timeout, ...)",
            Listed(f.exits.clone()),
        );
    }
}

impl Families {
    /// The labels of `(queue, task)`: its own while fewer than [`MAX_TASK_SERIES`] pairs have
    /// series, the shared overflow labels after that.
    fn task_labels(&self, queue: &str, task: &str) -> TaskLabels {
        let labels = TaskLabels {
            queue: queue.to_string(),
            task_name: task.to_string(),
        };
        // A poisoned lock only means another thread panicked while inserting; the set is
        // still a valid set.
        let mut seen = self.task_series.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&labels) {
            return labels;
        }
        if seen.len() < MAX_TASK_SERIES {
            seen.insert(labels.clone());
            return labels;
        }
        TaskLabels {
            queue: OVERFLOW_LABEL.to_string(),
            task_name: OVERFLOW_LABEL.to_string(),
        }
    }
}

/// The metrics of one `(queue, task name)`, for a run to count into.
///
/// Each handle is fetched from its family the first time it is used and kept here, so that
/// later runs of the same task name count with atomic adds alone. Handles are clones of the
/// family's own (`Arc`s), so a series appears in the exposition only once it has been used.
#[derive(Debug)]
pub struct TaskMetrics {
    families: Arc<Families>,
    labels: TaskLabels,
    events: [OnceLock<Counter>; Event::COUNT],
    in_flight: OnceLock<Gauge>,
    durations: [OnceLock<AtomicHistogram>; Outcome::COUNT],
    pickup: OnceLock<AtomicHistogram>,
}

impl TaskMetrics {
    pub fn add(&self, event: Event) {
        let i = event as usize;
        self.events[i]
            .get_or_init(|| self.families.events[i].get_or_create_owned(&self.labels))
            .inc();
        self.families.totals[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a run as executing until the returned guard is dropped.
    pub fn start_run(&self) -> InFlight<'_> {
        let gauge = self
            .in_flight
            .get_or_init(|| self.families.in_flight.get_or_create_owned(&self.labels));
        gauge.inc();
        InFlight(gauge)
    }

    /// Records how long a run executed.
    pub fn observe_run(&self, outcome: Outcome, seconds: f64) {
        self.durations[outcome as usize]
            .get_or_init(|| {
                let labels = RunLabels {
                    queue: self.labels.queue.clone(),
                    task_name: self.labels.task_name.clone(),
                    outcome,
                };
                self.families.durations.get_or_create_owned(&labels)
            })
            .observe(seconds);
    }

    /// Records the time from a run becoming claimable to its claim.
    pub fn observe_pickup(&self, seconds: f64) {
        self.pickup
            .get_or_init(|| {
                let labels = QueueLabels {
                    queue: self.labels.queue.clone(),
                };
                self.families.pickup.get_or_create_owned(&labels)
            })
            .observe(seconds);
    }
}

/// Decrements the in-flight gauge when dropped (see [`TaskMetrics::start_run`]).
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The [`TaskMetrics`] of every `(queue, task name)` a worker has a handler for, made when it
/// starts. The map is never written after that, so a run's lookup takes no lock and, by
/// borrowed keys, allocates nothing.
#[derive(Debug)]
pub struct TaskTable {
    counters: Counters,
    by_queue: HashMap<String, HashMap<String, Arc<TaskMetrics>>>,
}

impl TaskTable {
    pub fn new<'a>(
        counters: &Counters,
        queues: &[String],
        task_names: impl IntoIterator<Item = &'a str> + Clone,
    ) -> TaskTable {
        let by_queue = queues
            .iter()
            .map(|q| {
                let tasks = task_names
                    .clone()
                    .into_iter()
                    .map(|t| (t.to_string(), Arc::new(counters.task(q, t))))
                    .collect();
                (q.clone(), tasks)
            })
            .collect();
        TaskTable {
            counters: counters.clone(),
            by_queue,
        }
    }

    /// The run's metrics. A task name without a handler here (deferred or failed at once)
    /// gets fresh handles, built from its labels.
    pub fn get(&self, queue: &str, task: &str) -> Arc<TaskMetrics> {
        match self.by_queue.get(queue).and_then(|tasks| tasks.get(task)) {
            Some(m) => m.clone(),
            None => Arc::new(self.counters.task(queue, task)),
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
    fn histogram_buckets_by_upper_bound() {
        let h = AtomicHistogram::new(&LATENCY_BUCKETS);
        h.observe(0.003);
        h.observe(0.005); // on a bound: in that bucket
        h.observe(100.0);
        h.observe(f64::NAN); // counted as 0
        assert_eq!(h.count(), 4);
        let counts: Vec<u64> =
            h.0.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
        assert_eq!(counts[0], 1); // <= 0.001: the NaN
        assert_eq!(counts[2], 2); // (0.0025, 0.005]
        assert_eq!(*counts.last().unwrap(), 1); // overflow
        assert!((f64::from_bits(h.0.sum.load(Ordering::Relaxed)) - 100.008).abs() < 1e-9);
    }

    #[test]
    fn task_metrics_share_the_family_series() {
        let c = Counters::default();
        let table = TaskTable::new(&c, &["q".to_string()], ["t"]);
        let m = table.get("q", "t");
        assert!(
            Arc::ptr_eq(&m, &table.get("q", "t")),
            "looked up, not rebuilt"
        );
        m.add(Event::Completed);
        c.add("q", "t", Event::Completed);
        table.get("q", "unknown").add(Event::Deferred);
        assert_eq!(c.total(Event::Completed), 2);
        assert_eq!(c.total(Event::Deferred), 1);
        let labels = c.families.task_labels("q", "t");
        assert_eq!(
            c.families.events[Event::Completed as usize]
                .get_or_create(&labels)
                .get(),
            2
        );
        let g = m.start_run();
        let gauge = || c.families.in_flight.get_or_create(&labels).get();
        assert_eq!(gauge(), 1);
        drop(g);
        assert_eq!(gauge(), 0);
    }

    #[test]
    fn maintenance_is_counted_and_exposed() {
        let c = Counters::default();
        c.maintenance_deleted("completed", 5);
        c.maintenance_deleted("completed", 2);
        c.maintenance_deleted("events", 1);
        c.maintenance_pass(true, 1_700_000_000);
        c.maintenance_pass(false, 1_700_000_100);
        let mut registry = Registry::default();
        c.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "absurd_maintenance_deleted_total{kind=\"completed\"} 7\n",
            "absurd_maintenance_deleted_total{kind=\"events\"} 1\n",
            "absurd_maintenance_passes_total{result=\"ok\"} 1\n",
            "absurd_maintenance_passes_total{result=\"error\"} 1\n",
            "absurd_maintenance_last_pass_timestamp_seconds 1700000100\n",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn task_series_are_bounded() {
        let c = Counters::default();
        for i in 0..MAX_TASK_SERIES {
            c.add("q", &format!("t{i}"), Event::Spawned);
        }
        // Past the bound, new names share one series; names seen before keep theirs.
        c.add("q", "one-too-many", Event::Spawned);
        c.task("other-queue", "another").add(Event::Spawned);
        c.add("q", "t0", Event::Spawned);
        let family = &c.families.events[Event::Spawned as usize];
        let overflow = TaskLabels {
            queue: OVERFLOW_LABEL.into(),
            task_name: OVERFLOW_LABEL.into(),
        };
        assert_eq!(family.get_or_create(&overflow).get(), 2);
        let t0 = TaskLabels {
            queue: "q".into(),
            task_name: "t0".into(),
        };
        assert_eq!(family.get_or_create(&t0).get(), 2);
        assert_eq!(c.total(Event::Spawned), MAX_TASK_SERIES as u64 + 3);
        assert_eq!(
            c.families.task_series.lock().unwrap().len(),
            MAX_TASK_SERIES
        );
    }

    #[test]
    fn classes() {
        // `subprocess_exit` indexes its slots by `FailureName as usize`.
        for (i, name) in FailureName::ALL.iter().enumerate() {
            assert_eq!(*name as usize, i);
        }
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
