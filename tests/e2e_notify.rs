//! End to end: customer notifications from the real controller, with real
//! agents, against the API emulator, delivered to a local HTTP receiver.
//!
//! Each test starts its own emulator and receiver on 127.0.0.1 and waits for
//! conditions by polling with deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use sofort::api::{
    Advisory, Announce, Audience, NodeEvent, NotifySpec, PatchPolicy, Phase, SecretKeyRef, Webhook,
    WebhookFormat,
};
use sofort::testkit::{Cluster, demo_policy, sandbox_controller_config};
use sofort_sandbox::{NodeGroup, Scenario};

const NS: &str = "sofort-system";

// ---------------------------------------------------------------- logs

/// Every log line of the test process, with when it was written.
fn logs() -> &'static Mutex<Vec<(Instant, String)>> {
    static LOGS: OnceLock<Mutex<Vec<(Instant, String)>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf).into_owned();
        if std::env::var_os("SOFORT_E2E_LOG").is_some() {
            eprint!("{line}");
        }
        if let Ok(mut l) = logs().lock() {
            l.push((Instant::now(), line));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("sofort=debug"))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

// ---------------------------------------------------------------- receiver

#[derive(Clone, Debug)]
struct Received {
    path: String,
    at: Instant,
    content_type: String,
    authorization: Option<String>,
    body: Value,
    raw: String,
    answered: u16,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Requests to answer 503 first, per path.
    fail_first: Arc<Mutex<BTreeMap<String, usize>>>,
    calls: Arc<Mutex<BTreeMap<String, usize>>>,
    delay: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let app = Router::new()
            .route("/{path}", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (r, base)
    }

    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Accepted requests to `path`, in arrival order.
    fn accepted(&self, path: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.path == path && r.answered < 300)
            .collect()
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let delay = r.delay.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    let n = {
        let mut calls = r.calls.lock().unwrap();
        let c = calls.entry(path.clone()).or_default();
        *c += 1;
        *c
    };
    let fail = r
        .fail_first
        .lock()
        .unwrap()
        .get(&path)
        .copied()
        .unwrap_or(0);
    let status = if n <= fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let raw = String::from_utf8_lossy(&body).into_owned();
    r.got.lock().unwrap().push(Received {
        path,
        at: Instant::now(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        answered: status.as_u16(),
    });
    status
}

// ---------------------------------------------------------------- cluster

/// Three workers in three zones, no workloads: reboots take 1–2 s.
fn scenario() -> Scenario {
    let mut s = Scenario {
        nodes: vec![NodeGroup {
            name_prefix: Some("worker".into()),
            count: 3,
            zones: vec!["zone-a".into(), "zone-b".into(), "zone-c".into()],
            roles: vec!["worker".into()],
            ..NodeGroup::default()
        }],
        ..Scenario::default()
    };
    s.speed = 30.0;
    s
}

async fn cluster(name: &str) -> Cluster {
    capture_logs();
    // The kubeconfig is read once, at the start; the directory goes with it.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join(format!("{name}.kubeconfig"));
    let c = Cluster::start(scenario(), 0, kubeconfig).await.unwrap();
    let ns: Api<Namespace> = Api::all(c.client.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some(NS.into());
    match ns.create(&PostParams::default(), &n).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => panic!("cannot create namespace: {e}"),
    }
    c
}

async fn secret(client: &Client, name: &str, data: &[(&str, &str)]) {
    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    // Opted in to webhook use (the controller uses no other Secret).
    s.metadata.labels = Some([("sofort.dev/webhook".to_string(), "true".to_string())].into());
    s.string_data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    api.create(&PostParams::default(), &s).await.unwrap();
}

fn webhook(name: &str, format: WebhookFormat, headers: bool) -> Webhook {
    let r = |key: &str| SecretKeyRef {
        namespace: NS.into(),
        name: name.into(),
        key: key.into(),
    };
    Webhook {
        name: name.into(),
        url_secret_ref: r("url"),
        format,
        headers_secret_ref: headers.then(|| r("headers")),
        ca_bundle_secret_ref: None,
        template: None,
        email: None,
        audience: Default::default(),
        node_events: Vec::new(),
    }
}

/// The demo policy on the test fleet: routine (always-open window, 2 s lead
/// time) or urgent, with `webhooks` and an advisory.
fn policy(urgent: bool, name: &str, details: &str, webhooks: Vec<Webhook>) -> PatchPolicy {
    let mut p = demo_policy(urgent, jiff::Timestamp::now());
    p.metadata.name = Some(name.into());
    p.spec.rollout.settle = "1s".into();
    if !urgent {
        p.spec.announce = Some(Announce {
            lead_time: "2s".into(),
        });
    }
    p.spec.notify = Some(NotifySpec {
        webhooks,
        advisory: Some(Advisory {
            summary: "Security maintenance".into(),
            details: Some(details.into()),
            release: Default::default(),
        }),
        ..Default::default()
    });
    p
}

async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(client: &Client, name: &str) -> PatchPolicy {
    Api::<PatchPolicy>::all(client.clone())
        .get(name)
        .await
        .unwrap()
}

async fn wait_completed(client: &Client, name: &str, timeout: Duration) -> PatchPolicy {
    wait_for("the rollout to complete", timeout, async || {
        let p = get(client, name).await;
        let s = p.status.as_ref()?;
        (s.phase == Some(Phase::Completed)).then_some(p)
    })
    .await
}

/// Waits until every record of the policy has a final result for every webhook.
async fn wait_results(client: &Client, name: &str, timeout: Duration) -> PatchPolicy {
    wait_for("delivery results in status", timeout, async || {
        let p = get(client, name).await;
        let s = p.status.as_ref()?;
        if std::env::var_os("SOFORT_E2E_LOG").is_some() {
            eprintln!("records: {:?}", s.notifications);
        }
        let done = !s.notifications.is_empty()
            && s.notifications
                .iter()
                .all(|r| r.results.iter().all(|x| !x.ends_with("=pending")));
        done.then_some(p)
    })
    .await
}

fn events_of(status_records: &PatchPolicy) -> Vec<String> {
    status_records
        .status
        .as_ref()
        .map(|s| s.notifications.iter().map(|r| r.event.clone()).collect())
        .unwrap_or_default()
}

async fn policy_events(client: &Client, name: &str) -> Vec<K8sEvent> {
    let api: Api<K8sEvent> = Api::all(client.clone());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("PatchPolicy")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect()
}

fn ce_types(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| r.body["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn slack_titles(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| {
            r.body["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routine_rollout_announces_starts_and_completes_in_both_formats()
-> Result<(), Box<dyn std::error::Error>> {
    let mut c = cluster("routine").await;
    let (rx, base) = Receiver::start().await;
    secret(
        &c.client,
        "statuspage",
        &[
            ("url", &format!("{base}/ce\n")),
            ("headers", "Authorization: Bearer s3cret-token"),
        ],
    )
    .await;
    secret(&c.client, "chat", &[("url", &format!("{base}/slack"))]).await;
    let details = "CVE-2026-1111 (local root exploit in the kernel)";
    let p = policy(
        false,
        "routine",
        details,
        vec![
            webhook("statuspage", WebhookFormat::CloudEvents, true),
            webhook("chat", WebhookFormat::Slack, false),
        ],
    );
    let t0 = Instant::now();
    c.spawn_controller(sandbox_controller_config());
    c.spawn_agents(true)?;
    Api::<PatchPolicy>::all(c.client.clone())
        .create(&PostParams::default(), &p)
        .await?;

    wait_completed(&c.client, "routine", Duration::from_secs(60)).await;
    let done = wait_results(&c.client, "routine", Duration::from_secs(20)).await;
    let status = done.status.clone().ok_or("no status")?;
    assert_eq!(events_of(&done), ["Scheduled", "Started", "Completed"]);
    for r in &status.notifications {
        let mut results = r.results.clone();
        results.sort();
        assert_eq!(results, ["chat=delivered", "statuspage=delivered"], "{r:?}");
    }
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "NotificationsDelivered")
        .expect("NotificationsDelivered condition");
    assert_eq!(cond.status, "True");

    // CloudEvents, in order, exactly once each.
    let ce = rx.accepted("ce");
    assert_eq!(
        ce_types(&ce),
        [
            "dev.sofort.rollout.scheduled",
            "dev.sofort.rollout.started",
            "dev.sofort.rollout.completed"
        ]
    );
    let ids: Vec<&str> = ce.iter().map(|r| r.body["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "routine/2026-11-27/scheduled",
            "routine/2026-11-27/started",
            "routine/2026-11-27/completed"
        ]
    );
    for r in &ce {
        assert_eq!(r.content_type, "application/cloudevents+json");
        assert_eq!(r.authorization.as_deref(), Some("Bearer s3cret-token"));
        let b = &r.body;
        assert_eq!(b["specversion"], "1.0");
        assert_eq!(b["source"], "/patchpolicies/routine");
        assert_eq!(b["subject"], "2026-11-27");
        assert_eq!(b["datacontenttype"], "application/json");
        assert_eq!(b["data"]["policy"], "routine");
        assert_eq!(b["data"]["urgent"], false);
        assert_eq!(b["data"]["summary"], "Security maintenance");
        assert_eq!(b["data"]["nodes"]["total"], 3);
    }
    let (sched, started, completed) = (
        &ce[0].body["data"],
        &ce[1].body["data"],
        &ce[2].body["data"],
    );
    let text = sched["text"].as_str().ok_or("no text")?;
    assert!(
        text.starts_with("Security maintenance: maintenance on 3 servers")
            && text.contains("expected done by"),
        "{text}"
    );
    assert!(sched["expectedCompletion"].is_string(), "{sched}");
    assert_eq!(sched["nodes"]["updated"], 0);
    assert!(
        started["text"]
            .as_str()
            .unwrap()
            .starts_with("Security maintenance: maintenance on 3 servers has started"),
        "{started}"
    );
    assert_eq!(
        completed["text"],
        format!(
            "Security maintenance: maintenance completed, 3 of 3 servers updated. Details: {details}"
        )
    );
    assert_eq!(completed["details"], details);
    assert_eq!(completed["nodes"]["updated"], 3);
    for d in [sched, started] {
        assert!(d.get("details").is_none());
        assert!(!d.to_string().contains("CVE-2026-1111"));
    }
    // Nothing started before the lead time: Started is decided >= 2 s after Scheduled.
    let t_sched: jiff::Timestamp = ce[0].body["time"].as_str().unwrap().parse()?;
    let t_start: jiff::Timestamp = ce[1].body["time"].as_str().unwrap().parse()?;
    assert!(
        t_start.duration_since(t_sched) >= jiff::SignedDuration::from_secs(1),
        "{t_sched} {t_start}"
    );

    // Slack: the same sequence, with titles and the text.
    let slack = rx.accepted("slack");
    assert_eq!(
        slack_titles(&slack),
        [
            "Maintenance scheduled",
            "Maintenance started",
            "Maintenance completed"
        ]
    );
    for (s, c) in slack.iter().zip(&ce) {
        assert_eq!(s.content_type, "application/json");
        assert_eq!(s.authorization, None);
        assert_eq!(s.body["text"], c.body["data"]["text"]);
        assert_eq!(
            s.body["blocks"][2]["elements"][0]["text"]
                .as_str()
                .unwrap()
                .split(" · ")
                .nth(1),
            Some("policy routine")
        );
    }

    // The notifications are mirrored as Events on the policy.
    let evs = policy_events(&c.client, "routine").await;
    let reasons: BTreeSet<String> = evs.iter().filter_map(|e| e.reason.clone()).collect();
    for r in [
        "NotificationScheduled",
        "NotificationStarted",
        "NotificationCompleted",
    ] {
        assert!(reasons.contains(r), "{r} missing in {reasons:?}");
    }
    eprintln!(
        "routine rollout with notifications: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_rollout_says_it_could_not_be_announced() -> Result<(), Box<dyn std::error::Error>> {
    let mut c = cluster("urgent").await;
    let (rx, base) = Receiver::start().await;
    secret(&c.client, "statuspage", &[("url", &format!("{base}/ce"))]).await;
    secret(&c.client, "chat", &[("url", &format!("{base}/slack"))]).await;
    let details = "CVE-2026-2222 (remote code execution)";
    let p = policy(
        true,
        "urgent",
        details,
        vec![
            webhook("statuspage", WebhookFormat::CloudEvents, false),
            webhook("chat", WebhookFormat::Slack, false),
        ],
    );
    c.spawn_controller(sandbox_controller_config());
    c.spawn_agents(true)?;
    Api::<PatchPolicy>::all(c.client.clone())
        .create(&PostParams::default(), &p)
        .await?;
    wait_completed(&c.client, "urgent", Duration::from_secs(60)).await;
    let done = wait_results(&c.client, "urgent", Duration::from_secs(20)).await;
    assert_eq!(events_of(&done), ["UrgentStarted", "Completed"]);

    let ce = rx.accepted("ce");
    assert_eq!(
        ce_types(&ce),
        [
            "dev.sofort.rollout.urgentstarted",
            "dev.sofort.rollout.completed"
        ]
    );
    let first = &ce[0].body;
    assert_eq!(first["id"], "urgent/2026-11-27/urgentstarted");
    assert_eq!(first["data"]["urgent"], true);
    let text = first["data"]["text"].as_str().ok_or("no text")?;
    assert!(
        text.starts_with(
            "Security maintenance: urgent maintenance on 3 servers has started now; it could not be announced ahead"
        ) && text.ends_with("Services may restart briefly."),
        "{text}"
    );
    assert!(!first.to_string().contains("CVE-2026-2222"));
    assert_eq!(
        ce[1].body["data"]["text"],
        format!(
            "Security maintenance: maintenance completed, 3 of 3 servers updated. Details: {details}"
        )
    );
    let slack = rx.accepted("slack");
    assert_eq!(
        slack_titles(&slack),
        ["Urgent maintenance started", "Maintenance completed"]
    );
    assert_eq!(slack[0].body["text"], first["data"]["text"]);
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_channels_get_each_nodes_drain_reboot_and_uncordon_in_order()
-> Result<(), Box<dyn std::error::Error>> {
    let mut c = cluster("progress").await;
    let (rx, base) = Receiver::start().await;
    secret(
        &c.client,
        "customers",
        &[("url", &format!("{base}/customers"))],
    )
    .await;
    secret(&c.client, "ops", &[("url", &format!("{base}/ops"))]).await;
    secret(
        &c.client,
        "ops-chat",
        &[("url", &format!("{base}/ops-chat"))],
    )
    .await;
    let details = "CVE-2026-3333 (container escape)";
    let all = vec![
        NodeEvent::NodeDraining,
        NodeEvent::NodeRebooting,
        NodeEvent::NodeUncordoned,
    ];
    let ops = Webhook {
        audience: Audience::Admins,
        node_events: all,
        ..webhook("ops", WebhookFormat::CloudEvents, false)
    };
    let chat = Webhook {
        audience: Audience::Admins,
        node_events: vec![NodeEvent::NodeRebooting],
        ..webhook("ops-chat", WebhookFormat::Slack, false)
    };
    let p = policy(
        true,
        "progress",
        details,
        vec![
            webhook("customers", WebhookFormat::CloudEvents, false),
            ops,
            chat,
        ],
    );
    c.spawn_controller(sandbox_controller_config());
    c.spawn_agents(true)?;
    Api::<PatchPolicy>::all(c.client.clone())
        .create(&PostParams::default(), &p)
        .await?;
    wait_completed(&c.client, "progress", Duration::from_secs(90)).await;
    let done = wait_results(&c.client, "progress", Duration::from_secs(20)).await;
    // Progress notices have no records: status holds the rollout's only.
    assert_eq!(events_of(&done), ["UrgentStarted", "Completed"]);
    let ops = wait_for(
        "every notice at the admin channel",
        Duration::from_secs(20),
        async || {
            let got = rx.accepted("ops");
            (got.len() >= 11).then_some(got)
        },
    )
    .await;
    let types = ce_types(&ops);
    assert_eq!(types.len(), 11, "{types:?}");
    assert_eq!(
        types.first().map(String::as_str),
        Some("dev.sofort.rollout.urgentstarted")
    );
    // The last uncordon went out before the completion, in the same lane.
    assert_eq!(
        types.last().map(String::as_str),
        Some("dev.sofort.rollout.completed")
    );
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &ops[1..ops.len() - 1] {
        let data = &r.body["data"];
        let node = data["node"].as_str().ok_or("no node")?.to_string();
        let event = data["event"].as_str().ok_or("no event")?.to_string();
        assert_eq!(
            r.body["id"],
            format!("progress/2026-11-27/{}/{node}", event.to_ascii_lowercase())
        );
        assert!(!r.raw.contains("CVE-2026-3333"), "{}", r.raw);
        per_node.entry(node).or_default().push(event);
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    for (node, events) in &per_node {
        assert_eq!(
            events,
            &["NodeDraining", "NodeRebooting", "NodeUncordoned"],
            "{node}"
        );
    }
    // The chat subscribed to reboots only: one per node, named.
    let chat = rx.accepted("ops-chat");
    let titles = slack_titles(&chat);
    assert_eq!(
        titles.iter().filter(|t| *t == "Server rebooting").count(),
        3,
        "{titles:?}"
    );
    assert_eq!(titles.len(), 5, "{titles:?}");
    for node in per_node.keys() {
        assert!(chat.iter().any(|r| r.raw.contains(node.as_str())), "{node}");
    }
    // The customer channel hears about the rollout, never about a node.
    let customers = rx.accepted("customers");
    assert_eq!(
        ce_types(&customers),
        [
            "dev.sofort.rollout.urgentstarted",
            "dev.sofort.rollout.completed"
        ]
    );
    for node in per_node.keys() {
        assert!(
            customers.iter().all(|r| !r.raw.contains(node.as_str())),
            "{node} named to customers"
        );
    }
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receiver_is_retried_until_it_accepts() -> Result<(), Box<dyn std::error::Error>> {
    let mut c = cluster("retry").await;
    let (rx, base) = Receiver::start().await;
    rx.fail_first.lock().unwrap().insert("flaky".into(), 3);
    secret(&c.client, "flaky", &[("url", &format!("{base}/flaky"))]).await;
    let p = policy(
        true,
        "retry",
        "CVE-2026-3333",
        vec![webhook("flaky", WebhookFormat::CloudEvents, false)],
    );
    c.spawn_controller(sandbox_controller_config());
    c.spawn_agents(true)?;
    Api::<PatchPolicy>::all(c.client.clone())
        .create(&PostParams::default(), &p)
        .await?;
    // While the receiver fails, the rollout goes on.
    wait_completed(&c.client, "retry", Duration::from_secs(60)).await;
    let done = wait_results(&c.client, "retry", Duration::from_secs(30)).await;
    let s = done.status.ok_or("no status")?;
    assert_eq!(s.notifications[0].event, "UrgentStarted");
    assert_eq!(s.notifications[0].results, ["flaky=delivered"]);

    let all: Vec<Received> = rx.all().into_iter().filter(|r| r.path == "flaky").collect();
    let first: Vec<&Received> = all
        .iter()
        .filter(|r| r.body["id"] == "retry/2026-11-27/urgentstarted")
        .collect();
    let answers: Vec<u16> = first.iter().map(|r| r.answered).collect();
    assert_eq!(
        answers,
        [503, 503, 503, 200],
        "attempts of the first notification"
    );
    // Backoff between attempts: 1 s, 2 s, 4 s with jitter down to half.
    let gaps: Vec<Duration> = first.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(450), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(1900), "{gaps:?}");
    // The same body every time.
    assert!(first.iter().all(|r| r.raw == first[0].raw));
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notification_is_decided_once_across_a_controller_kill()
-> Result<(), Box<dyn std::error::Error>> {
    let mut c = cluster("restart").await;
    let (rx, base) = Receiver::start().await;
    // Slow answers keep deliveries in flight when the controller stops.
    rx.delay.store(700, Ordering::SeqCst);
    secret(&c.client, "statuspage", &[("url", &format!("{base}/ce"))]).await;
    let p = policy(
        false,
        "restart",
        "CVE-2026-4444",
        vec![webhook("statuspage", WebhookFormat::CloudEvents, false)],
    );
    c.spawn_agents(true)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let kc = c.kube_config.clone();
    let mut cfg = sandbox_controller_config();
    cfg.identity = "first".into();
    let first = tokio::spawn(async move {
        let mut stop = stop_rx;
        let _ = sofort::controller::run(kc, cfg, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    });
    Api::<PatchPolicy>::all(c.client.clone())
        .create(&PostParams::default(), &p)
        .await?;
    // Stop it as soon as Started is decided, while its delivery is in flight.
    wait_for(
        "Started to be decided",
        Duration::from_secs(30),
        async || {
            let p = get(&c.client, "restart").await;
            events_of(&p).contains(&"Started".to_string()).then_some(())
        },
    )
    .await;
    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the first controller stops")?;
    let mid = get(&c.client, "restart").await;
    assert_ne!(mid.status.as_ref().unwrap().phase, Some(Phase::Completed));

    // A new controller takes over from cluster state alone.
    let mut cfg = sandbox_controller_config();
    cfg.identity = "second".into();
    c.spawn_controller(cfg);
    wait_completed(&c.client, "restart", Duration::from_secs(60)).await;
    let done = wait_results(&c.client, "restart", Duration::from_secs(30)).await;
    assert_eq!(events_of(&done), ["Scheduled", "Started", "Completed"]);
    for r in &done.status.as_ref().unwrap().notifications {
        assert_eq!(r.results, ["statuspage=delivered"], "{r:?}");
    }
    // Each notification decided once: duplicates only as redeliveries with the same id and time.
    let ce = rx.accepted("ce");
    let mut by_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &ce {
        by_id
            .entry(r.body["id"].as_str().unwrap().to_string())
            .or_default()
            .insert(r.body["time"].as_str().unwrap().to_string());
    }
    assert_eq!(
        by_id.keys().cloned().collect::<Vec<_>>(),
        [
            "restart/2026-11-27/completed",
            "restart/2026-11-27/scheduled",
            "restart/2026-11-27/started"
        ]
    );
    for (id, times) in &by_id {
        assert_eq!(times.len(), 1, "{id} decided more than once: {times:?}");
    }
    eprintln!(
        "deliveries across the restart: {} for 3 notifications",
        ce.len()
    );
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_details_stay_embargoed_until_completed() -> Result<(), Box<dyn std::error::Error>>
{
    let mut c = cluster("embargo").await;
    let (rx, base) = Receiver::start().await;
    secret(&c.client, "statuspage", &[("url", &format!("{base}/ce"))]).await;
    secret(&c.client, "chat", &[("url", &format!("{base}/slack"))]).await;
    let details = "CVE-2026-5555 (privilege escalation in the container runtime)";
    let needle = "cve-2026-5555";
    let p = policy(
        false,
        "embargo",
        details,
        vec![
            webhook("statuspage", WebhookFormat::CloudEvents, false),
            webhook("chat", WebhookFormat::Slack, false),
        ],
    );
    let log_start = Instant::now();
    c.spawn_controller(sandbox_controller_config());
    c.spawn_agents(true)?;
    Api::<PatchPolicy>::all(c.client.clone())
        .create(&PostParams::default(), &p)
        .await?;

    // Poll status while the rollout runs: words in status never carry the details.
    let mut polls = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = get(&c.client, "embargo").await;
        polls += 1;
        if let Some(s) = &p.status {
            if s.phase == Some(Phase::Completed) {
                break;
            }
            let text = serde_json::to_string(s).unwrap().to_ascii_lowercase();
            assert!(
                !text.contains(needle),
                "status before completion leaks: {text}"
            );
        }
        assert!(Instant::now() < deadline, "rollout did not complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_results(&c.client, "embargo", Duration::from_secs(20)).await;

    // Webhooks: only the Completed notifications carry the details.
    let mut completed_at = None;
    for r in rx.all() {
        let completed = r.body["type"] == "dev.sofort.rollout.completed"
            || r.body["blocks"][0]["text"]["text"] == "Maintenance completed";
        assert_eq!(
            r.raw.to_ascii_lowercase().contains(needle),
            completed,
            "{}: {}",
            r.path,
            r.raw
        );
        if completed {
            completed_at = Some(completed_at.map_or(r.at, |t: Instant| t.min(r.at)));
        }
    }
    let completed_at = completed_at.expect("a Completed notification");

    // Events: only the mirror of the Completed notification carries them.
    let api: Api<K8sEvent> = Api::all(c.client.clone());
    let evs = api.list(&ListParams::default()).await?.items;
    assert!(!evs.is_empty());
    for e in &evs {
        let note = e.note.clone().unwrap_or_default().to_ascii_lowercase();
        if note.contains(needle) {
            assert_eq!(e.reason.as_deref(), Some("NotificationCompleted"), "{e:?}");
        }
    }

    // Logs of this process before the Completed notification was received.
    let lines = logs().lock().unwrap().clone();
    let mut seen = 0;
    for (at, line) in &lines {
        if *at < log_start || *at >= completed_at {
            continue;
        }
        seen += 1;
        assert!(
            !line.to_ascii_lowercase().contains(needle),
            "log leaks: {line}"
        );
    }
    assert!(seen > 0, "no log lines captured");
    eprintln!(
        "embargo held over {polls} status polls, {} Events, {seen} log lines",
        evs.len()
    );
    c.shutdown().await;
    Ok(())
}
