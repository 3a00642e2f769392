//! The controller's RBAC in the chart equals the calls the controller makes.
//!
//! The real `sofort controller` binary runs against the sandbox API server
//! with its own bearer token, through a scenario that makes it do everything
//! it can do: leader election, a rollout whose drains evict pods, a pod that
//! no eviction can move (two PodDisruptionBudgets cover it) so the drain times
//! out and `drain.onTimeout: Force` deletes it, a webhook notification
//! whose URL is in a Secret, a workloads health gate over one workload of
//! each `apps` kind, and a second revision whose identical node
//! Events the Recorder patches into series. The sandbox's request log gives every API call
//! of that token. The sandbox enforces the rendered chart's RBAC (its
//! authorizer evaluates API group, resource and subresource, verb, namespace
//! of a Role and resourceNames as the real one does), so a call the rules do
//! not allow is refused with 403 and shows in the log as such; the test
//! requires none to be refused and the set of (API group, resource, verb)
//! granted to equal the set used.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};
use sofort::api::{
    Advisory, GatesSpec, NotifySpec, OnTimeout, PatchPolicy, PatchPolicySpec, Phase, SecretKeyRef,
    Webhook, WebhookFormat, WorkloadGate,
};
use sofort::cli::{Cli, Command as Sub};
use sofort::testkit::Cluster;
use sofort_sandbox::{
    DurationRange, NodeGroup, PdbSpec, RequestRecord, SandboxConfig, Scenario, SimDuration,
    Workload,
};

use super::{POD_NAME, argv, documents};

/// The values case whose RBAC is checked: the defaults plus pod deletion
/// (opt-in) turn on everything the scenario uses (leader election, pod
/// deletion, webhook Secrets in the release namespace).
const CASE: &str = "pod-delete";
const ADMIN_TOKEN: &str = "admin-token";
const WEBHOOK_SECRET: &str = "statuspage";

/// One rule of a Role or ClusterRole bound to the controller.
struct Grant {
    source: String,
    rule: PolicyRule,
}

impl Grant {
    /// (API group, resource, verb) triples the rule grants.
    fn triples(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for g in self.rule.api_groups.iter().flatten() {
            for res in self.rule.resources.iter().flatten() {
                for v in &self.rule.verbs {
                    out.push((g.clone(), res.clone(), v.clone()));
                }
            }
        }
        out
    }
}

fn resource_of(r: &RequestRecord) -> String {
    if r.subresource.is_empty() {
        r.resource.clone()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    }
}

fn triple(r: &RequestRecord) -> (String, String, String) {
    (r.group.clone(), resource_of(r), r.verb.clone())
}

fn show((g, res, v): &(String, String, String)) -> String {
    let g = if g.is_empty() { "\"\"" } else { g };
    format!("{g} {res} {v}")
}

/// Every rule the rendered chart binds to the controller's ServiceAccount,
/// and the controller Deployment (for its arguments).
fn controller_grants(case: &str) -> (Vec<Grant>, Deployment) {
    let docs = documents(case);
    let deployment: Deployment = docs
        .iter()
        .find(|(_, d)| d["kind"] == "Deployment")
        .map(|(_, d)| serde_json::from_value(d.clone()).unwrap())
        .expect("controller Deployment");
    let namespace = deployment.metadata.namespace.clone().unwrap();
    let sa = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.service_account_name.clone())
        .expect("controller serviceAccountName");
    (bound_grants(case, &docs, &namespace, &sa), deployment)
}

/// Every rule the rendered `docs` bind to ServiceAccount `namespace/sa`.
fn bound_grants(case: &str, docs: &[(String, Value)], namespace: &str, sa: &str) -> Vec<Grant> {
    let of_kind = |kind: &str| -> Vec<Value> {
        docs.iter()
            .filter(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| d.clone())
            .collect()
    };
    let binds_controller = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(namespace)
        })
    };
    let cluster_roles: Vec<ClusterRole> = of_kind("ClusterRole")
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let roles: Vec<Role> = of_kind("Role")
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let mut grants = Vec::new();
    for b in of_kind("ClusterRoleBinding") {
        let b: ClusterRoleBinding = serde_json::from_value(b).unwrap();
        if !binds_controller(&b.subjects) {
            continue;
        }
        assert_eq!(b.role_ref.kind, "ClusterRole");
        let role = cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str()))
            .unwrap_or_else(|| panic!("ClusterRole {} is not in the chart", b.role_ref.name));
        for rule in role.rules.iter().flatten() {
            grants.push(Grant {
                source: format!("ClusterRole {}", b.role_ref.name),
                rule: rule.clone(),
            });
        }
    }
    for b in of_kind("RoleBinding") {
        let b: RoleBinding = serde_json::from_value(b).unwrap();
        if !binds_controller(&b.subjects) {
            continue;
        }
        let ns = b.metadata.namespace.clone().unwrap();
        assert_eq!(
            b.role_ref.kind, "Role",
            "{sa} gets cluster roles only cluster-wide"
        );
        let role = roles
            .iter()
            .find(|r| {
                r.metadata.name.as_deref() == Some(b.role_ref.name.as_str())
                    && r.metadata.namespace.as_deref() == Some(ns.as_str())
            })
            .unwrap_or_else(|| panic!("Role {ns}/{} is not in the chart", b.role_ref.name));
        for rule in role.rules.iter().flatten() {
            grants.push(Grant {
                source: format!("Role {ns}/{}", b.role_ref.name),
                rule: rule.clone(),
            });
        }
    }
    assert!(!grants.is_empty(), "case {case}: nothing bound to {sa}");
    grants
}

/// Two workers; `web` drains by eviction, `db` is covered by two
/// PodDisruptionBudgets, so the eviction API refuses it and only the forced
/// drain moves it. A StatefulSet, a DaemonSet and a bare ReplicaSet join
/// `web` in the policy's workloads gate.
fn scenario() -> Scenario {
    let mut s = Scenario::empty();
    s.speed = 50.0;
    s.timing.reboot = DurationRange {
        min: SimDuration(Duration::from_secs(20)),
        max: SimDuration(Duration::from_secs(30)),
    };
    s.timing.pod_start = DurationRange::fixed(Duration::from_secs(5));
    s.nodes = vec![NodeGroup {
        name_prefix: Some("w".into()),
        count: 2,
        roles: vec!["worker".into()],
        ..NodeGroup::default()
    }];
    let pdb = PdbSpec {
        max_unavailable: Some(json!(1)),
        ..PdbSpec::default()
    };
    s.workloads = vec![
        Workload {
            kind: "Deployment".into(),
            name: "web".into(),
            namespace: "shop".into(),
            replicas: 2,
            pdb: Some(pdb.clone()),
            ..Workload::default()
        },
        Workload {
            kind: "Deployment".into(),
            name: "db".into(),
            namespace: "shop".into(),
            replicas: 1,
            pdb: Some(pdb),
            ..Workload::default()
        },
        Workload {
            kind: "StatefulSet".into(),
            name: "queue".into(),
            namespace: "shop".into(),
            replicas: 1,
            ..Workload::default()
        },
        Workload {
            kind: "DaemonSet".into(),
            name: "agent".into(),
            namespace: "shop".into(),
            ..Workload::default()
        },
    ];
    s.objects = vec![
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "db-second", "namespace": "shop"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "db"}}},
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "cache", "namespace": "shop"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "cache"}},
                "template": {
                    "metadata": {"labels": {"app": "cache"}},
                    "spec": {"containers": [{"name": "app", "image": "registry.example/cache:1.0"}]},
                },
            },
        }),
    ];
    s
}

/// A webhook receiver that accepts everything.
async fn receiver() -> String {
    let app = Router::new().route("/{path}", post(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/statuspage", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn policy(secret_namespace: &str) -> PatchPolicy {
    let mut spec = PatchPolicySpec::new("2026-11-27-kernel");
    spec.urgent = true;
    spec.rollout.max_unavailable = IntOrString::Int(1);
    spec.rollout.settle = "1s".into();
    spec.drain.timeout = "3s".into();
    spec.drain.on_timeout = OnTimeout::Force;
    spec.reboot.timeout = "30s".into();
    // One workload of each kind the chart grants `get` on.
    let workload = |kind: &str, name: &str| WorkloadGate {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        namespace: Some("shop".into()),
        name: name.into(),
    };
    spec.gates = Some(GatesSpec {
        workloads: vec![
            workload("Deployment", "web"),
            workload("StatefulSet", "queue"),
            workload("DaemonSet", "agent"),
            workload("ReplicaSet", "cache"),
        ],
        ..GatesSpec::default()
    });
    spec.notify = Some(NotifySpec {
        webhooks: vec![Webhook {
            name: WEBHOOK_SECRET.into(),
            url_secret_ref: SecretKeyRef {
                namespace: secret_namespace.into(),
                name: WEBHOOK_SECRET.into(),
                key: "url".into(),
            },
            format: WebhookFormat::CloudEvents,
            headers_secret_ref: None,
            ca_bundle_secret_ref: None,
            template: None,
            email: None,
            audience: Default::default(),
            node_events: Vec::new(),
        }],
        advisory: Some(Advisory {
            summary: "Kernel maintenance".into(),
            details: None,
            release: Default::default(),
        }),
        ..Default::default()
    });
    PatchPolicy::new("kernel", spec)
}

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Done: completed, every notification delivered and its result recorded.
fn finished(p: &PatchPolicy) -> bool {
    let Some(st) = &p.status else { return false };
    st.phase == Some(Phase::Completed)
        && st.revision.as_deref() == Some(p.spec.revision.as_str())
        && st.notifications.iter().any(|n| n.event == "Completed")
        && st
            .notifications
            .iter()
            .all(|n| n.results.iter().all(|r| r.ends_with("=delivered")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_rbac_grants_exactly_the_calls_the_controller_makes()
-> Result<(), Box<dyn std::error::Error>> {
    let (grants, deployment) = controller_grants(CASE);
    let release_ns = deployment
        .metadata
        .namespace
        .clone()
        .ok_or("rendered Deployment has no namespace")?;
    let sa = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.service_account_name.clone())
        .ok_or("rendered Deployment has no service account")?;
    // The controller as the chart runs it (Lease namespace, name and identity
    // from the rendered arguments), with a local metrics port and a short
    // Lease so that renewals happen within the test.
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or("rendered Deployment has no pod spec")?;
    let args = argv("controller", &pod.containers[0], &release_ns);
    let Sub::Controller(chart_args) = Cli::try_parse_from(&args)?.command else {
        panic!("not the controller: {args:?}")
    };
    assert!(
        !chart_args.no_leader_election,
        "case {CASE} elects a leader"
    );
    let user = format!("system:serviceaccount:{release_ns}:{sa}");

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart-rbac");
    std::fs::create_dir_all(&dir)?;
    let mut cluster = Cluster::start_with(
        SandboxConfig {
            token: Some(ADMIN_TOKEN.into()),
            ..SandboxConfig::with_scenario(scenario())
        },
        dir.join("admin.kubeconfig"),
    )
    .await?;
    let client = cluster.client.clone();
    // The rendered chart's access objects, enforced (they replace the copies
    // the sandbox ships, equal when the fixture test passes).
    cluster.sandbox.create_objects(&[json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": release_ns},
    })])?;
    cluster.sandbox.create_objects(&access_objects(CASE))?;
    let token = cluster.sandbox.mint_token(&release_ns, &sa, None);
    let controller_kubeconfig = dir.join("controller.kubeconfig");
    std::fs::write(
        &controller_kubeconfig,
        cluster.sandbox.kubeconfig_yaml_for(Some(&token)),
    )?;
    let mut secret = Secret::default();
    secret.metadata.name = Some(WEBHOOK_SECRET.into());
    secret.metadata.labels = Some([("sofort.dev/webhook".to_string(), "true".to_string())].into());
    secret.string_data = Some([("url".to_string(), receiver().await)].into());
    Api::<Secret>::namespaced(client.clone(), &release_ns)
        .create(&PostParams::default(), &secret)
        .await?;
    cluster.spawn_agents(false)?;
    crate::pods::wait_pods_ready(&client, 7).await;

    let log = std::fs::File::create(dir.join("controller.log"))?;
    let controller = Controller(
        Command::new(env!("CARGO_BIN_EXE_sofort"))
            .args(["controller", "--namespace", &chart_args.namespace])
            .args(["--lease-name", &chart_args.lease_name])
            .args([
                "--identity",
                chart_args.identity.as_deref().unwrap_or(POD_NAME),
            ])
            .args(["--lease-duration", "3s"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--eviction-retry", "500ms", "--debounce", "20ms"])
            .args(["--gate-interval", "500ms"])
            .env("KUBECONFIG", &controller_kubeconfig)
            .env("SOFORT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let policies: Api<PatchPolicy> = Api::all(client.clone());
    policies
        .create(&PostParams::default(), &policy(&release_ns))
        .await?;
    // Two revisions: the second one repeats identical Events on the same
    // nodes (a node's "Rebooted" note names no revision), which the Recorder
    // sends as a patch bumping the first Event's series.
    for revision in [None, Some("2026-11-28-kernel")] {
        if let Some(revision) = revision {
            let patch = json!({"spec": {"revision": revision}});
            policies
                .patch(
                    "kernel",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
        }
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let p = policies.get("kernel").await?;
            if finished(&p) && revision.is_none_or(|r| p.spec.revision == r) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the rollout did not complete with every notification delivered: {:#?}\ncontroller log:\n{}",
                p.status,
                std::fs::read_to_string(dir.join("controller.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Deleting the policy: the controller removes its finalizer.
    policies.delete("kernel", &DeleteParams::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while policies.get_opt("kernel").await?.is_some() {
        assert!(
            Instant::now() < deadline,
            "the controller did not release the deleted policy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(controller);
    let calls: Vec<RequestRecord> = cluster
        .sandbox
        .stats()
        .requests()
        .into_iter()
        .filter(|r| r.user == user)
        .collect();
    cluster.shutdown().await;

    check_calls("controller", CASE, "controller-rbac.yaml", &grants, &calls);
    Ok(())
}

/// Requires the (API group, resource, verb) triples `grants` give to equal
/// those `calls` used, and every call to be allowed by some rule.
fn check_calls(who: &str, case: &str, template: &str, grants: &[Grant], calls: &[RequestRecord]) {
    let used: BTreeSet<_> = calls.iter().map(triple).collect();
    let granted: BTreeSet<_> = grants.iter().flat_map(Grant::triples).collect();
    let refused: BTreeSet<String> = calls
        .iter()
        .filter(|r| r.code == 403)
        .map(|r| {
            let at = match (r.namespace.as_str(), r.name.as_str()) {
                ("", "") => String::new(),
                ("", n) => format!(" {n}"),
                (ns, "") => format!(" in {ns}"),
                (ns, n) => format!(" {ns}/{n}"),
            };
            format!("{}{at}", show(&triple(r)))
        })
        .collect();
    let list = |items: Vec<String>| -> String {
        if items.is_empty() {
            " none".to_string()
        } else {
            items.iter().map(|i| format!("\n  - {i}")).collect()
        }
    };
    let unused: Vec<String> = granted.difference(&used).map(show).collect();
    let missing: Vec<String> = used.difference(&granted).map(show).collect();
    let sources: Vec<String> = grants
        .iter()
        .map(|g| format!("{}: {:?}", g.source, g.rule))
        .collect();
    assert!(
        unused.is_empty() && missing.is_empty() && refused.is_empty(),
        "the chart's {who} RBAC (values case {case}) differs from the calls the {who} made \
         (API group, resource, verb; fix the rules in charts/sofort/templates/{template}, or the call, \
         and the RBAC table in charts/sofort/README.md)\n\
         granted but never used:{}\n\
         used but not granted:{}\n\
         calls the sandbox's RBAC refused (also by namespace or resourceNames):{}
         rules bound to the {who}:{}",
        list(unused),
        list(missing),
        list(refused.into_iter().collect()),
        list(sources)
    );
}

const AGENT_CASE: &str = "host-commands";

/// The agent's ServiceAccount rules equal the calls the agent makes: the real
/// agent loop (its shell, with the sandbox's simulated hosts in place of PID 1)
/// runs on every node with a token of the agent's ServiceAccount bound to that
/// node (as the kubelet issues it), through two revisions of a
/// rollout with a host patch command, so it watches its Node, writes its keys,
/// reads the PatchPolicy of each request, runs the patch, reboots and reports
/// Events, a second Event of a kind becoming a series (patch). The controller
/// runs with the admin token; only the agent's calls are compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_rbac_grants_exactly_the_calls_the_agent_makes()
-> Result<(), Box<dyn std::error::Error>> {
    let docs = documents(AGENT_CASE);
    let daemonset: k8s_openapi::api::apps::v1::DaemonSet = docs
        .iter()
        .find(|(_, d)| d["kind"] == "DaemonSet")
        .map(|(_, d)| serde_json::from_value(d.clone()))
        .ok_or("no agent DaemonSet rendered")??;
    let release_ns = daemonset
        .metadata
        .namespace
        .clone()
        .ok_or("rendered DaemonSet has no namespace")?;
    let pod = daemonset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or("rendered DaemonSet has no pod spec")?;
    let sa = pod
        .service_account_name
        .clone()
        .ok_or("rendered DaemonSet has no service account")?;
    let grants = bound_grants(AGENT_CASE, &docs, &release_ns, &sa);
    let args = argv("agent", &pod.containers[0], &release_ns);
    let Sub::Agent(chart_args) = Cli::try_parse_from(&args)?.command else {
        panic!("not the agent: {args:?}")
    };
    assert!(
        chart_args.allow_host_commands,
        "case {AGENT_CASE} allows host commands"
    );
    let user = format!("system:serviceaccount:{release_ns}:{sa}");

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart-rbac-agent");
    std::fs::create_dir_all(&dir)?;
    let mut s = scenario();
    s.workloads.retain(|w| w.name == "web");
    s.objects.clear();
    let mut cluster = Cluster::start_with(
        SandboxConfig {
            token: Some(ADMIN_TOKEN.into()),
            ..SandboxConfig::with_scenario(s)
        },
        dir.join("admin.kubeconfig"),
    )
    .await?;
    let client = cluster.client.clone();
    // The access objects of the values case checked here, enforced.
    cluster.sandbox.create_objects(&[json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": release_ns},
    })])?;
    cluster
        .sandbox
        .create_objects(&access_objects(AGENT_CASE))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut agents = Vec::new();
    for node in cluster.sandbox.node_names() {
        // A token bound to the agent's node, as the kubelet issues a pod's
        // token: the agent's admission policy lets it change only that node.
        let token = cluster.sandbox.mint_token(&release_ns, &sa, Some(&node));
        let kubeconfig = kube::config::Kubeconfig::from_yaml(
            &cluster.sandbox.kubeconfig_yaml_for(Some(&token)),
        )?;
        let agent_client = kube::Client::try_from(
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?,
        )?;
        let host: std::sync::Arc<dyn sofort::agent::host::Host> = std::sync::Arc::new(
            sofort::testkit::host::SandboxHost::new(cluster.sandbox.host(&node)?),
        );
        let config = sofort::agent::AgentConfig::new(
            &node,
            Duration::from_secs(30),
            chart_args.allow_host_commands,
        );
        let client = agent_client;
        let mut stopped = stopped.clone();
        agents.push(tokio::spawn(async move {
            sofort::agent::run_agent(
                client,
                config,
                host,
                std::sync::Arc::new(sofort::agent::metrics::AgentMetrics::new()),
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )
            .await
        }));
    }
    crate::pods::wait_pods_ready(&client, 2).await;
    cluster.spawn_controller(sofort::testkit::sandbox_controller_config());

    let policies: Api<PatchPolicy> = Api::all(client.clone());
    let mut spec = PatchPolicySpec::new("r1");
    spec.urgent = true;
    spec.rollout.settle = "1s".into();
    spec.drain.timeout = "10s".into();
    spec.reboot.timeout = "30s".into();
    spec.patch = Some(sofort::api::PatchSpec {
        command: vec!["apt-get".into(), "-y".into(), "dist-upgrade".into()],
        timeout: "1m".into(),
    });
    policies
        .create(
            &PostParams::default(),
            &PatchPolicy::new("agent-rbac", spec),
        )
        .await?;
    for revision in ["r1", "r2"] {
        if revision != "r1" {
            let patch = json!({"spec": {"revision": revision}});
            policies
                .patch(
                    "agent-rbac",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let p = policies.get("agent-rbac").await?;
            let done = p.status.as_ref().is_some_and(|st| {
                st.phase == Some(Phase::Completed) && st.revision.as_deref() == Some(revision)
            });
            if done {
                break;
            }
            if Instant::now() >= deadline {
                let failed: Vec<String> = cluster
                    .sandbox
                    .stats()
                    .requests()
                    .into_iter()
                    .filter(|r| r.user == user && r.code >= 400)
                    .map(|r| {
                        format!(
                            "{} {}/{} -> {}",
                            show(&triple(&r)),
                            r.namespace,
                            r.name,
                            r.code
                        )
                    })
                    .collect();
                panic!(
                    "revision {revision} did not complete: {:#?}\nagent calls refused:{}",
                    p.status,
                    failed
                        .iter()
                        .map(|f| format!("\n  - {f}"))
                        .collect::<String>()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stop.send_replace(true);
    for a in agents {
        tokio::time::timeout(Duration::from_secs(5), a).await???;
    }
    let calls: Vec<RequestRecord> = cluster
        .sandbox
        .stats()
        .requests()
        .into_iter()
        .filter(|r| r.user == user)
        .collect();
    cluster.shutdown().await;
    check_calls("agent", AGENT_CASE, "agent-rbac.yaml", &grants, &calls);
    Ok(())
}

/// Kinds of the chart's access objects the sandbox's own components run with.
const ACCESS_KINDS: &[&str] = &[
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// The chart's access objects of a values case, in rendering order.
fn access_objects(case: &str) -> Vec<Value> {
    documents(case)
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| ACCESS_KINDS.iter().any(|k| d["kind"] == *k))
        .collect()
}

/// `sofort sandbox` and the e2e harness run the controller and the agents with
/// `src/testkit/chart-access.yaml`: the chart's ServiceAccounts, RBAC and
/// admission policies of the default values. It must stay what the chart
/// renders; `SOFORT_BLESS_CHART_ACCESS=1 cargo test --test chart` rewrites it.
#[test]
fn the_sandbox_runs_with_the_access_objects_the_chart_renders()
-> Result<(), Box<dyn std::error::Error>> {
    let rendered = access_objects(CASE);
    let path = super::repo().join("src/testkit/chart-access.yaml");
    if std::env::var_os("SOFORT_BLESS_CHART_ACCESS").is_some() {
        let mut text = String::from(
            "# The chart's ServiceAccounts, RBAC and admission policies as it renders them\n\
             # with default values (release sofort in sofort-system). Generated, do not edit:\n\
             # SOFORT_BLESS_CHART_ACCESS=1 cargo test --test chart rewrites it, and that test\n\
             # fails when the chart and this file differ.\n",
        );
        for doc in &rendered {
            text.push_str("---\n");
            text.push_str(&serde_yaml::to_string(doc)?);
        }
        std::fs::write(&path, text)?;
        return Ok(());
    }
    let shipped = sofort::testkit::chart_access_objects()?;
    assert!(
        shipped == rendered,
        "{} differs from what the chart renders (values case {CASE}); regenerate it with \
         SOFORT_BLESS_CHART_ACCESS=1 cargo test --test chart",
        path.display()
    );
    Ok(())
}
