//! Authentication, RBAC and ValidatingAdmissionPolicy as the sandbox enforces
//! them, through kube::Client and raw HTTP (for status codes, bodies and
//! headers exactly as sent).

mod common;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Error};
use serde_json::{Value, json};
use sofort_sandbox::{Sandbox, SandboxConfig, Scenario};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type R = Result<(), Box<dyn std::error::Error>>;

const ADMIN: &str = "admin-secret";

async fn sandbox(nodes: usize) -> Result<Sandbox, Box<dyn std::error::Error>> {
    Ok(Sandbox::start(SandboxConfig {
        token: Some(ADMIN.into()),
        controllers: false,
        ..SandboxConfig::with_scenario(Scenario::with_nodes(nodes))
    })
    .await?)
}

async fn client(sb: &Sandbox, token: &str) -> Result<Client, Box<dyn std::error::Error>> {
    let kc = Kubeconfig::from_yaml(&sb.kubeconfig_yaml_for(Some(token)))?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    cfg.default_retry = false;
    Ok(Client::try_from(cfg)?)
}

/// One HTTP/1.1 request; returns (status, headers as lowercase "name: value"
/// lines, body).
async fn http(
    sb: &Sandbox,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, Vec<String>, Value), Box<dyn std::error::Error>> {
    let mut s = tokio::net::TcpStream::connect(sb.addr()).await?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        sb.addr(),
        body.len()
    );
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .ok_or("no status line")?
        .parse()?;
    let headers: Vec<String> = lines.map(|l| l.to_ascii_lowercase()).collect();
    let body = serde_json::from_str(body.trim()).unwrap_or(Value::String(body.to_string()));
    Ok((status, headers, body))
}

fn api_error(e: Error) -> Result<kube::core::Status, Box<dyn std::error::Error>> {
    match e {
        Error::Api(s) => Ok(*s),
        other => Err(format!("expected an API error, got {other}").into()),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn unauthenticated_and_unknown_tokens_get_401_with_the_status_body() -> R {
    let sb = sandbox(0).await?;
    for headers in [vec![], vec![("Authorization", "Bearer not-a-token")]] {
        let (code, _, body) = http(&sb, "GET", "/api/v1/nodes", &headers, "").await?;
        assert_eq!(code, 401);
        assert_eq!(
            body,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        );
    }
    let admin = bearer(ADMIN);
    let (code, _, _) = http(
        &sb,
        "GET",
        "/api/v1/nodes",
        &[("Authorization", &admin)],
        "",
    )
    .await?;
    assert_eq!(code, 200);
    sb.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rbac_grants_verbs_resources_subresources_and_names_and_refuses_the_rest() -> R {
    let sb = sandbox(2).await?;
    sb.create_objects(&[
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "node-status"},
               "rules": [
                   {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
               ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "node-status"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-status"},
               "subjects": [{"kind": "ServiceAccount", "name": "ctl", "namespace": "ops"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "one-map", "namespace": "ops"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["allowed"], "verbs": ["get", "list"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "one-map", "namespace": "ops"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "one-map"},
               "subjects": [{"kind": "ServiceAccount", "name": "ctl"}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "allowed", "namespace": "ops"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "ops"}}),
    ])?;
    let token = sb.mint_token("ops", "ctl", None);
    let c = client(&sb, &token).await?;
    let nodes: Api<Node> = Api::all(c.clone());
    assert_eq!(nodes.list(&Default::default()).await?.items.len(), 2);
    nodes
        .patch_status(
            "worker-01",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await?;
    let e = api_error(
        nodes
            .patch(
                "worker-01",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": true}})),
            )
            .await
            .err()
            .ok_or("patching the node was allowed")?,
    )?;
    assert_eq!(e.code, 403);
    assert_eq!(e.reason, "Forbidden");
    assert_eq!(
        e.message,
        "nodes \"worker-01\" is forbidden: User \"system:serviceaccount:ops:ctl\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope"
    );
    let maps: Api<ConfigMap> = Api::namespaced(c.clone(), "ops");
    maps.get("allowed").await?;
    let e = api_error(maps.get("other").await.err().ok_or("other was readable")?)?;
    assert_eq!(
        e.message,
        "configmaps \"other\" is forbidden: User \"system:serviceaccount:ops:ctl\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"ops\""
    );
    // resourceNames never grant an unnamed list, but a list that selects the
    // name by field is named.
    let e = api_error(maps.list(&Default::default()).await.err().ok_or("listed")?)?;
    assert_eq!(
        e.message,
        "configmaps is forbidden: User \"system:serviceaccount:ops:ctl\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"ops\""
    );
    let one = maps
        .list(&kube::api::ListParams::default().fields("metadata.name=allowed"))
        .await?;
    assert_eq!(one.items.len(), 1);
    // In another namespace the Role does not apply.
    let e = api_error(
        Api::<ConfigMap>::namespaced(c.clone(), "default")
            .get("allowed")
            .await
            .err()
            .ok_or("read in default")?,
    )?;
    assert_eq!(e.code, 403);
    // Discovery is every authenticated user's; other paths are not.
    let t = bearer(&token);
    let auth = [("Authorization", t.as_str())];
    assert_eq!(http(&sb, "GET", "/version", &auth, "").await?.0, 200);
    assert_eq!(http(&sb, "GET", "/apis", &auth, "").await?.0, 200);
    let (code, _, body) = http(&sb, "GET", "/metrics", &auth, "").await?;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "forbidden: User \"system:serviceaccount:ops:ctl\" cannot get path \"/metrics\""
    );
    // Refused requests are in the request log with their code.
    assert!(
        sb.stats()
            .requests()
            .iter()
            .any(|r| r.user == "system:serviceaccount:ops:ctl"
                && r.code == 403
                && r.verb == "patch")
    );
    sb.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn aggregated_cluster_roles_grant_the_rules_of_the_roles_they_select() -> R {
    let sb = sandbox(1).await?;
    sb.create_objects(&[
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "agg"},
               "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "yes"}}]},
               "rules": []}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "part", "labels": {"agg": "yes"}},
               "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "agg"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "agg"},
               "subjects": [{"kind": "User", "name": "alice"}]}),
    ])?;
    let admin = bearer(ADMIN);
    let (code, _, _) = http(
        &sb,
        "GET",
        "/api/v1/nodes",
        &[("Authorization", &admin), ("Impersonate-User", "alice")],
        "",
    )
    .await?;
    assert_eq!(code, 200);
    let (code, _, body) = http(
        &sb,
        "GET",
        "/api/v1/nodes/worker-01",
        &[("Authorization", &admin), ("Impersonate-User", "alice")],
        "",
    )
    .await?;
    assert_eq!(code, 403, "{body}");
    sb.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn impersonation_is_the_admins_and_needs_the_impersonate_verb_for_others() -> R {
    let sb = sandbox(1).await?;
    let token = sb.mint_token("ops", "ctl", None);
    let t = bearer(&token);
    let (code, _, body) = http(
        &sb,
        "GET",
        "/api/v1/nodes",
        &[("Authorization", &t), ("Impersonate-User", "bob")],
        "",
    )
    .await?;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "users \"bob\" is forbidden: User \"system:serviceaccount:ops:ctl\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    sb.create_objects(&[
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "be-bob"},
               "rules": [{"apiGroups": [""], "resources": ["users"], "resourceNames": ["bob"], "verbs": ["impersonate"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "be-bob"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "be-bob"},
               "subjects": [{"kind": "ServiceAccount", "name": "ctl", "namespace": "ops"}]}),
    ])?;
    // Now the request is bob's, whom RBAC gives nothing.
    let (code, _, body) = http(
        &sb,
        "GET",
        "/api/v1/nodes",
        &[("Authorization", &t), ("Impersonate-User", "bob")],
        "",
    )
    .await?;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "nodes is forbidden: User \"bob\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );
    // The admin may be anyone; whoami reports the impersonated user and groups.
    let admin = bearer(ADMIN);
    let (code, _, body) = http(
        &sb,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &[
            ("Authorization", &admin),
            ("Impersonate-User", "system:serviceaccount:ops:ctl"),
            ("Impersonate-Group", "extra-group"),
        ],
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
    )
    .await?;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body["status"]["userInfo"]["username"],
        "system:serviceaccount:ops:ctl"
    );
    assert_eq!(
        body["status"]["userInfo"]["groups"],
        json!(["extra-group", "system:authenticated"])
    );
    sb.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn token_requests_mint_tokens_bound_to_the_pods_node() -> R {
    let sb = Sandbox::start(SandboxConfig {
        token: Some(ADMIN.into()),
        ..SandboxConfig::with_scenario(common::fast(Scenario::with_nodes(1)))
    })
    .await?;
    let admin = client(&sb, ADMIN).await?;
    let post = |v: Value| -> Result<Vec<u8>, serde_json::Error> { serde_json::to_vec(&v) };
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "agent"}}))?,
    )
    .await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin.clone(), "default");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "agent-x"},
            "spec": {"nodeName": "worker-01", "serviceAccountName": "agent", "containers": [{"name": "a", "image": "a"}]}}))?,
    )
    .await?;
    let a = bearer(ADMIN);
    let body = String::from_utf8(post(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "agent-x"}},
    }))?)?;
    let (code, _, tr) = http(
        &sb,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/agent/token",
        &[("Authorization", &a)],
        &body,
    )
    .await?;
    assert_eq!(code, 201, "{tr}");
    let token = tr["status"]["token"].as_str().ok_or("no token")?;
    let t = bearer(token);
    let (code, _, me) = http(
        &sb,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &[("Authorization", &t)],
        "{}",
    )
    .await?;
    assert_eq!(code, 201);
    assert_eq!(
        me["status"]["userInfo"]["username"],
        "system:serviceaccount:default:agent"
    );
    assert_eq!(
        me["status"]["userInfo"]["extra"]["authentication.kubernetes.io/node-name"],
        json!(["worker-01"])
    );
    // A ServiceAccount that does not exist gets no token.
    let (code, _, _) = http(
        &sb,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/nobody/token",
        &[("Authorization", &a)],
        "{}",
    )
    .await?;
    assert_eq!(code, 404);
    sb.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------------
// The chart's agent admission policy

/// The chart's access objects as rendered with default values (kept equal to
/// the chart by a chart test).
fn chart_access() -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    use serde::Deserialize;
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../src/testkit/chart-access.yaml"
    ));
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_json::to_value(serde_yaml::Value::deserialize(doc)?)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn agent_account(objects: &[Value]) -> Result<(String, String), Box<dyn std::error::Error>> {
    let sa = objects
        .iter()
        .find(|o| {
            o["kind"] == "ServiceAccount"
                && o["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"
        })
        .ok_or("the chart has no agent ServiceAccount")?;
    Ok((
        sa["metadata"]["namespace"]
            .as_str()
            .ok_or("no namespace")?
            .into(),
        sa["metadata"]["name"].as_str().ok_or("no name")?.into(),
    ))
}

fn merge(v: Value) -> Patch<Value> {
    Patch::Merge(v)
}

#[tokio::test]
async fn the_charts_agent_policy_confines_an_agent_token_to_its_own_nodes_keys() -> R {
    let sb = sandbox(2).await?;
    let objects = chart_access()?;
    let (ns, name) = agent_account(&objects)?;
    sb.create_objects(&[
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    ])?;
    sb.create_objects(&objects)?;
    let policy = objects
        .iter()
        .find(|o| o["kind"] == "ValidatingAdmissionPolicyBinding")
        .and_then(|b| b["metadata"]["name"].as_str())
        .ok_or("the chart has no admission policy binding")?
        .to_string();
    let token = sb.mint_token(&ns, &name, Some("worker-01"));
    let agent: Api<Node> = Api::all(client(&sb, &token).await?);
    let admin: Api<Node> = Api::all(client(&sb, ADMIN).await?);
    let pp = PatchParams::default();
    let denied = |node: &str, msg: &str| {
        format!(
            "nodes \"{node}\" is forbidden: ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: {msg}"
        )
    };

    // Its own reboot-required label and agent annotations: allowed.
    agent
        .patch(
            "worker-01",
            &pp,
            &merge(json!({"metadata": {
                "labels": {"sofort.dev/reboot-required": "true"},
                "annotations": {"sofort.dev/patch-result": "ok"}}})),
        )
        .await?;
    let n = admin.get("worker-01").await?;
    assert_eq!(
        n.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("sofort.dev/reboot-required"))
            .map(String::as_str),
        Some("true")
    );

    // Another node: refused.
    let e = api_error(
        agent
            .patch(
                "worker-02",
                &pp,
                &merge(json!({"metadata": {"labels": {"sofort.dev/reboot-required": "true"}}})),
            )
            .await
            .err()
            .ok_or("the agent patched another node")?,
    )?;
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        denied(
            "worker-02",
            "the sofort agent may change only the node it runs on, not worker-02"
        )
    );

    // Uncordoning itself: refused.
    admin
        .patch(
            "worker-01",
            &pp,
            &merge(json!({"spec": {"unschedulable": true}})),
        )
        .await?;
    let e = api_error(
        agent
            .patch(
                "worker-01",
                &pp,
                &merge(json!({"spec": {"unschedulable": null}})),
            )
            .await
            .err()
            .ok_or("the agent uncordoned itself")?,
    )?;
    assert_eq!(
        e.message,
        denied(
            "worker-01",
            "the sofort agent may not change a node's spec (cordoning is the controller's job)"
        )
    );

    // Forging the controller's keys: refused.
    let e = api_error(
        agent
            .patch(
                "worker-01",
                &pp,
                &merge(json!({"metadata": {"annotations": {"sofort.dev/record": "{}"}}})),
            )
            .await
            .err()
            .ok_or("the agent wrote the controller's record")?,
    )?;
    assert_eq!(
        e.message,
        denied(
            "worker-01",
            "the sofort agent may change only the annotations sofort.dev/reboot-ack, sofort.dev/patch-result and sofort.dev/agent-error"
        )
    );
    let e = api_error(
        agent
            .patch(
                "worker-01",
                &pp,
                &merge(json!({"metadata": {"labels": {"sofort.dev/done-kernel": "r1"}}})),
            )
            .await
            .err()
            .ok_or("the agent wrote a done label")?,
    )?;
    assert!(
        e.message
            .ends_with("the sofort agent may change only the label sofort.dev/reboot-required"),
        "{}",
        e.message
    );
    // The admin is not the agent: the policy does not apply.
    admin
        .patch(
            "worker-02",
            &pp,
            &merge(json!({"metadata": {"annotations": {"sofort.dev/record": "{}"}}})),
        )
        .await?;
    // A token without a node is refused on every node.
    let unbound: Api<Node> = Api::all(client(&sb, &sb.mint_token(&ns, &name, None)).await?);
    let e = api_error(
        unbound
            .patch(
                "worker-01",
                &pp,
                &merge(json!({"metadata": {"labels": {"sofort.dev/reboot-required": "false"}}})),
            )
            .await
            .err()
            .ok_or("a token without a node patched a node")?,
    )?;
    assert_eq!(e.code, 403);
    sb.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn policies_use_params_variables_match_conditions_warn_and_failure_policy() -> R {
    let sb = sandbox(0).await?;
    sb.create_objects(&[
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps", "labels": {"team": "a"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "free"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "limits", "namespace": "default"},
               "data": {"max": "2"}}),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
               "metadata": {"name": "max-keys"},
               "spec": {
                   "failurePolicy": "Fail",
                   "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                   "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                       "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}]},
                   "matchConditions": [{"name": "not-exempt", "expression": "!has(object.metadata.labels) || !('exempt' in object.metadata.labels)"}],
                   "variables": [{"name": "keys", "expression": "has(object.data) ? object.data.size() : 0"}],
                   "validations": [{
                       "expression": "variables.keys <= int(params.data.max)",
                       "messageExpression": "'at most ' + params.data.max + ' keys, not ' + string(variables.keys)",
                       "reason": "Invalid"}]}}),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": "max-keys-team-a"},
               "spec": {"policyName": "max-keys", "validationActions": ["Deny"],
                        "paramRef": {"name": "limits", "namespace": "default"},
                        "matchResources": {"namespaceSelector": {"matchLabels": {"team": "a"}}}}}),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": "max-keys-warn"},
               "spec": {"policyName": "max-keys", "validationActions": ["Warn", "Audit"],
                        "paramRef": {"name": "limits", "namespace": "default"},
                        "matchResources": {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}}}}),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
               "metadata": {"name": "broken"},
               "spec": {"failurePolicy": "Ignore",
                   "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                       "operations": ["CREATE"], "resources": ["configmaps"]}]},
                   "validations": [{"expression": "object.no.such.field == 1"}]}}),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": "broken"},
               "spec": {"policyName": "broken", "validationActions": ["Deny"]}}),
    ])?;
    let admin = bearer(ADMIN);
    let auth = [("Authorization", admin.as_str())];
    let big = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"a":"1","b":"2","c":"3"}}"#;
    let (code, _, body) = http(
        &sb,
        "POST",
        "/api/v1/namespaces/apps/configmaps",
        &auth,
        big,
    )
    .await?;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(
        body["message"],
        "configmaps \"big\" is forbidden: ValidatingAdmissionPolicy 'max-keys' with binding 'max-keys-team-a' denied request: at most 2 keys, not 3"
    );
    // Exempt by matchCondition.
    let exempt = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big","labels":{"exempt":"y"}},"data":{"a":"1","b":"2","c":"3"}}"#;
    assert_eq!(
        http(
            &sb,
            "POST",
            "/api/v1/namespaces/apps/configmaps",
            &auth,
            exempt
        )
        .await?
        .0,
        201
    );
    // Warn: created, with a Warning header.
    let (code, headers, _) = http(
        &sb,
        "POST",
        "/api/v1/namespaces/free/configmaps",
        &auth,
        big,
    )
    .await?;
    assert_eq!(code, 201);
    assert!(
        headers.iter().any(|h| h.starts_with("warning: 299 - ")
            && h.contains("validation failed for validatingadmissionpolicy 'max-keys' with binding 'max-keys-warn': at most 2 keys, not 3")),
        "{headers:?}"
    );
    // An update that stays within the limit passes.
    let small = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"exempt-not"},"data":{"a":"1"}}"#;
    assert_eq!(
        http(
            &sb,
            "POST",
            "/api/v1/namespaces/apps/configmaps",
            &auth,
            small
        )
        .await?
        .0,
        201
    );
    let (code, _, body) = http(
        &sb,
        "PATCH",
        "/api/v1/namespaces/apps/configmaps/exempt-not",
        &[
            ("Authorization", admin.as_str()),
            ("Content-Type", "application/merge-patch+json"),
        ],
        r#"{"data":{"b":"2","c":"3"}}"#,
    )
    .await?;
    assert_eq!(code, 422, "{body}");
    sb.shutdown().await;
    Ok(())
}
