//! The health gates around a pass: gathering what the gates look at before
//! the decision, the drainability pre-flight when a revision is announced or
//! a window opens, and after the decision the gate Events, metrics and the
//! maintenance silences of the nodes in progress. Events go out through the
//! reconciler's [`Writes`] like every other Event.

use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::ParsedPolicy;
use super::events::Note;
use super::gates::preflight::{Job, nodes_to_check};
use super::reconciler::Reconciler;
use super::writes::Writes;
use crate::api::{PatchPolicy, PatchPolicySpec, PatchPolicyStatus};
use crate::core::gates::config::GatesConfig;
use crate::core::gates::evaluate::{NOT_CHECKED, Observations};
use crate::core::rollout::{self, NodeView};

/// Whether the pre-flight is due: not yet run for this revision (it was just
/// announced), or a maintenance window opened since it ran.
fn preflight_due(
    prev: Option<&PatchPolicyStatus>,
    spec: &PatchPolicySpec,
    now: jiff::Timestamp,
) -> bool {
    let Some(pf) = prev
        .and_then(|s| s.preflight.as_ref())
        .filter(|p| p.revision == spec.revision)
    else {
        return true;
    };
    prev.and_then(|s| s.next_window.as_ref())
        .is_some_and(|w| w.start.0 > pf.checked_at.0 && w.start.0 <= now)
}

/// The policy's gates, parsed once with its spec (`None`: none, or invalid).
fn spec_gates(policy: &ParsedPolicy) -> Option<&GatesConfig> {
    policy.config.gates.as_ref()
}

impl<W: Writes> Reconciler<W> {
    /// The health gates' observations for `policy` (`None`: it has no usable gates).
    pub(super) fn gate_observations(
        &self,
        policy: &PatchPolicy,
        cfg: &rollout::Config,
        now: jiff::Timestamp,
    ) -> Option<Observations> {
        let spec = policy.spec.gates.as_ref()?;
        let gates = cfg.gates.as_ref()?;
        let name = policy.name_any();
        Some(self.gates.observe(&name, spec, gates, now))
    }

    /// The drainability pre-flight, for every policy: started in the
    /// background over the selected nodes not yet done when it is due (a
    /// revision announced, a window opened); when one has finished, reported
    /// in status and, when a node would block, in a Warning Event for the
    /// admins (never in customer notifications).
    pub(super) fn preflight(
        &self,
        policy: &ParsedPolicy,
        views: &[NodeView],
        status: &mut PatchPolicyStatus,
        now: jiff::Timestamp,
    ) {
        let name = policy.name_any();
        let rev = &policy.spec.revision;
        let due = preflight_due(policy.status.as_ref(), &policy.spec, now);
        let job = || Job {
            client: self.client.clone(),
            evict_client: self.evict_client.clone(),
            spec: policy.spec.clone(),
            nodes: nodes_to_check(&name, &policy.spec, views),
            now,
        };
        let Some(result) = self.preflights.poll(&name, rev, due, job) else {
            return;
        };
        if !result.blocked.is_empty() {
            let text = format!(
                "preflight: {}; {}",
                result.summary,
                result.blocked.join("; ")
            );
            let note = Note::policy(EventType::Warning, "PreflightBlocked", text, "Preflight");
            self.emit(policy, note);
        }
        status.preflight = Some(result);
    }

    /// After a decision of a gated policy: Events and metrics for gates that
    /// opened or closed, and the maintenance silences of the nodes in progress.
    pub(super) fn gate_upkeep(
        &self,
        policy: &ParsedPolicy,
        status: &PatchPolicyStatus,
        now: jiff::Timestamp,
    ) {
        self.gate_events(policy, status);
        let (Some(spec), Some(cfg)) = (policy.spec.gates.as_ref(), spec_gates(policy)) else {
            return;
        };
        let name = policy.name_any();
        let active: Vec<String> = status.active.iter().map(|a| a.node.clone()).collect();
        if let Some(e) = self.gates.maintain_silences(&name, spec, cfg, &active, now) {
            tracing::warn!(policy = %name, error = %e, "maintenance silences not updated");
            let text = format!("maintenance silences not updated: {e}");
            let note = Note::policy(EventType::Warning, "SilenceFailed", text, "Gate");
            self.emit(policy, note);
        }
    }

    /// GateOpened/GateClosed Events and `sofort_gate_open` for the gates whose
    /// state changed since the stored status; forgets gates no longer there.
    fn gate_events(&self, policy: &ParsedPolicy, status: &PatchPolicyStatus) {
        let name = policy.name_any();
        let before = policy
            .status
            .as_ref()
            .map(|s| s.gates.as_slice())
            .unwrap_or(&[]);
        // A gate not checked yet (a new policy, a restarted controller) is
        // closed, but neither closed nor opened in the Events' sense.
        let unchecked = |r: Option<&str>| r.is_some_and(|r| r.ends_with(NOT_CHECKED));
        for g in &status.gates {
            self.metrics.set_gate_open(&name, &g.name, g.open);
            let was = before
                .iter()
                .find(|b| b.name == g.name)
                .filter(|b| !unchecked(b.reason.as_deref()))
                .map(|b| b.open);
            if was == Some(g.open) || (was.is_none() && g.open) || unchecked(g.reason.as_deref()) {
                continue;
            }
            let note = if g.open {
                let text = format!("gate {} open again", g.name);
                Note::policy(EventType::Normal, "GateOpened", text, "Gate")
            } else {
                let why = g.reason.as_deref().unwrap_or("closed");
                let text = format!("gate {} closed: {why}", g.name);
                Note::policy(EventType::Warning, "GateClosed", text, "Gate")
            };
            self.emit(policy, note);
        }
        for b in before
            .iter()
            .filter(|b| !status.gates.iter().any(|g| g.name == b.name))
        {
            self.metrics.forget_gate(&name, &b.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{PreflightStatus, WindowStatus};

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_preflight_is_due_for_a_new_revision_and_when_a_window_opened_since() {
        let spec = PatchPolicySpec::new("r2");
        assert!(preflight_due(None, &spec, at("2026-11-27T20:00:00Z")));
        let mut st = PatchPolicyStatus {
            preflight: Some(PreflightStatus {
                checked_at: Time(at("2026-11-27T20:00:00Z")),
                revision: "r1".into(),
                summary: String::new(),
                blocked: vec![],
            }),
            next_window: Some(WindowStatus {
                start: Time(at("2026-11-27T22:00:00Z")),
                end: Time(at("2026-11-28T02:00:00Z")),
            }),
            ..PatchPolicyStatus::default()
        };
        // Ran for another revision: the new one was just announced.
        assert!(preflight_due(Some(&st), &spec, at("2026-11-27T20:01:00Z")));
        if let Some(p) = st.preflight.as_mut() {
            p.revision = "r2".into();
        }
        // Ran for this revision; the window has not opened yet.
        assert!(!preflight_due(Some(&st), &spec, at("2026-11-27T21:59:59Z")));
        // The window opened since: again.
        assert!(preflight_due(Some(&st), &spec, at("2026-11-27T22:00:00Z")));
        // Ran after it opened: not again.
        if let Some(p) = st.preflight.as_mut() {
            p.checked_at = Time(at("2026-11-27T22:00:05Z"));
        }
        assert!(!preflight_due(Some(&st), &spec, at("2026-11-27T23:00:00Z")));
    }
}
