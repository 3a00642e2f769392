//! Gathering what the health gates look at, at most once per gate per
//! interval: Prometheus' alerts and query results, Alertmanager's silences,
//! the pods the blocking-pod gates select and the workload objects. And the
//! silences for nodes in maintenance (`silenceDuringMaintenance`).
//!
//! Every fetch is bounded ([`super::Limits`]); a failed one is an observation
//! too (`Err`), and closes its gate. URLs may come from Secrets by the same
//! consent rule as webhook Secrets ([`crate::notify::secret`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{GatesSpec, SecretKeyRef};
use crate::core::clock::Clock;
use crate::core::gates::alerts::{Alert, Silence};
use crate::core::gates::cache::GateCache;
use crate::core::gates::config::GatesConfig;
use crate::core::gates::evaluate::Observations;
use crate::core::gates::pods::PodView;
use crate::core::gates::query::QueryResult;
use crate::core::gates::workload::WorkloadRef;
use crate::core::gates::{Observed, clean};
use crate::core::selector;
use crate::metrics::ControllerMetrics;
use crate::notify::secret::{secret_bytes, secret_text};

use super::client::{Limits, MonitoringClient, NewSilence};

/// Pods listed per blocking-pod rule at most.
pub const MAX_PODS: u32 = 2000;
/// Observations kept at most (keys over all policies).
pub const CACHE_KEYS: usize = 4096;
/// How long a maintenance silence lasts; renewed while the node is in
/// progress, so a controller that stops leaves no silence for long.
pub const SILENCE_SPAN: Duration = Duration::from_secs(30 * 60);

/// The comment that marks sofort's silence for `node` of `policy`.
pub fn silence_comment(policy: &str, node: &str) -> String {
    format!("sofort maintenance: policy {policy} node {node}")
}

/// (policy, gate key).
type Key = (String, String);

/// Which cache of [`State`] a gate's observations go to.
type Slot<T> = fn(&mut State) -> &mut GateCache<Key, T>;

/// What the observer knows, shared with its background checks.
struct State {
    alerts: GateCache<Key, Vec<Alert>>,
    silences: GateCache<Key, Vec<Silence>>,
    queries: GateCache<Key, QueryResult>,
    pods: GateCache<Key, Vec<PodView>>,
    workloads: GateCache<Key, BTreeMap<WorkloadRef, Option<serde_json::Value>>>,
    upkeep: GateCache<Key, ()>,
    /// The last failure of the maintenance silences, per policy, until a
    /// pass reports it.
    upkeep_failures: BTreeMap<String, String>,
    clients: HashMap<Key, (String, Option<Vec<u8>>, MonitoringClient)>,
    /// The checks running, each with its ticket: at most one per key.
    in_flight: BTreeMap<Key, u64>,
    next_ticket: u64,
}

impl State {
    fn new(interval: Duration) -> State {
        State {
            alerts: GateCache::new(interval, CACHE_KEYS),
            silences: GateCache::new(interval, CACHE_KEYS),
            queries: GateCache::new(interval, CACHE_KEYS),
            pods: GateCache::new(interval, CACHE_KEYS),
            workloads: GateCache::new(interval, CACHE_KEYS),
            upkeep: GateCache::new(interval, CACHE_KEYS),
            upkeep_failures: BTreeMap::new(),
            clients: HashMap::new(),
            in_flight: BTreeMap::new(),
            next_ticket: 0,
        }
    }

    /// Marks a check of `key` as running, unless one already is.
    fn begin(&mut self, key: &Key) -> Option<u64> {
        if self.in_flight.contains_key(key) {
            return None;
        }
        self.next_ticket += 1;
        self.in_flight.insert(key.clone(), self.next_ticket);
        Some(self.next_ticket)
    }

    /// Whether the check `ticket` of `key` is still wanted (not forgotten
    /// with its policy); ends it.
    fn end(&mut self, key: &Key, ticket: u64) -> bool {
        if self.in_flight.get(key) != Some(&ticket) {
            return false;
        }
        self.in_flight.remove(key);
        true
    }

    fn keys(&self) -> usize {
        self.alerts.len()
            + self.silences.len()
            + self.queries.len()
            + self.pods.len()
            + self.workloads.len()
            + self.upkeep.len()
            + self.clients.len()
            + self.in_flight.len()
            + self.upkeep_failures.len()
    }
}

/// What a background check needs: the clients, the shared state, and whom
/// to tell when an observation changed.
#[derive(Clone)]
struct Fetcher {
    client: Client,
    limits: Limits,
    clock: Clock,
    metrics: ControllerMetrics,
    kick: Option<UnboundedSender<()>>,
    state: Arc<Mutex<State>>,
}

/// The controller's gate observer. The checks run in background tasks, at
/// most one per policy and gate at a time and at most one per interval; a
/// pass only reads what they last observed (with its age), so a slow or
/// black-holed endpoint never delays a pass. Missing, failed and stale
/// observations close their gate, as the core decides.
pub struct GateObserver {
    fetch: Fetcher,
    interval: Duration,
}

/// Where a monitoring server is.
#[derive(Clone)]
struct Source {
    kind: &'static str,
    url: Option<String>,
    url_ref: Option<SecretKeyRef>,
    ca_ref: Option<SecretKeyRef>,
}

impl Source {
    fn prometheus(p: &crate::api::PrometheusGate) -> Source {
        Source {
            kind: "prometheus",
            url: p.url.clone(),
            url_ref: p.url_secret_ref.clone(),
            ca_ref: p.ca_bundle_secret_ref.clone(),
        }
    }

    fn alertmanager(am: &crate::api::AlertmanagerGate) -> Source {
        Source {
            kind: "alertmanager",
            url: am.url.clone(),
            url_ref: am.url_secret_ref.clone(),
            ca_ref: am.ca_bundle_secret_ref.clone(),
        }
    }
}

impl GateObserver {
    /// An observer checking each gate at most once per `interval`, counting
    /// checks in `metrics` and sending on `kick` when an observation changed
    /// (so that a pass uses it soon).
    pub fn new(
        client: Client,
        interval: Duration,
        clock: Clock,
        metrics: ControllerMetrics,
        kick: Option<UnboundedSender<()>>,
    ) -> GateObserver {
        GateObserver {
            fetch: Fetcher {
                client,
                limits: Limits::default(),
                clock,
                metrics,
                kick,
                state: Arc::new(Mutex::new(State::new(interval))),
            },
            interval,
        }
    }

    /// The same with other request bounds (tests).
    pub fn with_limits(mut self, limits: Limits) -> GateObserver {
        self.fetch.limits = limits;
        self
    }

    /// How old an observation may be before it closes its gate.
    pub fn max_age(&self) -> Duration {
        self.interval * 3
    }

    /// Forgets every policy but `live`: observations, clients, running
    /// checks (whose results are then dropped) and unreported failures.
    pub fn retain(&self, live: &BTreeSet<String>) {
        let mut st = self.fetch.lock();
        let keep = |k: &Key| live.contains(&k.0);
        st.alerts.retain(keep);
        st.silences.retain(keep);
        st.queries.retain(keep);
        st.pods.retain(keep);
        st.workloads.retain(keep);
        st.upkeep.retain(keep);
        st.clients.retain(|k, _| live.contains(&k.0));
        st.in_flight.retain(|k, _| live.contains(&k.0));
        st.upkeep_failures.retain(|p, _| live.contains(p));
    }

    /// Keys held over all caches (tests, and to see that `retain` works).
    pub fn held(&self) -> usize {
        self.fetch.lock().keys()
    }

    /// The last observation of `key`, starting a background check when it
    /// is due and none is running.
    fn poll<T, F, Fut>(
        &self,
        key: Key,
        now: Timestamp,
        slot: Slot<T>,
        gate: &'static str,
        fetch: F,
    ) -> Option<Observed<T>>
    where
        T: Clone + PartialEq + Send + 'static,
        F: FnOnce(Fetcher) -> Fut,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        let mut st = self.fetch.lock();
        let last = slot(&mut st).last(&key).cloned();
        let due = slot(&mut st).cached(&key, now).is_none();
        let ticket = if due { st.begin(&key) } else { None };
        drop(st);
        if let Some(ticket) = ticket {
            let f = self.fetch.clone();
            let check = fetch(f.clone());
            tokio::spawn(async move {
                let r = check.await;
                f.finish(key, ticket, slot, gate, r);
            });
        }
        last
    }

    /// What `cfg` needs for `policy` (`spec` for the servers), as last
    /// observed; checks that are due start in the background. Never waits
    /// for a server.
    pub fn observe(
        &self,
        policy: &str,
        spec: &GatesSpec,
        cfg: &GatesConfig,
        now: Timestamp,
    ) -> Observations {
        let mut obs = Observations {
            max_age: self.max_age(),
            ..Observations::default()
        };
        let key = |s: &str| (policy.to_string(), s.to_string());
        if let Some(p) = &spec.prometheus {
            let src = Source::prometheus(p);
            if cfg.alerts.is_some() {
                let (pol, src) = (policy.to_string(), src.clone());
                obs.alerts = self.poll(
                    key("alerts"),
                    now,
                    |s| &mut s.alerts,
                    "alerts",
                    |f| async move {
                        let c = f.monitoring(&pol, &src).await?;
                        c.prometheus_alerts()
                            .await
                            .map_err(|e| format!("Prometheus {e}"))
                    },
                );
            }
            for q in &cfg.queries {
                let (pol, src, expr) = (policy.to_string(), src.clone(), q.expr.clone());
                let k = key(&format!("query/{}", q.name));
                let o = self.poll(
                    k,
                    now,
                    |s| &mut s.queries,
                    "query",
                    |f| async move {
                        let c = f.monitoring(&pol, &src).await?;
                        c.prometheus_query(&expr)
                            .await
                            .map_err(|e| format!("Prometheus {e}"))
                    },
                );
                if let Some(o) = o {
                    obs.queries.insert(q.name.clone(), o);
                }
            }
        }
        if let Some(am) = spec.alertmanager.as_ref().filter(|_| cfg.respect_silences) {
            let (pol, src) = (policy.to_string(), Source::alertmanager(am));
            obs.silences = self.poll(
                key("silences"),
                now,
                |s| &mut s.silences,
                "silences",
                |f| async move {
                    let c = f.monitoring(&pol, &src).await?;
                    c.silences()
                        .await
                        .map(|v| v.into_iter().map(|s| s.silence).collect())
                        .map_err(|e| format!("Alertmanager {e}"))
                },
            );
        }
        if !cfg.blocking_pods.is_empty() {
            let rules = cfg.clone();
            obs.pods = self.poll(
                key("pods"),
                now,
                |s| &mut s.pods,
                "blockingPods",
                |f| async move { f.blocking_pods(&rules).await },
            );
        }
        if !cfg.workloads.is_empty() {
            let rules = cfg.clone();
            obs.workloads = self.poll(
                key("workloads"),
                now,
                |s| &mut s.workloads,
                "workloads",
                |f| async move { f.workload_objects(&rules).await },
            );
        }
        obs
    }

    /// Keeps one silence per node in progress (`active`) and expires sofort's
    /// silences of this policy for nodes no longer in progress, in the
    /// background and at most once per interval. Returns the last failure
    /// not yet reported, for the admins.
    pub fn maintain_silences(
        &self,
        policy: &str,
        spec: &GatesSpec,
        cfg: &GatesConfig,
        active: &[String],
        now: Timestamp,
    ) -> Option<String> {
        let am = spec.alertmanager.as_ref()?;
        if cfg.maintenance_silence.is_empty() {
            return None;
        }
        let key = (policy.to_string(), "upkeep".to_string());
        let mut st = self.fetch.lock();
        let failure = st.upkeep_failures.remove(policy);
        if st.upkeep.cached(&key, now).is_some() {
            return failure;
        }
        let Some(ticket) = st.begin(&key) else {
            return failure;
        };
        st.upkeep.put(
            key.clone(),
            Observed {
                at: now,
                result: Ok(()),
            },
        );
        drop(st);
        let job = Upkeep {
            policy: policy.to_string(),
            src: Source::alertmanager(am),
            cfg: cfg.clone(),
            active: active.to_vec(),
            now,
            renew_before: now + self.max_age() * 2,
        };
        let f = self.fetch.clone();
        tokio::spawn(async move {
            let r = f.silences_upkeep(&job).await;
            let mut st = f.lock();
            if st.end(&key, ticket)
                && let Err(e) = r
            {
                st.upkeep_failures.insert(job.policy, e);
            }
        });
        failure
    }
}

/// One run of the maintenance silences of a policy.
struct Upkeep {
    policy: String,
    src: Source,
    cfg: GatesConfig,
    active: Vec<String>,
    now: Timestamp,
    renew_before: Timestamp,
}

impl Fetcher {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores the result of check `ticket` of `key` (unless its policy was
    /// forgotten meanwhile) and kicks a pass when it differs from the last.
    fn finish<T: PartialEq>(
        &self,
        key: Key,
        ticket: u64,
        slot: Slot<T>,
        gate: &str,
        r: Result<T, String>,
    ) {
        count(&self.metrics, gate, &r);
        let mut st = self.lock();
        if !st.end(&key, ticket) {
            return;
        }
        let cache = slot(&mut st);
        let changed = cache.last(&key).is_none_or(|o| o.result != r);
        cache.put(
            key,
            Observed {
                at: self.clock.now(),
                result: r,
            },
        );
        drop(st);
        if changed && let Some(k) = &self.kick {
            let _ = k.send(());
        }
    }

    async fn monitoring(&self, policy: &str, src: &Source) -> Result<MonitoringClient, String> {
        let url = match (&src.url, &src.url_ref) {
            (Some(u), _) => u.clone(),
            (None, Some(r)) => self.secret_text(r, policy).await?,
            (None, None) => return Err("no url or urlSecretRef".into()),
        };
        let ca = match &src.ca_ref {
            Some(r) => Some(self.secret_bytes(r, policy).await?),
            None => None,
        };
        let key = (policy.to_string(), src.kind.to_string());
        let mut st = self.lock();
        if let Some((u, c, client)) = st.clients.get(&key)
            && *u == url
            && *c == ca
        {
            return Ok(client.clone());
        }
        let client =
            MonitoringClient::new(&url, ca.as_deref(), self.limits).map_err(|e| e.to_string())?;
        st.clients.insert(key, (url, ca, client.clone()));
        Ok(client)
    }

    async fn secret(&self, r: &SecretKeyRef) -> Option<Secret> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &r.namespace);
        api.get_opt(&r.name).await.ok().flatten()
    }

    async fn secret_text(&self, r: &SecretKeyRef, policy: &str) -> Result<String, String> {
        let s = self.secret(r).await;
        secret_text(s.as_ref(), r, policy).map_err(|e| e.to_string())
    }

    async fn secret_bytes(&self, r: &SecretKeyRef, policy: &str) -> Result<Vec<u8>, String> {
        let s = self.secret(r).await;
        secret_bytes(s.as_ref(), r, policy).map_err(|e| e.to_string())
    }

    async fn blocking_pods(&self, cfg: &GatesConfig) -> Result<Vec<PodView>, String> {
        let mut out = Vec::new();
        for rule in &cfg.blocking_pods {
            let api: Api<Pod> = match &rule.namespace {
                Some(ns) => Api::namespaced(self.client.clone(), ns),
                None => Api::all(self.client.clone()),
            };
            let lp = ListParams::default()
                .labels(&selector::to_query(&rule.selector))
                .limit(MAX_PODS);
            let list = api
                .list(&lp)
                .await
                .map_err(|e| format!("listing pods failed: {}", clean(&e.to_string())))?;
            out.extend(list.items.iter().map(pod_view));
        }
        Ok(out)
    }

    async fn workload_objects(
        &self,
        cfg: &GatesConfig,
    ) -> Result<BTreeMap<WorkloadRef, Option<serde_json::Value>>, String> {
        let mut out = BTreeMap::new();
        for r in &cfg.workloads {
            let (group, version) = match r.api_version.split_once('/') {
                Some((g, v)) => (g, v),
                None => ("", r.api_version.as_str()),
            };
            let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &r.kind));
            let api: Api<DynamicObject> = if r.namespace.is_empty() {
                Api::all_with(self.client.clone(), &ar)
            } else {
                Api::namespaced_with(self.client.clone(), &r.namespace, &ar)
            };
            let obj = api
                .get_opt(&r.name)
                .await
                .map_err(|e| format!("reading {r} failed: {}", clean(&e.to_string())))?;
            let value = obj.map(|o| serde_json::to_value(o).unwrap_or_default());
            out.insert(r.clone(), value);
        }
        Ok(out)
    }

    /// Creates or renews the silences of the nodes in progress and expires
    /// sofort's silences of the policy for nodes no longer in progress.
    async fn silences_upkeep(&self, job: &Upkeep) -> Result<(), String> {
        let c = self.monitoring(&job.policy, &job.src).await?;
        let silences = c
            .silences()
            .await
            .map_err(|e| format!("Alertmanager {e}"))?;
        for node in &job.active {
            let comment = silence_comment(&job.policy, node);
            let current = silences.iter().any(|s| {
                s.silence.ours
                    && s.comment == comment
                    && s.state != "expired"
                    && s.ends_at.is_some_and(|e| e > job.renew_before)
            });
            if current {
                continue;
            }
            let matchers = job
                .cfg
                .maintenance_silence
                .iter()
                .map(|t| t.for_node(node))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            c.create_silence(&NewSilence {
                matchers,
                starts_at: job.now,
                ends_at: job.now + SILENCE_SPAN,
                comment,
                created_by: super::client::SILENCE_CREATED_BY.to_string(),
            })
            .await
            .map_err(|e| format!("Alertmanager {e}"))?;
        }
        self.expire_silences(&c, job, &silences).await
    }

    /// Expires sofort's silences of done nodes, and older ones of nodes that
    /// got a new one.
    async fn expire_silences(
        &self,
        c: &MonitoringClient,
        job: &Upkeep,
        silences: &[super::client::SilenceInfo],
    ) -> Result<(), String> {
        let prefix = silence_comment(&job.policy, "");
        for s in silences {
            let Some(node) = s.comment.strip_prefix(&prefix) else {
                continue;
            };
            let stale = s.silence.ours && s.state != "expired";
            let done = !job.active.iter().any(|a| a == node);
            let superseded = !done
                && s.ends_at.is_some_and(|e| e <= job.renew_before)
                && silences
                    .iter()
                    .any(|o| o.comment == s.comment && o.ends_at > s.ends_at);
            if stale && (done || superseded) {
                c.expire_silence(&s.silence.id)
                    .await
                    .map_err(|e| format!("Alertmanager {e}"))?;
            }
        }
        Ok(())
    }
}

fn count<T>(metrics: &ControllerMetrics, gate: &str, r: &Result<T, String>) {
    metrics.count_gate_check(gate, r.is_ok());
}

fn pod_view(p: &Pod) -> PodView {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn observer() -> (GateObserver, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let (mock, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let (kick, kicks) = tokio::sync::mpsc::unbounded_channel();
        let o = GateObserver::new(
            Client::new(mock, "default"),
            Duration::from_secs(30),
            Clock::system(),
            ControllerMetrics::new(),
            Some(kick),
        );
        (o, kicks)
    }

    fn key(p: &str) -> Key {
        (p.to_string(), "alerts".to_string())
    }

    /// Polls the alerts of `policy` with a check that counts its starts and
    /// answers when `answer` says.
    fn poll(
        o: &GateObserver,
        policy: &str,
        starts: &Arc<AtomicUsize>,
        answer: &tokio::sync::watch::Receiver<bool>,
    ) -> Option<Observed<Vec<Alert>>> {
        let (starts, mut answer) = (starts.clone(), answer.clone());
        o.poll(
            key(policy),
            Timestamp::now(),
            |s| &mut s.alerts,
            "alerts",
            |_| async move {
                starts.fetch_add(1, Ordering::SeqCst);
                let _ = answer.wait_for(|go| *go).await;
                Ok(Vec::new())
            },
        )
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn one_check_per_gate_runs_at_a_time_and_the_pass_never_waits_for_it() {
        let (o, mut kicks) = observer();
        let starts = Arc::new(AtomicUsize::new(0));
        let (go, answer) = tokio::sync::watch::channel(false);
        // The check never answers meanwhile: every poll returns at once.
        for _ in 0..5 {
            assert_eq!(poll(&o, "a", &starts, &answer), None);
            settle().await;
        }
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        go.send_replace(true);
        settle().await;
        let seen = poll(&o, "a", &starts, &answer).map(|s| s.result);
        assert_eq!(seen, Some(Ok(Vec::new())));
        assert!(
            kicks.try_recv().is_ok(),
            "a new observation asks for a pass"
        );
        // Fresh now: not checked again within the interval.
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retain_forgets_gone_policies_and_drops_their_late_results() {
        let (o, _kicks) = observer();
        let starts = Arc::new(AtomicUsize::new(0));
        let (go, answer) = tokio::sync::watch::channel(true);
        poll(&o, "a", &starts, &answer);
        poll(&o, "b", &starts, &answer);
        settle().await;
        assert_eq!(o.held(), 2);
        // "c" is still being checked when it goes away.
        go.send_replace(false);
        poll(&o, "c", &starts, &answer);
        settle().await;
        assert_eq!(o.held(), 3);
        o.retain(&BTreeSet::from(["a".to_string()]));
        assert_eq!(o.held(), 1);
        go.send_replace(true);
        settle().await;
        assert_eq!(o.held(), 1, "the late result of c is dropped");
        assert!(o.fetch.lock().alerts.last(&key("a")).is_some());
        o.retain(&BTreeSet::new());
        assert_eq!(o.held(), 0);
    }
}
