//! Kubernetes API emulator and simulated fleet for sofort's tests, demo and
//! benchmarks.
//!
//! [`Sandbox::start`] serves a Kubernetes API over plain HTTP on 127.0.0.1 with
//! the real wire format (discovery, OpenAPI v3, list/watch, selectors, patch
//! types, server-side apply, status subresources, finalizers, eviction with
//! PodDisruptionBudgets, CRDs) and runs a simulated fleet: kubelets that report
//! Ready and a bootID, reboots, a scheduler, workload controllers and the
//! disruption controller. `kubectl` and `kube::Client` use it unchanged
//! through the kubeconfig it writes.
//!
//! Where it deliberately differs from the real API server is listed in the
//! crate's README ("Differences from a real API server").

mod admission;
mod api;
mod auth;
mod cel;
mod crd;
mod defaults;
mod error;
mod eviction;
mod faults;
mod fleet;
mod host;
mod openapi;
mod patch;
mod protobuf;
mod rbac;
mod registry;
mod scale;
mod scenario;
mod schema;
mod selector;
mod store;
mod table;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, watch};

pub use error::{ApiError, SandboxError};
pub use faults::{FaultEffect, FaultRule, Faults, FleetPasses, RequestRecord, Stats};
pub use fleet::{NEEDS_REBOOT_ANNOTATION, UNHEALTHY_ANNOTATION};
pub use host::{PatchBehaviour, PatchOutcome, SimHost, SimHostError};
pub use scenario::{
    DurationRange, NodeGroup, PdbSpec, Scenario, SimDuration, Timing, Workload, parse_duration,
};

/// How to start a sandbox.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// When set, every request needs `Authorization: Bearer <token>`; the
    /// kubeconfig carries it (user "admin").
    pub token: Option<String>,
    /// Further accepted tokens and the user each stands for.
    pub extra_tokens: Vec<(String, String)>,
    /// Changes kept for watch resumption; older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// How often watches with allowWatchBookmarks get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Seed of fault injection.
    pub seed: u64,
    /// Run the controller-manager-like controllers (workloads, garbage
    /// collection, disruption budgets) and the kubelets.
    pub controllers: bool,
    /// The simulated fleet.
    pub scenario: Scenario,
    /// Requests kept in the request log.
    pub request_log_limit: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            port: 0,
            token: None,
            extra_tokens: vec![],
            watch_history: 100_000,
            bookmark_interval: Duration::from_secs(5),
            seed: 0,
            controllers: true,
            scenario: Scenario::empty(),
            request_log_limit: 100_000,
        }
    }
}

impl SandboxConfig {
    pub fn with_scenario(scenario: Scenario) -> Self {
        SandboxConfig {
            scenario,
            ..Default::default()
        }
    }
}

/// A running sandbox. Dropping it does not stop the server; call
/// [`Sandbox::shutdown`].
pub struct Sandbox {
    addr: SocketAddr,
    token: Option<String>,
    shared: api::SharedRef,
    hosts: fleet::Hosts,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Sandbox {
    /// Start serving on 127.0.0.1 and seed the scenario's fleet.
    pub async fn start(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        config.scenario.check()?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .map_err(|source| SandboxError::Bind {
                port: config.port,
                source,
            })?;
        let addr = listener.local_addr()?;
        let tokens = auth::Tokens::new(config.token.as_deref(), &config.extra_tokens);
        let shared = Arc::new(api::Shared {
            store: Arc::new(store::Store::new(config.watch_history)),
            registry: Arc::new(registry::Registry::new()),
            faults: Faults::new(config.seed),
            stats: Stats::new(config.request_log_limit),
            tokens,
            bookmark_interval: config.bookmark_interval,
            addr: addr.to_string(),
        });
        let (stop, stop_rx) = watch::channel(false);
        // Namespaces every cluster has.
        let ns_info = shared
            .registry
            .lookup("", "v1", "namespaces")
            .ok_or_else(|| SandboxError::Scenario("namespaces are not served".into()))?;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            api::create_object(
                &shared,
                &ns_info,
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                &api::WriteOpts::default(),
                false,
            )?;
        }
        // The default RBAC roles and bindings of every cluster.
        for obj in rbac::bootstrap_objects() {
            create_stored(&shared, obj)?;
        }
        let hosts: fleet::Hosts = Arc::new(Mutex::new(HashMap::new()));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let mut fl = fleet::Fleet::new(
            shared.clone(),
            &config.scenario,
            hosts.clone(),
            config.controllers,
        );
        fl.seed(&config.scenario, &cmd_tx);
        // Keep a sender alive so the fleet loop runs until shutdown.
        let keep = cmd_tx.clone();
        let mut tasks = vec![];
        if config.controllers || !config.scenario.nodes.is_empty() {
            let s = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let _keep = keep;
                fleet::run(fl, cmd_rx, s).await
            }));
        }
        let app = api::router(shared.clone());
        let mut s = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = s.wait_for(|v| *v).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "sandbox API server stopped");
            }
        }));
        tracing::info!(%addr, "sandbox API server listening");
        Ok(Sandbox {
            addr,
            token: config.token,
            shared,
            hosts,
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The kubeconfig YAML for this sandbox.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml_for(self.token.as_deref())
    }

    /// A kubeconfig that authenticates with `token`, one of
    /// [`SandboxConfig::extra_tokens`], so the request log names its user.
    pub fn kubeconfig_yaml_for(&self, token: Option<&str>) -> String {
        let user = match token {
            Some(t) => format!("    token: {t}\n"),
            None => "    {}\n".replace("    {}", "    username: admin"),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sofort-sandbox\n  cluster:\n    server: {}\ncontexts:\n- name: sofort-sandbox\n  context:\n    cluster: sofort-sandbox\n    user: sofort-sandbox\n    namespace: default\ncurrent-context: sofort-sandbox\nusers:\n- name: sofort-sandbox\n  user:\n{user}",
            self.url()
        )
    }

    /// A bearer token for the ServiceAccount `namespace/name` (the object need
    /// not exist): requests with it are `system:serviceaccount:NS:NAME` in the
    /// groups `system:serviceaccounts`, `system:serviceaccounts:NS` and
    /// `system:authenticated`, subject to RBAC and admission policies. With
    /// `node`, the token carries the node as a kubelet-issued pod token does
    /// (`authentication.kubernetes.io/node-name` in the user's extra).
    pub fn mint_token(&self, namespace: &str, name: &str, node: Option<&str>) -> String {
        self.shared.tokens.mint(namespace, name, node)
    }

    /// Store objects (any served kind, as `kubectl create` would, but without
    /// authorization or admission): RBAC roles, admission policies, fixtures.
    /// An object that exists already is replaced.
    pub fn create_objects(&self, objects: &[serde_json::Value]) -> Result<(), SandboxError> {
        for obj in objects {
            create_stored(&self.shared, obj.clone())?;
        }
        Ok(())
    }

    /// Write a kubeconfig that kubectl and kube-rs use unchanged.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), SandboxError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| SandboxError::WriteKubeconfig {
                path: path.display().to_string(),
                source,
            })?;
        }
        // It holds the admin token: readable by its owner only.
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(self.kubeconfig_yaml().as_bytes()))
            .map_err(|source| SandboxError::WriteKubeconfig {
                path: path.display().to_string(),
                source,
            })
    }

    /// The simulated host of a node.
    pub fn host(&self, node: &str) -> Result<SimHost, SandboxError> {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
            .ok_or_else(|| SandboxError::NoSuchNode(node.to_string()))
    }

    /// Names of the simulated nodes.
    pub fn node_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats.clone()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.rv()
    }

    /// Forget the watch history: watches from any older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// Number of stored objects of a resource (`pods`, `deployments.apps`, ...).
    pub fn object_count(&self, group_resource: &str) -> usize {
        self.shared.store.count(group_resource)
    }

    /// Stop serving and end the simulation.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.shared.faults.drop_watches();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Create (or replace) one object through the API's write path.
fn create_stored(shared: &api::Shared, obj: serde_json::Value) -> Result<(), SandboxError> {
    let kind = obj["kind"].as_str().unwrap_or("");
    let info = shared
        .registry
        .by_kind(obj["apiVersion"].as_str().unwrap_or(""), kind)
        .ok_or_else(|| {
            SandboxError::Scenario(format!(
                "the sandbox does not serve {kind} ({})",
                obj["apiVersion"].as_str().unwrap_or("")
            ))
        })?;
    let ns = if info.namespaced {
        obj["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if shared.store.get(&info.gr(), &ns, &name).is_none() {
        api::create_object(shared, &info, &ns, obj, &api::WriteOpts::default(), false)?;
        return Ok(());
    }
    let mut obj = obj;
    if info.namespaced {
        obj["metadata"]["namespace"] = serde_json::json!(ns);
    }
    shared.store.mutate(&info.gr(), &ns, &name, |cur| {
        let mut warnings = Vec::new();
        let change = api::finish_write(
            &info,
            cur.map(|c| &**c),
            obj,
            &api::WriteOpts::default(),
            &mut warnings,
        )?;
        Ok((change, ()))
    })?;
    Ok(())
}
