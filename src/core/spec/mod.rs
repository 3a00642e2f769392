//! The spec, parsed once: [`parse`] turns a [`PatchPolicySpec`] into a typed
//! [`Spec`] (durations with their defaults, the compiled [`Schedule`], the
//! budget, the order keys, the selectors) plus **every** problem, each with its
//! field path and a hint that says how to fix it.
//!
//! This is the one place the rules of a spec live. `sofort validate`, the
//! controller (once per resourceVersion of a policy) and `sofort plan` all go
//! through it; the rollout's [`crate::core::rollout::Config`] is built from
//! its result. What the CRD's schema already bounds (lengths, list sizes,
//! number ranges) is checked on top of this by the schema walk of
//! [`crate::cmd::validate`], which the controller and `sofort plan` add.
//!
//! A field that does not parse falls back to its default in [`Spec`], so the
//! nodes in progress can finish under an invalid spec; the problems then stop
//! every new start.
//!
//! # Where a rule goes
//!
//! - a rule about one field, or about fields together: `rules` (one check
//!   function per part of the spec, called from [`parse`]);
//! - label keys, values and DNS names: `names`;
//! - windows and blackouts: parsed by [`Schedule::parse`] (the only parser of
//!   a time of day, a time zone and a blackout's order); `rules` turns its
//!   errors into problems;
//! - a default: a constant in [`crate::api`], used by serde and here.

mod names;
mod rules;

use std::fmt;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{OrderSpec, PatchPolicy, PatchPolicySpec};
use crate::core::budget::MaxUnavailable;
use crate::core::gates::config::GatesConfig;
use crate::core::node_record::PatchRequest;
use crate::core::window::Schedule;

pub use names::{
    check_during_label_key, check_label_key, check_label_value, is_dns_label, is_dns_subdomain,
};
pub use rules::suggest_time_zone;

/// One problem in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path such as `spec.maintenanceWindows[0].timeZone`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A problem at `path`.
pub fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// The spec, typed. Every value is usable: a field that failed to parse holds
/// its default (and [`Parsed::problems`] says why).
#[derive(Debug, Clone)]
pub struct Spec {
    /// `drain.timeout` (default [`crate::api::DEFAULT_DRAIN_TIMEOUT`]).
    pub drain_timeout: Duration,
    /// `reboot.timeout` (default [`crate::api::DEFAULT_REBOOT_TIMEOUT`]).
    pub reboot_timeout: Duration,
    /// `rollout.settle` (default [`crate::api::DEFAULT_SETTLE`]).
    pub settle: Duration,
    /// What the record of a node at step `Patching` carries; `None` without
    /// `spec.patch` (or with an empty command).
    pub patch: Option<PatchRequest>,
    /// `patch.timeout` (default [`crate::api::DEFAULT_PATCH_TIMEOUT`]); zero without `spec.patch`.
    pub patch_timeout: Duration,
    /// `announce.leadTime`; zero without `spec.announce`.
    pub lead_time: Duration,
    /// `rollout.minRoundInterval`; zero without it.
    pub min_round_interval: Duration,
    /// `rollout.minWindowRemaining`, or drain + reboot + settle + patch timeouts.
    pub min_remaining: Duration,
    /// Windows and blackouts (always open when any of them failed to parse).
    pub schedule: Schedule,
    /// `rollout.maxUnavailable` (1 when it failed to parse).
    pub max_unavailable: MaxUnavailable,
    /// `rollout.order`: the group and sort label keys.
    pub order: OrderSpec,
    /// `nodeSelector`.
    pub node_selector: LabelSelector,
    /// `drain.podSelector`.
    pub pod_selector: Option<LabelSelector>,
    /// `gates`, parsed (`None`: no gates, or they have problems).
    pub gates: Option<GatesConfig>,
    /// `rollout.nodeLabels.during` (empty when it has problems).
    pub during_labels: std::collections::BTreeMap<String, String>,
    /// `rollout.nodeLabels.waitAfterSet` (zero by default).
    pub wait_after_set: Duration,
}

/// The result of [`parse`].
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The typed spec.
    pub spec: Spec,
    /// Every problem found; empty when the spec is valid.
    pub problems: Vec<Problem>,
}

impl Parsed {
    /// True when no problem was found.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    /// Adds problems found elsewhere (the CRD schema's bounds), skipping a
    /// path already reported: the first message about a field says most.
    pub fn add_problems(&mut self, more: impl IntoIterator<Item = Problem>) {
        let mut seen: std::collections::BTreeSet<String> =
            self.problems.iter().map(|p| p.path.clone()).collect();
        for p in more {
            if seen.insert(p.path.clone()) {
                self.problems.push(p);
            }
        }
    }
}

/// Parses and checks a spec: the typed values and every problem.
pub fn parse(spec: &PatchPolicySpec) -> Parsed {
    let mut out = Vec::new();
    rules::revision(
        &mut out,
        &spec.revision,
        spec.trigger == crate::api::Trigger::RebootRequired,
    );
    rules::selector(&mut out, "spec.nodeSelector", &spec.node_selector);
    let windows = rules::windows(&mut out, spec);
    let lead_time = spec.announce.as_ref().map_or(Duration::ZERO, |a| {
        rules::duration(&mut out, "spec.announce.leadTime", &a.lead_time, true, "0s").value
    });
    let max_unavailable = rules::max_unavailable(&mut out, &spec.rollout.max_unavailable);
    let min_round_interval = spec
        .rollout
        .min_round_interval
        .as_deref()
        .map_or(Duration::ZERO, |d| {
            rules::duration(&mut out, "spec.rollout.minRoundInterval", d, true, "0s").value
        });
    let settle = rules::duration(
        &mut out,
        "spec.rollout.settle",
        &spec.rollout.settle,
        true,
        crate::api::DEFAULT_SETTLE,
    );
    let min_remaining = spec
        .rollout
        .min_window_remaining
        .as_deref()
        .map(|d| rules::duration(&mut out, "spec.rollout.minWindowRemaining", d, true, "0s"));
    rules::order(&mut out, &spec.rollout.order);
    let drain = rules::drain(&mut out, &spec.drain);
    let reboot = rules::duration(
        &mut out,
        "spec.reboot.timeout",
        &spec.reboot.timeout,
        false,
        crate::api::DEFAULT_REBOOT_TIMEOUT,
    );
    let (patch, patch_timeout) = rules::patch(&mut out, spec.patch.as_ref());
    if let Some(n) = &spec.notify {
        rules::notify(&mut out, spec, n);
    }
    let gates = spec
        .gates
        .as_ref()
        .and_then(|g| match GatesConfig::from_spec(g) {
            Ok(c) => Some(c),
            Err(problems) => {
                out.extend(problems);
                None
            }
        });
    let (during_labels, wait_after_set) = rules::node_labels(&mut out, spec);
    let default_min =
        drain.value + reboot.value + settle.value + patch_timeout.value + wait_after_set;
    // A routine rollout whose windows are all too short can never start a node.
    if windows.ok && !spec.urgent && !spec.maintenance_windows.is_empty() {
        let needed = match &min_remaining {
            Some(m) => m.ok.then_some(m.value),
            None => (drain.ok && reboot.ok && settle.ok && patch_timeout.ok).then_some(default_min),
        };
        if let Some(needed) = needed {
            rules::windows_fit(&mut out, spec, needed, min_remaining.is_some());
        }
    }
    let min_remaining = match &min_remaining {
        Some(m) if m.parsed => m.value,
        _ => default_min,
    };
    Parsed {
        spec: Spec {
            drain_timeout: drain.value,
            reboot_timeout: reboot.value,
            settle: settle.value,
            patch,
            patch_timeout: patch_timeout.value,
            lead_time,
            min_round_interval,
            min_remaining,
            schedule: windows.schedule,
            max_unavailable,
            order: spec.rollout.order.clone(),
            node_selector: spec.node_selector.clone(),
            pod_selector: spec.drain.pod_selector.clone(),
            gates,
            during_labels,
            wait_after_set,
        },
        problems: out,
    }
}

/// Every problem of a whole PatchPolicy object: its metadata, then its spec.
pub fn policy_problems(policy: &PatchPolicy) -> Vec<Problem> {
    let mut out = rules::metadata(policy);
    out.extend(parse(&policy.spec).problems);
    out
}

#[cfg(test)]
mod tests;
