//! Defaults the real API server fills in for built-in kinds (the subset that
//! clients and our controllers look at).

use serde_json::{Value, json};

use crate::registry::ResourceInfo;

fn set_if_missing(v: &mut Value, ptr: &[&str], default: Value) {
    let mut cur = v;
    for (i, k) in ptr.iter().enumerate() {
        if !cur.is_object() {
            return;
        }
        if i == ptr.len() - 1 {
            let empty = match cur.get(*k) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.is_empty(),
                _ => false,
            };
            if empty {
                cur[*k] = default;
            }
            return;
        }
        if !cur.get(*k).is_some_and(Value::is_object) {
            cur[*k] = json!({});
        }
        cur = &mut cur[*k];
    }
}

fn pod_spec(spec: &mut Value) {
    set_if_missing(spec, &["restartPolicy"], json!("Always"));
    set_if_missing(spec, &["terminationGracePeriodSeconds"], json!(30));
    set_if_missing(spec, &["dnsPolicy"], json!("ClusterFirst"));
    set_if_missing(spec, &["schedulerName"], json!("default-scheduler"));
    set_if_missing(spec, &["securityContext"], json!({}));
    if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in cs {
            set_if_missing(
                c,
                &["terminationMessagePath"],
                json!("/dev/termination-log"),
            );
            set_if_missing(c, &["terminationMessagePolicy"], json!("File"));
            set_if_missing(c, &["imagePullPolicy"], json!("IfNotPresent"));
            set_if_missing(c, &["resources"], json!({}));
        }
    }
}

pub fn apply(info: &ResourceInfo, obj: &mut Value, creating: bool) {
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "namespaces") => {
            set_if_missing(obj, &["status", "phase"], json!("Active"));
            if creating {
                set_if_missing(obj, &["spec", "finalizers"], json!(["kubernetes"]));
            }
            let name = obj["metadata"]["name"].clone();
            set_if_missing(
                obj,
                &["metadata", "labels", "kubernetes.io/metadata.name"],
                name,
            );
        }
        ("", "pods") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
            }
            if creating {
                set_if_missing(obj, &["status", "phase"], json!("Pending"));
                set_if_missing(obj, &["status", "qosClass"], json!("BestEffort"));
            }
        }
        ("apps", r @ ("deployments" | "replicasets" | "statefulsets" | "daemonsets")) => {
            if r != "daemonsets" {
                set_if_missing(obj, &["spec", "replicas"], json!(1));
            }
            set_if_missing(obj, &["spec", "revisionHistoryLimit"], json!(10));
            match r {
                "deployments" => {
                    set_if_missing(
                        obj,
                        &["spec", "strategy"],
                        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                    );
                    set_if_missing(obj, &["spec", "progressDeadlineSeconds"], json!(600));
                }
                "statefulsets" => {
                    set_if_missing(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
                    set_if_missing(
                        obj,
                        &["spec", "updateStrategy"],
                        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                    );
                }
                "daemonsets" => {
                    set_if_missing(
                        obj,
                        &["spec", "updateStrategy"],
                        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                    );
                }
                _ => {}
            }
            if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
                pod_spec(spec);
            }
        }
        ("", "services") => {
            set_if_missing(obj, &["spec", "type"], json!("ClusterIP"));
            set_if_missing(obj, &["spec", "sessionAffinity"], json!("None"));
            set_if_missing(obj, &["spec", "internalTrafficPolicy"], json!("Cluster"));
            if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_if_missing(p, &["protocol"], json!("TCP"));
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    if !port.is_null() {
                        set_if_missing(p, &["targetPort"], port);
                    }
                }
            }
        }
        ("", "serviceaccounts") | ("", "configmaps") => {}
        ("", "secrets") => set_if_missing(obj, &["type"], json!("Opaque")),
        ("policy", "poddisruptionbudgets") if creating => {
            set_if_missing(obj, &["status", "disruptionsAllowed"], json!(0));
            set_if_missing(obj, &["status", "currentHealthy"], json!(0));
            set_if_missing(obj, &["status", "desiredHealthy"], json!(0));
            set_if_missing(obj, &["status", "expectedPods"], json!(0));
        }
        _ => {}
    }
}
