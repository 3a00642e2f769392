//! The drainability pre-flight, the pure part: PodDisruptionBudget
//! arithmetic over the pods of each node, and the summary for status.
//!
//! A node would block when draining it now needs more disruptions of a PDB
//! than the PDB allows (its pods on the node matched by the PDB's selector
//! outnumber `status.disruptionsAllowed`), or when a dry-run eviction of one
//! of its pods is refused (the controller adds those reasons).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::core::selector;

use super::clean;
use super::pods::PodView;

/// What the arithmetic needs of a PodDisruptionBudget.
#[derive(Debug, Clone, PartialEq)]
pub struct PdbView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.selector` (`None` selects nothing, as Kubernetes does).
    pub selector: Option<LabelSelector>,
    /// `status.disruptionsAllowed`.
    pub allowed: i64,
}

/// Why draining a node with `pods` now would block on a PDB, if it would.
pub fn pdb_block(pdbs: &[PdbView], pods: &[PodView]) -> Option<String> {
    for pdb in pdbs {
        let Some(sel) = &pdb.selector else { continue };
        let covered = pods
            .iter()
            .filter(|p| {
                p.namespace == pdb.namespace && !p.deleting && selector::matches(sel, &p.labels)
            })
            .count() as i64;
        if covered > 0 && covered > pdb.allowed {
            let (ns, name) = (clean(&pdb.namespace), clean(&pdb.name));
            return Some(if pdb.allowed <= 0 {
                format!("PDB {ns}/{name} allows 0 disruptions")
            } else {
                format!(
                    "PDB {ns}/{name} allows {} disruptions, the node has {covered} of its pods",
                    pdb.allowed
                )
            });
        }
    }
    None
}

/// The status line: `2 nodes would block: PDB shop/db allows 0 disruptions`
/// (the first reason in node order), or that none would.
pub fn summary(blocked: &BTreeMap<String, String>, checked: usize) -> String {
    match blocked.values().next() {
        None => format!("all {checked} nodes drainable now"),
        Some(first) => {
            let n = blocked.len();
            format!(
                "{n} node{} would block: {first}",
                if n == 1 { "" } else { "s" }
            )
        }
    }
}

/// Which pods to try, at most `max`, when node `n` has `sizes[n]`: the
/// first pod of every node, then the second of every node that has one, and
/// so on, as (node, pod) indices.
pub fn spread(sizes: &[usize], max: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let deepest = sizes.iter().copied().max().unwrap_or(0);
    for i in 0..deepest {
        for (n, &size) in sizes.iter().enumerate() {
            if out.len() == max {
                return out;
            }
            if i < size {
                out.push((n, i));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, app: &str) -> PodView {
        PodView {
            namespace: ns.into(),
            name: format!("{app}-1"),
            labels: BTreeMap::from([("app".into(), app.into())]),
            node: Some("w-1".into()),
            phase: "Running".into(),
            deleting: false,
        }
    }

    fn pdb(app: &str, allowed: i64) -> PdbView {
        PdbView {
            namespace: "shop".into(),
            name: app.into(),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), app.into())])),
                ..LabelSelector::default()
            }),
            allowed,
        }
    }

    #[test]
    fn a_pdb_blocks_a_node_with_more_of_its_pods_than_it_allows() {
        let pods = [pod("shop", "db"), pod("shop", "db"), pod("other", "db")];
        assert_eq!(pdb_block(&[pdb("db", 2)], &pods), None);
        assert_eq!(
            pdb_block(&[pdb("db", 1)], &pods).as_deref(),
            Some("PDB shop/db allows 1 disruptions, the node has 2 of its pods")
        );
        assert_eq!(
            pdb_block(&[pdb("web", 0), pdb("db", 0)], &pods).as_deref(),
            Some("PDB shop/db allows 0 disruptions")
        );
        let mut none = pdb("db", 0);
        none.selector = None;
        assert_eq!(pdb_block(&[none], &pods), None);
        let blocked = BTreeMap::from([
            (
                "w-1".to_string(),
                "PDB shop/db allows 0 disruptions".to_string(),
            ),
            (
                "w-2".to_string(),
                "PDB shop/db allows 0 disruptions".to_string(),
            ),
        ]);
        assert_eq!(
            summary(&blocked, 3),
            "2 nodes would block: PDB shop/db allows 0 disruptions"
        );
        assert_eq!(summary(&BTreeMap::new(), 3), "all 3 nodes drainable now");
    }

    #[test]
    fn spread_takes_every_node_first_pod_before_any_second_and_stops_at_max() {
        assert_eq!(
            spread(&[3, 0, 1, 2], 5),
            vec![(0, 0), (2, 0), (3, 0), (0, 1), (3, 1)]
        );
        assert_eq!(spread(&[2, 1], 10), vec![(0, 0), (1, 0), (0, 1)]);
        assert!(spread(&[], 10).is_empty());
        assert!(spread(&[5], 0).is_empty());
        // A large fleet: every node gets one try before any gets two.
        let order = spread(&[40; 100], 50);
        assert_eq!(order.len(), 50);
        assert!(order.iter().all(|&(_, i)| i == 0));
    }
}
