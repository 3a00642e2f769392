//! `sofort sandbox`: a simulated cluster in one process where the real
//! controller and one real agent per node patch the fleet while you watch.
//!
//! The Kubernetes API emulator and the simulated fleet come from the
//! `sofort-sandbox` crate; this module starts them, installs the CRD, runs the
//! controller and the agents against the emulator over HTTP (as they would run
//! against a real cluster), applies a built-in policy (unless told not to),
//! shows the rollout live, and prints a summary checked by an independent
//! [`observer::Observer`].

pub mod host;
pub mod observer;
pub mod unattended;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use sofort_sandbox::{Sandbox, SandboxConfig, Scenario};
use tokio::sync::watch;

use crate::api::{MaintenanceWindow, PatchPolicy, PatchPolicySpec, Phase, Weekday};
use crate::cli::SandboxArgs;
use crate::cmd::status::{self, ViewConfig};
use crate::controller::{self, ControllerConfig};
use crate::core::forecast::Assumptions;
use observer::{Observer, WatchedPolicy};

/// Errors of `sofort sandbox`.
#[derive(Debug, thiserror::Error)]
pub enum SandboxRunError {
    /// The emulator failed.
    #[error(transparent)]
    Sandbox(#[from] sofort_sandbox::SandboxError),
    /// The kubeconfig could not be used.
    #[error("cannot use the sandbox kubeconfig: {0}")]
    Kubeconfig(String),
    /// A call to the emulator failed.
    #[error("the sandbox API refused a request: {0}")]
    Api(#[from] kube::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Ctrl-C could not be awaited.
    #[error("cannot wait for Ctrl-C: {0}")]
    Signal(#[source] std::io::Error),
    /// The live view failed.
    #[error("{0}")]
    View(String),
    /// The chart's access objects shipped with the binary are broken.
    #[error(
        "the chart's RBAC and admission objects (src/testkit/chart-access.yaml) are not valid: {0}"
    )]
    ChartAccess(String),
}

/// The chart's ServiceAccounts, RBAC and admission policies as it renders
/// them with default values; the controller and the agents of the sandbox run
/// with exactly these rights (a chart test fails when they drift).
pub const CHART_ACCESS_YAML: &str = include_str!("chart-access.yaml");

/// [`CHART_ACCESS_YAML`] as objects.
pub fn chart_access_objects() -> Result<Vec<serde_json::Value>, SandboxRunError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(CHART_ACCESS_YAML) {
        let v = serde_yaml::Value::deserialize(doc)
            .map_err(|e| SandboxRunError::ChartAccess(e.to_string()))?;
        let v = serde_json::to_value(v).map_err(|e| SandboxRunError::ChartAccess(e.to_string()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// (namespace, name) of the chart's ServiceAccount of one component.
fn service_account_of(
    objects: &[serde_json::Value],
    component: &str,
) -> Result<(String, String), SandboxRunError> {
    objects
        .iter()
        .find(|o| {
            o["kind"] == "ServiceAccount"
                && o["metadata"]["labels"]["app.kubernetes.io/component"] == component
        })
        .and_then(|o| {
            Some((
                o["metadata"]["namespace"].as_str()?.to_string(),
                o["metadata"]["name"].as_str()?.to_string(),
            ))
        })
        .ok_or_else(|| {
            SandboxRunError::ChartAccess(format!("no ServiceAccount of the {component}"))
        })
}

/// A client configuration from kubeconfig YAML.
async fn config_from_yaml(yaml: &str) -> Result<kube::Config, SandboxRunError> {
    let kc = Kubeconfig::from_yaml(yaml).map_err(|e| SandboxRunError::Kubeconfig(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| SandboxRunError::Kubeconfig(e.to_string()))
}

/// Entry point of `sofort sandbox`; `log_file` is where the logs go (printed
/// with the kubeconfig), `None` when they go to standard error.
pub fn main(args: &SandboxArgs, log_file: Option<&std::path::Path>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {}", SandboxRunError::Runtime(e));
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args.clone(), log_file.map(|p| p.to_path_buf()))) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The policy the demo applies: every worker, zone by zone, two at a time,
/// inside a window that is open all day (or, with `urgent`, a window that is
/// closed now, which an urgent policy ignores).
pub fn demo_policy(urgent: bool, now: jiff::Timestamp) -> PatchPolicy {
    let mut spec = PatchPolicySpec::new("2026-11-27");
    spec.urgent = urgent;
    spec.node_selector = LabelSelector {
        match_labels: Some([("node-role.kubernetes.io/worker".to_string(), String::new())].into()),
        ..LabelSelector::default()
    };
    let window = if urgent {
        // A one-hour window starting twelve hours from now: closed.
        let later = now
            .checked_add(jiff::SignedDuration::from_hours(12))
            .unwrap_or(now)
            .to_zoned(jiff::tz::TimeZone::UTC);
        let h = later.hour();
        MaintenanceWindow {
            days: Vec::new(),
            start: format!("{h:02}:00"),
            end: format!("{:02}:00", (h + 1) % 24),
            time_zone: "UTC".into(),
            weeks_of_month: Vec::new(),
            offset_days: 0,
        }
    } else {
        MaintenanceWindow {
            days: Weekday::ALL.to_vec(),
            start: "00:00".into(),
            end: "00:00".into(),
            time_zone: "UTC".into(),
            weeks_of_month: Vec::new(),
            offset_days: 0,
        }
    };
    spec.maintenance_windows = vec![window];
    spec.rollout.max_unavailable = IntOrString::Int(2);
    spec.rollout.order.group_by = Some("topology.kubernetes.io/zone".into());
    spec.rollout.settle = "2s".into();
    spec.drain.timeout = "1m".into();
    // The demo fleet runs an unmanaged pod (default/debug); evict it too.
    spec.drain.force = true;
    spec.reboot.timeout = "1m".into();
    spec.rollout.min_window_remaining = Some("5m".into());
    PatchPolicy::new(if urgent { "demo-urgent" } else { "demo" }, spec)
}

/// A running sandbox with the controller and agents attached.
pub struct Cluster {
    /// The emulator.
    pub sandbox: Sandbox,
    /// Where its kubeconfig is.
    pub kubeconfig: PathBuf,
    /// Client configuration for it.
    pub kube_config: kube::Config,
    /// A client (the admin).
    pub client: Client,
    /// The controller's ServiceAccount token (the chart's RBAC applies to it).
    pub controller_token: String,
    /// The agents' ServiceAccount (namespace, name).
    agent_account: (String, String),
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Starts the emulator with `scenario`, installs the CRD and writes the kubeconfig.
    pub async fn start(
        scenario: Scenario,
        port: u16,
        kubeconfig: PathBuf,
    ) -> Result<Cluster, SandboxRunError> {
        Cluster::start_with(
            SandboxConfig {
                port,
                ..SandboxConfig::with_scenario(scenario)
            },
            kubeconfig,
        )
        .await
    }

    /// Like [`Cluster::start`] with every setting of the emulator, for example
    /// bearer tokens that tell the callers apart in its request log.
    pub async fn start_with(
        config: SandboxConfig,
        kubeconfig: PathBuf,
    ) -> Result<Cluster, SandboxRunError> {
        let sandbox = Sandbox::start(config).await?;
        sandbox.write_kubeconfig(&kubeconfig)?;
        let kc = Kubeconfig::read_from(&kubeconfig)
            .map_err(|e| SandboxRunError::Kubeconfig(e.to_string()))?;
        let kube_config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| SandboxRunError::Kubeconfig(e.to_string()))?;
        let client = Client::try_from(kube_config.clone())?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        match crds
            .create(&PostParams::default(), &crate::cmd::crd::patch_policy_crd())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        // Wait until the new resource is served.
        let pps: Api<PatchPolicy> = Api::all(client.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while pps.list(&ListParams::default().limit(1)).await.is_err() && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The controller and the agents run with the chart's rights.
        let access = chart_access_objects()?;
        let (ns, controller) = service_account_of(&access, "controller")?;
        let agent_account = service_account_of(&access, "agent")?;
        sandbox.create_objects(&[serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
        })])?;
        sandbox.create_objects(&access)?;
        let controller_token = sandbox.mint_token(&ns, &controller, None);
        let (stop, _) = watch::channel(false);
        Ok(Cluster {
            sandbox,
            kubeconfig,
            kube_config,
            client,
            controller_token,
            agent_account,
            stop,
            tasks: Vec::new(),
        })
    }

    fn stopper(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// A kubeconfig for the controller's ServiceAccount, as YAML.
    pub fn controller_kubeconfig_yaml(&self) -> String {
        self.sandbox
            .kubeconfig_yaml_for(Some(&self.controller_token))
    }

    /// Runs the controller in-process (over HTTP to the emulator) with its
    /// ServiceAccount token.
    pub fn spawn_controller(&mut self, cfg: ControllerConfig) {
        let yaml = self.controller_kubeconfig_yaml();
        let stop = self.stopper();
        self.tasks.push(tokio::spawn(async move {
            let kc = match config_from_yaml(&yaml).await {
                Ok(kc) => kc,
                Err(e) => {
                    tracing::error!(error = %e, "controller not started");
                    return;
                }
            };
            if let Err(e) = controller::run(kc, cfg, stop).await {
                tracing::error!(error = %e, "controller stopped");
            }
        }));
    }

    /// Runs one real agent per simulated node, each against its simulated
    /// host, with a ServiceAccount token bound to its node.
    pub fn spawn_agents(&mut self, allow_host_commands: bool) -> Result<(), SandboxRunError> {
        self.spawn_agents_checking_every(allow_host_commands, Duration::from_secs(30))
    }

    /// Makes the simulated host of `node` create (`true`) or remove its
    /// reboot-required sentinel; its agent reports it at its next check. A
    /// reboot removes it.
    pub fn set_reboot_required(&self, node: &str, required: bool) -> Result<(), SandboxRunError> {
        self.sandbox.host(node)?.set_reboot_required(required);
        Ok(())
    }

    /// Like [`Cluster::spawn_agents`], with the agents checking the
    /// reboot-required sentinel every `check_interval` (plus jitter).
    pub fn spawn_agents_checking_every(
        &mut self,
        allow_host_commands: bool,
        check_interval: Duration,
    ) -> Result<(), SandboxRunError> {
        for node in self.sandbox.node_names() {
            let (ns, name) = &self.agent_account;
            let token = self.sandbox.mint_token(ns, name, Some(&node));
            let yaml = self.sandbox.kubeconfig_yaml_for(Some(&token));
            let sim = self.sandbox.host(&node)?;
            let host: Arc<dyn crate::agent::host::Host> = Arc::new(host::SandboxHost::new(sim));
            let config = crate::agent::AgentConfig::new(&node, check_interval, allow_host_commands);
            let stop = self.stopper();
            let metrics = Arc::new(crate::agent::metrics::AgentMetrics::new());
            self.tasks.push(tokio::spawn(async move {
                let client = match config_from_yaml(&yaml)
                    .await
                    .and_then(|c| Ok(Client::try_from(c)?))
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(node = %node, error = %e, "agent not started");
                        return;
                    }
                };
                if let Err(e) = crate::agent::run_agent(client, config, host, metrics, stop).await {
                    tracing::error!(node = %node, error = %e, "agent stopped");
                }
            }));
        }
        Ok(())
    }

    /// Stops the controller, the agents and the emulator.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.sandbox.shutdown().await;
    }
}

/// Controller settings suited to the sandbox (no Lease, local metrics port).
pub fn sandbox_controller_config() -> ControllerConfig {
    ControllerConfig {
        namespace: "sofort-system".into(),
        lease_name: "sofort-controller".into(),
        identity: "sandbox".into(),
        lease_duration: Duration::from_secs(15),
        metrics_addr: "127.0.0.1:0".into(),
        max_evictions_in_flight: 5,
        eviction_retry: Duration::from_secs(1),
        leader_election: false,
        debounce: Duration::from_millis(20),
        watchdog: crate::metrics::DEFAULT_WATCHDOG,
        gate_interval: Duration::from_secs(1),
        clock: crate::core::clock::Clock::system(),
        status_page: None,
    }
}

/// The status page of `sofort sandbox`: on a free local port, re-rendered
/// every second.
pub fn sandbox_status_page() -> crate::controller::status_page::StatusPageConfig {
    crate::controller::status_page::StatusPageConfig {
        addr: "127.0.0.1:0".into(),
        branding: crate::notify::status_page::Branding::new(
            "Example Hosting",
            None,
            "#0b5fff",
            "en",
            "Europe/Zurich",
            5,
            None,
        )
        .unwrap_or_default(),
        refresh: Duration::from_secs(1),
        history: 5,
        bound: Default::default(),
    }
}

/// Where the kubeconfig goes: the path given, or else `kubeconfig` in a
/// directory of this run's own (it holds the admin token): created new with a
/// unique name and mode 0700, so two sandboxes never share or clobber one and
/// a planted symlink at a fixed path cannot redirect the write. The directory
/// is removed when the returned guard is dropped.
fn kubeconfig_path(
    given: Option<&std::path::Path>,
) -> Result<(PathBuf, Option<tempfile::TempDir>), SandboxRunError> {
    match given {
        Some(path) => Ok((path.to_path_buf(), None)),
        None => {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::Builder::new()
                .prefix("sofort-sandbox-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .map_err(|e| SandboxRunError::Kubeconfig(e.to_string()))?;
            Ok((dir.path().join("kubeconfig"), Some(dir)))
        }
    }
}

/// The live view's settings for the demo: a quick refresh and the demo
/// fleet's step durations (twenty times faster than a real one).
fn demo_view(url: &str, only: Option<String>, exit_when_settled: bool) -> ViewConfig {
    ViewConfig {
        title: format!("sofort sandbox {url}"),
        only,
        interval: Duration::from_millis(250),
        assumptions: Assumptions {
            drain: Duration::from_secs(2),
            reboot: Duration::from_secs(3),
            patch: Duration::from_secs(1),
        },
        exit_when_settled,
        watch: true,
    }
}

/// The policy's phase when it is Completed or Halted for its revision.
async fn final_phase(client: &Client, name: &str) -> Result<Option<Phase>, SandboxRunError> {
    let p = Api::<PatchPolicy>::all(client.clone()).get(name).await?;
    let status = p.status.unwrap_or_default();
    Ok(match status.phase {
        Some(ph @ (Phase::Completed | Phase::Halted))
            if status.revision.as_deref() == Some(p.spec.revision.as_str()) =>
        {
            Some(ph)
        }
        _ => None,
    })
}

/// Shows the rollout: full screen until `q` (or until done with
/// `--exit-when-done`), else plain lines until it completes or halts.
async fn show_rollout(
    cluster: &Cluster,
    args: &SandboxArgs,
    only: Option<String>,
) -> Result<(), SandboxRunError> {
    let url = cluster.sandbox.url();
    let tui = status::use_tui(args.plain);
    let cfg = demo_view(&url, only, !tui || args.exit_when_done);
    status::show(cluster.client.clone(), cfg, args.plain)
        .await
        .map_err(|e| SandboxRunError::View(e.to_string()))?;
    Ok(())
}

async fn run(args: SandboxArgs, log_file: Option<PathBuf>) -> Result<ExitCode, SandboxRunError> {
    let scenario = match &args.scenario {
        Some(p) => Scenario::from_file(p)?,
        None => {
            let mut s = Scenario::with_nodes(args.nodes.unwrap_or(12));
            // Reboots of 30-60 s and pod starts of 2-5 s, twenty times faster.
            s.speed = 20.0;
            s
        }
    };
    let (kubeconfig, _private_dir) = kubeconfig_path(args.kubeconfig.as_deref())?;
    let mut cluster = Cluster::start(scenario, args.port, kubeconfig).await?;
    println!(
        "sofort sandbox: a simulated cluster at {}",
        cluster.sandbox.url()
    );
    println!("  kubeconfig: {}", cluster.kubeconfig.display());
    println!(
        "  try:        kubectl --kubeconfig {} get nodes -L topology.kubernetes.io/zone -L sofort.dev/step",
        cluster.kubeconfig.display()
    );
    println!(
        "              kubectl --kubeconfig {} get patchpolicies",
        cluster.kubeconfig.display()
    );
    if let Some(p) = &log_file {
        println!("  logs:       {}", p.display());
    }
    let mut controller_cfg = sandbox_controller_config();
    let status = sandbox_status_page();
    let status_bound = status.bound.clone();
    controller_cfg.status_page = Some(status);
    cluster.spawn_controller(controller_cfg);
    if args.unattended {
        // Sandbox scale: the agents report a sentinel within a second.
        cluster.spawn_agents_checking_every(true, unattended::AGENT_CHECK)?;
    } else {
        cluster.spawn_agents(true)?;
    }
    // The listener binds as the controller starts: wait a moment for its port.
    for _ in 0..100 {
        if status_bound.get().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(addr) = status_bound.get() {
        println!("  status:     http://{addr}/status (also /status.json, /status.atom)");
    }

    if args.unattended {
        let code = unattended::demo(&cluster).await?;
        if args.exit_when_done {
            cluster.shutdown().await;
            return Ok(code);
        }
        return serve_until_ctrl_c(cluster).await;
    }
    let mut watched = Vec::new();
    let policy_name = if args.no_policy {
        println!("no policy applied: kubectl apply one (see examples/), Ctrl-C to stop");
        None
    } else {
        Some(apply_demo_policy(&cluster, args.urgent, &mut watched).await?)
    };
    let observer = Observer::start(cluster.client.clone(), watched).await;
    let outcome = match &policy_name {
        Some(name) => {
            show_rollout(&cluster, &args, Some(name.clone())).await?;
            final_phase(&cluster.client, name).await?
        }
        None => {
            if status::use_tui(args.plain) {
                show_rollout(&cluster, &args, None).await?;
            }
            None
        }
    };
    let obs = observer.stop();
    if let Some(phase) = outcome {
        if let Some(name) = &policy_name {
            let api: Api<PatchPolicy> = Api::all(cluster.client.clone());
            if let Ok(p) = api.get(name).await {
                for f in p.status.map(|s| s.failed).unwrap_or_default() {
                    println!("  failed: {}: {}", f.node, f.reason);
                }
            }
        }
        print_summary(phase, &obs);
    }
    if args.exit_when_done && outcome.is_some() {
        cluster.shutdown().await;
        // A broken safety rule fails the run, so scripts can rely on it.
        return Ok(if obs.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    serve_until_ctrl_c(cluster).await
}

/// Keeps the cluster up for kubectl until Ctrl-C.
async fn serve_until_ctrl_c(cluster: Cluster) -> Result<ExitCode, SandboxRunError> {
    println!("\nthe cluster keeps running for kubectl; Ctrl-C to stop");
    tokio::signal::ctrl_c()
        .await
        .map_err(SandboxRunError::Signal)?;
    cluster.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The demo's closing summary, from the independent observer's records.
fn print_summary(phase: impl std::fmt::Debug, obs: &observer::Observations) {
    let patched = obs.reboots.values().filter(|c| **c > 0).count();
    let makespan = obs
        .released
        .values()
        .max()
        .zip(obs.first_claim.values().min())
        .map(|(end, start)| end.saturating_sub(*start));
    println!("\nsummary");
    println!("  phase:                 {phase:?}");
    println!(
        "  nodes patched:         {patched} (rebooted once each: {})",
        obs.reboots.values().all(|c| *c == 1)
    );
    if let Some(m) = makespan {
        println!(
            "  makespan:              {:.1} s (first cordon to last uncordon)",
            m.as_secs_f64()
        );
    }
    println!(
        "  max unavailable seen:  {} (maxUnavailable 2)",
        obs.max_unavailable_seen
            .values()
            .max()
            .copied()
            .unwrap_or(0)
    );
    if obs.violations.is_empty() {
        println!("  safety rules:          held (independent observer, 0 violations)");
    } else {
        println!("  safety rules:          BROKEN");
        for v in &obs.violations {
            println!("    - {v}");
        }
    }
}

/// Applies the built-in demo policy (on the status page: the summary while it
/// runs, the advisory once done) and returns its name.
async fn apply_demo_policy(
    cluster: &Cluster,
    urgent: bool,
    watched: &mut Vec<WatchedPolicy>,
) -> Result<String, SandboxRunError> {
    let mut policy = demo_policy(urgent, jiff::Timestamp::now());
    // On the status page: summary while it runs, the advisory once done.
    policy.spec.notify = Some(crate::api::NotifySpec {
        status_page: true,
        public_title: Some("Web hosting".into()),
        advisory: Some(crate::api::Advisory {
            summary: "Security maintenance".into(),
            details: Some("CVE-2026-31337 fixed: local privilege escalation in the kernel".into()),
            release: Default::default(),
        }),
        ..Default::default()
    });
    let name = policy.name_any();
    watched.push(WatchedPolicy {
        name: name.clone(),
        selector: policy.spec.node_selector.clone(),
        max_unavailable: 2,
    });
    let api: Api<PatchPolicy> = Api::all(cluster.client.clone());
    api.create(&PostParams::default(), &policy).await?;
    println!(
        "applied PatchPolicy {name}{}: workers zone by zone, 2 at a time\n",
        if urgent {
            " (urgent: its maintenance window is closed, it starts anyway)"
        } else {
            ""
        }
    );
    Ok(name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::kubeconfig_path;

    #[test]
    fn two_sandboxes_get_private_kubeconfig_paths_of_their_own()
    -> Result<(), Box<dyn std::error::Error>> {
        let (a, guard_a) = kubeconfig_path(None)?;
        let (b, guard_b) = kubeconfig_path(None)?;
        assert_ne!(a, b, "two sandboxes must not share a kubeconfig path");
        for path in [&a, &b] {
            let dir = path.parent().ok_or("no parent directory")?;
            let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{} is readable by others", dir.display());
        }
        let dir_a = a.parent().ok_or("no parent directory")?.to_path_buf();
        drop((guard_a, guard_b));
        assert!(
            !dir_a.exists(),
            "the private directory outlived the sandbox"
        );
        let given = std::path::Path::new("chosen.kubeconfig");
        let (c, guard_c) = kubeconfig_path(Some(given))?;
        assert_eq!(c, given);
        assert!(guard_c.is_none());
        Ok(())
    }
}
