//! The sandbox's `sandbox.sofort.dev/needs-reboot` annotation, end to end: set
//! with the installed kubectl, it makes the node's simulated host create its
//! reboot-required sentinel; the real agent of that node then reports
//! `sofort.dev/reboot-required=true`, and after the host's reboot `false`
//! again, for good (the annotation was consumed, not re-applied).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::{Api, ResourceExt};
use sofort::testkit::Cluster;
use sofort_sandbox::{DurationRange, NEEDS_REBOOT_ANNOTATION, NodeGroup, Scenario, SimDuration};

const LABEL: &str = "sofort.dev/reboot-required";
/// How often the agents look at the sentinel in this test.
const CHECK: Duration = Duration::from_millis(200);

fn scenario() -> Scenario {
    let mut s = Scenario::empty();
    s.timing.reboot = DurationRange::fixed(Duration::from_millis(300));
    s.timing.pod_start = DurationRange::fixed(Duration::from_millis(50));
    s.timing.pod_termination = SimDuration(Duration::from_millis(50));
    s.nodes = vec![NodeGroup {
        name_prefix: Some("w".into()),
        count: 3,
        roles: vec!["worker".into()],
        ..NodeGroup::default()
    }];
    s
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each node's (reboot-required label, needs-reboot annotation).
async fn reports(api: &Api<Node>, names: &[&str]) -> Vec<(Option<String>, Option<String>)> {
    let mut out = vec![];
    for n in names {
        let node = api.get(n).await.unwrap();
        out.push((
            node.labels().get(LABEL).cloned(),
            node.annotations().get(NEEDS_REBOOT_ANNOTATION).cloned(),
        ));
    }
    out
}

async fn wait_for(
    api: &Api<Node>,
    names: &[&str],
    want: &[(Option<&str>, Option<&str>)],
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = reports(api, names).await;
        let matches = got
            .iter()
            .zip(want)
            .all(|((l, a), (wl, wa))| l.as_deref() == *wl && a.as_deref() == *wa);
        if matches {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn annotated_node_reports_reboot_required_until_its_next_reboot() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("sofort-e2e-needs-reboot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let mut cluster = Cluster::start(scenario(), 0, kubeconfig.clone())
        .await
        .unwrap();
    cluster.spawn_agents_checking_every(false, CHECK).unwrap();
    let api: Api<Node> = Api::all(cluster.client.clone());
    let names = ["w-01", "w-02", "w-03"];
    let quiet = (Some("false"), None);
    wait_for(&api, &names, &[quiet; 3], "agents report no reboot needed").await;

    kubectl(
        &kubeconfig,
        &[
            "annotate",
            "node",
            "w-02",
            &format!("{NEEDS_REBOOT_ANNOTATION}=true"),
        ],
    );
    wait_for(
        &api,
        &names,
        &[quiet, (Some("true"), None), quiet],
        "the agent of w-02 reports the sentinel, the annotation is consumed",
    )
    .await;
    let host = cluster.sandbox.host("w-02").unwrap();
    let boot = host.boot_id();

    // The reboot (as the controller's request would make the agent do).
    host.reboot();
    wait_for(
        &api,
        &names,
        &[quiet; 3],
        "after the reboot w-02 needs none",
    )
    .await;
    assert_ne!(host.boot_id(), boot, "w-02 rebooted");
    assert_eq!(host.reboot_count(), 1);
    // Several checks later it still needs none: nothing re-applied the request.
    let since = Instant::now();
    while since.elapsed() < CHECK * 5 {
        assert_eq!(
            reports(&api, &names).await,
            vec![(Some("false".into()), None); 3]
        );
        tokio::time::sleep(CHECK / 2).await;
    }
    assert!(!host.reboot_required().unwrap());
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
