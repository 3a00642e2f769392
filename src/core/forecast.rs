//! Forecast: a discrete-event simulation that drives [`decide`] against a
//! simulated cluster, behind `sofort plan`.
//!
//! The simulated cluster answers every action the way a healthy cluster would,
//! after the assumed step durations: a drain finishes `drain` after it started,
//! the patch command `patch` after it was requested, and a rebooted node is
//! NotReady at once and Ready with a new boot ID `reboot` later. Between
//! events, time jumps to the next world event or to decide's `requeue_after`,
//! so a month of windows costs only as many decisions as there are steps.
//! Per-node [`Behaviour`] can make a node fail (tests use it).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

use crate::api::{PatchPolicy, Phase, Step};
use crate::cli::{OutputFormat, PlanArgs};
use crate::core::node_record::PatchResult;
use crate::core::order::{self, OrderKey};
use crate::core::rollout::{
    Action, Config, Decision, DrainState, NodeIndex, NodeView, decide_indexed,
};
use crate::core::window::human_time;
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

/// A problem running `sofort plan`.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Reading from the cluster.
    #[error(
        "cannot read from the cluster: {0}; check KUBECONFIG and that the PatchPolicy CRD is installed"
    )]
    Cluster(String),
    /// Reading a file.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// YAML that is not what was expected.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A bad flag value.
    #[error("{0}")]
    Usage(String),
}

/// Reads the first PatchPolicy of a (multi-document) YAML text.
pub fn parse_policy(text: &str, path: &str) -> Result<PatchPolicy, PlanError> {
    let perr = |message: String| PlanError::Parse {
        path: path.to_string(),
        message,
    };
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| perr(format!("not valid YAML: {e}")))?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("PatchPolicy") {
            return serde_yaml::from_value(value).map_err(|e| {
                perr(format!(
                    "not a valid PatchPolicy: {e}; check it with `sofort validate -f {path}`"
                ))
            });
        }
    }
    Err(perr("no document with kind: PatchPolicy found".into()))
}

use serde::Deserialize;

/// Reads Node objects from a `v1 List` (or a NodeList, or one Node).
pub fn parse_nodes(text: &str, path: &str) -> Result<Vec<Node>, PlanError> {
    let perr = |message: String| PlanError::Parse {
        path: path.to_string(),
        message,
    };
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| perr(format!("not valid YAML: {e}")))?;
    let items = match value.get("kind").and_then(|k| k.as_str()) {
        Some("Node") => vec![value.clone()],
        Some("List") | Some("NodeList") => match value.get("items") {
            Some(serde_yaml::Value::Sequence(s)) => s.clone(),
            Some(serde_yaml::Value::Null) | None => Vec::new(),
            Some(_) => return Err(perr("items is not a list".into())),
        },
        _ => {
            return Err(perr(
                "expected a v1 List of Node objects, as `kubectl get nodes -o yaml` prints".into(),
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            if item
                .get("kind")
                .and_then(|k| k.as_str())
                .is_some_and(|k| k != "Node")
            {
                return Err(perr(format!("items[{i}] is not a Node")));
            }
            serde_yaml::from_value::<Node>(item)
                .map_err(|e| perr(format!("items[{i}] is not a valid Node: {e}")))
        })
        .collect()
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
    let views: Vec<(NodeView, Behaviour)> = nodes
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
        .collect();
    forecast_views(policy, views, now)
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
    let out = simulate_with(
        &mut p,
        cfg,
        &mut world,
        now,
        Duration::from_secs(400 * 86400),
        |_, _, _| {},
    );
    let status = out.last.as_ref().map(|pl| &pl.status);
    let spec = &policy.spec;
    let name = policy.metadata.name.clone().unwrap_or_default();
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

fn short_time(t: Option<Timestamp>, zone: Option<&str>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let full = human_time(t, zone);
            // Drop the zone name; the header states it once.
            full.rsplit_once(' ')
                .map_or(full.clone(), |(a, _)| a.to_string())
        }
    }
}

/// Renders the forecast as a table.
pub fn render_table(f: &Forecast, zone: Option<&str>) -> String {
    let z = zone.unwrap_or("UTC");
    let mut out = String::new();
    out.push_str(&format!(
        "PatchPolicy {} revision {}: {} nodes; forecast from {} (times in {z})\n",
        f.policy,
        f.revision,
        f.nodes.len(),
        short_time(Some(f.now), zone)
    ));
    if let Some(s) = f.scheduled_start {
        out.push_str(&format!("scheduled start: {}\n", short_time(Some(s), zone)));
    }
    let gw = f
        .nodes
        .iter()
        .map(|r| r.group.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(1)
        .max(5);
    let nw = f
        .nodes
        .iter()
        .map(|r| r.node.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "{:<5}  {:<nw$}  {:<gw$}  {:<20}  {:<20}  RESULT\n",
        "ORDER", "NODE", "GROUP", "START", "DONE"
    ));
    for r in &f.nodes {
        out.push_str(&format!(
            "{:<5}  {:<nw$}  {:<gw$}  {:<20}  {:<20}  {}\n",
            r.order,
            r.node,
            r.group.as_deref().unwrap_or("-"),
            short_time(r.start, zone),
            short_time(r.done, zone),
            r.result
        ));
    }
    match (&f.completion, &f.problem) {
        (Some(c), _) => out.push_str(&format!(
            "predicted completion: {}\n",
            short_time(Some(*c), zone)
        )),
        (None, Some(p)) => out.push_str(&format!("not predicted to complete: {p}\n")),
        (None, None) => out.push_str("not predicted to complete\n"),
    }
    out
}

fn read(path: &Path) -> Result<String, PlanError> {
    std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse_flag_duration(flag: &str, s: &str) -> Result<Duration, PlanError> {
    duration::parse(s).map_err(|e| PlanError::Usage(format!("--{flag}: {e}")))
}

/// Runs `sofort plan`: exit 0 on success, 1 on bad files, 2 on bad usage.
pub fn run_cli(args: &PlanArgs, wall_clock: Timestamp) -> ExitCode {
    if args.file.is_none() && args.policy.is_none() {
        eprintln!(
            "error: give the policy: -f POLICY.yaml, or --policy NAME to read it from the cluster"
        );
        return ExitCode::from(2);
    }
    let run = || -> Result<String, PlanError> {
        let now = match &args.now {
            Some(s) => s
                .parse::<Timestamp>()
                .map_err(|e| PlanError::Usage(format!("--now {s:?} is not an RFC 3339 instant ({e}); use for example 2026-11-27T09:00:00+01:00")))?,
            None => wall_clock,
        };
        let a = Assumptions {
            drain: parse_flag_duration("drain", &args.drain)?,
            reboot: parse_flag_duration("reboot", &args.reboot)?,
            patch: parse_flag_duration("patch", &args.patch)?,
        };
        let policy = match (&args.file, &args.policy) {
            (Some(file), _) => parse_policy(&read(file)?, &file.display().to_string())?,
            (None, Some(name)) => live::policy(name)?,
            (None, None) => {
                return Err(PlanError::Usage(
                    "-f POLICY.yaml or --policy NAME is required".into(),
                ));
            }
        };
        let nodes = match &args.nodes {
            Some(path) => parse_nodes(&read(path)?, &path.display().to_string())?,
            None => live::nodes()?,
        };
        let f = forecast(&policy, &nodes, now, a);
        Ok(match args.output {
            OutputFormat::Table => {
                let zone = policy
                    .spec
                    .maintenance_windows
                    .first()
                    .map(|w| w.time_zone.as_str())
                    .filter(|z| !z.is_empty() && jiff::tz::TimeZone::get(z).is_ok());
                render_table(&f, zone)
            }
            OutputFormat::Json => {
                serde_json::to_string_pretty(&f).map_err(|e| PlanError::Usage(e.to_string()))?
                    + "\n"
            }
        })
    };
    match run() {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e @ PlanError::Usage(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reading the policy and the nodes (with their current progress) from the
/// cluster the kubeconfig points at.
mod live {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::ListParams;
    use kube::{Api, Client};

    use super::PlanError;
    use crate::api::PatchPolicy;

    fn block_on<T>(
        f: impl std::future::Future<Output = Result<T, PlanError>>,
    ) -> Result<T, PlanError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PlanError::Cluster(e.to_string()))?
            .block_on(f)
    }

    async fn client() -> Result<Client, PlanError> {
        Client::try_default()
            .await
            .map_err(|e| PlanError::Cluster(e.to_string()))
    }

    pub(super) fn policy(name: &str) -> Result<PatchPolicy, PlanError> {
        block_on(async {
            let api: Api<PatchPolicy> = Api::all(client().await?);
            api.get(name)
                .await
                .map_err(|e| PlanError::Cluster(format!("PatchPolicy {name}: {e}")))
        })
    }

    pub(super) fn nodes() -> Result<Vec<Node>, PlanError> {
        block_on(async {
            let api: Api<Node> = Api::all(client().await?);
            api.list(&ListParams::default())
                .await
                .map(|l| l.items)
                .map_err(|e| PlanError::Cluster(format!("listing nodes: {e}")))
        })
    }
}
