//! CEL validation rules of CRD schemas (`x-kubernetes-validations`), evaluated
//! server-side with the engine kube-rs uses (`kube-cel` over the `cel` crate).
//!
//! Rules run after the structural schema accepted the object (as the real
//! server, whose CEL step follows the OpenAPI checks), with `self` bound at each
//! schema node and `oldSelf` on updates (transition rules are skipped on create
//! unless `optionalOldSelf: true`). Failures become the causes the real server
//! answers: `Invalid value: "string": <message>` (or `Forbidden: …`,
//! `Required value: …`, `Duplicate value: …` for a rule's `reason`).
//!
//! Bound: the real server meters each evaluation against a cost budget; this
//! emulator does not. Instead, an object is evaluated only when its JSON is at
//! most [`MAX_EVALUATED_BYTES`] (the real server's request size limit) and has
//! passed the schema's `maxItems`/`maxLength` bounds, and CEL (no loops
//! besides comprehensions over the input, parser depth limited) then finishes
//! in time polynomial in that bounded input.

use serde_json::Value;

use crate::error::ApiError;
use crate::registry::ResourceInfo;
use crate::schema::Cause;

/// Objects larger than this (serialized JSON) are refused before CEL runs
/// (413), as the real server refuses request bodies above 3 MiB.
pub const MAX_EVALUATED_BYTES: usize = 3 * 1024 * 1024;

thread_local! {
    static VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
}

/// Whether a schema carries any CEL rule (then objects need evaluation).
pub fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => {
            m.get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
                || m.values().any(has_rules)
        }
        Value::Array(a) => a.iter().any(has_rules),
        _ => false,
    }
}

/// Copy of `v` without object members whose value is null: the real server
/// does not evaluate rules on null values (nor below them).
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The schema node at a field path such as `spec.blackouts[0].end`.
fn schema_at<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = schema;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            cur = match cur.get("properties").and_then(|p| p.get(name)) {
                Some(s) => s,
                None => cur.get("additionalProperties").filter(|a| a.is_object())?,
            };
        }
        for _ in indexes.matches('[') {
            cur = cur.get("items")?;
        }
    }
    Some(cur)
}

fn value_at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = part.find('[') {
            if i > 0 {
                cur = cur.get(&part[..i])?;
            }
            rest = &part[i..];
            for idx in rest.split('[').filter(|s| !s.is_empty()) {
                let n: usize = idx.trim_end_matches(']').parse().ok()?;
                cur = cur.get(n)?;
            }
        } else {
            cur = cur.get(rest)?;
        }
    }
    Some(cur)
}

/// The type the real server names in `Invalid value: "<type>"`: the schema's
/// type, or for int-or-string fields the value's own.
fn type_at(schema: &Value, obj: &Value, path: &str) -> String {
    if let Some(t) = schema_at(schema, path)
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
    {
        return t.to_string();
    }
    match value_at(obj, path) {
        Some(Value::String(_)) => "string",
        Some(Value::Number(n)) if n.is_f64() => "number",
        Some(Value::Number(_)) => "integer",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Array(_)) => "array",
        _ => "object",
    }
    .to_string()
}

/// Evaluate the schema's CEL rules on `obj` (with `old` on updates).
/// Returns the causes of a 422; an object too large to evaluate is a 413.
pub fn validate(
    info: &ResourceInfo,
    schema: &Value,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Vec<Cause>, ApiError> {
    if !has_rules(schema) {
        return Ok(Vec::new());
    }
    let size = serde_json::to_vec(obj).map(|b| b.len()).unwrap_or(0);
    if size > MAX_EVALUATED_BYTES {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_EVALUATED_BYTES}"),
        ));
    }
    let cur = without_nulls(obj);
    let prev = old.map(without_nulls);
    let root = kube_cel::RootContext {
        api_version: info.api_version(),
        api_group: info.group.clone(),
        kind: info.kind.clone(),
    };
    let result =
        VALIDATOR.with(|v| v.validate_with_context(schema, &cur, prev.as_ref(), Some(&root)));
    let Err(errors) = result else {
        return Ok(Vec::new());
    };
    Ok(errors
        .into_vec()
        .into_iter()
        // Ratcheting, as the real server since 1.33 (CRDValidationRatcheting):
        // on an update, a rule without oldSelf that fails on a value the update
        // leaves unchanged is not an error, so an object stored under an older
        // CRD can still have its status written.
        .filter(|e| {
            let Some(old) = old else { return true };
            let transition = schema_at(schema, &e.field_path)
                .and_then(|s| s.get("x-kubernetes-validations"))
                .and_then(Value::as_array)
                .is_some_and(|rules| {
                    rules
                        .iter()
                        .any(|r| r["rule"].as_str().is_some_and(|t| t.contains("oldSelf")))
                });
            transition || value_at(obj, &e.field_path) != value_at(old, &e.field_path)
        })
        .map(|e| {
            let path = e.field_path.clone();
            let ty = type_at(schema, obj, &path);
            let reason = e.reason.as_deref().unwrap_or("FieldValueInvalid");
            let message = match reason {
                "FieldValueForbidden" => format!("Forbidden: {}", e.message),
                "FieldValueRequired" => format!("Required value: {}", e.message),
                "FieldValueDuplicate" => format!("Duplicate value: {ty:?}"),
                _ => format!("Invalid value: {ty:?}: {}", e.message),
            };
            let reason = match reason {
                "FieldValueForbidden" | "FieldValueRequired" | "FieldValueDuplicate" => reason,
                _ => "FieldValueInvalid",
            };
            (path, reason.to_string(), message)
        })
        .collect())
}

/// Rules of a CRD version's schema that do not compile, as causes for
/// refusing the CRD (the real server checks them when the CRD is written).
pub fn compile_errors(schema: &Value, base: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    collect_compile_errors(schema, base, &mut out, 0);
    out
}

fn collect_compile_errors(schema: &Value, path: &str, out: &mut Vec<Cause>, depth: usize) {
    if depth > 64 {
        return;
    }
    let Some(m) = schema.as_object() else { return };
    if let Some(rules) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
        for (i, r) in rules.iter().enumerate() {
            let Some(rule) = r.get("rule").and_then(Value::as_str) else {
                out.push((
                    format!("{path}.x-kubernetes-validations[{i}].rule"),
                    "FieldValueRequired".into(),
                    "Required value".into(),
                ));
                continue;
            };
            if let Err(e) = kube_cel::cel::Program::compile(rule) {
                out.push((
                    format!("{path}.x-kubernetes-validations[{i}].rule"),
                    "FieldValueInvalid".into(),
                    format!("Invalid value: {rule:?}: compilation failed: {e}"),
                ));
            }
        }
    }
    if let Some(ps) = m.get("properties").and_then(Value::as_object) {
        for (k, s) in ps {
            collect_compile_errors(s, &format!("{path}.properties[{k}]"), out, depth + 1);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(s) = m.get(key).filter(|s| s.is_object()) {
            collect_compile_errors(s, &format!("{path}.{key}"), out, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info() -> ResourceInfo {
        ResourceInfo {
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            ..Default::default()
        }
    }

    #[test]
    fn failing_rule_is_a_cause_with_the_schema_type() -> Result<(), ApiError> {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "size": {"type": "string", "x-kubernetes-validations": [{"rule": "self != 'big'", "message": "no big ones"}]},
            "count": {"type": "integer", "x-kubernetes-validations": [{"rule": "self < 5", "message": "too many", "reason": "FieldValueForbidden"}]}
        }}}});
        let bad = json!({"spec": {"size": "big", "count": 9}});
        let mut causes = validate(&info(), &schema, &bad, None)?;
        causes.sort();
        assert_eq!(
            causes,
            vec![
                (
                    "spec.count".to_string(),
                    "FieldValueForbidden".to_string(),
                    "Forbidden: too many".to_string()
                ),
                (
                    "spec.size".to_string(),
                    "FieldValueInvalid".to_string(),
                    "Invalid value: \"string\": no big ones".to_string()
                ),
            ]
        );
        let good = json!({"spec": {"size": "small", "count": 1}});
        assert!(validate(&info(), &schema, &good, None)?.is_empty());
        Ok(())
    }

    #[test]
    fn transition_rules_need_an_old_object() -> Result<(), ApiError> {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "mode": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "mode is immutable"}]}
        }}}});
        let a = json!({"spec": {"mode": "a"}});
        let b = json!({"spec": {"mode": "b"}});
        assert!(validate(&info(), &schema, &b, None)?.is_empty());
        assert!(validate(&info(), &schema, &a, Some(&a))?.is_empty());
        let causes = validate(&info(), &schema, &b, Some(&a))?;
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].0, "spec.mode");
        Ok(())
    }

    #[test]
    fn an_unchanged_invalid_value_is_ratcheted_on_update() -> Result<(), ApiError> {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "size": {"type": "string", "x-kubernetes-validations": [{"rule": "self != 'big'", "message": "no big ones"}]}
            }},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }});
        let stored = json!({"spec": {"size": "big"}});
        let status_write = json!({"spec": {"size": "big"}, "status": {"phase": "Halted"}});
        assert!(validate(&info(), &schema, &status_write, Some(&stored))?.is_empty());
        // Created, or changed to another bad value, it is still refused.
        assert_eq!(validate(&info(), &schema, &status_write, None)?.len(), 1);
        let other = json!({"spec": {"size": "small"}});
        assert_eq!(validate(&info(), &schema, &stored, Some(&other))?.len(), 1);
        Ok(())
    }

    #[test]
    fn null_values_are_not_evaluated() -> Result<(), ApiError> {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "n": {"nullable": true, "x-kubernetes-int-or-string": true,
                  "x-kubernetes-validations": [{"rule": "string(self) != '0'", "message": "not zero"}]}
        }}}});
        assert!(validate(&info(), &schema, &json!({"spec": {"n": null}}), None)?.is_empty());
        let causes = validate(&info(), &schema, &json!({"spec": {"n": 0}}), None)?;
        assert_eq!(
            causes,
            vec![(
                "spec.n".to_string(),
                "FieldValueInvalid".to_string(),
                "Invalid value: \"integer\": not zero".to_string()
            )]
        );
        Ok(())
    }

    #[test]
    fn oversized_objects_are_refused_before_evaluation() {
        let schema = json!({"type": "object", "x-kubernetes-validations": [{"rule": "true"}]});
        let big = json!({"data": "x".repeat(MAX_EVALUATED_BYTES + 1)});
        assert_eq!(
            validate(&info(), &schema, &big, None).map_err(|e| e.code),
            Err(413)
        );
    }

    #[test]
    fn rules_that_do_not_compile_are_reported() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.a >"}, {"rule": "has(self.a)"}]}}});
        let causes = compile_errors(&schema, "spec.versions[0].schema.openAPIV3Schema");
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].0,
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
        );
    }
}
