//! `sofort agent`: the node agent (one per node, as a DaemonSet).
//!
//! It is the only part of sofort that touches a host. It watches its own Node
//! (one watch, no polling) and
//! - reports whether the host needs a reboot as the label
//!   `sofort.dev/reboot-required`, written only when it changes (checked
//!   every interval, and at once when the host's boot ID changes under a
//!   running agent);
//! - runs the policy's host patch command once per (policy, revision) when the
//!   controller sets step `Patching`, if host commands are allowed — the
//!   command read from the PatchPolicy, never from the Node;
//! - acts on a request only after checking it against the PatchPolicy it
//!   names (see [`core`]);
//! - reboots the host exactly once per request when the controller sets step
//!   `Rebooting` on a cordoned node whose boot ID still matches the request.
//!
//! [`core`] decides (pure, exhaustively tested); [`shell`] carries decisions
//! out through a [`host::Host`] and a [`shell::NodeWriter`]. Embedders (the
//! sandbox) call [`run_agent`] with their own `Host`.
//!
//! ## Privileges per method
//! - always: RBAC `list`, `watch`, `patch` on `nodes`; `get` on
//!   `patchpolicies` (one read per request, to verify it); `create`, `patch`
//!   on `events.k8s.io` events in namespace `default` (where Events about
//!   cluster-scoped Nodes live); read access to the sentinel file (sofort's own
//!   host directory mounted read-only, never the host's `/run`) and to
//!   `/proc/sys/kernel/random/boot_id`.
//! - reboot method `signal` (default): `hostPID: true` and capability `CAP_KILL`
//!   (signals PID 1 of the host); no privileged container.
//! - reboot method `command`, a sentinel command, or `--allow-host-commands`:
//!   `hostPID: true` and a privileged container (nsenter into PID 1's mount,
//!   UTS, IPC, network and PID namespaces needs `CAP_SYS_ADMIN`, `CAP_SYS_PTRACE`
//!   and more), and `nsenter` in the image.

pub mod core;
pub mod host;
pub mod metrics;
pub mod shell;
mod trim;

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{error, info};

use crate::cli::{AgentArgs, RebootMethod};
use host::{Host, LinuxHost, RebootVia, Sentinel};
use metrics::AgentMetrics;
pub use shell::{
    AgentConfig, KubeNodeWriter, KubePolicyReader, NodeWriter, PolicyReader, run_loop,
};

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A flag has an unusable value.
    #[error("invalid --{flag}: {message}")]
    Flag {
        /// Flag name.
        flag: &'static str,
        /// What is wrong and what to give instead.
        message: String,
    },
    /// No Kubernetes client could be built.
    #[error(
        "cannot reach the Kubernetes API: {0}; in a pod, check the service account token mount"
    )]
    Client(#[source] kube::Error),
    /// The metrics address could not be bound.
    #[error(
        "cannot listen on {addr} for /healthz and /metrics: {source}; pick a free --metrics-addr"
    )]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The tokio runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The agent loop stopped.
    #[error(transparent)]
    Loop(#[from] shell::LoopError),
}

/// Settings parsed from the command line.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Shell settings.
    pub config: AgentConfig,
    /// The Linux host.
    pub host: LinuxHost,
    /// AgentMetrics and health address.
    pub metrics_addr: SocketAddr,
}

/// Checks the flags of `sofort agent`.
pub fn parse_args(args: &AgentArgs) -> Result<Parsed, AgentError> {
    if args.node_name.trim().is_empty() {
        return Err(AgentError::Flag {
            flag: "node-name",
            message: "empty; set it from the downward API (spec.nodeName) as NODE_NAME".into(),
        });
    }
    let check_interval =
        crate::core::duration::parse(&args.check_interval).map_err(|e| AgentError::Flag {
            flag: "check-interval",
            message: e.to_string(),
        })?;
    if check_interval.is_zero() {
        return Err(AgentError::Flag {
            flag: "check-interval",
            message: "must be more than 0, for example 5m".into(),
        });
    }
    let sentinel = match &args.sentinel_command {
        Some(cmd) if !cmd.is_empty() => Sentinel::Command(cmd.clone()),
        _ => Sentinel::File(args.sentinel_file.clone()),
    };
    let reboot_via = match args.reboot_method {
        RebootMethod::Signal => RebootVia::Signal,
        RebootMethod::Command if args.reboot_command.is_empty() => {
            return Err(AgentError::Flag {
                flag: "reboot-command",
                message: "empty; give a command such as `systemctl reboot`".into(),
            });
        }
        RebootMethod::Command => RebootVia::Command(args.reboot_command.clone()),
    };
    let metrics_addr = args.metrics_addr.parse().map_err(|e| AgentError::Flag {
        flag: "metrics-addr",
        message: format!("{e}; use host:port such as 0.0.0.0:8081"),
    })?;
    Ok(Parsed {
        config: AgentConfig::new(&args.node_name, check_interval, args.allow_host_commands),
        host: LinuxHost::new(sentinel, reboot_via),
        metrics_addr,
    })
}

/// Runs the agent for `config.node_name` against a cluster until `shutdown`
/// completes: one watch on the Node, writes to its own labels and annotations,
/// Events about it. AgentMetrics are recorded into `metrics` (serve them with
/// [`metrics::serve`] if wanted).
pub async fn run_agent(
    client: kube::Client,
    config: AgentConfig,
    host: Arc<dyn Host>,
    metrics: Arc<AgentMetrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let watch_cfg =
        watcher::Config::default().fields(&format!("metadata.name={}", config.node_name));
    let stream = watcher(nodes, watch_cfg)
        .default_backoff()
        .applied_objects()
        .boxed();
    let writer: Arc<dyn NodeWriter> =
        Arc::new(KubeNodeWriter::new(client.clone(), &config.node_name));
    let policies: Arc<dyn PolicyReader> = Arc::new(KubePolicyReader::new(client));
    run_loop(config, host, writer, policies, metrics, stream, shutdown).await?;
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn termination() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = ctrl_c => {}
            }
        }
        Err(_) => ctrl_c.await,
    }
}

/// How long after start the agent releases its start-up program pages (see
/// [`trim`]): its first list of its Node is done by then.
const STARTUP_PAGES_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

async fn run(parsed: Parsed) -> Result<(), AgentError> {
    let client = kube::Client::try_default()
        .await
        .map_err(AgentError::Client)?;
    let metrics = Arc::new(AgentMetrics::new());
    let listener = tokio::net::TcpListener::bind(parsed.metrics_addr)
        .await
        .map_err(|source| AgentError::Bind {
            addr: parsed.metrics_addr.to_string(),
            source,
        })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(metrics::serve(listener, metrics.clone(), {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }));
    let host: Arc<dyn Host> = Arc::new(parsed.host);
    // Once start-up is over, its program pages go back to the kernel.
    let trim = tokio::spawn(async {
        tokio::time::sleep(STARTUP_PAGES_AFTER).await;
        let bytes = trim::release_startup_pages();
        tracing::debug!(bytes, "start-up program pages released");
    });
    let result = run_agent(client, parsed.config, host, metrics, termination()).await;
    trim.abort();
    let _ = stop_tx.send(true);
    match server.await {
        Ok(Err(e)) => error!(error = %e, "metrics server failed"),
        Err(e) => error!(error = %e, "metrics server task failed"),
        Ok(Ok(())) => {}
    }
    result
}

/// `sofort agent`: runs on a single-threaded runtime (the agent is idle nearly
/// always; one thread keeps its memory and CPU footprint small).
pub fn run_cli(args: &AgentArgs) -> ExitCode {
    let parsed = match parse_args(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", AgentError::Runtime(e));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(parsed)) {
        Ok(()) => {
            info!("agent stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(error = %e, "agent failed");
            ExitCode::FAILURE
        }
    }
}
