//! End to end: the public status page of the real controller, with real
//! agents against the API emulator, read by headless Chromium (Debian's
//! `chromium`), its Atom feed by Python's `feedparser` and its JSON checked
//! against `docs/status-page.schema.json` by Python's `jsonschema` (all
//! installed by `scripts/setup-test-tools.sh`).
//!
//! An urgent rollout with embargoed advisory details is paused half-way:
//! the page (at phone and desktop widths) says "Security maintenance in
//! progress" and shows neither the details nor any policy, node or revision
//! name. Resumed to completion, the page says the details, and the feed's
//! entry keeps its id with a later `updated`.
//! A second revision follows: the page lists the first in its history while
//! the second waits, and both once it is done, each with its own feed entry.
//!
//! The pictures in `docs/` come from the demo instead
//! (`scripts/status-page-screenshots.sh`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sofort::api::{Advisory, NotifySpec, PatchPolicy, Phase};
use sofort::testkit::{Cluster, demo_policy, sandbox_controller_config, sandbox_status_page};
use sofort_sandbox::{NodeGroup, Scenario};

const DETAILS: &str = "CVE-2026-31337 fixed: local privilege escalation in the kernel";
const CVE: &str = "CVE-2026-31337";
const POLICY: &str = "kernel-hotfix-prod";
const REVISION: &str = "rev-kernel-7";
const NEXT_REVISION: &str = "rev-kernel-8";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let p = repo().join(".tools/venv/bin/python");
    assert!(
        p.exists(),
        "the status page tests need feedparser and jsonschema in .tools/venv ({} is missing); run scripts/setup-test-tools.sh",
        p.display()
    );
    p
}

fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(c);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "the status page tests need headless Chromium (Debian package `chromium`); run scripts/setup-test-tools.sh"
    );
}

/// Runs a command with a deadline; returns stdout, panics with stderr on failure.
async fn run(mut cmd: tokio::process::Command, what: &str, limit: Duration) -> String {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Headless Chromium as root, with a fresh profile, no network but the page.
fn browser(profile: &Path, width: u32) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--window-size={width},1100"));
    c
}

/// The page as Chromium rendered it (`--dump-dom`; the page has no script,
/// so its DOM is the same at every width), and screenshots of it at phone
/// and desktop widths (`shots`: width, file), taken at once.
async fn chromium_view(url: &str, shots: &[(u32, PathBuf)]) -> String {
    let runs = shots.iter().map(|(width, shot)| async move {
        let profile = tempfile::tempdir().unwrap();
        let mut c = browser(profile.path(), *width);
        c.arg(format!("--screenshot={}", shot.display())).arg(url);
        run(c, "chromium --screenshot", Duration::from_secs(60)).await;
        assert!(
            std::fs::metadata(shot).is_ok_and(|m| m.len() > 1000),
            "no screenshot written"
        );
    });
    futures::future::join_all(runs).await;
    let profile = tempfile::tempdir().unwrap();
    let mut c = browser(profile.path(), 412);
    c.arg("--dump-dom").arg(url);
    run(c, "chromium --dump-dom", Duration::from_secs(60)).await
}

async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
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

/// What a subscriber's feed reader sees.
async fn feedparser(atom: &str, dir: &Path, name: &str) -> Value {
    let file = dir.join(name);
    std::fs::write(&file, atom).unwrap();
    let mut c = tokio::process::Command::new(python());
    c.arg(repo().join("tests/py/feed.py")).arg(&file);
    let out = run(c, "feedparser", Duration::from_secs(30)).await;
    serde_json::from_str(&out).unwrap()
}

async fn check_schema(doc: &str, dir: &Path, name: &str) {
    let file = dir.join(name);
    std::fs::write(&file, doc).unwrap();
    let mut c = tokio::process::Command::new(python());
    c.arg(repo().join("tests/py/jsonschema_check.py"))
        .arg(repo().join("docs/status-page.schema.json"))
        .arg(&file);
    run(c, "jsonschema", Duration::from_secs(30)).await;
}

/// None of what must stay private: the details before completion, and at
/// any time policy, node and pod names, the revision, failure reasons.
fn assert_private(what: &str, text: &str, details_allowed: bool) {
    for secret in [
        POLICY,
        "hidden-policy",
        "worker-",
        REVISION,
        NEXT_REVISION,
        "Hidden title",
    ] {
        assert!(!text.contains(secret), "{what}: {secret:?} leaked:\n{text}");
    }
    assert_eq!(
        text.contains(CVE),
        details_allowed,
        "{what}: details shown = {}:\n{text}",
        text.contains(CVE)
    );
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

fn policy() -> PatchPolicy {
    let mut p = demo_policy(true, jiff::Timestamp::now());
    p.metadata.name = Some(POLICY.into());
    p.spec.revision = REVISION.into();
    p.spec.rollout.max_unavailable =
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1);
    p.spec.notify = Some(NotifySpec {
        status_page: true,
        public_title: Some("Web hosting".into()),
        advisory: Some(Advisory {
            summary: "Security maintenance".into(),
            details: Some(DETAILS.into()),
            release: Default::default(),
        }),
        ..Default::default()
    });
    p
}

/// A policy that did not opt in: never on the page.
fn hidden() -> PatchPolicy {
    let mut p = demo_policy(false, jiff::Timestamp::now());
    p.metadata.name = Some("hidden-policy".into());
    p.spec.node_selector.match_labels =
        Some([("sofort.dev/none".to_string(), "x".to_string())].into());
    p.spec.notify = Some(NotifySpec {
        status_page: false,
        public_title: Some("Hidden title".into()),
        ..Default::default()
    });
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_feed_follow_an_urgent_rollout_under_embargo() {
    // Fail early, with the set-up hint, when a tool is missing.
    let _ = (python(), chromium());
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("kubeconfig");
    let mut c = Cluster::start(scenario(), 0, kubeconfig).await.unwrap();
    let ns: Api<Namespace> = Api::all(c.client.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some("sofort-system".into());
    let _ = ns.create(&PostParams::default(), &n).await;

    let mut cfg = sandbox_controller_config();
    let status = sandbox_status_page();
    let bound = status.bound.clone();
    cfg.status_page = Some(status);
    c.spawn_controller(cfg);
    c.spawn_agents(true).unwrap();
    let addr = wait_for("the status listener", Duration::from_secs(20), async || {
        bound.get().copied()
    })
    .await;
    let base = format!("http://{addr}");

    let api: Api<PatchPolicy> = Api::all(c.client.clone());
    api.create(&PostParams::default(), &hidden()).await.unwrap();
    api.create(&PostParams::default(), &policy()).await.unwrap();

    // Half-way: one server updated, then paused so the page holds still.
    wait_for(
        "a first server updated",
        Duration::from_secs(60),
        async || {
            let p = api.get(POLICY).await.ok()?;
            (p.status?.nodes?.updated >= 1).then_some(())
        },
    )
    .await;
    let pause = Patch::Merge(json!({"spec": {"paused": true}}));
    api.patch(POLICY, &PatchParams::default(), &pause)
        .await
        .unwrap();
    let during: Value = wait_for(
        "the page to show the paused rollout",
        Duration::from_secs(60),
        async || {
            let p = api.get(POLICY).await.ok()?;
            let s = p.status?;
            if s.phase != Some(Phase::Paused) || !s.active.is_empty() {
                return None;
            }
            let (code, body) = http_get(&format!("{base}/status.json")).await;
            let v: Value = serde_json::from_str(&body).ok()?;
            (code == 200 && v["current"][0]["state"] == "paused").then_some(v)
        },
    )
    .await;
    assert_eq!(during["status"], "securityMaintenance");
    assert_eq!(during["current"][0]["title"], "Web hosting");
    assert_eq!(during["current"][0]["servers"]["total"], 3);
    assert!(during["history"].as_array().is_some_and(Vec::is_empty));
    let (_, json_during) = http_get(&format!("{base}/status.json")).await;
    assert_private("JSON during", &json_during, false);
    check_schema(&json_during, work.path(), "during.json").await;

    let shots = work.path();
    let widths = |a: &str, b: &str| [(412, shots.join(a)), (1280, shots.join(b))];
    let dom = chromium_view(
        &format!("{base}/status"),
        &widths(
            "status-page-in-progress-phone.png",
            "status-page-in-progress.png",
        ),
    )
    .await;
    assert!(dom.contains("Security maintenance in progress"), "{dom}");
    assert!(
        dom.contains("Web hosting") && dom.contains("Servers affected"),
        "{dom}"
    );
    assert!(dom.contains("Paused"), "{dom}");
    assert_private("page during", &dom, false);
    let (_, atom_during) = http_get(&format!("{base}/status.atom")).await;
    assert_private("feed during", &atom_during, false);
    let feed_during = feedparser(&atom_during, work.path(), "during.atom").await;
    assert_eq!(feed_during["version"], "atom10");
    let entries = feed_during["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{feed_during}");
    let entry_id = entries[0]["id"].as_str().unwrap().to_string();
    assert!(entry_id.starts_with("urn:sofort:rollout:"), "{entry_id}");
    assert_eq!(entries[0]["tags"], json!(["urgent"]));
    assert!(
        entries[0]["title"]
            .as_str()
            .unwrap()
            .contains("Web hosting")
    );

    // Resumed to the end: every server updated, the details are released.
    let resume = Patch::Merge(json!({"spec": {"paused": false}}));
    api.patch(POLICY, &PatchParams::default(), &resume)
        .await
        .unwrap();
    let after: Value = wait_for(
        "the page to show the completed rollout",
        Duration::from_secs(90),
        async || {
            let (code, body) = http_get(&format!("{base}/status.json")).await;
            let v: Value = serde_json::from_str(&body).ok()?;
            (code == 200 && v["history"][0]["state"] == "completed").then_some(v)
        },
    )
    .await;
    assert_eq!(after["status"], "operational");
    assert_eq!(after["history"][0]["details"], DETAILS);
    assert_eq!(
        after["history"][0]["servers"],
        json!({"total": 3, "updated": 3})
    );
    let (_, json_after) = http_get(&format!("{base}/status.json")).await;
    assert_private("JSON after", &json_after, true);
    check_schema(&json_after, work.path(), "after.json").await;
    let dom = chromium_view(
        &format!("{base}/status"),
        &widths(
            "status-page-completed-phone.png",
            "status-page-completed.png",
        ),
    )
    .await;
    assert!(dom.contains("All systems operational"), "{dom}");
    assert!(
        dom.contains("Completed maintenance") && dom.contains(DETAILS),
        "{dom}"
    );
    assert_private("page after", &dom, true);
    let (_, atom_after) = http_get(&format!("{base}/status.atom")).await;
    let feed_after = feedparser(&atom_after, work.path(), "after.atom").await;
    let e = &feed_after["entries"][0];
    assert_eq!(e["id"], entry_id.as_str(), "the entry keeps its id");
    assert!(e["title"].as_str().unwrap().starts_with("Completed"), "{e}");
    assert!(e["summary"].as_str().unwrap().contains(CVE), "{e}");
    assert!(
        e["updated"].as_str().unwrap() > entries[0]["updated"].as_str().unwrap(),
        "updated moves on: {e} after {}",
        entries[0]
    );
    assert_private("feed after", &atom_after, true);

    // The next rollout, held before its start: the page shows it as current
    // and the one before in the history, from status.history.
    let next = Patch::Merge(json!({"spec": {"revision": NEXT_REVISION, "paused": true}}));
    api.patch(POLICY, &PatchParams::default(), &next)
        .await
        .unwrap();
    let first_id = after["history"][0]["id"].clone();
    let between: Value = wait_for(
        "the page to show the next rollout and the history",
        Duration::from_secs(60),
        async || {
            let (code, body) = http_get(&format!("{base}/status.json")).await;
            let v: Value = serde_json::from_str(&body).ok()?;
            (code == 200 && v["current"][0]["id"].is_string() && v["history"][0]["id"] == first_id)
                .then_some(v)
        },
    )
    .await;
    assert_eq!(between["status"], "securityMaintenance");
    assert_ne!(between["current"][0]["id"], first_id);
    let earlier = &between["history"][0];
    assert_eq!(earlier["state"], "completed");
    assert_eq!(earlier["servers"], json!({"total": 3, "updated": 3}));
    assert_eq!(earlier["completed"], after["history"][0]["completed"]);
    assert_eq!(
        earlier["details"],
        Value::Null,
        "the details of an earlier rollout are not kept"
    );
    let (_, json_between) = http_get(&format!("{base}/status.json")).await;
    assert_private("JSON between", &json_between, false);
    check_schema(&json_between, work.path(), "between.json").await;

    // Done as well: two items in the history, two entries in the feed.
    let resume = Patch::Merge(json!({"spec": {"paused": false}}));
    api.patch(POLICY, &PatchParams::default(), &resume)
        .await
        .unwrap();
    let both: Value = wait_for(
        "the page to show both rollouts completed",
        Duration::from_secs(90),
        async || {
            let (code, body) = http_get(&format!("{base}/status.json")).await;
            let v: Value = serde_json::from_str(&body).ok()?;
            (code == 200 && v["history"].as_array().is_some_and(|h| h.len() == 2)).then_some(v)
        },
    )
    .await;
    assert_eq!(both["status"], "operational");
    assert_eq!(both["history"][0]["details"], DETAILS);
    assert_eq!(both["history"][1]["id"], first_id);
    assert!(
        both["history"][0]["completed"].as_str() >= both["history"][1]["completed"].as_str(),
        "newest first: {both}"
    );
    let (_, json_both) = http_get(&format!("{base}/status.json")).await;
    assert_private("JSON with history", &json_both, true);
    check_schema(&json_both, work.path(), "both.json").await;
    let dom = chromium_view(
        &format!("{base}/status"),
        &[(1280, shots.join("status-page-history.png"))],
    )
    .await;
    assert_eq!(
        dom.matches("class=\"item urgent\"").count(),
        2,
        "two completed urgent items: {dom}"
    );
    assert_private("page with history", &dom, true);
    let (_, atom_both) = http_get(&format!("{base}/status.atom")).await;
    assert_private("feed with history", &atom_both, true);
    let feed_both = feedparser(&atom_both, work.path(), "both.atom").await;
    let ids: Vec<&str> = feed_both["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{feed_both}");
    assert!(
        ids.contains(&entry_id.as_str()),
        "the first entry keeps its id: {ids:?}"
    );
    assert_ne!(ids[0], ids[1]);

    c.shutdown().await;
}
