//! The health gates' clients against the real Prometheus, Alertmanager and
//! Pushgateway: a pushed metric fires an alert that the client sees and the
//! gate holds for; a silence made through the client silences it in
//! Alertmanager and, respected, opens the gate; clearing the metric resolves
//! the alert.

#[path = "support/monitoring.rs"]
mod monitoring;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use monitoring::{Monitoring, eventually};
use sofort::controller::gates::{Limits, MonitoringClient, NewSilence};
use sofort::core::gates::alerts::{self, AlertFilter, AlertState, MatcherTemplate};
use sofort::core::gates::query::{self, QueryResult};

const RULES: &str = r#"groups:
  - name: gates
    rules:
      - alert: NodeDiskPressure
        expr: gate_test_problem > 0
        labels: {severity: critical}
      - alert: NodeChatter
        expr: gate_test_problem > 0
        labels: {severity: info}
"#;

const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_metric_fires_an_alert_the_gate_holds_for_until_silenced_or_cleared() {
    let m = Monitoring::start(RULES);
    let prom = MonitoringClient::new(&m.prometheus.url(), None, Limits::default()).unwrap();
    let am = MonitoringClient::new(&m.alertmanager.url(), None, Limits::default()).unwrap();
    let filter = AlertFilter::new(
        &["Node.*".to_string()],
        &BTreeMap::from([("severity".to_string(), vec!["info".to_string()])]),
    )
    .unwrap();

    // Nothing fires yet.
    let quiet = prom.prometheus_alerts().await.unwrap();
    assert!(
        alerts::verdict(&filter, &quiet, None).is_open(),
        "{quiet:?}"
    );

    m.push("disk", "w-3", "gate_test_problem", 1.0);
    let fired = eventually(WITHIN, "the alert firing in Prometheus", || async {
        let a = prom.prometheus_alerts().await.ok()?;
        a.iter()
            .any(|a| a.name() == "NodeDiskPressure" && a.state == AlertState::Firing)
            .then_some(a)
    })
    .await;
    let held = alerts::verdict(&filter, &fired, None);
    let why = held.reason().unwrap_or_default().to_string();
    assert!(
        why.starts_with("alert NodeDiskPressure firing on w-3 (since "),
        "{why}"
    );
    // The query gate sees the same series.
    let q = prom
        .prometheus_query("gate_test_problem > 0")
        .await
        .unwrap();
    assert!(
        matches!(&q, QueryResult::Series { count: 1, first: Some(l), .. } if l.get("instance").map(String::as_str) == Some("w-3")),
        "{q:?}"
    );
    assert!(!query::verdict("disk", &q).is_open());

    // Alertmanager receives it from Prometheus.
    eventually(WITHIN, "the alert reaching Alertmanager", || async {
        let a = am.alertmanager_alerts().await.ok()?;
        a.iter()
            .any(|a| a.name() == "NodeDiskPressure" && a.state == AlertState::Firing)
            .then_some(())
    })
    .await;

    // A silence made through the client: read back, active, and respected it
    // opens the gate; sofort's own silences never do.
    let t = MatcherTemplate::parse(r#"instance=~"{node}(:.*)?""#, 0).unwrap();
    let now = Timestamp::now();
    let id = am
        .create_silence(&NewSilence {
            matchers: vec![t.for_node("w-3").unwrap()],
            starts_at: now,
            ends_at: now + Duration::from_secs(600),
            comment: "sofort test: node w-3".into(),
            created_by: "sofort".into(),
        })
        .await
        .unwrap();
    let silences = am.silences().await.unwrap();
    let ours = silences
        .iter()
        .find(|s| s.silence.id == id)
        .expect("silence read back");
    assert_eq!(
        (ours.state.as_str(), ours.created_by.as_str()),
        ("active", "sofort")
    );
    assert_eq!(ours.silence.matchers, vec![t.for_node("w-3").unwrap()]);
    let mut respected: Vec<_> = silences.iter().map(|s| s.silence.clone()).collect();
    assert!(!alerts::verdict(&filter, &fired, Some(&respected)).is_open());
    for s in &mut respected {
        s.ours = false; // as if an operator had made it
    }
    assert!(alerts::verdict(&filter, &fired, Some(&respected)).is_open());
    // Alertmanager itself now reports the alert suppressed.
    eventually(
        WITHIN,
        "Alertmanager suppressing the silenced alert",
        || async {
            let a = am.alertmanager_alerts().await.ok()?;
            a.iter()
                .filter(|a| a.name() == "NodeDiskPressure")
                .all(|a| a.state != AlertState::Firing)
                .then_some(())
        },
    )
    .await;
    am.expire_silence(&id).await.unwrap();
    let after = am.silences().await.unwrap();
    let expired = after
        .iter()
        .find(|s| s.silence.id == id)
        .expect("still listed");
    assert_eq!(expired.state, "expired");

    // Cleared: the alert resolves and the gate opens.
    m.clear("disk", "w-3");
    eventually(WITHIN, "the alert resolving", || async {
        let a = prom.prometheus_alerts().await.ok()?;
        alerts::verdict(&filter, &a, None).is_open().then_some(())
    })
    .await;
    let q = prom
        .prometheus_query("gate_test_problem > 0")
        .await
        .unwrap();
    assert!(query::verdict("disk", &q).is_open(), "{q:?}");
}
