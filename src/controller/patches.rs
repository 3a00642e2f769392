//! Pure builders of the controller's writes: the merge patches of Nodes, of a
//! policy's status and of its finalizers. No client, no clock: everything a
//! patch depends on is an argument, so each is tested on its own.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::plan::Op;
use crate::api::{PatchPolicyStatus, Phase, Step};
use k8s_openapi::api::core::v1::{Node, Taint};

use crate::core::node_record::{
    DONE_ANNOTATION, NodeRecord, PENDING_REBOOT_EFFECT, PENDING_REBOOT_TAINT, RECORD_ANNOTATION,
    STEP_LABEL,
};
use crate::core::rollout::{self, Action};

/// Finalizer that lets sofort clean its node records when a policy is deleted.
pub const FINALIZER: &str = "sofort.dev/cleanup";

/// The name of a step as the `sofort.dev/step` label and metric labels spell it.
pub(crate) fn step_name(step: Step) -> &'static str {
    match step {
        Step::Pending => "Pending",
        Step::Draining => "Draining",
        Step::Patching => "Patching",
        Step::Rebooting => "Rebooting",
        Step::WaitingReady => "WaitingReady",
        Step::Settling => "Settling",
        Step::Done => "Done",
        Step::Failed => "Failed",
    }
}

/// The name of a phase as the metric label spells it.
pub(crate) fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Scheduled => "Scheduled",
        Phase::Waiting => "Waiting",
        Phase::Progressing => "Progressing",
        Phase::Paused => "Paused",
        Phase::Completed => "Completed",
        Phase::Halted => "Halted",
    }
}

/// Writes `record` as the `sofort.dev/record` annotation and its step as the
/// `sofort.dev/step` label.
pub(crate) fn record_patch(record: &NodeRecord) -> Value {
    let json_record = serde_json::to_string(record).unwrap_or_default();
    json!({
        "metadata": {
            "labels": {STEP_LABEL: step_name(record.step)},
            "annotations": {RECORD_ANNOTATION: json_record},
        }
    })
}

fn uncordon() -> Value {
    json!({"spec": {"unschedulable": null}})
}

/// Removes the record and the step label.
fn forget_record() -> Value {
    json!({"metadata": {"labels": {STEP_LABEL: null}, "annotations": {RECORD_ANNOTATION: null}}})
}

/// The node write `op` needs, as a merge patch (None: no write). `rv`: the
/// node's resourceVersion as last read (a claim is conditional on it).
/// `current`: the node's record as last read; the maintenance labels it
/// lists and the next record does not are removed in the same write, those
/// the next record adds are set.
pub(crate) fn node_patch(op: &Op, rv: Option<&str>, current: Option<&NodeRecord>) -> Option<Value> {
    let (mut patch, next) = match op {
        Op::Rollout(action) => (action_patch(action, rv)?, next_record(action)),
        Op::GiveBack {
            uncordon: give_back_uncordon,
            ..
        } => {
            let mut patch = forget_record();
            if *give_back_uncordon {
                merge(&mut patch, uncordon());
            }
            (patch, None)
        }
    };
    let labels: serde_json::Map<String, Value> = rollout::label_writes(current, next)
        .into_iter()
        .map(|(k, v)| (k, v.map_or(Value::Null, Value::String)))
        .collect();
    if !labels.is_empty() {
        merge(&mut patch, json!({"metadata": {"labels": labels}}));
    }
    Some(patch)
}

/// The record an action leaves on the node (`None`: it goes), for the
/// actions that write one.
fn next_record(action: &Action) -> Option<&NodeRecord> {
    match action {
        Action::Claim { record, .. }
        | Action::CordonAgain { record, .. }
        | Action::RequestPatch { record, .. }
        | Action::RequestReboot { record, .. }
        | Action::SetStep { record, .. }
        | Action::MarkFailed { record, .. } => Some(record),
        Action::Drain { record, .. } => record.as_ref(),
        Action::Release { .. } => None,
    }
}

/// Whether `node` carries sofort's pending-reboot taint.
pub(crate) fn has_pending_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(is_pending_taint))
}

fn is_pending_taint(t: &Taint) -> bool {
    t.key == PENDING_REBOOT_TAINT && t.effect == PENDING_REBOOT_EFFECT
}

/// The node's taint list with sofort's pending-reboot taint added or
/// removed, every other taint kept as it is; conditional on the node's
/// resourceVersion (the list is replaced whole, so a taint someone added
/// meanwhile makes the write fail instead of being lost). None: nothing to
/// change.
pub(crate) fn taint_patch(node: &Node, add: bool) -> Option<Value> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if current.iter().any(is_pending_taint) == add {
        return None;
    }
    let mut taints: Vec<Taint> = current
        .into_iter()
        .filter(|t| !is_pending_taint(t))
        .collect();
    if add {
        taints.push(Taint {
            key: PENDING_REBOOT_TAINT.to_string(),
            effect: PENDING_REBOOT_EFFECT.to_string(),
            ..Taint::default()
        });
    }
    let rv = node.metadata.resource_version.as_deref();
    Some(json!({
        "metadata": {"resourceVersion": rv},
        "spec": {"taints": taints},
    }))
}

fn action_patch(action: &Action, rv: Option<&str>) -> Option<Value> {
    match action {
        Action::Claim { record, .. } | Action::CordonAgain { record, .. } => {
            // The record and the cordon in one patch, conditional on the node
            // not having changed since we looked at it.
            let mut patch = record_patch(record);
            merge(
                &mut patch,
                json!({"metadata": {"resourceVersion": rv}, "spec": {"unschedulable": true}}),
            );
            Some(patch)
        }
        Action::Drain { record, .. } => record.as_ref().map(record_patch),
        Action::RequestPatch { record, .. }
        | Action::RequestReboot { record, .. }
        | Action::SetStep { record, .. } => Some(record_patch(record)),
        Action::MarkFailed {
            uncordon: then_uncordon,
            record,
            ..
        } => {
            let mut patch = record_patch(record);
            if *then_uncordon {
                merge(&mut patch, uncordon());
            }
            Some(patch)
        }
        Action::Release {
            done,
            uncordon: then_uncordon,
            ..
        } => {
            let done_json = serde_json::to_string(done).unwrap_or_default();
            let mut patch = json!({
                "metadata": {
                    "labels": {STEP_LABEL: null},
                    "annotations": {RECORD_ANNOTATION: null, DONE_ANNOTATION: done_json},
                }
            });
            if *then_uncordon {
                merge(&mut patch, uncordon());
            }
            Some(patch)
        }
    }
}

/// Splits a plan into batches that can each be written concurrently: the
/// moves of nodes in progress before the starts, and inside each part a
/// node's k-th operation in the k-th batch (a claim before its drain).
pub(crate) fn batches(ops: &[Op], first_start: usize) -> Vec<Vec<usize>> {
    let split = first_start.min(ops.len());
    let mut out: Vec<Vec<usize>> = Vec::new();
    for part in [0..split, split..ops.len()] {
        let base = out.len();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for i in part {
            let k = seen.entry(ops[i].node()).or_insert(0);
            let at = base + *k;
            *k += 1;
            if out.len() <= at {
                out.push(Vec::new());
            }
            out[at].push(i);
        }
    }
    out
}

/// Merges `from` into `into` (objects key by key; anything else replaced).
pub(crate) fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Status as JSON with removed top-level fields set to null, for a merge
/// patch; conditional on `precondition` (a resourceVersion) when given.
pub(crate) fn status_patch(
    old: Option<&PatchPolicyStatus>,
    new: &PatchPolicyStatus,
    precondition: Option<&str>,
) -> Value {
    let mut new_v = serde_json::to_value(new).unwrap_or(Value::Null);
    if let (Some(old), Value::Object(map)) = (old, &mut new_v)
        && let Ok(Value::Object(old_map)) = serde_json::to_value(old)
    {
        for k in old_map.keys() {
            if !map.contains_key(k) {
                map.insert(k.clone(), Value::Null);
            }
        }
    }
    let mut patch = json!({ "status": new_v });
    if let Some(rv) = precondition {
        // New notification records: only if nobody wrote since we read.
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    patch
}

/// The finalizer list `current` with sofort's added (`add`) or removed,
/// conditional on the policy's resourceVersion `rv`.
pub(crate) fn finalizers_patch(current: &[String], add: bool, rv: Option<&str>) -> Value {
    let finalizers: Vec<String> = if add {
        let mut all = current.to_vec();
        all.push(FINALIZER.to_string());
        all
    } else {
        current
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect()
    };
    json!({"metadata": {"finalizers": finalizers, "resourceVersion": rv}})
}

/// The stored status of a policy the types cannot hold, as raw JSON fields.
pub(crate) struct StoredRaw<'a> {
    /// `status.phase`.
    pub(crate) phase: Option<&'a Value>,
    /// `status.message`.
    pub(crate) message: Option<&'a Value>,
    /// `status.observedGeneration`.
    pub(crate) observed_generation: Option<&'a Value>,
}

impl<'a> StoredRaw<'a> {
    pub(crate) fn of(status: Option<&'a Value>) -> Self {
        let field = |k: &str| status.and_then(|s| s.get(k));
        StoredRaw {
            phase: field("phase"),
            message: field("message"),
            observed_generation: field("observedGeneration"),
        }
    }
}

/// The message of a policy the types cannot hold.
pub(crate) fn undecodable_message(error: &crate::api::DecodeError) -> String {
    format!(
        "halted: invalid spec: {error}; the controller cannot read this field (run sofort validate on the policy for every problem)"
    )
}

/// The status patch of a policy the types cannot hold (`Halted`, `Stalled`
/// with reason `InvalidSpec`), or None when `stored` already says so.
pub(crate) fn undecodable_status_patch(
    stored: &StoredRaw<'_>,
    message: &str,
    generation: Option<i64>,
    revision: &str,
    now: jiff::Timestamp,
) -> Option<Value> {
    if stored.phase == Some(&json!("Halted"))
        && stored.message == Some(&json!(message))
        && stored.observed_generation.cloned() == generation.map(|g| json!(g))
    {
        return None;
    }
    let at = jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string();
    let condition = |type_: &str, status: &str| {
        json!({
            "type": type_, "status": status, "reason": "InvalidSpec",
            "message": message, "observedGeneration": generation,
            "lastTransitionTime": at,
        })
    };
    Some(json!({"status": {
        "observedGeneration": generation,
        "revision": revision,
        "phase": "Halted",
        "message": message,
        "active": null,
        "conditions": [
            condition("Ready", "False"),
            condition("Reconciling", "False"),
            condition("Stalled", "True"),
        ],
    }}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_patch_nulls_removed_fields() {
        let old = PatchPolicyStatus {
            message: Some("x".into()),
            completed_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-27T00:00:00Z".parse().unwrap(),
            )),
            ..PatchPolicyStatus::default()
        };
        let new = PatchPolicyStatus {
            message: Some("y".into()),
            ..PatchPolicyStatus::default()
        };
        let p = status_patch(Some(&old), &new, None);
        assert_eq!(p["status"]["message"], "y");
        assert!(p["status"]["completedAt"].is_null());
        assert!(p["status"].as_object().unwrap().contains_key("completedAt"));
        assert!(p.get("metadata").is_none());
        let p = status_patch(None, &new, Some("42"));
        assert_eq!(p["metadata"]["resourceVersion"], "42");
    }

    /// A record of policy `p`, revision `r`, at step Draining.
    pub(crate) fn draining_record() -> NodeRecord {
        let at: jiff::Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
        NodeRecord {
            policy: "p".into(),
            revision: "r".into(),
            step: Step::Draining,
            since: at,
            started: at,
            was_unschedulable: false,
            boot_id_before: None,
            patch: None,
            reason: None,
            labels: Default::default(),
            drain_after: None,
        }
    }

    #[test]
    fn batches_keep_moves_before_starts_and_a_claim_before_its_drain() {
        let rec = draining_record();
        let release = |n: &str| {
            Op::Rollout(Action::Release {
                node: n.into(),
                done: Default::default(),
                uncordon: true,
            })
        };
        let cordon = |n: &str| {
            Op::Rollout(Action::Claim {
                node: n.into(),
                record: rec.clone(),
            })
        };
        let drain = |n: &str| {
            Op::Rollout(Action::Drain {
                node: n.into(),
                record: None,
                force: false,
            })
        };
        let ops = vec![
            release("a"),
            release("b"),
            cordon("c"),
            drain("c"),
            cordon("d"),
            drain("d"),
        ];
        assert_eq!(batches(&ops, 2), vec![vec![0, 1], vec![2, 4], vec![3, 5]]);
        assert_eq!(batches(&ops[..2], 2), vec![vec![0, 1]]);
        assert_eq!(batches(&ops[2..], 0), vec![vec![0, 2], vec![1, 3]]);
        assert!(batches(&[], 0).is_empty());
        // A release writes the uncordon with the record removal; a claim is
        // conditional on the node's resourceVersion; a drain alone writes nothing.
        let p = node_patch(&release("a"), None, None).unwrap();
        assert_eq!(p["spec"], json!({"unschedulable": null}));
        assert!(p["metadata"]["annotations"][RECORD_ANNOTATION].is_null());
        let p = node_patch(&cordon("c"), Some("7"), None).unwrap();
        assert_eq!(p["spec"]["unschedulable"], true);
        assert_eq!(p["metadata"]["resourceVersion"], "7");
        assert!(node_patch(&drain("c"), None, None).is_none());
    }

    #[test]
    fn a_give_back_drops_the_record_and_uncordons_only_when_asked() {
        let give_back = |uncordon| Op::GiveBack {
            node: "a".into(),
            uncordon,
            announce: true,
        };
        let p = node_patch(&give_back(true), None, None).unwrap();
        assert_eq!(
            p,
            json!({
                "metadata": {"labels": {STEP_LABEL: null}, "annotations": {RECORD_ANNOTATION: null}},
                "spec": {"unschedulable": null},
            })
        );
        let p = node_patch(&give_back(false), None, None).unwrap();
        assert!(p.get("spec").is_none());
        assert!(p["metadata"]["labels"][STEP_LABEL].is_null());
    }

    #[test]
    fn finalizers_are_added_once_and_removed_alone() {
        let others = vec!["other/keep".to_string()];
        let p = finalizers_patch(&others, true, Some("5"));
        assert_eq!(
            p["metadata"]["finalizers"],
            json!(["other/keep", FINALIZER])
        );
        assert_eq!(p["metadata"]["resourceVersion"], "5");
        let with = vec![FINALIZER.to_string(), "other/keep".to_string()];
        let p = finalizers_patch(&with, false, None);
        assert_eq!(p["metadata"]["finalizers"], json!(["other/keep"]));
    }

    #[test]
    fn an_undecodable_policy_is_written_halted_once() {
        let now: jiff::Timestamp = "2026-11-27T00:00:00.5Z".parse().unwrap();
        let message = "halted: invalid spec: spec.x: bad";
        let none = StoredRaw::of(None);
        let p = undecodable_status_patch(&none, message, Some(3), "r1", now).unwrap();
        assert_eq!(p["status"]["phase"], "Halted");
        assert_eq!(p["status"]["conditions"][2]["type"], "Stalled");
        assert_eq!(p["status"]["conditions"][2]["status"], "True");
        assert_eq!(
            p["status"]["conditions"][2]["lastTransitionTime"],
            "2026-11-27T00:00:00Z"
        );
        let stored = p["status"].clone();
        assert!(
            undecodable_status_patch(&StoredRaw::of(Some(&stored)), message, Some(3), "r1", now)
                .is_none()
        );
        assert!(
            undecodable_status_patch(&StoredRaw::of(Some(&stored)), message, Some(4), "r1", now)
                .is_some()
        );
    }

    #[test]
    fn record_patch_sets_label_and_annotation() {
        let r = draining_record();
        let p = record_patch(&r);
        assert_eq!(p["metadata"]["labels"][STEP_LABEL], "Draining");
        let back: NodeRecord = serde_json::from_str(
            p["metadata"]["annotations"][RECORD_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(back, r);
    }
}
