//! Applying a pass's [`Plan`]: batch by batch, each batch's node writes
//! concurrently, then what each operation does once its write is stored
//! (Events, step metrics, starting and stopping drains). A live policy's
//! rollout and a deleted policy's give-backs take this same path.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use serde_json::Value;

use super::ParsedPolicy;
use super::drain_workers::DrainJob;
use super::events;
use super::node_writes::{action_label, already_stored, rv_of};
use super::patches::{self, step_name};
use super::plan::{Op, Plan};
use super::reconciler::Reconciler;
use super::writes::Writes;
use crate::api::Step;
use crate::controller::drain::{DrainMode, DrainSettings};
use crate::core::node_record::NodeRecord;
use crate::core::rollout::{Action, NodeView};
use crate::notify::node_progress;

/// Node writes of one batch in flight at once. With 50 nodes moving in one
/// pass, one-after-another writes made the last node of a wave wait for the
/// 49 before it.
const WRITE_CONCURRENCY: usize = 16;

/// A node's step and when it began.
type StepSince = (Step, jiff::Timestamp);

/// How long a drain may run: to the policy's drain deadline counted from
/// `since` (when the node entered Draining), or, when forcing, the pods'
/// grace period plus a minute for the deleted pods to go.
pub(crate) fn drain_time_left(
    since: jiff::Timestamp,
    drain_timeout: Duration,
    force: bool,
    grace_period_seconds: Option<i64>,
    now: jiff::Timestamp,
) -> Duration {
    if force {
        let grace = grace_period_seconds.unwrap_or(30).max(0) as u64;
        return Duration::from_secs(grace + 60);
    }
    let end = since
        .checked_add(jiff::SignedDuration::try_from(drain_timeout).unwrap_or_default())
        .unwrap_or(now);
    Duration::try_from(end.duration_since(now)).unwrap_or(Duration::ZERO)
}

fn step_of(node: Option<&Arc<Node>>) -> Option<StepSince> {
    node.and_then(|n| NodeView::record_of(n))
        .map(|r| (r.step, r.since))
}

/// Most progress notices kept per policy while its status writes lose.
const MAX_PENDING_PROGRESS: usize = 4096;

impl<W: Writes> Reconciler<W> {
    /// Applies `plan` batch by batch; stops at the first batch with a failed
    /// write (later batches may rely on it). False when a write failed.
    pub(super) async fn apply_plan(
        &mut self,
        policy: &ParsedPolicy,
        plan: &Plan,
        objects: &mut BTreeMap<String, Arc<Node>>,
    ) -> bool {
        // Nodes whose write is held back: their later operations wait too
        // (a drain must not start on a claim that was not sent).
        let mut held = HashSet::new();
        for batch in patches::batches(&plan.ops, plan.first_start) {
            if !self
                .apply_batch(policy, &plan.ops, &batch, objects, &mut held)
                .await
            {
                return false;
            }
        }
        true
    }

    /// Applies the operations `batch` (indexes into `ops`, each of another
    /// node): their node writes concurrently, then the rest of each operation
    /// in order. A node whose write is held back ([`super::node_writes::NodeHolds`]) is added to
    /// `held` and its operations skipped. False when a write failed.
    async fn apply_batch(
        &mut self,
        policy: &ParsedPolicy,
        ops: &[Op],
        batch: &[usize],
        objects: &mut BTreeMap<String, Arc<Node>>,
        held: &mut HashSet<String>,
    ) -> bool {
        let name = policy.name_any();
        let now = tokio::time::Instant::now();
        // (operation, the node's step and its start before the write, node patch)
        let mut prepared: Vec<(&Op, Option<StepSince>, Option<Value>)> = Vec::new();
        for &i in batch {
            let Some(op) = ops.get(i) else {
                continue;
            };
            if held.contains(op.node()) {
                continue;
            }
            let object = objects.get(op.node());
            let rv = object.and_then(|n| n.resource_version());
            let current = object.and_then(|n| NodeView::record_of(n));
            let patch = patches::node_patch(op, rv.as_deref(), current.as_ref());
            if let Some(p) = &patch {
                let action = action_label(op);
                if self
                    .holds
                    .held(op.node(), object.and_then(|o| rv_of(o)), now)
                {
                    self.metrics.count_node_write(action, "held");
                    held.insert(op.node().to_string());
                    continue;
                }
                if object.is_some_and(|o| already_stored(o, p)) {
                    // Done before (the store has not caught up with this
                    // process's write): nothing to send, nothing to announce.
                    self.metrics.count_node_write(action, "unchanged");
                    continue;
                }
            }
            if let Op::Rollout(Action::MarkFailed { node, .. }) | Op::GiveBack { node, .. } = op {
                // No more evictions once the node is given up or given back.
                self.drains.stop(node);
            }
            prepared.push((op, step_of(object), patch));
        }
        let results = self.write_nodes(&prepared).await;
        let mut ok = true;
        // Progress notices of the node writes stored (admin channels).
        let mut progress = Vec::new();
        for ((op, was, _), result) in prepared.into_iter().zip(results) {
            let action = action_label(op);
            match result {
                Some(Err(e)) => {
                    let seen = objects.get(op.node()).and_then(|o| rv_of(o));
                    self.write_failed(&name, op.node(), action, seen, &e);
                    ok = false;
                    continue;
                }
                Some(Ok(updated)) => {
                    self.metrics.count_node_write(action, "stored");
                    self.holds.stored(op.node());
                    let updated = Arc::new(updated);
                    objects.insert(op.node().to_string(), updated.clone());
                    self.overlay.put(updated);
                    if let Op::Rollout(action) = op
                        && let Some(kind) = node_progress::notice(action, was.map(|w| w.0))
                    {
                        progress.push((kind, op.node().to_string()));
                    }
                }
                None => {}
            }
            if let (Op::Rollout(_), Some((step, since))) = (op, was)
                && step_of(objects.get(op.node())).map(|s| s.0) != Some(step)
            {
                // The node left `step`: how long it took.
                let took = self.cfg.clock.now().duration_since(since).as_secs_f64();
                self.metrics.observe_step(step_name(step), took.max(0.0));
            }
            self.after_write(policy, op, was.map(|w| w.0), objects);
        }
        // Queued once the pass's status (and the rollout notices it
        // records, such as Started) is written: see `flush_progress`.
        let pending = self.progress.entry(name.to_string()).or_default();
        pending.extend(progress);
        // Bounded: over passes that keep losing, the oldest go (best effort).
        let excess = pending.len().saturating_sub(MAX_PENDING_PROGRESS);
        pending.drain(..excess);
        ok
    }

    /// Queues the progress notices of this pass's stored node writes, after
    /// the rollout-level notices of the same pass, so an admin channel hears
    /// "started" before the first "draining".
    pub(super) async fn flush_progress(&mut self, policy: &ParsedPolicy) {
        let Some(progress) = self.progress.remove(policy.name_any().as_str()) else {
            return;
        };
        if progress.is_empty() {
            return;
        }
        let now = self.cfg.clock.now();
        let withheld = self
            .notifications
            .node_progress(policy, &progress, now)
            .await;
        for (type_, reason, note) in withheld {
            self.publish_policy(policy, type_, &reason, &note);
        }
    }

    /// The batch's node writes, at most [`WRITE_CONCURRENCY`] in flight,
    /// results in batch order (None: the operation writes nothing).
    async fn write_nodes(
        &self,
        prepared: &[(&Op, Option<StepSince>, Option<Value>)],
    ) -> Vec<Option<Result<Node, kube::Error>>> {
        let writes = &self.writes;
        // Boxed futures collected first: the stream then holds no closure
        // whose lifetimes the compiler cannot prove Send for.
        let futures: Vec<BoxFuture<'_, Option<Result<Node, kube::Error>>>> = prepared
            .iter()
            .map(|(op, _, patch)| {
                let node = op.node().to_string();
                let patch = patch.clone();
                async move {
                    match patch {
                        Some(p) => Some(writes.patch_node(&node, p).await),
                        None => None,
                    }
                }
                .boxed()
            })
            .collect();
        futures::stream::iter(futures)
            .buffered(WRITE_CONCURRENCY)
            .collect()
            .await
    }

    /// A node write failed: a conflict (the node changed since it was read,
    /// at version `seen`) is decided again once the store shows a newer
    /// version; anything else is counted and logged, then retried after a
    /// backoff.
    fn write_failed(
        &mut self,
        policy: &str,
        node: &str,
        action: &'static str,
        seen: Option<u64>,
        e: &kube::Error,
    ) {
        let now = tokio::time::Instant::now();
        match e {
            kube::Error::Api(s) if s.code == 409 => {
                self.metrics.count_node_write(action, "conflict");
                self.holds.conflict(node, seen, now);
                tracing::debug!(%policy, node, "node changed meanwhile; deciding again");
            }
            _ => {
                self.metrics.count_node_write(action, "error");
                self.holds.failed(node, now);
                self.metrics.reconcile_error(policy);
                let error = self.notifications.scrub(&e.to_string());
                tracing::warn!(%policy, node, %error, "action failed; retrying");
            }
        }
    }

    /// What an operation does besides its node write, once that is stored:
    /// Events, metrics, starting and stopping drains. `was`: the node's step
    /// before the write.
    fn after_write(
        &mut self,
        policy: &ParsedPolicy,
        op: &Op,
        was: Option<Step>,
        objects: &BTreeMap<String, Arc<Node>>,
    ) {
        if let Op::Rollout(Action::Claim { .. } | Action::CordonAgain { .. }) = op {
            self.metrics.observe_step("Pending", 0.0);
        }
        for note in events::of_op(op, &policy.name_any(), was) {
            self.emit(policy, note);
        }
        match op {
            Op::Rollout(Action::Drain {
                node,
                record,
                force,
            }) => self.ensure_drain(policy, node, record.as_ref(), *force, objects),
            Op::Rollout(Action::Release { node, .. }) => {
                self.drains.stop(node);
                self.published
                    .retain(|k| !k.starts_with(&format!("{node}/")));
            }
            _ => {}
        }
    }

    /// Makes sure a drain worker runs for `node` until its deadline, and
    /// publishes what blocks it (once per blocker).
    fn ensure_drain(
        &mut self,
        policy: &ParsedPolicy,
        node: &str,
        record: Option<&NodeRecord>,
        force: bool,
        objects: &BTreeMap<String, Arc<Node>>,
    ) {
        // The drain timeout counts from the end of the wait after setting
        // the maintenance labels, if there was one.
        let since = record
            .map(NodeRecord::drain_start)
            .or_else(|| {
                objects
                    .get(node)
                    .and_then(|n| NodeView::record_of(n))
                    .map(|r| r.drain_start())
            })
            .unwrap_or_else(|| self.cfg.clock.now());
        let drain_timeout = policy.config.drain_timeout;
        let now = self.cfg.clock.now();
        let grace = policy.spec.drain.grace_period_seconds;
        let left = drain_time_left(since, drain_timeout, force, grace, now);
        let settings = DrainSettings::from_spec(
            &policy.spec.drain,
            self.cfg.max_evictions_in_flight,
            self.cfg.eviction_retry,
        );
        let revision = record
            .map(|r| r.revision.clone())
            .unwrap_or_else(|| policy.spec.revision.clone());
        if force && let Some(b) = self.drains.blocker(node) {
            self.emit(policy, events::drain_forced(node, &b));
        }
        self.drains.ensure(DrainJob {
            client: self.client.clone(),
            evict_client: self.evict_client.clone(),
            node: node.to_string(),
            revision,
            settings,
            mode: if force {
                DrainMode::Force
            } else {
                DrainMode::Evict
            },
            deadline: tokio::time::Instant::now() + left,
            kick: self.kick.clone(),
            metrics: self.metrics.clone(),
        });
        if let Some(b) = self.drains.blocker(node)
            && self.published.insert(format!("{node}/DrainBlocked/{b}"))
        {
            for note in events::drain_blocked(node, &b) {
                self.emit(policy, note);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_runs_to_the_policy_deadline_and_a_forced_one_for_the_grace_period() {
        let since: jiff::Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
        let now: jiff::Timestamp = "2026-11-27T00:10:00Z".parse().unwrap();
        let fifteen = Duration::from_secs(15 * 60);
        assert_eq!(
            drain_time_left(since, fifteen, false, None, now),
            Duration::from_secs(300)
        );
        let late: jiff::Timestamp = "2026-11-27T01:00:00Z".parse().unwrap();
        assert_eq!(
            drain_time_left(since, fifteen, false, None, late),
            Duration::ZERO
        );
        assert_eq!(
            drain_time_left(since, fifteen, true, None, late),
            Duration::from_secs(90)
        );
        assert_eq!(
            drain_time_left(since, fifteen, true, Some(-5), late),
            Duration::from_secs(60)
        );
    }
}
