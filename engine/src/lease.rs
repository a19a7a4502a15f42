//! Leases: keeping the claims of running tasks alive, and noticing when one is lost.
//!
//! Every in-flight run is registered here. One timer renews all of them every third of the
//! claim timeout, one statement per queue; a run that is no longer `running` (lease expired
//! and swept, or the task cancelled) has its token cancelled, which stops its execution
//! without reporting anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use absurd_client::{Client, ClientError, State};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

struct Lease {
    queue: String,
    lost: CancellationToken,
}

/// The registry of in-flight runs and their leases.
#[derive(Clone, Default)]
pub struct Leases {
    runs: Arc<Mutex<HashMap<Uuid, Lease>>>,
}

/// A run's place in the registry. Dropping it (however the run ends: returned, failed,
/// stopped, or unwound by a panic) ends the renewals, so a lease never outlives its run.
pub struct Registration {
    leases: Leases,
    run_id: Uuid,
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
        self.leases.release(self.run_id);
    }
}

impl Leases {
    /// Registers a run, renewed until the returned registration is dropped.
    pub fn register(&self, queue: &str, run_id: Uuid) -> Registration {
        let lost = CancellationToken::new();
        self.runs.lock().unwrap().insert(
            run_id,
            Lease {
                queue: queue.to_string(),
                lost: lost.clone(),
            },
        );
        Registration {
            leases: self.clone(),
            run_id,
            lost,
        }
    }

    pub fn release(&self, run_id: Uuid) {
        self.runs.lock().unwrap().remove(&run_id);
    }

    pub fn len(&self) -> usize {
        self.runs.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn by_queue(&self) -> HashMap<String, Vec<Uuid>> {
        let mut m: HashMap<String, Vec<Uuid>> = HashMap::new();
        for (run, lease) in self.runs.lock().unwrap().iter() {
            m.entry(lease.queue.clone()).or_default().push(*run);
        }
        m
    }

    fn mark_lost(&self, run_id: Uuid, why: &str) {
        if let Some(l) = self.runs.lock().unwrap().get(&run_id) {
            if !l.lost.is_cancelled() {
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
