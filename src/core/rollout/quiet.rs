//! Quieter drains: which nodes carry the `sofort.dev/pending-reboot` taint,
//! and which labels sofort sets on a node while it is maintained.
//!
//! # The pending-reboot taint
//!
//! A node is *queued* for a policy when the policy's rollout is announced
//! (phase Scheduled, Waiting or Progressing with a scheduled start: not
//! paused, halted, completed or invalid), the node is selected, still to do
//! for this revision (with `reboot.when: IfRequired`: its agent reports a
//! reboot is required), not in progress for any policy and not being
//! claimed in this very decision. [`queued_nodes`] gives them for one
//! decision; the controller takes the union over every live policy and
//! [`taint_changes`] turns it into writes: the taint is added where it is
//! wanted and missing and removed where no policy wants it any more (done,
//! claimed, deselected, policy paused or deleted). A standing policy's rounds
//! feed [`taint_changes`] the queued nodes of their announced round instead.
//!
//! # Labels during maintenance
//!
//! [`labels_to_set`] picks the labels of `rollout.nodeLabels.during` a node
//! does not carry yet; they go into the claim's record ([`NodeRecord::labels`])
//! and onto the node in the claim's write. [`label_writes`] is the label part
//! of any record change: a failure, a release or a give-back drops the record's
//! labels, so only labels sofort set are ever removed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;

use crate::api::{PatchPolicy, Phase, RebootWhen};
use crate::core::node_record::NodeRecord;

use super::classify::{Class, class_of};
use super::{Action, Config, Ctx, Decision, NodeIndex, NodeView, add};

/// The nodes `decision` leaves queued for `policy` (see the module docs).
pub fn queued_nodes(
    policy: &PatchPolicy,
    cfg: &Config,
    nodes: &[NodeView],
    decision: &Decision,
) -> BTreeSet<String> {
    let announced = matches!(
        decision.status.phase,
        Some(Phase::Scheduled | Phase::Waiting | Phase::Progressing)
    ) && decision.status.scheduled_start.is_some();
    if !announced || !cfg.errors.is_empty() {
        return BTreeSet::new();
    }
    let claimed: BTreeSet<&str> = decision
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Claim { .. }))
        .map(Action::node)
        .collect();
    let ctx = Ctx {
        name: policy.metadata.name.as_deref().unwrap_or(""),
        spec: &policy.spec,
        cfg,
        now: Timestamp::UNIX_EPOCH,
        obs: None,
    };
    let index = NodeIndex::build(&policy.spec, nodes, false);
    let if_required = policy.spec.reboot.when == RebootWhen::IfRequired;
    nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| {
            class_of(&ctx, n, index.selected(*i)) == Some(Class::Todo)
                && n.record_error.is_none()
                && !n.record.as_ref().is_some_and(|r| r.step.in_progress())
                && !claimed.contains(n.name.as_str())
                && (!if_required || n.reboot_required == Some(true))
        })
        .map(|(_, n)| n.name.clone())
        .collect()
}

/// One taint write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaintChange {
    /// Node name.
    pub node: String,
    /// Add the taint (else remove it).
    pub add: bool,
}

/// The taint writes that bring the nodes to `wanted` (the union of every
/// policy's queued nodes): removals first, then additions, each by node
/// name, at most `limit`. `tainted`: every node and whether it carries the
/// taint now. The second value: writes left over for a later pass.
pub fn taint_changes(
    wanted: &BTreeSet<String>,
    tainted: &BTreeMap<String, bool>,
    limit: usize,
) -> (Vec<TaintChange>, usize) {
    let removals = tainted
        .iter()
        .filter(|(n, t)| **t && !wanted.contains(*n))
        .map(|(n, _)| TaintChange {
            node: n.clone(),
            add: false,
        });
    let additions = tainted
        .iter()
        .filter(|(n, t)| !**t && wanted.contains(*n))
        .map(|(n, _)| TaintChange {
            node: n.clone(),
            add: true,
        });
    let all: Vec<TaintChange> = removals.chain(additions).collect();
    let left = all.len().saturating_sub(limit);
    (all.into_iter().take(limit).collect(), left)
}

/// The labels of `during` that sofort sets on a node carrying `labels`: those
/// the node does not carry yet, with any value (an admin's own label is
/// never overwritten, and so never removed).
pub fn labels_to_set(
    during: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    during
        .iter()
        .filter(|(k, _)| !labels.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// When the drain of a node claimed `now` may begin: after `wait`, when
/// sofort set labels and `wait` is not zero; else at once (`None`).
pub fn drain_after(
    set: &BTreeMap<String, String>,
    wait: Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    (!set.is_empty() && !wait.is_zero()).then(|| add(now, wait))
}

/// The label writes of a record change from `current` (on the node now) to
/// `next` (`None`: the record goes): `Some(value)` sets, `None` removes.
/// Only labels a record lists are ever removed.
pub fn label_writes(
    current: Option<&NodeRecord>,
    next: Option<&NodeRecord>,
) -> BTreeMap<String, Option<String>> {
    let empty = BTreeMap::new();
    let now = current.map_or(&empty, |r| &r.labels);
    let then = next.map_or(&empty, |r| &r.labels);
    let mut out: BTreeMap<String, Option<String>> = now
        .keys()
        .filter(|k| !then.contains_key(*k))
        .map(|k| (k.clone(), None))
        .collect();
    for (k, v) in then {
        if now.get(k) != Some(v) {
            out.insert(k.clone(), Some(v.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Step;
    use crate::core::rollout::decide;
    use crate::core::rollout::test_support::{NOW, node, policy, rec, ts};

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(s: &BTreeSet<String>) -> Vec<&str> {
        s.iter().map(String::as_str).collect()
    }

    /// A policy announced a day ahead: its start lies in the future.
    fn announced() -> PatchPolicy {
        let mut p = policy("p");
        p.spec.announce = Some(crate::api::Announce {
            lead_time: "24h".into(),
        });
        p
    }

    fn queued(p: &PatchPolicy, nodes: &[NodeView]) -> (Decision, BTreeSet<String>) {
        let d = decide(p, nodes, &[], ts(NOW));
        let cfg = Config::from_spec(&p.spec);
        let q = queued_nodes(p, &cfg, nodes, &d);
        (d, q)
    }

    #[test]
    fn an_announced_rollout_queues_its_nodes_still_to_do() {
        let mut p = announced();
        p.spec.rollout.max_failed_nodes = 1;
        let t = ts(NOW);
        let mut nodes: Vec<NodeView> = (1..=5).map(|i| node(&format!("w-a{i}"), "a")).collect();
        nodes[1].done.insert("p".into(), "r1".into());
        nodes[2].record = Some(rec("other", Step::Draining, t));
        nodes[3].record = Some(rec("p", Step::Failed, t));
        let (d, q) = queued(&p, &nodes);
        assert_eq!(d.status.phase, Some(Phase::Scheduled));
        // Done, in progress elsewhere and failed nodes are not queued.
        assert_eq!(names(&q), ["w-a1", "w-a5"]);
    }

    #[test]
    fn a_node_being_claimed_or_in_progress_is_not_queued() {
        let p = policy("p");
        let t = ts(NOW);
        let mut nodes: Vec<NodeView> = (1..=3).map(|i| node(&format!("w-a{i}"), "a")).collect();
        let (d, q) = queued(&p, &nodes);
        assert_eq!(d.status.phase, Some(Phase::Progressing));
        assert!(d.actions.iter().any(|a| a.node() == "w-a1"));
        assert_eq!(names(&q), ["w-a2", "w-a3"]);
        nodes[0].record = Some(rec("p", Step::Rebooting, t));
        nodes[0].unschedulable = true;
        let (_, q) = queued(&p, &nodes);
        assert_eq!(names(&q), ["w-a2", "w-a3"]);
    }

    #[test]
    fn paused_completed_invalid_or_unselected_means_no_taint() {
        let nodes: Vec<NodeView> = vec![node("w-a1", "a"), node("w-b1", "b")];
        let mut paused = announced();
        paused.spec.paused = true;
        assert!(queued(&paused, &nodes).1.is_empty());
        let mut invalid = announced();
        invalid.spec.rollout.settle = "soon".into();
        assert!(queued(&invalid, &nodes).1.is_empty());
        let mut done = nodes.clone();
        for n in &mut done {
            n.done.insert("p".into(), "r1".into());
        }
        let (d, q) = queued(&announced(), &done);
        assert_eq!(d.status.phase, Some(Phase::Completed));
        assert!(q.is_empty());
        let mut zone_a = announced();
        zone_a.spec.node_selector.match_labels = Some(map(&[("zone", "a")]));
        assert_eq!(names(&queued(&zone_a, &nodes).1), ["w-a1"]);
    }

    #[test]
    fn if_required_queues_only_nodes_that_report_a_reboot() {
        let mut p = announced();
        p.spec.reboot.when = RebootWhen::IfRequired;
        let mut nodes: Vec<NodeView> = (1..=3).map(|i| node(&format!("w-a{i}"), "a")).collect();
        nodes[0].reboot_required = Some(true);
        nodes[1].reboot_required = Some(false);
        nodes[2].reboot_required = None;
        assert_eq!(names(&queued(&p, &nodes).1), ["w-a1"]);
    }

    #[test]
    fn taint_changes_remove_first_keep_wanted_and_respect_the_bound() {
        let tainted: BTreeMap<String, bool> = [
            ("a", true),  // wanted by some policy: kept
            ("b", true),  // wanted by none: removed
            ("c", false), // wanted: added
            ("d", false), // not wanted: untouched
            ("e", false), // wanted: added
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        let wanted: BTreeSet<String> = ["a", "c", "e", "gone"].map(String::from).into();
        let change = |n: &str, add| TaintChange {
            node: n.into(),
            add,
        };
        let (all, left) = taint_changes(&wanted, &tainted, 10);
        assert_eq!(
            all,
            [change("b", false), change("c", true), change("e", true)]
        );
        assert_eq!(left, 0);
        let (some, left) = taint_changes(&wanted, &tainted, 2);
        assert_eq!(some, [change("b", false), change("c", true)]);
        assert_eq!(left, 1);
        assert_eq!(taint_changes(&BTreeSet::new(), &tainted, 0), (vec![], 2));
    }

    #[test]
    fn only_labels_the_node_lacks_are_set_and_only_recorded_ones_removed() {
        let during = map(&[("lb-exclude", "true"), ("maintenance", "yes")]);
        // The admin's own `maintenance` label (any value) is left alone.
        let set = labels_to_set(&during, &map(&[("maintenance", "admin"), ("zone", "a")]));
        assert_eq!(set, map(&[("lb-exclude", "true")]));
        let now = ts(NOW);
        assert_eq!(
            drain_after(&set, Duration::from_secs(30), now),
            Some(ts("2026-11-27T09:00:30Z"))
        );
        assert_eq!(drain_after(&set, Duration::ZERO, now), None);
        assert_eq!(
            drain_after(&BTreeMap::new(), Duration::from_secs(30), now),
            None
        );

        let mut claimed = rec("p", Step::Draining, now);
        claimed.labels = set.clone();
        // The claim sets them; a step change writes no label; the release
        // removes exactly the recorded ones.
        let writes = label_writes(None, Some(&claimed));
        assert_eq!(
            writes,
            [("lb-exclude".to_string(), Some("true".to_string()))].into()
        );
        let next = NodeRecord {
            step: Step::Rebooting,
            ..claimed.clone()
        };
        assert!(label_writes(Some(&claimed), Some(&next)).is_empty());
        assert_eq!(
            label_writes(Some(&next), None),
            [("lb-exclude".to_string(), None)].into()
        );
        let failed = NodeRecord {
            labels: BTreeMap::new(),
            ..next.clone()
        };
        assert_eq!(
            label_writes(Some(&next), Some(&failed)),
            [("lb-exclude".to_string(), None)].into()
        );
        assert!(label_writes(None, None).is_empty());
    }

    fn labelled(wait: &str) -> PatchPolicy {
        let mut p = policy("p");
        p.spec.rollout.node_labels = Some(crate::api::NodeLabelsSpec {
            during: map(&[("lb-exclude", "true"), ("maintenance", "yes")]),
            wait_after_set: Some(wait.into()),
        });
        p
    }

    #[test]
    fn a_claim_sets_the_missing_labels_and_waits_before_draining() {
        let p = labelled("30s");
        let mut n = node("w-a1", "a");
        n.labels.insert("maintenance".into(), "admin".into());
        let d = decide(&p, std::slice::from_ref(&n), &[], ts(NOW));
        let [Action::Claim { record, .. }] = &d.actions[..] else {
            panic!("one claim and no drain yet: {:?}", d.actions);
        };
        assert_eq!(record.labels, map(&[("lb-exclude", "true")]));
        assert_eq!(record.drain_after, Some(ts("2026-11-27T09:00:30Z")));

        // During the wait: nothing; the wake is its end.
        n.record = Some(record.clone());
        n.unschedulable = true;
        let d = decide(
            &p,
            std::slice::from_ref(&n),
            &[],
            ts("2026-11-27T09:00:10Z"),
        );
        assert!(d.actions.is_empty(), "{:?}", d.actions);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(20)));
        // Then the drain, whose timeout counts from the end of the wait.
        let d = decide(
            &p,
            std::slice::from_ref(&n),
            &[],
            ts("2026-11-27T09:15:10Z"),
        );
        assert!(
            matches!(&d.actions[..], [Action::Drain { force: false, .. }]),
            "{:?}",
            d.actions
        );
        assert_eq!(record.drain_start(), ts("2026-11-27T09:00:30Z"));
    }

    #[test]
    fn without_a_wait_or_labels_the_drain_starts_with_the_claim() {
        for p in [labelled("0s"), policy("p")] {
            let n = node("w-a1", "a");
            let d = decide(&p, std::slice::from_ref(&n), &[], ts(NOW));
            assert!(
                matches!(&d.actions[..], [Action::Claim { record, .. }, Action::Drain { .. }] if record.drain_after.is_none()),
                "{:?}",
                d.actions
            );
        }
    }

    #[test]
    fn a_failure_drops_the_labels_from_the_record() {
        let p = labelled("0s");
        let mut n = node("w-a1", "a");
        let mut r = rec("p", Step::Draining, ts(NOW));
        r.labels = map(&[("lb-exclude", "true")]);
        n.record = Some(r.clone());
        n.unschedulable = true;
        n.drain = crate::core::rollout::DrainState::Failed {
            reason: "pods would not go".into(),
        };
        let d = decide(&p, std::slice::from_ref(&n), &[], ts(NOW));
        let [Action::MarkFailed { record, .. }] = &d.actions[..] else {
            panic!("{:?}", d.actions);
        };
        assert!(record.labels.is_empty());
        assert_eq!(
            label_writes(Some(&r), Some(record)),
            [("lb-exclude".to_string(), None)].into()
        );
    }
}
