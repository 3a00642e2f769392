//! The live view's data gathering, `kubectl sofort` (pause, resume, why,
//! status) through the real `kubectl` binary, and the `sofort sandbox` demo's
//! plain output, all against the sandbox.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::PostParams;
use sofort::api::{PatchPolicy, PatchPolicySpec};
use sofort::cmd::status::{self, Screen, ViewConfig};
use sofort::core::forecast::Assumptions;
use sofort::testkit::{Cluster, sandbox_controller_config};
use sofort_sandbox::{DurationRange, NodeGroup, Scenario, SimDuration};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn scenario(n: usize) -> Scenario {
    let mut s = Scenario::empty();
    s.speed = 50.0;
    s.timing.reboot = DurationRange {
        min: SimDuration(Duration::from_secs(20)),
        max: SimDuration(Duration::from_secs(40)),
    };
    s.nodes = vec![NodeGroup {
        name_prefix: Some("w".into()),
        count: n,
        zones: vec!["zone-a".into(), "zone-b".into()],
        roles: vec!["worker".into()],
        ..NodeGroup::default()
    }];
    s
}

fn policy(paused: bool) -> PatchPolicy {
    let mut spec = PatchPolicySpec::new("r1");
    spec.paused = paused;
    spec.node_selector = LabelSelector {
        match_labels: Some([("node-role.kubernetes.io/worker".to_string(), String::new())].into()),
        ..LabelSelector::default()
    };
    spec.rollout.max_unavailable = IntOrString::Int(2);
    spec.rollout.order.group_by = Some("topology.kubernetes.io/zone".into());
    spec.rollout.settle = "1s".into();
    spec.drain.timeout = "30s".into();
    spec.reboot.timeout = "30s".into();
    PatchPolicy::new("live", spec)
}

fn view() -> ViewConfig {
    ViewConfig {
        title: "test".into(),
        only: None,
        interval: Duration::from_millis(100),
        assumptions: Assumptions {
            drain: Duration::from_secs(1),
            reboot: Duration::from_secs(1),
            patch: Duration::from_secs(1),
        },
        exit_when_settled: false,
        watch: false,
    }
}

/// A directory holding `kubectl-sofort`, a link to the built binary, as krew installs it.
fn plugin_dir(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let link = bin.join("kubectl-sofort");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sofort"), &link)?;
    Ok(bin)
}

/// `kubectl sofort ARGS` with the plugin on PATH.
fn kubectl_sofort(bin: &Path, kubeconfig: &Path, args: &[&str]) -> Result<Output, std::io::Error> {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("kubectl")
        .arg("sofort")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .output()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Reads screens until `pred` holds (at most `within`).
async fn screen_until(
    cluster: &Cluster,
    within: Duration,
    pred: impl Fn(&Screen) -> bool,
) -> Result<Screen, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + within;
    loop {
        let s = status::screen(&cluster.client, &view()).await?;
        if pred(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            return Err(format!("not reached in {within:?}: {:#?}", s.policies).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_sofort_pauses_explains_resumes_and_the_view_follows_the_rollout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let mut cluster = Cluster::start(scenario(4), 0, kubeconfig.clone()).await?;
    cluster.spawn_agents(true)?;
    cluster.spawn_controller(sandbox_controller_config());
    let bin = plugin_dir(dir.path())?;
    let api: Api<PatchPolicy> = Api::all(cluster.client.clone());
    api.create(&PostParams::default(), &policy(true)).await?;

    let help = kubectl_sofort(&bin, &kubeconfig, &["--help"])?;
    assert!(
        text(&help).contains("Usage: kubectl sofort"),
        "{}",
        text(&help)
    );

    // Paused: nothing starts; the view and `why` say so.
    let s = screen_until(&cluster, Duration::from_secs(20), |s| {
        s.policies.first().is_some_and(|p| p.phase == "Paused")
    })
    .await?;
    let p = &s.policies[0];
    assert_eq!((p.updated, p.total, p.in_progress), (0, 4, 0));
    assert!(p.paused);
    let node = p.groups[0].1[0].name.clone();
    let why = kubectl_sofort(&bin, &kubeconfig, &["why", &node])?;
    assert!(why.status.success(), "{}", text(&why));
    let why = text(&why);
    assert!(
        why.contains("PatchPolicy live revision r1: pending"),
        "{why}"
    );
    assert!(why.contains("kubectl sofort resume live"), "{why}");

    let resumed = kubectl_sofort(&bin, &kubeconfig, &["resume", "live"])?;
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(text(&resumed).contains("PatchPolicy live resumed"));
    assert!(!api.get("live").await?.spec.paused);

    // The view follows the rollout to the end: every cell done, the Events in.
    let s = screen_until(&cluster, Duration::from_secs(60), |s| s.settled).await?;
    let p = &s.policies[0];
    assert_eq!(p.phase, "Completed");
    assert_eq!((p.updated, p.total, p.failed), (4, 4, 0));
    assert!(
        p.groups
            .iter()
            .flat_map(|(_, c)| c)
            .all(|c| c.cell.label() == "done")
    );
    assert_eq!(p.groups.len(), 2, "two zones");
    assert!(
        s.events.iter().any(|e| e.contains("Node/")),
        "{:?}",
        s.events
    );

    let why = text(&kubectl_sofort(&bin, &kubeconfig, &["why", &node])?);
    assert!(why.contains("done, the node is at this revision"), "{why}");

    let paused = kubectl_sofort(&bin, &kubeconfig, &["pause", "live"])?;
    assert!(paused.status.success(), "{}", text(&paused));
    assert!(text(&paused).contains("PatchPolicy live paused"));
    assert!(api.get("live").await?.spec.paused);

    // Not a terminal: `status` prints plain lines once.
    let st = kubectl_sofort(&bin, &kubeconfig, &["status"])?;
    assert!(st.status.success(), "{}", text(&st));
    let out = String::from_utf8_lossy(&st.stdout);
    assert!(out.contains("live rev r1 paused"), "{out}");
    assert!(out.contains("updated 4/4"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "no terminal control in plain output"
    );

    let missing = kubectl_sofort(&bin, &kubeconfig, &["pause", "nosuch"])?;
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("PatchPolicy nosuch not found"),
        "{}",
        text(&missing)
    );
    let missing = kubectl_sofort(&bin, &kubeconfig, &["why", "nosuch"])?;
    assert!(!missing.status.success());
    assert!(text(&missing).contains("Node nosuch not found"));

    cluster.shutdown().await;
    Ok(())
}

#[test]
fn the_sandbox_demo_prints_plain_lines_and_keeps_its_logs_in_a_file() -> TestResult {
    let out = Command::new(env!("CARGO_BIN_EXE_sofort"))
        .args(["sandbox", "--nodes", "4", "--exit-when-done", "--plain"])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("phase:                 Completed"),
        "{stdout}"
    );
    assert!(stdout.contains("updated 4/4"), "{stdout}");
    assert!(stdout.contains("event: "), "{stdout}");
    for s in [&stdout, &stderr] {
        assert!(!s.contains(" INFO "), "logs reached the terminal:\n{s}");
    }
    let log = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("logs:"))
        .map(|p| PathBuf::from(p.trim()))
        .ok_or("no log path printed")?;
    let logs = std::fs::read_to_string(&log)?;
    assert!(logs.contains("INFO"), "the log file has the logs");
    std::fs::remove_file(&log)?;
    Ok(())
}

#[test]
fn the_unattended_sandbox_demo_runs_two_rounds_and_exits_zero() -> TestResult {
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_sofort"))
        .args([
            "sandbox",
            "--nodes",
            "8",
            "--unattended",
            "--exit-when-done",
            "--plain",
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // With 8 nodes: worker-01 and worker-05 need a reboot from the start,
    // worker-03 and worker-07 once round 1 is announced.
    let line = |needle: &str| {
        stdout
            .lines()
            .position(|l| l.contains(needle))
            .ok_or_else(|| format!("no line with {needle:?} in\n{stdout}"))
    };
    let r1 = line("announced: 2 nodes (worker-01, worker-05)")?;
    let late = line("so they wait for the next round")?;
    let r1_done = line(" completed at ")?;
    let r2 = line("announced: 2 nodes (worker-03, worker-07)")?;
    assert!(r1 < late && late < r1_done && r1_done < r2, "{stdout}");
    assert!(
        stdout.contains("rounds:                2 completed"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "(worker-01, worker-03, worker-05, worker-07): exactly those that needed it, once each"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("0 violations"), "{stdout}");
    let apart: f64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("round starts apart:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .ok_or("no gap between the rounds printed")?;
    assert!(
        apart >= 20.0,
        "rounds {apart} s apart, less than minRoundInterval"
    );
    eprintln!("unattended demo: {:.1} s", started.elapsed().as_secs_f64());
    if let Some(log) = stdout.lines().find_map(|l| l.trim().strip_prefix("logs:")) {
        std::fs::remove_file(PathBuf::from(log.trim()))?;
    }
    Ok(())
}
