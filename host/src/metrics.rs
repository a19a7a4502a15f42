//! Counters kept by the worker, for logs now and the metrics endpoint later.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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
}

/// Counts by `(queue, task name, event)`.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    inner: Arc<Mutex<BTreeMap<(String, String, Event), u64>>>,
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
        self.inner.lock().unwrap().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}
