//! Builders shared by the rollout unit tests.

use jiff::Timestamp;

use crate::api::{PatchPolicy, PatchPolicySpec, Step};
use crate::core::node_record::NodeRecord;

use super::{Action, Decision, NodeView};

pub(super) fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub(super) fn node(name: &str, zone: &str) -> NodeView {
    NodeView {
        name: name.into(),
        labels: [("zone".to_string(), zone.to_string())].into(),
        ready: true,
        boot_id: Some(format!("{name}-b0")),
        ..NodeView::default()
    }
}

pub(super) fn policy(name: &str) -> PatchPolicy {
    let mut spec = PatchPolicySpec::new("r1");
    spec.rollout.order.group_by = Some("zone".into());
    PatchPolicy::new(name, spec)
}

pub(super) fn rec(policy: &str, step: Step, since: Timestamp) -> NodeRecord {
    NodeRecord {
        policy: policy.into(),
        revision: "r1".into(),
        step,
        since,
        started: since,
        was_unschedulable: false,
        boot_id_before: None,
        patch: None,
        reason: None,
        labels: Default::default(),
        drain_after: None,
    }
}

/// The nodes a plan claims (starts).
pub(super) fn claims(plan: &Decision) -> Vec<&str> {
    plan.actions
        .iter()
        .filter(|a| matches!(a, Action::Claim { .. }))
        .map(Action::node)
        .collect()
}

/// The instant most tests decide at (a Friday).
pub(super) const NOW: &str = "2026-11-27T09:00:00Z";
