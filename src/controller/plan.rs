//! What one pass does for one policy, decided before anything is written: the
//! node operations in order, and (for a deleted policy) whether the finalizer
//! may go. Pure: a live policy's plan is [`crate::core::rollout::decide`]'s
//! actions; a deleted policy's plan gives its nodes back and lets the nodes in
//! reboot finish under a paused copy of the policy. Both are carried out by
//! the same apply path ([`super::apply`]).

use std::time::Duration;

use crate::api::{PatchPolicy, Step};
use crate::core::rollout::{self, Action, Config, Decision, DrainState, NodeView};

/// One node write and what goes with it.
// A pass holds a handful of these for a moment; boxing the action would
// cost an allocation per operation for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// A rollout action of decide.
    Rollout(Action),
    /// A deleted policy gives a node back: its record and step label go, and
    /// it is uncordoned when `uncordon` (sofort cordoned it). `announce`: the
    /// node was in work (draining or patching): stop its drain, publish
    /// `Released`.
    GiveBack {
        /// Node name.
        node: String,
        /// Also uncordon.
        uncordon: bool,
        /// Stop the drain and publish an Event.
        announce: bool,
    },
}

impl Op {
    /// The node the operation is about.
    pub(crate) fn node(&self) -> &str {
        match self {
            Op::Rollout(a) => a.node(),
            Op::GiveBack { node, .. } => node,
        }
    }
}

/// The node operations of one pass for one policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// In order; `ops[..first_start]` move nodes in progress (or give them
    /// back), `ops[first_start..]` start nodes.
    pub(crate) ops: Vec<Op>,
    /// Index of the first start.
    pub(crate) first_start: usize,
}

impl Plan {
    /// The operations of a live policy's decision.
    pub(crate) fn of_decision(decision: &Decision) -> Plan {
        Plan {
            ops: decision.actions.iter().cloned().map(Op::Rollout).collect(),
            first_start: decision.first_start,
        }
    }
}

/// What a pass does for a deleted policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Deletion {
    /// Node operations: give-backs first, then the moves of nodes in reboot.
    pub(crate) plan: Plan,
    /// None: every node is given back, the finalizer may go once the plan is
    /// written. Some: nodes are still in reboot or later; look again then.
    pub(crate) wait: Option<Duration>,
}

/// A deleted policy: no new work; nodes being drained or patched are given
/// back (uncordoned if sofort cordoned them), records at Done, Failed or
/// Pending dropped; nodes in reboot or later finish under a paused copy of the
/// policy, decided on the views as they are once the give-backs are written.
pub(crate) fn deletion(
    policy: &PatchPolicy,
    config: &Config,
    views: &[NodeView],
    now: jiff::Timestamp,
) -> Deletion {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let mut ops = Vec::new();
    let mut waiting = false;
    let mut after: Vec<NodeView> = Vec::with_capacity(views.len());
    for v in views {
        let mut v = v.clone();
        if let Some(record) = v.record.as_ref().filter(|r| r.policy == name) {
            let give_back = match record.step {
                Step::Draining | Step::Patching => Some((!record.was_unschedulable, true)),
                Step::Done | Step::Failed | Step::Pending => Some((false, false)),
                _ => None,
            };
            match give_back {
                Some((uncordon, announce)) => {
                    ops.push(Op::GiveBack {
                        node: v.name.clone(),
                        uncordon,
                        announce,
                    });
                    v.record = None;
                    if uncordon {
                        v.unschedulable = false;
                    }
                    if announce {
                        v.drain = DrainState::Idle;
                    }
                }
                None => waiting = true,
            }
        }
        after.push(v);
    }
    if !waiting {
        let first_start = ops.len();
        return Deletion {
            plan: Plan { ops, first_start },
            wait: None,
        };
    }
    // Let the nodes in reboot finish under a paused copy of the policy.
    let mut paused = policy.clone();
    paused.spec.paused = true;
    let decision = rollout::decide_with(&paused, config, &after, &[], now);
    let given_back = ops.len();
    ops.extend(decision.actions.into_iter().map(Op::Rollout));
    Deletion {
        plan: Plan {
            ops,
            first_start: given_back + decision.first_start,
        },
        wait: Some(
            decision
                .requeue_after
                .unwrap_or(Duration::from_secs(2))
                .min(Duration::from_secs(5)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PatchPolicySpec;
    use crate::core::node_record::NodeRecord;

    fn view(name: &str, step: Option<Step>, was_unschedulable: bool) -> NodeView {
        let at: jiff::Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
        let mut node = k8s_openapi::api::core::v1::Node::default();
        node.metadata.name = Some(name.into());
        let mut v = NodeView::from_node(&node);
        v.ready = true;
        v.unschedulable = step.is_some();
        v.record = step.map(|step| NodeRecord {
            policy: "p".into(),
            revision: "r".into(),
            step,
            since: at,
            started: at,
            was_unschedulable,
            boot_id_before: Some("b0".into()),
            patch: None,
            reason: None,
            labels: Default::default(),
            drain_after: None,
        });
        v
    }

    #[test]
    fn a_deleted_policy_gives_back_what_it_holds_and_then_may_go() {
        let policy = PatchPolicy::new("p", PatchPolicySpec::new("r"));
        let now: jiff::Timestamp = "2026-11-27T00:01:00Z".parse().unwrap();
        let views = vec![
            view("a", Some(Step::Draining), false),
            view("b", Some(Step::Patching), true),
            view("c", Some(Step::Done), false),
            view("d", None, false),
        ];
        let d = deletion(&policy, &Config::from_spec(&policy.spec), &views, now);
        assert_eq!(d.wait, None);
        assert_eq!(
            d.plan.ops,
            vec![
                Op::GiveBack {
                    node: "a".into(),
                    uncordon: true,
                    announce: true
                },
                Op::GiveBack {
                    node: "b".into(),
                    uncordon: false,
                    announce: true
                },
                Op::GiveBack {
                    node: "c".into(),
                    uncordon: false,
                    announce: false
                },
            ]
        );
        assert_eq!(d.plan.first_start, 3);
    }

    #[test]
    fn a_deleted_policy_waits_for_nodes_in_reboot_and_starts_nothing() {
        let policy = PatchPolicy::new("p", PatchPolicySpec::new("r"));
        let now: jiff::Timestamp = "2026-11-27T00:01:00Z".parse().unwrap();
        let views = vec![
            view("a", Some(Step::Draining), false),
            view("b", Some(Step::Rebooting), false),
            view("c", None, false),
        ];
        let d = deletion(&policy, &Config::from_spec(&policy.spec), &views, now);
        let wait = d.wait.expect("a node in reboot keeps the finalizer");
        assert!(wait <= Duration::from_secs(5));
        assert!(matches!(d.plan.ops[0], Op::GiveBack { ref node, .. } if node == "a"));
        assert!(
            d.plan.ops[1..].iter().all(|op| op.node() == "b"),
            "{:?}",
            d.plan.ops
        );
        assert!(d.plan.first_start >= d.plan.ops.len());
    }
}
