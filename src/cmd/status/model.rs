//! What the live view shows, worked out from one snapshot of the cluster:
//! pure (no client, the clock is an argument), so the screen and the plain
//! lines are functions of it and tested without a terminal.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;

use crate::api::{PatchPolicy, Phase, RebootWhen, Step};
use crate::core::forecast::{self, Assumptions};
use crate::core::rollout::NodeView;
use crate::core::window::human_time;
use crate::core::{order, selector};

/// Most Events shown.
pub const MAX_EVENTS: usize = 8;
/// Most characters of one text shown (a message, an Event note, a name).
pub const MAX_TEXT: usize = 200;
/// Most nodes a forecast is run over on each refresh (beyond, no forecast).
pub const MAX_FORECAST_NODES: usize = 2_000;

/// One Event, as the view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    /// When (last seen).
    pub at: Option<Timestamp>,
    /// `Normal` or `Warning`.
    pub kind: String,
    /// Reason.
    pub reason: String,
    /// `Kind/name` of the object it is about.
    pub object: String,
    /// The note.
    pub note: String,
}

/// Everything read from the cluster for one refresh.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// PatchPolicies.
    pub policies: Vec<PatchPolicy>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Recent Events about PatchPolicies and Nodes, any order.
    pub events: Vec<EventLine>,
}

/// Where one node stands for one policy: the colour of its cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// Still to do.
    Pending,
    /// In a step of this policy.
    Step(Step),
    /// At this revision.
    Done,
    /// Failed for this revision.
    Failed,
    /// No reboot required (`reboot.when: IfRequired`).
    Skipped,
    /// NotReady and not in progress: holds its group.
    NotReady,
    /// In progress for another policy.
    OtherPolicy,
}

impl Cell {
    /// Short label (plain lines, legends).
    pub fn label(self) -> &'static str {
        match self {
            Cell::Pending => "pending",
            Cell::Step(Step::Draining) => "draining",
            Cell::Step(Step::Patching) => "patching",
            Cell::Step(Step::Rebooting) => "rebooting",
            Cell::Step(Step::WaitingReady) => "waiting-ready",
            Cell::Step(Step::Settling) => "settling",
            Cell::Step(Step::Pending) => "pending",
            Cell::Step(Step::Done) | Cell::Done => "done",
            Cell::Step(Step::Failed) | Cell::Failed => "failed",
            Cell::Skipped => "skipped",
            Cell::NotReady => "not-ready",
            Cell::OtherPolicy => "other-policy",
        }
    }
}

/// One node's cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCell {
    /// Node name.
    pub name: String,
    /// Its state.
    pub cell: Cell,
}

/// One policy's panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPanel {
    /// Name.
    pub name: String,
    /// `spec.revision` (a standing policy: its current round id).
    pub revision: String,
    /// Phase (`-` before the controller wrote status for this revision).
    pub phase: String,
    /// Urgent.
    pub urgent: bool,
    /// Paused.
    pub paused: bool,
    /// Nodes at this revision.
    pub updated: u32,
    /// Selected nodes.
    pub total: u32,
    /// Nodes in progress.
    pub in_progress: u32,
    /// Nodes failed.
    pub failed: u32,
    /// Forecast completion, for people (`Fri 2026-11-27 22:40 UTC`), or why none.
    pub forecast: String,
    /// Why work waits, or what happens (the status message).
    pub message: String,
    /// Nodes by group, groups and nodes in rollout order.
    pub groups: Vec<(String, Vec<NodeCell>)>,
}

/// The whole screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    /// Heading (cluster, time).
    pub title: String,
    /// Per policy.
    pub policies: Vec<PolicyPanel>,
    /// Most recent Events first.
    pub events: Vec<String>,
    /// Every shown policy is Completed or Halted for its revision.
    pub settled: bool,
}

/// Removes control characters (terminal escapes) and bounds the length of a
/// text from the cluster before it reaches the terminal.
pub fn clean(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_TEXT)
        .collect();
    if s.chars().count() > MAX_TEXT {
        out.pop();
        out.push('…');
    }
    out
}

/// Where `v` stands for `policy`.
pub fn cell_of(policy: &PatchPolicy, v: &NodeView) -> Cell {
    let name = policy.metadata.name.as_deref().unwrap_or("");
    let spec = &policy.spec;
    // A standing policy works on its current round: its id and members.
    let revision = crate::core::round::effective_revision(policy);
    let members = crate::core::round::stored_members(policy);
    let if_required = spec.reboot.when == RebootWhen::IfRequired
        || crate::core::round::is_standing(spec)
            && !policy
                .status
                .as_ref()
                .and_then(|s| s.round.as_ref())
                .is_some_and(|r| r.fleet_wide);
    match &v.record {
        Some(r) if r.policy == name && r.revision == revision => {
            return match r.step {
                Step::Failed => Cell::Failed,
                Step::Done => Cell::Done,
                Step::Pending => Cell::Pending,
                s => Cell::Step(s),
            };
        }
        Some(r) if r.policy == name && r.step.in_progress() => return Cell::Step(r.step),
        Some(r) if r.policy != name && r.step.in_progress() => return Cell::OtherPolicy,
        _ => {}
    }
    if v.done.get(name) == Some(&revision) {
        Cell::Done
    } else if if_required && v.reboot_required == Some(false)
        || members.is_some_and(|m| !m.contains(&v.name))
    {
        Cell::Skipped
    } else if !v.ready {
        Cell::NotReady
    } else {
        Cell::Pending
    }
}

fn panel(
    p: &PatchPolicy,
    views: &[NodeView],
    nodes: &[Node],
    now: Timestamp,
    a: Assumptions,
) -> PolicyPanel {
    let name = p.metadata.name.clone().unwrap_or_default();
    let spec = &p.spec;
    let status = p.status.clone().unwrap_or_default();
    let current =
        status.revision.as_deref() == Some(crate::core::round::effective_revision(p).as_str());
    let zone = spec
        .maintenance_windows
        .first()
        .map(|w| w.time_zone.as_str())
        .filter(|z| !z.is_empty() && jiff::tz::TimeZone::get(z).is_ok());
    let mut selected: Vec<(&NodeView, order::OrderKey<'_>)> = views
        .iter()
        .filter(|v| {
            selector::selects_node(&spec.node_selector, &v.labels)
                || v.record.as_ref().is_some_and(|r| r.policy == name)
        })
        .map(|v| {
            (
                v,
                order::OrderKey::of(&spec.rollout.order, &v.name, &v.labels),
            )
        })
        .collect();
    selected.sort_by(|a, b| a.1.cmp(&b.1));
    let mut groups: Vec<(String, Vec<NodeCell>)> = Vec::new();
    let mut counts = [0u32; 4]; // updated, in progress, failed, total
    for (v, _) in &selected {
        let cell = cell_of(p, v);
        match cell {
            Cell::Done | Cell::Skipped => counts[0] += 1,
            Cell::Step(_) => counts[1] += 1,
            Cell::Failed => counts[2] += 1,
            _ => {}
        }
        counts[3] += 1;
        let g = clean(order::group_of(&spec.rollout.order, &v.labels).unwrap_or("-"));
        let c = NodeCell {
            name: clean(&v.name),
            cell,
        };
        match groups.last_mut() {
            Some((last, cells)) if *last == g => cells.push(c),
            _ => groups.push((g, vec![c])),
        }
    }
    let phase = status.phase.filter(|_| current);
    let forecast = match phase {
        Some(Phase::Completed) => status
            .completed_at
            .as_ref()
            .map(|t| format!("completed {}", human_time(t.0, zone)))
            .unwrap_or_else(|| "completed".into()),
        Some(Phase::Halted) => "halted: will not complete as it stands".into(),
        _ if nodes.len() > MAX_FORECAST_NODES => "no forecast (too many nodes)".into(),
        _ => {
            let f = forecast::forecast(p, nodes, now, a);
            match (f.completion, f.problem) {
                (Some(c), _) => format!("forecast completion {}", human_time(c, zone)),
                (None, Some(problem)) => format!("not predicted to complete: {}", clean(&problem)),
                (None, None) => "not predicted to complete".into(),
            }
        }
    };
    PolicyPanel {
        name: clean(&name),
        revision: clean(&crate::core::round::effective_revision(p)),
        phase: phase.map_or_else(|| "-".into(), |ph| format!("{ph:?}")),
        urgent: spec.urgent,
        paused: spec.paused,
        updated: counts[0],
        total: counts[3],
        in_progress: counts[1],
        failed: counts[2],
        forecast,
        message: clean(status.message.as_deref().filter(|_| current).unwrap_or("")),
        groups,
    }
}

/// Works out the screen from a snapshot at `now`. `only` limits it to one policy.
pub fn build(
    snap: &Snapshot,
    title: &str,
    only: Option<&str>,
    now: Timestamp,
    a: Assumptions,
) -> Screen {
    let views: Vec<NodeView> = snap.nodes.iter().map(NodeView::from_node).collect();
    let mut policies: Vec<&PatchPolicy> = snap
        .policies
        .iter()
        .filter(|p| only.is_none_or(|o| p.metadata.name.as_deref() == Some(o)))
        .collect();
    // Urgent first, then by name, as the controller decides them.
    policies.sort_by(|a, b| {
        b.spec
            .urgent
            .cmp(&a.spec.urgent)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let panels: Vec<PolicyPanel> = policies
        .iter()
        .map(|p| panel(p, &views, &snap.nodes, now, a))
        .collect();
    let settled = !panels.is_empty()
        && panels
            .iter()
            .all(|p| p.phase == "Completed" || p.phase == "Halted");
    let mut events = snap.events.clone();
    events.sort_by_key(|e| std::cmp::Reverse(e.at));
    let events = events
        .iter()
        .take(MAX_EVENTS)
        .map(|e| {
            let at =
                e.at.map(|t| t.strftime("%H:%M:%S").to_string())
                    .unwrap_or_else(|| "--:--:--".into());
            clean(&format!(
                "{at} {:<7} {:<14} {:<22} {}",
                e.kind, e.reason, e.object, e.note
            ))
        })
        .collect();
    Screen {
        title: clean(&format!(
            "{title}  {}",
            now.strftime("%Y-%m-%d %H:%M:%S UTC")
        )),
        policies: panels,
        events,
        settled,
    }
}

/// The screen as plain lines (no terminal control), for pipes and `--plain`.
pub fn plain_lines(s: &Screen) -> Vec<String> {
    let mut out = vec![s.title.clone()];
    if s.policies.is_empty() {
        out.push("no PatchPolicy found".into());
    }
    for p in &s.policies {
        let mut flags = String::new();
        if p.urgent {
            flags.push_str(" urgent");
        }
        if p.paused {
            flags.push_str(" paused");
        }
        out.push(format!(
            "{} rev {}{flags}  phase {}  updated {}/{}  in progress {}  failed {}  {}",
            p.name, p.revision, p.phase, p.updated, p.total, p.in_progress, p.failed, p.forecast
        ));
        if !p.message.is_empty() {
            out.push(format!("  {}", p.message));
        }
        for (g, cells) in &p.groups {
            let cells: Vec<String> = cells
                .iter()
                .map(|c| format!("{}:{}", c.name, c.cell.label()))
                .collect();
            out.push(format!("  {g:8} {}", cells.join("  ")));
        }
    }
    if !s.events.is_empty() {
        out.push("events:".into());
        out.extend(s.events.iter().map(|e| format!("  {e}")));
    }
    out
}

/// Counts of cells by label over every policy (the plain summary, tests).
pub fn cell_counts(s: &Screen) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for p in &s.policies {
        for (_, cells) in &p.groups {
            for c in cells {
                *m.entry(c.cell.label()).or_default() += 1;
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PatchPolicySpec;
    use crate::core::node_record::{NodeRecord, RECORD_ANNOTATION};

    fn node(name: &str, zone: &str, annotations: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"zone": zone}, "annotations": annotations},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "nodeInfo": {"bootID": "b", "machineID": "m", "systemUUID": "u", "kernelVersion": "k",
                    "osImage": "o", "containerRuntimeVersion": "c", "kubeletVersion": "v",
                    "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}},
        }))
        .expect("test node")
    }

    fn now() -> Timestamp {
        "2026-11-30T10:00:00Z".parse().expect("instant")
    }

    fn assumptions() -> Assumptions {
        let m = std::time::Duration::from_secs(60);
        Assumptions {
            drain: m,
            reboot: m,
            patch: m,
        }
    }

    #[test]
    fn cells_counts_and_groups_follow_the_nodes_records() {
        let mut spec = PatchPolicySpec::new("r1");
        spec.rollout.order.group_by = Some("zone".into());
        let p = PatchPolicy::new("p", spec);
        let record = NodeRecord {
            policy: "p".into(),
            revision: "r1".into(),
            step: Step::Draining,
            since: now(),
            started: now(),
            was_unschedulable: false,
            boot_id_before: None,
            patch: None,
            reason: None,
            labels: Default::default(),
            drain_after: None,
        };
        let rec = serde_json::to_string(&record).expect("record");
        let snap = Snapshot {
            policies: vec![p],
            nodes: vec![
                node("b1", "b", serde_json::json!({})),
                node("a2", "a", serde_json::json!({RECORD_ANNOTATION: rec})),
                node(
                    "a1",
                    "a",
                    serde_json::json!({"sofort.dev/done": "{\"p\":\"r1\"}"}),
                ),
            ],
            events: vec![EventLine {
                at: Some(now()),
                kind: "Normal".into(),
                reason: "Cordoned".into(),
                object: "Node/a2".into(),
                note: "evil \u{1b}[2J note".into(),
            }],
        };
        let s = build(&snap, "t", None, now(), assumptions());
        let panel = &s.policies[0];
        assert_eq!((panel.updated, panel.in_progress, panel.total), (1, 1, 3));
        let groups: Vec<(&str, Vec<(&str, &str)>)> = panel
            .groups
            .iter()
            .map(|(g, cells)| {
                (
                    g.as_str(),
                    cells
                        .iter()
                        .map(|c| (c.name.as_str(), c.cell.label()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            [
                ("a", vec![("a1", "done"), ("a2", "draining")]),
                ("b", vec![("b1", "pending")])
            ]
        );
        assert!(
            panel.forecast.starts_with("forecast completion"),
            "{}",
            panel.forecast
        );
        assert!(
            !s.events[0].contains('\u{1b}'),
            "terminal escapes are removed"
        );
        assert!(!s.settled);
        let lines = plain_lines(&s);
        assert!(
            lines.iter().any(|l| l.contains("a1:done  a2:draining")),
            "{lines:?}"
        );
    }

    #[test]
    fn clean_bounds_and_defuses_text() {
        assert_eq!(clean("a\u{1b}]0;x\u{7}b"), "a ]0;x b");
        let long = "x".repeat(5 * MAX_TEXT);
        assert_eq!(clean(&long).chars().count(), MAX_TEXT);
    }
}
