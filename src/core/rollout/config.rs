//! The spec, parsed once per decision: [`Config::from_spec`].

use std::time::Duration;

use crate::api::PatchPolicySpec;
use crate::core::budget::max_unavailable;
use crate::core::gates::config::GatesConfig;
use crate::core::node_record::PatchRequest;
use crate::core::window::Schedule;
use crate::core::{duration, selector};

/// Slack given to the agent to report a patch result after the patch timeout.
pub const PATCH_REPORT_SLACK: Duration = Duration::from_secs(60);

/// The spec, parsed. Fields that fail to parse fall back to their defaults so
/// nodes in progress can finish; `errors` then holds every problem and no node starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// drain.timeout
    pub drain_timeout: Duration,
    /// reboot.timeout
    pub reboot_timeout: Duration,
    /// rollout.settle
    pub settle: Duration,
    /// patch command and timeout
    pub patch: Option<PatchRequest>,
    /// patch.timeout
    pub patch_timeout: Duration,
    /// announce.leadTime
    pub lead_time: Duration,
    /// rollout.minWindowRemaining or its default
    pub min_remaining: Duration,
    /// Windows and blackouts (always open when they failed to parse).
    pub schedule: Schedule,
    /// `spec.gates`, parsed (`None`: no gates, or they failed to parse).
    pub gates: Option<GatesConfig>,
    /// Problems found.
    pub errors: Vec<String>,
}

impl Config {
    /// Parses what decide needs from a spec.
    pub fn from_spec(spec: &PatchPolicySpec) -> Config {
        let mut errors = Vec::new();
        let mut dur = |field: &str, s: &str, default: u64| match duration::parse(s) {
            Ok(d) => d,
            Err(e) => {
                errors.push(format!("{field}: {e}"));
                Duration::from_secs(default)
            }
        };
        let drain_timeout = dur("drain.timeout", &spec.drain.timeout, 15 * 60);
        let reboot_timeout = dur("reboot.timeout", &spec.reboot.timeout, 20 * 60);
        let settle = dur("rollout.settle", &spec.rollout.settle, 120);
        let patch_timeout = spec.patch.as_ref().map_or(Duration::ZERO, |p| {
            dur("patch.timeout", &p.timeout, 30 * 60)
        });
        let lead_time = spec.announce.as_ref().map_or(Duration::ZERO, |a| {
            dur("announce.leadTime", &a.lead_time, 0)
        });
        let default_min = drain_timeout + reboot_timeout + settle + patch_timeout;
        let min_remaining = match &spec.rollout.min_window_remaining {
            Some(s) => dur("rollout.minWindowRemaining", s, default_min.as_secs()),
            None => default_min,
        };
        let schedule = match Schedule::new(&spec.maintenance_windows, &spec.blackouts) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e.to_string());
                Schedule::always_open()
            }
        };
        if let Err(e) = selector::check(&spec.node_selector) {
            errors.push(e.to_string());
        }
        if let Err(e) = max_unavailable(&spec.rollout.max_unavailable, 1) {
            errors.push(e.to_string());
        }
        if spec.revision.trim().is_empty() {
            errors.push(
                "revision is empty: set spec.revision to name the patch level, for example a date"
                    .into(),
            );
        }
        let patch = match &spec.patch {
            Some(p) if p.command.is_empty() => {
                errors.push(
                    "patch.command is empty: give the program and its arguments, or remove patch"
                        .into(),
                );
                None
            }
            Some(_) => Some(PatchRequest {
                timeout_seconds: patch_timeout.as_secs(),
            }),
            None => None,
        };
        let gates = spec
            .gates
            .as_ref()
            .and_then(|g| match GatesConfig::from_spec(g) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.extend(e);
                    None
                }
            });
        // The full validation knows everything parsing found and more (time
        // zones, windows too short for one node); its messages carry field paths.
        let problems = crate::cmd::validate::validate_spec(spec);
        if !problems.is_empty() {
            errors = problems.iter().map(ToString::to_string).collect();
        }
        Config {
            drain_timeout,
            reboot_timeout,
            settle,
            patch,
            patch_timeout,
            lead_time,
            min_remaining,
            schedule,
            gates,
            errors,
        }
    }
}
