//! The protobuf field table the sandbox converts with (`src/k8s-messages.txt`)
//! is generated from the k8s-pb crate's message definitions (tags, wire types,
//! nested message types) and k8s-openapi's schemas (the JSON field names).
//! This test regenerates it and fails on drift; `SOFORT_REGENERATE=1 cargo test
//! -p sofort-sandbox --test protobuf_table` rewrites the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TABLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/k8s-messages.txt");

/// Kinds whose messages (and everything they reach) the table holds.
const ROOTS: &[&str] = &[
    "io.k8s.api.core.v1.Namespace",
    "io.k8s.api.core.v1.Node",
    "io.k8s.api.core.v1.Pod",
    "io.k8s.api.core.v1.Event",
    "io.k8s.api.core.v1.Secret",
    "io.k8s.api.core.v1.ConfigMap",
    "io.k8s.api.core.v1.ServiceAccount",
    "io.k8s.api.core.v1.Service",
    "io.k8s.api.apps.v1.Deployment",
    "io.k8s.api.apps.v1.ReplicaSet",
    "io.k8s.api.apps.v1.StatefulSet",
    "io.k8s.api.apps.v1.DaemonSet",
    "io.k8s.api.policy.v1.PodDisruptionBudget",
    "io.k8s.api.policy.v1.Eviction",
    "io.k8s.api.coordination.v1.Lease",
    "io.k8s.api.events.v1.Event",
    "io.k8s.api.networking.v1.NetworkPolicy",
    "io.k8s.api.rbac.v1.ClusterRole",
    "io.k8s.api.rbac.v1.ClusterRoleBinding",
    "io.k8s.api.rbac.v1.Role",
    "io.k8s.api.rbac.v1.RoleBinding",
    "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicy",
    "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBinding",
    "io.k8s.api.autoscaling.v1.Scale",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
];

#[derive(Debug, Clone)]
struct Field {
    tag: u32,
    rust_name: String,
    kind: String,
    repeated: bool,
    message: Option<String>,
}

fn k8s_pb_src() -> Result<PathBuf, Box<dyn std::error::Error>> {
    // Only this platform's packages: without the filter cargo wants every
    // target's dependencies (Android, Windows…), which a build never fetched,
    // and `--offline` then fails.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = std::process::Command::new(rustc).arg("-vV").output()?;
    let host = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or("rustc -vV printed no host triple")?;
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let pkg = meta["packages"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "k8s-pb"))
        .ok_or("k8s-pb is not in the dependency graph")?;
    let manifest = pkg["manifest_path"].as_str().ok_or("no manifest path")?;
    Ok(Path::new(manifest)
        .parent()
        .ok_or("manifest has no parent")?
        .join("src"))
}

/// Module path of a source file: `api/core/v1/mod.rs` -> [api, core, v1].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    file.strip_prefix(src)
        .unwrap_or(file)
        .parent()
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn proto_name(module: &[String], name: &str) -> String {
    let parts: Vec<String> = module
        .iter()
        .map(|m| m.replace("apiextensions_apiserver", "apiextensions-apiserver"))
        .map(|m| m.replace("kube_aggregator", "kube-aggregator"))
        .collect();
    format!("io.k8s.{}.{name}", parts.join("."))
}

/// The message a Rust type path names, resolved against the module it is in.
fn resolve(module: &[String], ty: &str) -> Option<String> {
    let ty: String = ty.chars().filter(|c| !c.is_whitespace()).collect();
    let candidates: Vec<&str> = ty
        .split(['<', '>', ','])
        .filter(|s| !s.is_empty())
        .filter(|s| {
            let last = s.rsplit("::").next().unwrap_or("");
            !matches!(
                last,
                "Option" | "Vec" | "String" | "BTreeMap" | "HashMap" | "Box" | "u8"
            )
        })
        .collect();
    let path = candidates.last()?;
    let segs: Vec<&str> = path.split("::").collect();
    let mut m: Vec<String> = module.to_vec();
    let mut rest = Vec::new();
    for s in segs {
        if s == "super" {
            m.pop();
        } else {
            rest.push(s);
        }
    }
    let name = rest.pop()?;
    m.extend(rest.iter().map(|s| s.to_string()));
    Some(proto_name(&m, name))
}

fn parse_file(
    src: &Path,
    file: &Path,
    out: &mut BTreeMap<String, Vec<Field>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let module = module_of(src, file);
    let text = std::fs::read_to_string(file)?;
    let mut lines = text.lines();
    let mut current: Option<String> = None;
    while let Some(line) = lines.next() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("pub struct ") {
            let name = rest.split([' ', '{']).next().unwrap_or("").to_string();
            let full = proto_name(&module, &name);
            out.insert(full.clone(), Vec::new());
            current = Some(full);
            continue;
        }
        if l == "}" {
            current = None;
            continue;
        }
        let (Some(msg), Some(attr)) = (
            current.clone(),
            l.strip_prefix("#[prost(")
                .and_then(|a| a.strip_suffix(")]")),
        ) else {
            continue;
        };
        let mut decl = String::new();
        for next in lines.by_ref() {
            let t = next.trim();
            if t.starts_with("///") || t.starts_with("#[") {
                continue;
            }
            decl.push_str(t);
            let depth: i32 = decl
                .chars()
                .map(|c| match c {
                    '<' => 1,
                    '>' => -1,
                    _ => 0,
                })
                .sum();
            if depth == 0 && decl.ends_with(',') {
                break;
            }
        }
        let decl = decl.trim_start_matches("pub ");
        let (fname, ty) = decl.split_once(':').ok_or("field without a type")?;
        let tag: u32 = attr
            .split("tag = \"")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .ok_or("field without a tag")?
            .parse()?;
        let first = attr.split(',').next().unwrap_or("").trim();
        let (kind, message) = if first.starts_with("btree_map") || first.starts_with("map") {
            let inner = attr.split('"').nth(1).unwrap_or("");
            let value = inner.split(',').nth(1).unwrap_or("").trim();
            let msg = if value == "message" {
                resolve(&module, ty)
            } else {
                None
            };
            (format!("map:{value}"), msg)
        } else if first == "message" {
            ("message".to_string(), resolve(&module, ty))
        } else {
            (first.split(' ').next().unwrap_or(first).to_string(), None)
        };
        if let Some(fields) = out.get_mut(&msg) {
            fields.push(Field {
                tag,
                rust_name: fname.trim().trim_start_matches("r#").to_string(),
                kind,
                repeated: attr.contains("repeated"),
                message,
            });
        }
    }
    Ok(())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// OpenAPI definitions of the kinds (k8s-openapi), for JSON field names.
fn openapi_defs() -> serde_json::Map<String, serde_json::Value> {
    use k8s_openapi::api::{
        admissionregistration::v1 as adm, apps::v1 as apps, autoscaling::v1 as autoscaling,
        coordination::v1 as coord, core::v1 as core, events::v1 as ev, networking::v1 as net,
        policy::v1 as policy, rbac::v1 as rbac,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
    macro_rules! add {
        ($($t:ty),*) => { $( let _ = g.subschema_for::<$t>(); )* };
    }
    add!(
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
        autoscaling::Scale,
        meta::Status,
        meta::DeleteOptions
    );
    g.take_definitions(true).into_iter().collect()
}

fn normalized(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn generate() -> Result<String, Box<dyn std::error::Error>> {
    let src = k8s_pb_src()?;
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    files.sort();
    let mut all = BTreeMap::new();
    for f in &files {
        parse_file(&src, f, &mut all)?;
    }
    let defs = openapi_defs();
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    for d in defs.values() {
        for k in d
            .get("properties")
            .and_then(|p| p.as_object())
            .into_iter()
            .flat_map(|p| p.keys())
        {
            let e = global.entry(normalized(k)).or_insert_with(|| k.clone());
            if e.starts_with(char::is_uppercase) {
                e.clone_from(k);
            }
        }
    }
    let mut todo: Vec<String> = ROOTS.iter().map(|s| s.to_string()).collect();
    for r in ROOTS {
        todo.push(format!("{r}List"));
    }
    let mut seen = BTreeSet::new();
    while let Some(m) = todo.pop() {
        if !all.contains_key(&m) || !seen.insert(m.clone()) {
            continue;
        }
        for f in &all[&m] {
            if let Some(t) = &f.message {
                todo.push(t.clone());
            }
        }
    }
    let mut out = String::from(
        "# Generated from the k8s-pb crate's messages and k8s-openapi's JSON names by\n\
         # tests/protobuf_table.rs; do not edit. Lines: `message NAME`, then\n\
         # `TAG JSON-NAME KIND [repeated] [MESSAGE]`.\n",
    );
    let props_of = |m: &str| {
        defs.iter()
            .find(|(name, _)| normalized(name) == normalized(m))
            .and_then(|(_, d)| d.get("properties"))
            .and_then(|p| p.as_object())
    };
    let has = |p: &serde_json::Map<String, serde_json::Value>, rust: &str| {
        p.keys().any(|k| normalized(k) == normalized(rust))
    };
    // Messages embedded inline in a parent whose schema is known.
    let mut inlined: BTreeSet<String> = BTreeSet::new();
    for m in &seen {
        let Some(p) = props_of(m) else { continue };
        for f in &all[m] {
            if let (false, Some(sub)) = (
                has(p, &f.rust_name),
                f.message.as_ref().and_then(|t| all.get(t)),
            ) {
                let n = sub.iter().filter(|sf| has(p, &sf.rust_name)).count();
                if !sub.is_empty() && n * 2 >= sub.len() {
                    inlined.extend(f.message.clone());
                }
            }
        }
    }
    for m in &seen {
        out.push_str(&format!("message {m}\n"));
        // k8s-pb spells initialisms in Rust case (HttpGetAction for HTTPGetAction).
        let props = defs
            .iter()
            .find(|(name, _)| normalized(name) == normalized(m))
            .map(|(_, d)| d)
            .and_then(|d| d.get("properties"))
            .and_then(|p| p.as_object());
        let mut fields = all[m].clone();
        fields.sort_by_key(|f| f.tag);
        for f in fields {
            let found = props.and_then(|p| {
                p.keys()
                    .find(|k| normalized(k) == normalized(&f.rust_name))
                    .cloned()
            });
            // A message field the JSON form does not name is a Go struct
            // embedded inline (`json:",inline"`): its fields sit in the parent.
            // (Fields newer than k8s-openapi's schemas are not found either:
            // inline only when the parent holds at least half the message's fields.)
            // Without a schema for the parent, a name no schema uses whose
            // message's fields other schemas do use is embedded as well.
            let embedded = f
                .message
                .as_ref()
                .and_then(|t| all.get(t))
                .is_some_and(|sub| {
                    let in_parent = sub
                        .iter()
                        .filter(|sf| match props {
                            Some(p) => p.keys().any(|k| normalized(k) == normalized(&sf.rust_name)),
                            None => global.contains_key(&normalized(&sf.rust_name)),
                        })
                        .count();
                    let unnamed = props.is_some()
                        || (inlined.contains(m) && !global.contains_key(&normalized(&f.rust_name)));
                    unnamed && !f.repeated && !sub.is_empty() && in_parent * 2 >= sub.len()
                });
            let kind = if found.is_none() && f.kind == "message" && embedded {
                "inline".to_string()
            } else {
                f.kind.clone()
            };
            // A message without a schema of its own (VolumeSource is inlined
            // into Volume) takes the spelling any schema uses (`volumeID`).
            let json_name = found
                .or_else(|| global.get(&normalized(&f.rust_name)).cloned())
                .unwrap_or_else(|| camel(&f.rust_name));
            out.push_str(&format!("{} {json_name} {kind}", f.tag));
            if f.repeated {
                out.push_str(" repeated");
            }
            if let Some(t) = &f.message {
                out.push_str(&format!(" {t}"));
            }
            out.push('\n');
        }
    }
    Ok(out)
}

#[test]
fn protobuf_table_matches_k8s_pb() -> TestResult {
    let want = generate()?;
    assert!(want.contains("message io.k8s.api.core.v1.PodSpec\n"));
    assert!(
        want.contains("\n1 metadata message io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta\n")
    );
    if std::env::var_os("SOFORT_REGENERATE").is_some() {
        std::fs::write(TABLE, &want)?;
    }
    let have = std::fs::read_to_string(TABLE)?;
    assert!(
        have == want,
        "src/k8s-messages.txt is out of date: run SOFORT_REGENERATE=1 cargo test -p sofort-sandbox --test protobuf_table"
    );
    Ok(())
}
