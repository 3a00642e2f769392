//! Drives the controller's two watch streams (PatchPolicies and Nodes) in
//! tasks of their own. The reflector stores then keep up with the API server
//! while a decision pass runs, instead of only between passes: a watch that
//! is not read for long is ended by the server (its queue full) and listed
//! again, which costs the whole list and a pause. The decision loop is only
//! told that something changed, as one coalesced wake-up.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// What the pumps have seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Seen {
    policies_ready: bool,
    nodes_ready: bool,
    /// A stream ended (only when the API client is gone).
    ended: bool,
}

#[derive(Clone, Copy)]
enum Which {
    Policies,
    Nodes,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Policies => "PatchPolicy",
            Which::Nodes => "Node",
        }
    }
}

/// The running pumps; dropping them stops both.
pub(crate) struct Pumps {
    changed: Arc<Notify>,
    seen: watch::Receiver<Seen>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pumps {
    /// Starts a pump for each stream (each already feeding its reflector).
    pub(crate) fn start<P, N, PK, NK>(policies: P, nodes: N) -> Pumps
    where
        P: Stream<Item = Result<watcher::Event<PK>, watcher::Error>> + Send + Unpin + 'static,
        N: Stream<Item = Result<watcher::Event<NK>, watcher::Error>> + Send + Unpin + 'static,
        PK: Send + 'static,
        NK: Send + 'static,
    {
        let changed = Arc::new(Notify::new());
        let (tx, seen) = watch::channel(Seen::default());
        let tx = Arc::new(tx);
        let tasks = vec![
            tokio::spawn(pump(policies, Which::Policies, changed.clone(), tx.clone())),
            tokio::spawn(pump(nodes, Which::Nodes, changed.clone(), tx)),
        ];
        Pumps {
            changed,
            seen,
            tasks,
        }
    }

    /// Waits until something changed since the last call (changes in
    /// between are one wake-up). None once a stream has ended.
    pub(crate) async fn changed(&self) -> Option<()> {
        self.changed.notified().await;
        (!self.ended()).then_some(())
    }

    /// Both stores have had their first full list.
    pub(crate) fn ready(&self) -> bool {
        let s = *self.seen.borrow();
        s.policies_ready && s.nodes_ready
    }

    /// A stream ended: the loop stops.
    pub(crate) fn ended(&self) -> bool {
        self.seen.borrow().ended
    }
}

impl Drop for Pumps {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn pump<S, K>(
    mut stream: S,
    which: Which,
    changed: Arc<Notify>,
    seen: Arc<watch::Sender<Seen>>,
) where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
{
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::InitDone) => seen.send_modify(|s| match which {
                Which::Policies => s.policies_ready = true,
                Which::Nodes => s.nodes_ready = true,
            }),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %super::safe_error(&e), "{} watch error; retrying", which.name());
                continue;
            }
        }
        changed.notify_one();
    }
    seen.send_modify(|s| s.ended = true);
    changed.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use std::time::Duration;

    type Tx = mpsc::UnboundedSender<Result<watcher::Event<u32>, watcher::Error>>;

    fn streams() -> (Tx, Tx, Pumps) {
        let (ptx, prx) = mpsc::unbounded();
        let (ntx, nrx) = mpsc::unbounded();
        (ptx, ntx, Pumps::start(prx, nrx))
    }

    async fn woken(p: &Pumps) -> Option<Option<()>> {
        tokio::time::timeout(Duration::from_secs(5), p.changed())
            .await
            .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn ready_after_both_first_lists_and_changes_coalesce_into_one_wake_up() {
        let (ptx, ntx, pumps) = streams();
        assert!(!pumps.ready());
        assert!(ptx.unbounded_send(Ok(watcher::Event::InitDone)).is_ok());
        assert_eq!(woken(&pumps).await, Some(Some(())));
        assert!(!pumps.ready(), "the Node list is not in yet");
        assert!(ntx.unbounded_send(Ok(watcher::Event::InitDone)).is_ok());
        assert_eq!(woken(&pumps).await, Some(Some(())));
        assert!(pumps.ready());
        // Three changes while nobody waits: one wake-up, then none.
        for n in 0..3 {
            assert!(ntx.unbounded_send(Ok(watcher::Event::Apply(n))).is_ok());
        }
        tokio::task::yield_now().await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(woken(&pumps).await, Some(Some(())));
        assert_eq!(
            woken(&pumps).await,
            None,
            "a second wake-up without a change"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_ends_the_loop() {
        let (ptx, _ntx, pumps) = streams();
        drop(ptx);
        assert_eq!(woken(&pumps).await, Some(None));
        assert!(pumps.ended());
    }
}
