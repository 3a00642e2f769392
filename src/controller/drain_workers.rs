//! Drain workers: one background task per draining node, whose progress the
//! decision loop reads as [`DrainState`]. A worker that finishes or learns
//! something new kicks the loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::controller::drain::{self, DrainMode, DrainOutcome, DrainSettings};
use crate::core::rollout::DrainState;
use crate::metrics::ControllerMetrics;

/// How a worker ended: `Ok` drained, `Err` failed with a reason (the node
/// fails at once), `None` while it runs or when the deadline decides.
type Finished = Option<Result<(), String>>;

struct Worker {
    forcing: bool,
    revision: String,
    done: Arc<Mutex<Finished>>,
    progress: watch::Receiver<Option<String>>,
    task: JoinHandle<()>,
}

/// The drain workers of this process.
#[derive(Default)]
pub(crate) struct Drains {
    workers: HashMap<String, Worker>,
}

/// The wait before retrying a drain after its `failures`-th consecutive
/// error: 1 s doubling up to 30 s, spread ±20 % by node so that the workers
/// of many nodes do not retry in step.
fn retry_backoff(failures: u32, node: &str) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(Duration::from_secs(30));
    let salt = node.bytes().fold(u64::from(failures), |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    // 0.8 ..= 1.2 of the base.
    base.mul_f64(0.8 + (salt % 401) as f64 / 1000.0)
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
    pub metrics: ControllerMetrics,
}

impl Drains {
    /// The state decide sees for `node`.
    pub(crate) fn state(&self, node: &str) -> DrainState {
        match self.workers.get(node) {
            None => DrainState::Idle,
            Some(w) => match w.done.lock().ok().and_then(|d| d.clone()) {
                Some(Ok(())) => DrainState::Drained,
                Some(Err(reason)) => DrainState::Failed { reason },
                None => DrainState::Running {
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
            // Consecutive failed attempts (list or watch errors): each waits
            // longer, so a struggling API server is not hammered by every
            // draining node at once.
            let mut failures = 0u32;
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
                            *d = Some(Ok(()));
                        }
                        let _ = job.kick.send(());
                        return;
                    }
                    Ok(DrainOutcome::TimedOut(pods)) => {
                        job.metrics.count_evictions("blocked", pods.len() as u64);
                        let reason = DrainOutcome::TimedOut(pods).reason();
                        tracing::warn!(node = %job.node, %reason, "drain deadline passed");
                        // Evicting: decide fails the node at its own deadline
                        // with the blocker. Forcing: the deleted pods did not
                        // go within their grace period; nothing more will help.
                        if job.mode == DrainMode::Force
                            && let Ok(mut d) = done_w.lock()
                        {
                            *d = Some(Err(reason));
                        }
                        let _ = job.kick.send(());
                        return;
                    }
                    Ok(outcome @ DrainOutcome::DeleteForbidden(_)) => {
                        job.metrics.count_evictions("forbidden", 1);
                        let reason = outcome.reason();
                        tracing::warn!(node = %job.node, %reason, "forced drain failed");
                        if let Ok(mut d) = done_w.lock() {
                            *d = Some(Err(reason));
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
                        failures += 1;
                        let wait = retry_backoff(failures, &job.node);
                        tracing::warn!(node = %job.node, error = %e, ?wait, "drain interrupted; retrying");
                        tx.send_replace(Some(e.to_string()));
                        let _ = job.kick.send(());
                        tokio::time::sleep(wait).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DrainSpec, OnTimeout};
    use http::{Request, Response};
    use kube::client::Body;

    #[tokio::test]
    async fn a_forced_drain_the_api_refuses_fails_the_node_with_what_to_do()
    -> Result<(), Box<dyn std::error::Error>> {
        let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(mock, "default");
        let server = tokio::spawn(drain::fake_api::refuse_pod_deletion(handle, "w-1"));
        let spec = DrainSpec {
            on_timeout: OnTimeout::Force,
            ..DrainSpec::default()
        };
        let (kick, mut kicked) = mpsc::unbounded_channel();
        let mut drains = Drains::default();
        drains.ensure(DrainJob {
            client: client.clone(),
            evict_client: client,
            node: "w-1".into(),
            revision: "r1".into(),
            settings: DrainSettings::from_spec(&spec, 5, Duration::from_secs(5)),
            mode: DrainMode::Force,
            deadline: tokio::time::Instant::now() + Duration::from_secs(3600),
            kick,
            metrics: ControllerMetrics::new(),
        });
        tokio::time::timeout(Duration::from_secs(5), kicked.recv())
            .await
            .map_err(|_| "the worker did not report")?;
        match drains.state("w-1") {
            DrainState::Failed { reason } => assert!(
                reason.contains(
                    "set the chart value controller.podDelete=true or use onTimeout: Fail"
                ),
                "{reason}"
            ),
            other => return Err(format!("expected a failed drain, got {other:?}").into()),
        }
        server.await??;
        drains.stop_all();
        Ok(())
    }

    #[test]
    fn retries_back_off_to_a_bound_and_spread_by_node() {
        let secs = |f, n| retry_backoff(f, n).as_secs_f64();
        for node in ["w-1", "w-2", "worker-4711"] {
            assert!((0.8..=1.2).contains(&secs(1, node)), "{}", secs(1, node));
            assert!((1.6..=2.4).contains(&secs(2, node)));
            for f in 6..40 {
                assert!(
                    (24.0..=36.0).contains(&secs(f, node)),
                    "{f}: {}",
                    secs(f, node)
                );
            }
        }
        let spread: std::collections::BTreeSet<u128> = (0..50)
            .map(|i| retry_backoff(3, &format!("worker-{i}")).as_millis())
            .collect();
        assert!(
            spread.len() > 10,
            "retries of many nodes should not be in step: {spread:?}"
        );
    }
}
