//! The worker: claim → dispatch → execute → settle → dead-letter, for one or more queues.
//!
//! Concurrency is one semaphore of `ABSURD_WORKER_CONCURRENCY` slots shared by all queues.
//! A claimer asks only for as many runs as there are free slots, and claims again as soon as a
//! slot frees while its queue still has work. A worker on one queue also claims with each
//! completion: the run that finished hands its slot straight to the run claimed in the same
//! transaction ([`Completer::complete_and_claim`]), and the claim loop only claims for slots
//! that come back empty. (With several queues, slots go back to the claim loops, which share
//! them in turn, so a busy queue cannot keep every slot.) A run that spawns into one of the
//! worker's queues claims for a slot free at that moment in the spawn's own transaction
//! ([`LocalRuns`]), and the claimed run starts here like any other. Shutdown stops claiming,
//! lets running tasks finish within the grace period, then stops the rest and hands them back
//! to the queue.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

use absurd_client::{ClaimedRun, Client, RetryStrategy, SpawnOptions};

use crate::claim::{Claimant, Claimed, Claimer, Wakeups};
use crate::dispatch::{HandlerKind, Registry};
use crate::execute::{
    CatchPanic, ContextSettings, Failure, FailureName, LocalRuns, TaskContext, TaskError,
};
use crate::lease::Leases;
use crate::metrics::{Counters, Event, Exit, Outcome, TaskMetrics, TaskTable};
use crate::settle::dead_letter::DeadLetters;
use crate::settle::{self, Completer, DeadLetterTo, Settled};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub queues: Vec<String>,
    pub worker_id: String,
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub claim_timeout: Duration,
    pub task_timeout: Duration,
    pub fail_unknown: bool,
    pub shutdown_grace: Duration,
    /// The dead-letter queue, when enabled.
    pub dlq: Option<String>,
    /// How often to look for failures written by others (lease expiry, other workers).
    pub dlq_sweep_interval: Duration,
    /// `max_attempts` for tasks spawned from inside tasks (`ABSURD_MAX_RETRIES + 1`).
    pub default_max_attempts: i32,
}

/// Retry strategy given to tasks spawned through absurd-host without one: 30 s doubling per
/// attempt, at most one hour between attempts.
pub fn default_retry_strategy() -> RetryStrategy {
    RetryStrategy::exponential(30.0, 2.0, 3600.0)
}

/// `<hostname>:<pid>:<8 hex digits>`.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let short = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &short[..8])
}

struct Shared {
    client: Client,
    registry: Registry,
    settings: WorkerSettings,
    leases: Leases,
    completer: Completer,
    counters: Counters,
    /// Each run's metric handles, looked up once per run.
    metrics: TaskTable,
    /// Cancelled when the grace period is over: running tasks stop and are handed back.
    hard_stop: CancellationToken,
    /// Cancelled on shutdown: no more claims, with completions either.
    shutdown: CancellationToken,
    /// Whether a completion claims the next run for its slot (one queue only, see the
    /// module docs).
    claim_with_completion: bool,
    /// Whether the schema fails a run in one call (`fail_run_outcome`); asked at first need.
    fail_in_one_call: tokio::sync::OnceCell<bool>,
    /// Whether the schema has migration 0019 (task results and children); asked once.
    task_results: std::sync::Arc<tokio::sync::OnceCell<bool>>,
    /// Wakes a queue's claimer to recompute its timer (after a run went to sleep here).
    wakeups: Wakeups,
    unknown_logged: WarnedNames,
    /// What spawns into this worker's queues use to claim for its free slots.
    local_runs: Arc<LocalRuns>,
}

impl Shared {
    /// Where tasks that end failed are copied, when the dead-letter queue is enabled.
    fn dead_letter_to(&self) -> Option<DeadLetterTo<'_>> {
        self.settings.dlq.as_deref().map(|dlq| DeadLetterTo {
            dlq,
            worker_id: &self.settings.worker_id,
        })
    }
}

/// Runs the worker until `shutdown` is cancelled, then drains. Returns the counters.
pub async fn run(
    client: Client,
    registry: Registry,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<Counters> {
    run_with_counters(client, registry, settings, Counters::default(), shutdown).await
}

/// [`run`] counting into `counters` (shared with, say, the HTTP API's `/metrics`).
pub async fn run_with_counters(
    client: Client,
    registry: Registry,
    settings: WorkerSettings,
    counters: Counters,
    shutdown: CancellationToken,
) -> anyhow::Result<Counters> {
    let wakeups = Wakeups::new(&settings.queues);
    let metrics = TaskTable::new(&counters, &settings.queues, registry.names());
    let claimant = Arc::new(Claimant::new(
        &settings.worker_id,
        settings.claim_timeout,
        registry.read_limits(),
    ));
    let slots = Arc::new(Semaphore::new(settings.concurrency));
    let in_flight = Arc::new(Mutex::new(JoinSet::new()));
    let shared = Arc::new_cyclic(|me: &Weak<Shared>| Shared {
        local_runs: Arc::new(LocalRuns {
            queues: settings.queues.iter().cloned().collect(),
            slots: slots.clone(),
            claimant: claimant.clone(),
            available: Default::default(),
            start: {
                let me = me.clone();
                let in_flight = in_flight.clone();
                Box::new(move |queue, claimed, permit| {
                    // The spawning run holds the worker's state, so it is still there.
                    if let Some(shared) = me.upgrade() {
                        run_in_slot(shared, &in_flight, queue, claimed, permit);
                    }
                })
            },
            stop: shutdown.clone(),
        }),
        client: client.clone(),
        registry,
        settings: settings.clone(),
        leases: Leases::default(),
        completer: Completer::start_claiming(client.clone(), claimant.clone()),
        counters: counters.clone(),
        metrics,
        hard_stop: CancellationToken::new(),
        shutdown: shutdown.clone(),
        claim_with_completion: settings.queues.len() == 1,
        fail_in_one_call: tokio::sync::OnceCell::new(),
        task_results: Default::default(),
        wakeups: wakeups.clone(),
        unknown_logged: WarnedNames::default(),
    });
    info!(
        worker_id = %settings.worker_id,
        queues = ?settings.queues,
        concurrency = settings.concurrency,
        task_types = ?shared.registry.names(),
        "worker starting"
    );

    let background = CancellationToken::new();
    let mut helpers = JoinSet::new();
    helpers.spawn(wakeups.clone().listen(client.clone(), background.clone()));
    helpers.spawn(retire_live_triggers(client.clone()));
    helpers.spawn(shared.leases.clone().run(
        client.clone(),
        settings.claim_timeout,
        background.clone(),
    ));
    if let Some(dlq) = &settings.dlq {
        for queue in &settings.queues {
            let dl = DeadLetters::new(client.clone(), queue, dlq, &settings.worker_id);
            helpers.spawn(sweep_dead_letters(
                dl,
                queue.clone(),
                counters.clone(),
                settings.dlq_sweep_interval,
                background.clone(),
            ));
        }
    }

    let mut claimers = JoinSet::new();
    for queue in &settings.queues {
        let claimer = Claimer::new(
            client.clone(),
            queue,
            claimant.clone(),
            settings.poll_interval,
        );
        claimers.spawn(claim_loop(
            claimer,
            shared.clone(),
            slots.clone(),
            wakeups.get(queue),
            in_flight.clone(),
            shutdown.clone(),
        ));
    }
    while claimers.join_next().await.is_some() {}

    // Drain: let running tasks finish within the grace period.
    let running = shared.leases.len();
    if running > 0 {
        info!(running, grace = ?settings.shutdown_grace, "stopped claiming; waiting for running tasks");
    }
    let mut set = JoinSet::new();
    let drained = tokio::time::timeout(settings.shutdown_grace, drain(&mut set, &in_flight))
        .await
        .is_ok();
    if !drained {
        warn!(
            still_running = set.len(),
            "grace period over; stopping the remaining tasks and handing them back"
        );
        shared.hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), drain(&mut set, &in_flight)).await;
    }
    background.cancel();
    while helpers.join_next().await.is_some() {}
    info!(
        completed = counters.total(Event::Completed),
        failed = counters.total(Event::Failed),
        handed_back = counters.total(Event::HandedBack),
        "worker stopped"
    );
    Ok(counters)
}

/// Waits for the runs in flight: those in `set`, then any started meanwhile (by a spawn that
/// claimed before the worker stopped claiming), until none is left. Runs not yet finished stay
/// in `set` if this is cancelled.
async fn drain(set: &mut JoinSet<()>, in_flight: &Mutex<JoinSet<()>>) {
    loop {
        while set.join_next().await.is_some() {}
        let more = std::mem::take(&mut *in_flight.lock().unwrap());
        if more.is_empty() {
            return;
        }
        *set = more;
    }
}

async fn sweep_dead_letters(
    mut dl: DeadLetters,
    queue: String,
    counters: Counters,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ready = false;
    loop {
        if !ready {
            ready = dl.ensure_queue().await.is_ok();
        }
        if ready {
            // Whoever copies a failure first (this sweep or the worker that failed it) counts it.
            match dl.sweep().await {
                Ok(names) => {
                    for name in names {
                        counters.add(&queue, &name, Event::DeadLettered);
                    }
                }
                Err(e) => debug!(error = %e, "dead-letter sweep failed; will retry"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn claim_loop(
    mut claimer: Claimer,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    wakeup: Arc<tokio::sync::Notify>,
    in_flight: Arc<Mutex<JoinSet<()>>>,
    shutdown: CancellationToken,
) {
    loop {
        // Wait for at least one free slot, then take every free slot.
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let wanted = permits.len();
        let runs = claimer.claim(wanted).await;
        let got = runs.len();
        if got > 0 {
            claimer.found_work();
        }
        for claimed in runs {
            let permit = permits.pop().expect("claimed no more than the free slots");
            let queue = claimer.queue().to_string();
            run_in_slot(shared.clone(), &in_flight, queue, claimed, permit);
        }
        drop(permits);
        // Reap finished tasks so the set does not grow without bound.
        {
            let mut set = in_flight.lock().unwrap();
            while set.try_join_next().is_some() {}
        }
        if got == wanted {
            // The queue may hold more: claim again as soon as a slot frees.
            continue;
        }
        let wait = claimer.idle_wait().await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wakeup.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs `claimed` in the slot `permit` holds, then each run its completion claims for it.
fn run_in_slot(
    shared: Arc<Shared>,
    in_flight: &Mutex<JoinSet<()>>,
    queue: String,
    claimed: Claimed,
    permit: OwnedSemaphorePermit,
) {
    in_flight.lock().unwrap().spawn(async move {
        let mut next = Some(claimed);
        while let Some(claimed) = next.take() {
            // A panic outside the handler (settling, say) must not take the worker's
            // bookkeeping with it: the run's lease registration is dropped while
            // unwinding, so its lease expires and another attempt follows.
            let run_id = claimed.run.run_id;
            let run = CatchPanic::new(Box::pin(execute_run(&shared, &queue, claimed)));
            match run.await {
                Ok(claimed_next) => next = claimed_next,
                Err(message) => {
                    error!(%run_id, panic = %message, "host panic while settling a run; its lease will expire and it will be retried");
                }
            }
        }
        drop(permit);
    });
}

/// Whether this schema fails a run in one call; asked once, and again after an error.
async fn fail_in_one_call(shared: &Shared) -> bool {
    shared
        .fail_in_one_call
        .get_or_try_init(|| shared.client.has_fail_outcome())
        .await
        .copied()
        .unwrap_or(false)
}

/// Runs one claimed run from dispatch to settle. Returns the run claimed with its completion
/// for the slot it leaves, if any.
async fn execute_run(shared: &Shared, queue: &str, claimed: Claimed) -> Option<Claimed> {
    // What settling needs of the run; its params, headers and payload go to the handler.
    let run = claimed.run.identity();
    let span = info_span!(
        "task",
        queue = %queue,
        task_id = %run.task_id,
        run_id = %run.run_id,
        attempt = run.attempt,
        task_name = %run.task_name,
    );
    async {
        let metrics = shared.metrics.get(queue, &run.task_name);
        metrics.add(Event::Claimed);
        let _in_flight = metrics.start_run();
        if let Some(secs) = pickup_latency(&run) {
            metrics.observe_pickup(secs);
        }
        let lease = shared.settings.claim_timeout;
        let client = &shared.client;

        // Dispatch.
        let Some(task_type) = shared.registry.get(&run.task_name).cloned() else {
            unknown_task(shared, queue, &run, &metrics).await;
            return None;
        };

        let registration = shared.leases.register(queue, run.run_id);
        let lost = registration.lost().clone();
        let type_timeout = task_type.timeout.unwrap_or(shared.settings.task_timeout);
        let own = RunTimeout::of(type_timeout, claimed.run.headers.as_ref());
        let timeout = own.effective;
        // The lease its claim took, which its checkpoints and heartbeats renew.
        let claim_secs = shared.local_runs.claimant.claim_timeout_secs;
        debug!(kind = %task_type.handler.kind(), ?timeout, "running");
        let started = tokio::time::Instant::now();

        // Execute.
        let suspended_until_a_time = Arc::new(AtomicBool::new(false));
        let settings = ContextSettings {
            worker_id: shared.settings.worker_id.clone(),
            claim_timeout_secs: claim_secs,
            // None past what an Instant can hold: the timeout below still ends the run.
            deadline: started.checked_add(timeout),
            spawn_defaults: SpawnOptions {
                max_attempts: Some(shared.settings.default_max_attempts),
                retry_strategy: Some(default_retry_strategy()),
                ..Default::default()
            },
            timeout: Some(timeout),
            limits: task_type.limits,
            grants: task_type.grants.clone(),
            dlq: shared.settings.dlq.clone(),
            task_results: shared.task_results.clone(),
            suspended_until_a_time: suspended_until_a_time.clone(),
            local_runs: Some(shared.local_runs.clone()),
        };
        // A run whose data cannot be used fails here, alone (see absurd_client::claimed).
        let limits = &shared.registry.read_limits();
        let loaded = match own.invalid.clone() {
            // A `timeout_sec` header the host cannot honour fails the run before it starts.
            Some(message) => Err(TaskError::Failed(
                Failure::new(FailureName::InvalidTaskData, format!("the task's header {message}"))
                    .with_details(json!({"header": absurd_client::headers::TIMEOUT_HEADER}))
                    .permanent(),
            )),
            None => TaskContext::load_claimed(client.clone(), queue, claimed, settings, limits).await,
        };
        let outcome = match loaded {
            Err(e) => Err(e),
            Ok(ctx) => {
                let fut = CatchPanic::new(task_type.handler.run(ctx));
                tokio::select! {
                    r = tokio::time::timeout(timeout, fut) => match r {
                        Ok(Ok(r)) => r,
                        Ok(Err(message)) => {
                            error!(panic = %message, "host panic while running the task; failing this run");
                            Err(TaskError::Failed(Failure::new(
                                FailureName::HostPanic,
                                format!("the host panicked while serving this run: {message}"),
                            )))
                        }
                        Err(_) => {
                            metrics.add(Event::TimedOut);
                            let secs = timeout.as_secs_f64();
                            Err(TaskError::Failed(
                                Failure::new(FailureName::Timeout, format!("Task timed out after {} seconds", fmt_secs(secs)))
                                    .with_details(json!({"timeout_seconds": secs, "attempt": run.attempt})),
                            ))
                        }
                    },
                    _ = lost.cancelled() => {
                        drop(registration);
                        metrics.add(Event::Lost);
                        return None;
                    }
                    _ = shared.hard_stop.cancelled() => {
                        drop(registration);
                        if settle::hand_back(client, queue, &run).await {
                            info!("handed back to the queue on shutdown");
                            metrics.add(Event::HandedBack);
                        }
                        return None;
                    }
                }
            }
        };
        drop(registration);
        let outcome = own.annotate(outcome);
        // The DSA-110 convention, for the types that opted in: `{"status": "error"}` fails.
        let outcome = match outcome {
            Ok(result) if task_type.status_error_fails => {
                match crate::execute::reported::reported_failure(&result) {
                    Some(failure) => Err(TaskError::Failed(failure)),
                    None => Ok(result),
                }
            }
            other => other,
        };
        // A result PostgreSQL cannot store would fail its completion (and the batch it is
        // completed in): it is the task's failure instead.
        let outcome = match outcome {
            Ok(result) if absurd_client::jsonb::has_nul(&result) => Err(TaskError::Failed(
                Failure::new(
                    FailureName::InvalidResult,
                    "the result holds a NUL character (\\u0000), which PostgreSQL's jsonb cannot store",
                )
                .permanent(),
            )),
            other => other,
        };
        let elapsed = started.elapsed();
        observe_outcome(shared, &metrics, task_type.handler.kind(), &outcome, elapsed);

        // Settle.
        match outcome {
            Ok(result) => {
                let (settled, next) =
                    if shared.claim_with_completion && !shared.shutdown.is_cancelled() {
                        shared.completer.complete_and_claim(queue, &run, result, lease).await
                    } else {
                        (shared.completer.complete(queue, &run, result, lease).await, None)
                    };
                if settled == Settled::Completed {
                    debug!(elapsed_ms = elapsed.as_millis() as u64, "completed");
                    metrics.add(Event::Completed);
                }
                return next;
            }
            Err(TaskError::Suspended) => {
                debug!("suspended");
                metrics.add(Event::Suspended);
                // Its wake-up time may be the earliest now: let the claimer re-arm its timer.
                // (Not for a wait without a timeout: that claim would find nothing to do.)
                if suspended_until_a_time.load(Ordering::Relaxed) {
                    shared.wakeups.wake(queue);
                }
            }
            Err(TaskError::RunLost(e)) => {
                info!(reason = %e, "run lost; nothing to report");
                metrics.add(Event::Lost);
            }
            Err(TaskError::Failed(failure)) => {
                let one_call = fail_in_one_call(shared).await;
                let out = settle::failed(
                    client,
                    queue,
                    &run,
                    &failure,
                    task_type.max_attempts,
                    lease,
                    shared.dead_letter_to(),
                    one_call,
                )
                .await;
                if let Settled::Failed { .. } = out.settled {
                    metrics.add(Event::Failed);
                }
                if out.dead_lettered {
                    metrics.add(Event::DeadLettered);
                }
            }
        }
        None
    }
    .instrument(span)
    .await
}

/// A run's wall-clock limit: the task type's, lowered by the task's own `timeout_sec` header
/// (never raised: a larger value is clamped to the type's, and the clamp is logged).
#[derive(Debug, Clone, PartialEq)]
struct RunTimeout {
    effective: Duration,
    type_timeout: Duration,
    /// The task's `timeout_sec`, when it has a valid one.
    requested: Option<u32>,
    clamped: bool,
    /// Why the task's `timeout_sec` header cannot be used (the run fails with this).
    invalid: Option<String>,
}

impl RunTimeout {
    fn of(type_timeout: Duration, headers: Option<&serde_json::Value>) -> RunTimeout {
        let mut t = RunTimeout {
            effective: type_timeout,
            type_timeout,
            requested: None,
            clamped: false,
            invalid: None,
        };
        match absurd_client::headers::timeout_sec(headers) {
            Ok(None) => {}
            Ok(Some(secs)) => {
                let asked = Duration::from_secs(secs.into());
                t.requested = Some(secs);
                if asked > type_timeout {
                    t.clamped = true;
                    warn!(
                        timeout_sec = secs,
                        type_timeout_seconds = type_timeout.as_secs_f64(),
                        "the task's timeout_sec is longer than its type's timeout; clamped to the type's (a task may only lower it)"
                    );
                } else {
                    t.effective = asked;
                }
            }
            Err(message) => t.invalid = Some(message),
        }
        t
    }

    /// A `$Timeout` of a task that asked for its own timeout says what it asked and what it got.
    fn annotate(
        &self,
        outcome: Result<serde_json::Value, TaskError>,
    ) -> Result<serde_json::Value, TaskError> {
        let Some(requested) = self.requested else {
            return outcome;
        };
        match outcome {
            Err(TaskError::Failed(mut f)) if f.host_name() == Some(FailureName::Timeout) => {
                if !f.details.is_object() {
                    f.details = json!({});
                }
                if f.details.get("timeout_seconds").is_none() {
                    f.details["timeout_seconds"] = json!(self.effective.as_secs_f64());
                }
                f.details["timeout_sec_requested"] = json!(requested);
                f.details["type_timeout_seconds"] = json!(self.type_timeout.as_secs_f64());
                f.details["timeout_sec_clamped"] = json!(self.clamped);
                Err(TaskError::Failed(f))
            }
            other => other,
        }
    }
}

async fn unknown_task(shared: &Shared, queue: &str, run: &ClaimedRun, metrics: &TaskMetrics) {
    let first_time = shared.unknown_logged.first_time(&run.task_name);
    if shared.settings.fail_unknown {
        let failure = Failure::new(
            FailureName::UnknownTask,
            format!(
                "no handler for task {:?} on this host (known: {})",
                run.task_name,
                shared.registry.names().join(", ")
            ),
        )
        .permanent();
        if first_time {
            warn!("unknown task name; failing it (--fail-unknown)");
        }
        let one_call = fail_in_one_call(shared).await;
        let out = settle::fail_and_dead_letter(
            &shared.client,
            queue,
            run,
            &failure,
            true,
            shared.settings.claim_timeout,
            shared.dead_letter_to(),
            one_call,
        )
        .await;
        if let Settled::Failed { task_failed: true } = out.settled {
            metrics.add(Event::Failed);
            if out.dead_lettered {
                metrics.add(Event::DeadLettered);
            }
        }
        return;
    }
    if first_time {
        warn!(
            known = ?shared.registry.names(),
            "no handler for this task name; deferring such tasks 15-30 s for a worker that has one (logged once per name)"
        );
    }
    match settle::defer_unknown(&shared.client, queue, run).await {
        Ok(()) => {
            metrics.add(Event::Deferred);
            shared.wakeups.wake(queue);
        }
        Err(e) if e.is_run_lost() => {}
        Err(e) => error!(error = %e, "could not defer the unknown task; its lease will expire"),
    }
}

/// Seconds from a first attempt's creation (the time in its UUIDv7 run id, written by the
/// database at spawn) to now, its claim. `None` for retries and event wake-ups, whose runs
/// become claimable later than they are created. A first attempt resumed after a sleep is
/// not distinguishable here and counts its sleep.
fn pickup_latency(run: &ClaimedRun) -> Option<f64> {
    if run.attempt != 1 || run.wake_event.is_some() {
        return None;
    }
    let (secs, nanos) = run.run_id.get_timestamp()?.to_unix();
    let created = secs as f64 + nanos as f64 / 1e9;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some((now - created).max(0.0))
}

/// Records the run's duration, and sandbox traps / subprocess exits by handler kind.
fn observe_outcome(
    shared: &Shared,
    metrics: &TaskMetrics,
    kind: HandlerKind,
    outcome: &Result<serde_json::Value, TaskError>,
    elapsed: Duration,
) {
    let c = &shared.counters;
    let label = match outcome {
        Ok(_) => Outcome::Completed,
        Err(TaskError::Suspended) => Outcome::Suspended,
        Err(TaskError::RunLost(_)) => Outcome::Lost,
        Err(TaskError::Failed(_)) => Outcome::Failed,
    };
    metrics.observe_run(label, elapsed.as_secs_f64());
    match (kind, outcome) {
        (HandlerKind::Native, Ok(_)) => c.subprocess_exit(Exit::Success),
        (HandlerKind::Native, Err(TaskError::Failed(f))) => match f.host_name() {
            Some(name) => c.subprocess_exit(Exit::Failed(name)),
            // A native run's failures are all the host's; count anything else once, under
            // one label, rather than minting a label per name.
            None => c.subprocess_exit(Exit::Other),
        },
        (HandlerKind::Wasm, Err(TaskError::Failed(f))) => {
            if let Some(cause) = f
                .host_name()
                .and_then(|name| crate::metrics::trap_cause(name, &f.details))
            {
                c.trap(&cause);
            }
        }
        _ => {}
    }
}

fn fmt_secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

/// How many task names without a handler the worker remembers having warned about. Task names
/// are chosen by whoever spawns, so the set must not grow with them; past the bound, a new
/// name is logged at debug level on every sighting instead.
const MAX_WARNED_NAMES: usize = 1_000;

/// The unknown task names already warned about (at most [`MAX_WARNED_NAMES`]).
#[derive(Debug, Default)]
struct WarnedNames(Mutex<HashSet<String>>);

impl WarnedNames {
    /// True the first time `name` is seen while the set has room.
    fn first_time(&self, name: &str) -> bool {
        // A poisoned lock only means a panic elsewhere while inserting; the set is still valid.
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(name) {
            return false;
        }
        if seen.len() >= MAX_WARNED_NAMES {
            debug!(task_name = name, "no handler for this task name");
            return false;
        }
        seen.insert(name.to_string())
    }
}

/// Drops the live-update triggers an API that died left on the task tables, once its lease ran
/// out (migration 0022): they cost every claim and completion while nobody listens. Best effort,
/// once at start; `absurd-host maintain` does it too.
async fn retire_live_triggers(client: Client) {
    match client.retire_live_triggers().await {
        Ok(None) => debug!("live updates: an API listens; its triggers stay"),
        Ok(Some(0)) => {}
        Ok(Some(n)) => debug!(
            tables = n,
            "live updates: some idle triggers were busy; left for later"
        ),
        Err(e) => debug!(error = %e, "live updates: could not retire idle triggers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warned_names_are_bounded() {
        let w = WarnedNames::default();
        assert!(w.first_time("a"));
        assert!(!w.first_time("a"));
        for i in 1..MAX_WARNED_NAMES {
            assert!(w.first_time(&format!("n{i}")));
        }
        assert!(!w.first_time("one-too-many"));
        assert_eq!(w.0.lock().unwrap().len(), MAX_WARNED_NAMES);
    }

    #[test]
    fn a_task_timeout_only_lowers_the_type_timeout() {
        let ty = Duration::from_secs(60);
        let t = RunTimeout::of(ty, None);
        assert_eq!((t.effective, t.requested, t.clamped), (ty, None, false));
        let t = RunTimeout::of(ty, Some(&json!({"timeout_sec": 5})));
        assert_eq!(
            (t.effective, t.requested, t.clamped),
            (Duration::from_secs(5), Some(5), false)
        );
        let t = RunTimeout::of(ty, Some(&json!({"timeout_sec": 600})));
        assert_eq!((t.effective, t.requested, t.clamped), (ty, Some(600), true));
        let t = RunTimeout::of(ty, Some(&json!({"timeout_sec": "soon"})));
        assert_eq!(t.effective, ty);
        assert!(t.invalid.unwrap().contains("got \"soon\""));

        let timed_out = Err(TaskError::Failed(
            Failure::new(FailureName::Timeout, "Task timed out after 60 seconds")
                .with_details(json!({"timeout_seconds": 60.0})),
        ));
        let t = RunTimeout::of(ty, Some(&json!({"timeout_sec": 600})));
        let Err(TaskError::Failed(f)) = t.annotate(timed_out) else {
            panic!("still a failure")
        };
        assert_eq!(f.details["timeout_seconds"], 60.0);
        assert_eq!(f.details["timeout_sec_requested"], 600);
        assert_eq!(f.details["timeout_sec_clamped"], true);
    }
}
