//! The per-pass orchestration: reads the caches into decide()'s input, has
//! the pass decided (a live policy by [`rollout::decide`], a deleted one by
//! [`plan::deletion`]) and then applies it ([`super::apply`]): node writes,
//! status, Events, notifications. Every write goes through [`Writes`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::runtime::events::EventType;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use super::drain_workers::Drains;
use super::events::{self, About, Note};
use super::gates::GateObserver;
use super::gates::preflight::Preflights;
use super::kube_writes::KubeWrites;
use super::node_writes::NodeHolds;
use super::notifications::{Notifications, Prepared};
use super::patches::{self, FINALIZER, StoredRaw, phase_name, step_name};
use super::plan::{self, Plan};
use super::status::{StatusThrottle, StatusWrite};
use super::writes::Writes;
use super::{ControllerConfig, Overlay, ParsedPolicy, Undecodable, policy_ref};
use crate::api::{PatchPolicy, PatchPolicySpec, PatchPolicyStatus, Phase, Step};
use crate::core::rollout::{self, Contender, NodeView};
use crate::core::round;
use crate::metrics::ControllerMetrics;

/// Decides and acts for every policy, pass after pass, through `W`.
pub(crate) struct Reconciler<W: Writes = KubeWrites> {
    pub(super) writes: W,
    /// For the drain workers (reads, deletions).
    pub(super) client: Client,
    /// For evictions (no default retry).
    pub(super) evict_client: Client,
    pub(super) cfg: ControllerConfig,
    pub(super) metrics: ControllerMetrics,
    /// Asks the loop for another pass soon.
    pub(super) kick: mpsc::UnboundedSender<()>,
    pub(super) drains: Drains,
    /// Nodes this process wrote that the store has not delivered yet.
    pub(super) overlay: Overlay,
    /// Nodes whose next write waits (after a conflict or a failure).
    pub(super) holds: NodeHolds,
    /// Events already published for (object, reason, detail), to avoid repeats.
    pub(super) published: HashSet<String>,
    /// Generation for which an invalid-spec Event was published, per policy.
    invalid_seen: HashMap<String, Option<i64>>,
    /// Customer notifications and the advisory embargo.
    pub(super) notifications: Notifications,
    throttle: StatusThrottle,
    views: ViewCache,
    /// What the health gates look at, fetched at most once per interval.
    pub(super) gates: GateObserver,
    /// The drainability pre-flights, run in the background.
    pub(super) preflights: Preflights,
    /// Progress notices of this pass's node writes, queued after its status.
    /// Per policy; kept over a pass whose status write lost, so they still
    /// go out after the rollout notices the next pass decides and sends.
    pub(super) progress: HashMap<String, Vec<(crate::notify::EventKind, String)>>,
    /// Nodes queued by the policies decided so far in this tick: they carry
    /// the pending-reboot taint (see `taints`).
    queued: BTreeSet<String>,
}

/// What became of a pass's status.
enum StatusOutcome {
    /// Written, or nothing to write.
    Done,
    /// Only progress changed: written on a pass after this long.
    Deferred(Duration),
    /// The conditional write lost: the policy changed since it was read.
    Conflict,
}

impl Reconciler<KubeWrites> {
    pub(crate) fn new(
        client: Client,
        evict_client: Client,
        cfg: ControllerConfig,
        metrics: ControllerMetrics,
        kick: mpsc::UnboundedSender<()>,
        notify_metrics: crate::notify::NotifyMetrics,
    ) -> Self {
        let writes = KubeWrites::new(client.clone(), &cfg.identity, metrics.clone());
        let notifications = Notifications::start(client.clone(), notify_metrics);
        Reconciler::with_writes(
            writes,
            client,
            evict_client,
            cfg,
            metrics,
            kick,
            notifications,
        )
    }
}

impl<W: Writes> Reconciler<W> {
    pub(crate) fn with_writes(
        writes: W,
        client: Client,
        evict_client: Client,
        cfg: ControllerConfig,
        metrics: ControllerMetrics,
        kick: mpsc::UnboundedSender<()>,
        notifications: Notifications,
    ) -> Self {
        let gates = GateObserver::new(
            client.clone(),
            cfg.gate_interval,
            cfg.clock,
            metrics.clone(),
            Some(kick.clone()),
        );
        let preflights = Preflights::new(Some(kick.clone()));
        Reconciler {
            writes,
            client,
            evict_client,
            cfg,
            metrics,
            kick,
            drains: Drains::default(),
            overlay: Overlay::default(),
            holds: NodeHolds::default(),
            published: HashSet::new(),
            invalid_seen: HashMap::new(),
            notifications,
            throttle: StatusThrottle::default(),
            views: ViewCache::default(),
            gates,
            preflights,
            progress: HashMap::new(),
            queued: BTreeSet::new(),
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
                self.publish(policy_ref(&policy), type_, &reason, &note, "Notify");
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

    /// Publishes an Event: scrubbed of embargoed text, cut to size.
    fn publish(
        &self,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
        action: &str,
    ) {
        // The advisory embargo holds for every Event before completion.
        let note = self.notifications.scrub(note);
        self.writes
            .publish(reference, events::event(type_, reason, &note, action));
    }

    /// Publishes a notification Event on `policy`.
    pub(super) fn publish_policy(
        &self,
        policy: &PatchPolicy,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        self.publish(policy_ref(policy), type_, reason, note, "Notify");
    }

    /// Publishes `note` about `policy` or one of its nodes.
    pub(super) fn emit(&self, policy: &PatchPolicy, note: Note) {
        let reference = match &note.about {
            About::Node(n) => events::node_ref(n),
            About::Policy => policy_ref(policy),
        };
        self.publish(reference, note.type_, note.reason, &note.text, note.action);
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
        self.holds.retain_known(&known);
        let mut objects = self.freshest(nodes);

        // Stop drains of nodes that are no longer draining.
        let views = self.views(&objects);
        let draining: HashSet<&str> = views
            .iter()
            .filter(|v| v.record.as_ref().is_some_and(|r| r.step == Step::Draining))
            .map(|v| v.name.as_str())
            .collect();
        self.drains.retain(|n| draining.contains(n));
        self.put_back_views(views);

        self.forget_gone(policies);

        let mut ordered: Vec<&Arc<ParsedPolicy>> = policies.iter().collect();
        ordered.sort_by_key(|p| (!p.spec.urgent, p.name_any()));
        let contenders: Vec<Contender> =
            ordered.iter().map(|p| Contender::from_policy(p)).collect();

        let mut requeue: Option<Duration> = None;
        self.queued.clear();
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
            let r = match result {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.reconcile_error(&name);
                    let error = self
                        .notifications
                        .scrub(&crate::api::redact_decode_message(&e.to_string()));
                    tracing::warn!(policy = %name, %error, "reconcile failed; retrying soon");
                    Some(Duration::from_secs(2))
                }
            };
            requeue = earliest(requeue, r);
        }
        let queued = std::mem::take(&mut self.queued);
        let again = self.sync_taints(&queued, &mut objects).await;
        // Held node writes are decided again when their hold ends.
        let held = self.holds.next_due(tokio::time::Instant::now());
        earliest(earliest(requeue, again), held)
    }

    /// Drops the gate observations of policies that went away or no longer
    /// have gates, and the pre-flights of policies that went away.
    fn forget_gone(&self, policies: &[Arc<ParsedPolicy>]) {
        let gated: BTreeSet<String> = policies
            .iter()
            .filter(|p| p.spec.gates.is_some() && p.meta().deletion_timestamp.is_none())
            .map(|p| p.name_any())
            .collect();
        self.gates.retain(&gated);
        let live: BTreeSet<String> = policies.iter().map(|p| p.name_any()).collect();
        self.preflights.retain(&live);
    }

    /// Each node as this process last saw it: the store's copy, or its own
    /// newer write.
    fn freshest(&mut self, nodes: &[Arc<Node>]) -> BTreeMap<String, Arc<Node>> {
        nodes
            .iter()
            .map(|n| (n.name_any(), self.overlay.freshest(n)))
            .collect()
    }

    /// decide()'s view of every node, with its drain worker's state, lent
    /// until [`Self::put_back_views`].
    fn views(&mut self, objects: &BTreeMap<String, Arc<Node>>) -> Vec<NodeView> {
        self.views.take(objects, &self.drains)
    }

    fn put_back_views(&mut self, views: Vec<NodeView>) {
        self.views.put_back(views);
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
            let mut objects = self.freshest(nodes);
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
        let message = patches::undecodable_message(&bad.error);
        self.metrics.set_phase(&name, phase_name(Phase::Halted));
        if self.invalid_seen.get(&name) != Some(&generation) {
            self.invalid_seen.insert(name.clone(), generation);
            let note = Note::policy(EventType::Warning, "InvalidSpec", message.clone(), "Decode");
            self.emit(policy, note);
        }
        let stored = StoredRaw::of(bad.status.as_ref());
        let patch = patches::undecodable_status_patch(
            &stored,
            &message,
            generation,
            &policy.spec.revision,
            now,
        )?;
        if let Err(e) = self.writes.patch_status(&name, patch).await {
            let error = crate::api::redact_decode_message(&e.to_string());
            tracing::warn!(policy = %name, %error, "cannot write the status of an invalid policy; retrying soon");
            return Some(Duration::from_secs(2));
        }
        None
    }

    async fn add_finalizer(&self, policy: &PatchPolicy) {
        let rv = policy.resource_version();
        let patch = patches::finalizers_patch(policy.finalizers(), true, rv.as_deref());
        if let Err(e) = self.writes.patch_policy(&policy.name_any(), patch).await {
            tracing::debug!(policy = %policy.name_any(), error = %e, "cannot add finalizer yet");
        }
    }

    /// A live policy's pass: decide, apply the node operations, then status,
    /// Events and the notifications due.
    async fn reconcile(
        &mut self,
        policy: &ParsedPolicy,
        objects: &mut BTreeMap<String, Arc<Node>>,
        others: &[Contender],
        now: jiff::Timestamp,
    ) -> Result<Option<Duration>, kube::Error> {
        let views = self.views(objects);
        let result = self
            .reconcile_on(policy, &views, objects, others, now)
            .await;
        self.put_back_views(views);
        result
    }

    /// [`Self::reconcile`] on the nodes' `views`.
    async fn reconcile_on(
        &mut self,
        policy: &ParsedPolicy,
        views: &[NodeView],
        objects: &mut BTreeMap<String, Arc<Node>>,
        others: &[Contender],
        now: jiff::Timestamp,
    ) -> Result<Option<Duration>, kube::Error> {
        if !round::is_standing(&policy.spec) {
            return self
                .reconcile_with(policy, views, objects, others, None, now)
                .await;
        }
        // A standing policy: plan the round, then decide on it as on a
        // revision (its id), with only its members to do.
        let plan = round::plan(
            &policy.spec,
            &policy.config,
            policy.status.as_ref(),
            views,
            now,
        );
        if let Some(r) = &plan.round {
            for gone in &plan.newly_gone {
                let text = format!(
                    "node {gone} of round {} was deleted; its slot is free and it is not counted as failed",
                    r.id
                );
                let note = Note::policy(EventType::Normal, "RoundMemberGone", text, "Round");
                self.emit(policy, note);
            }
        }
        if plan.planned {
            return self.announce_round(policy, &plan).await;
        }
        let (p, c) = round::effective(&policy.policy, &policy.config, &plan);
        let effective = ParsedPolicy {
            policy: p,
            config: c,
        };
        let requeue = self
            .reconcile_with(&effective, views, objects, others, Some(&plan), now)
            .await?;
        let wake = plan.wake_at.map(|t| {
            let d = t.duration_since(now);
            Duration::try_from(d).unwrap_or(Duration::ZERO) + Duration::from_millis(10)
        });
        Ok(earliest(requeue, wake))
    }

    /// Writes a newly planned round into the status before any node starts
    /// under it (the agent checks a node's record against the round id the
    /// status holds); the next pass decides on it.
    async fn announce_round(
        &mut self,
        policy: &ParsedPolicy,
        plan: &round::RoundPlan,
    ) -> Result<Option<Duration>, kube::Error> {
        let mut status = policy.status.clone().unwrap_or_default();
        status.round = plan.round.clone();
        status.next_round = Some(plan.next.clone());
        match self
            .write_status(policy, &status, &Prepared::default())
            .await?
        {
            StatusOutcome::Deferred(wait) => return Ok(Some(wait)),
            StatusOutcome::Done | StatusOutcome::Conflict => {}
        }
        if let Some(r) = &plan.round {
            let start = r
                .scheduled_start
                .as_ref()
                .map_or_else(|| "no usable window yet".to_string(), |t| t.0.to_string());
            let text = format!(
                "round {} planned for {} node{}, earliest start {start}",
                r.id,
                r.nodes.len(),
                if r.nodes.len() == 1 { "" } else { "s" }
            );
            let note = Note::policy(EventType::Normal, "RoundPlanned", text, "Round");
            self.emit(policy, note);
        }
        let _ = self.kick.send(());
        Ok(None)
    }

    /// [`Self::reconcile`] over `policy` as decide sees it (a standing
    /// policy's effective policy, with its round `plan`).
    async fn reconcile_with(
        &mut self,
        policy: &ParsedPolicy,
        views: &[NodeView],
        objects: &mut BTreeMap<String, Arc<Node>>,
        others: &[Contender],
        plan: Option<&round::RoundPlan>,
        now: jiff::Timestamp,
    ) -> Result<Option<Duration>, kube::Error> {
        let stored = policy.status.as_ref();
        let same =
            stored.and_then(|s| s.revision.as_deref()) == Some(policy.spec.revision.as_str());
        self.notifications
            .set_embargo(policy, stored.filter(|_| same));
        // The spec was parsed once for this resourceVersion: an invalid one
        // halts (Stalled, reason InvalidSpec) with every problem in the message.
        let gated = self.gate_observations(policy, &policy.config, now);
        let decision = rollout::decide_with_observed(
            policy,
            &policy.config,
            views,
            others,
            gated.as_ref(),
            now,
        );
        self.queued.extend(rollout::queued_nodes(
            policy,
            &policy.config,
            views,
            &decision,
        ));
        let valid = !decision
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "InvalidSpec");
        self.note_validity(policy, valid, decision.status.message.as_deref());

        if !self
            .apply_plan(policy, &Plan::of_decision(&decision), objects)
            .await
        {
            // Later batches may rely on the one that failed (a drain on its
            // cordon, a start on a freed slot): decide again from fresh
            // state soon; the records tell where we are.
            let _ = self.kick.send(());
        }

        // Status and rollout-level Events.
        let mut status = decision.status;
        if let Some(plan) = plan {
            round::finish(plan, &mut status);
        }
        self.preflight(policy, views, &mut status, now);
        // Customer notifications due now go into this status write.
        let prepared = self
            .notifications
            .prepare(policy, &mut status, views, valid, now)
            .await;
        self.observe(&policy.name_any(), &status, &policy.spec, &policy.config);
        let prev = policy.status.as_ref();
        let phase_note = events::of_phase(
            policy,
            prev.and_then(|s| s.phase),
            prev.and_then(|s| s.revision.as_deref()),
            status.phase,
            status.message.as_deref(),
            valid,
        );
        if let Some(note) = phase_note {
            self.emit(policy, note);
        }
        if gated.is_some() {
            self.gate_upkeep(policy, &status, now);
        }
        let mut requeue = decision.requeue_after;
        if gated.is_some() {
            // Gates change without any watch event: look again each interval.
            requeue = earliest(requeue, Some(self.cfg.gate_interval));
        }
        let outcome = self.write_status(policy, &status, &prepared).await;
        match outcome {
            Ok(StatusOutcome::Done) => {}
            Ok(StatusOutcome::Deferred(wait)) => requeue = earliest(requeue, Some(wait)),
            // The rollout notices of this pass were not sent: its progress
            // notices wait for the next pass, which sends those first.
            Ok(StatusOutcome::Conflict) => {
                let _ = self.kick.send(());
                return Ok(requeue);
            }
            Err(e) => return Err(e),
        }
        // Sent only now that the records are stored.
        self.notifications.set_embargo(policy, Some(&status));
        for (type_, reason, note) in self.notifications.send(prepared) {
            self.publish(policy_ref(policy), type_, &reason, &note, "Notify");
        }
        self.flush_progress(policy).await;
        Ok(requeue)
    }

    /// One InvalidSpec Warning Event per generation of an invalid spec.
    fn note_validity(&mut self, policy: &PatchPolicy, valid: bool, message: Option<&str>) {
        let name = policy.name_any();
        if valid {
            self.invalid_seen.remove(&name);
            return;
        }
        let generation = policy.meta().generation;
        if self.invalid_seen.get(&name) != Some(&generation) {
            self.invalid_seen.insert(name, generation);
            let text = message.unwrap_or_default().to_string();
            let note = Note::policy(EventType::Warning, "InvalidSpec", text, "Validate");
            self.emit(policy, note);
        }
    }

    /// Writes `status` unless unchanged or held back by the throttle; with new
    /// notification records, conditional on the resourceVersion they were
    /// decided from.
    async fn write_status(
        &mut self,
        policy: &PatchPolicy,
        status: &PatchPolicyStatus,
        prepared: &Prepared,
    ) -> Result<StatusOutcome, kube::Error> {
        let name = policy.name_any();
        let old = policy.status.as_ref();
        let now = tokio::time::Instant::now();
        let precondition = prepared.precondition.as_deref();
        match self
            .throttle
            .decide(&name, old, status, precondition.is_some(), now)
        {
            StatusWrite::Unchanged => return Ok(StatusOutcome::Done),
            StatusWrite::Defer(wait) => return Ok(StatusOutcome::Deferred(wait)),
            StatusWrite::Now => {}
        }
        self.throttle.writing(&name, now);
        let patch = patches::status_patch(old, status, precondition);
        match self.writes.patch_status(&name, patch).await {
            Ok(rv) => {
                self.notifications.written(policy, rv.as_deref(), status);
                Ok(StatusOutcome::Done)
            }
            Err(kube::Error::Api(s)) if s.code == 409 && precondition.is_some() => {
                tracing::debug!(policy = %name, "policy changed since it was read; deciding again");
                Ok(StatusOutcome::Conflict)
            }
            Err(e) => Err(e),
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

    /// A deleted policy's pass: give its nodes back, let the nodes in reboot
    /// finish, and once none is left remove the finalizer.
    async fn finalize(
        &mut self,
        policy: &ParsedPolicy,
        objects: &mut BTreeMap<String, Arc<Node>>,
        now: jiff::Timestamp,
    ) -> Result<Option<Duration>, kube::Error> {
        let name = policy.name_any();
        let views = self.views(objects);
        let deletion = plan::deletion(policy, &policy.config, &views, now);
        self.put_back_views(views);
        let written = self.apply_plan(policy, &deletion.plan, objects).await;
        self.flush_progress(policy).await;
        if deletion.wait.is_some() {
            return Ok(deletion.wait);
        }
        if !written {
            return Ok(Some(Duration::from_secs(2)));
        }
        // Forget this policy in the done maps? No: they record history and are harmless.
        let rv = policy.resource_version();
        let patch = patches::finalizers_patch(policy.finalizers(), false, rv.as_deref());
        match self.writes.patch_policy(&name, patch).await {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
        self.notifications.forget(&name);
        tracing::info!(policy = %name, "policy deleted; its nodes are released");
        Ok(None)
    }
}

/// The earlier of two optional wake-ups.
fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// decide()'s view of every node, kept from pass to pass in the order of the
/// node map (by name). A node's view is built again only when its
/// resourceVersion changed; the others are neither parsed nor copied. At
/// 5,000 nodes, parsing every view once per pass and then copying the
/// whole list for each policy was most of the controller's CPU, and passes
/// come back to back while a rollout is busy.
#[derive(Default)]
struct ViewCache {
    /// The resourceVersion each view was built from, index for index.
    versions: Vec<Option<String>>,
    views: Vec<NodeView>,
}

impl ViewCache {
    /// Brings the views up to `objects`, with each node's drain state, and
    /// lends them out; [`ViewCache::put_back`] returns them (a list that is
    /// not returned is built again next time, so a missed return only costs
    /// time).
    fn take(&mut self, objects: &BTreeMap<String, Arc<Node>>, drains: &Drains) -> Vec<NodeView> {
        let same_nodes = self.views.len() == objects.len()
            && self.versions.len() == objects.len()
            && self
                .views
                .iter()
                .zip(objects.keys())
                .all(|(v, k)| v.name == *k);
        if !same_nodes {
            // Line the cached views up with the nodes, by name; a new node
            // has no cached version, so it is built below.
            let mut old: HashMap<String, (Option<String>, NodeView)> =
                std::mem::take(&mut self.views)
                    .into_iter()
                    .zip(std::mem::take(&mut self.versions))
                    .map(|(v, rv)| (v.name.clone(), (rv, v)))
                    .collect();
            for name in objects.keys() {
                let (rv, view) = old.remove(name).unwrap_or_default();
                self.versions.push(rv);
                self.views.push(view);
            }
        }
        for ((view, cached), n) in self
            .views
            .iter_mut()
            .zip(self.versions.iter_mut())
            .zip(objects.values())
        {
            let rv = n.metadata.resource_version.as_deref();
            if rv.is_none() || cached.as_deref() != rv {
                *view = NodeView::from_node(n);
                *cached = rv.map(str::to_string);
            }
        }
        for v in &mut self.views {
            v.drain = drains.state(&v.name);
        }
        std::mem::take(&mut self.views)
    }

    /// Takes back the views lent by [`ViewCache::take`].
    fn put_back(&mut self, views: Vec<NodeView>) {
        if views.len() == self.versions.len() {
            self.views = views;
        } else {
            self.versions.clear();
        }
    }
}

#[cfg(test)]
mod view_cache_tests {
    use super::*;

    fn node(name: &str, rv: &str, zone: &str) -> Arc<Node> {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.resource_version = Some(rv.into());
        n.metadata.labels = Some(BTreeMap::from([("zone".to_string(), zone.to_string())]));
        Arc::new(n)
    }

    fn objects(nodes: &[Arc<Node>]) -> BTreeMap<String, Arc<Node>> {
        nodes.iter().map(|n| (n.name_any(), n.clone())).collect()
    }

    fn zones(views: &[NodeView]) -> Vec<(String, String)> {
        views
            .iter()
            .map(|v| (v.name.clone(), v.labels["zone"].clone()))
            .collect()
    }

    #[test]
    fn a_view_is_rebuilt_when_its_node_changed_and_kept_otherwise() {
        let drains = Drains::default();
        let mut cache = ViewCache::default();
        let first = objects(&[node("a", "1", "z1"), node("b", "1", "z1")]);
        let views = cache.take(&first, &drains);
        assert_eq!(
            zones(&views),
            [("a".into(), "z1".into()), ("b".into(), "z1".into())]
        );
        cache.put_back(views);

        // b changed (new version); a's label changed under the same
        // version, which a real server never does: the cached view shows
        // it was not parsed again.
        let second = objects(&[node("a", "1", "changed"), node("b", "2", "z2")]);
        let views = cache.take(&second, &drains);
        assert_eq!(
            zones(&views),
            [("a".into(), "z1".into()), ("b".into(), "z2".into())]
        );
        cache.put_back(views);

        // A node added and one gone: the list follows the node map's order.
        let third = objects(&[node("b", "2", "z2"), node("c", "1", "z3")]);
        let views = cache.take(&third, &drains);
        assert_eq!(
            zones(&views),
            [("b".into(), "z2".into()), ("c".into(), "z3".into())]
        );
    }

    #[test]
    fn views_not_given_back_are_built_again() {
        let drains = Drains::default();
        let mut cache = ViewCache::default();
        let first = objects(&[node("a", "1", "z1")]);
        let lent = cache.take(&first, &drains);
        assert_eq!(lent.len(), 1);
        // Not returned (an early return): the next take still has every node.
        let views = cache.take(&first, &drains);
        assert_eq!(zones(&views), [("a".into(), "z1".into())]);
        // A list of another length is not taken back.
        cache.put_back(Vec::new());
        let views = cache.take(&first, &drains);
        assert_eq!(zones(&views), [("a".into(), "z1".into())]);
    }
}
