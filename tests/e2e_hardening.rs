//! End-to-end tests of hostile input: the real `sofort controller` binary
//! against the sandbox's API emulator, with policies the API server accepts
//! but the controller's types cannot hold.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use sofort::api::PatchPolicy;
use sofort::testkit::Cluster;
use sofort_sandbox::{NodeGroup, Scenario};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Text that must never reach a log: the embargoed advisory of the bad policy.
const SECRET: &str = "CVE-2099-0001 remote root in the frobnicator";

struct Env {
    cluster: Option<Cluster>,
    controller: Option<Child>,
    dir: PathBuf,
}

impl Env {
    async fn start(name: &str, nodes: usize) -> Result<Env, Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("sofort-e2eh-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut s = Scenario::empty();
        s.speed = 50.0;
        s.nodes = vec![NodeGroup {
            name_prefix: Some("w".into()),
            count: nodes,
            roles: vec!["worker".into()],
            ..NodeGroup::default()
        }];
        let mut cluster = Cluster::start(s, 0, dir.join("kubeconfig")).await?;
        cluster.spawn_agents(true)?;
        let log = std::fs::File::create(dir.join("controller.log"))?;
        let controller = Command::new(env!("CARGO_BIN_EXE_sofort"))
            .args([
                "controller",
                "--no-leader-election",
                "--metrics-addr",
                "127.0.0.1:0",
                "--debounce",
                "20ms",
            ])
            .env("KUBECONFIG", dir.join("kubeconfig"))
            // The most verbose level: nothing of a spec may appear even then.
            .env("SOFORT_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Env {
            cluster: Some(cluster),
            controller: Some(controller),
            dir,
        })
    }

    fn client(&self) -> Result<Client, &'static str> {
        Ok(self.cluster.as_ref().ok_or("no cluster")?.client.clone())
    }

    fn raw(&self) -> Result<Api<DynamicObject>, &'static str> {
        Ok(Api::all_with(
            self.client()?,
            &ApiResource::erase::<PatchPolicy>(&()),
        ))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("controller.log")).unwrap_or_default()
    }

    async fn create(&self, body: Value) -> TestResult {
        let obj: DynamicObject = serde_json::from_value(body)?;
        self.raw()?.create(&PostParams::default(), &obj).await?;
        Ok(())
    }

    /// The raw status of a policy once `done` holds for it.
    async fn wait_status(
        &self,
        name: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + within;
        loop {
            let obj = self.raw()?.get(name).await?;
            let status = obj.data.get("status").cloned().unwrap_or(Value::Null);
            if done(&status) {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                return Err(format!(
                    "{name}: condition not reached within {within:?}; status {status:#}\nlog tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finish(mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(c) = self.cluster.take() {
            c.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn policy(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "sofort.dev/v1alpha1",
        "kind": "PatchPolicy",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn quick_spec() -> Value {
    json!({
        "revision": "r1",
        "rollout": {"settle": "1s", "maxUnavailable": 2},
        "drain": {"timeout": "30s"},
        "reboot": {"timeout": "60s"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_undecodable_policy_does_not_stop_the_others() -> TestResult {
    let env = Env::start("undecodable", 3).await?;
    // A "freeze forever" blackout: valid RFC 3339 that the controller's time
    // type cannot hold, with an embargoed advisory that must stay out of
    // every log. The CRD's CEL rules now refuse it at apply time...
    let mut bad = quick_spec();
    bad["blackouts"] = json!([{"start": "2026-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"}]);
    bad["notify"] = json!({"advisory": {"summary": "kernel update", "details": SECRET}});
    let refused = env.create(policy("frozen", bad.clone())).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("spec.blackouts[0].end")
            && message.contains("must be before 9999-12-30T00:00:00Z"),
        "the CRD refuses the blackout end: {message:?}"
    );
    // ...but one stored under an older CRD without those rules is still in
    // the cluster: create it under such a CRD, then put the current one back.
    let crds: Api<CustomResourceDefinition> = Api::all(env.client()?);
    let crd_name = "patchpolicies.sofort.dev";
    let current = crds.get(crd_name).await?;
    let mut older = serde_json::to_value(&current)?;
    for version in older["spec"]["versions"]
        .as_array_mut()
        .ok_or("CRD without versions")?
    {
        let blackout = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["blackouts"]["items"]["properties"];
        for field in ["start", "end"] {
            if let Some(f) = blackout[field].as_object_mut() {
                f.remove("x-kubernetes-validations");
            }
        }
    }
    crds.replace(
        crd_name,
        &PostParams::default(),
        &serde_json::from_value(older)?,
    )
    .await?;
    env.create(policy("frozen", bad)).await?;
    let mut restored = current;
    restored.metadata.resource_version = crds.get(crd_name).await?.metadata.resource_version;
    crds.replace(crd_name, &PostParams::default(), &restored)
        .await?;
    env.create(policy("good", quick_spec())).await?;

    let stalled = env
        .wait_status("frozen", Duration::from_secs(30), |s| {
            s["phase"] == "Halted"
        })
        .await?;
    let stalled_cond = stalled["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Stalled"))
        .ok_or("no Stalled condition")?;
    assert_eq!(stalled_cond["status"], "True", "{stalled:#}");
    assert_eq!(stalled_cond["reason"], "InvalidSpec", "{stalled:#}");
    let message = stalled["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.blackouts[0].end"),
        "the message names the field: {message}"
    );

    env.wait_status("good", Duration::from_secs(120), |s| {
        s["phase"] == "Completed"
    })
    .await?;

    let log = env.log();
    assert!(!log.contains(SECRET), "advisory details in the log:\n{log}");
    assert!(
        !log.contains("PatchPolicyList"),
        "a policy list body in the log:\n{log}"
    );
    assert!(
        !log.contains("PatchPolicy watch error"),
        "the policy list failed as a whole:\n{log}"
    );
    env.finish().await;
    Ok(())
}
