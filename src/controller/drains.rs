//! Drain workers: one background task per draining node, whose progress the
//! decision loop reads as [`DrainState`]. A worker that finishes or learns
//! something new kicks the loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::drain::{self, DrainMode, DrainOutcome, DrainSettings};
use crate::metrics::Metrics;
use crate::rollout::DrainState;

struct Worker {
    forcing: bool,
    revision: String,
    done: Arc<Mutex<Option<bool>>>,
    progress: watch::Receiver<Option<String>>,
    task: JoinHandle<()>,
}

/// The drain workers of this process.
#[derive(Default)]
pub(crate) struct Drains {
    workers: HashMap<String, Worker>,
}

/// What a drain worker needs to run.
pub(crate) struct DrainJob {
    pub client: Client,
    pub evict_client: Client,
    pub node: String,
    pub revision: String,
    pub settings: DrainSettings,
    pub mode: DrainMode,
    pub deadline: tokio::time::Instant,
    pub kick: mpsc::UnboundedSender<()>,
    pub metrics: Metrics,
}

impl Drains {
    /// The state decide sees for `node`.
    pub(crate) fn state(&self, node: &str) -> DrainState {
        match self.workers.get(node) {
            None => DrainState::Idle,
            Some(w) => match w.done.lock().ok().and_then(|d| *d) {
                Some(true) => DrainState::Drained,
                _ => DrainState::Running {
                    forcing: w.forcing,
                    blocker: w.progress.borrow().clone(),
                },
            },
        }
    }

    /// What blocks the drain of `node`, if a worker reported something.
    pub(crate) fn blocker(&self, node: &str) -> Option<String> {
        self.workers
            .get(node)
            .and_then(|w| w.progress.borrow().clone())
    }

    /// Makes sure a worker runs for the job's node in the job's mode; a worker
    /// for an older revision or a non-forcing worker asked to force is replaced.
    pub(crate) fn ensure(&mut self, job: DrainJob) {
        if let Some(w) = self.workers.get(&job.node) {
            let same = w.revision == job.revision && (w.forcing || job.mode == DrainMode::Evict);
            if same {
                return;
            }
            w.task.abort();
        }
        let (tx, rx) = watch::channel(None);
        let done = Arc::new(Mutex::new(None));
        let done_w = done.clone();
        let node = job.node.clone();
        let forcing = job.mode == DrainMode::Force;
        let revision = job.revision.clone();
        let task = tokio::spawn(async move {
            loop {
                let outcome = drain::drain_node(
                    job.client.clone(),
                    job.evict_client.clone(),
                    &job.node,
                    &job.settings,
                    job.mode,
                    job.deadline,
                    &tx,
                )
                .await;
                match outcome {
                    Ok(DrainOutcome::Drained { evicted, forced }) => {
                        job.metrics.count_evictions("evicted", evicted as u64);
                        job.metrics.count_evictions("forced", forced as u64);
                        tracing::info!(node = %job.node, evicted, forced, "node drained");
                        tx.send_replace(None);
                        if let Ok(mut d) = done_w.lock() {
                            *d = Some(true);
                        }
                        let _ = job.kick.send(());
                        return;
                    }
                    Ok(DrainOutcome::TimedOut(pods)) => {
                        job.metrics.count_evictions("blocked", pods.len() as u64);
                        tracing::warn!(node = %job.node, reason = %DrainOutcome::TimedOut(pods).reason(), "drain deadline passed");
                        if let Ok(mut d) = done_w.lock() {
                            *d = Some(false);
                        }
                        let _ = job.kick.send(());
                        return;
                    }
                    Ok(DrainOutcome::Refused(_)) => {
                        // Pods the settings forbid evicting: keep looking until
                        // they go away or the deadline fails the node.
                        let _ = job.kick.send(());
                        if tokio::time::Instant::now() >= job.deadline {
                            return;
                        }
                        tokio::time::sleep(job.settings.retry_interval).await;
                    }
                    Err(e) => {
                        job.metrics.count_evictions("error", 1);
                        tracing::warn!(node = %job.node, error = %e, "drain interrupted; retrying");
                        tx.send_replace(Some(e.to_string()));
                        let _ = job.kick.send(());
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        self.workers.insert(
            node,
            Worker {
                forcing,
                revision,
                done,
                progress: rx,
                task,
            },
        );
    }

    /// Stops the worker of `node`, if any.
    pub(crate) fn stop(&mut self, node: &str) {
        if let Some(w) = self.workers.remove(node) {
            w.task.abort();
        }
    }

    /// Stops workers of nodes for which `keep` is false.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self.workers.keys().filter(|n| !keep(n)).cloned().collect();
        for n in gone {
            self.stop(&n);
        }
    }

    /// Stops every worker.
    pub(crate) fn stop_all(&mut self) {
        for (_, w) in self.workers.drain() {
            w.task.abort();
        }
    }
}
