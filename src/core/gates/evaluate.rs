//! All gates of a policy over one set of [`Observations`]: [`evaluate`].

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use super::alerts::{self, Alert, Silence};
use super::config::GatesConfig;
use super::pods::{self, PodView};
use super::query::{self, QueryResult};
use super::workload::{self, WorkloadRef};
use super::{GateId, Observed, Verdict};

/// What the controller observed for one policy's gates. A gate whose
/// observation is missing, failed or older than `max_age` is closed.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Prometheus' alerts.
    pub alerts: Option<Observed<Vec<Alert>>>,
    /// Alertmanager's silences (asked only with `respectSilences`).
    pub silences: Option<Observed<Vec<Silence>>>,
    /// Each query's result, by name.
    pub queries: BTreeMap<String, Observed<QueryResult>>,
    /// The pods the blocking-pod gates select (already filtered or not).
    pub pods: Option<Observed<Vec<PodView>>>,
    /// Each workload's object (`None`: it does not exist).
    pub workloads: Option<Observed<BTreeMap<WorkloadRef, Option<Value>>>>,
    /// How old an observation may be.
    pub max_age: Duration,
}

/// What the gates say before new starts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    /// Each start gate (in check order) and its verdict; skipped gates are
    /// left out.
    pub verdicts: Vec<(GateId, Verdict)>,
    /// Nodes held by a blocking pod, with the reason.
    pub blocked_nodes: BTreeMap<String, String>,
}

impl Evaluation {
    /// The first closed gate other than the per-node blocking pods.
    pub fn closed(&self) -> Option<(&GateId, &str)> {
        self.verdicts
            .iter()
            .filter(|(g, _)| *g != GateId::BlockingPods)
            .find_map(|(g, v)| v.reason().map(|r| (g, r)))
    }
}

/// The end of the reason of a gate whose first check has not answered yet.
pub const NOT_CHECKED: &str = "not checked yet";

fn missing(what: &str) -> Verdict {
    Verdict::Closed(format!("{what}: {NOT_CHECKED}"))
}

/// The start gates of `cfg` over `obs` at `now` (`urgent`: the policy is
/// urgent, for `skipWhenUrgent`).
pub fn evaluate(cfg: &GatesConfig, obs: &Observations, now: Timestamp, urgent: bool) -> Evaluation {
    let mut out = Evaluation::default();
    for gate in cfg.start_gates() {
        if cfg.skipped(&gate, urgent) {
            continue;
        }
        let v = match &gate {
            GateId::Alerts => alerts_verdict(cfg, obs, now),
            GateId::Query(name) => match obs.queries.get(name) {
                None => missing(&format!("query {}", super::clean(name))),
                Some(o) => {
                    match o.fresh(&format!("query {}", super::clean(name)), now, obs.max_age) {
                        Ok(r) => query::verdict(name, r),
                        Err(v) => v,
                    }
                }
            },
            GateId::BlockingPods => match &obs.pods {
                None => missing("blocking pods"),
                Some(o) => match o.fresh("blocking pods", now, obs.max_age) {
                    Ok(pods) => {
                        out.blocked_nodes = pods::blocked_nodes(&cfg.blocking_pods, pods);
                        match out.blocked_nodes.values().next() {
                            Some(why) => Verdict::Closed(why.clone()),
                            None => Verdict::Open,
                        }
                    }
                    Err(v) => v,
                },
            },
            GateId::Workloads => continue,
        };
        out.verdicts.push((gate, v));
    }
    out
}

fn alerts_verdict(cfg: &GatesConfig, obs: &Observations, now: Timestamp) -> Verdict {
    let Some(filter) = &cfg.alerts else {
        return Verdict::Open;
    };
    let alerts = match obs
        .alerts
        .as_ref()
        .map(|o| o.fresh("Prometheus alerts", now, obs.max_age))
    {
        None => return missing("Prometheus alerts"),
        Some(Err(v)) => return v,
        Some(Ok(a)) => a,
    };
    if !cfg.respect_silences {
        return alerts::verdict(filter, alerts, None);
    }
    match obs
        .silences
        .as_ref()
        .map(|o| o.fresh("Alertmanager silences", now, obs.max_age))
    {
        None => missing("Alertmanager silences"),
        Some(Err(v)) => v,
        Some(Ok(s)) => alerts::verdict(filter, alerts, Some(s)),
    }
}

/// Whether the `workloads` gate lets a settled node count as done.
pub fn workloads_verdict(cfg: &GatesConfig, obs: &Observations, now: Timestamp) -> Verdict {
    if cfg.workloads.is_empty() {
        return Verdict::Open;
    }
    let objects = match obs
        .workloads
        .as_ref()
        .map(|o| o.fresh("workloads", now, obs.max_age))
    {
        None => return missing("workloads"),
        Some(Err(v)) => return v,
        Some(Ok(o)) => o,
    };
    for r in &cfg.workloads {
        let obj = objects.get(r).and_then(Option::as_ref);
        if let Some(why) = workload::unhealthy(r, obj) {
            return Verdict::Closed(why);
        }
    }
    Verdict::Open
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gates::alerts::{AlertFilter, AlertState};
    use crate::core::gates::config::QueryConfig;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cfg() -> GatesConfig {
        GatesConfig {
            alerts: Some(AlertFilter::new(&[], &BTreeMap::new()).unwrap()),
            queries: vec![QueryConfig {
                name: "q".into(),
                expr: "up == 0".into(),
            }],
            ..GatesConfig::default()
        }
    }

    fn firing() -> Vec<Alert> {
        vec![Alert {
            labels: BTreeMap::from([("alertname".into(), "X".into())]),
            state: AlertState::Firing,
            active_at: None,
        }]
    }

    #[test]
    fn missing_failed_and_stale_observations_close_and_fresh_ones_decide() {
        let now = at("2026-11-27T22:00:30Z");
        let mut obs = Observations {
            max_age: Duration::from_secs(60),
            ..Observations::default()
        };
        let e = evaluate(&cfg(), &obs, now, false);
        assert_eq!(
            e.closed(),
            Some((&GateId::Alerts, "Prometheus alerts: not checked yet"))
        );
        obs.alerts = Some(Observed {
            at: at("2026-11-27T22:00:00Z"),
            result: Ok(vec![]),
        });
        obs.queries.insert(
            "q".into(),
            Observed {
                at: at("2026-11-27T22:00:00Z"),
                result: Err("unreachable: connection refused".into()),
            },
        );
        let e = evaluate(&cfg(), &obs, now, false);
        assert!(e.verdicts[0].1.is_open());
        assert_eq!(
            e.closed(),
            Some((
                &GateId::Query("q".into()),
                "query q check failed: unreachable: connection refused"
            ))
        );
        obs.queries.insert(
            "q".into(),
            Observed {
                at: at("2026-11-27T22:00:00Z"),
                result: Ok(QueryResult::Series {
                    count: 0,
                    first: None,
                    value: None,
                }),
            },
        );
        assert_eq!(evaluate(&cfg(), &obs, now, false).closed(), None);
        obs.alerts = Some(Observed {
            at: at("2026-11-27T22:00:00Z"),
            result: Ok(firing()),
        });
        assert_eq!(
            evaluate(&cfg(), &obs, now, false).closed().map(|c| c.1),
            Some("alert X firing")
        );
        // Stale.
        let later = at("2026-11-27T22:01:01Z");
        assert!(
            evaluate(&cfg(), &obs, later, false)
                .closed()
                .is_some_and(|c| c.1.contains("no fresh check"))
        );
        // skipWhenUrgent skips them for urgent policies only.
        let mut skip = cfg();
        skip.skip_when_urgent = true;
        assert!(evaluate(&skip, &obs, now, true).verdicts.is_empty());
        assert!(evaluate(&skip, &obs, now, false).closed().is_some());
    }

    #[test]
    fn respected_silences_must_be_observed_too() {
        let now = at("2026-11-27T22:00:30Z");
        let mut c = cfg();
        c.queries.clear();
        c.respect_silences = true;
        let mut obs = Observations {
            alerts: Some(Observed {
                at: now,
                result: Ok(firing()),
            }),
            max_age: Duration::from_secs(60),
            ..Observations::default()
        };
        assert_eq!(
            evaluate(&c, &obs, now, false).closed().map(|c| c.1),
            Some("Alertmanager silences: not checked yet")
        );
        obs.silences = Some(Observed {
            at: now,
            result: Ok(vec![]),
        });
        assert_eq!(
            evaluate(&c, &obs, now, false).closed().map(|c| c.1),
            Some("alert X firing")
        );
    }

    #[test]
    fn workloads_gate_names_the_first_unhealthy_workload() {
        let now = at("2026-11-27T22:00:30Z");
        let r = WorkloadRef {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            namespace: "shop".into(),
            name: "db".into(),
        };
        let c = GatesConfig {
            workloads: vec![r.clone()],
            ..GatesConfig::default()
        };
        let mut obs = Observations {
            max_age: Duration::from_secs(60),
            ..Observations::default()
        };
        assert!(!workloads_verdict(&c, &obs, now).is_open());
        obs.workloads = Some(Observed {
            at: now,
            result: Ok(BTreeMap::from([(r.clone(), None)])),
        });
        assert_eq!(
            workloads_verdict(&c, &obs, now),
            Verdict::Closed("StatefulSet shop/db not found".into())
        );
        let healthy = serde_json::json!({"spec": {"replicas": 1}, "status": {"readyReplicas": 1, "updatedReplicas": 1}});
        obs.workloads = Some(Observed {
            at: now,
            result: Ok(BTreeMap::from([(r, Some(healthy))])),
        });
        assert!(workloads_verdict(&c, &obs, now).is_open());
        assert!(
            workloads_verdict(&GatesConfig::default(), &Observations::default(), now).is_open()
        );
    }
}
