//! Pure builders of the controller's Event texts: what a node operation, a
//! phase change or an invalid spec says, and the Event that carries a note.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::plan::Op;
use crate::api::{PatchPolicy, Phase, Step};
use crate::core::rollout::Action;

/// What an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum About {
    /// A Node, by name.
    Node(String),
    /// The policy of the pass.
    Policy,
}

/// One Event to publish, before scrubbing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Note {
    pub(crate) about: About,
    pub(crate) type_: EventType,
    pub(crate) reason: &'static str,
    pub(crate) text: String,
    /// The Event's action (before its discriminator).
    pub(crate) action: &'static str,
}

impl Note {
    fn node(node: &str, type_: EventType, reason: &'static str, text: String) -> Note {
        Note {
            about: About::Node(node.to_string()),
            type_,
            reason,
            text,
            action: reason,
        }
    }

    pub(crate) fn policy(
        type_: EventType,
        reason: &'static str,
        text: String,
        action: &'static str,
    ) -> Note {
        Note {
            about: About::Policy,
            type_,
            reason,
            text,
            action,
        }
    }
}

/// The object reference of Events about a Node.
pub(crate) fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.to_string()),
        uid: Some(node.to_string()),
        ..ObjectReference::default()
    }
}

/// The Event carrying `note` (already scrubbed): cut to what the API server
/// takes, with a discriminator from the note in the action, because the
/// Recorder folds Events with the same type, reason, action and object into
/// one series and keeps the first note.
pub(crate) fn event(type_: EventType, reason: &str, note: &str, action: &str) -> Event {
    let note = crate::notify::render::event_note(note);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&note, &mut hasher);
    let action = format!("{action}-{:08x}", std::hash::Hasher::finish(&hasher) as u32);
    Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action,
        secondary: None,
    }
}

/// The Events of a node operation once its write is stored. One Event per
/// node-level outcome (cordoned, reboot asked, rebooted, done); the policy's
/// status lists the nodes in flight. `was`: the node's step before the write.
pub(crate) fn of_op(op: &Op, policy: &str, was: Option<Step>) -> Vec<Note> {
    let pname = policy;
    let action = match op {
        Op::Rollout(a) => a,
        Op::GiveBack { node, announce, .. } => {
            return if *announce {
                vec![Note::node(
                    node,
                    EventType::Normal,
                    "Released",
                    format!("PatchPolicy {pname} was deleted; node given back"),
                )]
            } else {
                Vec::new()
            };
        }
    };
    match action {
        Action::Claim { node, record } | Action::CordonAgain { node, record } => {
            let note = format!(
                "cordoned by PatchPolicy {pname} for revision {}{}; draining",
                record.revision,
                if record.was_unschedulable {
                    " (it was already unschedulable and stays so)"
                } else {
                    ""
                }
            );
            vec![Note::node(node, EventType::Normal, "Cordoned", note)]
        }
        Action::Drain { node, record, .. } => record
            .iter()
            .map(|_| {
                Note::node(
                    node,
                    EventType::Normal,
                    "Draining",
                    format!("draining for PatchPolicy {pname}"),
                )
            })
            .collect(),
        Action::RequestPatch { node, record } => vec![Note::node(
            node,
            EventType::Normal,
            "PatchRequested",
            format!(
                "drained; asked the agent to run the patch command for PatchPolicy {pname} revision {}",
                record.revision
            ),
        )],
        Action::RequestReboot {
            node,
            boot_id,
            record,
        } => vec![Note::node(
            node,
            EventType::Normal,
            "RebootRequested",
            format!(
                "{}asked the agent to reboot (boot ID {boot_id}) for PatchPolicy {pname} revision {}",
                if was == Some(Step::Draining) {
                    "drained; "
                } else {
                    ""
                },
                record.revision
            ),
        )],
        Action::SetStep { node, record } => {
            if record.step == Step::Settling && was != Some(Step::Settling) {
                vec![Note::node(
                    node,
                    EventType::Normal,
                    "Rebooted",
                    "back Ready with a new boot ID; settling".into(),
                )]
            } else {
                Vec::new()
            }
        }
        Action::MarkFailed { node, record, .. } => {
            let reason = record.reason.clone().unwrap_or_else(|| "failed".into());
            vec![
                Note::node(node, EventType::Warning, "NodeFailed", reason.clone()),
                Note::policy(
                    EventType::Warning,
                    "NodeFailed",
                    format!("node {node}: {reason}"),
                    "Fail",
                ),
            ]
        }
        Action::Release {
            node,
            done,
            uncordon,
        } => {
            let revision = done.get(pname).cloned().unwrap_or_default();
            vec![if *uncordon {
                Note::node(
                    node,
                    EventType::Normal,
                    "Uncordoned",
                    format!("uncordoned: revision {revision} of PatchPolicy {pname} is done"),
                )
            } else {
                Note::node(
                    node,
                    EventType::Normal,
                    "Released",
                    format!(
                        "revision {revision} of PatchPolicy {pname} is done; left unschedulable as it was before"
                    ),
                )
            }]
        }
    }
}

/// A forced drain starts while a blocker is known.
pub(crate) fn drain_forced(node: &str, blocker: &str) -> Note {
    Note::node(
        node,
        EventType::Warning,
        "DrainForced",
        format!("drain deadline passed; deleting the remaining pods (onTimeout: Force): {blocker}"),
    )
}

/// A drain is blocked (published once per node and blocker).
pub(crate) fn drain_blocked(node: &str, blocker: &str) -> [Note; 2] {
    [
        Note::node(
            node,
            EventType::Warning,
            "DrainBlocked",
            blocker.to_string(),
        ),
        Note::policy(
            EventType::Warning,
            "DrainBlocked",
            format!("node {node}: {blocker}"),
            "Drain",
        ),
    ]
}

/// The policy-level Event of a phase change (or a new revision), if any.
/// `valid`: the spec passed validation (an invalid one has its own Event).
pub(crate) fn of_phase(
    policy: &PatchPolicy,
    prev_phase: Option<Phase>,
    prev_revision: Option<&str>,
    phase: Option<Phase>,
    message: Option<&str>,
    valid: bool,
) -> Option<Note> {
    let same_rev = prev_revision == Some(policy.spec.revision.as_str());
    if phase == prev_phase && same_rev {
        return None;
    }
    let note = message.unwrap_or_default().to_string();
    match phase {
        Some(Phase::Halted) if valid => Some(Note::policy(
            EventType::Warning,
            "RolloutHalted",
            note,
            "Halt",
        )),
        Some(Phase::Completed) => Some(Note::policy(
            EventType::Normal,
            "RolloutCompleted",
            note,
            "Complete",
        )),
        Some(Phase::Progressing)
            if policy.spec.urgent && (!same_rev || prev_phase != Some(Phase::Progressing)) =>
        {
            Some(Note::policy(
                EventType::Normal,
                "UrgentRollout",
                format!(
                    "urgent revision {} started at once, ignoring maintenance windows; {note}",
                    policy.spec.revision
                ),
                "Start",
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PatchPolicySpec;
    use crate::core::node_record::NodeRecord;

    fn record(step: Step) -> NodeRecord {
        let at: jiff::Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
        NodeRecord {
            policy: "p".into(),
            revision: "r7".into(),
            step,
            since: at,
            started: at,
            was_unschedulable: false,
            boot_id_before: None,
            patch: None,
            reason: Some("drain timeout: pod a/b".into()),
            labels: Default::default(),
            drain_after: None,
        }
    }

    #[test]
    fn each_node_outcome_has_one_event_and_a_failure_two() {
        let claim = Op::Rollout(Action::Claim {
            node: "w-1".into(),
            record: record(Step::Draining),
        });
        let notes = of_op(&claim, "p", None);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].reason, "Cordoned");
        assert_eq!(notes[0].about, About::Node("w-1".into()));
        assert_eq!(
            notes[0].text,
            "cordoned by PatchPolicy p for revision r7; draining"
        );
        let failed = Op::Rollout(Action::MarkFailed {
            node: "w-1".into(),
            uncordon: true,
            record: record(Step::Failed),
        });
        let notes = of_op(&failed, "p", Some(Step::Draining));
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[1].about, About::Policy);
        assert_eq!(notes[1].text, "node w-1: drain timeout: pod a/b");
        let reboot = Op::Rollout(Action::RequestReboot {
            node: "w-1".into(),
            boot_id: "b0".into(),
            record: record(Step::Rebooting),
        });
        assert!(
            of_op(&reboot, "p", Some(Step::Draining))[0]
                .text
                .starts_with("drained; ")
        );
        assert!(
            !of_op(&reboot, "p", Some(Step::Patching))[0]
                .text
                .starts_with("drained; ")
        );
        // A step change to Settling is announced once.
        let settle = Op::Rollout(Action::SetStep {
            node: "w-1".into(),
            record: record(Step::Settling),
        });
        assert_eq!(of_op(&settle, "p", Some(Step::WaitingReady)).len(), 1);
        assert!(of_op(&settle, "p", Some(Step::Settling)).is_empty());
        let quiet = Op::GiveBack {
            node: "w-1".into(),
            uncordon: false,
            announce: false,
        };
        assert!(of_op(&quiet, "p", Some(Step::Done)).is_empty());
    }

    #[test]
    fn phase_events_come_on_changes_only() {
        let mut spec = PatchPolicySpec::new("r2");
        let policy = PatchPolicy::new("p", spec.clone());
        let done = Some(Phase::Completed);
        let prog = Some(Phase::Progressing);
        let n = of_phase(&policy, prog, Some("r2"), done, Some("3/3 updated"), true).unwrap();
        assert_eq!(
            (n.reason, n.text.as_str()),
            ("RolloutCompleted", "3/3 updated")
        );
        assert!(of_phase(&policy, done, Some("r2"), done, None, true).is_none());
        let halted = Some(Phase::Halted);
        assert!(of_phase(&policy, prog, Some("r2"), halted, None, false).is_none());
        assert!(of_phase(&policy, prog, Some("r2"), halted, None, true).is_some());
        spec.urgent = true;
        let urgent = PatchPolicy::new("p", spec);
        let n = of_phase(&urgent, done, Some("r1"), prog, Some("0/3"), true).unwrap();
        assert_eq!(n.reason, "UrgentRollout");
        assert!(n.text.starts_with("urgent revision r2 started at once"));
    }

    #[test]
    fn events_keep_different_notes_apart_and_cut_long_ones() {
        let a = event(EventType::Normal, "X", "one", "Act");
        let b = event(EventType::Normal, "X", "two", "Act");
        assert_ne!(a.action, b.action);
        assert!(a.action.starts_with("Act-"));
        assert_eq!(a.action, event(EventType::Normal, "X", "one", "Act").action);
        let long = event(EventType::Normal, "X", &"x".repeat(5000), "Act");
        assert!(long.note.unwrap().len() < 2000);
    }
}
