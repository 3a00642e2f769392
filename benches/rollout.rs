//! Prints figures (not a timed test): decide() at 5,000 nodes and a forecast of
//! 10,000 nodes over about a month of nightly windows.
//!
//! Run with `cargo bench --bench rollout`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sofort::api::{MaintenanceWindow, OrderSpec, PatchPolicy, PatchPolicySpec, Step, Weekday};
use sofort::core::forecast::{Behaviour, forecast_views};
use sofort::core::node_record::NodeRecord;
use sofort::core::rollout::{NodeView, decide};

fn fleet(n: usize, now: Timestamp, in_flight: usize) -> Vec<NodeView> {
    (0..n)
        .map(|i| {
            let mut labels = BTreeMap::new();
            labels.insert("node-role.kubernetes.io/worker".to_string(), String::new());
            labels.insert(
                "topology.kubernetes.io/zone".to_string(),
                format!("zone-{}", i % 10),
            );
            labels.insert("sofort.dev/priority".to_string(), (i % 17).to_string());
            let record = (i < in_flight).then(|| NodeRecord {
                policy: "bench".into(),
                revision: "r1".into(),
                step: Step::Draining,
                since: now,
                started: now,
                was_unschedulable: false,
                boot_id_before: None,
                patch: None,
                reason: None,
                labels: Default::default(),
                drain_after: None,
            });
            NodeView {
                name: format!("node-{i:05}"),
                labels,
                ready: true,
                unschedulable: i < in_flight,
                boot_id: Some(format!("boot-{i}")),
                record,
                ..NodeView::default()
            }
        })
        .collect()
}

fn policy(max_unavailable: IntOrString, windows: Vec<MaintenanceWindow>) -> PatchPolicy {
    let mut spec = PatchPolicySpec::new("r1");
    spec.rollout.max_unavailable = max_unavailable;
    spec.rollout.order = OrderSpec {
        group_by: Some("topology.kubernetes.io/zone".into()),
        sort_by: vec!["sofort.dev/priority".into()],
    };
    spec.maintenance_windows = windows;
    PatchPolicy::new("bench", spec)
}

fn main() {
    // `cargo test --all-targets` also runs this binary, without `--bench`, in a
    // debug build: the figures would mean nothing there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("rollout benchmark: run `cargo bench --bench rollout` for figures");
        return;
    }
    let now: Timestamp = "2026-11-30T22:30:00+01:00".parse().expect("valid instant");
    let nightly = vec![MaintenanceWindow {
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

    // decide() at 5,000 nodes, 5% budget, 250 nodes in flight, window open.
    let p = policy(IntOrString::String("5%".into()), nightly.clone());
    let nodes = fleet(5_000, now, 200);
    let iters = 200u32;
    let start = Instant::now();
    let mut actions = 0usize;
    for k in 0..iters {
        let t = now
            .checked_add(SignedDuration::from_secs(i64::from(k)))
            .expect("in range");
        actions += black_box(decide(&p, black_box(&nodes), &[], t))
            .actions
            .len();
    }
    let per = start.elapsed() / iters;
    println!(
        "decide() at 5,000 nodes: {:.0} µs per call ({} actions per call; target < 5,000 µs)",
        per.as_secs_f64() * 1e6,
        actions / iters as usize
    );

    // Forecast: 10,000 nodes, 2% budget, one 3-hour window a week (Sunday
    // 01:00-04:00 Zurich): the rollout runs over about 30 days of windows.
    let weekly = vec![MaintenanceWindow {
        days: vec![Weekday::Sun],
        start: "01:00".into(),
        end: "04:00".into(),
        time_zone: "Europe/Zurich".into(),
        weeks_of_month: Vec::new(),
        offset_days: 0,
    }];
    let p = policy(IntOrString::String("2%".into()), weekly);
    let start_at: Timestamp = "2026-11-30T09:00:00+01:00".parse().expect("valid instant");
    let views: Vec<(NodeView, Behaviour)> = fleet(10_000, start_at, 0)
        .into_iter()
        .map(|v| {
            (
                v,
                Behaviour::healthy(
                    Duration::from_secs(300),
                    Duration::from_secs(240),
                    Duration::from_secs(300),
                ),
            )
        })
        .collect();
    let start = Instant::now();
    let f = forecast_views(&p, views, start_at);
    let took = start.elapsed();
    let days = f
        .completion
        .map(|c| c.duration_since(start_at).as_secs_f64() / 86400.0)
        .unwrap_or(f64::NAN);
    println!(
        "forecast of 10,000 nodes: {:.0} ms ({} decisions, rollout spans {:.1} days, completed: {}; target < 1,000 ms)",
        took.as_secs_f64() * 1e3,
        f.decisions,
        days,
        f.completion.is_some()
    );
}
