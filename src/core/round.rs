//! Rounds of a standing policy (`spec.trigger: RebootRequired`).
//!
//! A standing policy has no revision to roll out: a node is due whenever its
//! agent reports `sofort.dev/reboot-required=true`. Due nodes are grouped
//! into rounds, and a round is what a revision is to a `Revision` policy:
//! its id is the *effective revision* every per-node record, the done map,
//! the notification records and the CloudEvents ids key on, so everything
//! [`crate::core::rollout::decide`] knows about resuming after a restart
//! holds for rounds unchanged. [`plan`] gives, from the spec, the stored
//! status, the nodes and the time, the round to work on; [`effective`] turns
//! it into the policy and config decide runs with; [`finish`] reads the
//! round's phase back from decide's status.
//!
//! Rules:
//! * A round is planned from the nodes due at that moment and never grows
//!   afterwards (except an urgent round not started yet, which takes every
//!   due node). Nodes due later wait for the next round.
//! * Only one round at a time: the next is planned once the current one is
//!   `Completed`, and not before its earliest start minus the announce lead
//!   time, so a node due in the meantime still makes it.
//! * `rollout.minRoundInterval` counts from the start of one round (its
//!   first node, or its scheduled start when no node had to start) to the
//!   start of the next. Urgent rounds ignore it and the lead time.
//! * A member whose Node is gone is listed in `round.gone`: it frees its
//!   slot and is not counted as failed; a Node of that name created later
//!   waits for the next round.
//! * `spec.revision` as first seen forces nothing; a different value later
//!   makes the next round cover every selected node (`round.fleetWide`),
//!   with `reboot.when` as written.
//! * Round ids are `r<N>-<yyyymmdd>` (count, UTC day of planning): short and
//!   safe as label and annotation values, never made of user text.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    NextRoundStatus, PatchPolicy, PatchPolicySpec, PatchPolicyStatus, RebootWhen, RoundPhase,
    RoundStatus, Trigger,
};
use crate::core::rollout::{Config, NodeView, RoundScope};
use crate::core::selector;

/// Effective revision of a standing policy before its first round.
pub const NO_ROUND: &str = "r0";
/// Most members a round records; more due nodes wait for the next round.
pub const MAX_ROUND_NODES: usize = 5000;

/// What [`plan`] decided for one pass of a standing policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundPlan {
    /// The revision decide works on: the round id.
    pub revision: String,
    /// The current round (just planned, or as stored with gone members added).
    pub round: Option<RoundStatus>,
    /// The round after it.
    pub next: NextRoundStatus,
    /// The round was planned (or grew) in this pass: announce it (write the
    /// status) before any node starts under it.
    pub planned: bool,
    /// Members found gone in this pass, for an Event.
    pub newly_gone: Vec<String>,
    /// When to look again to plan the next round (nodes are due but the
    /// round interval holds it back).
    pub wake_at: Option<Timestamp>,
}

/// Whether `policy` is a standing policy.
pub fn is_standing(spec: &PatchPolicySpec) -> bool {
    spec.trigger == Trigger::RebootRequired
}

/// Whether `id` has the form of a round id (`r<N>-<yyyymmdd>` or [`NO_ROUND`]).
pub fn is_round_id(id: &str) -> bool {
    if id == NO_ROUND {
        return true;
    }
    parse_id(id).is_some()
}

/// The count of a round id.
fn parse_id(id: &str) -> Option<u64> {
    let rest = id.strip_prefix('r')?;
    let (n, day) = rest.split_once('-')?;
    let ok = !n.is_empty()
        && n.len() <= 12
        && n.bytes().all(|b| b.is_ascii_digit())
        && day.len() == 8
        && day.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| n.parse().ok()).flatten()
}

/// The stored round, if it is one the controller could have written.
fn stored_round(prev: Option<&PatchPolicyStatus>) -> Option<RoundStatus> {
    prev.and_then(|s| s.round.clone())
        .filter(|r| parse_id(&r.id).is_some() && r.nodes.len() <= MAX_ROUND_NODES)
}

/// The revision a standing policy's nodes are worked on under, as stored:
/// the current round's id (what the agent checks a record against).
/// `spec.revision` for a `Revision` policy.
pub fn effective_revision(policy: &PatchPolicy) -> String {
    if !is_standing(&policy.spec) {
        return policy.spec.revision.clone();
    }
    stored_round(policy.status.as_ref()).map_or_else(|| NO_ROUND.to_string(), |r| r.id)
}

/// The members of a standing policy's current round still present, as
/// stored; `None` for a `Revision` policy.
pub fn stored_members(policy: &PatchPolicy) -> Option<BTreeSet<String>> {
    if !is_standing(&policy.spec) {
        return None;
    }
    Some(
        stored_round(policy.status.as_ref())
            .map(|r| members_of(&r))
            .unwrap_or_default(),
    )
}

fn members_of(r: &RoundStatus) -> BTreeSet<String> {
    let gone: BTreeSet<&String> = r.gone.iter().collect();
    r.nodes
        .iter()
        .filter(|n| !gone.contains(n))
        .cloned()
        .collect()
}

/// `t + d`, saturating.
fn add(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// When a round could start if planned at `now`: after the lead time and
/// `not_before`, at the first usable instant of the windows (urgent: now).
fn earliest_start(
    spec: &PatchPolicySpec,
    cfg: &Config,
    not_before: Option<Timestamp>,
    now: Timestamp,
) -> Option<Timestamp> {
    if spec.urgent {
        return Some(now);
    }
    let paused_until = spec.paused_until.as_ref().map(|t| t.0);
    let at = add(now, cfg.lead_time)
        .max(not_before.unwrap_or_default())
        .max(paused_until.unwrap_or_default());
    cfg.schedule
        .next_usable(at, cfg.min_remaining)
        .map(|(t, _)| t)
}

/// The start of `r` that `minRoundInterval` counts from.
fn round_start(r: &RoundStatus) -> Option<Timestamp> {
    r.started_at
        .as_ref()
        .or(r.scheduled_start.as_ref())
        .map(|t| t.0)
}

/// Records the members of an open round whose Node is gone (not in
/// `present`); returns those newly gone. Their slots are free.
fn mark_gone(r: &mut RoundStatus, present: &BTreeSet<&str>) -> Vec<String> {
    if r.phase == RoundPhase::Completed {
        return Vec::new();
    }
    let newly_gone: Vec<String> = r
        .nodes
        .iter()
        .filter(|n| !present.contains(n.as_str()) && !r.gone.contains(n))
        .cloned()
        .collect();
    r.gone.extend(newly_gone.iter().cloned());
    r.gone.sort();
    newly_gone
}

/// An urgent round not started yet takes every `due` node (bounded by
/// [`MAX_ROUND_NODES`]) and starts now. True when it changed.
fn widen_now<'a>(
    r: &mut RoundStatus,
    due: impl Iterator<Item = &'a NodeView>,
    now: Timestamp,
) -> bool {
    let mut all: BTreeSet<String> = r.nodes.iter().cloned().collect();
    let before = all.len();
    for n in due {
        if all.len() >= MAX_ROUND_NODES {
            break;
        }
        all.insert(n.name.clone());
    }
    if all.len() == before {
        return false;
    }
    r.nodes = all.into_iter().collect();
    r.scheduled_start = Some(Time(now));
    true
}

/// The id of the round after `previous`: `r<N>-<yyyymmdd>` (UTC day).
fn next_id(previous: Option<&RoundStatus>, now: Timestamp) -> String {
    let count = previous
        .and_then(|r| parse_id(&r.id))
        .unwrap_or(0)
        .saturating_add(1);
    let day = now.to_zoned(TimeZone::UTC);
    format!(
        "r{count}-{:04}{:02}{:02}",
        day.year(),
        day.month(),
        day.day()
    )
}

/// Plans the round of one pass. See the module docs for the rules.
pub fn plan(
    spec: &PatchPolicySpec,
    cfg: &Config,
    prev: Option<&PatchPolicyStatus>,
    nodes: &[NodeView],
    now: Timestamp,
) -> RoundPlan {
    let present: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let mut current = stored_round(prev);
    // The spec.revision the rounds have taken into account: the first one
    // seen forces nothing.
    let baseline = prev
        .and_then(|s| s.next_round.as_ref())
        .and_then(|n| n.revision.clone())
        .unwrap_or_else(|| spec.revision.clone());
    let fleet_pending = spec.revision != baseline;
    let selected = |n: &NodeView| selector::selects_node(&spec.node_selector, &n.labels);
    let due_now =
        |n: &NodeView, fleet: bool| selected(n) && (fleet || n.reboot_required == Some(true));

    let newly_gone = current
        .as_mut()
        .map(|r| mark_gone(r, &present))
        .unwrap_or_default();

    let open = current
        .as_ref()
        .is_some_and(|r| r.phase != RoundPhase::Completed);
    let not_before = current
        .as_ref()
        .filter(|_| !spec.urgent)
        .and_then(round_start)
        .map(|t| add(t, cfg.min_round_interval));
    let mut planned = false;
    let mut wake_at = None;
    let valid = cfg.errors.is_empty();

    if open {
        // An urgent round that has not started takes every due node.
        if let Some(r) = current.as_mut()
            && spec.urgent
            && valid
            && r.phase == RoundPhase::Scheduled
        {
            let fleet = r.fleet_wide;
            planned = widen_now(r, nodes.iter().filter(|n| due_now(n, fleet)), now);
        }
    } else if valid {
        let due: Vec<String> = nodes
            .iter()
            .filter(|n| due_now(n, fleet_pending))
            .map(|n| n.name.clone())
            .take(MAX_ROUND_NODES)
            .collect();
        let announce_from = not_before.map(|nb| {
            jiff::SignedDuration::try_from(cfg.lead_time)
                .ok()
                .and_then(|d| nb.checked_sub(d).ok())
                .unwrap_or(Timestamp::MIN)
        });
        let may_plan = spec.urgent || announce_from.is_none_or(|t| now >= t);
        if !due.is_empty() && !may_plan {
            wake_at = announce_from;
        }
        if !due.is_empty() && may_plan {
            let mut nodes_sorted = due;
            nodes_sorted.sort();
            current = Some(RoundStatus {
                id: next_id(current.as_ref(), now),
                nodes: nodes_sorted,
                phase: RoundPhase::Scheduled,
                scheduled_start: earliest_start(spec, cfg, not_before, now).map(Time),
                started_at: None,
                completed_at: None,
                gone: Vec::new(),
                fleet_wide: fleet_pending,
            });
            planned = true;
        }
    }

    // The round after the current one.
    let members: BTreeSet<String> = current.as_ref().map(members_of).unwrap_or_default();
    let taken = current.as_ref().is_some_and(|r| planned && r.fleet_wide) || !fleet_pending;
    let next_fleet = !taken;
    let still_open = current
        .as_ref()
        .is_some_and(|r| r.phase != RoundPhase::Completed);
    let due_next = nodes
        .iter()
        .filter(|n| due_now(n, next_fleet))
        .filter(|n| !(still_open && members.contains(&n.name)))
        .count();
    let next_not_before = current
        .as_ref()
        .filter(|_| !spec.urgent)
        .and_then(round_start)
        .map(|t| add(t, cfg.min_round_interval));
    let next = NextRoundStatus {
        earliest_start: earliest_start(spec, cfg, next_not_before, now).map(Time),
        due: u32::try_from(due_next).unwrap_or(u32::MAX),
        revision: Some(if taken {
            spec.revision.clone()
        } else {
            baseline
        }),
    };
    RoundPlan {
        revision: current
            .as_ref()
            .map_or_else(|| NO_ROUND.to_string(), |r| r.id.clone()),
        round: current,
        next,
        planned,
        newly_gone,
        wake_at,
    }
}

/// The policy and config decide runs with for `plan`: `spec.revision` is
/// the round id, `reboot.when` is `IfRequired` (as written for a fleet-wide
/// round), and only the round's members still present are to do.
pub fn effective(policy: &PatchPolicy, cfg: &Config, plan: &RoundPlan) -> (PatchPolicy, Config) {
    let mut p = policy.clone();
    p.spec.revision = plan.revision.clone();
    if !plan.round.as_ref().is_some_and(|r| r.fleet_wide) {
        p.spec.reboot.when = RebootWhen::IfRequired;
    }
    let mut c = cfg.clone();
    // The round's scheduled start already counts the lead time from when
    // the round was planned.
    if plan.round.is_some() {
        c.spec.lead_time = Duration::ZERO;
    }
    c.round = Some(RoundScope {
        members: plan.round.as_ref().map(members_of).unwrap_or_default(),
        not_before: plan
            .round
            .as_ref()
            .filter(|r| r.phase == RoundPhase::Scheduled && !policy.spec.urgent)
            .and_then(|r| r.scheduled_start.as_ref())
            .map(|t| t.0),
    });
    (p, c)
}

/// Puts the round of `plan` into `status` (decide's status of the round),
/// moving its phase on: `Running` once a node started, `Completed` when
/// decide says so.
pub fn finish(plan: &RoundPlan, status: &mut PatchPolicyStatus) {
    let mut round = plan.round.clone();
    if let Some(r) = round.as_mut() {
        let decided_here = status.revision.as_deref() == Some(r.id.as_str());
        if decided_here && r.phase != RoundPhase::Completed {
            if r.phase == RoundPhase::Scheduled && status.scheduled_start.is_some() {
                r.scheduled_start = status.scheduled_start.clone();
            }
            if let Some(t) = &status.started_at {
                r.phase = RoundPhase::Running;
                r.started_at = Some(t.clone());
            }
            if status.phase == Some(crate::api::Phase::Completed) {
                r.phase = RoundPhase::Completed;
                r.completed_at = status.completed_at.clone();
            }
        }
    }
    let next = &plan.next;
    let after = match (&round, next.due) {
        (None, 0) => Some(
            "no selected node reports reboot-required; a round is planned when one does"
                .to_string(),
        ),
        (Some(r), 0) if r.phase == RoundPhase::Completed => Some(format!(
            "round {} completed; no node due for the next round",
            r.id
        )),
        (Some(r), due) if r.phase == RoundPhase::Completed => Some(format!(
            "round {} completed; {due} node{} due for the next round, earliest start {}",
            r.id,
            if due == 1 { "" } else { "s" },
            next.earliest_start
                .as_ref()
                .map_or_else(|| "not in sight".to_string(), |t| t.0.to_string())
        )),
        (Some(r), _) => status
            .message
            .as_ref()
            .map(|m| format!("round {}: {m}", r.id)),
        (None, _) => None,
    };
    if let Some(m) = after {
        status.message = Some(m);
    }
    if let (Some(r), Some(m)) = (&round, status.message.as_mut())
        && !r.gone.is_empty()
    {
        m.push_str(&format!("; deleted, not counted: {}", r.gone.join(", ")));
    }
    status.round = round;
    status.next_round = Some(plan.next.clone());
}

/// The round `sofort plan` forecasts for a standing policy: the current one
/// while it is open, else the next one as it would be planned at the
/// earliest instant it may be (returned with the plan).
pub fn to_forecast(
    policy: &PatchPolicy,
    cfg: &Config,
    nodes: &[NodeView],
    now: Timestamp,
) -> (RoundPlan, Timestamp) {
    let p = plan(&policy.spec, cfg, policy.status.as_ref(), nodes, now);
    let open = p
        .round
        .as_ref()
        .is_some_and(|r| r.phase != RoundPhase::Completed);
    match p.wake_at {
        Some(at) if !p.planned && !open => (
            plan(&policy.spec, cfg, policy.status.as_ref(), nodes, at),
            at,
        ),
        _ => (p, now),
    }
}

/// One line about the round [`to_forecast`] found.
pub fn describe(plan: &RoundPlan, planned_at: Timestamp) -> String {
    let Some(r) = plan.round.as_ref() else {
        return "no selected node reports reboot-required: no round to forecast".into();
    };
    if !plan.planned && r.phase == RoundPhase::Completed {
        return format!(
            "round {} completed; no selected node reports reboot-required",
            r.id
        );
    }
    let members = members_of(r);
    let names: Vec<&str> = members.iter().map(String::as_str).take(20).collect();
    let more = if members.len() > names.len() {
        ", …"
    } else {
        ""
    };
    let which = if plan.planned {
        format!("next round, planned at {planned_at}")
    } else {
        format!("current round, {:?}", r.phase)
    };
    let start = r
        .scheduled_start
        .as_ref()
        .map_or_else(|| "no usable window".to_string(), |t| t.0.to_string());
    format!(
        "round {} ({which}): {} node{} due: {}{more}; earliest start {start}",
        r.id,
        members.len(),
        if members.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}

#[cfg(test)]
#[path = "round_tests.rs"]
mod tests;
