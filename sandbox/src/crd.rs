//! CustomResourceDefinitions: creating one starts serving its resource.

use serde_json::{Value, json};

use crate::api::{Shared, printer_columns};
use crate::error::ApiError;
use crate::registry::ResourceInfo;
use crate::store::{Change, meta_str};

/// Checks the real server makes before accepting a CRD.
pub fn validate(crd: &Value) -> Result<(), ApiError> {
    let name = meta_str(crd, "name");
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = crd
        .pointer("/spec/names/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut causes = Vec::new();
    if group.is_empty() {
        causes.push((
            "spec.group".into(),
            "FieldValueRequired".into(),
            "Required value".into(),
        ));
    }
    if plural.is_empty() {
        causes.push((
            "spec.names.plural".into(),
            "FieldValueRequired".into(),
            "Required value".into(),
        ));
    }
    if kind.is_empty() {
        causes.push((
            "spec.names.kind".into(),
            "FieldValueRequired".into(),
            "Required value".into(),
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push((
            "metadata.name".into(),
            "FieldValueInvalid".into(),
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = crd
        .pointer("/spec/scope")
        .and_then(Value::as_str)
        .unwrap_or("");
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push((
            "spec.scope".into(),
            "FieldValueNotSupported".into(),
            format!("Unsupported value: {scope:?}: supported values: \"Cluster\", \"Namespaced\""),
        ));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.iter().filter(|v| v["storage"] == true).count() != 1 {
        causes.push((
            "spec.versions".into(),
            "FieldValueInvalid".into(),
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        if let Some(schema) = v.pointer("/schema/openAPIV3Schema") {
            causes.extend(crate::cel::compile_errors(
                schema,
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            causes,
        ))
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Serve the resources of a stored CRD and mark it Established.
pub fn register(sh: &Shared, crd: &Value) {
    let name = meta_str(crd, "name").to_string();
    if crd
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
    {
        return;
    }
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("").to_string();
    let names = &spec["names"];
    let mut infos = Vec::new();
    let mut storage = String::new();
    for v in spec["versions"].as_array().cloned().unwrap_or_default() {
        if v["storage"] == true {
            storage = v["name"].as_str().unwrap_or("").to_string();
        }
        if v["served"] != true {
            continue;
        }
        infos.push(ResourceInfo {
            group: group.clone(),
            version: v["name"].as_str().unwrap_or("").to_string(),
            resource: names["plural"].as_str().unwrap_or("").to_string(),
            singular: names["singular"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| names["kind"].as_str().unwrap_or("").to_lowercase()),
            kind: names["kind"].as_str().unwrap_or("").to_string(),
            namespaced: spec["scope"] == "Namespaced",
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status: v.pointer("/subresources/status").is_some(),
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            crd: Some(name.clone()),
            printer_columns: printer_columns(&v),
            selectable_fields: v["selectableFields"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| {
                            f["jsonPath"]
                                .as_str()
                                .map(|p| p.trim_start_matches('.').to_string())
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    tracing::info!(crd = %name, versions = infos.len(), "serving custom resource");
    sh.registry.set_crd(&name, infos);
    let now = crate::store::now_rfc3339();
    let accepted = names.clone();
    let _ = sh.store.mutate("customresourcedefinitions.apiextensions.k8s.io", "", &name, |cur| {
        let Some(cur) = cur else { return Ok((Change::Keep, ())) };
        let mut n = (**cur).clone();
        let cond = |t: &str, reason: &str, msg: &str| {
            json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": msg})
        };
        let want = json!({
            "conditions": [
                cond("NamesAccepted", "NoConflicts", "no conflicts found"),
                cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "acceptedNames": accepted,
            "storedVersions": [storage],
        });
        // Keep transition times stable when nothing changed.
        let same = n["status"]["acceptedNames"] == want["acceptedNames"]
            && n["status"]["storedVersions"] == want["storedVersions"]
            && n["status"]["conditions"].as_array().is_some_and(|c| c.len() == 2);
        if same {
            return Ok((Change::Keep, ()));
        }
        n["status"] = want;
        Ok((Change::Put(n), ()))
    });
}

/// Stop serving a deleted CRD's resources and drop its objects.
pub fn unregister(sh: &Shared, crd: &Value) {
    let name = meta_str(crd, "name");
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    sh.registry.remove_crd(name);
    sh.store
        .drop_resource(&crate::error::qualified(group, plural));
    tracing::info!(crd = %name, "stopped serving custom resource");
}
