//! Customer notifications end to end against local HTTP receivers on 127.0.0.1:
//! the sequence and content of a routine and an urgent rollout in both formats,
//! retries, bounded failure, exactly-once decisions across a restart, and the
//! advisory embargo over everything that was sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use jiff::Timestamp;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use sofort::api::{
    Advisory, AdvisoryRelease, FailedNode, MaintenanceWindow, NotificationRecord, NotifySpec,
    PatchPolicySpec, Phase, SecretKeyRef, Webhook, WebhookFormat,
};
use sofort::notify::{
    Counts, Delivery, DeliveryConfig, DeliveryReport, Due, EnqueueError, EventKind, Message,
    Notifier, NotifyMetrics, Outcome, ResolvedWebhook, Rollout, Window, append_records, due,
    pending, start,
};
use tokio::sync::mpsc;

const DETAILS: &str = "CVE-2026-1234 (local root exploit in the kernel)";

#[derive(Clone, Debug)]
struct Received {
    content_type: String,
    authorization: Option<String>,
    body: Value,
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    /// Requests answered 503 before the receiver starts accepting.
    fail_first: Mutex<usize>,
    always_fail: bool,
    status_on_fail: u16,
}

struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    fn got(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }
}

async fn receive(
    State(s): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    s.got.lock().unwrap().push(Received {
        content_type: h("content-type").unwrap_or_default(),
        authorization: h("authorization"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let mut left = s.fail_first.lock().unwrap();
    if s.always_fail || *left > 0 {
        *left = left.saturating_sub(1);
        return StatusCode::from_u16(s.status_on_fail).unwrap();
    }
    StatusCode::OK
}

async fn receiver(fail_first: usize, always_fail: bool, status_on_fail: u16) -> Receiver {
    let state = Arc::new(ReceiverState {
        got: Mutex::new(Vec::new()),
        fail_first: Mutex::new(fail_first),
        always_fail,
        status_on_fail,
    });
    let app = Router::new()
        .route("/hook/{token}", post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}/hook/T0KEN"),
        state,
    }
}

fn fast() -> DeliveryConfig {
    DeliveryConfig {
        timeout: Duration::from_secs(5),
        max_attempts: 5,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..DeliveryConfig::default()
    }
}

fn webhook(name: &str, format: WebhookFormat, template: Option<&str>) -> Webhook {
    Webhook {
        name: name.into(),
        url_secret_ref: SecretKeyRef {
            namespace: "sofort-system".into(),
            name: name.into(),
            key: "url".into(),
        },
        format,
        headers_secret_ref: None,
        ca_bundle_secret_ref: None,
        template: template.map(str::to_string),
        email: None,
        audience: Default::default(),
        node_events: Vec::new(),
    }
}

fn spec(urgent: bool) -> PatchPolicySpec {
    let mut s = PatchPolicySpec::new("2024-11-26");
    s.urgent = urgent;
    s.maintenance_windows = vec![MaintenanceWindow {
        days: vec![],
        start: "22:00".into(),
        end: "05:00".into(),
        time_zone: "Europe/Zurich".into(),
        weeks_of_month: Vec::new(),
        offset_days: 0,
    }];
    s.notify = Some(NotifySpec {
        webhooks: vec![
            webhook("statuspage", WebhookFormat::CloudEvents, None),
            webhook("chat", WebhookFormat::Slack, None),
        ],
        advisory: Some(Advisory {
            summary: "Security maintenance".into(),
            details: Some(DETAILS.into()),
            release: Default::default(),
        }),
        ..Default::default()
    });
    s
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The rollout at one moment, as the controller would decide it.
struct Moment {
    prev: Option<Phase>,
    phase: Phase,
    updated: u32,
    failed: Vec<FailedNode>,
    now: Timestamp,
}

/// A controller stand-in: decides, records in "status", delivers, applies reports.
struct Driver {
    spec: PatchPolicySpec,
    records: Vec<NotificationRecord>,
    hooks: Vec<Arc<ResolvedWebhook>>,
    notifier: Notifier,
    reports: mpsc::Receiver<DeliveryReport>,
    metrics: NotifyMetrics,
}

impl Driver {
    fn new(spec: PatchPolicySpec, hooks: Vec<Arc<ResolvedWebhook>>) -> Driver {
        let metrics = NotifyMetrics::new();
        let (notifier, reports) = start(fast(), metrics.clone());
        Driver {
            spec,
            records: Vec::new(),
            hooks,
            notifier,
            reports,
            metrics,
        }
    }

    fn rollout<'a>(&'a self, m: &'a Moment) -> Rollout<'a> {
        Rollout {
            policy: "workers-nightly",
            spec: &self.spec,
            previous_phase: m.prev,
            phase: m.phase,
            counts: Counts {
                total: 12,
                updated: m.updated,
                failed: u32::try_from(m.failed.len()).unwrap(),
            },
            failed: &m.failed,
            first_window: Some(Window {
                start: ts("2024-11-26T21:00:00Z"),
                end: ts("2024-11-27T04:00:00Z"),
            }),
            expected_completion: Some(ts("2024-11-27T01:40:00Z")),
            now: m.now,
        }
    }

    /// One reconcile: returns the events decided; waits for their deliveries.
    async fn reconcile(&mut self, m: &Moment) -> Vec<String> {
        let decided = due(&self.rollout(m), &self.records);
        let names: Vec<String> = self.hooks.iter().map(|h| h.name.clone()).collect();
        append_records(
            &mut self.records,
            &decided,
            names.iter().map(String::as_str),
        );
        // (status written here) then queue.
        let mut queued = 0;
        for d in &decided {
            let msg = Message::new(&self.rollout(m), d);
            for h in &self.hooks {
                self.notifier
                    .enqueue(Delivery::new(&msg, h.clone()))
                    .unwrap();
                queued += 1;
            }
        }
        self.collect(queued).await;
        decided.iter().map(|d| d.kind.to_string()).collect()
    }

    async fn collect(&mut self, n: usize) -> Vec<DeliveryReport> {
        let mut out = Vec::new();
        for _ in 0..n {
            let r = tokio::time::timeout(Duration::from_secs(10), self.reports.recv())
                .await
                .expect("delivery report in time")
                .expect("dispatcher alive");
            assert!(r.apply(&mut self.records), "record for {r:?}");
            out.push(r);
        }
        out
    }
}

fn resolved(
    r: &Receiver,
    name: &str,
    format: WebhookFormat,
    template: Option<&str>,
) -> Arc<ResolvedWebhook> {
    Arc::new(
        ResolvedWebhook::new(
            &webhook(name, format, template),
            &r.url,
            Some("Authorization: Bearer s3cret"),
            None,
        )
        .unwrap(),
    )
}

fn failed(n: &str) -> FailedNode {
    FailedNode {
        node: n.into(),
        reason: "drain timeout: pod shop/db-0 blocked by PDB shop/db".into(),
    }
}

fn assert_embargo(got: &[Received], completed: impl Fn(&Value) -> bool) {
    for r in got {
        let text = r.body.to_string();
        let leaks = text.contains("CVE-2026-1234") || text.contains("root exploit");
        assert_eq!(
            leaks,
            completed(&r.body),
            "details must appear exactly in Completed: {text}"
        );
    }
}

#[tokio::test]
async fn routine_rollout_sequence_and_content_in_both_formats() {
    let ce = receiver(0, false, 503).await;
    let slack = receiver(0, false, 503).await;
    let hooks = vec![
        resolved(&ce, "statuspage", WebhookFormat::CloudEvents, None),
        resolved(&slack, "chat", WebhookFormat::Slack, None),
    ];
    let mut d = Driver::new(spec(false), hooks);
    use Phase::*;
    let t0 = ts("2024-11-24T10:00:00Z");
    let steps = [
        (None, Scheduled, 0, vec![], t0, vec!["Scheduled"]),
        (
            Some(Scheduled),
            Waiting,
            0,
            vec![],
            ts("2024-11-26T12:00:00Z"),
            vec![],
        ),
        (
            Some(Waiting),
            Progressing,
            0,
            vec![],
            ts("2024-11-26T21:00:00Z"),
            vec!["Started"],
        ),
        (
            Some(Progressing),
            Progressing,
            3,
            vec![failed("w-7")],
            ts("2024-11-26T22:30:00Z"),
            vec!["NodeFailed"],
        ),
        (
            Some(Progressing),
            Progressing,
            6,
            vec![failed("w-7")],
            ts("2024-11-26T23:30:00Z"),
            vec![],
        ),
        (
            Some(Progressing),
            Completed,
            11,
            vec![failed("w-7")],
            ts("2024-11-27T01:35:00Z"),
            // w-7 failed (tolerated) and is still vulnerable: no details yet.
            vec!["CompletedWithFailures"],
        ),
    ];
    for (prev, phase, updated, failed, now, want) in steps {
        let m = Moment {
            prev,
            phase,
            updated,
            failed,
            now,
        };
        assert_eq!(d.reconcile(&m).await, want, "at {now}");
    }
    // The admins decide to publish anyway: `release: Now`.
    if let Some(a) = d.spec.notify.as_mut().and_then(|n| n.advisory.as_mut()) {
        a.release = AdvisoryRelease::Now;
    }
    let released = Moment {
        prev: Some(Completed),
        phase: Completed,
        updated: 11,
        failed: vec![failed("w-7")],
        now: ts("2024-11-27T09:00:00Z"),
    };
    assert_eq!(d.reconcile(&released).await, ["Completed"]);

    // Status: every record delivered to both webhooks.
    let summary: Vec<(String, Vec<String>)> = d
        .records
        .iter()
        .map(|r| (r.event.clone(), r.results.clone()))
        .collect();
    let both = || {
        vec![
            "statuspage=delivered".to_string(),
            "chat=delivered".to_string(),
        ]
    };
    let mut sorted = summary.clone();
    for (_, r) in &mut sorted {
        r.sort();
        r.reverse();
    }
    assert_eq!(
        sorted,
        vec![
            ("Scheduled".to_string(), both()),
            ("Started".to_string(), both()),
            ("NodeFailed".to_string(), both()),
            ("CompletedWithFailures".to_string(), both()),
            ("Completed".to_string(), both()),
        ]
    );

    // CloudEvents: exact sequence and content.
    let got = ce.got();
    let types: Vec<&str> = got
        .iter()
        .map(|r| r.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "dev.sofort.rollout.scheduled",
            "dev.sofort.rollout.started",
            "dev.sofort.rollout.nodefailed",
            "dev.sofort.rollout.completedwithfailures",
            "dev.sofort.rollout.completed"
        ]
    );
    for r in &got {
        assert_eq!(r.content_type, "application/cloudevents+json");
        assert_eq!(r.authorization.as_deref(), Some("Bearer s3cret"));
        assert_eq!(r.body["specversion"], "1.0");
        assert_eq!(r.body["source"], "/patchpolicies/workers-nightly");
        assert_eq!(r.body["subject"], "2024-11-26");
        assert_eq!(r.body["datacontenttype"], "application/json");
        assert_eq!(r.body["data"]["summary"], "Security maintenance");
        assert_eq!(r.body["data"]["nodes"]["total"], 12);
        assert_eq!(r.body["data"]["window"]["timeZone"], "Europe/Zurich");
        assert_eq!(r.body["data"]["expectedCompletion"], "2024-11-27T01:40:00Z");
    }
    let ids: Vec<&str> = got.iter().map(|r| r.body["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "workers-nightly/2024-11-26/scheduled",
            "workers-nightly/2024-11-26/started",
            "workers-nightly/2024-11-26/nodefailed/w-7",
            "workers-nightly/2024-11-26/completedwithfailures",
            "workers-nightly/2024-11-26/completed"
        ]
    );
    assert_eq!(got[0].body["time"], "2024-11-24T10:00:00Z");
    assert_eq!(
        got[0].body["data"]["text"],
        "Security maintenance: maintenance on 12 servers, Tue 26 Nov 22:00–05:00 Europe/Zurich, expected done by 02:40."
    );
    assert_eq!(got[2].body["data"]["node"], "w-7");
    assert_eq!(got[2].body["data"]["failedNodes"], json!(["w-7"]));
    assert_eq!(
        got[2].body["data"]["text"],
        "Security maintenance: server w-7 could not be updated; 3 of 12 servers done."
    );
    assert!(got[3].body["data"].get("details").is_none());
    assert_eq!(
        got[3].body["data"]["text"],
        "Security maintenance: maintenance ended, 11 of 12 servers updated, 1 not updated; they will be updated later. Our team is looking into it."
    );
    assert_eq!(got[4].body["data"]["details"], DETAILS);
    assert_eq!(
        got[4].body["data"]["text"],
        format!(
            "Security maintenance: maintenance completed, 11 of 12 servers updated, 1 server failed. Details: {DETAILS}"
        )
    );
    // Failure reasons (pod and PDB names) are for admins, not customers.
    assert!(got.iter().all(|r| !r.body.to_string().contains("shop/db")));
    assert_embargo(&got, |b| b["type"] == "dev.sofort.rollout.completed");

    // Slack: same sequence, text and blocks.
    let got = slack.got();
    let texts: Vec<&str> = got
        .iter()
        .map(|r| r.body["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 5);
    assert!(texts[0].starts_with("Security maintenance: maintenance on 12 servers, Tue 26 Nov"));
    assert!(texts[1].contains("has started"), "{}", texts[1]);
    assert!(texts[2].contains("server w-7 could not be updated"));
    assert!(texts[3].contains("maintenance ended") && !texts[3].contains("CVE"));
    assert!(texts[4].contains("maintenance completed") && texts[4].contains(DETAILS));
    let headers: Vec<&str> = got
        .iter()
        .map(|r| r.body["blocks"][0]["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        headers,
        [
            "Maintenance scheduled",
            "Maintenance started",
            "Server update failed",
            "Maintenance ended with failures",
            "Maintenance completed"
        ]
    );
    for r in &got {
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.body["blocks"][1]["type"], "section");
    }
    assert_embargo(&got, |b| {
        b["blocks"][0]["text"]["text"] == "Maintenance completed"
    });
    assert_eq!(d.metrics.get("statuspage", "Started", "delivered"), 1);
    assert_eq!(d.metrics.get("chat", "Completed", "delivered"), 1);
}

#[tokio::test]
async fn urgent_rollout_sequence_in_both_formats_with_templates() {
    let ce = receiver(0, false, 503).await;
    let slack = receiver(0, false, 503).await;
    let template = "[{event}] {summary}: {updated}/{nodes} done. {details}";
    let hooks = vec![
        resolved(&ce, "statuspage", WebhookFormat::CloudEvents, None),
        resolved(&slack, "chat", WebhookFormat::Slack, Some(template)),
    ];
    let mut d = Driver::new(spec(true), hooks);
    use Phase::*;
    let now = ts("2024-11-26T13:05:00Z");
    let steps = [
        (None, Progressing, 0, vec!["UrgentStarted"]),
        (Some(Progressing), Progressing, 5, vec![]),
        (Some(Progressing), Completed, 12, vec!["Completed"]),
    ];
    for (prev, phase, updated, want) in steps {
        let m = Moment {
            prev,
            phase,
            updated,
            failed: vec![],
            now,
        };
        assert_eq!(d.reconcile(&m).await, want);
    }
    let got = ce.got();
    let types: Vec<&str> = got
        .iter()
        .map(|r| r.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "dev.sofort.rollout.urgentstarted",
            "dev.sofort.rollout.completed"
        ]
    );
    assert_eq!(got[0].body["data"]["urgent"], true);
    assert_eq!(
        got[0].body["data"]["text"],
        "Security maintenance: urgent maintenance on 12 servers has started now; it could not be announced ahead, expected done by Wed 27 Nov 02:40 Europe/Zurich. Services may restart briefly."
    );
    assert_embargo(&got, |b| b["type"] == "dev.sofort.rollout.completed");
    let got = slack.got();
    let texts: Vec<&str> = got
        .iter()
        .map(|r| r.body["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "[UrgentStarted] Security maintenance: 0/12 done. ".to_string(),
            format!("[Completed] Security maintenance: 12/12 done. {DETAILS}")
        ]
    );
    assert_embargo(&got, |b| {
        b["text"].as_str().unwrap().starts_with("[Completed]")
    });
}

#[tokio::test]
async fn restart_decides_nothing_twice_and_redelivers_pending_with_the_same_id() {
    let ce = receiver(0, false, 503).await;
    let hooks = vec![resolved(
        &ce,
        "statuspage",
        WebhookFormat::CloudEvents,
        None,
    )];
    let mut d = Driver::new(spec(false), hooks.clone());
    let m = |prev, phase| Moment {
        prev,
        phase,
        updated: 0,
        failed: vec![],
        now: ts("2024-11-26T21:00:00Z"),
    };
    assert_eq!(d.reconcile(&m(None, Phase::Scheduled)).await, ["Scheduled"]);

    // The controller decides Started, writes the record, and dies before the
    // delivery: the record stays pending.
    let rollout_m = m(Some(Phase::Scheduled), Phase::Progressing);
    let decided = due(&d.rollout(&rollout_m), &d.records);
    append_records(&mut d.records, &decided, ["statuspage"]);
    assert_eq!(d.records[1].results, ["statuspage=pending"]);

    // A new controller with the status as stored (phase Progressing).
    let mut d2 = Driver::new(spec(false), hooks);
    d2.records = d.records.clone();
    for prev in [Some(Phase::Progressing), None] {
        let again = due(&d2.rollout(&m(prev, Phase::Progressing)), &d2.records);
        assert!(again.is_empty(), "decided twice: {again:?}");
    }
    let todo = pending(&d2.records);
    assert_eq!(todo, [(1, "statuspage".to_string())]);
    let now = m(Some(Phase::Progressing), Phase::Progressing);
    for (i, hook) in &todo {
        let due = Due::from_record(&d2.records, *i).unwrap();
        let msg = Message::new(&d2.rollout(&now), &due);
        let h = d2.hooks.iter().find(|h| &h.name == hook).unwrap().clone();
        d2.notifier.enqueue(Delivery::new(&msg, h)).unwrap();
    }
    d2.collect(1).await;
    assert!(pending(&d2.records).is_empty());
    let got = ce.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body["id"], "workers-nightly/2024-11-26/started");
    // The time is the record's, not the redelivery's.
    assert_eq!(got[1].body["time"], "2024-11-26T21:00:00Z");
}

#[tokio::test]
async fn retries_until_the_receiver_accepts() {
    let r = receiver(3, false, 503).await;
    let hook = resolved(&r, "statuspage", WebhookFormat::CloudEvents, None);
    let mut d = Driver::new(spec(true), vec![hook]);
    let m = Moment {
        prev: None,
        phase: Phase::Progressing,
        updated: 0,
        failed: vec![],
        now: ts("2024-11-26T13:00:00Z"),
    };
    let decided = due(&d.rollout(&m), &[]);
    append_records(&mut d.records, &decided, ["statuspage"]);
    let msg = Message::new(&d.rollout(&m), &decided[0]);
    d.notifier
        .enqueue(Delivery::new(&msg, d.hooks[0].clone()))
        .unwrap();
    let reports = d.collect(1).await;
    assert_eq!(reports[0].attempts, 4);
    assert_eq!(reports[0].outcome, Outcome::Delivered { status: 200 });
    assert_eq!(d.records[0].results, ["statuspage=delivered"]);
    let got = r.got();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|g| g.body["id"] == got[0].body["id"]));
    assert_eq!(d.metrics.get("statuspage", "UrgentStarted", "delivered"), 1);
    assert_eq!(d.metrics.get("statuspage", "UrgentStarted", "failed"), 0);
}

#[tokio::test]
async fn gives_up_after_bounded_retries_and_counts_the_failure() {
    let r = receiver(0, true, 500).await;
    let hook = resolved(&r, "statuspage", WebhookFormat::Slack, None);
    let mut d = Driver::new(spec(true), vec![hook]);
    let mut registry = Registry::default();
    d.metrics.register(&mut registry);
    let m = Moment {
        prev: None,
        phase: Phase::Progressing,
        updated: 0,
        failed: vec![],
        now: ts("2024-11-26T13:00:00Z"),
    };
    let started = std::time::Instant::now();
    d.reconcile(&m).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(r.got().len(), 5, "max_attempts requests");
    assert_eq!(d.records[0].results, ["statuspage=failed"]);
    assert_eq!(d.metrics.get("statuspage", "UrgentStarted", "failed"), 1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(
            r#"sofort_notifications_total{webhook="statuspage",event="UrgentStarted",result="failed"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn client_errors_are_not_retried_and_errors_hide_the_url() {
    let r = receiver(0, true, 404).await;
    let hook = resolved(&r, "statuspage", WebhookFormat::CloudEvents, None);
    let d = Driver::new(spec(true), vec![hook.clone()]);
    let m = Moment {
        prev: None,
        phase: Phase::Progressing,
        updated: 0,
        failed: vec![],
        now: ts("2024-11-26T13:00:00Z"),
    };
    let decided = due(&d.rollout(&m), &[]);
    let msg = Message::new(&d.rollout(&m), &decided[0]);
    let mut d = d;
    d.records = Vec::new();
    append_records(&mut d.records, &decided, ["statuspage"]);
    d.notifier.enqueue(Delivery::new(&msg, hook)).unwrap();
    let rep = d.collect(1).await;
    assert_eq!(rep[0].attempts, 1);
    let Outcome::Failed { error } = &rep[0].outcome else {
        panic!("{rep:?}")
    };
    assert!(error.contains("404"), "{error}");

    // A receiver that is not there: connection refused, retried, no URL in the error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let gone = Arc::new(
        ResolvedWebhook::new(
            &webhook("gone", WebhookFormat::CloudEvents, None),
            &format!("http://{addr}/hook/T0KEN"),
            None,
            None,
        )
        .unwrap(),
    );
    append_records(&mut d.records, &[], ["gone"]);
    d.records[0].results.push("gone=pending".into());
    d.notifier.enqueue(Delivery::new(&msg, gone)).unwrap();
    let rep = d.collect(1).await;
    assert_eq!(rep[0].attempts, 5);
    let Outcome::Failed { error } = &rep[0].outcome else {
        panic!("{rep:?}")
    };
    assert!(
        !error.contains("T0KEN") && !error.contains(&addr.to_string()),
        "{error}"
    );
}

/// The payload examples in docs/notifications.md are this code's real output.
#[test]
fn docs_show_the_real_payloads() {
    let s = spec(false);
    let failed: Vec<FailedNode> = Vec::new();
    let rollout = |phase, updated| Rollout {
        policy: "workers-nightly",
        spec: &s,
        previous_phase: None,
        phase,
        counts: Counts {
            total: 12,
            updated,
            failed: 0,
        },
        failed: &failed,
        first_window: Some(Window {
            start: ts("2024-11-26T21:00:00Z"),
            end: ts("2024-11-27T04:00:00Z"),
        }),
        expected_completion: Some(ts("2024-11-27T01:40:00Z")),
        now: ts("2024-11-24T10:00:00Z"),
    };
    let scheduled = rollout(Phase::Scheduled, 0);
    let d = &due(&scheduled, &[])[0];
    let ce = Message::new(&scheduled, d).cloudevent(None);
    let completed = rollout(Phase::Completed, 12);
    let mut d = due(&completed, &[]).pop().unwrap();
    d.at = ts("2024-11-27T01:35:00Z");
    let slack = Message::new(&completed, &d).slack(None);
    let docs = std::fs::read_to_string("docs/notifications.md").unwrap();
    for (what, v) in [("CloudEvents Scheduled", ce), ("Slack Completed", slack)] {
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        assert!(
            docs.contains(&pretty),
            "docs/notifications.md lacks the current {what} example; paste:\n{pretty}"
        );
    }
}

/// Every public string of the spec is checked against the details by
/// validation: template literal text, webhook names, the policy name, the
/// revision, the summary, blackout reasons and the patch command.
#[test]
fn every_public_field_is_checked_for_the_details() {
    use sofort::api::{Blackout, PatchPolicy, PatchSpec};
    use sofort::cmd::validate::validate_policy;
    const LEAK: &str = "cve-2026-1234";
    type Change = Box<dyn Fn(&mut PatchPolicy)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "spec.notify.webhooks[0].template",
            Box::new(move |p| {
                p.spec.notify.as_mut().unwrap().webhooks[0].template =
                    Some(format!("fix for {} is {{event}}", "CVE-2026-1234"))
            }),
        ),
        (
            "spec.notify.webhooks[0].name",
            Box::new(move |p| p.spec.notify.as_mut().unwrap().webhooks[0].name = LEAK.into()),
        ),
        (
            "metadata.name",
            Box::new(move |p| p.metadata.name = Some(LEAK.into())),
        ),
        (
            "spec.revision",
            Box::new(move |p| p.spec.revision = LEAK.into()),
        ),
        (
            "spec.notify.advisory.summary",
            Box::new(move |p| {
                p.spec
                    .notify
                    .as_mut()
                    .unwrap()
                    .advisory
                    .as_mut()
                    .unwrap()
                    .summary = format!("fixing {LEAK}")
            }),
        ),
        (
            "spec.blackouts[0].reason",
            Box::new(move |p| {
                p.spec.blackouts = vec![Blackout {
                    start: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(
                        "2024-12-24T00:00:00Z",
                    )),
                    end: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(
                        "2024-12-27T00:00:00Z",
                    )),
                    reason: Some(format!("waiting for the {LEAK} patch")),
                }]
            }),
        ),
        (
            "spec.patch.command[1]",
            Box::new(move |p| {
                p.spec.patch = Some(PatchSpec {
                    command: vec!["/usr/local/bin/fix".into(), LEAK.into()],
                    timeout: "10m".into(),
                })
            }),
        ),
    ];
    let base = PatchPolicy::new("workers-nightly", spec(false));
    assert!(
        validate_policy(&base).is_empty(),
        "{:?}",
        validate_policy(&base)
    );
    for (path, change) in cases {
        let mut p = base.clone();
        change(&mut p);
        let problems = validate_policy(&p);
        assert!(
            problems
                .iter()
                .any(|x| x.path == path && x.message.contains("embargoed")),
            "{path}: {problems:?}"
        );
    }
}

/// A payload that would carry the details before they are released is not
/// sent: whatever put them there, `Delivery::leaks` says so before queueing.
#[test]
fn a_payload_that_contains_the_details_is_not_sent() {
    use sofort::notify::Embargo;
    let s = spec(false);
    let embargo = Embargo::of_spec(&s);
    let failed: Vec<FailedNode> = Vec::new();
    let rollout = |policy, phase, updated| Rollout {
        policy,
        spec: &s,
        previous_phase: None,
        phase,
        counts: Counts {
            total: 12,
            updated,
            failed: 0,
        },
        failed: &failed,
        first_window: None,
        expected_completion: None,
        now: ts("2024-11-26T21:00:00Z"),
    };
    let hook = |template: Option<&str>| {
        Arc::new(
            ResolvedWebhook::new(
                &webhook("statuspage", WebhookFormat::CloudEvents, template),
                "http://127.0.0.1:9/x",
                None,
                None,
            )
            .unwrap(),
        )
    };
    let started = rollout("workers-nightly", Phase::Progressing, 0);
    let d = &due(&started, &[])[0];
    let m = Message::new(&started, d);
    assert!(!Delivery::new(&m, hook(None)).leaks(&embargo));
    // Template literal text quoting the CVE.
    let leaky = Delivery::new(&m, hook(Some("CVE-2026-1234: {text}")));
    assert!(leaky.leaks(&embargo));
    // A policy named after the hole (source and id of every event).
    let named = rollout("cve-2026-1234-fix", Phase::Progressing, 0);
    let m = Message::new(&named, &due(&named, &[])[0]);
    assert!(Delivery::new(&m, hook(None)).leaks(&embargo));
    // The released Completed message carries them by design.
    let done = rollout("workers-nightly", Phase::Completed, 12);
    let d = due(&done, &[]).pop().unwrap();
    let m = Message::new(&done, &d);
    assert!(m.carries_details());
    assert!(!Delivery::new(&m, hook(None)).leaks(&embargo));
}

// ------------------------------------------------------------ delivery lanes

/// A receiver that accepts every connection and never answers (it holds the
/// sockets until the test ends). Returns its URL and how many it accepted.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (format!("http://{addr}/hook/T0KEN"), accepted)
}

fn hook_at(url: &str, name: &str) -> Arc<ResolvedWebhook> {
    Arc::new(
        ResolvedWebhook::new(
            &webhook(name, WebhookFormat::CloudEvents, None),
            url,
            None,
            None,
        )
        .unwrap(),
    )
}

fn rollout_of<'a>(policy: &'a str, spec: &'a PatchPolicySpec) -> Rollout<'a> {
    Rollout {
        policy,
        spec,
        previous_phase: None,
        phase: Phase::Progressing,
        counts: Counts {
            total: 12,
            updated: 0,
            failed: 0,
        },
        failed: &[],
        first_window: None,
        expected_completion: None,
        now: ts("2024-11-26T22:00:00Z"),
    }
}

/// `NodeFailed` of node `w-<i>`: a distinct notice (and record) per `i`.
fn node_failed(i: usize) -> Due {
    Due {
        kind: EventKind::NodeFailed,
        node: Some(format!("w-{i}")),
        seq: 1,
        at: ts("2024-11-26T22:00:00Z"),
    }
}

/// Waits, in virtual time, until `n` connections were accepted.
async fn accepted_at_least(accepted: &AtomicUsize, n: usize) {
    for _ in 0..200 {
        if accepted.load(Ordering::SeqCst) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "only {} of {n} connections accepted",
        accepted.load(Ordering::SeqCst)
    );
}

/// Finding 8: one policy's dead receivers held all delivery slots, so another
/// policy's `UrgentStarted` waited minutes. Policy `a` has ten webhooks whose
/// receiver accepts and never answers, each with a full backlog of routine and
/// urgent notices; policy `b`'s urgent notice must still be the first delivery
/// to end, and end before any of `a`'s requests could time out: it waited for
/// none of them. Time is virtual; a 1 ms ticker keeps the runtime from jumping
/// straight to `a`'s timeouts while `b`'s request is on the loopback. Virtual
/// time then runs far faster than real time (a millisecond per idle turn of
/// the runtime), so the timeout is an hour: a loopback request that a busy
/// machine delays must not outlast it.
#[tokio::test(start_paused = true)]
async fn a_black_hole_receiver_does_not_delay_another_policys_urgent_notice() {
    let (hole, accepted) = black_hole().await;
    let recorder = receiver(0, false, 200).await;
    let config = DeliveryConfig {
        timeout: Duration::from_secs(3600),
        ..DeliveryConfig::default()
    };
    let metrics = NotifyMetrics::new();
    let (notifier, mut reports) = start(config.clone(), metrics.clone());
    let ticker = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    let (a_routine, a_urgent) = (spec(false), spec(true));
    let webhooks = 10;
    let backlog = 20;
    for w in 0..webhooks {
        let h = hook_at(&hole, &format!("hole-{w}"));
        for i in 0..backlog {
            for s in [&a_routine, &a_urgent] {
                let m = Message::new(&rollout_of("a", s), &node_failed(i));
                notifier.enqueue(Delivery::new(&m, h.clone())).unwrap();
            }
        }
    }
    // Every routine slot and every urgent lane of `a` is stuck in a request.
    let stuck = config.concurrency + webhooks;
    accepted_at_least(&accepted, stuck).await;

    let b = spec(true);
    let b_hook = hook_at(&recorder.url, "statuspage");
    let urgent = due(&rollout_of("b", &b), &[]);
    assert_eq!(urgent[0].kind, EventKind::UrgentStarted);
    let t0 = tokio::time::Instant::now();
    notifier
        .enqueue(Delivery::new(
            &Message::new(&rollout_of("b", &b), &urgent[0]),
            b_hook,
        ))
        .unwrap();

    let first = reports.recv().await.expect("a delivery report");
    let elapsed = t0.elapsed();
    assert_eq!(first.id, "b/2024-11-26/urgentstarted", "{first:?}");
    assert_eq!(first.outcome, Outcome::Delivered { status: 200 });
    ticker.abort();
    assert!(
        elapsed < config.timeout,
        "the urgent notice took {elapsed:?} of virtual time: it waited for a request of `a`"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        stuck,
        "no request of `a` ended"
    );
    let got = recorder.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["type"], "dev.sofort.rollout.urgentstarted");
    assert_eq!(metrics.get("hole-0", "NodeFailed", "dropped"), 0);
}

/// A lane that holds its maximum refuses the new delivery, counts it as
/// `dropped`, and its report writes `failed` into exactly its record; what was
/// queued before stays queued, and other lanes still accept and deliver.
#[tokio::test(start_paused = true)]
async fn a_full_lane_refuses_the_newest_notice_and_its_record_says_failed() {
    let (hole, accepted) = black_hole().await;
    let recorder = receiver(0, false, 200).await;
    let config = DeliveryConfig {
        lane_queue: 3,
        ..DeliveryConfig::default()
    };
    let metrics = NotifyMetrics::new();
    let (notifier, mut reports) = start(config, metrics.clone());
    let a = spec(false);
    let h = hook_at(&hole, "hole");
    let dues: Vec<Due> = (0..4).map(node_failed).collect();
    let mut records = Vec::new();
    append_records(&mut records, &dues, ["hole"]);
    let delivery =
        |i: usize| Delivery::new(&Message::new(&rollout_of("a", &a), &dues[i]), h.clone());
    for i in 0..3 {
        notifier.enqueue(delivery(i)).unwrap();
    }
    accepted_at_least(&accepted, 1).await;
    assert_eq!(
        notifier.enqueue(delivery(3)),
        Err(EnqueueError::LaneFull(3))
    );
    let refused = notifier.enqueue_or_refuse(delivery(3)).unwrap_err();
    assert_eq!(refused.attempts, 0);
    assert!(
        matches!(&refused.outcome, Outcome::Failed { error } if error.contains("queue of this webhook is full"))
    );
    assert!(refused.apply(&mut records));
    let results: Vec<&str> = records.iter().map(|r| r.results[0].as_str()).collect();
    assert_eq!(
        results,
        [
            "hole=pending",
            "hole=pending",
            "hole=pending",
            "hole=failed"
        ]
    );
    assert_eq!(metrics.get("hole", "NodeFailed", "dropped"), 2);

    // Another webhook of the same policy is another lane.
    let other = hook_at(&recorder.url, "statuspage");
    notifier
        .enqueue(Delivery::new(
            &Message::new(&rollout_of("a", &a), &dues[3]),
            other,
        ))
        .unwrap();
    let r = reports.recv().await.expect("a delivery report");
    assert_eq!(
        (r.webhook.as_str(), r.result()),
        ("statuspage", "delivered")
    );
    assert_eq!(recorder.got().len(), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one request per lane");
}
