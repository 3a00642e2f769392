//! End-to-end test of quieter drains: the real `sofort controller` binary
//! (with the chart's RBAC) against the sandbox's API emulator, real agents on
//! simulated hosts. Nodes queued in an announced rollout carry the
//! `sofort.dev/pending-reboot` taint until their turn; the labels of
//! `rollout.nodeLabels.during` are on each node while it is maintained and
//! gone after its uncordon, while an admin's own label and taint stay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{
    ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use sofort::api::PatchPolicy;
use sofort::testkit::Cluster;
use sofort_sandbox::{NodeGroup, Scenario};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TAINT: &str = "sofort.dev/pending-reboot";
const LB: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const MAINTENANCE: &str = "example.com/maintenance";

struct Env {
    cluster: Option<Cluster>,
    controller: Option<Child>,
    dir: PathBuf,
}

impl Env {
    async fn start(name: &str, nodes: usize) -> Result<Env, Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("sofort-e2eq-{name}-{}", std::process::id()));
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
        // The controller runs with the chart's RBAC.
        let kubeconfig = dir.join("controller.kubeconfig");
        std::fs::write(&kubeconfig, cluster.controller_kubeconfig_yaml())?;
        Ok(Env {
            cluster: Some(cluster),
            controller: None,
            dir,
        })
    }

    fn start_controller(&mut self) -> TestResult {
        let log = std::fs::File::create(self.dir.join("controller.log"))?;
        let controller = Command::new(env!("CARGO_BIN_EXE_sofort"))
            .args([
                "controller",
                "--no-leader-election",
                "--metrics-addr",
                "127.0.0.1:0",
                "--eviction-retry",
                "500ms",
                "--debounce",
                "20ms",
            ])
            .env("KUBECONFIG", self.dir.join("controller.kubeconfig"))
            .env("SOFORT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.controller = Some(controller);
        Ok(())
    }

    fn client(&self) -> Result<Client, &'static str> {
        Ok(self.cluster.as_ref().ok_or("no cluster")?.client.clone())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("controller.log")).unwrap_or_default()
    }

    async fn nodes(&self) -> Result<Vec<Node>, Box<dyn std::error::Error>> {
        let api: Api<Node> = Api::all(self.client()?);
        Ok(api.list(&ListParams::default()).await?.items)
    }

    /// Waits up to 120 s for PatchPolicy `name` to be Completed.
    async fn wait_completed(&self, name: &str) -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.status(name).await?["phase"] != "Completed" {
            if Instant::now() > deadline {
                return Err(format!("not Completed in time\n{}", self.log()).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Records every change of every Node from now on.
    async fn watch_nodes(&self) -> Result<NodeChanges, Box<dyn std::error::Error>> {
        let api: Api<Node> = Api::all(self.client()?);
        let rv = api
            .list_metadata(&ListParams::default())
            .await?
            .metadata
            .resource_version
            .ok_or("a Node list without a resourceVersion")?;
        let stream = api.watch(&WatchParams::default(), &rv).await?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Added(n) | WatchEvent::Modified(n) = ev {
                    into.lock().unwrap_or_else(|e| e.into_inner()).push(n);
                }
            }
        });
        Ok(NodeChanges { seen, task })
    }

    async fn patch_node(&self, name: &str, patch: Value) -> TestResult {
        let api: Api<Node> = Api::all(self.client()?);
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    async fn status(&self, name: &str) -> Result<Value, Box<dyn std::error::Error>> {
        let raw: Api<DynamicObject> =
            Api::all_with(self.client()?, &ApiResource::erase::<PatchPolicy>(&()));
        let obj = raw.get(name).await?;
        Ok(obj.data.get("status").cloned().unwrap_or(Value::Null))
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

/// Every change of every Node a watch has delivered, in order.
struct NodeChanges {
    seen: Arc<Mutex<Vec<Node>>>,
    task: tokio::task::JoinHandle<()>,
}

impl NodeChanges {
    /// Every change up to the one where each of `names` is last seen
    /// [`at_rest`], waiting up to 10 s for it; an error if the watch ended
    /// or the last change of some node is not at rest by then.
    async fn until_at_rest(
        self,
        names: &[String],
    ) -> Result<Vec<Node>, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let last = |name: &String| seen.iter().rev().find(|n| &n.name_any() == name);
            if names.iter().all(|name| last(name).is_some_and(at_rest)) {
                self.task.abort();
                return Ok(seen);
            }
            if self.task.is_finished() || Instant::now() > deadline {
                self.task.abort();
                let last: Vec<_> = names.iter().map(|n| (n, last(n).map(taint_keys))).collect();
                return Err(format!("the watch did not see every node at rest: {last:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Done with: uncordoned, neither sofort's label nor its taint.
fn at_rest(n: &Node) -> bool {
    !unschedulable(n) && label(n, LB).is_none() && !has_pending(n)
}

fn taint_keys(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        })
        .unwrap_or_default()
}

fn has_pending(n: &Node) -> bool {
    taint_keys(n).contains(&format!("{TAINT}:PreferNoSchedule"))
}

fn label<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    n.labels().get(key).map(String::as_str)
}

fn unschedulable(n: &Node) -> bool {
    n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_nodes_are_tainted_and_maintained_nodes_labelled_until_uncordoned() -> TestResult {
    let mut env = Env::start("quiet", 4).await?;
    let mut names: Vec<String> = env.nodes().await?.iter().map(|n| n.name_any()).collect();
    names.sort();
    let [first, second, ..] = &names[..] else {
        return Err("four nodes expected".into());
    };
    // An admin's own taint and an admin's own maintenance label, both kept.
    env.patch_node(
        first,
        json!({"spec": {"taints": [{"key": "example.com/gpu", "effect": "NoSchedule"}]}}),
    )
    .await?;
    env.patch_node(
        second,
        json!({"metadata": {"labels": {MAINTENANCE: "admin"}}}),
    )
    .await?;
    env.start_controller()?;

    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "sofort.dev/v1alpha1", "kind": "PatchPolicy",
        "metadata": {"name": "quiet"},
        "spec": {
            "revision": "r1",
            "announce": {"leadTime": "4s"},
            "rollout": {
                "settle": "1s", "maxUnavailable": 1,
                "nodeLabels": {"during": {LB: "true", MAINTENANCE: "yes"}, "waitAfterSet": "1s"},
            },
            "drain": {"timeout": "30s"},
            "reboot": {"timeout": "60s"},
        },
    }))?;
    // Every change of every Node from before the policy exists: each
    // node's taint while it is queued and its steps with and without the
    // label (a reboot at this speed is a few hundred milliseconds, which
    // polling on a busy machine can miss).
    let changes = env.watch_nodes().await?;
    let raw: Api<DynamicObject> =
        Api::all_with(env.client()?, &ApiResource::erase::<PatchPolicy>(&()));
    raw.create(&PostParams::default(), &policy).await?;

    // Announced: Scheduled for the 4 s lead time before anything else.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = env.status("quiet").await?;
        if status["phase"] == "Scheduled" {
            break;
        }
        if Instant::now() > deadline || !status["phase"].is_null() {
            return Err(format!("not Scheduled first: {status:#}\n{}", env.log()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.wait_completed("quiet").await?;
    let seen = changes.until_at_rest(&names).await?;
    // Queued: every node carries the pending-reboot taint before its cordon.
    for name in &names {
        let tainted = seen
            .iter()
            .filter(|n| &n.name_any() == name)
            .take_while(|n| !unschedulable(n))
            .any(has_pending);
        assert!(
            tainted,
            "{name} cordoned without having been tainted while queued"
        );
    }
    let mut labelled_steps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut violations: Vec<String> = Vec::new();
    for n in &seen {
        let name = n.name_any();
        let step = label(n, "sofort.dev/step").map(String::from);
        let lb = label(n, LB).is_some();
        match &step {
            Some(step) if lb => {
                labelled_steps
                    .entry(name.clone())
                    .or_default()
                    .insert(step.clone());
            }
            Some(step) if step != "Failed" => {
                violations.push(format!("{name} at {step} without the label"))
            }
            _ if lb => violations.push(format!("{name} labelled while not maintained")),
            _ => {}
        }
        if lb && !unschedulable(n) {
            violations.push(format!("{name} labelled and schedulable"));
        }
    }
    assert!(violations.is_empty(), "{violations:?}");
    for name in &names {
        let steps = labelled_steps.get(name).cloned().unwrap_or_default();
        assert!(
            steps.contains("Draining") && steps.contains("Rebooting"),
            "{name} labelled at {steps:?} only"
        );
    }

    // Afterwards: no taint of sofort's, no label of sofort's, uncordoned;
    // the admin's taint and label are as they were.
    let nodes = env.nodes().await?;
    for n in &nodes {
        let name = n.name_any();
        assert!(!has_pending(n), "{name} still tainted: {:?}", taint_keys(n));
        assert!(!unschedulable(n), "{name} left cordoned");
        assert_eq!(label(n, LB), None, "{name}");
        if &name == first {
            assert_eq!(taint_keys(n), ["example.com/gpu:NoSchedule"]);
        }
        if &name == second {
            assert_eq!(label(n, MAINTENANCE), Some("admin"));
        } else {
            assert_eq!(label(n, MAINTENANCE), None, "{name}");
        }
    }
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_controller_killed_while_a_node_waits_after_labelling_resumes_from_the_node() -> TestResult
{
    let mut env = Env::start("quiet-restart", 2).await?;
    env.start_controller()?;
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "sofort.dev/v1alpha1", "kind": "PatchPolicy",
        "metadata": {"name": "quiet"},
        "spec": {
            "revision": "r1",
            "rollout": {
                "settle": "1s", "maxUnavailable": 1,
                "nodeLabels": {"during": {LB: "true"}, "waitAfterSet": "3s"},
            },
            "drain": {"timeout": "30s"},
            "reboot": {"timeout": "60s"},
        },
    }))?;
    let raw: Api<DynamicObject> =
        Api::all_with(env.client()?, &ApiResource::erase::<PatchPolicy>(&()));
    raw.create(&PostParams::default(), &policy).await?;

    // The first node is labelled, cordoned and waiting: kill the controller.
    let deadline = Instant::now() + Duration::from_secs(20);
    let waiting = loop {
        let nodes = env.nodes().await?;
        if let Some(n) = nodes.iter().find(|n| label(n, LB).is_some()) {
            break n.name_any();
        }
        if Instant::now() > deadline {
            return Err(format!("no node labelled in time\n{}", env.log()).into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    if let Some(mut c) = env.controller.take() {
        c.kill()?;
        c.wait()?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.start_controller()?;

    env.wait_completed("quiet").await?;
    for n in env.nodes().await? {
        let name = n.name_any();
        assert_eq!(label(&n, LB), None, "{name} kept the label");
        assert!(!unschedulable(&n), "{name} left cordoned");
        assert!(!has_pending(&n), "{name} still tainted");
        let done = n
            .annotations()
            .get("sofort.dev/done")
            .cloned()
            .unwrap_or_default();
        assert!(
            done.contains("\"quiet\":\"r1\""),
            "{name} (killed while {waiting} waited): {done}"
        );
    }
    env.finish().await;
    Ok(())
}
