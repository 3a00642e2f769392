//! The output of decide: side effects ([`Action`]) and the [`Decision`].

use std::time::Duration;

use crate::api::PatchPolicyStatus;
use crate::core::node_record::{DoneMap, NodeRecord};

/// A side effect for the controller. Apply in order; each writes its record
/// first (one patch of the `sofort.dev/record` annotation and the
/// `sofort.dev/step` label), then acts, so a restart repeats at most an
/// idempotent step.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start the node: write `record` (step Draining: the claim) and set
    /// `spec.unschedulable: true` in one write, conditional on the Node not
    /// having changed since it was read (of two policies, only one wins).
    Claim {
        /// Node name.
        node: String,
        /// Record to write (the claim).
        record: NodeRecord,
    },
    /// The node is ours and in progress but was found schedulable (someone
    /// uncordoned it): write its unchanged `record` and set
    /// `spec.unschedulable: true` again, in one write. Nothing reboots a
    /// schedulable node.
    CordonAgain {
        /// Node name.
        node: String,
        /// The node's current record, written unchanged.
        record: NodeRecord,
    },
    /// Write `record` if given, then make sure a drain runs for the node.
    /// `force`: delete the remaining pods without eviction (onTimeout: Force).
    Drain {
        /// Node name.
        node: String,
        /// Record to write first (step Draining), when the step changes.
        record: Option<NodeRecord>,
        /// Delete instead of evict.
        force: bool,
    },
    /// Write `record` (step Patching with its patch request); the agent runs it.
    RequestPatch {
        /// Node name.
        node: String,
        /// Record to write.
        record: NodeRecord,
    },
    /// Write `record` (step Rebooting, `bootIdBefore = boot_id`); the agent
    /// reboots once for this boot ID.
    RequestReboot {
        /// Node name.
        node: String,
        /// Boot ID the reboot is requested for.
        boot_id: String,
        /// Record to write.
        record: NodeRecord,
    },
    /// Write `record`: a plain step change.
    SetStep {
        /// Node name.
        node: String,
        /// Record to write.
        record: NodeRecord,
    },
    /// Stop any drain of the node; if `uncordon`, set `spec.unschedulable:
    /// false` first; then write `record` (step Failed, with the reason).
    MarkFailed {
        /// Node name.
        node: String,
        /// Uncordon before writing (sofort cordoned it).
        uncordon: bool,
        /// Record to write.
        record: NodeRecord,
    },
    /// In one patch: write `done` to `sofort.dev/done`, remove the record and
    /// the step label, and make the node schedulable again when `uncordon`
    /// (sofort cordoned it). One write leaves no half-released state behind.
    Release {
        /// Node name.
        node: String,
        /// Full done map to write.
        done: DoneMap,
        /// Also uncordon.
        uncordon: bool,
    },
}

impl Action {
    /// The node the action is about.
    pub fn node(&self) -> &str {
        match self {
            Action::Claim { node, .. }
            | Action::CordonAgain { node, .. }
            | Action::Drain { node, .. }
            | Action::RequestPatch { node, .. }
            | Action::RequestReboot { node, .. }
            | Action::SetStep { node, .. }
            | Action::MarkFailed { node, .. }
            | Action::Release { node, .. } => node,
        }
    }
}

/// What decide returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Side effects. `actions[..first_start]` move nodes in progress (at most
    /// one per node); `actions[first_start..]` start nodes (a claim and then
    /// its drain). Starts may rely on the moves (a release frees the slot a
    /// start takes) and a drain on its claim, so apply in that order and stop
    /// at the first failure; actions of different nodes in the same part do
    /// not depend on each other and may be written concurrently.
    pub actions: Vec<Action>,
    /// Index of the first start in `actions`.
    pub first_start: usize,
    /// The status to write.
    pub status: PatchPolicyStatus,
    /// Decide again after this long even if nothing changes (deadlines, windows).
    pub requeue_after: Option<Duration>,
}
