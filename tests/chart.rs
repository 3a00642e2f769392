//! The Helm chart, checked against the binary it deploys.
//!
//! The chart is rendered by the real Helm engine in the Python suite under
//! `tests/helm` (run from here, so `cargo test` covers it); that suite writes the
//! rendered manifests of every values case to a directory, and this file then
//! checks that every manifest is a valid Kubernetes object with no unknown field
//! (through the k8s-openapi types) and that every flag the chart passes to
//! `sofort controller` and `sofort agent` is one our own CLI definitions accept.
//! `apply` applies every case to the sandbox API server with `kubectl apply
//! --server-side`; `rbac` checks the controller's RBAC against the calls the
//! real controller makes; `admission` evaluates the CEL of the chart's
//! ValidatingAdmissionPolicies against sample admission requests.

#[path = "chart/admission.rs"]
mod admission;
#[path = "chart/apply.rs"]
mod apply;
#[path = "support/pods.rs"]
mod pods;
#[path = "chart/rbac.rs"]
mod rbac;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, EnvVar, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};
use serde_json::Value;
use sofort::cli::{Cli, Command as Sub, RebootMethod};

/// Values cases the Python suite must at least have rendered (`MATRIX` in
/// tests/helm/conftest.py); the checks below run on every case it rendered.
const CASES: &[&str] = &[
    "default",
    "reboot-command",
    "host-commands",
    "sentinel-command",
    "service-monitor",
    "network-policy",
    "digest",
    "single-replica",
    "everything-overridden",
    "pod-delete",
];

/// What the downward API would put into the fields the chart reads.
const POD_NAME: &str = "sofort-controller-7d9f8-x2lq4";
const NODE_NAME: &str = "worker-3";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the Python chart suite once per test binary and returns the directory it
/// rendered the manifests into.
fn rendered() -> &'static Path {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(run_python_suite) {
        Ok(dir) => dir,
        Err(msg) => panic!("{msg}"),
    }
}

fn run_python_suite() -> Result<PathBuf, String> {
    let python = repo().join(".tools/venv/bin/python");
    if !python.exists() {
        return Err(format!(
            "the chart tests need the Helm engine and pytest in .tools/venv ({} is missing); \
             install them with: scripts/setup-test-tools.sh",
            python.display()
        ));
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart-render");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    let out = Command::new(&python)
        .args(["-m", "pytest", "tests/helm", "-q", "-p", "no:cacheprovider"])
        .current_dir(repo())
        .env("SOFORT_CHART_RENDER_DIR", &dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "the Helm chart suite (pytest tests/helm) failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(dir)
}

/// Every case the Python suite rendered.
fn cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(rendered())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    for case in CASES {
        assert!(
            cases.iter().any(|c| c == case),
            "case {case} was not rendered"
        );
    }
    cases
}

/// Every rendered document of one case: (file name, JSON value).
fn documents(case: &str) -> Vec<(String, Value)> {
    let dir = rendered().join(case);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("case {case}: {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "case {case}: nothing rendered");
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap())
                .unwrap_or_else(|e| panic!("case {case}: {name}: {e}"));
            if !value.is_null() {
                docs.push((name.clone(), value));
            }
        }
    }
    docs
}

/// Deserializes into `T` and serializes back; any field `T` does not know is
/// dropped on the way, so a difference names an unknown or misplaced field.
fn round_trip<T: DeserializeOwned + Serialize>(what: &str, original: &Value) -> T {
    let typed: T = serde_path_to_error::deserialize(original.clone())
        .unwrap_or_else(|e| panic!("{what}: not a valid object: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    let mut diffs = Vec::new();
    diff("", &strip_nulls(original.clone()), &back, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{what}: fields lost in a round trip through k8s-openapi (unknown or misplaced):\n  {}",
        diffs.join("\n  ")
    );
    typed
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        v => v,
    }
}

fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => diff(&format!("{path}.{k}"), va, vb, out),
                    None => out.push(format!("{path}.{k} = {va}")),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{path}.{k} appeared"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        // Quantities: Kubernetes accepts `cpu: 1` and stores it as the string "1".
        (Value::Number(n), Value::String(s)) if n.to_string() == *s => {}
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} became {b}")),
    }
}

/// One rendered object, checked against its k8s-openapi type.
enum Object {
    Deployment(Box<Deployment>),
    DaemonSet(Box<DaemonSet>),
    Other,
}

fn check_object(case: &str, file: &str, v: &Value) -> Object {
    let api_version = v["apiVersion"].as_str().unwrap_or_default();
    let kind = v["kind"].as_str().unwrap_or_default();
    let what = format!(
        "case {case}: {file}: {kind} {}",
        v["metadata"]["name"].as_str().unwrap_or("?")
    );
    match (api_version, kind) {
        ("apps/v1", "Deployment") => Object::Deployment(Box::new(round_trip(&what, v))),
        ("apps/v1", "DaemonSet") => Object::DaemonSet(Box::new(round_trip(&what, v))),
        ("v1", "ServiceAccount") => {
            round_trip::<ServiceAccount>(&what, v);
            Object::Other
        }
        ("v1", "Service") => {
            round_trip::<Service>(&what, v);
            Object::Other
        }
        ("policy/v1", "PodDisruptionBudget") => {
            round_trip::<PodDisruptionBudget>(&what, v);
            Object::Other
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            round_trip::<ClusterRole>(&what, v);
            Object::Other
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<ClusterRoleBinding>(&what, v);
            Object::Other
        }
        ("rbac.authorization.k8s.io/v1", "Role") => {
            round_trip::<Role>(&what, v);
            Object::Other
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            round_trip::<RoleBinding>(&what, v);
            Object::Other
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            round_trip::<NetworkPolicy>(&what, v);
            Object::Other
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            round_trip::<ValidatingAdmissionPolicy>(&what, v);
            Object::Other
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            round_trip::<ValidatingAdmissionPolicyBinding>(&what, v);
            Object::Other
        }
        // The Prometheus Operator's type has no k8s-openapi counterpart: check its shape.
        ("monitoring.coreos.com/v1", "ServiceMonitor") => {
            let endpoints = v["spec"]["endpoints"].as_array().expect("spec.endpoints");
            assert!(
                endpoints.iter().all(|e| e["port"] == "metrics"),
                "{what}: {endpoints:?}"
            );
            assert!(v["spec"]["selector"]["matchLabels"].is_object(), "{what}");
            Object::Other
        }
        _ => panic!("{what}: unexpected {api_version} {kind}; add it to tests/chart.rs"),
    }
}

#[test]
fn helm_chart_python_suite_passes() {
    let dir = rendered();
    for case in CASES {
        assert!(dir.join(case).is_dir(), "case {case} was not rendered");
    }
}

#[test]
fn every_rendered_manifest_is_a_known_kubernetes_object_without_unknown_fields() {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for case in &cases() {
        for (file, doc) in documents(case) {
            check_object(case, &file, &doc);
            *counts
                .entry(doc["kind"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for kind in [
        "Deployment",
        "DaemonSet",
        "ClusterRole",
        "Role",
        "NetworkPolicy",
        "ServiceMonitor",
        "ValidatingAdmissionPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(counts.contains_key(kind), "no {kind} rendered: {counts:?}");
    }
}

#[test]
fn the_chart_crd_is_a_valid_crd() {
    let text = std::fs::read_to_string(repo().join("charts/sofort/crds/patchpolicy.yaml")).unwrap();
    let v: Value = serde_yaml::from_str(&text).unwrap();
    let crd: CustomResourceDefinition = round_trip("chart CRD", &v);
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("patchpolicies.sofort.dev")
    );
}

/// The container's command line as the kubelet runs it: `$(VAR)` expanded from
/// the container's own env, whose downward-API fields get realistic values.
/// A reference to a variable the manifest does not define fails.
fn argv(what: &str, c: &Container, namespace: &str) -> Vec<String> {
    let mut env = BTreeMap::new();
    for EnvVar {
        name,
        value,
        value_from,
    } in c.env.iter().flatten()
    {
        let resolved = match (
            value,
            value_from.as_ref().and_then(|f| f.field_ref.as_ref()),
        ) {
            (Some(v), _) => v.clone(),
            (None, Some(f)) => match f.field_path.as_str() {
                "metadata.namespace" => namespace.to_string(),
                "metadata.name" => POD_NAME.to_string(),
                "spec.nodeName" => NODE_NAME.to_string(),
                other => panic!("{what}: env {name} from unexpected field {other}"),
            },
            (None, None) => panic!("{what}: env {name} has no value"),
        };
        env.insert(name.clone(), resolved);
    }
    let expand = |arg: &String| -> String {
        let mut out = String::new();
        let mut rest = arg.as_str();
        while let Some(i) = rest.find("$(") {
            out.push_str(&rest[..i]);
            let end = rest[i..]
                .find(')')
                .unwrap_or_else(|| panic!("{what}: unclosed $( in {arg}"));
            let var = &rest[i + 2..i + end];
            let val = env.get(var).unwrap_or_else(|| {
                panic!("{what}: argument {arg} references ${var}, which the container's env does not define")
            });
            out.push_str(val);
            rest = &rest[i + end + 1..];
        }
        out.push_str(rest);
        out
    };
    let command = c.command.as_ref().expect("command");
    assert_eq!(
        command,
        &["sofort"],
        "{what}: the image's binary is `sofort` on PATH"
    );
    command
        .iter()
        .chain(c.args.iter().flatten())
        .map(expand)
        .collect()
}

fn port_of(addr: &str) -> i32 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn controller_args_are_flags_the_binary_knows() {
    for case in &cases() {
        for (file, doc) in documents(case) {
            let Object::Deployment(dep) = check_object(case, &file, &doc) else {
                continue;
            };
            let ns = dep.metadata.namespace.as_deref().unwrap();
            let pod = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let c = &pod.containers[0];
            let what = format!("case {case}: controller");
            let args = argv(&what, c, ns);
            let cli = Cli::try_parse_from(&args)
                .unwrap_or_else(|e| panic!("{what}: `sofort controller` rejects {args:?}:\n{e}"));
            let Sub::Controller(a) = cli.command else {
                panic!("{what}: not the controller subcommand: {args:?}")
            };
            assert_eq!(a.namespace, ns, "{what}: Lease namespace");
            assert_eq!(a.identity.as_deref(), Some(POD_NAME), "{what}: identity");
            let port = c.ports.as_ref().unwrap()[0].container_port;
            assert_eq!(
                port_of(&a.metrics_addr),
                port,
                "{what}: metrics port vs probes"
            );
            let replicas = dep.spec.as_ref().unwrap().replicas.unwrap();
            assert!(
                !a.no_leader_election || replicas == 1,
                "{what}: no leader election with {replicas} replicas"
            );
            sofort::core::duration::parse(&a.lease_duration)
                .unwrap_or_else(|e| panic!("{what}: --lease-duration: {e}"));
            sofort::core::duration::parse(&a.eviction_retry)
                .unwrap_or_else(|e| panic!("{what}: --eviction-retry: {e}"));
        }
    }
}

#[test]
fn agent_args_are_flags_the_binary_knows_and_match_the_security_context() {
    for case in &cases() {
        for (file, doc) in documents(case) {
            let Object::DaemonSet(ds) = check_object(case, &file, &doc) else {
                continue;
            };
            let ns = ds.metadata.namespace.as_deref().unwrap();
            let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let c = &pod.containers[0];
            let what = format!("case {case}: agent");
            let args = argv(&what, c, ns);
            let cli = Cli::try_parse_from(&args)
                .unwrap_or_else(|e| panic!("{what}: `sofort agent` rejects {args:?}:\n{e}"));
            let Sub::Agent(a) = cli.command else {
                panic!("{what}: not the agent subcommand: {args:?}")
            };
            assert_eq!(a.node_name, NODE_NAME, "{what}: node name");
            assert_eq!(
                port_of(&a.metrics_addr),
                c.ports.as_ref().unwrap()[0].container_port,
                "{what}: metrics port"
            );
            sofort::core::duration::parse(&a.check_interval)
                .unwrap_or_else(|e| panic!("{what}: --check-interval: {e}"));
            assert_eq!(pod.host_pid, Some(true), "{what}: hostPID");

            let sc = c.security_context.as_ref().expect("securityContext");
            let needs_nsenter = a.reboot_method == RebootMethod::Command
                || a.allow_host_commands
                || a.sentinel_command.is_some();
            if needs_nsenter {
                assert_eq!(
                    sc.privileged,
                    Some(true),
                    "{what}: nsenter needs privileged"
                );
            } else {
                assert_eq!(sc.privileged, None, "{what}");
                let caps = sc.capabilities.as_ref().unwrap();
                assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
                assert_eq!(caps.add.as_deref(), Some(&["KILL".to_string()][..]));
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
            }
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");

            // The sentinel file the agent reads lies in a read-only volume mount.
            if a.sentinel_command.is_none() {
                let mounts = c.volume_mounts.as_ref().expect("volumeMounts");
                assert!(
                    mounts
                        .iter()
                        .any(|m| m.read_only == Some(true)
                            && a.sentinel_file.starts_with(&m.mount_path)),
                    "{what}: {} is not inside a read-only mount {mounts:?}",
                    a.sentinel_file.display()
                );
            }
        }
    }
}
