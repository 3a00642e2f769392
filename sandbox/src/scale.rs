//! The `scale` subresource of Deployments, ReplicaSets and StatefulSets
//! (`autoscaling/v1` Scale), as `kubectl scale` and autoscalers use it.

use axum::body::Bytes;
use axum::http::header;
use serde_json::{Value, json};

use crate::api::{Ctx, Target, WriteOpts, finish_write};
use crate::error::ApiError;
use crate::store::{Change, meta_str};

/// Resources that serve `/scale`.
pub fn serves(group: &str, resource: &str) -> bool {
    group == "apps" && matches!(resource, "deployments" | "replicasets" | "statefulsets")
}

/// A label selector in its string form (`app=web,tier in (a,b)`), as
/// `Scale.status.selector` carries it.
fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match e["operator"].as_str().unwrap_or("") {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

/// The Scale view of a workload.
pub fn scale_of(obj: &Value) -> Value {
    let md = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": md["name"],
            "namespace": md["namespace"],
            "uid": md["uid"],
            "resourceVersion": md["resourceVersion"],
            "creationTimestamp": md["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector_string(&obj["spec"]["selector"]),
        },
    })
}

fn apply_patch(ctx: &Ctx, scale: &mut Value, body: &Bytes) -> Result<(), ApiError> {
    let ct = ctx
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let ptype = ct.split(';').next().unwrap_or("").trim();
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    match ptype {
        "application/merge-patch+json" => json_patch::merge(scale, &patch),
        "application/strategic-merge-patch+json" => {
            crate::patch::strategic_merge(scale, &patch).map_err(ApiError::bad_request)?
        }
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(scale, &p)
                .map_err(|e| ApiError::new(422, "Invalid", format!("the patch failed: {e}")))?
        }
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            )));
        }
    }
    Ok(())
}

/// GET, PUT or PATCH `…/NAME/scale`.
pub fn handle(ctx: &Ctx, t: &Target, verb: &str, body: &Bytes) -> Result<Value, ApiError> {
    let info = &t.info;
    let name = t.name.clone().unwrap_or_default();
    let gr = info.gr();
    let current = ctx
        .sh
        .store
        .get(&gr, &t.ns, &name)
        .ok_or_else(|| ApiError::not_found(&info.group, &info.resource, &name))?;
    let mut want = match verb {
        "get" => return Ok(scale_of(&current)),
        "update" => crate::api::parse_body(&ctx.headers, body)?,
        "patch" => {
            let mut s = scale_of(&current);
            apply_patch(ctx, &mut s, body)?;
            s
        }
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    let replicas = match want.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .filter(|r| (0..=i64::from(i32::MAX)).contains(r))
            .ok_or_else(|| {
                ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    &name,
                    vec![(
                        "spec.replicas".into(),
                        "FieldValueInvalid".into(),
                        format!("Invalid value: {v}: must be greater than or equal to 0"),
                    )],
                )
            })?,
    };
    let want_rv = meta_str(&want, "resourceVersion").to_string();
    if let Some(m) = want.as_object_mut() {
        m.clear();
    }
    let opts = WriteOpts {
        sub: String::new(),
        manager: Some(ctx.manager()),
        validation: "Ignore".into(),
        apply: false,
    };
    let dry_run = ctx.dry_run();
    let mut warnings = Vec::new();
    let (stored, dry) = ctx.sh.store.mutate(&gr, &t.ns, &name, |cur| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(&info.group, &info.resource, &name));
        };
        if !want_rv.is_empty() && want_rv != meta_str(cur, "resourceVersion") {
            return Err(ApiError::stale(&info.group, &info.resource, &name));
        }
        let mut next = (**cur).clone();
        next["spec"]["replicas"] = json!(replicas);
        match finish_write(info, Some(cur), next, &opts, &mut warnings)? {
            Change::Put(v) if dry_run => Ok((Change::Keep, Some(v))),
            c => Ok((c, None)),
        }
    })?;
    let out = match (dry, stored) {
        (Some(v), _) => v,
        (None, Some(s)) => (*s).clone(),
        (None, None) => return Err(ApiError::not_found(&info.group, &info.resource, &name)),
    };
    Ok(scale_of(&out))
}
