//! Protobuf bodies (`application/vnd.kubernetes.protobuf`) for the built-in
//! kinds, converted at the edge so the store stays JSON.
//!
//! The wire form is the real server's: the magic `k8s\0`, then a
//! `runtime.Unknown` (k8s-pb's message) whose `raw` is the object's message.
//! Objects are converted field by field with the table in `k8s-messages.txt`,
//! generated from k8s-pb's message definitions (tags, wire types, nested
//! messages) and k8s-openapi's JSON names (see `tests/protobuf_table.rs`).
//! The types whose JSON form is not their message (`Time`, `MicroTime`,
//! `Quantity`, `IntOrString`, `RawExtension`, `FieldsV1`, inline embedded
//! structs, bytes as base64) are special-cased as the real server's codecs do.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use base64::Engine;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\x00";
/// Nesting bound for hostile input (the real objects nest far less).
const MAX_DEPTH: usize = 64;

#[derive(Debug)]
struct Field {
    tag: u32,
    json: String,
    kind: String,
    repeated: bool,
    message: Option<String>,
}

type Table = HashMap<String, Vec<Field>>;

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut t: Table = HashMap::new();
        let mut cur: Option<String> = None;
        for line in include_str!("k8s-messages.txt").lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some(m) = line.strip_prefix("message ") {
                t.insert(m.to_string(), Vec::new());
                cur = Some(m.to_string());
                continue;
            }
            let parts: Vec<&str> = line.split(' ').collect();
            let (Some(m), [tag, json, kind, rest @ ..]) = (&cur, parts.as_slice()) else {
                continue;
            };
            let Ok(tag) = tag.parse() else { continue };
            let repeated = rest.first() == Some(&"repeated");
            let message = rest
                .last()
                .filter(|r| r.contains('.'))
                .map(|s| s.to_string());
            if let Some(fields) = t.get_mut(m) {
                fields.push(Field {
                    tag,
                    json: json.to_string(),
                    kind: kind.to_string(),
                    repeated,
                    message,
                });
            }
        }
        t
    })
}

/// The message of a kind in an apiVersion, when the table has it.
pub fn message_for(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let name = match (group, kind) {
        ("", "Status" | "DeleteOptions") | ("meta.k8s.io", _) => {
            format!("io.k8s.apimachinery.pkg.apis.meta.{version}.{kind}")
        }
        ("", _) => format!("io.k8s.api.core.{version}.{kind}"),
        _ => {
            let pkg = group.split('.').next().unwrap_or(group);
            format!("io.k8s.api.{pkg}.{version}.{kind}")
        }
    };
    table().contains_key(&name).then_some(name)
}

/// Whether the first media type of an `Accept` header is protobuf.
pub fn wants_protobuf(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .map(|m| m.split(';').next().unwrap_or("").trim())
        == Some(MEDIA_TYPE)
        && !accept.split(',').next().unwrap_or("").contains("as=")
}

fn bad(what: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "the protobuf body could not be decoded: {what}; send application/json instead"
    ))
}

// ---------------------------------------------------------------------------
// Wire reading

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&byte, rest) = self
                .b
                .split_first()
                .ok_or_else(|| bad("truncated varint"))?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        if n > self.b.len() {
            return Err(bad("truncated field"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    /// (tag, wire type, payload): varints and fixed values as their bytes'
    /// integer, length-delimited ones as a slice.
    fn field(&mut self) -> Result<(u32, u8, u64, &'a [u8]), ApiError> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| bad("field number out of range"))?;
        let wt = (key & 7) as u8;
        match wt {
            0 => Ok((tag, wt, self.varint()?, &[])),
            1 => {
                let s = self.take(8)?;
                Ok((
                    tag,
                    wt,
                    u64::from_le_bytes(s.try_into().unwrap_or_default()),
                    &[],
                ))
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| bad("length out of range"))?;
                Ok((tag, wt, 0, self.take(n)?))
            }
            5 => {
                let s = self.take(4)?;
                let v = u32::from_le_bytes(s.try_into().unwrap_or_default());
                Ok((tag, wt, u64::from(v), &[]))
            }
            _ => Err(bad(format!("unsupported wire type {wt}"))),
        }
    }
}

fn text(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("a string is not UTF-8"))
}

fn rfc3339(seconds: i64, nanos: i64, micro: bool) -> Value {
    let Ok(ts) = jiff::Timestamp::new(seconds, if micro { nanos as i32 } else { 0 }) else {
        return Value::Null;
    };
    if micro {
        json!(format!("{}", ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")))
    } else {
        json!(format!("{}", ts.strftime("%Y-%m-%dT%H:%M:%SZ")))
    }
}

/// A special message's JSON form, or None for ordinary messages.
fn special_decode(msg: &str, b: &[u8]) -> Result<Option<Value>, ApiError> {
    let short = msg.rsplit('.').next().unwrap_or("");
    let known = matches!(
        msg,
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
            | "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"
            | "io.k8s.apimachinery.pkg.api.resource.Quantity"
            | "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
            | "io.k8s.apimachinery.pkg.runtime.RawExtension"
            | "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1"
    );
    if !known {
        return Ok(None);
    }
    let mut r = Reader { b };
    let mut f: HashMap<u32, (u64, Vec<u8>)> = HashMap::new();
    while !r.b.is_empty() {
        let (tag, _, n, s) = r.field()?;
        f.insert(tag, (n, s.to_vec()));
    }
    let num = |t: u32| f.get(&t).map(|x| x.0 as i64).unwrap_or(0);
    let bytes = |t: u32| f.get(&t).map(|x| x.1.clone()).unwrap_or_default();
    Ok(Some(match short {
        "Time" => rfc3339(num(1), 0, false),
        "MicroTime" => rfc3339(num(1), num(2), true),
        "Quantity" => json!(text(&bytes(1))?),
        "IntOrString" => {
            if num(1) == 1 {
                json!(text(&bytes(3))?)
            } else {
                json!(num(2) as i32)
            }
        }
        _ => {
            let raw = bytes(1);
            if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&raw).map_err(|e| bad(format!("embedded JSON: {e}")))?
            }
        }
    }))
}

fn scalar(kind: &str, wt: u8, n: u64, s: &[u8]) -> Result<Value, ApiError> {
    Ok(match (kind, wt) {
        ("string", 2) => json!(text(s)?),
        ("bytes", 2) => json!(base64::engine::general_purpose::STANDARD.encode(s)),
        ("bool", 0) => json!(n != 0),
        ("int64", 0) => json!(n as i64),
        ("int32", 0) => json!(n as i64 as i32),
        ("double", 1) => json!(f64::from_bits(n)),
        ("float", 5) => json!(f32::from_bits(n as u32)),
        _ => return Err(bad(format!("field of kind {kind} has wire type {wt}"))),
    })
}

fn decode_message(msg: &str, b: &[u8], depth: usize) -> Result<Value, ApiError> {
    if depth > MAX_DEPTH {
        return Err(bad("nested too deeply"));
    }
    if let Some(v) = special_decode(msg, b)? {
        return Ok(v);
    }
    let fields = table()
        .get(msg)
        .ok_or_else(|| bad(format!("no message {msg}")))?;
    let mut out = Map::new();
    let mut r = Reader { b };
    while !r.b.is_empty() {
        let (tag, wt, n, s) = r.field()?;
        let Some(f) = fields.iter().find(|f| f.tag == tag) else {
            continue;
        };
        let v = match f.kind.as_str() {
            "message" | "inline" => {
                let m = f.message.as_deref().unwrap_or("");
                decode_message(m, s, depth + 1)?
            }
            k if k.starts_with("map:") => {
                let mut er = Reader { b: s };
                let (mut key, mut val) = (String::new(), Value::Null);
                while !er.b.is_empty() {
                    let (t, ewt, en, es) = er.field()?;
                    match t {
                        1 => key = text(es)?,
                        2 => {
                            val = match (&k[4..], &f.message) {
                                ("message", Some(m)) => decode_message(m, es, depth + 1)?,
                                (vk, _) => scalar(vk, ewt, en, es)?,
                            }
                        }
                        _ => {}
                    }
                }
                let entry = out.entry(f.json.clone()).or_insert_with(|| json!({}));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(key, val);
                }
                continue;
            }
            k if wt == 2 && f.repeated && k != "string" && k != "bytes" => {
                // Packed scalars.
                let mut pr = Reader { b: s };
                let entry = out.entry(f.json.clone()).or_insert_with(|| json!([]));
                while !pr.b.is_empty() {
                    let x = pr.varint()?;
                    if let Some(a) = entry.as_array_mut() {
                        a.push(scalar(k, 0, x, &[])?);
                    }
                }
                continue;
            }
            k => scalar(k, wt, n, s)?,
        };
        if f.kind == "inline" {
            if let Value::Object(m) = v {
                out.extend(m);
            }
        } else if f.repeated {
            let entry = out.entry(f.json.clone()).or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.push(v);
            }
        } else {
            out.insert(f.json.clone(), v);
        }
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------
// Wire writing

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_key(out: &mut Vec<u8>, tag: u32, wt: u8) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(wt));
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    put_key(out, tag, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn type_err(json: &str, want: &str) -> ApiError {
    ApiError::internal(format!(
        "cannot encode field {json} as protobuf: expected {want}"
    ))
}

fn put_scalar(
    out: &mut Vec<u8>,
    tag: u32,
    kind: &str,
    v: &Value,
    name: &str,
) -> Result<(), ApiError> {
    match kind {
        "string" => put_bytes(
            out,
            tag,
            v.as_str()
                .ok_or_else(|| type_err(name, "a string"))?
                .as_bytes(),
        ),
        "bytes" => {
            let s = v
                .as_str()
                .ok_or_else(|| type_err(name, "a base64 string"))?;
            let b = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| type_err(name, "base64"))?;
            put_bytes(out, tag, &b);
        }
        "bool" => {
            put_key(out, tag, 0);
            put_varint(
                out,
                u64::from(v.as_bool().ok_or_else(|| type_err(name, "a boolean"))?),
            );
        }
        "int64" | "int32" => {
            let i = v.as_i64().ok_or_else(|| type_err(name, "an integer"))?;
            put_key(out, tag, 0);
            put_varint(out, i as u64);
        }
        "double" => {
            put_key(out, tag, 1);
            out.extend_from_slice(
                &v.as_f64()
                    .ok_or_else(|| type_err(name, "a number"))?
                    .to_le_bytes(),
            );
        }
        "float" => {
            put_key(out, tag, 5);
            out.extend_from_slice(
                &(v.as_f64().ok_or_else(|| type_err(name, "a number"))? as f32).to_le_bytes(),
            );
        }
        other => return Err(type_err(name, other)),
    }
    Ok(())
}

fn special_encode(msg: &str, v: &Value) -> Result<Option<Vec<u8>>, ApiError> {
    let mut out = Vec::new();
    match msg.rsplit('.').next().unwrap_or("") {
        "Time" | "MicroTime" if msg.starts_with("io.k8s.apimachinery.pkg.apis.meta.v1.") => {
            let s = v.as_str().ok_or_else(|| type_err(msg, "a timestamp"))?;
            let ts: jiff::Timestamp = s
                .parse()
                .map_err(|_| type_err(msg, "an RFC 3339 timestamp"))?;
            put_key(&mut out, 1, 0);
            put_varint(&mut out, ts.as_second() as u64);
            if msg.ends_with("MicroTime") {
                put_key(&mut out, 2, 0);
                put_varint(&mut out, u64::from(ts.subsec_nanosecond().unsigned_abs()));
            }
        }
        "Quantity" if msg.starts_with("io.k8s.apimachinery.pkg.api.resource.") => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(type_err(msg, "a quantity")),
            };
            put_bytes(&mut out, 1, s.as_bytes());
        }
        "IntOrString" if msg.starts_with("io.k8s.apimachinery.pkg.util.intstr.") => match v {
            Value::String(s) => {
                put_key(&mut out, 1, 0);
                put_varint(&mut out, 1);
                put_bytes(&mut out, 3, s.as_bytes());
            }
            _ => {
                let i = v
                    .as_i64()
                    .ok_or_else(|| type_err(msg, "an integer or a string"))?;
                put_key(&mut out, 1, 0);
                put_varint(&mut out, 0);
                put_key(&mut out, 2, 0);
                put_varint(&mut out, i as u64);
            }
        },
        "RawExtension" | "FieldsV1" => {
            let raw = serde_json::to_vec(v).map_err(|e| ApiError::internal(e.to_string()))?;
            put_bytes(&mut out, 1, &raw);
        }
        _ => return Ok(None),
    }
    Ok(Some(out))
}

fn encode_message(msg: &str, v: &Value, depth: usize) -> Result<Vec<u8>, ApiError> {
    if depth > MAX_DEPTH {
        return Err(ApiError::internal("object nested too deeply for protobuf"));
    }
    if let Some(b) = special_encode(msg, v)? {
        return Ok(b);
    }
    let fields = table()
        .get(msg)
        .ok_or_else(|| ApiError::internal(format!("no protobuf message {msg}")))?;
    let obj = v.as_object().ok_or_else(|| type_err(msg, "an object"))?;
    let mut out = Vec::new();
    for f in fields {
        if f.kind == "inline" {
            let m = f.message.as_deref().unwrap_or("");
            put_bytes(&mut out, f.tag, &encode_message(m, v, depth + 1)?);
            continue;
        }
        let Some(x) = obj.get(&f.json).filter(|x| !x.is_null()) else {
            continue;
        };
        if let Some(vk) = f.kind.strip_prefix("map:") {
            let m = x
                .as_object()
                .ok_or_else(|| type_err(&f.json, "an object"))?;
            for (k, val) in m {
                let mut entry = Vec::new();
                put_bytes(&mut entry, 1, k.as_bytes());
                match (vk, &f.message) {
                    ("message", Some(mm)) => {
                        put_bytes(&mut entry, 2, &encode_message(mm, val, depth + 1)?)
                    }
                    _ => put_scalar(&mut entry, 2, vk, val, &f.json)?,
                }
                put_bytes(&mut out, f.tag, &entry);
            }
            continue;
        }
        let items: Vec<&Value> = if f.repeated {
            x.as_array()
                .ok_or_else(|| type_err(&f.json, "an array"))?
                .iter()
                .collect()
        } else {
            vec![x]
        };
        for item in items {
            match (f.kind.as_str(), &f.message) {
                ("message", Some(m)) => {
                    put_bytes(&mut out, f.tag, &encode_message(m, item, depth + 1)?)
                }
                (k, _) => put_scalar(&mut out, f.tag, k, item, &f.json)?,
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Envelope

/// A protobuf request body as the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("it does not start with the k8s protobuf prefix"))?;
    let unknown = Unknown::decode(rest).map_err(bad)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let msg = message_for(&api_version, &kind).ok_or_else(|| {
        ApiError::unsupported_media_type(format!(
            "the sandbox has no protobuf form for {kind} in {api_version}; send application/json"
        ))
    })?;
    let mut v = decode_message(&msg, unknown.raw.as_deref().unwrap_or_default(), 0)?;
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}

/// The protobuf body of a JSON object whose kind has a message; None for
/// kinds without one (custom resources, tables).
pub fn encode(v: &Value) -> Result<Option<Vec<u8>>, ApiError> {
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    let Some(msg) = message_for(api_version, kind) else {
        return Ok(None);
    };
    let raw = encode_message(&msg, v, 0)?;
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_string()),
            kind: Some(kind.to_string()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    Ok(Some(out))
}

/// Answer in protobuf when the client's `Accept` asks for it first and the
/// JSON answer is a kind with a message; every other answer stays as it is.
pub async fn respond(accept: &str, verb: &str, resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c == "application/json");
    if !wants_protobuf(accept) || verb == "watch" || !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let encoded = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .map(|v| encode(&v));
    match encoded {
        Some(Ok(Some(pb))) => {
            parts
                .headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(pb))
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "answering JSON: the object has no protobuf form");
            Response::from_parts(parts, Body::from(bytes))
        }
        _ => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_types_and_inline_structs_round_trip() -> Result<(), ApiError> {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "creationTimestamp": "2026-01-02T03:04:05Z", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i",
                "resources": {"limits": {"cpu": "500m"}},
                "ports": [{"containerPort": 80}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}],
                "volumes": [{"name": "v", "emptyDir": {}}]}});
        let b = encode(&pod)?.ok_or_else(|| ApiError::internal("no message for Pod"))?;
        assert!(b.starts_with(MAGIC));
        assert_eq!(decode(&b)?, pod);
        Ok(())
    }

    /// A value for every field a schema has (one item per list, one entry
    /// per map), so a round trip shows which fields a conversion loses.
    fn sample(schema: &Value, defs: &Map<String, Value>, depth: usize) -> Option<Value> {
        if depth > 12 {
            return None;
        }
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or("");
            return match name {
                "io.k8s.apimachinery.pkg.apis.meta.v1.Time" => Some(json!("2026-01-02T03:04:05Z")),
                "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => {
                    Some(json!("2026-01-02T03:04:05.123456Z"))
                }
                "io.k8s.apimachinery.pkg.api.resource.Quantity" => Some(json!("1500m")),
                "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => Some(json!("25%")),
                "io.k8s.apimachinery.pkg.runtime.RawExtension" => Some(json!({"a": [1, "b"]})),
                "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1" => {
                    Some(json!({"f:metadata": {"f:labels": {}}}))
                }
                // The one kind embedded whole in another (StatefulSet's
                // volumeClaimTemplates) has its type meta checked.
                "io.k8s.api.core.v1.PersistentVolumeClaim" => {
                    let mut v = sample(defs.get(name)?, defs, depth + 1)?;
                    v["apiVersion"] = json!("v1");
                    v["kind"] = json!("PersistentVolumeClaim");
                    Some(v)
                }
                _ => sample(defs.get(name)?, defs, depth + 1),
            };
        }
        if let Some(one) = schema.get("allOf").and_then(|a| a.get(0)) {
            return sample(one, defs, depth);
        }
        if let Some(e) = schema.get("enum").and_then(|e| e.get(0)) {
            return Some(e.clone());
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => Some(match schema.get("format").and_then(Value::as_str) {
                Some("byte") => json!("aGk="),
                Some("date-time") => json!("2026-01-02T03:04:05Z"),
                _ => json!("s"),
            }),
            Some("integer") => Some(json!(3)),
            Some("number") => Some(json!(1.5)),
            Some("boolean") => Some(json!(true)),
            Some("array") => Some(json!([sample(schema.get("items")?, defs, depth + 1)?])),
            _ => {
                let mut m = Map::new();
                if let Some(ps) = schema.get("properties").and_then(Value::as_object) {
                    for (k, ps_k) in ps {
                        if let Some(v) = sample(ps_k, defs, depth + 1) {
                            m.insert(k.clone(), v);
                        }
                    }
                } else if let Some(ap) =
                    schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    m.insert("k".into(), sample(ap, defs, depth + 1)?);
                }
                Some(Value::Object(m))
            }
        }
    }

    fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let (va, vb) = (
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    );
                    differences(va, vb, &format!("{path}.{k}"), out);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                    differences(va, vb, &format!("{path}[{i}]"), out);
                }
            }
            _ if a != b => out.push(format!("{path}: {a} != {b}")),
            _ => {}
        }
    }

    /// Every field of each kind's k8s-openapi type survives JSON -> protobuf
    /// -> JSON, and the protobuf is what k8s-pb's typed message decodes.
    #[test]
    fn every_field_of_every_kind_round_trips() -> Result<(), Box<dyn std::error::Error>> {
        use k8s_openapi::api::{
            admissionregistration::v1 as adm, apps::v1 as apps, autoscaling::v1 as autoscaling,
            coordination::v1 as coord, core::v1 as core, events::v1 as ev, networking::v1 as net,
            policy::v1 as policy, rbac::v1 as rbac,
        };
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        use k8s_openapi::serde::{Serialize, de::DeserializeOwned};

        fn check<K, P>(
            defs: &mut schemars::SchemaGenerator,
        ) -> Result<usize, Box<dyn std::error::Error>>
        where
            K: k8s_openapi::Resource
                + schemars::JsonSchema
                + Serialize
                + DeserializeOwned
                + PartialEq
                + std::fmt::Debug,
            P: prost::Message + Default,
        {
            let _ = defs.subschema_for::<K>();
            let all: Map<String, Value> = defs
                .definitions()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let name = all
                .keys()
                .find(|k| {
                    k.ends_with(&format!(".{}", K::KIND))
                        && k.contains(&format!(".{}.", K::VERSION))
                        && message_for(K::API_VERSION, K::KIND).as_deref() == Some(k.as_str())
                })
                .cloned()
                .ok_or("no definition")?;
            let mut v = sample(&all[&name], &all, 0).ok_or("no sample")?;
            v["apiVersion"] = json!(K::API_VERSION);
            v["kind"] = json!(K::KIND);
            let typed: K = serde_json::from_value(v).map_err(|e| format!("{}: {e}", K::KIND))?;
            let want = serde_json::to_value(&typed)?;
            let pb = encode(&want)?.ok_or("no protobuf form")?;
            let unknown = Unknown::decode(&pb[MAGIC.len()..])?;
            let raw = unknown.raw.unwrap_or_default();
            let reencoded = P::decode(raw.as_slice())?.encode_to_vec();
            let mut again = pb[..MAGIC.len()].to_vec();
            again.extend(
                Unknown {
                    raw: Some(reencoded),
                    ..Unknown::decode(&pb[MAGIC.len()..])?
                }
                .encode_to_vec(),
            );
            let back: K = serde_json::from_value(decode(&again)?)?;
            let mut diffs = Vec::new();
            differences(&want, &serde_json::to_value(&back)?, "", &mut diffs);
            assert!(diffs.is_empty(), "{} loses {diffs:?}", K::KIND);
            assert_eq!(back, typed);
            Ok(want.to_string().len())
        }

        let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
        use k8s_pb::api as pb;
        let sizes = vec![
            check::<core::Namespace, pb::core::v1::Namespace>(&mut g)?,
            check::<core::Node, pb::core::v1::Node>(&mut g)?,
            check::<core::Pod, pb::core::v1::Pod>(&mut g)?,
            check::<core::Event, pb::core::v1::Event>(&mut g)?,
            check::<core::Secret, pb::core::v1::Secret>(&mut g)?,
            check::<core::ConfigMap, pb::core::v1::ConfigMap>(&mut g)?,
            check::<core::ServiceAccount, pb::core::v1::ServiceAccount>(&mut g)?,
            check::<core::Service, pb::core::v1::Service>(&mut g)?,
            check::<apps::Deployment, pb::apps::v1::Deployment>(&mut g)?,
            check::<apps::ReplicaSet, pb::apps::v1::ReplicaSet>(&mut g)?,
            check::<apps::StatefulSet, pb::apps::v1::StatefulSet>(&mut g)?,
            check::<apps::DaemonSet, pb::apps::v1::DaemonSet>(&mut g)?,
            check::<policy::PodDisruptionBudget, pb::policy::v1::PodDisruptionBudget>(&mut g)?,
            check::<coord::Lease, pb::coordination::v1::Lease>(&mut g)?,
            check::<ev::Event, pb::events::v1::Event>(&mut g)?,
            check::<net::NetworkPolicy, pb::networking::v1::NetworkPolicy>(&mut g)?,
            check::<rbac::ClusterRole, pb::rbac::v1::ClusterRole>(&mut g)?,
            check::<rbac::ClusterRoleBinding, pb::rbac::v1::ClusterRoleBinding>(&mut g)?,
            check::<rbac::Role, pb::rbac::v1::Role>(&mut g)?,
            check::<rbac::RoleBinding, pb::rbac::v1::RoleBinding>(&mut g)?,
            check::<
                adm::ValidatingAdmissionPolicy,
                pb::admissionregistration::v1::ValidatingAdmissionPolicy,
            >(&mut g)?,
            check::<
                adm::ValidatingAdmissionPolicyBinding,
                pb::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
            >(&mut g)?,
            check::<autoscaling::Scale, pb::autoscaling::v1::Scale>(&mut g)?,
        ];
        let _ = meta::Status::default();
        // The samples are rich (a Pod has every field), not empty objects.
        assert!(sizes.iter().all(|s| *s > 200), "{sizes:?}");
        Ok(())
    }

    #[test]
    fn custom_kinds_have_no_protobuf_form() -> Result<(), ApiError> {
        let cr = json!({"apiVersion": "sofort.dev/v1alpha1", "kind": "PatchPolicy"});
        assert!(encode(&cr)?.is_none());
        Ok(())
    }

    #[test]
    fn hostile_bodies_are_refused_not_panicked_on() {
        for body in [
            &b""[..],
            b"k8s\x00\x0a\xff\xff\xff\xff\x0f",
            b"k8s\x00\x0a\x08\x0a\x02v1\x12\x02Pod\x12\x03\x0a\x7f\x00",
            b"{}",
        ] {
            assert!(decode(body).is_err(), "{body:?}");
        }
        assert!(wants_protobuf("application/vnd.kubernetes.protobuf, */*"));
        assert!(!wants_protobuf(
            "application/json, application/vnd.kubernetes.protobuf"
        ));
        assert!(!wants_protobuf(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io"
        ));
    }
}
