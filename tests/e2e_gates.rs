//! Health gates end to end: the real controller (in process) and agents on
//! the sandbox, gated by the real Prometheus and Alertmanager started by the
//! test. A pushed metric fires an alert and the rollout holds with the reason
//! in its status; clearing the metric resolves the alert and the rollout
//! completes; an operator's silence in Alertmanager releases it with
//! `respectSilences`; `silenceDuringMaintenance` creates a silence per node in
//! progress and expires it when the node is done (read back from
//! Alertmanager).
//!
//! The blocking-pod and workloads gates and the pre-flight run against the
//! sandbox alone: a pod matching `blockingPods` holds its node and its group
//! until it is deleted; a StatefulSet made unhealthy (the sandbox's
//! `sandbox.sofort.dev/unhealthy` annotation) holds the next node after its
//! settle, the status naming it, until it is healthy again.

#[path = "support/monitoring.rs"]
mod monitoring;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;
use kube::{Api, Client};
use monitoring::{Monitoring, eventually};
use sofort::api::{
    AlertmanagerGate, AlertsGate, GatesSpec, MaintenanceSilence, PatchPolicy, PatchPolicySpec,
    PatchPolicyStatus, Phase, PrometheusGate,
};
use sofort::controller::gates::{Limits, MonitoringClient, NewSilence};
use sofort::core::gates::alerts::{AlertState, MatcherTemplate};
use sofort::testkit::{Cluster, sandbox_controller_config};
use sofort_sandbox::{DurationRange, NodeGroup, Scenario};

const RULES: &str = r#"groups:
  - name: gates
    rules:
      - alert: NodeDiskPressure
        expr: gate_test_problem > 0
"#;

const WITHIN: Duration = Duration::from_secs(60);

fn scenario() -> Scenario {
    let mut s = Scenario::empty();
    s.speed = 50.0;
    s.timing.reboot = DurationRange::fixed(Duration::from_secs(20));
    s.nodes = vec![NodeGroup {
        name_prefix: Some("w".into()),
        count: 3,
        zones: vec!["zone-a".into()],
        roles: vec!["worker".into()],
        ..NodeGroup::default()
    }];
    s
}

fn policy(m: &Monitoring, respect_silences: bool) -> PatchPolicy {
    let mut spec = PatchPolicySpec::new("r1");
    spec.urgent = true;
    spec.rollout.max_unavailable = IntOrString::Int(1);
    spec.rollout.settle = "1s".into();
    spec.drain.timeout = "30s".into();
    spec.reboot.timeout = "60s".into();
    spec.gates = Some(GatesSpec {
        prometheus: Some(PrometheusGate {
            url: Some(m.prometheus.url()),
            url_secret_ref: None,
            ca_bundle_secret_ref: None,
            alerts: Some(AlertsGate {
                names: vec!["Node.*".into()],
                ..AlertsGate::default()
            }),
            queries: vec![],
        }),
        alertmanager: Some(AlertmanagerGate {
            url: Some(m.alertmanager.url()),
            url_secret_ref: None,
            ca_bundle_secret_ref: None,
            respect_silences,
            silence_during_maintenance: Some(MaintenanceSilence {
                matchers: vec![r#"instance=~"{node}(:.*)?""#.into()],
            }),
        }),
        ..GatesSpec::default()
    });
    PatchPolicy::new("gated", spec)
}

struct Run {
    cluster: Cluster,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn start(p: &PatchPolicy) -> Run {
    start_with(scenario(), p).await
}

async fn start_with(s: Scenario, p: &PatchPolicy) -> Run {
    start_then(s, p, |_| async {}).await
}

/// Starts the sandbox, agents and controller, runs `before` (with the
/// admin client), then applies `p`.
async fn start_then<F, Fut>(s: Scenario, p: &PatchPolicy, before: F) -> Run
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(s, 0, dir.path().join("kubeconfig"))
        .await
        .unwrap();
    cluster.spawn_agents(true).unwrap();
    let mut cfg = sandbox_controller_config();
    cfg.gate_interval = Duration::from_millis(500);
    cluster.spawn_controller(cfg);
    let client = cluster.client.clone();
    before(client.clone()).await;
    let api: Api<PatchPolicy> = Api::all(client.clone());
    api.create(&PostParams::default(), p).await.unwrap();
    Run {
        cluster,
        client,
        _dir: dir,
    }
}

/// The status messages seen, each once, in order.
#[derive(Default)]
struct Transcript {
    start: Option<Instant>,
    lines: Vec<String>,
}

impl Transcript {
    fn see(&mut self, st: &PatchPolicyStatus) {
        let start = *self.start.get_or_insert_with(Instant::now);
        let gates = st
            .conditions
            .iter()
            .find(|c| c.type_ == "GatesOpen")
            .map_or("-", |c| c.status.as_str());
        let line = format!(
            "{:?} GatesOpen={gates}: {}",
            st.phase,
            st.message.as_deref().unwrap_or("")
        );
        if self
            .lines
            .last()
            .map(|l| l.split_once("s ").map_or("", |x| x.1))
            != Some(line.as_str())
        {
            self.lines
                .push(format!("{:>5.1}s {line}", start.elapsed().as_secs_f64()));
        }
    }
}

async fn status(client: &Client) -> PatchPolicyStatus {
    let api: Api<PatchPolicy> = Api::all(client.clone());
    api.get("gated").await.unwrap().status.unwrap_or_default()
}

/// Waits until `want` holds of the status, recording the transcript.
async fn wait_status(
    client: &Client,
    t: &mut Transcript,
    what: &str,
    mut want: impl FnMut(&PatchPolicyStatus) -> bool,
) -> PatchPolicyStatus {
    let deadline = Instant::now() + WITHIN;
    loop {
        let st = status(client).await;
        t.see(&st);
        if want(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached within {WITHIN:?}; transcript:\n{}\nstatus: {st:#?}",
            t.lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fire(m: &Monitoring, prom: &MonitoringClient) {
    m.push("disk", "w-9", "gate_test_problem", 1.0);
    eventually(WITHIN, "the alert firing", || async {
        let a = prom.prometheus_alerts().await.ok()?;
        a.iter()
            .any(|a| a.state == AlertState::Firing)
            .then_some(())
    })
    .await;
}

fn held(st: &PatchPolicyStatus) -> bool {
    st.message
        .as_deref()
        .is_some_and(|m| m.contains("waiting: alert NodeDiskPressure firing on w-9 (since "))
        && st
            .conditions
            .iter()
            .any(|c| c.type_ == "GatesOpen" && c.status == "False")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_firing_alert_holds_the_rollout_until_it_resolves_and_maintenance_silences_come_and_go() {
    let m = Monitoring::start(RULES);
    let prom = MonitoringClient::new(&m.prometheus.url(), None, Limits::default()).unwrap();
    let am = MonitoringClient::new(&m.alertmanager.url(), None, Limits::default()).unwrap();
    fire(&m, &prom).await;
    let run = start(&policy(&m, false)).await;
    let mut t = Transcript::default();
    let st = wait_status(&run.client, &mut t, "the hold", held).await;
    assert!(st.active.is_empty(), "no node started: {:?}", st.active);
    // Held for several gate intervals: still nothing starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = wait_status(&run.client, &mut t, "the hold", held).await;
    assert!(st.active.is_empty() && st.nodes.as_ref().is_some_and(|n| n.updated == 0));

    m.clear("disk", "w-9");
    // While it runs: sofort's silence for each node in progress.
    let mut silenced = BTreeSet::new();
    let deadline = Instant::now() + WITHIN;
    loop {
        let st = status(&run.client).await;
        t.see(&st);
        for s in am.silences().await.unwrap_or_default() {
            if s.created_by == "sofort" && s.state == "active" {
                let node = s.comment.rsplit(' ').next().unwrap_or("").to_string();
                silenced.insert(node);
            }
        }
        if st.phase == Some(Phase::Completed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not completed:\n{}",
            t.lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A node is in progress for about a second and a half, which a look
    // every 100 ms on a busy machine can miss; Alertmanager keeps expired
    // silences, so the whole set is read once more now.
    for s in am.silences().await.unwrap_or_default() {
        if s.created_by == "sofort" {
            silenced.insert(s.comment.rsplit(' ').next().unwrap_or("").to_string());
        }
    }
    assert_eq!(
        silenced.into_iter().collect::<Vec<_>>(),
        ["w-01", "w-02", "w-03"],
        "a silence per node in progress"
    );
    // Every one of them is expired once its node is done.
    eventually(WITHIN, "sofort's silences expired", || async {
        let all = am.silences().await.ok()?;
        let ours: Vec<_> = all.iter().filter(|s| s.created_by == "sofort").collect();
        (!ours.is_empty() && ours.iter().all(|s| s.state == "expired")).then_some(())
    })
    .await;
    println!(
        "held-then-released rollout, status over time:\n{}",
        t.lines.join("\n")
    );
    run.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operators_silence_releases_the_hold_with_respect_silences() {
    let m = Monitoring::start(RULES);
    let prom = MonitoringClient::new(&m.prometheus.url(), None, Limits::default()).unwrap();
    let am = MonitoringClient::new(&m.alertmanager.url(), None, Limits::default()).unwrap();
    fire(&m, &prom).await;
    let run = start(&policy(&m, true)).await;
    let mut t = Transcript::default();
    wait_status(&run.client, &mut t, "the hold", held).await;
    let now = Timestamp::now();
    let matcher = MatcherTemplate::parse(r#"instance="{node}""#, 0)
        .unwrap()
        .for_node("w-9")
        .unwrap();
    am.create_silence(&NewSilence {
        matchers: vec![matcher],
        starts_at: now,
        ends_at: now + Duration::from_secs(600),
        comment: "known disk alarm, safe to patch".into(),
        created_by: "operator".into(),
    })
    .await
    .unwrap();
    let st = wait_status(&run.client, &mut t, "completion", |s| {
        s.phase == Some(Phase::Completed)
    })
    .await;
    // The alert still fires; only the silence let the rollout through.
    let a = prom.prometheus_alerts().await.unwrap();
    assert!(a.iter().any(|a| a.state == AlertState::Firing));
    assert!(st.gates.iter().all(|g| g.open), "{:?}", st.gates);
    run.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_preflight_reports_nodes_a_pdb_allowing_no_disruption_would_block() {
    use sofort_sandbox::{PdbSpec, Workload};
    let mut s = scenario();
    s.workloads = vec![Workload {
        kind: "Deployment".into(),
        name: "db".into(),
        namespace: "shop".into(),
        replicas: 3,
        pdb: Some(PdbSpec {
            max_unavailable: Some(serde_json::json!(0)),
            ..PdbSpec::default()
        }),
        ..Workload::default()
    }];
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(s, 0, dir.path().join("kubeconfig"))
        .await
        .unwrap();
    cluster.spawn_agents(true).unwrap();
    let mut cfg = sandbox_controller_config();
    cfg.gate_interval = Duration::from_millis(500);
    cluster.spawn_controller(cfg);
    let client = cluster.client.clone();
    // Wait for the PDB's status: 0 disruptions allowed once the pods run.
    eventually(WITHIN, "the db pods running", || async {
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "shop");
        let n = pods
            .list(&Default::default())
            .await
            .ok()?
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        (n == 3).then_some(())
    })
    .await;
    // A policy without gates: the pre-flight runs for every policy.
    let mut spec = PatchPolicySpec::new("r1");
    spec.paused = true; // only the pre-flight runs
    let api: Api<PatchPolicy> = Api::all(client.clone());
    api.create(&PostParams::default(), &PatchPolicy::new("gated", spec))
        .await
        .unwrap();
    let mut t = Transcript::default();
    let st = wait_status(&client, &mut t, "the pre-flight", |s| s.preflight.is_some()).await;
    let pf = st.preflight.clone().unwrap();
    let nodes_with_db = pf.blocked.len();
    assert!(nodes_with_db >= 1, "{pf:?}");
    assert_eq!(
        pf.summary,
        format!(
            "{nodes_with_db} node{} would block: PDB shop/db allows 0 disruptions",
            if nodes_with_db == 1 { "" } else { "s" }
        )
    );
    assert!(
        pf.blocked
            .iter()
            .all(|b| b.ends_with(": PDB shop/db allows 0 disruptions")),
        "{pf:?}"
    );
    println!("pre-flight: {}\n  {}", pf.summary, pf.blocked.join("\n  "));
    // `sofort plan` shows the same for the live cluster.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sofort"))
        .args(["plan", "--policy", "gated", "-o", "json"])
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["preflight"]["summary"],
        pf.summary.as_str(),
        "{plan:#}"
    );
    assert_eq!(plan["preflight"]["blocked"], serde_json::json!(pf.blocked));
    cluster.shutdown().await;
}

/// A gated policy without Prometheus or Alertmanager: one node at a time,
/// a settle long enough for a test to change a workload while a node is in
/// it.
fn sandbox_policy(gates: GatesSpec) -> PatchPolicy {
    let mut spec = PatchPolicySpec::new("r1");
    spec.urgent = true;
    spec.rollout.max_unavailable = IntOrString::Int(1);
    spec.rollout.settle = "3s".into();
    spec.drain.timeout = "30s".into();
    spec.reboot.timeout = "60s".into();
    spec.gates = Some(gates);
    PatchPolicy::new("gated", spec)
}

fn updated(st: &PatchPolicyStatus) -> u32 {
    st.nodes.as_ref().map_or(0, |n| n.updated)
}

fn active(st: &PatchPolicyStatus) -> Vec<&str> {
    st.active.iter().map(|a| a.node.as_str()).collect()
}

/// How often each node has rebooted, in name order.
fn reboots(run: &Run) -> Vec<(String, u64)> {
    let mut names = run.cluster.sandbox.node_names();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let count = run.cluster.sandbox.host(&n).map_or(0, |h| h.reboot_count());
            (n, count)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocking_pod_holds_its_node_and_its_group_until_it_is_deleted() {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use kube::api::DeleteParams;
    use sofort::api::BlockingPodsGate;
    // Two groups (zones), a first: w-01 and w-03 in zone-a, w-02 and w-04 in
    // zone-b. The backup runs on w-03.
    let mut s = scenario();
    s.nodes[0].count = 4;
    s.nodes[0].zones = vec!["zone-a".into(), "zone-b".into()];
    let mut p = sandbox_policy(GatesSpec {
        blocking_pods: vec![BlockingPodsGate {
            namespace: Some("batch".into()),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "nightly-backup".to_string())].into()),
                ..LabelSelector::default()
            },
        }],
        ..GatesSpec::default()
    });
    p.spec.rollout.order.group_by = Some("topology.kubernetes.io/zone".into());
    let run = start_then(s, &p, |client| async move {
        let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "batch"}})).unwrap(),
        )
        .await
        .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "batch");
        let pod = serde_json::json!({
            "metadata": {"name": "backup-x", "labels": {"app": "nightly-backup"}},
            "spec": {"nodeName": "w-03", "containers": [{"name": "backup", "image": "registry.example/backup:1.0"}]},
        });
        pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap())
            .await
            .unwrap();
        eventually(WITHIN, "the backup running", || async {
            let p = pods.get("backup-x").await.ok()?;
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
    })
    .await;
    let mut t = Transcript::default();
    let waiting = "waiting: pod batch/backup-x running on w-03";
    // w-01 goes; w-03 is held, and zone-b waits for zone-a to finish.
    let st = wait_status(&run.client, &mut t, "w-03 held after w-01", |st| {
        updated(st) == 1
            && st.active.is_empty()
            && st.message.as_deref().is_some_and(|m| m.contains(waiting))
    })
    .await;
    assert_eq!(st.phase, Some(Phase::Waiting), "{:?}", st.message);
    assert_eq!(
        st.message.as_deref(),
        Some("1/4 updated; waiting: pod batch/backup-x running on w-03")
    );
    let gate = st.gates.iter().find(|g| g.name == "blockingPods");
    assert!(
        gate.is_some_and(
            |g| !g.open && g.reason.as_deref() == Some("pod batch/backup-x running on w-03")
        ),
        "{:?}",
        st.gates
    );
    // Held for several gate intervals: nothing else starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = wait_status(&run.client, &mut t, "the hold", |st| {
        st.message.as_deref().is_some_and(|m| m.contains(waiting))
    })
    .await;
    assert_eq!((updated(&st), active(&st)), (1, vec![]));
    let only_w01: Vec<(String, u64)> = [("w-01", 1), ("w-02", 0), ("w-03", 0), ("w-04", 0)]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    assert_eq!(reboots(&run), only_w01, "only w-01 ran");

    let pods: Api<Pod> = Api::namespaced(run.client.clone(), "batch");
    pods.delete("backup-x", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let st = wait_status(&run.client, &mut t, "completion", |st| {
        st.phase == Some(Phase::Completed)
    })
    .await;
    assert_eq!(updated(&st), 4);
    assert!(st.gates.iter().all(|g| g.open), "{:?}", st.gates);
    println!("blocking pod, status over time:\n{}", t.lines.join("\n"));
    run.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unhealthy_workload_holds_the_next_node_after_its_settle_until_it_is_healthy() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use kube::api::{Patch, PatchParams};
    use sofort::api::WorkloadGate;
    use sofort_sandbox::{UNHEALTHY_ANNOTATION, Workload};
    let mut s = scenario();
    s.workloads = vec![Workload {
        kind: "StatefulSet".into(),
        name: "db".into(),
        namespace: "shop".into(),
        replicas: 3,
        ..Workload::default()
    }];
    let p = sandbox_policy(GatesSpec {
        workloads: vec![WorkloadGate {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            namespace: Some("shop".into()),
            name: "db".into(),
        }],
        ..GatesSpec::default()
    });
    let run = start_with(s, &p).await;
    let sts: Api<StatefulSet> = Api::namespaced(run.client.clone(), "shop");
    let mark = |value: serde_json::Value| {
        let sts = sts.clone();
        async move {
            let patch =
                serde_json::json!({"metadata": {"annotations": {UNHEALTHY_ANNOTATION: value}}});
            sts.patch("db", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    let mut t = Transcript::default();
    // The first node passes the healthy StatefulSet; then it turns unhealthy
    // while the second is in progress.
    wait_status(&run.client, &mut t, "w-01 passed", |st| {
        updated(st) == 1 || active(st).contains(&"w-02")
    })
    .await;
    mark(serde_json::json!("true")).await;
    let held = "1/3 updated; w-02 Settling; waiting: StatefulSet shop/db: 2/3 replicas ready";
    let st = wait_status(&run.client, &mut t, "w-02 held after its settle", |st| {
        st.message.as_deref() == Some(held)
    })
    .await;
    let gate = st.gates.iter().find(|g| g.name == "workloads");
    assert!(
        gate.is_some_and(
            |g| !g.open && g.reason.as_deref() == Some("StatefulSet shop/db: 2/3 replicas ready")
        ),
        "{:?}",
        st.gates
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "GatesOpen" && c.status == "False"),
        "{:?}",
        st.conditions
    );
    // Held for several gate intervals: w-02 stays settling, w-03 waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = wait_status(&run.client, &mut t, "the hold", |st| {
        st.message.as_deref() == Some(held)
    })
    .await;
    assert_eq!((updated(&st), active(&st)), (1, vec!["w-02"]));

    mark(serde_json::Value::Null).await;
    let st = wait_status(&run.client, &mut t, "completion", |st| {
        st.phase == Some(Phase::Completed)
    })
    .await;
    assert_eq!(updated(&st), 3);
    assert!(st.gates.iter().all(|g| g.open), "{:?}", st.gates);
    println!(
        "unhealthy workload, status over time:\n{}",
        t.lines.join("\n")
    );
    run.cluster.shutdown().await;
}
