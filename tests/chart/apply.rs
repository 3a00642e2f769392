//! Every rendered values case, applied with `kubectl apply --server-side` to
//! the sandbox API server as `helm install` would create it in a cluster: the
//! release namespaces exist, the Prometheus Operator's CRD is installed where
//! the case renders a ServiceMonitor (a test fixture stands in for it), and
//! every object must then read back with what the chart rendered.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde_json::Value;
use sofort_sandbox::{Sandbox, SandboxConfig};

use super::{cases, documents, rendered, repo, strip_nulls};

/// The test fixture standing in for the Prometheus Operator's CRD.
const SERVICE_MONITOR_CRD: &str = "tests/fixtures/servicemonitor-crd.yaml";

struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl against the sandbox; Err carries the exit status and output.
    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .await
            .map_err(|e| {
                format!("cannot run kubectl (it must be on PATH for the chart tests): {e}")
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "`kubectl {}` failed ({}):\n{stdout}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    async fn ok(&self, what: &str, args: &[&str]) -> String {
        self.run(args)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// (apiVersion, kind, namespace, name) of an object.
fn key(v: &Value) -> (String, String, String, String) {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (
        s("/apiVersion"),
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name"),
    )
}

/// Paths where `live` lacks or changed what `want` has. The server may add
/// fields (defaults, managedFields, uid); it must keep every rendered one.
fn missing(path: &str, want: &Value, live: &Value, out: &mut Vec<String>) {
    match (want, live) {
        (Value::Object(w), Value::Object(l)) => {
            for (k, wv) in w {
                match l.get(k) {
                    Some(lv) => missing(&format!("{path}.{k}"), wv, lv, out),
                    None => out.push(format!("{path}.{k} missing")),
                }
            }
        }
        (Value::Array(w), Value::Array(l)) if w.len() == l.len() => {
            for (i, (wv, lv)) in w.iter().zip(l).enumerate() {
                missing(&format!("{path}[{i}]"), wv, lv, out);
            }
        }
        // Quantities: `cpu: 1` is stored as the string "1".
        (Value::Number(n), Value::String(s)) if n.to_string() == *s => {}
        _ if want == live => {}
        _ => out.push(format!("{path}: {want} became {live}")),
    }
}

async fn apply_case(case: &str, dir: &Path) {
    let docs = documents(case);
    let sandbox = Sandbox::start(SandboxConfig {
        controllers: false,
        ..SandboxConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("case {case}: cannot start the sandbox: {e}"));
    let kubectl = Kubectl {
        kubeconfig: dir.join(format!("{case}.kubeconfig")),
    };
    sandbox.write_kubeconfig(&kubectl.kubeconfig).unwrap();

    // The namespaces `helm install --create-namespace` (or the admin) creates.
    let mut namespaces: Vec<&str> = docs
        .iter()
        .filter_map(|(_, d)| d["metadata"]["namespace"].as_str())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let ns_yaml: String = namespaces
        .iter()
        .map(|ns| format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"))
        .collect();
    let ns_file = dir.join(format!("{case}-namespaces.yaml"));
    std::fs::write(&ns_file, ns_yaml).unwrap();
    let what = format!("case {case}: namespaces");
    kubectl
        .ok(
            &what,
            &["apply", "--server-side", "-f", ns_file.to_str().unwrap()],
        )
        .await;

    if docs.iter().any(|(_, d)| d["kind"] == "ServiceMonitor") {
        let crd = repo().join(SERVICE_MONITOR_CRD);
        let what = format!("case {case}: ServiceMonitor CRD fixture");
        kubectl
            .ok(
                &what,
                &["apply", "--server-side", "-f", crd.to_str().unwrap()],
            )
            .await;
        kubectl
            .ok(
                &what,
                &[
                    "wait",
                    "--for=condition=Established",
                    "crd/servicemonitors.monitoring.coreos.com",
                    "--timeout=10s",
                ],
            )
            .await;
    }

    let files = rendered().join(case);
    let files = files.to_str().unwrap();
    let what = format!("case {case}: kubectl apply --server-side -f <rendered manifests>");
    let out = kubectl
        .ok(&what, &["apply", "--server-side", "-f", files])
        .await;
    let applied = out
        .lines()
        .filter(|l| l.ends_with("serverside-applied"))
        .count();
    assert_eq!(
        applied,
        docs.len(),
        "{what}: not every object applied:\n{out}"
    );

    // Read every object back (kubectl gets each object the files name).
    let what = format!("case {case}: kubectl get -f <rendered manifests>");
    let out = kubectl.ok(&what, &["get", "-f", files, "-o", "json"]).await;
    let list: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: {e}"));
    let live: Vec<&Value> = match list["kind"].as_str() {
        Some("List") => list["items"].as_array().into_iter().flatten().collect(),
        _ => vec![&list],
    };
    for (file, doc) in &docs {
        let k = key(doc);
        let got = live
            .iter()
            .find(|l| key(l) == k)
            .unwrap_or_else(|| panic!("case {case}: {file}: {k:?} not readable after apply"));
        let mut diffs = Vec::new();
        missing("", &strip_nulls(doc.clone()), got, &mut diffs);
        assert!(
            diffs.is_empty(),
            "case {case}: {file}: {k:?} read back differs from what was applied:\n  {}",
            diffs.join("\n  ")
        );
    }
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_case_applies_server_side_to_the_sandbox_and_reads_back()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart-apply");
    std::fs::create_dir_all(&dir)?;
    // A few cases at a time, each on its own sandbox.
    futures::stream::iter(cases())
        .map(|case| {
            let dir = dir.clone();
            async move { apply_case(&case, &dir).await }
        })
        .buffer_unordered(3)
        .collect::<Vec<()>>()
        .await;
    Ok(())
}
