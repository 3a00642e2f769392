//! The eviction subresource and the PodDisruptionBudget arithmetic, following
//! the real server's eviction REST handler and disruption controller.

use std::collections::{HashMap, HashSet};

use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::api::{DeleteOpts, Shared, delete_object};
use crate::error::ApiError;
use crate::selector::LabelSelector;
use crate::store::{Change, meta_str};

const PDB_GR: &str = "poddisruptionbudgets.policy";
/// Entries of status.disruptedPods older than this are dropped by the controller.
const DISRUPTED_POD_TIMEOUT_SECS: i64 = 120;
const MAX_DISRUPTED_PODS: usize = 2000;

pub fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn terminating(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
}

/// Label selector of a PDB (policy/v1: an empty selector selects every pod of
/// the namespace; a missing one selects none).
fn pdb_selector(pdb: &Value) -> Option<LabelSelector> {
    pdb.pointer("/spec/selector")
        .and_then(LabelSelector::from_object)
}

fn pdbs_for_pod(sh: &Shared, pod: &Value) -> Vec<std::sync::Arc<Value>> {
    let ns = meta_str(pod, "namespace");
    let labels = pod.pointer("/metadata/labels").and_then(Value::as_object);
    sh.store
        .all(PDB_GR, Some(ns))
        .into_iter()
        .filter(|p| pdb_selector(p).is_some_and(|s| s.matches_labels(labels)))
        .collect()
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

fn json_resp(code: u16, v: &Value) -> Response {
    let mut r = Response::new(axum::body::Body::from(
        serde_json::to_vec(v).unwrap_or_default(),
    ));
    *r.status_mut() = axum::http::StatusCode::from_u16(code)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

fn too_many(pdb_name: &str, message: String, retry: u32) -> ApiError {
    let mut e = ApiError::too_many_requests(
        "Cannot evict pod as it would violate the pod's disruption budget.",
        retry,
    );
    let mut d = e.details.take().unwrap_or_else(|| json!({}));
    d["causes"] = json!([{"reason": "DisruptionBudget", "message": message}]);
    let _ = pdb_name;
    e.details = Some(d);
    e
}

fn pods_info(sh: &Shared) -> Result<std::sync::Arc<crate::registry::ResourceInfo>, ApiError> {
    sh.registry
        .lookup("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))
}

/// Mark the pod with the DisruptionTarget condition, then delete it.
fn add_condition_and_delete(
    sh: &Shared,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> Result<(), ApiError> {
    let info = pods_info(sh)?;
    if !opts.dry_run {
        let now = crate::store::now_rfc3339();
        sh.store.mutate("pods", ns, name, |cur| {
            let Some(cur) = cur else { return Err(ApiError::not_found("", "pods", name)) };
            if let Some(rv) = &opts.precondition_rv
                && rv != meta_str(cur, "resourceVersion")
            {
                return Err(ApiError::conflict("", "pods", name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", meta_str(cur, "resourceVersion"))));
            }
            let mut n = (**cur).clone();
            let cond = json!({"type": "DisruptionTarget", "status": "True", "lastTransitionTime": now, "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"});
            if !n["status"].is_object() {
                n["status"] = json!({});
            }
            let conds = n["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "DisruptionTarget").collect();
            conds.push(cond);
            n["status"]["conditions"] = Value::Array(conds);
            Ok((Change::Put(n), ()))
        })?;
    }
    let mut o = opts.clone();
    o.precondition_rv = None;
    delete_object(sh, &info, ns, name, &o)?;
    Ok(())
}

/// `POST /api/v1/namespaces/{ns}/pods/{name}/eviction`.
pub fn evict(
    sh: &Shared,
    ns: &str,
    name: &str,
    body: &Value,
    dry_run_q: bool,
) -> Result<Response, ApiError> {
    if let Some(n) = body.pointer("/metadata/name").and_then(Value::as_str)
        && n != name
    {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let d = body.get("deleteOptions").cloned().unwrap_or(Value::Null);
    let opts = DeleteOpts {
        grace_period: d.get("gracePeriodSeconds").and_then(Value::as_i64),
        precondition_uid: d
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        precondition_rv: d
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        propagation: None,
        dry_run: dry_run_q
            || d.get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All")),
    };
    let pod = sh
        .store
        .get("pods", ns, name)
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed" | "Pending") || terminating(&pod) {
        let mut o = opts.clone();
        if phase == "Pending" && o.precondition_rv.is_none() {
            o.precondition_rv = Some(meta_str(&pod, "resourceVersion").to_string());
        }
        add_condition_and_delete(sh, ns, name, &o)?;
        return Ok(json_resp(201, &success()));
    }
    let pdbs = pdbs_for_pod(sh, &pod);
    if pdbs.len() > 1 {
        return Ok(json_resp(
            500,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                "code": 500}),
        ));
    }
    let Some(pdb) = pdbs.into_iter().next() else {
        add_condition_and_delete(sh, ns, name, &opts)?;
        return Ok(json_resp(201, &success()));
    };
    let pdb_name = meta_str(&pdb, "name").to_string();
    if !pod_ready(&pod) {
        let always = pdb
            .pointer("/spec/unhealthyPodEvictionPolicy")
            .and_then(Value::as_str)
            == Some("AlwaysAllow");
        let current = pdb
            .pointer("/status/currentHealthy")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let desired = pdb
            .pointer("/status/desiredHealthy")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if always || (current >= desired && desired > 0) {
            let mut o = opts.clone();
            let had_rv = o.precondition_rv.is_some();
            if !had_rv {
                o.precondition_rv = Some(meta_str(&pod, "resourceVersion").to_string());
            }
            return match add_condition_and_delete(sh, ns, name, &o) {
                Ok(()) => Ok(json_resp(201, &success())),
                Err(e) if e.code == 409 && !had_rv => Err(too_many(
                    &pdb_name,
                    format!(
                        "The disruption budget {pdb_name} is still being processed by the server."
                    ),
                    10,
                )),
                Err(e) => Err(e),
            };
        }
    }
    // Verify and decrement the budget.
    let now = crate::store::now_rfc3339();
    let dry = opts.dry_run;
    sh.store.mutate(PDB_GR, ns, &pdb_name, |cur| {
        let Some(cur) = cur else { return Err(ApiError::not_found("policy", "poddisruptionbudgets", &pdb_name)) };
        let st = &cur["status"];
        let observed = st["observedGeneration"].as_i64().unwrap_or(0);
        let generation = cur["metadata"]["generation"].as_i64().unwrap_or(1);
        if observed < generation {
            return Err(too_many(&pdb_name, format!("The disruption budget {pdb_name} is still being processed by the server."), 10));
        }
        let allowed = st["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed < 0 {
            return Err(ApiError::new(403, "Forbidden", format!("poddisruptionbudgets.policy \"{pdb_name}\" is forbidden: pdb disruptions allowed is negative")));
        }
        if st["disruptedPods"].as_object().map_or(0, Map::len) > MAX_DISRUPTED_PODS {
            return Err(ApiError::new(403, "Forbidden", format!("poddisruptionbudgets.policy \"{pdb_name}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller")));
        }
        if allowed == 0 {
            return Err(too_many(
                &pdb_name,
                format!(
                    "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                    st["desiredHealthy"].as_i64().unwrap_or(0),
                    st["currentHealthy"].as_i64().unwrap_or(0)
                ),
                0,
            ));
        }
        if dry {
            return Ok((Change::Keep, ()));
        }
        let mut n = (**cur).clone();
        n["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !n["status"]["disruptedPods"].is_object() {
            n["status"]["disruptedPods"] = json!({});
        }
        n["status"]["disruptedPods"][name] = json!(now);
        if allowed - 1 == 0 {
            set_condition(&mut n, false, &now);
        }
        Ok((Change::Put(n), ()))
    })?;
    add_condition_and_delete(sh, ns, name, &opts)?;
    Ok(json_resp(201, &success()))
}

fn set_condition(pdb: &mut Value, allowed: bool, now: &str) {
    let (status, reason) = if allowed {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let existing = pdb["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == "DisruptionAllowed").cloned());
    let ltt = match &existing {
        Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let generation = pdb["metadata"]["generation"].clone();
    pdb["status"]["conditions"] = json!([{
        "type": "DisruptionAllowed", "status": status, "reason": reason, "message": "",
        "lastTransitionTime": ltt, "observedGeneration": generation,
    }]);
}

fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let p: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
            Some((p * total + 99) / 100)
        }
        _ => None,
    }
}

/// Scale of the pod's controller (Deployment via its ReplicaSet, ReplicaSet, StatefulSet).
fn controller_scale(
    sh: &Shared,
    pod: &Value,
    cache: &mut HashMap<String, Option<(String, i64)>>,
) -> Option<(String, i64)> {
    let ns = meta_str(pod, "namespace");
    let owner = pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)?;
    let kind = owner["kind"].as_str()?;
    let oname = owner["name"].as_str()?;
    let key = format!("{kind}/{oname}");
    if let Some(c) = cache.get(&key) {
        return c.clone();
    }
    let r = match kind {
        "ReplicaSet" => sh.store.get("replicasets.apps", ns, oname).and_then(|rs| {
            let dep = rs["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|o| o["controller"] == true && o["kind"] == "Deployment")
                })
                .and_then(|o| o["name"].as_str().map(String::from));
            match dep {
                Some(d) => sh.store.get("deployments.apps", ns, &d).map(|dd| {
                    (
                        meta_str(&dd, "uid").to_string(),
                        dd["spec"]["replicas"].as_i64().unwrap_or(1),
                    )
                }),
                None => Some((
                    meta_str(&rs, "uid").to_string(),
                    rs["spec"]["replicas"].as_i64().unwrap_or(1),
                )),
            }
        }),
        "StatefulSet" => sh.store.get("statefulsets.apps", ns, oname).map(|s| {
            (
                meta_str(&s, "uid").to_string(),
                s["spec"]["replicas"].as_i64().unwrap_or(1),
            )
        }),
        _ => None,
    };
    cache.insert(key, r.clone());
    r
}

/// Recompute the status of one PDB as the disruption controller does.
/// Returns the new object when the status changed.
pub fn recompute_pdb(sh: &Shared, pdb: &Value, pods: &[std::sync::Arc<Value>]) -> Option<Value> {
    let now_ts = jiff::Timestamp::now();
    let now = crate::store::now_rfc3339();
    let labels_sel = pdb_selector(pdb);
    let matching: Vec<&Value> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            labels_sel.as_ref().is_some_and(|s| {
                s.matches_labels(p.pointer("/metadata/labels").and_then(Value::as_object))
            })
        })
        .collect();
    let spec = &pdb["spec"];
    let mut cache = HashMap::new();
    let mut expected_from_controllers = || -> Option<i64> {
        let mut seen = HashSet::new();
        let mut total = 0;
        for p in &matching {
            let (uid, scale) = controller_scale(sh, p, &mut cache)?;
            if seen.insert(uid) {
                total += scale;
            }
        }
        Some(total)
    };
    let (expected, desired) = match (spec.get("minAvailable"), spec.get("maxUnavailable")) {
        (Some(Value::Number(n)), _) => (matching.len() as i64, n.as_i64().unwrap_or(0)),
        (Some(min @ Value::String(_)), _) => match expected_from_controllers() {
            Some(e) => (e, scaled(min, e).unwrap_or(e)),
            None => (0, 0),
        },
        (_, Some(max)) if !max.is_null() => match expected_from_controllers() {
            Some(e) => (e, (e - scaled(max, e).unwrap_or(0)).max(0)),
            None => (0, 0),
        },
        _ => (matching.len() as i64, matching.len() as i64),
    };
    let old_disrupted = pdb["status"]["disruptedPods"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut disrupted = Map::new();
    for (name, ts) in &old_disrupted {
        let Some(p) = matching.iter().find(|p| meta_str(p, "name") == name) else {
            continue;
        };
        if terminating(p) {
            continue;
        }
        let fresh = ts
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| now_ts.as_second() - t.as_second() < DISRUPTED_POD_TIMEOUT_SECS);
        if fresh {
            disrupted.insert(name.clone(), ts.clone());
        }
    }
    let healthy = matching
        .iter()
        .filter(|p| !terminating(p) && !disrupted.contains_key(meta_str(p, "name")) && pod_ready(p))
        .count() as i64;
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let mut n = pdb.clone();
    let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(1);
    n["status"]["observedGeneration"] = json!(generation);
    n["status"]["expectedPods"] = json!(expected);
    n["status"]["desiredHealthy"] = json!(desired);
    n["status"]["currentHealthy"] = json!(healthy);
    n["status"]["disruptionsAllowed"] = json!(allowed);
    if disrupted.is_empty() {
        if let Some(m) = n["status"].as_object_mut() {
            m.remove("disruptedPods");
        }
    } else {
        n["status"]["disruptedPods"] = Value::Object(disrupted);
    }
    set_condition(&mut n, allowed > 0, &now);
    if n == *pdb { None } else { Some(n) }
}

/// What the disruption controller does on a pod's change: once an evicted
/// pod is terminating or gone, its `status.disruptedPods` entry has served
/// its purpose and is dropped. The real controller watches pods and so
/// drops it before a StatefulSet creates the successor of the same name;
/// an entry left behind would count that successor as still disrupted for
/// the whole timeout (two minutes), and every later eviction under the
/// budget would be refused meanwhile.
pub fn forget_disrupted(sh: &Shared, pod: &Value, deleted: bool) {
    if !(deleted || terminating(pod)) {
        return;
    }
    let ns = meta_str(pod, "namespace");
    let name = meta_str(pod, "name");
    for pdb in pdbs_for_pod(sh, pod) {
        if pdb
            .pointer("/status/disruptedPods")
            .and_then(Value::as_object)
            .is_none_or(|m| !m.contains_key(name))
        {
            continue;
        }
        let _ = sh.store.mutate(PDB_GR, ns, meta_str(&pdb, "name"), |cur| {
            let Some(cur) = cur else {
                return Ok((Change::Keep, ()));
            };
            let mut n = (**cur).clone();
            let Some(st) = n.get_mut("status").and_then(Value::as_object_mut) else {
                return Ok((Change::Keep, ()));
            };
            let Some(m) = st.get_mut("disruptedPods").and_then(Value::as_object_mut) else {
                return Ok((Change::Keep, ()));
            };
            if m.remove(name).is_none() {
                return Ok((Change::Keep, ()));
            }
            if m.is_empty() {
                st.remove("disruptedPods");
            }
            Ok((Change::Put(n), ()))
        });
    }
}

/// One pass of the disruption controller over every PDB.
pub fn sync_all(sh: &Shared) {
    let pdbs = sh.store.all(PDB_GR, None);
    let mut by_ns: HashMap<String, Vec<std::sync::Arc<Value>>> = HashMap::new();
    for pdb in pdbs {
        let ns = meta_str(&pdb, "namespace").to_string();
        let pods = by_ns
            .entry(ns.clone())
            .or_insert_with(|| sh.store.all("pods", Some(&ns)));
        if let Some(updated) = recompute_pdb(sh, &pdb, pods) {
            let name = meta_str(&pdb, "name").to_string();
            let want_rv = meta_str(&pdb, "resourceVersion").to_string();
            let _ = sh.store.mutate(PDB_GR, &ns, &name, |cur| match cur {
                Some(c) if meta_str(c, "resourceVersion") == want_rv => {
                    Ok((Change::Put(updated), ()))
                }
                _ => Ok((Change::Keep, ())),
            });
        }
    }
}
