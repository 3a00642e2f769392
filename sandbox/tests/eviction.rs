//! Eviction and PodDisruptionBudgets, through kube::Client against the simulated fleet.

mod common;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use sofort_sandbox::{SandboxConfig, Scenario, Workload};

fn scenario(workloads: Vec<Workload>) -> Scenario {
    let mut s = common::fast(Scenario::with_nodes(3));
    s.workloads = workloads;
    s
}

fn deployment(name: &str, replicas: i64) -> Workload {
    Workload {
        kind: "Deployment".into(),
        name: name.into(),
        namespace: "default".into(),
        replicas,
        ..Default::default()
    }
}

async fn ready_pods(api: &Api<Pod>, sel: &str, n: usize) -> Vec<Pod> {
    common::eventually(Duration::from_secs(10), "pods ready", || {
        let api = api.clone();
        let sel = sel.to_string();
        async move {
            let pods = api
                .list(&ListParams::default().labels(&sel))
                .await
                .ok()?
                .items;
            let ready: Vec<Pod> = pods
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .collect();
            (ready.len() == n).then_some(ready)
        }
    })
    .await
}

async fn pdb_settled(api: &Api<PodDisruptionBudget>, name: &str, allowed: i32) {
    common::eventually(Duration::from_secs(10), "pdb status", || {
        let api = api.clone();
        let name = name.to_string();
        async move {
            let p = api.get(&name).await.ok()?;
            let st = p.status?;
            (st.observed_generation == p.metadata.generation && st.disruptions_allowed == allowed)
                .then_some(())
        }
    })
    .await
}

fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn eviction_respects_the_budget() -> Result<(), Box<dyn std::error::Error>> {
    let mut sc = scenario(vec![deployment("web", 3)]);
    // Replacements take 3 s to become Ready, so the budget stays spent
    // between the two evictions below, however busy the machine.
    sc.timing.pod_start = sofort_sandbox::DurationRange::fixed(Duration::from_secs(3));
    let env = common::start(SandboxConfig::with_scenario(sc)).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), "default");
    ready_pods(&pods, "app=web", 3).await;
    pdbs.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})).unwrap()).await?;
    pdb_settled(&pdbs, "web", 1).await;
    let st = pdbs.get("web").await?.status.ok_or("no PDB status")?;
    assert_eq!(
        (st.current_healthy, st.desired_healthy, st.expected_pods),
        (3, 2, 3)
    );
    let victims = ready_pods(&pods, "app=web", 3).await;
    // First eviction is allowed and recorded in disruptedPods.
    let first = victims[0]
        .metadata
        .name
        .clone()
        .ok_or("pod without a name")?;
    pods.evict(&first, &EvictParams::default()).await?;
    let after = pdbs.get("web").await?.status.ok_or("no PDB status")?;
    assert_eq!(after.disruptions_allowed, 0);
    // The second is refused with 429 naming the budget.
    let second = victims[1]
        .metadata
        .name
        .clone()
        .ok_or("pod without a name")?;
    let s = api_err(
        pods.evict(&second, &EvictParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 429);
    assert_eq!(
        s.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let causes = s.details.unwrap().causes;
    assert_eq!(causes[0].reason, "DisruptionBudget");
    assert!(
        causes[0]
            .message
            .contains("The disruption budget web needs 2 healthy pods"),
        "{}",
        causes[0].message
    );
    // Once the replacement is Ready the budget allows one again.
    ready_pods(&pods, "app=web", 3).await;
    pdb_settled(&pdbs, "web", 1).await;
    pods.evict(&second, &EvictParams::default()).await?;
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn two_budgets_are_a_500_and_unhealthy_pods_follow_the_policy()
-> Result<(), Box<dyn std::error::Error>> {
    let env = common::start(SandboxConfig::with_scenario(scenario(vec![deployment(
        "api", 2,
    )])))
    .await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), "default");
    let ready = ready_pods(&pods, "app=api", 2).await;
    for n in ["a", "b"] {
        pdbs.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": n}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "api"}}}})).unwrap()).await?;
    }
    let name = ready[0].metadata.name.clone().ok_or("pod without a name")?;
    let s = api_err(
        pods.evict(&name, &EvictParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 500);
    assert_eq!(
        s.message,
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    // Unhealthy pod and a budget with no room: IfHealthyBudget refuses, AlwaysAllow deletes.
    use kube::api::{DeleteParams, Patch, PatchParams};
    pdbs.delete("b", &DeleteParams::default()).await?;
    pdbs.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxUnavailable": 0}})),
    )
    .await?;
    pdb_settled(&pdbs, "a", 0).await;
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})),
    )
    .await?;
    common::eventually(
        Duration::from_secs(5),
        "budget sees the unhealthy pod",
        || {
            let pdbs = pdbs.clone();
            async move { (pdbs.get("a").await.ok()?.status?.current_healthy == 1).then_some(()) }
        },
    )
    .await;
    let s = api_err(
        pods.evict(&name, &EvictParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 429);
    pdbs.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}})),
    )
    .await?;
    pods.evict(&name, &EvictParams::default()).await?;
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn reboot_through_the_simulated_host() -> Result<(), Box<dyn std::error::Error>> {
    let env = common::start(SandboxConfig::with_scenario(scenario(vec![]))).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.client.clone());
    let host = env.sandbox.host("worker-01")?;
    let before = host.boot_id();
    let n = nodes.get("worker-01").await?;
    assert_eq!(n.status.unwrap().node_info.unwrap().boot_id, before);
    host.set_reboot_required(true);
    assert!(host.reboot_required().unwrap());
    host.set_sentinel_error(Some("permission denied".into()));
    assert!(host.reboot_required().is_err());
    host.set_sentinel_error(None);
    let out = host
        .run_patch(
            &["apt-get".into(), "upgrade".into()],
            Duration::from_secs(1),
        )
        .await;
    assert!(matches!(out, sofort_sandbox::PatchOutcome::Success { .. }));
    host.set_patch_behaviour(sofort_sandbox::PatchBehaviour::Hang);
    assert_eq!(
        host.run_patch(&[], Duration::from_millis(50)).await,
        sofort_sandbox::PatchOutcome::TimedOut
    );
    let ready = |n: &k8s_openapi::api::core::v1::Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    // Every change of the node from before the reboot: NotReady lasts the
    // scenario's 300 ms, which polling on a busy machine can miss.
    let rv = nodes
        .list_metadata(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .ok_or("a Node list without a resourceVersion")?;
    let changes = nodes.watch(&WatchParams::default(), &rv).await?;
    let mut changes = std::pin::pin!(changes);
    host.reboot();
    assert_eq!(host.reboot_count(), 1);
    let mut went_down = false;
    let back = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = changes.next().await {
            let WatchEvent::Modified(n) = ev? else {
                continue;
            };
            if n.metadata.name.as_deref() != Some("worker-01") {
                continue;
            }
            if !ready(&n) {
                went_down = true;
            } else if went_down {
                return Ok::<_, kube::Error>(Some(n));
            }
        }
        Ok(None)
    })
    .await
    .map_err(|_| "worker-01 not NotReady and back Ready within 10 s")??
    .ok_or("the watch ended before worker-01 was back")?;
    let after = back.status.unwrap().node_info.unwrap().boot_id;
    assert_ne!(after, before);
    assert_eq!(host.boot_id(), after);
    assert!(!host.reboot_required().unwrap());
    // A node set to never return stays NotReady.
    env.sandbox.faults().node_never_returns("worker-02", true);
    env.sandbox.host("worker-02").unwrap().reboot();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!ready(&nodes.get("worker-02").await?));
    env.sandbox.shutdown().await;
    Ok(())
}

/// The node's `sandbox.sofort.dev/needs-reboot` annotation, if any.
async fn needs_reboot(nodes: &Api<k8s_openapi::api::core::v1::Node>, name: &str) -> Option<String> {
    nodes
        .get(name)
        .await
        .ok()?
        .metadata
        .annotations?
        .get(sofort_sandbox::NEEDS_REBOOT_ANNOTATION)
        .cloned()
}

async fn annotate(
    nodes: &Api<k8s_openapi::api::core::v1::Node>,
    name: &str,
    value: &str,
) -> Result<(), kube::Error> {
    let patch =
        json!({"metadata": {"annotations": {sofort_sandbox::NEEDS_REBOOT_ANNOTATION: value}}});
    nodes
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map(|_| ())
}

#[tokio::test]
async fn needs_reboot_annotation_creates_the_sentinel_once()
-> Result<(), Box<dyn std::error::Error>> {
    let env = common::start(SandboxConfig::with_scenario(scenario(vec![]))).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.client.clone());
    let (w1, w2, w3) = (
        env.sandbox.host("worker-01")?,
        env.sandbox.host("worker-02")?,
        env.sandbox.host("worker-03")?,
    );
    // Any value but "true" is left alone; "true" is consumed.
    annotate(&nodes, "worker-03", "false").await?;
    annotate(&nodes, "worker-01", "true").await?;
    common::eventually(Duration::from_secs(5), "worker-01 consumed", || {
        let nodes = nodes.clone();
        async move {
            needs_reboot(&nodes, "worker-01")
                .await
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(w1.reboot_required()?, "the request created the sentinel");
    assert!(!w2.reboot_required()? && !w3.reboot_required()?);
    assert_eq!(
        needs_reboot(&nodes, "worker-03").await.as_deref(),
        Some("false")
    );
    // The next reboot clears the sentinel, and nothing sets it again.
    let before = w1.boot_id();
    w1.reboot();
    common::eventually(Duration::from_secs(5), "worker-01 back", || {
        let w1 = w1.clone();
        async move { w1.is_up().then_some(()) }
    })
    .await;
    assert_ne!(w1.boot_id(), before);
    assert!(!w1.reboot_required()?);
    assert_eq!(needs_reboot(&nodes, "worker-01").await, None);

    // A request made while the host is down waits until it is back up, so
    // the reboot that is under way does not clear it.
    env.sandbox.faults().node_never_returns("worker-02", true);
    w2.reboot();
    common::eventually(Duration::from_secs(5), "worker-02 down", || {
        let w2 = w2.clone();
        async move { (!w2.is_up()).then_some(()) }
    })
    .await;
    annotate(&nodes, "worker-02", "true").await?;
    annotate(&nodes, "worker-03", "true").await?;
    common::eventually(Duration::from_secs(5), "worker-03 consumed", || {
        let nodes = nodes.clone();
        async move {
            needs_reboot(&nodes, "worker-03")
                .await
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(w3.reboot_required()?);
    assert_eq!(
        needs_reboot(&nodes, "worker-02").await.as_deref(),
        Some("true"),
        "kept while the host is down"
    );
    assert!(!w2.reboot_required()?);
    env.sandbox.faults().node_never_returns("worker-02", false);
    common::eventually(
        Duration::from_secs(10),
        "worker-02 consumed after it is back",
        || {
            let nodes = nodes.clone();
            async move {
                needs_reboot(&nodes, "worker-02")
                    .await
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;
    assert!(w2.is_up());
    assert!(
        w2.reboot_required()?,
        "the sentinel was created after the reboot"
    );
    env.sandbox.shutdown().await;
    Ok(())
}
