//! The `sofort.dev/pending-reboot` taint: after every policy's pass of a
//! tick, the nodes queued by any live policy ([`rollout::queued_nodes`])
//! carry the taint and no other node does ([`rollout::taint_changes`]).
//! Each write replaces the node's taint list with every other taint kept,
//! conditional on the resourceVersion it was read with; at most
//! [`TAINT_WRITES_PER_PASS`] per tick, the rest on the next one.
//!
//! The wanted set is computed afresh each tick from the live policies, so a
//! taint nobody wants any more (node done or claimed, deselected, policy
//! paused, deleted or gone while the controller was down) goes on the next
//! tick, and a taint another policy still wants is never removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;

use super::patches;
use super::reconciler::Reconciler;
use super::writes::Writes;
use crate::core::rollout::{self, NodeView};

/// Taint writes of one tick at most.
pub(crate) const TAINT_WRITES_PER_PASS: usize = 20;

/// One taint write in flight: the node and its answer (None: nothing to write).
type TaintWrite<'a> = BoxFuture<'a, (String, Option<Result<Node, kube::Error>>)>;

/// How soon to look again when writes were left over or failed.
const AGAIN: Duration = Duration::from_secs(1);

impl<W: Writes> Reconciler<W> {
    /// Brings the taints to `wanted`. Returns when to look again (writes
    /// left over, or a write failed).
    pub(super) async fn sync_taints(
        &mut self,
        wanted: &BTreeSet<String>,
        objects: &mut BTreeMap<String, Arc<Node>>,
    ) -> Option<Duration> {
        // A node claimed later in the tick by another policy is in
        // progress now: cordoned, no taint needed.
        let wanted: BTreeSet<String> = wanted
            .iter()
            .filter(|n| {
                objects
                    .get(*n)
                    .is_some_and(|o| !NodeView::record_of(o).is_some_and(|r| r.step.in_progress()))
            })
            .cloned()
            .collect();
        let tainted: BTreeMap<String, bool> = objects
            .iter()
            .map(|(name, n)| (name.clone(), patches::has_pending_taint(n)))
            .collect();
        let (changes, left) = rollout::taint_changes(&wanted, &tainted, TAINT_WRITES_PER_PASS);
        let writes = &self.writes;
        let futures: Vec<TaintWrite<'_>> = changes
            .iter()
            .map(|c| {
                let patch = objects
                    .get(&c.node)
                    .and_then(|n| patches::taint_patch(n, c.add));
                let node = c.node.clone();
                async move {
                    let result = match patch {
                        Some(p) => Some(writes.patch_node(&node, p).await),
                        None => None,
                    };
                    (node, result)
                }
                .boxed()
            })
            .collect();
        let results: Vec<_> = futures::stream::iter(futures).buffered(16).collect().await;
        let mut again = left > 0;
        for (node, result) in results {
            match result {
                Some(Ok(updated)) => {
                    let updated = Arc::new(updated);
                    objects.insert(node, updated.clone());
                    self.overlay.put(updated);
                }
                Some(Err(kube::Error::Api(s))) if s.code == 409 => {
                    tracing::debug!(node, "node changed meanwhile; taint written again soon");
                    again = true;
                }
                Some(Err(e)) => {
                    let error = self.notifications.scrub(&e.to_string());
                    tracing::warn!(node, %error, "cannot write the pending-reboot taint; retrying");
                    again = true;
                }
                None => {}
            }
        }
        again.then_some(AGAIN)
    }
}
