//! Settle: reporting a run's outcome, fenced by run id.
//!
//! Every write names the run it settles; the schema refuses a stale run (`AB002`, lease lost)
//! or a cancelled one (`AB001`), so a worker that lost its run can never complete or fail the
//! task. Writes that fail because the database is unreachable are retried with backoff for as
//! long as the lease could still be ours; after that the lease sweep owns the run.
//!
//! Completions go through a [`Completer`], which batches them: on our schema, every run that
//! finished while the previous batch was being written is completed by the next single call
//! (`absurd.done_<queue>`, migration 0011, which `complete_run` also calls), each run still
//! fenced on its own. There is no added delay: a lone completion is written at once. A
//! completion whose worker slot is free for the queue's next run asks for one
//! ([`Completer::complete_and_claim`]): the batch is then written by `absurd.next_<queue>`
//! (migration 0012, [`Client::complete_and_claim_rows`]), which claims, in the same
//! transaction, up to one run per run it completed, so a worker claiming one at a time commits
//! once per task instead of twice. On a schema without the fast path (one installed by
//! `absurdctl init`), each run is completed by its own `complete_run` call, and the worker's
//! claim loop claims.
//!
//! A failure is settled by [`failed`]: it decides whether the failure is permanent (not
//! retryable, or the task type's `max_attempts` reached), fails the run with one client call,
//! and hands a task that ended `failed` to the dead-letter queue ([`dead_letter`]). On our
//! schema that call is one round trip (`absurd.fail_run_outcome`, migration 0013,
//! [`Client::fail_run_for_worker_in_one_call`]): it fails the run (lowering `max_attempts`
//! first when the failure is permanent) and returns the task's state and, when that was its
//! last attempt, the row its dead-letter copy is made from, so the copy needs no read. Without
//! that function, [`Client::fail_run_for_worker`] writes and then reads. Suspending needs no write here (the task's own `schedule_run` or
//! `await_event` did it); a run stopped on shutdown is handed back ([`hand_back`]).

pub mod dead_letter;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, info, warn};
use uuid::Uuid;

use absurd_client::dead_letter::FailedTask;
use absurd_client::{Claimed, ClaimedRun, Client, ClientError, Failure, State};

use dead_letter::DeadLetters;

use crate::claim::Claimant;

/// What happened to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Completed,
    /// The run failed; `task_failed` says whether that was the task's last attempt.
    Failed {
        task_failed: bool,
    },
    /// The run was lost (cancelled or lease expired) before it could be reported.
    Lost,
    /// Could not reach the database before the lease ran out; the lease sweep takes over.
    GaveUp,
}

fn retryable(e: &ClientError) -> bool {
    matches!(e, ClientError::Unavailable(_) | ClientError::Database(_))
}

/// Retries `op` while the database is unreachable, until `give_up_after`.
async fn with_retries<T, F, Fut>(
    what: &str,
    give_up_after: Duration,
    mut op: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = tokio::time::Instant::now() + give_up_after;
    let mut pause = Duration::from_millis(100);
    let mut warned = false;
    loop {
        match op().await {
            Err(e) if retryable(&e) && tokio::time::Instant::now() + pause < deadline => {
                if !warned {
                    warn!(error = %e, "{what}: database unreachable; retrying until it is back");
                    warned = true;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => {
                if warned && other.is_ok() {
                    info!("{what}: database reachable again");
                }
                return other;
            }
        }
    }
}

/// Completes the run with `result`, on its own (see [`Completer`] for batches).
pub async fn complete(
    client: &Client,
    queue: &str,
    run: &ClaimedRun,
    result: &Value,
    lease: Duration,
) -> Settled {
    complete_one(client, queue, run.task_id, run.run_id, result, lease).await
}

async fn complete_one(
    client: &Client,
    queue: &str,
    task_id: Uuid,
    run_id: Uuid,
    result: &Value,
    lease: Duration,
) -> Settled {
    let r = with_retries("complete_run", lease, || {
        client.complete_run(queue, run_id, result)
    })
    .await;
    match r {
        Ok(()) => Settled::Completed,
        Err(e) if e.is_run_lost() => Settled::Lost,
        Err(ClientError::Rejected(msg)) => {
            // A retried write after a commit whose reply was lost: did the first one land?
            match client.run_state(queue, task_id, run_id).await {
                Some(State::Completed) => Settled::Completed,
                Some(State::Cancelled) | Some(State::Failed) => Settled::Lost,
                _ => {
                    warn!(%msg, "complete_run was refused");
                    Settled::Lost
                }
            }
        }
        Err(e) => {
            warn!(error = %e, "could not complete the run; its lease will expire and it will be retried");
            Settled::GaveUp
        }
    }
}

/// Most runs completed by one statement.
const MAX_BATCH: usize = 500;
/// Batches being written at once; completions arriving meanwhile wait and form the next one.
const BATCHES_IN_FLIGHT: usize = 2;

/// Completes runs in batches (see the module docs). Cheap to clone; the batching task ends
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Completer {
    tx: mpsc::UnboundedSender<Completion>,
    client: Client,
}

struct Completion {
    queue: String,
    task_id: Uuid,
    run_id: Uuid,
    result: Value,
    lease: Duration,
    /// The run's slot is free for the queue's next run: claim one with the completion.
    want_next: bool,
    done: oneshot::Sender<(Settled, Option<Claimed>)>,
}

impl Completer {
    /// Starts the batching task on the current tokio runtime. It only completes:
    /// [`Completer::complete_and_claim`] then claims nothing.
    pub fn start(client: Client) -> Completer {
        Self::spawn(client, None)
    }

    /// [`Completer::start`], claiming the next runs it is asked for (see
    /// [`Completer::complete_and_claim`]) as `next`, as the worker's claim loop would.
    pub fn start_claiming(client: Client, next: Arc<Claimant>) -> Completer {
        Self::spawn(client, Some(next))
    }

    fn spawn(client: Client, next: Option<Arc<Claimant>>) -> Completer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop(client.clone(), next, rx));
        Completer { tx, client }
    }

    /// Completes the run with `result` in the next batch, and says how that went.
    pub async fn complete(
        &self,
        queue: &str,
        run: &ClaimedRun,
        result: Value,
        lease: Duration,
    ) -> Settled {
        self.submit(queue, run, result, lease, false).await.0
    }

    /// [`Completer::complete`], and the queue's next run for the slot this run frees, claimed in
    /// the same transaction when the schema has `next_<queue>` (migration 0012). `None` when
    /// there was none ready, when the run did not complete here (lost), or without that
    /// function: then the caller frees the slot and the claim loop claims.
    pub async fn complete_and_claim(
        &self,
        queue: &str,
        run: &ClaimedRun,
        result: Value,
        lease: Duration,
    ) -> (Settled, Option<Claimed>) {
        self.submit(queue, run, result, lease, true).await
    }

    async fn submit(
        &self,
        queue: &str,
        run: &ClaimedRun,
        result: Value,
        lease: Duration,
        want_next: bool,
    ) -> (Settled, Option<Claimed>) {
        let (done, outcome) = oneshot::channel();
        let c = Completion {
            queue: queue.to_string(),
            task_id: run.task_id,
            run_id: run.run_id,
            result,
            lease,
            want_next,
            done,
        };
        if let Err(mpsc::error::SendError(c)) = self.tx.send(c) {
            // The batching task is gone (the runtime is shutting down): write it directly.
            let client = &self.client;
            let settled =
                complete_one(client, &c.queue, c.task_id, c.run_id, &c.result, c.lease).await;
            return (settled, None);
        }
        outcome.await.unwrap_or((Settled::GaveUp, None))
    }
}

/// Which per-queue functions a queue has.
#[derive(Debug, Clone, Copy)]
struct Paths {
    /// `done_<queue>` (and `lease_<queue>`), migration 0011.
    done: bool,
    /// `next_<queue>`, migration 0012.
    next: bool,
}

async fn batch_loop(
    client: Client,
    next: Option<Arc<Claimant>>,
    mut rx: mpsc::UnboundedReceiver<Completion>,
) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let paths: Arc<Mutex<HashMap<String, Paths>>> = Arc::default();
    while let Some(first) = rx.recv().await {
        // Wait for a free batch slot first: whatever arrives meanwhile joins this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let client = client.clone();
        let paths = paths.clone();
        let next = next.clone();
        tokio::spawn(async move {
            let mut by_queue: HashMap<String, Vec<Completion>> = HashMap::new();
            for c in batch {
                by_queue.entry(c.queue.clone()).or_default().push(c);
            }
            for (queue, batch) in by_queue {
                write_batch(&client, &paths, next.as_deref(), &queue, batch).await;
            }
            drop(slot);
        });
    }
}

async fn queue_paths(client: &Client, queue: &str, want_next: bool) -> Paths {
    let done = client.has_fast_paths(queue).await.unwrap_or(false);
    let next = done && want_next && client.has_next_path(queue).await.unwrap_or(false);
    Paths { done, next }
}

async fn write_batch(
    client: &Client,
    paths: &Mutex<HashMap<String, Paths>>,
    next: Option<&Claimant>,
    queue: &str,
    batch: Vec<Completion>,
) {
    let known = paths.lock().unwrap().get(queue).copied();
    let p = match known {
        Some(p) => p,
        None => {
            let p = queue_paths(client, queue, next.is_some()).await;
            paths.lock().unwrap().insert(queue.to_string(), p);
            p
        }
    };
    if p.done {
        let ids: Vec<Uuid> = batch.iter().map(|c| c.run_id).collect();
        let results: Vec<Value> = batch.iter().map(|c| c.result.clone()).collect();
        let wanted = batch.iter().filter(|c| c.want_next).count();
        let written = match next {
            Some(n) if p.next && wanted > 0 => {
                client
                    .complete_and_claim_rows(
                        queue,
                        &ids,
                        &results,
                        &n.worker_id,
                        n.claim_timeout_secs,
                        wanted as i32,
                        &n.limits,
                    )
                    .await
            }
            _ => client
                .complete_runs_fast(queue, &ids, &results)
                .await
                .map(|states| (states, Vec::new())),
        };
        match written {
            Ok((states, claimed)) => {
                let states: HashMap<Uuid, String> = states.into_iter().collect();
                // At most one claimed run per completion that asked (the call claimed no more).
                let mut claimed = claimed.into_iter();
                for c in batch {
                    let settled = match states.get(&c.run_id).map(String::as_str) {
                        Some("completed") => Settled::Completed,
                        Some("cancelled") | Some("failed") => Settled::Lost,
                        other => {
                            warn!(run_id = %c.run_id, state = ?other, "the run could not be completed: it is not running");
                            Settled::Lost
                        }
                    };
                    let next_run = if c.want_next { claimed.next() } else { None };
                    if let Err((_, Some(orphan))) = c.done.send((settled, next_run)) {
                        // Nobody waits for it any more (the worker is stopping): give it back.
                        hand_back_claimed(client, queue, orphan);
                    }
                }
                for orphan in claimed {
                    hand_back_claimed(client, queue, orphan);
                }
                return;
            }
            Err(ClientError::SchemaMissing(msg)) => {
                debug!(%queue, %msg, "batch completion path missing; completing one by one");
                paths.lock().unwrap().remove(queue);
            }
            Err(e) => {
                // Unreachable database, a dropped connection (did it commit?), ...: the
                // one-by-one path retries and resolves each run on its own. (Runs a lost reply
                // had claimed are not known here: their leases expire and they are retried.)
                debug!(%queue, error = %e, "batch completion failed; completing one by one");
            }
        }
    }
    let mut each = tokio::task::JoinSet::new();
    for c in batch {
        let (client, queue) = (client.clone(), queue.to_string());
        each.spawn(async move {
            let settled =
                complete_one(&client, &queue, c.task_id, c.run_id, &c.result, c.lease).await;
            let _ = c.done.send((settled, None));
        });
    }
    while each.join_next().await.is_some() {}
}

/// Puts a run claimed for a caller that is gone back in the queue, claimable at once.
fn hand_back_claimed(client: &Client, queue: &str, claimed: Claimed) {
    let (client, queue) = (client.clone(), queue.to_string());
    tokio::spawn(async move {
        let run = claimed.run;
        if !hand_back(&client, &queue, &run).await {
            debug!(run_id = %run.run_id, "claimed run not handed back; its lease will expire");
        }
    });
}

/// Where a task that ends `failed` is copied: the worker's dead-letter queue.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterTo<'a> {
    /// The dead-letter queue.
    pub dlq: &'a str,
    /// The worker id recorded on copies of runs no worker claimed.
    pub worker_id: &'a str,
}

/// How a failed run was settled (see [`failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailOutcome {
    pub settled: Settled,
    /// The task ended `failed` and this call copied it into the dead-letter queue.
    pub dead_lettered: bool,
}

/// Whether a failure ends its task now: a failure retrying cannot fix, or an attempt at the
/// task type's own `max_attempts` (which caps the task's).
pub fn is_permanent(failure: &Failure, run: &ClaimedRun, max_attempts: Option<i32>) -> bool {
    let capped = max_attempts.is_some_and(|m| run.attempt >= m);
    !failure.retryable || capped
}

/// Settles a handler's failure: decides whether it is permanent ([`is_permanent`]), fails the
/// run, and dead-letters the task when that was its last attempt. With `one_call` (the schema
/// has `absurd.fail_run_outcome`, migration 0013), the failure is one round trip.
#[allow(clippy::too_many_arguments)]
pub async fn failed(
    client: &Client,
    queue: &str,
    run: &ClaimedRun,
    failure: &Failure,
    max_attempts: Option<i32>,
    lease: Duration,
    dead_letter: Option<DeadLetterTo<'_>>,
    one_call: bool,
) -> FailOutcome {
    let permanent = is_permanent(failure, run, max_attempts);
    warn!(name = %failure.name, message = %failure.message, permanent, "failed");
    fail_and_dead_letter(
        client,
        queue,
        run,
        failure,
        permanent,
        lease,
        dead_letter,
        one_call,
    )
    .await
}

/// [`fail`], then, when the task ended `failed`, its copy into the dead-letter queue (from
/// the row the failure returned, when it did).
#[allow(clippy::too_many_arguments)]
pub async fn fail_and_dead_letter(
    client: &Client,
    queue: &str,
    run: &ClaimedRun,
    failure: &Failure,
    permanent: bool,
    lease: Duration,
    dead_letter: Option<DeadLetterTo<'_>>,
    one_call: bool,
) -> FailOutcome {
    let (settled, failed_task) =
        fail(client, queue, run, failure, permanent, lease, one_call).await;
    let dead_lettered = match (settled, dead_letter) {
        (Settled::Failed { task_failed: true }, Some(to)) => {
            route_dead_letter(client, queue, run, failed_task.as_ref(), to).await
        }
        _ => false,
    };
    FailOutcome {
        settled,
        dead_lettered,
    }
}

/// Copies the failed task into the dead-letter queue now: from `failed_task` when the failure
/// returned it, else read by task id. When that cannot be done, the periodic sweep will. True
/// when this call made the copy.
async fn route_dead_letter(
    client: &Client,
    queue: &str,
    run: &ClaimedRun,
    failed_task: Option<&FailedTask>,
    to: DeadLetterTo<'_>,
) -> bool {
    let dl = DeadLetters::new(client.clone(), queue, to.dlq, to.worker_id);
    let routed = async {
        dl.ensure_queue().await?;
        match failed_task {
            Some(task) => dl.copy_failed(task).await,
            None => dl.route(run.task_id).await,
        }
    }
    .await;
    match routed {
        Ok(copied) => copied,
        Err(e) => {
            warn!(error = %e, "could not dead-letter now; the periodic sweep will");
            false
        }
    }
}

/// Fails the run. With `permanent`, the task gets no further attempts: its `max_attempts`
/// is lowered to this attempt in the same transaction as `fail_run`. The failure is written
/// by one client call, retried while the database is unreachable: with `one_call`,
/// [`Client::fail_run_for_worker_in_one_call`] (one round trip, which also returns the failed
/// task's dead-letter row when the task ended `failed`); without it, or when the schema turns
/// out not to have `fail_run_outcome`, [`Client::fail_run_for_worker`].
pub async fn fail(
    client: &Client,
    queue: &str,
    run: &ClaimedRun,
    failure: &Failure,
    permanent: bool,
    lease: Duration,
    one_call: bool,
) -> (Settled, Option<FailedTask>) {
    let reason = failure.to_json();
    if one_call {
        let r = with_retries("fail_run", lease, || {
            client.fail_run_for_worker_in_one_call(queue, run, &reason, permanent)
        })
        .await;
        match r {
            Err(ClientError::SchemaMissing(msg)) => {
                debug!(%msg, "fail_run_outcome missing; failing with fail_run");
            }
            Ok((f, failed_task)) => {
                let task_failed = f.task_failed;
                return (
                    Settled::Failed { task_failed },
                    failed_task.filter(|_| task_failed),
                );
            }
            Err(e) => return (fail_refused(e), None),
        }
    }
    let r = with_retries("fail_run", lease, || {
        client.fail_run_for_worker(queue, run, &reason, permanent)
    })
    .await;
    match r {
        Ok(f) => (
            Settled::Failed {
                task_failed: f.task_failed,
            },
            None,
        ),
        Err(e) => (fail_refused(e), None),
    }
}

/// How a failure the client refused (or could not write) settled.
fn fail_refused(e: ClientError) -> Settled {
    match e {
        e if e.is_run_lost() => Settled::Lost,
        ClientError::Rejected(msg) => {
            warn!(%msg, "fail_run was refused");
            Settled::Lost
        }
        e => {
            warn!(error = %e, "could not fail the run; its lease will expire and it will be retried");
            Settled::GaveUp
        }
    }
}

/// Hands a run back for another worker to resume from its checkpoints right away (used on
/// shutdown, instead of leaving it to wait for its lease to expire).
pub async fn hand_back(client: &Client, queue: &str, run: &ClaimedRun) -> bool {
    match client.schedule_run_in(queue, run.run_id, 0.0).await {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "could not hand the run back; it will be retried after its lease expires");
            false
        }
    }
}

/// Puts back a run whose task name this host does not know, 15–30 s later, as the Absurd
/// SDKs do, so that a worker that knows it can take it.
pub async fn defer_unknown(
    client: &Client,
    queue: &str,
    run: &ClaimedRun,
) -> Result<(), ClientError> {
    let jitter = (run.run_id.as_u128() % 15_000) as f64 / 1000.0;
    client
        .schedule_run_in(queue, run.run_id, 15.0 + jitter)
        .await
}
