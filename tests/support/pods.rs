//! Test helper shared by the test crates that start a sandbox with workloads.

use std::time::{Duration, Instant};

use kube::api::ListParams;
use kube::{Api, Client};

/// Waits until the workloads' pods are all scheduled and Ready.
pub async fn wait_pods_ready(client: &Client, expect: usize) {
    use k8s_openapi::api::core::v1::Pod;
    let api: Api<Pod> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = api.list(&ListParams::default()).await.unwrap().items;
        let ready = pods
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= expect {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workload pods did not become Ready: {ready}/{expect}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
