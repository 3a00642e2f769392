//! Fleet-scale benchmarks: the real controller (a separate `sofort controller`
//! process) and real agents patch a simulated fleet served by the sandbox's
//! Kubernetes API emulator over HTTP on 127.0.0.1.
//!
//! Run with `cargo bench --bench fleet` (add `-- --json` for JSON on stdout,
//! `-- --quick` for a smaller, faster pass, `-- --only makespan,footprint` to
//! pick scenarios, `-- --rollout-nodes 1000 --rollout-timeout 300` for a
//! smaller or cut-short rollout scenario). Every run writes its figures to
//! `<target dir>/bench/fleet-<unix time>.json`. See `docs/benchmarks.md` for
//! what each figure means.
//!
//! These are benchmarks, not tests: they print figures and their targets and
//! never fail on a missed target.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::json;
use sofort::api::{PatchPolicy, PatchPolicySpec, Phase};
use sofort::core::node_record::STEP_LABEL;
use sofort_sandbox::{
    DurationRange, NodeGroup, Sandbox, SandboxConfig, Scenario, SimDuration, Workload,
};
use tokio::sync::watch;

const ZONE: &str = "topology.kubernetes.io/zone";
const ADMIN_TOKEN: &str = "bench-admin";
const CONTROLLER_TOKEN: &str = "bench-controller";
const AGENT_TOKEN: &str = "bench-agents";
const AGENT_PROCESS_TOKEN: &str = "bench-agent-process";

// ---------------------------------------------------------------- figures

#[derive(Debug, Clone, Serialize)]
struct Figure {
    figure: String,
    scenario: String,
    value: f64,
    unit: String,
    target: Option<String>,
    ok: Option<bool>,
    detail: String,
}

impl Figure {
    fn new(figure: &str, scenario: &str, value: f64, unit: &str) -> Self {
        Figure {
            figure: figure.into(),
            scenario: scenario.into(),
            value,
            unit: unit.into(),
            target: None,
            ok: None,
            detail: String::new(),
        }
    }
    fn target(mut self, text: &str, ok: bool) -> Self {
        self.target = Some(text.into());
        self.ok = Some(ok);
        self
    }
    fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = d.into();
        self
    }
}

#[derive(Default)]
struct Report {
    figures: Vec<Figure>,
    notes: Vec<String>,
}

impl Report {
    fn add(&mut self, f: Figure) {
        eprintln!(
            "  {:<34} {:<28} {:>10} {:<8} {}",
            f.figure,
            f.scenario,
            fmt_value(f.value),
            f.unit,
            f.target.clone().unwrap_or_default()
        );
        self.figures.push(f);
    }
    fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        eprintln!("  note: {n}");
        self.notes.push(n);
    }
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

// ---------------------------------------------------------------- arguments

#[derive(Debug, Clone)]
struct Args {
    json: bool,
    quick: bool,
    only: Option<Vec<String>>,
    drain: Duration,
    reboot: Duration,
    settle: Duration,
    agent_window: Duration,
    urgent_runs: usize,
    rollout_nodes: usize,
    rollout_timeout: Duration,
}

impl Args {
    fn parse() -> Args {
        let mut a = Args {
            json: false,
            quick: false,
            only: None,
            drain: Duration::from_secs(1),
            reboot: Duration::from_secs(5),
            settle: Duration::from_secs(2),
            agent_window: Duration::from_secs(600),
            urgent_runs: 20,
            rollout_nodes: 5000,
            rollout_timeout: Duration::from_secs(1800),
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let secs = |v: Option<String>| {
                v.and_then(|s| s.parse::<f64>().ok())
                    .map(Duration::from_secs_f64)
            };
            match arg.as_str() {
                "--json" => a.json = true,
                "--quick" => a.quick = true,
                "--only" => a.only = it.next().map(|s| s.split(',').map(String::from).collect()),
                "--drain" => a.drain = secs(it.next()).unwrap_or(a.drain),
                "--reboot" => a.reboot = secs(it.next()).unwrap_or(a.reboot),
                "--settle" => a.settle = secs(it.next()).unwrap_or(a.settle),
                "--agent-window" => a.agent_window = secs(it.next()).unwrap_or(a.agent_window),
                "--rollout-nodes" => {
                    a.rollout_nodes = it.next().and_then(|s| s.parse().ok()).unwrap_or(5000)
                }
                "--rollout-timeout" => {
                    a.rollout_timeout = secs(it.next()).unwrap_or(a.rollout_timeout)
                }
                "--urgent-runs" => {
                    a.urgent_runs = it.next().and_then(|s| s.parse().ok()).unwrap_or(20)
                }
                // `cargo bench` passes `--bench`; filters are not used.
                _ => {}
            }
        }
        if a.quick {
            a.agent_window = a.agent_window.min(Duration::from_secs(30));
            a.urgent_runs = a.urgent_runs.min(5);
            a.rollout_nodes = a.rollout_nodes.min(1000);
        }
        a
    }
    fn wants(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == name))
    }
}

// ---------------------------------------------------------------- cluster

/// The emulator, with one bearer token per kind of client so the request log
/// tells the controller's requests from the agents' and the harness's.
struct Env {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    admin: Client,
    agents_client: Client,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn kubeconfig_text(url: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {url}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: bench\n    namespace: default\ncurrent-context: sandbox\nusers:\n- name: bench\n  user:\n    token: {token}\n"
    )
}

/// Ends the run with what failed: without the emulator, the controller
/// binary or the scratch files the harness cannot measure anything.
fn or_exit<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("fleet benchmark: {what}: {e}");
            std::process::exit(1);
        }
    }
}

async fn client_from(path: &Path) -> Client {
    let kc = or_exit(Kubeconfig::read_from(path), "read kubeconfig");
    let cfg = or_exit(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await,
        "kubeconfig",
    );
    or_exit(Client::try_from(cfg), "client")
}

impl Env {
    async fn start(scenario: Scenario) -> Env {
        let sandbox = Sandbox::start(SandboxConfig {
            token: Some(ADMIN_TOKEN.into()),
            extra_tokens: vec![
                (CONTROLLER_TOKEN.into(), "controller".into()),
                (AGENT_TOKEN.into(), "agents".into()),
                (AGENT_PROCESS_TOKEN.into(), "agent-process".into()),
            ],
            request_log_limit: 3_000_000,
            ..SandboxConfig::with_scenario(scenario)
        })
        .await;
        let sandbox = or_exit(sandbox, "start the emulator");
        // The emulator enforces RBAC: the benchmark's own users may do
        // anything (what the chart grants is tested by the chart RBAC tests;
        // here only load and timing are measured).
        let bindings: Vec<serde_json::Value> = ["controller", "agents", "agent-process"]
            .iter()
            .map(|user| {
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": format!("bench-{user}")},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
                })
            })
            .collect();
        or_exit(
            sandbox.create_objects(&bindings),
            "grant the benchmark's users",
        );
        let dir = or_exit(tempfile::tempdir(), "scratch directory");
        for (file, token) in [
            ("admin", ADMIN_TOKEN),
            ("controller", CONTROLLER_TOKEN),
            ("agents", AGENT_TOKEN),
            ("agent-process", AGENT_PROCESS_TOKEN),
        ] {
            or_exit(
                std::fs::write(
                    dir.path().join(file),
                    kubeconfig_text(&sandbox.url(), token),
                ),
                "write kubeconfig",
            );
        }
        let admin = client_from(&dir.path().join("admin")).await;
        let agents_client = client_from(&dir.path().join("agents")).await;
        let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
        or_exit(
            crds.create(
                &PostParams::default(),
                &sofort::cmd::crd::patch_policy_crd(),
            )
            .await,
            "create the CRD",
        );
        let pps: Api<PatchPolicy> = Api::all(admin.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while pps.list(&ListParams::default().limit(1)).await.is_err() && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (stop, _) = watch::channel(false);
        Env {
            sandbox,
            dir,
            admin,
            agents_client,
            stop,
            tasks: Vec::new(),
        }
    }

    fn kubeconfig(&self, who: &str) -> PathBuf {
        self.dir.path().join(who)
    }

    /// One real agent per simulated node, in this process (they are not what
    /// the controller figures measure).
    fn spawn_agents(&mut self) {
        for node in self.sandbox.node_names() {
            let Ok(sim) = self.sandbox.host(&node) else {
                continue;
            };
            let host: Arc<dyn sofort::agent::host::Host> =
                Arc::new(sofort::testkit::host::SandboxHost::new(sim));
            let config = sofort::agent::AgentConfig::new(&node, Duration::from_secs(300), false);
            let client = self.agents_client.clone();
            let mut rx = self.stop.subscribe();
            let metrics = Arc::new(sofort::agent::metrics::AgentMetrics::new());
            self.tasks.push(tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                let _ = sofort::agent::run_agent(client, config, host, metrics, stop).await;
            }));
        }
    }

    /// Requests of one user since the last reset, by (verb, resource[/sub]).
    fn requests_of(&self, user: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in self.sandbox.stats().requests() {
            if r.user != user {
                continue;
            }
            let res = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            *out.entry(format!("{} {res}", r.verb)).or_default() += 1;
        }
        out
    }

    /// Node writes (patches and updates of Nodes, subresources aside) of
    /// one user since the last reset: (all, lost with 409, failed otherwise).
    fn node_writes_of(&self, user: &str) -> (u64, u64, u64) {
        let mut out = (0, 0, 0);
        for r in self.sandbox.stats().requests() {
            if r.user != user
                || r.resource != "nodes"
                || !r.subresource.is_empty()
                || !matches!(r.verb.as_str(), "patch" | "update")
            {
                continue;
            }
            out.0 += 1;
            match r.code {
                409 => out.1 += 1,
                c if c >= 300 => out.2 += 1,
                _ => {}
            }
        }
        out
    }

    /// The figure of the controller's node writes per node updated.
    fn node_write_figure(&self, label: &str, updated: f64) -> Figure {
        let (all, conflicts, failed) = self.node_writes_of("controller");
        Figure::new(
            "node writes per node updated",
            label,
            all as f64 / updated.max(1.0),
            "req",
        )
        .detail(format!(
            "{all} node patches for {updated:.0} nodes: {} stored, {conflicts} lost with 409 Conflict, {failed} failed otherwise",
            all - conflicts - failed
        ))
    }

    async fn shutdown(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.sandbox.shutdown().await;
    }
}

/// A `sofort` subprocess (controller or agent), killed on drop.
struct Proc {
    child: Child,
    /// The controller's `/metrics` address, when it serves one.
    metrics: Option<String>,
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The value of one sample line of the Prometheus text format.
fn sample_value(line: &str) -> Option<f64> {
    line.rsplit(' ').next()?.parse().ok()
}

/// `counts` as "3 Draining, 2 Settling" (count first, by name).
fn counts<V: std::fmt::Display>(counts: &BTreeMap<String, V>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{v:.0} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The body of a plain HTTP GET, within 5 s.
async fn http_get(url: &str) -> Option<String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: hyper::Uri = url.parse().ok()?;
    let fetch = async {
        let resp = client.get(uri).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        String::from_utf8(body.to_vec()).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()?
}

/// The decision passes of a controller, from its
/// `sofort_decision_pass_duration_seconds` histogram: count, mean and an
/// upper bound of the p90 (the bucket it falls in).
struct Passes {
    count: f64,
    mean_ms: f64,
    p90_le_ms: f64,
}

impl Passes {
    fn parse(text: &str) -> Option<Passes> {
        let value = sample_value;
        let name = "sofort_decision_pass_duration_seconds";
        let mut count = None;
        let mut sum = None;
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
                let le = rest.split('"').next().unwrap_or("");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                buckets.push((le, value(line)?));
            } else if line.starts_with(&format!("{name}_count")) {
                count = value(line);
            } else if line.starts_with(&format!("{name}_sum")) {
                sum = value(line);
            }
        }
        let (count, sum) = (count?, sum?);
        let p90 = buckets
            .iter()
            .find(|(_, c)| *c >= 0.9 * count)
            .map_or(f64::INFINITY, |(le, _)| *le);
        Some(Passes {
            count,
            mean_ms: sum * 1000.0 / count.max(1.0),
            p90_le_ms: p90 * 1000.0,
        })
    }

    /// The passes made since `before`.
    fn since(self, before: &Option<Passes>) -> Passes {
        let Some(b) = before else {
            return self;
        };
        let count = self.count - b.count;
        Passes {
            count,
            mean_ms: (self.mean_ms * self.count - b.mean_ms * b.count) / count.max(1.0),
            p90_le_ms: self.p90_le_ms,
        }
    }

    fn figure(&self, label: &str, wall: Duration) -> Figure {
        Figure::new("decision pass mean", label, self.mean_ms, "ms").detail(format!(
            "{:.0} passes in {:.1} s ({:.0} % of the time in a pass); p90 at most {:.0} ms (histogram bucket, over the whole run)",
            self.count,
            wall.as_secs_f64(),
            self.count * self.mean_ms / 10.0 / wall.as_secs_f64().max(1e-9),
            self.p90_le_ms
        ))
    }
}

/// The emulator's passes over its whole fleet (scheduling, workload
/// controllers; kubelets and reboots act on each change between them) since
/// `before`.
fn fleet_pass_figure(
    now: sofort_sandbox::FleetPasses,
    before: sofort_sandbox::FleetPasses,
    label: &str,
    wall: Duration,
) -> Figure {
    let count = now.count - before.count;
    let total = now.total.saturating_sub(before.total);
    let mean_ms = total.as_secs_f64() * 1000.0 / (count.max(1) as f64);
    Figure::new("emulator fleet pass mean", label, mean_ms, "ms").detail(format!(
        "{count} passes over all nodes and pods in {:.1} s ({:.0} % of the time in a pass); longest {:.0} ms since the sandbox started",
        wall.as_secs_f64(),
        total.as_secs_f64() * 100.0 / wall.as_secs_f64().max(1e-9),
        now.longest.as_secs_f64() * 1000.0
    ))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of the process `pid` (`self` for this one).
fn cpu_secs_of(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3; utime 14 and stime 15.
    let tick = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(14) + tick(15)) / clock_ticks()
}

/// CPU of the controller process against that of this process (emulator,
/// simulated fleet and in-process agents) over one measured span.
struct CpuShare {
    controller0: f64,
    harness0: f64,
    t0: Instant,
}

impl CpuShare {
    fn start(ctl: &Proc) -> CpuShare {
        CpuShare {
            controller0: ctl.cpu_secs(),
            harness0: cpu_secs_of("self"),
            t0: Instant::now(),
        }
    }

    fn figure(&self, ctl: &Proc, label: &str) -> Figure {
        let controller = ctl.cpu_secs() - self.controller0;
        let harness = cpu_secs_of("self") - self.harness0;
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        let share = controller / (controller + harness).max(1e-9);
        Figure::new("controller CPU share", label, share * 100.0, "%").detail(format!(
            "the controller process used {controller:.2} s CPU ({:.2} cores) in {wall:.1} s; the emulator, simulated fleet and agents (the benchmark process) {harness:.2} s ({:.2} cores)",
            controller / wall,
            harness / wall
        ))
    }
}

impl Proc {
    fn spawn(args: &[&str], kubeconfig: &Path, log: &Path) -> Proc {
        let log = or_exit(std::fs::File::create(log), "create the log file");
        let out = or_exit(log.try_clone(), "log file");
        let child = or_exit(
            Command::new(env!("CARGO_BIN_EXE_sofort"))
                .args(args)
                .env("KUBECONFIG", kubeconfig)
                .env("SOFORT_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(log)
                .spawn(),
            "start sofort",
        );
        Proc {
            child,
            metrics: None,
        }
    }

    fn controller(env: &Env) -> Proc {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut p = Proc::spawn(
            &[
                "controller",
                "--no-leader-election",
                "--metrics-addr",
                &addr,
            ],
            &env.kubeconfig("controller"),
            &env.dir.path().join("controller.log"),
        );
        p.metrics = Some(format!("http://{addr}/metrics"));
        p
    }

    /// The controller's decision passes so far, from its metrics.
    async fn passes(&self) -> Option<Passes> {
        Passes::parse(&http_get(self.metrics.as_deref()?).await?)
    }

    /// A one-line summary of the controller's own counters: its passes and
    /// its node writes by result (those not sent included).
    async fn progress(&self) -> String {
        let Some(text) = http_get(self.metrics.as_deref().unwrap_or_default()).await else {
            return "no metrics".into();
        };
        let mut writes: BTreeMap<String, f64> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("sofort_node_writes_total{") {
                let result = rest
                    .split("result=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("?");
                let v = sample_value(line).unwrap_or(0.0);
                *writes.entry(result.to_string()).or_default() += v;
            }
        }
        let passes = Passes::parse(&text)
            .map(|p| format!("{:.0} passes of {:.1} ms on average", p.count, p.mean_ms))
            .unwrap_or_default();
        format!("{passes}; node writes {}", counts(&writes))
    }

    /// A `/proc/<pid>/status` figure in KiB; NaN when it cannot be read
    /// (the process is gone, or a zombie without memory lines), so a
    /// memory target is never met by a figure that was not measured.
    fn status_kib(&self, key: &str) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }

    fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") / 1024.0
    }

    fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:") / 1024.0
    }

    /// User + system CPU seconds so far.
    fn cpu_secs(&self) -> f64 {
        cpu_secs_of(&self.child.id().to_string())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- node log

#[derive(Debug, Clone, Copy, PartialEq)]
enum Edge {
    Cordon,
    Uncordon,
}

/// Cordon/uncordon edges and reboots as an independent node watch sees them.
#[derive(Default)]
struct NodeLog {
    ready: bool,
    edges: Vec<(Instant, String, Edge)>,
    zone: HashMap<String, String>,
    reboots: HashMap<String, u32>,
    cordoned_now: usize,
    max_cordoned: usize,
    /// When each node first reached each point of its cycle.
    marks: HashMap<String, Marks>,
}

/// The points of one node's cycle, as the node watch sees them first.
#[derive(Default, Clone, Copy)]
struct Marks {
    cordon: Option<Instant>,
    rebooting: Option<Instant>,
    new_boot: Option<Instant>,
    settling: Option<Instant>,
    uncordon: Option<Instant>,
}

fn watch_nodes(client: Client) -> (Arc<Mutex<NodeLog>>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(NodeLog::default()));
    let l = log.clone();
    let task = tokio::spawn(async move {
        let api: Api<Node> = Api::all(client);
        let mut stream = Box::pin(watcher(api, watcher::Config::default()));
        let mut last: HashMap<String, (bool, String)> = HashMap::new();
        while let Some(ev) = stream.next().await {
            let node = match ev {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => n,
                Ok(watcher::Event::InitDone) => {
                    l.lock().unwrap().ready = true;
                    continue;
                }
                _ => continue,
            };
            let at = Instant::now();
            let name = node.name_any();
            let unsched = node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            let boot = node
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.boot_id.clone())
                .unwrap_or_default();
            let step = node.labels().get(STEP_LABEL).cloned().unwrap_or_default();
            let mut g = l.lock().unwrap();
            if let Some(z) = node.labels().get(ZONE) {
                g.zone.insert(name.clone(), z.clone());
            }
            if g.ready {
                let m = g.marks.entry(name.clone()).or_default();
                if step == "Rebooting" {
                    m.rebooting.get_or_insert(at);
                }
                if step == "Settling" {
                    m.settling.get_or_insert(at);
                }
            }
            match last.get(&name) {
                Some((was, old_boot)) => {
                    if !was && unsched {
                        g.marks
                            .entry(name.clone())
                            .or_default()
                            .cordon
                            .get_or_insert(at);
                        g.edges.push((at, name.clone(), Edge::Cordon));
                        g.cordoned_now += 1;
                        g.max_cordoned = g.max_cordoned.max(g.cordoned_now);
                    } else if *was && !unsched {
                        g.marks
                            .entry(name.clone())
                            .or_default()
                            .uncordon
                            .get_or_insert(at);
                        g.edges.push((at, name.clone(), Edge::Uncordon));
                        g.cordoned_now = g.cordoned_now.saturating_sub(1);
                    }
                    if *old_boot != boot {
                        g.marks
                            .entry(name.clone())
                            .or_default()
                            .new_boot
                            .get_or_insert(at);
                        *g.reboots.entry(name.clone()).or_default() += 1;
                    }
                }
                None if unsched => g.cordoned_now += 1,
                None => {}
            }
            last.insert(name, (unsched, boot));
        }
    });
    (log, task)
}

async fn wait_log_ready(log: &Arc<Mutex<NodeLog>>) {
    while !log.lock().unwrap().ready {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Hand-off latencies: each cordon is matched with the uncordon that freed
/// its slot. Within a group the k-th cordon (k >= maxUnavailable) uses the
/// slot of the (k - maxUnavailable)-th uncordon of that group; the first
/// cordons of a later group follow the last uncordon of the group before.
fn handoffs(log: &NodeLog, by_zone: bool, max_u: usize) -> Vec<Duration> {
    let group_of = |n: &str| -> String {
        if by_zone {
            log.zone.get(n).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut order: Vec<String> = Vec::new();
    let mut cordons: HashMap<String, Vec<Instant>> = HashMap::new();
    let mut uncordons: HashMap<String, Vec<Instant>> = HashMap::new();
    for (at, node, edge) in &log.edges {
        let g = group_of(node);
        match edge {
            Edge::Cordon => {
                if !order.contains(&g) {
                    order.push(g.clone());
                }
                cordons.entry(g).or_default().push(*at);
            }
            Edge::Uncordon => uncordons.entry(g).or_default().push(*at),
        }
    }
    let mut out = Vec::new();
    let mut prev_group_end: Option<Instant> = None;
    for g in &order {
        let cs = cordons.get(g).cloned().unwrap_or_default();
        let us = uncordons.get(g).cloned().unwrap_or_default();
        for (k, c) in cs.iter().enumerate() {
            let freed = if k >= max_u {
                us.get(k - max_u).copied()
            } else {
                prev_group_end
            };
            if let Some(u) = freed {
                out.push(c.saturating_duration_since(u));
            }
        }
        prev_group_end = us.iter().max().copied();
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------- helpers

fn fleet_scenario(nodes: usize, zones: usize) -> Scenario {
    let zones: Vec<String> = (0..zones)
        .map(|i| format!("zone-{}", (b'a' + i as u8) as char))
        .collect();
    Scenario {
        speed: 1.0,
        nodes: vec![NodeGroup {
            name_prefix: Some("worker".into()),
            count: nodes,
            zones,
            roles: vec!["worker".into()],
            ..Default::default()
        }],
        ..Scenario::empty()
    }
}

fn policy(name: &str, max_u: i32, by_zone: bool, settle: Duration) -> PatchPolicy {
    let mut spec = PatchPolicySpec::new("bench-1");
    spec.node_selector = LabelSelector {
        match_labels: Some([("node-role.kubernetes.io/worker".to_string(), String::new())].into()),
        ..LabelSelector::default()
    };
    spec.rollout.max_unavailable = IntOrString::Int(max_u);
    if by_zone {
        spec.rollout.order.group_by = Some(ZONE.into());
    }
    spec.rollout.settle = format!("{}ms", settle.as_millis());
    spec.drain.timeout = "5m".into();
    spec.drain.force = true;
    spec.reboot.timeout = "5m".into();
    PatchPolicy::new(name, spec)
}

async fn wait_policy<F: Fn(&PatchPolicy) -> bool>(
    client: &Client,
    name: &str,
    timeout: Duration,
    every: Duration,
    done: F,
) -> Option<PatchPolicy> {
    let api: Api<PatchPolicy> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(p) = api.get(name).await
            && done(&p)
        {
            return Some(p);
        }
        tokio::time::sleep(every).await;
    }
    None
}

fn completed(p: &PatchPolicy) -> bool {
    p.status.as_ref().is_some_and(|s| {
        matches!(s.phase, Some(Phase::Completed | Phase::Halted))
            && s.revision.as_deref() == Some(p.spec.revision.as_str())
    })
}

fn updated(p: &PatchPolicy) -> u32 {
    p.status
        .as_ref()
        .and_then(|s| s.nodes.as_ref())
        .map_or(0, |n| n.updated)
}

fn total(p: &PatchPolicy) -> u32 {
    p.status
        .as_ref()
        .and_then(|s| s.nodes.as_ref())
        .map_or(0, |n| n.total)
}

async fn wait_running_pods(client: &Client, want: usize, timeout: Duration) -> usize {
    let pods: Api<Pod> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let running = pods
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .count()
            })
            .unwrap_or(0);
        if running >= want || Instant::now() > deadline {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------- makespan, hand-off, API load

struct MakespanCase {
    nodes: usize,
    max_u: usize,
    by_zone: bool,
}

async fn makespan(args: &Args, case: &MakespanCase, report: &mut Report) {
    let label = format!(
        "N={} maxU={}{}",
        case.nodes,
        case.max_u,
        if case.by_zone { " 3 zones" } else { "" }
    );
    eprintln!("\n[makespan] {label}: starting");
    let mut scenario = fleet_scenario(case.nodes, 3);
    // Zero jitter: every step takes exactly its nominal time.
    scenario.timing.pod_termination = SimDuration(args.drain);
    scenario.timing.reboot = DurationRange::fixed(args.reboot);
    scenario.timing.pod_start = DurationRange::fixed(Duration::from_millis(500));
    // Two pods per node on average, no PodDisruptionBudget: every eviction is
    // admitted at once, so a drain is exactly one pod termination long.
    scenario.workloads = vec![
        Workload {
            kind: "Deployment".into(),
            name: "web".into(),
            namespace: "shop".into(),
            replicas: 2 * case.nodes as i64,
            ..Default::default()
        },
        Workload {
            kind: "DaemonSet".into(),
            name: "log-agent".into(),
            namespace: "kube-system".into(),
            replicas: 1,
            ..Default::default()
        },
    ];
    let mut env = Env::start(scenario).await;
    let running = wait_running_pods(&env.admin, 3 * case.nodes, Duration::from_secs(120)).await;
    eprintln!("[makespan] {label}: {running} pods running");
    env.spawn_agents();
    let (log, log_task) = watch_nodes(env.admin.clone());
    wait_log_ready(&log).await;
    let ctl = Proc::controller(&env);
    // Let the controller sync its caches and the agents settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.sandbox.stats().reset();
    let passes0 = ctl.passes().await;
    let fleet0 = env.sandbox.stats().fleet_passes();
    let cpu0 = ctl.cpu_secs();
    let share = CpuShare::start(&ctl);
    let start = Instant::now();
    let pps: Api<PatchPolicy> = Api::all(env.admin.clone());
    or_exit(
        pps.create(
            &PostParams::default(),
            &policy("bench", case.max_u as i32, case.by_zone, args.settle),
        )
        .await,
        "create the policy",
    );

    // Zone sizes give the number of waves the group rule allows.
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for (_, labels, _, _) in fleet_scenario(case.nodes, 3).node_list() {
        let z = if case.by_zone {
            labels.get(ZONE).cloned().unwrap_or_default()
        } else {
            String::new()
        };
        *per_zone.entry(z).or_default() += 1;
    }
    let waves: usize = per_zone.values().map(|n| n.div_ceil(case.max_u)).sum();
    let step = args.drain + args.reboot + args.settle;
    let ideal = step * waves as u32;

    // Sample watch connections while it runs.
    let stats = env.sandbox.stats();
    let mut max_watches = 0usize;
    let timeout = ideal * 3 + Duration::from_secs(120);
    let api = pps.clone();
    let final_policy = loop {
        max_watches = max_watches.max(stats.open_watches());
        if let Ok(p) = api.get("bench").await
            && completed(&p)
        {
            break Some(p);
        }
        if start.elapsed() > timeout {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let cpu = ctl.cpu_secs() - cpu0;
    let share = share.figure(&ctl, &label);
    let passes = ctl
        .passes()
        .await
        .map(|p| p.since(&passes0).figure(&label, start.elapsed()));
    let fleet_passes = fleet_pass_figure(
        env.sandbox.stats().fleet_passes(),
        fleet0,
        &label,
        start.elapsed(),
    );
    let peak = ctl.peak_rss_mib();
    let requests = env.requests_of("controller");
    log_task.abort();
    let log = std::mem::take(&mut *log.lock().unwrap());
    drop(ctl);

    let Some(final_policy) = final_policy else {
        report.note(format!(
            "{label}: the rollout did not complete within {timeout:?}"
        ));
        env.shutdown().await;
        return;
    };
    let done = updated(&final_policy) as usize;
    let first = log.edges.iter().find(|e| e.2 == Edge::Cordon).map(|e| e.0);
    let last = log
        .edges
        .iter()
        .rev()
        .find(|e| e.2 == Edge::Uncordon)
        .map(|e| e.0);
    let actual = match (first, last) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    };
    let eff = actual.as_secs_f64() / ideal.as_secs_f64();
    report.add(
        Figure::new("makespan efficiency (actual/ideal)", &label, eff, "ratio")
            .target("<= 1.05", eff <= 1.05)
            .detail(format!(
                "actual {:.1} s (first cordon to last uncordon), ideal {:.1} s = {waves} waves x ({:.1} s drain + {:.1} s reboot + {:.1} s settle); {done}/{} nodes updated, phase {:?}; overhead per wave {:.0} ms; at most {} nodes cordoned at once",
                actual.as_secs_f64(),
                ideal.as_secs_f64(),
                args.drain.as_secs_f64(),
                args.reboot.as_secs_f64(),
                args.settle.as_secs_f64(),
                case.nodes,
                final_policy.status.as_ref().and_then(|s| s.phase),
                (actual.as_secs_f64() - ideal.as_secs_f64()) * 1000.0 / waves as f64,
                log.max_cordoned,
            )),
    );
    // Where the time beyond the simulated steps goes, per node.
    type Span = fn(&Marks) -> Option<(Instant, Instant)>;
    let spans: [(&str, Span, Duration); 4] = [
        (
            "cordon -> reboot requested, beyond the drain",
            |m| Some((m.cordon?, m.rebooting?)),
            args.drain,
        ),
        (
            "reboot requested -> new boot ID, beyond the reboot",
            |m| Some((m.rebooting?, m.new_boot?)),
            args.reboot,
        ),
        (
            "new boot ID -> settling",
            |m| Some((m.new_boot?, m.settling?)),
            Duration::ZERO,
        ),
        (
            "settling -> uncordon, beyond the settle time",
            |m| Some((m.settling?, m.uncordon?)),
            args.settle,
        ),
    ];
    for (what, span, step) in spans {
        let mut extra: Vec<Duration> = log
            .marks
            .values()
            .filter_map(span)
            .map(|(a, b)| b.saturating_duration_since(a).saturating_sub(step))
            .collect();
        extra.sort();
        if extra.is_empty() {
            continue;
        }
        report.add(
            Figure::new(
                &format!("overhead {what}"),
                &label,
                percentile(&extra, 50.0).as_secs_f64() * 1000.0,
                "ms",
            )
            .detail(format!(
                "p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms over {} nodes",
                percentile(&extra, 50.0).as_secs_f64() * 1000.0,
                percentile(&extra, 90.0).as_secs_f64() * 1000.0,
                extra.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
                extra.len()
            )),
        );
    }
    let once = log.reboots.values().filter(|c| **c == 1).count();
    if once != case.nodes {
        report.note(format!(
            "{label}: {once} of {} nodes rebooted exactly once",
            case.nodes
        ));
    }

    let mut hs = handoffs(&log, case.by_zone, case.max_u);
    hs.sort();
    let p50 = percentile(&hs, 50.0);
    let p99 = percentile(&hs, 99.0);
    let max = hs.last().copied().unwrap_or_default();
    report.add(
        Figure::new("hand-off p50", &label, p50.as_secs_f64() * 1000.0, "ms")
            .detail(format!("{} hand-offs", hs.len())),
    );
    report.add(
        Figure::new("hand-off p99", &label, p99.as_secs_f64() * 1000.0, "ms")
            .target("< 1000 ms", p99 < Duration::from_secs(1)),
    );
    report.add(Figure::new(
        "hand-off max",
        &label,
        max.as_secs_f64() * 1000.0,
        "ms",
    ));

    // API load of the controller during the rollout.
    let total_req: u64 = requests.values().sum();
    let evictions = requests.get("create pods/eviction").copied().unwrap_or(0);
    let evicted = env
        .sandbox
        .stats()
        .requests()
        .iter()
        .filter(|r| r.user == "controller" && r.subresource == "eviction" && r.code < 300)
        .count() as u64;
    let n = done.max(1) as f64;
    // Per node: 10, plus the pending-reboot taint put on and taken off (2
    // node writes); per evicted pod 2; per revision the pre-flight check's
    // pod lists (one per node it checks, at most its node limit) and its
    // PodDisruptionBudget list.
    let preflight = case
        .nodes
        .min(sofort::controller::gates::preflight::MAX_NODES) as f64
        + 1.0;
    let budget = 12.0 * n + 2.0 * evicted as f64 + preflight;
    report.add(
        Figure::new("API requests per node updated", &label, total_req as f64 / n, "req")
            .target(
                &format!(
                    "<= {:.1} (12 + 2 x {:.2} evicted pods/node + {:.2} pre-flight lists/node)",
                    budget / n,
                    evicted as f64 / n,
                    preflight / n
                ),
                total_req as f64 <= budget,
            )
            .detail(format!(
                "{total_req} controller requests for {done} nodes and {evicted} evicted pods ({evictions} eviction calls); by verb and resource: {}",
                requests
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
    );
    report.add(env.node_write_figure(&label, n));
    let watch_calls = requests
        .iter()
        .filter(|(k, _)| k.starts_with("watch "))
        .map(|(_, v)| *v)
        .sum::<u64>();
    report.add(
        Figure::new(
            "watch connections held (max)",
            &label,
            max_watches.saturating_sub(case.nodes + 1) as f64,
            "conns",
        )
        .detail(format!(
            "all open watches {max_watches} minus {} agents and the harness's one; the controller opened {watch_calls} watch requests during the rollout",
            case.nodes
        )),
    );
    report.add(
        Figure::new(
            "controller CPU per node updated",
            &label,
            cpu * 1000.0 / n,
            "ms",
        )
        .detail(format!(
            "{cpu:.2} s CPU over the rollout; peak RSS {peak:.1} MiB"
        )),
    );
    report.add(share);
    if let Some(p) = passes {
        report.add(p);
    }
    report.add(fleet_passes);
    for (k, v) in &requests {
        eprintln!("      {k:<40} {v:>8}  {:>6.2}/node", *v as f64 / n);
    }
    env.shutdown().await;
}

// ---------------------------------------------------------------- footprint

/// A fleet of `nodes` nodes with `pods` running, unmanaged pods bound to each
/// (created bound and Running, so the emulator does not spend its time
/// scheduling them), and one DaemonSet-free namespace.
fn footprint_scenario(nodes: usize, pods: usize) -> Scenario {
    let mut s = fleet_scenario(nodes, 3);
    s.timing.pod_termination = SimDuration(Duration::from_millis(500));
    s.timing.reboot = DurationRange::fixed(Duration::from_secs(2));
    let names: Vec<String> = s.node_list().into_iter().map(|n| n.0).collect();
    let ts = "2026-01-01T00:00:00Z";
    for node in &names {
        for i in 0..pods {
            s.objects.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{node}-p{i}"), "namespace": "default", "labels": {"app": "bench"}},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.example/app:1"}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ts}]}
            }));
        }
    }
    s
}

struct Footprint {
    idle_rss: f64,
    sync: Duration,
}

/// Starts a controller on an idle fleet (a paused policy that selects every
/// node) and measures its RSS once the policy's status counts every node.
async fn idle_footprint(env: &Env, nodes: usize) -> (Proc, Option<Footprint>) {
    let pps: Api<PatchPolicy> = Api::all(env.admin.clone());
    let mut p = policy("bench", 100, false, Duration::from_secs(1));
    p.spec.paused = true;
    or_exit(
        pps.create(&PostParams::default(), &p).await,
        "create the policy",
    );
    let ctl = Proc::controller(env);
    let t0 = Instant::now();
    let synced = wait_policy(
        &env.admin,
        "bench",
        Duration::from_secs(300),
        Duration::from_millis(200),
        |p| total(p) as usize == nodes,
    )
    .await;
    if synced.is_none() {
        return (ctl, None);
    }
    let sync = t0.elapsed();
    // Let start-up allocations settle, then read the resident set.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = ctl.rss_mib();
    (ctl, Some(Footprint { idle_rss, sync }))
}

async fn footprint(args: &Args, report: &mut Report) {
    let grid: Vec<(usize, usize)> = if args.quick {
        vec![(1000, 10), (1000, 50)]
    } else {
        vec![(1000, 10), (1000, 50), (5000, 10), (5000, 50)]
    };
    for (nodes, pods) in grid {
        let label = format!("{nodes} nodes x {pods} pods");
        eprintln!("\n[footprint] {label}: seeding");
        let t = Instant::now();
        let env = Env::start(footprint_scenario(nodes, pods)).await;
        eprintln!(
            "[footprint] {label}: seeded in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let (ctl, fp) = idle_footprint(&env, nodes).await;
        match fp {
            Some(fp) => report.add(
                Figure::new("controller RSS idle", &label, fp.idle_rss, "MiB")
                    .target("< 150 MiB", fp.idle_rss < 150.0)
                    .detail(format!(
                        "caches synced and status written {:.1} s after start; CPU {:.2} s so far",
                        fp.sync.as_secs_f64(),
                        ctl.cpu_secs()
                    )),
            ),
            None => report.note(format!("{label}: the controller did not sync in time")),
        }
        drop(ctl);
        env.shutdown().await;
    }
}

/// 5,000 nodes and 50,000 pods, 100 nodes at a time, to the end of the
/// rollout (`--rollout-nodes`, `--rollout-timeout` make it smaller or cut it
/// short; `--quick` is 1,000 nodes).
async fn rollout_footprint(args: &Args, report: &mut Report) {
    let (nodes, pods, max_u) = (args.rollout_nodes, 10, 100);
    let label = format!("{nodes} nodes x {pods} pods, 100 at a time");
    eprintln!("\n[rollout footprint] {label}: seeding");
    let mut env = Env::start(footprint_scenario(nodes, pods)).await;
    env.spawn_agents();
    let (ctl, fp) = idle_footprint(&env, nodes).await;
    let Some(fp) = fp else {
        report.note(format!("{label}: the controller did not sync in time"));
        return;
    };
    eprintln!(
        "[rollout footprint] idle RSS {:.1} MiB; starting the rollout",
        fp.idle_rss
    );
    env.sandbox.stats().reset();
    let passes0 = ctl.passes().await;
    let fleet0 = env.sandbox.stats().fleet_passes();
    let cpu0 = ctl.cpu_secs();
    let share = CpuShare::start(&ctl);
    let t0 = Instant::now();
    let pps: Api<PatchPolicy> = Api::all(env.admin.clone());
    let resumed = pps
        .patch(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false, "rollout": {"maxUnavailable": max_u}}})),
        )
        .await;
    or_exit(resumed, "resume the policy");
    // NaN until a sample is read: `max` keeps any number over NaN.
    let mut max_rss = f64::NAN;
    let mut done = 0u32;
    let mut complete = false;
    let deadline = Instant::now() + args.rollout_timeout;
    let mut next_progress = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        max_rss = max_rss.max(ctl.rss_mib());
        let mut steps = BTreeMap::<String, usize>::new();
        if let Ok(p) = pps.get("bench").await {
            done = updated(&p);
            if completed(&p) {
                complete = true;
                break;
            }
            for a in p.status.iter().flat_map(|s| &s.active) {
                *steps.entry(format!("{:?}", a.step)).or_default() += 1;
            }
        }
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(30);
            let reqs: u64 = env.requests_of("controller").values().sum();
            let (writes, conflicts, _) = env.node_writes_of("controller");
            let counters = ctl.progress().await;
            eprintln!(
                "[rollout footprint] {:.0} s: {done}/{nodes} nodes updated ({:.1}/s), {:.1} controller requests and {:.1} node writes ({conflicts} lost with 409) per node, controller CPU {:.1} s; in progress: {}",
                t0.elapsed().as_secs_f64(),
                f64::from(done) / t0.elapsed().as_secs_f64(),
                reqs as f64 / f64::from(done.max(1)),
                writes as f64 / f64::from(done.max(1)),
                ctl.cpu_secs() - cpu0,
                counts(&steps)
            );
            eprintln!("[rollout footprint]       controller: {counters}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu = ctl.cpu_secs() - cpu0;
    let share = share.figure(&ctl, &label);
    let elapsed = t0.elapsed();
    let passes = ctl
        .passes()
        .await
        .map(|p| p.since(&passes0).figure(&label, elapsed));
    let fleet_passes =
        fleet_pass_figure(env.sandbox.stats().fleet_passes(), fleet0, &label, elapsed);
    let requests = env.requests_of("controller");
    let total_req: u64 = requests.values().sum();
    let n = f64::from(done.max(1));
    let ideal = (nodes.div_ceil(max_u) as f64) * 3.5;
    report.add(
        Figure::new("rollout nodes updated", &label, f64::from(done), "nodes")
            .target(&format!("= {nodes} (complete)"), complete)
            .detail(format!(
                "{} in {:.1} s ({:.1} nodes/s); ideal {ideal:.0} s = {} waves x (0.5 s drain + 2 s reboot + 1 s settle)",
                if complete { "completed" } else { "cut short" },
                elapsed.as_secs_f64(),
                f64::from(done) / elapsed.as_secs_f64(),
                nodes.div_ceil(max_u)
            )),
    );
    report.add(
        Figure::new(
            "API requests per node updated",
            &label,
            total_req as f64 / n,
            "req",
        )
        .detail(format!(
            "{total_req} controller requests for {done} nodes; by verb and resource: {}",
            requests
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    );
    report.add(env.node_write_figure(&label, n));
    for (k, v) in &requests {
        eprintln!("      {k:<40} {v:>8}  {:>6.2}/node", *v as f64 / n);
    }
    report.add(share);
    if let Some(p) = passes {
        report.add(p);
    }
    report.add(fleet_passes);
    report.add(
        Figure::new("controller RSS during rollout (max)", &label, max_rss, "MiB")
            .target("< 150 MiB", max_rss < 150.0)
            .detail(format!(
                "sampled every 0.5 s; peak resident set of the process (VmHWM) {:.1} MiB; idle before the rollout {:.1} MiB",
                ctl.peak_rss_mib(),
                fp.idle_rss
            )),
    );
    report.add(
        Figure::new("controller CPU per node updated", &label, cpu * 1000.0 / n, "ms")
            .detail(format!(
                "{cpu:.2} s CPU for the first {done} nodes in {:.1} s; {:.1} controller requests per node",
                elapsed.as_secs_f64(),
                total_req as f64 / n
            )),
    );
    drop(ctl);
    env.shutdown().await;
}

// ---------------------------------------------------------------- agent

async fn agent_footprint(args: &Args, report: &mut Report) {
    eprintln!("\n[agent] starting one agent process");
    let env = Env::start(fleet_scenario(3, 1)).await;
    let node = env.sandbox.node_names()[0].clone();
    let sentinel = env.dir.path().join("reboot-required");
    let agent = Proc::spawn(
        &[
            "agent",
            "--node-name",
            &node,
            "--sentinel-file",
            &sentinel.display().to_string(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &env.kubeconfig("agent-process"),
        &env.dir.path().join("agent.log"),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let startup = env.requests_of("agent-process").values().sum::<u64>();
    env.sandbox.stats().reset();
    let cpu0 = agent.cpu_secs();
    tokio::time::sleep(args.agent_window).await;
    let rss = agent.rss_mib();
    let cpu = agent.cpu_secs() - cpu0;
    let reqs = env.requests_of("agent-process");
    let in_window: u64 = reqs.values().sum();
    let per_hour = in_window as f64 * 3600.0 / args.agent_window.as_secs_f64();
    report.add(
        Figure::new("agent RSS idle", "1 agent process", rss, "MiB")
            .detail(format!("peak {:.1} MiB", agent.peak_rss_mib())),
    );
    report.add(
        Figure::new("agent requests per hour (idle)", "1 agent process", per_hour, "req/h")
            .detail(format!(
                "{in_window} requests in a {:.0} s window, extrapolated to an hour ({}); {startup} requests at start-up; CPU {:.3} s in the window",
                args.agent_window.as_secs_f64(),
                reqs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
                cpu
            )),
    );
    drop(agent);
    env.shutdown().await;
}

// ---------------------------------------------------------------- urgent

async fn urgent(args: &Args, report: &mut Report) {
    let runs = args.urgent_runs;
    eprintln!("\n[urgent] {runs} runs");
    let env = Env::start(fleet_scenario(runs, 1)).await;
    let (log, log_task) = watch_nodes(env.admin.clone());
    wait_log_ready(&log).await;
    let ctl = Proc::controller(&env);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pps: Api<PatchPolicy> = Api::all(env.admin.clone());
    let names = env.sandbox.node_names();
    let mut times = Vec::new();
    for (i, node) in names.iter().enumerate() {
        let mut p = policy(&format!("urgent-{i}"), 1, false, Duration::from_secs(1));
        p.spec.urgent = true;
        // A window that is closed now: urgent ignores it.
        p.spec.maintenance_windows = vec![sofort::api::MaintenanceWindow {
            days: vec![],
            start: "00:00".into(),
            end: "00:01".into(),
            time_zone: "Pacific/Kiritimati".into(),
            weeks_of_month: Vec::new(),
            offset_days: 0,
        }];
        p.spec.node_selector = LabelSelector {
            match_labels: Some([("kubernetes.io/hostname".to_string(), node.clone())].into()),
            ..LabelSelector::default()
        };
        let seen = log.lock().unwrap().edges.len();
        let t0 = Instant::now();
        or_exit(
            pps.create(&PostParams::default(), &p).await,
            "create the policy",
        );
        let deadline = t0 + Duration::from_secs(30);
        let at = loop {
            let found = log.lock().unwrap().edges[seen..]
                .iter()
                .find(|e| e.1 == *node && e.2 == Edge::Cordon)
                .map(|e| e.0);
            if let Some(at) = found {
                break Some(at);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        match at {
            Some(at) => times.push(at.saturating_duration_since(t0)),
            None => report.note(format!("urgent run {i}: no cordon within 30 s")),
        }
        // Let the controller's follow-up writes pass before the next run.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    times.sort();
    let p50 = percentile(&times, 50.0);
    report.add(
        Figure::new("urgent reaction p50", &format!("{runs} runs"), p50.as_secs_f64() * 1000.0, "ms")
            .target("< 1000 ms", p50 < Duration::from_secs(1))
            .detail(format!(
                "create of an urgent PatchPolicy (window closed) to the node seen cordoned; p90 {:.0} ms, max {:.0} ms",
                percentile(&times, 90.0).as_secs_f64() * 1000.0,
                times.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
            )),
    );
    log_task.abort();
    drop(ctl);
    env.shutdown().await;
}

// ---------------------------------------------------------------- main

fn print_table(figures: &[Figure]) {
    println!(
        "{:<36} {:<34} {:>10} {:<6} {:<44}",
        "figure", "scenario", "value", "unit", "target"
    );
    for f in figures {
        let verdict = match f.ok {
            Some(true) => "ok",
            Some(false) => "MISSED",
            None => "",
        };
        println!(
            "{:<36} {:<34} {:>10} {:<6} {:<44} {}",
            f.figure,
            f.scenario,
            fmt_value(f.value),
            f.unit,
            f.target.clone().unwrap_or_default(),
            verdict
        );
    }
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let rt = or_exit(rt, "tokio runtime");
    let started = Instant::now();
    let mut report = Report::default();
    rt.block_on(async {
        if args.wants("makespan") {
            let cases = if args.quick {
                vec![
                    MakespanCase {
                        nodes: 60,
                        max_u: 10,
                        by_zone: true,
                    },
                    MakespanCase {
                        nodes: 200,
                        max_u: 50,
                        by_zone: false,
                    },
                ]
            } else {
                vec![
                    MakespanCase {
                        nodes: 200,
                        max_u: 10,
                        by_zone: true,
                    },
                    MakespanCase {
                        nodes: 1000,
                        max_u: 50,
                        by_zone: false,
                    },
                ]
            };
            for c in &cases {
                makespan(&args, c, &mut report).await;
            }
        }
        if args.wants("urgent") {
            urgent(&args, &mut report).await;
        }
        if args.wants("agent") {
            agent_footprint(&args, &mut report).await;
        }
        if args.wants("footprint") {
            footprint(&args, &mut report).await;
        }
        if args.wants("rollout") {
            rollout_footprint(&args, &mut report).await;
        }
    });
    let out = json!({
        "generated": jiff::Timestamp::now().to_string(),
        "commit": Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()).map(|s| s.trim().to_string()),
        "quick": args.quick,
        "step": {"drainSeconds": args.drain.as_secs_f64(), "rebootSeconds": args.reboot.as_secs_f64(), "settleSeconds": args.settle.as_secs_f64()},
        "durationSeconds": started.elapsed().as_secs_f64(),
        "figures": report.figures,
        "notes": report.notes,
    });
    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("bench");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("fleet-{}.json", jiff::Timestamp::now().as_second()));
    let text = serde_json::to_string_pretty(&out).unwrap_or_default();
    if let Err(e) = std::fs::write(&path, &text) {
        eprintln!(
            "cannot write {}: {e}; the figures are printed below only",
            path.display()
        );
    }
    if args.json {
        println!("{text}");
    } else {
        println!();
        print_table(&report.figures);
        for f in &report.figures {
            if !f.detail.is_empty() {
                println!("- {} [{}]: {}", f.figure, f.scenario, f.detail);
            }
        }
        for n in &report.notes {
            println!("note: {n}");
        }
    }
    eprintln!("figures written to {}", path.display());
}
