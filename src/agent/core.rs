//! The agent's functional core: pure decisions from the Node object and a few
//! host facts. Nothing here does I/O or reads a clock; the shell in
//! [`super::shell`] gathers the inputs and carries out the returned action.
//!
//! ## Reboot protocol
//!
//! The agent reboots the host only when all of these hold:
//! - `spec.unschedulable` is true (the controller cordoned and drained the node);
//! - the node record says step `Rebooting` and carries `bootIdBefore`;
//! - `bootIdBefore` equals the host's current boot ID, and the kubelet's
//!   `status.nodeInfo.bootID` (when reported) agrees with the host;
//! - no [`RebootAck`] exists yet for this exact request (policy, revision, boot ID).
//!
//! It first writes the ack (with the Node's `resourceVersion` as a precondition,
//! so two agent instances cannot both acknowledge), waits for the API server to
//! confirm it, and only then reboots.
//!
//! An ack for the same request while the boot ID is still unchanged means the
//! agent stopped between the ack and the reboot, or the reboot is under way. An
//! unchanged boot ID proves the host has not restarted since the ack, so asking
//! again cannot cause a second reboot for the request; it can only complete the
//! first one. The agent therefore waits [`REBOOT_GRACE`] after the ack (a normal
//! shutdown finishes well within it) and then asks once more, recording
//! `attempt: 2`. After [`MAX_REBOOT_ATTEMPTS`] it stops and reports an error
//! instead, because the reboot method evidently does not work on this host.
//! Once the boot ID differs from the acknowledged one, the request is done and
//! the agent never acts on it again.
//!
//! ## Verifying a request
//!
//! Anyone who may patch Nodes can write a `sofort.dev/record` (the chart's
//! admission policy forbids it to everyone but the controller, but the agent
//! does not rely on that). Before it acknowledges a reboot or runs a patch
//! command, the agent therefore reads the PatchPolicy the record names
//! ([`NodeAction::ReadPolicy`]) and acts only when
//! - the policy exists,
//! - its `nodeSelector` selects this node (control-plane nodes only when the
//!   selector asks for them, as the controller selects),
//! - its `spec.revision` (for a standing policy: the id of its current round,
//!   `status.round.id`) equals the record's revision, or the policy's own
//!   status lists this node in `status.active` (the controller is still
//!   finishing it under the revision it started with: a started node always
//!   finishes, even when `spec.revision` was bumped meanwhile), and
//! - for a patch: it has `spec.patch`; the command and timeout run are the
//!   policy's, never anything from the Node.
//!
//! `status.active` has no revision of its own, so the second rule accepts any
//! revision on a node the controller lists as in progress. That gives a forger
//! who can write Nodes but not the policy status nothing: on such a node they
//! could write the policy's current `spec.revision` (public in the spec) just as
//! well, and the command run is still the policy's.
//!
//! Otherwise it refuses ([`NodeAction::RefuseRequest`]): `sofort.dev/agent-error`
//! and a Warning Event, once, with the names from the record scrubbed.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::{PatchPolicy, Step};
use crate::core::node_record::{
    AGENT_ERROR_ANNOTATION, NodeRecord, PATCH_RESULT_ANNOTATION, PatchResult,
    REBOOT_ACK_ANNOTATION, REBOOT_REQUIRED_LABEL, RECORD_ANNOTATION, RebootAck, read_json,
};

/// How long after an acknowledgement the agent waits for the host to go down
/// before it asks for the reboot once more.
pub const REBOOT_GRACE: Duration = Duration::from_secs(120);

/// Most reboot requests issued for one (policy, revision, boot ID).
pub const MAX_REBOOT_ATTEMPTS: u32 = 2;

/// Message of the patch result written when host commands are not allowed.
pub const HOST_COMMANDS_REFUSED: &str = "refused: host commands are not allowed on this node; start the agent with --allow-host-commands (chart value agent.hostCommands.enabled)";

/// The fields of the Node object the agent cares about, already parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnNode {
    /// Node name.
    pub name: String,
    /// `metadata.resourceVersion`, used as a precondition for the ack.
    pub resource_version: Option<String>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// `status.nodeInfo.bootID` as reported by the kubelet (empty means unknown).
    pub status_boot_id: Option<String>,
    /// The controller's record, or the reason it could not be read.
    pub record: Result<Option<NodeRecord>, String>,
    /// The agent's reboot acknowledgement (unreadable counts as absent).
    pub reboot_ack: Option<RebootAck>,
    /// The agent's last patch result (unreadable counts as absent).
    pub patch_result: Option<PatchResult>,
    /// Current `sofort.dev/agent-error` annotation (empty counts as absent).
    pub agent_error: Option<String>,
    /// Current `sofort.dev/reboot-required` label.
    pub reboot_required_label: Option<String>,
    /// All labels of the Node (to check that the policy selects it).
    pub labels: BTreeMap<String, String>,
}

impl Default for OwnNode {
    fn default() -> Self {
        OwnNode {
            name: String::new(),
            resource_version: None,
            unschedulable: false,
            status_boot_id: None,
            record: Ok(None),
            reboot_ack: None,
            patch_result: None,
            agent_error: None,
            reboot_required_label: None,
            labels: BTreeMap::new(),
        }
    }
}

impl OwnNode {
    /// Extracts the view from a Node object.
    pub fn from_node(node: &k8s_openapi::api::core::v1::Node) -> Self {
        let name = node.metadata.name.clone().unwrap_or_default();
        let ann = node.metadata.annotations.as_ref();
        Self::from_parts(
            name,
            node.metadata.resource_version.clone(),
            node.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            node.status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.boot_id.clone()),
            ann,
            node.metadata.labels.as_ref(),
        )
    }

    /// Builds the view from the raw parts of a Node.
    pub fn from_parts(
        name: String,
        resource_version: Option<String>,
        unschedulable: bool,
        status_boot_id: Option<String>,
        annotations: Option<&BTreeMap<String, String>>,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Self {
        let record = read_json::<NodeRecord>(&name, annotations, RECORD_ANNOTATION)
            .map_err(|e| e.to_string());
        let reboot_ack = read_json::<RebootAck>(&name, annotations, REBOOT_ACK_ANNOTATION)
            .ok()
            .flatten();
        let patch_result = read_json::<PatchResult>(&name, annotations, PATCH_RESULT_ANNOTATION)
            .ok()
            .flatten();
        let agent_error = annotations
            .and_then(|a| a.get(AGENT_ERROR_ANNOTATION))
            .filter(|v| !v.trim().is_empty())
            .cloned();
        OwnNode {
            name,
            resource_version,
            unschedulable,
            status_boot_id: status_boot_id.filter(|b| !b.is_empty()),
            record,
            reboot_ack,
            patch_result,
            agent_error,
            reboot_required_label: labels.and_then(|l| l.get(REBOOT_REQUIRED_LABEL)).cloned(),
            labels: labels.cloned().unwrap_or_default(),
        }
    }
}

/// What the agent knows about its host and itself at decision time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// Current boot ID of the host.
    pub boot_id: String,
    /// Whether the agent was started with `--allow-host-commands`.
    pub allow_host_commands: bool,
    /// The (policy, revision) whose patch command is running now, if any.
    pub patch_in_flight: Option<(String, String)>,
    /// Now.
    pub now: jiff::Timestamp,
    /// The PatchPolicy named by the record, as read for this decision.
    pub policy: PolicyLookup,
}

/// The PatchPolicy a request names, as the agent read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyLookup {
    /// Not read yet: a decision that would act returns [`NodeAction::ReadPolicy`].
    NotRead,
    /// The API answered that no such PatchPolicy exists.
    Missing,
    /// It could not be read (the API failed or timed out); nothing is done, the
    /// shell reads again later.
    Failed(String),
    /// What the policy says about this node.
    Found(PolicyFacts),
}

/// The parts of a PatchPolicy that authorise a request on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFacts {
    /// `metadata.name`.
    pub name: String,
    /// `spec.revision`; for a standing policy the id of its current round.
    pub revision: String,
    /// Whether `spec.nodeSelector` selects this node (see [`crate::core::selector::selects_node`]).
    pub selects_node: bool,
    /// Whether `status.active` lists this node: the controller is finishing it
    /// (possibly under a revision older than `spec.revision`).
    pub in_progress_here: bool,
    /// `spec.patch`, parsed: `None` without one, `Err` when its timeout is unusable.
    pub patch: Option<Result<PatchCommand, String>>,
}

impl PolicyFacts {
    /// Reads what matters from `policy` for the node `node_name` with `node_labels`.
    pub fn from_policy(
        policy: &PatchPolicy,
        node_name: &str,
        node_labels: &BTreeMap<String, String>,
    ) -> Self {
        let spec = &policy.spec;
        let patch = spec.patch.as_ref().map(|p| {
            let timeout = crate::core::duration::parse(&p.timeout)
                .map_err(|e| format!("spec.patch.timeout of the policy is unusable ({e})"))?;
            Ok(PatchCommand {
                command: p.command.clone(),
                timeout,
            })
        });
        PolicyFacts {
            name: policy.metadata.name.clone().unwrap_or_default(),
            revision: crate::core::round::effective_revision(policy),
            selects_node: crate::core::selector::check(&spec.node_selector).is_ok()
                && crate::core::selector::selects_node(&spec.node_selector, node_labels),
            in_progress_here: !node_name.is_empty()
                && policy
                    .status
                    .as_ref()
                    .is_some_and(|st| st.active.iter().any(|a| a.node == node_name)),
            patch,
        }
    }
}

/// The host patch command to run, taken from the PatchPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchCommand {
    /// Program and arguments (`spec.patch.command`).
    pub command: Vec<String>,
    /// `spec.patch.timeout`.
    pub timeout: Duration,
}

/// Longest name or revision from a record shown in a message.
const SHOWN_MAX: usize = 63;

/// A name or revision read from the Node, safe to put into an annotation, Event
/// or log: anything but ASCII letters, digits, `.`, `_`, `-` and `:` becomes `_`,
/// and it is cut at 63 characters. The record can be forged, so its text is
/// never echoed as it is.
pub fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(SHOWN_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if text.chars().count() > SHOWN_MAX {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("(empty)");
    }
    out
}

/// The one thing to do after looking at the Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeAction {
    /// Nothing to do until the Node changes.
    Nothing,
    /// Read this PatchPolicy (once, bounded in time) and decide again with it.
    ReadPolicy {
        /// Name from the record.
        name: String,
    },
    /// The request is not backed by its PatchPolicy: write `agent-error`,
    /// publish a warning Event, run nothing and do not reboot.
    RefuseRequest {
        /// Why, as written to the annotation and the Event (record text scrubbed).
        reason: String,
    },
    /// Write `agent-error`, publish a warning Event and do not reboot.
    RefuseReboot {
        /// Why, as written to the annotation and the Event.
        reason: String,
    },
    /// Write the ack (preconditioned on the resource version), wait for the API
    /// to confirm, then reboot.
    AckThenReboot {
        /// The acknowledgement to write.
        ack: RebootAck,
    },
    /// The reboot was acknowledged and is presumably under way; look again at
    /// `recheck_at` if the host is still up then.
    AwaitReboot {
        /// When to decide again.
        recheck_at: jiff::Timestamp,
    },
    /// Run the host patch command and then write its result.
    RunPatch {
        /// Policy of the request.
        policy: String,
        /// Revision of the request.
        revision: String,
        /// The policy's command and timeout.
        request: PatchCommand,
    },
    /// Write this failed patch result and a warning Event without running anything.
    RefusePatch {
        /// The result to write.
        result: PatchResult,
    },
}

/// Decides what to do about the controller's request on this node.
pub fn decide(node: &OwnNode, host: &HostFacts) -> NodeAction {
    let record = match &node.record {
        Ok(Some(r)) => r,
        // No request, or a record the controller itself must repair: never act on
        // something we cannot read.
        Ok(None) | Err(_) => return NodeAction::Nothing,
    };
    match record.step {
        Step::Patching => decide_patch(node, record, host),
        Step::Rebooting => decide_reboot(node, record, host),
        _ => NodeAction::Nothing,
    }
}

fn decide_patch(node: &OwnNode, record: &NodeRecord, host: &HostFacts) -> NodeAction {
    if record.patch.is_none() {
        return NodeAction::Nothing;
    }
    if let Some(done) = &node.patch_result
        && done.policy == record.policy
        && done.revision == record.revision
    {
        return NodeAction::Nothing;
    }
    if host
        .patch_in_flight
        .as_ref()
        .is_some_and(|(p, r)| *p == record.policy && *r == record.revision)
    {
        return NodeAction::Nothing;
    }
    // From here on the policy and revision are the policy's own, not forged text.
    let policy = match verify(node, record, host) {
        Ok(p) => p,
        Err(action) => return *action,
    };
    let refuse = |message: String| NodeAction::RefusePatch {
        result: PatchResult {
            policy: record.policy.clone(),
            revision: record.revision.clone(),
            success: false,
            exit_code: None,
            message,
            output_tail: String::new(),
            at: host.now,
        },
    };
    if !host.allow_host_commands {
        return refuse(HOST_COMMANDS_REFUSED.to_string());
    }
    if !node.unschedulable {
        return refuse(format!(
            "refused: node {} is not cordoned; the patch command runs only on a cordoned, drained node (policy {}, revision {})",
            shown(&node.name),
            shown(&record.policy),
            shown(&record.revision)
        ));
    }
    let command = match &policy.patch {
        None => {
            return refuse(format!(
                "refused: PatchPolicy {} has no spec.patch, so there is no command to run",
                shown(&policy.name)
            ));
        }
        Some(Err(e)) => return refuse(format!("refused: {e}")),
        Some(Ok(c)) => c,
    };
    if command.command.is_empty() {
        return refuse("refused: the patch command is empty; set spec.patch.command".to_string());
    }
    NodeAction::RunPatch {
        policy: record.policy.clone(),
        revision: record.revision.clone(),
        request: command.clone(),
    }
}

/// Whether `name` can be the name of a PatchPolicy (a DNS subdomain).
fn valid_object_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks the request against the PatchPolicy it names: `Ok` with the policy
/// when it backs the request, otherwise the action to take instead.
fn verify<'a>(
    node: &OwnNode,
    record: &NodeRecord,
    host: &'a HostFacts,
) -> Result<&'a PolicyFacts, Box<NodeAction>> {
    let request = format!(
        "the request on node {} for policy {} revision {}",
        shown(&node.name),
        shown(&record.policy),
        shown(&record.revision)
    );
    let refuse = |why: String| {
        Err(Box::new(refuse_request(
            node,
            format!(
                "refused: {request} {why}; nothing was run and the node was not rebooted. Only the sofort controller writes sofort.dev/record: find who wrote it, then remove it with `kubectl annotate node {} sofort.dev/record-`",
                shown(&node.name)
            ),
        )))
    };
    if !valid_object_name(&record.policy) {
        return refuse("does not name a valid PatchPolicy".to_string());
    }
    match &host.policy {
        PolicyLookup::Found(p) if p.name == record.policy => {
            if !p.selects_node {
                refuse(format!(
                    "is not backed by its policy: PatchPolicy {} does not select this node",
                    shown(&p.name)
                ))
            } else if p.revision != record.revision && !p.in_progress_here {
                refuse(format!(
                    "is not backed by its policy: PatchPolicy {} is at revision {} and its status does not list this node as in progress",
                    shown(&p.name),
                    shown(&p.revision)
                ))
            } else {
                Ok(p)
            }
        }
        // Not read yet, or read for another request.
        PolicyLookup::NotRead | PolicyLookup::Found(_) => Err(Box::new(NodeAction::ReadPolicy {
            name: record.policy.clone(),
        })),
        PolicyLookup::Missing => refuse("names a PatchPolicy that does not exist".to_string()),
        // Unknown is not a refusal: the shell reports it and reads again later.
        PolicyLookup::Failed(_) => Err(Box::new(NodeAction::Nothing)),
    }
}

/// Like [`refuse_once`], for a request its policy does not back.
fn refuse_request(node: &OwnNode, reason: String) -> NodeAction {
    if node.agent_error.as_deref() == Some(reason.as_str()) {
        NodeAction::Nothing
    } else {
        NodeAction::RefuseRequest { reason }
    }
}

fn decide_reboot(node: &OwnNode, record: &NodeRecord, host: &HostFacts) -> NodeAction {
    let before = record.boot_id_before.as_deref().filter(|b| !b.is_empty());
    let ack = node.reboot_ack.as_ref().filter(|a| {
        a.policy == record.policy
            && a.revision == record.revision
            && Some(a.boot_id.as_str()) == before
    });
    if ack.is_some() && before != Some(host.boot_id.as_str()) {
        // The host restarted after our ack: this request is done.
        return NodeAction::Nothing;
    }
    if let Err(action) = verify(node, record, host) {
        return *action;
    }
    let Some(before) = before else {
        return refuse_once(
            node,
            format!(
                "refused reboot: the record of policy {} revision {} has no bootIdBefore, so the agent cannot tell whether the host already rebooted",
                shown(&record.policy),
                shown(&record.revision)
            ),
        );
    };
    if before != host.boot_id {
        return refuse_once(
            node,
            format!(
                "refused reboot: the host's boot ID is {} but the request of policy {} revision {} was made for boot ID {}; the node already restarted since the request",
                host.boot_id,
                shown(&record.policy),
                shown(&record.revision),
                shown(before)
            ),
        );
    }
    if let Some(reported) = &node.status_boot_id
        && *reported != host.boot_id
    {
        return refuse_once(
            node,
            format!(
                "refused reboot: the kubelet reports boot ID {} but the host's is {}; check that the agent reads the host's /proc/sys/kernel/random/boot_id",
                shown(reported),
                host.boot_id
            ),
        );
    }
    if !node.unschedulable {
        return refuse_once(
            node,
            format!(
                "refused reboot: node {} is not cordoned (spec.unschedulable is false); the agent reboots only a cordoned, drained node",
                shown(&node.name)
            ),
        );
    }
    match ack {
        None => NodeAction::AckThenReboot {
            ack: RebootAck {
                policy: record.policy.clone(),
                revision: record.revision.clone(),
                boot_id: before.to_string(),
                at: host.now,
                attempt: 1,
            },
        },
        Some(ack) => {
            let recheck_at = ack.at + REBOOT_GRACE;
            if host.now < recheck_at {
                NodeAction::AwaitReboot { recheck_at }
            } else if ack.attempt < MAX_REBOOT_ATTEMPTS {
                NodeAction::AckThenReboot {
                    ack: RebootAck {
                        at: host.now,
                        attempt: ack.attempt.max(1) + 1,
                        ..ack.clone()
                    },
                }
            } else {
                refuse_once(
                    node,
                    format!(
                        "reboot requested {} times since {} but the host did not restart (boot ID still {}); check the agent's reboot method and its privileges",
                        ack.attempt, ack.at, host.boot_id
                    ),
                )
            }
        }
    }
}

/// A refusal is written once: when the annotation already says so, the
/// refusal was reported and re-reporting on every Node update would only spam Events.
fn refuse_once(node: &OwnNode, reason: String) -> NodeAction {
    if node.agent_error.as_deref() == Some(reason.as_str()) {
        NodeAction::Nothing
    } else {
        NodeAction::RefuseReboot { reason }
    }
}

/// Outcome of one sentinel check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SentinelCheck {
    /// The host needs (true) or does not need (false) a reboot.
    Checked(bool),
    /// The check itself failed; never read as "reboot required".
    Failed(String),
}

/// What to do after a sentinel check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SentinelAction {
    /// The label already says so.
    Nothing,
    /// Set `sofort.dev/reboot-required` to this value (and clear a sentinel error).
    WriteLabel(bool),
    /// Report the error (log, Event, `agent-error`); leave the label alone.
    ReportError(String),
}

/// Decides what a sentinel check changes. `published` is the label value on the
/// Node (`None` when absent or not yet seen); `last_error` the sentinel error
/// this agent reported last, so an error is reported once until it changes.
pub fn decide_sentinel(
    check: &SentinelCheck,
    published: Option<&str>,
    last_error: Option<&str>,
) -> SentinelAction {
    match check {
        SentinelCheck::Failed(e) if last_error == Some(e.as_str()) => SentinelAction::Nothing,
        SentinelCheck::Failed(e) => SentinelAction::ReportError(e.clone()),
        SentinelCheck::Checked(required) => {
            let want = if *required { "true" } else { "false" };
            if published == Some(want) && last_error.is_none() {
                SentinelAction::Nothing
            } else {
                SentinelAction::WriteLabel(*required)
            }
        }
    }
}

/// Keeps the last `max_bytes` of a stream of output, cut at a line start where
/// possible, and at most `max_lines` lines.
pub fn output_tail(output: &[u8], max_bytes: usize, max_lines: usize) -> String {
    let start = output.len().saturating_sub(max_bytes);
    let text = String::from_utf8_lossy(&output[start..]);
    let trimmed = text.trim_end_matches(['\n', '\r']);
    let lines: Vec<&str> = trimmed.split('\n').collect();
    let from = lines.len().saturating_sub(max_lines);
    let mut tail = lines[from..].join("\n");
    if start > 0 || from > 0 {
        tail.insert_str(0, "…\n");
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::node_record::PatchRequest;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn record(step: Step) -> NodeRecord {
        NodeRecord {
            policy: "workers".into(),
            revision: "r1".into(),
            step,
            since: ts("2026-01-01T10:00:00Z"),
            started: ts("2026-01-01T09:50:00Z"),
            was_unschedulable: false,
            boot_id_before: Some("boot-a".into()),
            patch: Some(PatchRequest {
                timeout_seconds: 60,
            }),
            reason: None,
            labels: Default::default(),
            drain_after: None,
        }
    }

    fn node(step: Step) -> OwnNode {
        OwnNode {
            name: "n1".into(),
            resource_version: Some("7".into()),
            unschedulable: true,
            status_boot_id: Some("boot-a".into()),
            record: Ok(Some(record(step))),
            ..Default::default()
        }
    }

    fn command() -> PatchCommand {
        PatchCommand {
            command: vec!["apt-get".into(), "upgrade".into()],
            timeout: Duration::from_secs(60),
        }
    }

    fn workers() -> PolicyFacts {
        PolicyFacts {
            name: "workers".into(),
            revision: "r1".into(),
            selects_node: true,
            in_progress_here: false,
            patch: Some(Ok(command())),
        }
    }

    fn facts() -> HostFacts {
        HostFacts {
            boot_id: "boot-a".into(),
            allow_host_commands: true,
            patch_in_flight: None,
            now: ts("2026-01-01T10:01:00Z"),
            policy: PolicyLookup::Found(workers()),
        }
    }

    fn with_policy(policy: PolicyLookup) -> HostFacts {
        HostFacts { policy, ..facts() }
    }

    fn refusal(action: NodeAction) -> String {
        match action {
            NodeAction::RefuseRequest { reason } => reason,
            other => panic!("expected a refusal of the request, got {other:?}"),
        }
    }

    #[test]
    fn agent_reads_the_named_policy_before_it_acts() {
        for step in [Step::Patching, Step::Rebooting] {
            assert_eq!(
                decide(&node(step), &with_policy(PolicyLookup::NotRead)),
                NodeAction::ReadPolicy {
                    name: "workers".into()
                },
                "{step:?}"
            );
            // A lookup of another policy does not count.
            let mut other = workers();
            other.name = "other".into();
            assert!(matches!(
                decide(&node(step), &with_policy(PolicyLookup::Found(other))),
                NodeAction::ReadPolicy { .. }
            ));
            // An unreadable policy is no permission (and no refusal: read again later).
            assert_eq!(
                decide(
                    &node(step),
                    &with_policy(PolicyLookup::Failed("timed out".into()))
                ),
                NodeAction::Nothing
            );
        }
    }

    #[test]
    fn agent_refuses_a_record_for_a_policy_that_does_not_exist() {
        for step in [Step::Patching, Step::Rebooting] {
            let reason = refusal(decide(&node(step), &with_policy(PolicyLookup::Missing)));
            assert!(reason.contains("does not exist"), "{reason}");
            assert!(reason.contains("policy workers revision r1"), "{reason}");
            // Reported once.
            let mut n = node(step);
            n.agent_error = Some(reason);
            assert_eq!(
                decide(&n, &with_policy(PolicyLookup::Missing)),
                NodeAction::Nothing
            );
        }
    }

    #[test]
    fn agent_refuses_a_record_its_policy_does_not_back() {
        for step in [Step::Patching, Step::Rebooting] {
            let mut other_node = workers();
            other_node.selects_node = false;
            let reason = refusal(decide(
                &node(step),
                &with_policy(PolicyLookup::Found(other_node)),
            ));
            assert!(reason.contains("does not select this node"), "{reason}");
            let mut newer = workers();
            newer.revision = "r2".into();
            let reason = refusal(decide(
                &node(step),
                &with_policy(PolicyLookup::Found(newer)),
            ));
            assert!(reason.contains("is at revision r2"), "{reason}");
        }
    }

    #[test]
    fn a_revision_bump_does_not_refuse_a_node_the_policy_status_lists_in_progress() {
        for step in [Step::Patching, Step::Rebooting] {
            // spec.revision moved on to r2 while the node runs r1; the status
            // still lists the node as in progress: the request is backed.
            let mut bumped = workers();
            bumped.revision = "r2".into();
            bumped.in_progress_here = true;
            let action = decide(
                &node(step),
                &with_policy(PolicyLookup::Found(bumped.clone())),
            );
            match step {
                Step::Patching => assert!(
                    matches!(&action, NodeAction::RunPatch { revision, .. } if revision == "r1"),
                    "{action:?}"
                ),
                _ => assert!(
                    matches!(&action, NodeAction::AckThenReboot { ack } if ack.revision == "r1"),
                    "{action:?}"
                ),
            }
            // The status does not list the node: refused, saying why.
            bumped.in_progress_here = false;
            let reason = refusal(decide(
                &node(step),
                &with_policy(PolicyLookup::Found(bumped.clone())),
            ));
            assert!(
                reason.contains("is at revision r2 and its status does not list this node"),
                "{reason}"
            );
            // Being in progress never stands in for the selector.
            bumped.in_progress_here = true;
            bumped.selects_node = false;
            let reason = refusal(decide(
                &node(step),
                &with_policy(PolicyLookup::Found(bumped)),
            ));
            assert!(reason.contains("does not select this node"), "{reason}");
        }
    }

    #[test]
    fn only_the_policy_status_marks_a_node_in_progress() {
        let mut p = PatchPolicy::new("workers", crate::api::PatchPolicySpec::new("r2"));
        let labels = BTreeMap::new();
        assert!(!PolicyFacts::from_policy(&p, "n1", &labels).in_progress_here);
        p.status = Some(crate::api::PatchPolicyStatus {
            revision: Some("r2".into()),
            active: vec![crate::api::ActiveNode {
                node: "n1".into(),
                step: Step::Rebooting,
                since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(
                    "2026-01-01T10:00:00Z",
                )),
            }],
            ..Default::default()
        });
        assert!(PolicyFacts::from_policy(&p, "n1", &labels).in_progress_here);
        assert!(!PolicyFacts::from_policy(&p, "n2", &labels).in_progress_here);
        assert!(!PolicyFacts::from_policy(&p, "", &labels).in_progress_here);
    }

    #[test]
    fn forged_record_text_is_scrubbed_in_the_refusal() {
        let mut n = node(Step::Rebooting);
        if let Ok(Some(r)) = &mut n.record {
            r.policy = "Evil\n<script>$(reboot)".into();
            r.revision = "r1\u{1b}[31m".repeat(40);
        }
        // An impossible name is refused without asking the API.
        let reason = refusal(decide(&n, &with_policy(PolicyLookup::NotRead)));
        assert!(
            reason.contains("does not name a valid PatchPolicy"),
            "{reason}"
        );
        assert!(!reason.contains('<') && !reason.contains('$') && !reason.contains('\u{1b}'));
        assert!(reason.len() < 600, "{}", reason.len());
        assert_eq!(shown(""), "(empty)");
        assert_eq!(shown("a b/c"), "a_b_c");
    }

    #[test]
    fn agent_runs_the_command_from_the_policy_not_the_node() {
        let mut policy = workers();
        policy.patch = Some(Ok(PatchCommand {
            command: vec!["unattended-upgrade".into()],
            timeout: Duration::from_secs(900),
        }));
        let NodeAction::RunPatch { request, .. } = decide(
            &node(Step::Patching),
            &with_policy(PolicyLookup::Found(policy)),
        ) else {
            panic!("expected the patch to run");
        };
        assert_eq!(request.command, ["unattended-upgrade"]);
        assert_eq!(request.timeout, Duration::from_secs(900));
        // A policy without spec.patch runs nothing.
        let mut bare = workers();
        bare.patch = None;
        assert!(matches!(
            decide(&node(Step::Patching), &with_policy(PolicyLookup::Found(bare))),
            NodeAction::RefusePatch { result } if result.message.contains("no spec.patch")
        ));
    }

    #[test]
    fn policy_facts_come_from_the_policy_and_the_node_labels() {
        let mut p = PatchPolicy::new("workers", crate::api::PatchPolicySpec::new("r1"));
        p.spec.revision = "r9".into();
        p.spec.patch = Some(crate::api::PatchSpec {
            command: vec!["apt-get".into(), "-y".into(), "upgrade".into()],
            timeout: "10m".into(),
        });
        p.spec.node_selector.match_labels = Some(BTreeMap::from([("pool".into(), "a".into())]));
        let a = BTreeMap::from([("pool".to_string(), "a".to_string())]);
        let f = PolicyFacts::from_policy(&p, "n1", &a);
        assert_eq!(f.name, "workers");
        assert_eq!(f.revision, "r9");
        assert!(f.selects_node);
        assert_eq!(
            f.patch,
            Some(Ok(PatchCommand {
                command: vec!["apt-get".into(), "-y".into(), "upgrade".into()],
                timeout: Duration::from_secs(600),
            }))
        );
        assert!(!PolicyFacts::from_policy(&p, "n1", &BTreeMap::new()).selects_node);
        // A control-plane node only when the selector asks for it.
        let mut cp = a.clone();
        cp.insert(
            crate::core::selector::CONTROL_PLANE_LABEL.into(),
            String::new(),
        );
        assert!(!PolicyFacts::from_policy(&p, "n1", &cp).selects_node);
        if let Some(patch) = &mut p.spec.patch {
            patch.timeout = "soon".into();
        }
        assert!(matches!(
            PolicyFacts::from_policy(&p, "n1", &a).patch,
            Some(Err(_))
        ));
    }

    fn ack(at: &str, attempt: u32) -> RebootAck {
        RebootAck {
            policy: "workers".into(),
            revision: "r1".into(),
            boot_id: "boot-a".into(),
            at: ts(at),
            attempt,
        }
    }

    #[test]
    fn no_record_or_unreadable_record_means_nothing() {
        let mut n = node(Step::Rebooting);
        n.record = Ok(None);
        assert_eq!(decide(&n, &facts()), NodeAction::Nothing);
        n.record = Err("broken".into());
        assert_eq!(decide(&n, &facts()), NodeAction::Nothing);
    }

    #[test]
    fn steps_other_than_patching_and_rebooting_mean_nothing() {
        for step in [
            Step::Pending,
            Step::Draining,
            Step::WaitingReady,
            Step::Settling,
            Step::Done,
            Step::Failed,
        ] {
            assert_eq!(
                decide(&node(step), &facts()),
                NodeAction::Nothing,
                "{step:?}"
            );
        }
    }

    #[test]
    fn cordoned_node_with_matching_boot_id_is_acked_then_rebooted() {
        let action = decide(&node(Step::Rebooting), &facts());
        assert_eq!(
            action,
            NodeAction::AckThenReboot {
                ack: ack("2026-01-01T10:01:00Z", 1)
            }
        );
    }

    #[test]
    fn reboot_refused_when_not_cordoned() {
        let mut n = node(Step::Rebooting);
        n.unschedulable = false;
        let NodeAction::RefuseReboot { reason } = decide(&n, &facts()) else {
            panic!("expected a refusal");
        };
        assert!(reason.contains("not cordoned"), "{reason}");
        // Reported once: with the annotation in place, nothing more happens.
        n.agent_error = Some(reason);
        assert_eq!(decide(&n, &facts()), NodeAction::Nothing);
    }

    #[test]
    fn reboot_refused_when_boot_id_differs_without_ack() {
        let mut f = facts();
        f.boot_id = "boot-b".into();
        let mut n = node(Step::Rebooting);
        n.status_boot_id = Some("boot-b".into());
        let NodeAction::RefuseReboot { reason } = decide(&n, &f) else {
            panic!("expected a refusal");
        };
        assert!(reason.contains("boot ID is boot-b"), "{reason}");
        assert!(reason.contains("boot-a"), "{reason}");
    }

    #[test]
    fn reboot_refused_when_kubelet_and_host_disagree() {
        let mut n = node(Step::Rebooting);
        n.status_boot_id = Some("boot-z".into());
        let NodeAction::RefuseReboot { reason } = decide(&n, &facts()) else {
            panic!("expected a refusal");
        };
        assert!(
            reason.contains("kubelet reports boot ID boot-z"),
            "{reason}"
        );
        // Unknown kubelet boot ID is not a disagreement.
        n.status_boot_id = None;
        assert!(matches!(
            decide(&n, &facts()),
            NodeAction::AckThenReboot { .. }
        ));
    }

    #[test]
    fn reboot_refused_without_boot_id_before() {
        let mut n = node(Step::Rebooting);
        if let Ok(Some(r)) = &mut n.record {
            r.boot_id_before = None;
        }
        assert!(matches!(
            decide(&n, &facts()),
            NodeAction::RefuseReboot { .. }
        ));
    }

    #[test]
    fn acked_request_with_new_boot_id_is_done() {
        let mut n = node(Step::Rebooting);
        n.reboot_ack = Some(ack("2026-01-01T10:00:30Z", 1));
        n.status_boot_id = Some("boot-b".into());
        let mut f = facts();
        f.boot_id = "boot-b".into();
        assert_eq!(decide(&n, &f), NodeAction::Nothing);
        // Even when not cordoned any more, and long after.
        n.unschedulable = false;
        f.now = ts("2026-01-02T00:00:00Z");
        assert_eq!(decide(&n, &f), NodeAction::Nothing);
    }

    #[test]
    fn acked_request_with_same_boot_id_waits_for_the_grace_period() {
        let mut n = node(Step::Rebooting);
        n.reboot_ack = Some(ack("2026-01-01T10:00:30Z", 1));
        assert_eq!(
            decide(&n, &facts()),
            NodeAction::AwaitReboot {
                recheck_at: ts("2026-01-01T10:02:30Z")
            }
        );
    }

    #[test]
    fn acked_request_is_reissued_once_after_the_grace_period_then_reported() {
        let mut n = node(Step::Rebooting);
        n.reboot_ack = Some(ack("2026-01-01T10:00:30Z", 1));
        let mut f = facts();
        f.now = ts("2026-01-01T10:02:30Z");
        assert_eq!(
            decide(&n, &f),
            NodeAction::AckThenReboot {
                ack: ack("2026-01-01T10:02:30Z", 2)
            }
        );
        n.reboot_ack = Some(ack("2026-01-01T10:02:30Z", 2));
        f.now = ts("2026-01-01T10:03:00Z");
        assert!(matches!(decide(&n, &f), NodeAction::AwaitReboot { .. }));
        f.now = ts("2026-01-01T10:10:00Z");
        let NodeAction::RefuseReboot { reason } = decide(&n, &f) else {
            panic!("expected an error report");
        };
        assert!(reason.contains("did not restart"), "{reason}");
        n.agent_error = Some(reason);
        assert_eq!(decide(&n, &f), NodeAction::Nothing);
    }

    #[test]
    fn ack_of_another_request_does_not_count() {
        let mut n = node(Step::Rebooting);
        let mut other = ack("2026-01-01T09:00:00Z", 2);
        other.revision = "r0".into();
        n.reboot_ack = Some(other);
        assert!(matches!(
            decide(&n, &facts()),
            NodeAction::AckThenReboot { ack } if ack.attempt == 1 && ack.revision == "r1"
        ));
    }

    #[test]
    fn patch_runs_when_allowed_and_cordoned() {
        assert_eq!(
            decide(&node(Step::Patching), &facts()),
            NodeAction::RunPatch {
                policy: "workers".into(),
                revision: "r1".into(),
                request: command(),
            }
        );
    }

    #[test]
    fn patch_refused_unless_host_commands_allowed() {
        let mut f = facts();
        f.allow_host_commands = false;
        let NodeAction::RefusePatch { result } = decide(&node(Step::Patching), &f) else {
            panic!("expected a refusal");
        };
        assert!(!result.success);
        assert_eq!(result.message, HOST_COMMANDS_REFUSED);
        assert_eq!(
            (result.policy.as_str(), result.revision.as_str()),
            ("workers", "r1")
        );
    }

    #[test]
    fn patch_refused_when_not_cordoned_or_empty() {
        let mut n = node(Step::Patching);
        n.unschedulable = false;
        assert!(matches!(
            decide(&n, &facts()),
            NodeAction::RefusePatch { result } if result.message.contains("not cordoned")
        ));
        let n = node(Step::Patching);
        let mut empty = workers();
        empty.patch = Some(Ok(PatchCommand {
            command: vec![],
            timeout: Duration::from_secs(1),
        }));
        assert!(matches!(
            decide(&n, &with_policy(PolicyLookup::Found(empty))),
            NodeAction::RefusePatch { result } if result.message.contains("empty")
        ));
    }

    #[test]
    fn patch_not_run_twice_for_one_revision() {
        let mut n = node(Step::Patching);
        n.patch_result = Some(PatchResult {
            policy: "workers".into(),
            revision: "r1".into(),
            success: false,
            exit_code: Some(3),
            message: "exit 3".into(),
            output_tail: String::new(),
            at: ts("2026-01-01T10:00:40Z"),
        });
        assert_eq!(decide(&n, &facts()), NodeAction::Nothing);
        // A result of an older revision does not count.
        if let Some(r) = &mut n.patch_result {
            r.revision = "r0".into();
        }
        assert!(matches!(decide(&n, &facts()), NodeAction::RunPatch { .. }));
        // Nor is it started while it runs.
        let mut f = facts();
        f.patch_in_flight = Some(("workers".into(), "r1".into()));
        assert_eq!(decide(&n, &f), NodeAction::Nothing);
    }

    #[test]
    fn patching_without_a_command_means_nothing() {
        let mut n = node(Step::Patching);
        if let Ok(Some(r)) = &mut n.record {
            r.patch = None;
        }
        assert_eq!(decide(&n, &facts()), NodeAction::Nothing);
    }

    #[test]
    fn sentinel_label_is_written_only_on_change() {
        use SentinelAction::*;
        let yes = SentinelCheck::Checked(true);
        let no = SentinelCheck::Checked(false);
        assert_eq!(decide_sentinel(&yes, None, None), WriteLabel(true));
        assert_eq!(decide_sentinel(&yes, Some("true"), None), Nothing);
        assert_eq!(decide_sentinel(&no, Some("true"), None), WriteLabel(false));
        assert_eq!(decide_sentinel(&no, Some("false"), None), Nothing);
        assert_eq!(
            decide_sentinel(&no, Some("garbage"), None),
            WriteLabel(false)
        );
        // Recovering from an error rewrites the label to clear the error.
        assert_eq!(
            decide_sentinel(&no, Some("false"), Some("x")),
            WriteLabel(false)
        );
    }

    #[test]
    fn sentinel_error_is_reported_once_and_never_means_required() {
        use SentinelAction::*;
        let err = SentinelCheck::Failed("exit 127".into());
        assert_eq!(
            decide_sentinel(&err, Some("false"), None),
            ReportError("exit 127".into())
        );
        assert_eq!(
            decide_sentinel(&err, Some("false"), Some("exit 127")),
            Nothing
        );
        assert_eq!(
            decide_sentinel(&err, Some("false"), Some("other")),
            ReportError("exit 127".into())
        );
    }

    #[test]
    fn output_tail_is_bounded() {
        assert_eq!(output_tail(b"a\nb\n", 100, 10), "a\nb");
        let many: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let tail = output_tail(many.as_bytes(), 4096, 3);
        assert_eq!(tail, "…\nline 27\nline 28\nline 29");
        let big = vec![b'x'; 10_000];
        assert!(output_tail(&big, 4096, 20).len() <= 4096 + 4);
    }

    #[test]
    fn view_reads_the_node_object() {
        let mut n = k8s_openapi::api::core::v1::Node::default();
        n.metadata.name = Some("n1".into());
        n.metadata.annotations = Some(BTreeMap::from([
            (
                RECORD_ANNOTATION.to_string(),
                serde_json::to_string(&record(Step::Rebooting)).unwrap(),
            ),
            (REBOOT_ACK_ANNOTATION.to_string(), "{broken".to_string()),
            (AGENT_ERROR_ANNOTATION.to_string(), String::new()),
        ]));
        n.metadata.labels = Some(BTreeMap::from([(
            REBOOT_REQUIRED_LABEL.to_string(),
            "true".to_string(),
        )]));
        let v = OwnNode::from_node(&n);
        assert_eq!(v.record, Ok(Some(record(Step::Rebooting))));
        assert_eq!(v.reboot_ack, None);
        assert_eq!(v.agent_error, None);
        assert!(!v.unschedulable);
        assert_eq!(v.reboot_required_label.as_deref(), Some("true"));
    }
}
