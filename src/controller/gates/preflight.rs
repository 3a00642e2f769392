//! The drainability pre-flight: which selected nodes could not be drained
//! now. For each node, its pods as `kubectl drain` would treat them
//! ([`crate::controller::drain::classify`]), PodDisruptionBudget arithmetic
//! ([`crate::core::gates::preflight`]) and a dry-run eviction (`dryRun: All`)
//! of each pod to evict, which the API server answers as it would a real one
//! without evicting anything. The result goes to status and the admins'
//! Events, never to customer notifications.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{EvictParams, ListParams, PostParams};
use kube::{Api, Client};
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{PatchPolicySpec, PreflightStatus};
use crate::controller::drain::{Disposition, DrainSettings, classify};
use crate::core::gates::clean;
use crate::core::gates::pods::PodView;
use crate::core::gates::preflight::{PdbView, pdb_block, spread, summary};
use crate::core::rollout::NodeView;

/// Nodes checked at most per run.
pub const MAX_NODES: usize = 500;
/// Blocked nodes listed in status at most.
pub const MAX_LISTED: usize = 20;

fn view(p: &Pod) -> PodView {
    PodView {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        labels: p.metadata.labels.clone().unwrap_or_default(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        phase: p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
        deleting: p.metadata.deletion_timestamp.is_some(),
    }
}

pub fn pdb_view(p: &PodDisruptionBudget) -> PdbView {
    PdbView {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        selector: p.spec.as_ref().and_then(|s| s.selector.clone()),
        allowed: p
            .status
            .as_ref()
            .map_or(0, |s| i64::from(s.disruptions_allowed)),
    }
}

/// The nodes a pre-flight of `policy` checks: those its selector selects
/// that are not yet done at its revision.
pub fn nodes_to_check<'a>(
    policy: &str,
    spec: &PatchPolicySpec,
    views: impl IntoIterator<Item = &'a NodeView>,
) -> Vec<String> {
    views
        .into_iter()
        .filter(|v| crate::core::selector::selects_node(&spec.node_selector, &v.labels))
        .filter(|v| v.done.get(policy) != Some(&spec.revision))
        .map(|v| v.name.clone())
        .collect()
}

/// Dry-run evictions per run at most, spread over the nodes
/// ([`spread`]): the first pod of each node, then the second, and so on.
pub const MAX_EVICTIONS: usize = 50;

/// Runs the pre-flight of revision `spec.revision` over `nodes`: at most
/// [`MAX_NODES`] nodes (one pod list each) and [`MAX_EVICTIONS`] dry-run
/// evictions.
pub async fn run(
    client: &Client,
    evict_client: &Client,
    spec: &PatchPolicySpec,
    nodes: &[String],
    now: Timestamp,
) -> PreflightStatus {
    let pdbs: Vec<PdbView> = match Api::<PodDisruptionBudget>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items.iter().map(pdb_view).collect(),
        Err(e) => return failed(spec, now, &e.to_string()),
    };
    let settings = DrainSettings::from_spec(&spec.drain, 1, Duration::from_secs(1));
    // Each node's pods are judged as soon as they are listed and only the
    // verdict is kept: holding every listed Pod until the last list (500
    // nodes of 50 pods) cost the controller well over 100 MiB.
    let mut found: Offline = Default::default();
    let mut checked = 0;
    for node in nodes.iter().take(MAX_NODES) {
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        match Api::<Pod>::all(client.clone()).list(&lp).await {
            Ok(l) => judge(&mut found, &pdbs, node, &l.items, &settings),
            Err(e) => return failed(spec, now, &e.to_string()),
        }
        checked += 1;
    }
    let (mut blocked, to_evict) = found;
    let (tried, wanted) = dry_run(evict_client, &to_evict, &mut blocked).await;
    let mut status = report(spec, now, &blocked, checked);
    if tried < wanted {
        status.summary = format!(
            "{}; dry-run evictions for {tried} of {wanted} pods",
            status.summary
        );
    }
    status
}

/// The nodes that would block, with why, and the pods to evict of the
/// others, by node.
pub type Offline = (BTreeMap<String, String>, Vec<(String, Vec<PodView>)>);

/// The pre-flight without the API server (for `sofort plan` with files, and
/// the first step of [`run`]): per node, a pod `kubectl drain` would refuse or
/// PDB arithmetic that would block; and for the other nodes the pods to
/// evict.
pub fn offline(
    pdbs: &[PdbView],
    pods_by_node: &[(String, Vec<Pod>)],
    settings: &DrainSettings,
) -> Offline {
    let mut found: Offline = Default::default();
    for (node, pods) in pods_by_node {
        judge(&mut found, pdbs, node, pods, settings);
    }
    found
}

/// Adds one node's verdict to `found`: why it would block, or the pods to
/// evict (without their labels, which only the PDB arithmetic needs).
fn judge(
    found: &mut Offline,
    pdbs: &[PdbView],
    node: &str,
    pods: &[Pod],
    settings: &DrainSettings,
) {
    match node_block(pdbs, pods, settings) {
        Err(why) => {
            found.0.insert(node.to_string(), why);
        }
        Ok(mut evict) => {
            for v in &mut evict {
                v.labels = Default::default();
            }
            found.1.push((node.to_string(), evict));
        }
    }
}

/// The status of a pre-flight that found `blocked` among `checked` nodes.
pub fn report(
    spec: &PatchPolicySpec,
    now: Timestamp,
    blocked: &BTreeMap<String, String>,
    checked: usize,
) -> PreflightStatus {
    PreflightStatus {
        checked_at: Time(now),
        revision: spec.revision.clone(),
        summary: summary(blocked, checked),
        blocked: blocked
            .iter()
            .take(MAX_LISTED)
            .map(|(n, why)| format!("{}: {why}", clean(n)))
            .collect(),
    }
}

/// Why draining a node with `pods` would block now (`Err`), or the pods it
/// would evict.
fn node_block(
    pdbs: &[PdbView],
    pods: &[Pod],
    settings: &DrainSettings,
) -> Result<Vec<PodView>, String> {
    let mut to_evict = Vec::new();
    for p in pods {
        let v = view(p);
        match classify(p, settings) {
            Disposition::Refuse(reason) => {
                return Err(format!(
                    "pod {}/{} {reason}",
                    clean(&v.namespace),
                    clean(&v.name)
                ));
            }
            Disposition::Evict => to_evict.push(v),
            Disposition::Skip(_) => {}
        }
    }
    match pdb_block(pdbs, &to_evict) {
        Some(why) => Err(why),
        None => Ok(to_evict),
    }
}

/// Dry-run evictions of at most [`MAX_EVICTIONS`] pods of `to_evict`, spread
/// over the nodes; a refused one blocks its node. Returns how many were
/// tried and how many pods there were.
async fn dry_run(
    evict_client: &Client,
    to_evict: &[(String, Vec<PodView>)],
    blocked: &mut BTreeMap<String, String>,
) -> (usize, usize) {
    let sizes: Vec<usize> = to_evict.iter().map(|(_, p)| p.len()).collect();
    let wanted = sizes.iter().sum();
    let order = spread(&sizes, MAX_EVICTIONS);
    for &(n, i) in &order {
        let (node, pods) = &to_evict[n];
        if blocked.contains_key(node) {
            continue;
        }
        if let Some(why) = refused(evict_client, &pods[i]).await {
            blocked.insert(node.clone(), why);
        }
    }
    (order.len(), wanted)
}

/// Why a dry-run eviction of `v` is refused, if it is (errors other than a
/// refusal do not block: the real drain will tell).
async fn refused(evict_client: &Client, v: &PodView) -> Option<String> {
    let api: Api<Pod> = Api::namespaced(evict_client.clone(), &v.namespace);
    let params = EvictParams {
        delete_options: None,
        post_options: PostParams {
            dry_run: true,
            ..PostParams::default()
        },
    };
    match api.evict(&v.name, &params).await {
        Err(kube::Error::Api(s)) if s.code == 429 || s.code == 500 => Some(format!(
            "eviction of pod {}/{} refused: {}",
            clean(&v.namespace),
            clean(&v.name),
            clean(&s.message)
        )),
        _ => None,
    }
}

fn failed(spec: &PatchPolicySpec, now: Timestamp, error: &str) -> PreflightStatus {
    PreflightStatus {
        checked_at: Time(now),
        revision: spec.revision.clone(),
        summary: format!("pre-flight could not run: {}", clean(error)),
        blocked: Vec::new(),
    }
}

/// The pre-flights of the policies, each run in the background (at most one
/// per policy at a time), so that a pass never waits for one; a pass takes
/// the result when it is there.
#[derive(Clone, Default)]
pub struct Preflights {
    state: Arc<Mutex<Runs>>,
    kick: Option<UnboundedSender<()>>,
}

/// The pre-flights by policy, and the next ticket.
#[derive(Default)]
struct Runs {
    slots: BTreeMap<String, Slot>,
    next_ticket: u64,
}

/// A policy's pre-flight.
enum Slot {
    /// Running for this revision, with its ticket.
    Running(String, u64),
    /// Done, not yet taken by a pass.
    Done(PreflightStatus),
}

/// What a pre-flight run needs.
pub struct Job {
    /// The cluster (lists).
    pub client: Client,
    /// For the dry-run evictions.
    pub evict_client: Client,
    /// The policy's spec.
    pub spec: PatchPolicySpec,
    /// The nodes to check.
    pub nodes: Vec<String>,
    /// When it runs.
    pub now: Timestamp,
}

impl Preflights {
    /// Pre-flights that send on `kick` when one is done.
    pub fn new(kick: Option<UnboundedSender<()>>) -> Preflights {
        Preflights {
            state: Arc::default(),
            kick,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Runs> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The finished pre-flight of `policy` at `revision`, taken, if there is
    /// one; otherwise, when `due` and none runs for this revision, starts
    /// `job()` in the background.
    pub fn poll(
        &self,
        policy: &str,
        revision: &str,
        due: bool,
        job: impl FnOnce() -> Job,
    ) -> Option<PreflightStatus> {
        let mut st = self.lock();
        match st.slots.get(policy) {
            Some(Slot::Done(r)) if r.revision == revision => {
                let r = r.clone();
                st.slots.remove(policy);
                return Some(r);
            }
            Some(Slot::Running(rev, _)) if rev == revision => return None,
            _ if !due => return None,
            _ => {}
        }
        st.next_ticket += 1;
        let ticket = st.next_ticket;
        let running = Slot::Running(revision.to_string(), ticket);
        st.slots.insert(policy.to_string(), running);
        drop(st);
        let job = job();
        let (me, policy) = (self.clone(), policy.to_string());
        tokio::spawn(async move {
            let r = run(
                &job.client,
                &job.evict_client,
                &job.spec,
                &job.nodes,
                job.now,
            )
            .await;
            let mut st = me.lock();
            if matches!(st.slots.get(&policy), Some(Slot::Running(_, t)) if *t == ticket) {
                st.slots.insert(policy, Slot::Done(r));
                drop(st);
                if let Some(k) = &me.kick {
                    let _ = k.send(());
                }
            }
        });
        None
    }

    /// Forgets the pre-flights of policies not in `live` (a running one's
    /// result is then dropped).
    pub fn retain(&self, live: &BTreeSet<String>) {
        self.lock().slots.retain(|p, _| live.contains(p));
    }

    /// Policies held (tests).
    pub fn held(&self) -> usize {
        self.lock().slots.len()
    }
}
