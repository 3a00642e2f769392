//! Customer notifications in the controller: the glue between a reconcile and
//! [`crate::notify`].
//!
//! Per reconcile of a policy with webhooks, [`Notifications::prepare`]:
//! 1. takes the freshest `status.notifications` this process knows (the store,
//!    or this process's own last write when the store has not caught up yet);
//! 2. decides with [`notify::due`] what is due now and appends its records to
//!    the status the reconcile is about to write (`webhook=pending`);
//! 3. after a start or a change of leader, picks up the deliveries the records
//!    still show as pending;
//! 4. scrubs the advisory details from the status message, the condition
//!    messages and the failure reasons while the rollout is not completed.
//!
//! The reconcile writes the status (conditional on the `resourceVersion` it
//! decided from when something new is due) and only then calls
//! [`Notifications::send`], which queues the deliveries and returns the Events
//! that mirror the notifications. A status write that fails sends nothing, so
//! a notification is decided exactly once across restarts and replicas.
//!
//! Delivery results come back through [`Notifications::recv`] and are written
//! by [`Notifications::on_report`] into the record, read fresh and written
//! conditionally, with a `NotificationFailed` Warning Event for failures and the
//! `NotificationsDelivered` condition.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::ParsedPolicy;
use crate::api::{NotificationRecord, PatchPolicy, PatchPolicyStatus, Phase, SecretKeyRef};
use crate::core::forecast::{self, Behaviour};
use crate::core::rollout::NodeView;
use crate::notify::{
    self, Counts, Delivery, DeliveryConfig, DeliveryReport, Due, Embargo, EventKind, Message,
    Notifier, Outcome, ResolvedWebhook, Rollout, Window,
};

/// Type of the condition that tells whether every notification was delivered.
pub(crate) const CONDITION: &str = "NotificationsDelivered";

/// Refused deliveries held until their `failed` is written, at most.
const MAX_REFUSED: usize = 1024;

/// An Event to publish on the policy: type, reason, note.
pub(crate) type PolicyEvent = (EventType, String, String);

/// The last status records this process wrote for a policy.
struct Written {
    rv: Option<u64>,
    revision: String,
    records: Vec<NotificationRecord>,
}

/// What a reconcile decided to send; sent by [`Notifications::send`] once the
/// status holding its records is written.
#[derive(Default)]
pub(crate) struct Prepared {
    policy: String,
    /// The `resourceVersion` the decision was made from, when something new
    /// was decided: the status write must be conditional on it.
    pub(crate) precondition: Option<String>,
    deliveries: Vec<Delivery>,
    events: Vec<PolicyEvent>,
    resumed: bool,
}

pub(crate) struct Notifications {
    client: Client,
    notifier: Notifier,
    reports: mpsc::Receiver<DeliveryReport>,
    /// Reports of deliveries the lanes refused (full), handed out by
    /// [`Notifications::recv`] before the others so their records say
    /// `failed` instead of staying `pending`.
    refused: VecDeque<DeliveryReport>,
    written: HashMap<String, Written>,
    /// Expected completion per (policy, revision), computed once.
    expected: HashMap<(String, String), Option<Timestamp>>,
    /// Policies whose pending deliveries were picked up in this term as leader.
    resumed: HashSet<String>,
    /// Embargoes of policies that have not completed, by policy name.
    embargoes: HashMap<String, Embargo>,
    /// Resolved admin webhooks for progress notices, by policy name.
    progress_hooks: HashMap<String, ProgressHooks>,
}

fn rv_num(rv: Option<&str>) -> Option<u64> {
    rv?.parse().ok()
}

fn webhooks_of(policy: &PatchPolicy) -> &[crate::api::Webhook] {
    policy
        .spec
        .notify
        .as_ref()
        .map_or(&[], |n| n.webhooks.as_slice())
}

impl Notifications {
    /// Starts the delivery dispatcher (on the current runtime).
    pub(crate) fn start(client: Client, metrics: notify::NotifyMetrics) -> Notifications {
        let (notifier, reports) = notify::start(DeliveryConfig::default(), metrics);
        Notifications {
            client,
            notifier,
            reports,
            refused: VecDeque::new(),
            written: HashMap::new(),
            expected: HashMap::new(),
            resumed: HashSet::new(),
            embargoes: HashMap::new(),
            progress_hooks: HashMap::new(),
        }
    }

    /// Next delivery report.
    pub(crate) async fn recv(&mut self) -> Option<DeliveryReport> {
        if let Some(r) = self.refused.pop_front() {
            return Some(r);
        }
        self.reports.recv().await
    }

    /// After gaining leadership: pick up pending deliveries again.
    pub(crate) fn leadership_gained(&mut self) {
        self.resumed.clear();
        self.written.clear();
    }

    /// Sets the embargo of a policy as of `status` (lifted once every selected
    /// node is updated, or by `advisory.release: Now`).
    pub(crate) fn set_embargo(&mut self, policy: &PatchPolicy, status: Option<&PatchPolicyStatus>) {
        let e = Embargo::for_status(&policy.spec, status);
        if e.is_lifted() {
            self.embargoes.remove(&policy.name_any());
        } else {
            self.embargoes.insert(policy.name_any(), e);
        }
    }

    /// Forgets a deleted policy.
    pub(crate) fn forget(&mut self, policy: &str) {
        self.embargoes.remove(policy);
        self.progress_hooks.remove(policy);
        self.written.remove(policy);
        self.expected.retain(|(p, _), _| p != policy);
    }

    /// `text` with the advisory details of every policy not yet completed
    /// replaced by `[embargoed]`: for Event notes and log fields.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for e in self.embargoes.values() {
            if e.leaks(&out) {
                out = e.scrub(&out).into_owned();
            }
        }
        out
    }

    /// The freshest records of this policy's current revision and the
    /// `resourceVersion` they belong to.
    fn freshest(&self, policy: &PatchPolicy) -> (Vec<NotificationRecord>, Option<String>) {
        let name = policy.name_any();
        let store_rv = policy.metadata.resource_version.clone();
        if let Some(w) = self.written.get(&name)
            && w.revision == policy.spec.revision
            && let (Some(ours), Some(theirs)) = (w.rv, rv_num(store_rv.as_deref()))
            && ours > theirs
        {
            return (w.records.clone(), Some(ours.to_string()));
        }
        let status = policy.status.as_ref();
        let records = status.map_or(&[][..], |s| s.notifications.as_slice());
        let records = notify::records_for_revision(
            status.and_then(|s| s.revision.as_deref()),
            records,
            &policy.spec.revision,
        );
        (records.to_vec(), store_rv)
    }

    /// Decides the notifications of one reconcile and puts their records into
    /// `status` (the status the reconcile writes next). `valid`: the spec passed
    /// validation (customers are not told about an invalid spec).
    pub(crate) async fn prepare(
        &mut self,
        policy: &ParsedPolicy,
        status: &mut PatchPolicyStatus,
        views: &[NodeView],
        valid: bool,
        now: Timestamp,
    ) -> Prepared {
        let name = policy.name_any();
        // Status times have whole seconds; the record's `at` finds it again.
        let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
        let mut prepared = Prepared {
            policy: name.clone(),
            ..Prepared::default()
        };
        let webhooks = webhooks_of(policy);
        let (mut records, rv) = self.freshest(policy);
        if webhooks.is_empty() {
            status.notifications = records;
            scrub_status(policy, status);
            return prepared;
        }
        let prev = policy
            .status
            .as_ref()
            .filter(|s| s.revision.as_deref() == Some(policy.spec.revision.as_str()));
        let failed = status.failed.clone();
        let mut rollout = rollout_of(&name, policy, prev, status, &failed, now);
        let due = if valid {
            notify::due(&rollout, &records)
        } else {
            Vec::new()
        };
        let resend: Vec<(usize, String)> = if self.resumed.contains(&name) {
            Vec::new()
        } else {
            prepared.resumed = true;
            notify::pending(&records)
        };
        if due.is_empty() && resend.is_empty() {
            status.notifications = records;
            set_condition(status, prev, now);
            scrub_status(policy, status);
            return prepared;
        }

        let shows_expected = due.iter().any(|d| {
            matches!(
                d.kind,
                EventKind::Scheduled
                    | EventKind::Started
                    | EventKind::UrgentStarted
                    | EventKind::Resumed
            )
        }) || !resend.is_empty();
        if shows_expected {
            rollout.expected_completion =
                self.expected_completion(policy, status, views, now).await;
        }

        let (resolved, errors) = self.resolve(policy).await;
        // Every payload without the details is checked for them before it is
        // queued, whatever field or template put them there.
        let embargo = Embargo::for_status(&policy.spec, Some(&*status));
        for e in &errors {
            prepared.events.push((
                EventType::Warning,
                "NotificationFailed".into(),
                format!("cannot send notifications: {e}"),
            ));
        }
        let mut out = Queue {
            rollout: &rollout,
            embargo: &embargo,
            resolved: &resolved,
            records: &mut records,
            prepared: &mut prepared,
        };
        if !due.is_empty() {
            out.due(&due, webhooks);
            out.prepared.precondition = rv;
        }
        out.resend(resend);
        status.notifications = records;
        set_condition(status, prev, now);
        scrub_status(policy, status);
        prepared
    }

    /// Remembers the records of a status write (`rv` from its response).
    pub(crate) fn written(
        &mut self,
        policy: &PatchPolicy,
        rv: Option<&str>,
        status: &PatchPolicyStatus,
    ) {
        self.written.insert(
            policy.name_any(),
            Written {
                rv: rv_num(rv),
                revision: policy.spec.revision.clone(),
                records: status.notifications.clone(),
            },
        );
    }

    /// Queues the deliveries of a reconcile whose status write succeeded (or
    /// was not needed); returns the Events to publish on the policy.
    pub(crate) fn send(&mut self, prepared: Prepared) -> Vec<PolicyEvent> {
        if prepared.resumed {
            self.resumed.insert(prepared.policy.clone());
        }
        for d in prepared.deliveries {
            // A refused delivery (its lane or the queues are full) is written
            // `failed` into its record, with the NotificationFailed Event, by
            // `on_report`, like one that failed after its retries.
            if let Err(report) = self.notifier.enqueue_or_refuse(d) {
                if self.refused.len() >= MAX_REFUSED {
                    // Left `pending`: delivered again after a restart.
                    tracing::warn!(policy = %prepared.policy, webhook = %report.webhook, event = %report.kind, "too many refused notifications to record; this one stays pending");
                    continue;
                }
                self.refused.push_back(*report);
            }
        }
        prepared.events
    }

    /// Fetches the Secrets of the policy's webhooks and resolves them. Returns
    /// the usable webhooks by name and the problems of the others (never a URL
    /// or header value). A Secret that cannot be read (missing, forbidden, API
    /// error) is treated like one that did not opt in: the Event says the same
    /// in every case, so it does not tell which Secrets exist.
    async fn resolve(
        &self,
        policy: &PatchPolicy,
    ) -> (HashMap<String, Arc<ResolvedWebhook>>, Vec<String>) {
        let name = policy.name_any();
        let webhooks = webhooks_of(policy);
        // One Secret per webhook (see notify::resolve); at most 16 webhooks.
        let mut secrets: BTreeMap<(String, String), Option<Secret>> = BTreeMap::new();
        for w in webhooks {
            let r: &SecretKeyRef = &w.url_secret_ref;
            let key = (r.namespace.clone(), r.name.clone());
            if secrets.contains_key(&key) {
                continue;
            }
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &r.namespace);
            let got = match api.get_opt(&r.name).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(policy = %name, webhook = %w.name, reason = %api_reason(&e), "cannot read a webhook Secret");
                    None
                }
            };
            secrets.insert(key, got);
        }
        let mut resolved = HashMap::new();
        let mut errors = Vec::new();
        for w in webhooks {
            let lookup = |r: &SecretKeyRef| {
                secrets
                    .get(&(r.namespace.clone(), r.name.clone()))
                    .and_then(Option::as_ref)
            };
            match notify::resolve(&name, w, lookup) {
                Ok(r) => {
                    resolved.insert(w.name.clone(), Arc::new(r));
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (resolved, errors)
    }

    /// The expected completion of this revision from the forecast, computed
    /// once per (policy, revision) so every notification says the same.
    async fn expected_completion(
        &mut self,
        policy: &ParsedPolicy,
        status: &PatchPolicyStatus,
        views: &[NodeView],
        now: Timestamp,
    ) -> Option<Timestamp> {
        let key = (policy.name_any(), policy.spec.revision.clone());
        if let Some(e) = self.expected.get(&key) {
            return *e;
        }
        let mut p = policy.policy.clone();
        p.status = Some(status.clone());
        let cfg = policy.config.clone();
        // The step durations `sofort plan` assumes, never longer than the
        // policy's own timeouts.
        let behaviour = Behaviour::healthy(
            cfg.drain_timeout.min(Duration::from_secs(300)),
            cfg.reboot_timeout.min(Duration::from_secs(240)),
            cfg.patch_timeout.min(Duration::from_secs(300)),
        );
        let world: Vec<(NodeView, Behaviour)> = views
            .iter()
            .map(|v| {
                let mut v = v.clone();
                if v.reboot_required.is_none()
                    && p.spec.reboot.when == crate::api::RebootWhen::IfRequired
                {
                    v.reboot_required = Some(true);
                }
                (v, behaviour.clone())
            })
            .collect();
        let expected = tokio::task::spawn_blocking(move || {
            forecast::forecast_views_with(&p, &cfg, world, now).completion
        })
        .await
        .ok()
        .flatten();
        self.expected.insert(key, expected);
        expected
    }

    /// Writes a delivery result into its record (read fresh, written
    /// conditionally) and returns the Events to publish on the policy.
    pub(crate) async fn on_report(
        &mut self,
        report: DeliveryReport,
        now: Timestamp,
    ) -> Option<(PatchPolicy, Vec<PolicyEvent>)> {
        let policy_name = report.id.split('/').next().unwrap_or_default().to_string();
        if report.kind.is_node_progress() {
            // Best effort, no record to write: the metric counted it.
            if let Outcome::Failed { error } = &report.outcome {
                tracing::warn!(policy = %policy_name, webhook = %report.webhook, event = %report.kind, attempts = report.attempts, error = %self.scrub(error), "node progress notice not delivered");
            }
            return None;
        }
        let api: Api<PatchPolicy> = Api::all(self.client.clone());
        for _ in 0..5 {
            let mut policy = match api.get_opt(&policy_name).await {
                Ok(Some(p)) => p,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(policy = %policy_name, error = %self.scrub(&e.to_string()), "cannot read the policy to store a notification result");
                    return None;
                }
            };
            let status = policy.status.as_mut()?;
            if !report.apply(&mut status.notifications) {
                // The revision changed or the record was cut from the history.
                return None;
            }
            let prev = status.clone();
            set_condition(status, Some(&prev), now);
            let patch = json!({
                "metadata": {"resourceVersion": policy.metadata.resource_version},
                "status": {
                    "notifications": status.notifications,
                    "conditions": status.conditions,
                },
            });
            let params = PatchParams {
                field_manager: Some("sofort-controller".into()),
                ..PatchParams::default()
            };
            match api
                .patch_status(&policy_name, &params, &Patch::Merge(patch))
                .await
            {
                Ok(written) => {
                    let rv = written.metadata.resource_version.clone();
                    let status = written.status.clone().unwrap_or_default();
                    self.written(&written, rv.as_deref(), &status);
                    let mut events = Vec::new();
                    if let Outcome::Failed { error } = &report.outcome
                        && report.attempts == 0
                    {
                        events.push((
                            EventType::Warning,
                            "NotificationFailed".to_string(),
                            format!(
                                "webhook {}: {} notification {} {error}",
                                report.webhook, report.kind, report.id,
                            ),
                        ));
                    } else if let Outcome::Failed { error } = &report.outcome {
                        events.push((
                            EventType::Warning,
                            "NotificationFailed".to_string(),
                            format!(
                                "webhook {}: {} notification {} failed after {} attempt{}: {error}",
                                report.webhook,
                                report.kind,
                                report.id,
                                report.attempts,
                                if report.attempts == 1 { "" } else { "s" }
                            ),
                        ));
                    }
                    return Some((written, events));
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    tracing::warn!(policy = %policy_name, error = %self.scrub(&e.to_string()), "cannot store a notification result; it is delivered again after a restart");
                    return None;
                }
            }
        }
        None
    }
}

// --- Per-node progress notices (see notify::node_progress) ---

/// How long the resolved admin webhooks of a policy are reused for progress
/// notices before their Secrets are read again.
const PROGRESS_HOOKS_TTL: Duration = Duration::from_secs(30);

/// The resolved webhooks of one policy for its progress notices.
pub(crate) struct ProgressHooks {
    read: tokio::time::Instant,
    generation: Option<i64>,
    resolved: HashMap<String, Arc<ResolvedWebhook>>,
}

impl Notifications {
    /// Queues the progress notices of node writes that were just stored
    /// (`notices`: event and node, in write order) for the admin channels
    /// that subscribed to them. Returns the Events for notices withheld by
    /// the embargo check.
    pub(crate) async fn node_progress(
        &mut self,
        policy: &PatchPolicy,
        notices: &[(EventKind, String)],
        now: Timestamp,
    ) -> Vec<PolicyEvent> {
        let webhooks = webhooks_of(policy);
        if notices.is_empty() || !notify::node_progress::any_subscriber(webhooks) {
            return Vec::new();
        }
        let name = policy.name_any();
        let resolved = self.progress_hooks(policy).await;
        let stored = policy
            .status
            .clone()
            .filter(|s| s.revision.as_deref() == Some(policy.spec.revision.as_str()))
            .unwrap_or_default();
        let rollout = rollout_of(&name, policy, Some(&stored), &stored, &stored.failed, now);
        // No progress notice carries the details; before their release the
        // check withholds one whose payload quotes them anyway (a node name,
        // a template's text).
        let embargo = Embargo::for_status(&policy.spec, Some(&stored));
        let mut events = Vec::new();
        for (kind, node) in notices {
            let m = Message::new(&rollout, &notify::node_progress::due(*kind, node, now));
            let subscribed = webhooks
                .iter()
                .filter(|w| notify::node_progress::subscribes(w, *kind));
            for w in subscribed {
                let Some(r) = resolved.get(&w.name) else {
                    continue;
                };
                let delivery = Delivery::new(&m, r.clone());
                if delivery.leaks(&embargo) {
                    events.push(withheld_event(&delivery));
                    continue;
                }
                // A refusal (lane full) is counted and logged by the notifier;
                // progress notices are best effort and have no record.
                let _ = self.notifier.enqueue_or_refuse(delivery);
            }
        }
        events
    }

    /// The policy's webhooks resolved from their Secrets, read again after
    /// [`PROGRESS_HOOKS_TTL`] or when the spec changed, so a wave of progress
    /// notices does not read the Secrets once per node.
    async fn progress_hooks(
        &mut self,
        policy: &PatchPolicy,
    ) -> HashMap<String, Arc<ResolvedWebhook>> {
        let name = policy.name_any();
        let generation = policy.metadata.generation;
        let now = tokio::time::Instant::now();
        if let Some(h) = self.progress_hooks.get(&name)
            && h.generation == generation
            && now.duration_since(h.read) < PROGRESS_HOOKS_TTL
        {
            return h.resolved.clone();
        }
        let (resolved, errors) = self.resolve(policy).await;
        for e in errors {
            tracing::warn!(policy = %name, error = %self.scrub(&e), "cannot send node progress notices");
        }
        self.progress_hooks.insert(
            name,
            ProgressHooks {
                read: now,
                generation,
                resolved: resolved.clone(),
            },
        );
        resolved
    }
}

// --- end per-node progress notices ---

/// What the notifications of one reconcile know of the rollout.
fn rollout_of<'a>(
    name: &'a str,
    policy: &'a PatchPolicy,
    prev: Option<&PatchPolicyStatus>,
    status: &PatchPolicyStatus,
    failed: &'a [crate::api::FailedNode],
    now: Timestamp,
) -> Rollout<'a> {
    let counts = status
        .nodes
        .as_ref()
        .map_or_else(Counts::default, |n| Counts {
            total: n.total,
            updated: n.updated,
            failed: n.failed,
        });
    let first_window = status.next_window.as_ref().map(|w| Window {
        start: w.start.0,
        end: w.end.0,
    });
    Rollout {
        policy: name,
        spec: &policy.spec,
        previous_phase: prev.and_then(|s| s.phase),
        phase: status.phase.unwrap_or_default(),
        counts,
        failed,
        first_window,
        expected_completion: None,
        now,
    }
}

/// The deliveries and Events one reconcile queues, and the records they go in.
struct Queue<'a> {
    rollout: &'a Rollout<'a>,
    embargo: &'a Embargo,
    resolved: &'a HashMap<String, Arc<ResolvedWebhook>>,
    records: &'a mut Vec<NotificationRecord>,
    prepared: &'a mut Prepared,
}

impl Queue<'_> {
    /// New notifications: their records (failed at once for a webhook that
    /// cannot be resolved), the Events that mirror them, their deliveries.
    fn due(&mut self, due: &[Due], webhooks: &[crate::api::Webhook]) {
        notify::append_records(self.records, due, webhooks.iter().map(|w| w.name.as_str()));
        // Webhooks that cannot be resolved fail at once.
        for d in due {
            for w in webhooks {
                if !self.resolved.contains_key(&w.name) {
                    notify::event::set_result(
                        self.records,
                        d.kind,
                        d.node.as_deref(),
                        d.at,
                        &w.name,
                        notify::event::FAILED,
                    );
                }
            }
        }
        for d in due {
            let m = Message::new(self.rollout, d);
            let event_type = match d.kind {
                EventKind::NodeFailed | EventKind::Halted | EventKind::CompletedWithFailures => {
                    EventType::Warning
                }
                _ => EventType::Normal,
            };
            self.prepared.events.push((
                event_type,
                format!("Notification{}", d.kind),
                format!("{} notification ({}): {}", d.kind, m.id(), m.text()),
            ));
            for w in webhooks {
                if let Some(r) = self.resolved.get(&w.name) {
                    let delivery = Delivery::new(&m, r.clone());
                    if let Some(delivery) = unless_leaking(
                        delivery,
                        self.embargo,
                        d,
                        &w.name,
                        self.records,
                        &mut self.prepared.events,
                    ) {
                        self.prepared.deliveries.push(delivery);
                    }
                }
            }
        }
    }

    /// Deliveries the records still show as pending (after a start or a
    /// change of leader), delivered again.
    fn resend(&mut self, resend: Vec<(usize, String)>) {
        let rollout = self.rollout;
        for (i, webhook) in resend {
            let (Some(d), Some(r)) = (
                Due::from_record(self.records, i),
                self.resolved.get(&webhook),
            ) else {
                continue;
            };
            // A pending record is only memory, never proof: a completion is
            // delivered again only when the rollout as decided now has ended
            // (and the details only go with it when every node is updated).
            let ended = rollout.phase == Phase::Completed;
            let completion = matches!(
                d.kind,
                EventKind::Completed | EventKind::CompletedWithFailures
            );
            if completion
                && (!ended || (d.kind == EventKind::Completed && !rollout.details_released()))
            {
                tracing::warn!(policy = %rollout.policy, event = %d.kind, webhook = %webhook, "a pending completion record does not match the rollout; not delivered");
                continue;
            }
            let m = Message::new(rollout, &d);
            let delivery = Delivery::new(&m, r.clone());
            let Some(delivery) = unless_leaking(
                delivery,
                self.embargo,
                &d,
                &webhook,
                self.records,
                &mut self.prepared.events,
            ) else {
                continue;
            };
            tracing::info!(policy = %rollout.policy, event = %d.kind, id = %self.embargo.scrub(m.id()), webhook = %webhook, "delivering a pending notification again");
            self.prepared.deliveries.push(delivery);
        }
    }
}

/// The admins' Event for a request withheld because it contained embargoed
/// text (the note is scrubbed again when published).
/// The delivery, unless its payload would carry embargoed text: then its
/// record is marked failed and admins get a `NotificationWithheld` Event.
fn unless_leaking(
    delivery: Delivery,
    embargo: &Embargo,
    due: &Due,
    webhook: &str,
    records: &mut [NotificationRecord],
    events: &mut Vec<PolicyEvent>,
) -> Option<Delivery> {
    if !delivery.leaks(embargo) {
        return Some(delivery);
    }
    notify::event::set_result(
        records,
        due.kind,
        due.node.as_deref(),
        due.at,
        webhook,
        notify::event::FAILED,
    );
    events.push(withheld_event(&delivery));
    None
}

fn withheld_event(d: &Delivery) -> PolicyEvent {
    (
        EventType::Warning,
        "NotificationWithheld".into(),
        format!(
            "webhook {}: {} notification not sent: its payload contains the embargoed advisory details (from the policy name, revision, summary, webhook name or template text); make those fields neutral",
            d.webhook(),
            d.kind
        ),
    )
}

fn api_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        other => other.to_string(),
    }
}

/// Sets the `NotificationsDelivered` condition from the records: False while
/// any delivery of this revision failed.
fn set_condition(status: &mut PatchPolicyStatus, prev: Option<&PatchPolicyStatus>, now: Timestamp) {
    status.conditions.retain(|c| c.type_ != CONDITION);
    let failed: Vec<String> = status
        .notifications
        .iter()
        .flat_map(|r| {
            r.results.iter().filter_map(move |x| {
                let (w, result) = x.split_once('=')?;
                (result == notify::event::FAILED).then(|| format!("{} to {w}", r.event))
            })
        })
        .collect();
    if status.notifications.is_empty() {
        return;
    }
    let (state, reason, message) = if failed.is_empty() {
        (
            "True",
            "Delivered",
            "every notification was delivered or is being delivered".to_string(),
        )
    } else {
        (
            "False",
            "DeliveryFailed",
            format!(
                "not delivered: {}; see the NotificationFailed Events",
                failed.join(", ")
            ),
        )
    };
    let last = prev
        .and_then(|p| {
            p.conditions
                .iter()
                .find(|c| c.type_ == CONDITION && c.status == state)
        })
        .map(|c| c.last_transition_time.clone());
    status.conditions.push(Condition {
        type_: CONDITION.into(),
        status: state.into(),
        reason: reason.into(),
        message,
        observed_generation: status.observed_generation,
        last_transition_time: last.unwrap_or(Time(now)),
    });
}

/// Replaces the advisory details in what the status says in words while the
/// rollout has not completed.
pub(crate) fn scrub_status(policy: &PatchPolicy, status: &mut PatchPolicyStatus) {
    let embargo = Embargo::for_status(&policy.spec, Some(status));
    if embargo.is_lifted() {
        return;
    }
    if let Some(m) = status.message.as_mut() {
        *m = embargo.scrub(m).into_owned();
    }
    for c in &mut status.conditions {
        c.message = embargo.scrub(&c.message).into_owned();
    }
    for f in &mut status.failed {
        f.reason = embargo.scrub(&f.reason).into_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Advisory, FailedNode, NotifySpec, PatchPolicySpec};

    const DETAILS: &str = "CVE-2026-1234 (local root exploit)";

    fn policy() -> PatchPolicy {
        let mut spec = PatchPolicySpec::new("r1");
        spec.notify = Some(NotifySpec {
            webhooks: vec![],
            advisory: Some(Advisory {
                summary: "Security maintenance".into(),
                details: Some(DETAILS.into()),
                release: Default::default(),
            }),
            ..Default::default()
        });
        PatchPolicy::new("p", spec)
    }

    fn condition(message: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "Progressing".into(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn status_words_are_scrubbed_until_completed() {
        let p = policy();
        let leaky = "1/3 updated; node cve-2026-1234-a Draining";
        let mut status = PatchPolicyStatus {
            phase: Some(Phase::Progressing),
            message: Some(leaky.into()),
            conditions: vec![condition(leaky)],
            failed: vec![FailedNode {
                node: "w-1".into(),
                reason: format!("patch command failed: fix {DETAILS}"),
            }],
            ..PatchPolicyStatus::default()
        };
        scrub_status(&p, &mut status);
        let text = serde_json::to_string(&status).unwrap().to_ascii_lowercase();
        assert!(!text.contains("cve-2026-1234"), "{text}");
        assert_eq!(
            status.message.as_deref(),
            Some("1/3 updated; node [embargoed]-a Draining")
        );
        assert_eq!(
            status.failed[0].reason,
            "patch command failed: fix [embargoed]"
        );

        let nodes = |updated, failed| {
            Some(crate::api::NodeCounts {
                total: 3,
                updated,
                failed,
                ..crate::api::NodeCounts::default()
            })
        };
        let mut done = PatchPolicyStatus {
            phase: Some(Phase::Completed),
            message: Some(format!("completed; {DETAILS}")),
            nodes: nodes(3, 0),
            ..PatchPolicyStatus::default()
        };
        scrub_status(&p, &mut done);
        assert!(done.message.unwrap().contains(DETAILS));
        // Completed (tolerated) with a failed node: still embargoed.
        let mut tolerated = PatchPolicyStatus {
            phase: Some(Phase::Completed),
            message: Some(format!("completed with 1 failed (tolerated); {DETAILS}")),
            nodes: nodes(2, 1),
            ..PatchPolicyStatus::default()
        };
        scrub_status(&p, &mut tolerated);
        assert!(!tolerated.message.unwrap().contains("CVE-2026-1234"));
    }

    #[test]
    fn delivery_condition_follows_the_records() {
        let now = Timestamp::UNIX_EPOCH;
        let record = |results: &[&str]| NotificationRecord {
            event: "Started".into(),
            at: Time(now),
            node: None,
            results: results.iter().map(|s| s.to_string()).collect(),
        };
        let mut s = PatchPolicyStatus::default();
        set_condition(&mut s, None, now);
        assert!(s.conditions.is_empty());
        s.notifications = vec![record(&["a=delivered", "b=pending"])];
        set_condition(&mut s, None, now);
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].status, "True");
        let prev = s.clone();
        s.notifications = vec![record(&["a=delivered", "b=failed"])];
        set_condition(&mut s, Some(&prev), now);
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].reason, "DeliveryFailed");
        assert!(
            s.conditions[0].message.contains("Started to b"),
            "{:?}",
            s.conditions[0]
        );
    }
}
