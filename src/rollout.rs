//! The rollout decision: `decide(policy, nodes, others, now) -> Plan`.
//!
//! Pure and deterministic: no client, no I/O, no clock. The controller reads the
//! cluster into [`NodeView`]s, calls [`decide`], applies the [`Action`]s in order
//! and writes [`Plan::status`]. Everything decide needs lives on the Node
//! (labels, `spec.unschedulable`, Ready, boot ID, the `sofort.dev/record` and
//! `sofort.dev/done` annotations, the agent's annotations) or in the policy
//! status, so a restarted controller resumes exactly. The one input that is not
//! on the Node is [`DrainState`]: the controller's own drain worker for the node.
//! After a restart it is `Idle`, decide asks for the drain again, and the drain
//! resumes (evicting from a cordoned node is idempotent).
//!
//! # Per-node state machine
//!
//! ```text
//! Pending ─claim+cordon─► Draining ─► [Patching] ─► Rebooting ─► WaitingReady ─► Settling ─release+uncordon─► Done
//!                            │             │             │              │
//!                            └─────────────┴─────────────┴──────────────┴──► Failed (reason)
//! ```
//!
//! * Every transition writes the record *before* its side effect (see
//!   [`Action`]), except [`Action::MarkFailed`], which uncordons first.
//! * The claim is one conditional write: the record (step `Draining`), the
//!   step label and `spec.unschedulable`; the drain starts in the same plan,
//!   right after that write. (Records of older versions may still show `Cordoning`: cordon until
//!   `spec.unschedulable` is seen, then drain.)
//! * `Draining`: the drain must finish within `drain.timeout` counted from the
//!   step start; then `onTimeout: Fail` uncordons (if sofort cordoned) and fails
//!   the node, `Force` deletes the rest. A node found uncordoned while draining
//!   is cordoned again; a reboot is never requested for a schedulable node.
//! * `Patching` (only with `spec.patch`): the agent's `sofort.dev/patch-result`
//!   for this policy and revision, written after the step began, decides;
//!   without one within `patch.timeout` + 1 min the node fails.
//! * `Rebooting`: the record carries `bootIdBefore`; the agent reboots once for
//!   it. The node moves to `WaitingReady` when it goes NotReady, acknowledges or
//!   reports a new boot ID. Each of `Rebooting` and `WaitingReady` must finish
//!   within `reboot.timeout` of its own start.
//! * A reboot is confirmed only by a boot ID different from `bootIdBefore`
//!   **and** Ready; then `Settling` for `rollout.settle` (Ready throughout);
//!   then one write releases the node: the record and step label go, the done
//!   map gets `policy → revision`, and the node is uncordoned — unless it was
//!   unschedulable before sofort touched it (it is never uncordoned). (Records
//!   of older versions may show `Uncordoning`: uncordon, then release.)

//! # Rules for starting nodes
//!
//! * Selected nodes whose done map has this revision are done. With
//!   `reboot.when: IfRequired`, a node whose `sofort.dev/reboot-required` label
//!   is `false` is done without being touched; a node without the label waits
//!   for its agent to report.
//! * No start while the spec is invalid, the policy is paused, or more than
//!   `maxFailedNodes` nodes failed (phase Halted). Nodes in progress always
//!   finish, whatever the phase.
//! * Non-urgent: a start needs `now >= scheduledStart`, an open window outside
//!   any blackout, and at least `minWindowRemaining` left in it. Urgent skips
//!   these; the budget always holds.
//! * Groups go strictly one after another: the group worked on is the first (in
//!   order) that has a node in progress for this policy, else the first with a
//!   node still to do. A node that cannot start yet (NotReady, claimed by
//!   another policy, reboot need unknown) holds its group; the message names it.
//! * Budget: see [`crate::budget`]. NotReady nodes are never started.
//! * **Several policies**: a node whose record shows another policy with a step
//!   in progress is claimed by it. A record of another policy that is `Failed`,
//!   `Done` or of an older revision is not a claim. A **non-urgent** policy does
//!   not claim a node that an *active urgent* other policy (see [`Contender`])
//!   selects and has not finished for its revision: urgent policies go first.
//!   Urgent policies among themselves, and non-urgent among themselves, claim
//!   first come first served (the controller writes claims with the Node's
//!   resourceVersion, so only one wins).
//! * **Nodes joining later** (created or newly selected after the rollout
//!   began) are simply pending: they are done in their order position once the
//!   group being worked on is finished; the rollout completes only when they
//!   are done too. A node that stops being selected while in progress finishes.
//! * A new revision while a node is in progress: the node finishes under the
//!   revision it started with (its done map records that one) and is then
//!   pending for the new revision.
//! * To retry a failed node, remove its record (`kubectl annotate node NAME
//!   sofort.dev/record-`) or bump `spec.revision`.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};

use crate::api::{
    ActiveNode, FailedNode, NodeCounts, OnTimeout, PatchPolicy, PatchPolicySpec, PatchPolicyStatus,
    Phase, RebootWhen, Step, WindowStatus,
};
use crate::budget::{Budget, max_unavailable};
use crate::node_record::{
    self, DONE_ANNOTATION, DoneMap, NodeRecord, PATCH_RESULT_ANNOTATION, PatchRequest, PatchResult,
    REBOOT_ACK_ANNOTATION, REBOOT_REQUIRED_LABEL, RECORD_ANNOTATION, RebootAck,
};
use crate::window::{Schedule, human_time};
use crate::{duration, order, selector};

/// Slack given to the agent to report a patch result after the patch timeout.
pub const PATCH_REPORT_SLACK: Duration = Duration::from_secs(60);

/// The controller's drain worker for a node, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DrainState {
    /// No drain runs for the node (also: after a controller restart).
    #[default]
    Idle,
    /// Evicting; `forcing` once remaining pods are deleted without eviction;
    /// `blocker` names what holds it up (pods, PodDisruptionBudgets).
    Running {
        /// Deleting without eviction (onTimeout: Force).
        forcing: bool,
        /// What blocks the drain, for the failure reason.
        blocker: Option<String>,
    },
    /// Every pod that must leave has left.
    Drained,
    /// The drain cannot succeed (a forced drain may not delete pods, or deleted
    /// pods did not terminate): the node fails at once with this reason.
    Failed {
        /// Why, for the failure reason.
        reason: String,
    },
}

/// What decide sees of one Node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Condition Ready is True.
    pub ready: bool,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// `status.nodeInfo.bootID`.
    pub boot_id: Option<String>,
    /// The `sofort.dev/record` annotation (any policy's).
    pub record: Option<NodeRecord>,
    /// Why the record annotation could not be read; such a node is never started.
    pub record_error: Option<String>,
    /// The `sofort.dev/done` annotation.
    pub done: DoneMap,
    /// The `sofort.dev/reboot-required` label: `Some(true)`, `Some(false)`, or unknown.
    pub reboot_required: Option<bool>,
    /// The controller's drain worker for this node.
    pub drain: DrainState,
    /// The agent's `sofort.dev/patch-result`.
    pub patch_result: Option<PatchResult>,
    /// The agent's `sofort.dev/reboot-ack`.
    pub reboot_ack: Option<RebootAck>,
}

impl NodeView {
    /// Builds the view of a Node object; unreadable annotations never fail the
    /// whole node (a broken record makes it unstartable and is reported).
    pub fn from_node(node: &Node) -> NodeView {
        let name = node.metadata.name.clone().unwrap_or_default();
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let ann = node.metadata.annotations.as_ref();
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let boot_id = status
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.boot_id.clone())
            .filter(|b| !b.is_empty());
        let (record, record_error) =
            match node_record::read_json::<NodeRecord>(&name, ann, RECORD_ANNOTATION) {
                Ok(r) => (r, None),
                Err(e) => (None, Some(e.to_string())),
            };
        let done = node_record::read_json::<DoneMap>(&name, ann, DONE_ANNOTATION)
            .ok()
            .flatten()
            .unwrap_or_default();
        let reboot_required = match labels.get(REBOOT_REQUIRED_LABEL).map(String::as_str) {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        NodeView {
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            patch_result: node_record::read_json(&name, ann, PATCH_RESULT_ANNOTATION)
                .ok()
                .flatten(),
            reboot_ack: node_record::read_json(&name, ann, REBOOT_ACK_ANNOTATION)
                .ok()
                .flatten(),
            name,
            labels,
            ready,
            boot_id,
            record,
            record_error,
            done,
            reboot_required,
            drain: DrainState::Idle,
        }
    }
}

/// Another policy, as far as claiming nodes is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Contender {
    /// Policy name.
    pub name: String,
    /// `spec.urgent`.
    pub urgent: bool,
    /// `spec.revision`.
    pub revision: String,
    /// `spec.nodeSelector`.
    pub selector: LabelSelector,
    /// Wants to start nodes: not paused, not Halted, not Completed.
    pub active: bool,
}

impl Contender {
    /// Builds the contender view of another policy.
    pub fn from_policy(p: &PatchPolicy) -> Contender {
        let phase = p.status.as_ref().and_then(|s| s.phase);
        let same_rev =
            p.status.as_ref().and_then(|s| s.revision.as_deref()) == Some(p.spec.revision.as_str());
        Contender {
            name: p.metadata.name.clone().unwrap_or_default(),
            urgent: p.spec.urgent,
            revision: p.spec.revision.clone(),
            selector: p.spec.node_selector.clone(),
            active: !(p.spec.paused
                || (same_rev && matches!(phase, Some(Phase::Halted) | Some(Phase::Completed)))),
        }
    }

    fn wants(&self, node: &NodeView) -> bool {
        self.active
            && selector::selects_node(&self.selector, &node.labels)
            && node.done.get(&self.name) != Some(&self.revision)
            && !node.record.as_ref().is_some_and(|r| {
                r.policy == self.name && r.revision == self.revision && r.step == Step::Failed
            })
    }
}

/// A side effect for the controller. Apply in order; each writes its record
/// first (one patch of the `sofort.dev/record` annotation and the
/// `sofort.dev/step` label), then acts, so a restart repeats at most an
/// idempotent step.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write `record` (claims the node), then set `spec.unschedulable: true`.
    Cordon {
        /// Node name.
        node: String,
        /// Record to write.
        record: NodeRecord,
    },
    /// Write `record` if given, then make sure a drain runs for the node.
    /// `force`: delete the remaining pods without eviction (onTimeout: Force).
    Drain {
        /// Node name.
        node: String,
        /// Record to write first (step Draining), when the step changes.
        record: Option<NodeRecord>,
        /// Delete instead of evict.
        force: bool,
    },
    /// Write `record` (step Patching with its patch request); the agent runs it.
    RequestPatch {
        /// Node name.
        node: String,
        /// Record to write.
        record: NodeRecord,
    },
    /// Write `record` (step Rebooting, `bootIdBefore = boot_id`); the agent
    /// reboots once for this boot ID.
    RequestReboot {
        /// Node name.
        node: String,
        /// Boot ID the reboot is requested for.
        boot_id: String,
        /// Record to write.
        record: NodeRecord,
    },
    /// Write `record`: a plain step change.
    SetStep {
        /// Node name.
        node: String,
        /// Record to write.
        record: NodeRecord,
    },
    /// Write `record` (step Uncordoning), then set `spec.unschedulable: false`.
    Uncordon {
        /// Node name.
        node: String,
        /// Record to write.
        record: NodeRecord,
    },
    /// Stop any drain of the node; if `uncordon`, set `spec.unschedulable:
    /// false` first; then write `record` (step Failed, with the reason).
    MarkFailed {
        /// Node name.
        node: String,
        /// Uncordon before writing (sofort cordoned it).
        uncordon: bool,
        /// Record to write.
        record: NodeRecord,
    },
    /// In one patch: write `done` to `sofort.dev/done`, remove the record and
    /// the step label, and make the node schedulable again when `uncordon`
    /// (sofort cordoned it). One write leaves no half-released state behind.
    Release {
        /// Node name.
        node: String,
        /// Full done map to write.
        done: DoneMap,
        /// Also uncordon.
        uncordon: bool,
    },
}

impl Action {
    /// The node the action is about.
    pub fn node(&self) -> &str {
        match self {
            Action::Cordon { node, .. }
            | Action::Drain { node, .. }
            | Action::RequestPatch { node, .. }
            | Action::RequestReboot { node, .. }
            | Action::SetStep { node, .. }
            | Action::Uncordon { node, .. }
            | Action::MarkFailed { node, .. }
            | Action::Release { node, .. } => node,
        }
    }
}

/// What decide returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Side effects. `actions[..first_start]` move nodes in progress (at most
    /// one per node); `actions[first_start..]` start nodes (a claim and then
    /// its drain). Starts may rely on the moves (a release frees the slot a
    /// start takes) and a drain on its claim, so apply in that order and stop
    /// at the first failure; actions of different nodes in the same part do
    /// not depend on each other and may be written concurrently.
    pub actions: Vec<Action>,
    /// Index of the first start in `actions`.
    pub first_start: usize,
    /// The status to write.
    pub status: PatchPolicyStatus,
    /// Decide again after this long even if nothing changes (deadlines, windows).
    pub requeue_after: Option<Duration>,
}

/// The spec, parsed. Fields that fail to parse fall back to their defaults so
/// nodes in progress can finish; `errors` then holds every problem and no node starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// drain.timeout
    pub drain_timeout: Duration,
    /// reboot.timeout
    pub reboot_timeout: Duration,
    /// rollout.settle
    pub settle: Duration,
    /// patch command and timeout
    pub patch: Option<PatchRequest>,
    /// patch.timeout
    pub patch_timeout: Duration,
    /// announce.leadTime
    pub lead_time: Duration,
    /// rollout.minWindowRemaining or its default
    pub min_remaining: Duration,
    /// Windows and blackouts (always open when they failed to parse).
    pub schedule: Schedule,
    /// Problems found.
    pub errors: Vec<String>,
}

impl Config {
    /// Parses what decide needs from a spec.
    pub fn from_spec(spec: &PatchPolicySpec) -> Config {
        let mut errors = Vec::new();
        let mut dur = |field: &str, s: &str, default: u64| match duration::parse(s) {
            Ok(d) => d,
            Err(e) => {
                errors.push(format!("{field}: {e}"));
                Duration::from_secs(default)
            }
        };
        let drain_timeout = dur("drain.timeout", &spec.drain.timeout, 15 * 60);
        let reboot_timeout = dur("reboot.timeout", &spec.reboot.timeout, 20 * 60);
        let settle = dur("rollout.settle", &spec.rollout.settle, 120);
        let patch_timeout = spec.patch.as_ref().map_or(Duration::ZERO, |p| {
            dur("patch.timeout", &p.timeout, 30 * 60)
        });
        let lead_time = spec.announce.as_ref().map_or(Duration::ZERO, |a| {
            dur("announce.leadTime", &a.lead_time, 0)
        });
        let default_min = drain_timeout + reboot_timeout + settle + patch_timeout;
        let min_remaining = match &spec.rollout.min_window_remaining {
            Some(s) => dur("rollout.minWindowRemaining", s, default_min.as_secs()),
            None => default_min,
        };
        let schedule = match Schedule::new(&spec.maintenance_windows, &spec.blackouts) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e.to_string());
                Schedule::always_open()
            }
        };
        if let Err(e) = selector::check(&spec.node_selector) {
            errors.push(e.to_string());
        }
        if let Err(e) = max_unavailable(&spec.rollout.max_unavailable, 1) {
            errors.push(e.to_string());
        }
        if spec.revision.trim().is_empty() {
            errors.push(
                "revision is empty: set spec.revision to name the patch level, for example a date"
                    .into(),
            );
        }
        let patch = match &spec.patch {
            Some(p) if p.command.is_empty() => {
                errors.push(
                    "patch.command is empty: give the program and its arguments, or remove patch"
                        .into(),
                );
                None
            }
            Some(_) => Some(PatchRequest {
                timeout_seconds: patch_timeout.as_secs(),
            }),
            None => None,
        };
        // The full validation knows everything parsing found and more (time
        // zones, windows too short for one node); its messages carry field paths.
        let problems = crate::validate::validate_spec(spec);
        if !problems.is_empty() {
            errors = problems.iter().map(ToString::to_string).collect();
        }
        Config {
            drain_timeout,
            reboot_timeout,
            settle,
            patch,
            patch_timeout,
            lead_time,
            min_remaining,
            schedule,
            errors,
        }
    }
}

/// Why a node did not start, for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hold {
    NotReady(String),
    OtherPolicy(String, String),
    UrgentFirst(String, String),
    RebootUnknown(String),
    BrokenRecord(String),
    Budget { unavailable: usize, max: usize },
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Shortest `requeue_after`.
const REQUEUE_FLOOR: Duration = Duration::from_millis(100);

fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// Where a node stands for this policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    InFlight,
    Failed,
    Done,
    NotNeeded,
    Todo,
}

struct Ctx<'a> {
    name: &'a str,
    spec: &'a PatchPolicySpec,
    cfg: &'a Config,
    now: Timestamp,
}

/// Advances one node of ours that is in progress. Returns the new record (if the
/// step changed), the action, and the instant to look again.
fn advance(
    ctx: &Ctx<'_>,
    n: &NodeView,
    rec: &NodeRecord,
) -> (Option<Action>, Option<NodeRecord>, Option<Timestamp>) {
    let now = ctx.now;
    let cfg = ctx.cfg;
    let node = n.name.clone();
    let step_to = |step: Step| NodeRecord {
        step,
        since: now,
        ..rec.clone()
    };
    let fail = |reason: String| {
        let record = NodeRecord {
            step: Step::Failed,
            since: now,
            reason: Some(reason),
            ..rec.clone()
        };
        (
            Some(Action::MarkFailed {
                node: node.clone(),
                uncordon: !rec.was_unschedulable && n.unschedulable,
                record: record.clone(),
            }),
            Some(record),
            None,
        )
    };
    let after_drain = || -> (Option<Action>, Option<NodeRecord>, Option<Timestamp>) {
        if let Some(req) = &cfg.patch {
            let record = NodeRecord {
                step: Step::Patching,
                since: now,
                patch: Some(req.clone()),
                ..rec.clone()
            };
            let deadline = add(add(now, cfg.patch_timeout), PATCH_REPORT_SLACK);
            return (
                Some(Action::RequestPatch {
                    node: node.clone(),
                    record: record.clone(),
                }),
                Some(record),
                Some(deadline),
            );
        }
        request_reboot(ctx, n, rec)
    };
    match rec.step {
        Step::Cordoning => {
            if !n.unschedulable {
                (
                    Some(Action::Cordon {
                        node,
                        record: rec.clone(),
                    }),
                    None,
                    None,
                )
            } else {
                let record = step_to(Step::Draining);
                (
                    Some(Action::Drain {
                        node,
                        record: Some(record.clone()),
                        force: false,
                    }),
                    Some(record),
                    Some(add(now, cfg.drain_timeout)),
                )
            }
        }
        Step::Draining => {
            let deadline = add(rec.since, cfg.drain_timeout);
            if !n.unschedulable {
                return (
                    Some(Action::Cordon {
                        node,
                        record: rec.clone(),
                    }),
                    None,
                    Some(deadline),
                );
            }
            let blocker = match &n.drain {
                DrainState::Drained => return after_drain(),
                DrainState::Failed { reason } => return fail(reason.clone()),
                DrainState::Running { blocker, .. } => blocker.clone(),
                DrainState::Idle => None,
            };
            if now >= deadline {
                match ctx.spec.drain.on_timeout {
                    OnTimeout::Fail => {
                        let mut reason = format!(
                            "drain timeout after {}",
                            duration::format(cfg.drain_timeout)
                        );
                        if let Some(b) = blocker {
                            reason.push_str(": ");
                            reason.push_str(&b);
                        }
                        fail(reason)
                    }
                    OnTimeout::Force => {
                        let forcing = matches!(n.drain, DrainState::Running { forcing: true, .. });
                        let action = (!forcing).then_some(Action::Drain {
                            node,
                            record: None,
                            force: true,
                        });
                        (action, None, None)
                    }
                }
            } else {
                let action = (n.drain == DrainState::Idle).then_some(Action::Drain {
                    node,
                    record: None,
                    force: false,
                });
                (action, None, Some(deadline))
            }
        }
        Step::Patching => {
            let deadline = add(add(rec.since, cfg.patch_timeout), PATCH_REPORT_SLACK);
            let result = n.patch_result.as_ref().filter(|r| {
                r.policy == ctx.name && r.revision == rec.revision && r.at >= rec.since
            });
            match result {
                Some(r) if r.success => request_reboot(ctx, n, rec),
                Some(r) => fail(format!("patch command failed: {}", r.message)),
                None if now >= deadline => fail(format!(
                    "patch timeout: no result from the agent within {}",
                    duration::format(cfg.patch_timeout + PATCH_REPORT_SLACK)
                )),
                None => (None, None, Some(deadline)),
            }
        }
        Step::Rebooting | Step::WaitingReady => {
            let deadline = add(rec.since, cfg.reboot_timeout);
            let new_boot = match (&n.boot_id, &rec.boot_id_before) {
                (Some(now_id), Some(before)) => now_id != before,
                _ => false,
            };
            if new_boot && n.ready {
                let record = step_to(Step::Settling);
                let wake = add(now, cfg.settle);
                return (
                    Some(Action::SetStep {
                        node,
                        record: record.clone(),
                    }),
                    Some(record),
                    Some(wake),
                );
            }
            if now >= deadline {
                let what = if new_boot {
                    "came back with a new boot ID but is not Ready"
                } else {
                    "still reports the boot ID from before the reboot"
                };
                return fail(format!(
                    "reboot not confirmed within {}: node {what}",
                    duration::format(cfg.reboot_timeout)
                ));
            }
            let acked = n.reboot_ack.as_ref().is_some_and(|a| {
                a.policy == ctx.name
                    && a.revision == rec.revision
                    && Some(&a.boot_id) == rec.boot_id_before.as_ref()
            });
            if rec.step == Step::Rebooting && (new_boot || !n.ready || acked) {
                let record = step_to(Step::WaitingReady);
                let wake = add(now, cfg.reboot_timeout);
                return (
                    Some(Action::SetStep {
                        node,
                        record: record.clone(),
                    }),
                    Some(record),
                    Some(wake),
                );
            }
            (None, None, Some(deadline))
        }
        Step::Settling => {
            let end = add(rec.since, cfg.settle);
            if !n.ready || now < end {
                return (None, None, (now < end).then_some(end));
            }
            // Uncordon (unless it was cordoned before us) and release at once.
            release(n, rec, ctx.name)
        }
        Step::Uncordoning => {
            if !rec.was_unschedulable && n.unschedulable {
                (
                    Some(Action::Uncordon {
                        node,
                        record: rec.clone(),
                    }),
                    None,
                    None,
                )
            } else {
                release(n, rec, ctx.name)
            }
        }
        Step::Pending | Step::Done | Step::Failed => (None, None, None),
    }
}

fn request_reboot(
    ctx: &Ctx<'_>,
    n: &NodeView,
    rec: &NodeRecord,
) -> (Option<Action>, Option<NodeRecord>, Option<Timestamp>) {
    let now = ctx.now;
    if !n.unschedulable {
        // Never reboot a schedulable node: cordon again first.
        return (
            Some(Action::Cordon {
                node: n.name.clone(),
                record: rec.clone(),
            }),
            None,
            None,
        );
    }
    match &n.boot_id {
        Some(b) => {
            let record = NodeRecord {
                step: Step::Rebooting,
                since: now,
                boot_id_before: Some(b.clone()),
                ..rec.clone()
            };
            (
                Some(Action::RequestReboot {
                    node: n.name.clone(),
                    boot_id: b.clone(),
                    record: record.clone(),
                }),
                Some(record),
                Some(add(now, ctx.cfg.reboot_timeout)),
            )
        }
        None => {
            let record = NodeRecord {
                step: Step::Failed,
                since: now,
                reason: Some(
                    "node reports no boot ID, so a reboot could not be confirmed; not rebooted"
                        .into(),
                ),
                ..rec.clone()
            };
            (
                Some(Action::MarkFailed {
                    node: n.name.clone(),
                    uncordon: !rec.was_unschedulable,
                    record: record.clone(),
                }),
                Some(record),
                None,
            )
        }
    }
}

fn release(
    n: &NodeView,
    rec: &NodeRecord,
    policy: &str,
) -> (Option<Action>, Option<NodeRecord>, Option<Timestamp>) {
    let mut done = n.done.clone();
    done.insert(policy.to_string(), rec.revision.clone());
    let record = NodeRecord {
        step: Step::Done,
        ..rec.clone()
    };
    (
        Some(Action::Release {
            node: n.name.clone(),
            done,
            uncordon: !rec.was_unschedulable && n.unschedulable,
        }),
        Some(record),
        None,
    )
}

/// Claims node `i` for the policy: its record (step Draining, remembering
/// whether it was unschedulable before) and the Cordon action that writes it.
fn claim(
    actions: &mut Vec<Action>,
    new_records: &mut BTreeMap<usize, NodeRecord>,
    i: usize,
    n: &NodeView,
    policy: &str,
    revision: &str,
    now: Timestamp,
) {
    // The claim, the cordon and the step Draining are one write.
    let record = NodeRecord {
        policy: policy.to_string(),
        revision: revision.to_string(),
        step: Step::Draining,
        since: now,
        started: now,
        was_unschedulable: n.unschedulable,
        boot_id_before: None,
        patch: None,
        reason: None,
    };
    actions.push(Action::Cordon {
        node: n.name.clone(),
        record: record.clone(),
    });
    // The drain starts right after the claim is written (the controller
    // applies a plan in order and stops at the first failed write).
    actions.push(Action::Drain {
        node: n.name.clone(),
        record: None,
        force: false,
    });
    new_records.insert(i, record);
}

fn unavailable(n: &NodeView) -> bool {
    !n.ready || n.unschedulable || n.record.as_ref().is_some_and(|r| r.step.in_progress())
}

/// Decides what to do now. See the module docs for every rule.
pub fn decide(
    policy: &PatchPolicy,
    nodes: &[NodeView],
    others: &[Contender],
    now: Timestamp,
) -> Plan {
    let cfg = Config::from_spec(&policy.spec);
    decide_with(policy, &cfg, nodes, others, now)
}

/// [`decide`] with a spec parsed once.
pub fn decide_with(
    policy: &PatchPolicy,
    cfg: &Config,
    nodes: &[NodeView],
    others: &[Contender],
    now: Timestamp,
) -> Plan {
    let index = NodeIndex::build(&policy.spec, nodes, false);
    decide_indexed(policy, cfg, &index, nodes, others, now)
}

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
    /// Rank of the node in the whole order (group, sortBy values, name).
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
        // Few distinct groups: collect them, then sort only those (values
        // that compare equal, like `1` and `01`, still rank apart, stably).
        let mut rank_of: std::collections::HashMap<Option<&str>, u32> =
            groups.iter().map(|g| (*g, 0)).collect();
        let mut distinct: Vec<Option<&str>> = rank_of.keys().copied().collect();
        distinct.sort_unstable_by(|a, b| order::cmp_group(*a, *b).then_with(|| a.cmp(b)));
        for (r, g) in distinct.into_iter().enumerate() {
            rank_of.insert(g, r as u32);
        }
        let group: Vec<u32> = groups
            .iter()
            .map(|g| rank_of.get(g).copied().unwrap_or(u32::MAX))
            .collect();
        let rank = full_order.then(|| {
            let sort_by = &spec.rollout.order.sort_by;
            let keys: Vec<Vec<Option<&str>>> = nodes
                .iter()
                .map(|n| {
                    sort_by
                        .iter()
                        .map(|k| n.labels.get(k).map(String::as_str))
                        .collect()
                })
                .collect();
            let mut idx: Vec<usize> = (0..nodes.len()).collect();
            idx.sort_unstable_by(|&a, &b| {
                group[a]
                    .cmp(&group[b])
                    .then_with(|| cmp_keys(&keys[a], &keys[b]))
                    .then_with(|| order::natural_cmp(&nodes[a].name, &nodes[b].name))
                    .then_with(|| nodes[a].name.cmp(&nodes[b].name))
                    .then_with(|| a.cmp(&b))
            });
            let mut rank = vec![0u32; nodes.len()];
            for (r, i) in idx.into_iter().enumerate() {
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

    fn fits(&self, nodes: &[NodeView]) -> bool {
        self.selected.len() == nodes.len()
            && self.group.len() == nodes.len()
            && self.rank.as_ref().is_none_or(|r| r.len() == nodes.len())
    }
}

/// Compares sortBy values, first difference wins.
fn cmp_keys(a: &[Option<&str>], b: &[Option<&str>]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| order::cmp_opt(*x, *y))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// [`decide_with`] over a prepared [`NodeIndex`] of the same `nodes` (one that
/// does not fit them is rebuilt).
pub fn decide_indexed(
    policy: &PatchPolicy,
    cfg: &Config,
    index: &NodeIndex,
    nodes: &[NodeView],
    others: &[Contender],
    now: Timestamp,
) -> Plan {
    if !index.fits(nodes) {
        let rebuilt = NodeIndex::build(&policy.spec, nodes, false);
        return decide_indexed(policy, cfg, &rebuilt, nodes, others, now);
    }
    let spec = &policy.spec;
    let name = policy.metadata.name.as_deref().unwrap_or("");
    let generation = policy.metadata.generation;
    let prev = policy.status.clone().unwrap_or_default();
    let same_rev = prev.revision.as_deref() == Some(spec.revision.as_str());
    let ctx = Ctx {
        name,
        spec,
        cfg,
        now,
    };

    // Announcement and schedule.
    let announced_at = prev
        .announced_at
        .as_ref()
        .filter(|_| same_rev)
        .map_or(now, |t| t.0);
    let usable_from = |t: Timestamp| cfg.schedule.next_usable(t, cfg.min_remaining);
    let scheduled = if spec.urgent {
        Some(announced_at)
    } else {
        usable_from(add(announced_at, cfg.lead_time)).map(|(t, _)| t)
    };

    // Classify.
    let urgent_others: Vec<&Contender> = if spec.urgent {
        Vec::new()
    } else {
        others
            .iter()
            .filter(|c| c.urgent && c.active && c.name != name)
            .collect()
    };
    let mut classes: Vec<Option<Class>> = Vec::with_capacity(nodes.len());
    let (mut total, mut updated, mut failed_n) = (0usize, 0usize, 0usize);
    let mut unavailable_n = 0usize;
    let mut todo_n = 0usize;
    let selected_flags = &index.selected;
    for (n, &selected) in nodes.iter().zip(selected_flags) {
        let ours = n.record.as_ref().filter(|r| r.policy == name);
        let class = match ours {
            Some(r) if r.step.in_progress() => Some(Class::InFlight),
            _ if !selected => None,
            Some(r) if r.step == Step::Failed && r.revision == spec.revision => Some(Class::Failed),
            _ if n.done.get(name) == Some(&spec.revision) => Some(Class::Done),
            _ if spec.reboot.when == RebootWhen::IfRequired && n.reboot_required == Some(false) => {
                Some(Class::NotNeeded)
            }
            _ => Some(Class::Todo),
        };
        if let Some(c) = class {
            if selected {
                total += 1;
                match c {
                    Class::Done | Class::NotNeeded => updated += 1,
                    Class::Failed => failed_n += 1,
                    Class::InFlight => {}
                    Class::Todo => todo_n += 1,
                }
            }
            if unavailable(n) {
                unavailable_n += 1;
            }
        }
        classes.push(class);
    }
    let budget_max = max_unavailable(&spec.rollout.max_unavailable, total).unwrap_or(1);
    let mut budget = Budget {
        max: budget_max,
        unavailable: unavailable_n,
    };

    // Advance nodes in progress.
    let mut actions = Vec::new();
    let mut wake: Option<Timestamp> = None;
    let mut new_records: BTreeMap<usize, NodeRecord> = BTreeMap::new();
    let mut started = 0usize;
    for (i, n) in nodes.iter().enumerate() {
        if classes[i] != Some(Class::InFlight) {
            continue;
        }
        let Some(rec) = n.record.as_ref() else {
            continue;
        };
        let (action, record, w) = advance(&ctx, n, rec);
        if let Some(a) = action {
            // A Ready node that is uncordoned and released by this plan frees
            // its slot for a start in the same plan (applied after it).
            if matches!(a, Action::Release { uncordon: true, .. }) && n.ready {
                budget.unavailable = budget.unavailable.saturating_sub(1);
            }
            actions.push(a);
        }
        if let Some(r) = record {
            new_records.insert(i, r);
        }
        if let Some(w) = w {
            wake = Some(wake.map_or(w, |x| x.min(w)));
        }
    }

    // Gates for new starts.
    let failed_now = new_records
        .values()
        .filter(|r| r.step == Step::Failed && r.revision == spec.revision)
        .count();
    let halted = (failed_n + failed_now) as u64 > u64::from(spec.rollout.max_failed_nodes);
    let invalid = !cfg.errors.is_empty();
    let mut window_wait: Option<String> = None;
    let mut window_wake: Option<Timestamp> = None;
    let time_ok = if spec.urgent {
        true
    } else {
        match scheduled {
            None => {
                window_wait = Some(format!(
                    "no usable maintenance window (needs {} left in a window, outside blackouts) in the next {} days",
                    duration::format(cfg.min_remaining),
                    crate::window::HORIZON_DAYS
                ));
                false
            }
            Some(s) if now < s => {
                window_wake = Some(s);
                false
            }
            Some(_) => match usable_from(now) {
                Some((t, _)) if t == now => true,
                Some((t, iv)) => {
                    window_wake = Some(t);
                    window_wait =
                        Some(if let Some((end, reason)) = cfg.schedule.blackout_at(now) {
                            format!(
                                "blackout{} until {}; next start {}",
                                reason.map(|r| format!(" ({r})")).unwrap_or_default(),
                                end,
                                human_time(t, iv.zone.as_deref())
                            )
                        } else if let Some(rem) = cfg.schedule.remaining(now) {
                            format!(
                                "window closes in {}, a node needs {}; waiting for window {}",
                                duration::format(Duration::from_secs(rem.as_secs())),
                                duration::format(cfg.min_remaining),
                                human_time(t, iv.zone.as_deref())
                            )
                        } else {
                            format!("waiting for window {}", human_time(t, iv.zone.as_deref()))
                        });
                    false
                }
                None => {
                    window_wait = Some("no usable maintenance window ahead".into());
                    false
                }
            },
        }
    };

    // Which group is being worked on: the lowest group rank in flight, else
    // the lowest with work left.
    let group_key = |i: usize| index.group[i];
    let lowest = |want: Class| -> Option<u32> {
        classes
            .iter()
            .enumerate()
            .filter(|(i, c)| **c == Some(want) && selected_flags[*i])
            .map(|(i, _)| group_key(i))
            .min()
    };
    let current = lowest(Class::InFlight).or_else(|| lowest(Class::Todo));

    // Start nodes.
    let first_start = actions.len();
    let mut holds: Vec<Hold> = Vec::new();
    let can_start = !invalid && !spec.paused && !halted && time_ok;
    if let Some(group) = current {
        // Sort keys are looked up once per node, not once per comparison.
        let sort_by = &spec.rollout.order.sort_by;
        let hold_of = |n: &NodeView| -> Option<Hold> {
            if n.record_error.is_some() {
                Some(Hold::BrokenRecord(n.name.clone()))
            } else if let Some(r) = n
                .record
                .as_ref()
                .filter(|r| r.policy != name && r.step.in_progress())
            {
                Some(Hold::OtherPolicy(n.name.clone(), r.policy.clone()))
            } else if let Some(c) = urgent_others.iter().find(|c| c.wants(n)) {
                Some(Hold::UrgentFirst(n.name.clone(), c.name.clone()))
            } else if spec.reboot.when == RebootWhen::IfRequired && n.reboot_required.is_none() {
                Some(Hold::RebootUnknown(n.name.clone()))
            } else if !n.ready {
                Some(Hold::NotReady(n.name.clone()))
            } else {
                None
            }
        };
        let mut budget_full = false;
        // With a full-order index a node's place is one number; without, its
        // sortBy values are looked up once per node, not once per comparison.
        let ranks = index.rank.as_deref();
        let mut todo: Vec<(u32, Vec<Option<&str>>, &str, usize)> = classes
            .iter()
            .enumerate()
            .filter(|(i, c)| **c == Some(Class::Todo) && group_key(*i) == group)
            .map(|(i, _)| match ranks {
                Some(r) => (r[i], Vec::new(), "", i),
                None => {
                    let keys = sort_by
                        .iter()
                        .map(|k| nodes[i].labels.get(k).map(String::as_str))
                        .collect();
                    (0, keys, nodes[i].name.as_str(), i)
                }
            })
            .collect();
        type Key<'k> = (u32, Vec<Option<&'k str>>, &'k str, usize);
        let cmp = |(ra, ka, na, _): &Key<'_>, (rb, kb, nb, _): &Key<'_>| {
            ra.cmp(rb)
                .then_with(|| cmp_keys(ka, kb))
                .then_with(|| order::natural_cmp(na, nb))
        };
        // Only the head of the order is needed: the budget room plus some slack
        // for held nodes. The rest is sorted only if the loop gets that far.
        let room = budget.max.saturating_sub(budget.unavailable);
        let mut sorted = if can_start {
            (room + 16).min(todo.len())
        } else {
            0
        };
        if sorted > 0 && sorted < todo.len() {
            todo.select_nth_unstable_by(sorted - 1, cmp);
        }
        todo[..sorted].sort_unstable_by(cmp);
        let mut pos = 0;
        while can_start && pos < todo.len() {
            if pos == sorted {
                todo[sorted..].sort_unstable_by(cmp);
                sorted = todo.len();
            }
            let i = todo[pos].3;
            pos += 1;
            let n = &nodes[i];
            if let Some(h) = hold_of(n) {
                holds.push(h);
                continue;
            }
            let already = unavailable(n);
            if !budget.can_start(already) {
                holds.push(Hold::Budget {
                    unavailable: budget.unavailable,
                    max: budget.max,
                });
                budget_full = true;
                break;
            }
            budget.take(already);
            claim(
                &mut actions,
                &mut new_records,
                i,
                n,
                name,
                &spec.revision,
                now,
            );
            started += 1;
        }
        // When the budget blocks, nodes that are unavailable anyway (cordoned by
        // someone, but Ready) cost nothing and may still go, from any group:
        // waiting for them would deadlock the rollout.
        if budget_full {
            let mut extras: Vec<usize> = classes
                .iter()
                .enumerate()
                .filter(|(i, c)| {
                    **c == Some(Class::Todo)
                        && !new_records.contains_key(i)
                        && nodes[*i].ready
                        && nodes[*i].unschedulable
                        && hold_of(&nodes[*i]).is_none()
                })
                .map(|(i, _)| i)
                .collect();
            extras.sort_by(|a, b| order::natural_cmp(&nodes[*a].name, &nodes[*b].name));
            for i in extras {
                if !budget.can_start(true) {
                    break;
                }
                claim(
                    &mut actions,
                    &mut new_records,
                    i,
                    &nodes[i],
                    name,
                    &spec.revision,
                    now,
                );
                started += 1;
            }
        }
    }

    // Status.
    let mut active: Vec<(usize, ActiveNode)> = Vec::new();
    let mut failed_list: Vec<FailedNode> = Vec::new();
    let (mut done_now, mut in_flight_now) = (0usize, 0usize);
    for (i, n) in nodes.iter().enumerate() {
        let Some(class) = classes[i] else { continue };
        let rec = new_records
            .get(&i)
            .or(n.record.as_ref().filter(|r| r.policy == name));
        match rec {
            Some(r)
                if r.step.in_progress() && (class == Class::InFlight || class == Class::Todo) =>
            {
                in_flight_now += 1;
                active.push((
                    i,
                    ActiveNode {
                        node: n.name.clone(),
                        step: r.step,
                        since: Time(r.since),
                    },
                ));
            }
            Some(r) if r.step == Step::Failed && r.revision == spec.revision => {
                failed_list.push(FailedNode {
                    node: n.name.clone(),
                    reason: r.reason.clone().unwrap_or_else(|| "failed".into()),
                })
            }
            Some(r)
                if r.step == Step::Done
                    && r.revision == spec.revision
                    && class == Class::InFlight
                    && selected_flags[i] =>
            {
                done_now += 1;
            }
            _ => {}
        }
    }
    // Active nodes are listed in rollout order.
    if let Some(r) = index.rank.as_deref() {
        active.sort_unstable_by_key(|(i, _)| r[*i]);
    } else {
        let sort_by = &spec.rollout.order.sort_by;
        type Keyed<'k> = (u32, Vec<Option<&'k str>>, ActiveNode);
        let mut keyed: Vec<Keyed<'_>> = active
            .into_iter()
            .map(|(i, a)| {
                let keys = sort_by
                    .iter()
                    .map(|k| nodes[i].labels.get(k).map(String::as_str))
                    .collect();
                (index.group[i], keys, a)
            })
            .collect();
        keyed.sort_unstable_by(|(ga, ka, a), (gb, kb, b)| {
            ga.cmp(gb)
                .then_with(|| cmp_keys(ka, kb))
                .then_with(|| order::natural_cmp(&a.node, &b.node))
        });
        active = keyed
            .into_iter()
            .enumerate()
            .map(|(k, (_, _, a))| (k, a))
            .collect();
    }
    failed_list.sort_by(|a, b| order::natural_cmp(&a.node, &b.node));
    let updated_now = updated + done_now;
    let failed_count = failed_list.len();
    let pending = todo_n.saturating_sub(started);
    let counts = NodeCounts {
        total: total as u32,
        updated: updated_now as u32,
        in_progress: in_flight_now as u32,
        pending: pending as u32,
        failed: failed_count as u32,
        summary: format!("{updated_now}/{total}"),
    };
    let all_done = pending == 0 && in_flight_now == 0;

    let phase = if invalid {
        Phase::Halted
    } else if all_done && !halted {
        Phase::Completed
    } else if halted {
        Phase::Halted
    } else if spec.paused {
        Phase::Paused
    } else if in_flight_now > 0 {
        Phase::Progressing
    } else if !spec.urgent && scheduled.is_some_and(|s| now < s) {
        Phase::Scheduled
    } else {
        Phase::Waiting
    };

    let progress = format!("{updated_now}/{total} updated");
    let in_flight_text = || match active.len() {
        0 => String::new(),
        1..=3 => active
            .iter()
            .map(|(_, a)| format!("{} {:?}", a.node, a.step))
            .collect::<Vec<_>>()
            .join(", "),
        k => format!("{k} nodes in progress"),
    };
    let hold_text = |h: &Hold| match h {
        Hold::NotReady(n) => format!("node {n} is NotReady and waits until it is Ready"),
        Hold::OtherPolicy(n, p) => format!("node {n} waits for policy {p}"),
        Hold::UrgentFirst(n, p) => format!("node {n} waits for urgent policy {p}"),
        Hold::RebootUnknown(n) => {
            format!("node {n} waits for its agent to report {REBOOT_REQUIRED_LABEL}")
        }
        Hold::BrokenRecord(n) => format!(
            "node {n} has an unreadable {RECORD_ANNOTATION} annotation; remove it with `kubectl annotate node {n} {RECORD_ANNOTATION}-`"
        ),
        Hold::Budget { unavailable, max } => {
            format!("blocked: {unavailable} nodes unavailable, maxUnavailable {max}")
        }
    };
    let why_not: Option<String> = if invalid {
        Some(format!("halted: invalid spec: {}", cfg.errors.join("; ")))
    } else if halted {
        Some(format!(
            "halted: {failed_count} node{} failed (max {}); fix the node and remove its {RECORD_ANNOTATION} annotation, or bump spec.revision",
            if failed_count == 1 { "" } else { "s" },
            spec.rollout.max_failed_nodes
        ))
    } else if spec.paused {
        Some("paused: no new node starts".into())
    } else if !time_ok {
        match (scheduled, &window_wait) {
            (Some(s), _) if now < s => Some(format!(
                "announced; starts {}{}",
                human_time(s, first_zone(spec)),
                if cfg.lead_time > Duration::ZERO {
                    format!(" (lead time {})", duration::format(cfg.lead_time))
                } else {
                    String::new()
                }
            )),
            (_, Some(w)) => Some(w.clone()),
            _ => None,
        }
    } else if started == 0 {
        // Budget holds last: a node that cannot start for its own reason is more telling.
        holds
            .iter()
            .find(|h| !matches!(h, Hold::Budget { .. }))
            .or(holds.first())
            .map(hold_text)
    } else {
        None
    };
    let message = match phase {
        Phase::Completed => {
            if failed_count > 0 {
                format!("{progress}; completed with {failed_count} failed (tolerated)")
            } else {
                format!("{progress}; completed")
            }
        }
        _ => {
            let mut parts = vec![progress];
            let f = in_flight_text();
            if !f.is_empty() {
                parts.push(f);
            }
            if let Some(w) = why_not {
                parts.push(w);
            } else if phase == Phase::Waiting && pending > 0 {
                parts.push("nothing can start now".into());
            }
            parts.join("; ")
        }
    };

    // Windows in status.
    let next_window = if spec.urgent || cfg.schedule.is_always_open() {
        None
    } else {
        let from = scheduled.map_or(now, |s| s.max(now));
        usable_from(from).map(|(t, iv)| WindowStatus {
            start: Time(t.max(iv.start)),
            end: Time(iv.end),
        })
    };

    let started_at = prev
        .started_at
        .clone()
        .filter(|_| same_rev)
        .or_else(|| (started > 0 || in_flight_now > 0).then_some(Time(now)));
    let completed_at = if phase == Phase::Completed {
        prev.completed_at
            .clone()
            .filter(|_| same_rev && prev.phase == Some(Phase::Completed))
            .or(Some(Time(now)))
    } else {
        None
    };

    let conditions = conditions(&prev, phase, &message, invalid, generation, now);
    let status = PatchPolicyStatus {
        observed_generation: generation,
        revision: Some(spec.revision.clone()),
        phase: Some(phase),
        announced_at: Some(Time(announced_at)),
        scheduled_start: scheduled.map(Time),
        next_window,
        started_at,
        completed_at,
        nodes: Some(counts),
        active: active.into_iter().map(|(_, a)| a).collect(),
        failed: failed_list,
        notifications: if same_rev {
            prev.notifications.clone()
        } else {
            Vec::new()
        },
        conditions,
        message: Some(message),
    };

    // When to look again: node deadlines, and the window if work waits for it.
    if !invalid
        && !halted
        && !spec.paused
        && pending > 0
        && let Some(w) = window_wake
    {
        wake = Some(wake.map_or(w, |x| x.min(w)));
    }
    // Wake at the deadline itself (a node's settle time ends, a step times
    // out, a window opens), not up to a second later: at the end of a wave
    // nothing else may wake the controller. The floor only keeps a deadline
    // that is due now from spinning the loop.
    let requeue_after = wake.map(|w| until(now, w).max(REQUEUE_FLOOR));
    Plan {
        actions,
        first_start,
        status,
        requeue_after,
    }
}

fn first_zone(spec: &PatchPolicySpec) -> Option<&str> {
    spec.maintenance_windows
        .first()
        .map(|w| w.time_zone.as_str())
        .filter(|z| !z.is_empty())
}

fn condition(
    prev: &PatchPolicyStatus,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let s = if status { "True" } else { "False" };
    let last = prev
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == s)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: s.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: last,
    }
}

fn conditions(
    prev: &PatchPolicyStatus,
    phase: Phase,
    message: &str,
    invalid: bool,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let reason = match phase {
        Phase::Halted if invalid => "InvalidSpec",
        Phase::Halted => "TooManyFailures",
        Phase::Scheduled => "Scheduled",
        Phase::Waiting => "Waiting",
        Phase::Progressing => "Progressing",
        Phase::Paused => "Paused",
        Phase::Completed => "Completed",
    };
    let ready = phase == Phase::Completed;
    let reconciling = matches!(
        phase,
        Phase::Scheduled | Phase::Waiting | Phase::Progressing
    );
    let stalled = phase == Phase::Halted;
    vec![
        condition(prev, "Ready", ready, reason, message, generation, now),
        condition(
            prev,
            "Reconciling",
            reconciling,
            reason,
            message,
            generation,
            now,
        ),
        condition(prev, "Stalled", stalled, reason, message, generation, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Announce, MaintenanceWindow, Weekday};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn node(name: &str, zone: &str) -> NodeView {
        NodeView {
            name: name.into(),
            labels: [("zone".to_string(), zone.to_string())].into(),
            ready: true,
            boot_id: Some(format!("{name}-b0")),
            ..NodeView::default()
        }
    }

    fn policy(name: &str) -> PatchPolicy {
        let mut spec = PatchPolicySpec::new("r1");
        spec.rollout.order.group_by = Some("zone".into());
        PatchPolicy::new(name, spec)
    }

    fn rec(policy: &str, step: Step, since: Timestamp) -> NodeRecord {
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
        }
    }

    fn claims(plan: &Plan) -> Vec<&str> {
        plan.actions
            .iter()
            .filter(
                |a| matches!(a, Action::Cordon { record, .. } if record.step == Step::Draining && record.since == record.started),
            )
            .map(Action::node)
            .collect()
    }

    const NOW: &str = "2026-11-27T09:00:00Z";

    #[test]
    fn a_node_cordoned_by_someone_goes_when_the_budget_blocks_even_from_a_later_group() {
        let p = policy("p");
        let mut cordoned = node("w-b1", "b");
        cordoned.unschedulable = true;
        let nodes = vec![node("w-a1", "a"), cordoned, node("w-c1", "c")];
        let plan = decide(&p, &nodes, &[], ts(NOW));
        // maxUnavailable 1 is used up by w-b1: zone a cannot start, w-b1 costs nothing.
        assert_eq!(claims(&plan), ["w-b1"]);
        let Action::Cordon { record, .. } = &plan.actions[0] else {
            panic!()
        };
        assert!(
            record.was_unschedulable,
            "it will never be uncordoned by sofort"
        );
    }

    #[test]
    fn claims_in_order_within_budget_and_group() {
        let p = policy("p");
        let nodes = vec![node("w-b1", "b"), node("w-a2", "a"), node("w-a1", "a")];
        let plan = decide(&p, &nodes, &[], ts(NOW));
        assert_eq!(claims(&plan), ["w-a1"]);
        let Action::Cordon { record, .. } = &plan.actions[0] else {
            panic!()
        };
        assert_eq!(record.policy, "p");
        assert!(!record.was_unschedulable);
        assert_eq!(plan.status.phase, Some(Phase::Progressing));
        assert_eq!(plan.status.nodes.as_ref().unwrap().summary, "0/3");
        assert_eq!(plan.status.active[0].node, "w-a1");
    }

    #[test]
    fn waits_for_the_window_and_says_so() {
        let mut p = policy("p");
        p.spec.maintenance_windows = vec![MaintenanceWindow {
            days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            start: "22:00".into(),
            end: "05:00".into(),
            time_zone: "Europe/Zurich".into(),
        }];
        p.spec.announce = Some(Announce {
            lead_time: "48h".into(),
        });
        let nodes = vec![node("w-a1", "a")];
        let plan = decide(&p, &nodes, &[], ts(NOW));
        assert!(plan.actions.is_empty());
        assert_eq!(plan.status.phase, Some(Phase::Scheduled));
        // Fri 10:00 + 48 h = Sun 10:00; first weekday window Mon 22:00 CET.
        assert_eq!(
            plan.status.scheduled_start.as_ref().unwrap().0,
            ts("2026-11-30T21:00:00Z")
        );
        assert!(
            plan.status
                .message
                .as_ref()
                .unwrap()
                .contains("starts Mon 2026-11-30 22:00 Europe/Zurich"),
            "{:?}",
            plan.status.message
        );
        assert_eq!(
            plan.requeue_after,
            Some(Duration::from_secs((3 * 24 + 12) * 3600))
        );
        // Announced: the schedule does not move when decided again later.
        let mut p2 = p.clone();
        p2.status = Some(plan.status.clone());
        let later = decide(&p2, &nodes, &[], ts("2026-11-28T09:00:00Z"));
        assert_eq!(later.status.scheduled_start, plan.status.scheduled_start);
        assert_eq!(later.status.announced_at, plan.status.announced_at);
        // After the lead time, outside the window: Waiting, naming the window.
        let tue = decide(&p2, &nodes, &[], ts("2026-12-01T12:00:00Z"));
        assert_eq!(tue.status.phase, Some(Phase::Waiting));
        assert!(
            tue.status
                .message
                .as_ref()
                .unwrap()
                .contains("waiting for window Tue 2026-12-01 22:00 Europe/Zurich"),
            "{:?}",
            tue.status.message
        );
        // Inside the window: starts.
        let open = decide(&p2, &nodes, &[], ts("2026-12-01T21:30:00Z"));
        assert_eq!(claims(&open), ["w-a1"]);
        // Too close to the window end (default needs 37m): waits.
        let late = decide(&p2, &nodes, &[], ts("2026-12-02T03:40:00Z"));
        assert!(claims(&late).is_empty());
        assert!(
            late.status
                .message
                .as_ref()
                .unwrap()
                .contains("a node needs 37m"),
            "{:?}",
            late.status.message
        );
    }

    #[test]
    fn budget_counts_every_unavailable_node() {
        let mut p = policy("p");
        p.spec.rollout.max_unavailable = IntOrString::Int(2);
        let mut nodes: Vec<NodeView> = (1..=6).map(|i| node(&format!("w-a{i}"), "a")).collect();
        nodes[3].ready = false;
        nodes[4].unschedulable = true;
        nodes[5].record = Some(rec("other", Step::Rebooting, ts(NOW)));
        let plan = decide(&p, &nodes, &[], ts(NOW));
        assert!(claims(&plan).is_empty());
        assert!(
            plan.status
                .message
                .as_ref()
                .unwrap()
                .contains("blocked: 3 nodes unavailable, maxUnavailable 2"),
            "{:?}",
            plan.status.message
        );
    }

    #[test]
    fn pre_cordoned_node_is_started_for_free_and_never_uncordoned() {
        let p = policy("p");
        let mut n = node("w-a1", "a");
        n.unschedulable = true;
        let plan = decide(&p, std::slice::from_ref(&n), &[], ts(NOW));
        let Action::Cordon { record, .. } = &plan.actions[0] else {
            panic!()
        };
        assert!(record.was_unschedulable);
        n.record = Some(NodeRecord {
            step: Step::Settling,
            ..record.clone()
        });
        let plan = decide(
            &p,
            std::slice::from_ref(&n),
            &[],
            ts("2026-11-27T10:00:00Z"),
        );
        assert!(
            matches!(&plan.actions[..], [Action::Release { .. }]),
            "{:?}",
            plan.actions
        );
    }

    #[test]
    fn reboot_is_confirmed_only_by_new_boot_id_and_ready() {
        let p = policy("p");
        let t = ts(NOW);
        let mut n = node("w-a1", "a");
        n.unschedulable = true;
        n.drain = DrainState::Drained;
        n.record = Some(rec("p", Step::Draining, t));
        let plan = decide(&p, std::slice::from_ref(&n), &[], t);
        let Action::RequestReboot {
            boot_id, record, ..
        } = &plan.actions[0]
        else {
            panic!("{:?}", plan.actions)
        };
        assert_eq!(boot_id, "w-a1-b0");
        n.record = Some(record.clone());
        n.drain = DrainState::Idle;
        // Ready with the old boot ID: nothing yet.
        assert!(
            decide(&p, std::slice::from_ref(&n), &[], t)
                .actions
                .is_empty()
        );
        // New boot ID but NotReady: waiting.
        n.boot_id = Some("w-a1-b1".into());
        n.ready = false;
        let plan = decide(&p, std::slice::from_ref(&n), &[], t);
        assert!(
            matches!(&plan.actions[..], [Action::SetStep { record, .. }] if record.step == Step::WaitingReady)
        );
        // New boot ID and Ready: settle.
        n.ready = true;
        let plan = decide(&p, std::slice::from_ref(&n), &[], t);
        assert!(
            matches!(&plan.actions[..], [Action::SetStep { record, .. }] if record.step == Step::Settling)
        );
        // The reboot times out without a new boot ID.
        n.boot_id = Some("w-a1-b0".into());
        let plan = decide(
            &p,
            std::slice::from_ref(&n),
            &[],
            ts("2026-11-27T09:21:00Z"),
        );
        assert!(
            matches!(&plan.actions[..], [Action::MarkFailed { uncordon: true, record, .. }] if record.reason.as_deref().unwrap().contains("boot ID"))
        );
    }

    #[test]
    fn a_failed_drain_fails_the_node_at_once_and_uncordons_it() {
        let p = policy("p");
        let t = ts(NOW);
        let mut n = node("w-a1", "a");
        n.unschedulable = true;
        n.drain = DrainState::Failed {
            reason: "forced drain failed: pod deletion is not allowed".into(),
        };
        n.record = Some(rec("p", Step::Draining, t));
        let plan = decide(&p, std::slice::from_ref(&n), &[], t);
        assert!(
            matches!(&plan.actions[..], [Action::MarkFailed { uncordon: true, record, .. }]
                if record.reason.as_deref() == Some("forced drain failed: pod deletion is not allowed")),
            "{:?}",
            plan.actions
        );
    }

    #[test]
    fn drain_timeout_fails_or_forces() {
        let mut p = policy("p");
        let t = ts(NOW);
        let mut n = node("w-a1", "a");
        n.unschedulable = true;
        n.drain = DrainState::Running {
            forcing: false,
            blocker: Some("pod shop/db-0 blocked by PDB shop/db".into()),
        };
        n.record = Some(rec("p", Step::Draining, t));
        let later = ts("2026-11-27T09:15:00Z");
        let plan = decide(&p, std::slice::from_ref(&n), &[], later);
        let Action::MarkFailed {
            uncordon, record, ..
        } = &plan.actions[0]
        else {
            panic!()
        };
        assert!(uncordon);
        assert_eq!(
            record.reason.as_deref(),
            Some("drain timeout after 15m: pod shop/db-0 blocked by PDB shop/db")
        );
        assert_eq!(plan.status.phase, Some(Phase::Halted));
        assert!(
            plan.status
                .message
                .as_ref()
                .unwrap()
                .contains("halted: 1 node failed (max 0)")
        );
        p.spec.drain.on_timeout = OnTimeout::Force;
        let plan = decide(&p, std::slice::from_ref(&n), &[], later);
        assert!(matches!(
            &plan.actions[..],
            [Action::Drain {
                force: true,
                record: None,
                ..
            }]
        ));
    }

    #[test]
    fn halted_after_too_many_failures_but_in_flight_nodes_finish() {
        let mut p = policy("p");
        p.spec.rollout.max_failed_nodes = 1;
        p.spec.rollout.max_unavailable = IntOrString::Int(5);
        let t = ts(NOW);
        let mut nodes: Vec<NodeView> = (1..=5).map(|i| node(&format!("w-a{i}"), "a")).collect();
        for n in nodes.iter_mut().take(2) {
            let mut r = rec("p", Step::Failed, t);
            r.reason = Some("drain timeout".into());
            n.record = Some(r);
        }
        nodes[2].unschedulable = true;
        nodes[2].record = Some(rec("p", Step::Cordoning, t));
        let plan = decide(&p, &nodes, &[], t);
        assert_eq!(plan.status.phase, Some(Phase::Halted));
        assert!(
            plan.status
                .message
                .as_ref()
                .unwrap()
                .contains("halted: 2 nodes failed (max 1)")
        );
        assert!(claims(&plan).is_empty());
        assert!(
            matches!(&plan.actions[..], [Action::Drain { .. }]),
            "in-flight node goes on"
        );
        let stalled = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "TooManyFailures")
        );
    }

    #[test]
    fn paused_stops_new_starts_only() {
        let mut p = policy("p");
        p.spec.paused = true;
        p.spec.rollout.max_unavailable = IntOrString::Int(3);
        let t = ts(NOW);
        let mut nodes = vec![node("w-a1", "a"), node("w-a2", "a")];
        nodes[0].record = Some(rec("p", Step::Cordoning, t));
        let plan = decide(&p, &nodes, &[], t);
        assert_eq!(plan.status.phase, Some(Phase::Paused));
        assert_eq!(plan.actions.len(), 1);
        assert_eq!(plan.actions[0].node(), "w-a1");
    }

    #[test]
    fn urgent_policies_go_first_and_claims_are_exclusive() {
        let mut p = policy("routine");
        p.spec.rollout.max_unavailable = IntOrString::Int(2);
        let mut nodes = vec![node("w-a1", "a"), node("w-a2", "a")];
        nodes[1].record = Some(rec("other", Step::Draining, ts(NOW)));
        let urgent = Contender {
            name: "security".into(),
            urgent: true,
            revision: "cve-1".into(),
            selector: LabelSelector::default(),
            active: true,
        };
        let plan = decide(&p, &nodes, std::slice::from_ref(&urgent), ts(NOW));
        assert!(claims(&plan).is_empty());
        assert!(
            plan.status
                .message
                .as_ref()
                .unwrap()
                .contains("node w-a1 waits for urgent policy security")
        );
        // Once the urgent policy is done with w-a1, routine may take it.
        nodes[0].done.insert("security".into(), "cve-1".into());
        let plan = decide(&p, &nodes, std::slice::from_ref(&urgent), ts(NOW));
        assert_eq!(claims(&plan), ["w-a1"]);
        // w-a2 is claimed by another policy: named when it holds the rollout.
        let only = vec![nodes[1].clone()];
        let plan = decide(&p, &only, &[], ts(NOW));
        assert!(
            plan.status
                .message
                .as_ref()
                .unwrap()
                .contains("node w-a2 waits for policy other")
        );
        // An urgent policy is not held back by other urgent policies.
        let mut u = policy("security");
        u.spec.urgent = true;
        let plan = decide(&u, &nodes[..1], std::slice::from_ref(&urgent), ts(NOW));
        assert_eq!(claims(&plan), ["w-a1"]);
    }

    #[test]
    fn if_required_skips_nodes_without_need_and_done_nodes() {
        let mut p = policy("p");
        p.spec.reboot.when = RebootWhen::IfRequired;
        let mut nodes = vec![node("w-a1", "a"), node("w-a2", "a"), node("w-a3", "a")];
        nodes[0].reboot_required = Some(false);
        nodes[1].done.insert("p".into(), "r1".into());
        nodes[2].reboot_required = None;
        let plan = decide(&p, &nodes, &[], ts(NOW));
        assert!(plan.actions.is_empty());
        assert_eq!(plan.status.nodes.as_ref().unwrap().summary, "2/3");
        assert!(
            plan.status
                .message
                .as_ref()
                .unwrap()
                .contains("w-a3 waits for its agent")
        );
        nodes[2].reboot_required = Some(true);
        assert_eq!(claims(&decide(&p, &nodes, &[], ts(NOW))), ["w-a3"]);
        nodes[2].reboot_required = Some(false);
        let done = decide(&p, &nodes, &[], ts(NOW));
        assert_eq!(done.status.phase, Some(Phase::Completed));
        let ready = done
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert!(done.status.completed_at.is_some());
    }

    #[test]
    fn invalid_spec_halts_without_panicking() {
        let mut p = policy("p");
        p.spec.maintenance_windows = vec![MaintenanceWindow {
            days: vec![],
            start: "99:00".into(),
            end: "05:00".into(),
            time_zone: "Nowhere/Land".into(),
        }];
        p.spec.drain.timeout = "soon".into();
        p.spec.rollout.max_unavailable = IntOrString::String("lots".into());
        let plan = decide(&p, &[node("w-a1", "a")], &[], ts(NOW));
        assert!(plan.actions.is_empty());
        assert_eq!(plan.status.phase, Some(Phase::Halted));
        let msg = plan.status.message.unwrap();
        assert!(
            msg.contains("drain.timeout") && msg.contains("maxUnavailable"),
            "{msg}"
        );
        let stalled = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(stalled.reason, "InvalidSpec");
        assert_eq!(stalled.observed_generation, p.metadata.generation);
    }

    #[test]
    fn a_new_revision_lets_the_started_node_finish_under_its_own() {
        let mut p = policy("p");
        p.spec.revision = "r2".into();
        let mut n = node("w-a1", "a");
        n.record = Some(rec("p", Step::Uncordoning, ts(NOW)));
        let plan = decide(&p, std::slice::from_ref(&n), &[], ts(NOW));
        let Action::Release { done, .. } = &plan.actions[0] else {
            panic!()
        };
        assert_eq!(done.get("p").map(String::as_str), Some("r1"));
    }

    #[test]
    fn a_settled_node_is_uncordoned_and_released_in_one_action() {
        let p = policy("p");
        let long_ago = ts("2026-11-27T08:00:00Z");
        let mut mine = node("w-a1", "a");
        mine.unschedulable = true;
        mine.record = Some(rec("p", Step::Settling, long_ago));
        let mut theirs = node("w-a2", "a");
        theirs.unschedulable = true;
        let mut r = rec("p", Step::Settling, long_ago);
        r.was_unschedulable = true;
        theirs.record = Some(r);
        let plan = decide(&p, &[mine, theirs], &[], ts(NOW));
        let released: Vec<(&str, bool)> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Release { node, uncordon, .. } => Some((node.as_str(), *uncordon)),
                _ => None,
            })
            .collect();
        assert_eq!(
            released,
            [("w-a1", true), ("w-a2", false)],
            "{:?}",
            plan.actions
        );
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::Uncordon { .. })),
            "no separate uncordon write: {:?}",
            plan.actions
        );
    }

    #[test]
    fn broken_record_is_reported_not_started() {
        let p = policy("p");
        let mut n = node("w-a1", "a");
        n.record_error = Some("bad json".into());
        let plan = decide(&p, &[n], &[], ts(NOW));
        assert!(plan.actions.is_empty());
        assert!(
            plan.status
                .message
                .unwrap()
                .contains("kubectl annotate node w-a1 sofort.dev/record-")
        );
    }
}
