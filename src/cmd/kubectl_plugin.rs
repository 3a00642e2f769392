//! The commands that make the binary useful as the kubectl plugin
//! `kubectl sofort` (installed as `kubectl-sofort`; see
//! `docs/kubectl-plugin.md`): `pause NAME`, `resume NAME` and `why NODE`.
//! `plan`, `status` and `validate` are the binary's own commands.
//!
//! `why` reads the policies and the nodes and explains with the pure
//! decision code ([`crate::core::rollout::decide`]) what the rollout will do
//! with the node and what holds it back: [`explain`] is pure.

use std::process::ExitCode;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::api::{PatchPolicy, RebootWhen, Step};
use crate::cmd::status::model::{self, Cell, clean};
use crate::core::order::{self, OrderKey};
use crate::core::rollout::{Action, Contender, NodeView, decide};
use crate::core::selector;
use crate::core::window::human_time;

/// A problem of `pause`, `resume` or `why`.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The cluster could not be reached or refused.
    #[error(
        "cannot talk to the cluster: {0}; check KUBECONFIG and that the PatchPolicy CRD is installed"
    )]
    Cluster(String),
    /// No such object.
    #[error("{0} not found; list them with `kubectl get {1}`")]
    NotFound(String, &'static str),
    /// The status could not be read.
    #[error(transparent)]
    Status(#[from] crate::cmd::status::StatusError),
}

fn runtime() -> Result<tokio::runtime::Runtime, PluginError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PluginError::Cluster(format!("cannot start the async runtime: {e}")))
}

fn report(r: Result<String, PluginError>) -> ExitCode {
    match r {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sets `spec.paused` of a PatchPolicy; returns what happens now, for people.
pub async fn set_paused(client: &Client, name: &str, paused: bool) -> Result<String, PluginError> {
    let api: Api<PatchPolicy> = Api::all(client.clone());
    let patch = serde_json::json!({"spec": {"paused": paused}});
    let p = match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(p) => p,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(PluginError::NotFound(
                format!("PatchPolicy {}", clean(name)),
                "patchpolicies",
            ));
        }
        Err(e) => return Err(PluginError::Cluster(e.to_string())),
    };
    let active = p.status.map(|s| s.active.len()).unwrap_or(0);
    Ok(if paused {
        format!(
            "PatchPolicy {} paused: no new node starts; {active} node(s) in progress finish. \
             Resume with `kubectl sofort resume {}`.\n",
            clean(name),
            clean(name)
        )
    } else {
        format!(
            "PatchPolicy {} resumed: nodes start again as its windows and budget allow.\n",
            clean(name)
        )
    })
}

/// `sofort pause NAME` / `sofort resume NAME`.
pub fn run_pause(name: &str, paused: bool) -> ExitCode {
    report(runtime().and_then(|rt| {
        rt.block_on(async {
            let client = Client::try_default()
                .await
                .map_err(|e| PluginError::Cluster(e.to_string()))?;
            set_paused(&client, name, paused).await
        })
    }))
}

fn step_text(s: Step) -> &'static str {
    match s {
        Step::Draining => "draining (evicting its pods)",
        Step::Patching => "running the patch command",
        Step::Rebooting => "asked to reboot",
        Step::WaitingReady => "rebooting, waiting for Ready with a new boot ID",
        Step::Settling => "back, settling before uncordon",
        Step::Pending => "pending",
        Step::Done => "done",
        Step::Failed => "failed",
    }
}

/// What `policy` does with `v` and why, in one line.
fn explain_one(
    p: &PatchPolicy,
    policies: &[PatchPolicy],
    v: &NodeView,
    views: &[NodeView],
    now: Timestamp,
) -> String {
    let name = p.metadata.name.as_deref().unwrap_or("");
    let spec = &p.spec;
    let zone = spec
        .maintenance_windows
        .first()
        .map(|w| w.time_zone.as_str());
    let head = format!(
        "PatchPolicy {} revision {}",
        clean(name),
        clean(&crate::core::round::effective_revision(p))
    );
    match model::cell_of(p, v) {
        Cell::Done => format!("{head}: done, the node is at this revision."),
        Cell::Skipped => {
            format!(
                "{head}: nothing to do, its agent reports no reboot required (reboot.when IfRequired)."
            )
        }
        Cell::Failed => {
            let reason = v
                .record
                .as_ref()
                .and_then(|r| r.reason.clone())
                .unwrap_or_else(|| "no reason recorded".into());
            format!(
                "{head}: failed: {}. To retry, remove the record (`kubectl annotate node {} sofort.dev/record-`) or bump spec.revision.",
                clean(&reason),
                clean(&v.name)
            )
        }
        Cell::Step(s) => {
            let since = v
                .record
                .as_ref()
                .map(|r| human_time(r.since, zone))
                .unwrap_or_default();
            format!(
                "{head}: in progress, {} since {since}; it finishes whatever the windows say.",
                step_text(s)
            )
        }
        Cell::OtherPolicy => {
            let other = v
                .record
                .as_ref()
                .map(|r| clean(&r.policy))
                .unwrap_or_default();
            format!(
                "{head}: waits, the node is in progress for PatchPolicy {other}; it starts after that one releases it."
            )
        }
        Cell::NotReady => format!(
            "{head}: waits, the node is NotReady; sofort never starts a NotReady node, and it holds its group."
        ),
        Cell::Pending => pending(p, policies, v, views, now, &head),
    }
}

fn pending(
    p: &PatchPolicy,
    policies: &[PatchPolicy],
    v: &NodeView,
    views: &[NodeView],
    now: Timestamp,
    head: &str,
) -> String {
    let name = p.metadata.name.as_deref().unwrap_or("");
    let spec = &p.spec;
    if let Some(e) = &v.record_error {
        return format!(
            "{head}: waits, its sofort.dev/record cannot be read ({}); fix or remove it.",
            clean(e)
        );
    }
    if spec.reboot.when == RebootWhen::IfRequired && v.reboot_required.is_none() {
        return format!("{head}: waits for its agent to report sofort.dev/reboot-required.");
    }
    let others: Vec<Contender> = policies
        .iter()
        .filter(|o| o.metadata.name.as_deref() != Some(name))
        .map(Contender::from_policy)
        .collect();
    let d = decide(p, views, &others, now);
    if d.actions[d.first_start..]
        .iter()
        .any(|a| matches!(a, Action::Claim { node, .. } if *node == v.name))
    {
        return format!("{head}: starts now: the controller claims it at its next decision.");
    }
    // Its place among the nodes still to do, in rollout order.
    let mut todo: Vec<(OrderKey<'_>, &str)> = views
        .iter()
        .filter(|n| {
            selector::selects_node(&spec.node_selector, &n.labels)
                && model::cell_of(p, n) == Cell::Pending
        })
        .map(|n| {
            (
                OrderKey::of(&spec.rollout.order, &n.name, &n.labels),
                n.name.as_str(),
            )
        })
        .collect();
    todo.sort();
    let place = todo
        .iter()
        .position(|(_, n)| *n == v.name)
        .map(|i| {
            format!(
                "number {} of {} still to do in rollout order",
                i + 1,
                todo.len()
            )
        })
        .unwrap_or_default();
    let group = order::group_of(&spec.rollout.order, &v.labels)
        .map(|g| format!(" (group {})", clean(g)))
        .unwrap_or_default();
    let why = d
        .status
        .message
        .as_deref()
        .map(clean)
        .unwrap_or_else(|| "no reason given".into());
    let paused = if spec.paused {
        format!(
            " The policy is paused: `kubectl sofort resume {}`.",
            clean(name)
        )
    } else {
        String::new()
    };
    format!("{head}: pending, {place}{group}. Now: {why}{paused}")
}

/// Explains, per policy that selects (or holds) the node, what sofort will
/// do with it and why it waits. Pure.
pub fn explain(
    node: &str,
    policies: &[PatchPolicy],
    nodes: &[Node],
    now: Timestamp,
) -> Option<String> {
    let views: Vec<NodeView> = nodes.iter().map(NodeView::from_node).collect();
    let v = views.iter().find(|v| v.name == node)?;
    let mut out = format!(
        "Node {}: {}, {}{}\n",
        clean(&v.name),
        if v.ready { "Ready" } else { "NotReady" },
        if v.unschedulable {
            "cordoned"
        } else {
            "schedulable"
        },
        match v.reboot_required {
            Some(true) => ", reboot required",
            Some(false) => ", no reboot required",
            None => "",
        }
    );
    let mut sorted: Vec<&PatchPolicy> = policies.iter().collect();
    sorted.sort_by(|a, b| {
        b.spec
            .urgent
            .cmp(&a.spec.urgent)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let mut any = false;
    for p in sorted {
        let name = p.metadata.name.as_deref().unwrap_or("");
        let holds = v.record.as_ref().is_some_and(|r| r.policy == name);
        if !holds && !selector::selects_node(&p.spec.node_selector, &v.labels) {
            continue;
        }
        any = true;
        out.push_str("  ");
        out.push_str(&explain_one(p, policies, v, &views, now));
        out.push('\n');
    }
    if !any {
        out.push_str("  No PatchPolicy selects this node: sofort leaves it alone.\n");
    }
    Some(out)
}

/// `sofort why NODE` against a cluster.
pub async fn why(client: &Client, node: &str) -> Result<String, PluginError> {
    let snap = crate::cmd::status::gather(client).await?;
    explain(node, &snap.policies, &snap.nodes, Timestamp::now())
        .ok_or_else(|| PluginError::NotFound(format!("Node {}", clean(node)), "nodes"))
}

/// `sofort why NODE`.
pub fn run_why(node: &str) -> ExitCode {
    report(runtime().and_then(|rt| {
        rt.block_on(async {
            let client = Client::try_default()
                .await
                .map_err(|e| PluginError::Cluster(e.to_string()))?;
            why(&client, node).await
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn node(name: &str, zone: &str, ready: bool) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"zone": zone, "role": "worker"}},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
                "nodeInfo": {"bootID": "b", "machineID": "m", "systemUUID": "u", "kernelVersion": "k",
                    "osImage": "o", "containerRuntimeVersion": "c", "kubeletVersion": "v",
                    "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
            },
        }))
        .expect("test node")
    }

    fn policy(name: &str, paused: bool) -> PatchPolicy {
        let mut spec = crate::api::PatchPolicySpec::new("r1");
        spec.paused = paused;
        spec.node_selector = LabelSelector {
            match_labels: Some([("role".to_string(), "worker".to_string())].into()),
            ..LabelSelector::default()
        };
        spec.rollout.order.group_by = Some("zone".into());
        PatchPolicy::new(name, spec)
    }

    fn now() -> Timestamp {
        "2026-11-30T10:00:00Z".parse().expect("instant")
    }

    #[test]
    fn a_pending_node_is_told_its_place_and_the_first_starts_now() {
        let nodes = [
            node("a1", "a", true),
            node("a2", "a", true),
            node("b1", "b", true),
        ];
        let p = [policy("p", false)];
        let first = explain("a1", &p, &nodes, now()).expect("node found");
        assert!(first.contains("starts now"), "{first}");
        let last = explain("b1", &p, &nodes, now()).expect("node found");
        assert!(last.contains("pending, number 3 of 3"), "{last}");
        assert!(last.contains("(group b)"), "{last}");
        assert!(explain("zz", &p, &nodes, now()).is_none());
    }

    #[test]
    fn paused_not_ready_and_unselected_nodes_say_so() {
        let nodes = [node("a1", "a", true), node("a2", "a", false)];
        let p = [policy("p", true)];
        let paused = explain("a1", &p, &nodes, now()).expect("node found");
        assert!(paused.contains("paused"), "{paused}");
        assert!(!paused.contains("starts now"), "{paused}");
        let down = explain("a2", &p, &nodes, now()).expect("node found");
        assert!(down.contains("NotReady"), "{down}");
        let mut other = node("x", "a", true);
        other.metadata.labels = Some([("role".to_string(), "db".to_string())].into());
        let none = explain("x", &p, &[other], now()).expect("node found");
        assert!(none.contains("No PatchPolicy selects this node"), "{none}");
    }
}
