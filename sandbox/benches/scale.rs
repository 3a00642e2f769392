//! Scale benchmark: 5,000 nodes and 50,000 pods in the sandbox; prints list
//! latencies and the process's memory. Run with `cargo bench -p sofort-sandbox`.
//! SCALE_NODES and SCALE_PODS_PER_NODE override the size.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use sofort_sandbox::{Sandbox, SandboxConfig, Scenario, Workload};

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn time<F, Fut, T>(runs: usize, mut f: F) -> (Duration, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f().await);
        best = best.min(t.elapsed());
    }
    (best, last.expect("at least one run"))
}

/// How many objects a list returns.
async fn count<K>(api: &Api<K>, lp: &ListParams) -> Result<usize, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api.list(lp).await?.items.len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nodes = env_usize("SCALE_NODES", 5_000);
    let per_node = env_usize("SCALE_PODS_PER_NODE", 10);
    let mut scenario = Scenario::empty();
    scenario.nodes = vec![sofort_sandbox::NodeGroup {
        name_prefix: Some("node".into()),
        count: nodes,
        zones: vec!["zone-a".into(), "zone-b".into(), "zone-c".into()],
        roles: vec!["worker".into()],
        ..Default::default()
    }];
    scenario.timing.pod_start = sofort_sandbox::DurationRange::fixed(Duration::ZERO);
    scenario.workloads = (0..per_node)
        .map(|i| Workload {
            kind: "DaemonSet".into(),
            name: format!("agent-{i}"),
            namespace: "bench".into(),
            ..Default::default()
        })
        .collect();
    let rss0 = rss_mib();
    let t0 = Instant::now();
    let sandbox = Sandbox::start(SandboxConfig::with_scenario(scenario)).await?;
    let want = nodes * per_node;
    while sandbox.object_count("pods") < want {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if t0.elapsed() > Duration::from_secs(600) {
            eprintln!(
                "gave up waiting: {} of {want} pods",
                sandbox.object_count("pods")
            );
            break;
        }
    }
    let seeded = t0.elapsed();
    // Let the kubelets mark everything Running.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dir = std::env::temp_dir().join(format!("sofort-sandbox-bench-{}", std::process::id()));
    let kc_path = dir.join("kubeconfig");
    sandbox.write_kubeconfig(&kc_path)?;
    let kc = kube::config::Kubeconfig::read_from(&kc_path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let node_api: Api<Node> = Api::all(client.clone());
    let pod_api: Api<Pod> = Api::all(client.clone());
    let all = ListParams::default();
    let (t_nodes, n) = time(3, || count(&node_api, &all)).await;
    let (t_pods, p) = time(3, || count(&pod_api, &all)).await;
    let page = ListParams::default().limit(500);
    let (t_page, _) = time(3, || count(&pod_api, &page)).await;
    let by_node = ListParams::default().fields("spec.nodeName=node-2500");
    let (t_field, fp) = time(5, || count(&pod_api, &by_node)).await;
    let by_zone = ListParams::default().labels("topology.kubernetes.io/zone=zone-b");
    let (t_label, lp) = time(3, || count(&node_api, &by_zone)).await;
    let (n, p, fp, lp) = (n?, p?, fp?, lp?);
    println!("sandbox scale benchmark");
    println!("  nodes: {n}, pods: {p}");
    println!(
        "  seeding (nodes + controllers creating pods): {:.1} s",
        seeded.as_secs_f64()
    );
    println!(
        "  list all nodes:                 {:>8.1} ms",
        t_nodes.as_secs_f64() * 1e3
    );
    println!(
        "  list all pods:                  {:>8.1} ms",
        t_pods.as_secs_f64() * 1e3
    );
    println!(
        "  list pods, limit=500:           {:>8.1} ms",
        t_page.as_secs_f64() * 1e3
    );
    println!(
        "  list pods spec.nodeName=X ({fp}):  {:>8.1} ms",
        t_field.as_secs_f64() * 1e3
    );
    println!(
        "  list nodes by zone label ({lp}): {:>8.1} ms",
        t_label.as_secs_f64() * 1e3
    );
    println!("  RSS: {:.0} MiB (before start {:.0} MiB)", rss_mib(), rss0);
    println!("  requests served: {}", sandbox.stats().total());
    sandbox.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
