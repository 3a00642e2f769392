//! Node writes that must not be sent (again) yet.
//!
//! The node store lags the API server, and more so when the server is slow.
//! A pass decided on a lagging store must not turn that lag into requests:
//!
//! * a write whose every field the node already has (this process's own
//!   earlier write, kept in the [`super::Overlay`] until the store delivers
//!   it) is not sent;
//! * a write that lost with 409 Conflict was decided from an old version of
//!   the node: the node is held until the store delivers a newer version
//!   (deciding again from the same version would only lose again), or until
//!   its backoff ends, should the store never deliver one;
//! * any other failed write is retried after a backoff per node: 250 ms
//!   doubling up to 30 s, spread ±20 % by node, reset by the next write that
//!   is stored.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;
use tokio::time::Instant;

use super::plan::Op;
use crate::core::rollout::Action;

/// First wait after a failed node write.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between retries of a node write.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before retrying a node write after its `failures`-th consecutive
/// failure: [`FIRST_BACKOFF`] doubling up to [`MAX_BACKOFF`], spread ±20 %
/// by node so that the retries of many nodes do not come in step.
pub(crate) fn backoff(failures: u32, node: &str) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(8))
        .min(MAX_BACKOFF);
    let salt = node.bytes().fold(u64::from(failures), |h, b| {
        h.wrapping_mul(131).wrapping_add(u64::from(b))
    });
    // 0.8 ..= 1.2 of the base.
    base.mul_f64(0.8 + (fastrand::Rng::with_seed(salt).u32(0..=400)) as f64 / 1000.0)
}

/// The resourceVersion of a node as a number (the emulator's and etcd's
/// are; an opaque one compares as unknown).
pub(crate) fn rv_of(node: &Node) -> Option<u64> {
    node.metadata.resource_version.as_deref()?.parse().ok()
}

struct Hold {
    /// Consecutive failed writes.
    failures: u32,
    /// No write before this.
    until: Instant,
    /// After a conflict: the version the losing write was decided from. The
    /// hold ends early once the node is seen at a newer one.
    lost_at: Option<u64>,
}

/// Per node, whether its next write must wait.
#[derive(Default)]
pub(crate) struct NodeHolds {
    holds: HashMap<String, Hold>,
}

impl NodeHolds {
    /// A write to `node` lost with 409; it was decided from version `rv`.
    pub(crate) fn conflict(&mut self, node: &str, rv: Option<u64>, now: Instant) {
        self.failed_at(node, rv, now);
    }

    /// A write to `node` failed otherwise (the server's error, a timeout).
    pub(crate) fn failed(&mut self, node: &str, now: Instant) {
        self.failed_at(node, None, now);
    }

    fn failed_at(&mut self, node: &str, lost_at: Option<u64>, now: Instant) {
        let hold = self.holds.entry(node.to_string()).or_insert(Hold {
            failures: 0,
            until: now,
            lost_at: None,
        });
        hold.failures = hold.failures.saturating_add(1);
        hold.until = now + backoff(hold.failures, node);
        hold.lost_at = lost_at;
    }

    /// A write to `node` was stored: its next write need not wait.
    pub(crate) fn stored(&mut self, node: &str) {
        self.holds.remove(node);
    }

    /// Whether a write to `node`, seen now at version `rv`, must wait.
    pub(crate) fn held(&self, node: &str, rv: Option<u64>, now: Instant) -> bool {
        let Some(hold) = self.holds.get(node) else {
            return false;
        };
        if now >= hold.until {
            return false;
        }
        match (hold.lost_at, rv) {
            // A conflict: held until the node is seen at a newer version.
            (Some(lost), Some(seen)) => seen <= lost,
            _ => true,
        }
    }

    /// How long until the earliest hold that is still waiting ends.
    pub(crate) fn next_due(&self, now: Instant) -> Option<Duration> {
        self.holds
            .values()
            .filter(|h| h.until > now)
            .map(|h| h.until - now)
            .min()
    }

    /// Forgets nodes that are gone.
    pub(crate) fn retain_known(&mut self, known: &HashSet<String>) {
        self.holds.retain(|k, _| known.contains(k));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.holds.len()
    }
}

/// True when `node` already has every field `patch` sets or removes (its
/// resourceVersion precondition aside): sending it would change nothing.
pub(crate) fn already_stored(node: &Node, patch: &Value) -> bool {
    let Ok(current) = serde_json::to_value(node) else {
        return false;
    };
    let mut patch = patch.clone();
    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    contains(&current, &patch)
}

/// Whether merging `patch` into `target` leaves it as it is.
fn contains(target: &Value, patch: &Value) -> bool {
    let Value::Object(fields) = patch else {
        return target == patch;
    };
    let Value::Object(have) = target else {
        return false;
    };
    fields.iter().all(|(k, v)| match (have.get(k), v) {
        (None | Some(Value::Null), Value::Null) => true,
        (None, Value::Object(inner)) => inner.values().all(Value::is_null),
        (None, _) => false,
        (Some(_), Value::Null) => false,
        (Some(h), v) => contains(h, v),
    })
}

/// The `action` label of a node write (a bounded set).
pub(crate) fn action_label(op: &Op) -> &'static str {
    match op {
        Op::GiveBack { .. } => "give_back",
        Op::Rollout(a) => match a {
            Action::Claim { .. } => "claim",
            Action::CordonAgain { .. } => "cordon_again",
            Action::Drain { .. } => "drain",
            Action::RequestPatch { .. } => "request_patch",
            Action::RequestReboot { .. } => "request_reboot",
            Action::SetStep { .. } => "set_step",
            Action::MarkFailed { .. } => "mark_failed",
            Action::Release { .. } => "release",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_doubles_to_a_bound_and_spreads_by_node() {
        for failures in 1..40 {
            let d = backoff(failures, "n1");
            let base = FIRST_BACKOFF
                .saturating_mul(1 << (failures - 1).min(8))
                .min(MAX_BACKOFF);
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                "{failures}: {d:?}"
            );
        }
        assert!(backoff(1, "n1") <= Duration::from_millis(300));
        assert!(backoff(30, "n1") <= Duration::from_secs(36));
        let spread: HashSet<u128> = (0..50)
            .map(|i| backoff(3, &format!("node-{i}")).as_millis())
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
    }

    #[test]
    fn a_conflict_holds_until_a_newer_version_or_the_backoff_ends() {
        let now = Instant::now();
        let mut holds = NodeHolds::default();
        holds.conflict("n1", Some(7), now);
        assert!(holds.held("n1", Some(7), now));
        assert!(holds.held("n1", Some(5), now), "an older copy still");
        assert!(
            !holds.held("n1", Some(8), now),
            "a newer version is decided on"
        );
        assert!(!holds.held("n2", Some(1), now));
        let due = holds.next_due(now).unwrap_or_default();
        assert!(due >= Duration::from_millis(200) && due <= Duration::from_millis(300));
        assert!(!holds.held("n1", Some(7), now + due), "bounded");
        // A failure waits out its backoff whatever the store shows, and a
        // second one waits longer.
        holds.failed("n1", now);
        assert!(holds.held("n1", Some(100), now));
        let second = holds.next_due(now).unwrap_or_default();
        assert!(second >= Duration::from_millis(400), "{second:?}");
        holds.stored("n1");
        assert!(!holds.held("n1", Some(7), now));
        assert_eq!(holds.next_due(now), None);
        holds.failed("gone", now);
        holds.retain_known(&HashSet::new());
        assert_eq!(holds.len(), 0);
    }

    #[test]
    fn a_write_the_node_already_has_is_recognised() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "resourceVersion": "9",
                         "labels": {"a": "1"}, "annotations": {"r": "x"}},
            "spec": {"unschedulable": true},
        }))
        .unwrap_or_default();
        let stored = json!({"metadata": {"resourceVersion": "3", "labels": {"a": "1"},
                            "annotations": {"gone": null}}, "spec": {"unschedulable": true}});
        assert!(already_stored(&node, &stored));
        for differs in [
            json!({"metadata": {"labels": {"a": "2"}}}),
            json!({"metadata": {"annotations": {"r": null}}}),
            json!({"spec": {"unschedulable": null}}),
            json!({"spec": {"taints": []}}),
        ] {
            assert!(!already_stored(&node, &differs), "{differs}");
        }
    }
}
