//! Health gates end to end: the real controller (in process) and agents on
//! the sandbox, gated by the real Prometheus and Alertmanager started by the
//! test. A pushed metric fires an alert and the rollout holds with the reason
//! in its status; clearing the metric resolves the alert and the rollout
//! completes; an operator's silence in Alertmanager releases it with
//! `respectSilences`; `silenceDuringMaintenance` creates a silence per node in
//! progress and expires it when the node is done (read back from
//! Alertmanager).

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
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(scenario(), 0, dir.path().join("kubeconfig"))
        .await
        .unwrap();
    cluster.spawn_agents(true).unwrap();
    let mut cfg = sandbox_controller_config();
    cfg.gate_interval = Duration::from_millis(500);
    cluster.spawn_controller(cfg);
    let client = cluster.client.clone();
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
    want: impl Fn(&PatchPolicyStatus) -> bool,
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
