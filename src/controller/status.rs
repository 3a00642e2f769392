//! When a policy's status is written: never when unchanged, at once when
//! anything but progress changed, at most once per [`PROGRESS_INTERVAL`] when
//! only progress changed.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::api::PatchPolicyStatus;

/// A status that differs from the stored one only in progress (counts, nodes
/// in flight, messages) is written at most this often; any other change —
/// phase, revision, generation, times, failures, notifications, condition
/// states — is written at once. At 50 nodes in flight this saves a status
/// write on most passes of the loop.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What to do with a pass's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusWrite {
    /// Nothing changed.
    Unchanged,
    /// Only progress changed and the last write is recent: write it on a
    /// pass after this long.
    Defer(Duration),
    /// Write now.
    Now,
}

/// Whether `new` differs from `old` only in progress details.
pub(crate) fn progress_only(old: Option<&PatchPolicyStatus>, new: &PatchPolicyStatus) -> bool {
    let Some(old) = old else { return false };
    let strip = |s: &PatchPolicyStatus| {
        let mut s = s.clone();
        s.nodes = None;
        s.active.clear();
        s.message = None;
        for c in &mut s.conditions {
            c.message.clear();
        }
        s
    };
    strip(old) == strip(new)
}

/// When each policy's status was last written by this process.
#[derive(Default)]
pub(crate) struct StatusThrottle {
    written: HashMap<String, Instant>,
}

impl StatusThrottle {
    /// Decides about `new` against the stored `old`. Status equality ignores
    /// nothing: decide keeps timestamps stable when nothing changed, so an
    /// unchanged status is not written again. `must_write`: new notification
    /// records go into this write, which may not wait.
    pub(crate) fn decide(
        &self,
        policy: &str,
        old: Option<&PatchPolicyStatus>,
        new: &PatchPolicyStatus,
        must_write: bool,
        now: Instant,
    ) -> StatusWrite {
        if old == Some(new) {
            return StatusWrite::Unchanged;
        }
        let since = self
            .written
            .get(policy)
            .map(|t| now.saturating_duration_since(*t));
        match since {
            Some(e) if e < PROGRESS_INTERVAL && !must_write && progress_only(old, new) => {
                StatusWrite::Defer(PROGRESS_INTERVAL - e)
            }
            _ => StatusWrite::Now,
        }
    }

    /// A write of `policy`'s status starts at `at`.
    pub(crate) fn writing(&mut self, policy: &str, at: Instant) {
        self.written.insert(policy.to_string(), at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ActiveNode, NodeCounts, Phase, Step};

    fn progressing(updated: u32) -> PatchPolicyStatus {
        PatchPolicyStatus {
            phase: Some(Phase::Progressing),
            revision: Some("r1".into()),
            message: Some(format!("{updated}/4 updated")),
            nodes: Some(NodeCounts {
                total: 4,
                updated,
                ..NodeCounts::default()
            }),
            ..PatchPolicyStatus::default()
        }
    }

    #[test]
    fn only_progress_changes_may_wait_for_the_next_status_write() {
        let old = progressing(1);
        let mut progress = progressing(2);
        progress.active = vec![ActiveNode {
            node: "w-1".into(),
            step: Step::Draining,
            since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-27T00:00:00Z".parse().unwrap(),
            ),
        }];
        assert!(progress_only(Some(&old), &progress));
        let mut completed = progress.clone();
        completed.phase = Some(Phase::Completed);
        assert!(!progress_only(Some(&old), &completed));
        let mut failed = progress.clone();
        failed.failed = vec![crate::api::FailedNode {
            node: "w-2".into(),
            reason: "drain timeout".into(),
        }];
        assert!(!progress_only(Some(&old), &failed));
        let mut bumped = progress;
        bumped.revision = Some("r2".into());
        assert!(!progress_only(Some(&old), &bumped));
        assert!(!progress_only(None, &old));
    }

    #[test]
    fn progress_is_written_at_most_once_a_second_and_the_rest_at_once() {
        let t0 = Instant::now();
        let mut t = StatusThrottle::default();
        let (one, two) = (progressing(1), progressing(2));
        assert_eq!(
            t.decide("p", Some(&one), &one, false, t0),
            StatusWrite::Unchanged
        );
        // Never written by this process: at once.
        assert_eq!(t.decide("p", Some(&one), &two, false, t0), StatusWrite::Now);
        t.writing("p", t0);
        let later = t0 + Duration::from_millis(300);
        assert_eq!(
            t.decide("p", Some(&one), &two, false, later),
            StatusWrite::Defer(Duration::from_millis(700))
        );
        // Notification records or a phase change do not wait.
        assert_eq!(
            t.decide("p", Some(&one), &two, true, later),
            StatusWrite::Now
        );
        let mut done = two.clone();
        done.phase = Some(Phase::Completed);
        assert_eq!(
            t.decide("p", Some(&one), &done, false, later),
            StatusWrite::Now
        );
        // Another policy has its own interval.
        assert_eq!(
            t.decide("q", Some(&one), &two, false, later),
            StatusWrite::Now
        );
        let after = t0 + PROGRESS_INTERVAL;
        assert_eq!(
            t.decide("p", Some(&one), &two, false, after),
            StatusWrite::Now
        );
    }
}
