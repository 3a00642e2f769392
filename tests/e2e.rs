//! End-to-end tests: the real `sofort controller` binary, as a separate process,
//! talks HTTP to the sandbox's API emulator; one real agent per simulated node
//! runs against the node's simulated host; an independent observer watches
//! every node and records any broken safety rule. Nothing here calls the
//! controller's code directly.

#[path = "support/pods.rs"]
mod pods;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use sofort::api::{MaintenanceWindow, OnTimeout, PatchPolicy, PatchPolicySpec, Phase, RebootWhen};
use sofort::core::rollout::NodeView;
use sofort::testkit::Cluster;
use sofort::testkit::observer::{Observations, Observer, WatchedPolicy};
use sofort_sandbox::{
    DurationRange, FaultEffect, FaultRule, NodeGroup, PdbSpec, Scenario, SimDuration, Workload,
};

const ZONE: &str = "topology.kubernetes.io/zone";

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sofort-e2e-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small fast fleet: `n` workers in 3 zones, a Deployment with a PDB.
fn scenario(n: usize) -> Scenario {
    let mut s = Scenario::empty();
    s.speed = 50.0;
    s.timing.reboot = DurationRange {
        min: SimDuration(Duration::from_secs(20)),
        max: SimDuration(Duration::from_secs(40)),
    };
    s.timing.pod_start = DurationRange::fixed(Duration::from_secs(5));
    s.nodes = vec![NodeGroup {
        name_prefix: Some("w".into()),
        count: n,
        zones: vec!["zone-a".into(), "zone-b".into(), "zone-c".into()],
        roles: vec!["worker".into()],
        ..NodeGroup::default()
    }];
    s.workloads = vec![Workload {
        kind: "Deployment".into(),
        name: "web".into(),
        namespace: "shop".into(),
        replicas: 4,
        pdb: Some(PdbSpec {
            max_unavailable: Some(serde_json::json!(1)),
            ..PdbSpec::default()
        }),
        ..Workload::default()
    }];
    s
}

fn policy(name: &str, revision: &str) -> PatchPolicy {
    let mut spec = PatchPolicySpec::new(revision);
    spec.node_selector = LabelSelector {
        match_labels: Some([("node-role.kubernetes.io/worker".to_string(), String::new())].into()),
        ..LabelSelector::default()
    };
    spec.maintenance_windows = vec![MaintenanceWindow {
        days: vec![],
        start: "00:00".into(),
        end: "00:00".into(),
        time_zone: "UTC".into(),
        weeks_of_month: Vec::new(),
        offset_days: 0,
    }];
    spec.rollout.max_unavailable = IntOrString::Int(2);
    spec.rollout.order.group_by = Some(ZONE.into());
    spec.rollout.settle = "1s".into();
    spec.drain.timeout = "30s".into();
    spec.reboot.timeout = "30s".into();
    spec.rollout.min_window_remaining = Some("1m".into());
    PatchPolicy::new(name, spec)
}

struct Env {
    cluster: Option<Cluster>,
    controller: Option<Child>,
    dir: PathBuf,
    extra_args: Vec<String>,
}

impl Env {
    async fn start(name: &str, scenario: Scenario, extra_args: &[&str]) -> Env {
        Env::start_with(name, scenario, extra_args, &[]).await
    }

    /// Starts with `reboot_required` hosts reporting the reboot sentinel from
    /// the start (before their agents' first check).
    async fn start_with(
        name: &str,
        scenario: Scenario,
        extra_args: &[&str],
        reboot_required: &[&str],
    ) -> Env {
        // SOFORT_TEST_LOG=sofort=debug shows the in-process agents' logs.
        if let Ok(filter) = std::env::var("SOFORT_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let dir = tmpdir(name);
        let expect_pods = scenario
            .workloads
            .iter()
            .map(|w| w.replicas.max(0) as usize)
            .sum::<usize>();
        let mut cluster = Cluster::start(scenario, 0, dir.join("kubeconfig"))
            .await
            .unwrap();
        for n in reboot_required {
            cluster.sandbox.host(n).unwrap().set_reboot_required(true);
        }
        cluster.spawn_agents(true).unwrap();
        pods::wait_pods_ready(&cluster.client, expect_pods).await;
        let mut env = Env {
            cluster: Some(cluster),
            controller: None,
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        env.start_controller();
        env
    }

    fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().unwrap()
    }

    fn client(&self) -> Client {
        self.cluster().client.clone()
    }

    /// A kubeconfig with the controller's ServiceAccount token: the
    /// controller runs with the chart's RBAC.
    fn controller_kubeconfig(&self) -> PathBuf {
        let path = self.dir.join("controller.kubeconfig");
        std::fs::write(&path, self.cluster().controller_kubeconfig_yaml()).unwrap();
        path
    }

    fn start_controller(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("controller.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sofort"))
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
            .args(&self.extra_args)
            .env("KUBECONFIG", self.controller_kubeconfig())
            .env("SOFORT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.controller = Some(child);
    }

    fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .args(args)
            .output()
            .unwrap()
    }

    fn controller_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("controller.log")).unwrap_or_default()
    }

    async fn apply(&self, p: &PatchPolicy) {
        let api: Api<PatchPolicy> = Api::all(self.client());
        api.create(&PostParams::default(), p).await.unwrap();
    }

    async fn get(&self, name: &str) -> PatchPolicy {
        let api: Api<PatchPolicy> = Api::all(self.client());
        api.get(name).await.unwrap()
    }

    async fn nodes(&self) -> Vec<Node> {
        let api: Api<Node> = Api::all(self.client());
        api.list(&ListParams::default()).await.unwrap().items
    }

    /// Waits until the policy reaches `phase` for its revision.
    async fn wait_phase(&self, name: &str, phase: Phase, within: Duration) -> PatchPolicy {
        let deadline = Instant::now() + within;
        loop {
            let p = self.get(name).await;
            let st = p.status.clone().unwrap_or_default();
            if st.phase == Some(phase) && st.revision.as_deref() == Some(p.spec.revision.as_str()) {
                return p;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name} did not reach {phase:?} within {within:?}; status: {:#?}\ncontroller log tail:\n{}",
                    st,
                    tail(&self.controller_log(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finish(mut self) {
        self.kill_controller();
        if let Some(c) = self.cluster.take() {
            c.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_controller();
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn watched(p: &PatchPolicy, max: usize) -> WatchedPolicy {
    WatchedPolicy {
        name: p.name_any(),
        selector: p.spec.node_selector.clone(),
        max_unavailable: max,
    }
}

fn assert_safe(obs: &Observations) {
    assert!(
        obs.violations.is_empty(),
        "safety rules broken: {:#?}",
        obs.violations
    );
}

fn assert_none_left_cordoned(nodes: &[Node], except: &[&str]) {
    for n in nodes {
        let v = NodeView::from_node(n);
        if !except.contains(&v.name.as_str()) {
            assert!(!v.unschedulable, "node {} left cordoned", v.name);
        }
    }
}

/// Claim order by zone: every claim of a zone comes before any claim of the next.
fn assert_zone_by_zone(obs: &Observations, nodes: &[Node]) {
    let zone_of = |n: &str| {
        nodes
            .iter()
            .find(|x| x.name_any() == n)
            .and_then(|x| x.labels().get(ZONE).cloned())
            .unwrap_or_default()
    };
    let mut claims: Vec<(Duration, String)> = obs
        .first_claim
        .iter()
        .map(|(n, t)| (*t, zone_of(n)))
        .collect();
    claims.sort();
    let zones: Vec<String> = claims.iter().map(|(_, z)| z.clone()).collect();
    let mut seen: Vec<String> = Vec::new();
    for z in zones {
        if seen.last() != Some(&z) {
            assert!(
                !seen.contains(&z),
                "zone {z} was started again after another zone: {claims:?}"
            );
            seen.push(z);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nightly_rollout_waits_for_the_window_then_goes_zone_by_zone()
-> Result<(), Box<dyn std::error::Error>> {
    // The controller's clock starts 8 s before a 22:00 Europe/Zurich window
    // opens: time for a controller process on a busy machine to start and
    // write its first status before then.
    let start = "2026-11-30T20:59:52Z"; // Monday 21:59:52 in Zurich
    let env = Env::start("nightly", scenario(6), &["--clock-start", start]).await;
    let mut p = policy("nightly", "r1");
    p.spec.maintenance_windows = vec![MaintenanceWindow {
        days: vec![],
        start: "22:00".into(),
        end: "05:00".into(),
        time_zone: "Europe/Zurich".into(),
        weeks_of_month: Vec::new(),
        offset_days: 0,
    }];
    let obs = Observer::start(env.client(), vec![watched(&p, 2)]).await;
    let t0 = Instant::now();
    env.apply(&p).await;
    // Before the window: Scheduled/Waiting, no node touched.
    let early = loop {
        let st = env.get("nightly").await.status.unwrap_or_default();
        if st.phase.is_some() || t0.elapsed() > Duration::from_secs(6) {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        obs.observations().first_claim.is_empty(),
        "a node started before the window opened"
    );
    assert!(
        matches!(early.phase, Some(Phase::Waiting) | Some(Phase::Scheduled)),
        "{early:#?}"
    );
    let msg = early.message.clone().unwrap_or_default();
    assert!(
        msg.contains("22:00 Europe/Zurich"),
        "the message says when it starts: {early:#?}"
    );
    let out = env.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "patchpolicy/nightly",
        "--timeout=90s",
    ]);
    assert!(
        out.status.success(),
        "kubectl wait failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = env.get("nightly").await;
    assert_eq!(
        done.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Completed)
    );
    let o = obs.stop();
    assert_safe(&o);
    let first = o
        .first_claim
        .values()
        .min()
        .copied()
        .ok_or("no node was claimed")?;
    assert!(t0.elapsed() > Duration::from_secs(8));
    assert!(
        first >= Duration::from_millis(6000),
        "first node started {first:?} after start, before 22:00"
    );
    assert_eq!(o.reboots.len(), 6, "every node rebooted: {:?}", o.reboots);
    assert!(o.reboots.values().all(|c| *c == 1));
    let nodes = env.nodes().await;
    assert_zone_by_zone(&o, &nodes);
    assert_none_left_cordoned(&nodes, &[]);
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn urgent_rollout_ignores_a_closed_window_but_keeps_the_budget()
-> Result<(), Box<dyn std::error::Error>> {
    let env = Env::start(
        "urgent",
        scenario(6),
        &["--clock-start", "2026-12-01T10:00:00Z"],
    )
    .await;
    let mut p = policy("urgent", "cve-fix");
    p.spec.urgent = true;
    p.spec.maintenance_windows = vec![MaintenanceWindow {
        days: vec![],
        start: "22:00".into(),
        end: "05:00".into(),
        time_zone: "Europe/Zurich".into(),
        weeks_of_month: Vec::new(),
        offset_days: 0,
    }];
    p.spec.announce = Some(sofort::api::Announce {
        lead_time: "48h".into(),
    });
    let obs = Observer::start(env.client(), vec![watched(&p, 2)]).await;
    env.apply(&p).await;
    env.wait_phase("urgent", Phase::Completed, Duration::from_secs(90))
        .await;
    let o = obs.stop();
    assert_safe(&o);
    // The window opens 11 hours later by the controller's clock: a claim
    // within the test is the urgent start (the bound leaves a busy
    // machine time to start the controller).
    let first = o
        .first_claim
        .values()
        .min()
        .copied()
        .ok_or("no node was claimed")?;
    assert!(first < Duration::from_secs(30), "urgent started at once");
    assert!(o.max_unavailable_seen.values().all(|m| *m <= 2));
    assert_eq!(o.reboots.len(), 6);
    assert_none_left_cordoned(&env.nodes().await, &[]);
    env.finish().await;
    Ok(())
}

fn blocking_scenario() -> Scenario {
    let mut s = scenario(3);
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
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pdb_that_never_allows_eviction_fails_the_node_and_halts()
-> Result<(), Box<dyn std::error::Error>> {
    let env = Env::start("pdb-fail", blocking_scenario(), &[]).await;
    let mut p = policy("pdb", "r1");
    p.spec.drain.timeout = "3s".into();
    p.spec.rollout.max_unavailable = IntOrString::Int(1);
    let obs = Observer::start(env.client(), vec![watched(&p, 1)]).await;
    env.apply(&p).await;
    let halted = env
        .wait_phase("pdb", Phase::Halted, Duration::from_secs(60))
        .await;
    let st = halted.status.ok_or("no status")?;
    assert_eq!(st.failed.len(), 1, "{st:#?}");
    let reason = &st.failed[0].reason;
    assert!(reason.contains("drain timeout"), "{reason}");
    assert!(reason.contains("shop/db-"), "names the pod: {reason}");
    assert!(reason.contains("shop/db"), "names the PDB: {reason}");
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    // The failed node was uncordoned (sofort cordoned it) and nothing else started.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let o = obs.stop();
    assert_safe(&o);
    assert!(
        o.reboots.is_empty(),
        "no reboot after a failed drain: {:?}",
        o.reboots
    );
    assert_eq!(
        o.first_claim.len(),
        1,
        "halted after the first failure: {:?}",
        o.first_claim
    );
    assert_none_left_cordoned(&env.nodes().await, &[]);
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pdb_that_never_allows_eviction_is_forced_with_on_timeout_force()
-> Result<(), Box<dyn std::error::Error>> {
    let env = Env::start("pdb-force", blocking_scenario(), &[]).await;
    let mut p = policy("pdbforce", "r1");
    p.spec.drain.timeout = "2s".into();
    p.spec.drain.on_timeout = OnTimeout::Force;
    p.spec.rollout.max_unavailable = IntOrString::Int(1);
    let obs = Observer::start(env.client(), vec![watched(&p, 1)]).await;
    env.apply(&p).await;
    env.wait_phase("pdbforce", Phase::Completed, Duration::from_secs(90))
        .await;
    let o = obs.stop();
    assert_safe(&o);
    assert_eq!(o.reboots.len(), 3);
    assert_none_left_cordoned(&env.nodes().await, &[]);
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_cordoned_by_an_admin_stays_cordoned_after_its_reboot()
-> Result<(), Box<dyn std::error::Error>> {
    let env = Env::start("precordon", scenario(3), &[]).await;
    let out = env.kubectl(&["cordon", "w-02"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // w-02 stays unavailable for the whole rollout (an admin cordoned it), so it
    // takes one of the two slots throughout.
    let p = policy("pre", "r1");
    let obs = Observer::start(env.client(), vec![watched(&p, 2)]).await;
    env.apply(&p).await;
    env.wait_phase("pre", Phase::Completed, Duration::from_secs(90))
        .await;
    let o = obs.stop();
    assert_safe(&o);
    assert_eq!(
        o.reboots.get("w-02"),
        Some(&1),
        "the pre-cordoned node was patched too"
    );
    let nodes = env.nodes().await;
    let w2 = nodes
        .iter()
        .find(|n| n.name_any() == "w-02")
        .ok_or("node w-02 missing")?;
    assert!(
        NodeView::from_node(w2).unschedulable,
        "w-02 must stay cordoned"
    );
    assert_none_left_cordoned(&nodes, &["w-02"]);
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_killed_five_times_mid_rollout_still_finishes_exactly_once()
-> Result<(), Box<dyn std::error::Error>> {
    let mut env = Env::start("kill", scenario(30), &[]).await;
    let mut p = policy("kill", "r1");
    p.spec.rollout.max_unavailable = IntOrString::Int(3);
    let obs = Observer::start(env.client(), vec![watched(&p, 3)]).await;
    env.apply(&p).await;
    // Kill at pseudo-random moments (fixed seed for reproducibility).
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rng.u64(800..2500))).await;
        env.kill_controller();
        tokio::time::sleep(Duration::from_millis(rng.u64(100..600))).await;
        env.start_controller();
    }
    env.wait_phase("kill", Phase::Completed, Duration::from_secs(240))
        .await;
    let o = obs.stop();
    assert_safe(&o);
    assert_eq!(o.reboots.len(), 30, "every node rebooted: {:?}", o.reboots);
    assert!(
        o.reboots.values().all(|c| *c == 1),
        "no node rebooted twice: {:?}",
        o.reboots
    );
    assert_none_left_cordoned(&env.nodes().await, &[]);
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_faults_and_dropped_watches_do_not_break_the_rules()
-> Result<(), Box<dyn std::error::Error>> {
    let env = Env::start("faults", scenario(6), &[]).await;
    let p = policy("faults", "r1");
    let obs = Observer::start(env.client(), vec![watched(&p, 2)]).await;
    let faults = env.cluster().sandbox.faults();
    faults.add(FaultRule::new(FaultEffect::Error(500), 0.05));
    faults.add(FaultRule::new(FaultEffect::Error(429), 0.05));
    // The test's own client may see the injected errors too: retry the create.
    let api: Api<PatchPolicy> = Api::all(env.client());
    for _ in 0..20 {
        if api.create(&PostParams::default(), &p).await.is_ok() || api.get("faults").await.is_ok() {
            break;
        }
    }
    let dropper = {
        let f = faults.clone();
        tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                f.drop_watches();
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(p) = api.get("faults").await
            && p.status.as_ref().and_then(|s| s.phase) == Some(Phase::Completed)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout under faults did not complete:\n{}",
            tail(&env.controller_log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    dropper.abort();
    faults.clear();
    let o = obs.stop();
    assert_safe(&o);
    assert_eq!(o.reboots.len(), 6);
    assert!(o.reboots.values().all(|c| *c == 1), "{:?}", o.reboots);
    assert_none_left_cordoned(&env.nodes().await, &[]);
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_policies_never_share_a_node_and_urgent_goes_first()
-> Result<(), Box<dyn std::error::Error>> {
    let env = Env::start("overlap", scenario(6), &[]).await;
    let routine = policy("routine", "r1");
    let mut urgent = policy("urgent", "u1");
    urgent.spec.urgent = true;
    let obs = Observer::start(
        env.client(),
        vec![watched(&routine, 2), watched(&urgent, 2)],
    )
    .await;
    // Record every claim owner change per node from a watch of our own.
    let client = env.client();
    let claims = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(
        String,
        String,
        sofort::api::Step,
    )>::new()));
    let c2 = claims.clone();
    // The policies are applied once the watch has listed every node, so no
    // node's first claim comes before it.
    let (listed, is_listed) = tokio::sync::oneshot::channel();
    let mut listed = Some(listed);
    let watcher_task = tokio::spawn(async move {
        use futures::StreamExt;
        use kube::runtime::watcher::Event;
        let api: Api<Node> = Api::all(client);
        let mut s = Box::pin(kube::runtime::watcher(
            api,
            kube::runtime::watcher::Config::default(),
        ));
        while let Some(Ok(ev)) = s.next().await {
            if matches!(ev, Event::InitDone)
                && let Some(tx) = listed.take()
            {
                let _ = tx.send(());
            }
            if let Event::Apply(n) | Event::InitApply(n) = ev {
                // A node without a record is free: note it as ("", Done).
                let (policy, step) = NodeView::from_node(&n)
                    .record
                    .map_or((String::new(), sofort::api::Step::Done), |r| {
                        (r.policy, r.step)
                    });
                c2.lock().unwrap().push((n.name_any(), policy, step));
            }
        }
    });
    // Urgent first: a routine policy the controller sees alone may start a
    // node (and a started node always finishes), so creating routine first
    // would race its first decision against urgent's create. Created in this
    // order, the controller knows urgent when it first decides routine, which
    // must then wait on every node urgent selects.
    tokio::time::timeout(Duration::from_secs(10), is_listed)
        .await
        .map_err(|_| "the node watch did not list the nodes within 10 s")??;
    env.apply(&urgent).await;
    env.apply(&routine).await;
    env.wait_phase("urgent", Phase::Completed, Duration::from_secs(90))
        .await;
    env.wait_phase("routine", Phase::Completed, Duration::from_secs(90))
        .await;
    watcher_task.abort();
    let o = obs.stop();
    assert_safe(&o);
    let claims = claims.lock().unwrap().clone();
    // A node's record passes from one policy to another only through Done.
    let mut by_node: std::collections::BTreeMap<String, Vec<(String, sofort::api::Step)>> =
        Default::default();
    for (n, pol, step) in claims {
        by_node.entry(n).or_default().push((pol, step));
    }
    for (n, seq) in &by_node {
        for w in seq.windows(2) {
            // From one policy to another only through a free node.
            if w[0].0 != w[1].0 && !w[0].0.is_empty() && !w[1].0.is_empty() {
                assert!(
                    !w[0].1.in_progress(),
                    "node {n} moved from {} to {} while {:?}",
                    w[0].0,
                    w[1].0,
                    w[0].1
                );
            }
        }
        // Urgent first: on each node the urgent policy's work comes before the routine one's.
        let first = seq
            .iter()
            .find(|(p, s)| !p.is_empty() && s.in_progress())
            .map(|(p, _)| p.as_str());
        assert_eq!(first, Some("urgent"), "node {n}: {seq:?}");
    }
    assert_eq!(
        o.reboots.values().sum::<u32>(),
        12,
        "each node rebooted once per policy: {:?}",
        o.reboots
    );
    assert_none_left_cordoned(&env.nodes().await, &[]);
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn if_required_reboots_only_nodes_whose_agent_reports_the_sentinel()
-> Result<(), Box<dyn std::error::Error>> {
    let env = Env::start_with("ifreq", scenario(6), &[], &["w-01", "w-04"]).await;
    let api: Api<Node> = Api::all(env.client());
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let nodes = api.list(&ListParams::default()).await?.items;
        let labelled = nodes
            .iter()
            .filter(|n| n.labels().contains_key("sofort.dev/reboot-required"))
            .count();
        if labelled == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agents did not report the sentinel"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut p = policy("ifreq", "r1");
    p.spec.reboot.when = RebootWhen::IfRequired;
    let obs = Observer::start(env.client(), vec![watched(&p, 2)]).await;
    env.apply(&p).await;
    env.wait_phase("ifreq", Phase::Completed, Duration::from_secs(90))
        .await;
    let o = obs.stop();
    assert_safe(&o);
    let rebooted: Vec<&String> = o.reboots.keys().collect();
    let _ = rebooted;
    for n in ["w-01", "w-04"] {
        assert_eq!(
            env.cluster().sandbox.host(n).unwrap().reboot_count(),
            1,
            "{n} needed a reboot"
        );
    }
    for n in ["w-02", "w-03", "w-05", "w-06"] {
        assert_eq!(
            env.cluster().sandbox.host(n).unwrap().reboot_count(),
            0,
            "{n} did not need one"
        );
    }
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_that_never_comes_back_fails_at_the_reboot_timeout()
-> Result<(), Box<dyn std::error::Error>> {
    let env = Env::start("noreturn", scenario(3), &[]).await;
    env.cluster()
        .sandbox
        .faults()
        .node_never_returns("w-01", true);
    let mut p = policy("noreturn", "r1");
    p.spec.reboot.timeout = "4s".into();
    p.spec.rollout.max_unavailable = IntOrString::Int(1);
    p.spec.rollout.max_failed_nodes = 1;
    // Make w-01 go first.
    let out = env.kubectl(&["label", "node", "w-01", "sofort.dev/priority=0"]);
    assert!(out.status.success());
    for n in ["w-02", "w-03"] {
        env.kubectl(&["label", "node", n, "sofort.dev/priority=5"]);
    }
    p.spec.rollout.order.group_by = None;
    p.spec.rollout.order.sort_by = vec!["sofort.dev/priority".into()];
    let obs = Observer::start(env.client(), vec![watched(&p, 1)]).await;
    env.apply(&p).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        let st = env.get("noreturn").await.status.unwrap_or_default();
        if !st.failed.is_empty() {
            break st;
        }
        assert!(Instant::now() < deadline, "w-01 never failed: {st:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(st.failed[0].node, "w-01");
    assert!(
        st.failed[0].reason.contains("reboot"),
        "{}",
        st.failed[0].reason
    );
    // The dead node counts as unavailable: with maxUnavailable 1 nothing else may start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let o = obs.stop();
    assert_safe(&o);
    assert_eq!(
        o.first_claim.len(),
        1,
        "no node may start while w-01 is down: {:?}",
        o.first_claim
    );
    let st = env.get("noreturn").await.status.unwrap_or_default();
    assert!(
        st.message.unwrap_or_default().contains("unavailable"),
        "the message explains the wait"
    );
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_spec_stalls_with_a_reason_instead_of_crashing()
-> Result<(), Box<dyn std::error::Error>> {
    let env = Env::start("invalid", scenario(3), &[]).await;
    let mut p = policy("bad", "r1");
    p.spec.maintenance_windows[0].time_zone = "Europe/Zurch".into();
    env.apply(&p).await;
    let halted = env
        .wait_phase("bad", Phase::Halted, Duration::from_secs(30))
        .await;
    let st = halted.status.ok_or("no status")?;
    assert!(
        st.message
            .as_deref()
            .unwrap_or_default()
            .contains("Europe/Zurich"),
        "{st:#?}"
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "InvalidSpec")
    );
    // Fixing the spec resumes without a restart.
    let api: Api<PatchPolicy> = Api::all(env.client());
    api.patch(
        "bad",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"maintenanceWindows": [{"start": "00:00", "end": "00:00", "timeZone": "Europe/Zurich"}]}})),
    )
    .await?;
    env.wait_phase("bad", Phase::Completed, Duration::from_secs(90))
        .await;
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plan_reads_the_policy_and_nodes_from_the_cluster() -> Result<(), Box<dyn std::error::Error>>
{
    let env = Env::start("plan", scenario(6), &[]).await;
    let mut p = policy("planned", "r1");
    // A window that is closed for the next hours: nothing starts meanwhile.
    let later = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(6))
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC);
    p.spec.maintenance_windows = vec![MaintenanceWindow {
        days: vec![],
        start: format!("{:02}:00", later.hour()),
        end: format!("{:02}:00", (later.hour() + 2) % 24),
        time_zone: "UTC".into(),
        weeks_of_month: Vec::new(),
        offset_days: 0,
    }];
    p.spec.rollout.min_window_remaining = Some("10m".into());
    env.apply(&p).await;
    let out = Command::new(env!("CARGO_BIN_EXE_sofort"))
        .args(["plan", "--policy", "planned", "-o", "json"])
        .env("KUBECONFIG", env.dir.join("kubeconfig"))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(f["policy"], "planned");
    assert_eq!(f["nodes"].as_array().map(Vec::len), Some(6), "{f:#}");
    let start: jiff::Timestamp = f["scheduled_start"]
        .as_str()
        .or_else(|| f["scheduledStart"].as_str())
        .expect("a scheduled start")
        .parse()?;
    assert!(
        start > jiff::Timestamp::now(),
        "starts when the window opens, not now"
    );
    env.finish().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_applies_the_crd_and_examples_and_shows_printer_columns()
-> Result<(), Box<dyn std::error::Error>> {
    let env = Env::start("kubectl", scenario(3), &[]).await;
    let out = env.kubectl(&[
        "apply",
        "-f",
        "crds/",
        "-f",
        "examples/nightly-workers.yaml",
        "-f",
        "examples/canary-then-rest.yaml",
        "-f",
        "examples/urgent-security.yaml",
        "-f",
        "examples/quiet-drains.yaml",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.kubectl(&["get", "pp"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap_or_default();
    for col in [
        "NAME",
        "REVISION",
        "URGENT",
        "PHASE",
        "UPDATED",
        "NEXT WINDOW",
        "AGE",
    ] {
        assert!(header.contains(col), "column {col} missing in {header:?}");
    }
    for name in [
        "workers-nightly",
        "canary",
        "rest",
        "security-kernel",
        "web-quiet",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
    let out = env.kubectl(&["explain", "patchpolicy.spec.rollout"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("maxUnavailable") && text.contains("nodeLabels"));
    env.finish().await;
    Ok(())
}
