//! Round planning over decide: a small pass loop with the clock as input.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::*;
use crate::api::{Announce, Phase};
use crate::core::rollout::{self, Action};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn node(name: &str, due: bool) -> NodeView {
    NodeView {
        name: name.into(),
        labels: BTreeMap::new(),
        ready: true,
        boot_id: Some(format!("{name}-b0")),
        reboot_required: Some(due),
        ..NodeView::default()
    }
}

fn standing() -> PatchPolicy {
    let mut spec = PatchPolicySpec::new("");
    spec.trigger = Trigger::RebootRequired;
    spec.announce = Some(Announce {
        lead_time: "1h".into(),
    });
    spec.rollout.min_round_interval = Some("24h".into());
    PatchPolicy::new("p", spec)
}

/// One controller pass: plan; a newly planned round is only announced
/// (status written); otherwise decide runs on the round. Returns the claims.
fn pass(p: &mut PatchPolicy, nodes: &[NodeView], now: Timestamp) -> Vec<String> {
    let cfg = Config::from_spec(&p.spec);
    let plan = plan(&p.spec, &cfg, p.status.as_ref(), nodes, now);
    if plan.planned {
        let mut st = p.status.clone().unwrap_or_default();
        st.round = plan.round.clone();
        st.next_round = Some(plan.next.clone());
        p.status = Some(st);
        return Vec::new();
    }
    let (eff, ecfg) = effective(p, &cfg, &plan);
    let d = rollout::decide_with(&eff, &ecfg, nodes, &[], now);
    let mut st = d.status.clone();
    finish(&plan, &mut st);
    p.status = Some(st);
    d.actions
        .iter()
        .filter(|a| matches!(a, Action::Claim { .. }))
        .map(|a| a.node().to_string())
        .collect()
}

/// `n` went through the round: done under `round`, no reboot needed now.
fn done(n: &mut NodeView, round: &str) {
    n.done.insert("p".into(), round.into());
    n.reboot_required = Some(false);
    n.record = None;
}

fn round(p: &PatchPolicy) -> RoundStatus {
    p.status.as_ref().unwrap().round.clone().unwrap()
}

#[test]
fn revision_at_creation_forces_nothing_and_no_due_node_plans_no_round() {
    let mut p = standing();
    p.spec.revision = "2026-11".into();
    let nodes = vec![node("a", false), node("b", false)];
    let claims = pass(&mut p, &nodes, ts("2026-12-01T10:00:00Z"));
    assert!(claims.is_empty());
    let st = p.status.as_ref().unwrap();
    assert_eq!(st.round, None);
    assert_eq!(st.revision.as_deref(), Some(NO_ROUND));
    let next = st.next_round.as_ref().unwrap();
    assert_eq!((next.due, next.revision.as_deref()), (0, Some("2026-11")));
}

#[test]
fn a_round_freezes_its_due_set_and_a_later_due_node_waits_for_the_next() {
    let mut p = standing();
    let mut nodes = vec![node("a", true), node("b", false), node("c", true)];
    let t0 = ts("2026-12-01T10:00:00Z");
    assert!(pass(&mut p, &nodes, t0).is_empty());
    let r = round(&p);
    assert_eq!(r.id, "r1-20261201");
    assert_eq!(r.nodes, vec!["a", "c"]);
    assert_eq!(r.phase, RoundPhase::Scheduled);
    assert_eq!(r.scheduled_start, Some(Time(ts("2026-12-01T11:00:00Z"))));

    // b becomes due after the announcement: not a member.
    nodes[1].reboot_required = Some(true);
    assert!(pass(&mut p, &nodes, ts("2026-12-01T10:30:00Z")).is_empty());
    assert_eq!(round(&p).nodes, vec!["a", "c"]);
    assert_eq!(
        p.status.as_ref().unwrap().next_round.as_ref().unwrap().due,
        1
    );

    // After the lead time only members start, one at a time.
    let t1 = ts("2026-12-01T11:00:00Z");
    assert_eq!(pass(&mut p, &nodes, t1), vec!["a"]);
    assert_eq!(round(&p).phase, RoundPhase::Running);
    assert_eq!(round(&p).started_at, Some(Time(t1)));
    done(&mut nodes[0], "r1-20261201");
    assert_eq!(pass(&mut p, &nodes, ts("2026-12-01T11:10:00Z")), vec!["c"]);
    done(&mut nodes[2], "r1-20261201");
    assert!(pass(&mut p, &nodes, ts("2026-12-01T11:20:00Z")).is_empty());
    assert_eq!(round(&p).phase, RoundPhase::Completed);
    assert_eq!(p.status.as_ref().unwrap().phase, Some(Phase::Completed));

    // The next round takes b, not before minRoundInterval after r1 started
    // (announced a lead time ahead).
    let cfg = Config::from_spec(&p.spec);
    let early = plan(
        &p.spec,
        &cfg,
        p.status.as_ref(),
        &nodes,
        ts("2026-12-02T09:59:00Z"),
    );
    assert_eq!(early.wake_at, Some(ts("2026-12-02T10:00:00Z")));
    assert!(pass(&mut p, &nodes, ts("2026-12-02T09:59:00Z")).is_empty());
    assert_eq!(round(&p).id, "r1-20261201");
    let next = p.status.as_ref().unwrap().next_round.clone().unwrap();
    assert_eq!(next.due, 1);
    assert_eq!(next.earliest_start, Some(Time(ts("2026-12-02T11:00:00Z"))));
    assert!(pass(&mut p, &nodes, ts("2026-12-02T10:00:00Z")).is_empty());
    let r2 = round(&p);
    assert_eq!(
        (r2.id.as_str(), r2.nodes.clone()),
        ("r2-20261202", vec!["b".to_string()])
    );
    assert_eq!(r2.scheduled_start, Some(Time(ts("2026-12-02T11:00:00Z"))));
    assert!(pass(&mut p, &nodes, ts("2026-12-02T10:59:00Z")).is_empty());
    assert_eq!(pass(&mut p, &nodes, ts("2026-12-02T11:00:00Z")), vec!["b"]);
}

#[test]
fn urgent_starts_a_round_at_once_for_every_due_node() {
    let mut p = standing();
    let mut nodes = vec![node("a", true), node("b", false)];
    let t0 = ts("2026-12-01T10:00:00Z");
    pass(&mut p, &nodes, t0);
    assert_eq!(round(&p).nodes, vec!["a"]);
    nodes[1].reboot_required = Some(true);
    p.spec.urgent = true;
    p.spec.rollout.max_unavailable =
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2);
    let t1 = ts("2026-12-01T10:05:00Z");
    // The scheduled, unstarted round takes b and starts now.
    assert!(pass(&mut p, &nodes, t1).is_empty());
    assert_eq!(round(&p).nodes, vec!["a", "b"]);
    assert_eq!(round(&p).scheduled_start, Some(Time(t1)));
    assert_eq!(pass(&mut p, &nodes, t1), vec!["a", "b"]);
}

#[test]
fn urgent_ignores_the_round_interval() {
    let mut p = standing();
    p.spec.urgent = true;
    let mut nodes = vec![node("a", true), node("b", false)];
    let t0 = ts("2026-12-01T10:00:00Z");
    pass(&mut p, &nodes, t0);
    assert_eq!(pass(&mut p, &nodes, t0), vec!["a"]);
    done(&mut nodes[0], &round(&p).id);
    pass(&mut p, &nodes, ts("2026-12-01T10:10:00Z"));
    assert_eq!(round(&p).phase, RoundPhase::Completed);
    nodes[1].reboot_required = Some(true);
    let t1 = ts("2026-12-01T10:11:00Z");
    pass(&mut p, &nodes, t1);
    assert_eq!(round(&p).id, "r2-20261201");
    assert_eq!(pass(&mut p, &nodes, t1), vec!["b"]);
}

#[test]
fn a_deleted_member_frees_its_slot_and_does_not_fail_the_round() {
    let mut p = standing();
    p.spec.announce = None;
    let mut nodes = vec![node("a", true), node("b", true)];
    let t0 = ts("2026-12-01T10:00:00Z");
    pass(&mut p, &nodes, t0);
    assert_eq!(pass(&mut p, &nodes, t0), vec!["a"]);
    // a is deleted while claimed (replaced by the cloud).
    nodes.remove(0);
    let t1 = ts("2026-12-01T10:05:00Z");
    let cfg = Config::from_spec(&p.spec);
    assert_eq!(
        plan(&p.spec, &cfg, p.status.as_ref(), &nodes, t1).newly_gone,
        vec!["a"]
    );
    assert_eq!(pass(&mut p, &nodes, t1), vec!["b"]);
    let st = p.status.as_ref().unwrap();
    assert_eq!(round(&p).gone, vec!["a"]);
    assert_eq!(st.nodes.as_ref().map(|n| (n.total, n.failed)), Some((1, 0)));
    // A new node named a waits for the next round.
    let mut back = node("a", true);
    back.boot_id = Some("a-new".into());
    nodes.push(back);
    done(&mut nodes[0], &round(&p).id);
    assert!(pass(&mut p, &nodes, ts("2026-12-01T10:10:00Z")).is_empty());
    assert_eq!(round(&p).phase, RoundPhase::Completed);
    assert_eq!(p.status.as_ref().unwrap().failed.len(), 0);
}

#[test]
fn a_changed_revision_makes_the_next_round_fleet_wide() {
    let mut p = standing();
    p.spec.announce = None;
    p.spec.rollout.min_round_interval = None;
    p.spec.revision = "v1".into();
    let nodes = vec![node("a", false), node("b", true)];
    let t0 = ts("2026-12-01T10:00:00Z");
    pass(&mut p, &nodes, t0);
    assert_eq!(round(&p).nodes, vec!["b"]);
    assert!(!round(&p).fleet_wide);
    p.spec.revision = "v2".into();
    assert_eq!(pass(&mut p, &nodes, t0), vec!["b"]);
    // Still pending while r1 runs.
    let next = p.status.as_ref().unwrap().next_round.clone().unwrap();
    assert_eq!((next.due, next.revision.as_deref()), (1, Some("v1")));
    let mut nodes = nodes;
    done(&mut nodes[1], "r1-20261201");
    pass(&mut p, &nodes, t0);
    assert_eq!(round(&p).phase, RoundPhase::Completed);
    pass(&mut p, &nodes, t0);
    let r2 = round(&p);
    assert!(r2.fleet_wide);
    assert_eq!(r2.nodes, vec!["a", "b"]);
    assert_eq!(
        p.status
            .as_ref()
            .unwrap()
            .next_round
            .as_ref()
            .unwrap()
            .revision
            .as_deref(),
        Some("v2")
    );
    // Reboot as written (Always): a, which needs no reboot, starts too.
    assert_eq!(pass(&mut p, &nodes, t0), vec!["a"]);
}

#[test]
fn round_ids_are_checked_and_a_forged_one_is_ignored() {
    assert!(is_round_id("r12-20261202"));
    assert!(is_round_id(NO_ROUND));
    for bad in [
        "",
        "r-20261202",
        "rx-20261202",
        "r1-2026120",
        "r1-2026-12-02",
        "r1-20261202 ",
        "x1-20261202",
    ] {
        assert!(!is_round_id(bad), "{bad:?}");
    }
    let mut p = standing();
    p.status = Some(PatchPolicyStatus {
        round: Some(RoundStatus {
            id: "$(rm -rf /)".into(),
            nodes: vec!["a".into()],
            phase: RoundPhase::Running,
            scheduled_start: None,
            started_at: None,
            completed_at: None,
            gone: Vec::new(),
            fleet_wide: false,
        }),
        ..PatchPolicyStatus::default()
    });
    assert_eq!(effective_revision(&p), NO_ROUND);
    let cfg = Config::from_spec(&p.spec);
    let plan = plan(
        &p.spec,
        &cfg,
        p.status.as_ref(),
        &[node("a", true)],
        ts("2026-12-01T10:00:00Z"),
    );
    assert_eq!(plan.round.map(|r| r.id), Some("r1-20261201".to_string()));
}

#[test]
fn a_revision_policy_has_no_rounds() {
    let p = PatchPolicy::new("p", PatchPolicySpec::new("r7"));
    assert_eq!(effective_revision(&p), "r7");
    assert_eq!(stored_members(&p), None);
}

#[test]
fn the_forecast_shows_the_next_round_as_it_would_be_planned() {
    let mut p = standing();
    let mut nodes = vec![node("a", true), node("b", false)];
    let t0 = ts("2026-12-01T10:00:00Z");
    pass(&mut p, &nodes, t0);
    let cfg = Config::from_spec(&p.spec);
    // While the round is open, the forecast is of it.
    let (current, at) = to_forecast(&p, &cfg, &nodes, ts("2026-12-01T10:01:00Z"));
    assert_eq!((current.planned, at), (false, ts("2026-12-01T10:01:00Z")));
    assert!(
        describe(&current, at)
            .starts_with("round r1-20261201 (current round, Scheduled): 1 node due: a;")
    );
    assert_eq!(pass(&mut p, &nodes, ts("2026-12-01T11:00:00Z")), vec!["a"]);
    done(&mut nodes[0], "r1-20261201");
    pass(&mut p, &nodes, ts("2026-12-01T11:10:00Z"));
    nodes[1].reboot_required = Some(true);
    // Completed; b is due but the interval holds: planned 24h - 1h after r1 started.
    let (next, at) = to_forecast(&p, &cfg, &nodes, ts("2026-12-01T12:00:00Z"));
    assert_eq!(at, ts("2026-12-02T10:00:00Z"));
    assert!(next.planned);
    let r = next.round.clone().unwrap();
    assert_eq!(
        (r.id.as_str(), r.nodes.clone()),
        ("r2-20261202", vec!["b".to_string()])
    );
    assert_eq!(r.scheduled_start, Some(Time(ts("2026-12-02T11:00:00Z"))));
    assert_eq!(
        describe(&next, at),
        "round r2-20261202 (next round, planned at 2026-12-02T10:00:00Z): 1 node due: b; earliest start 2026-12-02T11:00:00Z"
    );
}

#[test]
fn a_policy_switched_back_to_revision_drops_its_rounds() {
    let mut p = standing();
    let nodes = vec![node("a", true)];
    pass(&mut p, &nodes, ts("2026-12-01T10:00:00Z"));
    assert!(p.status.as_ref().unwrap().round.is_some());
    p.spec.trigger = Trigger::Revision;
    p.spec.revision = "v1".into();
    let d = rollout::decide(&p, &nodes, &[], ts("2026-12-01T10:01:00Z"));
    assert_eq!((d.status.round, d.status.next_round), (None, None));
}
