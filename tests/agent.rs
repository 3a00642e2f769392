//! The agent's shell against an in-memory Node: the fake cluster applies the
//! agent's merge patches (with the resourceVersion precondition) and feeds the
//! changed Node back through the watch stream, as the API server would.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, NodeSystemInfo, ObjectReference};
use sofort::agent::core::HOST_COMMANDS_REFUSED;
use sofort::agent::host::{FakeHost, Host, HostCall, LinuxHost, RebootVia, Sentinel};
use sofort::agent::metrics::AgentMetrics;
use sofort::agent::shell::{
    AgentConfig, AgentEvent, MetaPatch, NodeWriter, PolicyReader, WriteError, run_loop,
};
use sofort::api::{ActiveNode, PatchPolicy, PatchPolicySpec, PatchPolicyStatus, PatchSpec, Step};
use sofort::core::node_record::{
    AGENT_ERROR_ANNOTATION, NodeRecord, PATCH_RESULT_ANNOTATION, PatchRequest, PatchResult,
    REBOOT_ACK_ANNOTATION, REBOOT_REQUIRED_LABEL, RECORD_ANNOTATION, RebootAck,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_secs(300);

#[derive(Default)]
struct ClusterState {
    node: Node,
    rv: u64,
    patches: Vec<MetaPatch>,
    events: Vec<AgentEvent>,
    watchers: Vec<mpsc::UnboundedSender<Result<Node, Infallible>>>,
    /// PatchPolicies the agent can read, by name.
    policies: BTreeMap<String, PatchPolicy>,
    /// How many times the agent read a policy.
    policy_reads: usize,
}

#[derive(Clone, Default)]
struct FakeCluster(Arc<Mutex<ClusterState>>);

impl FakeCluster {
    /// A cluster with `node` and PatchPolicy `workers` at revision `r1`
    /// selecting every node, without a patch command.
    fn new(node: Node) -> Self {
        let c = FakeCluster::default();
        c.0.lock().unwrap().node = node;
        c.set_policy(PatchPolicy::new("workers", PatchPolicySpec::new("r1")));
        c.bump();
        c
    }

    fn set_policy(&self, policy: PatchPolicy) {
        let name = policy.metadata.name.clone().unwrap_or_default();
        self.0.lock().unwrap().policies.insert(name, policy);
    }

    fn remove_policy(&self, name: &str) {
        self.0.lock().unwrap().policies.remove(name);
    }

    /// Gives policy `workers` a host patch command.
    fn set_patch(&self, timeout: &str, command: &[&str]) {
        let mut p = PatchPolicy::new("workers", PatchPolicySpec::new("r1"));
        p.spec.patch = Some(PatchSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout: timeout.into(),
        });
        self.set_policy(p);
    }

    fn policy_reads(&self) -> usize {
        self.0.lock().unwrap().policy_reads
    }

    /// Changes the Node as someone else would (controller, kubelet).
    fn update(&self, f: impl FnOnce(&mut Node)) {
        f(&mut self.0.lock().unwrap().node);
        self.bump();
    }

    fn bump(&self) {
        let mut s = self.0.lock().unwrap();
        s.rv += 1;
        s.node.metadata.resource_version = Some(s.rv.to_string());
        let node = s.node.clone();
        s.watchers
            .retain(|w| w.unbounded_send(Ok(node.clone())).is_ok());
    }

    /// A new watch: the current Node first, then every change.
    fn watch(&self) -> mpsc::UnboundedReceiver<Result<Node, Infallible>> {
        let (tx, rx) = mpsc::unbounded();
        let mut s = self.0.lock().unwrap();
        let _ = tx.unbounded_send(Ok(s.node.clone()));
        s.watchers.push(tx);
        rx
    }

    fn node(&self) -> Node {
        self.0.lock().unwrap().node.clone()
    }
    fn annotation(&self, key: &str) -> Option<String> {
        self.node()
            .metadata
            .annotations
            .and_then(|a| a.get(key).cloned())
    }
    fn label(&self, key: &str) -> Option<String> {
        self.node()
            .metadata
            .labels
            .and_then(|a| a.get(key).cloned())
    }
    fn patches(&self) -> Vec<MetaPatch> {
        self.0.lock().unwrap().patches.clone()
    }
    fn events(&self) -> Vec<AgentEvent> {
        self.0.lock().unwrap().events.clone()
    }
    fn event_reasons(&self) -> Vec<&'static str> {
        self.events().iter().map(|e| e.reason).collect()
    }
}

fn apply(map: &mut Option<BTreeMap<String, String>>, changes: &BTreeMap<String, Option<String>>) {
    let m = map.get_or_insert_with(BTreeMap::new);
    for (k, v) in changes {
        match v {
            Some(v) => m.insert(k.clone(), v.clone()),
            None => m.remove(k),
        };
    }
}

impl NodeWriter for FakeCluster {
    fn patch(&self, patch: MetaPatch) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async move {
            {
                let mut s = self.0.lock().unwrap();
                if let Some(rv) = &patch.resource_version
                    && *rv != s.rv.to_string()
                {
                    return Err(WriteError::Conflict { node: "n1".into() });
                }
                apply(&mut s.node.metadata.labels, &patch.labels);
                apply(&mut s.node.metadata.annotations, &patch.annotations);
                s.patches.push(patch);
            }
            self.bump();
            Ok(())
        })
    }

    fn event(&self, _regarding: ObjectReference, event: AgentEvent) -> BoxFuture<'_, ()> {
        self.0.lock().unwrap().events.push(event);
        Box::pin(async {})
    }
}

impl PolicyReader for FakeCluster {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<PatchPolicy>, String>> {
        let mut s = self.0.lock().unwrap();
        s.policy_reads += 1;
        let found = s.policies.get(name).cloned();
        Box::pin(async move { Ok(found) })
    }
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

const T0: &str = "2026-01-01T10:00:00Z";

fn node(unschedulable: bool, boot_id: &str, record: Option<&NodeRecord>) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some("n1".into());
    n.metadata.uid = Some("uid-1".into());
    n.spec = Some(NodeSpec {
        unschedulable: Some(unschedulable),
        ..Default::default()
    });
    n.status = Some(NodeStatus {
        node_info: Some(NodeSystemInfo {
            boot_id: boot_id.into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    if let Some(r) = record {
        n.metadata.annotations = Some(BTreeMap::from([(
            RECORD_ANNOTATION.to_string(),
            serde_json::to_string(r).unwrap(),
        )]));
    }
    n
}

fn record(step: Step, patch: Option<PatchRequest>) -> NodeRecord {
    NodeRecord {
        policy: "workers".into(),
        revision: "r1".into(),
        step,
        since: ts(T0),
        started: ts(T0),
        was_unschedulable: false,
        boot_id_before: Some("boot-a".into()),
        patch,
        reason: None,
    }
}

/// A running agent instance.
struct Agent {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<AgentMetrics>,
}

impl Agent {
    fn start(cluster: &FakeCluster, host: Arc<dyn Host>, allow_host_commands: bool) -> Agent {
        // Wall clock that follows tokio's (paused) clock from T0.
        let origin = Instant::now();
        let mut cfg = AgentConfig::new("n1", INTERVAL, allow_host_commands);
        cfg.clock =
            Arc::new(move || ts(T0) + jiff::SignedDuration::try_from(origin.elapsed()).unwrap());
        let metrics = Arc::new(AgentMetrics::new());
        let (stop, rx) = oneshot::channel::<()>();
        let writer: Arc<dyn NodeWriter> = Arc::new(cluster.clone());
        let policies: Arc<dyn PolicyReader> = Arc::new(cluster.clone());
        let task = tokio::spawn(run_loop(
            cfg,
            host,
            writer,
            policies,
            metrics.clone(),
            cluster.watch(),
            async {
                let _ = rx.await;
            },
        ));
        Agent {
            stop,
            task: tokio::spawn(async move { task.await.unwrap().unwrap() }),
            metrics,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// Lets the agent run for `d` of (paused) tokio time.
async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Waits (in tokio time) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn label_writes(cluster: &FakeCluster) -> Vec<String> {
    cluster
        .patches()
        .iter()
        .filter_map(|p| p.labels.get(REBOOT_REQUIRED_LABEL).cloned().flatten())
        .collect()
}

fn file_host(dir: &std::path::Path) -> LinuxHost {
    let boot_id = dir.join("boot_id");
    std::fs::write(&boot_id, "boot-a\n").unwrap();
    LinuxHost {
        boot_id_path: boot_id,
        enter_host: Vec::new(),
        // Never the signal method in tests: it would signal this machine's PID 1.
        ..LinuxHost::new(
            Sentinel::File(dir.join("reboot-required")),
            RebootVia::Command(vec!["false".into()]),
        )
    }
}

#[tokio::test(start_paused = true)]
async fn sentinel_appears_label_flips_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(node(false, "boot-a", None));
    let agent = Agent::start(&cluster, Arc::new(file_host(dir.path())), false);

    until("the first check", || label_writes(&cluster).len() == 1).await;
    assert_eq!(label_writes(&cluster), ["false"]);

    std::fs::write(dir.path().join("reboot-required"), "").unwrap();
    until("the label to flip", || label_writes(&cluster).len() == 2).await;
    assert_eq!(
        cluster.label(REBOOT_REQUIRED_LABEL).as_deref(),
        Some("true")
    );
    assert_eq!(agent.metrics.reboot_required.get(), 1);

    // Many more checks and unrelated Node updates: no further writes.
    for _ in 0..5 {
        run_for(INTERVAL).await;
        cluster.update(|n| n.metadata.generation = Some(1));
    }
    assert_eq!(label_writes(&cluster), ["false", "true"]);
    assert_eq!(cluster.patches().len(), 2);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn host_restarted_under_the_agent_is_checked_at_once() {
    let host = Arc::new(FakeHost::new("boot-a"));
    host.set_sentinel(Ok(true));
    let cluster = FakeCluster::new(node(false, "boot-a", None));
    let agent = Agent::start(&cluster, host.clone(), false);
    until("the first check", || label_writes(&cluster).len() == 1).await;
    assert_eq!(label_writes(&cluster), ["true"]);

    // The host reboots (the sentinel goes with it) while this process keeps
    // running; the kubelet reports the new boot ID.
    host.set_sentinel(Ok(false));
    host.set_boot_id("boot-b");
    cluster.update(|n| {
        if let Some(info) = n.status.as_mut().and_then(|s| s.node_info.as_mut()) {
            info.boot_id = "boot-b".into();
        }
    });
    // Far sooner than the check interval.
    run_for(Duration::from_secs(1)).await;
    assert_eq!(label_writes(&cluster), ["true", "false"]);

    // Node updates without a new boot ID do not add checks.
    let checks = || {
        host.calls()
            .iter()
            .filter(|c| **c == HostCall::RebootRequired)
            .count()
    };
    let before = checks();
    for _ in 0..5 {
        cluster.update(|n| n.metadata.generation = Some(2));
        run_for(Duration::from_secs(1)).await;
    }
    assert_eq!(checks(), before);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn label_already_right_is_not_rewritten_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = FakeCluster::new(node(false, "boot-a", None));
    cluster.update(|n| {
        n.metadata.labels = Some(BTreeMap::from([(
            REBOOT_REQUIRED_LABEL.to_string(),
            "false".to_string(),
        )]))
    });
    let agent = Agent::start(&cluster, Arc::new(file_host(dir.path())), false);
    run_for(INTERVAL * 3).await;
    assert!(cluster.patches().is_empty());
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn missing_sentinel_command_is_an_error_not_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let host = LinuxHost {
        sentinel: Sentinel::Command(vec!["/nonexistent/needs-restarting".into()]),
        ..file_host(dir.path())
    };
    let cluster = FakeCluster::new(node(true, "boot-a", None));
    let agent = Agent::start(&cluster, Arc::new(host), false);

    until("the error report", || {
        cluster.annotation(AGENT_ERROR_ANNOTATION).is_some()
    })
    .await;
    let err = cluster.annotation(AGENT_ERROR_ANNOTATION).unwrap();
    assert!(err.contains("/nonexistent/needs-restarting"), "{err}");
    assert_eq!(cluster.event_reasons(), ["SentinelFailed"]);
    assert_eq!(cluster.label(REBOOT_REQUIRED_LABEL), None);
    assert_eq!(agent.metrics.reboot_required.get(), 0);

    // The same error at later checks is not reported again.
    run_for(INTERVAL * 3).await;
    assert_eq!(cluster.event_reasons(), ["SentinelFailed"]);
    assert_eq!(cluster.patches().len(), 1);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn sentinel_recovering_from_an_error_clears_it() {
    let host = Arc::new(FakeHost::new("boot-a"));
    host.set_sentinel(Err("exit 2".into()));
    let cluster = FakeCluster::new(node(false, "boot-a", None));
    let agent = Agent::start(&cluster, host.clone(), false);
    until("the error", || {
        cluster.annotation(AGENT_ERROR_ANNOTATION).is_some()
    })
    .await;
    host.set_sentinel(Ok(true));
    until("the label", || {
        cluster.label(REBOOT_REQUIRED_LABEL).is_some()
    })
    .await;
    assert_eq!(
        cluster.label(REBOOT_REQUIRED_LABEL).as_deref(),
        Some("true")
    );
    assert_eq!(cluster.annotation(AGENT_ERROR_ANNOTATION), None);
    assert_eq!(host.reboots(), 0);
    agent.stop().await;
}

fn ack_on(cluster: &FakeCluster) -> Option<RebootAck> {
    cluster
        .annotation(REBOOT_ACK_ANNOTATION)
        .map(|a| serde_json::from_str(&a).unwrap())
}

#[tokio::test(start_paused = true)]
async fn reboot_is_honoured_exactly_once_across_restarts() {
    let rec = record(Step::Rebooting, None);
    let cluster = FakeCluster::new(node(true, "boot-a", Some(&rec)));
    let host = Arc::new(FakeHost::new("boot-a"));

    // First instance: ack, then reboot.
    let agent = Agent::start(&cluster, host.clone(), false);
    until("the reboot", || host.reboots() == 1).await;
    let ack = ack_on(&cluster).unwrap();
    assert_eq!(
        (
            ack.policy.as_str(),
            ack.revision.as_str(),
            ack.boot_id.as_str(),
            ack.attempt
        ),
        ("workers", "r1", "boot-a", 1)
    );
    // The ack was confirmed before the reboot was asked for.
    assert!(
        cluster.patches()[0]
            .annotations
            .contains_key(REBOOT_ACK_ANNOTATION)
    );
    assert_eq!(agent.metrics.reboots.get(), 1);
    assert_eq!(cluster.event_reasons(), ["Rebooting"]);
    // The agent is killed while the host goes down.
    agent.stop().await;

    // A new instance before the host went down (same boot ID): it waits.
    let agent = Agent::start(&cluster, host.clone(), false);
    run_for(Duration::from_secs(60)).await;
    assert_eq!(host.reboots(), 1);
    agent.stop().await;

    // The host came back with a new boot ID; the kubelet reports it.
    host.set_boot_id("boot-b");
    cluster.update(|n| {
        if let Some(s) = &mut n.status
            && let Some(i) = &mut s.node_info
        {
            i.boot_id = "boot-b".into();
        }
    });
    let agent = Agent::start(&cluster, host.clone(), false);
    run_for(Duration::from_secs(3600)).await;
    assert_eq!(host.reboots(), 1, "{:?}", host.calls());
    assert_eq!(cluster.annotation(AGENT_ERROR_ANNOTATION), None);
    assert_eq!(cluster.event_reasons(), ["Rebooting"]);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn crash_between_ack_and_reboot_reissues_once_then_reports() {
    let rec = record(Step::Rebooting, None);
    let cluster = FakeCluster::new(node(true, "boot-a", Some(&rec)));
    // An earlier instance wrote the ack at T0 and died before rebooting.
    let ack = RebootAck {
        policy: "workers".into(),
        revision: "r1".into(),
        boot_id: "boot-a".into(),
        at: ts(T0),
        attempt: 1,
    };
    cluster.update(|n| {
        if let Some(a) = &mut n.metadata.annotations {
            a.insert(
                REBOOT_ACK_ANNOTATION.into(),
                serde_json::to_string(&ack).unwrap(),
            );
        }
    });
    let host = Arc::new(FakeHost::new("boot-a"));
    let agent = Agent::start(&cluster, host.clone(), false);
    run_for(Duration::from_secs(119)).await;
    assert_eq!(host.reboots(), 0, "must wait out the grace period");
    until("the second attempt", || host.reboots() == 1).await;
    assert_eq!(ack_on(&cluster).unwrap().attempt, 2);
    // The host still does not go down: no third request, an error instead.
    run_for(Duration::from_secs(3600)).await;
    assert_eq!(host.reboots(), 1);
    let err = cluster.annotation(AGENT_ERROR_ANNOTATION).unwrap();
    assert!(err.contains("did not restart"), "{err}");
    assert_eq!(cluster.event_reasons(), ["Rebooting", "RebootRefused"]);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reboot_refused_when_not_cordoned() {
    let rec = record(Step::Rebooting, None);
    let cluster = FakeCluster::new(node(false, "boot-a", Some(&rec)));
    let host = Arc::new(FakeHost::new("boot-a"));
    let agent = Agent::start(&cluster, host.clone(), false);
    until("the refusal", || !cluster.events().is_empty()).await;
    // Node heartbeats do not repeat the Event.
    for _ in 0..3 {
        cluster.update(|n| n.metadata.generation = Some(2));
        run_for(Duration::from_secs(10)).await;
    }
    assert_eq!(cluster.event_reasons(), ["RebootRefused"]);
    assert!(cluster.events()[0].warning);
    let err = cluster.annotation(AGENT_ERROR_ANNOTATION).unwrap();
    assert!(err.contains("not cordoned"), "{err}");
    assert_eq!(ack_on(&cluster), None);
    assert_eq!(host.reboots(), 0);

    // Once cordoned, the same request is honoured.
    cluster.update(|n| {
        if let Some(s) = &mut n.spec {
            s.unschedulable = Some(true);
        }
    });
    until("the reboot", || host.reboots() == 1).await;
    assert_eq!(cluster.annotation(AGENT_ERROR_ANNOTATION), None);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reboot_refused_when_boot_id_differs() {
    let rec = record(Step::Rebooting, None);
    let cluster = FakeCluster::new(node(true, "boot-c", Some(&rec)));
    let host = Arc::new(FakeHost::new("boot-c"));
    let agent = Agent::start(&cluster, host.clone(), false);
    until("the refusal", || !cluster.events().is_empty()).await;
    run_for(Duration::from_secs(600)).await;
    assert_eq!(cluster.event_reasons(), ["RebootRefused"]);
    let err = cluster.annotation(AGENT_ERROR_ANNOTATION).unwrap();
    assert!(err.contains("boot-c") && err.contains("boot-a"), "{err}");
    assert_eq!(host.reboots(), 0);
    agent.stop().await;
}

fn patch_result(cluster: &FakeCluster) -> Option<PatchResult> {
    cluster
        .annotation(PATCH_RESULT_ANNOTATION)
        .map(|a| serde_json::from_str(&a).unwrap())
}

/// A `Patching` record and policy `workers` with this patch command.
fn patching(timeout: &str, command: &[&str]) -> (NodeRecord, FakeCluster) {
    let rec = record(Step::Patching, Some(PatchRequest { timeout_seconds: 1 }));
    let cluster = FakeCluster::new(node(true, "boot-a", Some(&rec)));
    cluster.set_patch(timeout, command);
    (rec, cluster)
}

#[tokio::test(start_paused = true)]
async fn host_commands_refused_unless_allowed() {
    let (_, cluster) = patching("60s", &["apt-get", "-y", "upgrade"]);
    let host = Arc::new(FakeHost::new("boot-a"));
    let agent = Agent::start(&cluster, host.clone(), false);
    until("the refusal", || patch_result(&cluster).is_some()).await;
    let result = patch_result(&cluster).unwrap();
    assert!(!result.success);
    assert_eq!(result.message, HOST_COMMANDS_REFUSED);
    assert_eq!(cluster.event_reasons(), ["PatchRefused"]);
    run_for(Duration::from_secs(600)).await;
    assert!(
        !host
            .calls()
            .iter()
            .any(|c| matches!(c, HostCall::RunPatch(..)))
    );
    assert_eq!(cluster.event_reasons(), ["PatchRefused"]);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn patch_runs_once_per_revision_across_restarts() {
    let (_, cluster) = patching("60s", &["apt-get", "-y", "upgrade"]);
    let host = Arc::new(FakeHost::new("boot-a"));
    host.set_patch(
        Ok(sofort::agent::host::CommandOutcome {
            exit_code: Some(0),
            timed_out: false,
            output_tail: "3 upgraded".into(),
            elapsed: Duration::from_secs(20),
        }),
        Duration::from_secs(20),
    );
    let agent = Agent::start(&cluster, host.clone(), true);
    // While it runs, Node updates do not start it again.
    for _ in 0..3 {
        cluster.update(|n| n.metadata.generation = Some(3));
        run_for(Duration::from_secs(5)).await;
    }
    until("the result", || patch_result(&cluster).is_some()).await;
    let result = patch_result(&cluster).unwrap();
    assert!(result.success, "{result:?}");
    assert_eq!(result.output_tail, "3 upgraded");
    assert_eq!(cluster.event_reasons(), ["PatchStarted", "PatchSucceeded"]);
    agent.stop().await;

    let agent = Agent::start(&cluster, host.clone(), true);
    run_for(Duration::from_secs(600)).await;
    let runs = host
        .calls()
        .iter()
        .filter(|c| matches!(c, HostCall::RunPatch(..)))
        .count();
    assert_eq!(runs, 1);
    agent.stop().await;
}

#[tokio::test]
async fn patch_command_timeout_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cluster) = patching("1s", &["sh", "-c", "echo upgrading; sleep 30"]);
    let agent = Agent::start(&cluster, Arc::new(file_host(dir.path())), true);
    tokio::time::timeout(Duration::from_secs(20), async {
        while patch_result(&cluster).is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a patch result within 20 s");
    let result = patch_result(&cluster).unwrap();
    assert!(!result.success);
    assert_eq!(result.exit_code, None);
    assert!(
        result.message.starts_with("timed out after 1s"),
        "{}",
        result.message
    );
    assert_eq!(result.output_tail, "upgrading");
    let err = cluster.annotation(AGENT_ERROR_ANNOTATION).unwrap();
    assert!(err.contains("timed out"), "{err}");
    assert_eq!(
        cluster.event_reasons(),
        ["PatchStarted", "PatchFailed"],
        "{:?}",
        cluster.events()
    );
    assert!(cluster.events()[1].note.contains("upgrading"));
    assert!(
        agent
            .metrics
            .encode()
            .contains("sofort_agent_patch_seconds_count 1")
    );
    agent.stop().await;
}

/// A Node whose record was written by someone else, as raw JSON.
fn forged(unschedulable: bool, record_json: &str) -> Node {
    let mut n = node(unschedulable, "boot-a", None);
    n.metadata.annotations = Some(BTreeMap::from([(
        RECORD_ANNOTATION.to_string(),
        record_json.to_string(),
    )]));
    n
}

#[tokio::test(start_paused = true)]
async fn agent_refuses_a_record_for_a_policy_that_does_not_exist() {
    for step in ["Rebooting", "Patching"] {
        let json = format!(
            r#"{{"policy":"ghost","revision":"r1","step":"{step}","since":"{T0}","started":"{T0}","wasUnschedulable":false,"bootIdBefore":"boot-a","patch":{{"command":["sh","-c","touch /pwned"],"timeoutSeconds":60}}}}"#
        );
        let cluster = FakeCluster::new(forged(true, &json));
        let host = Arc::new(FakeHost::new("boot-a"));
        let agent = Agent::start(&cluster, host.clone(), true);
        until("the refusal", || {
            cluster.event_reasons() == ["RequestRefused"]
        })
        .await;
        // More Node updates: still refused once, and nothing run or rebooted.
        for _ in 0..3 {
            cluster.update(|n| n.metadata.generation = Some(2));
            run_for(Duration::from_secs(30)).await;
        }
        run_for(Duration::from_secs(600)).await;
        assert_eq!(host.reboots(), 0, "{step}");
        assert!(
            !host
                .calls()
                .iter()
                .any(|c| matches!(c, HostCall::RunPatch(..))),
            "{step}: {:?}",
            host.calls()
        );
        assert_eq!(ack_on(&cluster), None, "{step}");
        assert_eq!(patch_result(&cluster), None, "{step}");
        let err = cluster
            .annotation(AGENT_ERROR_ANNOTATION)
            .unwrap_or_default();
        assert!(err.contains("PatchPolicy that does not exist"), "{err}");
        assert!(!err.contains("pwned"), "{err}");
        assert_eq!(cluster.event_reasons(), ["RequestRefused"], "{step}");
        assert!(cluster.policy_reads() >= 1);
        agent.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn agent_runs_the_command_from_the_policy_not_the_node() {
    // The record carries a command (an older controller's, or a forger's): it is ignored.
    let json = format!(
        r#"{{"policy":"workers","revision":"r1","step":"Patching","since":"{T0}","started":"{T0}","wasUnschedulable":false,"patch":{{"command":["sh","-c","touch /pwned"],"timeoutSeconds":5}}}}"#
    );
    let cluster = FakeCluster::new(forged(true, &json));
    cluster.set_patch("15m", &["unattended-upgrade", "-v"]);
    let host = Arc::new(FakeHost::new("boot-a"));
    let agent = Agent::start(&cluster, host.clone(), true);
    until("the result", || patch_result(&cluster).is_some()).await;
    let runs: Vec<_> = host
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            HostCall::RunPatch(cmd, timeout) => Some((cmd, timeout)),
            _ => None,
        })
        .collect();
    assert_eq!(
        runs,
        [(
            vec!["unattended-upgrade".to_string(), "-v".to_string()],
            Duration::from_secs(900)
        )]
    );
    // The Event names the policy, not the command.
    assert!(cluster.events().iter().all(|e| !e.note.contains("pwned")));
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn agent_refuses_a_reboot_once_the_policy_is_gone_or_moved_on() {
    let rec = record(Step::Rebooting, None);
    let cluster = FakeCluster::new(node(true, "boot-a", Some(&rec)));
    cluster.set_policy(PatchPolicy::new("workers", PatchPolicySpec::new("r2")));
    let host = Arc::new(FakeHost::new("boot-a"));
    let agent = Agent::start(&cluster, host.clone(), false);
    until("the refusal", || !cluster.events().is_empty()).await;
    let err = cluster
        .annotation(AGENT_ERROR_ANNOTATION)
        .unwrap_or_default();
    assert!(err.contains("is at revision r2"), "{err}");
    cluster.remove_policy("workers");
    cluster.update(|n| n.metadata.generation = Some(2));
    until("the second refusal", || cluster.events().len() == 2).await;
    let err = cluster
        .annotation(AGENT_ERROR_ANNOTATION)
        .unwrap_or_default();
    assert!(err.contains("does not exist"), "{err}");
    run_for(Duration::from_secs(600)).await;
    assert_eq!(host.reboots(), 0);
    assert_eq!(ack_on(&cluster), None);
    agent.stop().await;
}

/// Policy `workers` bumped to `r2` while node `n1` is still in progress under
/// `r1`, as the controller's status then shows it.
fn bumped_with_n1_in_progress(step: Step) -> PatchPolicy {
    let mut p = PatchPolicy::new("workers", PatchPolicySpec::new("r2"));
    p.spec.patch = Some(PatchSpec {
        command: vec!["unattended-upgrade".into()],
        timeout: "15m".into(),
    });
    p.status = Some(PatchPolicyStatus {
        revision: Some("r2".into()),
        active: vec![ActiveNode {
            node: "n1".into(),
            step,
            since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(T0)),
        }],
        ..Default::default()
    });
    p
}

#[tokio::test(start_paused = true)]
async fn a_revision_bump_while_the_node_is_in_progress_lets_it_patch_and_reboot() {
    // Patching under r1 after the bump to r2: the policy's command runs, the
    // result names r1 (the revision the controller is finishing).
    let rec = record(
        Step::Patching,
        Some(PatchRequest {
            timeout_seconds: 60,
        }),
    );
    let cluster = FakeCluster::new(node(true, "boot-a", Some(&rec)));
    cluster.set_policy(bumped_with_n1_in_progress(Step::Patching));
    let host = Arc::new(FakeHost::new("boot-a"));
    let agent = Agent::start(&cluster, host.clone(), true);
    until("the patch result", || patch_result(&cluster).is_some()).await;
    let result = patch_result(&cluster).unwrap();
    assert!(result.success, "{result:?}");
    assert_eq!(result.revision, "r1");
    assert!(
        host.calls()
            .iter()
            .any(|c| matches!(c, HostCall::RunPatch(cmd, _) if cmd == &["unattended-upgrade"])),
        "{:?}",
        host.calls()
    );
    assert_eq!(cluster.annotation(AGENT_ERROR_ANNOTATION), None);
    agent.stop().await;

    // Rebooting under r1: acknowledged and rebooted once.
    let rec = record(Step::Rebooting, None);
    let cluster = FakeCluster::new(node(true, "boot-a", Some(&rec)));
    cluster.set_policy(bumped_with_n1_in_progress(Step::Rebooting));
    let host = Arc::new(FakeHost::new("boot-a"));
    let agent = Agent::start(&cluster, host.clone(), false);
    until("the reboot", || host.reboots() == 1).await;
    assert_eq!(ack_on(&cluster).map(|a| a.revision), Some("r1".into()));
    assert_eq!(cluster.annotation(AGENT_ERROR_ANNOTATION), None);
    assert_eq!(cluster.event_reasons(), ["Rebooting"]);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_old_revision_on_a_node_the_status_does_not_list_is_still_refused() {
    // The status lists another node: a record at r1 on n1 is not backed.
    let rec = record(Step::Rebooting, None);
    let cluster = FakeCluster::new(node(true, "boot-a", Some(&rec)));
    let mut p = bumped_with_n1_in_progress(Step::Rebooting);
    if let Some(st) = &mut p.status {
        st.active[0].node = "n2".into();
    }
    cluster.set_policy(p);
    let host = Arc::new(FakeHost::new("boot-a"));
    let agent = Agent::start(&cluster, host.clone(), false);
    until("the refusal", || !cluster.events().is_empty()).await;
    run_for(Duration::from_secs(600)).await;
    let err = cluster
        .annotation(AGENT_ERROR_ANNOTATION)
        .unwrap_or_default();
    assert!(
        err.contains("is at revision r2 and its status does not list this node"),
        "{err}"
    );
    assert_eq!(host.reboots(), 0);
    assert_eq!(ack_on(&cluster), None);
    agent.stop().await;
}
