//! End to end: a standing policy (`trigger: RebootRequired`) with the real
//! controller and real agents against the API emulator. No revision change:
//! the nodes that report reboot-required are rebooted once each, in rounds
//! spaced by `minRoundInterval`, each announced with its own CloudEvents
//! (`policy/<round>/<event>`); a node due after an announcement waits for
//! the next round.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::Value;
use sofort::api::{
    Announce, NotifySpec, PatchPolicy, RoundPhase, RoundStatus, SecretKeyRef, Trigger, Webhook,
    WebhookFormat,
};
use sofort::testkit::{Cluster, demo_policy, sandbox_controller_config};
use sofort_sandbox::{NodeGroup, Scenario};

const NS: &str = "sofort-system";
const POLICY: &str = "standing";
/// From round start to round start. Round 1 stays Completed, for the test to
/// see, from its end (about 4 s after its start) until round 2 is planned
/// (`INTERVAL - LEAD` after it started): about 6 s.
const INTERVAL: Duration = Duration::from_secs(14);
/// Announcement lead time: how long a round is seen Scheduled.
const LEAD: &str = "4s";

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
}

async fn receive(State(r): State<Receiver>, body: Bytes) -> StatusCode {
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.got.lock().unwrap().push(v);
    StatusCode::OK
}

async fn receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let app = Router::new()
        .route("/ce", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ce", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (r, url)
}

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

fn standing_policy() -> PatchPolicy {
    let mut p = demo_policy(false, jiff::Timestamp::now());
    p.metadata.name = Some(POLICY.into());
    p.spec.revision = String::new();
    p.spec.trigger = Trigger::RebootRequired;
    p.spec.rollout.settle = "1s".into();
    p.spec.rollout.min_round_interval = Some(format!("{}s", INTERVAL.as_secs()));
    p.spec.announce = Some(Announce {
        lead_time: LEAD.into(),
    });
    p.spec.notify = Some(NotifySpec {
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

async fn round(client: &Client) -> Option<RoundStatus> {
    let p = Api::<PatchPolicy>::all(client.clone())
        .get(POLICY)
        .await
        .ok()?;
    p.status?.round
}

async fn label(client: &Client, node: &str) -> Option<String> {
    let n = Api::<Node>::all(client.clone()).get(node).await.ok()?;
    n.metadata
        .labels?
        .get("sofort.dev/reboot-required")
        .cloned()
}

/// Nodes carrying sofort's pending-reboot taint.
async fn tainted(client: &Client) -> Vec<String> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    nodes
        .into_iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key == "sofort.dev/pending-reboot"))
        })
        .filter_map(|n| n.metadata.name)
        .collect()
}

fn reboots(c: &Cluster) -> Vec<u64> {
    ["worker-01", "worker-02", "worker-03"]
        .iter()
        .map(|n| {
            c.sandbox
                .host(n)
                .map(|h| h.reboot_count())
                .unwrap_or(u64::MAX)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standing_policy_reboots_due_nodes_once_each_in_spaced_announced_rounds()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let mut c = Cluster::start(scenario(), 0, kubeconfig).await?;
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NS.into());
    let _ = Api::<Namespace>::all(c.client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    let (rx, url) = receiver().await;
    let mut secret = Secret::default();
    secret.metadata.name = Some("statuspage".into());
    secret.metadata.labels = Some([("sofort.dev/webhook".to_string(), "true".to_string())].into());
    secret.string_data = Some([("url".to_string(), url)].into());
    Api::<Secret>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await?;

    let t0 = Instant::now();
    c.set_reboot_required("worker-01", true)?;
    c.spawn_controller(sandbox_controller_config());
    c.spawn_agents_checking_every(true, Duration::from_millis(500))?;
    wait_for(
        "worker-01 to report reboot-required",
        Duration::from_secs(10),
        async || (label(&c.client, "worker-01").await.as_deref() == Some("true")).then_some(()),
    )
    .await;
    Api::<PatchPolicy>::all(c.client.clone())
        .create(&PostParams::default(), &standing_policy())
        .await?;

    // Round 1: planned from the nodes due now.
    let r1 = wait_for(
        "round 1 to be announced",
        Duration::from_secs(10),
        async || round(&c.client).await,
    )
    .await;
    assert_eq!(r1.nodes, ["worker-01"]);
    assert_eq!(r1.phase, RoundPhase::Scheduled);
    assert!(r1.id.starts_with("r1-"), "{}", r1.id);
    // While round 1 is announced its member, and only it, is tainted so that
    // workloads stop landing on it.
    let queued = wait_for(
        "round 1's member to be tainted or started",
        Duration::from_secs(10),
        async || {
            let t = tainted(&c.client).await;
            let started = round(&c.client)
                .await
                .is_some_and(|r| r.phase != RoundPhase::Scheduled);
            (!t.is_empty() || started).then_some(t)
        },
    )
    .await;
    assert_eq!(queued, ["worker-01"], "taints while round 1 was announced");
    // worker-02 becomes due after the announcement: it waits for round 2.
    c.set_reboot_required("worker-02", true)?;
    wait_for(
        "worker-02 to report reboot-required",
        Duration::from_secs(10),
        async || (label(&c.client, "worker-02").await.as_deref() == Some("true")).then_some(()),
    )
    .await;
    let r1 = wait_for("round 1 to complete", Duration::from_secs(30), async || {
        round(&c.client)
            .await
            .filter(|r| r.id == r1.id && r.phase == RoundPhase::Completed)
    })
    .await;
    assert_eq!(
        r1.nodes,
        ["worker-01"],
        "a late-due node joined an announced round"
    );
    assert_eq!(reboots(&c), [1, 0, 0]);

    // Round 2: worker-02 only, no earlier than minRoundInterval after round 1 started.
    let r2 = wait_for("round 2 to complete", Duration::from_secs(40), async || {
        round(&c.client)
            .await
            .filter(|r| r.id != r1.id && r.phase == RoundPhase::Completed)
    })
    .await;
    assert!(r2.id.starts_with("r2-"), "{}", r2.id);
    assert_eq!(r2.nodes, ["worker-02"]);
    let started = |r: &RoundStatus| r.started_at.as_ref().map(|t| t.0);
    let (s1, s2) = (
        started(&r1).ok_or("r1 never started")?,
        started(&r2).ok_or("r2 never started")?,
    );
    let gap = s2.duration_since(s1);
    assert!(
        gap >= jiff::SignedDuration::try_from(INTERVAL)?,
        "rounds {gap:?} apart, less than minRoundInterval"
    );
    // Settle and give the agents time to report: nothing else is rebooted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(reboots(&c), [1, 1, 0]);
    assert_eq!(round(&c.client).await.map(|r| r.id), Some(r2.id.clone()));
    assert!(
        tainted(&c.client).await.is_empty(),
        "a taint outlived its round"
    );
    // Both rounds are in the history the status page lists.
    let history: Vec<String> = Api::<PatchPolicy>::all(c.client.clone())
        .get(POLICY)
        .await?
        .status
        .map(|s| s.history.into_iter().map(|h| h.id).collect())
        .unwrap_or_default();
    assert_eq!(history, [r1.id.clone(), r2.id.clone()]);

    // Each round announced on its own: Scheduled, Started, Completed.
    let ids: Vec<String> = wait_for(
        "round 2's notifications",
        Duration::from_secs(10),
        async || {
            let ids: Vec<String> = rx
                .got
                .lock()
                .unwrap()
                .iter()
                .map(|b| b["id"].as_str().unwrap_or_default().to_string())
                .collect();
            (ids.len() >= 6).then_some(ids)
        },
    )
    .await;
    let want: Vec<String> = [&r1.id, &r2.id]
        .iter()
        .flat_map(|r| {
            ["scheduled", "started", "completed"]
                .iter()
                .map(move |e| format!("{POLICY}/{r}/{e}"))
        })
        .collect();
    assert_eq!(ids, want);
    eprintln!(
        "two rounds ({} then {}) {:?} apart, finished in {:.1}s",
        r1.id,
        r2.id,
        gap,
        t0.elapsed().as_secs_f64()
    );
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_deleted_mid_round_frees_its_slot_and_is_not_a_failure()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let mut c = Cluster::start(scenario(), 0, kubeconfig).await?;
    for n in ["worker-01", "worker-02", "worker-03"] {
        c.set_reboot_required(n, true)?;
    }
    c.spawn_controller(sandbox_controller_config());
    c.spawn_agents_checking_every(true, Duration::from_millis(500))?;
    wait_for(
        "every node to report reboot-required",
        Duration::from_secs(10),
        async || {
            for n in ["worker-01", "worker-02", "worker-03"] {
                if label(&c.client, n).await.as_deref() != Some("true") {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let mut p = standing_policy();
    p.spec.notify = None;
    p.spec.announce = None;
    p.spec.rollout.max_unavailable =
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1);
    p.spec.rollout.order.group_by = None;
    Api::<PatchPolicy>::all(c.client.clone())
        .create(&PostParams::default(), &p)
        .await?;
    // The first member in order is claimed; the cloud replaces it.
    let nodes = Api::<Node>::all(c.client.clone());
    wait_for(
        "worker-01 to be claimed",
        Duration::from_secs(15),
        async || {
            let n = nodes.get("worker-01").await.ok()?;
            n.metadata
                .annotations?
                .contains_key("sofort.dev/record")
                .then_some(())
        },
    )
    .await;
    nodes.delete("worker-01", &Default::default()).await?;
    let r = wait_for(
        "the round to complete",
        Duration::from_secs(40),
        async || {
            round(&c.client)
                .await
                .filter(|r| r.phase == RoundPhase::Completed)
        },
    )
    .await;
    assert_eq!(r.nodes, ["worker-01", "worker-02", "worker-03"]);
    assert_eq!(r.gone, ["worker-01"]);
    let p = Api::<PatchPolicy>::all(c.client.clone())
        .get(POLICY)
        .await?;
    let st = p.status.ok_or("no status")?;
    assert!(st.failed.is_empty(), "{:?}", st.failed);
    assert_eq!(
        st.nodes.map(|n| (n.total, n.updated, n.failed)),
        Some((2, 2, 0))
    );
    assert_eq!(&reboots(&c)[1..], [1, 1]);
    c.shutdown().await;
    Ok(())
}
