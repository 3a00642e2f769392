//! Forecast: a discrete-event simulation that drives [`decide`](crate::core::rollout::decide) against a
//! simulated cluster, behind `sofort plan`.
//!
//! The simulated cluster answers every action the way a healthy cluster would,
//! after the assumed step durations: a drain finishes `drain` after it started,
//! the patch command `patch` after it was requested, and a rebooted node is
//! NotReady at once and Ready with a new boot ID `reboot` later. Between
//! events, time jumps to the next world event or to decide's `requeue_after`,
//! so a month of windows costs only as many decisions as there are steps.
//! Per-node [`Behaviour`] can make a node fail (tests use it).
//!
//! Pure: the command around it (`sofort plan`: files, the live cluster, the
//! table) is [`crate::cmd::plan`].

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

use crate::api::{PatchPolicy, Phase, Step};
use crate::core::node_record::PatchResult;
use crate::core::order::{self, OrderKey};
use crate::core::rollout::{
    Action, Config, Decision, DrainState, NodeIndex, NodeView, decide_indexed,
};
use crate::core::{duration, selector};

/// How one simulated node responds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// Time to drain; `None`: never finishes.
    pub drain: Option<Duration>,
    /// Time from reboot request to Ready with a new boot ID; `None`: never comes back.
    pub reboot: Option<Duration>,
    /// Time the patch command runs.
    pub patch: Duration,
    /// Whether the patch command succeeds.
    pub patch_ok: bool,
}

impl Behaviour {
    /// A healthy node with these durations.
    pub fn healthy(drain: Duration, reboot: Duration, patch: Duration) -> Self {
        Behaviour {
            drain: Some(drain),
            reboot: Some(reboot),
            patch,
            patch_ok: true,
        }
    }
}

/// One node of the simulated cluster.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// What decide sees.
    pub view: NodeView,
    /// How it responds.
    pub behaviour: Behaviour,
    /// First claim.
    pub started: Option<Timestamp>,
    /// Release.
    pub finished: Option<Timestamp>,
    /// Reboot requests per revision.
    pub reboots: BTreeMap<String, u32>,
    drain_at: Option<Timestamp>,
    patch_at: Option<(Timestamp, bool)>,
    back_at: Option<Timestamp>,
    boots: u32,
}

/// A simulated cluster.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Nodes, in input order.
    pub nodes: Vec<SimNode>,
    views: Vec<NodeView>,
    index: BTreeMap<String, usize>,
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

impl World {
    /// A world of these nodes.
    pub fn new(nodes: Vec<(NodeView, Behaviour)>) -> World {
        let mut w = World::default();
        for (view, behaviour) in nodes {
            w.index.insert(view.name.clone(), w.nodes.len());
            w.nodes.push(SimNode {
                view,
                behaviour,
                started: None,
                finished: None,
                reboots: BTreeMap::new(),
                drain_at: None,
                patch_at: None,
                back_at: None,
                boots: 0,
            });
        }
        w.sync();
        w
    }

    fn sync(&mut self) {
        self.views.clear();
        self.views.extend(self.nodes.iter().map(|n| n.view.clone()));
    }

    /// Nodes found in the middle of a step (a forecast from a live cluster)
    /// finish it as a healthy node would: a node asked to reboot comes back
    /// `reboot` after `now`, a patch command in flight reports `patch` after.
    /// A drain in flight is asked for again by decide (its state is `Idle`).
    pub fn resume_in_flight(&mut self, now: Timestamp) {
        for n in &mut self.nodes {
            let Some(step) = n.view.record.as_ref().map(|r| r.step) else {
                continue;
            };
            match step {
                Step::Rebooting | Step::WaitingReady => {
                    n.back_at = n.behaviour.reboot.map(|d| add(now, d));
                }
                Step::Patching => {
                    n.patch_at = Some((add(now, n.behaviour.patch), n.behaviour.patch_ok));
                }
                _ => {}
            }
        }
    }

    /// The node views, as decide sees them.
    pub fn views(&self) -> &[NodeView] {
        &self.views
    }

    /// Applies decide's actions at `now`.
    pub fn apply(&mut self, actions: &[Action], now: Timestamp) {
        for a in actions {
            let Some(&i) = self.index.get(a.node()) else {
                continue;
            };
            let n = &mut self.nodes[i];
            match a {
                Action::Claim { record, .. } | Action::CordonAgain { record, .. } => {
                    n.view.record = Some(record.clone());
                    n.view.unschedulable = true;
                    n.started.get_or_insert(now);
                }
                Action::Drain { record, force, .. } => {
                    if let Some(r) = record {
                        n.view.record = Some(r.clone());
                    }
                    if *force {
                        n.drain_at = Some(now);
                        n.view.drain = DrainState::Running {
                            forcing: true,
                            blocker: None,
                        };
                    } else if n.view.drain == DrainState::Idle {
                        n.drain_at = n.behaviour.drain.map(|d| add(now, d));
                        n.view.drain = DrainState::Running {
                            forcing: false,
                            blocker: n
                                .behaviour
                                .drain
                                .is_none()
                                .then(|| "pod shop/db-0 blocked by PDB shop/db".into()),
                        };
                    }
                }
                Action::RequestPatch { record, .. } => {
                    n.view.record = Some(record.clone());
                    n.patch_at = Some((add(now, n.behaviour.patch), n.behaviour.patch_ok));
                }
                Action::RequestReboot { record, .. } => {
                    n.view.record = Some(record.clone());
                    *n.reboots.entry(record.revision.clone()).or_default() += 1;
                    n.view.drain = DrainState::Idle;
                    n.view.ready = false;
                    n.back_at = n.behaviour.reboot.map(|d| add(now, d));
                }
                Action::SetStep { record, .. } => n.view.record = Some(record.clone()),
                Action::MarkFailed {
                    uncordon, record, ..
                } => {
                    if *uncordon {
                        n.view.unschedulable = false;
                    }
                    n.view.record = Some(record.clone());
                    n.view.drain = DrainState::Idle;
                    n.drain_at = None;
                    n.finished.get_or_insert(now);
                }
                Action::Release { done, uncordon, .. } => {
                    if *uncordon {
                        n.view.unschedulable = false;
                    }
                    n.view.done = done.clone();
                    n.view.record = None;
                    n.view.drain = DrainState::Idle;
                    n.finished = Some(now);
                }
            }
            self.views[i] = self.nodes[i].view.clone();
        }
    }

    /// The next instant something happens by itself.
    pub fn next_event(&self) -> Option<Timestamp> {
        self.nodes
            .iter()
            .flat_map(|n| [n.drain_at, n.patch_at.map(|p| p.0), n.back_at])
            .flatten()
            .min()
    }

    /// Lets everything due by `t` happen.
    pub fn advance(&mut self, t: Timestamp) {
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            let mut changed = false;
            if n.drain_at.is_some_and(|d| d <= t) {
                n.drain_at = None;
                if matches!(n.view.drain, DrainState::Running { .. }) {
                    n.view.drain = DrainState::Drained;
                }
                changed = true;
            }
            if let Some((at, ok)) = n.patch_at.filter(|p| p.0 <= t) {
                n.patch_at = None;
                if let Some(r) = &n.view.record {
                    n.view.patch_result = Some(PatchResult {
                        policy: r.policy.clone(),
                        revision: r.revision.clone(),
                        success: ok,
                        exit_code: Some(if ok { 0 } else { 1 }),
                        message: if ok { "exit 0".into() } else { "exit 1".into() },
                        output_tail: String::new(),
                        at,
                    });
                }
                changed = true;
            }
            if n.back_at.is_some_and(|b| b <= t) {
                n.back_at = None;
                n.boots += 1;
                n.view.boot_id = Some(format!("{}-boot-{}", n.view.name, n.boots));
                n.view.ready = true;
                changed = true;
            }
            if changed {
                self.views[i] = self.nodes[i].view.clone();
            }
        }
    }
}

/// Result of a simulation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The final status.
    pub last: Option<Decision>,
    /// When the simulation stopped.
    pub end: Timestamp,
    /// Decisions made.
    pub decisions: usize,
    /// Why it stopped, when not completed.
    pub stuck: Option<String>,
}

/// Runs decide against `world` from `now` until Completed, Halted with nothing
/// in flight, nothing left to wait for, or `horizon` passed. `observe` sees
/// every decision before its actions are applied.
pub fn simulate(
    policy: &mut PatchPolicy,
    world: &mut World,
    now: Timestamp,
    horizon: Duration,
    observe: impl FnMut(Timestamp, &Decision, &[NodeView]),
) -> Outcome {
    let cfg = Config::from_spec(&policy.spec);
    simulate_with(policy, &cfg, world, now, horizon, observe)
}

/// [`simulate`] with the spec parsed once by the caller.
pub fn simulate_with(
    policy: &mut PatchPolicy,
    cfg: &Config,
    world: &mut World,
    now: Timestamp,
    horizon: Duration,
    mut observe: impl FnMut(Timestamp, &Decision, &[NodeView]),
) -> Outcome {
    // The simulated nodes keep their labels, so selection and order are
    // worked out once for the whole simulation.
    let index = NodeIndex::build(&policy.spec, world.views(), true);
    let end = add(now, horizon);
    let mut t = now;
    let mut decisions = 0usize;
    let mut same_t = 0usize;
    loop {
        let plan = decide_indexed(policy, cfg, &index, world.views(), &[], t);
        decisions += 1;
        observe(t, &plan, world.views());
        policy.status = Some(plan.status.clone());
        let phase = plan.status.phase;
        let in_flight = !plan.status.active.is_empty();
        if !plan.actions.is_empty() {
            world.apply(&plan.actions, t);
            same_t += 1;
            if same_t > 64 {
                return Outcome {
                    last: Some(plan),
                    end: t,
                    decisions,
                    stuck: Some("no progress: decisions repeat at the same instant".into()),
                };
            }
            continue;
        }
        same_t = 0;
        if phase == Some(Phase::Completed) || (phase == Some(Phase::Halted) && !in_flight) {
            return Outcome {
                last: Some(plan),
                end: t,
                decisions,
                stuck: None,
            };
        }
        let next = [world.next_event(), plan.requeue_after.map(|d| add(t, d))]
            .into_iter()
            .flatten()
            .min();
        let stuck = match next {
            None => Some(
                plan.status
                    .message
                    .clone()
                    .unwrap_or_else(|| "nothing left to wait for".into()),
            ),
            Some(n) if n > end => Some(format!(
                "not finished within {}: {}",
                duration::format(horizon),
                plan.status.message.clone().unwrap_or_default()
            )),
            Some(_) => None,
        };
        if stuck.is_some() {
            return Outcome {
                last: Some(plan),
                end: t,
                decisions,
                stuck,
            };
        }
        if let Some(n) = next {
            t = n.max(t);
            world.advance(t);
        }
    }
}

/// One row of the forecast.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Position in the predicted order (1-based).
    pub order: usize,
    /// Node name.
    pub node: String,
    /// Group label value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Predicted start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// Predicted done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<Timestamp>,
    /// `done`, `updated` (already at this revision), `skipped` (no reboot needed), `failed`, `not reached`.
    pub result: String,
    /// The predicted steps of this node, in time order (`Draining`,
    /// `Patching`, `Rebooting`, `WaitingReady`, `Settling`; `Failed` is not a span).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSpan>,
}

/// One step of one node in the forecast: `[start, end)`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepSpan {
    /// The step.
    pub step: Step,
    /// When the node entered it.
    pub start: Timestamp,
    /// When it left it (the end of the simulation for a step never left).
    pub end: Timestamp,
}

/// Collects each node's steps (for this policy) from the decisions the
/// simulation makes: the step a node shows at the last decision at an instant
/// is the step it is in from that instant on.
#[derive(Debug, Default)]
struct StepLog {
    /// Open step per node: (step, since).
    open: BTreeMap<String, (Step, Timestamp)>,
    done: BTreeMap<String, Vec<StepSpan>>,
}

impl StepLog {
    fn observe(&mut self, policy: &str, t: Timestamp, views: &[NodeView]) {
        for v in views {
            let step = v
                .record
                .as_ref()
                .filter(|r| r.policy == policy && r.step.in_progress())
                .map(|r| r.step);
            let open = self.open.get(&v.name).copied();
            if open.map(|o| o.0) == step {
                continue;
            }
            if let Some((s, since)) = open {
                self.open.remove(&v.name);
                if since < t {
                    self.done.entry(v.name.clone()).or_default().push(StepSpan {
                        step: s,
                        start: since,
                        end: t,
                    });
                }
            }
            if let Some(s) = step {
                self.open.insert(v.name.clone(), (s, t));
            }
        }
    }

    fn finish(mut self, end: Timestamp) -> BTreeMap<String, Vec<StepSpan>> {
        for (node, (step, start)) in std::mem::take(&mut self.open) {
            if start < end {
                self.done
                    .entry(node)
                    .or_default()
                    .push(StepSpan { step, start, end });
            }
        }
        self.done
    }
}

/// The whole forecast.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    /// Policy name.
    pub policy: String,
    /// Revision.
    pub revision: String,
    /// Start of the forecast.
    pub now: Timestamp,
    /// Scheduled start (first usable window after the lead time, or now when urgent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_start: Option<Timestamp>,
    /// Predicted completion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion: Option<Timestamp>,
    /// Why it would not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Decisions simulated.
    pub decisions: usize,
    /// Selected nodes in predicted order.
    pub nodes: Vec<Row>,
}

/// Step durations assumed by the forecast.
#[derive(Debug, Clone, Copy)]
pub struct Assumptions {
    /// Drain.
    pub drain: Duration,
    /// Reboot to Ready.
    pub reboot: Duration,
    /// Patch command.
    pub patch: Duration,
}

/// Forecasts a rollout of `policy` over `nodes` from `now`.
pub fn forecast(policy: &PatchPolicy, nodes: &[Node], now: Timestamp, a: Assumptions) -> Forecast {
    forecast_views(policy, assumed_views(policy, nodes, a), now)
}

/// The simulated cluster of a forecast: each node as decide sees it, healthy
/// with the assumed step durations.
pub fn assumed_views(
    policy: &PatchPolicy,
    nodes: &[Node],
    a: Assumptions,
) -> Vec<(NodeView, Behaviour)> {
    nodes
        .iter()
        .map(|n| {
            let mut v = NodeView::from_node(n);
            if v.reboot_required.is_none()
                && policy.spec.reboot.when == crate::api::RebootWhen::IfRequired
            {
                // The agent has not reported yet; assume the worst case.
                v.reboot_required = Some(true);
            }
            if v.boot_id.is_none() {
                // A file without boot IDs still forecasts; the real run needs them.
                v.boot_id = Some(format!("{}-boot-0", v.name));
            }
            (v, Behaviour::healthy(a.drain, a.reboot, a.patch))
        })
        .collect()
}

/// [`forecast`] over prepared views.
pub fn forecast_views(
    policy: &PatchPolicy,
    views: Vec<(NodeView, Behaviour)>,
    now: Timestamp,
) -> Forecast {
    forecast_views_with(policy, &Config::from_spec(&policy.spec), views, now)
}

/// [`forecast_views`] with the spec parsed once by the caller.
pub fn forecast_views_with(
    policy: &PatchPolicy,
    cfg: &Config,
    views: Vec<(NodeView, Behaviour)>,
    now: Timestamp,
) -> Forecast {
    let mut p = policy.clone();
    let mut world = World::new(views);
    world.resume_in_flight(now);
    let name = policy.metadata.name.clone().unwrap_or_default();
    let mut steps = StepLog::default();
    let out = simulate_with(
        &mut p,
        cfg,
        &mut world,
        now,
        Duration::from_secs(400 * 86400),
        |t, _, views| steps.observe(&name, t, views),
    );
    let mut steps = steps.finish(out.end);
    let status = out.last.as_ref().map(|pl| &pl.status);
    let spec = &policy.spec;
    let mut rows: Vec<(usize, Row)> = Vec::new();
    for (i, n) in world.nodes.iter().enumerate() {
        if !selector::selects_node(&spec.node_selector, &n.view.labels) && n.started.is_none() {
            continue;
        }
        let failed = n
            .view
            .record
            .as_ref()
            .is_some_and(|r| r.policy == name && r.step == Step::Failed);
        let result = if failed {
            "failed"
        } else if n.started.is_some() && n.finished.is_some() {
            "done"
        } else if n.view.done.get(&name) == Some(&spec.revision) {
            "updated"
        } else if spec.reboot.when == crate::api::RebootWhen::IfRequired
            && n.view.reboot_required == Some(false)
        {
            "skipped"
        } else {
            "not reached"
        };
        rows.push((
            i,
            Row {
                order: 0,
                node: n.view.name.clone(),
                group: order::group_of(&spec.rollout.order, &n.view.labels).map(str::to_string),
                start: n.started,
                done: n.finished,
                result: result.to_string(),
                steps: steps.remove(&n.view.name).unwrap_or_default(),
            },
        ));
    }
    let keys: Vec<OrderKey<'_>> = world
        .nodes
        .iter()
        .map(|n| OrderKey::of(&spec.rollout.order, &n.view.name, &n.view.labels))
        .collect();
    rows.sort_by(|(a, ra), (b, rb)| {
        match (ra.start, rb.start) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| keys[*a].cmp(&keys[*b]))
    });
    let nodes: Vec<Row> = rows
        .into_iter()
        .enumerate()
        .map(|(k, (_, mut r))| {
            r.order = k + 1;
            r
        })
        .collect();
    let completed = status.and_then(|s| s.phase) == Some(Phase::Completed);
    let completion = completed.then(|| nodes.iter().filter_map(|r| r.done).max().unwrap_or(now));
    Forecast {
        policy: name,
        revision: spec.revision.clone(),
        now,
        scheduled_start: status.and_then(|s| s.scheduled_start.as_ref()).map(|t| t.0),
        completion,
        problem: if completed {
            None
        } else {
            out.stuck.or_else(|| status.and_then(|s| s.message.clone()))
        },
        decisions: out.decisions,
        nodes,
    }
}
