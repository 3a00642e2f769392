//! `pausedUntil` and monthly windows through the whole decision: phase,
//! message, requeue, next window and the forecast.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::decide;
use super::test_support::{NOW, claims, node, policy, rec, ts};
use crate::api::{MaintenanceWindow, PatchPolicy, Phase, Step, Weekday};
use crate::core::forecast::{Behaviour, forecast_views};

fn message(p: &super::Decision) -> &str {
    p.status.message.as_deref().unwrap_or("")
}

/// Patch Tuesday + 3: the Friday after each second Tuesday, 22:00-04:00 UTC.
fn patch_tuesday_plus_three(p: &mut PatchPolicy) {
    p.spec.maintenance_windows = vec![MaintenanceWindow {
        days: vec![Weekday::Tue],
        start: "22:00".into(),
        end: "04:00".into(),
        time_zone: "UTC".into(),
        weeks_of_month: vec![IntOrString::Int(2)],
        offset_days: 3,
    }];
}

#[test]
fn paused_until_holds_starts_then_lifts_itself() {
    let mut p = policy("p");
    p.spec.rollout.max_unavailable = IntOrString::Int(2);
    let until = ts("2026-11-27T09:10:00Z");
    p.spec.paused_until = Some(Time(until));
    let t = ts(NOW);
    let mut nodes = vec![node("w-a1", "a"), node("w-a2", "a")];
    nodes[0].record = Some(rec("p", Step::Draining, t));
    let plan = decide(&p, &nodes, &[], t);
    assert_eq!(plan.status.phase, Some(Phase::Paused));
    assert!(claims(&plan).is_empty());
    // The node in progress goes on.
    assert!(plan.actions.iter().all(|a| a.node() == "w-a1"));
    assert!(
        message(&plan).contains("paused until Fri 2026-11-27 09:10 UTC"),
        "{}",
        message(&plan)
    );
    // Looked at again when the pause lifts (the drain deadline is later).
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(600)));
    // At that instant the pause is over.
    let plan = decide(&p, &nodes, &[], until);
    assert_eq!(claims(&plan), ["w-a2"]);
    assert_ne!(plan.status.phase, Some(Phase::Paused));
}

#[test]
fn paused_true_pauses_forever_and_a_past_pause_is_no_pause() {
    let mut p = policy("p");
    p.spec.paused = true;
    p.spec.paused_until = Some(Time(ts("2026-11-27T12:30:00Z")));
    let nodes = [node("w-a1", "a")];
    let plan = decide(&p, &nodes, &[], ts(NOW));
    assert_eq!(plan.status.phase, Some(Phase::Paused));
    assert_eq!(message(&plan), "0/1 updated; paused: no new node starts");
    assert_eq!(plan.requeue_after, None);
    let plan = decide(&p, &nodes, &[], ts("2026-11-28T00:00:00Z"));
    assert_eq!(plan.status.phase, Some(Phase::Paused));
    p.spec.paused = false;
    p.spec.paused_until = Some(Time(ts("2026-11-27T08:59:59Z")));
    assert_eq!(claims(&decide(&p, &nodes, &[], ts(NOW))), ["w-a1"]);
}

#[test]
fn a_monthly_window_is_the_next_window_in_status() {
    let mut p = policy("p");
    patch_tuesday_plus_three(&mut p);
    let plan = decide(&p, &[node("w-a1", "a")], &[], ts(NOW));
    // Second Tuesday of December 2026 is the 8th: Friday the 11th.
    let at = ts("2026-12-11T22:00:00Z");
    assert_eq!(plan.status.phase, Some(Phase::Scheduled));
    assert_eq!(plan.status.scheduled_start, Some(Time(at)));
    let next = plan
        .status
        .next_window
        .as_ref()
        .map(|w| (w.start.0, w.end.0));
    assert_eq!(next, Some((at, ts("2026-12-12T04:00:00Z"))));
    assert_eq!(
        plan.requeue_after,
        Some(Duration::try_from(at.duration_since(ts(NOW))).unwrap())
    );
}

#[test]
fn paused_until_past_a_window_moves_the_scheduled_start_to_the_next_one() {
    let mut p = policy("p");
    patch_tuesday_plus_three(&mut p);
    p.spec.paused_until = Some(Time(ts("2026-12-12T06:00:00Z")));
    let plan = decide(&p, &[node("w-a1", "a")], &[], ts(NOW));
    assert_eq!(plan.status.phase, Some(Phase::Paused));
    // Second Tuesday of January 2027 is the 12th: Friday the 15th.
    let at = ts("2027-01-15T22:00:00Z");
    assert_eq!(plan.status.scheduled_start, Some(Time(at)));
    assert_eq!(
        plan.status.next_window.as_ref().map(|w| w.start.0),
        Some(at)
    );
    // Waking for the pause to lift, which comes before the window.
    assert_eq!(
        plan.requeue_after,
        Some(Duration::try_from(ts("2026-12-12T06:00:00Z").duration_since(ts(NOW))).unwrap())
    );
}

#[test]
fn the_forecast_places_nodes_in_the_monthly_window_and_after_the_pause() {
    let mut p = policy("p");
    patch_tuesday_plus_three(&mut p);
    let views = || {
        ["w-a1", "w-a2"]
            .iter()
            .map(|n| {
                let b = Behaviour::healthy(
                    Duration::from_secs(300),
                    Duration::from_secs(300),
                    Duration::ZERO,
                );
                (node(n, "a"), b)
            })
            .collect::<Vec<_>>()
    };
    let f = forecast_views(&p, views(), ts(NOW));
    let starts: Vec<_> = f.nodes.iter().map(|r| r.start).collect();
    assert_eq!(starts[0], Some(ts("2026-12-11T22:00:00Z")), "{f:?}");
    assert!(
        starts[1].is_some_and(|s| s < ts("2026-12-12T04:00:00Z")),
        "{f:?}"
    );
    p.spec.paused_until = Some(Time(ts("2026-12-12T06:00:00Z")));
    let f = forecast_views(&p, views(), ts(NOW));
    assert_eq!(f.scheduled_start, Some(ts("2027-01-15T22:00:00Z")));
    assert_eq!(f.nodes[0].start, Some(ts("2027-01-15T22:00:00Z")), "{f:?}");
}
