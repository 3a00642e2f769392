//! OpenAPI v3 documents: what `kubectl` reads to decide on server-side field
//! validation, to build apply patches, and for `kubectl explain`.
//! Built-in models come from k8s-openapi's schemas; CRD models from their
//! `openAPIV3Schema`.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceInfo};

type Defs = Map<String, Value>;

struct Builtin {
    defs: Defs,
    meta_defs: Defs,
}

fn generator() -> schemars::SchemaGenerator {
    schemars::generate::SchemaSettings::openapi3().into_generator()
}

macro_rules! add {
    ($g:expr, $($t:ty),*) => { $( let _ = $g.subschema_for::<$t>(); )* };
}

fn builtin() -> &'static Builtin {
    static B: OnceLock<Builtin> = OnceLock::new();
    B.get_or_init(|| {
        use k8s_openapi::api::{
            admissionregistration::v1 as adm, apps::v1 as apps, coordination::v1 as coord,
            core::v1 as core, events::v1 as ev, networking::v1 as net, policy::v1 as policy,
            rbac::v1 as rbac,
        };
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
        let mut g = generator();
        add!(
            g,
            core::Namespace,
            core::Node,
            core::Pod,
            core::Event,
            core::Secret,
            core::ConfigMap,
            core::ServiceAccount,
            core::Service,
            apps::Deployment,
            apps::ReplicaSet,
            apps::StatefulSet,
            apps::DaemonSet,
            policy::PodDisruptionBudget,
            policy::Eviction,
            coord::Lease,
            ev::Event,
            net::NetworkPolicy,
            rbac::ClusterRole,
            rbac::ClusterRoleBinding,
            rbac::Role,
            rbac::RoleBinding,
            adm::ValidatingAdmissionPolicy,
            adm::ValidatingAdmissionPolicyBinding,
            ext::CustomResourceDefinition
        );
        let mut defs: Defs = g.take_definitions(true).into_iter().collect();
        let kinds = [
            ("io.k8s.api.core.v1.Namespace", "", "v1", "Namespace"),
            ("io.k8s.api.core.v1.Node", "", "v1", "Node"),
            ("io.k8s.api.core.v1.Pod", "", "v1", "Pod"),
            ("io.k8s.api.core.v1.Event", "", "v1", "Event"),
            ("io.k8s.api.core.v1.Secret", "", "v1", "Secret"),
            ("io.k8s.api.core.v1.ConfigMap", "", "v1", "ConfigMap"),
            (
                "io.k8s.api.core.v1.ServiceAccount",
                "",
                "v1",
                "ServiceAccount",
            ),
            ("io.k8s.api.core.v1.Service", "", "v1", "Service"),
            ("io.k8s.api.apps.v1.Deployment", "apps", "v1", "Deployment"),
            ("io.k8s.api.apps.v1.ReplicaSet", "apps", "v1", "ReplicaSet"),
            (
                "io.k8s.api.apps.v1.StatefulSet",
                "apps",
                "v1",
                "StatefulSet",
            ),
            ("io.k8s.api.apps.v1.DaemonSet", "apps", "v1", "DaemonSet"),
            (
                "io.k8s.api.policy.v1.PodDisruptionBudget",
                "policy",
                "v1",
                "PodDisruptionBudget",
            ),
            ("io.k8s.api.policy.v1.Eviction", "policy", "v1", "Eviction"),
            (
                "io.k8s.api.coordination.v1.Lease",
                "coordination.k8s.io",
                "v1",
                "Lease",
            ),
            ("io.k8s.api.events.v1.Event", "events.k8s.io", "v1", "Event"),
            (
                "io.k8s.api.networking.v1.NetworkPolicy",
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
            ),
            (
                "io.k8s.api.rbac.v1.ClusterRole",
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
            ),
            (
                "io.k8s.api.rbac.v1.ClusterRoleBinding",
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
            ),
            (
                "io.k8s.api.rbac.v1.Role",
                "rbac.authorization.k8s.io",
                "v1",
                "Role",
            ),
            (
                "io.k8s.api.rbac.v1.RoleBinding",
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
            ),
            (
                "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicy",
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingAdmissionPolicy",
            ),
            (
                "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBinding",
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingAdmissionPolicyBinding",
            ),
            (
                "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
            ),
        ];
        for (name, group, version, kind) in kinds {
            if let Some(Value::Object(d)) = defs.get_mut(name) {
                d.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": group, "version": version, "kind": kind}]),
                );
            }
        }
        let mut mg = generator();
        add!(
            mg,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta
        );
        let meta_defs: Defs = mg.take_definitions(true).into_iter().collect();
        Builtin { defs, meta_defs }
    })
}

fn reversed_group(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

fn patch_op(info: &ResourceInfo) -> Value {
    let body = json!({"schema": {"type": "object"}});
    json!({
        "description": format!("partially update the specified {}", info.kind),
        "operationId": format!("patch{}", info.kind),
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": info.group, "version": info.version, "kind": info.kind},
        "parameters": [
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
        ],
        "requestBody": {"content": {
            "application/json-patch+json": body,
            "application/merge-patch+json": body,
            "application/apply-patch+yaml": body,
        }, "required": true},
        "responses": {"200": {"description": "OK"}},
    })
}

fn item_path(info: &ResourceInfo) -> String {
    let prefix = if info.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    };
    if info.namespaced {
        format!(
            "{prefix}/namespaces/{{namespace}}/{}/{{name}}",
            info.resource
        )
    } else {
        format!("{prefix}/{}/{{name}}", info.resource)
    }
}

fn crd_model(info: &ResourceInfo) -> (String, Value) {
    let name = format!(
        "{}.{}.{}",
        reversed_group(&info.group),
        info.version,
        info.kind
    );
    let mut schema = info
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object"}));
    if let Some(m) = schema.as_object_mut() {
        let props = m
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut props = props;
        props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        props.insert(
            "metadata".into(),
            json!({"description": "Standard object's metadata.", "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]}),
        );
        m.insert("properties".into(), Value::Object(props));
        m.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": info.group, "version": info.version, "kind": info.kind}]),
        );
    }
    (name, schema)
}

/// The OpenAPI v3 document of one group-version (`api/v1`, `apis/apps/v1`).
pub fn group_doc(registry: &Registry, gv: &str) -> Option<Value> {
    let (group, version) = if gv == "api/v1" {
        ("", "v1")
    } else {
        let rest = gv.strip_prefix("apis/")?;
        rest.split_once('/')?
    };
    let resources: Vec<_> = registry
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let b = builtin();
    let mut paths = Map::new();
    let mut schemas: Defs = Defs::new();
    let any_crd = resources.iter().any(|r| r.crd.is_some());
    if any_crd {
        schemas.extend(b.meta_defs.clone());
    } else {
        schemas.extend(b.defs.clone());
    }
    for r in &resources {
        paths.insert(item_path(r), json!({"patch": patch_op(r)}));
        if r.crd.is_some() {
            let (name, model) = crd_model(r);
            schemas.insert(name, model);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn hash_of(v: &Value) -> String {
    let mut h = DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// The discovery root `/openapi/v3`.
pub fn root(registry: &Registry) -> Value {
    let mut gvs: BTreeMap<String, ()> = BTreeMap::new();
    for r in registry.all() {
        let gv = if r.group.is_empty() {
            "api/v1".to_string()
        } else {
            format!("apis/{}/{}", r.group, r.version)
        };
        gvs.insert(gv, ());
    }
    let mut paths = Map::new();
    for gv in gvs.keys() {
        if let Some(doc) = group_doc(registry, gv) {
            paths.insert(
                gv.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", hash_of(&doc))}),
            );
        }
    }
    json!({ "paths": paths })
}
