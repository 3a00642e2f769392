//! The blocking-pods gate: a node (and with it its group) is held while a pod
//! matching one of `gates.blockingPods` runs on it.
//!
//! A pod "runs" when it is bound to a node and its phase is neither
//! `Succeeded` nor `Failed` (a `Pending` pod already bound is about to run
//! there) and it is not being deleted.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::core::selector;

use super::clean;

/// One `gates.blockingPods` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockingPods {
    /// The namespace searched; `None`: every namespace.
    pub namespace: Option<String>,
    /// Which pods.
    pub selector: LabelSelector,
}

/// What the gate needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// `status.phase`.
    pub phase: String,
    /// Has a deletionTimestamp.
    pub deleting: bool,
}

impl PodView {
    fn runs(&self) -> bool {
        self.node.is_some()
            && !self.deleting
            && !matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }
}

/// For each node with a blocking pod, the reason (`pod batch/backup-x running
/// on w-7`), naming the first such pod in name order.
pub fn blocked_nodes(rules: &[BlockingPods], pods: &[PodView]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    for pod in pods.iter().filter(|p| p.runs()) {
        let hit = rules.iter().any(|r| {
            r.namespace.as_ref().is_none_or(|ns| ns == &pod.namespace)
                && selector::matches(&r.selector, &pod.labels)
        });
        let Some(node) = pod.node.as_ref().filter(|_| hit) else {
            continue;
        };
        let key = (pod.namespace.clone(), pod.name.clone());
        let slot = out.entry(node.clone()).or_insert_with(|| key.clone());
        if key < *slot {
            *slot = key;
        }
    }
    out.into_iter()
        .map(|(node, (ns, name))| {
            let why = format!(
                "pod {}/{} running on {}",
                clean(&ns),
                clean(&name),
                clean(&node)
            );
            (node, why)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, app: &str, node: Option<&str>, phase: &str) -> PodView {
        PodView {
            namespace: ns.into(),
            name: name.into(),
            labels: BTreeMap::from([("app".into(), app.into())]),
            node: node.map(Into::into),
            phase: phase.into(),
            deleting: false,
        }
    }

    #[test]
    fn running_matching_pods_hold_their_node_only() {
        let rules = [BlockingPods {
            namespace: Some("batch".into()),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "nightly-backup".into())])),
                ..LabelSelector::default()
            },
        }];
        let mut deleting = pod(
            "batch",
            "backup-d",
            "nightly-backup",
            Some("w-4"),
            "Running",
        );
        deleting.deleting = true;
        let pods = [
            pod(
                "batch",
                "backup-y",
                "nightly-backup",
                Some("w-7"),
                "Running",
            ),
            pod(
                "batch",
                "backup-x",
                "nightly-backup",
                Some("w-7"),
                "Pending",
            ),
            pod(
                "batch",
                "backup-z",
                "nightly-backup",
                Some("w-1"),
                "Succeeded",
            ),
            pod("batch", "backup-u", "nightly-backup", None, "Pending"),
            pod("shop", "backup-s", "nightly-backup", Some("w-2"), "Running"),
            pod("batch", "web", "web", Some("w-3"), "Running"),
            deleting,
        ];
        let got = blocked_nodes(&rules, &pods);
        assert_eq!(
            got,
            BTreeMap::from([("w-7".into(), "pod batch/backup-x running on w-7".into())])
        );
        // Without a namespace, every namespace counts.
        let any_ns = [BlockingPods {
            namespace: None,
            ..rules[0].clone()
        }];
        let got = blocked_nodes(&any_ns, &pods);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["w-2", "w-7"]);
        assert!(blocked_nodes(&[], &pods).is_empty());
    }
}
