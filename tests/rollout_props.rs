//! Property tests of the rollout core: random fleets, windows, blackouts, clocks,
//! step durations and failures drive `decide()` through a simulated cluster, and
//! the safety rules are checked at every decision.
//!
//! The number of cases is small by default so the normal test run stays fast;
//! set `SOFORT_PROPTEST_CASES` (for example `SOFORT_PROPTEST_CASES=2000`) to
//! search harder.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use sofort::api::{
    Announce, Blackout, MaintenanceWindow, OrderSpec, PatchPolicy, PatchPolicySpec, Phase, Step,
    Weekday,
};
use sofort::core::forecast::{Behaviour, World, simulate};
use sofort::core::order::OrderKey;
use sofort::core::rollout::{Action, Config, DrainState, NodeView};
use sofort::core::window::Schedule;

fn cases() -> u32 {
    std::env::var("SOFORT_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
}

#[derive(Debug, Clone)]
struct FleetNode {
    zone: Option<u8>,
    prio: Option<u8>,
    cordoned: bool,
    not_ready: bool,
    drain_min: Option<u8>,
    reboot_min: Option<u8>,
}

#[derive(Debug, Clone)]
struct Scenario {
    nodes: Vec<FleetNode>,
    windows: Vec<(Vec<Weekday>, u8, u8, &'static str)>,
    blackouts: Vec<(u32, u32)>,
    start_offset: u32,
    lead_hours: u8,
    urgent: bool,
    max_unavailable: IntOrString,
    max_failed: u32,
    group: bool,
}

const ZONES: [&str; 3] = ["UTC", "Europe/Zurich", "America/New_York"];

fn fleet_node(failures: bool, odd: bool) -> impl Strategy<Value = FleetNode> {
    let fail_w = if failures { 1u32 } else { 0 };
    let odd_w = if odd { 1u32 } else { 0 };
    (
        proptest::option::of(0u8..3),
        proptest::option::of(0u8..20),
        prop_oneof![9 => Just(false), odd_w => Just(true)],
        prop_oneof![19 => Just(false), odd_w => Just(true)],
        prop_oneof![12 => (1u8..15).prop_map(Some), fail_w => Just(None)],
        prop_oneof![12 => (1u8..15).prop_map(Some), fail_w => Just(None)],
    )
        .prop_map(
            |(zone, prio, cordoned, not_ready, drain_min, reboot_min)| FleetNode {
                zone,
                prio,
                cordoned,
                not_ready,
                drain_min,
                reboot_min,
            },
        )
}

fn days() -> impl Strategy<Value = Vec<Weekday>> {
    proptest::sample::subsequence(Weekday::ALL.to_vec(), 1..=7)
}

fn scenario(
    max_nodes: usize,
    failures: bool,
    odd: bool,
    blackouts: bool,
) -> impl Strategy<Value = Scenario> {
    let nodes = prop_oneof![4 => proptest::collection::vec(fleet_node(failures, odd), 1..40),
        1 => proptest::collection::vec(fleet_node(failures, odd), 1..max_nodes)];
    let windows = proptest::collection::vec(
        (
            days(),
            0u8..24,
            2u8..14,
            proptest::sample::select(ZONES.to_vec()),
        ),
        0..3,
    );
    let bl = if blackouts { 0..3usize } else { 0..1usize };
    (
        nodes,
        windows,
        proptest::collection::vec((0u32..30 * 24, 1u32..72), bl),
        0u32..(365 * 24 * 60),
        0u8..72,
        any::<bool>(),
        prop_oneof![
            (1i32..5).prop_map(IntOrString::Int),
            (1u8..60).prop_map(|p| IntOrString::String(format!("{p}%")))
        ],
        0u32..3,
        any::<bool>(),
    )
        .prop_map(
            |(
                nodes,
                windows,
                blackouts,
                start_offset,
                lead_hours,
                urgent,
                max_unavailable,
                max_failed,
                group,
            )| Scenario {
                nodes,
                windows,
                blackouts,
                start_offset,
                lead_hours,
                urgent,
                max_unavailable,
                max_failed,
                group,
            },
        )
}

fn t0(s: &Scenario) -> Timestamp {
    let base: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    base.checked_add(SignedDuration::from_mins(i64::from(s.start_offset)))
        .unwrap()
}

fn build(s: &Scenario) -> (PatchPolicy, World, BTreeSet<String>) {
    let start = t0(s);
    let mut spec = PatchPolicySpec::new("r1");
    spec.urgent = s.urgent;
    spec.node_selector = LabelSelector {
        match_labels: Some([("role".to_string(), "worker".to_string())].into()),
        match_expressions: None,
    };
    spec.maintenance_windows = s
        .windows
        .iter()
        .map(|(days, h, len, tz)| MaintenanceWindow {
            days: days.clone(),
            start: format!("{h:02}:00"),
            end: format!("{:02}:00", (u16::from(*h) + u16::from(*len)) % 24),
            time_zone: tz.to_string(),
            weeks_of_month: Vec::new(),
            offset_days: 0,
        })
        .collect();
    spec.blackouts = s
        .blackouts
        .iter()
        .map(|(off, len)| Blackout {
            start: Time(
                start
                    .checked_add(SignedDuration::from_hours(i64::from(*off)))
                    .unwrap(),
            ),
            end: Time(
                start
                    .checked_add(SignedDuration::from_hours(i64::from(off + len)))
                    .unwrap(),
            ),
            reason: Some("freeze".into()),
        })
        .collect();
    if s.lead_hours > 0 {
        spec.announce = Some(Announce {
            lead_time: format!("{}h", s.lead_hours),
        });
    }
    spec.rollout.max_unavailable = s.max_unavailable.clone();
    spec.rollout.max_failed_nodes = s.max_failed;
    spec.rollout.order = OrderSpec {
        group_by: s.group.then(|| "zone".to_string()),
        sort_by: vec!["prio".into()],
    };
    let policy = PatchPolicy::new("p", spec);
    let mut pre = BTreeSet::new();
    let nodes = s
        .nodes
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = format!("n-{i}");
            let mut labels = BTreeMap::new();
            labels.insert(
                "role".to_string(),
                if i % 7 == 6 { "infra" } else { "worker" }.to_string(),
            );
            if let Some(z) = f.zone {
                labels.insert("zone".into(), format!("z{z}"));
            }
            if let Some(p) = f.prio {
                labels.insert("prio".into(), p.to_string());
            }
            if f.cordoned {
                pre.insert(name.clone());
            }
            let view = NodeView {
                name: name.clone(),
                labels,
                ready: !f.not_ready,
                unschedulable: f.cordoned,
                boot_id: Some(format!("{name}-boot-0")),
                ..NodeView::default()
            };
            let b = Behaviour {
                drain: f.drain_min.map(|m| Duration::from_secs(u64::from(m) * 60)),
                reboot: f.reboot_min.map(|m| Duration::from_secs(u64::from(m) * 60)),
                patch: Duration::from_secs(60),
                patch_ok: true,
            };
            (view, b)
        })
        .collect();
    (policy, World::new(nodes), pre)
}

fn unavailable(v: &NodeView) -> bool {
    !v.ready || v.unschedulable || v.record.as_ref().is_some_and(|r| r.step.in_progress())
}

fn selected(v: &NodeView) -> bool {
    v.labels.get("role").map(String::as_str) == Some("worker")
}

/// Runs a scenario, checking the safety rules at every decision. Returns the
/// final phase and the world.
fn run_checked(s: &Scenario) -> Result<(Option<Phase>, World, String), TestCaseError> {
    let (mut policy, mut world, pre) = build(s);
    let cfg = Config::from_spec(&policy.spec);
    let schedule = Schedule::new(&policy.spec.maintenance_windows, &policy.spec.blackouts).unwrap();
    let total = world.views().iter().filter(|v| selected(v)).count();
    let max = sofort::core::budget::max_unavailable(&s.max_unavailable, total).unwrap();
    let urgent = s.urgent;
    let mut violation: Option<String> = None;
    let out = simulate(
        &mut policy,
        &mut world,
        t0(s),
        Duration::from_secs(400 * 86400),
        |t, plan, views| {
            if violation.is_some() {
                return;
            }
            let by_name: BTreeMap<&str, &NodeView> =
                views.iter().map(|v| (v.name.as_str(), v)).collect();
            let claims: Vec<&str> = plan
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::Claim { node, record }
                        if record.since == t
                            && record.started == t
                            && by_name
                                .get(node.as_str())
                                .is_some_and(|v| v.record.is_none()) =>
                    {
                        Some(node.as_str())
                    }
                    _ => None,
                })
                .collect();
            if !claims.is_empty() {
                // Budget: the plan applied in order, every start that costs
                // a slot leaves at most max unavailable (a release earlier
                // in the plan frees its slot).
                let mut unav: BTreeMap<&str, bool> = views
                    .iter()
                    .filter(|v| {
                        selected(v) || v.record.as_ref().is_some_and(|r| r.step.in_progress())
                    })
                    .map(|v| (v.name.as_str(), unavailable(v)))
                    .collect();
                for a in &plan.actions {
                    match a {
                        Action::Release {
                            node,
                            uncordon: true,
                            ..
                        }
                        | Action::MarkFailed {
                            node,
                            uncordon: true,
                            ..
                        } => {
                            if let Some(u) = unav.get_mut(node.as_str()) {
                                *u = !by_name[node.as_str()].ready;
                            }
                        }
                        Action::Claim { node, .. } | Action::CordonAgain { node, .. } => {
                            let was = unav.insert(node.as_str(), true).unwrap_or(false);
                            let count = unav.values().filter(|u| **u).count();
                            if claims.contains(&node.as_str()) && !was && count > max {
                                violation = Some(format!(
                                    "budget exceeded at {t} by starting {node}: {count} > {max}"
                                ));
                            }
                        }
                        _ => {}
                    }
                }
                // Windows, blackouts and lead time.
                if !urgent {
                    let sched = plan.status.scheduled_start.as_ref().map(|x| x.0);
                    let ok = sched.is_some_and(|st| t >= st)
                        && schedule.is_open(t)
                        && schedule.blackout_at(t).is_none()
                        && schedule
                            .remaining(t)
                            .is_some_and(|r| r >= cfg.min_remaining);
                    if !ok {
                        violation =
                            Some(format!("non-urgent start outside a usable window at {t}"));
                    }
                }
                for n in &claims {
                    if !by_name[*n].ready {
                        violation = Some(format!("NotReady node {n} started"));
                    }
                }
            }
            for a in &plan.actions {
                match a {
                    Action::Release {
                        node,
                        uncordon: true,
                        ..
                    }
                    | Action::MarkFailed {
                        node,
                        uncordon: true,
                        ..
                    } if pre.contains(node) => {
                        violation = Some(format!("pre-cordoned node {node} uncordoned"));
                    }
                    Action::RequestReboot { node, .. } => {
                        let v = by_name[node.as_str()];
                        let step = v.record.as_ref().map(|r| r.step);
                        let drained =
                            step == Some(Step::Draining) && v.drain == DrainState::Drained;
                        let patched = step == Some(Step::Patching);
                        if !v.unschedulable || !(drained || patched) {
                            violation = Some(format!("reboot of {node} without cordon and drain"));
                        }
                    }
                    _ => {}
                }
            }
        },
    );
    if let Some(v) = violation {
        return Err(TestCaseError::fail(v));
    }
    for n in &world.nodes {
        for (rev, count) in &n.reboots {
            prop_assert!(
                *count <= 1,
                "{} rebooted {count} times for {rev}",
                n.view.name
            );
        }
        if pre.contains(&n.view.name) {
            prop_assert!(
                n.view.unschedulable,
                "pre-cordoned {} was uncordoned",
                n.view.name
            );
        }
    }
    let phase = out.last.as_ref().and_then(|p| p.status.phase);
    let message = format!(
        "{:?} at {}: {}",
        out.stuck,
        out.end,
        out.last
            .as_ref()
            .and_then(|p| p.status.message.clone())
            .unwrap_or_default()
    );
    Ok((phase, world, message))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Safety under failures, pre-cordoned and NotReady nodes, blackouts.
    #[test]
    fn safety_rules_hold_at_every_decision(s in scenario(500, true, true, true)) {
        run_checked(&s)?;
    }

    /// Liveness: windows open every week, no failures, every node Ready: every
    /// selected node ends Done and the phase is Completed.
    #[test]
    fn every_selected_node_finishes_without_failures(s in scenario(60, false, false, true)) {
        let (phase, world, message) = run_checked(&s)?;
        prop_assert_eq!(phase, Some(Phase::Completed), "{}", message);
        for n in &world.nodes {
            if selected(&n.view) {
                prop_assert_eq!(n.view.done.get("p").map(String::as_str), Some("r1"), "{} not done: {}", n.view.name, message);
                prop_assert!(n.view.record.is_none());
            }
        }
    }

    /// Nodes start in rollout order, as the one order key defines it: with
    /// nothing holding a node back, no node starts after a node that comes
    /// later in the order.
    #[test]
    fn nodes_start_in_order_key_order(s in scenario(60, false, false, true)) {
        let (_, world, message) = run_checked(&s)?;
        let (policy, _, _) = build(&s);
        let spec = &policy.spec.rollout.order;
        let mut starts: Vec<(OrderKey<'_>, &str, Option<Timestamp>)> = world
            .nodes
            .iter()
            .filter(|n| selected(&n.view))
            .map(|n| (OrderKey::of(spec, &n.view.name, &n.view.labels), n.view.name.as_str(), n.started))
            .collect();
        starts.sort_by(|a, b| a.0.cmp(&b.0));
        for pair in starts.windows(2) {
            let ((_, a, at), (_, b, bt)) = (&pair[0], &pair[1]);
            prop_assert!(at.is_some() && bt.is_some(), "{a} or {b} never started: {message}");
            prop_assert!(at <= bt, "{b} started at {bt:?}, before {a} at {at:?}, which comes first: {message}");
        }
    }

    /// The forecast decides over an index of the order built once; at every
    /// decision of a whole rollout that must give the plan decide() gives.
    #[test]
    fn a_reused_order_index_decides_like_decide(s in scenario(120, true, true, true)) {
        let (mut policy, mut world, _) = build(&s);
        let mut input = policy.clone();
        let mut mismatch: Option<String> = None;
        simulate(
            &mut policy,
            &mut world,
            t0(&s),
            Duration::from_secs(400 * 86400),
            |t, plan, views| {
                let fresh = sofort::core::rollout::decide(&input, views, &[], t);
                if mismatch.is_none() && &fresh != plan {
                    mismatch = Some(format!("at {t}:\nindexed: {plan:?}\nfresh: {fresh:?}"));
                }
                input.status = Some(plan.status.clone());
            },
        );
        prop_assert!(mismatch.is_none(), "{}", mismatch.unwrap_or_default());
    }

    /// decide() is deterministic and pure: the same input gives the same plan.
    #[test]
    fn decide_is_deterministic(s in scenario(80, true, true, true), minutes in 0u32..(14 * 24 * 60)) {
        let (policy, world, _) = build(&s);
        let now = t0(&s).checked_add(SignedDuration::from_mins(i64::from(minutes))).unwrap();
        let a = sofort::core::rollout::decide(&policy, world.views(), &[], now);
        let b = sofort::core::rollout::decide(&policy, world.views(), &[], now);
        prop_assert_eq!(a, b);
    }
}
