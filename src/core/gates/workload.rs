//! Workload health, by the rules of kstatus (the health checks of
//! `kubectl wait`, Flux and Argo CD): an object is healthy when its
//! controller has seen its latest spec (`status.observedGeneration >=
//! metadata.generation`) and, by kind:
//!
//! - `Deployment`: updated, ready and available replicas equal `spec.replicas`
//!   (default 1);
//! - `StatefulSet`: ready and updated replicas equal `spec.replicas`, and
//!   with `RollingUpdate` `currentRevision == updateRevision`;
//! - `DaemonSet`: ready, updated and available equal `desiredNumberScheduled`;
//! - `ReplicaSet`: ready and available replicas equal `spec.replicas`;
//! - any other kind: a `Ready` condition, if it has one, must be `True`.
//!
//! A missing object is unhealthy.

use serde_json::Value;

use super::clean;

/// One `gates.workloads` entry, as the controller names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkloadRef {
    /// `apiVersion`, such as `apps/v1`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty for cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, ns, name) = (clean(&self.kind), clean(&self.namespace), clean(&self.name));
        if ns.is_empty() {
            write!(f, "{kind} {name}")
        } else {
            write!(f, "{kind} {ns}/{name}")
        }
    }
}

fn int(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_i64()
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// Why `object` (of `r`'s kind; `None` when it does not exist) is not healthy,
/// or `None` when it is.
pub fn unhealthy(r: &WorkloadRef, object: Option<&Value>) -> Option<String> {
    let Some(obj) = object else {
        return Some(format!("{r} not found"));
    };
    let generation = int(obj, &["metadata", "generation"]).unwrap_or(0);
    let observed = int(obj, &["status", "observedGeneration"]);
    if observed.is_some_and(|o| o < generation) || (observed.is_none() && generation > 1) {
        return Some(format!("{r} not yet observed by its controller"));
    }
    let s = |k: &str| int(obj, &["status", k]).unwrap_or(0);
    let desired = int(obj, &["spec", "replicas"]).unwrap_or(1);
    let short = |what: &str, have: i64, want: i64| {
        (have < want).then(|| format!("{r}: {have}/{want} replicas {what}"))
    };
    match r.kind.as_str() {
        "Deployment" => short("updated", s("updatedReplicas"), desired)
            .or_else(|| short("ready", s("readyReplicas"), desired))
            .or_else(|| short("available", s("availableReplicas"), desired)),
        "StatefulSet" => {
            let rolling =
                text(obj, &["spec", "updateStrategy", "type"]).is_none_or(|t| t == "RollingUpdate");
            let current = text(obj, &["status", "currentRevision"]);
            let update = text(obj, &["status", "updateRevision"]);
            short("ready", s("readyReplicas"), desired)
                .or_else(|| short("updated", s("updatedReplicas"), desired))
                .or_else(|| {
                    (rolling && update.is_some() && current != update)
                        .then(|| format!("{r}: rolling update in progress"))
                })
        }
        "DaemonSet" => {
            let want = s("desiredNumberScheduled");
            short("ready", s("numberReady"), want)
                .or_else(|| short("updated", s("updatedNumberScheduled"), want))
                .or_else(|| short("available", s("numberAvailable"), want))
        }
        "ReplicaSet" => short("ready", s("readyReplicas"), desired)
            .or_else(|| short("available", s("availableReplicas"), desired)),
        _ => ready_condition(obj)
            .and_then(|ok| (!ok).then(|| format!("{r}: condition Ready is not True"))),
    }
}

/// The `Ready` condition's truth, if the object has one.
fn ready_condition(obj: &Value) -> Option<bool> {
    obj.get("status")?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        .map(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(kind: &str) -> WorkloadRef {
        WorkloadRef {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            namespace: "shop".into(),
            name: "db".into(),
        }
    }

    #[test]
    fn statefulset_needs_every_replica_ready_updated_and_observed() {
        let sts = r("StatefulSet");
        let mut o = json!({
            "metadata": {"generation": 2},
            "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3,
                       "currentRevision": "db-1", "updateRevision": "db-1"}
        });
        assert_eq!(unhealthy(&sts, Some(&o)), None);
        o["status"]["readyReplicas"] = json!(2);
        assert_eq!(
            unhealthy(&sts, Some(&o)).as_deref(),
            Some("StatefulSet shop/db: 2/3 replicas ready")
        );
        o["status"]["readyReplicas"] = json!(3);
        o["status"]["updateRevision"] = json!("db-2");
        assert_eq!(
            unhealthy(&sts, Some(&o)).as_deref(),
            Some("StatefulSet shop/db: rolling update in progress")
        );
        o["status"]["updateRevision"] = json!("db-1");
        o["metadata"]["generation"] = json!(3);
        assert_eq!(
            unhealthy(&sts, Some(&o)).as_deref(),
            Some("StatefulSet shop/db not yet observed by its controller")
        );
        assert_eq!(
            unhealthy(&sts, None).as_deref(),
            Some("StatefulSet shop/db not found")
        );
    }

    #[test]
    fn deployments_daemonsets_and_other_kinds() {
        let d = json!({"metadata": {"generation": 1}, "spec": {},
            "status": {"observedGeneration": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 0}});
        assert_eq!(
            unhealthy(&r("Deployment"), Some(&d)).as_deref(),
            Some("Deployment shop/db: 0/1 replicas available")
        );
        let ds = json!({"status": {"desiredNumberScheduled": 4, "numberReady": 4,
            "updatedNumberScheduled": 4, "numberAvailable": 4}});
        assert_eq!(unhealthy(&r("DaemonSet"), Some(&ds)), None);
        let cr = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert!(unhealthy(&r("Cluster"), Some(&cr)).is_some());
        let no_conditions = json!({"status": {}});
        assert_eq!(unhealthy(&r("Cluster"), Some(&no_conditions)), None);
        let cluster_scoped = WorkloadRef {
            namespace: String::new(),
            ..r("Thing")
        };
        assert_eq!(
            unhealthy(&cluster_scoped, None).as_deref(),
            Some("Thing db not found")
        );
    }
}
