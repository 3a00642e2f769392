//! The imperative shell: reads the caches into decide()'s input, applies the
//! actions, writes status and Events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::drain_workers::{DrainJob, Drains};
use super::notifications::Notifications;
use super::{ControllerConfig, Overlay, ParsedPolicy, Undecodable, policy_ref};
use crate::api::{PatchPolicy, PatchPolicySpec, PatchPolicyStatus, Phase, Step};
use crate::controller::drain::{DrainMode, DrainSettings};
use crate::core::node_record::{DONE_ANNOTATION, NodeRecord, RECORD_ANNOTATION, STEP_LABEL};
use crate::core::rollout::{self, Action, Contender, NodeView};
use crate::metrics::ControllerMetrics;

/// Finalizer that lets sofort clean its node records when a policy is deleted.
pub const FINALIZER: &str = "sofort.dev/cleanup";

const FIELD_MANAGER: &str = "sofort-controller";

/// Whether the pre-flight is due: not yet run for this revision (it was just
/// announced), or a maintenance window opened since it ran.
fn preflight_due(
    prev: Option<&PatchPolicyStatus>,
    spec: &PatchPolicySpec,
    now: jiff::Timestamp,
) -> bool {
    let Some(pf) = prev
        .and_then(|s| s.preflight.as_ref())
        .filter(|p| p.revision == spec.revision)
    else {
        return true;
    };
    prev.and_then(|s| s.next_window.as_ref())
        .is_some_and(|w| w.start.0 > pf.checked_at.0 && w.start.0 <= now)
}

/// The policy's gates, parsed once with its spec (`None`: none, or invalid).
fn spec_gates(policy: &ParsedPolicy) -> Option<&crate::core::gates::config::GatesConfig> {
    policy.config.gates.as_ref()
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

pub(crate) struct Shell {
    client: Client,
    evict_client: Client,
    cfg: ControllerConfig,
    metrics: ControllerMetrics,
    kick: mpsc::UnboundedSender<()>,
    recorder: Recorder,
    drains: Drains,
    overlay: Overlay,
    /// Events already published for (object, reason, detail), to avoid repeats.
    published: HashSet<String>,
    /// Generation for which an invalid-spec Event was published, per policy.
    invalid_seen: HashMap<String, Option<i64>>,
    /// Customer notifications and the advisory embargo.
    notifications: Notifications,
    /// When each policy's status was last written.
    status_written: HashMap<String, tokio::time::Instant>,
    /// Each node's view with the resourceVersion it was parsed from.
    view_cache: HashMap<String, (Option<String>, NodeView)>,
    /// What the health gates look at, fetched at most once per interval.
    gates: super::gates::GateObserver,
}

/// A node's step and when it began.
type StepSince = (Step, jiff::Timestamp);

fn step_name(step: Step) -> &'static str {
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

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Scheduled => "Scheduled",
        Phase::Waiting => "Waiting",
        Phase::Progressing => "Progressing",
        Phase::Paused => "Paused",
        Phase::Completed => "Completed",
        Phase::Halted => "Halted",
    }
}

fn record_patch(record: &NodeRecord) -> Value {
    let json_record = serde_json::to_string(record).unwrap_or_default();
    json!({
        "metadata": {
            "labels": {STEP_LABEL: step_name(record.step)},
            "annotations": {RECORD_ANNOTATION: json_record},
        }
    })
}

/// Node writes of one batch in flight at once. With 50 nodes moving in one
/// pass, one-after-another writes made the last node of a wave wait for the
/// 49 before it.
const WRITE_CONCURRENCY: usize = 16;

/// The node write `action` needs, as a merge patch (None: no write).
fn node_patch(action: &Action, objects: &BTreeMap<String, Arc<Node>>) -> Option<Value> {
    let unschedulable_null = json!({"spec": {"unschedulable": null}});
    match action {
        Action::Claim { node, record } | Action::CordonAgain { node, record } => {
            // The record and the cordon in one patch, conditional on the node
            // not having changed since we looked at it.
            let rv = objects.get(node).and_then(|n| n.resource_version());
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
            uncordon, record, ..
        } => {
            let mut patch = record_patch(record);
            if *uncordon {
                merge(&mut patch, unschedulable_null);
            }
            Some(patch)
        }
        Action::Release { done, uncordon, .. } => {
            let done_json = serde_json::to_string(done).unwrap_or_default();
            let mut patch = json!({
                "metadata": {
                    "labels": {STEP_LABEL: null},
                    "annotations": {RECORD_ANNOTATION: null, DONE_ANNOTATION: done_json},
                }
            });
            if *uncordon {
                merge(&mut patch, unschedulable_null);
            }
            Some(patch)
        }
    }
}

/// Splits a plan into batches that can each be written concurrently: the
/// moves of nodes in progress before the starts, and inside each part a
/// node's k-th action in the k-th batch (a claim before its drain).
fn batches(actions: &[Action], first_start: usize) -> Vec<Vec<usize>> {
    let split = first_start.min(actions.len());
    let mut out: Vec<Vec<usize>> = Vec::new();
    for part in [0..split, split..actions.len()] {
        let base = out.len();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for i in part {
            let k = seen.entry(actions[i].node()).or_insert(0);
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

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Status as JSON with removed top-level fields set to null, for a merge patch.
fn status_patch(old: Option<&PatchPolicyStatus>, new: &PatchPolicyStatus) -> Value {
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
    json!({ "status": new_v })
}

/// A status that differs from the stored one only in progress (counts, nodes
/// in flight, messages) is written at most this often; any other change —
/// phase, revision, generation, times, failures, notifications, condition
/// states — is written at once. At 50 nodes in flight this saves a status
/// write on most passes of the loop.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Status equality that ignores nothing: decide keeps timestamps stable when
/// nothing changed, so an unchanged status is not written again.
fn same_status(a: Option<&PatchPolicyStatus>, b: &PatchPolicyStatus) -> bool {
    a == Some(b)
}

/// Whether `new` differs from `old` only in progress details.
fn progress_only(old: Option<&PatchPolicyStatus>, new: &PatchPolicyStatus) -> bool {
    let Some(old) = old else { return false };
    let strip = |s: &PatchPolicyStatus| {
        let mut s = s.clone();
        s.nodes = None;
        s.active.clear();
        s.message = None;
        for c in &mut s.conditions {
            c.message.clear();
        }
        s
    };
    strip(old) == strip(new)
}

impl Shell {
    pub(crate) fn new(
        client: Client,
        evict_client: Client,
        cfg: ControllerConfig,
        metrics: ControllerMetrics,
        kick: mpsc::UnboundedSender<()>,
        notify_metrics: crate::notify::NotifyMetrics,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "sofort-controller".into(),
                instance: Some(cfg.identity.clone()),
            },
        );
        let notifications = Notifications::start(client.clone(), notify_metrics);
        let gates = super::gates::GateObserver::new(client.clone(), cfg.gate_interval);
        Shell {
            client,
            evict_client,
            cfg,
            metrics,
            kick,
            recorder,
            drains: Drains::default(),
            overlay: Overlay::default(),
            published: HashSet::new(),
            invalid_seen: HashMap::new(),
            notifications,
            status_written: HashMap::new(),
            view_cache: HashMap::new(),
            gates,
        }
    }

    // --- customer notifications (see notifications.rs) ---

    pub(crate) async fn next_report(&mut self) -> Option<crate::notify::DeliveryReport> {
        self.notifications.recv().await
    }

    pub(crate) async fn notification_report(&mut self, report: crate::notify::DeliveryReport) {
        let now = self.cfg.clock.now();
        if let Some((policy, events)) = self.notifications.on_report(report, now).await {
            for (type_, reason, note) in events {
                self.publish(policy_ref(&policy), type_, &reason, note, "Notify");
            }
        }
    }

    pub(crate) fn leadership_gained(&mut self) {
        self.notifications.leadership_gained();
    }

    // --- end customer notifications ---

    pub(crate) fn stop_drains(&mut self) {
        self.drains.stop_all();
    }

    pub(crate) fn has_pending_overlay(&self) -> bool {
        !self.overlay.is_empty()
    }

    fn publish(
        &self,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let recorder = self.recorder.clone();
        // The advisory embargo holds for every Event before completion; the
        // API server rejects notes over 1 KB.
        let note = crate::notify::render::event_note(&self.notifications.scrub(&note));
        // The Recorder folds Events with the same type, reason, action and
        // object into one series and keeps the first note: a discriminator
        // from the note keeps different texts apart.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&note, &mut hasher);
        let action = format!("{action}-{:08x}", std::hash::Hasher::finish(&hasher) as u32);
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action,
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::debug!(error = %e, "cannot publish Event");
            }
        });
    }

    fn node_event(&self, node: &str, type_: EventType, reason: &str, note: String) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            uid: Some(node.to_string()),
            ..ObjectReference::default()
        };
        self.publish(reference, type_, reason, note, reason);
    }

    /// One round: decide and act for every policy. Returns when to look again.
    pub(crate) async fn tick(
        &mut self,
        policies: &[Arc<ParsedPolicy>],
        nodes: &[Arc<Node>],
    ) -> Option<Duration> {
        let now = self.cfg.clock.now();
        let known: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.overlay.retain_known(&known);
        let mut objects: BTreeMap<String, Arc<Node>> = nodes
            .iter()
            .map(|n| (n.name_any(), self.overlay.freshest(n)))
            .collect();
        self.view_cache.retain(|k, _| known.contains(k));

        // Stop drains of nodes that are no longer draining.
        let draining: HashSet<String> = self
            .views(&objects)
            .into_iter()
            .filter(|v| v.record.as_ref().is_some_and(|r| r.step == Step::Draining))
            .map(|v| v.name)
            .collect();
        self.drains.retain(|n| draining.contains(n));

        let mut ordered: Vec<&Arc<ParsedPolicy>> = policies.iter().collect();
        ordered.sort_by_key(|p| (!p.spec.urgent, p.name_any()));
        let contenders: Vec<Contender> =
            ordered.iter().map(|p| Contender::from_policy(p)).collect();

        let mut requeue: Option<Duration> = None;
        for policy in ordered {
            let name = policy.name_any();
            let others: Vec<Contender> = contenders
                .iter()
                .filter(|c| c.name != name)
                .cloned()
                .collect();
            let result = if policy.meta().deletion_timestamp.is_some() {
                self.finalize(policy, &mut objects, now).await
            } else {
                if !policy.finalizers().iter().any(|f| f == FINALIZER) {
                    self.add_finalizer(policy).await;
                }
                self.reconcile(policy, &mut objects, &others, now).await
            };
            match result {
                Ok(r) => {
                    if let Some(r) = r {
                        requeue = Some(requeue.map_or(r, |q: Duration| q.min(r)));
                    }
                }
                Err(e) => {
                    self.metrics.reconcile_error(&name);
                    let error = self
                        .notifications
                        .scrub(&crate::api::redact_decode_message(&e.to_string()));
                    tracing::warn!(policy = %name, %error, "reconcile failed; retrying soon");
                    let r = Duration::from_secs(2);
                    requeue = Some(requeue.map_or(r, |q| q.min(r)));
                }
            }
        }
        requeue
    }

    /// decide()'s view of every node. A node's annotations are parsed again
    /// only when its resourceVersion changed: at 1,000 nodes that parse was
    /// most of a decision pass, and passes come every few milliseconds
    /// during a busy wave.
    fn views(&mut self, objects: &BTreeMap<String, Arc<Node>>) -> Vec<NodeView> {
        objects
            .iter()
            .map(|(name, n)| {
                let rv = n.resource_version();
                let mut v = match self.view_cache.get(name) {
                    Some((cached_rv, view)) if rv.is_some() && *cached_rv == rv => view.clone(),
                    _ => {
                        let view = NodeView::from_node(n);
                        self.view_cache.insert(name.clone(), (rv, view.clone()));
                        view
                    }
                };
                v.drain = self.drains.state(&v.name);
                v
            })
            .collect()
    }

    /// PatchPolicies as raw objects: for writes whose answer need not decode.
    fn raw_policies(&self) -> Api<kube::api::DynamicObject> {
        Api::all_with(
            self.client.clone(),
            &kube::api::ApiResource::erase::<PatchPolicy>(&()),
        )
    }

    /// A policy the types cannot hold: status `Halted`, `Stalled` with reason
    /// `InvalidSpec` naming the field, one Warning Event per generation. A
    /// deleted one lets its nodes go like any deleted policy. Nothing of the
    /// spec is written or logged: the decode error names the field only.
    pub(crate) async fn report_undecodable(
        &mut self,
        bad: &Undecodable,
        nodes: &[Arc<Node>],
    ) -> Option<Duration> {
        let now = self.cfg.clock.now();
        let policy = &bad.policy;
        let name = policy.name_any();
        if policy.meta().deletion_timestamp.is_some() {
            if !policy.finalizers().iter().any(|f| f == FINALIZER) {
                return None;
            }
            let mut objects: BTreeMap<String, Arc<Node>> = nodes
                .iter()
                .map(|n| (n.name_any(), self.overlay.freshest(n)))
                .collect();
            return match self.finalize(policy, &mut objects, now).await {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.reconcile_error(&name);
                    let error = crate::api::redact_decode_message(&e.to_string());
                    tracing::warn!(policy = %name, %error, "cannot finalize; retrying soon");
                    Some(Duration::from_secs(2))
                }
            };
        }
        let generation = policy.meta().generation;
        let message = format!(
            "halted: invalid spec: {}; the controller cannot read this field (run sofort validate on the policy for every problem)",
            bad.error
        );
        self.metrics.set_phase(&name, phase_name(Phase::Halted));
        if self.invalid_seen.get(&name) != Some(&generation) {
            self.invalid_seen.insert(name.clone(), generation);
            self.publish(
                policy_ref(policy),
                EventType::Warning,
                "InvalidSpec",
                message.clone(),
                "Decode",
            );
        }
        let stored = bad.status.as_ref();
        let field = |k: &str| stored.and_then(|s| s.get(k)).cloned();
        if field("phase") == Some(json!("Halted"))
            && field("message") == Some(json!(message))
            && field("observedGeneration") == generation.map(|g| json!(g))
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
        let patch = json!({"status": {
            "observedGeneration": generation,
            "revision": policy.spec.revision,
            "phase": "Halted",
            "message": message,
            "active": null,
            "conditions": [
                condition("Ready", "False"),
                condition("Reconciling", "False"),
                condition("Stalled", "True"),
            ],
        }});
        if let Err(e) = self
            .raw_policies()
            .patch_status(&name, &params(), &Patch::Merge(patch))
            .await
        {
            let error = crate::api::redact_decode_message(&e.to_string());
            tracing::warn!(policy = %name, %error, "cannot write the status of an invalid policy; retrying soon");
            return Some(Duration::from_secs(2));
        }
        None
    }

    async fn add_finalizer(&self, policy: &PatchPolicy) {
        let api = self.raw_policies();
        let mut finalizers = policy.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": policy.resource_version()}});
        if let Err(e) = api
            .patch(&policy.name_any(), &params(), &Patch::Merge(patch))
            .await
        {
            tracing::debug!(policy = %policy.name_any(), error = %e, "cannot add finalizer yet");
        }
    }

    async fn reconcile(
        &mut self,
        policy: &ParsedPolicy,
        objects: &mut BTreeMap<String, Arc<Node>>,
        others: &[Contender],
        now: jiff::Timestamp,
    ) -> Result<Option<Duration>, kube::Error> {
        let name = policy.name_any();
        let stored = policy.status.as_ref();
        let same =
            stored.and_then(|s| s.revision.as_deref()) == Some(policy.spec.revision.as_str());
        self.notifications
            .set_embargo(policy, stored.filter(|_| same));
        let views = self.views(objects);
        // The spec was parsed once for this resourceVersion: an invalid one
        // halts (Stalled, reason InvalidSpec) with every problem in the message.
        let gated = self.gate_observations(policy, &policy.config, now).await;
        let plan = rollout::decide_with_observed(
            policy,
            &policy.config,
            &views,
            others,
            gated.as_ref(),
            now,
        );
        let valid = !plan
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "InvalidSpec");
        if valid {
            self.invalid_seen.remove(&name);
        } else {
            let generation = policy.meta().generation;
            if self.invalid_seen.get(&name) != Some(&generation) {
                self.invalid_seen.insert(name.clone(), generation);
                self.publish(
                    policy_ref(policy),
                    EventType::Warning,
                    "InvalidSpec",
                    plan.status.message.clone().unwrap_or_default(),
                    "Validate",
                );
            }
        }

        let prev_phase = policy.status.as_ref().and_then(|s| s.phase);
        let prev_rev = policy.status.as_ref().and_then(|s| s.revision.clone());
        for batch in batches(&plan.actions, plan.first_start) {
            if !self
                .apply_batch(policy, &plan.actions, &batch, objects)
                .await
            {
                // Later batches may rely on this one (a drain on its cordon,
                // a start on a freed slot): stop, and decide again from fresh
                // state soon; the records tell where we are.
                let _ = self.kick.send(());
                break;
            }
        }

        // Status and rollout-level Events.
        let mut status = plan.status;
        if gated.is_some() && preflight_due(policy.status.as_ref(), &policy.spec, now) {
            self.preflight(policy, &views, &mut status, now).await;
        }
        // Customer notifications due now go into this status write.
        let prepared = self
            .notifications
            .prepare(policy, &mut status, &views, valid, now)
            .await;
        self.observe(&name, &status, &policy.spec, &policy.config);
        let phase = status.phase;
        let same_rev = prev_rev.as_deref() == Some(policy.spec.revision.as_str());
        if phase != prev_phase || !same_rev {
            let note = status.message.clone().unwrap_or_default();
            match phase {
                Some(Phase::Halted) if valid => self.publish(
                    policy_ref(policy),
                    EventType::Warning,
                    "RolloutHalted",
                    note,
                    "Halt",
                ),
                Some(Phase::Completed) => self.publish(
                    policy_ref(policy),
                    EventType::Normal,
                    "RolloutCompleted",
                    note,
                    "Complete",
                ),
                Some(Phase::Progressing) if policy.spec.urgent && (!same_rev || prev_phase != Some(Phase::Progressing)) => {
                    self.publish(
                        policy_ref(policy),
                        EventType::Normal,
                        "UrgentRollout",
                        format!(
                            "urgent revision {} started at once, ignoring maintenance windows; {note}",
                            policy.spec.revision
                        ),
                        "Start",
                    )
                }
                _ => {}
            }
        }
        if gated.is_some() {
            self.gate_upkeep(policy, &status, now).await;
        }
        let mut requeue = plan.requeue_after;
        if gated.is_some() {
            // Gates change without any watch event: look again each interval.
            let every = self.cfg.gate_interval;
            requeue = Some(requeue.map_or(every, |r| r.min(every)));
        }
        let since_write = self.status_written.get(&name).map(|t| t.elapsed());
        let defer = since_write
            .filter(|e| *e < PROGRESS_INTERVAL)
            .filter(|_| {
                prepared.precondition.is_none() && progress_only(policy.status.as_ref(), &status)
            })
            .map(|e| PROGRESS_INTERVAL - e);
        if let Some(wait) = defer.filter(|_| !same_status(policy.status.as_ref(), &status)) {
            // Written on the pass after `wait` (or an earlier one).
            requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
        } else if !same_status(policy.status.as_ref(), &status) {
            self.status_written
                .insert(name.clone(), tokio::time::Instant::now());
            let api: Api<PatchPolicy> = Api::all(self.client.clone());
            let mut patch = status_patch(policy.status.as_ref(), &status);
            if let Some(rv) = &prepared.precondition {
                // New notification records: only if nobody wrote since we read.
                patch["metadata"] = json!({ "resourceVersion": rv });
            }
            match api
                .patch_status(&name, &params(), &Patch::Merge(patch))
                .await
            {
                Ok(written) => self.notifications.written(
                    policy,
                    written.metadata.resource_version.as_deref(),
                    &status,
                ),
                Err(kube::Error::Api(s)) if s.code == 409 && prepared.precondition.is_some() => {
                    tracing::debug!(policy = %name, "policy changed since it was read; deciding again");
                    let _ = self.kick.send(());
                    return Ok(requeue);
                }
                Err(e) => return Err(e),
            }
        }
        // Sent only now that the records are stored.
        self.notifications.set_embargo(policy, Some(&status));
        for (type_, reason, note) in self.notifications.send(prepared) {
            self.publish(policy_ref(policy), type_, &reason, note, "Notify");
        }
        Ok(requeue)
    }

    /// The health gates' observations for `policy` (`None`: it has no usable gates).
    async fn gate_observations(
        &mut self,
        policy: &PatchPolicy,
        cfg: &rollout::Config,
        now: jiff::Timestamp,
    ) -> Option<crate::core::gates::evaluate::Observations> {
        let spec = policy.spec.gates.as_ref()?;
        let gates = cfg.gates.as_ref()?;
        let name = policy.name_any();
        Some(
            self.gates
                .observe(&name, spec, gates, now, &self.metrics)
                .await,
        )
    }

    /// Runs the drainability pre-flight over the selected nodes not yet done
    /// and reports it in status and, when a node would block, in a Warning
    /// Event for the admins (never in customer notifications).
    async fn preflight(
        &mut self,
        policy: &ParsedPolicy,
        views: &[NodeView],
        status: &mut PatchPolicyStatus,
        now: jiff::Timestamp,
    ) {
        let rev = &policy.spec.revision;
        let nodes: Vec<String> = views
            .iter()
            .filter(|v| crate::core::selector::selects_node(&policy.spec.node_selector, &v.labels))
            .filter(|v| v.done.get(&policy.name_any()) != Some(rev))
            .map(|v| v.name.clone())
            .collect();
        let result = super::gates::preflight::run(
            &self.client,
            &self.evict_client,
            &policy.spec,
            &nodes,
            now,
        )
        .await;
        if !result.blocked.is_empty() {
            let note = format!(
                "preflight: {}; {}",
                result.summary,
                result.blocked.join("; ")
            );
            self.publish(
                policy_ref(policy),
                EventType::Warning,
                "PreflightBlocked",
                note,
                "Preflight",
            );
        }
        status.preflight = Some(result);
    }

    /// After a decision of a gated policy: Events and metrics for gates that
    /// opened or closed, and the maintenance silences of the nodes in progress.
    async fn gate_upkeep(
        &mut self,
        policy: &ParsedPolicy,
        status: &PatchPolicyStatus,
        now: jiff::Timestamp,
    ) {
        let name = policy.name_any();
        let before = policy
            .status
            .as_ref()
            .map(|s| s.gates.as_slice())
            .unwrap_or(&[]);
        for g in &status.gates {
            self.metrics.set_gate_open(&name, &g.name, g.open);
            let was = before.iter().find(|b| b.name == g.name).map(|b| b.open);
            if was == Some(g.open) || (was.is_none() && g.open) {
                continue;
            }
            let (type_, reason, note) = if g.open {
                (
                    EventType::Normal,
                    "GateOpened",
                    format!("gate {} open again", g.name),
                )
            } else {
                let why = g.reason.as_deref().unwrap_or("closed");
                (
                    EventType::Warning,
                    "GateClosed",
                    format!("gate {} closed: {why}", g.name),
                )
            };
            self.publish(policy_ref(policy), type_, reason, note, "Gate");
        }
        for b in before
            .iter()
            .filter(|b| !status.gates.iter().any(|g| g.name == b.name))
        {
            self.metrics.forget_gate(&name, &b.name);
        }
        let (Some(spec), Some(cfg)) = (policy.spec.gates.as_ref(), spec_gates(policy)) else {
            return;
        };
        let active: Vec<String> = status.active.iter().map(|a| a.node.clone()).collect();
        if let Err(e) = self
            .gates
            .maintain_silences(&name, spec, cfg, &active, now)
            .await
        {
            tracing::warn!(policy = %name, error = %e, "maintenance silences not updated");
            self.publish(
                policy_ref(policy),
                EventType::Warning,
                "SilenceFailed",
                format!("maintenance silences not updated: {e}"),
                "Gate",
            );
        }
    }

    fn observe(
        &self,
        policy: &str,
        status: &PatchPolicyStatus,
        spec: &PatchPolicySpec,
        cfg: &rollout::Config,
    ) {
        if let Some(p) = status.phase {
            self.metrics.set_phase(policy, phase_name(p));
        }
        let mut by_step: BTreeMap<&str, i64> = BTreeMap::new();
        for s in [
            Step::Draining,
            Step::Patching,
            Step::Rebooting,
            Step::WaitingReady,
            Step::Settling,
        ] {
            by_step.insert(step_name(s), 0);
        }
        for a in &status.active {
            *by_step.entry(step_name(a.step)).or_default() += 1;
        }
        if let Some(n) = &status.nodes {
            by_step.insert("Done", i64::from(n.updated));
            by_step.insert("Pending", i64::from(n.pending));
            by_step.insert("Failed", i64::from(n.failed));
        }
        for (step, count) in by_step {
            self.metrics.set_nodes(policy, step, count);
        }
        // When the node longest in each step entered it, and the step's
        // timeout (the stuck-node alert compares the two).
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        for (step, timeout) in [
            (Step::Draining, Some(cfg.drain_timeout)),
            (
                Step::Patching,
                spec.patch.as_ref().map(|_| cfg.patch_timeout),
            ),
            (Step::Rebooting, Some(cfg.reboot_timeout)),
            (Step::WaitingReady, Some(cfg.reboot_timeout)),
            (Step::Settling, None),
        ] {
            let oldest = status
                .active
                .iter()
                .filter(|a| a.step == step)
                .map(|a| a.since.0.as_second())
                .min();
            self.metrics
                .set_step_started(policy, step_name(step), oldest);
            if let Some(t) = timeout {
                self.metrics
                    .set_step_timeout(policy, step_name(step), secs(t));
            }
        }
        let open = status
            .next_window
            .as_ref()
            .is_some_and(|w| w.start.0 <= self.cfg.clock.now());
        self.metrics.set_window_open(policy, open);
    }

    /// Applies the actions `batch` (indexes into `actions`, each of another
    /// node): their node writes concurrently, then the rest of each action in
    /// order. False when a write failed.
    async fn apply_batch(
        &mut self,
        policy: &ParsedPolicy,
        actions: &[Action],
        batch: &[usize],
        objects: &mut BTreeMap<String, Arc<Node>>,
    ) -> bool {
        let name = policy.name_any();
        // (action, the node's step and its start before the write, node patch)
        let mut prepared: Vec<(&Action, Option<StepSince>, Option<Value>)> = Vec::new();
        for &i in batch {
            let Some(action) = actions.get(i) else {
                continue;
            };
            if let Action::MarkFailed { node, .. } = action {
                // No more evictions once the node is given up.
                self.drains.stop(node);
            }
            let was = objects
                .get(action.node())
                .and_then(|n| NodeView::from_node(n).record)
                .map(|r| (r.step, r.since));
            prepared.push((action, was, node_patch(action, objects)));
        }
        let api: Api<Node> = Api::all(self.client.clone());
        // Owned, boxed futures: the batch's writes, at most
        // WRITE_CONCURRENCY in flight, results in batch order.
        let writes: Vec<futures::future::BoxFuture<'static, Option<Result<Node, kube::Error>>>> =
            prepared
                .iter()
                .map(|(action, _, patch)| {
                    let api = api.clone();
                    let node = action.node().to_string();
                    let patch = patch.clone();
                    async move {
                        match patch {
                            Some(p) => Some(api.patch(&node, &params(), &Patch::Merge(p)).await),
                            None => None,
                        }
                    }
                    .boxed()
                })
                .collect();
        let results: Vec<Option<Result<Node, kube::Error>>> = futures::stream::iter(writes)
            .buffered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let mut ok = true;
        for ((action, was, _), result) in prepared.into_iter().zip(results) {
            match result {
                Some(Err(e)) => {
                    match &e {
                        kube::Error::Api(s) if s.code == 409 => {
                            tracing::debug!(policy = %name, node = action.node(), "node changed meanwhile; deciding again");
                        }
                        _ => {
                            self.metrics.reconcile_error(&name);
                            let error = self.notifications.scrub(&e.to_string());
                            tracing::warn!(policy = %name, node = action.node(), %error, "action failed; retrying");
                        }
                    }
                    ok = false;
                    continue;
                }
                Some(Ok(updated)) => {
                    let updated = Arc::new(updated);
                    objects.insert(action.node().to_string(), updated.clone());
                    self.overlay.put(updated);
                }
                None => {}
            }
            let now_step = objects
                .get(action.node())
                .and_then(|n| NodeView::from_node(n).record)
                .map(|r| r.step);
            if let Some((step, since)) = was
                && now_step != Some(step)
            {
                // The node left `step`: how long it took.
                let took = self.cfg.clock.now().duration_since(since).as_secs_f64();
                self.metrics.observe_step(step_name(step), took.max(0.0));
            }
            self.after_write(policy, action, was.map(|w| w.0), objects);
        }
        ok
    }

    /// What an action does besides its node write, once that is stored:
    /// Events, metrics, starting and stopping drains. `was`: the node's step
    /// before the write.
    fn after_write(
        &mut self,
        policy: &ParsedPolicy,
        action: &Action,
        was: Option<Step>,
        objects: &BTreeMap<String, Arc<Node>>,
    ) {
        let pname = policy.name_any();
        match action {
            Action::Claim { node, record } | Action::CordonAgain { node, record } => {
                self.metrics.observe_step("Pending", 0.0);
                // One Event per node-level outcome (cordoned, reboot asked,
                // rebooted, done); the policy's status lists the nodes in flight.
                let note = format!(
                    "cordoned by PatchPolicy {pname} for revision {}{}; draining",
                    record.revision,
                    if record.was_unschedulable {
                        " (it was already unschedulable and stays so)"
                    } else {
                        ""
                    }
                );
                self.node_event(node, EventType::Normal, "Cordoned", note);
            }
            Action::Drain {
                node,
                record,
                force,
            } => {
                if record.is_some() {
                    self.node_event(
                        node,
                        EventType::Normal,
                        "Draining",
                        format!("draining for PatchPolicy {pname}"),
                    );
                }
                let since = record
                    .as_ref()
                    .map(|r| r.since)
                    .or_else(|| {
                        objects
                            .get(node)
                            .and_then(|n| NodeView::from_node(n).record)
                            .map(|r| r.since)
                    })
                    .unwrap_or_else(|| self.cfg.clock.now());
                let drain_timeout = policy.config.drain_timeout;
                let now = self.cfg.clock.now();
                let left = if *force {
                    // Deleted pods get their grace period plus a minute to go.
                    let grace = policy.spec.drain.grace_period_seconds.unwrap_or(30).max(0) as u64;
                    Duration::from_secs(grace + 60)
                } else {
                    let end = since
                        .checked_add(
                            jiff::SignedDuration::try_from(drain_timeout).unwrap_or_default(),
                        )
                        .unwrap_or(now);
                    Duration::try_from(end.duration_since(now)).unwrap_or(Duration::ZERO)
                };
                let settings = DrainSettings::from_spec(
                    &policy.spec.drain,
                    self.cfg.max_evictions_in_flight,
                    self.cfg.eviction_retry,
                );
                let revision = record
                    .as_ref()
                    .map(|r| r.revision.clone())
                    .unwrap_or_else(|| policy.spec.revision.clone());
                if *force && self.drains.blocker(node).is_some() {
                    self.node_event(node, EventType::Warning, "DrainForced", format!(
                        "drain deadline passed; deleting the remaining pods (onTimeout: Force): {}",
                        self.drains.blocker(node).unwrap_or_default()
                    ));
                }
                self.drains.ensure(DrainJob {
                    client: self.client.clone(),
                    evict_client: self.evict_client.clone(),
                    node: node.clone(),
                    revision,
                    settings,
                    mode: if *force {
                        DrainMode::Force
                    } else {
                        DrainMode::Evict
                    },
                    deadline: tokio::time::Instant::now() + left,
                    kick: self.kick.clone(),
                    metrics: self.metrics.clone(),
                });
                if let Some(b) = self.drains.blocker(node) {
                    let key = format!("{node}/DrainBlocked/{b}");
                    if self.published.insert(key) {
                        self.node_event(node, EventType::Warning, "DrainBlocked", b.clone());
                        self.publish(
                            policy_ref(policy),
                            EventType::Warning,
                            "DrainBlocked",
                            format!("node {node}: {b}"),
                            "Drain",
                        );
                    }
                }
            }
            Action::RequestPatch { node, record } => {
                self.node_event(
                    node,
                    EventType::Normal,
                    "PatchRequested",
                    format!(
                        "drained; asked the agent to run the patch command for PatchPolicy {pname} revision {}",
                        record.revision
                    ),
                );
            }
            Action::RequestReboot {
                node,
                boot_id,
                record,
            } => {
                self.node_event(node, EventType::Normal, "RebootRequested", format!(
                    "{}asked the agent to reboot (boot ID {boot_id}) for PatchPolicy {pname} revision {}",
                    if was == Some(Step::Draining) { "drained; " } else { "" },
                    record.revision
                ));
            }
            Action::SetStep { node, record } => {
                if record.step == Step::Settling && was != Some(Step::Settling) {
                    self.node_event(
                        node,
                        EventType::Normal,
                        "Rebooted",
                        "back Ready with a new boot ID; settling".into(),
                    );
                }
            }
            Action::MarkFailed { node, record, .. } => {
                let reason = record.reason.clone().unwrap_or_else(|| "failed".into());
                self.node_event(node, EventType::Warning, "NodeFailed", reason.clone());
                self.publish(
                    policy_ref(policy),
                    EventType::Warning,
                    "NodeFailed",
                    format!("node {node}: {reason}"),
                    "Fail",
                );
            }
            Action::Release {
                node,
                done,
                uncordon,
            } => {
                let revision = done.get(&pname).cloned().unwrap_or_default();
                self.node_event(
                    node,
                    EventType::Normal,
                    if *uncordon { "Uncordoned" } else { "Released" },
                    if *uncordon {
                        format!("uncordoned: revision {revision} of PatchPolicy {pname} is done")
                    } else {
                        format!(
                            "revision {revision} of PatchPolicy {pname} is done; left unschedulable as it was before"
                        )
                    },
                );
                self.drains.stop(node);
                self.published
                    .retain(|k| !k.starts_with(&format!("{node}/")));
            }
        }
    }

    async fn patch_node(
        &mut self,
        node: &str,
        patch: Value,
        objects: &mut BTreeMap<String, Arc<Node>>,
    ) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let updated = api.patch(node, &params(), &Patch::Merge(patch)).await?;
        let updated = Arc::new(updated);
        objects.insert(node.to_string(), updated.clone());
        self.overlay.put(updated);
        Ok(())
    }

    /// A deleted policy: no new work; nodes being cordoned, drained or patched
    /// are given back (uncordoned if sofort cordoned them); nodes in reboot or
    /// later finish; then the finalizer goes.
    async fn finalize(
        &mut self,
        policy: &ParsedPolicy,
        objects: &mut BTreeMap<String, Arc<Node>>,
        now: jiff::Timestamp,
    ) -> Result<Option<Duration>, kube::Error> {
        let name = policy.name_any();
        let mine: Vec<(String, NodeRecord)> = objects
            .values()
            .filter_map(|n| {
                NodeView::from_node(n)
                    .record
                    .filter(|r| r.policy == name)
                    .map(|r| (n.name_any(), r))
            })
            .collect();
        let mut waiting = false;
        for (node, record) in mine {
            match record.step {
                Step::Draining | Step::Patching => {
                    self.drains.stop(&node);
                    let mut patch = json!({"metadata": {"labels": {STEP_LABEL: null}, "annotations": {RECORD_ANNOTATION: null}}});
                    if !record.was_unschedulable {
                        merge(&mut patch, json!({"spec": {"unschedulable": null}}));
                    }
                    self.patch_node(&node, patch, objects).await?;
                    self.node_event(
                        &node,
                        EventType::Normal,
                        "Released",
                        format!("PatchPolicy {name} was deleted; node given back"),
                    );
                }
                Step::Done | Step::Failed | Step::Pending => {
                    let patch = json!({"metadata": {"labels": {STEP_LABEL: null}, "annotations": {RECORD_ANNOTATION: null}}});
                    self.patch_node(&node, patch, objects).await?;
                }
                _ => waiting = true,
            }
        }
        if waiting {
            // Let the nodes in reboot finish under a paused copy of the policy.
            let mut paused = policy.policy.clone();
            paused.spec.paused = true;
            let views = self.views(objects);
            let plan = rollout::decide_with(&paused, &policy.config, &views, &[], now);
            for batch in batches(&plan.actions, plan.first_start) {
                if !self
                    .apply_batch(policy, &plan.actions, &batch, objects)
                    .await
                {
                    break;
                }
            }
            return Ok(Some(
                plan.requeue_after
                    .unwrap_or(Duration::from_secs(2))
                    .min(Duration::from_secs(5)),
            ));
        }
        // Forget this policy in the done maps? No: they record history and are harmless.
        // Through the raw API: the answer may be an object the types cannot hold.
        let api = self.raw_policies();
        let finalizers: Vec<String> = policy
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": policy.resource_version()}});
        match api.patch(&name, &params(), &Patch::Merge(patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
        self.notifications.forget(&name);
        tracing::info!(policy = %name, "policy deleted; its nodes are released");
        Ok(None)
    }
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
        let p = status_patch(Some(&old), &new);
        assert_eq!(p["status"]["message"], "y");
        assert!(p["status"]["completedAt"].is_null());
        assert!(p["status"].as_object().unwrap().contains_key("completedAt"));
    }

    #[test]
    fn only_progress_changes_may_wait_for_the_next_status_write() {
        use crate::api::{ActiveNode, NodeCounts, Phase};
        let old = PatchPolicyStatus {
            phase: Some(Phase::Progressing),
            revision: Some("r1".into()),
            message: Some("1/4 updated".into()),
            nodes: Some(NodeCounts {
                total: 4,
                updated: 1,
                ..NodeCounts::default()
            }),
            ..PatchPolicyStatus::default()
        };
        let mut progress = old.clone();
        progress.message = Some("2/4 updated".into());
        progress.nodes = Some(NodeCounts {
            total: 4,
            updated: 2,
            ..NodeCounts::default()
        });
        progress.active = vec![ActiveNode {
            node: "w-1".into(),
            step: Step::Draining,
            since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-27T00:00:00Z".parse().unwrap(),
            ),
        }];
        assert!(progress_only(Some(&old), &progress));
        let mut completed = progress.clone();
        completed.phase = Some(Phase::Completed);
        assert!(!progress_only(Some(&old), &completed));
        let mut failed = progress.clone();
        failed.failed = vec![crate::api::FailedNode {
            node: "w-2".into(),
            reason: "drain timeout".into(),
        }];
        assert!(!progress_only(Some(&old), &failed));
        let mut bumped = progress;
        bumped.revision = Some("r2".into());
        assert!(!progress_only(Some(&old), &bumped));
        assert!(!progress_only(None, &old));
    }

    /// A record of policy `p`, revision `r`, at step Draining.
    fn draining_record() -> NodeRecord {
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
        }
    }

    #[test]
    fn batches_keep_moves_before_starts_and_a_claim_before_its_drain() {
        let rec = draining_record();
        let release = |n: &str| Action::Release {
            node: n.into(),
            done: Default::default(),
            uncordon: true,
        };
        let cordon = |n: &str| Action::Claim {
            node: n.into(),
            record: rec.clone(),
        };
        let drain = |n: &str| Action::Drain {
            node: n.into(),
            record: None,
            force: false,
        };
        let actions = vec![
            release("a"),
            release("b"),
            cordon("c"),
            drain("c"),
            cordon("d"),
            drain("d"),
        ];
        assert_eq!(
            batches(&actions, 2),
            vec![vec![0, 1], vec![2, 4], vec![3, 5]]
        );
        assert_eq!(batches(&actions[..2], 2), vec![vec![0, 1]]);
        assert_eq!(batches(&actions[2..], 0), vec![vec![0, 2], vec![1, 3]]);
        assert!(batches(&[], 0).is_empty());
        // A release writes the uncordon with the record removal; a claim is
        // conditional on the node's resourceVersion; a drain alone writes nothing.
        let p = node_patch(&release("a"), &BTreeMap::new()).unwrap();
        assert_eq!(p["spec"], json!({"unschedulable": null}));
        assert!(p["metadata"]["annotations"][RECORD_ANNOTATION].is_null());
        let p = node_patch(&cordon("c"), &BTreeMap::new()).unwrap();
        assert_eq!(p["spec"]["unschedulable"], true);
        assert!(node_patch(&drain("c"), &BTreeMap::new()).is_none());
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
