//! The drainability pre-flight: which selected nodes could not be drained
//! now. For each node, its pods as `kubectl drain` would treat them
//! ([`crate::controller::drain::classify`]), PodDisruptionBudget arithmetic
//! ([`crate::core::gates::preflight`]) and a dry-run eviction (`dryRun: All`)
//! of each pod to evict, which the API server answers as it would a real one
//! without evicting anything. The result goes to status and the admins'
//! Events, never to customer notifications.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{EvictParams, ListParams, PostParams};
use kube::{Api, Client};

use crate::api::{PatchPolicySpec, PreflightStatus};
use crate::controller::drain::{Disposition, DrainSettings, classify};
use crate::core::gates::clean;
use crate::core::gates::pods::PodView;
use crate::core::gates::preflight::{PdbView, pdb_block, summary};

/// Nodes checked at most per run.
pub const MAX_NODES: usize = 500;
/// Blocked nodes listed in status at most.
pub const MAX_LISTED: usize = 20;

fn view(p: &Pod) -> PodView {
    PodView {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        labels: p.metadata.labels.clone().unwrap_or_default(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        phase: p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
        deleting: p.metadata.deletion_timestamp.is_some(),
    }
}

fn pdb_view(p: &PodDisruptionBudget) -> PdbView {
    PdbView {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        selector: p.spec.as_ref().and_then(|s| s.selector.clone()),
        allowed: p
            .status
            .as_ref()
            .map_or(0, |s| i64::from(s.disruptions_allowed)),
    }
}

/// Runs the pre-flight of revision `spec.revision` over `nodes`.
pub async fn run(
    client: &Client,
    evict_client: &Client,
    spec: &PatchPolicySpec,
    nodes: &[String],
    now: Timestamp,
) -> PreflightStatus {
    let pdbs: Vec<PdbView> = match Api::<PodDisruptionBudget>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items.iter().map(pdb_view).collect(),
        Err(e) => return failed(spec, now, &e.to_string()),
    };
    let settings = DrainSettings::from_spec(&spec.drain, 1, Duration::from_secs(1));
    let mut blocked = BTreeMap::new();
    let checked = nodes.len().min(MAX_NODES);
    for node in nodes.iter().take(MAX_NODES) {
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let pods = match Api::<Pod>::all(client.clone()).list(&lp).await {
            Ok(l) => l.items,
            Err(e) => return failed(spec, now, &e.to_string()),
        };
        if let Some(why) = node_block(evict_client, &pdbs, &pods, &settings).await {
            blocked.insert(node.clone(), why);
        }
    }
    PreflightStatus {
        checked_at: Time(now),
        revision: spec.revision.clone(),
        summary: summary(&blocked, checked),
        blocked: blocked
            .iter()
            .take(MAX_LISTED)
            .map(|(n, why)| format!("{}: {why}", clean(n)))
            .collect(),
    }
}

/// Why draining a node with `pods` would block now, if it would.
async fn node_block(
    evict_client: &Client,
    pdbs: &[PdbView],
    pods: &[Pod],
    settings: &DrainSettings,
) -> Option<String> {
    let mut to_evict = Vec::new();
    for p in pods {
        let v = view(p);
        match classify(p, settings) {
            Disposition::Refuse(reason) => {
                return Some(format!(
                    "pod {}/{} {reason}",
                    clean(&v.namespace),
                    clean(&v.name)
                ));
            }
            Disposition::Evict => to_evict.push(v),
            Disposition::Skip(_) => {}
        }
    }
    if let Some(why) = pdb_block(pdbs, &to_evict) {
        return Some(why);
    }
    for v in &to_evict {
        let api: Api<Pod> = Api::namespaced(evict_client.clone(), &v.namespace);
        let params = EvictParams {
            delete_options: None,
            post_options: PostParams {
                dry_run: true,
                ..PostParams::default()
            },
        };
        match api.evict(&v.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 429 || s.code == 500 => {
                return Some(format!(
                    "eviction of pod {}/{} refused: {}",
                    clean(&v.namespace),
                    clean(&v.name),
                    clean(&s.message)
                ));
            }
            Err(_) => {}
        }
    }
    None
}

fn failed(spec: &PatchPolicySpec, now: Timestamp, error: &str) -> PreflightStatus {
    PreflightStatus {
        checked_at: Time(now),
        revision: spec.revision.clone(),
        summary: format!("pre-flight could not run: {}", clean(error)),
        blocked: Vec::new(),
    }
}
