//! The health gates in whole decisions, through [`decide_gated`].

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::test_support::{NOW, claims, node, policy, rec, ts};
use super::*;
use crate::api::{
    AlertsGate, BlockingPodsGate, GateTimeoutAction, GatesSpec, Phase, PrometheusGate, Step,
    WorkloadGate,
};
use crate::core::gates::Observed;
use crate::core::gates::alerts::{Alert, AlertState};
use crate::core::gates::evaluate::Observations;
use crate::core::gates::pods::PodView;
use crate::core::gates::workload::WorkloadRef;

fn gated(timeout: Option<&str>) -> PatchPolicy {
    let mut p = policy("p");
    p.spec.gates = Some(GatesSpec {
        prometheus: Some(PrometheusGate {
            url: Some("http://prometheus.monitoring:9090".into()),
            url_secret_ref: None,
            ca_bundle_secret_ref: None,
            alerts: Some(AlertsGate {
                names: vec!["Node.*".into()],
                ignore: BTreeMap::new(),
            }),
            queries: vec![],
        }),
        timeout: timeout.map(Into::into),
        ..GatesSpec::default()
    });
    p
}

fn alerts(at: Timestamp, firing: bool) -> Observations {
    let a = Alert {
        labels: BTreeMap::from([
            ("alertname".into(), "NodeDiskPressure".into()),
            ("instance".into(), "w-3:9100".into()),
        ]),
        state: if firing {
            AlertState::Firing
        } else {
            AlertState::Pending
        },
        active_at: Some(ts("2026-11-27T08:04:00Z")),
    };
    Observations {
        alerts: Some(Observed {
            at,
            result: Ok(vec![a]),
        }),
        max_age: Duration::from_secs(60),
        ..Observations::default()
    }
}

fn condition<'a>(d: &'a Decision, type_: &str) -> Option<&'a str> {
    d.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

#[test]
fn a_firing_alert_holds_new_starts_with_the_reason_and_releases_when_resolved() {
    let p = gated(None);
    let nodes = vec![node("w-a1", "a"), node("w-a2", "a")];
    let now = ts(NOW);
    let held = decide_gated(&p, &nodes, &[], &alerts(now, true), now);
    assert!(claims(&held).is_empty());
    assert_eq!(
        held.status.message.as_deref(),
        Some("0/2 updated; waiting: alert NodeDiskPressure firing on w-3 (since 08:04)")
    );
    assert_eq!(condition(&held, "GatesOpen"), Some("False"));
    assert_eq!(held.status.gates[0].name, "alerts");
    assert!(!held.status.gates[0].open);
    // The alert resolves: the next decision starts a node.
    let mut p2 = p.clone();
    p2.status = Some(held.status.clone());
    let later = ts("2026-11-27T09:01:00Z");
    let go = decide_gated(&p2, &nodes, &[], &alerts(later, false), later);
    assert_eq!(claims(&go), ["w-a1"]);
    assert_eq!(condition(&go, "GatesOpen"), Some("True"));
    // Without observations (the forecast) the gates are not evaluated.
    assert_eq!(claims(&decide(&p, &nodes, &[], now)), ["w-a1"]);
    // No observation at all is closed (fail safe).
    let blind = decide_gated(&p, &nodes, &[], &Observations::default(), now);
    assert!(claims(&blind).is_empty());
}

#[test]
fn nodes_in_progress_finish_whatever_the_gates_say() {
    let p = gated(None);
    let mut n = node("w-a1", "a");
    n.record = Some(rec("p", Step::Settling, ts("2026-11-27T08:00:00Z")));
    n.unschedulable = true;
    let nodes = vec![n, node("w-a2", "a")];
    let now = ts(NOW);
    let d = decide_gated(&p, &nodes, &[], &alerts(now, true), now);
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::Release { node, .. } if node == "w-a1"))
    );
    assert!(claims(&d).is_empty());
}

#[test]
fn a_gate_closed_past_its_timeout_halts_or_continues() {
    let mut p = gated(Some("30m"));
    let nodes = vec![node("w-a1", "a")];
    let t0 = ts(NOW);
    let first = decide_gated(&p, &nodes, &[], &alerts(t0, true), t0);
    assert_eq!(first.status.phase, Some(Phase::Waiting));
    p.status = Some(first.status.clone());
    let t1 = ts("2026-11-27T09:31:00Z");
    let halted = decide_gated(&p, &nodes, &[], &alerts(t1, true), t1);
    assert_eq!(halted.status.phase, Some(Phase::Halted));
    assert_eq!(condition(&halted, "Stalled"), Some("True"));
    let msg = halted.status.message.clone().unwrap_or_default();
    assert!(
        msg.starts_with("0/1 updated; halted: gate alerts closed since 09:00 (longer than gates.timeout): alert NodeDiskPressure"),
        "{msg}"
    );
    if let Some(g) = p.spec.gates.as_mut() {
        g.on_timeout = GateTimeoutAction::Continue;
    }
    let go = decide_gated(&p, &nodes, &[], &alerts(t1, true), t1);
    assert_eq!(claims(&go), ["w-a1"]);
}

#[test]
fn a_blocking_pod_holds_its_node_and_the_group_waits() {
    let mut p = policy("p");
    p.spec.gates = Some(GatesSpec {
        blocking_pods: vec![BlockingPodsGate {
            namespace: Some("batch".into()),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), "backup".into())])),
                ..LabelSelector::default()
            },
        }],
        ..GatesSpec::default()
    });
    p.spec.rollout.max_unavailable =
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2);
    let now = ts(NOW);
    let obs = Observations {
        pods: Some(Observed {
            at: now,
            result: Ok(vec![PodView {
                namespace: "batch".into(),
                name: "backup-x".into(),
                labels: BTreeMap::from([("app".into(), "backup".into())]),
                node: Some("w-a1".into()),
                phase: "Running".into(),
                deleting: false,
            }]),
        }),
        max_age: Duration::from_secs(60),
        ..Observations::default()
    };
    let nodes = vec![node("w-a1", "a"), node("w-a2", "a")];
    let d = decide_gated(&p, &nodes, &[], &obs, now);
    // w-a1 is held; w-a2 of the same group may go.
    assert_eq!(claims(&d), ["w-a2"]);
    let only = vec![node("w-a1", "a")];
    let d = decide_gated(&p, &only, &[], &obs, now);
    assert!(claims(&d).is_empty());
    let msg = d.status.message.unwrap_or_default();
    assert!(
        msg.contains("waiting: pod batch/backup-x running on w-a1"),
        "{msg}"
    );
}

#[test]
fn a_settled_node_counts_as_done_only_once_the_workloads_are_healthy() {
    let p = workloads_gated(None, GateTimeoutAction::Halt);
    // A second node waits for the slot the held one keeps.
    let nodes = settling_and_waiting();
    let now = ts(NOW);
    let with = |ready: i64| db_with_ready(ready, now);
    let released = |d: &Decision| {
        d.actions
            .iter()
            .any(|a| matches!(a, Action::Release { .. }))
    };
    let wait = decide_gated(&p, &nodes, &[], &with(2), now);
    assert!(!released(&wait));
    assert!(wait.requeue_after.is_some(), "looks again");
    let gate = &wait.status.gates[0];
    assert_eq!(
        (gate.name.as_str(), gate.open, gate.reason.as_deref()),
        (
            "workloads",
            false,
            Some("StatefulSet shop/db: 2/3 replicas ready")
        )
    );
    // The workloads hold the rollout, not the budget the held node takes.
    assert_eq!(
        wait.status.message.as_deref(),
        Some("0/2 updated; w-a1 Settling; waiting: StatefulSet shop/db: 2/3 replicas ready")
    );
    assert!(claims(&wait).is_empty(), "w-a2 waits for the slot");
    let healthy = decide_gated(&p, &nodes, &[], &with(3), now);
    assert!(released(&healthy));
    assert!(
        !healthy
            .status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("StatefulSet"),
        "{:?}",
        healthy.status.message
    );
}

/// The decision with a workloads gate over `shop/db` and `gates.timeout`, a
/// node whose settle ended at 08:02 (58 minutes before [`NOW`]) and 2 of 3
/// replicas ready.
fn held_for_58_minutes(timeout: &str, on_timeout: GateTimeoutAction) -> Decision {
    let p = workloads_gated(Some(timeout), on_timeout);
    let now = ts(NOW);
    decide_gated(
        &p,
        &settling_and_waiting(),
        &[],
        &db_with_ready(2, now),
        now,
    )
}

/// A policy gated on the health of the StatefulSet `shop/db`.
fn workloads_gated(timeout: Option<&str>, on_timeout: GateTimeoutAction) -> PatchPolicy {
    let mut p = policy("p");
    p.spec.gates = Some(GatesSpec {
        workloads: vec![WorkloadGate {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            namespace: Some("shop".into()),
            name: "db".into(),
        }],
        timeout: timeout.map(Into::into),
        on_timeout,
        ..GatesSpec::default()
    });
    p
}

/// `w-a1` cordoned by sofort and settling since 08:00 (its settle ended at
/// 08:02), and `w-a2` still to do in the same group.
fn settling_and_waiting() -> Vec<NodeView> {
    let mut n = node("w-a1", "a");
    n.record = Some(rec("p", Step::Settling, ts("2026-11-27T08:00:00Z")));
    n.unschedulable = true;
    vec![n, node("w-a2", "a")]
}

/// `shop/db` observed at `at` with `ready` of 3 replicas ready.
fn db_with_ready(ready: i64, at: Timestamp) -> Observations {
    let r = WorkloadRef {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        namespace: "shop".into(),
        name: "db".into(),
    };
    Observations {
        workloads: Some(Observed {
            at,
            result: Ok(BTreeMap::from([(
                r,
                Some(serde_json::json!({"spec": {"replicas": 3},
                    "status": {"readyReplicas": ready, "updatedReplicas": 3}})),
            )])),
        }),
        max_age: Duration::from_secs(60),
        ..Observations::default()
    }
}

#[test]
fn the_workloads_gate_times_out_from_the_end_of_the_held_nodes_settle() {
    let released = |d: &Decision| {
        d.actions
            .iter()
            .any(|a| matches!(a, Action::Release { .. }))
    };
    // Within the timeout: held, the rollout goes on waiting.
    let within = held_for_58_minutes("1h", GateTimeoutAction::Halt);
    assert!(!released(&within));
    assert_ne!(within.status.phase, Some(Phase::Halted));
    // Past it with Halt: the node stays held and the rollout halts.
    let halted = held_for_58_minutes("30m", GateTimeoutAction::Halt);
    assert!(!released(&halted));
    assert_eq!(halted.status.phase, Some(Phase::Halted));
    assert!(
        halted
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "GateTimeout"),
        "{:?}",
        halted.status.conditions
    );
    // Past it with Continue: the node counts as done anyway.
    let continued = held_for_58_minutes("30m", GateTimeoutAction::Continue);
    assert!(released(&continued));
    assert_ne!(continued.status.phase, Some(Phase::Halted));
}
