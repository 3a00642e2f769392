#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kube::Client;
use sofort_sandbox::{Sandbox, SandboxConfig, Scenario};

pub struct Env {
    pub sandbox: Sandbox,
    /// The kubeconfig and kubectl's cache; removed when the test ends.
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub client: Client,
}

pub async fn start(config: SandboxConfig) -> Env {
    let sandbox = Sandbox::start(config).await.unwrap();
    let dir = tempfile::Builder::new()
        .prefix("sofort-sandbox-test-")
        .tempdir()
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    let mut cfg = cfg;
    // Tests look at raw answers (429s included), so no client-side retries.
    cfg.default_retry = false;
    let client = Client::try_from(cfg).unwrap();
    Env {
        sandbox,
        dir,
        kubeconfig,
        client,
    }
}

pub async fn bare() -> Env {
    start(SandboxConfig::default()).await
}

/// A fast fleet: pods Ready in ~50 ms, reboots of ~300 ms.
pub fn fast(mut s: Scenario) -> Scenario {
    s.timing.pod_start = sofort_sandbox::DurationRange::fixed(Duration::from_millis(50));
    s.timing.pod_termination = sofort_sandbox::SimDuration(Duration::from_millis(50));
    s.timing.reboot = sofort_sandbox::DurationRange::fixed(Duration::from_millis(300));
    s
}

impl Env {
    /// Run kubectl against the sandbox; returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .output()
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed:\nstdout: {out}\nstderr: {err}");
        out
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Poll `f` until it returns Some, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const TEST_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        description: A widget for tests.
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [size]
            properties:
              size: {type: integer, minimum: 0, description: How big.}
              color: {type: string, default: blue, enum: [blue, red], description: Its color.}
          status:
            type: object
            properties:
              phase: {type: string}
"#;
