//! Records the fixtures that the alert, dashboard and GitOps health tests read,
//! from real sandbox rollouts: the real `sofort controller` binary against the
//! API emulator, one real agent per simulated node with its `/metrics` served
//! on 127.0.0.1, and a scraper that plays Prometheus (it scrapes every target
//! every second and records `up` like Prometheus does).
//!
//! The recordings are committed; regenerate them after a change to the metrics
//! or the status with:
//!
//! ```sh
//! cargo test --test sandbox_recordings -- --ignored --test-threads=1
//! ```
//!
//! They write
//! - `tests/fixtures/metrics/<run>.yaml`: every scraped series in promtool's
//!   `input_series` format (one scrape = one `interval`), plus `marks`: the
//!   scrape at which something happened in the run. Values of
//!   `*_timestamp_seconds` series are moved onto the fixture's clock (the
//!   first scrape is time 0, as in a promtool test);
//! - `tests/fixtures/patchpolicy/<state>.yaml`: PatchPolicy objects with the
//!   status the controller wrote, one per rollout state.

#[path = "support/pods.rs"]
mod pods;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, MicroTime};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use sofort::api::{
    MaintenanceWindow, NotifySpec, PatchPolicy, PatchPolicySpec, Phase, SecretKeyRef, Step,
    Webhook, WebhookFormat,
};
use sofort::testkit::Cluster;
use sofort_sandbox::{
    DurationRange, FaultEffect, FaultRule, NodeGroup, PdbSpec, Scenario, SimDuration, Workload,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

const NS: &str = "sofort-system";
const ZONE: &str = "topology.kubernetes.io/zone";
/// Time between two scrapes, in the run and in the fixture (`INTERVAL`).
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
const INTERVAL: &str = "1s";
/// Upper bound of one recording.
const RUN_LIMIT: Duration = Duration::from_secs(180);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

// ------------------------------------------------------------------ scraper

/// One scrape target: the job and instance labels Prometheus would add.
#[derive(Clone)]
struct Target {
    job: String,
    instance: String,
    addr: String,
}

/// Samples per series key, one slot per scrape (None: not present).
#[derive(Default)]
struct Recording {
    scrapes: usize,
    /// Unix time of the first scrape.
    t0: Option<f64>,
    series: BTreeMap<String, Vec<Option<f64>>>,
    marks: BTreeMap<String, usize>,
}

impl Recording {
    fn put(&mut self, key: String, at: usize, value: f64) {
        let slots = self.series.entry(key).or_default();
        slots.resize(at + 1, None);
        slots[at] = Some(value);
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `GET /metrics` over HTTP/1.0; None when the target does not answer (down).
async fn scrape(addr: &str) -> Option<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: sofort\r\n\r\n")
            .await
            .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.ok()?;
        let (head, body) = buf.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200")
            .then(|| body.to_string())
            .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
}

/// Splits one exposition sample line into (name, labels without braces, value).
fn parse_sample(line: &str) -> Option<(&str, &str, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    match series.split_once('{') {
        Some((name, rest)) => Some((name, rest.strip_suffix('}')?, value)),
        None => Some((series, "", value)),
    }
}

fn series_key(name: &str, target: &Target, labels: &str) -> String {
    let mut all = vec![
        format!("instance=\"{}\"", target.instance),
        format!("job=\"{}\"", target.job),
    ];
    if !labels.is_empty() {
        all.push(labels.to_string());
    }
    format!("{name}{{{}}}", all.join(","))
}

struct Scraper {
    targets: Arc<Mutex<Vec<Target>>>,
    recording: Arc<Mutex<Recording>>,
    task: tokio::task::JoinHandle<()>,
}

impl Scraper {
    fn start() -> Scraper {
        let targets: Arc<Mutex<Vec<Target>>> = Arc::default();
        let recording: Arc<Mutex<Recording>> = Arc::default();
        let task = {
            let targets = targets.clone();
            let recording = recording.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SCRAPE_EVERY);
                loop {
                    tick.tick().await;
                    let now: Vec<Target> = targets.lock().map(|t| t.clone()).unwrap_or_default();
                    let mut bodies = Vec::new();
                    for t in &now {
                        bodies.push((t.clone(), scrape(&t.addr).await));
                    }
                    let Ok(mut rec) = recording.lock() else {
                        return;
                    };
                    let at = rec.scrapes;
                    let t0 = *rec.t0.get_or_insert_with(unix_now);
                    for (t, body) in bodies {
                        rec.put(series_key("up", &t, ""), at, f64::from(body.is_some()));
                        for line in body.iter().flat_map(|b| b.lines()) {
                            if line.starts_with('#') {
                                continue;
                            }
                            if let Some((name, labels, value)) = parse_sample(line) {
                                let value = if name.ends_with("_timestamp_seconds") {
                                    (value - t0).round()
                                } else {
                                    value
                                };
                                rec.put(series_key(name, &t, labels), at, value);
                            }
                        }
                    }
                    rec.scrapes += 1;
                }
            })
        };
        Scraper {
            targets,
            recording,
            task,
        }
    }

    fn add(&self, job: &str, instance: &str, addr: String) {
        if let Ok(mut t) = self.targets.lock() {
            t.push(Target {
                job: job.into(),
                instance: instance.into(),
                addr,
            });
        }
    }

    /// Notes that `what` happened now (at the next scrape).
    fn mark(&self, what: &str) {
        if let Ok(mut r) = self.recording.lock() {
            let at = r.scrapes;
            r.marks.entry(what.into()).or_insert(at);
        }
    }

    async fn scrapes(&self, n: usize) {
        let until = self.recording.lock().map(|r| r.scrapes + n).unwrap_or(0);
        while self
            .recording
            .lock()
            .map(|r| r.scrapes)
            .unwrap_or(usize::MAX)
            < until
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops and writes the recording in promtool's series notation.
    fn write(self, run: &str, about: &str) -> Result<(), Error> {
        self.task.abort();
        let rec = self.recording.lock().map_err(|_| "scraper panicked")?;
        let mut out = format!(
            "# Recorded from a sandbox rollout ({about}) by tests/sandbox_recordings.rs;\n\
             # regenerate with: cargo test --test sandbox_recordings -- --ignored --test-threads=1\n\
             # One scrape every {INTERVAL} of Prometheus time; `marks` name the scrape at which\n\
             # something happened. `input_series` is promtool's test format.\n"
        );
        out += &format!("interval: {INTERVAL}\nscrapes: {}\nmarks:\n", rec.scrapes);
        for (k, v) in &rec.marks {
            out += &format!("  {k}: {v}\n");
        }
        out += "input_series:\n";
        for (key, slots) in &rec.series {
            let mut slots = slots.clone();
            slots.resize(rec.scrapes, None);
            out += &format!(
                "  - series: '{key}'\n    values: '{}'\n",
                run_length(&slots)
            );
        }
        let dir = fixtures().join("metrics");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{run}.yaml")), out)?;
        Ok(())
    }
}

/// promtool's expanding notation: `v+0xN` is v repeated N+1 times, `_xN` is N
/// missing samples, and `stale` the staleness marker Prometheus writes when a
/// series leaves a scrape (or its target goes down).
fn run_length(slots: &[Option<f64>]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < slots.len() {
        if slots[i].is_none() && i > 0 && slots[i - 1].is_some() {
            parts.push("stale".to_string());
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < slots.len() && slots[j] == slots[i] {
            j += 1;
        }
        let n = j - i;
        parts.push(match slots[i] {
            None => format!("_x{n}"),
            Some(v) if n == 1 => fmt(v),
            Some(v) => format!("{}+0x{}", fmt(v), n - 1),
        });
        i = j;
    }
    parts.join(" ")
}

fn fmt(v: f64) -> String {
    if v.is_infinite() {
        "Inf".into()
    } else {
        format!("{v}")
    }
}

// ------------------------------------------------------------------ cluster

fn scenario(nodes: usize, workload: Workload) -> Scenario {
    let mut s = Scenario::empty();
    s.speed = 50.0;
    s.timing.reboot = DurationRange {
        min: SimDuration(Duration::from_secs(20)),
        max: SimDuration(Duration::from_secs(40)),
    };
    s.timing.pod_start = DurationRange::fixed(Duration::from_secs(5));
    s.nodes = vec![NodeGroup {
        name_prefix: Some("w".into()),
        count: nodes,
        zones: vec!["zone-a".into(), "zone-b".into(), "zone-c".into()],
        roles: vec!["worker".into()],
        ..NodeGroup::default()
    }];
    s.workloads = vec![workload];
    s
}

fn deployment(name: &str, replicas: i64, max_unavailable: i64) -> Workload {
    Workload {
        kind: "Deployment".into(),
        name: name.into(),
        namespace: "shop".into(),
        replicas,
        pdb: Some(PdbSpec {
            max_unavailable: Some(serde_json::json!(max_unavailable)),
            ..PdbSpec::default()
        }),
        ..Workload::default()
    }
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

/// A webhook receiver that refuses every notification (400: failed for good).
async fn refusing_receiver() -> Result<String, Error> {
    let app = Router::new().route("/{path}", post(|| async { StatusCode::BAD_REQUEST }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(base)
}

struct Run {
    cluster: Option<Cluster>,
    dir: PathBuf,
    controllers: Vec<(String, Child)>,
    agents: BTreeMap<String, Vec<tokio::task::JoinHandle<()>>>,
    stop: tokio::sync::watch::Sender<bool>,
    scraper: Scraper,
}

impl Run {
    async fn start(name: &str, s: Scenario) -> Result<Run, Error> {
        let dir = std::env::temp_dir().join(format!("sofort-rec-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let pods = s.workloads.iter().map(|w| w.replicas.max(0) as usize).sum();
        let cluster = Cluster::start(s, 0, dir.join("kubeconfig")).await?;
        let ns: Api<Namespace> = Api::all(cluster.client.clone());
        let mut n = Namespace::default();
        n.metadata.name = Some(NS.into());
        match ns.create(&PostParams::default(), &n).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
        pods::wait_pods_ready(&cluster.client, pods).await;
        let (stop, _) = tokio::sync::watch::channel(false);
        let mut run = Run {
            cluster: Some(cluster),
            dir,
            controllers: Vec::new(),
            agents: BTreeMap::new(),
            stop,
            scraper: Scraper::start(),
        };
        run.spawn_agents().await?;
        Ok(run)
    }

    fn cluster(&self) -> Result<&Cluster, Error> {
        self.cluster.as_ref().ok_or_else(|| "no cluster".into())
    }

    fn client(&self) -> Result<Client, Error> {
        Ok(self.cluster()?.client.clone())
    }

    /// One real agent per node with its metrics served on 127.0.0.1, scraped as job `sofort-agent`.
    async fn spawn_agents(&mut self) -> Result<(), Error> {
        let cluster = self.cluster()?;
        let client = cluster.client.clone();
        let mut started = Vec::new();
        for node in cluster.sandbox.node_names() {
            let sim = cluster.sandbox.host(&node)?;
            let host: Arc<dyn sofort::agent::host::Host> =
                Arc::new(sofort::testkit::host::SandboxHost::new(sim));
            let config = sofort::agent::AgentConfig::new(&node, Duration::from_secs(30), false);
            let metrics = Arc::new(sofort::agent::metrics::AgentMetrics::new());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            let stop = |rx: tokio::sync::watch::Receiver<bool>| async move {
                let mut rx = rx;
                let _ = rx.wait_for(|s| *s).await;
            };
            let agent = {
                let (client, metrics, stop) =
                    (client.clone(), metrics.clone(), stop(self.stop.subscribe()));
                tokio::spawn(async move {
                    let _ = sofort::agent::run_agent(client, config, host, metrics, stop).await;
                })
            };
            let server = {
                let stop = stop(self.stop.subscribe());
                tokio::spawn(async move {
                    let _ = sofort::agent::metrics::serve(listener, metrics, stop).await;
                })
            };
            started.push((node, addr, vec![agent, server]));
        }
        for (node, addr, tasks) in started {
            self.scraper.add("sofort-agent", &node, addr);
            self.agents.insert(node, tasks);
        }
        Ok(())
    }

    /// Stops one agent (its pod is gone): its target goes down.
    fn kill_agent(&mut self, node: &str) {
        for t in self.agents.remove(node).unwrap_or_default() {
            t.abort();
        }
    }

    /// Starts `sofort controller` and scrapes it as job `sofort-controller`.
    async fn start_controller(&mut self, instance: &str, args: &[&str]) -> Result<(), Error> {
        let log_path = self.dir.join(format!("{instance}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(env!("CARGO_BIN_EXE_sofort"))
            .args([
                "--log-format",
                "text",
                "controller",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(["--eviction-retry", "500ms", "--debounce", "20ms"])
            .args(args)
            .env("KUBECONFIG", self.dir.join("kubeconfig"))
            .env("SOFORT_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.controllers.push((instance.into(), child));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("serving /metrics")) {
                let addr = line
                    .split(|c: char| c.is_whitespace() || c == '"' || c == '=')
                    .find(|w| w.starts_with("127.0.0.1:"))
                    .ok_or_else(|| format!("no address in {line}"))?;
                self.scraper.add("sofort-controller", instance, addr.into());
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("controller {instance} did not serve metrics:\n{text}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill_controller(&mut self, instance: &str) {
        for (name, child) in &mut self.controllers {
            if name == instance {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    async fn apply(&self, p: &PatchPolicy) -> Result<(), Error> {
        let api: Api<PatchPolicy> = Api::all(self.client()?);
        api.create(&PostParams::default(), p).await?;
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<PatchPolicy, Error> {
        let api: Api<PatchPolicy> = Api::all(self.client()?);
        Ok(api.get(name).await?)
    }

    /// Waits until `check` holds for the policy's status and returns the policy.
    async fn wait(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&PatchPolicy) -> bool,
    ) -> Result<PatchPolicy, Error> {
        let deadline = Instant::now() + RUN_LIMIT;
        loop {
            if let Ok(p) = self.get(name).await
                && check(&p)
            {
                return Ok(p);
            }
            if Instant::now() > deadline {
                let st = self.get(name).await.ok().and_then(|p| p.status);
                return Err(format!("{name}: no {what} within {RUN_LIMIT:?}: {st:#?}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finish(mut self, run: &str, about: &str) -> Result<(), Error> {
        for (_, c) in &mut self.controllers {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stop.send_replace(true);
        let Run {
            cluster,
            dir,
            scraper,
            ..
        } = self;
        scraper.write(run, about)?;
        if let Some(c) = cluster {
            c.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }
}

fn phase(p: &PatchPolicy) -> Option<Phase> {
    p.status.as_ref().and_then(|s| s.phase)
}

fn current(p: &PatchPolicy) -> bool {
    p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
}

/// Writes a PatchPolicy as the API server returned it, without the fields
/// that change on every run and say nothing about health.
fn save_policy(state: &str, p: &PatchPolicy) -> Result<(), Error> {
    let mut p = p.clone();
    p.metadata.managed_fields = None;
    p.metadata.uid = None;
    p.metadata.resource_version = None;
    let dir = fixtures().join("patchpolicy");
    std::fs::create_dir_all(&dir)?;
    let text = format!(
        "# Recorded from a sandbox rollout by tests/sandbox_recordings.rs (state: {state});\n\
         # regenerate with: cargo test --test sandbox_recordings -- --ignored --test-threads=1\n{}",
        serde_yaml::to_string(&p)?
    );
    std::fs::write(dir.join(format!("{state}.yaml")), text)?;
    Ok(())
}

// ------------------------------------------------------------------ runs

/// A rollout of six nodes that completes while its notifications fail, next
/// to a policy waiting for its window, a paused one and an invalid one; a
/// standby controller that never gets the Lease; at the end an agent stops and
/// the spec changes while no controller runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "regenerates fixtures; run on purpose (see the file's docs)"]
async fn record_rollout() -> Result<(), Error> {
    let mut run = Run::start("rollout", scenario(6, deployment("web", 4, 1))).await?;
    let client = run.client()?;
    // The standby replica: the Lease is held by another, live replica.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let mut lease = Lease::default();
    lease.metadata.name = Some("sofort-controller".into());
    lease.spec = Some(LeaseSpec {
        holder_identity: Some("sofort-controller-elsewhere".into()),
        lease_duration_seconds: Some(3600),
        acquire_time: Some(MicroTime(jiff::Timestamp::now())),
        renew_time: Some(MicroTime(jiff::Timestamp::now())),
        ..LeaseSpec::default()
    });
    leases.create(&PostParams::default(), &lease).await?;
    run.start_controller(
        "controller-standby",
        &[
            "--identity",
            "standby",
            "--namespace",
            NS,
            "--lease-duration",
            "15s",
        ],
    )
    .await?;
    run.start_controller("controller-0", &["--no-leader-election"])
        .await?;

    let base = refusing_receiver().await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut s = Secret::default();
    s.metadata.name = Some("statuspage".into());
    s.string_data = Some([("url".to_string(), format!("{base}/ce"))].into());
    secrets.create(&PostParams::default(), &s).await?;
    run.scraper.scrapes(4).await;

    let mut nightly = policy("nightly", "2026-12-01");
    nightly.spec.notify = Some(NotifySpec {
        webhooks: vec![Webhook {
            name: "statuspage".into(),
            url_secret_ref: SecretKeyRef {
                namespace: NS.into(),
                name: "statuspage".into(),
                key: "url".into(),
            },
            format: WebhookFormat::CloudEvents,
            headers_secret_ref: None,
            ca_bundle_secret_ref: None,
            template: None,
            email: None,
            audience: Default::default(),
            node_events: Vec::new(),
        }],
        advisory: None,
        ..Default::default()
    });
    let mut weekend = policy("weekend", "2026-12-01");
    // A window twelve hours from now: closed.
    let later = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(12))?
        .to_zoned(jiff::tz::TimeZone::UTC);
    weekend.spec.maintenance_windows[0].start = format!("{:02}:00", later.hour());
    weekend.spec.maintenance_windows[0].end = format!("{:02}:00", (later.hour() + 1) % 24);
    let mut frozen = policy("frozen", "2026-12-01");
    frozen.spec.paused = true;
    let mut bad = policy("bad", "2026-12-01");
    bad.spec.maintenance_windows[0].time_zone = "Europe/Zurch".into();

    run.scraper.mark("applied");
    for p in [&nightly, &weekend, &frozen, &bad] {
        run.apply(p).await?;
    }
    let p = run
        .wait("nightly", "a node draining", |p| {
            current(p)
                && phase(p) == Some(Phase::Progressing)
                && p.status
                    .as_ref()
                    .is_some_and(|s| s.active.iter().any(|a| a.step == Step::Draining))
        })
        .await?;
    run.scraper.mark("progressing");
    save_policy("progressing", &p)?;
    // Announced, its start in the next window.
    let p = run
        .wait("weekend", "Scheduled", |p| {
            current(p) && phase(p) == Some(Phase::Scheduled)
        })
        .await?;
    save_policy("waiting-for-window", &p)?;
    let p = run
        .wait("frozen", "Paused", |p| {
            current(p) && phase(p) == Some(Phase::Paused)
        })
        .await?;
    save_policy("paused", &p)?;
    let p = run
        .wait("bad", "Halted", |p| {
            current(p) && phase(p) == Some(Phase::Halted)
        })
        .await?;
    save_policy("invalid-spec", &p)?;
    let p = run
        .wait("nightly", "Completed", |p| {
            current(p) && phase(p) == Some(Phase::Completed)
        })
        .await?;
    run.scraper.mark("completed");
    save_policy("completed", &p)?;
    run.scraper.scrapes(6).await;

    // An agent's pod goes away: its target is down from here on.
    run.kill_agent("w-06");
    run.scraper.mark("agent_stopped");
    run.scraper.scrapes(8).await;

    // A new revision in Git while no controller runs: observedGeneration is behind.
    run.kill_controller("controller-0");
    run.kill_controller("controller-standby");
    let api: Api<PatchPolicy> = Api::all(client.clone());
    let p = api
        .patch(
            "nightly",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"revision": "2026-12-08"}})),
        )
        .await?;
    if current(&p) {
        return Err("the status caught up although no controller runs".into());
    }
    save_policy("generation-behind", &p)?;
    run.finish(
        "rollout",
        "6 nodes complete; notifications refused; a standby replica; agent w-06 stops",
    )
    .await
}

/// A drain that a PodDisruptionBudget blocks for good, with a stuck
/// controller: node writes hang for 20 s (an API fault on `patch nodes`), so
/// the controller cannot mark the node failed and it stays in `Draining` well
/// past its 3 s timeout; once the write goes through the rollout halts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "regenerates fixtures; run on purpose (see the file's docs)"]
async fn record_halted() -> Result<(), Error> {
    let mut run = Run::start("halted", scenario(3, deployment("db", 3, 0))).await?;
    run.start_controller("controller-0", &["--no-leader-election"])
        .await?;
    run.scraper.scrapes(4).await;
    let mut p = policy("pdb", "2026-12-01");
    p.spec.drain.timeout = "3s".into();
    p.spec.rollout.max_unavailable = IntOrString::Int(1);
    run.scraper.mark("applied");
    run.apply(&p).await?;
    run.wait("pdb", "a node draining", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.active.iter().any(|a| a.step == Step::Draining))
    })
    .await?;
    let faults = run.cluster()?.sandbox.faults();
    faults.add(
        FaultRule::new(FaultEffect::Latency(Duration::from_secs(20)), 1.0)
            .verb("patch")
            .resource("nodes"),
    );
    run.scraper.mark("node_writes_hang");
    let p = run
        .wait("pdb", "Halted", |p| {
            current(p) && phase(p) == Some(Phase::Halted)
        })
        .await?;
    run.scraper.mark("halted");
    faults.clear();
    save_policy("halted", &p)?;
    run.scraper.scrapes(8).await;
    run.finish(
        "halted",
        "3 nodes; a PDB blocks the drain; node writes hang 20 s; the rollout halts",
    )
    .await
}
