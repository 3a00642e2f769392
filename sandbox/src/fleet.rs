//! The simulated fleet: kubelets (Ready, bootID, pod start and termination),
//! node reboots, a least-loaded scheduler, and the workload, garbage
//! collection and disruption controllers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{DeleteOpts, SharedRef, WriteOpts, create_object, delete_object, random_suffix};
use crate::eviction::pod_ready;
use crate::host::{FleetCmd, SimHost};
use crate::scenario::{DurationRange, Scenario, Workload};
use crate::store::{
    Change, EventType, Route, Store, Subscription, WATCH_QUEUE, WatchEvent, meta_str, new_uid,
    now_rfc3339,
};
use tokio::sync::mpsc::error::TryRecvError;

pub(crate) type Hosts = Arc<Mutex<HashMap<String, SimHost>>>;

/// Node annotation that asks the node's simulated host to create its
/// reboot-required sentinel, as an unattended upgrade would (`kubectl annotate
/// node NAME sandbox.sofort.dev/needs-reboot=true`). The fleet removes it once
/// the sentinel exists, so it is a one-shot request: the next reboot clears the
/// sentinel and nothing sets it again. Only the value `true` is acted on; while
/// the host is rebooting the annotation waits until it is back up.
pub const NEEDS_REBOOT_ANNOTATION: &str = "sandbox.sofort.dev/needs-reboot";

/// An annotation that makes the workload controllers report a Deployment,
/// ReplicaSet, StatefulSet or DaemonSet unhealthy while its value is `true`:
/// at most one replica (one node for a DaemonSet) fewer than desired is
/// reported ready and available, whatever its pods say. Its pods stay as
/// they are, so PodDisruptionBudgets and evictions do not change.
pub const UNHEALTHY_ANNOTATION: &str = "sandbox.sofort.dev/unhealthy";

/// Whether `obj` carries [`UNHEALTHY_ANNOTATION`]` = "true"`.
fn marked_unhealthy(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(UNHEALTHY_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true")
}

/// `have` ready replicas of `want`, as reported: one short of `want` at most
/// while the object is marked unhealthy.
fn reported_ready(obj: &Value, have: i64, want: i64) -> i64 {
    if marked_unhealthy(obj) {
        have.min(want - 1).max(0)
    } else {
        have
    }
}

struct Timing {
    pod_start: (Duration, Duration),
    pod_termination: Duration,
    reboot: (Duration, Duration),
}

pub(crate) struct Fleet {
    sh: SharedRef,
    hosts: Hosts,
    timing: Timing,
    rng: fastrand::Rng,
    controllers: bool,
    /// Pods waiting to start, by uid.
    ready_at: HashMap<String, PodTimer>,
    /// Terminating pods waiting to be gone, by uid.
    gone_at: HashMap<String, PodTimer>,
    rebooting: HashMap<String, Instant>,
    ip: u32,
}

/// When a pod's next kubelet step is due, and which pod it is.
struct PodTimer {
    at: Instant,
    ns: String,
    name: String,
}

fn scale(r: &DurationRange, speed: f64) -> (Duration, Duration) {
    (r.min.0.div_f64(speed), r.max.0.div_f64(speed))
}

fn terminating(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
}

fn controller_uid(v: &Value) -> Option<&str> {
    v.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)?
        .get("uid")?
        .as_str()
}

fn owner_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": meta_str(owner, "name"), "uid": meta_str(owner, "uid"), "controller": true, "blockOwnerDeletion": true})
}

/// A node the scheduler may bind pods to: Ready and schedulable, with the
/// taints a pod must tolerate.
struct Candidate<'a> {
    node: &'a Arc<Value>,
    name: &'a str,
    labels: Option<&'a serde_json::Map<String, Value>>,
    taints: Vec<&'a Value>,
}

fn node_ready(n: &Value) -> bool {
    n.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn active(p: &Value) -> bool {
    !terminating(p)
        && !matches!(
            p.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

pub(crate) fn node_object(
    name: &str,
    labels: &BTreeMap<String, String>,
    unschedulable: bool,
    boot_id: &str,
    ip: &str,
) -> Value {
    let now = now_rfc3339();
    let mut n = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {},
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "8", "memory": "31Gi", "pods": "110", "ephemeral-storage": "95Gi"},
            "conditions": ready_conditions(true, &now),
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": new_uid().replace('-', ""),
                "systemUUID": new_uid(),
                "bootID": boot_id,
                "kernelVersion": "6.1.0-sim-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": "v1.33.0",
                "kubeProxyVersion": "v1.33.0",
                "operatingSystem": "linux",
                "architecture": "amd64"
            }
        }
    });
    if unschedulable {
        n["spec"]["unschedulable"] = json!(true);
    }
    n
}

fn ready_conditions(ready: bool, now: &str) -> Value {
    let (status, reason, message) = if ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        ("False", "KubeletNotReady", "node is rebooting")
    };
    json!([
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": now},
        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
        {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now, "lastTransitionTime": now},
        {"type": "Ready", "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now},
    ])
}

fn template_hash(t: &Value) -> String {
    let mut h = DefaultHasher::new();
    t.to_string().hash(&mut h);
    let mut x = h.finish();
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|_| {
            let c = alphabet[(x % alphabet.len() as u64) as usize] as char;
            x /= alphabet.len() as u64;
            c
        })
        .collect()
}

/// Objects the scenario asks for: namespaces, workloads, PDBs.
pub(crate) fn workload_objects(w: &Workload) -> Vec<Value> {
    let labels = json!({"app": w.name});
    let mut container = json!({"name": "app", "image": format!("registry.example/{}:1.0", w.name)});
    let mut spec = json!({"containers": []});
    if w.empty_dir {
        container["volumeMounts"] = json!([{"name": "scratch", "mountPath": "/scratch"}]);
        spec["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
    }
    spec["containers"] = json!([container]);
    if !w.node_selector.is_empty() {
        spec["nodeSelector"] = json!(w.node_selector);
    }
    if let Some(g) = w.termination_grace_period_seconds {
        spec["terminationGracePeriodSeconds"] = json!(g);
    }
    let template = json!({"metadata": {"labels": labels}, "spec": spec});
    let meta = json!({"name": w.name, "namespace": w.namespace, "labels": labels});
    let mut out = vec![];
    match w.kind.as_str() {
        "Deployment" => out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"replicas": w.replicas, "selector": {"matchLabels": labels}, "template": template}})),
        "StatefulSet" => out.push(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta, "spec": {"replicas": w.replicas, "serviceName": w.name, "selector": {"matchLabels": labels}, "template": template}})),
        "DaemonSet" => out.push(json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta, "spec": {"selector": {"matchLabels": labels}, "template": template}})),
        _ => out.push(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})),
    }
    if let Some(p) = &w.pdb {
        let mut spec = json!({"selector": {"matchLabels": labels}});
        if let Some(m) = &p.min_available {
            spec["minAvailable"] = m.clone();
        }
        if let Some(m) = &p.max_unavailable {
            spec["maxUnavailable"] = m.clone();
        }
        if let Some(u) = &p.unhealthy_pod_eviction_policy {
            spec["unhealthyPodEvictionPolicy"] = json!(u);
        }
        out.push(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": w.name, "namespace": w.namespace}, "spec": spec}));
    }
    out
}

impl Fleet {
    pub(crate) fn new(sh: SharedRef, scenario: &Scenario, hosts: Hosts, controllers: bool) -> Self {
        let speed = scenario.speed;
        Fleet {
            sh,
            hosts,
            timing: Timing {
                pod_start: scale(&scenario.timing.pod_start, speed),
                pod_termination: scenario.timing.pod_termination.0.div_f64(speed),
                reboot: scale(&scenario.timing.reboot, speed),
            },
            rng: fastrand::Rng::with_seed(scenario.seed),
            controllers,
            ready_at: HashMap::new(),
            gone_at: HashMap::new(),
            rebooting: HashMap::new(),
            ip: 0,
        }
    }

    fn draw(&mut self, r: (Duration, Duration)) -> Duration {
        if r.1 <= r.0 {
            return r.0;
        }
        let span = (r.1 - r.0).as_secs_f64();
        r.0 + Duration::from_secs_f64(span * self.rng.f64())
    }

    fn next_ip(&mut self) -> String {
        self.ip += 1;
        format!("10.244.{}.{}", (self.ip / 250) % 250, self.ip % 250 + 2)
    }

    fn info(&self, group: &str, resource: &str) -> Option<Arc<crate::registry::ResourceInfo>> {
        let version = "v1";
        self.sh.registry.lookup(group, version, resource)
    }

    fn create(&self, group: &str, resource: &str, ns: &str, obj: Value) {
        let Some(info) = self.info(group, resource) else {
            return;
        };
        if let Err(e) = create_object(&self.sh, &info, ns, obj, &WriteOpts::default(), false)
            && e.code != 409
        {
            tracing::warn!(resource, ns, error = %e, "simulated controller could not create an object");
        }
    }

    fn delete(&self, group: &str, resource: &str, ns: &str, name: &str, grace: Option<i64>) {
        let Some(info) = self.info(group, resource) else {
            return;
        };
        let _ = delete_object(
            &self.sh,
            &info,
            ns,
            name,
            &DeleteOpts {
                grace_period: grace,
                ..Default::default()
            },
        );
    }

    fn update(&self, gr: &str, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let _ = self.sh.store.mutate(gr, ns, name, |cur| {
            let Some(cur) = cur else {
                return Ok((Change::Keep, ()));
            };
            let mut n = (**cur).clone();
            f(&mut n);
            Ok((Change::Put(n), ()))
        });
    }

    /// Create the scenario's nodes and workloads.
    pub(crate) fn seed(&mut self, scenario: &Scenario, cmd: &mpsc::UnboundedSender<FleetCmd>) {
        for (name, labels, unschedulable, never) in scenario.node_list() {
            let boot = new_uid();
            let ip = format!("10.0.{}.{}", (self.ip / 250) % 250, self.ip % 250 + 10);
            self.ip += 1;
            self.create(
                "",
                "nodes",
                "",
                node_object(&name, &labels, unschedulable, &boot, &ip),
            );
            self.hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone(), SimHost::new(&name, boot, cmd.clone()));
            if never {
                self.sh.faults.node_never_returns(&name, true);
            }
        }
        let mut namespaces: Vec<String> = scenario
            .workloads
            .iter()
            .map(|w| w.namespace.clone())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        for ns in namespaces {
            self.create(
                "",
                "namespaces",
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            );
        }
        for w in &scenario.workloads {
            for obj in workload_objects(w) {
                self.create_any(obj);
            }
        }
        for obj in &scenario.objects {
            self.create_any(obj.clone());
        }
    }

    fn create_any(&self, obj: Value) {
        let av = obj["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        match self.sh.registry.by_kind(&av, &kind) {
            Some(info) => {
                let ns = if info.namespaced {
                    let n = meta_str(&obj, "namespace");
                    if n.is_empty() {
                        "default".to_string()
                    } else {
                        n.to_string()
                    }
                } else {
                    String::new()
                };
                if let Err(e) =
                    create_object(&self.sh, &info, &ns, obj, &WriteOpts::default(), false)
                {
                    tracing::warn!(%kind, error = %e, "scenario object not created");
                }
            }
            None => {
                tracing::warn!(api_version = %av, %kind, "scenario object of an unknown kind skipped")
            }
        }
    }

    fn host(&self, node: &str) -> Option<SimHost> {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }

    fn start_reboot(&mut self, node: &str) {
        let down_for = self.draw(self.timing.reboot);
        self.rebooting
            .insert(node.to_string(), Instant::now() + down_for);
        tracing::info!(node, ?down_for, "simulated reboot");
        let now = now_rfc3339();
        self.update("nodes", "", node, |n| {
            n["status"]["conditions"] = ready_conditions(false, &now);
            let mut taints: Vec<Value> = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
            if !taints.iter().any(|t| t["key"] == "node.kubernetes.io/not-ready") {
                taints.push(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule", "timeAdded": now}));
            }
            n["spec"]["taints"] = Value::Array(taints);
        });
        for p in self.sh.store.pods_on_node(node) {
            self.delete(
                "",
                "pods",
                meta_str(&p, "namespace"),
                meta_str(&p, "name"),
                Some(0),
            );
        }
    }

    fn finish_reboot(&mut self, node: &str) {
        self.rebooting.remove(node);
        let boot = new_uid();
        let now = now_rfc3339();
        // The host is up (new boot ID, sentinel gone) before its kubelet
        // reports Ready, so whoever sees the Ready Node sees the new host.
        if let Some(h) = self.host(node) {
            let mut s = h.state.lock().unwrap_or_else(|e| e.into_inner());
            s.boot_id = boot.clone();
            s.up = true;
            s.reboot_required = false;
        }
        self.update("nodes", "", node, |n| {
            n["status"]["conditions"] = ready_conditions(true, &now);
            n["status"]["nodeInfo"]["bootID"] = json!(boot);
            if let Some(t) = n["spec"]["taints"].as_array_mut() {
                t.retain(|t| t["key"] != "node.kubernetes.io/not-ready");
                if t.is_empty()
                    && let Some(spec) = n["spec"].as_object_mut()
                {
                    spec.remove("taints");
                }
            }
        });
        tracing::info!(node, "simulated node back after reboot");
    }

    pub(crate) fn handle(&mut self, cmd: FleetCmd) {
        match cmd {
            FleetCmd::Reboot(node) => self.start_reboot(&node),
        }
    }

    /// One pass over the whole fleet: everything [`Fleet::on_change`] and
    /// [`Fleet::run_timers`] do (so a change they missed is caught up with),
    /// plus scheduling and the workload, garbage collection and disruption
    /// controllers.
    pub(crate) fn pass(&mut self) {
        let now = Instant::now();
        self.run_timers(now);
        let nodes = self.sh.store.all("nodes", None);
        for n in &nodes {
            self.sentinel_request(n);
        }
        let simulated: HashSet<String> = self
            .hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut pods = self.sh.store.all("pods", None);
        if self.schedule(&nodes, &pods) {
            pods = self.sh.store.all("pods", None);
        }
        self.kubelets(&nodes, &pods, &simulated, now);
        if self.controllers {
            self.workloads(&nodes, &pods);
            self.garbage_collect();
            crate::eviction::sync_all(&self.sh);
        }
        let live: HashSet<&str> = pods.iter().map(|p| meta_str(p, "uid")).collect();
        self.ready_at.retain(|k, _| live.contains(k.as_str()));
        self.gone_at.retain(|k, _| live.contains(k.as_str()));
    }

    /// Acts on [`NEEDS_REBOOT_ANNOTATION`]: creates the sentinel of a
    /// requesting node's host that is up, then removes the annotation.
    /// `n` may be a copy from an older change, so the annotation is taken
    /// off the stored Node, and the sentinel created only if it was still
    /// there: acting on a stale copy twice wrote `annotations: null` onto
    /// the Node, which the chart's agent admission policy cannot evaluate,
    /// so every later write of that node's agent was refused.
    fn sentinel_request(&mut self, n: &Value) {
        if !reboot_requested(n) {
            return;
        }
        let name = meta_str(n, "name");
        let Some(host) = self.host(name) else {
            return;
        };
        if self.rebooting.contains_key(name) || !host.is_up() {
            return;
        }
        let consumed = self.sh.store.mutate("nodes", "", name, |cur| {
            let Some(cur) = cur.filter(|c| reboot_requested(c)) else {
                return Ok((Change::Keep, false));
            };
            let mut n = (**cur).clone();
            if let Some(meta) = n.get_mut("metadata").and_then(Value::as_object_mut) {
                let now_empty = meta
                    .get_mut("annotations")
                    .and_then(Value::as_object_mut)
                    .is_some_and(|a| {
                        a.remove(NEEDS_REBOOT_ANNOTATION);
                        a.is_empty()
                    });
                if now_empty {
                    meta.remove("annotations");
                }
            }
            Ok((Change::Put(n), true))
        });
        if !matches!(consumed, Ok((_, true))) {
            return;
        }
        host.set_reboot_required(true);
        tracing::info!(
            node = name,
            "simulated host created its reboot-required sentinel on request"
        );
    }

    /// Bind pods without a node to the least-loaded fitting node.
    fn schedule(&mut self, nodes: &[Arc<Value>], pods: &[Arc<Value>]) -> bool {
        let pending: Vec<&Arc<Value>> = pods
            .iter()
            .filter(|p| {
                p.pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                    && active(p)
                    && p.pointer("/spec/schedulerName")
                        .and_then(Value::as_str)
                        .is_none_or(|s| s == "default-scheduler")
            })
            .collect();
        if pending.is_empty() {
            return false;
        }
        let mut load: HashMap<&str, usize> = HashMap::new();
        for p in pods.iter().filter(|p| active(p)) {
            if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
                *load.entry(n).or_default() += 1;
            }
        }
        // The nodes a pod may go to at all, looked at once per pass rather
        // than once per pending pod (a wave of evictions leaves hundreds).
        let candidates: Vec<Candidate<'_>> = nodes
            .iter()
            .filter(|n| {
                node_ready(n)
                    && n.pointer("/spec/unschedulable").and_then(Value::as_bool) != Some(true)
            })
            .map(|n| Candidate {
                node: n,
                name: meta_str(n, "name"),
                labels: n.pointer("/metadata/labels").and_then(Value::as_object),
                taints: n
                    .pointer("/spec/taints")
                    .and_then(Value::as_array)
                    .map(|ts| {
                        ts.iter()
                            .filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        let mut bound = false;
        for p in pending {
            let selector = p.pointer("/spec/nodeSelector").and_then(Value::as_object);
            let tolerations = p
                .pointer("/spec/tolerations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let fits = |c: &Candidate<'_>| {
                selector.is_none_or(|s| {
                    s.iter()
                        .all(|(k, v)| c.labels.and_then(|l| l.get(k)) == Some(v))
                }) && c.taints.iter().all(|t| {
                    tolerations.iter().any(|tol| {
                        (tol["operator"] == "Exists"
                            && (tol.get("key").is_none_or(Value::is_null)
                                || tol["key"] == t["key"]))
                            || (tol["key"] == t["key"] && tol["value"] == t["value"])
                    })
                })
            };
            let load_of = |c: &Candidate<'_>| load.get(c.name).copied().unwrap_or(0);
            let best = candidates
                .iter()
                .filter(|c| fits(c))
                .min_by(|a, b| load_of(a).cmp(&load_of(b)).then_with(|| a.name.cmp(b.name)))
                .map(|c| c.node);
            let ns = meta_str(p, "namespace").to_string();
            let name = meta_str(p, "name").to_string();
            let now = now_rfc3339();
            match best {
                Some(n) => {
                    let node = meta_str(n, "name").to_string();
                    *load.entry(meta_str(n, "name")).or_default() += 1;
                    let host_ip = n
                        .pointer("/status/addresses/0/address")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    self.update("pods", &ns, &name, |pod| {
                        if pod["spec"]["nodeName"].as_str().is_some_and(|s| !s.is_empty()) {
                            return;
                        }
                        pod["spec"]["nodeName"] = json!(node);
                        if !pod["status"].is_object() {
                            pod["status"] = json!({});
                        }
                        pod["status"]["hostIP"] = json!(host_ip);
                        pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}]);
                    });
                    bound = true;
                }
                None => {
                    let msg = format!(
                        "0/{} nodes are available: no node is Ready, schedulable and matching the pod's node selector and tolerations.",
                        nodes.len()
                    );
                    self.update("pods", &ns, &name, |pod| {
                        if !pod["status"].is_object() {
                            pod["status"] = json!({});
                        }
                        pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}]);
                    });
                }
            }
        }
        bound
    }

    /// Start pods on Ready simulated nodes and finish terminating ones.
    fn kubelets(
        &mut self,
        nodes: &[Arc<Value>],
        pods: &[Arc<Value>],
        simulated: &HashSet<String>,
        now: Instant,
    ) {
        let ready_nodes: HashSet<&str> = nodes
            .iter()
            .filter(|n| node_ready(n))
            .map(|n| meta_str(n, "name"))
            .collect();
        for p in pods {
            let Some(node) = p
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| simulated.contains(*n))
            else {
                continue;
            };
            let ready = ready_nodes.contains(node);
            self.kubelet(p, ready, now);
        }
    }

    /// One kubelet step for one pod of a simulated node: a terminating pod
    /// is gone once its termination time (at most its grace period) has
    /// passed since the kubelet first saw it terminating; a pending pod on a
    /// Ready node runs once its start time has passed. Each is timed from
    /// the first time the step is seen and kept in a timer, so whichever
    /// sees the pod first (a change, the timer or a pass) starts the clock.
    fn kubelet(&mut self, p: &Value, node_ready: bool, now: Instant) {
        let pending = p.pointer("/status/phase").and_then(Value::as_str) == Some("Pending");
        if terminating(p) {
            if p.pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty())
            {
                return;
            }
            let grace = p
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .max(0) as u64;
            let wait = self.timing.pod_termination.min(Duration::from_secs(grace));
            let at = Self::timer(&mut self.gone_at, p, now + wait);
            if at <= now {
                self.delete(
                    "",
                    "pods",
                    meta_str(p, "namespace"),
                    meta_str(p, "name"),
                    Some(0),
                );
            }
            return;
        }
        if !(pending && node_ready) {
            // Running, or waiting for its node: nothing to do.
            return;
        }
        let delay = self.draw(self.timing.pod_start);
        let at = Self::timer(&mut self.ready_at, p, now + delay);
        if at > now {
            return;
        }
        let ip = self.next_ip();
        let ts = now_rfc3339();
        self.update("pods", meta_str(p, "namespace"), meta_str(p, "name"), |pod| {
            let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
            let statuses: Vec<Value> = containers
                .iter()
                .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": ts}}}))
                .collect();
            let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": ts});
            pod["status"]["phase"] = json!("Running");
            pod["status"]["podIP"] = json!(ip);
            pod["status"]["podIPs"] = json!([{"ip": ip}]);
            pod["status"]["startTime"] = json!(ts);
            pod["status"]["containerStatuses"] = Value::Array(statuses);
            pod["status"]["conditions"] = json!([cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")]);
        });
    }

    /// The due time of `p`'s timer in `timers`, set to `at` if it had none.
    fn timer(timers: &mut HashMap<String, PodTimer>, p: &Value, at: Instant) -> Instant {
        timers
            .entry(meta_str(p, "uid").to_string())
            .or_insert_with(|| PodTimer {
                at,
                ns: meta_str(p, "namespace").to_string(),
                name: meta_str(p, "name").to_string(),
            })
            .at
    }

    fn is_simulated(&self, node: &str) -> bool {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(node)
    }

    fn node_is_ready(&self, node: &str) -> bool {
        self.sh
            .store
            .get("nodes", "", node)
            .is_some_and(|n| node_ready(&n))
    }

    /// The kubelet step of one pod looked up by name, if it is still the
    /// pod with this uid and on a simulated node.
    fn kubelet_of(&mut self, uid: &str, ns: &str, name: &str, now: Instant) {
        let Some(p) = self.sh.store.get("pods", ns, name) else {
            return;
        };
        if meta_str(&p, "uid") == uid {
            self.kubelet_here(&p, now);
        }
    }

    /// The kubelet step of `p` if it is bound to a simulated node, with
    /// that node's readiness as stored.
    fn kubelet_here(&mut self, p: &Value, now: Instant) {
        let Some(node) = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| self.is_simulated(n))
        else {
            return;
        };
        let ready = self.node_is_ready(node);
        self.kubelet(p, ready, now);
    }

    /// Acts on one change as the node's kubelet and host would, without
    /// waiting for the next pass: a pod that starts terminating or becomes
    /// startable starts its timer, a Node that turns Ready starts its pods,
    /// a Node asking for its sentinel gets it; and, with the controllers, a
    /// pod that is terminating or gone leaves its PDBs' `disruptedPods`.
    pub(crate) fn on_change(&mut self, ev: &WatchEvent, now: Instant) {
        match &*ev.gr {
            "pods" => {
                let p = &ev.object;
                let deleted = ev.kind == EventType::Deleted;
                if self.controllers {
                    crate::eviction::forget_disrupted(&self.sh, p, deleted);
                }
                if deleted {
                    let uid = meta_str(p, "uid");
                    self.ready_at.remove(uid);
                    self.gone_at.remove(uid);
                    return;
                }
                self.kubelet_here(p, now);
            }
            "nodes" if ev.kind != EventType::Deleted => {
                let n = &ev.object;
                self.sentinel_request(n);
                let name = meta_str(n, "name");
                let was_ready = ev.old.as_deref().is_some_and(node_ready);
                if node_ready(n) && !was_ready && self.is_simulated(name) {
                    for p in self.sh.store.pods_on_node(name) {
                        self.kubelet(&p, true, now);
                    }
                }
            }
            _ => {}
        }
    }

    /// Runs every timer that is due (reboots that are over, pods whose
    /// termination or start time has come) and returns when the next one
    /// is due.
    pub(crate) fn run_timers(&mut self, now: Instant) -> Option<Instant> {
        let due: Vec<String> = self
            .rebooting
            .iter()
            .filter(|(n, t)| **t <= now && !self.sh.faults.is_never_returning(n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in due {
            self.finish_reboot(&n);
        }
        let due: Vec<(String, String, String)> = self
            .gone_at
            .iter()
            .chain(self.ready_at.iter())
            .filter(|(_, t)| t.at <= now)
            .map(|(uid, t)| (uid.clone(), t.ns.clone(), t.name.clone()))
            .collect();
        for (uid, ns, name) in due {
            self.kubelet_of(&uid, &ns, &name, now);
        }
        self.next_timer(now)
    }

    /// The earliest timer still to come.
    fn next_timer(&self, now: Instant) -> Option<Instant> {
        let reboots = self.rebooting.values().copied();
        let pods = self
            .gone_at
            .values()
            .chain(self.ready_at.values())
            .map(|t| t.at);
        reboots.chain(pods).filter(|t| *t > now).min()
    }

    fn pod_from_template(owner: &Value, template: &Value, name: &str, oref: Value) -> Value {
        let mut meta = template
            .get("metadata")
            .cloned()
            .unwrap_or_else(|| json!({}));
        meta["name"] = json!(name);
        meta["namespace"] = json!(meta_str(owner, "namespace"));
        meta["ownerReferences"] = json!([oref]);
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec").cloned().unwrap_or_else(|| json!({}))})
    }

    fn set_status(&self, gr: &str, obj: &Value, status: Value) {
        let mut want = obj["status"].clone();
        if !want.is_object() {
            want = json!({});
        }
        for (k, v) in status.as_object().cloned().unwrap_or_default() {
            want[k] = v;
        }
        if want == obj["status"] {
            return;
        }
        self.update(gr, meta_str(obj, "namespace"), meta_str(obj, "name"), |n| {
            n["status"] = want
        });
    }

    /// Deployment, ReplicaSet, StatefulSet and DaemonSet controllers.
    fn workloads(&mut self, nodes: &[Arc<Value>], pods: &[Arc<Value>]) {
        let mut by_owner: HashMap<&str, Vec<&Arc<Value>>> = HashMap::new();
        for p in pods {
            if let Some(u) = controller_uid(p) {
                by_owner.entry(u).or_default().push(p);
            }
        }
        // Deployments own one ReplicaSet per template.
        let replicasets = self.sh.store.all("replicasets.apps", None);
        for d in self.sh.store.all("deployments.apps", None) {
            if terminating(&d) {
                continue;
            }
            let ns = meta_str(&d, "namespace");
            let uid = meta_str(&d, "uid");
            let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
            let hash = template_hash(&d["spec"]["template"]);
            let rs_name = format!("{}-{hash}", meta_str(&d, "name"));
            let owned: Vec<&Arc<Value>> = replicasets
                .iter()
                .filter(|r| controller_uid(r) == Some(uid))
                .collect();
            let mut template = d["spec"]["template"].clone();
            template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            match owned.iter().find(|r| meta_str(r, "name") == rs_name) {
                None => {
                    let mut selector = d["spec"]["selector"].clone();
                    selector["matchLabels"]["pod-template-hash"] = json!(hash);
                    let rs = json!({
                        "apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {"name": rs_name, "namespace": ns, "labels": template["metadata"]["labels"], "ownerReferences": [owner_ref(&d, "apps/v1", "Deployment")]},
                        "spec": {"replicas": replicas, "selector": selector, "template": template},
                    });
                    self.create("apps", "replicasets", ns, rs);
                }
                Some(rs) if rs["spec"]["replicas"].as_i64() != Some(replicas) => {
                    self.update("replicasets.apps", ns, &rs_name, |r| {
                        r["spec"]["replicas"] = json!(replicas)
                    });
                }
                _ => {}
            }
            for old in owned.iter().filter(|r| meta_str(r, "name") != rs_name) {
                if old["spec"]["replicas"].as_i64() != Some(0) {
                    self.update("replicasets.apps", ns, meta_str(old, "name"), |r| {
                        r["spec"]["replicas"] = json!(0)
                    });
                }
            }
            let sum = |f: &str| -> i64 {
                owned
                    .iter()
                    .map(|r| r["status"][f].as_i64().unwrap_or(0))
                    .sum()
            };
            let updated = owned
                .iter()
                .find(|r| meta_str(r, "name") == rs_name)
                .map_or(0, |r| r["status"]["replicas"].as_i64().unwrap_or(0));
            let available = reported_ready(&d, sum("availableReplicas"), replicas);
            let ready = reported_ready(&d, sum("readyReplicas"), replicas);
            let now = now_rfc3339();
            let avail_status = if available >= replicas {
                "True"
            } else {
                "False"
            };
            let prev = d["status"]["conditions"]
                .as_array()
                .and_then(|a| a.iter().find(|c| c["type"] == "Available").cloned());
            let ltt = match &prev {
                Some(c) if c["status"] == avail_status => c["lastTransitionTime"].clone(),
                _ => json!(now),
            };
            let conds = json!([{"type": "Available", "status": avail_status, "reason": if avail_status == "True" { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }, "message": if avail_status == "True" { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." }, "lastUpdateTime": ltt, "lastTransitionTime": ltt}]);
            self.set_status(
                "deployments.apps",
                &d,
                json!({"observedGeneration": d["metadata"]["generation"], "replicas": sum("replicas"), "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": available, "unavailableReplicas": (replicas - available).max(0), "conditions": conds}),
            );
        }
        for rs in self.sh.store.all("replicasets.apps", None) {
            if terminating(&rs) {
                continue;
            }
            let ns = meta_str(&rs, "namespace");
            let owned: Vec<&&Arc<Value>> = by_owner
                .get(meta_str(&rs, "uid"))
                .map(|v| v.iter().filter(|p| active(p)).collect())
                .unwrap_or_default();
            let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
            if owned.len() < want {
                for _ in owned.len()..want {
                    let name = format!("{}-{}", meta_str(&rs, "name"), random_suffix(5));
                    let pod = Self::pod_from_template(
                        &rs,
                        &rs["spec"]["template"],
                        &name,
                        owner_ref(&rs, "apps/v1", "ReplicaSet"),
                    );
                    self.create("", "pods", ns, pod);
                }
            } else if owned.len() > want {
                let mut extra: Vec<&&Arc<Value>> = owned.clone();
                extra.sort_by_key(|p| (pod_ready(p), p.pointer("/spec/nodeName").is_some()));
                for p in extra.into_iter().take(owned.len() - want) {
                    self.delete("", "pods", ns, meta_str(p, "name"), None);
                }
            }
            let ready = owned.iter().filter(|p| pod_ready(p)).count() as i64;
            let ready = reported_ready(&rs, ready, want as i64);
            self.set_status(
                "replicasets.apps",
                &rs,
                json!({"observedGeneration": rs["metadata"]["generation"], "replicas": owned.len(), "fullyLabeledReplicas": owned.len(), "readyReplicas": ready, "availableReplicas": ready}),
            );
        }
        for s in self.sh.store.all("statefulsets.apps", None) {
            if terminating(&s) {
                continue;
            }
            let ns = meta_str(&s, "namespace");
            let sname = meta_str(&s, "name");
            let want = s["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
            let owned: Vec<&&Arc<Value>> = by_owner
                .get(meta_str(&s, "uid"))
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            for i in 0..want {
                let name = format!("{sname}-{i}");
                if owned.iter().any(|p| meta_str(p, "name") == name)
                    || self.sh.store.get("pods", ns, &name).is_some()
                {
                    continue;
                }
                let mut pod = Self::pod_from_template(
                    &s,
                    &s["spec"]["template"],
                    &name,
                    owner_ref(&s, "apps/v1", "StatefulSet"),
                );
                pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(name);
                pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!(i.to_string());
                pod["spec"]["hostname"] = json!(name);
                if let Some(svc) = s["spec"]["serviceName"].as_str() {
                    pod["spec"]["subdomain"] = json!(svc);
                }
                self.create("", "pods", ns, pod);
            }
            for p in owned.iter().filter(|p| active(p)) {
                let ord = meta_str(p, "name")
                    .rsplit('-')
                    .next()
                    .and_then(|o| o.parse::<i64>().ok())
                    .unwrap_or(0);
                if ord >= want {
                    self.delete("", "pods", ns, meta_str(p, "name"), None);
                }
            }
            let act: Vec<&&&Arc<Value>> = owned.iter().filter(|p| active(p)).collect();
            let ready = act.iter().filter(|p| pod_ready(p)).count() as i64;
            let ready = reported_ready(&s, ready, want);
            self.set_status(
                "statefulsets.apps",
                &s,
                json!({"observedGeneration": s["metadata"]["generation"], "replicas": act.len(), "readyReplicas": ready, "currentReplicas": act.len(), "updatedReplicas": act.len(), "availableReplicas": ready}),
            );
        }
        for ds in self.sh.store.all("daemonsets.apps", None) {
            if terminating(&ds) {
                continue;
            }
            let ns = meta_str(&ds, "namespace");
            let selector = ds
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .cloned();
            let targets: Vec<&str> = nodes
                .iter()
                .filter(|n| {
                    let labels = n.pointer("/metadata/labels").and_then(Value::as_object);
                    selector.as_ref().is_none_or(|s| {
                        s.iter()
                            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
                    })
                })
                .map(|n| meta_str(n, "name"))
                .collect();
            let owned: Vec<&&Arc<Value>> = by_owner
                .get(meta_str(&ds, "uid"))
                .map(|v| v.iter().filter(|p| active(p)).collect())
                .unwrap_or_default();
            let mut per_node: HashMap<&str, Vec<&Arc<Value>>> = HashMap::new();
            for p in &owned {
                if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
                    per_node.entry(n).or_default().push(**p);
                }
            }
            let on = |node: &str| -> Vec<&Arc<Value>> {
                per_node.get(node).cloned().unwrap_or_default()
            };
            for node in &targets {
                if on(node).is_empty() {
                    let name = format!("{}-{}", meta_str(&ds, "name"), random_suffix(5));
                    let mut pod = Self::pod_from_template(
                        &ds,
                        &ds["spec"]["template"],
                        &name,
                        owner_ref(&ds, "apps/v1", "DaemonSet"),
                    );
                    pod["spec"]["nodeName"] = json!(node);
                    let mut tol = pod["spec"]["tolerations"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    for key in [
                        "node.kubernetes.io/not-ready",
                        "node.kubernetes.io/unreachable",
                        "node.kubernetes.io/unschedulable",
                    ] {
                        tol.push(json!({"key": key, "operator": "Exists", "effect": if key == "node.kubernetes.io/unschedulable" { "NoSchedule" } else { "NoExecute" }}));
                    }
                    pod["spec"]["tolerations"] = Value::Array(tol);
                    self.create("", "pods", ns, pod);
                }
            }
            let target_set: HashSet<&str> = targets.iter().copied().collect();
            for p in &owned {
                let node = p
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !target_set.contains(node) {
                    self.delete("", "pods", ns, meta_str(p, "name"), Some(0));
                }
            }
            let scheduled = targets.iter().filter(|n| !on(n).is_empty()).count();
            let ready = targets
                .iter()
                .filter(|n| on(n).iter().any(|p| pod_ready(p)))
                .count() as i64;
            let ready = reported_ready(&ds, ready, targets.len() as i64);
            self.set_status(
                "daemonsets.apps",
                &ds,
                json!({"observedGeneration": ds["metadata"]["generation"], "desiredNumberScheduled": targets.len(), "currentNumberScheduled": scheduled, "updatedNumberScheduled": scheduled, "numberReady": ready, "numberAvailable": ready, "numberMisscheduled": 0}),
            );
        }
    }

    /// Delete objects all of whose owners are gone.
    fn garbage_collect(&mut self) {
        let resources = self.sh.registry.all();
        let mut uids: HashSet<String> = HashSet::new();
        let mut dependents: Vec<(Arc<crate::registry::ResourceInfo>, Arc<Value>)> = vec![];
        let mut seen_gr = HashSet::new();
        for info in resources {
            if !seen_gr.insert(info.gr()) || info.resource == "events" {
                continue;
            }
            for o in self.sh.store.all(&info.gr(), None) {
                uids.insert(meta_str(&o, "uid").to_string());
                if o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
                {
                    dependents.push((info.clone(), o));
                }
            }
        }
        for (info, o) in dependents {
            let owners = o["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if owners
                .iter()
                .all(|r| !uids.contains(r["uid"].as_str().unwrap_or("")))
                && !terminating(&o)
            {
                tracing::debug!(resource = %info.resource, name = meta_str(&o, "name"), "garbage collecting orphan");
                let _ = delete_object(
                    &self.sh,
                    &info,
                    meta_str(&o, "namespace"),
                    meta_str(&o, "name"),
                    &DeleteOpts::default(),
                );
            }
        }
    }
}

/// How long a burst of writes may settle before the fleet looks again.
const PASS_SETTLE: Duration = Duration::from_millis(10);

/// How often the fleet passes over everything when nothing changes.
const PASS_EVERY: Duration = Duration::from_secs(5);

/// Pod and Node changes as they happen, for [`Fleet::on_change`]. A
/// subscription that fell behind (during a long pass) is ended by the store;
/// it is opened again from the current version, and the next pass catches up
/// with what it missed.
struct Changes {
    pods: Option<Subscription>,
    nodes: Option<Subscription>,
}

impl Changes {
    fn open(store: &Store, sub: &mut Option<Subscription>, gr: &str) {
        if sub.is_none() {
            *sub = store.watch(gr, store.rv(), Route::All).ok().map(|(_, s)| s);
        }
    }

    /// Applies every change already queued; false if a subscription ended.
    fn apply_queued(&mut self, fleet: &mut Fleet, now: Instant) -> bool {
        let mut intact = true;
        for sub in [&mut self.pods, &mut self.nodes] {
            // Bounded: at most what is queued now (the store's watch queue).
            for _ in 0..WATCH_QUEUE {
                let Some(s) = sub.as_mut() else { break };
                match s.try_recv() {
                    Ok(ev) => fleet.on_change(&ev, now),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        *sub = None;
                        intact = false;
                    }
                }
            }
        }
        intact
    }
}

/// Whether Node `n` asks its simulated host to need a reboot
/// ([`NEEDS_REBOOT_ANNOTATION`]).
fn reboot_requested(n: &Value) -> bool {
    n.pointer("/metadata/annotations")
        .and_then(|a| a.get(NEEDS_REBOOT_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true")
}

/// The fleet loop. Changes of pods and Nodes, host commands and timers are
/// acted on as they come, so a pod is gone when its termination time is
/// over and a node is up when its reboot is; a pass over the whole fleet
/// (scheduling, workload controllers) follows a burst of changes.
pub(crate) async fn run(
    mut fleet: Fleet,
    mut cmds: mpsc::UnboundedReceiver<FleetCmd>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = fleet.sh.store.subscribe_changes();
    let mut feed = Changes {
        pods: None,
        nodes: None,
    };
    let mut pass_at = Some(Instant::now());
    let mut settle = PASS_SETTLE;
    loop {
        Changes::open(&fleet.sh.store, &mut feed.pods, "pods");
        Changes::open(&fleet.sh.store, &mut feed.nodes, "nodes");
        let now = Instant::now();
        while let Ok(c) = cmds.try_recv() {
            fleet.handle(c);
        }
        if !feed.apply_queued(&mut fleet, now) {
            // Something was missed: a pass catches up with it.
            pass_at = Some(pass_at.map_or(now, |t| t.min(now)));
        }
        let mut wake = fleet.run_timers(now);
        if pass_at.is_some_and(|t| t <= now) {
            let began = Instant::now();
            // A pass over a large fleet is long, synchronous work: run on an
            // async worker it held that worker (one of two on a small machine)
            // and every request queued behind it.
            let Ok(back) = tokio::task::spawn_blocking(move || {
                fleet.pass();
                fleet
            })
            .await
            else {
                return;
            };
            fleet = back;
            fleet.sh.stats.fleet_pass(began.elapsed());
            // A pass looks at every pod; at 50,000 pods it takes long enough
            // that passes back to back would take a whole core from the API
            // server. Waiting twice its length after the next change keeps
            // the fleet to about a third of a core (and changes nothing on
            // small fleets, where a pass takes far less than the settling).
            settle = PASS_SETTLE.max(began.elapsed() * 2);
            pass_at = None;
            // Timers the pass started.
            wake = fleet.run_timers(Instant::now());
        }
        let periodic = pass_at.unwrap_or_else(|| Instant::now() + PASS_EVERY);
        let wake = wake.map_or(periodic, |w| w.min(periodic));
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() { return; }
                // Let a burst of writes settle into one pass.
                if pass_at.is_none() {
                    pass_at = Some(Instant::now() + settle);
                }
            }
            c = cmds.recv() => match c {
                Some(c) => fleet.handle(c),
                None => return,
            },
            Some(ev) = next_change(&mut feed.pods) => fleet.on_change(&ev, Instant::now()),
            Some(ev) = next_change(&mut feed.nodes) => fleet.on_change(&ev, Instant::now()),
            _ = tokio::time::sleep_until(wake.into()) => {
                if pass_at.is_none() && wake >= periodic {
                    pass_at = Some(Instant::now());
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// The next change of a subscription; pending forever without one.
async fn next_change(sub: &mut Option<Subscription>) -> Option<Arc<WatchEvent>> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Shared;
    use crate::scenario::SimDuration;

    /// A fleet of one Ready simulated node `worker-1` (1 s pod termination,
    /// 0.5 s pod start), without workload controllers, and a feed of its
    /// pod and Node changes.
    fn one_node() -> (Fleet, Subscription, Subscription) {
        one_node_with(false)
    }

    /// [`one_node`], with the workload and disruption controllers if
    /// `controllers`.
    fn one_node_with(controllers: bool) -> (Fleet, Subscription, Subscription) {
        let sh = Arc::new(Shared {
            store: Arc::new(Store::new(1000)),
            registry: Arc::new(crate::registry::Registry::new()),
            faults: crate::faults::Faults::new(1),
            stats: crate::faults::Stats::new(100),
            tokens: crate::auth::Tokens::new(None, &[]),
            bookmark_interval: Duration::from_secs(60),
            addr: "127.0.0.1:0".into(),
        });
        let mut scenario = Scenario::with_nodes(1);
        scenario.workloads.clear();
        scenario.objects.clear();
        scenario.timing.pod_termination = SimDuration(Duration::from_secs(1));
        scenario.timing.pod_start = DurationRange::fixed(Duration::from_millis(500));
        let hosts: Hosts = Arc::new(Mutex::new(HashMap::new()));
        let mut fleet = Fleet::new(sh.clone(), &scenario, hosts, controllers);
        let (tx, _rx) = mpsc::unbounded_channel();
        fleet.seed(&scenario, &tx);
        let subscribe = |gr| match sh.store.watch(gr, sh.store.rv(), Route::All) {
            Ok((_, s)) => s,
            Err(_) => panic!("a fresh store serves watches from its current version"),
        };
        (fleet, subscribe("pods"), subscribe("nodes"))
    }

    fn node_name(fleet: &Fleet) -> String {
        let nodes = fleet.sh.store.all("nodes", None);
        assert_eq!(nodes.len(), 1);
        meta_str(&nodes[0], "name").to_string()
    }

    fn put_pod(fleet: &Fleet, node: &str, phase: &str) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "web", "image": "web:1"}]},
            "status": {"phase": phase}});
        let put = fleet
            .sh
            .store
            .mutate("pods", "default", "web-1", |_| Ok((Change::Put(pod), ())));
        assert!(put.is_ok());
    }

    fn pod(fleet: &Fleet) -> Option<Arc<Value>> {
        fleet.sh.store.get("pods", "default", "web-1")
    }

    fn apply_all(fleet: &mut Fleet, sub: &mut Subscription, now: Instant) {
        while let Ok(ev) = sub.try_recv() {
            fleet.on_change(&ev, now);
        }
    }

    /// A ready pod `name` of `app=db` on `node`, created as it is.
    fn put_db_pod(fleet: &Fleet, node: &str, name: &str) {
        let ts = now_rfc3339();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "db"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 30,
                "containers": [{"name": "db", "image": "db:1"}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ts}]}});
        let put = fleet
            .sh
            .store
            .mutate("pods", "default", name, |_| Ok((Change::Put(pod), ())));
        assert!(put.is_ok());
    }

    /// A one-node fleet with its controllers, the pods `db-0` and `db-1` of
    /// `app=db` running and ready under the PDB `db` (`minAvailable: 1`),
    /// after one pass; with its pod feed and the node's name.
    fn db_fleet() -> (Fleet, Subscription, String) {
        let (mut fleet, pods, _nodes) = one_node_with(true);
        let node = node_name(&fleet);
        let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "db", "namespace": "default", "generation": 1},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}});
        let put = fleet
            .sh
            .store
            .mutate("poddisruptionbudgets.policy", "default", "db", |_| {
                Ok((Change::Put(pdb), ()))
            });
        assert!(put.is_ok());
        put_db_pod(&fleet, &node, "db-0");
        put_db_pod(&fleet, &node, "db-1");
        fleet.pass();
        (fleet, pods, node)
    }

    fn db_budget(fleet: &Fleet) -> Value {
        match fleet
            .sh
            .store
            .get("poddisruptionbudgets.policy", "default", "db")
        {
            Some(p) => p["status"].clone(),
            None => panic!("the PDB is stored"),
        }
    }

    /// The sequence of a drain under a StatefulSet's budget: the evicted
    /// pod's successor has the same name. Its `disruptedPods` entry must be
    /// gone once the evicted pod terminates, or the successor counts as
    /// disrupted for two minutes and the next eviction is refused (a drain
    /// of the sandbox demo timed out on this).
    #[test]
    fn an_evicted_pods_successor_of_the_same_name_counts_as_healthy() {
        let (mut fleet, mut pods, node) = db_fleet();
        assert_eq!(db_budget(&fleet)["disruptionsAllowed"], 1);

        let evicted = crate::eviction::evict(&fleet.sh, "default", "db-0", &json!({}), false);
        assert!(evicted.is_ok());
        let st = db_budget(&fleet);
        assert!(st["disruptedPods"]["db-0"].is_string(), "{st}");
        let t0 = Instant::now();
        apply_all(&mut fleet, &mut pods, t0);
        assert!(pod_named(&fleet, "db-0").is_some_and(|p| terminating(&p)));
        let st = db_budget(&fleet);
        assert!(
            st.get("disruptedPods").is_none(),
            "dropped once the pod is terminating: {st}"
        );

        // Gone at its termination time; the successor starts, and one more
        // disruption is allowed again.
        fleet.run_timers(t0 + Duration::from_secs(1));
        apply_all(&mut fleet, &mut pods, t0 + Duration::from_secs(1));
        assert!(pod_named(&fleet, "db-0").is_none());
        put_db_pod(&fleet, &node, "db-0");
        fleet.pass();
        let st = db_budget(&fleet);
        assert_eq!(st["currentHealthy"], 2, "{st}");
        assert_eq!(st["disruptionsAllowed"], 1, "{st}");
    }

    /// An entry of a pod deleted at once (no termination time, so no
    /// terminating change to see) is dropped on its deletion.
    #[test]
    fn a_disrupted_pod_deleted_at_once_leaves_the_budget() {
        let (mut fleet, mut pods, node) = db_fleet();
        let body = json!({"deleteOptions": {"gracePeriodSeconds": 0}});
        assert!(crate::eviction::evict(&fleet.sh, "default", "db-0", &body, false).is_ok());
        assert!(pod_named(&fleet, "db-0").is_none(), "deleted at once");
        // The successor is there before the deletion is seen.
        put_db_pod(&fleet, &node, "db-0");
        apply_all(&mut fleet, &mut pods, Instant::now());
        fleet.pass();
        let st = db_budget(&fleet);
        assert!(st.get("disruptedPods").is_none(), "{st}");
        assert_eq!(st["currentHealthy"], 2, "{st}");
    }

    fn pod_named(fleet: &Fleet, name: &str) -> Option<Arc<Value>> {
        fleet.sh.store.get("pods", "default", name)
    }

    #[test]
    fn a_terminating_pod_is_gone_when_its_termination_time_is_over_without_a_pass() {
        let (mut fleet, mut pods, _nodes) = one_node();
        let node = node_name(&fleet);
        put_pod(&fleet, &node, "Running");
        fleet.update("pods", "default", "web-1", |p| {
            p["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        });
        let t0 = Instant::now();
        apply_all(&mut fleet, &mut pods, t0);
        assert!(pod(&fleet).is_some(), "terminating, not gone yet");
        // The clock started with the change: 1 s of termination, not 30 s
        // of grace, and nothing before it.
        let next = fleet.run_timers(t0 + Duration::from_millis(999));
        assert_eq!(next, Some(t0 + Duration::from_secs(1)));
        assert!(pod(&fleet).is_some());
        fleet.run_timers(t0 + Duration::from_secs(1));
        assert!(pod(&fleet).is_none(), "gone at its termination time");
        apply_all(&mut fleet, &mut pods, t0 + Duration::from_secs(1));
        assert!(
            fleet.gone_at.is_empty(),
            "the timer of a deleted pod is dropped"
        );
        assert_eq!(fleet.sh.stats.fleet_passes().count, 0);
    }

    #[test]
    fn a_terminating_pod_with_finalizers_stays() {
        let (mut fleet, mut pods, _nodes) = one_node();
        let node = node_name(&fleet);
        put_pod(&fleet, &node, "Running");
        fleet.update("pods", "default", "web-1", |p| {
            p["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            p["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            p["metadata"]["finalizers"] = json!(["example.com/hold"]);
        });
        let t0 = Instant::now();
        apply_all(&mut fleet, &mut pods, t0);
        assert_eq!(fleet.run_timers(t0 + Duration::from_secs(60)), None);
        assert!(pod(&fleet).is_some());
    }

    #[test]
    fn a_pod_waiting_for_its_node_starts_once_the_node_turns_ready() {
        let (mut fleet, mut pods, mut nodes) = one_node();
        let node = node_name(&fleet);
        let ts = now_rfc3339();
        fleet.update("nodes", "", &node, |n| {
            n["status"]["conditions"] = ready_conditions(false, &ts);
        });
        apply_all(&mut fleet, &mut nodes, Instant::now());
        put_pod(&fleet, &node, "Pending");
        let t0 = Instant::now();
        apply_all(&mut fleet, &mut pods, t0);
        assert_eq!(
            fleet.run_timers(t0 + Duration::from_secs(60)),
            None,
            "no start on a NotReady node"
        );
        let t1 = t0 + Duration::from_secs(60);
        fleet.update("nodes", "", &node, |n| {
            n["status"]["conditions"] = ready_conditions(true, &ts);
        });
        apply_all(&mut fleet, &mut nodes, t1);
        assert_eq!(fleet.run_timers(t1), Some(t1 + Duration::from_millis(500)));
        let phase = |f: &Fleet| {
            pod(f).and_then(|p| {
                p.pointer("/status/phase")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
        };
        assert_eq!(phase(&fleet).as_deref(), Some("Pending"));
        fleet.run_timers(t1 + Duration::from_millis(500));
        assert_eq!(phase(&fleet).as_deref(), Some("Running"));
    }

    #[test]
    fn a_reboot_is_over_at_its_time_and_the_node_reports_a_new_boot() {
        let (mut fleet, _pods, _nodes) = one_node();
        let node = node_name(&fleet);
        let boot = |f: &Fleet| {
            f.sh.store.get("nodes", "", &node).and_then(|n| {
                n.pointer("/status/nodeInfo/bootID")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
        };
        let before = boot(&fleet);
        fleet.handle(FleetCmd::Reboot(node.clone()));
        let Some(up_at) = fleet.next_timer(Instant::now()) else {
            panic!("a rebooting node has a timer");
        };
        assert!(!fleet.node_is_ready(&node));
        fleet.run_timers(up_at - Duration::from_millis(1));
        assert!(!fleet.node_is_ready(&node));
        fleet.run_timers(up_at);
        assert!(fleet.node_is_ready(&node));
        assert_ne!(boot(&fleet), before);
    }

    #[test]
    fn a_needs_reboot_request_is_acted_on_once_even_from_a_stale_copy() {
        let (mut fleet, _pods, mut nodes) = one_node();
        let node = node_name(&fleet);
        let annotated = fleet.sh.store.mutate("nodes", "", &node, |cur| {
            let mut n = cur.map(|c| (**c).clone()).unwrap_or_default();
            n["metadata"]["annotations"] = json!({NEEDS_REBOOT_ANNOTATION: "true"});
            Ok((Change::Put(n), ()))
        });
        assert!(annotated.is_ok());
        let Ok(request) = nodes.try_recv() else {
            panic!("the annotation is a Node change");
        };
        let Some(host) = fleet.host(&node) else {
            panic!("worker-1 is simulated");
        };
        fleet.on_change(&request, Instant::now());
        assert_eq!(host.reboot_required().ok(), Some(true));
        let stored = fleet.sh.store.get("nodes", "", &node);
        let annotations = stored
            .as_deref()
            .and_then(|n| n.pointer("/metadata/annotations"));
        assert_eq!(
            annotations, None,
            "the request is consumed, no empty map left"
        );
        // The same change again (a copy from before it was consumed), after
        // the sentinel went away: nothing happens, and no `annotations: null`.
        host.set_reboot_required(false);
        fleet.on_change(&request, Instant::now());
        fleet.pass();
        assert_eq!(host.reboot_required().ok(), Some(false));
        let stored = fleet.sh.store.get("nodes", "", &node);
        let meta = stored.as_deref().and_then(|n| n.get("metadata"));
        assert!(
            meta.is_some_and(|m| m.get("annotations").is_none()),
            "{meta:?}"
        );
    }
}
