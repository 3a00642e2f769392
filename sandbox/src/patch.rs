//! Patch types: strategic merge (lists merged by key for the fields the real
//! server merges that way), and server-side apply with field ownership.
//! JSON patch and JSON merge patch come from the `json-patch` crate.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// Merge key of a list field, when the real server merges it by key.
pub fn merge_key(field: &str, elem: &Value) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" | "addresses" => "type",
        "taints" => "key",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if elem.get("containerPort").is_some() {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Lists of scalars merged as sets.
fn primitive_merge(field: &str) -> bool {
    field == "finalizers"
}

fn same_key(a: &Value, b: &Value, key: &str) -> bool {
    a.get(key).is_some() && a.get(key) == b.get(key)
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Apply a strategic merge patch to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip_directives(patch);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => return Err(format!("unknown patch type: {other}")),
        None => {}
    }
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(tm) = target else {
        return Ok(());
    };
    for (k, pv) in pm {
        if k == "$retainKeys" || k.starts_with("$setElementOrder/") || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (tm.get_mut(field), pv) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        match pv {
            Value::Object(_) => {
                let entry = tm.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(entry, pv)?;
                if entry.is_null() {
                    tm.remove(k);
                }
            }
            Value::Array(pa) => {
                let first = pa.first().cloned().unwrap_or(Value::Null);
                if primitive_merge(k) {
                    let list = tm.entry(k.clone()).or_insert_with(|| json!([]));
                    if let Value::Array(l) = list {
                        for x in pa {
                            if !l.contains(x) {
                                l.push(x.clone());
                            }
                        }
                    } else {
                        *list = pv.clone();
                    }
                } else if let Some(key) = merge_key(k, &first) {
                    if pa
                        .iter()
                        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
                    {
                        let kept: Vec<Value> = pa
                            .iter()
                            .filter(|e| e.get("$patch").is_none())
                            .map(strip_directives)
                            .collect();
                        tm.insert(k.clone(), Value::Array(kept));
                        continue;
                    }
                    let list = tm.entry(k.clone()).or_insert_with(|| json!([]));
                    if !list.is_array() {
                        *list = json!([]);
                    }
                    let Value::Array(l) = list else { continue };
                    for pe in pa {
                        let pos = l.iter().position(|te| same_key(te, pe, key));
                        if pe.get("$patch").and_then(Value::as_str) == Some("delete") {
                            if let Some(p) = pos {
                                l.remove(p);
                            }
                            continue;
                        }
                        match pos {
                            Some(p) => strategic_merge(&mut l[p], pe)?,
                            None => l.push(strip_directives(pe)),
                        }
                    }
                } else {
                    tm.insert(k.clone(), strip_directives(pv));
                }
            }
            other => {
                tm.insert(k.clone(), other.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = pm.get("$retainKeys") {
        let keep: BTreeSet<&str> = keep.iter().filter_map(Value::as_str).collect();
        tm.retain(|k, _| keep.contains(k.as_str()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Field ownership (managedFields) and server-side apply.

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pe {
    F(String),
    /// Keyed list element; the compact JSON of its key map.
    K(String),
    /// Set element; the JSON of the value.
    V(String),
}

pub type Path = Vec<Pe>;
pub type FieldSet = BTreeSet<Path>;

fn key_json(key: &str, elem: &Value) -> String {
    let mut m = Map::new();
    m.insert(
        key.to_string(),
        elem.get(key).cloned().unwrap_or(Value::Null),
    );
    Value::Object(m).to_string()
}

fn collect(v: &Value, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, cv) in m {
                path.push(Pe::F(k.clone()));
                if let Value::Array(a) = cv {
                    let first = a.first().cloned().unwrap_or(Value::Null);
                    if primitive_merge(k) {
                        for x in a {
                            path.push(Pe::V(x.to_string()));
                            out.insert(path.clone());
                            path.pop();
                        }
                    } else if let Some(key) = merge_key(k, &first).filter(|_| !a.is_empty()) {
                        for e in a {
                            path.push(Pe::K(key_json(key, e)));
                            out.insert(path.clone());
                            collect(e, path, out);
                            path.pop();
                        }
                    } else {
                        out.insert(path.clone());
                    }
                } else {
                    collect(cv, path, out);
                }
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The fields an object sets, as the real server tracks them (identity and
/// server-managed metadata excluded; `status` excluded when `skip_status`).
pub fn fields_of(obj: &Value, skip_status: bool, only_status: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Value::Object(m) = obj else { return out };
    for (k, v) in m {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        if (skip_status && k == "status") || (only_status && k != "status") {
            continue;
        }
        let mut path = vec![Pe::F(k.clone())];
        if k == "metadata" {
            for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(mv) = v.get(mk) {
                    let wrapper = json!({ mk: mv });
                    collect(&wrapper, &mut path, &mut out);
                }
            }
            continue;
        }
        if matches!(v, Value::Array(_)) {
            let wrapper = json!({ k: v });
            collect(&wrapper, &mut vec![], &mut out);
        } else {
            collect(v, &mut path, &mut out);
        }
    }
    out
}

/// The value at a path, if present.
pub fn get_at<'a>(obj: &'a Value, path: &[Pe]) -> Option<&'a Value> {
    let mut cur = obj;
    for (i, pe) in path.iter().enumerate() {
        cur = match pe {
            Pe::F(f) => cur.get(f)?,
            Pe::K(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                cur.as_array()?
                    .iter()
                    .find(|e| key.iter().all(|(kk, kv)| e.get(kk) == Some(kv)))?
            }
            Pe::V(v) => {
                let val: Value = serde_json::from_str(v).ok()?;
                let _ = i;
                cur.as_array()?.iter().find(|e| **e == val)?
            }
        };
    }
    Some(cur)
}

/// Remove the value at a path.
pub fn remove_at(obj: &mut Value, path: &[Pe]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for pe in parent_path {
        let next = match pe {
            Pe::F(f) => cur.get_mut(f),
            Pe::K(k) => {
                let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
                    return;
                };
                cur.as_array_mut().and_then(|a| {
                    a.iter_mut()
                        .find(|e| key.iter().all(|(kk, kv)| e.get(kk) == Some(kv)))
                })
            }
            Pe::V(_) => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Pe::F(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        Pe::K(k) => {
            if let (Ok(key), Some(a)) = (
                serde_json::from_str::<Map<String, Value>>(k),
                cur.as_array_mut(),
            ) {
                a.retain(|e| !key.iter().all(|(kk, kv)| e.get(kk) == Some(kv)));
            }
        }
        Pe::V(v) => {
            if let (Ok(val), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut()) {
                a.retain(|e| *e != val);
            }
        }
    }
}

fn pe_str(pe: &Pe) -> String {
    match pe {
        Pe::F(f) => format!("f:{f}"),
        Pe::K(k) => format!("k:{k}"),
        Pe::V(v) => format!("v:{v}"),
    }
}

/// fieldsV1 JSON of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = json!({});
    for path in set {
        let mut cur = &mut root;
        for pe in path {
            let key = pe_str(pe);
            if !cur.is_object() {
                *cur = json!({});
            }
            cur = match cur {
                Value::Object(m) => m.entry(key).or_insert_with(|| json!({})),
                other => other,
            };
        }
        if let Some(m) = cur.as_object_mut()
            && !m.is_empty()
        {
            m.insert(".".into(), json!({}));
        }
    }
    // Nodes that are members and also have children carry ".".
    fn mark(v: &mut Value, set_has: &dyn Fn(&[String]) -> bool, prefix: &mut Vec<String>) {
        if let Some(m) = v.as_object_mut() {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if k == "." {
                    continue;
                }
                prefix.push(k.clone());
                if let Some(child) = m.get_mut(&k) {
                    let has_children = child.as_object().is_some_and(|c| !c.is_empty());
                    if has_children && set_has(prefix) {
                        child["."] = json!({});
                    }
                    mark(child, set_has, prefix);
                }
                prefix.pop();
            }
        }
    }
    let strs: BTreeSet<Vec<String>> = set.iter().map(|p| p.iter().map(pe_str).collect()).collect();
    mark(&mut root, &|p| strs.contains(p), &mut vec![]);
    root
}

/// Parse fieldsV1 JSON back into a set.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() && !path.is_empty() {
            out.insert(path.clone());
            return;
        }
        for (k, cv) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            let pe = if let Some(f) = k.strip_prefix("f:") {
                Pe::F(f.into())
            } else if let Some(x) = k.strip_prefix("k:") {
                Pe::K(x.into())
            } else if let Some(x) = k.strip_prefix("v:") {
                Pe::V(x.into())
            } else {
                continue;
            };
            path.push(pe);
            walk(cv, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(v, &mut vec![], &mut out);
    out
}

pub fn path_display(path: &[Pe]) -> String {
    let mut s = String::new();
    for pe in path {
        match pe {
            Pe::F(f) => {
                s.push('.');
                s.push_str(f);
            }
            Pe::K(k) => {
                let inner = serde_json::from_str::<Map<String, Value>>(k)
                    .ok()
                    .map(|m| {
                        m.iter()
                            .map(|(a, b)| format!("{a}={b}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                s.push_str(&format!("[{inner}]"));
            }
            Pe::V(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

#[derive(Clone, Debug)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

pub fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| ManagedEntry {
                    manager: e
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    operation: e
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or("Update")
                        .into(),
                    api_version: e
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    time: e.get("time").and_then(Value::as_str).unwrap_or("").into(),
                    subresource: e
                        .get("subresource")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn is_leaf(v: Option<&Value>) -> bool {
    !matches!(v, Some(Value::Object(m)) if !m.is_empty())
}

/// Record a non-apply write: fields whose value changed now belong to `manager`
/// (operation Update); removed fields are dropped from every manager.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    skip_status: bool,
) {
    let only_status = subresource == "status";
    let mut entries = old.map(read_managed).unwrap_or_default();
    let new_fields = fields_of(new, skip_status && !only_status, only_status);
    let old_fields = old
        .map(|o| fields_of(o, skip_status && !only_status, only_status))
        .unwrap_or_default();
    let changed: FieldSet = new_fields
        .iter()
        .filter(|p| {
            let nv = get_at(new, p);
            is_leaf(nv) && old.and_then(|o| get_at(o, p)) != nv
        })
        .cloned()
        .collect();
    let removed: Vec<&Path> = old_fields.difference(&new_fields).collect();
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(&p));
    }
    if !changed.is_empty() {
        let time = crate::store::now_rfc3339();
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = time;
                e.api_version = api_version.into();
            }
            None => entries.push(ManagedEntry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                time,
                subresource: subresource.into(),
                fields: changed,
            }),
        }
    }
    write_managed(new, &entries);
}

/// Server-side apply of `applied` onto `live` (None: creation).
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    subresource: &str,
    skip_status: bool,
) -> Result<Value, ApiError> {
    let only_status = subresource == "status";
    let applied_fields = fields_of(applied, skip_status && !only_status, only_status);
    let mut entries = live.map(read_managed).unwrap_or_default();
    let mut result = live.cloned().unwrap_or_else(|| json!({}));

    // Conflicts: fields owned by someone else whose value would change.
    let mut conflicts: BTreeMap<String, Vec<(usize, Path)>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if (e.manager == manager && e.operation == "Apply") || e.subresource != subresource {
            continue;
        }
        for p in e.fields.intersection(&applied_fields) {
            let av = get_at(applied, p);
            if !is_leaf(av) {
                continue;
            }
            if get_at(&result, p) != av {
                conflicts
                    .entry(format!(
                        "conflict with \"{}\" using {}",
                        e.manager, e.api_version
                    ))
                    .or_default()
                    .push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            let n: usize = conflicts.values().map(Vec::len).sum();
            let mut causes = Vec::new();
            let mut lines = Vec::new();
            for (who, paths) in &conflicts {
                for (_, p) in paths {
                    causes.push(json!({"reason": "FieldManagerConflict", "message": who, "field": path_display(p)}));
                    lines.push(format!("{who}: {}", path_display(p)));
                }
            }
            let plural = if n == 1 { "conflict" } else { "conflicts" };
            let message = if n == 1 {
                format!("Apply failed with {n} {plural}: {}", lines[0])
            } else {
                format!("Apply failed with {n} {plural}: {}", lines.join("\n"))
            };
            return Err(
                ApiError::new(409, "Conflict", message).with_details(json!({ "causes": causes }))
            );
        }
        for paths in conflicts.values() {
            for (i, p) in paths {
                entries[*i].fields.remove(p);
            }
        }
    }

    // Fields this manager applied before but no longer does are removed,
    // unless someone else also owns them.
    let previous: FieldSet = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for p in previous.difference(&applied_fields) {
        let owned_elsewhere = entries
            .iter()
            .any(|e| !(e.manager == manager && e.operation == "Apply") && e.fields.contains(p));
        if !owned_elsewhere {
            remove_at(&mut result, p);
        }
    }

    let mut patch = applied.clone();
    if let Some(m) = patch.as_object_mut() {
        if skip_status && !only_status {
            m.remove("status");
        }
        if only_status {
            m.retain(|k, _| k == "status" || k == "metadata" || k == "apiVersion" || k == "kind");
        }
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
            meta.remove("uid");
            meta.remove("creationTimestamp");
        }
    }
    strategic_merge(&mut result, &patch).map_err(ApiError::bad_request)?;

    let time = crate::store::now_rfc3339();
    entries.retain(|e| {
        !(e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
    });
    entries.push(ManagedEntry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: api_version.into(),
        time,
        subresource: subresource.into(),
        fields: applied_fields,
    });
    if !result.get("metadata").is_some_and(Value::is_object) {
        result["metadata"] = json!({});
    }
    write_managed(&mut result, &entries);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merges_containers_by_name_and_deletes_nulls() {
        let mut t = json!({"spec": {"unschedulable": true, "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        strategic_merge(
            &mut t,
            &json!({"spec": {"unschedulable": null, "containers": [{"name": "b", "image": "z"}]}}),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "z"}]}})
        );
        strategic_merge(
            &mut t,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        )
        .unwrap();
        assert_eq!(t["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn conditions_merge_by_type_and_finalizers_as_set() {
        let mut t = json!({"metadata": {"finalizers": ["a"]}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        strategic_merge(&mut t, &json!({"metadata": {"finalizers": ["b", "a"]}, "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "True"}]}})).unwrap();
        assert_eq!(t["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(t["status"]["conditions"][0]["status"], "True");
        assert_eq!(t["status"]["conditions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn fields_round_trip_through_fields_v1() {
        let obj = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let f = fields_of(&obj, true, false);
        assert_eq!(from_fields_v1(&to_fields_v1(&f)), f);
    }

    #[test]
    fn second_applier_conflicts_unless_forced() {
        let a = apply(
            None,
            &json!({"metadata": {"name": "x"}, "spec": {"replicas": 2}}),
            "a",
            false,
            "v1",
            "",
            true,
        )
        .unwrap();
        let err = apply(
            Some(&a),
            &json!({"metadata": {"name": "x"}, "spec": {"replicas": 3}}),
            "b",
            false,
            "v1",
            "",
            true,
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"a\""),
            "{}",
            err.message
        );
        // Same value: shared ownership, no conflict.
        apply(
            Some(&a),
            &json!({"metadata": {"name": "x"}, "spec": {"replicas": 2}}),
            "b",
            false,
            "v1",
            "",
            true,
        )
        .unwrap();
        let forced = apply(
            Some(&a),
            &json!({"metadata": {"name": "x"}, "spec": {"replicas": 3}}),
            "b",
            true,
            "v1",
            "",
            true,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        // Dropping a field from the config removes it.
        let dropped = apply(
            Some(&forced),
            &json!({"metadata": {"name": "x"}}),
            "b",
            false,
            "v1",
            "",
            true,
        )
        .unwrap();
        assert!(dropped["spec"].get("replicas").is_none(), "{dropped}");
    }
}
