//! Phase 1, classify: where each node stands for this policy.

use crate::api::{RebootWhen, Step};

use super::{Ctx, NodeIndex, NodeView};

/// Where a node stands for this policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// Ours, with a step in progress (selected or not: it finishes).
    InFlight,
    /// Failed for this revision.
    Failed,
    /// Done for this revision.
    Done,
    /// `reboot.when: IfRequired` and the agent says no reboot is needed.
    NotNeeded,
    /// Still to do.
    Todo,
    /// Selected, but not a member of the standing policy's current round: it
    /// counts against the budget and is left alone.
    Outside,
}

/// The output of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Classified {
    /// Per node (same positions as the input): its class, `None` when the
    /// policy has nothing to do with it.
    pub classes: Vec<Option<Class>>,
    /// Selected nodes (members of the current round, for a standing policy).
    pub total: usize,
    /// Selected nodes, members or not: the base of a percentage budget.
    pub budget_base: usize,
    /// Selected nodes done or not needing the update.
    pub updated: usize,
    /// Selected nodes failed for this revision.
    pub failed: usize,
    /// Selected nodes still to do.
    pub todo: usize,
    /// Classified nodes that are unavailable (see [`unavailable`]).
    pub unavailable: usize,
}

impl Classified {
    /// Whether node `i` has class `class`.
    pub fn is(&self, i: usize, class: Class) -> bool {
        self.classes.get(i).copied().flatten() == Some(class)
    }
}

/// Whether a node counts against the budget: NotReady, unschedulable, or in
/// progress for any policy.
pub(super) fn unavailable(n: &NodeView) -> bool {
    !n.ready || n.unschedulable || n.record.as_ref().is_some_and(|r| r.step.in_progress())
}

/// The class of one node; `selected`: the policy's selector picks it.
pub(super) fn class_of(ctx: &Ctx<'_>, n: &NodeView, selected: bool) -> Option<Class> {
    let spec = ctx.spec;
    let ours = n.record.as_ref().filter(|r| r.policy == ctx.name);
    match ours {
        Some(r) if r.step.in_progress() => Some(Class::InFlight),
        _ if !selected => None,
        _ if ctx
            .cfg
            .round
            .as_ref()
            .is_some_and(|r| !r.members.contains(&n.name)) =>
        {
            Some(Class::Outside)
        }
        Some(r) if r.step == Step::Failed && r.revision == spec.revision => Some(Class::Failed),
        _ if n.done.get(ctx.name) == Some(&spec.revision) => Some(Class::Done),
        _ if spec.reboot.when == RebootWhen::IfRequired && n.reboot_required == Some(false) => {
            Some(Class::NotNeeded)
        }
        _ => Some(Class::Todo),
    }
}

/// Classifies every node and counts them.
pub(super) fn classify(ctx: &Ctx<'_>, index: &NodeIndex, nodes: &[NodeView]) -> Classified {
    let mut out = Classified {
        classes: Vec::with_capacity(nodes.len()),
        ..Classified::default()
    };
    for (i, n) in nodes.iter().enumerate() {
        let selected = index.selected(i);
        let class = class_of(ctx, n, selected);
        if let Some(c) = class {
            if selected {
                out.budget_base += 1;
                if c != Class::Outside {
                    out.total += 1;
                }
                match c {
                    Class::Done | Class::NotNeeded => out.updated += 1,
                    Class::Failed => out.failed += 1,
                    Class::InFlight | Class::Outside => {}
                    Class::Todo => out.todo += 1,
                }
            }
            if unavailable(n) {
                out.unavailable += 1;
            }
        }
        out.classes.push(class);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rollout::test_support::{NOW, node, policy, rec, ts};

    fn run(p: &crate::api::PatchPolicy, nodes: &[NodeView]) -> Classified {
        let cfg = crate::core::rollout::Config::from_spec(&p.spec);
        let ctx = Ctx {
            obs: None,
            name: "p",
            spec: &p.spec,
            cfg: &cfg,
            now: ts(NOW),
        };
        classify(&ctx, &NodeIndex::build(&p.spec, nodes, false), nodes)
    }

    #[test]
    fn classes_and_counts_of_selected_and_in_flight_nodes() {
        let mut p = policy("p");
        p.spec.reboot.when = RebootWhen::IfRequired;
        p.spec.node_selector.match_labels = Some([("zone".to_string(), "a".to_string())].into());
        let t = ts(NOW);
        let mut nodes: Vec<NodeView> = (1..=6).map(|i| node(&format!("w-a{i}"), "a")).collect();
        nodes[0].record = Some(rec("p", Step::Rebooting, t));
        nodes[1].record = Some(rec("p", Step::Failed, t));
        nodes[2].done.insert("p".into(), "r1".into());
        nodes[3].reboot_required = Some(false);
        nodes[4].reboot_required = Some(true);
        nodes[5].record = Some(rec("other", Step::Draining, t));
        // Not selected, but ours in progress: it finishes.
        let mut gone = node("w-b1", "b");
        gone.record = Some(rec("p", Step::Settling, t));
        nodes.push(gone);
        nodes.push(node("w-b2", "b"));
        let c = run(&p, &nodes);
        use Class::*;
        assert_eq!(
            c.classes,
            [
                Some(InFlight),
                Some(Failed),
                Some(Done),
                Some(NotNeeded),
                Some(Todo),
                Some(Todo),
                Some(InFlight),
                None
            ]
        );
        assert_eq!((c.total, c.updated, c.failed, c.todo), (6, 2, 1, 2));
        // w-a1 and w-a6 (in progress for someone), w-b1 (ours in progress).
        assert_eq!(c.unavailable, 3);
        assert!(c.is(6, InFlight) && !c.is(7, Todo) && !c.is(99, Todo));
    }

    #[test]
    fn a_failure_of_an_older_revision_is_to_do_again() {
        let mut p = policy("p");
        p.spec.revision = "r2".into();
        let mut n = node("w-a1", "a");
        n.record = Some(rec("p", Step::Failed, ts(NOW)));
        n.done.insert("p".into(), "r1".into());
        let c = run(&p, &[n]);
        assert_eq!(c.classes, [Some(Class::Todo)]);
        assert_eq!((c.failed, c.todo), (0, 1));
    }
}
