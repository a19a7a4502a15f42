//! Leases: keeping the claims of running tasks alive, and noticing when one is lost.
//!
//! Every in-flight run is registered here. One timer renews all of them every third of the
//! claim timeout, one statement per queue; a run that is no longer `running` (lease expired
//! and swept, or the task cancelled) has its token cancelled, which stops its execution
//! without reporting anything.
//!
//! Two cases are not losses:
//! * A `sleeping` run suspended itself (only its own sleep or event wait makes a run sleep).
//!   Its execution is ending, perhaps slowly (a native program gets its `grace` to exit after
//!   a suspension): its lease is no longer renewed, and it is left to finish.
//! * Woken early, that same run can be claimed again by this worker while the old execution is
//!   still exiting. Registrations are therefore counted per execution, not per run id: the
//!   old one's end must not take the new one's lease out of the registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use absurd_client::{Client, ClientError, State};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

struct Lease {
    queue: String,
    run_id: Uuid,
    lost: CancellationToken,
}

/// The registry of in-flight executions and their leases, keyed by a serial number per
/// execution (one run id can have two: see the module's documentation).
#[derive(Clone, Default)]
pub struct Leases {
    runs: Arc<Mutex<HashMap<u64, Lease>>>,
    next: Arc<AtomicU64>,
}

/// A run's place in the registry. Dropping it (however the run ends: returned, failed,
/// stopped, or unwound by a panic) ends the renewals, so a lease never outlives its run.
pub struct Registration {
    leases: Leases,
    serial: u64,
    lost: CancellationToken,
}

impl Registration {
    /// Cancelled when the run is found lost (cancelled, or its lease expired and was swept).
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.leases.runs.lock().unwrap().remove(&self.serial);
    }
}

impl Leases {
    /// Registers a run, renewed until the returned registration is dropped.
    pub fn register(&self, queue: &str, run_id: Uuid) -> Registration {
        let lost = CancellationToken::new();
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        self.runs.lock().unwrap().insert(
            serial,
            Lease {
                queue: queue.to_string(),
                run_id,
                lost: lost.clone(),
            },
        );
        Registration {
            leases: self.clone(),
            serial,
            lost,
        }
    }

    /// The number of executions in flight.
    pub fn len(&self) -> usize {
        self.runs.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn by_queue(&self) -> HashMap<String, Vec<Uuid>> {
        let mut m: HashMap<String, Vec<Uuid>> = HashMap::new();
        for lease in self.runs.lock().unwrap().values() {
            let runs = m.entry(lease.queue.clone()).or_default();
            if !runs.contains(&lease.run_id) {
                runs.push(lease.run_id);
            }
        }
        m
    }

    /// Stops every execution of `run_id` (there may be two: see the module's documentation).
    fn mark_lost(&self, run_id: Uuid, why: &str) {
        for l in self.runs.lock().unwrap().values() {
            if l.run_id == run_id && !l.lost.is_cancelled() {
                info!(%run_id, "run lost ({why}); stopping it without reporting");
                l.lost.cancel();
            }
        }
    }

    /// Renews every lease now. Runs found lost are cancelled.
    pub async fn renew_all(&self, client: &Client, extend_by_secs: i32) {
        for (queue, runs) in self.by_queue() {
            if let Err(e) = self
                .renew_queue(client, &queue, &runs, extend_by_secs)
                .await
            {
                warn!(%queue, error = %e, "could not renew leases");
            }
        }
    }

    async fn renew_queue(
        &self,
        client: &Client,
        queue: &str,
        runs: &[Uuid],
        extend_by: i32,
    ) -> Result<(), ClientError> {
        // Find the runs that are no longer ours before extending, so that one lost run does
        // not fail the batched statement for all the others.
        let rows = client.lease_states(queue, runs).await?;
        let mut alive = Vec::new();
        for row in &rows {
            let run_id = row.run_id;
            let state = row.state;
            if row.task_state == State::Cancelled {
                self.mark_lost(run_id, "task cancelled");
            } else if state == State::Sleeping {
                // It suspended itself and its execution is ending: nothing to renew or stop.
                debug!(%run_id, "run suspended; its execution is ending, no renewal");
            } else if state != State::Running {
                self.mark_lost(run_id, &format!("run is {state}; its lease expired"));
            } else {
                alive.push(run_id);
            }
        }
        for run in runs {
            if !rows.iter().any(|r| r.run_id == *run) {
                self.mark_lost(*run, "run no longer exists");
            }
        }
        if alive.is_empty() {
            return Ok(());
        }
        let batch = client.extend_claims(queue, &alive, extend_by).await;
        match batch {
            Ok(_) => {
                debug!(%queue, runs = alive.len(), "leases renewed");
                Ok(())
            }
            Err(_) => {
                // Something changed between the two statements: renew one by one.
                for run in alive {
                    match client.extend_claim(queue, run, extend_by).await {
                        Ok(()) => {}
                        Err(ClientError::Cancelled) => self.mark_lost(run, "task cancelled"),
                        Err(ClientError::RunFailed(_)) => self.mark_lost(run, "lease expired"),
                        Err(e @ ClientError::Rejected(_)) => self.mark_lost(run, &e.to_string()),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }

    /// Renews all leases every `claim_timeout / 3` until `stop` is cancelled.
    pub async fn run(self, client: Client, claim_timeout: Duration, stop: CancellationToken) {
        let period = (claim_timeout / 3).max(Duration::from_millis(200));
        let extend_by = claim_timeout.as_secs().max(1) as i32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if !self.is_empty() {
                self.renew_all(&client, extend_by).await;
            }
        }
    }
}
