//! `spec.gates`, parsed once: [`GatesConfig::from_spec`].

use std::collections::BTreeSet;
use std::time::Duration;

use crate::api::{GateTimeoutAction, GatesSpec};
use crate::core::spec::{Problem, problem};
use crate::core::{duration, selector};

use super::alerts::{AlertError, AlertFilter, MatcherTemplate};
use super::pods::BlockingPods;
use super::workload::WorkloadRef;
use super::{GateId, OnGateTimeout};

/// A PromQL query gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryConfig {
    /// Its name.
    pub name: String,
    /// Its expression.
    pub expr: String,
}

/// The gates of one policy, parsed.
#[derive(Debug, Clone, Default)]
pub struct GatesConfig {
    /// `prometheus.alerts`, compiled.
    pub alerts: Option<AlertFilter>,
    /// `prometheus.queries`.
    pub queries: Vec<QueryConfig>,
    /// `alertmanager.respectSilences` (with an Alertmanager given).
    pub respect_silences: bool,
    /// `alertmanager.silenceDuringMaintenance.matchers`, parsed (empty: none).
    pub maintenance_silence: Vec<MatcherTemplate>,
    /// `blockingPods`.
    pub blocking_pods: Vec<BlockingPods>,
    /// `workloads`.
    pub workloads: Vec<WorkloadRef>,
    /// `timeout`.
    pub timeout: Option<Duration>,
    /// `onTimeout`.
    pub on_timeout: OnGateTimeout,
    /// `skipWhenUrgent`.
    pub skip_when_urgent: bool,
}

impl GatesConfig {
    /// Parses `spec`; every problem is returned with its field path
    /// (`spec.gates...`).
    pub fn from_spec(spec: &GatesSpec) -> Result<GatesConfig, Vec<Problem>> {
        let mut errors = Vec::new();
        let mut cfg = GatesConfig {
            on_timeout: match spec.on_timeout {
                GateTimeoutAction::Halt => OnGateTimeout::Halt,
                GateTimeoutAction::Continue => OnGateTimeout::Continue,
            },
            skip_when_urgent: spec.skip_when_urgent,
            ..GatesConfig::default()
        };
        if let Some(p) = &spec.prometheus {
            check_source(
                "spec.gates.prometheus",
                p.url.as_deref(),
                p.url_secret_ref.is_some(),
                &mut errors,
            );
            if let Some(a) = &p.alerts {
                match AlertFilter::new(&a.names, &a.ignore) {
                    Ok(f) => cfg.alerts = Some(f),
                    Err(AlertError::Regex { what, reason }) => errors.push(problem(
                        format!("spec.gates.prometheus.{what}"),
                        format!("is not a valid regular expression ({reason}); use RE2 syntax as Prometheus does, for example \"Node.*\""),
                    )),
                    Err(e) => errors.push(problem("spec.gates.prometheus.alerts", e.to_string())),
                }
            }
            let mut seen = BTreeSet::new();
            for (i, q) in p.queries.iter().enumerate() {
                if !seen.insert(q.name.as_str()) {
                    errors.push(problem(
                        format!("spec.gates.prometheus.queries[{i}].name"),
                        format!(
                            "{:?} is used twice; give each query its own name",
                            super::clean(&q.name)
                        ),
                    ));
                }
                if q.expr.trim().is_empty() {
                    errors.push(problem(
                        format!("spec.gates.prometheus.queries[{i}].expr"),
                        "is empty: give a PromQL expression such as 'up == 0'",
                    ));
                }
                cfg.queries.push(QueryConfig {
                    name: q.name.clone(),
                    expr: q.expr.clone(),
                });
            }
        }
        if let Some(am) = &spec.alertmanager {
            check_source(
                "spec.gates.alertmanager",
                am.url.as_deref(),
                am.url_secret_ref.is_some(),
                &mut errors,
            );
            cfg.respect_silences = am.respect_silences;
            for (i, m) in am
                .silence_during_maintenance
                .iter()
                .flat_map(|s| s.matchers.iter())
                .enumerate()
            {
                match MatcherTemplate::parse(m, i) {
                    Ok(t) => cfg.maintenance_silence.push(t),
                    Err(e) => errors.push(problem(
                        format!("spec.gates.alertmanager.silenceDuringMaintenance.matchers[{i}]"),
                        e.to_string(),
                    )),
                }
            }
        }
        for (i, b) in spec.blocking_pods.iter().enumerate() {
            if let Err(e) = selector::check(&b.selector) {
                errors.push(problem(
                    format!("spec.gates.blockingPods[{i}].selector"),
                    e.to_string(),
                ));
            }
            cfg.blocking_pods.push(BlockingPods {
                namespace: b.namespace.clone(),
                selector: b.selector.clone(),
            });
        }
        for w in &spec.workloads {
            cfg.workloads.push(WorkloadRef {
                api_version: w.api_version.clone(),
                kind: w.kind.clone(),
                namespace: w.namespace.clone().unwrap_or_default(),
                name: w.name.clone(),
            });
        }
        if let Some(t) = &spec.timeout {
            match duration::parse(t) {
                Ok(d) => cfg.timeout = Some(d),
                Err(e) => errors.push(problem("spec.gates.timeout", e.to_string())),
            }
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    /// The gates evaluated before each start, in check order.
    pub fn start_gates(&self) -> Vec<GateId> {
        let mut out = Vec::new();
        if self.alerts.is_some() {
            out.push(GateId::Alerts);
        }
        out.extend(self.queries.iter().map(|q| GateId::Query(q.name.clone())));
        if !self.blocking_pods.is_empty() {
            out.push(GateId::BlockingPods);
        }
        out
    }

    /// Whether the gate is skipped for an urgent policy.
    pub fn skipped(&self, gate: &GateId, urgent: bool) -> bool {
        urgent
            && self.skip_when_urgent
            && matches!(
                gate,
                GateId::Alerts | GateId::Query(_) | GateId::BlockingPods
            )
    }
}

/// One of `url` and `urlSecretRef`; a `url` in the spec must be absolute http(s).
fn check_source(path: &str, url: Option<&str>, secret: bool, errors: &mut Vec<Problem>) {
    match (url, secret) {
        (Some(_), true) | (None, false) => {
            errors.push(problem(path, "give exactly one of url and urlSecretRef"));
        }
        (Some(u), false) => {
            let ok = u.parse::<http::Uri>().ok().is_some_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
                    && uri.query().is_none()
            });
            if !ok {
                errors.push(problem(
                    format!("{path}.url"),
                    "must be an absolute http:// or https:// URL without user, password or query, for example http://prometheus.monitoring:9090; put credentials in a Secret and use urlSecretRef",
                ));
            }
        }
        (None, true) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AlertsGate, PrometheusGate, QueryGate};

    fn prom(url: Option<&str>) -> PrometheusGate {
        PrometheusGate {
            url: url.map(Into::into),
            url_secret_ref: None,
            ca_bundle_secret_ref: None,
            alerts: Some(AlertsGate::default()),
            queries: vec![],
        }
    }

    #[test]
    fn parses_and_lists_gates_in_check_order() {
        let mut p = prom(Some("http://prometheus.monitoring:9090"));
        p.queries = vec![QueryGate {
            name: "api-errors".into(),
            expr: "up == 0".into(),
        }];
        let spec = GatesSpec {
            prometheus: Some(p),
            timeout: Some("30m".into()),
            skip_when_urgent: true,
            ..GatesSpec::default()
        };
        let cfg = GatesConfig::from_spec(&spec).unwrap();
        assert_eq!(
            cfg.start_gates(),
            [GateId::Alerts, GateId::Query("api-errors".into())]
        );
        assert_eq!(cfg.timeout, Some(Duration::from_secs(1800)));
        assert!(cfg.skipped(&GateId::Alerts, true));
        assert!(!cfg.skipped(&GateId::Alerts, false));
        assert!(!cfg.skipped(&GateId::Workloads, true));
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let mut p = prom(Some("http://user:pw@p:9090"));
        p.alerts = Some(AlertsGate {
            names: vec!["(".into()],
            ..AlertsGate::default()
        });
        p.queries = vec![
            QueryGate {
                name: "q".into(),
                expr: "up".into(),
            },
            QueryGate {
                name: "q".into(),
                expr: " ".into(),
            },
        ];
        let spec = GatesSpec {
            prometheus: Some(p),
            timeout: Some("soon".into()),
            ..GatesSpec::default()
        };
        let errors = GatesConfig::from_spec(&spec).unwrap_err();
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        for want in [
            "spec.gates.prometheus.url: must be",
            "spec.gates.prometheus.alerts.names[0]: is not a valid regular expression",
            "spec.gates.prometheus.queries[1].name",
            "spec.gates.prometheus.queries[1].expr: is empty",
            "spec.gates.timeout:",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
        assert!(!text.contains("pw"), "{text}");
        let neither = GatesSpec {
            prometheus: Some(prom(None)),
            ..GatesSpec::default()
        };
        assert!(
            GatesConfig::from_spec(&neither).unwrap_err()[0]
                .message
                .contains("exactly one of url")
        );
    }
}
