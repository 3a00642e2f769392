//! Reconcile tests without the emulator: a [`Writes`] fake plays the API
//! server for the writes (JSON merge patches applied to its own copies,
//! `resourceVersion` preconditions enforced, scripted failures) and records
//! every write and Event; each pass hands the reconciler the fake's objects
//! as the watch caches would. Each test runs in milliseconds.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::Client;
use kube::core::Status;
use kube::runtime::events::Event;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::notifications::Notifications;
use super::reconciler::Reconciler;
use super::writes::Writes;
use super::{ControllerConfig, FINALIZER, ParsedPolicy};
use crate::api::PatchPolicy;
use crate::core::clock::Clock;
use crate::core::node_record::{
    PENDING_REBOOT_TAINT, REBOOT_REQUIRED_LABEL, RECORD_ANNOTATION, STEP_LABEL,
};
use crate::core::rollout::DrainState;
use crate::metrics::ControllerMetrics;

/// One write the reconciler made, in order.
#[derive(Debug, Clone, PartialEq)]
enum Write {
    Node(String, Value),
    Status(String, Value),
    Policy(String, Value),
}

impl Write {
    fn kind(&self) -> (&'static str, &str) {
        match self {
            Write::Node(n, _) => ("node", n),
            Write::Status(p, _) => ("status", p),
            Write::Policy(p, _) => ("policy", p),
        }
    }
}

#[derive(Default)]
struct Server {
    nodes: BTreeMap<String, Value>,
    policies: BTreeMap<String, Value>,
    rv: u64,
    writes: Vec<Write>,
    /// Scripted answers: the next write to this object fails with this code.
    failures: VecDeque<(String, u16)>,
    events: Vec<(String, Event)>,
}

/// The fake API server behind [`Writes`].
#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<Server>>);

fn api_error(code: u16) -> kube::Error {
    let reason = if code == 409 {
        "Conflict"
    } else {
        "InternalError"
    };
    kube::Error::Api(Status::failure("scripted", reason).with_code(code).boxed())
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

impl Server {
    /// Applies `patch` to `object` as the API server does: scripted failure,
    /// then the resourceVersion precondition, then a new resourceVersion.
    fn patch(&mut self, name: &str, patch: &Value, nodes: bool) -> Result<Value, kube::Error> {
        if let Some(i) = self.failures.iter().position(|(n, _)| n == name) {
            let (_, code) = self.failures.remove(i).unwrap_or_default();
            return Err(api_error(code));
        }
        self.rv += 1;
        let rv = self.rv.to_string();
        let store = if nodes {
            &mut self.nodes
        } else {
            &mut self.policies
        };
        let Some(object) = store.get_mut(name) else {
            return Err(api_error(404));
        };
        let wanted = patch.pointer("/metadata/resourceVersion");
        if let Some(Value::String(w)) = wanted
            && object.pointer("/metadata/resourceVersion") != Some(&json!(w))
        {
            return Err(api_error(409));
        }
        merge_patch(object, patch);
        object["metadata"]["resourceVersion"] = json!(rv);
        Ok(object.clone())
    }
}

impl Writes for FakeApi {
    async fn patch_node(&self, node: &str, patch: Value) -> Result<Node, kube::Error> {
        let mut s = self.0.lock().unwrap();
        s.writes.push(Write::Node(node.into(), patch.clone()));
        let v = s.patch(node, &patch, true)?;
        Ok(serde_json::from_value(v).unwrap())
    }

    async fn patch_status(
        &self,
        policy: &str,
        patch: Value,
    ) -> Result<Option<String>, kube::Error> {
        let mut s = self.0.lock().unwrap();
        s.writes.push(Write::Status(policy.into(), patch.clone()));
        let v = s.patch(policy, &patch, false)?;
        Ok(v["metadata"]["resourceVersion"].as_str().map(String::from))
    }

    async fn patch_policy(&self, policy: &str, patch: Value) -> Result<(), kube::Error> {
        let mut s = self.0.lock().unwrap();
        s.writes.push(Write::Policy(policy.into(), patch.clone()));
        let v = s.patch(policy, &patch, false)?;
        // A deleted object goes when its last finalizer does.
        let finalizers = v.pointer("/metadata/finalizers").and_then(Value::as_array);
        if v.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers.is_none_or(|f| f.is_empty())
        {
            s.policies.remove(policy);
        }
        Ok(())
    }

    fn publish(&self, reference: ObjectReference, event: Event) {
        let about = format!(
            "{}/{}",
            reference.kind.unwrap_or_default(),
            reference.name.unwrap_or_default()
        );
        self.0.lock().unwrap().events.push((about, event));
    }
}

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "1",
                     "labels": {REBOOT_REQUIRED_LABEL: "true"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "nodeInfo": {"bootID": "b0", "machineID": "", "systemUUID": "",
                                "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "",
                                "kubeletVersion": "", "kubeProxyVersion": "",
                                "operatingSystem": "linux", "architecture": "amd64"}},
    })
}

fn policy(spec: Value) -> Value {
    let mut spec_v = json!({"revision": "r1"});
    merge_patch(&mut spec_v, &spec);
    json!({
        "apiVersion": "sofort.dev/v1alpha1", "kind": "PatchPolicy",
        "metadata": {"name": "p", "resourceVersion": "1", "generation": 1,
                     "finalizers": [FINALIZER]},
        "spec": spec_v,
    })
}

/// A reconciler with the fake, and the caches it is handed each pass.
struct Harness {
    api: FakeApi,
    rec: Reconciler<FakeApi>,
    metrics: ControllerMetrics,
    kicks: mpsc::UnboundedReceiver<()>,
    /// Never answered: drain workers wait on it (their client is not the seam).
    _drain_api: tower_test::mock::Handle<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >,
}

impl Harness {
    fn new(policies: Vec<Value>, nodes: Vec<Value>) -> Harness {
        let api = FakeApi::default();
        {
            let mut s = api.0.lock().unwrap();
            s.rv = 100;
            for n in nodes {
                let name = n["metadata"]["name"].as_str().unwrap().to_string();
                s.nodes.insert(name, n);
            }
            for p in policies {
                let name = p["metadata"]["name"].as_str().unwrap().to_string();
                s.policies.insert(name, p);
            }
        }
        let (mock, handle) = tower_test::mock::pair();
        let client = Client::new(mock, "default");
        let (kick, kicks) = mpsc::unbounded_channel();
        let metrics = ControllerMetrics::new();
        let cfg = ControllerConfig {
            namespace: "sofort-system".into(),
            lease_name: "sofort".into(),
            identity: "test".into(),
            lease_duration: Duration::from_secs(15),
            metrics_addr: "127.0.0.1:0".into(),
            max_evictions_in_flight: 5,
            eviction_retry: Duration::from_secs(5),
            leader_election: false,
            debounce: Duration::ZERO,
            watchdog: Duration::from_secs(300),
            gate_interval: Duration::from_secs(1),
            clock: Clock::system(),
            status_page: None,
        };
        let notifications =
            Notifications::start(client.clone(), crate::notify::NotifyMetrics::new());
        let rec = Reconciler::with_writes(
            api.clone(),
            client.clone(),
            client,
            cfg,
            metrics.clone(),
            kick,
            notifications,
        );
        Harness {
            api,
            rec,
            metrics,
            kicks,
            _drain_api: handle,
        }
    }

    /// The objects as the watch caches would hold them now.
    fn caches(&self) -> (Vec<Arc<ParsedPolicy>>, Vec<Arc<Node>>) {
        let s = self.api.0.lock().unwrap();
        let policies = s
            .policies
            .values()
            .map(|p| {
                let policy: PatchPolicy = serde_json::from_value(p.clone()).unwrap();
                Arc::new(ParsedPolicy::new(policy))
            })
            .collect();
        let nodes = s
            .nodes
            .values()
            .map(|n| Arc::new(serde_json::from_value(n.clone()).unwrap()))
            .collect();
        (policies, nodes)
    }

    /// One decision pass over the current objects.
    async fn pass(&mut self) -> Option<Duration> {
        let (policies, nodes) = self.caches();
        self.rec.tick(&policies, &nodes).await
    }

    /// The writes since the last call.
    fn take_writes(&self) -> Vec<Write> {
        std::mem::take(&mut self.api.0.lock().unwrap().writes)
    }

    /// The Events since the last call, as (object, reason).
    fn take_events(&self) -> Vec<(String, String)> {
        let events = std::mem::take(&mut self.api.0.lock().unwrap().events);
        events.into_iter().map(|(o, e)| (o, e.reason)).collect()
    }

    fn server_node(&self, name: &str) -> Value {
        self.api.0.lock().unwrap().nodes[name].clone()
    }

    fn server_policy(&self) -> Option<Value> {
        self.api.0.lock().unwrap().policies.get("p").cloned()
    }

    fn fail_next_write(&self, object: &str, code: u16) {
        let mut s = self.api.0.lock().unwrap();
        s.failures.push_back((object.into(), code));
    }

    fn kicked(&mut self) -> bool {
        let mut any = false;
        while self.kicks.try_recv().is_ok() {
            any = true;
        }
        any
    }

    fn reconcile_errors(&self) -> String {
        self.metrics
            .render()
            .lines()
            .find(|l| l.starts_with("sofort_reconcile_errors_total{"))
            .unwrap_or("")
            .to_string()
    }
}

fn kinds(writes: &[Write]) -> Vec<(&'static str, &str)> {
    writes.iter().map(Write::kind).collect()
}

fn taints(node: &Value) -> Value {
    node.pointer("/spec/taints").cloned().unwrap_or(json!([]))
}

fn label(node: &Value, key: &str) -> Option<String> {
    node.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
        .map(String::from)
}

fn unschedulable(node: &Value) -> bool {
    node.pointer("/spec/unschedulable") == Some(&json!(true))
}

#[tokio::test]
async fn claims_and_cordons_the_first_node_only() {
    let mut policy = policy(json!({}));
    policy["metadata"]["finalizers"] = json!([]);
    let mut h = Harness::new(vec![policy], vec![node("n1"), node("n2")]);
    h.pass().await;
    let writes = h.take_writes();
    assert_eq!(
        kinds(&writes),
        vec![
            ("policy", "p"),
            ("node", "n1"),
            ("status", "p"),
            ("node", "n2")
        ],
        "{writes:#?}"
    );
    // n2 waits its turn: it gets the pending-reboot taint, conditionally.
    let Write::Node(_, taint) = &writes[3] else {
        unreachable!()
    };
    assert_eq!(
        taint,
        &json!({"metadata": {"resourceVersion": "1"},
                "spec": {"taints": [{"key": PENDING_REBOOT_TAINT, "effect": "PreferNoSchedule"}]}})
    );
    // The finalizer first, conditional on the policy as read.
    let Write::Policy(_, fin) = &writes[0] else {
        unreachable!()
    };
    assert_eq!(fin["metadata"]["finalizers"], json!([FINALIZER]));
    assert_eq!(fin["metadata"]["resourceVersion"], "1");
    // The claim: record, step label and cordon in one write, conditional on
    // the node's resourceVersion.
    let Write::Node(_, claim) = &writes[1] else {
        unreachable!()
    };
    assert_eq!(claim["metadata"]["resourceVersion"], "1");
    assert_eq!(claim["spec"]["unschedulable"], true);
    assert_eq!(claim["metadata"]["labels"][STEP_LABEL], "Draining");
    let n1 = h.server_node("n1");
    assert!(unschedulable(&n1));
    assert!(n1["metadata"]["annotations"][RECORD_ANNOTATION].is_string());
    assert!(!unschedulable(&h.server_node("n2")));
    let status = h.server_policy().unwrap()["status"].clone();
    assert_eq!(status["phase"], "Progressing", "{status:#}");
    assert_eq!(
        h.take_events(),
        vec![("Node/n1".to_string(), "Cordoned".to_string())]
    );
    // Its drain worker runs.
    assert!(matches!(
        h.rec.drains.state("n1"),
        DrainState::Running { .. }
    ));

    // The next pass with nothing new writes nothing: n1 is still draining,
    // the budget of one is used.
    h.pass().await;
    assert_eq!(h.take_writes(), vec![]);
    assert_eq!(h.take_events(), vec![]);
}

#[tokio::test]
async fn a_conflict_on_a_claim_writes_nothing_else_and_is_decided_again() {
    let mut h = Harness::new(vec![policy(json!({}))], vec![node("n1")]);
    // Someone changes n1 after the caches were read: the claim, conditional
    // on the old resourceVersion, loses.
    let (policies, nodes) = h.caches();
    {
        let mut s = h.api.0.lock().unwrap();
        s.nodes.get_mut("n1").unwrap()["metadata"]["resourceVersion"] = json!("7");
    }
    h.rec.tick(&policies, &nodes).await;
    let writes = h.take_writes();
    assert_eq!(kinds(&writes)[0], ("node", "n1"));
    assert!(!unschedulable(&h.server_node("n1")));
    assert!(
        !h.take_events().iter().any(|(_, r)| r == "Cordoned"),
        "no Event for a claim that was not stored"
    );
    assert!(h.kicked(), "a lost claim asks for another pass");
    // A conflict is not an error.
    assert_eq!(h.reconcile_errors(), "");
    assert!(matches!(h.rec.drains.state("n1"), DrainState::Idle));

    // From fresh caches the claim succeeds.
    h.pass().await;
    assert!(unschedulable(&h.server_node("n1")));
    assert!(
        h.take_events()
            .iter()
            .any(|(o, r)| o == "Node/n1" && r == "Cordoned")
    );
}

#[tokio::test(start_paused = true)]
async fn status_is_written_once_per_change_and_progress_at_most_once_a_second() {
    let mut h = Harness::new(vec![policy(json!({}))], vec![node("n1"), node("n2")]);
    h.pass().await;
    let statuses = |w: &[Write]| w.iter().filter(|w| matches!(w, Write::Status(..))).count();
    assert_eq!(statuses(&h.take_writes()), 1);
    // Unchanged: not written again.
    h.pass().await;
    assert_eq!(statuses(&h.take_writes()), 0);

    // The stored status differs only in progress (its message): held back
    // while the last write is under a second old, and the pass asks to be
    // run again when it may be written.
    let stale = |h: &Harness, field: &str, value: Value| {
        let mut s = h.api.0.lock().unwrap();
        s.policies.get_mut("p").unwrap()["status"][field] = value;
    };
    stale(&h, "message", json!("0/2 updated (stale)"));
    tokio::time::advance(Duration::from_millis(400)).await;
    let requeue = h.pass().await.expect("a deferred status asks for a pass");
    assert!(requeue <= Duration::from_millis(600), "{requeue:?}");
    assert_eq!(statuses(&h.take_writes()), 0);
    tokio::time::advance(requeue).await;
    h.pass().await;
    let writes = h.take_writes();
    assert_eq!(statuses(&writes), 1);
    assert_ne!(
        h.server_policy().unwrap()["status"]["message"],
        "0/2 updated (stale)"
    );

    // Anything but progress is written at once.
    stale(&h, "phase", json!("Waiting"));
    h.pass().await;
    assert_eq!(statuses(&h.take_writes()), 1);
    assert_eq!(h.server_policy().unwrap()["status"]["phase"], "Progressing");
}

#[tokio::test]
async fn a_deleted_policy_releases_its_nodes_and_then_its_finalizer() {
    let mut h = Harness::new(vec![policy(json!({}))], vec![node("n1"), node("n2")]);
    h.pass().await;
    assert!(unschedulable(&h.server_node("n1")));
    h.take_writes();
    h.take_events();
    {
        let mut s = h.api.0.lock().unwrap();
        s.policies.get_mut("p").unwrap()["metadata"]["deletionTimestamp"] =
            json!("2026-11-27T00:00:00Z");
    }
    h.pass().await;
    let writes = h.take_writes();
    assert_eq!(
        kinds(&writes),
        vec![("node", "n1"), ("policy", "p"), ("node", "n2")],
        "{writes:#?}"
    );
    // No policy wants n2 any more: its taint goes.
    assert_eq!(taints(&h.server_node("n2")), json!([]));
    let n1 = h.server_node("n1");
    assert!(
        !unschedulable(&n1),
        "sofort cordoned it, so it uncordons it"
    );
    assert!(
        n1.pointer("/metadata/labels")
            .unwrap()
            .get(STEP_LABEL)
            .is_none()
    );
    assert!(
        n1.pointer(&format!(
            "/metadata/annotations/{}",
            RECORD_ANNOTATION.replace('/', "~1")
        ))
        .is_none()
    );
    assert_eq!(
        h.take_events(),
        vec![("Node/n1".to_string(), "Released".to_string())]
    );
    assert!(matches!(h.rec.drains.state("n1"), DrainState::Idle));
    assert!(h.server_policy().is_none(), "the finalizer went last");
}

#[tokio::test]
async fn a_deleted_policy_keeps_its_finalizer_while_a_node_reboots() {
    let mut n1 = node("n1");
    // Rebooting since now: well within the reboot timeout.
    let at = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .unwrap()
        .to_string();
    let record = json!({"policy": "p", "revision": "r1", "step": "Rebooting", "since": at,
                        "started": at, "wasUnschedulable": false, "bootIdBefore": "b0"});
    n1["metadata"]["labels"][STEP_LABEL] = json!("Rebooting");
    n1["metadata"]["annotations"] = json!({RECORD_ANNOTATION: record.to_string()});
    n1["spec"] = json!({"unschedulable": true});
    let mut p = policy(json!({}));
    p["metadata"]["deletionTimestamp"] = json!(at);
    let mut h = Harness::new(vec![p], vec![n1]);
    let requeue = h.pass().await.expect("looks again while a node reboots");
    assert!(requeue <= Duration::from_secs(5));
    assert!(
        !h.take_writes()
            .iter()
            .any(|w| matches!(w, Write::Policy(..))),
        "the finalizer stays"
    );
    assert!(h.server_policy().is_some());
    let n1 = h.server_node("n1");
    assert!(unschedulable(&n1));
    assert_eq!(n1["metadata"]["labels"][STEP_LABEL], "Rebooting");
}

#[tokio::test]
async fn an_invalid_spec_is_stalled_with_one_event() {
    let mut h = Harness::new(
        vec![policy(json!({"drain": {"timeout": "soon"}}))],
        vec![node("n1")],
    );
    h.pass().await;
    h.pass().await;
    let writes = h.take_writes();
    assert_eq!(kinds(&writes), vec![("status", "p")], "{writes:#?}");
    let status = h.server_policy().unwrap()["status"].clone();
    assert_eq!(status["phase"], "Halted");
    let stalled = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Stalled")
        .cloned()
        .unwrap();
    assert_eq!(
        (stalled["status"].as_str(), stalled["reason"].as_str()),
        (Some("True"), Some("InvalidSpec"))
    );
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("spec.drain.timeout"),
        "{stalled}"
    );
    let events = h.take_events();
    assert_eq!(
        events,
        vec![("PatchPolicy/p".to_string(), "InvalidSpec".to_string())]
    );
    assert!(!unschedulable(&h.server_node("n1")));
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_counted_and_retried_after_a_backoff() {
    let mut h = Harness::new(vec![policy(json!({}))], vec![node("n1")]);
    h.fail_next_write("n1", 500);
    let requeue = h.pass().await.expect("a failed write asks to be retried");
    assert_eq!(kinds(&h.take_writes())[0], ("node", "n1"));
    assert!(!unschedulable(&h.server_node("n1")));
    assert_eq!(
        h.reconcile_errors(),
        "sofort_reconcile_errors_total{policy=\"p\"} 1"
    );
    assert!(h.kicked(), "a failed write asks for another pass");
    assert!(!h.take_events().iter().any(|(_, r)| r == "Cordoned"));
    assert!(
        requeue >= Duration::from_millis(200) && requeue <= Duration::from_millis(300),
        "{requeue:?}"
    );

    // Not sent again before its backoff ends.
    h.pass().await;
    assert!(
        !h.take_writes().iter().any(|w| matches!(w, Write::Node(..))),
        "held back"
    );
    assert_eq!(node_writes(&h, "claim", "held"), 1);
    tokio::time::advance(requeue).await;
    h.pass().await;
    assert!(unschedulable(&h.server_node("n1")));
    assert_eq!(node_writes(&h, "claim", "error"), 1);
    assert_eq!(node_writes(&h, "claim", "stored"), 1);
    assert!(
        h.take_events()
            .iter()
            .any(|(o, r)| o == "Node/n1" && r == "Cordoned")
    );
    assert_eq!(
        h.reconcile_errors(),
        "sofort_reconcile_errors_total{policy=\"p\"} 1"
    );
}

/// The value of `sofort_node_writes_total` for one action and result.
fn node_writes(h: &Harness, action: &str, result: &str) -> u64 {
    let series = format!("sofort_node_writes_total{{action=\"{action}\",result=\"{result}\"}} ");
    h.metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&series).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Writes sent to Node `n1` (the other node's pending-reboot taint is not
/// what these tests count).
fn node_writes_sent(writes: &[Write]) -> usize {
    writes
        .iter()
        .filter(|w| matches!(w, Write::Node(n, _) if n == "n1"))
        .count()
}

// The store lags the server: the claim, decided from version 1, loses
// while the caches still show version 1. Passes that follow (the loop runs
// one as soon as a write fails, and on every other change) must not send
// it again from the same old version: that was a request storm.
#[tokio::test(start_paused = true)]
async fn a_lost_claim_waits_for_a_newer_version_before_it_is_sent_again() {
    let mut h = Harness::new(vec![policy(json!({}))], vec![node("n1"), node("n2")]);
    h.fail_next_write("n1", 409);
    let (policies, stale) = h.caches();
    h.rec.tick(&policies, &stale).await;
    assert_eq!(node_writes_sent(&h.take_writes()), 1);
    assert_eq!(node_writes(&h, "claim", "conflict"), 1);
    assert!(h.kicked());
    // A conflict is not an error.
    assert_eq!(h.reconcile_errors(), "");
    for _ in 0..20 {
        tokio::time::advance(Duration::from_millis(5)).await;
        let (policies, _) = h.caches();
        h.rec.tick(&policies, &stale).await;
    }
    assert_eq!(
        node_writes_sent(&h.take_writes()),
        0,
        "no re-send from the old version"
    );
    assert!(node_writes(&h, "claim", "held") >= 20);
    assert!(!unschedulable(&h.server_node("n1")));
    assert!(matches!(h.rec.drains.state("n1"), DrainState::Idle));
    // The store delivers a newer version: decided again at once, and stored.
    {
        let mut s = h.api.0.lock().unwrap();
        s.nodes.get_mut("n1").unwrap()["metadata"]["resourceVersion"] = json!("150");
    }
    h.pass().await;
    assert!(unschedulable(&h.server_node("n1")));
    assert_eq!(node_writes(&h, "claim", "stored"), 1);
}

// A store that never catches up (a watch that missed the change) must not
// hold the node for ever: the hold ends with its backoff.
#[tokio::test(start_paused = true)]
async fn a_lost_claim_is_sent_again_after_its_backoff_if_no_newer_version_comes() {
    let mut h = Harness::new(vec![policy(json!({}))], vec![node("n1")]);
    let (policies, stale) = h.caches();
    {
        let mut s = h.api.0.lock().unwrap();
        s.nodes.get_mut("n1").unwrap()["metadata"]["resourceVersion"] = json!("7");
    }
    let requeue = h
        .rec
        .tick(&policies, &stale)
        .await
        .expect("wakes for the retry");
    assert_eq!(node_writes(&h, "claim", "conflict"), 1);
    assert!(requeue <= Duration::from_millis(300), "{requeue:?}");
    // Passes every 10 ms over 10 s on the stale copy: each retry loses and
    // the waits double (0.25, 0.5, 1, 2, 4 s…), so a handful, not a thousand.
    for _ in 0..1000 {
        tokio::time::advance(Duration::from_millis(10)).await;
        h.rec.tick(&policies, &stale).await;
    }
    let sent = node_writes_sent(&h.take_writes());
    assert!((4..=8).contains(&sent), "{sent} claims sent in 10 s");
    assert_eq!(node_writes(&h, "claim", "conflict"), sent as u64);
    // Once stored, the next failure starts from the first backoff again.
    h.pass().await;
    assert!(unschedulable(&h.server_node("n1")));
    assert!(h.rec.holds.next_due(tokio::time::Instant::now()).is_none());
}

#[tokio::test]
async fn an_event_about_a_node_is_scrubbed_of_embargoed_details() {
    let details = "CVE-2026-9999";
    let p = policy(json!({"notify": {"webhooks": [], "advisory": {
        "summary": "maintenance", "details": details}}}));
    let n = node(&format!("{}-a", details.to_lowercase()));
    let mut h = Harness::new(vec![p], vec![n]);
    h.pass().await;
    let events = std::mem::take(&mut h.api.0.lock().unwrap().events);
    assert!(!events.is_empty());
    for (_, e) in events {
        let note = e.note.unwrap_or_default().to_lowercase();
        assert!(!note.contains(&details.to_lowercase()), "{note}");
    }
}

#[tokio::test]
async fn status_writes_that_fail_are_errors_and_retried() {
    let mut h = Harness::new(vec![policy(json!({}))], vec![node("n1")]);
    h.fail_next_write("p", 500);
    let requeue = h.pass().await;
    assert!(
        requeue.is_some_and(|r| r <= Duration::from_secs(2)),
        "{requeue:?}"
    );
    assert_eq!(
        h.reconcile_errors(),
        "sofort_reconcile_errors_total{policy=\"p\"} 1"
    );
    assert!(h.server_policy().unwrap().get("status").is_none());
    h.pass().await;
    assert_eq!(h.server_policy().unwrap()["status"]["phase"], "Progressing");
}

#[test]
fn the_fake_applies_merge_patches_like_the_server() {
    let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
    merge_patch(&mut v, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
    assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
}

// --- health gates ---

fn named(mut p: Value, name: &str) -> Value {
    p["metadata"]["name"] = json!(name);
    p
}

fn pooled(name: &str, pool: &str) -> Value {
    let mut n = node(name);
    n["metadata"]["labels"]["pool"] = json!(pool);
    n
}

/// A 127.0.0.1 endpoint that accepts connections and never answers.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (url, task)
}

fn gate_reason(h: &Harness, policy: &str) -> String {
    let s = h.api.0.lock().unwrap();
    s.policies[policy]["status"]["gates"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

// In paused time a pass that waited for the black hole would take the
// request's timeout (10 s) of virtual time; the pass must take none.
#[tokio::test(start_paused = true)]
async fn a_black_holed_gate_endpoint_does_not_delay_another_policys_pass() {
    let (url, _hole) = black_hole().await;
    let slow = named(
        policy(json!({"nodeSelector": {"matchLabels": {"pool": "a"}},
                      "gates": {"prometheus": {"url": url, "alerts": {}}}})),
        "a-slow",
    );
    let fast = named(
        policy(json!({"nodeSelector": {"matchLabels": {"pool": "b"}}})),
        "b-fast",
    );
    let mut h = Harness::new(vec![slow, fast], vec![pooled("a1", "a"), pooled("b1", "b")]);
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        h.pass().await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(100), "a pass took {took:?}");
    }
    // The ungated policy decided: b1 is claimed; the gated one fails safe.
    assert!(unschedulable(&h.server_node("b1")));
    assert!(!unschedulable(&h.server_node("a1")));
    assert!(
        gate_reason(&h, "a-slow").ends_with("not checked yet"),
        "{}",
        gate_reason(&h, "a-slow")
    );
    // The black-holed check ends at its bound; the gate stays closed and says why.
    tokio::time::sleep(Duration::from_secs(11)).await;
    h.pass().await;
    let reason = gate_reason(&h, "a-slow");
    assert!(reason.contains("check failed"), "{reason}");
    assert!(!unschedulable(&h.server_node("a1")));
}

#[tokio::test]
async fn gate_observations_of_a_deleted_policy_are_dropped() {
    let (url, _hole) = black_hole().await;
    let gated = policy(json!({"gates": {"prometheus": {"url": url, "alerts": {}},
                                        "blockingPods": [{"selector": {"matchLabels": {"app": "x"}}}]}}));
    let mut h = Harness::new(vec![gated], vec![node("n1")]);
    h.pass().await;
    assert!(h.rec.gates.held() >= 2, "{}", h.rec.gates.held());
    assert_eq!(h.rec.preflights.held(), 1);
    h.api.0.lock().unwrap().policies.clear();
    h.pass().await;
    assert_eq!(h.rec.gates.held(), 0);
    assert_eq!(h.rec.preflights.held(), 0);
}

#[tokio::test]
async fn quiet_drains_taint_queued_nodes_and_label_only_what_sofort_set() {
    let spec = json!({"rollout": {"nodeLabels": {"during": {
        "lb-exclude": "true", "example.com/maintenance": "yes"}}}});
    let mut n1 = node("n1");
    n1["metadata"]["labels"]["example.com/maintenance"] = json!("admin");
    let mut n2 = node("n2");
    let gpu = json!({"key": "example.com/gpu", "value": "a100", "effect": "NoSchedule"});
    n2["spec"] = json!({"taints": [gpu.clone()]});
    let mut h = Harness::new(vec![policy(spec)], vec![n1, n2]);
    // The taint write loses once (someone changed n2): tried again soon.
    h.fail_next_write("n2", 409);
    let again = h.pass().await;
    assert!(
        again.is_some_and(|d| d <= Duration::from_secs(1)),
        "{again:?}"
    );
    assert_eq!(taints(&h.server_node("n2")), json!([gpu.clone()]));
    h.take_writes();
    h.pass().await;
    let writes = h.take_writes();
    assert_eq!(kinds(&writes), vec![("node", "n2")], "{writes:#?}");
    // The admin's taint is kept, sofort's added.
    let pending = json!({"key": PENDING_REBOOT_TAINT, "effect": "PreferNoSchedule"});
    assert_eq!(
        taints(&h.server_node("n2")),
        json!([gpu.clone(), pending.clone()])
    );
    // A pass with nothing new writes no taint again.
    h.pass().await;
    assert_eq!(h.take_writes(), vec![]);

    // n1 was claimed with the label it lacked; the admin's own stays as it was.
    let n1 = h.server_node("n1");
    assert_eq!(label(&n1, "lb-exclude").as_deref(), Some("true"));
    assert_eq!(
        label(&n1, "example.com/maintenance").as_deref(),
        Some("admin")
    );
    let record: Value = serde_json::from_str(
        n1["metadata"]["annotations"][RECORD_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["labels"], json!({"lb-exclude": "true"}));

    // n1 comes back and has settled: its release removes the recorded label
    // with the uncordon, in one write; n2 is claimed and loses its taint.
    {
        let mut s = h.api.0.lock().unwrap();
        let n1 = s.nodes.get_mut("n1").unwrap();
        let settled = json!({"policy": "p", "revision": "r1", "step": "Settling",
            "since": "2020-01-01T00:00:00Z", "started": "2020-01-01T00:00:00Z",
            "wasUnschedulable": false, "bootIdBefore": "b-old",
            "labels": {"lb-exclude": "true"}});
        n1["metadata"]["annotations"][RECORD_ANNOTATION] = json!(settled.to_string());
        n1["metadata"]["labels"][STEP_LABEL] = json!("Settling");
        n1["metadata"]["resourceVersion"] = json!("900");
    }
    h.pass().await;
    let writes = h.take_writes();
    let Write::Node(_, release) = &writes[0] else {
        panic!("{writes:#?}")
    };
    assert!(release["metadata"]["labels"]["lb-exclude"].is_null());
    assert_eq!(release["spec"], json!({"unschedulable": null}));
    let n1 = h.server_node("n1");
    assert!(!unschedulable(&n1));
    assert_eq!(label(&n1, "lb-exclude"), None);
    assert_eq!(
        label(&n1, "example.com/maintenance").as_deref(),
        Some("admin")
    );
    let n2 = h.server_node("n2");
    assert!(unschedulable(&n2), "n2 takes the freed slot");
    assert_eq!(taints(&n2), json!([gpu]), "claimed: the taint goes");
    assert_eq!(taints(&n1), json!([]), "done: never tainted again");
}

#[tokio::test]
async fn a_taint_another_policy_still_wants_stays_until_none_does() {
    // Both policies select n1 and announce a day ahead: no node starts yet.
    let ahead = json!({"announce": {"leadTime": "24h"}});
    let a = named(policy(ahead.clone()), "a");
    let b = named(policy(ahead), "b");
    let mut h = Harness::new(vec![a, b], vec![node("n1")]);
    h.pass().await;
    let pending = json!([{"key": PENDING_REBOOT_TAINT, "effect": "PreferNoSchedule"}]);
    assert_eq!(taints(&h.server_node("n1")), pending);
    let node_writes = |w: &[Write]| w.iter().filter(|w| w.kind().0 == "node").count();
    assert_eq!(
        node_writes(&h.take_writes()),
        1,
        "one taint for two policies"
    );

    let pause = |h: &Harness, name: &str| {
        let mut s = h.api.0.lock().unwrap();
        let p = s.policies.get_mut(name).unwrap();
        p["spec"]["paused"] = json!(true);
        p["metadata"]["generation"] = json!(2);
    };
    // `a` pauses: `b` still wants the taint, so it stays.
    pause(&h, "a");
    h.pass().await;
    assert_eq!(taints(&h.server_node("n1")), pending);
    assert_eq!(node_writes(&h.take_writes()), 0);
    // `b` pauses too: nobody wants it, it goes.
    pause(&h, "b");
    h.pass().await;
    assert_eq!(taints(&h.server_node("n1")), json!([]));
    assert_eq!(node_writes(&h.take_writes()), 1);
}
