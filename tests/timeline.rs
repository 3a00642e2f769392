//! `sofort plan -o svg|html`: the timeline is read back with an XML parser
//! and its bars checked against the forecast rows.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sofort::api::{Blackout, MaintenanceWindow, PatchPolicy, PatchPolicySpec, Step};
use sofort::cmd::timeline::{render_html, render_svg};
use sofort::core::forecast::{Assumptions, Forecast, forecast};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test instant")
}

fn node(name: &str, zone: &str) -> Node {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "node-role.kubernetes.io/worker": "",
            "topology.kubernetes.io/zone": zone,
        }},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {"bootID": format!("{name}-boot"), "machineID": "m", "systemUUID": "u",
                "kernelVersion": "6", "osImage": "os", "containerRuntimeVersion": "c",
                "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": "amd64"},
        },
    }))
    .expect("test node")
}

/// Nightly window 22:00-05:00 UTC, a blackout 22:40-23:10, two at a time by zone.
fn policy(zone_b_name: &str) -> (PatchPolicy, Vec<Node>) {
    let mut spec = PatchPolicySpec::new("r1");
    spec.node_selector = LabelSelector {
        match_labels: Some([("node-role.kubernetes.io/worker".to_string(), String::new())].into()),
        ..LabelSelector::default()
    };
    spec.maintenance_windows = vec![MaintenanceWindow {
        days: Vec::new(),
        start: "22:00".into(),
        end: "05:00".into(),
        time_zone: "UTC".into(),
        weeks_of_month: Vec::new(),
        offset_days: 0,
    }];
    spec.blackouts = vec![Blackout {
        start: Time(ts("2026-11-30T22:40:00Z")),
        end: Time(ts("2026-11-30T23:10:00Z")),
        reason: Some("freeze <b>&</b>".into()),
    }];
    spec.rollout.max_unavailable = IntOrString::Int(2);
    spec.rollout.order.group_by = Some("topology.kubernetes.io/zone".into());
    spec.rollout.settle = "2m".into();
    let nodes = vec![
        node("w-a1", "zone-a"),
        node("w-a2", "zone-a"),
        node("w-a3", "zone-a"),
        node("w-b1", zone_b_name),
        node("w-b2", zone_b_name),
    ];
    (PatchPolicy::new("nightly", spec), nodes)
}

fn run(zone_b_name: &str) -> (PatchPolicy, Forecast) {
    let (p, nodes) = policy(zone_b_name);
    let a = Assumptions {
        drain: Duration::from_secs(300),
        reboot: Duration::from_secs(240),
        patch: Duration::from_secs(300),
    };
    let f = forecast(&p, &nodes, ts("2026-11-30T21:30:00Z"), a);
    (p, f)
}

fn num(n: &roxmltree::Node<'_, '_>, attr: &str) -> f64 {
    n.attribute(attr)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{attr} missing or not a number on {n:?}"))
}

fn secs(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64()
}

#[test]
fn forecast_steps_cover_each_node_from_claim_to_release() {
    let (_, f) = run("zone-b");
    assert!(f.completion.is_some(), "{:?}", f.problem);
    for r in &f.nodes {
        assert_eq!(r.result, "done", "{r:?}");
        let steps: Vec<Step> = r.steps.iter().map(|s| s.step).collect();
        assert_eq!(
            steps,
            // The simulated node goes NotReady the instant the reboot is
            // requested: `Rebooting` takes no time, `WaitingReady` the reboot.
            [Step::Draining, Step::WaitingReady, Step::Settling],
            "{}",
            r.node
        );
        assert_eq!(r.steps.first().map(|s| s.start), r.start);
        assert_eq!(r.steps.last().map(|s| s.end), r.done);
        for w in r.steps.windows(2) {
            assert_eq!(w[0].end, w[1].start, "{}: a gap between steps", r.node);
        }
        let drain = &r.steps[0];
        assert_eq!(secs(drain.start, drain.end), 300.0, "assumed drain time");
        let reboot = &r.steps[1];
        assert_eq!(secs(reboot.start, reboot.end), 240.0, "assumed reboot time");
        let settle = &r.steps[2];
        assert_eq!(secs(settle.start, settle.end), 120.0, "spec settle");
    }
}

#[test]
fn svg_bars_match_the_forecast_rows_in_position_and_width() -> TestResult {
    let (p, f) = run("zone-b");
    let svg = render_svg(&f, &p.spec, Some("UTC"));
    let doc = roxmltree::Document::parse(&svg)?;
    let line = |class: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("line") && n.attribute("class") == Some(class))
            .map(|n| num(&n, "x1"))
            .ok_or(format!("no {class} line"))
    };
    let (x_now, x_done) = (line("now")?, line("completion")?);
    let completion = f.completion.ok_or("no completion")?;
    // The scale is fixed by the two markers; every bar must follow it.
    let px_per_s = (x_done - x_now) / secs(f.now, completion);
    assert!(px_per_s > 0.0);
    let x_of = |t: Timestamp| x_now + secs(f.now, t) * px_per_s;

    let bars: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some("bar"))
        .collect();
    let spans: usize = f.nodes.iter().map(|r| r.steps.len()).sum();
    assert_eq!(bars.len(), spans, "one bar per predicted step");
    let labels: BTreeMap<&str, f64> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text") && n.attribute("class") == Some("node"))
        .filter_map(|n| Some((n.attribute("data-node")?, num(&n, "y"))))
        .collect();
    assert_eq!(labels.len(), f.nodes.len(), "one label per node");
    for r in &f.nodes {
        for s in &r.steps {
            let step = format!("{:?}", s.step);
            let (start, end) = (s.start.to_string(), s.end.to_string());
            let bar = bars
                .iter()
                .find(|b| {
                    b.attribute("data-node") == Some(r.node.as_str())
                        && b.attribute("data-step") == Some(step.as_str())
                        && b.attribute("data-start") == Some(start.as_str())
                        && b.attribute("data-end") == Some(end.as_str())
                })
                .ok_or(format!("no bar for {} {step} {start}", r.node))?;
            let (x, w) = (num(bar, "x"), num(bar, "width"));
            assert!((x - x_of(s.start)).abs() < 0.01, "{} {step}: x {x}", r.node);
            assert!(
                (w - secs(s.start, s.end) * px_per_s).abs() < 0.01,
                "{} {step}: width {w}",
                r.node
            );
            // The bar sits in its own node's row: nearest label is its node's.
            let centre = num(bar, "y") + num(bar, "height") / 2.0;
            let nearest = labels
                .iter()
                .min_by(|a, b| (a.1 - centre).abs().total_cmp(&(b.1 - centre).abs()))
                .map(|(n, _)| *n);
            assert_eq!(nearest, Some(r.node.as_str()), "bar in the wrong row");
        }
    }
    // Rows in predicted order, top to bottom.
    let ys: Vec<f64> = f.nodes.iter().map(|r| labels[r.node.as_str()]).collect();
    assert!(
        ys.windows(2).all(|w| w[0] < w[1]),
        "rows out of order: {ys:?}"
    );

    // The window opens at 22:00 and reaches past the end; the blackout is shaded where it is.
    let shade = |class: &str| {
        doc.descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some(class))
            .map(|n| (num(&n, "x"), num(&n, "width")))
            .collect::<Vec<_>>()
    };
    let windows = shade("window");
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert!((windows[0].0 - x_of(ts("2026-11-30T22:00:00Z"))).abs() < 0.01);
    let blackouts = shade("blackout");
    assert_eq!(blackouts.len(), 1);
    let (bx, bw) = blackouts[0];
    assert!((bx - x_of(ts("2026-11-30T22:40:00Z"))).abs() < 0.01);
    assert!((bw - 1800.0 * px_per_s).abs() < 0.01);
    // No node starts inside the blackout or before the window.
    for r in &f.nodes {
        let start = r.start.ok_or("not started")?;
        assert!(start >= ts("2026-11-30T22:00:00Z"));
        assert!(!(ts("2026-11-30T22:40:00Z")..ts("2026-11-30T23:10:00Z")).contains(&start));
    }
    Ok(())
}

#[test]
fn svg_escapes_label_values_and_html_holds_the_svg_and_the_table() -> TestResult {
    let (p, f) = run("b<script>&\"");
    let svg = render_svg(&f, &p.spec, None);
    let doc = roxmltree::Document::parse(&svg)?;
    assert!(
        doc.descendants()
            .any(|n| n.attribute("class") == Some("group") && n.text() == Some("b<script>&\"")),
        "the group label is shown as text"
    );
    assert!(!doc.descendants().any(|n| n.has_tag_name("script")));
    let html = render_html(&f, &p.spec, None);
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(&html, opts)?;
    let bars = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("bar"))
        .count();
    assert_eq!(bars, f.nodes.iter().map(|r| r.steps.len()).sum::<usize>());
    let rows = doc.descendants().filter(|n| n.has_tag_name("tr")).count();
    assert_eq!(rows, f.nodes.len() + 1, "a header and one row per node");
    Ok(())
}
