//! The rollout decision: `decide(policy, nodes, others, now) -> Decision`.
//!
//! Pure and deterministic: no client, no I/O, no clock. The controller reads the
//! cluster into [`NodeView`]s, calls [`decide`], applies the [`Action`]s in order
//! and writes [`Decision::status`]. Everything decide needs lives on the Node
//! (labels, `spec.unschedulable`, Ready, boot ID, the `sofort.dev/record` and
//! `sofort.dev/done` annotations, the agent's annotations) or in the policy
//! status, so a restarted controller resumes exactly. The one input that is not
//! on the Node is [`DrainState`]: the controller's own drain worker for the node.
//! After a restart it is `Idle`, decide asks for the drain again, and the drain
//! resumes (evicting from a cordoned node is idempotent).
//!
//! # Per-node state machine
//!
//! ```text
//! Pending ─claim+cordon─► Draining ─► [Patching] ─► Rebooting ─► WaitingReady ─► Settling ─release+uncordon─► Done
//!                            │             │             │              │
//!                            └─────────────┴─────────────┴──────────────┴──► Failed (reason)
//! ```
//!
//! * Every transition writes the record *before* its side effect (see
//!   [`Action`]), except [`Action::MarkFailed`], which uncordons first.
//! * The claim is one conditional write: the record (step `Draining`), the
//!   step label and `spec.unschedulable`; the drain starts in the same plan,
//!   right after that write.
//! * `Draining`: the drain must finish within `drain.timeout` counted from the
//!   step start; then `onTimeout: Fail` uncordons (if sofort cordoned) and fails
//!   the node, `Force` deletes the rest. A node found uncordoned while draining
//!   is cordoned again ([`Action::CordonAgain`]); a reboot is never requested
//!   for a schedulable node.
//! * `Patching` (only with `spec.patch`): the agent's `sofort.dev/patch-result`
//!   for this policy and revision, written after the step began, decides;
//!   without one within `patch.timeout` + 1 min the node fails.
//! * `Rebooting`: the record carries `bootIdBefore`; the agent reboots once for
//!   it. The node moves to `WaitingReady` when it goes NotReady, acknowledges or
//!   reports a new boot ID. Each of `Rebooting` and `WaitingReady` must finish
//!   within `reboot.timeout` of its own start.
//! * A reboot is confirmed only by a boot ID different from `bootIdBefore`
//!   **and** Ready; then `Settling` for `rollout.settle` (Ready throughout);
//!   then one write releases the node: the record and step label go, the done
//!   map gets `policy → revision`, and the node is uncordoned — unless it was
//!   unschedulable before sofort touched it (it is never uncordoned).

//!
//! # Rules for starting nodes
//!
//! * Selected nodes whose done map has this revision are done. With
//!   `reboot.when: IfRequired`, a node whose `sofort.dev/reboot-required` label
//!   is `false` is done without being touched; a node without the label waits
//!   for its agent to report.
//! * No start while the spec is invalid, the policy is paused, or more than
//!   `maxFailedNodes` nodes failed (phase Halted). Nodes in progress always
//!   finish, whatever the phase.
//! * Non-urgent: a start needs `now >= scheduledStart`, an open window outside
//!   any blackout, and at least `minWindowRemaining` left in it. Urgent skips
//!   these; the budget always holds.
//! * Groups go strictly one after another: the group worked on is the first (in
//!   order) that has a node in progress for this policy, else the first with a
//!   node still to do. A node that cannot start yet (NotReady, claimed by
//!   another policy, reboot need unknown) holds its group; the message names it.
//! * Budget: see [`crate::core::budget`]. NotReady nodes are never started.
//! * **Several policies**: a node whose record shows another policy with a step
//!   in progress is claimed by it. A record of another policy that is `Failed`,
//!   `Done` or of an older revision is not a claim. A **non-urgent** policy does
//!   not claim a node that an *active urgent* other policy (see [`Contender`])
//!   selects and has not finished for its revision: urgent policies go first.
//!   Urgent policies among themselves, and non-urgent among themselves, claim
//!   first come first served (the controller writes claims with the Node's
//!   resourceVersion, so only one wins).
//! * **Nodes joining later** (created or newly selected after the rollout
//!   began) are simply pending: they are done in their order position once the
//!   group being worked on is finished; the rollout completes only when they
//!   are done too. A node that stops being selected while in progress finishes.
//! * A new revision while a node is in progress: the node finishes under the
//!   revision it started with (its done map records that one) and is then
//!   pending for the new revision.
//! * To retry a failed node, remove its record (`kubectl annotate node NAME
//!   sofort.dev/record-`) or bump `spec.revision`.
//!
//! # The pipeline
//!
//! [`decide_indexed`] runs five phases, each a function of its own (in its
//! own file, with its unit tests) with a named input and output, so a rule
//! lives in one place:
//!
//! 1. `classify::classify`: where each node stands for this policy
//!    (`Classified`).
//! 2. `advance::advance_all`: the per-node state machine moves the nodes in
//!    progress (`Advanced`; one `Advance { action, record, wake }` per node).
//! 3. `gate::gates`: whether any node may start now: spec validity, failures,
//!    pause, lead time, windows and blackouts, and the budget (`Gates`). A new
//!    gate is one more check function there and one more `Closed` reason.
//! 4. `start::pick_starts`: which nodes start, in rollout order
//!    ([`crate::core::order::OrderKey`]), and what holds the others (`Starts`).
//! 5. `status::status`: the policy status and when to look again (`Outcome`).

mod action;
mod advance;
#[cfg(test)]
mod calendar_tests;
mod classify;
mod config;
mod gate;
#[cfg(test)]
mod health_tests;
mod index;
mod quiet;
mod start;
mod status;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
mod view;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::api::{PatchPolicy, PatchPolicySpec};
use crate::core::gates::evaluate::Observations;

pub use action::{Action, Decision};
pub use config::{Config, PATCH_REPORT_SLACK, RoundScope};
pub use index::NodeIndex;
pub use quiet::{
    TaintChange, drain_after, label_writes, labels_to_set, queued_nodes, taint_changes,
};
pub use view::{Contender, DrainState, NodeView};

/// What every phase knows of the decision being made.
struct Ctx<'a> {
    /// Policy name.
    name: &'a str,
    spec: &'a PatchPolicySpec,
    cfg: &'a Config,
    now: Timestamp,
    /// What the controller observed for the health gates; `None` where no
    /// one observes (the forecast), and then the health gates are not
    /// evaluated.
    obs: Option<&'a Observations>,
}

/// `t + d`, saturating at the end of time.
fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Decides what to do now. See the module docs for every rule.
pub fn decide(
    policy: &PatchPolicy,
    nodes: &[NodeView],
    others: &[Contender],
    now: Timestamp,
) -> Decision {
    let cfg = Config::from_spec(&policy.spec);
    decide_with(policy, &cfg, nodes, others, now)
}

/// [`decide`] with the health gates' observations.
pub fn decide_gated(
    policy: &PatchPolicy,
    nodes: &[NodeView],
    others: &[Contender],
    obs: &Observations,
    now: Timestamp,
) -> Decision {
    let cfg = Config::from_spec(&policy.spec);
    let index = NodeIndex::build(&policy.spec, nodes, false);
    decide_observed(policy, &cfg, &index, nodes, others, Some(obs), now)
}

/// [`decide`] with a spec parsed once.
pub fn decide_with(
    policy: &PatchPolicy,
    cfg: &Config,
    nodes: &[NodeView],
    others: &[Contender],
    now: Timestamp,
) -> Decision {
    let index = NodeIndex::build(&policy.spec, nodes, false);
    decide_indexed(policy, cfg, &index, nodes, others, now)
}

/// [`decide_with`] with the health gates' observations (`None`: not
/// evaluated).
pub fn decide_with_observed(
    policy: &PatchPolicy,
    cfg: &Config,
    nodes: &[NodeView],
    others: &[Contender],
    obs: Option<&Observations>,
    now: Timestamp,
) -> Decision {
    let index = NodeIndex::build(&policy.spec, nodes, false);
    decide_observed(policy, cfg, &index, nodes, others, obs, now)
}

/// [`decide_with`] over a prepared [`NodeIndex`] of the same `nodes` (one that
/// does not fit them is rebuilt).
pub fn decide_indexed(
    policy: &PatchPolicy,
    cfg: &Config,
    index: &NodeIndex,
    nodes: &[NodeView],
    others: &[Contender],
    now: Timestamp,
) -> Decision {
    decide_observed(policy, cfg, index, nodes, others, None, now)
}

/// [`decide_indexed`] with the health gates' observations (`None`: health
/// gates not evaluated, as in the forecast).
pub fn decide_observed(
    policy: &PatchPolicy,
    cfg: &Config,
    index: &NodeIndex,
    nodes: &[NodeView],
    others: &[Contender],
    obs: Option<&Observations>,
    now: Timestamp,
) -> Decision {
    if !index.fits(nodes) {
        let rebuilt = NodeIndex::build(&policy.spec, nodes, false);
        return decide_observed(policy, cfg, &rebuilt, nodes, others, obs, now);
    }
    let prev = policy.status.clone().unwrap_or_default();
    let ctx = Ctx {
        name: policy.metadata.name.as_deref().unwrap_or(""),
        spec: &policy.spec,
        cfg,
        now,
        obs,
    };
    let classified = classify::classify(&ctx, index, nodes);
    let advanced = advance::advance_all(&ctx, nodes, &classified);
    let gates = gate::gates(&gate::GateInput {
        ctx: &ctx,
        prev: &prev,
        classified: &classified,
        advanced: &advanced,
    });
    let starts = start::pick_starts(&start::StartInput {
        ctx: &ctx,
        index,
        nodes,
        others,
        classified: &classified,
        gates: &gates,
    });
    let first_start = advanced.actions.len();
    let outcome = status::status(&status::StatusInput {
        ctx: &ctx,
        prev: &prev,
        generation: policy.metadata.generation,
        index,
        nodes,
        classified: &classified,
        advanced: &advanced,
        gates: &gates,
        starts: &starts,
    });
    let mut actions = advanced.actions;
    actions.extend(starts.actions);
    Decision {
        actions,
        first_start,
        status: outcome.status,
        requeue_after: outcome.requeue_after,
    }
}
