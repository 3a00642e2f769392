//! Phase 4, pick starts: which nodes start now, in rollout order, and what
//! holds the others.

use std::collections::BTreeMap;

use crate::api::{RebootWhen, Step};
use crate::core::budget::Budget;
use crate::core::node_record::{NodeRecord, REBOOT_REQUIRED_LABEL, RECORD_ANNOTATION};
use crate::core::order::{self, OrderKey};

use super::classify::{Class, Classified, unavailable};
use super::gate::Gates;
use super::{Action, Contender, Ctx, NodeIndex, NodeView, quiet};

/// Why a node did not start, for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Hold {
    NotReady(String),
    OtherPolicy(String, String),
    UrgentFirst(String, String),
    RebootUnknown(String),
    BrokenRecord(String),
    /// A blocking pod runs on the node (the reason names it).
    BlockingPod(String),
    Budget {
        unavailable: usize,
        max: usize,
    },
}

impl Hold {
    /// The hold, in words.
    pub fn message(&self) -> String {
        match self {
            Hold::NotReady(n) => format!("node {n} is NotReady and waits until it is Ready"),
            Hold::OtherPolicy(n, p) => format!("node {n} waits for policy {p}"),
            Hold::UrgentFirst(n, p) => format!("node {n} waits for urgent policy {p}"),
            Hold::RebootUnknown(n) => {
                format!("node {n} waits for its agent to report {REBOOT_REQUIRED_LABEL}")
            }
            Hold::BrokenRecord(n) => format!(
                "node {n} has an unreadable {RECORD_ANNOTATION} annotation; remove it with `kubectl annotate node {n} {RECORD_ANNOTATION}-`"
            ),
            Hold::BlockingPod(why) => format!("waiting: {why}"),
            Hold::Budget { unavailable, max } => {
                format!("blocked: {unavailable} nodes unavailable, maxUnavailable {max}")
            }
        }
    }
}

/// What picking starts looks at.
pub(super) struct StartInput<'a> {
    pub ctx: &'a Ctx<'a>,
    pub index: &'a NodeIndex,
    pub nodes: &'a [NodeView],
    pub others: &'a [Contender],
    pub classified: &'a Classified,
    pub gates: &'a Gates,
}

/// The output of [`pick_starts`].
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Starts {
    /// For each start, its claim and then its drain.
    pub actions: Vec<Action>,
    /// The claim records by node position.
    pub records: BTreeMap<usize, NodeRecord>,
    /// Nodes that could not start, in the order they were met.
    pub holds: Vec<Hold>,
}

impl Starts {
    /// Nodes started.
    pub fn started(&self) -> usize {
        self.records.len()
    }
}

/// Starts nodes of the group being worked on, in order, within the budget;
/// then, if the budget blocked, nodes that cost nothing (see [`free_starts`]).
pub(super) fn pick_starts(input: &StartInput<'_>) -> Starts {
    let mut out = Starts::default();
    if !input.gates.open() {
        return out;
    }
    let Some(group) = current_group(input.index, input.classified) else {
        return out;
    };
    let urgent: Vec<&Contender> = urgent_others(input.ctx, input.others);
    let blocked = &input.gates.blocked_nodes;
    let held = |n: &NodeView| {
        hold_of(input.ctx, &urgent, n)
            .or_else(|| blocked.get(&n.name).cloned().map(Hold::BlockingPod))
    };
    let mut budget = input.gates.budget;
    let mut todo = Todo::of_group(input, group);
    while let Some(i) = todo.next_node() {
        let n = &input.nodes[i];
        if let Some(h) = held(n) {
            out.holds.push(h);
            continue;
        }
        let already = unavailable(n);
        if !budget.can_start(already) {
            out.holds.push(Hold::Budget {
                unavailable: budget.unavailable,
                max: budget.max,
            });
            free_starts(input, &mut budget, &held, &mut out);
            break;
        }
        budget.take(already);
        claim(input.ctx, i, n, &mut out);
    }
    out
}

/// The group worked on: the first (in order) with a node of ours in
/// progress, else the first with a node still to do.
fn current_group(index: &NodeIndex, classified: &Classified) -> Option<u32> {
    let lowest = |want: Class| -> Option<u32> {
        (0..classified.classes.len())
            .filter(|&i| classified.is(i, want) && index.selected(i))
            .map(|i| index.group(i))
            .min()
    };
    lowest(Class::InFlight).or_else(|| lowest(Class::Todo))
}

/// Active urgent other policies, which a non-urgent policy lets go first.
fn urgent_others<'a>(ctx: &Ctx<'_>, others: &'a [Contender]) -> Vec<&'a Contender> {
    if ctx.spec.urgent {
        return Vec::new();
    }
    others
        .iter()
        .filter(|c| c.urgent && c.active && c.name != ctx.name)
        .collect()
}

/// Why node `n` cannot start now, whatever the budget.
fn hold_of(ctx: &Ctx<'_>, urgent: &[&Contender], n: &NodeView) -> Option<Hold> {
    let name = || n.name.clone();
    if n.record_error.is_some() {
        return Some(Hold::BrokenRecord(name()));
    }
    if let Some(r) = n
        .record
        .as_ref()
        .filter(|r| r.policy != ctx.name && r.step.in_progress())
    {
        return Some(Hold::OtherPolicy(name(), r.policy.clone()));
    }
    if let Some(c) = urgent.iter().find(|c| c.wants(n)) {
        return Some(Hold::UrgentFirst(name(), c.name.clone()));
    }
    if ctx.spec.reboot.when == RebootWhen::IfRequired && n.reboot_required.is_none() {
        return Some(Hold::RebootUnknown(name()));
    }
    (!n.ready).then(|| Hold::NotReady(name()))
}

/// The nodes to do of one group, handed out in rollout order. Only the head
/// of the order is sorted at first (the budget room plus some slack for held
/// nodes); the rest only if the loop gets that far.
struct Todo<'a> {
    /// (rank in a full-order index, order key without one, node position).
    items: Vec<(u32, Option<OrderKey<'a>>, usize)>,
    sorted: usize,
    pos: usize,
}

impl<'a> Todo<'a> {
    fn of_group(input: &StartInput<'a>, group: u32) -> Todo<'a> {
        let spec = &input.ctx.spec.rollout.order;
        let mut items: Vec<_> = (0..input.nodes.len())
            .filter(|&i| input.classified.is(i, Class::Todo) && input.index.group(i) == group)
            .map(|i| match input.index.rank(i) {
                Some(r) => (r, None, i),
                None => {
                    let n = &input.nodes[i];
                    (0, Some(OrderKey::of(spec, &n.name, &n.labels)), i)
                }
            })
            .collect();
        let b = input.gates.budget;
        let sorted = (b.max.saturating_sub(b.unavailable) + 16).min(items.len());
        if sorted > 0 && sorted < items.len() {
            items.select_nth_unstable(sorted - 1);
        }
        items[..sorted].sort_unstable();
        Todo {
            items,
            sorted,
            pos: 0,
        }
    }

    fn next_node(&mut self) -> Option<usize> {
        if self.pos == self.sorted && self.sorted < self.items.len() {
            self.items[self.sorted..].sort_unstable();
            self.sorted = self.items.len();
        }
        let i = self.items.get(self.pos)?.2;
        self.pos += 1;
        Some(i)
    }
}

/// When the budget blocks, nodes that are unavailable anyway (cordoned by
/// someone, but Ready) cost nothing and may still go, from any group and by
/// name: waiting for them would deadlock the rollout.
fn free_starts(
    input: &StartInput<'_>,
    budget: &mut Budget,
    held: &dyn Fn(&NodeView) -> Option<Hold>,
    out: &mut Starts,
) {
    let nodes = input.nodes;
    let mut free: Vec<usize> = (0..nodes.len())
        .filter(|&i| {
            input.classified.is(i, Class::Todo)
                && !out.records.contains_key(&i)
                && nodes[i].ready
                && nodes[i].unschedulable
                && held(&nodes[i]).is_none()
        })
        .collect();
    free.sort_by(|a, b| order::natural_cmp(&nodes[*a].name, &nodes[*b].name));
    for i in free {
        if !budget.can_start(true) {
            break;
        }
        claim(input.ctx, i, &nodes[i], out);
    }
}

/// Claims node `i`: its record (step Draining, remembering whether it was
/// unschedulable before) written with the cordon, then its drain.
fn claim(ctx: &Ctx<'_>, i: usize, n: &NodeView, out: &mut Starts) {
    let record = NodeRecord {
        policy: ctx.name.to_string(),
        revision: ctx.spec.revision.clone(),
        step: Step::Draining,
        since: ctx.now,
        started: ctx.now,
        was_unschedulable: n.unschedulable,
        boot_id_before: None,
        patch: None,
        reason: None,
        labels: Default::default(),
        drain_after: None,
    };
    // The maintenance labels go on with the cordon; with a wait after
    // setting them the drain begins once it is over (see `advance`).
    let labels = quiet::labels_to_set(&ctx.cfg.during_labels, &n.labels);
    let record = NodeRecord {
        drain_after: quiet::drain_after(&labels, ctx.cfg.wait_after_set, ctx.now),
        labels,
        ..record
    };
    out.actions.push(Action::Claim {
        node: n.name.clone(),
        record: record.clone(),
    });
    // The drain starts right after the claim is written (the controller
    // applies a plan in order and stops at the first failed write).
    if record.drain_after.is_none() {
        out.actions.push(Action::Drain {
            node: n.name.clone(),
            record: None,
            force: false,
        });
    }
    out.records.insert(i, record);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PatchPolicy;
    use crate::core::rollout::Config;
    use crate::core::rollout::advance::advance_all;
    use crate::core::rollout::classify::classify;
    use crate::core::rollout::gate::{GateInput, gates};
    use crate::core::rollout::test_support::{NOW, node, policy, rec, ts};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    /// Runs the phases before this one, then picks starts; `full_order`:
    /// with a ranked index, as the forecast uses.
    fn run(p: &PatchPolicy, nodes: &[NodeView], full_order: bool) -> Starts {
        let cfg = Config::from_spec(&p.spec);
        let ctx = Ctx {
            obs: None,
            name: "p",
            spec: &p.spec,
            cfg: &cfg,
            now: ts(NOW),
        };
        let index = NodeIndex::build(&p.spec, nodes, full_order);
        let classified = classify(&ctx, &index, nodes);
        let advanced = advance_all(&ctx, nodes, &classified);
        let gates = gates(&GateInput {
            ctx: &ctx,
            prev: &Default::default(),
            classified: &classified,
            advanced: &advanced,
        });
        pick_starts(&StartInput {
            ctx: &ctx,
            index: &index,
            nodes,
            others: &[],
            classified: &classified,
            gates: &gates,
        })
    }

    fn started<'a>(s: &Starts, nodes: &'a [NodeView]) -> Vec<&'a str> {
        s.records.keys().map(|&i| nodes[i].name.as_str()).collect()
    }

    #[test]
    fn starts_the_head_of_the_first_group_in_order_key_order_with_or_without_ranks() {
        let mut p = policy("p");
        p.spec.rollout.max_unavailable = IntOrString::Int(3);
        p.spec.rollout.order.sort_by = vec!["prio".into()];
        // Many nodes, so only the head of the order is sorted at first.
        let mut nodes: Vec<NodeView> = (0..40).map(|i| node(&format!("w-{i}"), "b")).collect();
        nodes.extend((0..40).rev().map(|i| node(&format!("w-a{i}"), "a")));
        nodes[45].labels.insert("prio".into(), "1".into());
        for full in [false, true] {
            let s = run(&p, &nodes, full);
            let mut names = started(&s, &nodes);
            names.sort_by(|a, b| order::natural_cmp(a, b));
            assert_eq!(names, ["w-a0", "w-a1", "w-a34"], "full order: {full}");
            // Claim then drain, per node, in order.
            let Action::Claim { node, record } = &s.actions[0] else {
                panic!("{:?}", s.actions)
            };
            assert_eq!((node.as_str(), record.step), ("w-a34", Step::Draining));
            assert!(
                matches!(&s.actions[1], Action::Drain { node, force: false, .. } if node == "w-a34")
            );
            assert_eq!(s.started(), 3);
        }
    }

    #[test]
    fn the_group_in_flight_holds_later_groups_and_holds_are_named() {
        let mut p = policy("p");
        p.spec.rollout.max_unavailable = IntOrString::Int(5);
        let mut nodes = vec![
            node("w-a1", "a"),
            node("w-b1", "b"),
            node("w-b2", "b"),
            node("w-b3", "b"),
        ];
        nodes[0].done.insert("p".into(), "r1".into());
        nodes[1].record = Some(rec("p", Step::Rebooting, ts(NOW)));
        nodes[1].unschedulable = true;
        nodes[2].ready = false;
        nodes[3].record_error = Some("bad".into());
        let mut c = node("w-c1", "c");
        c.record = Some(rec("other", Step::Draining, ts(NOW)));
        nodes.push(c);
        let s = run(&p, &nodes, false);
        assert!(s.actions.is_empty(), "{:?}", s.actions);
        assert_eq!(
            s.holds,
            [
                Hold::NotReady("w-b2".into()),
                Hold::BrokenRecord("w-b3".into())
            ]
        );
        assert_eq!(
            s.holds[0].message(),
            "node w-b2 is NotReady and waits until it is Ready"
        );
    }

    #[test]
    fn a_full_budget_still_lets_free_nodes_go_by_name() {
        let mut p = policy("p");
        p.spec.rollout.max_unavailable = IntOrString::Int(2);
        let mut nodes = vec![node("w-a1", "a"), node("w-c10", "c"), node("w-c9", "c")];
        nodes[1].unschedulable = true;
        nodes[2].unschedulable = true;
        // Budget 2, two unavailable already: zone a is blocked.
        let s = run(&p, &nodes, false);
        assert_eq!(
            s.holds,
            [Hold::Budget {
                unavailable: 2,
                max: 2
            }]
        );
        let claims: Vec<&str> = s
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Claim { .. }))
            .map(Action::node)
            .collect();
        assert_eq!(claims, ["w-c9", "w-c10"]);
    }
}
