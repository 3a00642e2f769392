//! Which resources are served: the built-in kinds and those registered by CRDs.

use std::sync::{Arc, RwLock};

use serde_json::Value;

#[derive(Clone, Debug, Default)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// One served (group, version, resource).
#[derive(Clone, Debug, Default)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource (status is isolated from the main resource).
    pub status: bool,
    /// openAPIV3Schema of a CRD version.
    pub schema: Option<Value>,
    /// Name of the CRD that registered this resource.
    pub crd: Option<String>,
    pub printer_columns: Vec<PrinterColumn>,
    pub selectable_fields: Vec<String>,
}

impl ResourceInfo {
    /// Storage key shared by all versions of a resource: `pods`, `deployments.apps`.
    pub fn gr(&self) -> String {
        crate::error::qualified(&self.group, &self.resource)
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Field selector labels the real server accepts for this resource.
    pub fn field_allowed(&self, field: &str) -> bool {
        if field == "metadata.name" || field == "metadata.namespace" {
            return true;
        }
        let builtin: &[&str] = match (self.group.as_str(), self.resource.as_str()) {
            ("", "pods") => &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            ("", "nodes") => &["spec.unschedulable"],
            ("", "namespaces") => &["status.phase"],
            ("", "secrets") => &["type"],
            ("apps", "replicasets") => &["status.replicas"],
            ("", "events") => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            ("events.k8s.io", "events") => &[
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "reason",
                "reportingController",
                "type",
            ],
            _ => &[],
        };
        builtin.contains(&field) || self.selectable_fields.iter().any(|f| f == field)
    }
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub fn standard_verbs() -> Vec<String> {
    ALL_VERBS.iter().map(|s| s.to_string()).collect()
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    resource: &str,
    singular: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    all: bool,
) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        resource: resource.into(),
        singular: singular.into(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: if all { vec!["all".into()] } else { vec![] },
        status,
        ..Default::default()
    }
}

pub fn builtins() -> Vec<ResourceInfo> {
    vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            &["ns"],
            true,
            false,
        ),
        builtin(
            "",
            "v1",
            "nodes",
            "node",
            "Node",
            false,
            &["no"],
            true,
            false,
        ),
        builtin("", "v1", "pods", "pod", "Pod", true, &["po"], true, true),
        builtin(
            "",
            "v1",
            "events",
            "event",
            "Event",
            true,
            &["ev"],
            false,
            false,
        ),
        builtin(
            "",
            "v1",
            "secrets",
            "secret",
            "Secret",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "",
            "v1",
            "configmaps",
            "configmap",
            "ConfigMap",
            true,
            &["cm"],
            false,
            false,
        ),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            false,
        ),
        builtin(
            "",
            "v1",
            "services",
            "service",
            "Service",
            true,
            &["svc"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "deployment",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "replicasets",
            "replicaset",
            "ReplicaSet",
            true,
            &["rs"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "statefulsets",
            "statefulset",
            "StatefulSet",
            true,
            &["sts"],
            true,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "daemonsets",
            "daemonset",
            "DaemonSet",
            true,
            &["ds"],
            true,
            true,
        ),
        builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            true,
            false,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "lease",
            "Lease",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "event",
            "Event",
            true,
            &["ev"],
            false,
            false,
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "networkpolicy",
            "NetworkPolicy",
            true,
            &["netpol"],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "clusterrole",
            "ClusterRole",
            false,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "clusterrolebinding",
            "ClusterRoleBinding",
            false,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "role",
            "Role",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "rolebinding",
            "RoleBinding",
            true,
            &[],
            false,
            false,
        ),
        ResourceInfo {
            categories: vec!["api-extensions".into()],
            ..builtin(
                "admissionregistration.k8s.io",
                "v1",
                "validatingadmissionpolicies",
                "validatingadmissionpolicy",
                "ValidatingAdmissionPolicy",
                false,
                &[],
                true,
                false,
            )
        },
        ResourceInfo {
            categories: vec!["api-extensions".into()],
            ..builtin(
                "admissionregistration.k8s.io",
                "v1",
                "validatingadmissionpolicybindings",
                "validatingadmissionpolicybinding",
                "ValidatingAdmissionPolicyBinding",
                false,
                &[],
                false,
                false,
            )
        },
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            false,
        ),
    ]
}

/// The set of served resources; CRDs add and remove entries at run time.
pub struct Registry {
    resources: RwLock<Vec<Arc<ResourceInfo>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            resources: RwLock::new(builtins().into_iter().map(Arc::new).collect()),
        }
    }

    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.resources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.group == group && r.version == version && r.resource == resource)
            .cloned()
    }

    /// The resource of a kind in an apiVersion.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.resources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
    }

    /// Groups in discovery order with their versions (first is preferred).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in self.all() {
            if r.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) => {
                    if !vs.contains(&r.version) {
                        vs.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }

    /// Replace the resources a CRD serves.
    pub fn set_crd(&self, crd_name: &str, infos: Vec<ResourceInfo>) {
        let mut all = self.resources.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|r| r.crd.as_deref() != Some(crd_name));
        all.extend(infos.into_iter().map(Arc::new));
    }

    pub fn remove_crd(&self, crd_name: &str) {
        let mut all = self.resources.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|r| r.crd.as_deref() != Some(crd_name));
    }
}
