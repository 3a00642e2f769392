//! Phase 3, gates: whether any node may start now.
//!
//! Each gate is one check returning the [`Closed`] reason it holds starts for,
//! or nothing; [`gates`] runs them in order and the first closed one explains
//! the wait in the status. Nodes in progress always finish, whatever the
//! gates say. A new gate (for example one on the fleet's health) is one more
//! check function and one more [`Closed`] variant.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{GateStatus, PatchPolicyStatus, Step};
use crate::core::budget::Budget;
use crate::core::duration;
use crate::core::gates::evaluate::{evaluate, workloads_verdict};
use crate::core::gates::{GateId, TimeoutState, timeout_state};
use crate::core::window::{HORIZON_DAYS, human_time};

use super::advance::Advanced;
use super::classify::Classified;
use super::{Ctx, add};

/// Why no node may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Closed {
    /// The spec has errors ([`super::Config::errors`]).
    InvalidSpec,
    /// More nodes failed than `maxFailedNodes`.
    TooManyFailures,
    /// `spec.paused`.
    Paused,
    /// `spec.pausedUntil` lies ahead: no start before `until`.
    PausedUntil {
        /// When the pause lifts itself.
        until: Timestamp,
    },
    /// Announced: no start before `at` (lead time, then the first usable window).
    Announced {
        /// The scheduled start.
        at: Timestamp,
    },
    /// After the scheduled start but not in a usable window now.
    Window {
        /// What is waited for, for the message.
        why: String,
        /// When the next usable window opens, if one does.
        opens: Option<Timestamp>,
    },
    /// A health gate (`spec.gates`) is closed.
    Health {
        /// The gate, in words (`alerts`, `query api-errors`).
        gate: String,
        /// Why, for the message.
        why: String,
    },
    /// A health gate stayed closed longer than `gates.timeout` with
    /// `onTimeout: Halt`.
    GateTimedOut {
        /// The gate.
        gate: String,
        /// Why it is closed.
        why: String,
        /// Since when.
        since: Timestamp,
    },
}

/// What the gates look at.
pub(super) struct GateInput<'a> {
    pub ctx: &'a Ctx<'a>,
    /// The previous status.
    pub prev: &'a PatchPolicyStatus,
    pub classified: &'a Classified,
    pub advanced: &'a Advanced,
}

/// The output of [`gates`].
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Gates {
    /// When the revision was announced (first seen).
    pub announced_at: Timestamp,
    /// The earliest start: now when urgent, else the first usable window
    /// after the lead time (`None`: none within the horizon).
    pub scheduled: Option<Timestamp>,
    /// Every closed gate, in check order.
    pub closed: Vec<Closed>,
    /// The budget for starts, after the releases of this plan.
    pub budget: Budget,
    /// Each health gate's state, for `status.gates`.
    pub status: Vec<GateStatus>,
    /// Nodes held by a blocking pod, with the reason.
    pub blocked_nodes: BTreeMap<String, String>,
}

impl Gates {
    /// Whether nodes may start (the budget still limits how many).
    pub fn open(&self) -> bool {
        self.closed.is_empty()
    }

    /// Whether `gate` is closed.
    pub fn is_closed(&self, gate: &Closed) -> bool {
        self.closed.contains(gate)
    }

    /// Whether the spec is invalid.
    pub fn invalid(&self) -> bool {
        self.is_closed(&Closed::InvalidSpec)
    }

    /// Whether the rollout is halted: too many nodes failed, or a health
    /// gate timed out with `onTimeout: Halt`.
    pub fn halted(&self) -> bool {
        self.is_closed(&Closed::TooManyFailures) || self.gate_timed_out().is_some()
    }

    /// The health gate that timed out with `onTimeout: Halt`, if any.
    pub fn gate_timed_out(&self) -> Option<&Closed> {
        self.closed
            .iter()
            .find(|c| matches!(c, Closed::GateTimedOut { .. }))
    }

    /// Whether a pause holds starts (`paused`, or `pausedUntil` ahead).
    pub fn paused(&self) -> bool {
        self.closed
            .iter()
            .any(|c| matches!(c, Closed::Paused | Closed::PausedUntil { .. }))
    }

    /// When a `pausedUntil` pause lifts itself; `None` without one, and
    /// while `paused: true` holds (that pause lifts only by a spec change).
    pub fn pause_lifts(&self) -> Option<Timestamp> {
        if self.is_closed(&Closed::Paused) {
            return None;
        }
        self.closed.iter().find_map(|c| match c {
            Closed::PausedUntil { until } => Some(*until),
            _ => None,
        })
    }

    /// The closed time gate (lead time or window), if any.
    pub fn time(&self) -> Option<&Closed> {
        self.closed
            .iter()
            .find(|c| matches!(c, Closed::Announced { .. } | Closed::Window { .. }))
    }

    /// When the time gate opens, if it is closed and will open.
    pub fn opens(&self) -> Option<Timestamp> {
        match self.time() {
            Some(Closed::Announced { at }) => Some(*at),
            Some(Closed::Window { opens, .. }) => *opens,
            _ => None,
        }
    }
}

/// Runs every gate.
pub(super) fn gates(input: &GateInput<'_>) -> Gates {
    let GateInput {
        ctx,
        prev,
        classified,
        advanced,
    } = input;
    let same_rev = prev.revision.as_deref() == Some(ctx.spec.revision.as_str());
    let announced_at = prev
        .announced_at
        .as_ref()
        .filter(|_| same_rev)
        .map_or(ctx.now, |t| t.0);
    let scheduled = scheduled_start(ctx, announced_at);
    let health = health(ctx, prev, advanced.workloads_held_since);
    let closed = [
        validity(ctx),
        failures(ctx, classified, advanced),
        pause(ctx),
        schedule(ctx, scheduled),
        health.closed,
    ]
    .into_iter()
    .flatten()
    .collect();
    Gates {
        announced_at,
        scheduled,
        closed,
        budget: budget(ctx, classified, advanced),
        status: health.status,
        blocked_nodes: health.blocked_nodes,
    }
}

/// What the health gates say.
#[derive(Default)]
struct Health {
    closed: Option<Closed>,
    status: Vec<GateStatus>,
    blocked_nodes: BTreeMap<String, String>,
}

/// The health gates of `spec.gates` over the controller's observations:
/// the first closed one (blocking pods hold only their nodes), with its
/// timeout; every gate's state with the time it entered it.
fn health(
    ctx: &Ctx<'_>,
    prev: &PatchPolicyStatus,
    workloads_held_since: Option<Timestamp>,
) -> Health {
    let (Some(cfg), Some(obs)) = (ctx.cfg.gates.as_ref(), ctx.obs) else {
        return Health::default();
    };
    let eval = evaluate(cfg, obs, ctx.now, ctx.spec.urgent);
    let mut verdicts = eval.verdicts.clone();
    if !cfg.workloads.is_empty() {
        verdicts.push((GateId::Workloads, workloads_verdict(cfg, obs, ctx.now)));
    }
    let mut out = Health {
        blocked_nodes: eval.blocked_nodes.clone(),
        ..Health::default()
    };
    for (gate, v) in &verdicts {
        let name = gate.to_string();
        let since = prev
            .gates
            .iter()
            .find(|g| g.name == name && g.open == v.is_open())
            .and_then(|g| g.since.as_ref())
            .map_or(ctx.now, |t| t.0);
        out.status.push(GateStatus {
            name: name.clone(),
            open: v.is_open(),
            since: Some(Time(since)),
            reason: v.reason().map(str::to_string),
        });
        let Some(why) = v.reason() else { continue };
        if *gate == GateId::Workloads {
            // Holds settled nodes only (see `advance::settling`); holding one
            // for longer than the timeout with Halt, it halts the rollout.
            if out.closed.is_none()
                && let Some(held) = workloads_held_since
                && timeout_state(held, ctx.now, cfg.timeout, cfg.on_timeout) == TimeoutState::Halted
            {
                out.closed = Some(Closed::GateTimedOut {
                    gate: name,
                    why: why.to_string(),
                    since: held,
                });
            }
            continue;
        }
        if out.closed.is_some() && *gate != GateId::BlockingPods {
            continue;
        }
        match timeout_state(since, ctx.now, cfg.timeout, cfg.on_timeout) {
            TimeoutState::Waiting if *gate == GateId::BlockingPods => {}
            TimeoutState::Waiting => {
                out.closed = Some(Closed::Health {
                    gate: name,
                    why: why.to_string(),
                });
            }
            TimeoutState::Halted => {
                out.closed = Some(Closed::GateTimedOut {
                    gate: name,
                    why: why.to_string(),
                    since,
                });
            }
            TimeoutState::Overridden if *gate == GateId::BlockingPods => {
                out.blocked_nodes.clear();
            }
            TimeoutState::Overridden => {}
        }
    }
    out
}

/// The earliest start: at the announcement when urgent, else the first
/// usable window after the lead time.
pub(super) fn scheduled_start(ctx: &Ctx<'_>, announced_at: Timestamp) -> Option<Timestamp> {
    if ctx.spec.urgent {
        return Some(announced_at);
    }
    let cfg = ctx.cfg;
    // A pause that lifts itself later than the lead time pushes the start,
    // also once it has lifted (the start stays where it was announced).
    let paused_until = ctx.spec.paused_until.as_ref().map(|t| t.0);
    let earliest = add(announced_at, cfg.lead_time).max(paused_until.unwrap_or_default());
    // A round of a standing policy waits for `minRoundInterval`.
    let earliest = earliest.max(
        cfg.round
            .as_ref()
            .and_then(|r| r.not_before)
            .unwrap_or_default(),
    );
    cfg.schedule
        .next_usable(earliest, cfg.min_remaining)
        .map(|(t, _)| t)
}

fn validity(ctx: &Ctx<'_>) -> Option<Closed> {
    (!ctx.cfg.errors.is_empty()).then_some(Closed::InvalidSpec)
}

/// Failed nodes of this revision, those failing in this plan included.
fn failures(ctx: &Ctx<'_>, classified: &Classified, advanced: &Advanced) -> Option<Closed> {
    let failing_now = advanced
        .records
        .values()
        .filter(|r| r.step == Step::Failed && r.revision == ctx.spec.revision)
        .count();
    let failed = (classified.failed + failing_now) as u64;
    (failed > u64::from(ctx.spec.rollout.max_failed_nodes)).then_some(Closed::TooManyFailures)
}

/// `paused: true` pauses until the spec changes; `pausedUntil` until then.
fn pause(ctx: &Ctx<'_>) -> Option<Closed> {
    if ctx.spec.paused {
        return Some(Closed::Paused);
    }
    paused_until(ctx).map(|until| Closed::PausedUntil { until })
}

/// `spec.pausedUntil` when it lies ahead of now.
fn paused_until(ctx: &Ctx<'_>) -> Option<Timestamp> {
    ctx.spec
        .paused_until
        .as_ref()
        .map(|t| t.0)
        .filter(|t| *t > ctx.now)
}

/// Lead time, windows, blackouts and the time left in a window; urgent
/// policies skip it.
fn schedule(ctx: &Ctx<'_>, scheduled: Option<Timestamp>) -> Option<Closed> {
    if ctx.spec.urgent {
        return None;
    }
    let (now, cfg) = (ctx.now, ctx.cfg);
    let Some(start) = scheduled else {
        let why = format!(
            "no usable maintenance window (needs {} left in a window, outside blackouts) in the next {HORIZON_DAYS} days",
            duration::format(cfg.min_remaining),
        );
        return Some(Closed::Window { why, opens: None });
    };
    if now < start {
        return Some(Closed::Announced { at: start });
    }
    let Some((t, iv)) = cfg.schedule.next_usable(now, cfg.min_remaining) else {
        let why = "no usable maintenance window ahead".into();
        return Some(Closed::Window { why, opens: None });
    };
    if t == now {
        return None;
    }
    let next = human_time(t, iv.zone.as_deref());
    let why = if let Some((end, reason)) = cfg.schedule.blackout_at(now) {
        let reason = reason.map(|r| format!(" ({r})")).unwrap_or_default();
        format!("blackout{reason} until {end}; next start {next}")
    } else if let Some(rem) = cfg.schedule.remaining(now) {
        format!(
            "window closes in {}, a node needs {}; waiting for window {next}",
            duration::format(Duration::from_secs(rem.as_secs())),
            duration::format(cfg.min_remaining),
        )
    } else {
        format!("waiting for window {next}")
    };
    Some(Closed::Window {
        why,
        opens: Some(t),
    })
}

/// The budget: `maxUnavailable` of the selected nodes; the Ready nodes this
/// plan releases free their slots.
fn budget(ctx: &Ctx<'_>, classified: &Classified, advanced: &Advanced) -> Budget {
    Budget {
        max: ctx.cfg.max_unavailable.resolve(classified.budget_base),
        unavailable: classified.unavailable.saturating_sub(advanced.freed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MaintenanceWindow, PatchPolicy, Weekday};
    use crate::core::rollout::Config;
    use crate::core::rollout::test_support::{NOW, policy, ts};

    fn run(p: &PatchPolicy, now: &str, classified: &Classified, advanced: &Advanced) -> Gates {
        let cfg = Config::from_spec(&p.spec);
        let ctx = Ctx {
            obs: None,
            name: "p",
            spec: &p.spec,
            cfg: &cfg,
            now: ts(now),
        };
        gates(&GateInput {
            ctx: &ctx,
            prev: &p.status.clone().unwrap_or_default(),
            classified,
            advanced,
        })
    }

    fn nightly(p: &mut PatchPolicy) {
        p.spec.maintenance_windows = vec![MaintenanceWindow {
            days: Weekday::ALL.to_vec(),
            start: "22:00".into(),
            end: "05:00".into(),
            time_zone: "UTC".into(),
            weeks_of_month: Vec::new(),
            offset_days: 0,
        }];
    }

    #[test]
    fn every_closed_gate_is_listed_in_check_order() {
        let mut p = policy("p");
        nightly(&mut p);
        p.spec.paused = true;
        p.spec.drain.timeout = "soon".into();
        let failed = Classified {
            failed: 1,
            ..Classified::default()
        };
        let g = run(&p, NOW, &failed, &Advanced::default());
        assert_eq!(g.closed.len(), 4, "{:?}", g.closed);
        assert_eq!(
            g.closed[..3],
            [Closed::InvalidSpec, Closed::TooManyFailures, Closed::Paused]
        );
        assert!(g.invalid() && g.halted() && !g.open());
        // Friday 09:00 UTC, first seen now: announced for the window at 22:00.
        let at = ts("2026-11-27T22:00:00Z");
        assert_eq!(g.time(), Some(&Closed::Announced { at }));
        assert_eq!(g.opens(), Some(at));
    }

    #[test]
    fn lead_time_then_window_then_open_and_urgent_skips_both() {
        let mut p = policy("p");
        nightly(&mut p);
        p.spec.announce = Some(crate::api::Announce {
            lead_time: "24h".into(),
        });
        let none = (Classified::default(), Advanced::default());
        let g = run(&p, NOW, &none.0, &none.1);
        let at = ts("2026-11-28T22:00:00Z");
        assert_eq!(g.scheduled, Some(at));
        assert_eq!(g.closed, [Closed::Announced { at }]);
        // Decided again inside the window, with the announcement kept.
        p.status = Some(PatchPolicyStatus {
            revision: Some("r1".into()),
            announced_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                g.announced_at,
            )),
            ..PatchPolicyStatus::default()
        });
        assert!(run(&p, "2026-11-28T23:00:00Z", &none.0, &none.1).open());
        // Too late in the window for a node (37 min needed by default).
        let late = run(&p, "2026-11-29T04:40:00Z", &none.0, &none.1);
        assert!(
            matches!(late.time(), Some(Closed::Window { why, .. }) if why.contains("a node needs 37m")),
            "{:?}",
            late.closed
        );
        p.spec.urgent = true;
        let urgent = run(&p, "2026-11-29T12:00:00Z", &none.0, &none.1);
        assert!(urgent.open());
        assert_eq!(urgent.scheduled, Some(ts(NOW)));
    }

    #[test]
    fn failures_of_this_plan_count_and_releases_free_budget() {
        let mut p = policy("p");
        p.spec.rollout.max_failed_nodes = 1;
        p.spec.rollout.max_unavailable =
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("50%".into());
        let classified = Classified {
            total: 6,
            budget_base: 6,
            failed: 1,
            unavailable: 3,
            ..Classified::default()
        };
        let mut failing = crate::core::rollout::test_support::rec("p", Step::Failed, ts(NOW));
        let mut advanced = Advanced {
            freed: 1,
            ..Advanced::default()
        };
        // A failure of an older revision does not count.
        failing.revision = "r0".into();
        advanced.records.insert(0, failing.clone());
        let g = run(&p, NOW, &classified, &advanced);
        assert!(g.open());
        assert_eq!(
            g.budget,
            Budget {
                max: 3,
                unavailable: 2
            }
        );
        failing.revision = "r1".into();
        advanced.records.insert(0, failing);
        assert_eq!(
            run(&p, NOW, &classified, &advanced).closed,
            [Closed::TooManyFailures]
        );
    }
}
