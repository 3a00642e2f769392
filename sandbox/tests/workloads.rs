//! A workload made unhealthy with `sandbox.sofort.dev/unhealthy=true`: its
//! controller reports one replica short of ready until the annotation goes,
//! while its pods stay Ready.

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use sofort_sandbox::{SandboxConfig, Scenario, UNHEALTHY_ANNOTATION, Workload};

fn workload(kind: &str, name: &str, replicas: i64) -> Workload {
    Workload {
        kind: kind.into(),
        name: name.into(),
        namespace: "shop".into(),
        replicas,
        ..Default::default()
    }
}

/// (ready, desired) as each kind's status reports them, with the
/// Deployment's `Available` condition.
#[derive(Debug, PartialEq)]
struct Health {
    web: (i32, i32, Option<String>),
    db: (i32, i32),
    agent: (i32, i32),
}

async fn health(client: &kube::Client) -> Option<Health> {
    let d = Api::<Deployment>::namespaced(client.clone(), "shop")
        .get("web")
        .await
        .ok()?;
    let s = Api::<StatefulSet>::namespaced(client.clone(), "shop")
        .get("db")
        .await
        .ok()?;
    let ds = Api::<DaemonSet>::namespaced(client.clone(), "shop")
        .get("agent")
        .await
        .ok()?;
    let dst = d.status?;
    let available = dst
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Available")
        .map(|c| c.status.clone());
    let sst = s.status?;
    let dsst = ds.status?;
    Some(Health {
        web: (dst.ready_replicas.unwrap_or(0), 2, available),
        db: (sst.ready_replicas.unwrap_or(0), 3),
        agent: (dsst.number_ready, dsst.desired_number_scheduled),
    })
}

async fn wait_health(client: &kube::Client, want: Health) {
    common::eventually(Duration::from_secs(10), "workload status", || {
        let client = client.clone();
        let want = &want;
        async move { health(&client).await.filter(|h| h == want) }
    })
    .await;
}

async fn annotate(client: &kube::Client, value: Value) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"annotations": {UNHEALTHY_ANNOTATION: value}}});
    let pp = PatchParams::default();
    Api::<Deployment>::namespaced(client.clone(), "shop")
        .patch("web", &pp, &Patch::Merge(&patch))
        .await?;
    Api::<StatefulSet>::namespaced(client.clone(), "shop")
        .patch("db", &pp, &Patch::Merge(&patch))
        .await?;
    Api::<DaemonSet>::namespaced(client.clone(), "shop")
        .patch("agent", &pp, &Patch::Merge(&patch))
        .await?;
    Ok(())
}

fn ready_pods(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

#[tokio::test]
async fn an_annotated_workload_reports_one_replica_short_until_the_annotation_goes()
-> Result<(), Box<dyn std::error::Error>> {
    let mut sc = common::fast(Scenario::with_nodes(3));
    sc.workloads = vec![
        workload("Deployment", "web", 2),
        workload("StatefulSet", "db", 3),
        workload("DaemonSet", "agent", 1),
    ];
    let env = common::start(SandboxConfig::with_scenario(sc)).await;
    let client = env.client.clone();
    let healthy = || Health {
        web: (2, 2, Some("True".into())),
        db: (3, 3),
        agent: (3, 3),
    };
    wait_health(&client, healthy()).await;

    annotate(&client, json!("true")).await?;
    wait_health(
        &client,
        Health {
            web: (1, 2, Some("False".into())),
            db: (2, 3),
            agent: (2, 3),
        },
    )
    .await;
    // Only the reported status changes: every pod is still Ready.
    let pods = Api::<Pod>::namespaced(client.clone(), "shop")
        .list(&ListParams::default())
        .await?
        .items;
    assert_eq!((pods.len(), ready_pods(&pods)), (8, 8));
    // Any other value is no mark.
    annotate(&client, json!("false")).await?;
    wait_health(&client, healthy()).await;
    annotate(&client, json!("true")).await?;
    wait_health(
        &client,
        Health {
            web: (1, 2, Some("False".into())),
            db: (2, 3),
            agent: (2, 3),
        },
    )
    .await;
    // Removing the annotation makes it healthy again.
    annotate(&client, Value::Null).await?;
    wait_health(&client, healthy()).await;
    Ok(())
}
