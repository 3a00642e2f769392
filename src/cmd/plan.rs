//! `sofort plan`: reads a policy and nodes (from files or the live cluster),
//! runs the forecast of [`crate::core::forecast`] and prints it as a table or
//! JSON. The simulation itself is pure and lives in the core; this module holds
//! the file parsing, the table and the kube client.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use serde::Deserialize;

use crate::api::{PatchPolicy, PreflightStatus};
use crate::cli::{OutputFormat, PlanArgs};
use crate::controller::drain::DrainSettings;
use crate::controller::gates::preflight::{self, nodes_to_check};
use crate::core::duration;
use crate::core::forecast::{Assumptions, Forecast, assumed_views, forecast_views_with};
use crate::core::rollout::Config;
use crate::core::round;
use crate::core::window::human_time;

/// A problem running `sofort plan`.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Reading from the cluster.
    #[error(
        "cannot read from the cluster: {0}; check KUBECONFIG and that the PatchPolicy CRD is installed"
    )]
    Cluster(String),
    /// Reading a file.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// YAML that is not what was expected.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A bad flag value.
    #[error("{0}")]
    Usage(String),
}

/// Reads the first PatchPolicy of a (multi-document) YAML text.
pub fn parse_policy(text: &str, path: &str) -> Result<PatchPolicy, PlanError> {
    let perr = |message: String| PlanError::Parse {
        path: path.to_string(),
        message,
    };
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| perr(format!("not valid YAML: {e}")))?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("PatchPolicy") {
            return serde_yaml::from_value(value).map_err(|e| {
                perr(format!(
                    "not a valid PatchPolicy: {e}; check it with `sofort validate -f {path}`"
                ))
            });
        }
    }
    Err(perr("no document with kind: PatchPolicy found".into()))
}

/// Reads Node objects from a `v1 List` (or a NodeList, or one Node).
pub fn parse_nodes(text: &str, path: &str) -> Result<Vec<Node>, PlanError> {
    let perr = |message: String| PlanError::Parse {
        path: path.to_string(),
        message,
    };
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| perr(format!("not valid YAML: {e}")))?;
    let items = match value.get("kind").and_then(|k| k.as_str()) {
        Some("Node") => vec![value.clone()],
        Some("List") | Some("NodeList") => match value.get("items") {
            Some(serde_yaml::Value::Sequence(s)) => s.clone(),
            Some(serde_yaml::Value::Null) | None => Vec::new(),
            Some(_) => return Err(perr("items is not a list".into())),
        },
        _ => {
            return Err(perr(
                "expected a v1 List of Node objects, as `kubectl get nodes -o yaml` prints".into(),
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            if item
                .get("kind")
                .and_then(|k| k.as_str())
                .is_some_and(|k| k != "Node")
            {
                return Err(perr(format!("items[{i}] is not a Node")));
            }
            serde_yaml::from_value::<Node>(item)
                .map_err(|e| perr(format!("items[{i}] is not a valid Node: {e}")))
        })
        .collect()
}

fn short_time(t: Option<Timestamp>, zone: Option<&str>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let full = human_time(t, zone);
            // Drop the zone name; the header states it once.
            full.rsplit_once(' ')
                .map_or(full.clone(), |(a, _)| a.to_string())
        }
    }
}

/// Renders the forecast as a table.
pub fn render_table(f: &Forecast, zone: Option<&str>) -> String {
    let z = zone.unwrap_or("UTC");
    let mut out = String::new();
    out.push_str(&format!(
        "PatchPolicy {} revision {}: {} nodes; forecast from {} (times in {z})\n",
        f.policy,
        f.revision,
        f.nodes.len(),
        short_time(Some(f.now), zone)
    ));
    if let Some(s) = f.scheduled_start {
        out.push_str(&format!("scheduled start: {}\n", short_time(Some(s), zone)));
    }
    let gw = f
        .nodes
        .iter()
        .map(|r| r.group.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(1)
        .max(5);
    let nw = f
        .nodes
        .iter()
        .map(|r| r.node.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "{:<5}  {:<nw$}  {:<gw$}  {:<20}  {:<20}  RESULT\n",
        "ORDER", "NODE", "GROUP", "START", "DONE"
    ));
    for r in &f.nodes {
        out.push_str(&format!(
            "{:<5}  {:<nw$}  {:<gw$}  {:<20}  {:<20}  {}\n",
            r.order,
            r.node,
            r.group.as_deref().unwrap_or("-"),
            short_time(r.start, zone),
            short_time(r.done, zone),
            r.result
        ));
    }
    match (&f.completion, &f.problem) {
        (Some(c), _) => out.push_str(&format!(
            "predicted completion: {}\n",
            short_time(Some(*c), zone)
        )),
        (None, Some(p)) => out.push_str(&format!("not predicted to complete: {p}\n")),
        (None, None) => out.push_str("not predicted to complete\n"),
    }
    out
}

/// The pre-flight lines under the table (nothing without a pre-flight).
pub fn render_preflight(p: Option<&PreflightStatus>) -> String {
    let Some(p) = p else {
        return String::new();
    };
    let mut out = format!("preflight: {}\n", p.summary);
    for b in &p.blocked {
        out.push_str(&format!("  {b}\n"));
    }
    out
}

/// The forecast as JSON, with the pre-flight under `preflight`.
fn json_output(
    f: &Forecast,
    preflight: Option<&PreflightStatus>,
    round: Option<&crate::api::RoundStatus>,
) -> Result<String, PlanError> {
    let mut v = serde_json::to_value(f).map_err(|e| PlanError::Usage(e.to_string()))?;
    if let (Some(r), Some(obj)) = (round, v.as_object_mut()) {
        let r = serde_json::to_value(r).map_err(|e| PlanError::Usage(e.to_string()))?;
        obj.insert("round".into(), r);
    }
    if let (Some(p), Some(obj)) = (preflight, v.as_object_mut()) {
        let p = serde_json::to_value(p).map_err(|e| PlanError::Usage(e.to_string()))?;
        obj.insert("preflight".into(), p);
    }
    Ok(serde_json::to_string_pretty(&v).map_err(|e| PlanError::Usage(e.to_string()))? + "\n")
}

/// Reads the Pods and PodDisruptionBudgets of a `v1 List` (other kinds are
/// ignored).
pub fn parse_pods(
    text: &str,
    path: &str,
) -> Result<(Vec<Pod>, Vec<PodDisruptionBudget>), PlanError> {
    let perr = |message: String| PlanError::Parse {
        path: path.to_string(),
        message,
    };
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| perr(format!("not valid YAML: {e}")))?;
    let items = match value.get("items") {
        Some(serde_yaml::Value::Sequence(s)) => s.clone(),
        Some(serde_yaml::Value::Null) | None => Vec::new(),
        Some(_) => return Err(perr("items is not a list".into())),
    };
    let (mut pods, mut pdbs) = (Vec::new(), Vec::new());
    for (i, item) in items.into_iter().enumerate() {
        match item.get("kind").and_then(|k| k.as_str()) {
            Some("Pod") => pods.push(
                serde_yaml::from_value::<Pod>(item)
                    .map_err(|e| perr(format!("items[{i}] is not a valid Pod: {e}")))?,
            ),
            Some("PodDisruptionBudget") => pdbs.push(
                serde_yaml::from_value::<PodDisruptionBudget>(item).map_err(|e| {
                    perr(format!(
                        "items[{i}] is not a valid PodDisruptionBudget: {e}"
                    ))
                })?,
            ),
            _ => {}
        }
    }
    Ok((pods, pdbs))
}

/// The pre-flight from files: what `kubectl drain` would refuse and PDB
/// arithmetic, without dry-run evictions.
pub fn offline_preflight(
    spec: &crate::api::PatchPolicySpec,
    nodes: &[String],
    pods: &[Pod],
    pdbs: &[PodDisruptionBudget],
    now: Timestamp,
) -> PreflightStatus {
    let pdbs: Vec<_> = pdbs.iter().map(preflight::pdb_view).collect();
    let by_node: Vec<(String, Vec<Pod>)> = nodes
        .iter()
        .take(preflight::MAX_NODES)
        .map(|n| {
            let on: Vec<Pod> = pods
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(n))
                .cloned()
                .collect();
            (n.clone(), on)
        })
        .collect();
    let settings = DrainSettings::from_spec(&spec.drain, 1, Duration::from_secs(1));
    let (blocked, _) = preflight::offline(&pdbs, &by_node, &settings);
    let mut status = preflight::report(spec, now, &blocked, by_node.len());
    status.summary = format!("{} (PDB arithmetic, no dry-run evictions)", status.summary);
    status
}

fn read(path: &Path) -> Result<String, PlanError> {
    std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse_flag_duration(flag: &str, s: &str) -> Result<Duration, PlanError> {
    duration::parse(s).map_err(|e| PlanError::Usage(format!("--{flag}: {e}")))
}

/// Runs `sofort plan`: exit 0 on success, 1 on bad files, 2 on bad usage.
pub fn run_cli(args: &PlanArgs, wall_clock: Timestamp) -> ExitCode {
    if args.file.is_none() && args.policy.is_none() {
        eprintln!(
            "error: give the policy: -f POLICY.yaml, or --policy NAME to read it from the cluster"
        );
        return ExitCode::from(2);
    }
    let run = || -> Result<String, PlanError> {
        let now = match &args.now {
            Some(s) => s
                .parse::<Timestamp>()
                .map_err(|e| PlanError::Usage(format!("--now {s:?} is not an RFC 3339 instant ({e}); use for example 2026-11-27T09:00:00+01:00")))?,
            None => wall_clock,
        };
        let a = Assumptions {
            drain: parse_flag_duration("drain", &args.drain)?,
            reboot: parse_flag_duration("reboot", &args.reboot)?,
            patch: parse_flag_duration("patch", &args.patch)?,
        };
        let policy = match (&args.file, &args.policy) {
            (Some(file), _) => parse_policy(&read(file)?, &file.display().to_string())?,
            (None, Some(name)) => live::policy(name)?,
            (None, None) => {
                return Err(PlanError::Usage(
                    "-f POLICY.yaml or --policy NAME is required".into(),
                ));
            }
        };
        let nodes = match &args.nodes {
            Some(path) => parse_nodes(&read(path)?, &path.display().to_string())?,
            None => live::nodes()?,
        };
        // Parsed as the controller parses it (the rules and the CRD's bounds).
        let cfg = Config::from_parsed(crate::cmd::validate::parse_spec(&policy.spec));
        let views = assumed_views(&policy, &nodes, a);
        // A standing policy: forecast its current or next round.
        let (policy, cfg, round) = if round::is_standing(&policy.spec) {
            let plain: Vec<_> = views.iter().map(|(v, _)| v.clone()).collect();
            let (plan, at) = round::to_forecast(&policy, &cfg, &plain, now);
            let (p, c) = round::effective(&policy, &cfg, &plan);
            (p, c, Some((round::describe(&plan, at), plan)))
        } else {
            (policy, cfg, None)
        };
        let check = nodes_to_check(
            &policy.name_any(),
            &policy.spec,
            views.iter().map(|(v, _)| v),
        );
        let preflight = match (&args.nodes, &args.pods) {
            (None, _) => Some(live::preflight(&policy.spec, &check, now)?),
            (Some(_), Some(path)) => {
                let (pods, pdbs) = parse_pods(&read(path)?, &path.display().to_string())?;
                Some(offline_preflight(&policy.spec, &check, &pods, &pdbs, now))
            }
            (Some(_), None) => None,
        };
        let mut f = forecast_views_with(&policy, &cfg, views, now);
        if let Some(members) = cfg.round.as_ref().map(|r| &r.members) {
            f.nodes.retain(|r| members.contains(&r.node));
        }
        let zone = policy
            .spec
            .maintenance_windows
            .first()
            .map(|w| w.time_zone.as_str())
            .filter(|z| !z.is_empty() && jiff::tz::TimeZone::get(z).is_ok());
        let round_line = round
            .as_ref()
            .map(|(line, _)| format!("{line}\n"))
            .unwrap_or_default();
        Ok(match args.output {
            OutputFormat::Table => {
                round_line + &render_table(&f, zone) + &render_preflight(preflight.as_ref())
            }
            OutputFormat::Svg => crate::cmd::timeline::render_svg(&f, &policy.spec, zone),
            OutputFormat::Html => crate::cmd::timeline::render_html(&f, &policy.spec, zone),
            OutputFormat::Json => json_output(
                &f,
                preflight.as_ref(),
                round.as_ref().and_then(|(_, p)| p.round.as_ref()),
            )?,
        })
    };
    match run() {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e @ PlanError::Usage(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reading the policy and the nodes (with their current progress) from the
/// cluster the kubeconfig points at.
mod live {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::ListParams;
    use kube::{Api, Client};

    use super::PlanError;
    use crate::api::PatchPolicy;

    fn block_on<T>(
        f: impl std::future::Future<Output = Result<T, PlanError>>,
    ) -> Result<T, PlanError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PlanError::Cluster(e.to_string()))?
            .block_on(f)
    }

    async fn client() -> Result<Client, PlanError> {
        Client::try_default()
            .await
            .map_err(|e| PlanError::Cluster(e.to_string()))
    }

    pub(super) fn policy(name: &str) -> Result<PatchPolicy, PlanError> {
        block_on(async {
            let api: Api<PatchPolicy> = Api::all(client().await?);
            api.get(name)
                .await
                .map_err(|e| PlanError::Cluster(format!("PatchPolicy {name}: {e}")))
        })
    }

    /// The pre-flight against the cluster, dry-run evictions included.
    pub(super) fn preflight(
        spec: &crate::api::PatchPolicySpec,
        nodes: &[String],
        now: jiff::Timestamp,
    ) -> Result<crate::api::PreflightStatus, PlanError> {
        block_on(async {
            let c = client().await?;
            Ok(crate::controller::gates::preflight::run(&c, &c, spec, nodes, now).await)
        })
    }

    pub(super) fn nodes() -> Result<Vec<Node>, PlanError> {
        block_on(async {
            let api: Api<Node> = Api::all(client().await?);
            api.list(&ListParams::default())
                .await
                .map(|l| l.items)
                .map_err(|e| PlanError::Cluster(format!("listing nodes: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preflight_from_files_names_the_pdb_and_the_unmanaged_pod() {
        let policy = parse_policy(
            include_str!("../../examples/nightly-workers.yaml"),
            "nightly-workers.yaml",
        )
        .unwrap();
        let nodes = parse_nodes(include_str!("../../examples/nodes-12.yaml"), "nodes").unwrap();
        let (pods, pdbs) = parse_pods(include_str!("../../examples/pods-12.yaml"), "pods").unwrap();
        assert_eq!((pods.len(), pdbs.len()), (4, 1));
        let a = Assumptions {
            drain: Duration::from_secs(300),
            reboot: Duration::from_secs(240),
            patch: Duration::from_secs(300),
        };
        let views = assumed_views(&policy, &nodes, a);
        let check = nodes_to_check(
            &policy.name_any(),
            &policy.spec,
            views.iter().map(|(v, _)| v),
        );
        assert_eq!(check.len(), 12);
        let now: Timestamp = "2026-11-27T09:00:00Z".parse().unwrap();
        let p = offline_preflight(&policy.spec, &check, &pods, &pdbs, now);
        assert_eq!(
            render_preflight(Some(&p)),
            "preflight: 3 nodes would block: PDB shop/db allows 0 disruptions \
             (PDB arithmetic, no dry-run evictions)\n  \
             worker-a1: PDB shop/db allows 0 disruptions\n  \
             worker-b1: PDB shop/db allows 0 disruptions\n  \
             worker-c1: pod default/debug-shell has no controller that would recreate it; \
             set spec.drain.force: true to evict it anyway\n"
        );
        assert_eq!(render_preflight(None), "");
        let bad = parse_pods("items: 3", "p.yaml").unwrap_err().to_string();
        assert_eq!(bad, "p.yaml: items is not a list");
    }
}
