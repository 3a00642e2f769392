//! What decide needs of the spec: the typed [`Spec`] of [`crate::core::spec`]
//! and its problems as text. Built once per spec ([`Config::from_parsed`]);
//! the controller keeps one per resourceVersion of a policy.

use std::ops::Deref;
use std::time::Duration;

use crate::api::PatchPolicySpec;
use crate::core::spec::{self, Parsed, Spec};

/// Slack given to the agent to report a patch result after the patch timeout.
pub const PATCH_REPORT_SLACK: Duration = Duration::from_secs(60);

/// The spec, parsed. Fields that fail to parse hold their defaults so nodes in
/// progress can finish; `errors` then holds every problem and no node starts.
/// Reads as the [`Spec`] it holds (`cfg.drain_timeout`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The typed spec.
    pub spec: Spec,
    /// Problems found, each `path: message`.
    pub errors: Vec<String>,
    /// A standing policy's current round: only its members are to do, and
    /// none starts before its earliest start. `None`: every selected node.
    pub round: Option<RoundScope>,
}

/// What decide needs of a round of a standing policy (see [`crate::core::round`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundScope {
    /// The round's members still present; other selected nodes count against
    /// the budget but are not to do.
    pub members: std::collections::BTreeSet<String>,
    /// No member starts before this instant (`minRoundInterval` after the
    /// previous round's start); `None` for an urgent round.
    pub not_before: Option<jiff::Timestamp>,
}

impl Deref for Config {
    type Target = Spec;

    fn deref(&self) -> &Spec {
        &self.spec
    }
}

impl Config {
    /// The config of a parsed spec.
    pub fn from_parsed(parsed: Parsed) -> Config {
        Config {
            errors: parsed.problems.iter().map(ToString::to_string).collect(),
            spec: parsed.spec,
            round: None,
        }
    }

    /// Parses `spec` with [`spec::parse`] (the rules only; the controller adds
    /// the CRD schema's bounds, see [`crate::cmd::validate::parse_spec`]).
    pub fn from_spec(spec: &PatchPolicySpec) -> Config {
        Config::from_parsed(spec::parse(spec))
    }
}
