//! Protobuf bodies of the few authentication and authorization requests
//! kubectl sends that way (`kubectl auth can-i`, `kubectl create token`,
//! `kubectl auth whoami`), decoded into their JSON form.
//!
//! Kubernetes wraps a protobuf body in an envelope: the magic `k8s\0` and a
//! `runtime.Unknown` whose `raw` field is the object's message.

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use prost::Message;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

/// Any message whose `spec` is field 2 (metadata is 1, status 3).
#[derive(Clone, PartialEq, Message)]
struct WithSpec<S: Message + Default + std::fmt::Debug> {
    #[prost(message, optional, tag = "2")]
    spec: Option<S>,
}

#[derive(Clone, PartialEq, Message)]
struct AccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
    // SubjectAccessReviewSpec: user 3, groups 4, uid 6 (extra 5 is not read).
    #[prost(string, optional, tag = "3")]
    user: Option<String>,
    #[prost(string, repeated, tag = "4")]
    groups: Vec<String>,
    #[prost(string, optional, tag = "6")]
    uid: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceAttributes {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
    #[prost(string, optional, tag = "3")]
    group: Option<String>,
    #[prost(string, optional, tag = "4")]
    version: Option<String>,
    #[prost(string, optional, tag = "5")]
    resource: Option<String>,
    #[prost(string, optional, tag = "6")]
    subresource: Option<String>,
    #[prost(string, optional, tag = "7")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct NonResourceAttributes {
    #[prost(string, optional, tag = "1")]
    path: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct RulesReviewSpec {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TokenRequestSpec {
    #[prost(string, repeated, tag = "1")]
    audiences: Vec<String>,
    #[prost(int64, optional, tag = "4")]
    expiration_seconds: Option<i64>,
    #[prost(message, optional, tag = "3")]
    bound_object_ref: Option<BoundObjectReference>,
}

#[derive(Clone, PartialEq, Message)]
struct BoundObjectReference {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "2")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    uid: Option<String>,
}

/// Put the set string fields into a JSON object.
fn fields(pairs: &[(&str, &Option<String>)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            m.insert((*k).to_string(), json!(v));
        }
    }
    Value::Object(m)
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("cannot decode the protobuf body: {e}"))
}

fn spec_of<S: Message + Default + std::fmt::Debug>(raw: &[u8]) -> Result<S, ApiError> {
    Ok(WithSpec::<S>::decode(raw)
        .map_err(bad)?
        .spec
        .unwrap_or_default())
}

fn decode_protobuf(body: &[u8]) -> Result<Value, ApiError> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("the body does not start with the Kubernetes protobuf magic"))?;
    let unknown = Unknown::decode(inner).map_err(bad)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let spec = match kind.as_str() {
        "SelfSubjectAccessReview" | "SubjectAccessReview" => {
            let s: AccessReviewSpec = spec_of(&raw)?;
            let mut v = json!({});
            if let Some(r) = &s.resource_attributes {
                v["resourceAttributes"] = fields(&[
                    ("namespace", &r.namespace),
                    ("verb", &r.verb),
                    ("group", &r.group),
                    ("version", &r.version),
                    ("resource", &r.resource),
                    ("subresource", &r.subresource),
                    ("name", &r.name),
                ]);
            }
            if let Some(r) = &s.non_resource_attributes {
                v["nonResourceAttributes"] = fields(&[("path", &r.path), ("verb", &r.verb)]);
            }
            if let Some(u) = &s.user {
                v["user"] = json!(u);
                v["groups"] = json!(s.groups);
            }
            if let Some(u) = &s.uid {
                v["uid"] = json!(u);
            }
            v
        }
        "SelfSubjectRulesReview" => {
            let s: RulesReviewSpec = spec_of(&raw)?;
            fields(&[("namespace", &s.namespace)])
        }
        "TokenRequest" => {
            let s: TokenRequestSpec = spec_of(&raw)?;
            let mut v = json!({"audiences": s.audiences});
            if let Some(e) = s.expiration_seconds {
                v["expirationSeconds"] = json!(e);
            }
            if let Some(r) = &s.bound_object_ref {
                v["boundObjectRef"] = fields(&[
                    ("kind", &r.kind),
                    ("apiVersion", &r.api_version),
                    ("name", &r.name),
                    ("uid", &r.uid),
                ]);
            }
            v
        }
        "SelfSubjectReview" => json!({}),
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the sandbox API server does not decode protobuf {other} bodies; send Content-Type: application/json"
            )));
        }
    };
    Ok(json!({
        "apiVersion": tm.api_version.unwrap_or_default(),
        "kind": kind,
        "spec": spec,
    }))
}

/// The body of an authentication or authorization request as JSON,
/// whichever of JSON, YAML or protobuf it came in.
pub fn decode_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if ct.contains("protobuf") {
        return decode_protobuf(body);
    }
    crate::api::parse_body(headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("authorization.k8s.io/v1".into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn an_access_review_decodes_to_its_json_form() -> Result<(), ApiError> {
        let spec = AccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some("shop".into()),
                verb: Some("list".into()),
                resource: Some("pods".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let raw = WithSpec { spec: Some(spec) }.encode_to_vec();
        let v = decode_protobuf(&envelope("SelfSubjectAccessReview", raw))?;
        assert_eq!(
            v["spec"],
            json!({"resourceAttributes": {"namespace": "shop", "verb": "list", "resource": "pods"}})
        );
        assert!(decode_protobuf(b"not protobuf").is_err());
        assert_eq!(
            decode_protobuf(&envelope("Namespace", vec![]))
                .err()
                .map(|e| e.code),
            Some(415)
        );
        Ok(())
    }
}
