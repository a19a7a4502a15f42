//! Claim: taking runs from a queue as soon as they are ready, and only as many as there are
//! free slots.
//!
//! Three things wake a claimer:
//! * a notification on the `absurd_wakeup` channel (payload: the queue name), sent by our
//!   schema's functions whenever they make a run claimable now, received on one dedicated
//!   `LISTEN` connection that is re-established after a drop (a direct one, from
//!   `ABSURD_LISTEN_URL`, when the pool goes through a transaction-mode pooler; without it
//!   there is none, and the poll interval does the waking);
//! * a timer set to the earliest `available_at` of the queue's waiting runs (sleeping tasks,
//!   retry back-offs), so they start on time without waiting for a poll tick;
//! * the poll interval (`ABSURD_WORKER_POLL_INTERVAL`), the fallback for schemas that do not
//!   notify (one installed by `absurdctl init`) and for notifications missed while the
//!   listener was reconnecting.
//!
//! On our schema a claim calls the queue's own claim function (`absurd.lease_<queue>`,
//! migration 0011), the code `claim_task` itself runs for that queue, with cached plans,
//! returning each run's checkpoints too; like every claim it first sweeps expired leases and
//! due cancellations. On a schema without it (one installed by `absurdctl init`),
//! `claim_task` is used.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use absurd_client::children::ClaimFor;
use absurd_client::claimed::ReadLimits;
use absurd_client::{Client, ClientError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A claimed run, with its checkpoints when the claim returned them, and a defect when its
/// data cannot be used (see [`absurd_client::claimed`]).
pub use absurd_client::claimed::Claimed;

/// The notification channel our schema uses.
pub use absurd_client::listen::WAKEUP_CHANNEL;

/// One `Notify` per queue this worker claims from.
#[derive(Clone)]
pub struct Wakeups {
    by_queue: Arc<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    pub fn new(queues: &[String]) -> Wakeups {
        Wakeups {
            by_queue: Arc::new(
                queues
                    .iter()
                    .map(|q| (q.clone(), Arc::new(Notify::new())))
                    .collect(),
            ),
        }
    }

    pub fn get(&self, queue: &str) -> Arc<Notify> {
        self.by_queue[queue].clone()
    }

    pub fn wake(&self, queue: &str) {
        if let Some(n) = self.by_queue.get(queue) {
            n.notify_one();
        }
    }

    fn wake_all(&self) {
        for n in self.by_queue.values() {
            n.notify_one();
        }
    }

    /// Listens for wake-up notifications until `stop`; reconnects after a dropped connection
    /// and then wakes every claimer, since notifications sent meanwhile are lost.
    pub async fn listen(self, client: Client, stop: CancellationToken) {
        if !client.can_listen() {
            // Behind a transaction-mode pooler a LISTEN would stay on whatever server
            // connection the pooler lent; without a direct URL, the poll interval wakes us.
            info!(
                "connections go through a pooler in transaction mode and no direct listen URL \
                 is set: no wake-up notifications, claiming on the poll interval"
            );
            return;
        }
        let mut down_since: Option<tokio::time::Instant> = None;
        loop {
            let mut listener = match client.wakeup_listener().await {
                Ok(l) => l,
                Err(e) => {
                    if down_since.is_none() {
                        warn!(error = %e, "wake-up listener cannot connect; polling until it can");
                        down_since = Some(tokio::time::Instant::now());
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(e) = listener.listen().await {
                warn!(error = %e, "LISTEN {WAKEUP_CHANNEL} failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            if down_since.take().is_some() {
                info!("wake-up listener connected again");
            }
            debug!("listening on {WAKEUP_CHANNEL}");
            self.wake_all();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    n = listener.recv() => match n {
                        Ok(Some(queue)) => self.wake(&queue),
                        Ok(None) => {
                            // The connection dropped; sqlx reconnects on the next call.
                            warn!("wake-up listener lost its connection; reconnecting");
                            self.wake_all();
                        }
                        Err(e) => {
                            warn!(error = %e, "wake-up listener failed; reconnecting");
                            down_since = Some(tokio::time::Instant::now());
                            self.wake_all();
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Who claims: the worker's id, the lease a claim takes, and the bounds on what a claimed run
/// brings along. One per worker, shared by everything of it that claims: its claim loops, its
/// completions that claim the next run (`settle`), and its spawns that claim for a free slot
/// (`execute::LocalRuns`).
#[derive(Debug, Clone)]
pub struct Claimant {
    pub worker_id: String,
    /// The lease in whole seconds, at least one.
    pub claim_timeout_secs: i32,
    pub limits: ReadLimits,
}

impl Claimant {
    pub fn new(worker_id: &str, claim_timeout: Duration, limits: ReadLimits) -> Claimant {
        Claimant {
            worker_id: worker_id.to_string(),
            claim_timeout_secs: claim_timeout.as_secs().clamp(1, i32::MAX as u64) as i32,
            limits,
        }
    }

    /// The same, as the client's spawn that claims takes it.
    pub fn claim_for(&self) -> ClaimFor<'_> {
        ClaimFor {
            worker_id: &self.worker_id,
            claim_timeout_secs: self.claim_timeout_secs,
            limits: &self.limits,
        }
    }
}

/// Claims runs from one queue.
pub struct Claimer {
    client: Client,
    queue: String,
    claimant: Arc<Claimant>,
    poll_interval: Duration,
    /// Back-off while claims come back empty although runs look due (locked by others).
    empty_backoff: Duration,
    down: bool,
    /// Whether the queue has a fast path; `None` until first asked.
    fast: Option<bool>,
}

impl Claimer {
    pub fn new(
        client: Client,
        queue: &str,
        claimant: Arc<Claimant>,
        poll_interval: Duration,
    ) -> Claimer {
        Claimer {
            client,
            queue: queue.to_string(),
            claimant,
            poll_interval,
            empty_backoff: Duration::from_millis(10),
            down: false,
            fast: None,
        }
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Claims up to `qty` runs. Database trouble is logged once and reported as no runs.
    pub async fn claim(&mut self, qty: usize) -> Vec<Claimed> {
        match self.try_claim(qty as i32).await {
            Ok(runs) => {
                if self.down {
                    info!(queue = %self.queue, "database reachable again; claiming");
                    self.down = false;
                }
                runs
            }
            Err(e) => {
                if !self.down {
                    match &e {
                        ClientError::QueueNotFound(_) => warn!(queue = %self.queue, "{e}"),
                        _ => {
                            warn!(queue = %self.queue, error = %e, "claim failed; backing off and retrying")
                        }
                    }
                    self.down = true;
                }
                Vec::new()
            }
        }
    }

    async fn try_claim(&mut self, qty: i32) -> Result<Vec<Claimed>, ClientError> {
        let fast = match self.fast {
            Some(f) => f,
            None => {
                let f = self.client.has_fast_paths(&self.queue).await?;
                debug!(queue = %self.queue, fast_path = f, "claim path chosen");
                self.fast = Some(f);
                f
            }
        };
        if !fast {
            return self
                .client
                .claim_rows(
                    &self.queue,
                    &self.claimant.worker_id,
                    self.claimant.claim_timeout_secs,
                    qty,
                    &self.claimant.limits,
                )
                .await;
        }
        let result = self
            .client
            .claim_fast_rows(
                &self.queue,
                &self.claimant.worker_id,
                self.claimant.claim_timeout_secs,
                qty,
                &self.claimant.limits,
            )
            .await;
        match result {
            Ok(runs) => Ok(runs),
            Err(ClientError::SchemaMissing(msg)) => {
                // The fast path went away (the queue was dropped and made again by a client
                // that does not install it, say): ask again next time.
                debug!(queue = %self.queue, %msg, "fast claim path missing; checking again");
                self.fast = None;
                Err(ClientError::SchemaMissing(msg))
            }
            Err(e) => Err(e),
        }
    }

    /// How long to wait, after a claim that left slots free, before claiming again: until
    /// the earliest waiting run is due, at most the poll interval.
    pub async fn idle_wait(&mut self) -> Duration {
        if self.down {
            return self.poll_interval.max(Duration::from_millis(500));
        }
        let next = self
            .client
            .seconds_until_due(&self.queue)
            .await
            .unwrap_or(None);
        match next {
            Some(s) if s.is_finite() && s > 0.0 => {
                self.empty_backoff = Duration::from_millis(10);
                Duration::from_secs_f64(s).min(self.poll_interval)
            }
            Some(s) if s.is_finite() => {
                // Due but not claimable by us right now (locked by another claimer, or its
                // task is in a state that cannot run): back off briefly, doubling.
                let wait = self.empty_backoff;
                self.empty_backoff = (self.empty_backoff * 2).min(self.poll_interval);
                wait
            }
            _ => {
                self.empty_backoff = Duration::from_millis(10);
                self.poll_interval
            }
        }
    }

    /// Resets the empty-claim back-off after a claim that found work.
    pub fn found_work(&mut self) {
        self.empty_backoff = Duration::from_millis(10);
    }
}
