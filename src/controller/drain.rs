//! Draining a node the way `kubectl drain` does, with one deadline per node.
//!
//! 1. The pods on the node are watched with a field selector `spec.nodeName=`
//!    (one list + one watch per draining node; nothing cluster-wide).
//! 2. Each pod is classified ([`classify`]): mirror pods and DaemonSet pods stay,
//!    finished pods are always fine to remove, pods without a controller need
//!    `force`, pods with emptyDir need `deleteEmptyDirData`; otherwise the drain is
//!    blocked at once and says which pods and why (as `kubectl drain` refuses).
//! 3. Pods are evicted through `pods/eviction` (policy/v1), a bounded number in
//!    flight. A 429 (a PodDisruptionBudget has no budget) is retried every ~5 s
//!    with jitter; the 500 "more than one PodDisruptionBudget" is reported as
//!    blocked with the PDB names; 404 means gone.
//! 4. A pod is gone when it left the node's pod list or came back with a new UID.
//! 5. At the deadline, `onTimeout: Fail` returns the pods still there with their
//!    blocking PDBs; `Force` deletes them and waits for them to go. When the API
//!    server refuses the deletion (403: the controller has no `delete` right on
//!    pods, chart value `controller.podDelete: false`), the drain fails at once
//!    with [`POD_DELETE_FORBIDDEN`] instead of waiting for pods that will never go.
//!
//! Evictions go through a client with the kube client's default retry turned
//! off, so a 429 comes back here at once instead of being retried blindly inside
//! the client.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, EvictParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::api::{DrainSpec, OnTimeout};

use crate::core::selector;

/// Drain settings resolved from the policy and the controller flags.
#[derive(Debug, Clone)]
pub struct DrainSettings {
    /// Grace period passed to evictions and deletions.
    pub grace_period_seconds: Option<i64>,
    /// Evict pods with emptyDir volumes.
    pub delete_empty_dir_data: bool,
    /// Evict pods without a controller.
    pub force: bool,
    /// Only pods matching this selector are evicted.
    pub pod_selector: Option<LabelSelector>,
    /// What to do at the deadline.
    pub on_timeout: OnTimeout,
    /// Most evictions in flight at once.
    pub max_in_flight: usize,
    /// Base interval between retries of a refused eviction (jittered ±20 %).
    pub retry_interval: Duration,
}

impl DrainSettings {
    /// Settings from a policy's drain spec.
    pub fn from_spec(spec: &DrainSpec, max_in_flight: usize, retry_interval: Duration) -> Self {
        DrainSettings {
            grace_period_seconds: spec.grace_period_seconds,
            delete_empty_dir_data: spec.delete_empty_dir_data,
            force: spec.force,
            pod_selector: spec.pod_selector.clone(),
            on_timeout: spec.on_timeout,
            max_in_flight: max_in_flight.max(1),
            retry_interval,
        }
    }
}

/// What the drain does with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Left on the node.
    Skip(SkipReason),
    /// Evicted through the eviction API.
    Evict,
    /// Cannot be evicted with these settings; the drain is blocked.
    Refuse(String),
}

/// Why a pod stays on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A static pod mirrored by the kubelet.
    Mirror,
    /// Managed by a DaemonSet (it would be recreated on the node at once).
    DaemonSet,
    /// Not matched by `drain.podSelector`.
    NotSelected,
}

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// Decides what happens to one pod, as `kubectl drain` filters pods.
pub fn classify(pod: &Pod, settings: &DrainSettings) -> Disposition {
    let meta = &pod.metadata;
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
    {
        return Disposition::Skip(SkipReason::Mirror);
    }
    if let Some(sel) = &settings.pod_selector {
        let labels = meta.labels.clone().unwrap_or_default();
        if !selector::matches(sel, &labels) {
            return Disposition::Skip(SkipReason::NotSelected);
        }
    }
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if controller.is_some_and(|o| o.kind == "DaemonSet") {
        return Disposition::Skip(SkipReason::DaemonSet);
    }
    if is_finished(pod) {
        return Disposition::Evict;
    }
    if controller.is_none() && !settings.force {
        return Disposition::Refuse(
            "has no controller that would recreate it; set spec.drain.force: true to evict it anyway"
                .to_string(),
        );
    }
    let empty_dir = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()));
    if empty_dir && !settings.delete_empty_dir_data {
        return Disposition::Refuse(
            "uses emptyDir storage that eviction deletes; set spec.drain.deleteEmptyDirData: true to allow it"
                .to_string(),
        );
    }
    Disposition::Evict
}

/// A pod that kept the drain from finishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockingPod {
    /// `namespace/name`.
    pub pod: String,
    /// Why, in words.
    pub reason: String,
    /// PodDisruptionBudgets involved, as `namespace/name`.
    pub pdbs: Vec<String>,
}

impl BlockingPod {
    /// One line for status and Events.
    pub fn describe(&self) -> String {
        if self.pdbs.is_empty() {
            format!("pod {} {}", self.pod, self.reason)
        } else {
            format!(
                "pod {} blocked by PDB {} ({})",
                self.pod,
                self.pdbs.join(", "),
                self.reason
            )
        }
    }
}

/// How a drain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every pod that had to go is gone.
    Drained {
        /// Pods evicted.
        evicted: usize,
        /// Pods deleted after the deadline (`onTimeout: Force`).
        forced: usize,
    },
    /// Some pods cannot be evicted with these settings (nothing was evicted).
    Refused(Vec<BlockingPod>),
    /// The deadline passed with pods left (`onTimeout: Fail`), or pods deleted
    /// by a forced drain did not terminate in time.
    TimedOut(Vec<BlockingPod>),
    /// A forced drain may not delete pods (the API server answered 403); the
    /// pods that had to go are listed.
    DeleteForbidden(Vec<BlockingPod>),
}

/// What a forced drain says when the controller may not delete pods.
pub const POD_DELETE_FORBIDDEN: &str = "pod deletion is not allowed for the controller; set the chart value controller.podDelete=true or use onTimeout: Fail";

/// The blocking pods of a drain, each with its reason, `; `-separated.
fn describe_all(pods: &[BlockingPod]) -> String {
    pods.iter()
        .map(BlockingPod::describe)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DrainOutcome {
    /// Summary for a failure reason.
    pub fn reason(&self) -> String {
        match self {
            DrainOutcome::Drained { evicted, forced } => {
                format!("drained: {evicted} pods evicted, {forced} deleted")
            }
            DrainOutcome::Refused(pods) => format!("drain refused: {}", describe_all(pods)),
            DrainOutcome::TimedOut(pods) => format!("drain timeout: {}", describe_all(pods)),
            DrainOutcome::DeleteForbidden(pods) => format!(
                "forced drain failed: {POD_DELETE_FORBIDDEN} (pods left: {})",
                pods.iter()
                    .map(|p| p.pod.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Errors that stop a drain before its deadline.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The API server could not be reached or refused a request that should work.
    #[error(
        "listing pods on node {node} failed: {source}; check the controller's RBAC (pods list/watch) and the API server"
    )]
    List {
        /// Node.
        node: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The first list of the pod watch failed.
    #[error(
        "listing pods on node {node} failed: {source}; check the controller's RBAC (pods list/watch) and the API server"
    )]
    Watch {
        /// Node.
        node: String,
        /// Cause.
        #[source]
        source: watcher::Error,
    },
    /// The pod watch ended before its first list was complete.
    #[error("the pod watch of node {node} ended before listing its pods; retrying")]
    WatchEnded {
        /// Node.
        node: String,
    },
}

/// `base` with ±20 % jitter, seeded per pod and attempt so retries of many
/// pods spread out without shared random state.
fn jittered(base: Duration, salt: u64) -> Duration {
    let frac = fastrand::Rng::with_seed(salt).f64() * 0.4 - 0.2;
    base.mul_f64(1.0 + frac)
}

fn salt_of(s: &str, n: u64) -> u64 {
    s.bytes().fold(n.wrapping_mul(31), |h, b| {
        h.wrapping_mul(131).wrapping_add(u64::from(b))
    })
}

fn key_of(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

struct Pending {
    uid: String,
    next_try: tokio::time::Instant,
    attempts: u64,
    last_reason: String,
    pdbs: Vec<String>,
    evicted: bool,
}

/// How pods leave the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMode {
    /// Through the eviction API, honouring PodDisruptionBudgets.
    Evict,
    /// Delete every pod that must leave (also those eviction refuses), as
    /// `onTimeout: Force` asks once the drain deadline passed.
    Force,
}

type Pods = HashMap<(String, String), Pod>;

/// Drains `node` until `deadline`. `client` is used for reads and deletions;
/// `evict_client` (built with the default retry off) for evictions. `progress`
/// receives what currently holds the drain up (for status), `None` when nothing.
pub async fn drain_node(
    client: Client,
    evict_client: Client,
    node: &str,
    settings: &DrainSettings,
    mode: DrainMode,
    deadline: tokio::time::Instant,
    progress: &tokio::sync::watch::Sender<Option<String>>,
) -> Result<DrainOutcome, DrainError> {
    if mode == DrainMode::Force {
        let outcome = force_node(client, node, settings, deadline).await?;
        if !matches!(outcome, DrainOutcome::Drained { .. }) {
            progress.send_replace(Some(outcome.reason()));
        }
        return Ok(outcome);
    }
    let pods_all: Api<Pod> = Api::all(client.clone());
    let fields = format!("spec.nodeName={node}");

    // Start from the watch's own first list (one consistent snapshot, no
    // separate list request); the watch then tells what changes.
    let watch_cfg = watcher::Config::default().fields(&fields);
    // With backoff: a watch the server keeps ending (or answering 410) is
    // resumed or re-listed after a growing wait, not at once.
    let mut events = Box::pin(watcher(pods_all.clone(), watch_cfg).default_backoff());
    let mut live: Pods = HashMap::new();
    let mut relist = None;
    first_list(&mut events, &mut live, &mut relist, node).await?;

    if let Some(outcome) = refused(&live, settings) {
        progress.send_replace(Some(outcome.reason()));
        return Ok(outcome);
    }

    let mut pending = to_evict(&live, settings, tokio::time::Instant::now());
    let mut evicted_count = 0usize;

    loop {
        // Forget pods that are gone (deleted, or replaced by a pod with a new UID).
        pending.retain(|k, p| match live.get(k) {
            None => false,
            Some(pod) => pod.metadata.uid.as_deref().unwrap_or_default() == p.uid,
        });
        if pending.is_empty() {
            return Ok(DrainOutcome::Drained {
                evicted: evicted_count,
                forced: 0,
            });
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }

        // Evict what is due, a bounded number at a time.
        let due: Vec<(String, String)> = pending
            .iter()
            .filter(|(k, p)| {
                !p.evicted
                    && p.next_try <= now
                    && live
                        .get(*k)
                        .is_some_and(|pod| pod.metadata.deletion_timestamp.is_none())
            })
            .map(|(k, _)| k.clone())
            .collect();
        for chunk in due.chunks(settings.max_in_flight) {
            let evict = Evict {
                client: &client,
                evict_client: &evict_client,
                settings,
            };
            evicted_count += evict.chunk(chunk, &mut pending, &live).await;
        }

        progress.send_replace(blocked(&pending));

        // Sleep until a pod changes, the next retry is due, or the deadline.
        let next_retry = pending
            .values()
            .filter(|p| !p.evicted)
            .map(|p| p.next_try)
            .min()
            .unwrap_or(deadline)
            .min(deadline);
        let wake = next_retry.max(tokio::time::Instant::now() + Duration::from_millis(10));
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ev)) => apply_event(&mut live, &mut relist, ev),
                Some(Err(e)) => {
                    tracing::debug!(node, error = %e, "pod watch interrupted; the watcher resumes");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }

    // Deadline passed with pods left.
    let mut left: Vec<BlockingPod> = pending
        .iter()
        .map(|((ns, name), p)| BlockingPod {
            pod: format!("{ns}/{name}"),
            reason: p.last_reason.clone(),
            pdbs: p.pdbs.clone(),
        })
        .collect();
    left.sort_by(|a, b| a.pod.cmp(&b.pod));
    let outcome = DrainOutcome::TimedOut(left);
    progress.send_replace(Some(outcome.reason()));
    Ok(outcome)
}

/// Takes the pod watch's events up to its first complete list.
async fn first_list<S>(
    events: &mut S,
    live: &mut Pods,
    relist: &mut Option<Pods>,
    node: &str,
) -> Result<(), DrainError>
where
    S: futures::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Unpin,
{
    loop {
        match events.next().await {
            Some(Ok(watcher::Event::InitDone)) => {
                apply_event(live, relist, watcher::Event::InitDone);
                return Ok(());
            }
            Some(Ok(ev)) => apply_event(live, relist, ev),
            Some(Err(source)) => {
                return Err(DrainError::Watch {
                    node: node.to_string(),
                    source,
                });
            }
            None => {
                // Never conclude "drained" from a list that did not finish.
                return Err(DrainError::WatchEnded {
                    node: node.to_string(),
                });
            }
        }
    }
}

/// The drain is refused when a pod on the node cannot be evicted with these
/// settings (as `kubectl drain` refuses before evicting anything).
fn refused(live: &Pods, settings: &DrainSettings) -> Option<DrainOutcome> {
    let mut refused: Vec<BlockingPod> = live
        .values()
        .filter_map(|p| match classify(p, settings) {
            Disposition::Refuse(reason) => Some(BlockingPod {
                pod: format!("{}/{}", key_of(p).0, key_of(p).1),
                reason,
                pdbs: Vec::new(),
            }),
            _ => None,
        })
        .collect();
    if refused.is_empty() {
        return None;
    }
    refused.sort_by(|a, b| a.pod.cmp(&b.pod));
    Some(DrainOutcome::Refused(refused))
}

/// The pods that must be evicted, each due at `now`.
fn to_evict(
    live: &Pods,
    settings: &DrainSettings,
    now: tokio::time::Instant,
) -> BTreeMap<(String, String), Pending> {
    live.values()
        .filter(|p| classify(p, settings) == Disposition::Evict)
        .map(|p| {
            (
                key_of(p),
                Pending {
                    uid: p.metadata.uid.clone().unwrap_or_default(),
                    next_try: now,
                    attempts: 0,
                    last_reason: "not evicted yet".into(),
                    pdbs: Vec::new(),
                    evicted: false,
                },
            )
        })
        .collect()
}

/// What holds the drain up: the pods tried and not evicted, with why.
fn blocked(pending: &BTreeMap<(String, String), Pending>) -> Option<String> {
    let blocked: Vec<String> = pending
        .iter()
        .filter(|(_, p)| !p.evicted && p.attempts > 0)
        .map(|((ns, name), p)| {
            BlockingPod {
                pod: format!("{ns}/{name}"),
                reason: p.last_reason.clone(),
                pdbs: p.pdbs.clone(),
            }
            .describe()
        })
        .collect();
    (!blocked.is_empty()).then(|| blocked.join("; "))
}

/// Evictions of one drain.
struct Evict<'a> {
    client: &'a Client,
    evict_client: &'a Client,
    settings: &'a DrainSettings,
}

impl Evict<'_> {
    /// Evicts the pods of `chunk` concurrently and records each answer in
    /// `pending`; returns how many were evicted.
    async fn chunk(
        &self,
        chunk: &[(String, String)],
        pending: &mut BTreeMap<(String, String), Pending>,
        live: &Pods,
    ) -> usize {
        let settings = self.settings;
        let mut evicted_count = 0;
        let results = futures::future::join_all(chunk.iter().map(|(ns, name)| {
            let api: Api<Pod> = Api::namespaced(self.evict_client.clone(), ns);
            let params = EvictParams {
                delete_options: settings.grace_period_seconds.map(|g| DeleteParams {
                    grace_period_seconds: u32::try_from(g).ok(),
                    ..DeleteParams::default()
                }),
                post_options: PostParams::default(),
            };
            async move { api.evict(name, &params).await }
        }))
        .await;
        for (key, result) in chunk.iter().zip(results) {
            let Some(p) = pending.get_mut(key) else {
                continue;
            };
            p.attempts += 1;
            match result {
                Ok(_) => {
                    p.evicted = true;
                    evicted_count += 1;
                    p.last_reason = "evicted, waiting for it to terminate".into();
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    p.evicted = true;
                }
                Err(kube::Error::Api(s)) if s.code == 429 => {
                    p.last_reason = eviction_refusal(&s);
                    p.pdbs = pdb_names_from_status(&s, &key.0);
                    p.next_try = tokio::time::Instant::now()
                        + jittered(settings.retry_interval, salt_of(&key.1, p.attempts));
                }
                Err(kube::Error::Api(s))
                    if s.code == 500 && s.message.contains("more than one PodDisruptionBudget") =>
                {
                    p.last_reason = "is covered by more than one PodDisruptionBudget, which the eviction API does not support; leave one PDB per pod".into();
                    p.pdbs = matching_pdbs(self.client, &key.0, live.get(key)).await;
                    p.next_try = tokio::time::Instant::now()
                        + jittered(settings.retry_interval, salt_of(&key.1, p.attempts));
                }
                Err(e) => {
                    p.last_reason = format!("eviction failed: {e}");
                    p.next_try = tokio::time::Instant::now()
                        + jittered(settings.retry_interval, salt_of(&key.1, p.attempts));
                }
            }
        }
        evicted_count
    }
}

/// Deletes every pod that must leave the node and waits (until `deadline`) for them to go.
async fn force_node(
    client: Client,
    node: &str,
    settings: &DrainSettings,
    deadline: tokio::time::Instant,
) -> Result<DrainOutcome, DrainError> {
    let pods_all: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let must_go = |p: &Pod| !matches!(classify(p, settings), Disposition::Skip(_));
    let list = pods_all
        .list(&lp)
        .await
        .map_err(|source| DrainError::List {
            node: node.to_string(),
            source,
        })?;
    let mut forced = 0;
    let mut uids = BTreeSet::new();
    let to_go: Vec<&Pod> = list.items.iter().filter(|p| must_go(p)).collect();
    for (i, p) in to_go.iter().enumerate() {
        let (ns, name) = key_of(p);
        uids.insert(p.metadata.uid.clone().unwrap_or_default());
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: settings
                .grace_period_seconds
                .and_then(|g| u32::try_from(g).ok()),
            ..DeleteParams::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => forced += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // No right to delete pods: no pod will go, so the node fails now
            // (the same rule refuses every other deletion).
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tracing::warn!(node, pod = %name, "{POD_DELETE_FORBIDDEN}");
                let mut left: Vec<BlockingPod> = to_go[i..]
                    .iter()
                    .map(|p| BlockingPod {
                        pod: format!("{}/{}", key_of(p).0, key_of(p).1),
                        reason: "could not be deleted: the API server refused (403)".into(),
                        pdbs: Vec::new(),
                    })
                    .collect();
                left.sort_by(|a, b| a.pod.cmp(&b.pod));
                return Ok(DrainOutcome::DeleteForbidden(left));
            }
            Err(e) => tracing::warn!(node, pod = %name, error = %e, "force delete failed"),
        }
    }
    // Wait for the deleted pods to terminate (their UIDs leave the node).
    loop {
        let list = pods_all
            .list(&lp)
            .await
            .map_err(|source| DrainError::List {
                node: node.to_string(),
                source,
            })?;
        let left: Vec<&Pod> = list
            .items
            .iter()
            .filter(|p| uids.contains(p.metadata.uid.as_deref().unwrap_or_default()))
            .collect();
        if left.is_empty() {
            return Ok(DrainOutcome::Drained { evicted: 0, forced });
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(DrainOutcome::TimedOut(
                left.iter()
                    .map(|p| BlockingPod {
                        pod: format!("{}/{}", key_of(p).0, key_of(p).1),
                        reason: "was deleted but has not terminated".into(),
                        pdbs: Vec::new(),
                    })
                    .collect(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Applies one watch event. A re-list (`Init` … `InitDone`) is collected in
/// `relist` and replaces `live` only when complete, so pods never seem to vanish
/// while the watch restarts.
fn apply_event(live: &mut Pods, relist: &mut Option<Pods>, ev: watcher::Event<Pod>) {
    match ev {
        watcher::Event::Apply(p) => {
            live.insert(key_of(&p), p);
        }
        watcher::Event::Delete(p) => {
            live.remove(&key_of(&p));
        }
        watcher::Event::Init => *relist = Some(HashMap::new()),
        watcher::Event::InitApply(p) => {
            relist
                .get_or_insert_with(HashMap::new)
                .insert(key_of(&p), p);
        }
        watcher::Event::InitDone => {
            if let Some(fresh) = relist.take() {
                *live = fresh;
            }
        }
    }
}

/// The refusal text of a 429 eviction, with the budget's own words when given.
fn eviction_refusal(s: &kube::core::Status) -> String {
    let causes: Vec<String> = s
        .details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.message.clone()).collect())
        .unwrap_or_default();
    if causes.is_empty() {
        s.message.clone()
    } else {
        causes.join("; ")
    }
}

/// PDB names the API server put into a 429's causes ("The disruption budget X needs …").
fn pdb_names_from_status(s: &kube::core::Status, namespace: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    for c in s.details.iter().flat_map(|d| d.causes.iter()) {
        if let Some(rest) = c.message.strip_prefix("The disruption budget ")
            && let Some(name) = rest.split_whitespace().next()
        {
            out.insert(format!("{namespace}/{name}"));
        }
    }
    out.into_iter().collect()
}

/// PDBs whose selector matches the pod (to name them when the server will not).
async fn matching_pdbs(client: &Client, namespace: &str, pod: Option<&Pod>) -> Vec<String> {
    let Some(pod) = pod else { return Vec::new() };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    match api.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .iter()
            .filter(|pdb| {
                pdb.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .is_some_and(|sel| selector::matches(sel, &labels))
            })
            .filter_map(|pdb| pdb.metadata.name.clone())
            .map(|n| format!("{namespace}/{n}"))
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot list PodDisruptionBudgets to name them");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relist_never_makes_pods_vanish_midway() {
        let mut live = HashMap::new();
        let mut relist = None;
        let p = pod(Some("ReplicaSet"));
        apply_event(&mut live, &mut relist, watcher::Event::Apply(p.clone()));
        apply_event(&mut live, &mut relist, watcher::Event::Init);
        assert_eq!(live.len(), 1, "pods stay while the re-list runs");
        apply_event(&mut live, &mut relist, watcher::Event::InitApply(p.clone()));
        assert_eq!(live.len(), 1);
        apply_event(&mut live, &mut relist, watcher::Event::InitDone);
        assert_eq!(live.len(), 1);
        apply_event(&mut live, &mut relist, watcher::Event::Init);
        apply_event(&mut live, &mut relist, watcher::Event::InitDone);
        assert!(
            live.is_empty(),
            "a completed empty re-list means the pods are gone"
        );
    }
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PodSpec, PodStatus, Volume};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn settings() -> DrainSettings {
        DrainSettings::from_spec(&DrainSpec::default(), 5, Duration::from_secs(5))
    }

    fn pod(owner: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                owner_references: owner.map(|kind| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: kind.into(),
                        name: "o".into(),
                        uid: "u".into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn managed_pods_are_evicted() {
        assert_eq!(
            classify(&pod(Some("ReplicaSet")), &settings()),
            Disposition::Evict
        );
        assert_eq!(
            classify(&pod(Some("StatefulSet")), &settings()),
            Disposition::Evict
        );
    }

    #[test]
    fn daemonset_and_mirror_pods_stay() {
        assert_eq!(
            classify(&pod(Some("DaemonSet")), &settings()),
            Disposition::Skip(SkipReason::DaemonSet)
        );
        let mut p = pod(None);
        p.metadata.annotations = Some([(MIRROR_ANNOTATION.to_string(), "x".to_string())].into());
        assert_eq!(
            classify(&p, &settings()),
            Disposition::Skip(SkipReason::Mirror)
        );
    }

    #[test]
    fn unmanaged_pods_need_force() {
        assert!(
            matches!(classify(&pod(None), &settings()), Disposition::Refuse(r) if r.contains("force"))
        );
        let mut s = settings();
        s.force = true;
        assert_eq!(classify(&pod(None), &s), Disposition::Evict);
    }

    #[test]
    fn finished_pods_are_always_removable() {
        let mut p = pod(None);
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert_eq!(classify(&p, &settings()), Disposition::Evict);
    }

    #[test]
    fn empty_dir_needs_permission() {
        let mut p = pod(Some("ReplicaSet"));
        p.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }]);
        assert_eq!(classify(&p, &settings()), Disposition::Evict);
        let mut s = settings();
        s.delete_empty_dir_data = false;
        assert!(matches!(classify(&p, &s), Disposition::Refuse(r) if r.contains("emptyDir")));
    }

    #[test]
    fn pod_selector_limits_the_drain() {
        let mut s = settings();
        s.pod_selector = Some(LabelSelector {
            match_labels: Some([("app".to_string(), "db".to_string())].into()),
            ..LabelSelector::default()
        });
        assert_eq!(
            classify(&pod(Some("ReplicaSet")), &s),
            Disposition::Skip(SkipReason::NotSelected)
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_varies() {
        let base = Duration::from_secs(5);
        let values: BTreeSet<u128> = (0..50)
            .map(|i| {
                let d = jittered(base, salt_of("pod", i));
                assert!(
                    d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
                    "{d:?}"
                );
                d.as_millis()
            })
            .collect();
        assert!(
            values.len() > 10,
            "jitter should spread retries: {values:?}"
        );
    }

    #[test]
    fn pdb_names_are_read_from_the_429_causes() {
        let s: kube::core::Status = serde_json::from_value(serde_json::json!({
            "code": 429,
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": [{"reason": "DisruptionBudget", "message": "The disruption budget db-pdb needs 2 healthy pods and has 2 currently"}]}
        }))
        .unwrap();
        assert_eq!(
            pdb_names_from_status(&s, "shop"),
            vec!["shop/db-pdb".to_string()]
        );
        assert!(eviction_refusal(&s).contains("needs 2 healthy pods"));
    }
}

#[cfg(test)]
pub(crate) mod fake_api {
    //! A scripted API server for drains: lists one managed pod on the node and
    //! refuses its deletion with 403, as an API server does for a controller
    //! without `delete` on pods.
    use http::{Request, Response};
    use kube::client::Body;
    use tower_test::mock::Handle;

    fn json(status: u16, v: &serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .body(Body::from(v.to_string().into_bytes()))
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }

    /// Answers the pod list of `node` and the deletion of `shop/db-0`, then
    /// checks that no further request comes.
    pub(crate) async fn refuse_pod_deletion(
        mut handle: Handle<Request<Body>, Response<Body>>,
        node: &str,
    ) -> Result<(), String> {
        let (req, send) = handle.next_request().await.ok_or("no pod list")?;
        if req.method() != http::Method::GET || req.uri().path() != "/api/v1/pods" {
            return Err(format!(
                "expected the pod list, got {} {}",
                req.method(),
                req.uri()
            ));
        }
        let query = req.uri().query().unwrap_or_default().replace("%3D", "=");
        if !query.contains(&format!("spec.nodeName={node}")) {
            return Err(format!("the pod list is not limited to the node: {query}"));
        }
        send.send_response(json(
            200,
            &serde_json::json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7"},
                "items": [{
                    "metadata": {"name": "db-0", "namespace": "shop", "uid": "u-db-0",
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                            "name": "db", "uid": "s", "controller": true}]},
                    "spec": {"nodeName": node, "containers": []},
                    "status": {"phase": "Running"},
                }],
            }),
        ));
        let (req, send) = handle.next_request().await.ok_or("no pod deletion")?;
        if req.method() != http::Method::DELETE
            || req.uri().path() != "/api/v1/namespaces/shop/pods/db-0"
        {
            return Err(format!(
                "expected the deletion, got {} {}",
                req.method(),
                req.uri()
            ));
        }
        send.send_response(json(
            403,
            &serde_json::json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
                "message": "pods \"db-0\" is forbidden: User \"system:serviceaccount:sofort-system:sofort-controller\" cannot delete resource \"pods\" in API group \"\" in the namespace \"shop\"",
            }),
        ));
        // Nothing more: the drain must not wait for pods that cannot go.
        match tokio::time::timeout(std::time::Duration::from_millis(300), handle.next_request())
            .await
        {
            Ok(Some((req, _))) => Err(format!(
                "a request after the refusal: {} {}",
                req.method(),
                req.uri()
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod force_tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    #[tokio::test]
    async fn force_drain_without_delete_rights_fails_at_once_saying_what_to_do()
    -> Result<(), Box<dyn std::error::Error>> {
        let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(mock, "default");
        let server = tokio::spawn(fake_api::refuse_pod_deletion(handle, "w-1"));
        let spec = DrainSpec {
            on_timeout: OnTimeout::Force,
            ..DrainSpec::default()
        };
        let settings = DrainSettings::from_spec(&spec, 5, Duration::from_secs(5));
        let (tx, rx) = tokio::sync::watch::channel(None);
        // A deadline an hour away: only the refusal can end the drain in time.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            drain_node(
                client.clone(),
                client,
                "w-1",
                &settings,
                DrainMode::Force,
                deadline,
                &tx,
            ),
        )
        .await
        .map_err(|_| "the forced drain waited instead of failing at once")??;
        let DrainOutcome::DeleteForbidden(left) = &outcome else {
            return Err(format!("expected DeleteForbidden, got {outcome:?}").into());
        };
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].pod, "shop/db-0");
        let reason = outcome.reason();
        assert!(
            reason.contains(
                "pod deletion is not allowed for the controller; set the chart value controller.podDelete=true or use onTimeout: Fail"
            ),
            "{reason}"
        );
        assert!(reason.contains("shop/db-0"), "{reason}");
        assert_eq!(
            rx.borrow().as_deref(),
            Some(reason.as_str()),
            "status sees the reason"
        );
        server.await??;
        Ok(())
    }
}
