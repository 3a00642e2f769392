//! Command-line interface: one binary, one subcommand per job.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// sofort keeps a fleet of Kubernetes nodes patched: it cordons, drains, reboots
/// and uncordons the nodes selected by PatchPolicy objects, in order, inside
/// maintenance windows, or at once for urgent security fixes.
#[derive(Parser, Debug)]
#[command(name = "sofort", version, about, long_about = None)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SOFORT_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter (tracing env-filter syntax), for example `info` or `sofort=debug`.
    #[arg(long, global = true, default_value = "info", env = "SOFORT_LOG")]
    pub log: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the PatchPolicy CustomResourceDefinition as YAML.
    Crd,
    /// Check PatchPolicy files offline; exits non-zero with one line per problem.
    Validate(ValidateArgs),
    /// Forecast which node is patched when, from a policy and a list of nodes.
    Plan(PlanArgs),
    /// Show the rollouts live: progress per policy, nodes by step, why work
    /// waits, recent Events (full screen on a terminal; `q` quits).
    Status(StatusArgs),
    /// Pause a PatchPolicy: no new node starts; nodes in progress finish.
    Pause(PolicyNameArgs),
    /// Resume a paused PatchPolicy.
    Resume(PolicyNameArgs),
    /// What sofort will do with a node, and why it waits.
    Why(WhyArgs),
    /// Run the controller (in the cluster).
    Controller(ControllerArgs),
    /// Run the node agent (one per node, as a DaemonSet).
    Agent(AgentArgs),
    /// Run a simulated cluster on this machine where the real controller and
    /// agents patch nodes while you watch.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
}

/// `sofort validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Policy files (multi-document YAML); `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
}

/// Output format of `sofort plan`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// A table for people.
    #[default]
    Table,
    /// JSON for programs.
    Json,
    /// A timeline (SVG): one row per node, bars per step, windows shaded.
    Svg,
    /// The timeline and the table as one HTML page.
    Html,
}

/// `sofort plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Policy file (YAML). Either this or `--policy`.
    #[arg(short = 'f', long = "filename")]
    pub file: Option<PathBuf>,
    /// Name of a PatchPolicy in the cluster reached through the kubeconfig.
    #[arg(long)]
    pub policy: Option<String>,
    /// Nodes file: a `v1 List` of Node objects, as `kubectl get nodes -o yaml` prints.
    /// Without it, nodes are read from the cluster.
    #[arg(long)]
    pub nodes: Option<PathBuf>,
    /// Pods and PodDisruptionBudgets file (a `v1 List`, as
    /// `kubectl get pods,pdb -A -o yaml` prints) for the drainability
    /// pre-flight with `--nodes` (PDB arithmetic only). Without `--nodes` the
    /// pre-flight reads the cluster and adds dry-run evictions.
    #[arg(long)]
    pub pods: Option<PathBuf>,
    /// Start the forecast at this instant (RFC 3339); default now.
    #[arg(long)]
    pub now: Option<String>,
    /// Assumed time to drain one node.
    #[arg(long, default_value = "5m")]
    pub drain: String,
    /// Assumed time from reboot request to Ready with a new boot ID.
    #[arg(long, default_value = "4m")]
    pub reboot: String,
    /// Assumed time the patch command runs (when the policy has one).
    #[arg(long, default_value = "5m")]
    pub patch: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `sofort status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Show only this PatchPolicy.
    #[arg(long)]
    pub policy: Option<String>,
    /// Plain lines instead of the full-screen view (the default when stdout
    /// is not a terminal).
    #[arg(long)]
    pub plain: bool,
    /// With plain lines: keep printing on every change (default: print once).
    #[arg(long)]
    pub watch: bool,
    /// Time between reads of the cluster.
    #[arg(long, default_value = "2s")]
    pub interval: String,
    /// Assumed time to drain one node (for the forecast completion).
    #[arg(long, default_value = "5m")]
    pub drain: String,
    /// Assumed time from reboot request to Ready (for the forecast completion).
    #[arg(long, default_value = "4m")]
    pub reboot: String,
    /// Assumed time the patch command runs (for the forecast completion).
    #[arg(long, default_value = "5m")]
    pub patch: String,
    /// Logs go to standard error even under the full-screen view (default:
    /// a file, whose path is printed).
    #[arg(long)]
    pub log_to_stderr: bool,
}

/// `sofort pause` and `sofort resume`.
#[derive(Args, Debug, Clone)]
pub struct PolicyNameArgs {
    /// Name of the PatchPolicy.
    pub name: String,
}

/// `sofort why`.
#[derive(Args, Debug, Clone)]
pub struct WhyArgs {
    /// Name of the Node.
    pub node: String,
}

/// `sofort controller`.
#[derive(Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Namespace holding the leader-election Lease.
    #[arg(long, env = "SOFORT_NAMESPACE", default_value = "sofort-system")]
    pub namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "SOFORT_LEASE_NAME", default_value = "sofort-controller")]
    pub lease_name: String,
    /// Identity of this replica in the Lease (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration.
    #[arg(long, default_value = "15s")]
    pub lease_duration: String,
    /// Address of the metrics and health endpoints.
    #[arg(long, env = "SOFORT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Most evictions in flight per draining node.
    #[arg(long, default_value_t = 5)]
    pub max_evictions_in_flight: u16,
    /// Interval between eviction retries blocked by a PodDisruptionBudget (jittered).
    #[arg(long, default_value = "5s")]
    pub eviction_retry: String,
    /// Disable leader election (single replica, tests).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Delay between a change in the cluster and the decision it triggers
    /// (coalesces bursts of watch events).
    #[arg(long, default_value = "10ms")]
    pub debounce: String,
    /// `/healthz` fails (so the liveness probe restarts the controller) when
    /// the decision loop has not come round for this long: a pass that hangs.
    #[arg(long, env = "SOFORT_WATCHDOG_TIMEOUT", default_value = "5m")]
    pub watchdog_timeout: String,
    /// Health gates: each gate is checked at most once per this interval (its
    /// answer is reused meanwhile); an answer older than three intervals
    /// closes the gate.
    #[arg(long, default_value = "30s")]
    pub gate_interval: String,
    /// Testing and demos only: the controller's clock starts at this instant (RFC 3339).
    #[arg(long, hide = true, env = "SOFORT_CLOCK_START")]
    pub clock_start: Option<String>,
    /// The public status page.
    #[command(flatten)]
    pub status: Box<StatusPageArgs>,
}

/// The public status page of `sofort controller` (off unless `--status-addr`).
#[derive(Args, Debug, Clone)]
pub struct StatusPageArgs {
    /// Address of the public status page (`/status`, `/status.json`,
    /// `/status.atom`); off when not set. Serve it through its own Service,
    /// apart from the metrics port.
    #[arg(long, env = "SOFORT_STATUS_ADDR")]
    pub status_addr: Option<String>,
    /// Company name shown on the page.
    #[arg(long, env = "SOFORT_STATUS_COMPANY", default_value = "Service status")]
    pub status_company: String,
    /// Logo: an https:// URL or a path on the page's host.
    #[arg(long, env = "SOFORT_STATUS_LOGO_URL")]
    pub status_logo_url: Option<String>,
    /// Accent colour, `#rrggbb`.
    #[arg(long, env = "SOFORT_STATUS_ACCENT", default_value = "#0b5fff")]
    pub status_accent: String,
    /// Language of the page: `en` or `de`.
    #[arg(long, env = "SOFORT_STATUS_LANGUAGE", default_value = "en")]
    pub status_language: String,
    /// Time zone the page shows times in (IANA name).
    #[arg(long, env = "SOFORT_STATUS_TIME_ZONE", default_value = "UTC")]
    pub status_time_zone: String,
    /// Completed rollouts listed, 0 to 50.
    #[arg(long, env = "SOFORT_STATUS_HISTORY", default_value_t = 10)]
    pub status_history: usize,
    /// Public URL of the page, for the links and the id of the Atom feed.
    #[arg(long, env = "SOFORT_STATUS_BASE_URL")]
    pub status_base_url: Option<String>,
    /// How often the page is rendered from the cache (also its `max-age`).
    #[arg(long, env = "SOFORT_STATUS_REFRESH", default_value = "15s")]
    pub status_refresh: String,
}

/// Reboot method of the agent.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RebootMethod {
    /// Send SIGRTMIN+5 to PID 1 (systemd's reboot request). Needs hostPID and CAP_KILL.
    #[default]
    Signal,
    /// Run a command in the host's namespaces (default `systemctl reboot`). Needs a privileged container.
    Command,
}

/// `sofort agent`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Name of the node this agent runs on (downward API `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Sentinel file whose presence means the host needs a reboot.
    #[arg(long, default_value = "/var/run/reboot-required")]
    pub sentinel_file: PathBuf,
    /// Sentinel command run in the host's mount namespace instead of the file:
    /// exit 0 means reboot required, exit 1 means not; anything else is an error.
    #[arg(long, num_args = 1.., value_delimiter = ' ')]
    pub sentinel_command: Option<Vec<String>>,
    /// How often the sentinel is checked (jittered by up to 10%).
    #[arg(long, default_value = "5m")]
    pub check_interval: String,
    /// How the host is rebooted.
    #[arg(long, value_enum, default_value_t = RebootMethod::Signal)]
    pub reboot_method: RebootMethod,
    /// Reboot command for `--reboot-method command`.
    #[arg(long, num_args = 1.., value_delimiter = ' ', default_value = "systemctl reboot")]
    pub reboot_command: Vec<String>,
    /// Allow running the policy's host patch command on this node.
    #[arg(long, env = "SOFORT_ALLOW_HOST_COMMANDS")]
    pub allow_host_commands: bool,
    /// Address of the metrics and health endpoints.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub metrics_addr: String,
}

/// `sofort sandbox`.
#[cfg(feature = "sandbox")]
#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Scenario file (YAML) describing nodes, workloads and timings.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Number of simulated nodes (default scenario).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Port of the API emulator on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Run the built-in example policy as urgent (starts at once).
    #[arg(long)]
    pub urgent: bool,
    /// Do not apply the built-in policy; wait for `kubectl apply`.
    #[arg(long)]
    pub no_policy: bool,
    /// Unattended patching: apply a standing policy (`trigger:
    /// RebootRequired`) and show two rounds of the nodes that need a reboot,
    /// as plain lines.
    #[arg(long, conflicts_with_all = ["urgent", "no_policy"])]
    pub unattended: bool,
    /// Where to write the kubeconfig.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Exit after the built-in rollout finished instead of serving on.
    #[arg(long)]
    pub exit_when_done: bool,
    /// Plain lines instead of the full-screen view (the default when stdout
    /// is not a terminal).
    #[arg(long)]
    pub plain: bool,
    /// Logs go to standard error (default: a file, whose path is printed).
    #[arg(long)]
    pub log_to_stderr: bool,
}
