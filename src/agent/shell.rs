//! The agent's imperative shell: reads its Node from one watch, asks the core
//! what to do, and does it through a [`Host`] and a [`NodeWriter`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::core::{
    HostFacts, NodeAction, OwnNode, PatchCommand, PolicyFacts, PolicyLookup, SentinelAction,
    SentinelCheck, decide, decide_sentinel, shown,
};
use super::host::{CommandOutcome, Host, HostError};
use super::metrics::AgentMetrics;
use crate::api::PatchPolicy;
use crate::core::node_record::{
    AGENT_ERROR_ANNOTATION, PATCH_RESULT_ANNOTATION, PatchResult, REBOOT_ACK_ANNOTATION,
    REBOOT_REQUIRED_LABEL, RebootAck,
};

/// Retry delay after a failed write to the API (or a failed read of a policy).
pub const WRITE_RETRY: Duration = Duration::from_secs(10);
/// Longest wait for the PatchPolicy a request names.
pub const POLICY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest Event note the API accepts.
const NOTE_LIMIT: usize = 1024;

/// Field manager / reporting controller name.
pub const AGENT_MANAGER: &str = "sofort-agent";

/// A write to the Node could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The Node changed since it was read (resourceVersion precondition).
    #[error("node {node} changed since it was read; deciding again on the newer version")]
    Conflict {
        /// Node name.
        node: String,
    },
    /// Any other API failure.
    #[error("cannot update node {node}: {source}; the agent needs RBAC `patch` on nodes")]
    Api {
        /// Node name.
        node: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// A JSON merge patch of the agent's own labels and annotations (`None` removes a key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaPatch {
    /// Labels to set or remove.
    pub labels: BTreeMap<String, Option<String>>,
    /// Annotations to set or remove.
    pub annotations: BTreeMap<String, Option<String>>,
    /// When set, the API server rejects the patch if the Node changed since.
    pub resource_version: Option<String>,
}

impl MetaPatch {
    /// Sets an annotation.
    pub fn annotate(mut self, key: &str, value: impl Into<String>) -> Self {
        self.annotations.insert(key.to_string(), Some(value.into()));
        self
    }
    /// Removes an annotation.
    pub fn clear(mut self, key: &str) -> Self {
        self.annotations.insert(key.to_string(), None);
        self
    }
    /// Sets a label.
    pub fn label(mut self, key: &str, value: impl Into<String>) -> Self {
        self.labels.insert(key.to_string(), Some(value.into()));
        self
    }

    /// The merge patch body.
    pub fn to_json(&self) -> serde_json::Value {
        let mut meta = serde_json::Map::new();
        if !self.labels.is_empty() {
            meta.insert("labels".into(), serde_json::json!(self.labels));
        }
        if !self.annotations.is_empty() {
            meta.insert("annotations".into(), serde_json::json!(self.annotations));
        }
        if let Some(rv) = &self.resource_version {
            meta.insert("resourceVersion".into(), serde_json::json!(rv));
        }
        serde_json::json!({ "metadata": meta })
    }
}

/// An Event about the agent's Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEvent {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// PascalCase reason (`RebootRefused`, `Rebooting`, `PatchSucceeded`, …).
    pub reason: &'static str,
    /// PascalCase action (`Reboot`, `Patch`, `CheckSentinel`).
    pub action: &'static str,
    /// Human-readable detail (at most 1 kB).
    pub note: String,
}

/// Where the shell writes: the agent's own Node and Events about it.
pub trait NodeWriter: Send + Sync {
    /// Applies a merge patch to the Node's metadata; returns once the API confirmed it.
    fn patch(&self, patch: MetaPatch) -> BoxFuture<'_, Result<(), WriteError>>;
    /// Publishes an Event regarding the Node (best effort: failures are logged).
    fn event(&self, regarding: ObjectReference, event: AgentEvent) -> BoxFuture<'_, ()>;
}

/// [`NodeWriter`] over the Kubernetes API.
pub struct KubeNodeWriter {
    api: Api<Node>,
    name: String,
    recorder: Recorder,
}

impl KubeNodeWriter {
    /// A writer for node `name`.
    pub fn new(client: kube::Client, name: &str) -> Self {
        let reporter = Reporter {
            controller: AGENT_MANAGER.to_string(),
            instance: Some(format!("{AGENT_MANAGER}-{name}")),
        };
        KubeNodeWriter {
            api: Api::all(client.clone()),
            name: name.to_string(),
            recorder: Recorder::new(client, reporter),
        }
    }
}

impl NodeWriter for KubeNodeWriter {
    fn patch(&self, patch: MetaPatch) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async move {
            let params = PatchParams {
                field_manager: Some(AGENT_MANAGER.to_string()),
                ..PatchParams::default()
            };
            match self
                .api
                .patch(&self.name, &params, &Patch::Merge(patch.to_json()))
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.is_conflict() => Err(WriteError::Conflict {
                    node: self.name.clone(),
                }),
                Err(source) => Err(WriteError::Api {
                    node: self.name.clone(),
                    source,
                }),
            }
        })
    }

    fn event(&self, regarding: ObjectReference, event: AgentEvent) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let ev = Event {
                type_: if event.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: event.reason.to_string(),
                note: Some(event.note),
                action: event.action.to_string(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&ev, &regarding).await {
                warn!(error = %e, reason = event.reason, "cannot publish an Event; the agent needs RBAC `create` and `patch` on events.k8s.io events");
            }
        })
    }
}

/// Where the agent reads the PatchPolicy a request names: one GET per request,
/// no watch (the agent needs one object, rarely).
pub trait PolicyReader: Send + Sync {
    /// Reads PatchPolicy `name`: `Ok(None)` when it does not exist, `Err` with
    /// a message when it could not be read.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<PatchPolicy>, String>>;
}

/// [`PolicyReader`] over the Kubernetes API (RBAC `get` on patchpolicies).
pub struct KubePolicyReader {
    api: Api<PatchPolicy>,
}

impl KubePolicyReader {
    /// A reader using `client`.
    pub fn new(client: kube::Client) -> Self {
        KubePolicyReader {
            api: Api::all(client),
        }
    }
}

impl PolicyReader for KubePolicyReader {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<PatchPolicy>, String>> {
        Box::pin(async move {
            match tokio::time::timeout(POLICY_READ_TIMEOUT, self.api.get_opt(name)).await {
                Err(_) => Err(format!(
                    "no answer within {}",
                    crate::core::duration::format(POLICY_READ_TIMEOUT)
                )),
                Ok(Ok(p)) => Ok(p),
                Ok(Err(kube::Error::Api(s))) if s.is_forbidden() => Err(
                    "forbidden; the agent needs RBAC `get` on patchpolicies.sofort.dev".to_string(),
                ),
                Ok(Err(e)) => Err(e.to_string()),
            }
        })
    }
}

/// Settings of the shell.
#[derive(Clone)]
pub struct AgentConfig {
    /// Node this agent runs on.
    pub node_name: String,
    /// Sentinel check interval (jittered by up to 10 %).
    pub check_interval: Duration,
    /// Whether host patch commands may run.
    pub allow_host_commands: bool,
    /// Wall clock, injectable for tests.
    pub clock: Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("node_name", &self.node_name)
            .field("check_interval", &self.check_interval)
            .field("allow_host_commands", &self.allow_host_commands)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// Settings with the real clock.
    pub fn new(node_name: &str, check_interval: Duration, allow_host_commands: bool) -> Self {
        AgentConfig {
            node_name: node_name.to_string(),
            check_interval,
            allow_host_commands,
            clock: Arc::new(jiff::Timestamp::now),
        }
    }
}

/// Why the agent loop stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The host's boot ID is unknown.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The watch ended.
    #[error("the watch on node {0} ended unexpectedly; the agent restarts to watch again")]
    WatchEnded(String),
}

struct RunningPatch {
    policy: String,
    revision: String,
    timeout: Duration,
    started: Instant,
    fut: BoxFuture<'static, Result<CommandOutcome, HostError>>,
}

struct NodeAgent {
    cfg: AgentConfig,
    host: Arc<dyn Host>,
    writer: Arc<dyn NodeWriter>,
    policies: Arc<dyn PolicyReader>,
    metrics: Arc<AgentMetrics>,
    boot_id: String,
    node: Option<(OwnNode, ObjectReference)>,
    /// Label value as last seen on the Node or written by us.
    published: Option<String>,
    last_sentinel_error: Option<String>,
    /// The (policy, revision) whose patch command runs now.
    in_flight: Option<(String, String)>,
    /// A patch result not yet confirmed by the API (blocks running the patch again).
    unwritten: Option<PatchResult>,
    /// The (policy, revision) whose patch command this process ran last: a watch
    /// event from before its result was written must not start it again.
    ran: Option<(String, String)>,
    recheck: Option<Instant>,
    /// The host restarted under this process: check the sentinel now rather
    /// than at the next interval, as an agent started after the boot would.
    sentinel_due: bool,
}

/// Runs the agent on a stream of its own Node until `shutdown` completes.
///
/// `nodes` yields the Node each time it changes (one watch); errors are logged
/// and the stream is expected to recover by itself (watcher backoff). Before
/// acting on a request the agent reads its PatchPolicy from `policies`.
#[allow(clippy::too_many_arguments)]
pub async fn run_loop<S, E>(
    cfg: AgentConfig,
    host: Arc<dyn Host>,
    writer: Arc<dyn NodeWriter>,
    policies: Arc<dyn PolicyReader>,
    metrics: Arc<AgentMetrics>,
    nodes: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LoopError>
where
    S: Stream<Item = Result<Node, E>>,
    E: std::fmt::Display,
{
    let boot_id = host.boot_id().await?;
    info!(node = %cfg.node_name, boot_id = %boot_id, allow_host_commands = cfg.allow_host_commands, "agent started");
    let mut shell = NodeAgent {
        cfg,
        host,
        writer,
        policies,
        metrics,
        boot_id,
        node: None,
        published: None,
        last_sentinel_error: None,
        sentinel_due: false,
        in_flight: None,
        unwritten: None,
        ran: None,
        recheck: None,
    };
    let mut nodes = std::pin::pin!(nodes);
    let mut shutdown = std::pin::pin!(shutdown);
    // The first check runs as soon as the Node (and so the published label) is known.
    let mut next_check: Option<Instant> = None;
    // Kept out of `NodeAgent` so the shell stays `Sync` while the command runs.
    let mut running: Option<RunningPatch> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                info!("shutting down");
                return Ok(());
            }
            item = nodes.next() => match item {
                None => return Err(LoopError::WatchEnded(shell.cfg.node_name.clone())),
                Some(Err(e)) => warn!(error = %e, "watch on the node failed; retrying"),
                Some(Ok(node)) => {
                    if next_check.is_none() {
                        next_check = Some(Instant::now());
                    }
                    if let Some(started) = shell.on_node(&node).await {
                        running = Some(started);
                    }
                    if std::mem::take(&mut shell.sentinel_due) {
                        next_check = Some(Instant::now());
                    }
                }
            },
            _ = sleep_until(next_check) => {
                shell.check_sentinel().await;
                next_check = Some(Instant::now() + jittered(shell.cfg.check_interval));
            }
            outcome = poll_running(&mut running) => {
                if let Some(done) = running.take() {
                    shell.patch_finished(done, outcome).await;
                }
            }
            _ = sleep_until(shell.recheck) => {
                shell.recheck = None;
                if let Some(started) = shell.retry().await {
                    running = Some(started);
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn poll_running(running: &mut Option<RunningPatch>) -> Result<CommandOutcome, HostError> {
    match running {
        Some(r) => (&mut r.fut).await,
        None => std::future::pending().await,
    }
}

/// `interval` plus up to 10 % so a fleet's agents do not check in lockstep.
fn jittered(interval: Duration) -> Duration {
    interval + interval.mul_f64(fastrand::f64() * 0.1)
}

fn bounded_note(mut s: String) -> String {
    if s.len() > NOTE_LIMIT {
        let mut cut = NOTE_LIMIT - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

impl NodeAgent {
    fn facts(&self) -> HostFacts {
        HostFacts {
            boot_id: self.boot_id.clone(),
            allow_host_commands: self.cfg.allow_host_commands,
            patch_in_flight: self
                .in_flight
                .clone()
                .or_else(|| {
                    self.unwritten
                        .as_ref()
                        .map(|r| (r.policy.clone(), r.revision.clone()))
                })
                .or_else(|| self.ran.clone()),
            now: (self.cfg.clock)(),
            policy: PolicyLookup::NotRead,
        }
    }

    /// Reads the PatchPolicy a request names, for the node `node` with `labels`.
    async fn read_policy(
        &self,
        name: &str,
        node: &str,
        labels: &BTreeMap<String, String>,
    ) -> PolicyLookup {
        match self.policies.get(name).await {
            Ok(None) => PolicyLookup::Missing,
            Ok(Some(p)) => PolicyLookup::Found(PolicyFacts::from_policy(&p, node, labels)),
            Err(e) => PolicyLookup::Failed(e),
        }
    }

    async fn event(&self, warning: bool, reason: &'static str, action: &'static str, note: String) {
        if let Some((_, reference)) = &self.node {
            let event = AgentEvent {
                warning,
                reason,
                action,
                note: bounded_note(note),
            };
            self.writer.event(reference.clone(), event).await;
        }
    }

    /// Applies a confirmed write to the local view, so a decision taken before
    /// the watch delivers the change does not repeat it.
    fn remember(&mut self, f: impl FnOnce(&mut OwnNode)) {
        if let Some((view, _)) = &mut self.node {
            // The resource version stays the old one: a preconditioned write from
            // this view conflicts until the watch delivers the newer Node.
            f(view);
        }
    }

    fn retry_later(&mut self) {
        let at = Instant::now() + WRITE_RETRY;
        self.recheck = Some(self.recheck.map_or(at, |r| r.min(at)));
    }

    async fn on_node(&mut self, node: &Node) -> Option<RunningPatch> {
        let view = OwnNode::from_node(node);
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: node.metadata.name.clone(),
            uid: node.metadata.uid.clone(),
            ..Default::default()
        };
        self.published = view.reboot_required_label.clone();
        if let Err(e) = &view.record {
            debug!(error = %e, "node record unreadable; waiting for the controller to repair it");
        }
        self.node = Some((view, reference));
        self.act().await
    }

    async fn retry(&mut self) -> Option<RunningPatch> {
        if let Some(result) = self.unwritten.take() {
            self.write_patch_result(result).await;
        }
        self.act().await
    }

    /// Decides on the last Node seen and acts; a started patch command is
    /// returned for the loop to drive.
    async fn act(&mut self) -> Option<RunningPatch> {
        self.node.as_ref()?;
        // Re-read the boot ID: a host can restart under a running agent (a
        // simulated host, or a soft reboot that keeps the pod's process).
        match self.host.boot_id().await {
            Ok(b) => {
                if b != self.boot_id {
                    info!(boot_id = %b, "the host restarted; checking the reboot sentinel now");
                    self.sentinel_due = true;
                }
                self.boot_id = b;
            }
            Err(e) => warn!(error = %e, "cannot re-read the boot ID; using the one read before"),
        }
        let Some((view, _)) = &self.node else {
            return None;
        };
        let view = view.clone();
        let mut facts = self.facts();
        let mut action = decide(&view, &facts);
        // At most one read per decision: the second decision has the policy.
        if let NodeAction::ReadPolicy { name } = &action {
            facts.policy = self.read_policy(name, &view.name, &view.labels).await;
            if let PolicyLookup::Failed(e) = &facts.policy {
                warn!(policy = %shown(name), error = %e, "cannot read the PatchPolicy of the request; doing nothing and reading it again later");
                self.retry_later();
            }
            action = match decide(&view, &facts) {
                NodeAction::ReadPolicy { .. } => NodeAction::Nothing,
                other => other,
            };
        }
        let rv = view.resource_version.clone();
        let node_name = view.name.clone();
        match action {
            NodeAction::Nothing | NodeAction::ReadPolicy { .. } => {}
            NodeAction::RefuseRequest { reason } => {
                warn!(node = %node_name, %reason, "request refused");
                let patch = MetaPatch::default().annotate(AGENT_ERROR_ANNOTATION, &reason);
                if self.write(patch).await {
                    self.remember(|v| v.agent_error = Some(reason.clone()));
                    self.event(true, "RequestRefused", "Verify", reason).await;
                }
            }
            NodeAction::AwaitReboot { recheck_at } => {
                let wait = (recheck_at - facts.now)
                    .try_into()
                    .unwrap_or(Duration::ZERO);
                debug!(
                    ?wait,
                    "reboot acknowledged; waiting for the host to go down"
                );
                self.recheck = Some(Instant::now() + wait);
            }
            NodeAction::RefuseReboot { reason } => {
                warn!(node = %node_name, %reason, "reboot refused");
                let patch = MetaPatch::default().annotate(AGENT_ERROR_ANNOTATION, &reason);
                if self.write(patch).await {
                    self.remember(|v| v.agent_error = Some(reason.clone()));
                    self.event(true, "RebootRefused", "Reboot", reason).await;
                }
            }
            NodeAction::AckThenReboot { ack } => self.ack_then_reboot(ack, rv, &node_name).await,
            NodeAction::RunPatch {
                policy,
                revision,
                request,
            } => {
                return Some(
                    self.start_patch(policy, revision, request, &node_name)
                        .await,
                );
            }
            NodeAction::RefusePatch { result } => {
                warn!(node = %node_name, message = %result.message, "patch refused");
                self.write_patch_result(result).await;
            }
        }
        None
    }

    /// Writes the reboot acknowledgement (conditional on the Node's
    /// resourceVersion `rv`) and, once stored, reboots the host.
    async fn ack_then_reboot(&mut self, ack: RebootAck, rv: Option<String>, node_name: &str) {
        let json = match serde_json::to_string(&ack) {
            Ok(j) => j,
            Err(e) => {
                warn!(error = %e, "cannot encode the reboot ack");
                return;
            }
        };
        let patch = MetaPatch {
            resource_version: rv,
            ..MetaPatch::default()
        }
        .annotate(REBOOT_ACK_ANNOTATION, json)
        .clear(AGENT_ERROR_ANNOTATION);
        if !self.write(patch).await {
            return;
        }
        self.remember(|v| {
            v.reboot_ack = Some(ack.clone());
            v.agent_error = None;
        });
        // The API confirmed the ack: from here on, no instance of the
        // agent asks again for this request before the grace period.
        info!(node = %node_name, policy = %ack.policy, revision = %ack.revision, boot_id = %ack.boot_id, attempt = ack.attempt, "rebooting the host");
        self.event(
            false,
            "Rebooting",
            "Reboot",
            format!(
                "rebooting for policy {} revision {} (boot ID {}, attempt {})",
                ack.policy, ack.revision, ack.boot_id, ack.attempt
            ),
        )
        .await;
        self.metrics.reboots.inc();
        match self.host.reboot().await {
            Ok(()) => {
                self.recheck =
                    Some(Instant::now() + super::core::REBOOT_GRACE + Duration::from_secs(1));
            }
            Err(e) => {
                let msg = e.to_string();
                warn!(error = %msg, "reboot failed");
                let patch = MetaPatch::default().annotate(AGENT_ERROR_ANNOTATION, &msg);
                self.write(patch).await;
                self.event(true, "RebootFailed", "Reboot", msg).await;
            }
        }
    }

    /// Starts the policy's patch command; its outcome is awaited by the loop.
    async fn start_patch(
        &mut self,
        policy: String,
        revision: String,
        request: PatchCommand,
        node_name: &str,
    ) -> RunningPatch {
        let timeout = request.timeout;
        info!(node = %node_name, %policy, %revision, ?timeout, "running the patch command of the policy");
        self.event(
            false,
            "PatchStarted",
            "Patch",
            format!(
                "running the patch command of policy {policy} revision {revision} (timeout {})",
                crate::core::duration::format(timeout)
            ),
        )
        .await;
        let host = self.host.clone();
        let command = request.command;
        self.in_flight = Some((policy.clone(), revision.clone()));
        RunningPatch {
            policy,
            revision,
            timeout,
            started: Instant::now(),
            fut: Box::pin(async move { host.run_patch(command, timeout).await }),
        }
    }

    /// Writes a patch; false (and a retry scheduled unless it was a conflict) on failure.
    async fn write(&mut self, patch: MetaPatch) -> bool {
        match self.writer.patch(patch).await {
            Ok(()) => true,
            Err(e @ WriteError::Conflict { .. }) => {
                debug!(error = %e, "write conflicted");
                false
            }
            Err(e) => {
                warn!(error = %e, "write failed; retrying");
                self.retry_later();
                false
            }
        }
    }

    async fn patch_finished(
        &mut self,
        done: RunningPatch,
        outcome: Result<CommandOutcome, HostError>,
    ) {
        self.in_flight = None;
        self.ran = Some((done.policy.clone(), done.revision.clone()));
        let elapsed = done.started.elapsed();
        self.metrics.patch_seconds.observe(elapsed.as_secs_f64());
        let now = (self.cfg.clock)();
        let result = match outcome {
            Ok(o) => PatchResult {
                policy: done.policy,
                revision: done.revision,
                success: o.success(),
                exit_code: o.exit_code,
                message: o.describe(done.timeout),
                output_tail: o.output_tail,
                at: now,
            },
            Err(e) => PatchResult {
                policy: done.policy,
                revision: done.revision,
                success: false,
                exit_code: None,
                message: e.to_string(),
                output_tail: String::new(),
                at: now,
            },
        };
        info!(success = result.success, message = %result.message, ?elapsed, "patch command finished");
        self.write_patch_result(result).await;
    }

    async fn write_patch_result(&mut self, result: PatchResult) {
        let json = match serde_json::to_string(&result) {
            Ok(j) => j,
            Err(e) => {
                warn!(error = %e, "cannot encode the patch result");
                return;
            }
        };
        let mut patch = MetaPatch::default().annotate(PATCH_RESULT_ANNOTATION, json);
        patch = if result.success {
            patch.clear(AGENT_ERROR_ANNOTATION)
        } else {
            patch.annotate(AGENT_ERROR_ANNOTATION, &result.message)
        };
        match self.writer.patch(patch).await {
            Ok(()) => {
                self.remember(|v| {
                    v.patch_result = Some(result.clone());
                    v.agent_error = (!result.success).then(|| result.message.clone());
                });
                let (warning, reason) =
                    match (result.success, result.message.starts_with("refused")) {
                        (true, _) => (false, "PatchSucceeded"),
                        (false, true) => (true, "PatchRefused"),
                        (false, false) => (true, "PatchFailed"),
                    };
                let mut note = format!(
                    "policy {} revision {}: {}",
                    result.policy, result.revision, result.message
                );
                if !result.output_tail.is_empty() {
                    note.push('\n');
                    note.push_str(&result.output_tail);
                }
                self.event(warning, reason, "Patch", note).await;
            }
            Err(e) => {
                warn!(error = %e, "cannot write the patch result; retrying");
                self.unwritten = Some(result);
                self.retry_later();
            }
        }
    }

    async fn check_sentinel(&mut self) {
        let check = match self.host.reboot_required().await {
            Ok(r) => SentinelCheck::Checked(r),
            Err(e) => SentinelCheck::Failed(e.to_string()),
        };
        if let SentinelCheck::Checked(r) = check {
            self.metrics.reboot_required.set(i64::from(r));
        }
        match decide_sentinel(
            &check,
            self.published.as_deref(),
            self.last_sentinel_error.as_deref(),
        ) {
            SentinelAction::Nothing => {}
            SentinelAction::WriteLabel(required) => {
                let value = if required { "true" } else { "false" };
                let mut patch = MetaPatch::default().label(REBOOT_REQUIRED_LABEL, value);
                if self.last_sentinel_error.is_some() {
                    patch = patch.clear(AGENT_ERROR_ANNOTATION);
                }
                if self.write(patch).await {
                    info!(reboot_required = required, "reboot-required label updated");
                    self.published = Some(value.to_string());
                    self.last_sentinel_error = None;
                }
            }
            SentinelAction::ReportError(msg) => {
                warn!(error = %msg, "reboot sentinel check failed; not treating it as reboot required");
                let patch = MetaPatch::default().annotate(AGENT_ERROR_ANNOTATION, &msg);
                if self.write(patch).await {
                    self.event(true, "SentinelFailed", "CheckSentinel", msg.clone())
                        .await;
                    self.last_sentinel_error = Some(msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_sets_and_removes_keys() {
        let p = MetaPatch {
            resource_version: Some("42".into()),
            ..Default::default()
        }
        .annotate(REBOOT_ACK_ANNOTATION, "{}")
        .clear(AGENT_ERROR_ANNOTATION)
        .label(REBOOT_REQUIRED_LABEL, "true");
        assert_eq!(
            p.to_json(),
            serde_json::json!({"metadata": {
                "labels": {"sofort.dev/reboot-required": "true"},
                "annotations": {"sofort.dev/reboot-ack": "{}", "sofort.dev/agent-error": null},
                "resourceVersion": "42",
            }})
        );
    }

    #[test]
    fn notes_are_bounded() {
        let long = "é".repeat(2000);
        let note = bounded_note(long);
        assert!(note.len() <= NOTE_LIMIT);
        assert!(note.ends_with('…'));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(100));
            assert!(d >= Duration::from_secs(100) && d <= Duration::from_secs(110));
        }
    }
}

#[cfg(test)]
mod kube_tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    #[tokio::test]
    async fn kube_writer_sends_a_merge_patch_and_reports_conflicts() {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let writer = KubeNodeWriter::new(kube::Client::new(mock, "default"), "n1");
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a patch");
            assert_eq!(req.method(), http::Method::PATCH);
            assert_eq!(req.uri().path(), "/api/v1/nodes/n1");
            assert!(
                req.uri()
                    .query()
                    .unwrap_or("")
                    .contains("fieldManager=sofort-agent")
            );
            assert_eq!(
                req.headers()["content-type"],
                "application/merge-patch+json"
            );
            let body = req.into_body().collect_bytes().await.unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                json,
                serde_json::json!({"metadata": {
                    "annotations": {"sofort.dev/reboot-ack": "{}"},
                    "resourceVersion": "5",
                }})
            );
            let node =
                serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&node).unwrap()))
                    .unwrap(),
            );
            let (_req, send) = handle.next_request().await.expect("a second patch");
            let status = serde_json::json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure",
                "message": "the object has been modified", "reason": "Conflict", "code": 409,
            });
            send.send_response(
                Response::builder()
                    .status(409)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap(),
            );
        });
        let patch = MetaPatch {
            resource_version: Some("5".into()),
            ..Default::default()
        }
        .annotate(REBOOT_ACK_ANNOTATION, "{}");
        writer.patch(patch.clone()).await.unwrap();
        let err = writer.patch(patch).await.unwrap_err();
        assert!(matches!(err, WriteError::Conflict { .. }), "{err}");
        server.await.unwrap();
    }
}
