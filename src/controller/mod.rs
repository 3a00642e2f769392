//! `sofort controller`: turns PatchPolicies into patched, rebooted, uncordoned nodes.
//!
//! The controller is an imperative shell around the pure [`crate::core::rollout::decide`]:
//!
//! * **Watching**: one reflector of PatchPolicies and one of Nodes (with
//!   `status.images` and managed fields stripped to keep memory per node small),
//!   each driven by a task of its own ([`watch_pump`]) so the stores keep up
//!   while a pass runs.
//!   Pods are never cached: a drain lists and watches the pods of its one node.
//! * **Deciding**: one loop wakes on any change of either store, on a drain
//!   worker's progress, on a leader change, or when the earliest `requeue_after`
//!   of the last decisions is due. It then decides for every policy, urgent
//!   policies first, each seeing the claims the previous ones just wrote. One
//!   loop (rather than a reconciler per policy) keeps claims across policies
//!   ordered and free of races: there is a single writer in the process, and
//!   claims carry the Node's `resourceVersion`, so a stale view loses with a 409.
//! * **Acting**: [`reconciler`] runs each pass: the decision ([`plan`]: decide's
//!   actions, or a deleted policy's give-backs), then [`apply`] writes the node
//!   record before each side effect, then the status through the status
//!   subresource only, and Events. The patches and Event texts are built by
//!   pure functions ([`patches`], [`events`], [`status`]); every write goes
//!   through the [`writes::Writes`] trait ([`kube_writes`] against the API
//!   server, a recording fake in the reconcile tests).
//! * **HA**: every replica watches; only the holder of the Lease decides and
//!   writes.

mod apply;
pub mod drain;
mod drain_workers;
mod events;
mod gate_upkeep;
pub mod gates;
mod kube_writes;
mod node_writes;
mod notifications;
mod patches;
mod plan;
mod reconciler;
mod status;
pub mod status_page;
mod taints;
#[cfg(test)]
mod tests;
mod watch_pump;
mod writes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};

use crate::api::PatchPolicy;
use crate::cli::ControllerArgs;
use crate::core::clock::Clock;
use crate::core::{duration, rollout};
use crate::metrics::{ControllerMetrics, Health};

pub use patches::FINALIZER;

/// Settings of a controller process.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Lease name.
    pub lease_name: String,
    /// This replica's identity.
    pub identity: String,
    /// Lease duration.
    pub lease_duration: Duration,
    /// Metrics/health address.
    pub metrics_addr: String,
    /// Evictions in flight per node.
    pub max_evictions_in_flight: usize,
    /// Base eviction retry interval.
    pub eviction_retry: Duration,
    /// Use a Lease; off means this process always leads.
    pub leader_election: bool,
    /// Coalescing delay after a change.
    pub debounce: Duration,
    /// `/healthz` fails when the decision loop has not come round for this long.
    pub watchdog: Duration,
    /// Health gates: at most one check per gate per this interval.
    pub gate_interval: Duration,
    /// The clock.
    pub clock: Clock,
    /// The public status listener, when `--status-addr` is set.
    pub status_page: Option<status_page::StatusPageConfig>,
}

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A flag has a bad value.
    #[error("invalid value for --{flag}: {message}")]
    Flag {
        /// Flag name.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No usable kubeconfig or in-cluster config.
    #[error("cannot configure the Kubernetes client: {0}; run inside a cluster or set KUBECONFIG")]
    Config(String),
    /// The client could not be built.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The metrics server could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::ServeError),
    /// Leader election could not start.
    #[error("leader election failed: {0}; check RBAC for leases in the controller's namespace")]
    Lease(String),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl ControllerConfig {
    /// Settings from the command line.
    pub fn from_args(args: &ControllerArgs) -> Result<Self, ControllerError> {
        let dur = |flag: &'static str, v: &str| {
            duration::parse(v).map_err(|e| ControllerError::Flag {
                flag,
                message: e.to_string(),
            })
        };
        let clock = match &args.clock_start {
            None => Clock::system(),
            Some(s) => Clock::starting_at(s.parse().map_err(|e| ControllerError::Flag {
                flag: "clock-start",
                message: format!("{s:?} is not an RFC 3339 instant: {e}"),
            })?),
        };
        let identity = args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("sofort-{}", std::process::id()));
        Ok(ControllerConfig {
            namespace: args.namespace.clone(),
            lease_name: args.lease_name.clone(),
            identity,
            lease_duration: dur("lease-duration", &args.lease_duration)?,
            metrics_addr: args.metrics_addr.clone(),
            max_evictions_in_flight: usize::from(args.max_evictions_in_flight.max(1)),
            eviction_retry: dur("eviction-retry", &args.eviction_retry)?,
            leader_election: !args.no_leader_election,
            debounce: dur("debounce", &args.debounce)?,
            watchdog: {
                let w = dur("watchdog-timeout", &args.watchdog_timeout)?;
                if w < Duration::from_secs(1) {
                    return Err(ControllerError::Flag {
                        flag: "watchdog-timeout",
                        message: format!(
                            "{} is too short; use 1s or more (default 5m)",
                            args.watchdog_timeout
                        ),
                    });
                }
                w
            },
            gate_interval: dur("gate-interval", &args.gate_interval)?
                .max(Duration::from_millis(100)),
            clock,
            status_page: status_page_config(&args.status)?,
        })
    }
}

/// The status listener's settings from its flags; `None` without `--status-addr`.
fn status_page_config(
    a: &crate::cli::StatusPageArgs,
) -> Result<Option<status_page::StatusPageConfig>, ControllerError> {
    let Some(addr) = a.status_addr.clone().filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let branding = crate::notify::status_page::Branding::new(
        &a.status_company,
        a.status_logo_url.as_deref(),
        &a.status_accent,
        &a.status_language,
        &a.status_time_zone,
        a.status_history,
        a.status_base_url.as_deref(),
    )
    .map_err(|e| ControllerError::Flag {
        flag: "status-*",
        message: e.to_string(),
    })?;
    let refresh = duration::parse(&a.status_refresh).map_err(|e| ControllerError::Flag {
        flag: "status-refresh",
        message: e.to_string(),
    })?;
    if refresh < Duration::from_secs(1) || refresh > Duration::from_secs(600) {
        return Err(ControllerError::Flag {
            flag: "status-refresh",
            message: format!("{} is out of range; use 1s to 10m", a.status_refresh),
        });
    }
    Ok(Some(status_page::StatusPageConfig {
        addr,
        branding,
        refresh,
        history: a.status_history,
        bound: Default::default(),
    }))
}

/// Entry point of `sofort controller`: runs until SIGTERM or Ctrl-C.
pub fn main(args: &ControllerArgs) -> Result<(), ControllerError> {
    let cfg = ControllerConfig::from_args(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ControllerError::Runtime)?;
    rt.block_on(async move {
        let kube_cfg = kube::Config::infer()
            .await
            .map_err(|e| ControllerError::Config(e.to_string()))?;
        run(kube_cfg, cfg, shutdown_signal()).await
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Drops what the controller never reads, so the node cache stays small.
fn slim_node(node: &mut Node) {
    node.managed_fields_mut().clear();
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
    }
}

/// Runs the controller with a client configuration until `shutdown` resolves.
pub async fn run(
    kube_cfg: kube::Config,
    cfg: ControllerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let client = Client::try_from(kube_cfg.clone()).map_err(ControllerError::Client)?;
    // Evictions get a client without the default retry: a 429 from a
    // PodDisruptionBudget must come back to the drain loop at once.
    let mut evict_cfg = kube_cfg;
    evict_cfg.default_retry = false;
    let evict_client = Client::try_from(evict_cfg).map_err(ControllerError::Client)?;

    let notify_metrics = crate::notify::NotifyMetrics::new();
    let metrics = ControllerMetrics::new_with(|r| notify_metrics.register_prefixed(r));
    let health = Health::with_watchdog(cfg.watchdog);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop_metrics = stop_rx.clone();
    let (addr, metrics_task) = crate::metrics::serve(
        &cfg.metrics_addr,
        metrics.clone(),
        health.clone(),
        async move {
            let _ = stop_metrics.wait_for(|s| *s).await;
        },
    )
    .await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");

    // Leadership.
    let (leader_rx, lease_task) = if cfg.leader_election {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
            .with_namespace(&cfg.namespace)
            .with_identity(&cfg.identity)
            .with_duration(cfg.lease_duration.as_secs().max(2))
            .with_grace((cfg.lease_duration.as_secs() / 3).max(1))
            .with_field_manager("sofort-controller")
            .build()
            .await
            .map_err(|e| ControllerError::Lease(e.to_string()))?;
        let (rx, task) = manager.watch().await;
        (rx, Some(task))
    } else {
        let (tx, rx) = watch::channel(true);
        // Keep the sender alive for the life of the process.
        std::mem::forget(tx);
        (rx, None)
    };

    // Caches. Policies are cached as raw objects and decoded one by one, so
    // one object the types cannot hold (the API server may accept what they
    // cannot) never fails the whole list: it is reported on its own status.
    let resource = ApiResource::erase::<PatchPolicy>(&());
    let policies: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let nodes: Api<Node> = Api::all(client.clone());
    let policy_writer = reflector::store::Writer::<DynamicObject>::new(resource);
    let policy_store = policy_writer.as_reader();
    let (node_store, node_writer) = reflector::store::<Node>();
    let policy_events = watcher(policies, watcher::Config::default())
        .default_backoff()
        .reflect(policy_writer)
        .boxed();
    let node_events = watcher(nodes, watcher::Config::default())
        .default_backoff()
        .modify(slim_node)
        .reflect(node_writer)
        .boxed();

    let status_task = match cfg.status_page.clone() {
        Some(sp) => {
            let (addr, task) = status_page::spawn(
                sp,
                policy_store.clone(),
                node_store.clone(),
                cfg.clock,
                stop_rx.clone(),
            )
            .await?;
            tracing::info!(%addr, "serving the public status page at /status, /status.json and /status.atom");
            Some(task)
        }
        None => None,
    };

    let (kick_tx, kick_rx) = mpsc::unbounded_channel::<()>();
    let shell = reconciler::Reconciler::new(
        client.clone(),
        evict_client,
        cfg.clone(),
        metrics.clone(),
        kick_tx.clone(),
        notify_metrics,
    );
    let looped = main_loop(
        shell,
        LoopInputs {
            policy_store,
            node_store,
            pumps: watch_pump::Pumps::start(policy_events, node_events),
            kick_rx,
            leader_rx,
            health: health.clone(),
            metrics: metrics.clone(),
            debounce: cfg.debounce,
        },
        shutdown,
    )
    .await;

    stop_tx.send_replace(true);
    if let Some(task) = lease_task {
        task.abort();
    }
    let _ = metrics_task.await;
    if let Some(t) = status_task {
        let _ = t.await;
    }
    looped
}

struct LoopInputs {
    policy_store: Store<DynamicObject>,
    node_store: Store<Node>,
    /// The watch streams feeding the two stores, driven in tasks of their own.
    pumps: watch_pump::Pumps,
    kick_rx: mpsc::UnboundedReceiver<()>,
    leader_rx: watch::Receiver<bool>,
    health: Health,
    metrics: ControllerMetrics,
    debounce: Duration,
}

async fn main_loop(
    mut shell: reconciler::Reconciler,
    mut inp: LoopInputs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let mut shutdown = Box::pin(shutdown);
    let mut decoder = PolicyDecoder::default();
    let mut known_policies: std::collections::BTreeSet<String> = Default::default();
    // Idle rounds come at least this often, so a live loop keeps the watchdog fed.
    let idle = (inp.health.watchdog() / 4).max(Duration::from_millis(250));
    let mut next_wake: Option<tokio::time::Instant> = None;
    let mut was_leader = false;
    loop {
        // Every round of this loop ends (a decision pass, or an idle wake-up):
        // a pass that hangs stops the beats and `/healthz` fails.
        inp.health.beat();
        let idle_until = tokio::time::Instant::now() + idle;
        let sleep_until = next_wake.map_or(idle_until, |w| w.min(idle_until));
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down; nodes in progress resume from their records on the next leader");
                shell.stop_drains();
                return Ok(());
            }
            changed = inp.pumps.changed() => {
                if changed.is_none() {
                    return Ok(());
                }
            }
            k = inp.kick_rx.recv() => {
                if k.is_none() {
                    return Ok(());
                }
            }
            changed = inp.leader_rx.changed() => {
                if changed.is_err() {
                    tracing::error!("leader election stopped; exiting so that another replica takes over");
                    shell.stop_drains();
                    return Err(ControllerError::Lease("the lease manager ended".into()));
                }
            }
            _ = tokio::time::sleep_until(sleep_until) => {
                if next_wake.is_some_and(|w| w <= tokio::time::Instant::now()) {
                    next_wake = None;
                } else {
                    // An idle wake-up only feeds the watchdog.
                    continue;
                }
            }
            // Customer notifications: store each delivery result (leader only).
            Some(report) = shell.next_report() => {
                if *inp.leader_rx.borrow() {
                    shell.notification_report(report).await;
                }
                continue;
            }
        }
        let ready = inp.pumps.ready();
        if !leading(&mut shell, &inp, ready, &mut was_leader) {
            continue;
        }
        match decision_pass(&mut shell, &mut inp, &mut decoder, &mut known_policies).await {
            Some(wake) => next_wake = wake,
            None => return Ok(()),
        }
    }
}

/// Sets readiness, follows leadership changes (drains stop when it is lost;
/// pending notifications are picked up again when it is gained). True when
/// this replica should decide now.
fn leading(
    shell: &mut reconciler::Reconciler,
    inp: &LoopInputs,
    ready: bool,
    was_leader: &mut bool,
) -> bool {
    inp.health.set_ready(ready);
    let leader = *inp.leader_rx.borrow();
    if leader != *was_leader {
        tracing::info!(leader, "leadership changed");
        inp.metrics.set_leader(leader);
        if !leader {
            shell.stop_drains();
        } else {
            // Pending notification deliveries are picked up again.
            shell.leadership_gained();
        }
        *was_leader = leader;
    }
    ready && leader
}

/// One decision pass over the caches. Returns when to wake for the next
/// one (None inside: only on a change), or None when a watch stream ended.
async fn decision_pass(
    shell: &mut reconciler::Reconciler,
    inp: &mut LoopInputs,
    decoder: &mut PolicyDecoder,
    known_policies: &mut std::collections::BTreeSet<String>,
) -> Option<Option<tokio::time::Instant>> {
    // Coalesce the burst of events that usually follows a write. The stores
    // take every watch event as it comes (the pumps), so the pass decides
    // on everything the API server has sent so far.
    tokio::time::sleep(inp.debounce).await;
    while let Ok(()) = inp.kick_rx.try_recv() {}
    if inp.pumps.ended() {
        return None;
    }
    let raw: Vec<Arc<DynamicObject>> = inp.policy_store.state();
    let (policies, broken) = decoder.decode_all(&raw);
    let nodes: Vec<Arc<Node>> = inp.node_store.state();
    let started = std::time::Instant::now();
    let mut requeue = shell.tick(&policies, &nodes).await;
    for bad in &broken {
        if let Some(r) = shell.report_undecodable(bad, &nodes).await {
            requeue = Some(requeue.map_or(r, |q| q.min(r)));
        }
    }
    // The metric series of deleted policies go with them.
    let names: std::collections::BTreeSet<String> = raw.iter().map(|o| o.name_any()).collect();
    for gone in known_policies.difference(&names) {
        inp.metrics.forget_policy(gone);
    }
    *known_policies = names;
    inp.metrics
        .observe_decision_pass(started.elapsed().as_secs_f64());
    let mut next_wake = requeue.map(|d| tokio::time::Instant::now() + d);
    // Nodes the stores have not caught up with yet are re-read next round.
    if shell.has_pending_overlay() {
        let soon = tokio::time::Instant::now() + Duration::from_millis(500);
        next_wake = Some(next_wake.map_or(soon, |w| w.min(soon)));
    }
    Some(next_wake)
}

/// A watch error as text fit for a log: values quoted by a decoding error
/// (which may be spec text) are cut.
fn safe_error(e: &watcher::Error) -> String {
    crate::api::redact_decode_message(&e.to_string())
}

/// A PatchPolicy object that could not be decoded: the controller writes its
/// status (`Stalled`, reason `InvalidSpec`, naming the field) and goes on with
/// the others.
pub(crate) struct Undecodable {
    /// Metadata of the object, and a default spec (used only to let a
    /// deleted object's nodes go).
    pub(crate) policy: ParsedPolicy,
    /// Which field does not fit, and why.
    pub(crate) error: crate::api::DecodeError,
    /// The stored status, as raw JSON.
    pub(crate) status: Option<serde_json::Value>,
}

/// A decoded policy with its spec parsed: what every pass of the loop uses,
/// so the spec is parsed once per resourceVersion, not once per pass.
pub struct ParsedPolicy {
    /// The policy as decoded.
    pub policy: PatchPolicy,
    /// Its spec, parsed by [`crate::cmd::validate::parse_spec`] (the rules and
    /// the CRD schema's bounds).
    pub config: rollout::Config,
}

impl ParsedPolicy {
    /// Parses the spec of a decoded policy.
    pub fn new(policy: PatchPolicy) -> ParsedPolicy {
        let config = rollout::Config::from_parsed(crate::cmd::validate::parse_spec(&policy.spec));
        ParsedPolicy { policy, config }
    }
}

impl std::ops::Deref for ParsedPolicy {
    type Target = PatchPolicy;

    fn deref(&self) -> &PatchPolicy {
        &self.policy
    }
}

/// A decoded policy, or why it could not be decoded.
type Decoded = Result<Arc<ParsedPolicy>, Arc<Undecodable>>;

/// Decodes raw policy objects one by one and parses their specs; each object
/// is decoded and parsed again only when its resourceVersion changed.
#[derive(Default)]
struct PolicyDecoder {
    cache: HashMap<String, (Option<String>, Decoded)>,
}

impl PolicyDecoder {
    fn decode_all(
        &mut self,
        raw: &[Arc<DynamicObject>],
    ) -> (Vec<Arc<ParsedPolicy>>, Vec<Arc<Undecodable>>) {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for obj in raw {
            let name = obj.name_any();
            let rv = obj.metadata.resource_version.clone();
            let entry = match self.cache.get(&name) {
                Some((cached, decoded)) if rv.is_some() && *cached == rv => decoded.clone(),
                _ => {
                    let decoded = decode_object(obj);
                    self.cache.insert(name.clone(), (rv, decoded.clone()));
                    decoded
                }
            };
            seen.insert(name);
            match entry {
                Ok(p) => good.push(p),
                Err(u) => bad.push(u),
            }
        }
        self.cache.retain(|k, _| seen.contains(k));
        (good, bad)
    }
}

/// Decodes one raw object.
pub(crate) fn decode_object(obj: &DynamicObject) -> Decoded {
    let mut value = serde_json::to_value(obj).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut value {
        map.insert(
            "apiVersion".into(),
            format!("{}/{}", crate::api::GROUP, crate::api::VERSION).into(),
        );
        map.insert("kind".into(), "PatchPolicy".into());
    }
    match crate::api::decode_policy(&value) {
        Ok(p) => Ok(Arc::new(ParsedPolicy::new(p))),
        Err(error) => {
            let revision = value
                .pointer("/spec/revision")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut policy =
                PatchPolicy::new(&obj.name_any(), crate::api::PatchPolicySpec::new(revision));
            policy.metadata = obj.metadata.clone();
            Err(Arc::new(Undecodable {
                policy: ParsedPolicy::new(policy),
                error,
                status: value.get("status").cloned(),
            }))
        }
    }
}

/// Takes the events `stream` has ready without waiting, so the store behind
/// it is current; false when the stream ended. Bounded so that a stream that
/// never runs dry cannot hold the loop.
/// Per-node objects written by this process that the node store has not
/// delivered yet, newest first by resourceVersion.
#[derive(Default)]
pub(crate) struct Overlay {
    nodes: HashMap<String, Arc<Node>>,
}

fn rv_num(o: &Node) -> Option<u64> {
    o.metadata.resource_version.as_deref()?.parse().ok()
}

impl Overlay {
    pub(crate) fn put(&mut self, node: Arc<Node>) {
        let name = node.name_any();
        self.nodes.insert(name, node);
    }

    /// The freshest copy of a node: ours while the store still shows an older one.
    pub(crate) fn freshest(&mut self, from_store: &Arc<Node>) -> Arc<Node> {
        let name = from_store.name_any();
        match self.nodes.get(&name) {
            Some(ours) => match (rv_num(ours), rv_num(from_store)) {
                (Some(a), Some(b)) if a > b => ours.clone(),
                _ => {
                    self.nodes.remove(&name);
                    from_store.clone()
                }
            },
            None => from_store.clone(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub(crate) fn retain_known(&mut self, known: &std::collections::HashSet<String>) {
        self.nodes.retain(|k, _| known.contains(k));
    }
}

/// The object reference used for Events about a policy.
pub(crate) fn policy_ref(p: &PatchPolicy) -> k8s_openapi::api::core::v1::ObjectReference {
    p.object_ref(&())
}

#[cfg(test)]
mod decoder_tests {
    use super::*;

    fn raw(rv: &str, spec: serde_json::Value) -> Arc<DynamicObject> {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "sofort.dev/v1alpha1",
            "kind": "PatchPolicy",
            "metadata": {"name": "p", "resourceVersion": rv},
            "spec": spec,
        }))
        .unwrap();
        Arc::new(obj)
    }

    #[test]
    fn a_spec_is_parsed_once_per_resource_version() {
        let mut decoder = PolicyDecoder::default();
        let v1 = raw(
            "1",
            serde_json::json!({"revision": "r1", "drain": {"timeout": "5m"}}),
        );
        let (first, bad) = decoder.decode_all(std::slice::from_ref(&v1));
        assert!(bad.is_empty());
        assert_eq!(first[0].config.drain_timeout, Duration::from_secs(300));
        assert!(first[0].config.errors.is_empty());
        // The same resourceVersion: the very same parse, not a new one.
        let (again, _) = decoder.decode_all(std::slice::from_ref(&v1));
        assert!(Arc::ptr_eq(&first[0], &again[0]));
        // A new resourceVersion is parsed again, with the CRD's bounds too.
        let v2 = raw(
            "2",
            serde_json::json!({"revision": "r1", "rollout": {"settle": "1s".repeat(33)}}),
        );
        let (changed, _) = decoder.decode_all(&[v2]);
        assert!(!Arc::ptr_eq(&first[0], &changed[0]));
        assert_eq!(
            changed[0].config.drain_timeout,
            Duration::from_secs(15 * 60)
        );
        assert!(
            changed[0]
                .config
                .errors
                .iter()
                .any(|e| e.starts_with("spec.rollout.settle: ")),
            "{:?}",
            changed[0].config.errors
        );
    }
}
