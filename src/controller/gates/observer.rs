//! Gathering what the health gates look at, at most once per gate per
//! interval: Prometheus' alerts and query results, Alertmanager's silences,
//! the pods the blocking-pod gates select and the workload objects. And the
//! silences for nodes in maintenance (`silenceDuringMaintenance`).
//!
//! Every fetch is bounded ([`super::Limits`]); a failed one is an observation
//! too (`Err`), and closes its gate. URLs may come from Secrets by the same
//! consent rule as webhook Secrets ([`crate::notify::secret`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};

use crate::api::{GatesSpec, SecretKeyRef};
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
const CACHE_KEYS: usize = 4096;
/// How long a maintenance silence lasts; renewed while the node is in
/// progress, so a controller that stops leaves no silence for long.
pub const SILENCE_SPAN: Duration = Duration::from_secs(30 * 60);

/// The comment that marks sofort's silence for `node` of `policy`.
pub fn silence_comment(policy: &str, node: &str) -> String {
    format!("sofort maintenance: policy {policy} node {node}")
}

type Key = (String, String);

/// The controller's gate observer.
pub struct GateObserver {
    client: Client,
    interval: Duration,
    limits: Limits,
    alerts: GateCache<Key, Vec<Alert>>,
    silences: GateCache<Key, Vec<Silence>>,
    queries: GateCache<Key, QueryResult>,
    pods: GateCache<Key, Vec<PodView>>,
    workloads: GateCache<Key, BTreeMap<WorkloadRef, Option<serde_json::Value>>>,
    upkeep: GateCache<Key, ()>,
    clients: HashMap<Key, (String, Option<Vec<u8>>, MonitoringClient)>,
}

/// Where a monitoring server is.
struct Source<'a> {
    kind: &'static str,
    url: Option<&'a str>,
    url_ref: Option<&'a SecretKeyRef>,
    ca_ref: Option<&'a SecretKeyRef>,
}

impl GateObserver {
    /// An observer checking each gate at most once per `interval`.
    pub fn new(client: Client, interval: Duration) -> GateObserver {
        GateObserver {
            client,
            interval,
            limits: Limits::default(),
            alerts: GateCache::new(interval, CACHE_KEYS),
            silences: GateCache::new(interval, CACHE_KEYS),
            queries: GateCache::new(interval, CACHE_KEYS),
            pods: GateCache::new(interval, CACHE_KEYS),
            workloads: GateCache::new(interval, CACHE_KEYS),
            upkeep: GateCache::new(interval, CACHE_KEYS),
            clients: HashMap::new(),
        }
    }

    /// How old an observation may be before it closes its gate.
    pub fn max_age(&self) -> Duration {
        self.interval * 3
    }

    /// Forgets every policy but `live`.
    pub fn retain(&mut self, live: &BTreeSet<String>) {
        let keep = |k: &Key| live.contains(&k.0);
        self.alerts.retain(keep);
        self.silences.retain(keep);
        self.queries.retain(keep);
        self.pods.retain(keep);
        self.workloads.retain(keep);
        self.upkeep.retain(keep);
        self.clients.retain(|k, _| live.contains(&k.0));
    }

    async fn monitoring(
        &mut self,
        policy: &str,
        src: &Source<'_>,
    ) -> Result<MonitoringClient, String> {
        let url = match (src.url, src.url_ref) {
            (Some(u), _) => u.to_string(),
            (None, Some(r)) => self.secret_text(r, policy).await?,
            (None, None) => return Err("no url or urlSecretRef".into()),
        };
        let ca = match src.ca_ref {
            Some(r) => Some(self.secret_bytes(r, policy).await?),
            None => None,
        };
        let key = (policy.to_string(), src.kind.to_string());
        if let Some((u, c, client)) = self.clients.get(&key)
            && *u == url
            && *c == ca
        {
            return Ok(client.clone());
        }
        let client =
            MonitoringClient::new(&url, ca.as_deref(), self.limits).map_err(|e| e.to_string())?;
        self.clients.insert(key, (url, ca, client.clone()));
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

    /// Everything `cfg` needs for `policy` (`spec` for the servers), fetching
    /// only what is due.
    pub async fn observe(
        &mut self,
        policy: &str,
        spec: &GatesSpec,
        cfg: &GatesConfig,
        now: Timestamp,
        metrics: &ControllerMetrics,
    ) -> Observations {
        let mut obs = Observations {
            max_age: self.max_age(),
            ..Observations::default()
        };
        let key = |s: &str| (policy.to_string(), s.to_string());
        if let Some(p) = &spec.prometheus {
            let src = Source {
                kind: "prometheus",
                url: p.url.as_deref(),
                url_ref: p.url_secret_ref.as_ref(),
                ca_ref: p.ca_bundle_secret_ref.as_ref(),
            };
            if cfg.alerts.is_some() {
                obs.alerts = Some(match self.alerts.cached(&key("alerts"), now).cloned() {
                    Some(o) => o,
                    None => {
                        let r = match self.monitoring(policy, &src).await {
                            Ok(c) => c
                                .prometheus_alerts()
                                .await
                                .map_err(|e| format!("Prometheus {e}")),
                            Err(e) => Err(e),
                        };
                        count(metrics, "alerts", &r);
                        let o = Observed { at: now, result: r };
                        self.alerts.put(key("alerts"), o.clone());
                        o
                    }
                });
            }
            for q in &cfg.queries {
                let k = key(&format!("query/{}", q.name));
                let o = match self.queries.cached(&k, now).cloned() {
                    Some(o) => o,
                    None => {
                        let r = match self.monitoring(policy, &src).await {
                            Ok(c) => c
                                .prometheus_query(&q.expr)
                                .await
                                .map_err(|e| format!("Prometheus {e}")),
                            Err(e) => Err(e),
                        };
                        count(metrics, "query", &r);
                        let o = Observed { at: now, result: r };
                        self.queries.put(k, o.clone());
                        o
                    }
                };
                obs.queries.insert(q.name.clone(), o);
            }
        }
        if let Some(am) = spec.alertmanager.as_ref().filter(|_| cfg.respect_silences) {
            let src = Source {
                kind: "alertmanager",
                url: am.url.as_deref(),
                url_ref: am.url_secret_ref.as_ref(),
                ca_ref: am.ca_bundle_secret_ref.as_ref(),
            };
            obs.silences = Some(match self.silences.cached(&key("silences"), now).cloned() {
                Some(o) => o,
                None => {
                    let r = match self.monitoring(policy, &src).await {
                        Ok(c) => c
                            .silences()
                            .await
                            .map(|v| v.into_iter().map(|s| s.silence).collect())
                            .map_err(|e| format!("Alertmanager {e}")),
                        Err(e) => Err(e),
                    };
                    count(metrics, "silences", &r);
                    let o = Observed { at: now, result: r };
                    self.silences.put(key("silences"), o.clone());
                    o
                }
            });
        }
        if !cfg.blocking_pods.is_empty() {
            obs.pods = Some(match self.pods.cached(&key("pods"), now).cloned() {
                Some(o) => o,
                None => {
                    let r = self.blocking_pods(cfg).await;
                    count(metrics, "blockingPods", &r);
                    let o = Observed { at: now, result: r };
                    self.pods.put(key("pods"), o.clone());
                    o
                }
            });
        }
        if !cfg.workloads.is_empty() {
            obs.workloads = Some(
                match self.workloads.cached(&key("workloads"), now).cloned() {
                    Some(o) => o,
                    None => {
                        let r = self.workload_objects(cfg).await;
                        count(metrics, "workloads", &r);
                        let o = Observed { at: now, result: r };
                        self.workloads.put(key("workloads"), o.clone());
                        o
                    }
                },
            );
        }
        obs
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

    /// Keeps one silence per node in progress (`active`) and expires sofort's
    /// silences of this policy for nodes no longer in progress; at most once
    /// per interval. Failures are returned for the admins.
    pub async fn maintain_silences(
        &mut self,
        policy: &str,
        spec: &GatesSpec,
        cfg: &GatesConfig,
        active: &[String],
        now: Timestamp,
    ) -> Result<(), String> {
        let Some(am) = spec.alertmanager.as_ref() else {
            return Ok(());
        };
        if cfg.maintenance_silence.is_empty() {
            return Ok(());
        }
        let key = (policy.to_string(), "upkeep".to_string());
        if self.upkeep.cached(&key, now).is_some() {
            return Ok(());
        }
        self.upkeep.put(
            key,
            Observed {
                at: now,
                result: Ok(()),
            },
        );
        let src = Source {
            kind: "alertmanager",
            url: am.url.as_deref(),
            url_ref: am.url_secret_ref.as_ref(),
            ca_ref: am.ca_bundle_secret_ref.as_ref(),
        };
        let c = self.monitoring(policy, &src).await?;
        let silences = c
            .silences()
            .await
            .map_err(|e| format!("Alertmanager {e}"))?;
        let prefix = silence_comment(policy, "");
        let renew_before = now + self.max_age() * 2;
        for node in active {
            let comment = silence_comment(policy, node);
            let current = silences.iter().any(|s| {
                s.silence.ours
                    && s.comment == comment
                    && s.state != "expired"
                    && s.ends_at.is_some_and(|e| e > renew_before)
            });
            if current {
                continue;
            }
            let matchers = cfg
                .maintenance_silence
                .iter()
                .map(|t| t.for_node(node))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            c.create_silence(&NewSilence {
                matchers,
                starts_at: now,
                ends_at: now + SILENCE_SPAN,
                comment,
                created_by: super::client::SILENCE_CREATED_BY.to_string(),
            })
            .await
            .map_err(|e| format!("Alertmanager {e}"))?;
        }
        for s in &silences {
            let Some(node) = s.comment.strip_prefix(&prefix) else {
                continue;
            };
            let stale = s.silence.ours && s.state != "expired";
            // Done nodes, and older silences of nodes that got a new one.
            let done = !active.iter().any(|a| a == node);
            let superseded = !done
                && s.ends_at.is_some_and(|e| e <= renew_before)
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
    metrics.count_gate_check(gate, if r.is_ok() { "ok" } else { "error" });
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
