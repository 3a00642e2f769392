//! [`NodeIndex`]: what decide needs of each node that depends only on its
//! labels and the spec.

use std::collections::HashMap;

use crate::api::PatchPolicySpec;
use crate::core::order::{self, OrderKey};
use crate::core::selector;

use super::NodeView;

/// What decide needs to know of each node that depends only on its labels and
/// the spec: whether the selector picks it, its group and, when built with
/// `full_order`, its place in the rollout order. Built once, it serves every
/// decision over the same nodes with the same labels (the forecast makes
/// hundreds); built per call, it costs what decide would spend anyway.
#[derive(Debug, Clone, Default)]
pub struct NodeIndex {
    selected: Vec<bool>,
    /// Rank of the node's group in the group order (no label: last).
    group: Vec<u32>,
    /// Rank of the node in the whole order ([`OrderKey`], then position).
    rank: Option<Vec<u32>>,
}

impl NodeIndex {
    /// Indexes `nodes` for `spec`; `full_order` also ranks every node, which
    /// pays off when the index is reused.
    pub fn build(spec: &PatchPolicySpec, nodes: &[NodeView], full_order: bool) -> NodeIndex {
        let selected = nodes
            .iter()
            .map(|n| selector::selects_node(&spec.node_selector, &n.labels))
            .collect();
        let groups: Vec<Option<&str>> = nodes
            .iter()
            .map(|n| order::group_of(&spec.rollout.order, &n.labels))
            .collect();
        // Few distinct groups: collect them, then sort only those.
        let mut rank_of: HashMap<Option<&str>, u32> = groups.iter().map(|g| (*g, 0)).collect();
        let mut distinct: Vec<Option<&str>> = rank_of.keys().copied().collect();
        distinct.sort_unstable_by(|a, b| order::cmp_group(*a, *b));
        for (r, g) in distinct.into_iter().enumerate() {
            rank_of.insert(g, r as u32);
        }
        let group = groups
            .iter()
            .map(|g| rank_of.get(g).copied().unwrap_or(u32::MAX))
            .collect();
        let rank = full_order.then(|| {
            let mut keyed: Vec<(OrderKey<'_>, usize)> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (OrderKey::of(&spec.rollout.order, &n.name, &n.labels), i))
                .collect();
            keyed.sort_unstable();
            let mut rank = vec![0u32; nodes.len()];
            for (r, (_, i)) in keyed.into_iter().enumerate() {
                rank[i] = r as u32;
            }
            rank
        });
        NodeIndex {
            selected,
            group,
            rank,
        }
    }

    /// Whether the index was built for (a list as long as) `nodes`.
    pub(super) fn fits(&self, nodes: &[NodeView]) -> bool {
        self.selected.len() == nodes.len()
            && self.group.len() == nodes.len()
            && self.rank.as_ref().is_none_or(|r| r.len() == nodes.len())
    }

    /// Whether the selector picks node `i`.
    pub(super) fn selected(&self, i: usize) -> bool {
        self.selected.get(i).copied().unwrap_or(false)
    }

    /// The rank of node `i`'s group: groups are worked on in rank order.
    pub(super) fn group(&self, i: usize) -> u32 {
        self.group.get(i).copied().unwrap_or(u32::MAX)
    }

    /// Node `i`'s place in the whole order, when built with `full_order`.
    pub(super) fn rank(&self, i: usize) -> Option<u32> {
        self.rank.as_ref().and_then(|r| r.get(i).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rollout::test_support::{node, policy};

    #[test]
    fn ranks_follow_the_order_key_and_groups_rank_missing_last() {
        let mut p = policy("p");
        p.spec.rollout.order.sort_by = vec!["prio".into()];
        let mut nodes = vec![
            node("w-10", "b"),
            node("w-9", "b"),
            node("w-1", "a"),
            node("w-2", ""),
        ];
        nodes[3].labels.clear();
        nodes[0].labels.insert("prio".into(), "1".into());
        let index = NodeIndex::build(&p.spec, &nodes, true);
        assert_eq!(
            (0..4).map(|i| index.group(i)).collect::<Vec<_>>(),
            [1, 1, 0, 2]
        );
        // Zone a, then zone b (prio 1 before no prio), then no zone.
        assert_eq!(
            (0..4).map(|i| index.rank(i)).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(0), Some(3)]
        );
        let mut by_key = nodes.clone();
        order::sort_nodes(&p.spec.rollout.order, &mut by_key, |n| (&n.name, &n.labels));
        let mut by_rank = nodes.clone();
        by_rank.sort_by_key(|n| {
            nodes
                .iter()
                .position(|m| m.name == n.name)
                .and_then(|i| index.rank(i))
        });
        assert_eq!(by_key, by_rank);
        assert!(index.fits(&nodes) && !index.fits(&nodes[1..]));
        assert_eq!(NodeIndex::build(&p.spec, &nodes, false).rank(0), None);
    }
}
