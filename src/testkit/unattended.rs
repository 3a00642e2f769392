//! `sofort sandbox --unattended`: a standing policy (`trigger:
//! RebootRequired`) at sandbox scale, shown in two rounds.
//!
//! Some nodes are asked to need a reboot (the `sandbox.sofort.dev/needs-reboot`
//! annotation, as `kubectl annotate` would set it); once their agents report
//! it, the standing policy is applied and plans round 1 from them. While
//! round 1 is announced, more nodes start to need a reboot: they wait for
//! round 2, which starts `minRoundInterval` after round 1 started. The run
//! is narrated as plain lines and closed with a summary of the rounds,
//! checked by the independent [`Observer`].

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use super::observer::{Observations, Observer, WatchedPolicy};
use super::{Cluster, SandboxRunError, demo_policy};
use crate::api::{
    Advisory, Announce, NotifySpec, PatchPolicy, PatchPolicyStatus, Phase, RoundPhase, RoundStatus,
    Trigger,
};
use crate::core::node_record::{REBOOT_REQUIRED_LABEL, STEP_LABEL};

/// Name of the standing policy the demo applies.
pub const POLICY: &str = "demo-unattended";
/// How often the demo's agents check their host's sentinel.
pub const AGENT_CHECK: Duration = Duration::from_secs(1);
/// The policy's `announce.leadTime`.
pub const LEAD_TIME: &str = "5s";
/// The policy's `rollout.minRoundInterval`.
pub const MIN_ROUND_INTERVAL: &str = "20s";
/// Most time the demo waits for its two rounds.
const DEADLINE: Duration = Duration::from_secs(300);
/// How long the demo waits for the agents to report the first due nodes.
const REPORT_WAIT: Duration = Duration::from_secs(30);
/// Time between two looks at the cluster.
const POLL: Duration = Duration::from_millis(250);

/// The standing policy of the demo: every worker, zone by zone, two at a
/// time, a window open all day, rounds announced [`LEAD_TIME`] ahead and
/// [`MIN_ROUND_INTERVAL`] apart.
pub fn unattended_policy(now: jiff::Timestamp) -> PatchPolicy {
    let mut p = demo_policy(false, now);
    p.metadata.name = Some(POLICY.into());
    p.spec.revision = String::new();
    p.spec.trigger = Trigger::RebootRequired;
    p.spec.announce = Some(Announce {
        lead_time: LEAD_TIME.into(),
    });
    p.spec.rollout.min_round_interval = Some(MIN_ROUND_INTERVAL.into());
    p.spec.notify = Some(NotifySpec {
        status_page: true,
        public_title: Some("Web hosting".into()),
        advisory: Some(Advisory {
            summary: "Routine security updates".into(),
            details: None,
            release: Default::default(),
        }),
        ..Default::default()
    });
    p
}

/// The nodes that need a reboot from the start (round 1) and those that
/// start to need one while round 1 is announced (round 2), from the sorted
/// node names: every fourth from the first (at most 3), and every fourth
/// from the third (at most 2).
pub fn pick_nodes(names: &[String]) -> (Vec<String>, Vec<String>) {
    let mut sorted = names.to_vec();
    sorted.sort();
    let every = |from: usize, most: usize| -> Vec<String> {
        sorted
            .iter()
            .skip(from)
            .step_by(4)
            .take(most)
            .cloned()
            .collect()
    };
    (every(0, 3), every(2, 2))
}

fn hms(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.strftime("%H:%M:%S").to_string()
}

fn opt_hms(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    t.map_or_else(|| "--:--:--".to_string(), hms)
}

/// Turns what the policy status and the nodes show into lines for someone
/// watching: rounds announced, started and completed, each member's steps,
/// the nodes waiting for the next round.
#[derive(Debug, Default)]
pub struct Narrator {
    /// Every round seen, as last seen, in order.
    pub rounds: Vec<RoundStatus>,
    steps: BTreeMap<String, String>,
    next_due: u32,
}

/// The line for round `r` completed, seen at `at`.
fn completed_line(at: &str, r: &RoundStatus) -> String {
    let mut line = format!(
        "{at} round {} completed at {}",
        r.id,
        opt_hms(r.completed_at.as_ref())
    );
    if !r.gone.is_empty() {
        line.push_str(&format!(" (deleted, not counted: {})", r.gone.join(", ")));
    }
    line
}

impl Narrator {
    /// The lines for what changed since the last call.
    pub fn update(
        &mut self,
        status: Option<&PatchPolicyStatus>,
        steps: &BTreeMap<String, String>,
        now: jiff::Timestamp,
    ) -> Vec<String> {
        let at = now.strftime("%H:%M:%S").to_string();
        let mut out = Vec::new();
        let round = status.and_then(|s| s.round.clone());
        // A round can complete and give way to the next between two looks;
        // the history keeps it. The current round is narrated below.
        let current = round.as_ref().map(|r| r.id.as_str());
        for h in status.map_or(&[][..], |s| &s.history[..]) {
            let Some(r) = self.rounds.iter_mut().find(|r| {
                r.id == h.id && r.phase != RoundPhase::Completed && Some(r.id.as_str()) != current
            }) else {
                continue;
            };
            r.phase = RoundPhase::Completed;
            r.completed_at = Some(h.completed_at.clone());
            out.push(completed_line(&at, r));
        }
        if let Some(r) = round {
            let prev = self.rounds.iter().position(|p| p.id == r.id);
            let before = prev.and_then(|i| self.rounds.get(i)).map(|p| p.phase);
            if before.is_none() {
                out.push(format!(
                    "{at} round {} announced: {} node{} ({}){}, scheduled start {}",
                    r.id,
                    r.nodes.len(),
                    if r.nodes.len() == 1 { "" } else { "s" },
                    r.nodes.join(", "),
                    if r.fleet_wide { ", fleet-wide" } else { "" },
                    opt_hms(r.scheduled_start.as_ref()),
                ));
            }
            let reached = |p: RoundPhase| {
                rank(r.phase) >= rank(p) && before.is_none_or(|b| rank(b) < rank(p))
            };
            if reached(RoundPhase::Running) {
                out.push(format!(
                    "{at} round {} running since {}",
                    r.id,
                    opt_hms(r.started_at.as_ref())
                ));
            }
            if reached(RoundPhase::Completed) {
                out.push(completed_line(&at, &r));
            }
            match prev {
                Some(i) => {
                    if let Some(slot) = self.rounds.get_mut(i) {
                        *slot = r;
                    }
                }
                None => self.rounds.push(r),
            }
        }
        for (node, step) in steps {
            if self.steps.get(node) != Some(step) {
                out.push(format!("{at}   {node:<10} {step}"));
            }
        }
        self.steps = steps.clone();
        let next = status.and_then(|s| s.next_round.as_ref());
        let due = next.map_or(0, |n| n.due);
        if due != self.next_due && due > 0 {
            out.push(format!(
                "{at} next round: {due} node{} due, earliest start {}",
                if due == 1 { "" } else { "s" },
                opt_hms(next.and_then(|n| n.earliest_start.as_ref())),
            ));
        }
        self.next_due = due;
        out
    }

    /// Rounds seen completed.
    pub fn completed(&self) -> usize {
        self.rounds
            .iter()
            .filter(|r| r.phase == RoundPhase::Completed)
            .count()
    }
}

fn rank(p: RoundPhase) -> u8 {
    match p {
        RoundPhase::Scheduled => 0,
        RoundPhase::Running => 1,
        RoundPhase::Completed => 2,
    }
}

/// How the demo ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Both rounds completed.
    Done,
    /// The policy halted.
    Halted(String),
    /// The rounds did not complete in time.
    TimedOut,
}

/// The closing summary: each round with its members and times, the reboots
/// against the nodes that needed one, the budget and the safety rules.
pub fn summary_lines(
    ending: &Ending,
    rounds: &[RoundStatus],
    needed: &BTreeSet<String>,
    obs: &Observations,
) -> (Vec<String>, bool) {
    let mut out = vec![String::new(), "summary".to_string()];
    out.push(match ending {
        Ending::Done => format!("  rounds:                {} completed", rounds.len()),
        Ending::Halted(m) => format!("  rounds:                halted: {m}"),
        Ending::TimedOut => format!(
            "  rounds:                not completed within {} s",
            DEADLINE.as_secs()
        ),
    });
    for r in rounds {
        out.push(format!(
            "    {:<13} {:?}: {}",
            r.id,
            r.phase,
            if r.nodes.is_empty() {
                "no nodes".to_string()
            } else {
                r.nodes.join(", ")
            }
        ));
        out.push(format!(
            "    {:<13} scheduled {}  started {}  completed {}",
            "",
            opt_hms(r.scheduled_start.as_ref()),
            opt_hms(r.started_at.as_ref()),
            opt_hms(r.completed_at.as_ref()),
        ));
    }
    let starts: Vec<jiff::Timestamp> = rounds
        .iter()
        .filter_map(|r| r.started_at.as_ref().map(|t| t.0))
        .collect();
    if let [a, b, ..] = starts.as_slice() {
        out.push(format!(
            "  round starts apart:    {:.1} s (minRoundInterval {MIN_ROUND_INTERVAL})",
            b.duration_since(*a).as_secs_f64()
        ));
    }
    let rebooted: BTreeSet<String> = obs
        .reboots
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(n, _)| n.clone())
        .collect();
    let once = obs.reboots.values().all(|c| *c <= 1);
    let exact = rebooted == *needed && once;
    out.push(format!(
        "  nodes rebooted:        {} of {} seen ({}): {}",
        rebooted.len(),
        obs.nodes_seen,
        rebooted.iter().cloned().collect::<Vec<_>>().join(", "),
        if exact {
            "exactly those that needed it, once each"
        } else {
            "NOT exactly those that needed it, once each"
        }
    ));
    out.push(format!(
        "  max unavailable seen:  {} (maxUnavailable 2)",
        obs.max_unavailable_seen
            .values()
            .max()
            .copied()
            .unwrap_or(0)
    ));
    if obs.violations.is_empty() {
        out.push("  safety rules:          held (independent observer, 0 violations)".into());
    } else {
        out.push("  safety rules:          BROKEN".into());
        for v in &obs.violations {
            out.push(format!("    - {v}"));
        }
    }
    let ok = *ending == Ending::Done && exact && obs.violations.is_empty();
    (out, ok)
}

/// Asks the simulated host of each of `nodes` to need a reboot, as
/// `kubectl annotate node NAME sandbox.sofort.dev/needs-reboot=true` does.
async fn annotate(cluster: &Cluster, nodes: &[String]) -> Result<(), SandboxRunError> {
    let api: Api<Node> = Api::all(cluster.client.clone());
    for n in nodes {
        let patch = serde_json::json!({
            "metadata": {"annotations": {sofort_sandbox::NEEDS_REBOOT_ANNOTATION: "true"}}
        });
        api.patch(n, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        println!(
            "  kubectl annotate node {n} {}=true",
            sofort_sandbox::NEEDS_REBOOT_ANNOTATION
        );
    }
    Ok(())
}

/// The step label of every node that has one, and the nodes reporting
/// reboot-required.
async fn node_states(
    cluster: &Cluster,
) -> Result<(BTreeMap<String, String>, BTreeSet<String>), SandboxRunError> {
    let nodes = Api::<Node>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await?;
    let mut steps = BTreeMap::new();
    let mut due = BTreeSet::new();
    for n in &nodes.items {
        let name = n.name_any();
        let labels = n.metadata.labels.as_ref();
        if let Some(step) = labels.and_then(|l| l.get(STEP_LABEL)) {
            steps.insert(name.clone(), crate::cmd::status::model::clean(step));
        }
        if labels
            .and_then(|l| l.get(REBOOT_REQUIRED_LABEL))
            .map(String::as_str)
            == Some("true")
        {
            due.insert(name);
        }
    }
    Ok((steps, due))
}

/// Runs the unattended demo on a cluster whose controller and agents run;
/// returns the exit code for `--exit-when-done` (success: both rounds
/// completed, exactly the nodes that needed it rebooted once each, no
/// safety rule broken).
pub async fn demo(cluster: &Cluster) -> Result<ExitCode, SandboxRunError> {
    let names = cluster.sandbox.node_names();
    let (first, late) = pick_nodes(&names);
    if first.is_empty() || late.is_empty() {
        return Err(SandboxRunError::View(
            "--unattended needs at least 3 nodes".into(),
        ));
    }
    let policy = unattended_policy(jiff::Timestamp::now());
    let observer = Observer::start(
        cluster.client.clone(),
        vec![WatchedPolicy {
            name: POLICY.into(),
            selector: policy.spec.node_selector.clone(),
            max_unavailable: 2,
        }],
    )
    .await;
    println!(
        "\nunattended patching: {} nodes install updates and now need a reboot",
        first.len()
    );
    annotate(cluster, &first).await?;
    let wanted: BTreeSet<String> = first.iter().cloned().collect();
    let deadline = Instant::now() + REPORT_WAIT;
    loop {
        let (_, due) = node_states(cluster).await?;
        if wanted.is_subset(&due) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(SandboxRunError::View(format!(
                "the agents did not report reboot-required within {} s",
                REPORT_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    println!("  their agents report {REBOOT_REQUIRED_LABEL}=true");
    let api: Api<PatchPolicy> = Api::all(cluster.client.clone());
    api.create(&PostParams::default(), &policy).await?;
    println!(
        "applied PatchPolicy {POLICY}: trigger RebootRequired (no revision), rounds announced {LEAD_TIME} ahead, at least {MIN_ROUND_INTERVAL} from start to start, 2 nodes at a time\n"
    );

    let mut narrator = Narrator::default();
    let mut late_asked = false;
    let deadline = Instant::now() + DEADLINE;
    let ending = loop {
        // A refused read is retried at the next look, until the deadline.
        let (p, (steps, _)) = match (api.get(POLICY).await, node_states(cluster).await) {
            (Ok(p), Ok(n)) => (p, n),
            (Err(e), _) | (_, Err(SandboxRunError::Api(e))) => {
                tracing::warn!(error = %e, "reading the demo's policy or nodes failed; retrying");
                if Instant::now() >= deadline {
                    break Ending::TimedOut;
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
            (_, Err(e)) => return Err(e),
        };
        let status = p.status.as_ref();
        for l in narrator.update(status, &steps, jiff::Timestamp::now()) {
            println!("{l}");
        }
        if !late_asked && narrator.rounds.len() == 1 && narrator.completed() == 0 {
            late_asked = true;
            let id = narrator
                .rounds
                .first()
                .map(|r| r.id.clone())
                .unwrap_or_default();
            println!(
                "{} {} more node{} now need{} a reboot; round {id} is already announced, so they wait for the next round",
                jiff::Timestamp::now().strftime("%H:%M:%S"),
                late.len(),
                if late.len() == 1 { "" } else { "s" },
                if late.len() == 1 { "s" } else { "" },
            );
            annotate(cluster, &late).await?;
        }
        if narrator.completed() >= 2 {
            break Ending::Done;
        }
        if let Some(s) = status
            && s.phase == Some(Phase::Halted)
        {
            break Ending::Halted(
                s.message
                    .as_deref()
                    .map(crate::cmd::status::model::clean)
                    .unwrap_or_default(),
            );
        }
        if Instant::now() >= deadline {
            break Ending::TimedOut;
        }
        tokio::time::sleep(POLL).await;
    };
    let obs = observer.stop();
    let needed: BTreeSet<String> = first.iter().chain(late.iter()).cloned().collect();
    let (lines, ok) = summary_lines(&ending, &narrator.rounds, &needed, &obs);
    for l in lines {
        println!("{l}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{HistoryEntry, NextRoundStatus};

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn round(id: &str, nodes: &[&str], phase: RoundPhase) -> RoundStatus {
        RoundStatus {
            id: id.into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            phase,
            scheduled_start: Some(Time(ts("2026-12-02T10:00:05Z"))),
            started_at: (phase != RoundPhase::Scheduled).then(|| Time(ts("2026-12-02T10:00:06Z"))),
            completed_at: (phase == RoundPhase::Completed)
                .then(|| Time(ts("2026-12-02T10:00:20Z"))),
            gone: Vec::new(),
            fleet_wide: false,
        }
    }

    fn status(r: RoundStatus, due: u32) -> PatchPolicyStatus {
        PatchPolicyStatus {
            round: Some(r),
            next_round: Some(NextRoundStatus {
                earliest_start: Some(Time(ts("2026-12-02T10:00:26Z"))),
                due,
                revision: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn picks_round_one_and_late_nodes_apart() {
        let names: Vec<String> = (1..=12).map(|i| format!("worker-{i:02}")).collect();
        let (first, late) = pick_nodes(&names);
        assert_eq!(first, ["worker-01", "worker-05", "worker-09"]);
        assert_eq!(late, ["worker-03", "worker-07"]);
        let (first, late) = pick_nodes(&names[..2]);
        assert_eq!(first, ["worker-01"]);
        assert!(late.is_empty());
    }

    #[test]
    fn narrates_each_round_once_per_phase_and_the_waiting_nodes() {
        let mut n = Narrator::default();
        let now = ts("2026-12-02T10:00:00Z");
        let none = BTreeMap::new();
        let l = n.update(
            Some(&status(
                round("r1-20261202", &["a", "b"], RoundPhase::Scheduled),
                0,
            )),
            &none,
            now,
        );
        assert_eq!(
            l,
            ["10:00:00 round r1-20261202 announced: 2 nodes (a, b), scheduled start 10:00:05"]
        );
        let l = n.update(
            Some(&status(
                round("r1-20261202", &["a", "b"], RoundPhase::Scheduled),
                1,
            )),
            &none,
            now,
        );
        assert_eq!(
            l,
            ["10:00:00 next round: 1 node due, earliest start 10:00:26"]
        );
        let steps: BTreeMap<String, String> = [("a".to_string(), "Draining".to_string())].into();
        let l = n.update(
            Some(&status(
                round("r1-20261202", &["a", "b"], RoundPhase::Running),
                1,
            )),
            &steps,
            now,
        );
        assert_eq!(
            l,
            [
                "10:00:00 round r1-20261202 running since 10:00:06",
                "10:00:00   a          Draining"
            ]
        );
        // Nothing changed: nothing printed.
        let same = status(round("r1-20261202", &["a", "b"], RoundPhase::Running), 1);
        assert!(n.update(Some(&same), &steps, now).is_empty());
        // A round first seen completed is announced, running and completed.
        let l = n.update(
            Some(&status(
                round("r2-20261202", &["c"], RoundPhase::Completed),
                0,
            )),
            &steps,
            now,
        );
        assert_eq!(l.len(), 3, "{l:?}");
        assert!(
            l[2].contains("round r2-20261202 completed at 10:00:20"),
            "{l:?}"
        );
        assert_eq!(n.completed(), 1);
        assert_eq!(n.rounds.len(), 2);
    }

    /// Round 1 completed and round 2 was announced between two looks:
    /// round 1 is narrated completed from the history, before round 2.
    #[test]
    fn a_round_completed_between_two_looks_is_taken_from_the_history() {
        let mut n = Narrator::default();
        let now = ts("2026-12-02T10:00:00Z");
        let none = BTreeMap::new();
        let r1 = round("r1-20261202", &["a"], RoundPhase::Running);
        // Announced, running, one node due for the next round.
        assert_eq!(n.update(Some(&status(r1, 1)), &none, now).len(), 3);
        let mut st = status(round("r2-20261202", &["b"], RoundPhase::Scheduled), 0);
        st.history = vec![HistoryEntry {
            id: "r1-20261202".into(),
            urgent: false,
            started_at: Some(Time(ts("2026-12-02T10:00:06Z"))),
            completed_at: Time(ts("2026-12-02T10:00:20Z")),
            nodes: 1,
            failed: 0,
        }];
        let l = n.update(Some(&st), &none, now);
        assert_eq!(
            l,
            [
                "10:00:00 round r1-20261202 completed at 10:00:20",
                "10:00:00 round r2-20261202 announced: 1 node (b), scheduled start 10:00:05",
            ]
        );
        assert_eq!(n.completed(), 1);
        // Seen again: nothing new.
        assert!(n.update(Some(&st), &none, now).is_empty());
    }

    #[test]
    fn the_summary_fails_on_a_reboot_not_needed_or_a_missing_round() {
        let rounds = vec![
            round("r1-20261202", &["a"], RoundPhase::Completed),
            round("r2-20261202", &["b"], RoundPhase::Completed),
        ];
        let needed: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let mut obs = Observations {
            reboots: [
                ("a".to_string(), 1),
                ("b".to_string(), 1),
                ("c".to_string(), 0),
            ]
            .into(),
            nodes_seen: 3,
            ..Default::default()
        };
        let (lines, ok) = summary_lines(&Ending::Done, &rounds, &needed, &obs);
        assert!(ok, "{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("2 of 3 seen (a, b): exactly")),
            "{lines:#?}"
        );
        let (_, ok) = summary_lines(&Ending::TimedOut, &rounds, &needed, &obs);
        assert!(!ok);
        obs.reboots.insert("c".into(), 1);
        let (lines, ok) = summary_lines(&Ending::Done, &rounds, &needed, &obs);
        assert!(!ok);
        assert!(
            lines.iter().any(|l| l.contains("NOT exactly")),
            "{lines:#?}"
        );
        obs.reboots.insert("c".into(), 0);
        obs.violations.push("node a rebooted 2 times".into());
        let (_, ok) = summary_lines(&Ending::Done, &rounds, &needed, &obs);
        assert!(!ok);
    }
}
