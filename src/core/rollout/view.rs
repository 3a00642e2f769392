//! What decide sees: one Node ([`NodeView`]), its drain ([`DrainState`]) and
//! the other policies ([`Contender`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{PatchPolicy, Phase, Step};
use crate::core::node_record::{
    self, DONE_ANNOTATION, DoneMap, NodeRecord, PATCH_RESULT_ANNOTATION, PatchResult,
    REBOOT_ACK_ANNOTATION, REBOOT_REQUIRED_LABEL, RECORD_ANNOTATION, RebootAck,
};
use crate::core::selector;

/// The controller's drain worker for a node, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DrainState {
    /// No drain runs for the node (also: after a controller restart).
    #[default]
    Idle,
    /// Evicting; `forcing` once remaining pods are deleted without eviction;
    /// `blocker` names what holds it up (pods, PodDisruptionBudgets).
    Running {
        /// Deleting without eviction (onTimeout: Force).
        forcing: bool,
        /// What blocks the drain, for the failure reason.
        blocker: Option<String>,
    },
    /// Every pod that must leave has left.
    Drained,
    /// The drain cannot succeed (a forced drain may not delete pods, or deleted
    /// pods did not terminate): the node fails at once with this reason.
    Failed {
        /// Why, for the failure reason.
        reason: String,
    },
}

/// What decide sees of one Node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Condition Ready is True.
    pub ready: bool,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// `status.nodeInfo.bootID`.
    pub boot_id: Option<String>,
    /// The `sofort.dev/record` annotation (any policy's).
    pub record: Option<NodeRecord>,
    /// Why the record annotation could not be read; such a node is never started.
    pub record_error: Option<String>,
    /// The `sofort.dev/done` annotation.
    pub done: DoneMap,
    /// The `sofort.dev/reboot-required` label: `Some(true)`, `Some(false)`, or unknown.
    pub reboot_required: Option<bool>,
    /// The controller's drain worker for this node.
    pub drain: DrainState,
    /// The agent's `sofort.dev/patch-result`.
    pub patch_result: Option<PatchResult>,
    /// The agent's `sofort.dev/reboot-ack`.
    pub reboot_ack: Option<RebootAck>,
}

impl NodeView {
    /// Only the `sofort.dev/record` of a Node (None when it has none or it
    /// cannot be read), without building the whole view.
    pub fn record_of(node: &Node) -> Option<NodeRecord> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        node_record::read_json::<NodeRecord>(
            name,
            node.metadata.annotations.as_ref(),
            RECORD_ANNOTATION,
        )
        .ok()
        .flatten()
    }

    /// Builds the view of a Node object; unreadable annotations never fail the
    /// whole node (a broken record makes it unstartable and is reported).
    pub fn from_node(node: &Node) -> NodeView {
        let name = node.metadata.name.clone().unwrap_or_default();
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let ann = node.metadata.annotations.as_ref();
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let boot_id = status
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.boot_id.clone())
            .filter(|b| !b.is_empty());
        let (record, record_error) =
            match node_record::read_json::<NodeRecord>(&name, ann, RECORD_ANNOTATION) {
                Ok(r) => (r, None),
                Err(e) => (None, Some(e.to_string())),
            };
        let done = node_record::read_json::<DoneMap>(&name, ann, DONE_ANNOTATION)
            .ok()
            .flatten()
            .unwrap_or_default();
        let reboot_required = match labels.get(REBOOT_REQUIRED_LABEL).map(String::as_str) {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        NodeView {
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            patch_result: node_record::read_json(&name, ann, PATCH_RESULT_ANNOTATION)
                .ok()
                .flatten(),
            reboot_ack: node_record::read_json(&name, ann, REBOOT_ACK_ANNOTATION)
                .ok()
                .flatten(),
            name,
            labels,
            ready,
            boot_id,
            record,
            record_error,
            done,
            reboot_required,
            drain: DrainState::Idle,
        }
    }
}

/// Another policy, as far as claiming nodes is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Contender {
    /// Policy name.
    pub name: String,
    /// `spec.urgent`.
    pub urgent: bool,
    /// `spec.revision`, or a standing policy's current round id.
    pub revision: String,
    /// `spec.nodeSelector`.
    pub selector: LabelSelector,
    /// A standing policy's current round members (`None`: every selected node).
    pub members: Option<std::collections::BTreeSet<String>>,
    /// Wants to start nodes: not paused, not Halted, not Completed.
    pub active: bool,
}

impl Contender {
    /// Builds the contender view of another policy.
    pub fn from_policy(p: &PatchPolicy) -> Contender {
        let phase = p.status.as_ref().and_then(|s| s.phase);
        let revision = crate::core::round::effective_revision(p);
        let same_rev = p.status.as_ref().and_then(|s| s.revision.as_deref()) == Some(&revision);
        Contender {
            name: p.metadata.name.clone().unwrap_or_default(),
            urgent: p.spec.urgent,
            members: crate::core::round::stored_members(p),
            revision,
            selector: p.spec.node_selector.clone(),
            active: !(p.spec.paused
                || (same_rev && matches!(phase, Some(Phase::Halted) | Some(Phase::Completed)))),
        }
    }

    pub(super) fn wants(&self, node: &NodeView) -> bool {
        self.active
            && selector::selects_node(&self.selector, &node.labels)
            && self.members.as_ref().is_none_or(|m| m.contains(&node.name))
            && node.done.get(&self.name) != Some(&self.revision)
            && !node.record.as_ref().is_some_and(|r| {
                r.policy == self.name && r.revision == self.revision && r.step == Step::Failed
            })
    }
}
