//! CRD structural schemas: defaulting, pruning of unknown fields, and
//! validation of types, required fields, enums, patterns and bounds.

use serde_json::{Map, Value};

/// A validation failure: (field path, cause reason, message).
pub type Cause = (String, String, String);

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn props(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Fill in `default`s from the schema, recursively.
pub fn apply_defaults(v: &mut Value, schema: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(ps) = props(schema) {
                for (k, ps_k) in ps {
                    if !m.contains_key(k)
                        && let Some(d) = ps_k.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = m.get_mut(k) {
                        apply_defaults(child, ps_k);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in m.values_mut() {
                    apply_defaults(child, ap);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for child in a {
                    apply_defaults(child, items);
                }
            }
        }
        _ => {}
    }
}

/// Remove fields the schema does not know; their paths go to `unknown`.
pub fn prune(v: &mut Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if preserves(schema) && props(schema).is_none() {
                return;
            }
            if let Some(ps) = props(schema) {
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    match ps.get(&k) {
                        Some(ks) => {
                            if let Some(child) = m.get_mut(&k) {
                                prune(child, ks, &join(path, &k), unknown);
                            }
                        }
                        None if preserves(schema) => {}
                        None => {
                            m.remove(&k);
                            unknown.push(join(path, &k));
                        }
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in m.iter_mut() {
                    prune(child, ap, &join(path, k), unknown);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for (i, child) in a.iter_mut().enumerate() {
                    prune(child, items, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

/// RFC 3339 date-time, as the real server's `date-time` format accepts
/// (`2026-12-24T00:00:00+01:00`, `…Z`, fractional seconds, `t`/`z` in lower case),
/// over its whole range: years 0000 to 9999 with any offset, so
/// `9999-12-31T23:59:59Z` passes the format (a `Timestamp` cannot hold it; range
/// limits are the CRD's own CEL rules, as on the real server).
fn is_date_time(s: &str) -> bool {
    let (local, offset) = if let Some(local) = s.strip_suffix(['Z', 'z']) {
        (local, None)
    } else {
        match s.len().checked_sub(6).and_then(|i| s.split_at_checked(i)) {
            Some((local, offset)) => (local, Some(offset)),
            None => return false,
        }
    };
    let offset_ok = offset.is_none_or(|o| {
        let b = o.as_bytes();
        matches!(b[0], b'+' | b'-')
            && b[3] == b':'
            && [1, 2, 4, 5].iter().all(|&i| b[i].is_ascii_digit())
            && o[1..3].parse::<u8>().is_ok_and(|h| h < 24)
            && o[4..6].parse::<u8>().is_ok_and(|m| m < 60)
    });
    offset_ok
        && local.len() >= 19
        && local
            .as_bytes()
            .get(10)
            .is_some_and(|c| matches!(c, b'T' | b't'))
        && local.as_bytes()[..19]
            .iter()
            .enumerate()
            .all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => true,
                13 | 16 => *c == b':',
                _ => c.is_ascii_digit(),
            })
        && local[19..]
            .strip_prefix('.')
            .map_or(local.len() == 19, |f| {
                !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit())
            })
        && format!("{}T{}", &local[..10], &local[11..19])
            .parse::<jiff::civil::DateTime>()
            .is_ok()
}

/// Whether an integer fits the integer `format` (int32, uint32, int64, uint64);
/// other formats (float, double, unknown) are not range-checked.
fn in_format_range(n: &serde_json::Number, format: &str) -> bool {
    let Some(i) = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)) else {
        return !matches!(format, "int32" | "uint32" | "int64" | "uint64");
    };
    match format {
        "int32" => i32::try_from(i).is_ok(),
        "uint32" => u32::try_from(i).is_ok(),
        "int64" => i64::try_from(i).is_ok(),
        "uint64" => u64::try_from(i).is_ok(),
        _ => true,
    }
}

/// Validate `v` against `schema`; causes are appended to `out`.
pub fn validate(v: &Value, schema: &Value, path: &str, out: &mut Vec<Cause>) {
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true)
            && schema.get("type").is_some()
        {
            out.push((
                path.into(),
                "FieldValueTypeInvalid".into(),
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    schema["type"].as_str().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !matches!(type_name(v), "integer" | "string") {
            out.push((
                path.into(),
                "FieldValueTypeInvalid".into(),
                format!(
                    "Invalid value: {}: {path} in body must be of type integer or string: {}",
                    short(v),
                    short(v)
                ),
            ));
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == t || (t == "number" && actual == "integer");
        if !ok {
            out.push((
                path.into(),
                "FieldValueTypeInvalid".into(),
                format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {t}: \"{actual}\""
                ),
            ));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        let allowed: Vec<String> = e.iter().map(short).collect();
        out.push((
            path.into(),
            "FieldValueNotSupported".into(),
            format!(
                "Unsupported value: {}: supported values: {}",
                short(v),
                allowed.join(", ")
            ),
        ));
    }
    match v {
        Value::String(s) => {
            if let Some(p) = schema.get("pattern").and_then(Value::as_str)
                && let Ok(re) = regex::Regex::new(p)
                && !re.is_match(s)
            {
                out.push((
                    path.into(),
                    "FieldValueInvalid".into(),
                    format!("Invalid value: {s:?}: {path} in body should match '{p}'"),
                ));
            }
            if schema.get("format").and_then(Value::as_str) == Some("date-time") && !is_date_time(s)
            {
                out.push((
                    path.into(),
                    "FieldValueInvalid".into(),
                    format!(
                        "Invalid value: {s:?}: {path} in body must be of type date-time: {s:?}"
                    ),
                ));
            }
            let len = s.chars().count() as u64;
            if let Some(m) = schema.get("maxLength").and_then(Value::as_u64)
                && len > m
            {
                out.push((
                    path.into(),
                    "FieldValueTooLong".into(),
                    format!("Too long: may not be more than {m} bytes"),
                ));
            }
            if let Some(m) = schema.get("minLength").and_then(Value::as_u64)
                && len < m
            {
                out.push((
                    path.into(),
                    "FieldValueInvalid".into(),
                    format!(
                        "Invalid value: {s:?}: {path} in body should be at least {m} chars long"
                    ),
                ));
            }
        }
        Value::Number(n) => {
            if let Some(f) = schema.get("format").and_then(Value::as_str)
                && !in_format_range(n, f)
            {
                out.push((
                    path.into(),
                    "FieldValueInvalid".into(),
                    format!("Invalid value: {n}: {path} in body must be of type {f}: \"{n}\""),
                ));
            }
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(m) = schema.get("minimum").and_then(Value::as_f64)
                && x < m
            {
                out.push((
                    path.into(),
                    "FieldValueInvalid".into(),
                    format!(
                        "Invalid value: {n}: {path} in body should be greater than or equal to {m}"
                    ),
                ));
            }
            if let Some(m) = schema.get("maximum").and_then(Value::as_f64)
                && x > m
            {
                out.push((
                    path.into(),
                    "FieldValueInvalid".into(),
                    format!(
                        "Invalid value: {n}: {path} in body should be less than or equal to {m}"
                    ),
                ));
            }
        }
        Value::Array(a) => {
            if let Some(m) = schema.get("maxItems").and_then(Value::as_u64)
                && a.len() as u64 > m
            {
                out.push((
                    path.into(),
                    "FieldValueTooMany".into(),
                    format!("Too many: {}: must have at most {m} items", a.len()),
                ));
            }
            if let Some(m) = schema.get("minItems").and_then(Value::as_u64)
                && (a.len() as u64) < m
            {
                out.push((
                    path.into(),
                    "FieldValueInvalid".into(),
                    format!(
                        "Invalid value: {}: {path} in body should have at least {m} items",
                        a.len()
                    ),
                ));
            }
            if let Some(items) = schema.get("items") {
                for (i, child) in a.iter().enumerate() {
                    validate(child, items, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(m) => {
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        out.push((
                            join(path, r),
                            "FieldValueRequired".into(),
                            "Required value".into(),
                        ));
                    }
                }
            }
            if let Some(ps) = props(schema) {
                for (k, child) in m {
                    if let Some(ks) = ps.get(k) {
                        validate(child, ks, &join(path, k), out);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in m {
                    validate(child, ap, &join(path, k), out);
                }
            }
        }
        _ => {}
    }
}

/// Default, prune and validate a custom object (metadata and type meta are
/// left alone). Returns unknown field paths and validation causes.
pub fn process(obj: &mut Value, schema: &Value) -> (Vec<String>, Vec<Cause>) {
    let mut unknown = Vec::new();
    let mut causes = Vec::new();
    let Some(m) = obj.as_object_mut() else {
        return (
            unknown,
            vec![(
                String::new(),
                "FieldValueTypeInvalid".into(),
                "must be an object".into(),
            )],
        );
    };
    let Some(ps) = props(schema) else {
        return (unknown, causes);
    };
    for (k, ks) in ps {
        if k == "metadata" || k == "apiVersion" || k == "kind" {
            continue;
        }
        if !m.contains_key(k)
            && let Some(d) = ks.get("default")
        {
            m.insert(k.clone(), d.clone());
        }
    }
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if k == "metadata" || k == "apiVersion" || k == "kind" {
            continue;
        }
        match ps.get(&k) {
            Some(ks) => {
                if let Some(child) = m.get_mut(&k) {
                    apply_defaults(child, ks);
                    prune(child, ks, &k, &mut unknown);
                    validate(child, ks, &k, &mut causes);
                }
            }
            None if preserves(schema) => {}
            None => {
                m.remove(&k);
                unknown.push(k);
            }
        }
    }
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                causes.push((
                    r.to_string(),
                    "FieldValueRequired".into(),
                    "Required value".into(),
                ));
            }
        }
    }
    (unknown, causes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_prunes_and_validates() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["revision"], "properties": {
            "revision": {"type": "string", "minLength": 1},
            "urgent": {"type": "boolean", "default": false},
            "mode": {"type": "string", "enum": ["A", "B"]}
        }}}});
        let mut o = json!({"spec": {"revision": "r1", "extra": 1}});
        let (unknown, causes) = process(&mut o, &schema);
        assert_eq!(unknown, vec!["spec.extra".to_string()]);
        assert!(causes.is_empty());
        assert_eq!(o["spec"]["urgent"], false);
        let mut bad = json!({"spec": {"urgent": "yes", "mode": "C"}});
        let (_, causes) = process(&mut bad, &schema);
        let fields: Vec<&str> = causes.iter().map(|c| c.0.as_str()).collect();
        assert!(fields.contains(&"spec.revision"));
        assert!(fields.contains(&"spec.urgent"));
        assert!(fields.contains(&"spec.mode"));
    }

    #[test]
    fn formats_are_checked() {
        let schema = json!({"type": "object", "properties": {
            "at": {"type": "string", "format": "date-time"},
            "small": {"type": "integer", "format": "int32"},
            "count": {"type": "integer", "format": "uint32"},
            "big": {"type": "integer", "format": "int64"}
        }});
        let mut out = Vec::new();
        validate(
            &json!({"at": "2026-12-24T00:00:00+01:00", "small": -5, "count": 4294967295u64, "big": i64::MAX}),
            &schema,
            "spec",
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        // The format spans years 0000-9999 whatever the offset.
        for at in [
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00+01:00",
            "2026-12-24t00:00:00.5z",
        ] {
            validate(&json!({"at": at}), &schema, "spec", &mut out);
            assert!(out.is_empty(), "{at}: {out:?}");
        }
        for at in [
            "2026-12-24T00:00:00",
            "2026-12-24T00:00:00+1:00",
            "2026-13-01T00:00:00Z",
            "2026-12-24T00:00:00.Z",
        ] {
            let mut bad = Vec::new();
            validate(&json!({"at": at}), &schema, "spec", &mut bad);
            assert_eq!(bad.len(), 1, "{at} is not a date-time");
        }
        validate(
            &json!({"at": "2026-12-24", "small": 2147483648i64, "count": -1, "big": u64::MAX}),
            &schema,
            "spec",
            &mut out,
        );
        let fields: Vec<&str> = out.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(fields, ["spec.at", "spec.big", "spec.count", "spec.small"]);
        assert_eq!(
            out[0].2,
            "Invalid value: \"2026-12-24\": spec.at in body must be of type date-time: \"2026-12-24\""
        );
        assert_eq!(
            out[3].2,
            "Invalid value: 2147483648: spec.small in body must be of type int32: \"2147483648\""
        );
    }
}
