//! Scenario files: the simulated fleet described in YAML (or built in code).
//!
//! ```yaml
//! speed: 10            # simulated time runs 10x faster than wall time
//! seed: 42
//! timing:
//!   podStart: {min: 2s, max: 5s}
//!   podTermination: 1s
//!   reboot: {min: 30s, max: 60s}
//! nodes:
//! - {namePrefix: worker, count: 12, zones: [zone-a, zone-b, zone-c], roles: [worker]}
//! - {names: [cp-1], roles: [control-plane], labels: {tier: control}, neverReturns: false}
//! workloads:
//! - {kind: Deployment, name: web, namespace: shop, replicas: 6, pdb: {maxUnavailable: 1}}
//! - {kind: StatefulSet, name: db, namespace: shop, replicas: 3, pdb: {minAvailable: 2}}
//! - {kind: DaemonSet, name: log-agent, namespace: kube-system}
//! - {kind: Pod, name: debug, namespace: default}
//! objects: []          # any further manifests, created as they are
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::SandboxError;

/// A duration written as `500ms`, `2s`, `1m30s`, or a number of seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SimDuration(pub Duration);

impl<'de> Deserialize<'de> for SimDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) if n >= 0.0 && n.is_finite() => Ok(SimDuration(Duration::from_secs_f64(n))),
            Raw::Num(n) => Err(serde::de::Error::custom(format!(
                "duration must be a non-negative number of seconds, got {n}"
            ))),
            Raw::Str(s) => parse_duration(&s)
                .map(SimDuration)
                .map_err(serde::de::Error::custom),
        }
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let sd: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|e| format!("invalid duration {s:?} ({e}); write it like 500ms, 2s or 1m30s"))?;
    if sd.is_negative() {
        return Err(format!("duration {s:?} must not be negative"));
    }
    Ok(sd.unsigned_abs())
}

/// A duration drawn uniformly from [min, max].
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DurationRange {
    pub min: SimDuration,
    pub max: SimDuration,
}

impl DurationRange {
    pub fn fixed(d: Duration) -> Self {
        DurationRange {
            min: SimDuration(d),
            max: SimDuration(d),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timing {
    /// From scheduling to Ready.
    pub pod_start: DurationRange,
    /// Graceful termination time of a deleted pod (capped by its grace period).
    pub pod_termination: SimDuration,
    /// Downtime of a rebooting node.
    pub reboot: DurationRange,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            pod_start: DurationRange {
                min: SimDuration(Duration::from_secs(2)),
                max: SimDuration(Duration::from_secs(5)),
            },
            pod_termination: SimDuration(Duration::from_secs(1)),
            reboot: DurationRange {
                min: SimDuration(Duration::from_secs(30)),
                max: SimDuration(Duration::from_secs(60)),
            },
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGroup {
    /// Explicit names; or `count` nodes named `{namePrefix}-{01..}`.
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub name_prefix: Option<String>,
    #[serde(default)]
    pub count: usize,
    /// Spread round-robin over these zones (label topology.kubernetes.io/zone).
    #[serde(default)]
    pub zones: Vec<String>,
    /// node-role.kubernetes.io/<role>="" labels.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub unschedulable: bool,
    /// Once rebooted, these nodes never come back.
    #[serde(default)]
    pub never_returns: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PdbSpec {
    #[serde(default)]
    pub min_available: Option<serde_json::Value>,
    #[serde(default)]
    pub max_unavailable: Option<serde_json::Value>,
    #[serde(default)]
    pub unhealthy_pod_eviction_policy: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Deployment, StatefulSet, DaemonSet or Pod (unmanaged).
    pub kind: String,
    pub name: String,
    #[serde(default = "default_ns")]
    pub namespace: String,
    #[serde(default = "one")]
    pub replicas: i64,
    /// The pods mount an emptyDir volume.
    #[serde(default)]
    pub empty_dir: bool,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub pdb: Option<PdbSpec>,
    #[serde(default)]
    pub termination_grace_period_seconds: Option<i64>,
}

fn default_ns() -> String {
    "default".into()
}
fn one() -> i64 {
    1
}
fn default_speed() -> f64 {
    1.0
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// How much faster than wall time simulated time runs.
    #[serde(default = "default_speed")]
    pub speed: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub nodes: Vec<NodeGroup>,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// Further manifests, created as they are.
    #[serde(default)]
    pub objects: Vec<serde_json::Value>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            speed: 1.0,
            seed: 0,
            timing: Timing::default(),
            nodes: vec![],
            workloads: vec![],
            objects: vec![],
        }
    }
}

impl Scenario {
    /// No nodes and no workloads: a bare API server.
    pub fn empty() -> Self {
        Scenario::default()
    }

    /// The demo fleet: 12 workers in 3 zones, a few workloads with PDBs.
    pub fn demo() -> Self {
        Scenario::with_nodes(12)
    }

    /// The demo fleet with `n` workers spread over 3 zones.
    pub fn with_nodes(n: usize) -> Self {
        let pdb_max1 = PdbSpec {
            max_unavailable: Some(serde_json::json!(1)),
            ..Default::default()
        };
        Scenario {
            nodes: vec![NodeGroup {
                name_prefix: Some("worker".into()),
                count: n,
                zones: vec!["zone-a".into(), "zone-b".into(), "zone-c".into()],
                roles: vec!["worker".into()],
                ..Default::default()
            }],
            workloads: vec![
                Workload {
                    kind: "Deployment".into(),
                    name: "web".into(),
                    namespace: "shop".into(),
                    replicas: 6,
                    pdb: Some(pdb_max1.clone()),
                    ..Default::default()
                },
                Workload {
                    kind: "StatefulSet".into(),
                    name: "db".into(),
                    namespace: "shop".into(),
                    replicas: 3,
                    pdb: Some(PdbSpec {
                        min_available: Some(serde_json::json!(2)),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Workload {
                    kind: "Deployment".into(),
                    name: "cache".into(),
                    namespace: "shop".into(),
                    replicas: 2,
                    empty_dir: true,
                    pdb: Some(PdbSpec {
                        min_available: Some(serde_json::json!("50%")),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Workload {
                    kind: "DaemonSet".into(),
                    name: "log-agent".into(),
                    namespace: "kube-system".into(),
                    ..Default::default()
                },
                Workload {
                    kind: "Pod".into(),
                    name: "debug".into(),
                    namespace: "default".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    pub fn from_yaml(text: &str, path: &str) -> Result<Self, SandboxError> {
        let s: Scenario =
            serde_yaml::from_str(text).map_err(|source| SandboxError::ParseScenario {
                path: path.into(),
                source,
            })?;
        s.check()?;
        Ok(s)
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, SandboxError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SandboxError::ReadScenario {
            path: p.clone(),
            source,
        })?;
        Self::from_yaml(&text, &p)
    }

    pub fn check(&self) -> Result<(), SandboxError> {
        if !(self.speed > 0.0 && self.speed.is_finite()) {
            return Err(SandboxError::Scenario(format!(
                "speed must be a positive number, got {}",
                self.speed
            )));
        }
        for (label, r) in [
            ("podStart", &self.timing.pod_start),
            ("reboot", &self.timing.reboot),
        ] {
            if r.min.0 > r.max.0 {
                return Err(SandboxError::Scenario(format!(
                    "timing.{label}: min must not exceed max"
                )));
            }
        }
        for w in &self.workloads {
            if !matches!(
                w.kind.as_str(),
                "Deployment" | "StatefulSet" | "DaemonSet" | "Pod"
            ) {
                return Err(SandboxError::Scenario(format!(
                    "workload {:?}: kind {:?} is not one of Deployment, StatefulSet, DaemonSet, Pod",
                    w.name, w.kind
                )));
            }
        }
        Ok(())
    }

    /// Node names and their labels, in creation order.
    pub fn node_list(&self) -> Vec<(String, BTreeMap<String, String>, bool, bool)> {
        let mut out = Vec::new();
        for g in &self.nodes {
            let names: Vec<String> = if !g.names.is_empty() {
                g.names.clone()
            } else {
                let prefix = g.name_prefix.clone().unwrap_or_else(|| "node".into());
                let width = g.count.to_string().len().max(2);
                (1..=g.count)
                    .map(|i| format!("{prefix}-{i:0width$}"))
                    .collect()
            };
            for (i, name) in names.into_iter().enumerate() {
                let mut labels = g.labels.clone();
                labels.insert("kubernetes.io/hostname".into(), name.clone());
                labels.insert("kubernetes.io/os".into(), "linux".into());
                labels.insert("kubernetes.io/arch".into(), "amd64".into());
                if !g.zones.is_empty() {
                    labels.insert(
                        "topology.kubernetes.io/zone".into(),
                        g.zones[i % g.zones.len()].clone(),
                    );
                }
                for r in &g.roles {
                    labels.insert(format!("node-role.kubernetes.io/{r}"), String::new());
                }
                out.push((name, labels, g.unschedulable, g.never_returns));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_scenario_file() {
        let s = Scenario::from_yaml(
            "speed: 10\ntiming: {podStart: {min: 100ms, max: 200ms}, podTermination: 0.1, reboot: {min: 1s, max: 2s}}\nnodes: [{namePrefix: w, count: 3, zones: [a, b]}]\nworkloads: [{kind: Deployment, name: web, replicas: 2, pdb: {maxUnavailable: 1}}]\n",
            "test",
        )
        .unwrap();
        assert_eq!(s.timing.pod_start.min.0, Duration::from_millis(100));
        let nodes = s.node_list();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[1].1["topology.kubernetes.io/zone"], "b");
        assert!(Scenario::from_yaml("workloads: [{kind: Job, name: x}]", "t").is_err());
        assert!(Scenario::from_yaml("bogus: 1", "t").is_err());
    }
}
