//! Per-node progress notices for admin channels: a node is draining, is
//! rebooting, is back (kured's three), as an opt-in set per webhook
//! (`nodeEvents`, only with `audience: Admins`).
//!
//! # When a notice is due
//!
//! Decided from the controller's own node writes: a notice is due when the
//! write that *enters* its step has succeeded ([`notice`] of the action and
//! the step the Node showed before). That write succeeds once per node, step
//! and revision — the next pass reads the node in the new step and writes no
//! transition again, a write that fails or loses a conflict enters nothing —
//! so the decision is exactly once without any record in the policy status
//! (at 5,000 nodes, three records per node would not fit into an object).
//!
//! # Delivery: best effort
//!
//! The notices go through the same lanes, retries and embargo check as every
//! notification. With no record there is nothing to send again after a
//! restart: a notice queued when the controller stops is lost (the Node's
//! step and the Events still say where it is). A lane that is full refuses
//! it, counted as `dropped`. So per node and webhook each notice arrives at
//! most once, in the order of the steps (one lane sends one after the other).

use crate::api::{Audience, NodeEvent, Step, Webhook};
use crate::core::rollout::Action;

use super::event::{Due, EventKind};

/// The progress notice a stored node write starts, if any. `was`: the step
/// the Node's record showed before the write (`None`: no record of ours).
///
/// - a claim (cordon, record `Draining`), or a step change into `Draining`:
///   `NodeDraining`;
/// - a reboot request (record `Rebooting`): `NodeRebooting`;
/// - a release (record removed, done map, uncordoned when sofort cordoned
///   it): `NodeUncordoned`.
///
/// A write that leaves the step as it was (cordoning a node again, the
/// record of a running drain) starts nothing.
pub fn notice(action: &Action, was: Option<Step>) -> Option<EventKind> {
    let kind = match action {
        Action::Claim { .. } => EventKind::NodeDraining,
        Action::Drain {
            record: Some(r), ..
        } if r.step == Step::Draining => EventKind::NodeDraining,
        Action::RequestReboot { .. } => EventKind::NodeRebooting,
        Action::Release { .. } => EventKind::NodeUncordoned,
        _ => return None,
    };
    let entered = match kind {
        EventKind::NodeDraining => Step::Draining,
        EventKind::NodeRebooting => Step::Rebooting,
        _ => return Some(kind),
    };
    (was != Some(entered)).then_some(kind)
}

/// The notice kind of a `nodeEvents` entry.
pub fn kind_of(e: NodeEvent) -> EventKind {
    match e {
        NodeEvent::NodeDraining => EventKind::NodeDraining,
        NodeEvent::NodeRebooting => EventKind::NodeRebooting,
        NodeEvent::NodeUncordoned => EventKind::NodeUncordoned,
    }
}

/// Whether `webhook` gets the progress notice `kind`: an admin channel that
/// subscribed to it. A customer channel never does, whatever it lists.
pub fn subscribes(webhook: &Webhook, kind: EventKind) -> bool {
    webhook.audience == Audience::Admins && webhook.node_events.iter().any(|e| kind_of(*e) == kind)
}

/// True when any webhook of `webhooks` gets some progress notice.
pub fn any_subscriber(webhooks: &[Webhook]) -> bool {
    webhooks
        .iter()
        .any(|w| w.audience == Audience::Admins && !w.node_events.is_empty())
}

/// The notice of `node` as a [`Due`] (its id:
/// `<policy>/<revision>/<event>/<node>`).
pub fn due(kind: EventKind, node: &str, at: jiff::Timestamp) -> Due {
    Due {
        kind,
        node: Some(node.to_string()),
        seq: 1,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SecretKeyRef, WebhookFormat};
    use crate::core::node_record::NodeRecord;

    fn record(step: Step) -> NodeRecord {
        NodeRecord {
            policy: "p".into(),
            revision: "r1".into(),
            step,
            since: jiff::Timestamp::UNIX_EPOCH,
            started: jiff::Timestamp::UNIX_EPOCH,
            was_unschedulable: false,
            boot_id_before: None,
            patch: None,
            reason: None,
            labels: Default::default(),
            drain_after: None,
        }
    }

    fn hook(audience: Audience, events: &[NodeEvent]) -> Webhook {
        Webhook {
            name: "ops".into(),
            url_secret_ref: SecretKeyRef {
                namespace: "ns".into(),
                name: "s".into(),
                key: "url".into(),
            },
            format: WebhookFormat::Slack,
            headers_secret_ref: None,
            ca_bundle_secret_ref: None,
            template: None,
            email: None,
            audience,
            node_events: events.to_vec(),
        }
    }

    #[test]
    fn each_step_is_noticed_when_its_write_enters_it() {
        let node = "w-1".to_string();
        let claim = Action::Claim {
            node: node.clone(),
            record: record(Step::Draining),
        };
        let reboot = Action::RequestReboot {
            node: node.clone(),
            boot_id: "b0".into(),
            record: record(Step::Rebooting),
        };
        let release = Action::Release {
            node: node.clone(),
            done: Default::default(),
            uncordon: true,
        };
        assert_eq!(notice(&claim, None), Some(EventKind::NodeDraining));
        assert_eq!(
            notice(&reboot, Some(Step::Draining)),
            Some(EventKind::NodeRebooting)
        );
        assert_eq!(
            notice(&reboot, Some(Step::Patching)),
            Some(EventKind::NodeRebooting)
        );
        assert_eq!(
            notice(&release, Some(Step::Settling)),
            Some(EventKind::NodeUncordoned)
        );
        // Writes that stay in the step start nothing.
        assert_eq!(notice(&reboot, Some(Step::Rebooting)), None);
        let drain_again = Action::Drain {
            node: node.clone(),
            record: None,
            force: true,
        };
        assert_eq!(notice(&drain_again, Some(Step::Draining)), None);
        let drain_rec = Action::Drain {
            node: node.clone(),
            record: Some(record(Step::Draining)),
            force: false,
        };
        assert_eq!(notice(&drain_rec, Some(Step::Draining)), None);
        assert_eq!(
            notice(&drain_rec, Some(Step::Pending)),
            Some(EventKind::NodeDraining)
        );
        let cordon_again = Action::CordonAgain {
            node: node.clone(),
            record: record(Step::Draining),
        };
        assert_eq!(notice(&cordon_again, Some(Step::Draining)), None);
        for step in [Step::WaitingReady, Step::Settling, Step::Failed] {
            let set = Action::SetStep {
                node: node.clone(),
                record: record(step),
            };
            assert_eq!(notice(&set, Some(Step::Rebooting)), None, "{step:?}");
        }
        let failed = Action::MarkFailed {
            node,
            uncordon: true,
            record: record(Step::Failed),
        };
        assert_eq!(notice(&failed, Some(Step::Draining)), None);
    }

    #[test]
    fn only_admin_channels_that_subscribed_get_progress() {
        let all = [
            NodeEvent::NodeDraining,
            NodeEvent::NodeRebooting,
            NodeEvent::NodeUncordoned,
        ];
        let admins = hook(Audience::Admins, &all);
        let customers = hook(Audience::Customers, &all);
        let quiet = hook(Audience::Admins, &[]);
        let reboots = hook(Audience::Admins, &[NodeEvent::NodeRebooting]);
        for k in [
            EventKind::NodeDraining,
            EventKind::NodeRebooting,
            EventKind::NodeUncordoned,
        ] {
            assert!(subscribes(&admins, k));
            assert!(!subscribes(&customers, k), "a customer channel: {k}");
            assert!(!subscribes(&quiet, k));
            assert_eq!(subscribes(&reboots, k), k == EventKind::NodeRebooting);
        }
        assert!(!subscribes(&admins, EventKind::Started));
        assert!(any_subscriber(&[customers.clone(), admins]));
        assert!(!any_subscriber(&[customers, quiet]));
    }

    #[test]
    fn the_id_names_policy_revision_event_and_node() {
        let d = due(EventKind::NodeRebooting, "w-2", jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(d.id("p", "r1"), "p/r1/noderebooting/w-2");
        assert!(EventKind::NodeRebooting.is_node_progress());
        assert!(!EventKind::NodeFailed.is_node_progress());
    }

    #[test]
    fn a_progress_record_in_status_is_never_delivered_again() {
        // Progress notices have no record; one found in status is forged and
        // would otherwise go to every channel, customers' included.
        let rec = due(EventKind::NodeDraining, "w-1", jiff::Timestamp::UNIX_EPOCH).record(["c"]);
        assert_eq!(Due::from_record(&[rec], 0), None);
    }
    #[test]
    fn every_format_names_the_node_and_never_the_details() {
        use crate::api::{Advisory, AdvisoryRelease, NotifySpec, PatchPolicySpec, Phase};
        use crate::notify::{Counts, Embargo, Message, Rollout};
        const DETAILS: &str = "CVE-2026-4242 in the kernel";
        let mut spec = PatchPolicySpec::new("2026-12-01");
        spec.notify = Some(NotifySpec {
            advisory: Some(Advisory {
                summary: "Security maintenance".into(),
                details: Some(DETAILS.into()),
                release: AdvisoryRelease::Now,
            }),
            public_title: Some("Web hosting".into()),
            ..NotifySpec::default()
        });
        // Even a rollout whose details are released sends none with a node.
        let rollout = Rollout {
            policy: "kernel",
            spec: &spec,
            previous_phase: Some(Phase::Progressing),
            phase: Phase::Completed,
            counts: Counts {
                total: 3,
                updated: 3,
                failed: 0,
            },
            failed: &[],
            first_window: None,
            expected_completion: None,
            now: jiff::Timestamp::UNIX_EPOCH,
        };
        assert!(rollout.details_released());
        let embargo = Embargo::of_spec(&spec);
        let generic = crate::notify::generic::JsonTemplate::parse(
            r#"{"component": "{node}", "status": "{event}", "body": "{text} {details}"}"#,
        )
        .unwrap();
        for (kind, words) in [
            (EventKind::NodeDraining, "is cordoned and being drained"),
            (EventKind::NodeRebooting, "is rebooting"),
            (EventKind::NodeUncordoned, "is back and uncordoned"),
        ] {
            let m = Message::new(&rollout, &due(kind, "w-02", rollout.now));
            assert!(!m.carries_details());
            assert_eq!(
                m.text(),
                format!("Security maintenance: server w-02 {words}.")
            );
            let ce: serde_json::Value =
                serde_json::from_slice(&m.payload(WebhookFormat::CloudEvents, None).body).unwrap();
            assert_eq!(
                ce["type"],
                format!("dev.sofort.rollout.{}", kind.as_str().to_ascii_lowercase())
            );
            assert_eq!(
                ce["id"],
                format!(
                    "kernel/2026-12-01/{}/w-02",
                    kind.as_str().to_ascii_lowercase()
                )
            );
            assert_eq!(ce["data"]["node"], "w-02");
            assert_eq!(ce["data"]["event"], kind.as_str());
            let slack: serde_json::Value =
                serde_json::from_slice(&m.payload(WebhookFormat::Slack, None).body).unwrap();
            assert_eq!(slack["blocks"][0]["text"]["text"], m.headline());
            assert!(slack["text"].as_str().unwrap().contains("w-02"));
            let teams: serde_json::Value =
                serde_json::from_slice(&m.payload(WebhookFormat::Teams, None).body).unwrap();
            let card = &teams["attachments"][0]["content"];
            assert_eq!(
                card["body"][0]["text"],
                format!("{}: Web hosting", m.headline())
            );
            assert!(card["body"][1]["text"].as_str().unwrap().contains("w-02"));
            let mail = m.payload(WebhookFormat::Email, None);
            assert_eq!(
                mail.subject.as_deref(),
                Some(format!("Web hosting: {}", m.headline()).as_str())
            );
            let body: serde_json::Value =
                serde_json::from_slice(&m.generic(&generic).body).unwrap();
            assert_eq!(body["component"], "w-02");
            assert_eq!(body["status"], kind.as_str());
            for p in [
                m.payload(WebhookFormat::CloudEvents, None),
                m.payload(WebhookFormat::Slack, None),
                m.payload(WebhookFormat::Teams, None),
                mail,
                m.generic(&generic),
            ] {
                let text = String::from_utf8(p.body).unwrap();
                assert!(!embargo.leaks(&text), "{kind}: {text}");
            }
        }
    }
    #[test]
    fn a_customer_channel_cannot_subscribe_to_node_notices() {
        let mut spec = crate::api::PatchPolicySpec::new("r1");
        spec.notify = Some(crate::api::NotifySpec {
            webhooks: vec![
                hook(Audience::Admins, &[NodeEvent::NodeDraining]),
                Webhook {
                    name: "customers".into(),
                    ..hook(Audience::Customers, &[NodeEvent::NodeRebooting])
                },
            ],
            ..Default::default()
        });
        let problems: Vec<String> = crate::core::spec::parse(&spec)
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0]
                .starts_with("spec.notify.webhooks[1].nodeEvents: per-node notices name the nodes"),
            "{problems:?}"
        );
    }
}
