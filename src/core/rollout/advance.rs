//! Phase 2, advance: the per-node state machine moves each node of ours that
//! is in progress one step (see the module docs of [`crate::core::rollout`]).

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::api::{OnTimeout, Step};
use crate::core::duration;
use crate::core::gates::evaluate::workloads_verdict;
use crate::core::gates::{TimeoutState, timeout_state};
use crate::core::node_record::NodeRecord;

use super::classify::{Class, Classified};
use super::{Action, Ctx, DrainState, NodeView, PATCH_REPORT_SLACK, add};

/// What advancing one node gives.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Advance {
    /// The side effect, if any.
    pub action: Option<Action>,
    /// The node's record after the action, when its step changes.
    pub record: Option<NodeRecord>,
    /// When to look at the node again (a deadline, the end of settling).
    pub wake: Option<Timestamp>,
    /// Why the workloads gate keeps the settled node from counting as done,
    /// and since when (the end of its settle).
    pub held: Option<(String, Timestamp)>,
}

impl Advance {
    /// Nothing to do; look again at `wake`.
    fn wait(wake: Option<Timestamp>) -> Advance {
        Advance {
            wake,
            ..Advance::default()
        }
    }

    /// An action that keeps the step.
    fn act(action: Action, wake: Option<Timestamp>) -> Advance {
        Advance {
            action: Some(action),
            record: None,
            wake,
            held: None,
        }
    }

    /// A step change: `action` writes `record`.
    fn step(action: Action, record: NodeRecord, wake: Option<Timestamp>) -> Advance {
        Advance {
            action: Some(action),
            record: Some(record),
            wake,
            held: None,
        }
    }
}

/// The output of [`advance_all`].
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Advanced {
    /// At most one action per node in progress, in node order.
    pub actions: Vec<Action>,
    /// New records by node position.
    pub records: BTreeMap<usize, NodeRecord>,
    /// The earliest instant any node needs a look.
    pub wake: Option<Timestamp>,
    /// Ready nodes this plan uncordons and releases: their budget slots are
    /// free for starts applied after the release.
    pub freed: usize,
    /// Why the workloads gate keeps settled nodes from counting as done
    /// (the first such node's reason), for the status message: it is what
    /// holds the rollout then, not the budget those nodes still take.
    pub workloads_hold: Option<String>,
    /// Since when the workloads gate holds a settled node (the earliest), for
    /// `gates.timeout`.
    pub workloads_held_since: Option<Timestamp>,
}

/// Advances every node classified in flight.
pub(super) fn advance_all(ctx: &Ctx<'_>, nodes: &[NodeView], classified: &Classified) -> Advanced {
    let mut out = Advanced::default();
    for (i, n) in nodes.iter().enumerate() {
        let Some(rec) = n
            .record
            .as_ref()
            .filter(|_| classified.is(i, Class::InFlight))
        else {
            continue;
        };
        let Advance {
            action,
            record,
            wake,
            held,
        } = advance(ctx, n, rec);
        if let Some((why, since)) = held {
            if out.workloads_hold.is_none() {
                out.workloads_hold = Some(why);
            }
            out.workloads_held_since =
                Some(out.workloads_held_since.map_or(since, |t| t.min(since)));
        }
        if let Some(a) = action {
            if matches!(a, Action::Release { uncordon: true, .. }) && n.ready {
                out.freed += 1;
            }
            out.actions.push(a);
        }
        if let Some(r) = record {
            out.records.insert(i, r);
        }
        out.wake = earliest(out.wake, wake);
    }
    out
}

/// The earlier of two optional instants.
pub(super) fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Advances one node of ours whose record `rec` has a step in progress.
pub(super) fn advance(ctx: &Ctx<'_>, n: &NodeView, rec: &NodeRecord) -> Advance {
    match rec.step {
        Step::Draining => draining(ctx, n, rec),
        Step::Patching => patching(ctx, n, rec),
        Step::Rebooting | Step::WaitingReady => rebooting(ctx, n, rec),
        Step::Settling => settling(ctx, n, rec),
        Step::Pending | Step::Done | Step::Failed => Advance::default(),
    }
}

/// `rec` moved to `step` now.
fn step_to(ctx: &Ctx<'_>, rec: &NodeRecord, step: Step) -> NodeRecord {
    NodeRecord {
        step,
        since: ctx.now,
        ..rec.clone()
    }
}

/// Fails the node with `reason`, uncordoning it if sofort cordoned it.
fn fail(ctx: &Ctx<'_>, n: &NodeView, rec: &NodeRecord, reason: String) -> Advance {
    // The maintenance labels go with the failure (the node is back in
    // service or left to the admin).
    let record = NodeRecord {
        reason: Some(reason),
        labels: Default::default(),
        drain_after: None,
        ..step_to(ctx, rec, Step::Failed)
    };
    let action = Action::MarkFailed {
        node: n.name.clone(),
        uncordon: !rec.was_unschedulable && n.unschedulable,
        record: record.clone(),
    };
    Advance::step(action, record, None)
}

fn cordon_again(n: &NodeView, rec: &NodeRecord, wake: Option<Timestamp>) -> Advance {
    let action = Action::CordonAgain {
        node: n.name.clone(),
        record: rec.clone(),
    };
    Advance::act(action, wake)
}

fn draining(ctx: &Ctx<'_>, n: &NodeView, rec: &NodeRecord) -> Advance {
    let deadline = add(rec.drain_start(), ctx.cfg.drain_timeout);
    if !n.unschedulable {
        return cordon_again(n, rec, Some(deadline));
    }
    if let Some(at) = rec.drain_after.filter(|at| ctx.now < *at) {
        // Labels set, load balancers deregistering: no eviction yet.
        return Advance::wait(Some(at));
    }
    let blocker = match &n.drain {
        DrainState::Drained => return after_drain(ctx, n, rec),
        DrainState::Failed { reason } => return fail(ctx, n, rec, reason.clone()),
        DrainState::Running { blocker, .. } => blocker.as_deref(),
        DrainState::Idle => None,
    };
    let drain = |force| Action::Drain {
        node: n.name.clone(),
        record: None,
        force,
    };
    if ctx.now < deadline {
        return Advance {
            action: (n.drain == DrainState::Idle).then(|| drain(false)),
            record: None,
            wake: Some(deadline),
            held: None,
        };
    }
    match ctx.spec.drain.on_timeout {
        OnTimeout::Fail => {
            let mut reason = format!(
                "drain timeout after {}",
                duration::format(ctx.cfg.drain_timeout)
            );
            if let Some(b) = blocker {
                reason.push_str(": ");
                reason.push_str(b);
            }
            fail(ctx, n, rec, reason)
        }
        OnTimeout::Force => {
            let forcing = matches!(n.drain, DrainState::Running { forcing: true, .. });
            Advance {
                action: (!forcing).then(|| drain(true)),
                ..Advance::default()
            }
        }
    }
}

/// Drained: patch when the spec has a patch command, else reboot.
fn after_drain(ctx: &Ctx<'_>, n: &NodeView, rec: &NodeRecord) -> Advance {
    let Some(req) = &ctx.cfg.patch else {
        return request_reboot(ctx, n, rec);
    };
    let record = NodeRecord {
        patch: Some(req.clone()),
        ..step_to(ctx, rec, Step::Patching)
    };
    let deadline = add(add(ctx.now, ctx.cfg.patch_timeout), PATCH_REPORT_SLACK);
    let action = Action::RequestPatch {
        node: n.name.clone(),
        record: record.clone(),
    };
    Advance::step(action, record, Some(deadline))
}

fn patching(ctx: &Ctx<'_>, n: &NodeView, rec: &NodeRecord) -> Advance {
    let deadline = add(add(rec.since, ctx.cfg.patch_timeout), PATCH_REPORT_SLACK);
    let result = n
        .patch_result
        .as_ref()
        .filter(|r| r.policy == ctx.name && r.revision == rec.revision && r.at >= rec.since);
    match result {
        Some(r) if r.success => request_reboot(ctx, n, rec),
        Some(r) => fail(ctx, n, rec, format!("patch command failed: {}", r.message)),
        None if ctx.now >= deadline => fail(
            ctx,
            n,
            rec,
            format!(
                "patch timeout: no result from the agent within {}",
                duration::format(ctx.cfg.patch_timeout + PATCH_REPORT_SLACK)
            ),
        ),
        None => Advance::wait(Some(deadline)),
    }
}

/// Asks for the reboot, for the node's current boot ID. Never for a
/// schedulable node (it is cordoned again first), never without a boot ID.
fn request_reboot(ctx: &Ctx<'_>, n: &NodeView, rec: &NodeRecord) -> Advance {
    if !n.unschedulable {
        return cordon_again(n, rec, None);
    }
    let Some(boot_id) = &n.boot_id else {
        let reason = "node reports no boot ID, so a reboot could not be confirmed; not rebooted";
        return fail(ctx, n, rec, reason.into());
    };
    let record = NodeRecord {
        boot_id_before: Some(boot_id.clone()),
        ..step_to(ctx, rec, Step::Rebooting)
    };
    let action = Action::RequestReboot {
        node: n.name.clone(),
        boot_id: boot_id.clone(),
        record: record.clone(),
    };
    Advance::step(action, record, Some(add(ctx.now, ctx.cfg.reboot_timeout)))
}

/// `Rebooting` and `WaitingReady`: confirmed only by a new boot ID and Ready.
fn rebooting(ctx: &Ctx<'_>, n: &NodeView, rec: &NodeRecord) -> Advance {
    let (now, cfg) = (ctx.now, ctx.cfg);
    let deadline = add(rec.since, cfg.reboot_timeout);
    let new_boot =
        matches!((&n.boot_id, &rec.boot_id_before), (Some(id), Some(before)) if id != before);
    let set_step = |step: Step, wake: Timestamp| {
        let record = step_to(ctx, rec, step);
        let action = Action::SetStep {
            node: n.name.clone(),
            record: record.clone(),
        };
        Advance::step(action, record, Some(wake))
    };
    if new_boot && n.ready {
        return set_step(Step::Settling, add(now, cfg.settle));
    }
    if now >= deadline {
        let what = if new_boot {
            "came back with a new boot ID but is not Ready"
        } else {
            "still reports the boot ID from before the reboot"
        };
        let reason = format!(
            "reboot not confirmed within {}: node {what}",
            duration::format(cfg.reboot_timeout)
        );
        return fail(ctx, n, rec, reason);
    }
    let acked = n.reboot_ack.as_ref().is_some_and(|a| {
        a.policy == ctx.name
            && a.revision == rec.revision
            && Some(&a.boot_id) == rec.boot_id_before.as_ref()
    });
    if rec.step == Step::Rebooting && (new_boot || !n.ready || acked) {
        return set_step(Step::WaitingReady, add(now, cfg.reboot_timeout));
    }
    Advance::wait(Some(deadline))
}

/// Ready throughout `settle`: release (and uncordon, unless it was
/// unschedulable before sofort) in one write.
fn settling(ctx: &Ctx<'_>, n: &NodeView, rec: &NodeRecord) -> Advance {
    let end = add(rec.since, ctx.cfg.settle);
    if !n.ready || ctx.now < end {
        return Advance::wait((ctx.now < end).then_some(end));
    }
    // The workloads gate: the node counts as done only once they are healthy.
    // Held since its settle ended; past `gates.timeout` with `onTimeout:
    // Continue` it counts as done anyway (with Halt the rollout halts, see
    // `gate::health`, and the node stays held).
    if let (Some(gates), Some(obs)) = (ctx.cfg.gates.as_ref(), ctx.obs)
        && let Some(why) = workloads_verdict(gates, obs, ctx.now).reason()
        && timeout_state(end, ctx.now, gates.timeout, gates.on_timeout) != TimeoutState::Overridden
    {
        return Advance {
            held: Some((why.to_string(), end)),
            ..Advance::wait(Some(add(ctx.now, obs.max_age / 3)))
        };
    }
    let mut done = n.done.clone();
    done.insert(ctx.name.to_string(), rec.revision.clone());
    let record = NodeRecord {
        step: Step::Done,
        ..rec.clone()
    };
    let action = Action::Release {
        node: n.name.clone(),
        done,
        uncordon: !rec.was_unschedulable && n.unschedulable,
    };
    Advance::step(action, record, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PatchPolicy;
    use crate::core::node_record::PatchResult;
    use crate::core::rollout::Config;
    use crate::core::rollout::test_support::{NOW, node, policy, rec, ts};

    fn at(p: &PatchPolicy, n: &NodeView, now: &str) -> Advance {
        let cfg = Config::from_spec(&p.spec);
        let ctx = Ctx {
            obs: None,
            name: "p",
            spec: &p.spec,
            cfg: &cfg,
            now: ts(now),
        };
        let Some(r) = n.record.as_ref() else {
            return Advance::default();
        };
        advance(&ctx, n, r)
    }

    fn cordoned(step: Step) -> NodeView {
        let mut n = node("w-a1", "a");
        n.unschedulable = true;
        n.record = Some(rec("p", step, ts(NOW)));
        n
    }

    #[test]
    fn a_draining_node_found_schedulable_is_cordoned_again_not_claimed() {
        let p = policy("p");
        let mut n = cordoned(Step::Draining);
        n.unschedulable = false;
        n.drain = DrainState::Drained;
        let a = at(&p, &n, "2026-11-27T09:05:00Z");
        assert_eq!(
            a,
            Advance {
                action: Some(Action::CordonAgain {
                    node: "w-a1".into(),
                    record: rec("p", Step::Draining, ts(NOW)),
                }),
                record: None,
                wake: Some(ts("2026-11-27T09:15:00Z")),
                held: None,
            }
        );
    }

    #[test]
    fn drained_goes_to_patching_with_its_deadline_then_reboots_on_success() {
        let mut p = policy("p");
        p.spec.patch = Some(crate::api::PatchSpec {
            command: vec!["apt-get".into(), "upgrade".into()],
            timeout: "10m".into(),
        });
        let mut n = cordoned(Step::Draining);
        n.drain = DrainState::Drained;
        let a = at(&p, &n, NOW);
        let Some(Action::RequestPatch { record, .. }) = &a.action else {
            panic!("{a:?}")
        };
        assert_eq!(record.step, Step::Patching);
        assert_eq!(a.record.as_ref(), Some(record));
        // 10 min patch timeout + 1 min for the agent to report.
        assert_eq!(a.wake, Some(ts("2026-11-27T09:11:00Z")));
        n.record = Some(record.clone());
        let result = |success: bool, at: &str| PatchResult {
            policy: "p".into(),
            revision: "r1".into(),
            success,
            exit_code: Some(i32::from(!success)),
            message: "exit 1".into(),
            output_tail: String::new(),
            at: ts(at),
        };
        // A result from before the step began does not count.
        n.patch_result = Some(result(true, "2026-11-27T08:00:00Z"));
        assert_eq!(at(&p, &n, "2026-11-27T09:05:00Z"), Advance::wait(a.wake));
        n.patch_result = Some(result(true, "2026-11-27T09:04:00Z"));
        let ok = at(&p, &n, "2026-11-27T09:05:00Z");
        assert!(
            matches!(ok.action, Some(Action::RequestReboot { .. })),
            "{ok:?}"
        );
        n.patch_result = Some(result(false, "2026-11-27T09:04:00Z"));
        let failed = at(&p, &n, "2026-11-27T09:05:00Z");
        assert_eq!(
            failed.record.and_then(|r| r.reason).as_deref(),
            Some("patch command failed: exit 1")
        );
    }

    #[test]
    fn no_boot_id_fails_instead_of_rebooting() {
        let p = policy("p");
        let mut n = cordoned(Step::Draining);
        n.drain = DrainState::Drained;
        n.boot_id = None;
        let a = at(&p, &n, NOW);
        let Some(Action::MarkFailed {
            uncordon, record, ..
        }) = &a.action
        else {
            panic!("{a:?}")
        };
        assert!(uncordon);
        assert!(
            record
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("no boot ID"))
        );
    }

    #[test]
    fn settling_waits_for_ready_and_its_end_then_releases() {
        let p = policy("p");
        let mut n = cordoned(Step::Settling);
        // Default settle: 2 min.
        assert_eq!(
            at(&p, &n, "2026-11-27T09:01:00Z"),
            Advance::wait(Some(ts("2026-11-27T09:02:00Z")))
        );
        n.ready = false;
        assert_eq!(at(&p, &n, "2026-11-27T09:03:00Z"), Advance::wait(None));
        n.ready = true;
        n.done.insert("other".into(), "x".into());
        let a = at(&p, &n, "2026-11-27T09:03:00Z");
        let Some(Action::Release { done, uncordon, .. }) = &a.action else {
            panic!("{a:?}")
        };
        assert!(uncordon);
        assert_eq!(done.len(), 2);
        assert_eq!(a.record.map(|r| r.step), Some(Step::Done));
    }

    #[test]
    fn advance_all_frees_the_slot_of_a_ready_released_node_only() {
        let p = policy("p");
        let cfg = Config::from_spec(&p.spec);
        let ctx = Ctx {
            obs: None,
            name: "p",
            spec: &p.spec,
            cfg: &cfg,
            now: ts("2026-11-27T10:00:00Z"),
        };
        let mut ready = cordoned(Step::Settling);
        ready.name = "w-a2".into();
        let mut not_ready = cordoned(Step::Rebooting);
        not_ready.ready = false;
        let nodes = [not_ready, ready, node("w-a3", "a")];
        let classified = crate::core::rollout::classify::classify(
            &ctx,
            &crate::core::rollout::NodeIndex::build(&p.spec, &nodes, false),
            &nodes,
        );
        let out = advance_all(&ctx, &nodes, &classified);
        assert_eq!(out.freed, 1);
        assert_eq!(out.actions.len(), 2, "{:?}", out.actions);
        assert_eq!(out.records.keys().copied().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(earliest(Some(ts(NOW)), None), Some(ts(NOW)));
    }
}
