//! Which customer notification is due now: a pure function of the policy, the
//! rollout as decided now and what was already recorded in status.
//!
//! The records in `status.notifications` are the memory. The controller writes
//! the records returned by [`Due::record`] to status in the same write as the new
//! phase, *before* it queues delivery; a notification whose record is in status
//! is never decided again, so a restart or a change of leader cannot send a
//! second `Started`. See the module docs of [`crate::notify`] for the delivery
//! guarantee that follows.

use std::fmt;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::api::{AdvisoryRelease, FailedNode, NotificationRecord, PatchPolicySpec, Phase};

/// At most this many `NodeFailed` notifications per revision; later failures are
/// still counted in every following notification.
pub const MAX_NODE_FAILED: usize = 10;
/// At most this many `Resumed` notifications per revision (pause/unpause cycles).
pub const MAX_RESUMED: usize = 3;
/// `status.notifications` keeps at most this many records. With the caps above a
/// revision needs at most 21: `Scheduled`, the start, 10 `NodeFailed`,
/// 3 `Resumed`, 4 `Halted` (one more than `Resumed`), `CompletedWithFailures`
/// and `Completed`. So the dedupe memory of the current revision is never cut.
pub const MAX_RECORDS: usize = 21;

/// A customer notification.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// Routine work announced ahead, with the first window and expected completion.
    Scheduled,
    /// Urgent work started at once; it could not be announced ahead.
    UrgentStarted,
    /// Routine work started.
    Started,
    /// One node could not be updated.
    NodeFailed,
    /// Too many nodes failed; the rollout stopped.
    Halted,
    /// Work goes on after a halt or a pause.
    Resumed,
    /// The rollout ended but not every selected node is updated (failed or
    /// skipped nodes): says so without the advisory details, which stay embargoed.
    CompletedWithFailures,
    /// Every selected node is updated (or an admin released the details). The
    /// only notification that carries the advisory details.
    Completed,
    /// Admin channels only: a node was cordoned and is being drained.
    NodeDraining,
    /// Admin channels only: a node was asked to reboot.
    NodeRebooting,
    /// Admin channels only: a node is back and released (uncordoned).
    NodeUncordoned,
}

impl EventKind {
    /// Every kind, in the order they are emitted within one decision.
    pub const ALL: [EventKind; 11] = [
        EventKind::Scheduled,
        EventKind::UrgentStarted,
        EventKind::Started,
        EventKind::NodeFailed,
        EventKind::Halted,
        EventKind::Resumed,
        EventKind::CompletedWithFailures,
        EventKind::Completed,
        EventKind::NodeDraining,
        EventKind::NodeRebooting,
        EventKind::NodeUncordoned,
    ];

    /// The name used in status records, Events and metrics (`NodeFailed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Scheduled => "Scheduled",
            EventKind::UrgentStarted => "UrgentStarted",
            EventKind::Started => "Started",
            EventKind::NodeFailed => "NodeFailed",
            EventKind::Halted => "Halted",
            EventKind::Resumed => "Resumed",
            EventKind::CompletedWithFailures => "CompletedWithFailures",
            EventKind::Completed => "Completed",
            EventKind::NodeDraining => "NodeDraining",
            EventKind::NodeRebooting => "NodeRebooting",
            EventKind::NodeUncordoned => "NodeUncordoned",
        }
    }

    /// True for the per-node progress notices, which go to admin channels
    /// only and have no status record (see [`super::node_progress`]).
    pub fn is_node_progress(self) -> bool {
        matches!(
            self,
            EventKind::NodeDraining | EventKind::NodeRebooting | EventKind::NodeUncordoned
        )
    }

    /// Parses a status record's event name.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The CloudEvents type, `dev.sofort.rollout.<event lower-case>`.
    pub fn cloudevents_type(self) -> String {
        format!("dev.sofort.rollout.{}", self.as_str().to_ascii_lowercase())
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A maintenance window instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Opening instant.
    pub start: Timestamp,
    /// Closing instant.
    pub end: Timestamp,
}

/// Node counts as decided now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counts {
    /// Selected nodes.
    pub total: u32,
    /// Nodes at the revision.
    pub updated: u32,
    /// Nodes failed for the revision.
    pub failed: u32,
}

/// The rollout as the controller decided it now: everything a notification may
/// say. Built fresh on every reconcile.
#[derive(Clone, Debug)]
pub struct Rollout<'a> {
    /// `metadata.name` of the policy.
    pub policy: &'a str,
    /// The spec (revision, urgent, advisory, windows' time zone).
    pub spec: &'a PatchPolicySpec,
    /// `status.phase` as stored before this decision (`None` for a new revision).
    pub previous_phase: Option<Phase>,
    /// The phase decided now.
    pub phase: Phase,
    /// Node counts decided now.
    pub counts: Counts,
    /// Failed nodes decided now.
    pub failed: &'a [FailedNode],
    /// First usable window (from the forecast), if any.
    pub first_window: Option<Window>,
    /// Expected completion (from the forecast), if known.
    pub expected_completion: Option<Timestamp>,
    /// The decision's clock.
    pub now: Timestamp,
}

impl Rollout<'_> {
    /// True when the rollout has ended with every selected node updated: no
    /// failed node, none left behind.
    pub fn all_patched(&self) -> bool {
        self.phase == Phase::Completed
            && self.counts.failed == 0
            && self.failed.is_empty()
            && self.counts.updated >= self.counts.total
    }

    /// True when the advisory details may be published now: every selected
    /// node is updated, or an admin set `advisory.release: Now`. Decided from
    /// the rollout as computed now, never from a status record.
    pub fn details_released(&self) -> bool {
        release_now(self.spec) || self.all_patched()
    }
}

/// True when an admin lifted the embargo (`spec.notify.advisory.release: Now`).
pub fn release_now(spec: &PatchPolicySpec) -> bool {
    spec.notify
        .as_ref()
        .and_then(|n| n.advisory.as_ref())
        .is_some_and(|a| a.release == AdvisoryRelease::Now)
}

/// One notification that is due: what to record in status and then deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// Which notification.
    pub kind: EventKind,
    /// The node, for `NodeFailed`.
    pub node: Option<String>,
    /// 1-based occurrence for kinds that may repeat within a revision
    /// (`Halted`, `Resumed`); 1 for the others.
    pub seq: u32,
    /// When it was decided (the record's `at`, the CloudEvents `time`).
    pub at: Timestamp,
}

impl Due {
    /// The status record to write: `<webhook>=pending` for every webhook.
    pub fn record<'w>(&self, webhooks: impl IntoIterator<Item = &'w str>) -> NotificationRecord {
        NotificationRecord {
            event: self.kind.as_str().to_string(),
            at: Time(self.at),
            node: self.node.clone(),
            results: webhooks
                .into_iter()
                .map(|w| format!("{w}={PENDING}"))
                .collect(),
        }
    }

    /// Rebuilds a notification from its status record, for redelivery after a
    /// restart. `None` for records this version does not know.
    pub fn from_record(records: &[NotificationRecord], index: usize) -> Option<Due> {
        let r = records.get(index)?;
        // Node progress notices have no record: one in status is not ours
        // and must never reach a customer channel.
        let kind = EventKind::parse(&r.event).filter(|k| !k.is_node_progress())?;
        let seq = records[..=index]
            .iter()
            .filter(|o| o.event == r.event && o.node == r.node)
            .count();
        Some(Due {
            kind,
            node: r.node.clone(),
            seq: u32::try_from(seq).unwrap_or(u32::MAX),
            at: r.at.0,
        })
    }

    /// Deterministic id, the same for every delivery attempt, every webhook and
    /// every controller replica, so receivers can drop duplicates:
    /// `<policy>/<revision>/<event>[/<node>][/<seq>]`.
    pub fn id(&self, policy: &str, revision: &str) -> String {
        let mut id = format!(
            "{policy}/{revision}/{}",
            self.kind.as_str().to_ascii_lowercase()
        );
        if let Some(n) = &self.node {
            id.push('/');
            id.push_str(n);
        }
        if self.seq > 1 {
            id.push_str(&format!("/{}", self.seq));
        }
        id
    }
}

/// The records of `status` that belong to `revision`: none when the status still
/// describes another revision (a new revision starts with an empty memory).
pub fn records_for_revision<'a>(
    status_revision: Option<&str>,
    records: &'a [NotificationRecord],
    revision: &str,
) -> &'a [NotificationRecord] {
    if status_revision == Some(revision) {
        records
    } else {
        &[]
    }
}

fn count(records: &[NotificationRecord], kind: EventKind) -> usize {
    records.iter().filter(|r| r.event == kind.as_str()).count()
}

fn has(records: &[NotificationRecord], kind: EventKind) -> bool {
    count(records, kind) > 0
}

/// The notifications due now, in the order to send them. `records` are the
/// records already in status for this revision (see [`records_for_revision`]).
///
/// - `Scheduled`: non-urgent, before the start, once.
/// - `UrgentStarted`: urgent, at once (whatever the phase), once; replaces
///   `Started`, and a rollout that turns urgent after being announced gets it too.
/// - `Started`: non-urgent, when the phase first becomes `Progressing`, once.
/// - `NodeFailed`: once per failed node (at most [`MAX_NODE_FAILED`]).
/// - `Halted`: when the phase is `Halted` after the start, once per halt.
/// - `Resumed`: back to `Progressing` after a `Halted` notification, or after
///   `Paused` (transition from the stored phase), at most [`MAX_RESUMED`].
/// - `CompletedWithFailures`: when the phase is `Completed` but a selected node
///   failed or was left behind, once; the details stay embargoed.
/// - `Completed`: when the phase is `Completed` and every selected node is
///   updated, or later when an admin sets `advisory.release: Now`, once; not for
///   a revision that selected no node and told nobody anything.
pub fn due(rollout: &Rollout<'_>, records: &[NotificationRecord]) -> Vec<Due> {
    let now = rollout.now;
    let mut out = Vec::new();
    let mut push = |kind: EventKind, node: Option<String>, seq: usize| {
        out.push(Due {
            kind,
            node,
            seq: u32::try_from(seq).unwrap_or(u32::MAX),
            at: now,
        })
    };
    let phase = rollout.phase;
    let started_before = has(records, EventKind::Started) || has(records, EventKind::UrgentStarted);
    let nothing_sent = records.is_empty();
    let empty_done = phase == Phase::Completed && rollout.counts.total == 0 && nothing_sent;
    if empty_done {
        return Vec::new();
    }

    let mut started = started_before;
    if !started_before {
        if rollout.spec.urgent {
            // Nothing runs while paused or halted before the start; tell them
            // when work really begins.
            if matches!(phase, Phase::Paused | Phase::Halted) {
                return out;
            }
            push(EventKind::UrgentStarted, None, 1);
            started = true;
        } else {
            match phase {
                Phase::Scheduled | Phase::Waiting | Phase::Paused => {
                    if !has(records, EventKind::Scheduled) {
                        push(EventKind::Scheduled, None, 1);
                    }
                }
                Phase::Progressing | Phase::Completed => {
                    push(EventKind::Started, None, 1);
                    started = true;
                }
                // Halted before anything started: the spec is invalid or nothing
                // could run. That is for the admins (Events, conditions), not customers.
                Phase::Halted => {}
            }
        }
    }
    if !started {
        return out;
    }

    let mut failed_sent = count(records, EventKind::NodeFailed);
    for f in rollout.failed {
        if failed_sent >= MAX_NODE_FAILED {
            break;
        }
        let already = records.iter().any(|r| {
            r.event == EventKind::NodeFailed.as_str() && r.node.as_deref() == Some(&f.node)
        });
        if !already {
            failed_sent += 1;
            push(EventKind::NodeFailed, Some(f.node.clone()), 1);
        }
    }

    // The last Halted/Resumed record says whether customers were last told "halted".
    let told_halted = records
        .iter()
        .rev()
        .find(|r| r.event == EventKind::Halted.as_str() || r.event == EventKind::Resumed.as_str())
        .is_some_and(|r| r.event == EventKind::Halted.as_str());
    if phase == Phase::Halted && !told_halted {
        push(
            EventKind::Halted,
            None,
            count(records, EventKind::Halted) + 1,
        );
    }
    let resumed = count(records, EventKind::Resumed);
    let unpaused = rollout.previous_phase == Some(Phase::Paused) && started_before;
    if phase == Phase::Progressing && (told_halted || unpaused) && resumed < MAX_RESUMED {
        push(EventKind::Resumed, None, resumed + 1);
    }
    if phase == Phase::Completed && !has(records, EventKind::Completed) {
        if rollout.details_released() {
            push(EventKind::Completed, None, 1);
        } else if !has(records, EventKind::CompletedWithFailures) {
            push(EventKind::CompletedWithFailures, None, 1);
        }
    }
    out
}

/// Appends the records of `due` (pending for every webhook named) to `records`,
/// keeping the newest [`MAX_RECORDS`].
pub fn append_records<'w>(
    records: &mut Vec<NotificationRecord>,
    due: &[Due],
    webhooks: impl IntoIterator<Item = &'w str> + Clone,
) {
    records.extend(due.iter().map(|d| d.record(webhooks.clone())));
    if records.len() > MAX_RECORDS {
        let cut = records.len() - MAX_RECORDS;
        records.drain(..cut);
    }
}

/// Stores a delivery result (`webhook=delivered|failed`) on the record it belongs
/// to, replacing an earlier result of the same webhook. Returns false when no
/// record matches (it was cut from the bounded history).
pub fn set_result(
    records: &mut [NotificationRecord],
    kind: EventKind,
    node: Option<&str>,
    at: Timestamp,
    webhook: &str,
    result: &str,
) -> bool {
    let Some(r) = records
        .iter_mut()
        .rev()
        .find(|r| r.event == kind.as_str() && r.node.as_deref() == node && r.at.0 == at)
    else {
        return false;
    };
    let prefix = format!("{webhook}=");
    r.results.retain(|x| !x.starts_with(&prefix));
    r.results.push(format!("{webhook}={result}"));
    true
}

/// Result of a delivery that has not finished yet.
pub const PENDING: &str = "pending";
/// Result of a delivery the receiver accepted.
pub const DELIVERED: &str = "delivered";
/// Result of a delivery that failed after its retries.
pub const FAILED: &str = "failed";

/// Deliveries still `pending` in the records (for example because the controller
/// stopped before they finished): deliver them again after a restart or a change
/// of leader, with the same id. Returns (record index, webhook name).
pub fn pending(records: &[NotificationRecord]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        for x in &r.results {
            if let Some((w, PENDING)) = x.split_once('=') {
                out.push((i, w.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Advisory, NotifySpec};

    fn spec(urgent: bool) -> PatchPolicySpec {
        let mut s = PatchPolicySpec::new("r1");
        s.urgent = urgent;
        s.notify = Some(NotifySpec {
            webhooks: vec![],
            advisory: Some(Advisory {
                summary: "Security maintenance".into(),
                details: Some("CVE-2026-1234".into()),
                release: Default::default(),
            }),
            ..Default::default()
        });
        s
    }

    fn failed(nodes: &[&str]) -> Vec<FailedNode> {
        nodes
            .iter()
            .map(|n| FailedNode {
                node: n.to_string(),
                reason: "drain timeout".into(),
            })
            .collect()
    }

    /// Runs one decision and stores its records, as the controller does.
    fn step(
        spec: &PatchPolicySpec,
        records: &mut Vec<NotificationRecord>,
        prev: Option<Phase>,
        phase: Phase,
        failed_nodes: &[&str],
    ) -> Vec<String> {
        let f = failed(failed_nodes);
        let r = Rollout {
            policy: "p",
            spec,
            previous_phase: prev,
            phase,
            counts: Counts {
                total: 5,
                // A completion without failures updated every node.
                updated: if phase == Phase::Completed && f.is_empty() {
                    5
                } else {
                    1
                },
                failed: u32::try_from(f.len()).unwrap(),
            },
            failed: &f,
            first_window: None,
            expected_completion: None,
            now: Timestamp::from_second(1_700_000_000).unwrap(),
        };
        let d = due(&r, records);
        append_records(records, &d, ["hook"]);
        d.iter()
            .map(|d| match &d.node {
                Some(n) => format!("{}:{n}", d.kind),
                None => d.kind.to_string(),
            })
            .collect()
    }

    #[test]
    fn routine_rollout_sequence_once_each() {
        let s = spec(false);
        let mut rec = Vec::new();
        use Phase::*;
        assert_eq!(step(&s, &mut rec, None, Scheduled, &[]), ["Scheduled"]);
        assert!(step(&s, &mut rec, Some(Scheduled), Scheduled, &[]).is_empty());
        assert!(step(&s, &mut rec, Some(Scheduled), Waiting, &[]).is_empty());
        assert_eq!(
            step(&s, &mut rec, Some(Waiting), Progressing, &[]),
            ["Started"]
        );
        assert!(step(&s, &mut rec, Some(Progressing), Waiting, &[]).is_empty());
        assert!(step(&s, &mut rec, Some(Waiting), Progressing, &[]).is_empty());
        assert_eq!(
            step(&s, &mut rec, Some(Progressing), Progressing, &["w-2"]),
            ["NodeFailed:w-2"]
        );
        assert!(step(&s, &mut rec, Some(Progressing), Progressing, &["w-2"]).is_empty());
        // w-2 failed (tolerated): the rollout ended, the details stay embargoed.
        assert_eq!(
            step(&s, &mut rec, Some(Progressing), Completed, &["w-2"]),
            ["CompletedWithFailures"]
        );
        // A restarted controller reads the same records: nothing again.
        for prev in [None, Some(Progressing), Some(Completed)] {
            assert!(step(&s, &mut rec, prev, Completed, &["w-2"]).is_empty());
        }
        let events: Vec<_> = rec.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(
            events,
            [
                "Scheduled",
                "Started",
                "NodeFailed",
                "CompletedWithFailures"
            ]
        );
        assert_eq!(rec[2].node.as_deref(), Some("w-2"));
        assert_eq!(rec[0].results, ["hook=pending"]);
    }

    #[test]
    fn embargo_holds_while_a_node_failed() {
        let s = spec(false);
        let completed = |spec: &PatchPolicySpec, updated: u32, failed: &[FailedNode]| {
            let r = Rollout {
                policy: "p",
                spec,
                previous_phase: Some(Phase::Progressing),
                phase: Phase::Completed,
                counts: Counts {
                    total: 3,
                    updated,
                    failed: u32::try_from(failed.len()).unwrap_or(u32::MAX),
                },
                failed,
                first_window: None,
                expected_completion: None,
                now: Timestamp::UNIX_EPOCH,
            };
            let started = Due {
                kind: EventKind::Started,
                node: None,
                seq: 1,
                at: Timestamp::UNIX_EPOCH,
            }
            .record(["hook"]);
            let d = due(&r, std::slice::from_ref(&started));
            let kinds: Vec<EventKind> = d.iter().map(|d| d.kind).collect();
            let details = d
                .iter()
                .map(|d| crate::notify::Message::new(&r, d).variable("details"))
                .collect::<String>();
            (kinds, r.details_released(), details)
        };
        let one_failed = failed(&["w-2"]);
        // maxFailedNodes tolerated w-2: the rollout ended, w-2 is still vulnerable.
        let (kinds, released, details) = completed(&s, 2, &one_failed);
        assert!(
            kinds.contains(&EventKind::CompletedWithFailures),
            "{kinds:?}"
        );
        assert!(!kinds.contains(&EventKind::Completed), "{kinds:?}");
        assert!(!released && details.is_empty());
        // A skipped node (not updated, not failed) keeps it too.
        let (kinds, released, _) = completed(&s, 2, &[]);
        assert_eq!(kinds, [EventKind::CompletedWithFailures]);
        assert!(!released);
        // Every node updated: Completed with the details.
        let (kinds, released, details) = completed(&s, 3, &[]);
        assert_eq!(kinds, [EventKind::Completed]);
        assert!(released);
        assert_eq!(details, "CVE-2026-1234");
        // An admin lifts the embargo explicitly.
        let mut now = s.clone();
        if let Some(a) = now.notify.as_mut().and_then(|n| n.advisory.as_mut()) {
            a.release = AdvisoryRelease::Now;
        }
        let (kinds, released, details) = completed(&now, 2, &one_failed);
        assert!(kinds.contains(&EventKind::Completed), "{kinds:?}");
        assert!(released);
        assert_eq!(details, "CVE-2026-1234");
    }

    #[test]
    fn a_forged_completed_record_sends_no_details() {
        let s = spec(false);
        // A status record `Completed=pending` while the rollout is still going.
        let forged = Due {
            kind: EventKind::Completed,
            node: None,
            seq: 1,
            at: Timestamp::UNIX_EPOCH,
        }
        .record(["hook"]);
        let records = [forged];
        let d = Due::from_record(&records, 0).unwrap();
        for (phase, updated) in [(Phase::Progressing, 1), (Phase::Completed, 2)] {
            let r = Rollout {
                policy: "p",
                spec: &s,
                previous_phase: Some(Phase::Completed),
                phase,
                counts: Counts {
                    total: 3,
                    updated,
                    failed: 0,
                },
                failed: &[],
                first_window: None,
                expected_completion: None,
                now: Timestamp::UNIX_EPOCH,
            };
            let m = crate::notify::Message::new(&r, &d);
            assert_eq!(m.variable("details"), "", "{phase:?}");
            assert!(!m.text().contains("CVE-2026-1234"));
        }
    }

    #[test]
    fn urgent_rollout_starts_at_once() {
        let s = spec(true);
        let mut rec = Vec::new();
        use Phase::*;
        // Urgent: told at once, even while the budget makes it wait.
        assert_eq!(step(&s, &mut rec, None, Waiting, &[]), ["UrgentStarted"]);
        assert!(step(&s, &mut rec, Some(Waiting), Progressing, &[]).is_empty());
        assert_eq!(
            step(&s, &mut rec, Some(Progressing), Completed, &[]),
            ["Completed"]
        );
        assert!(step(&s, &mut rec, None, Completed, &[]).is_empty());
    }

    #[test]
    fn urgent_paused_from_the_start_waits_for_work() {
        let s = spec(true);
        let mut rec = Vec::new();
        assert!(step(&s, &mut rec, None, Phase::Paused, &[]).is_empty());
        assert_eq!(
            step(&s, &mut rec, Some(Phase::Paused), Phase::Progressing, &[]),
            ["UrgentStarted"]
        );
    }

    #[test]
    fn turning_urgent_after_the_announcement() {
        let mut s = spec(false);
        let mut rec = Vec::new();
        assert_eq!(
            step(&s, &mut rec, None, Phase::Scheduled, &[]),
            ["Scheduled"]
        );
        s.urgent = true;
        assert_eq!(
            step(
                &s,
                &mut rec,
                Some(Phase::Scheduled),
                Phase::Progressing,
                &[]
            ),
            ["UrgentStarted"]
        );
        s.urgent = false;
        assert!(
            step(
                &s,
                &mut rec,
                Some(Phase::Progressing),
                Phase::Progressing,
                &[]
            )
            .is_empty()
        );
    }

    #[test]
    fn halt_resume_and_pause_resume() {
        let s = spec(false);
        let mut rec = Vec::new();
        use Phase::*;
        assert_eq!(step(&s, &mut rec, None, Progressing, &[]), ["Started"]);
        assert_eq!(
            step(&s, &mut rec, Some(Progressing), Halted, &["a", "b"]),
            ["NodeFailed:a", "NodeFailed:b", "Halted"]
        );
        assert!(step(&s, &mut rec, Some(Halted), Halted, &["a", "b"]).is_empty());
        assert!(step(&s, &mut rec, None, Halted, &["a", "b"]).is_empty());
        assert_eq!(
            step(&s, &mut rec, Some(Halted), Progressing, &["a", "b"]),
            ["Resumed"]
        );
        // After a restart the stored phase is already Progressing.
        assert!(step(&s, &mut rec, Some(Progressing), Progressing, &["a", "b"]).is_empty());
        assert!(step(&s, &mut rec, Some(Progressing), Paused, &["a", "b"]).is_empty());
        assert_eq!(
            step(&s, &mut rec, Some(Paused), Progressing, &["a", "b"]),
            ["Resumed"]
        );
        assert_eq!(
            step(&s, &mut rec, Some(Progressing), Halted, &["a", "b", "c"]),
            ["NodeFailed:c", "Halted"]
        );
        let ids: Vec<_> = (0..rec.len())
            .filter_map(|i| Due::from_record(&rec, i))
            .map(|d| d.id("p", "r1"))
            .collect();
        assert_eq!(
            ids,
            [
                "p/r1/started",
                "p/r1/nodefailed/a",
                "p/r1/nodefailed/b",
                "p/r1/halted",
                "p/r1/resumed",
                "p/r1/resumed/2",
                "p/r1/nodefailed/c",
                "p/r1/halted/2"
            ]
        );
    }

    #[test]
    fn nothing_for_customers_before_start_when_halted_or_empty() {
        let s = spec(false);
        let mut rec = Vec::new();
        assert!(step(&s, &mut rec, None, Phase::Halted, &[]).is_empty());
        let r = Rollout {
            policy: "p",
            spec: &s,
            previous_phase: None,
            phase: Phase::Completed,
            counts: Counts::default(),
            failed: &[],
            first_window: None,
            expected_completion: None,
            now: Timestamp::UNIX_EPOCH,
        };
        assert!(due(&r, &[]).is_empty());
    }

    #[test]
    fn bounded_node_failures_and_history() {
        let s = spec(false);
        let mut rec = Vec::new();
        step(&s, &mut rec, None, Phase::Progressing, &[]);
        let many: Vec<String> = (0..30).map(|i| format!("n{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let got = step(
            &s,
            &mut rec,
            Some(Phase::Progressing),
            Phase::Progressing,
            &many,
        );
        assert_eq!(got.len(), MAX_NODE_FAILED);
        assert!(
            step(
                &s,
                &mut rec,
                Some(Phase::Progressing),
                Phase::Progressing,
                &many
            )
            .is_empty()
        );
        // The worst case: halts and resumes alternate until the caps hold.
        for _ in 0..10 {
            step(&s, &mut rec, Some(Phase::Progressing), Phase::Halted, &many);
            step(&s, &mut rec, Some(Phase::Halted), Phase::Progressing, &many);
        }
        step(&s, &mut rec, Some(Phase::Progressing), Phase::Halted, &many);
        assert_eq!(count(&rec, EventKind::Resumed), MAX_RESUMED);
        assert_eq!(count(&rec, EventKind::Halted), MAX_RESUMED + 1);
        step(&s, &mut rec, Some(Phase::Halted), Phase::Completed, &many);
        assert_eq!(rec.last().unwrap().event, "CompletedWithFailures");
        // An admin releases the details afterwards: Completed follows.
        let mut released = s.clone();
        if let Some(a) = released.notify.as_mut().and_then(|n| n.advisory.as_mut()) {
            a.release = AdvisoryRelease::Now;
        }
        step(
            &released,
            &mut rec,
            Some(Phase::Completed),
            Phase::Completed,
            &many,
        );
        // Scheduled is not in this rollout, so one slot is left.
        assert_eq!(rec.len(), MAX_RECORDS - 1);
        // The whole memory of the revision survived the bound.
        assert_eq!(rec[0].event, "Started");
        assert_eq!(rec.last().unwrap().event, "Completed");
        let mut more = rec.clone();
        append_records(
            &mut more,
            &vec![
                Due {
                    kind: EventKind::Resumed,
                    node: None,
                    seq: 9,
                    at: Timestamp::UNIX_EPOCH,
                };
                5
            ],
            ["hook"],
        );
        assert_eq!(more.len(), MAX_RECORDS);
    }

    #[test]
    fn results_pending_and_new_revision() {
        let s = spec(false);
        let mut rec = Vec::new();
        step(&s, &mut rec, None, Phase::Scheduled, &[]);
        let at = rec[0].at.0;
        append_records(&mut rec, &[], ["hook"]);
        assert_eq!(pending(&rec), [(0, "hook".to_string())]);
        assert!(set_result(
            &mut rec,
            EventKind::Scheduled,
            None,
            at,
            "hook",
            DELIVERED
        ));
        assert_eq!(rec[0].results, ["hook=delivered"]);
        assert!(pending(&rec).is_empty());
        assert!(!set_result(
            &mut rec,
            EventKind::Started,
            None,
            at,
            "hook",
            DELIVERED
        ));
        assert_eq!(records_for_revision(Some("r1"), &rec, "r1").len(), 1);
        assert!(records_for_revision(Some("r0"), &rec, "r1").is_empty());
        assert!(records_for_revision(None, &rec, "r1").is_empty());
        assert_eq!(EventKind::parse("NodeFailed"), Some(EventKind::NodeFailed));
        assert_eq!(EventKind::parse("nope"), None);
        assert_eq!(
            EventKind::UrgentStarted.cloudevents_type(),
            "dev.sofort.rollout.urgentstarted"
        );
    }
}
