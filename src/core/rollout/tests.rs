//! Whole decisions: the rules of the module docs, through [`decide`].

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::test_support::{NOW, claims, node, policy, rec, ts};
use super::*;
use crate::api::{Announce, MaintenanceWindow, OnTimeout, Phase, RebootWhen, Step, Weekday};
use crate::core::node_record::NodeRecord;

#[test]
fn a_node_cordoned_by_someone_goes_when_the_budget_blocks_even_from_a_later_group() {
    let p = policy("p");
    let mut cordoned = node("w-b1", "b");
    cordoned.unschedulable = true;
    let nodes = vec![node("w-a1", "a"), cordoned, node("w-c1", "c")];
    let plan = decide(&p, &nodes, &[], ts(NOW));
    // maxUnavailable 1 is used up by w-b1: zone a cannot start, w-b1 costs nothing.
    assert_eq!(claims(&plan), ["w-b1"]);
    let Action::Claim { record, .. } = &plan.actions[0] else {
        panic!()
    };
    assert!(
        record.was_unschedulable,
        "it will never be uncordoned by sofort"
    );
}

#[test]
fn claims_in_order_within_budget_and_group() {
    let p = policy("p");
    let nodes = vec![node("w-b1", "b"), node("w-a2", "a"), node("w-a1", "a")];
    let plan = decide(&p, &nodes, &[], ts(NOW));
    assert_eq!(claims(&plan), ["w-a1"]);
    let Action::Claim { record, .. } = &plan.actions[0] else {
        panic!()
    };
    assert_eq!(record.policy, "p");
    assert!(!record.was_unschedulable);
    assert_eq!(plan.status.phase, Some(Phase::Progressing));
    assert_eq!(plan.status.nodes.as_ref().unwrap().summary, "0/3");
    assert_eq!(plan.status.active[0].node, "w-a1");
}

#[test]
fn waits_for_the_window_and_says_so() {
    let mut p = policy("p");
    p.spec.maintenance_windows = vec![MaintenanceWindow {
        days: vec![
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ],
        start: "22:00".into(),
        end: "05:00".into(),
        time_zone: "Europe/Zurich".into(),
        weeks_of_month: Vec::new(),
        offset_days: 0,
    }];
    p.spec.announce = Some(Announce {
        lead_time: "48h".into(),
    });
    let nodes = vec![node("w-a1", "a")];
    let plan = decide(&p, &nodes, &[], ts(NOW));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.status.phase, Some(Phase::Scheduled));
    // Fri 10:00 + 48 h = Sun 10:00; first weekday window Mon 22:00 CET.
    assert_eq!(
        plan.status.scheduled_start.as_ref().unwrap().0,
        ts("2026-11-30T21:00:00Z")
    );
    assert!(
        plan.status
            .message
            .as_ref()
            .unwrap()
            .contains("starts Mon 2026-11-30 22:00 Europe/Zurich"),
        "{:?}",
        plan.status.message
    );
    assert_eq!(
        plan.requeue_after,
        Some(Duration::from_secs((3 * 24 + 12) * 3600))
    );
    // Announced: the schedule does not move when decided again later.
    let mut p2 = p.clone();
    p2.status = Some(plan.status.clone());
    let later = decide(&p2, &nodes, &[], ts("2026-11-28T09:00:00Z"));
    assert_eq!(later.status.scheduled_start, plan.status.scheduled_start);
    assert_eq!(later.status.announced_at, plan.status.announced_at);
    // After the lead time, outside the window: Waiting, naming the window.
    let tue = decide(&p2, &nodes, &[], ts("2026-12-01T12:00:00Z"));
    assert_eq!(tue.status.phase, Some(Phase::Waiting));
    assert!(
        tue.status
            .message
            .as_ref()
            .unwrap()
            .contains("waiting for window Tue 2026-12-01 22:00 Europe/Zurich"),
        "{:?}",
        tue.status.message
    );
    // Inside the window: starts.
    let open = decide(&p2, &nodes, &[], ts("2026-12-01T21:30:00Z"));
    assert_eq!(claims(&open), ["w-a1"]);
    // Too close to the window end (default needs 37m): waits.
    let late = decide(&p2, &nodes, &[], ts("2026-12-02T03:40:00Z"));
    assert!(claims(&late).is_empty());
    assert!(
        late.status
            .message
            .as_ref()
            .unwrap()
            .contains("a node needs 37m"),
        "{:?}",
        late.status.message
    );
}

#[test]
fn budget_counts_every_unavailable_node() {
    let mut p = policy("p");
    p.spec.rollout.max_unavailable = IntOrString::Int(2);
    let mut nodes: Vec<NodeView> = (1..=6).map(|i| node(&format!("w-a{i}"), "a")).collect();
    nodes[3].ready = false;
    nodes[4].unschedulable = true;
    nodes[5].record = Some(rec("other", Step::Rebooting, ts(NOW)));
    let plan = decide(&p, &nodes, &[], ts(NOW));
    assert!(claims(&plan).is_empty());
    assert!(
        plan.status
            .message
            .as_ref()
            .unwrap()
            .contains("blocked: 3 nodes unavailable, maxUnavailable 2"),
        "{:?}",
        plan.status.message
    );
}

#[test]
fn pre_cordoned_node_is_started_for_free_and_never_uncordoned() {
    let p = policy("p");
    let mut n = node("w-a1", "a");
    n.unschedulable = true;
    let plan = decide(&p, std::slice::from_ref(&n), &[], ts(NOW));
    let Action::Claim { record, .. } = &plan.actions[0] else {
        panic!()
    };
    assert!(record.was_unschedulable);
    n.record = Some(NodeRecord {
        step: Step::Settling,
        ..record.clone()
    });
    let plan = decide(
        &p,
        std::slice::from_ref(&n),
        &[],
        ts("2026-11-27T10:00:00Z"),
    );
    assert!(
        matches!(&plan.actions[..], [Action::Release { .. }]),
        "{:?}",
        plan.actions
    );
}

#[test]
fn reboot_is_confirmed_only_by_new_boot_id_and_ready() {
    let p = policy("p");
    let t = ts(NOW);
    let mut n = node("w-a1", "a");
    n.unschedulable = true;
    n.drain = DrainState::Drained;
    n.record = Some(rec("p", Step::Draining, t));
    let plan = decide(&p, std::slice::from_ref(&n), &[], t);
    let Action::RequestReboot {
        boot_id, record, ..
    } = &plan.actions[0]
    else {
        panic!("{:?}", plan.actions)
    };
    assert_eq!(boot_id, "w-a1-b0");
    n.record = Some(record.clone());
    n.drain = DrainState::Idle;
    // Ready with the old boot ID: nothing yet.
    assert!(
        decide(&p, std::slice::from_ref(&n), &[], t)
            .actions
            .is_empty()
    );
    // New boot ID but NotReady: waiting.
    n.boot_id = Some("w-a1-b1".into());
    n.ready = false;
    let plan = decide(&p, std::slice::from_ref(&n), &[], t);
    assert!(
        matches!(&plan.actions[..], [Action::SetStep { record, .. }] if record.step == Step::WaitingReady)
    );
    // New boot ID and Ready: settle.
    n.ready = true;
    let plan = decide(&p, std::slice::from_ref(&n), &[], t);
    assert!(
        matches!(&plan.actions[..], [Action::SetStep { record, .. }] if record.step == Step::Settling)
    );
    // The reboot times out without a new boot ID.
    n.boot_id = Some("w-a1-b0".into());
    let plan = decide(
        &p,
        std::slice::from_ref(&n),
        &[],
        ts("2026-11-27T09:21:00Z"),
    );
    assert!(
        matches!(&plan.actions[..], [Action::MarkFailed { uncordon: true, record, .. }] if record.reason.as_deref().unwrap().contains("boot ID"))
    );
}

#[test]
fn a_failed_drain_fails_the_node_at_once_and_uncordons_it() {
    let p = policy("p");
    let t = ts(NOW);
    let mut n = node("w-a1", "a");
    n.unschedulable = true;
    n.drain = DrainState::Failed {
        reason: "forced drain failed: pod deletion is not allowed".into(),
    };
    n.record = Some(rec("p", Step::Draining, t));
    let plan = decide(&p, std::slice::from_ref(&n), &[], t);
    assert!(
        matches!(&plan.actions[..], [Action::MarkFailed { uncordon: true, record, .. }]
            if record.reason.as_deref() == Some("forced drain failed: pod deletion is not allowed")),
        "{:?}",
        plan.actions
    );
}

#[test]
fn drain_timeout_fails_or_forces() {
    let mut p = policy("p");
    let t = ts(NOW);
    let mut n = node("w-a1", "a");
    n.unschedulable = true;
    n.drain = DrainState::Running {
        forcing: false,
        blocker: Some("pod shop/db-0 blocked by PDB shop/db".into()),
    };
    n.record = Some(rec("p", Step::Draining, t));
    let later = ts("2026-11-27T09:15:00Z");
    let plan = decide(&p, std::slice::from_ref(&n), &[], later);
    let Action::MarkFailed {
        uncordon, record, ..
    } = &plan.actions[0]
    else {
        panic!()
    };
    assert!(uncordon);
    assert_eq!(
        record.reason.as_deref(),
        Some("drain timeout after 15m: pod shop/db-0 blocked by PDB shop/db")
    );
    assert_eq!(plan.status.phase, Some(Phase::Halted));
    assert!(
        plan.status
            .message
            .as_ref()
            .unwrap()
            .contains("halted: 1 node failed (max 0)")
    );
    p.spec.drain.on_timeout = OnTimeout::Force;
    let plan = decide(&p, std::slice::from_ref(&n), &[], later);
    assert!(matches!(
        &plan.actions[..],
        [Action::Drain {
            force: true,
            record: None,
            ..
        }]
    ));
}

#[test]
fn halted_after_too_many_failures_but_in_flight_nodes_finish() {
    let mut p = policy("p");
    p.spec.rollout.max_failed_nodes = 1;
    p.spec.rollout.max_unavailable = IntOrString::Int(5);
    let t = ts(NOW);
    let mut nodes: Vec<NodeView> = (1..=5).map(|i| node(&format!("w-a{i}"), "a")).collect();
    for n in nodes.iter_mut().take(2) {
        let mut r = rec("p", Step::Failed, t);
        r.reason = Some("drain timeout".into());
        n.record = Some(r);
    }
    nodes[2].unschedulable = true;
    nodes[2].record = Some(rec("p", Step::Draining, t));
    let plan = decide(&p, &nodes, &[], t);
    assert_eq!(plan.status.phase, Some(Phase::Halted));
    assert!(
        plan.status
            .message
            .as_ref()
            .unwrap()
            .contains("halted: 2 nodes failed (max 1)")
    );
    assert!(claims(&plan).is_empty());
    assert!(
        matches!(&plan.actions[..], [Action::Drain { .. }]),
        "in-flight node goes on"
    );
    let stalled = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "TooManyFailures")
    );
}

#[test]
fn paused_stops_new_starts_only() {
    let mut p = policy("p");
    p.spec.paused = true;
    p.spec.rollout.max_unavailable = IntOrString::Int(3);
    let t = ts(NOW);
    let mut nodes = vec![node("w-a1", "a"), node("w-a2", "a")];
    nodes[0].record = Some(rec("p", Step::Draining, t));
    let plan = decide(&p, &nodes, &[], t);
    assert_eq!(plan.status.phase, Some(Phase::Paused));
    assert_eq!(plan.actions.len(), 1);
    assert_eq!(plan.actions[0].node(), "w-a1");
}

#[test]
fn urgent_policies_go_first_and_claims_are_exclusive() {
    let mut p = policy("routine");
    p.spec.rollout.max_unavailable = IntOrString::Int(2);
    let mut nodes = vec![node("w-a1", "a"), node("w-a2", "a")];
    nodes[1].record = Some(rec("other", Step::Draining, ts(NOW)));
    let urgent = Contender {
        name: "security".into(),
        urgent: true,
        revision: "cve-1".into(),
        selector: LabelSelector::default(),
        members: None,
        active: true,
    };
    let plan = decide(&p, &nodes, std::slice::from_ref(&urgent), ts(NOW));
    assert!(claims(&plan).is_empty());
    assert!(
        plan.status
            .message
            .as_ref()
            .unwrap()
            .contains("node w-a1 waits for urgent policy security")
    );
    // Once the urgent policy is done with w-a1, routine may take it.
    nodes[0].done.insert("security".into(), "cve-1".into());
    let plan = decide(&p, &nodes, std::slice::from_ref(&urgent), ts(NOW));
    assert_eq!(claims(&plan), ["w-a1"]);
    // w-a2 is claimed by another policy: named when it holds the rollout.
    let only = vec![nodes[1].clone()];
    let plan = decide(&p, &only, &[], ts(NOW));
    assert!(
        plan.status
            .message
            .as_ref()
            .unwrap()
            .contains("node w-a2 waits for policy other")
    );
    // An urgent policy is not held back by other urgent policies.
    let mut u = policy("security");
    u.spec.urgent = true;
    let plan = decide(&u, &nodes[..1], std::slice::from_ref(&urgent), ts(NOW));
    assert_eq!(claims(&plan), ["w-a1"]);
}

#[test]
fn if_required_skips_nodes_without_need_and_done_nodes() {
    let mut p = policy("p");
    p.spec.reboot.when = RebootWhen::IfRequired;
    let mut nodes = vec![node("w-a1", "a"), node("w-a2", "a"), node("w-a3", "a")];
    nodes[0].reboot_required = Some(false);
    nodes[1].done.insert("p".into(), "r1".into());
    nodes[2].reboot_required = None;
    let plan = decide(&p, &nodes, &[], ts(NOW));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.status.nodes.as_ref().unwrap().summary, "2/3");
    assert!(
        plan.status
            .message
            .as_ref()
            .unwrap()
            .contains("w-a3 waits for its agent")
    );
    nodes[2].reboot_required = Some(true);
    assert_eq!(claims(&decide(&p, &nodes, &[], ts(NOW))), ["w-a3"]);
    nodes[2].reboot_required = Some(false);
    let done = decide(&p, &nodes, &[], ts(NOW));
    assert_eq!(done.status.phase, Some(Phase::Completed));
    let ready = done
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert!(done.status.completed_at.is_some());
}

#[test]
fn invalid_spec_halts_without_panicking() {
    let mut p = policy("p");
    p.spec.maintenance_windows = vec![MaintenanceWindow {
        days: vec![],
        start: "99:00".into(),
        end: "05:00".into(),
        time_zone: "Nowhere/Land".into(),
        weeks_of_month: Vec::new(),
        offset_days: 0,
    }];
    p.spec.drain.timeout = "soon".into();
    p.spec.rollout.max_unavailable = IntOrString::String("lots".into());
    let plan = decide(&p, &[node("w-a1", "a")], &[], ts(NOW));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.status.phase, Some(Phase::Halted));
    let msg = plan.status.message.unwrap();
    assert!(
        msg.contains("drain.timeout") && msg.contains("maxUnavailable"),
        "{msg}"
    );
    let stalled = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(stalled.reason, "InvalidSpec");
    assert_eq!(stalled.observed_generation, p.metadata.generation);
}

#[test]
fn a_new_revision_lets_the_started_node_finish_under_its_own() {
    let mut p = policy("p");
    p.spec.revision = "r2".into();
    let mut n = node("w-a1", "a");
    n.record = Some(rec("p", Step::Settling, ts("2026-11-27T08:00:00Z")));
    let plan = decide(&p, std::slice::from_ref(&n), &[], ts(NOW));
    let Action::Release { done, .. } = &plan.actions[0] else {
        panic!()
    };
    assert_eq!(done.get("p").map(String::as_str), Some("r1"));
}

#[test]
fn a_settled_node_is_uncordoned_and_released_in_one_action() {
    let p = policy("p");
    let long_ago = ts("2026-11-27T08:00:00Z");
    let mut mine = node("w-a1", "a");
    mine.unschedulable = true;
    mine.record = Some(rec("p", Step::Settling, long_ago));
    let mut theirs = node("w-a2", "a");
    theirs.unschedulable = true;
    let mut r = rec("p", Step::Settling, long_ago);
    r.was_unschedulable = true;
    theirs.record = Some(r);
    let plan = decide(&p, &[mine, theirs], &[], ts(NOW));
    let released: Vec<(&str, bool)> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Release { node, uncordon, .. } => Some((node.as_str(), *uncordon)),
            _ => None,
        })
        .collect();
    assert_eq!(
        released,
        [("w-a1", true), ("w-a2", false)],
        "{:?}",
        plan.actions
    );
    assert!(
        plan.actions
            .iter()
            .all(|a| matches!(a, Action::Release { .. })),
        "no separate uncordon write: {:?}",
        plan.actions
    );
}

#[test]
fn broken_record_is_reported_not_started() {
    let p = policy("p");
    let mut n = node("w-a1", "a");
    n.record_error = Some("bad json".into());
    let plan = decide(&p, &[n], &[], ts(NOW));
    assert!(plan.actions.is_empty());
    assert!(
        plan.status
            .message
            .unwrap()
            .contains("kubectl annotate node w-a1 sofort.dev/record-")
    );
}

#[test]
fn completed_only_once_the_last_release_shows_on_the_node() {
    let p = policy("p");
    let mut done = node("w-a1", "a");
    done.done.insert("p".into(), "r1".into());
    let mut last = node("w-a2", "a");
    last.unschedulable = true;
    last.record = Some(rec("p", Step::Settling, ts("2026-11-27T08:00:00Z")));
    let nodes = vec![done.clone(), last.clone()];
    // The plan releases w-a2; its write may still fail (the API server
    // answers 500), so the status may not say it is done yet.
    for _attempt in 0..2 {
        let plan = decide(&p, &nodes, &[], ts(NOW));
        assert!(
            matches!(&plan.actions[..], [Action::Release { node, uncordon: true, .. }] if node == "w-a2"),
            "{:?}",
            plan.actions
        );
        let status = &plan.status;
        assert_eq!(status.phase, Some(Phase::Progressing), "{status:?}");
        assert_eq!(status.completed_at, None);
        let counts = status.nodes.as_ref().unwrap();
        assert_eq!((counts.updated, counts.in_progress), (1, 1));
        assert_eq!(
            status
                .active
                .iter()
                .map(|a| (a.node.as_str(), a.step))
                .collect::<Vec<_>>(),
            [("w-a2", Step::Settling)]
        );
        // Looked at again at once, not at some later deadline.
        assert!(
            plan.requeue_after
                .is_some_and(|d| d <= Duration::from_millis(100))
        );
    }
    // The release is stored: no record, the done map, uncordoned.
    let mut released = last;
    released.record = None;
    released.unschedulable = false;
    released.done.insert("p".into(), "r1".into());
    let plan = decide(&p, &[done, released], &[], ts(NOW));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.status.phase, Some(Phase::Completed));
    assert_eq!(plan.status.nodes.as_ref().unwrap().updated, 2);
}

#[test]
fn a_completed_rollout_enters_the_history_once_and_the_history_is_bounded() {
    let mut p = policy("p");
    p.spec.urgent = true;
    let done_at = |rev: &str| {
        let mut n = node("w-a1", "a");
        n.done.insert("p".into(), rev.into());
        let mut m = node("w-a2", "a");
        m.done.insert("p".into(), rev.into());
        vec![n, m]
    };
    // In progress: nothing yet.
    let running = decide(&p, &[node("w-a1", "a")], &[], ts(NOW));
    assert_eq!(running.status.phase, Some(Phase::Progressing));
    assert!(running.status.history.is_empty());
    p.status = Some(running.status);

    let done = decide(&p, &done_at("r1"), &[], ts("2026-11-27T10:00:00Z"));
    assert_eq!(done.status.phase, Some(Phase::Completed));
    assert_eq!(
        done.status.history,
        [crate::api::HistoryEntry {
            id: "r1".into(),
            urgent: true,
            started_at: done.status.started_at.clone(),
            completed_at: Time(ts("2026-11-27T10:00:00Z")),
            nodes: 2,
            failed: 0,
        }]
    );
    // Passes after completion, as after a restart from the stored status:
    // still one entry, its time unchanged.
    p.status = Some(done.status.clone());
    for at in ["2026-11-27T10:00:01Z", "2026-11-28T00:00:00Z"] {
        let again = decide(&p, &done_at("r1"), &[], ts(at));
        assert_eq!(again.status.history, done.status.history);
        p.status = Some(again.status);
    }
    // The next revision keeps the history while it runs, then adds to it.
    p.spec.revision = "r2".into();
    let next = decide(&p, &done_at("r1"), &[], ts("2026-11-29T00:00:00Z"));
    assert_ne!(next.status.phase, Some(Phase::Completed));
    assert_eq!(next.status.history, done.status.history);
    p.status = Some(next.status);
    let next = decide(&p, &done_at("r2"), &[], ts("2026-11-29T01:00:00Z"));
    let ids: Vec<&str> = next.status.history.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2"]);
    p.status = Some(next.status);
    // Bounded: the oldest go first.
    for i in 3..=14 {
        let rev = format!("r{i}");
        p.spec.revision = rev.clone();
        let d = decide(&p, &done_at(&rev), &[], ts("2026-11-30T00:00:00Z"));
        p.status = Some(d.status);
    }
    let history = &p.status.as_ref().unwrap().history;
    assert_eq!(history.len(), crate::api::MAX_STATUS_HISTORY);
    assert_eq!(history[0].id, "r5");
    assert_eq!(history[9].id, "r14");
}

#[test]
fn a_rollout_that_selects_no_node_is_not_history() {
    let mut p = policy("p");
    p.spec.node_selector = LabelSelector {
        match_labels: Some([("none".to_string(), "x".to_string())].into()),
        ..LabelSelector::default()
    };
    let plan = decide(&p, &[node("w-a1", "a")], &[], ts(NOW));
    assert_eq!(plan.status.phase, Some(Phase::Completed));
    assert!(plan.status.history.is_empty());
}
