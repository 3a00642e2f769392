//! An independent observer of a rollout: it watches every Node and checks the
//! safety rules of the design on each change, without trusting the controller.
//! The sandbox demo prints its figures; the end-to-end tests fail on its
//! violations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::api::Step;
use crate::core::node_record::{NodeRecord, RECORD_ANNOTATION};
use crate::core::rollout::NodeView;
use crate::core::selector;

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

#[derive(Debug, Clone)]
struct Last {
    unschedulable: bool,
    boot_id: Option<String>,
    record: Option<NodeRecord>,
}

/// A running observer.
pub struct Observer {
    state: Arc<Mutex<Observations>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Starts watching every node of the cluster behind `client` and returns
    /// once the first node list is in (or after `LIST_WAIT`, when the API is
    /// too slow to answer), so a rollout started afterwards is seen whole.
    pub async fn start(client: Client, policies: Vec<WatchedPolicy>) -> Observer {
        let state = Arc::new(Mutex::new(Observations::default()));
        let st = state.clone();
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel::<()>();
        let mut listed_tx = Some(listed_tx);
        let task = tokio::spawn(async move {
            let api: Api<Node> = Api::all(client);
            let mut stream = Box::pin(watcher(api, watcher::Config::default()).default_backoff());
            let started = Instant::now();
            let mut last: HashMap<String, Last> = HashMap::new();
            let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
            let mut initial_done = false;
            let mut last_uncordon: Option<Instant> = None;
            let mut boots_per_request: HashMap<(String, String, String), u32> = HashMap::new();
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let changed: Vec<Node> = match ev {
                    watcher::Event::Apply(n) | watcher::Event::InitApply(n) => vec![n],
                    watcher::Event::Delete(n) => {
                        nodes.remove(&n.name_any());
                        continue;
                    }
                    watcher::Event::Init => continue,
                    watcher::Event::InitDone => {
                        // Only the first list tells what was cordoned before the
                        // rollout; later re-lists (dropped watches) must not.
                        if initial_done {
                            continue;
                        }
                        initial_done = true;
                        if let Ok(mut o) = st.lock() {
                            // Cordoned by someone else: unschedulable, and not
                            // by a sofort claim that found it schedulable (the
                            // first list can come late when the API is flaky).
                            o.pre_cordoned = nodes
                                .values()
                                .map(NodeView::from_node)
                                .filter(|v| {
                                    v.unschedulable
                                        && !v.record.as_ref().is_some_and(|r| {
                                            r.step.in_progress() && !r.was_unschedulable
                                        })
                                })
                                .map(|v| v.name)
                                .collect();
                        }
                        if let Some(tx) = listed_tx.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                };
                let Ok(mut o) = st.lock() else { return };
                for n in changed {
                    let name = n.name_any();
                    let view = NodeView::from_node(&n);
                    let prev = last.get(&name).cloned();
                    if initial_done && let Some(prev) = &prev {
                        // Rule 2/3: a new boot ID only after cordon + reboot request.
                        if prev.boot_id.is_some()
                            && view.boot_id.is_some()
                            && prev.boot_id != view.boot_id
                        {
                            *o.reboots.entry(name.clone()).or_default() += 1;
                            let asked = prev.record.as_ref().is_some_and(|r| {
                                matches!(r.step, Step::Rebooting | Step::WaitingReady)
                            });
                            if !prev.unschedulable || !asked {
                                o.violations.push(format!(
                                    "node {name} rebooted without being cordoned and asked (unschedulable={}, step={:?})",
                                    prev.unschedulable,
                                    prev.record.as_ref().map(|r| r.step)
                                ));
                            }
                            if let Some(r) = &prev.record {
                                let k = (name.clone(), r.policy.clone(), r.revision.clone());
                                let c = boots_per_request.entry(k).or_default();
                                *c += 1;
                                if *c > 1 {
                                    o.violations.push(format!(
                                        "node {name} rebooted {c} times for {} revision {}",
                                        r.policy, r.revision
                                    ));
                                }
                            }
                        }
                        // Rule 4: pre-cordoned nodes stay cordoned.
                        if o.pre_cordoned.contains(&name)
                            && prev.unschedulable
                            && !view.unschedulable
                        {
                            o.violations.push(format!(
                                "node {name} was cordoned before the rollout and got uncordoned"
                            ));
                        }
                        if prev.unschedulable && !view.unschedulable {
                            last_uncordon = Some(Instant::now());
                        }
                        // Claims.
                        let claimed_now = view.record.as_ref().filter(|r| r.step.in_progress());
                        let claimed_before =
                            prev.record.as_ref().is_some_and(|r| r.step.in_progress());
                        if let Some(r) = claimed_now
                            && !claimed_before
                        {
                            o.first_claim
                                .entry(name.clone())
                                .or_insert(started.elapsed());
                            if let Some(t) = last_uncordon.take() {
                                o.handoffs.push(t.elapsed());
                            }
                            let _ = r;
                        }
                        if prev.record.is_some() && view.record.is_none() {
                            o.released.insert(name.clone(), started.elapsed());
                        }
                    }
                    last.insert(
                        name.clone(),
                        Last {
                            unschedulable: view.unschedulable,
                            boot_id: view.boot_id.clone(),
                            record: view.record.clone(),
                        },
                    );
                    nodes.insert(name, n);
                }
                o.nodes_seen = nodes.len();
                if !initial_done {
                    continue;
                }
                // Rule 1: budget per policy, checked whenever the policy has a node in progress.
                for p in &policies {
                    let selected: Vec<NodeView> = nodes
                        .values()
                        .map(NodeView::from_node)
                        .filter(|v| selector::matches(&p.selector, &v.labels))
                        .collect();
                    let mine = selected.iter().filter(|v| {
                        v.record
                            .as_ref()
                            .is_some_and(|r| r.policy == p.name && r.step.in_progress())
                    });
                    if mine.count() == 0 {
                        continue;
                    }
                    let unavailable = selected
                        .iter()
                        .filter(|v| {
                            !v.ready
                                || v.unschedulable
                                || v.record.as_ref().is_some_and(|r| r.step.in_progress())
                        })
                        .count();
                    let seen = o.max_unavailable_seen.entry(p.name.clone()).or_default();
                    *seen = (*seen).max(unavailable);
                    if unavailable > p.max_unavailable {
                        o.violations.push(format!(
                            "policy {}: {unavailable} selected nodes unavailable, maxUnavailable {}",
                            p.name, p.max_unavailable
                        ));
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
        self.state.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Stops watching.
    pub fn stop(self) -> Observations {
        self.task.abort();
        self.observations()
    }
}

/// Nodes whose record annotation names `policy` (any step).
pub fn claimed_by(nodes: &[Node], policy: &str) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| {
            n.annotations()
                .get(RECORD_ANNOTATION)
                .and_then(|s| serde_json::from_str::<NodeRecord>(s).ok())
                .is_some_and(|r| r.policy == policy)
        })
        .map(|n| n.name_any())
        .collect()
}
