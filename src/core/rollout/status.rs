//! Phase 5, status: the policy status and when to look again.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    ActiveNode, FailedNode, HistoryEntry, NodeCounts, PatchPolicySpec, PatchPolicyStatus, Phase,
    Step, WindowStatus,
};
use crate::core::duration;
use crate::core::node_record::{NodeRecord, RECORD_ANNOTATION};
use crate::core::order::{self, OrderKey};
use crate::core::window::human_time;

use super::advance::{Advanced, earliest};
use super::classify::{Class, Classified};
use super::gate::{Closed, Gates};
use super::start::{Hold, Starts};
use super::{Ctx, NodeIndex, NodeView};

/// Shortest `requeue_after`.
const REQUEUE_FLOOR: Duration = Duration::from_millis(100);

/// What the status is made of: every earlier phase's output.
pub(super) struct StatusInput<'a> {
    pub ctx: &'a Ctx<'a>,
    /// The previous status.
    pub prev: &'a PatchPolicyStatus,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    pub index: &'a NodeIndex,
    pub nodes: &'a [NodeView],
    pub classified: &'a Classified,
    pub advanced: &'a Advanced,
    pub gates: &'a Gates,
    pub starts: &'a Starts,
}

/// The output of [`status`].
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Outcome {
    /// The status to write.
    pub status: PatchPolicyStatus,
    /// Decide again after this long even if nothing changes.
    pub requeue_after: Option<Duration>,
}

/// The nodes as this plan leaves them.
#[derive(Debug, Default)]
struct Tally {
    /// In progress after the plan, in rollout order.
    active: Vec<ActiveNode>,
    /// Failed for this revision, by name.
    failed: Vec<FailedNode>,
    /// Released by this plan: still listed in `active` with the step their
    /// Node shows, and not yet counted as updated. A node counts as updated
    /// only once its Node shows the release (the done map of the next pass),
    /// so a release write that fails never reads as `Completed` while the
    /// node is still cordoned.
    releasing: usize,
}

/// Counts, phase and message after this plan.
struct Summary {
    counts: NodeCounts,
    pending: usize,
    phase: Phase,
    message: String,
}

/// Builds the status.
pub(super) fn status(input: &StatusInput<'_>) -> Outcome {
    let StatusInput {
        ctx, prev, gates, ..
    } = input;
    let (spec, now) = (ctx.spec, ctx.now);
    let same_rev = prev.revision.as_deref() == Some(spec.revision.as_str());
    let tally = tally(input);
    let releasing = tally.releasing > 0;
    let summary = summarize(input, &tally);
    let phase = summary.phase;
    let started_at =
        prev.started_at.clone().filter(|_| same_rev).or_else(|| {
            (input.starts.started() > 0 || !tally.active.is_empty()).then_some(Time(now))
        });
    let completed_at = (phase == Phase::Completed).then(|| {
        prev.completed_at
            .clone()
            .filter(|_| same_rev && prev.phase == Some(Phase::Completed))
            .unwrap_or(Time(now))
    });
    // A rollout that completes goes into the history, once. One that
    // selected no node did nothing worth listing.
    let history = match &completed_at {
        Some(at) if summary.counts.total > 0 => HistoryEntry::append(
            &prev.history,
            HistoryEntry {
                id: spec.revision.clone(),
                urgent: spec.urgent,
                started_at: started_at.clone(),
                completed_at: at.clone(),
                nodes: summary.counts.total,
                failed: summary.counts.failed,
            },
        ),
        _ => prev.history.clone(),
    };
    let conditions = conditions(input, phase, &summary.message);
    let status = PatchPolicyStatus {
        observed_generation: input.generation,
        revision: Some(spec.revision.clone()),
        phase: Some(phase),
        announced_at: Some(Time(gates.announced_at)),
        scheduled_start: gates.scheduled.map(Time),
        next_window: next_window(ctx, gates),
        started_at,
        completed_at,
        nodes: Some(summary.counts),
        active: tally.active,
        failed: tally.failed,
        notifications: if same_rev {
            prev.notifications.clone()
        } else {
            Vec::new()
        },
        gates: gates.status.clone(),
        // Written by the controller's pre-flight; kept for its revision.
        preflight: prev
            .preflight
            .clone()
            .filter(|p| p.revision == spec.revision),
        history,
        conditions,
        message: Some(summary.message),
        // Rounds are planned outside decide (see `crate::core::round`);
        // a policy decided without a round scope has none.
        round: ctx.cfg.round.as_ref().and(prev.round.clone()),
        next_round: ctx.cfg.round.as_ref().and(prev.next_round.clone()),
    };
    Outcome {
        status,
        requeue_after: requeue_after(input, summary.pending, releasing),
    }
}

/// Where each classified node stands after the plan.
fn tally(input: &StatusInput<'_>) -> Tally {
    let StatusInput {
        ctx,
        nodes,
        classified,
        advanced,
        starts,
        index,
        ..
    } = input;
    let mut out = Tally::default();
    let mut active: Vec<(usize, ActiveNode)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let Some(class) = classified.classes[i] else {
            continue;
        };
        let rec: Option<&NodeRecord> = advanced
            .records
            .get(&i)
            .or_else(|| starts.records.get(&i))
            .or(n.record.as_ref().filter(|r| r.policy == ctx.name));
        let Some(r) = rec else { continue };
        let this_rev = r.revision == ctx.spec.revision;
        if r.step.in_progress() && matches!(class, Class::InFlight | Class::Todo) {
            let a = ActiveNode {
                node: n.name.clone(),
                step: r.step,
                since: Time(r.since),
            };
            active.push((i, a));
        } else if r.step == Step::Failed && this_rev {
            out.failed.push(FailedNode {
                node: n.name.clone(),
                reason: r.reason.clone().unwrap_or_else(|| "failed".into()),
            });
        } else if r.step == Step::Done && class == Class::InFlight {
            // Released by this plan; until the Node shows it, it is in the
            // step its record shows.
            if let Some(was) = n.record.as_ref().filter(|w| w.step.in_progress()) {
                out.releasing += 1;
                let a = ActiveNode {
                    node: n.name.clone(),
                    step: was.step,
                    since: Time(was.since),
                };
                active.push((i, a));
            }
        }
    }
    out.active = in_order(ctx, index, nodes, active);
    out.failed
        .sort_by(|a, b| order::natural_cmp(&a.node, &b.node));
    out
}

/// Active nodes in rollout order.
fn in_order(
    ctx: &Ctx<'_>,
    index: &NodeIndex,
    nodes: &[NodeView],
    mut active: Vec<(usize, ActiveNode)>,
) -> Vec<ActiveNode> {
    if active.iter().all(|(i, _)| index.rank(*i).is_some()) {
        active.sort_unstable_by_key(|(i, _)| index.rank(*i));
        return active.into_iter().map(|(_, a)| a).collect();
    }
    let spec = &ctx.spec.rollout.order;
    let mut keyed: Vec<(OrderKey<'_>, usize, ActiveNode)> = active
        .into_iter()
        .map(|(i, a)| (OrderKey::of(spec, &nodes[i].name, &nodes[i].labels), i, a))
        .collect();
    keyed.sort_unstable_by(|(ka, ia, _), (kb, ib, _)| ka.cmp(kb).then(ia.cmp(ib)));
    keyed.into_iter().map(|(_, _, a)| a).collect()
}

/// Counts, phase and message.
fn summarize(input: &StatusInput<'_>, tally: &Tally) -> Summary {
    let StatusInput {
        ctx,
        classified,
        gates,
        starts,
        ..
    } = input;
    let total = classified.total;
    let updated = classified.updated;
    let in_flight = tally.active.len();
    let pending = classified.todo.saturating_sub(starts.started());
    let failed = tally.failed.len();
    let counts = NodeCounts {
        total: total as u32,
        updated: updated as u32,
        in_progress: in_flight as u32,
        pending: pending as u32,
        failed: failed as u32,
        summary: format!("{updated}/{total}"),
    };
    let all_done = pending == 0 && in_flight == 0;
    let phase = phase_of(gates, all_done, in_flight);
    let progress = format!("{updated}/{total} updated");
    let message = if phase == Phase::Completed {
        if failed > 0 {
            format!("{progress}; completed with {failed} failed (tolerated)")
        } else {
            format!("{progress}; completed")
        }
    } else {
        let mut parts = vec![progress];
        parts.extend(in_flight_text(&tally.active));
        if let Some(w) = why_not(ctx, gates, input.advanced, starts, failed) {
            parts.push(w);
        } else if phase == Phase::Waiting && pending > 0 {
            parts.push("nothing can start now".into());
        }
        parts.join("; ")
    };
    Summary {
        counts,
        pending,
        phase,
        message,
    }
}

fn phase_of(gates: &Gates, all_done: bool, in_flight: usize) -> Phase {
    if gates.invalid() {
        Phase::Halted
    } else if all_done && !gates.halted() {
        Phase::Completed
    } else if gates.halted() {
        Phase::Halted
    } else if gates.paused() {
        Phase::Paused
    } else if in_flight > 0 {
        Phase::Progressing
    } else if matches!(gates.time(), Some(Closed::Announced { .. })) {
        Phase::Scheduled
    } else {
        Phase::Waiting
    }
}

/// The nodes in progress, in words (none: `None`).
fn in_flight_text(active: &[ActiveNode]) -> Option<String> {
    match active.len() {
        0 => None,
        1..=3 => Some(
            active
                .iter()
                .map(|a| format!("{} {:?}", a.node, a.step))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        k => Some(format!("{k} nodes in progress")),
    }
}

/// Why no (more) node starts: the first closed gate, else the workloads that
/// keep settled nodes from counting as done, else the most telling hold.
fn why_not(
    ctx: &Ctx<'_>,
    gates: &Gates,
    advanced: &Advanced,
    starts: &Starts,
    failed: usize,
) -> Option<String> {
    let spec = ctx.spec;
    match gates.closed.first() {
        Some(Closed::InvalidSpec) => Some(format!(
            "halted: invalid spec: {}",
            ctx.cfg.errors.join("; ")
        )),
        Some(Closed::TooManyFailures) => Some(format!(
            "halted: {failed} node{} failed (max {}); fix the node and remove its {RECORD_ANNOTATION} annotation, or bump spec.revision",
            if failed == 1 { "" } else { "s" },
            spec.rollout.max_failed_nodes
        )),
        Some(Closed::Paused) => Some("paused: no new node starts".into()),
        Some(Closed::PausedUntil { until }) => Some(format!(
            "paused until {}: no new node starts before then",
            human_time(*until, first_zone(spec))
        )),
        Some(Closed::Announced { at }) => Some(format!(
            "announced; starts {}{}",
            human_time(*at, first_zone(spec)),
            if ctx.cfg.lead_time > Duration::ZERO {
                format!(" (lead time {})", duration::format(ctx.cfg.lead_time))
            } else {
                String::new()
            }
        )),
        Some(Closed::Window { why, .. }) => Some(why.clone()),
        Some(Closed::Health { why, .. }) => Some(format!("waiting: {why}")),
        Some(Closed::GateTimedOut { gate, why, since }) => Some(format!(
            "halted: gate {gate} closed since {} (longer than gates.timeout): {why}; fix the cause or set gates.onTimeout: Continue",
            crate::core::gates::hhmm(*since)
        )),
        // Settled nodes held by the workloads gate keep their budget slots:
        // the workloads, not the budget, hold the rollout.
        None if advanced.workloads_hold.is_some() => advanced
            .workloads_hold
            .as_ref()
            .map(|why| format!("waiting: {why}")),
        // Budget holds last: a node that cannot start for its own reason is more telling.
        None if starts.started() == 0 => starts
            .holds
            .iter()
            .find(|h| !matches!(h, Hold::Budget { .. }))
            .or(starts.holds.first())
            .map(Hold::message),
        None => None,
    }
}

fn first_zone(spec: &PatchPolicySpec) -> Option<&str> {
    spec.maintenance_windows
        .first()
        .map(|w| w.time_zone.as_str())
        .filter(|z| !z.is_empty())
}

/// The next usable window from the scheduled start on (none when urgent or
/// always open).
fn next_window(ctx: &Ctx<'_>, gates: &Gates) -> Option<WindowStatus> {
    let cfg = ctx.cfg;
    if ctx.spec.urgent || cfg.schedule.is_always_open() {
        return None;
    }
    let from = gates.scheduled.map_or(ctx.now, |s| s.max(ctx.now));
    cfg.schedule
        .next_usable(from, cfg.min_remaining)
        .map(|(t, iv)| WindowStatus {
            start: Time(t.max(iv.start)),
            end: Time(iv.end),
        })
}

/// When to look again: node deadlines, a release made by this plan, and the
/// window if work waits for it.
fn requeue_after(input: &StatusInput<'_>, pending: usize, releasing: bool) -> Option<Duration> {
    let gates = input.gates;
    let mut wake = input.advanced.wake;
    if releasing {
        // The next pass sees the release on the Node and counts it.
        wake = earliest(wake, Some(input.ctx.now));
    }
    let waits_for_time = !gates.invalid() && !gates.halted() && !gates.paused();
    if waits_for_time && pending > 0 {
        wake = earliest(wake, gates.opens());
    }
    if !gates.invalid() && !gates.halted() && pending > 0 {
        wake = earliest(wake, gates.pause_lifts());
    }
    // Wake at the deadline itself (a node's settle time ends, a step times
    // out, a window opens), not up to a second later: at the end of a wave
    // nothing else may wake the controller. The floor only keeps a deadline
    // that is due now from spinning the loop.
    wake.map(|w| until(input.ctx.now, w).max(REQUEUE_FLOOR))
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// `Ready`, `Reconciling` and `Stalled`, each keeping its transition time
/// while its status stays.
fn conditions(input: &StatusInput<'_>, phase: Phase, message: &str) -> Vec<Condition> {
    let reason = match phase {
        Phase::Halted if input.gates.invalid() => "InvalidSpec",
        Phase::Halted if input.gates.gate_timed_out().is_some() => "GateTimeout",
        Phase::Halted => "TooManyFailures",
        Phase::Scheduled => "Scheduled",
        Phase::Waiting => "Waiting",
        Phase::Progressing => "Progressing",
        Phase::Paused => "Paused",
        Phase::Completed => "Completed",
    };
    let reconciling = matches!(
        phase,
        Phase::Scheduled | Phase::Waiting | Phase::Progressing
    );
    [
        ("Ready", phase == Phase::Completed),
        ("Reconciling", reconciling),
        ("Stalled", phase == Phase::Halted),
    ]
    .into_iter()
    .map(|(type_, status)| condition(input, type_, status, reason, message))
    .chain(gates_open(input))
    .collect()
}

fn condition(
    input: &StatusInput<'_>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> Condition {
    let s = if status { "True" } else { "False" };
    let last = input
        .prev
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == s)
        .map_or(Time(input.ctx.now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: s.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: input.generation,
        last_transition_time: last,
    }
}

/// `GatesOpen`, for policies with health gates: false while any gate is
/// closed, the message naming each closed gate and why.
fn gates_open(input: &StatusInput<'_>) -> Option<Condition> {
    let gates = &input.gates.status;
    if gates.is_empty() {
        return None;
    }
    let closed: Vec<String> = gates
        .iter()
        .filter(|g| !g.open)
        .map(|g| format!("{}: {}", g.name, g.reason.as_deref().unwrap_or("closed")))
        .collect();
    let (reason, message) = if closed.is_empty() {
        ("AllOpen", "all health gates open".to_string())
    } else {
        ("GateClosed", closed.join("; "))
    };
    Some(condition(
        input,
        "GatesOpen",
        closed.is_empty(),
        reason,
        &message,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PatchPolicy;
    use crate::core::budget::Budget;
    use crate::core::rollout::Config;
    use crate::core::rollout::test_support::{NOW, node, policy, rec, ts};

    /// The status of `nodes` (all to do) after the given gates and starts.
    fn run(p: &PatchPolicy, nodes: &[NodeView], closed: Vec<Closed>, starts: &Starts) -> Outcome {
        let cfg = Config::from_spec(&p.spec);
        let ctx = Ctx {
            obs: None,
            name: "p",
            spec: &p.spec,
            cfg: &cfg,
            now: ts(NOW),
        };
        let index = NodeIndex::build(&p.spec, nodes, false);
        let classified = crate::core::rollout::classify::classify(&ctx, &index, nodes);
        let gates = Gates {
            announced_at: ts(NOW),
            scheduled: Some(ts(NOW)),
            closed,
            budget: Budget {
                max: 1,
                unavailable: 0,
            },
            status: Vec::new(),
            blocked_nodes: Default::default(),
        };
        status(&StatusInput {
            ctx: &ctx,
            prev: &PatchPolicyStatus::default(),
            generation: Some(3),
            index: &index,
            nodes,
            classified: &classified,
            advanced: &Advanced::default(),
            gates: &gates,
            starts,
        })
    }

    fn message(o: &Outcome) -> &str {
        o.status.message.as_deref().unwrap_or_default()
    }

    #[test]
    fn the_first_closed_gate_names_the_phase_and_the_message() {
        let p = policy("p");
        let nodes = [node("w-a1", "a")];
        let none = Starts::default();
        let o = run(
            &p,
            &nodes,
            vec![Closed::TooManyFailures, Closed::Paused],
            &none,
        );
        assert_eq!(o.status.phase, Some(Phase::Halted));
        assert!(
            message(&o).starts_with("0/1 updated; halted: 0 nodes failed (max 0)"),
            "{}",
            message(&o)
        );
        let stalled = &o.status.conditions[2];
        assert_eq!(
            (stalled.type_.as_str(), stalled.status.as_str()),
            ("Stalled", "True")
        );
        assert_eq!(stalled.observed_generation, Some(3));
        let o = run(&p, &nodes, vec![Closed::Paused], &none);
        assert_eq!(o.status.phase, Some(Phase::Paused));
        let at = ts("2026-11-30T21:00:00Z");
        let o = run(&p, &nodes, vec![Closed::Announced { at }], &none);
        assert_eq!(o.status.phase, Some(Phase::Scheduled));
        assert_eq!(
            o.requeue_after,
            Some(Duration::from_secs((3 * 24 + 12) * 3600))
        );
        let why = "waiting for window Tue".to_string();
        let o = run(&p, &nodes, vec![Closed::Window { why, opens: None }], &none);
        assert_eq!(o.status.phase, Some(Phase::Waiting));
        assert_eq!(message(&o), "0/1 updated; waiting for window Tue");
        assert_eq!(o.requeue_after, None);
    }

    #[test]
    fn a_node_held_for_its_own_reason_is_named_before_the_budget() {
        let p = policy("p");
        let nodes = [node("w-a1", "a"), node("w-a2", "a")];
        let starts = Starts {
            holds: vec![
                Hold::Budget {
                    unavailable: 1,
                    max: 1,
                },
                Hold::NotReady("w-a2".into()),
            ],
            ..Starts::default()
        };
        let o = run(&p, &nodes, vec![], &starts);
        assert_eq!(
            message(&o),
            "0/2 updated; node w-a2 is NotReady and waits until it is Ready"
        );
        assert_eq!(o.status.nodes.as_ref().map(|c| c.pending), Some(2));
    }

    #[test]
    fn active_nodes_are_listed_in_rollout_order_and_failed_by_name() {
        let p = policy("p");
        let t = ts(NOW);
        let mut nodes = vec![node("w-b1", "b"), node("w-a10", "a"), node("w-a9", "a")];
        for n in &mut nodes {
            n.record = Some(rec("p", Step::Draining, t));
        }
        let mut f = |name: &str| {
            let mut n = node(name, "c");
            n.record = Some(rec("p", Step::Failed, t));
            nodes.push(n);
        };
        f("w-c10");
        f("w-c9");
        let o = run(&p, &nodes, vec![], &Starts::default());
        let active: Vec<&str> = o.status.active.iter().map(|a| a.node.as_str()).collect();
        assert_eq!(active, ["w-a9", "w-a10", "w-b1"]);
        let failed: Vec<&str> = o.status.failed.iter().map(|a| a.node.as_str()).collect();
        assert_eq!(failed, ["w-c9", "w-c10"]);
        assert_eq!(o.status.phase, Some(Phase::Progressing));
        assert_eq!(
            message(&o),
            "0/5 updated; w-a9 Draining, w-a10 Draining, w-b1 Draining"
        );
    }
}
