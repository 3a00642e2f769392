//! An independent observer of a rollout: it watches every Node and checks the
//! safety rules of the design on each change, without trusting the controller.
//! The sandbox demo prints its figures; the end-to-end tests fail on its
//! violations.
//!
//! Independent means it shares no parsing with the controller: it reads each
//! Node as raw JSON and the `sofort.dev/record` annotation with its own
//! minimal code (the policy, revision and step, nothing else), and matches
//! node selectors with its own matcher. A bug in the controller's `NodeView`,
//! record decoding or selector code therefore cannot hide a violation from
//! it: a record the controller cannot read still counts here as a claim.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

/// The annotation holding the controller's record of a node (spelled out
/// here, not imported, so the observer reads what is on the Node).
const RECORD: &str = "sofort.dev/record";

/// How long `Observer::start` waits for the first node list.
const LIST_WAIT: Duration = Duration::from_secs(30);

/// A policy as the observer checks it.
#[derive(Debug, Clone)]
pub struct WatchedPolicy {
    /// Policy name.
    pub name: String,
    /// Its node selector.
    pub selector: LabelSelector,
    /// Its budget, resolved to a node count.
    pub max_unavailable: usize,
}

/// What the observer saw.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Broken rules, in the order seen.
    pub violations: Vec<String>,
    /// Boot-ID changes per node.
    pub reboots: BTreeMap<String, u32>,
    /// Most selected nodes unavailable at once, per policy.
    pub max_unavailable_seen: BTreeMap<String, usize>,
    /// When each node was first claimed (since the observer started).
    pub first_claim: BTreeMap<String, Duration>,
    /// When each node was released (record removed after Done).
    pub released: BTreeMap<String, Duration>,
    /// Nodes unschedulable when the observer started.
    pub pre_cordoned: BTreeSet<String>,
    /// Time from a node becoming schedulable again to the next claim, each hand-off.
    pub handoffs: Vec<Duration>,
    /// Node objects as last seen.
    pub nodes_seen: usize,
}

/// The part of a sofort record the rules need, read from the annotation's
/// JSON by field name. A record that is not a JSON object with a string
/// `step` is kept as unreadable: it still marks the node as claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claim {
    policy: String,
    revision: String,
    step: String,
    was_unschedulable: bool,
}

impl Claim {
    const UNREADABLE: &'static str = "(unreadable record)";

    fn read(text: &str) -> Claim {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Claim {
            policy: s("policy").unwrap_or_default(),
            revision: s("revision").unwrap_or_default(),
            step: s("step").unwrap_or_else(|| Self::UNREADABLE.to_string()),
            was_unschedulable: v
                .get("wasUnschedulable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }

    /// Takes the node out of service: every step but the resting ones (an
    /// unreadable record counts as in progress).
    fn in_progress(&self) -> bool {
        !matches!(self.step.as_str(), "Pending" | "Done" | "Failed")
    }

    fn reboot_asked(&self) -> bool {
        matches!(self.step.as_str(), "Rebooting" | "WaitingReady")
    }
}

/// A Node as the observer reads it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Seen {
    labels: BTreeMap<String, String>,
    ready: bool,
    unschedulable: bool,
    boot_id: Option<String>,
    claim: Option<Claim>,
}

impl Seen {
    fn read(node: &Value) -> (String, Seen) {
        let str_at = |p: &str| node.pointer(p).and_then(Value::as_str);
        let name = str_at("/metadata/name").unwrap_or_default().to_string();
        let labels = node
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let ready = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Ready")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            });
        let claim = node
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(RECORD))
            .and_then(Value::as_str)
            .map(Claim::read);
        let seen = Seen {
            labels,
            ready,
            unschedulable: node.pointer("/spec/unschedulable").and_then(Value::as_bool)
                == Some(true),
            boot_id: str_at("/status/nodeInfo/bootID")
                .filter(|b| !b.is_empty())
                .map(str::to_string),
            claim,
        };
        (name, seen)
    }

    fn claimed(&self) -> Option<&Claim> {
        self.claim.as_ref().filter(|c| c.in_progress())
    }
}

/// Whether `selector` selects a node with `labels`: `matchLabels` and the
/// four `matchExpressions` operators. `Err` for an operator it does not know,
/// so a selector it cannot judge is reported instead of guessed.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let plain = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    if !plain {
        return Ok(false);
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let have = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => return Err(format!("selector operator {other:?}")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The rules, applied to each Node change in order. Pure: the watch feeds it.
struct Checker {
    policies: Vec<WatchedPolicy>,
    started: Instant,
    nodes: BTreeMap<String, Seen>,
    initial_done: bool,
    last_uncordon: Option<Instant>,
    boots_per_request: HashMap<(String, String, String), u32>,
    obs: Observations,
}

impl Checker {
    fn new(policies: Vec<WatchedPolicy>) -> Checker {
        Checker {
            policies,
            started: Instant::now(),
            nodes: BTreeMap::new(),
            initial_done: false,
            last_uncordon: None,
            boots_per_request: HashMap::new(),
            obs: Observations::default(),
        }
    }

    /// The end of the first list. Only the first tells what was cordoned
    /// before the rollout; later re-lists (dropped watches) must not.
    fn listed(&mut self) {
        if self.initial_done {
            return;
        }
        self.initial_done = true;
        // Cordoned by someone else: unschedulable, and not by a sofort claim
        // that found it schedulable (the first list can come late).
        self.obs.pre_cordoned = self
            .nodes
            .iter()
            .filter(|(_, s)| {
                s.unschedulable
                    && !s
                        .claimed()
                        .is_some_and(|c| !c.was_unschedulable && c.step != Claim::UNREADABLE)
            })
            .map(|(n, _)| n.clone())
            .collect();
    }

    fn deleted(&mut self, name: &str) {
        self.nodes.remove(name);
        self.obs.nodes_seen = self.nodes.len();
    }

    fn changed(&mut self, node: &Value) {
        let (name, now) = Seen::read(node);
        let prev = self.nodes.insert(name.clone(), now.clone());
        self.obs.nodes_seen = self.nodes.len();
        if !self.initial_done {
            return;
        }
        if let Some(prev) = &prev {
            self.transition(&name, prev, &now);
        }
        self.check_budgets();
    }

    /// Rules on one node's change: reboots only when cordoned and asked,
    /// once per request; pre-cordoned nodes stay cordoned; claim timings.
    fn transition(&mut self, name: &str, prev: &Seen, now: &Seen) {
        let o = &mut self.obs;
        if prev.boot_id.is_some() && now.boot_id.is_some() && prev.boot_id != now.boot_id {
            *o.reboots.entry(name.to_string()).or_default() += 1;
            let asked = prev.claim.as_ref().is_some_and(Claim::reboot_asked);
            if !prev.unschedulable || !asked {
                o.violations.push(format!(
                    "node {name} rebooted without being cordoned and asked (unschedulable={}, step={:?})",
                    prev.unschedulable,
                    prev.claim.as_ref().map(|c| c.step.as_str())
                ));
            }
            if let Some(c) = &prev.claim {
                let k = (name.to_string(), c.policy.clone(), c.revision.clone());
                let n = self.boots_per_request.entry(k).or_default();
                *n += 1;
                if *n > 1 {
                    o.violations.push(format!(
                        "node {name} rebooted {n} times for {} revision {}",
                        c.policy, c.revision
                    ));
                }
            }
        }
        if prev.unschedulable && !now.unschedulable {
            if o.pre_cordoned.contains(name) {
                o.violations.push(format!(
                    "node {name} was cordoned before the rollout and got uncordoned"
                ));
            }
            self.last_uncordon = Some(Instant::now());
        }
        if now.claimed().is_some() && prev.claimed().is_none() {
            o.first_claim
                .entry(name.to_string())
                .or_insert(self.started.elapsed());
            if let Some(t) = self.last_uncordon.take() {
                o.handoffs.push(t.elapsed());
            }
        }
        if prev.claim.is_some() && now.claim.is_none() {
            o.released.insert(name.to_string(), self.started.elapsed());
        }
    }

    /// Rule 1: per policy, while it has a node in progress, at most its
    /// budget of selected nodes unavailable (not Ready, cordoned or claimed).
    fn check_budgets(&mut self) {
        for p in &self.policies {
            let mut selected = Vec::new();
            for (name, s) in &self.nodes {
                match selects(&p.selector, &s.labels) {
                    Ok(true) => selected.push(s),
                    Ok(false) => {}
                    Err(what) => {
                        self.obs.violations.push(format!(
                            "policy {}: the observer cannot evaluate its {what} (node {name})",
                            p.name
                        ));
                        return;
                    }
                }
            }
            let mine = selected
                .iter()
                .any(|s| s.claimed().is_some_and(|c| c.policy == p.name));
            if !mine {
                continue;
            }
            let unavailable = selected
                .iter()
                .filter(|s| !s.ready || s.unschedulable || s.claimed().is_some())
                .count();
            let seen = self
                .obs
                .max_unavailable_seen
                .entry(p.name.clone())
                .or_default();
            *seen = (*seen).max(unavailable);
            if unavailable > p.max_unavailable {
                self.obs.violations.push(format!(
                    "policy {}: {unavailable} selected nodes unavailable, maxUnavailable {}",
                    p.name, p.max_unavailable
                ));
            }
        }
    }
}

/// A running observer.
pub struct Observer {
    state: Arc<Mutex<Checker>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Starts watching every node of the cluster behind `client` and returns
    /// once the first node list is in (or after `LIST_WAIT`, when the API is
    /// too slow to answer), so a rollout started afterwards is seen whole.
    pub async fn start(client: Client, policies: Vec<WatchedPolicy>) -> Observer {
        let state = Arc::new(Mutex::new(Checker::new(policies)));
        let st = state.clone();
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel::<()>();
        let mut listed_tx = Some(listed_tx);
        let task = tokio::spawn(async move {
            // Untyped: the observer reads the JSON the server sent.
            let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<Node>(&()));
            let mut stream = Box::pin(watcher(api, watcher::Config::default()).default_backoff());
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let Ok(mut c) = st.lock() else { return };
                match ev {
                    watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                        if let Ok(v) = serde_json::to_value(&n) {
                            c.changed(&v);
                        }
                    }
                    watcher::Event::Delete(n) => c.deleted(&n.name_any()),
                    watcher::Event::Init => {}
                    watcher::Event::InitDone => {
                        c.listed();
                        if let Some(tx) = listed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            }
        });
        // A timeout is not fatal: the observer still checks every change it
        // sees; only nodes changed before its first list are missed.
        let _ = tokio::time::timeout(LIST_WAIT, listed_rx).await;
        Observer { state, task }
    }

    /// What was seen so far.
    pub fn observations(&self) -> Observations {
        self.state.lock().map(|c| c.obs.clone()).unwrap_or_default()
    }

    /// Stops watching.
    pub fn stop(self) -> Observations {
        self.task.abort();
        self.observations()
    }
}

/// Nodes whose record annotation names `policy` (any step), read as the
/// observer reads records.
pub fn claimed_by(nodes: &[Node], policy: &str) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| {
            n.annotations()
                .get(RECORD)
                .is_some_and(|s| Claim::read(s).policy == policy)
        })
        .map(|n| n.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use serde_json::json;

    fn node(name: &str, unschedulable: bool, boot: &str, record: Option<Value>) -> Value {
        let mut n = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"role": "worker", "zone": "a"}, "annotations": {}},
            "spec": {"unschedulable": unschedulable},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "nodeInfo": {"bootID": boot}
            }
        });
        if let Some(r) = record {
            n["metadata"]["annotations"][RECORD] = json!(r.to_string());
        }
        n
    }

    fn record(step: &str) -> Value {
        json!({
            "policy": "workers", "revision": "r1", "step": step,
            "since": "2026-01-01T00:00:00Z", "started": "2026-01-01T00:00:00Z",
            "wasUnschedulable": false
        })
    }

    fn workers(max: usize) -> WatchedPolicy {
        WatchedPolicy {
            name: "workers".into(),
            selector: LabelSelector {
                match_labels: Some([("role".to_string(), "worker".to_string())].into()),
                ..LabelSelector::default()
            },
            max_unavailable: max,
        }
    }

    fn listed(nodes: &[Value], max: usize) -> Checker {
        let mut c = Checker::new(vec![workers(max)]);
        for n in nodes {
            c.changed(n);
        }
        c.listed();
        c
    }

    #[test]
    fn annotation_name_is_the_controllers() {
        assert_eq!(RECORD, crate::core::node_record::RECORD_ANNOTATION);
    }

    #[test]
    fn budget_counts_a_record_the_controller_cannot_read() {
        let nodes = [
            node("n1", false, "b1", None),
            node("n2", false, "b2", None),
            node("n3", false, "b3", None),
        ];
        let mut c = listed(&nodes, 1);
        c.changed(&node("n1", true, "b1", Some(record("Draining"))));
        assert!(c.obs.violations.is_empty(), "{:?}", c.obs.violations);
        // A second claim whose `since` is no timestamp: the controller's
        // record parser rejects it, so its view shows no claim on n2.
        let mut bad = record("Draining");
        bad["since"] = json!("yesterday");
        let n2 = node("n2", false, "b2", Some(bad));
        let typed: Node = serde_json::from_value(n2.clone()).unwrap();
        let view = crate::core::rollout::NodeView::from_node(&typed);
        assert!(view.record.is_none() && view.record_error.is_some());
        c.changed(&n2);
        assert_eq!(
            c.obs.violations,
            ["policy workers: 2 selected nodes unavailable, maxUnavailable 1"]
        );
        assert_eq!(c.obs.max_unavailable_seen["workers"], 2);
    }

    #[test]
    fn an_unreadable_record_still_counts_as_a_claim() {
        let mut c = listed(
            &[node("n1", false, "b1", None), node("n2", false, "b2", None)],
            1,
        );
        c.changed(&node("n1", true, "b1", Some(record("Rebooting"))));
        let mut n2 = node("n2", false, "b2", None);
        n2["metadata"]["annotations"][RECORD] = json!("{not json");
        c.changed(&n2);
        assert_eq!(c.obs.violations.len(), 1, "{:?}", c.obs.violations);
    }

    #[test]
    fn reboot_without_cordon_and_request_is_a_violation() {
        let mut c = listed(&[node("n1", false, "b1", None)], 1);
        c.changed(&node("n1", false, "b2", None));
        assert_eq!(c.obs.reboots["n1"], 1);
        assert!(c.obs.violations[0].contains("rebooted without being cordoned"));
    }

    #[test]
    fn a_clean_cycle_has_no_violations_and_is_timed() {
        let mut c = listed(
            &[node("n1", false, "b1", None), node("n2", false, "b2", None)],
            1,
        );
        c.changed(&node("n1", true, "b1", Some(record("Draining"))));
        c.changed(&node("n1", true, "b1", Some(record("Rebooting"))));
        c.changed(&node("n1", true, "b9", Some(record("WaitingReady"))));
        c.changed(&node("n1", false, "b9", Some(record("Done"))));
        c.changed(&node("n1", false, "b9", None));
        c.changed(&node("n2", true, "b2", Some(record("Draining"))));
        assert!(c.obs.violations.is_empty(), "{:?}", c.obs.violations);
        assert_eq!(c.obs.reboots["n1"], 1);
        assert!(c.obs.first_claim.contains_key("n1") && c.obs.released.contains_key("n1"));
        assert_eq!(c.obs.handoffs.len(), 1);
    }

    #[test]
    fn second_reboot_for_one_request_and_uncordoned_precordoned_node() {
        let mut c = listed(
            &[node("n1", false, "b1", None), node("n2", true, "b2", None)],
            2,
        );
        assert_eq!(c.obs.pre_cordoned, BTreeSet::from(["n2".to_string()]));
        c.changed(&node("n1", true, "b1", Some(record("Rebooting"))));
        c.changed(&node("n1", true, "b2", Some(record("Rebooting"))));
        c.changed(&node("n1", true, "b3", Some(record("Rebooting"))));
        c.changed(&node("n2", false, "b2", None));
        let v = &c.obs.violations;
        assert!(v.iter().any(|s| s.contains("rebooted 2 times")), "{v:?}");
        assert!(
            v.iter().any(|s| s.contains("cordoned before the rollout")),
            "{v:?}"
        );
    }

    #[test]
    fn own_selector_matcher() {
        let labels: BTreeMap<String, String> = [("role".to_string(), "worker".to_string())].into();
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "role".into(),
                operator: op.into(),
                values: Some(values.iter().map(|s| s.to_string()).collect()),
            }]),
            ..LabelSelector::default()
        };
        assert_eq!(selects(&expr("In", &["worker"]), &labels), Ok(true));
        assert_eq!(selects(&expr("In", &["gpu"]), &labels), Ok(false));
        assert_eq!(selects(&expr("NotIn", &["worker"]), &labels), Ok(false));
        assert_eq!(selects(&expr("Exists", &[]), &labels), Ok(true));
        assert_eq!(selects(&expr("DoesNotExist", &[]), &labels), Ok(false));
        assert!(selects(&expr("Gt", &["1"]), &labels).is_err());
        assert_eq!(selects(&LabelSelector::default(), &labels), Ok(true));
        let wrong = LabelSelector {
            match_labels: Some([("role".to_string(), "db".to_string())].into()),
            ..LabelSelector::default()
        };
        assert_eq!(selects(&wrong, &labels), Ok(false));
    }
}
