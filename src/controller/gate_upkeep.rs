//! The health gates around a pass: gathering what the gates look at before
//! the decision, the drainability pre-flight when a revision is announced or
//! a window opens, and after the decision the gate Events, metrics and the
//! maintenance silences of the nodes in progress. Events go out through the
//! reconciler's [`Writes`] like every other Event.

use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::ParsedPolicy;
use super::events::Note;
use super::reconciler::Reconciler;
use super::writes::Writes;
use crate::api::{PatchPolicy, PatchPolicySpec, PatchPolicyStatus};
use crate::core::gates::config::GatesConfig;
use crate::core::gates::evaluate::Observations;
use crate::core::rollout::{self, NodeView};

/// Whether the pre-flight is due: not yet run for this revision (it was just
/// announced), or a maintenance window opened since it ran.
pub(super) fn preflight_due(
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
    pub(super) async fn gate_observations(
        &mut self,
        policy: &PatchPolicy,
        cfg: &rollout::Config,
        now: jiff::Timestamp,
    ) -> Option<Observations> {
        let spec = policy.spec.gates.as_ref()?;
        let gates = cfg.gates.as_ref()?;
        let name = policy.name_any();
        Some(
            self.gates
                .observe(&name, spec, gates, now, &self.metrics)
                .await,
        )
    }

    /// Runs the drainability pre-flight over the selected nodes not yet done
    /// and reports it in status and, when a node would block, in a Warning
    /// Event for the admins (never in customer notifications).
    pub(super) async fn preflight(
        &mut self,
        policy: &ParsedPolicy,
        views: &[NodeView],
        status: &mut PatchPolicyStatus,
        now: jiff::Timestamp,
    ) {
        let rev = &policy.spec.revision;
        let nodes: Vec<String> = views
            .iter()
            .filter(|v| crate::core::selector::selects_node(&policy.spec.node_selector, &v.labels))
            .filter(|v| v.done.get(&policy.name_any()) != Some(rev))
            .map(|v| v.name.clone())
            .collect();
        let result = super::gates::preflight::run(
            &self.client,
            &self.evict_client,
            &policy.spec,
            &nodes,
            now,
        )
        .await;
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
    pub(super) async fn gate_upkeep(
        &mut self,
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
        if let Err(e) = self
            .gates
            .maintain_silences(&name, spec, cfg, &active, now)
            .await
        {
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
        for g in &status.gates {
            self.metrics.set_gate_open(&name, &g.name, g.open);
            let was = before.iter().find(|b| b.name == g.name).map(|b| b.open);
            if was == Some(g.open) || (was.is_none() && g.open) {
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
