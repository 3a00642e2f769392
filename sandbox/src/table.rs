//! `meta.k8s.io/v1` Table responses, as `kubectl get` asks for them.

use serde_json::{Value, json};

use crate::registry::{PrinterColumn, ResourceInfo};

/// What each row carries as `object`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

/// Human duration as kubectl and the server print ages.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let m = s / 60;
    let h = m / 60;
    let d = h / 24;
    let y = d / 365;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{y}y")
    }
}

pub fn age(ts: &str) -> String {
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

/// Evaluate a simple JSONPath (`.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.k=="v")].b`).
pub fn jsonpath(obj: &Value, path: &str) -> Vec<Value> {
    let p = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut cur = vec![obj.clone()];
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            rest = &r[end..];
            if key.is_empty() {
                continue;
            }
            cur = cur.iter().filter_map(|v| v.get(key).cloned()).collect();
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return vec![];
            };
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                cur = cur
                    .iter()
                    .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                    .collect();
            } else if let Ok(i) = inner.parse::<usize>() {
                cur = cur.iter().filter_map(|v| v.get(i).cloned()).collect();
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (k, want) = match f.split_once("==") {
                    Some((k, v)) => (k.trim(), v.trim().trim_matches('"').trim_matches('\'')),
                    None => (f.trim(), ""),
                };
                cur = cur
                    .iter()
                    .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                    .filter(|e| {
                        let got = e.get(k);
                        if want.is_empty() {
                            got.is_some()
                        } else {
                            match got {
                                Some(Value::String(s)) => s == want,
                                Some(other) => *other.to_string() == *want,
                                None => false,
                            }
                        }
                    })
                    .collect();
            } else {
                return vec![];
            }
        } else {
            return vec![];
        }
    }
    cur
}

fn col(name: &str, type_: &str, priority: i64, description: &str) -> Value {
    let mut c = json!({"name": name, "type": type_, "format": "", "description": description, "priority": priority});
    if name == "Name" {
        c["format"] = json!("name");
    }
    c
}

fn s(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

fn condition(v: &Value, ptr: &str, type_: &str) -> Option<String> {
    v.pointer(ptr)?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        .and_then(|c| c.get("status").and_then(Value::as_str))
        .map(String::from)
}

fn node_row(n: &Value) -> Vec<Value> {
    let mut status = match condition(n, "/status/conditions", "Ready").as_deref() {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = n
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let ip = n
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .unwrap_or("")
        .to_string();
    vec![
        json!(s(n, "/metadata/name")),
        json!(status),
        json!(if roles.is_empty() {
            "<none>".into()
        } else {
            roles.join(",")
        }),
        json!(age(&s(n, "/metadata/creationTimestamp"))),
        json!(s(n, "/status/nodeInfo/kubeletVersion")),
        json!(or_none(ip)),
        json!("<none>"),
        json!(or_none(s(n, "/status/nodeInfo/osImage"))),
        json!(or_none(s(n, "/status/nodeInfo/kernelVersion"))),
        json!(or_none(s(n, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

fn pod_row(p: &Value) -> Vec<Value> {
    let total = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum();
    let mut status = s(p, "/status/reason");
    if status.is_empty() {
        status = s(p, "/status/phase");
    }
    if p.pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
    {
        status = "Terminating".into();
    }
    vec![
        json!(s(p, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        json!(age(&s(p, "/metadata/creationTimestamp"))),
        json!(or_none(s(p, "/status/podIP"))),
        json!(or_none(s(p, "/spec/nodeName"))),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn int_or_string(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".into(),
    }
}

/// Column definitions and the row function for a resource.
#[allow(clippy::type_complexity)]
fn layout(info: &ResourceInfo) -> (Vec<Value>, Box<dyn Fn(&Value) -> Vec<Value>>) {
    let name = col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let agec = col(
        "Age",
        "string",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    let cts = |v: &Value| json!(age(&s(v, "/metadata/creationTimestamp")));
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "nodes") => (
            vec![
                name,
                col("Status", "string", 0, "The status of the node"),
                col("Roles", "string", 0, "The roles of the node"),
                agec,
                col(
                    "Version",
                    "string",
                    0,
                    "Kubelet Version reported by the node.",
                ),
                col("Internal-IP", "string", 1, "List of internal IPs."),
                col("External-IP", "string", 1, "List of external IPs."),
                col("OS-Image", "string", 1, "OS Image reported by the node."),
                col(
                    "Kernel-Version",
                    "string",
                    1,
                    "Kernel Version reported by the node.",
                ),
                col(
                    "Container-Runtime",
                    "string",
                    1,
                    "Container Runtime Version reported by the node.",
                ),
            ],
            Box::new(node_row),
        ),
        ("", "pods") => (
            vec![
                name,
                col(
                    "Ready",
                    "string",
                    0,
                    "The aggregate readiness state of this pod for accepting traffic.",
                ),
                col(
                    "Status",
                    "string",
                    0,
                    "The aggregate status of the containers in this pod.",
                ),
                col(
                    "Restarts",
                    "string",
                    0,
                    "The number of times the containers in this pod have been restarted.",
                ),
                agec,
                col("IP", "string", 1, "IP address allocated to the pod."),
                col(
                    "Node",
                    "string",
                    1,
                    "Name of the node the pod is assigned to.",
                ),
                col("Nominated Node", "string", 1, "Nominated node name."),
                col("Readiness Gates", "string", 1, "Pod readiness gates."),
            ],
            Box::new(pod_row),
        ),
        ("", "namespaces") => (
            vec![
                name,
                col("Status", "string", 0, "The status of the namespace"),
                agec,
            ],
            Box::new(move |v| {
                vec![
                    json!(s(v, "/metadata/name")),
                    json!(s(v, "/status/phase")),
                    cts(v),
                ]
            }),
        ),
        ("apps", "deployments") => (
            vec![
                name,
                col("Ready", "string", 0, "Number of the pod with ready state"),
                col(
                    "Up-to-date",
                    "integer",
                    0,
                    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                ),
                col(
                    "Available",
                    "integer",
                    0,
                    "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                ),
                agec,
            ],
            Box::new(move |v| {
                vec![
                    json!(s(v, "/metadata/name")),
                    json!(format!(
                        "{}/{}",
                        i(v, "/status/readyReplicas"),
                        i(v, "/spec/replicas")
                    )),
                    json!(i(v, "/status/updatedReplicas")),
                    json!(i(v, "/status/availableReplicas")),
                    cts(v),
                ]
            }),
        ),
        ("apps", "replicasets") => (
            vec![
                name,
                col("Desired", "integer", 0, "Number of desired pods."),
                col("Current", "integer", 0, "Number of actual replicas."),
                col("Ready", "integer", 0, "The number of ready replicas."),
                agec,
            ],
            Box::new(move |v| {
                vec![
                    json!(s(v, "/metadata/name")),
                    json!(i(v, "/spec/replicas")),
                    json!(i(v, "/status/replicas")),
                    json!(i(v, "/status/readyReplicas")),
                    cts(v),
                ]
            }),
        ),
        ("apps", "statefulsets") => (
            vec![
                name,
                col("Ready", "string", 0, "Number of the pod with ready state"),
                agec,
            ],
            Box::new(move |v| {
                vec![
                    json!(s(v, "/metadata/name")),
                    json!(format!(
                        "{}/{}",
                        i(v, "/status/readyReplicas"),
                        i(v, "/spec/replicas")
                    )),
                    cts(v),
                ]
            }),
        ),
        ("apps", "daemonsets") => (
            vec![
                name,
                col(
                    "Desired",
                    "integer",
                    0,
                    "The number of nodes that should be running the daemon pod.",
                ),
                col(
                    "Current",
                    "integer",
                    0,
                    "The number of nodes running at least one daemon pod.",
                ),
                col(
                    "Ready",
                    "integer",
                    0,
                    "The number of nodes that should be running the daemon pod and have one or more running and ready.",
                ),
                col(
                    "Up-to-date",
                    "integer",
                    0,
                    "The total number of nodes that are running updated daemon pod.",
                ),
                col(
                    "Available",
                    "integer",
                    0,
                    "The number of nodes that should be running the daemon pod and have one or more available.",
                ),
                col(
                    "Node Selector",
                    "string",
                    0,
                    "NodeSelector is a selector which must be true for the pod to fit on a node.",
                ),
                agec,
            ],
            Box::new(move |v| {
                let sel = v
                    .pointer("/spec/template/spec/nodeSelector")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                vec![
                    json!(s(v, "/metadata/name")),
                    json!(i(v, "/status/desiredNumberScheduled")),
                    json!(i(v, "/status/currentNumberScheduled")),
                    json!(i(v, "/status/numberReady")),
                    json!(i(v, "/status/updatedNumberScheduled")),
                    json!(i(v, "/status/numberAvailable")),
                    json!(or_none(sel)),
                    cts(v),
                ]
            }),
        ),
        ("policy", "poddisruptionbudgets") => (
            vec![
                name,
                col(
                    "Min Available",
                    "string",
                    0,
                    "The minimum number of pods that must be available.",
                ),
                col(
                    "Max Unavailable",
                    "string",
                    0,
                    "The maximum number of pods that may be unavailable.",
                ),
                col(
                    "Allowed Disruptions",
                    "integer",
                    0,
                    "Calculated number of pods that may be disrupted at this time.",
                ),
                agec,
            ],
            Box::new(move |v| {
                vec![
                    json!(s(v, "/metadata/name")),
                    json!(int_or_string(v, "/spec/minAvailable")),
                    json!(int_or_string(v, "/spec/maxUnavailable")),
                    json!(i(v, "/status/disruptionsAllowed")),
                    cts(v),
                ]
            }),
        ),
        ("coordination.k8s.io", "leases") => (
            vec![
                name,
                col("Holder", "string", 0, "The holder of the lease"),
                agec,
            ],
            Box::new(move |v| {
                vec![
                    json!(s(v, "/metadata/name")),
                    json!(s(v, "/spec/holderIdentity")),
                    cts(v),
                ]
            }),
        ),
        ("apiextensions.k8s.io", "customresourcedefinitions") => (
            vec![name, col("Created At", "date", 0, "")],
            Box::new(|v| {
                vec![
                    json!(s(v, "/metadata/name")),
                    json!(s(v, "/metadata/creationTimestamp")),
                ]
            }),
        ),
        ("", "events") => (
            vec![
                col(
                    "Last Seen",
                    "string",
                    0,
                    "Time since the most recent occurrence.",
                ),
                col("Type", "string", 0, "Type of this event."),
                col(
                    "Reason",
                    "string",
                    0,
                    "Short, machine understandable string.",
                ),
                col("Object", "string", 0, "The object this Event is about."),
                col(
                    "Message",
                    "string",
                    0,
                    "A human-readable description of the status of this operation.",
                ),
            ],
            Box::new(|v| {
                let mut last = s(v, "/lastTimestamp");
                if last.is_empty() {
                    last = s(v, "/eventTime");
                }
                if last.is_empty() {
                    last = s(v, "/metadata/creationTimestamp");
                }
                vec![
                    json!(age(&last)),
                    json!(s(v, "/type")),
                    json!(s(v, "/reason")),
                    json!(format!(
                        "{}/{}",
                        s(v, "/involvedObject/kind").to_lowercase(),
                        s(v, "/involvedObject/name")
                    )),
                    json!(s(v, "/message")),
                ]
            }),
        ),
        _ if info.crd.is_some() => {
            let pcs: Vec<PrinterColumn> = info.printer_columns.clone();
            let mut cols = vec![name];
            for pc in &pcs {
                let mut c = col(&pc.name, &pc.type_, pc.priority, &pc.description);
                c["format"] = json!(pc.format);
                if pc.type_ == "date" {
                    c["type"] = json!("date");
                }
                cols.push(c);
            }
            (
                cols,
                Box::new(move |v| {
                    let mut cells = vec![json!(s(v, "/metadata/name"))];
                    for pc in &pcs {
                        let vals = jsonpath(v, &pc.json_path);
                        let cell = match vals.first() {
                            None => Value::Null,
                            Some(first) if pc.type_ == "date" => match first.as_str() {
                                Some(ts) => json!(age(ts)),
                                None => Value::Null,
                            },
                            Some(first)
                                if vals.len() == 1 && !first.is_object() && !first.is_array() =>
                            {
                                first.clone()
                            }
                            Some(_) => json!(
                                vals.iter()
                                    .map(|x| match x {
                                        Value::String(s) => s.clone(),
                                        other => other.to_string(),
                                    })
                                    .collect::<Vec<_>>()
                                    .join(",")
                            ),
                        };
                        cells.push(cell);
                    }
                    cells
                }),
            )
        }
        _ => (
            vec![name, agec],
            Box::new(move |v| vec![json!(s(v, "/metadata/name")), cts(v)]),
        ),
    }
}

pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A Table of `objs`.
pub fn table(
    info: &ResourceInfo,
    objs: &[&Value],
    include: Include,
    rv: &str,
    cont: Option<&str>,
) -> Value {
    let (cols, row) = layout(info);
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut r = json!({"cells": row(o)});
            match include {
                Include::None => {}
                Include::Metadata => r["object"] = partial_metadata(o),
                Include::Object => r["object"] = (*o).clone(),
            }
            r
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": cols,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_forms() {
        let o = json!({"status": {"phase": "Done", "conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}, "a": [1, 2]});
        assert_eq!(jsonpath(&o, ".status.phase"), vec![json!("Done")]);
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(jsonpath(&o, ".a[1]"), vec![json!(2)]);
        assert_eq!(jsonpath(&o, ".a[*]").len(), 2);
        assert!(jsonpath(&o, ".missing").is_empty());
    }

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(86400 * 3), "3d");
    }
}
