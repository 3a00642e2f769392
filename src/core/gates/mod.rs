//! Health gates, the pure part: what the observations the controller gathers
//! (alerts, PromQL results, Alertmanager silences, pods, workload objects)
//! mean for the rollout. No client and no clock here; the controller fetches,
//! [`cache`] bounds how often, and the rollout's gates phase uses the
//! [`Verdict`]s.
//!
//! Fail safe: an observation that failed, or one older than its bound, closes
//! its gate, and the reason says so.
//!
//! - [`alerts`]: firing alerts by alertname regex and ignored labels,
//!   Alertmanager silences and their matchers.
//! - [`query`]: a PromQL result blocks while it has any series.
//! - [`pods`]: blocking pods, per node.
//! - [`workload`]: kstatus-style health of a workload object.
//! - [`cache`]: at most one check per gate per interval.
//! - [`config`]: `spec.gates`, parsed; [`evaluate`]: every gate over one set
//!   of observations.

pub mod alerts;
pub mod cache;
pub mod config;
pub mod evaluate;
pub mod pods;
pub mod preflight;
pub mod query;
pub mod workload;

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

/// One gate of a policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GateId {
    /// `gates.prometheus.alerts`.
    Alerts,
    /// `gates.prometheus.queries[]`, by name.
    Query(String),
    /// `gates.blockingPods`.
    BlockingPods,
    /// `gates.workloads`.
    Workloads,
}

impl GateId {
    /// The gate's kind, for the `gate` label of `sofort_gate_checks_total`
    /// (bounded: four values; Alertmanager's silences count as `silences`).
    pub fn kind(&self) -> &'static str {
        match self {
            GateId::Alerts => "alerts",
            GateId::Query(_) => "query",
            GateId::BlockingPods => "blockingPods",
            GateId::Workloads => "workloads",
        }
    }
}

impl fmt::Display for GateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateId::Query(name) => write!(f, "query {name}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// What a gate says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Work may go on.
    Open,
    /// Work waits; the reason is for status and Events (already cleaned).
    Closed(String),
}

impl Verdict {
    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        matches!(self, Verdict::Open)
    }

    /// The reason, when closed.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Open => None,
            Verdict::Closed(r) => Some(r),
        }
    }
}

/// An observation and when it was made. `Err` holds a cleaned description
/// of what failed (never a URL or credential).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed<T> {
    /// When the observation was made.
    pub at: Timestamp,
    /// What was seen, or why nothing could be seen.
    pub result: Result<T, String>,
}

impl<T> Observed<T> {
    /// The observation if it is usable at `now` (not failed, not older than
    /// `max_age`), else the closed verdict that says why.
    pub fn fresh(&self, what: &str, now: Timestamp, max_age: Duration) -> Result<&T, Verdict> {
        let age = now.duration_since(self.at);
        let too_old = age.as_secs_f64() > max_age.as_secs_f64();
        match &self.result {
            Err(e) => Err(Verdict::Closed(format!("{what} check failed: {e}"))),
            Ok(_) if too_old => Err(Verdict::Closed(format!(
                "{what}: no fresh check since {}",
                hhmm(self.at)
            ))),
            Ok(v) => Ok(v),
        }
    }
}

/// What to do about a gate closed longer than `gates.timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnGateTimeout {
    /// Stop starting nodes and tell the admins (phase Stalled).
    #[default]
    Halt,
    /// Go on as if the gate were open.
    Continue,
}

/// Where a closed gate stands against its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutState {
    /// Still within the timeout (or no timeout): wait.
    Waiting,
    /// Timed out with `onTimeout: Halt`.
    Halted,
    /// Timed out with `onTimeout: Continue`: treat as open.
    Overridden,
}

/// Where a gate closed since `since` stands at `now`.
pub fn timeout_state(
    since: Timestamp,
    now: Timestamp,
    timeout: Option<Duration>,
    on_timeout: OnGateTimeout,
) -> TimeoutState {
    let Some(timeout) = timeout else {
        return TimeoutState::Waiting;
    };
    let closed_for = now.duration_since(since).as_secs_f64();
    if closed_for <= timeout.as_secs_f64() {
        TimeoutState::Waiting
    } else if on_timeout == OnGateTimeout::Halt {
        TimeoutState::Halted
    } else {
        TimeoutState::Overridden
    }
}

/// `HH:MM` in UTC, for reasons (`since 22:04`).
pub fn hhmm(t: Timestamp) -> String {
    let dt = t.to_zoned(jiff::tz::TimeZone::UTC);
    format!("{:02}:{:02}", dt.hour(), dt.minute())
}

/// Longest text taken from a monitoring system or a pod into a reason.
pub const MAX_FIELD: usize = 80;

/// Text from outside (an alert label, a pod name) made fit for a status
/// message: printable characters only, at most [`MAX_FIELD`] of them.
pub fn clean(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FIELD)
        .collect();
    if text
        .chars()
        .filter(|c| !c.is_control())
        .nth(MAX_FIELD)
        .is_some()
    {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn failed_or_stale_observations_close_the_gate() {
        let at = ts("2026-11-27T22:04:00Z");
        let ok = Observed {
            at,
            result: Ok(3u32),
        };
        let max = Duration::from_secs(60);
        assert_eq!(ok.fresh("alerts", ts("2026-11-27T22:05:00Z"), max), Ok(&3));
        let stale = ok.fresh("alerts", ts("2026-11-27T22:05:01Z"), max);
        assert_eq!(
            stale,
            Err(Verdict::Closed("alerts: no fresh check since 22:04".into()))
        );
        let failed: Observed<u32> = Observed {
            at,
            result: Err("connection refused".into()),
        };
        assert_eq!(
            failed.fresh("Prometheus alerts", at, max),
            Err(Verdict::Closed(
                "Prometheus alerts check failed: connection refused".into()
            ))
        );
    }

    #[test]
    fn timeout_halts_or_continues_only_after_it_passed() {
        let since = ts("2026-11-27T22:00:00Z");
        let t = Some(Duration::from_secs(30 * 60));
        let at = |s| ts(s);
        use OnGateTimeout::*;
        assert_eq!(
            timeout_state(since, at("2026-11-27T22:30:00Z"), t, Halt),
            TimeoutState::Waiting
        );
        assert_eq!(
            timeout_state(since, at("2026-11-27T22:30:01Z"), t, Halt),
            TimeoutState::Halted
        );
        assert_eq!(
            timeout_state(since, at("2026-11-27T22:30:01Z"), t, Continue),
            TimeoutState::Overridden
        );
        assert_eq!(
            timeout_state(since, at("2027-11-27T22:30:01Z"), None, Halt),
            TimeoutState::Waiting
        );
    }

    #[test]
    fn clean_drops_control_characters_and_bounds_length() {
        assert_eq!(clean("a\nb\u{1b}[31mc"), "ab[31mc");
        let long = "x".repeat(200);
        let c = clean(&long);
        assert_eq!(c.chars().count(), MAX_FIELD + 1);
        assert!(c.ends_with('…'));
        assert_eq!(clean(&"y".repeat(MAX_FIELD)), "y".repeat(MAX_FIELD));
    }
}
