//! The installed kubectl against the sandbox.

mod common;

use std::time::Duration;

use sofort_sandbox::{SandboxConfig, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_describe_cordon_label_annotate_patch_delete()
-> Result<(), Box<dyn std::error::Error>> {
    let env = common::start(SandboxConfig::with_scenario(common::fast(
        Scenario::with_nodes(3),
    )))
    .await;
    let out = env.kubectl_ok(&["get", "nodes"]);
    assert!(
        out.contains("NAME")
            && out.contains("STATUS")
            && out.contains("ROLES")
            && out.contains("VERSION"),
        "{out}"
    );
    assert!(
        out.contains("worker-01")
            && out.contains("Ready")
            && out.contains("worker")
            && out.contains("v1.33.0"),
        "{out}"
    );
    env.kubectl_ok(&["cordon", "worker-01"]);
    assert!(
        env.kubectl_ok(&["get", "no", "worker-01"])
            .contains("Ready,SchedulingDisabled")
    );
    env.kubectl_ok(&["uncordon", "worker-01"]);
    assert!(
        !env.kubectl_ok(&["get", "no", "worker-01"])
            .contains("SchedulingDisabled")
    );
    env.kubectl_ok(&["label", "node", "worker-01", "sofort.dev/priority=1"]);
    env.kubectl_ok(&["annotate", "node", "worker-01", "example.com/note=hello"]);
    let y = env.kubectl_ok(&["get", "node", "worker-01", "-o", "jsonpath={.metadata.labels.sofort\\.dev/priority} {.metadata.annotations.example\\.com/note}"]);
    assert_eq!(y, "1 hello");
    env.kubectl_ok(&[
        "patch",
        "node",
        "worker-01",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"m":"1"}}}"#,
    ]);
    env.kubectl_ok(&[
        "patch",
        "node",
        "worker-01",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/j","value":"2"}]"#,
    ]);
    env.kubectl_ok(&[
        "patch",
        "node",
        "worker-01",
        "-p",
        r#"{"metadata":{"labels":{"s":"3"}}}"#,
    ]);
    assert_eq!(
        env.kubectl_ok(&["get", "nodes", "-l", "m=1,j=2,s=3", "-o", "name"])
            .trim(),
        "node/worker-01"
    );
    let d = env.kubectl_ok(&["describe", "node", "worker-01"]);
    assert!(
        d.contains("Name:") && d.contains("worker-01") && d.contains("Boot ID"),
        "{d}"
    );
    let pods = env.kubectl_ok(&["get", "pods", "-A"]);
    assert!(pods.contains("READY") && pods.contains("STATUS"), "{pods}");
    assert!(
        env.kubectl_ok(&["get", "pdb", "-n", "shop"])
            .contains("ALLOWED DISRUPTIONS")
    );
    let ns = env.write(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: scratch}\n",
    );
    env.kubectl_ok(&["apply", "-f", ns.to_str().unwrap()]);
    env.kubectl_ok(&["get", "namespace", "scratch"]);
    env.kubectl_ok(&["delete", "namespace", "scratch"]);
    let (ok, _, err) = env.kubectl(&["get", "namespace", "scratch"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_crd_and_custom_resources_with_printer_columns_and_explain()
-> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    let crd = env.write("crd.yaml", common::TEST_CRD);
    env.kubectl_ok(&["apply", "-f", crd.to_str().unwrap()]);
    env.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=10s",
    ]);
    let w = env.write("w.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 4}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n");
    env.kubectl_ok(&["apply", "-f", w.to_str().unwrap()]);
    // Apply again with a change: a patch, not a create.
    let w2 = env.write(
        "w2.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 5}\n",
    );
    let out = env.kubectl_ok(&["apply", "-f", w2.to_str().unwrap()]);
    assert!(out.contains("configured"), "{out}");
    let out = env.kubectl_ok(&["get", "wdg"]);
    assert!(
        out.contains("SIZE") && out.contains("PHASE") && out.contains("AGE") && out.contains("5"),
        "{out}"
    );
    // Unknown fields are refused by server-side validation (Strict).
    let bad = env.write("bad.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w9}\nspec: {size: 1, bogus: 1}\n");
    let (ok, _, err) = env.kubectl(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("unknown field"), "{err}");
    // Server-side apply from kubectl.
    env.kubectl_ok(&["apply", "--server-side", "-f", w2.to_str().unwrap()]);
    let ex = env.kubectl_ok(&["explain", "widgets.spec"]);
    assert!(
        ex.contains("What the widget should be") && ex.contains("size"),
        "{ex}"
    );
    let ex = env.kubectl_ok(&["explain", "pods.spec.nodeName"]);
    assert!(ex.contains("nodeName"), "{ex}");
    env.kubectl_ok(&["describe", "widget", "w1"]);
    env.kubectl_ok(&["delete", "widget", "w1"]);
    env.kubectl_ok(&["delete", "-f", crd.to_str().unwrap()]);
    let (ok, _, _) = env.kubectl(&["get", "widgets"]);
    assert!(!ok);
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_waits_for_rescheduled_workloads() -> Result<(), Box<dyn std::error::Error>> {
    let mut s = common::fast(Scenario::with_nodes(3));
    s.timing.pod_start = sofort_sandbox::DurationRange::fixed(Duration::from_millis(300));
    let env = common::start(SandboxConfig::with_scenario(s)).await;
    // Wait until the demo workloads are Ready everywhere.
    common::eventually(Duration::from_secs(15), "workloads ready", || async {
        let out = env
            .kubectl(&[
                "get",
                "pdb",
                "-n",
                "shop",
                "-o",
                "jsonpath={range .items[*]}{.status.disruptionsAllowed}{\" \"}{end}",
            ])
            .1;
        let v: Vec<i64> = out
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        (v.len() == 3 && v.iter().all(|x| *x >= 1)).then_some(())
    })
    .await;
    let (ok, out, err) = env.kubectl(&[
        "drain",
        "worker-01",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        "--timeout=60s",
    ]);
    assert!(ok, "drain failed:\n{out}\n{err}");
    assert!(out.contains("node/worker-01 drained"), "{out}\n{err}");
    println!("kubectl drain transcript:\n{out}{err}");
    let left = env.kubectl_ok(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "spec.nodeName=worker-01",
        "-o",
        "name",
    ]);
    assert!(
        left.lines().all(|l| l.contains("log-agent")),
        "only DaemonSet pods stay: {left}"
    );
    assert!(env.sandbox.stats().count("create", "pods", "eviction") > 0);
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_applies_services_rbac_network_and_admission_policies()
-> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    let objects = env.write(
        "objects.yaml",
        r#"apiVersion: v1
kind: Namespace
metadata: {name: ops}
---
apiVersion: v1
kind: Service
metadata: {name: metrics, namespace: ops}
spec:
  selector: {app: ctl}
  ports: [{name: metrics, port: 8080}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
subjects: [{kind: ServiceAccount, name: ctl, namespace: ops}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: leases, namespace: ops}
rules: [{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [create]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: leases, namespace: ops}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leases}
subjects: [{kind: ServiceAccount, name: ctl, namespace: ops}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ctl, namespace: ops}
spec:
  podSelector: {matchLabels: {app: ctl}}
  policyTypes: [Ingress]
  ingress: [{ports: [{port: 8080}]}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: own-node}
spec:
  matchConstraints:
    resourceRules: [{apiGroups: [""], apiVersions: [v1], operations: [UPDATE], resources: [nodes]}]
  validations: [{expression: "true"}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: own-node}
spec: {policyName: own-node, validationActions: [Deny]}
"#,
    );
    let path = objects.to_str().ok_or("path is not UTF-8")?;
    env.kubectl_ok(&["apply", "--server-side", "-f", path]);
    // Short names and kinds resolve through discovery.
    let names = env.kubectl_ok(&[
        "get",
        "svc,netpol,role,rolebinding",
        "-n",
        "ops",
        "-o",
        "name",
    ]);
    for want in [
        "service/metrics",
        "networkpolicy.networking.k8s.io/ctl",
        "role.rbac.authorization.k8s.io/leases",
        "rolebinding.rbac.authorization.k8s.io/leases",
    ] {
        assert!(names.contains(want), "{want} missing:\n{names}");
    }
    let names = env.kubectl_ok(&[
        "get",
        "clusterrole/reader",
        "clusterrolebinding/reader",
        "validatingadmissionpolicy/own-node",
        "validatingadmissionpolicybinding/own-node",
        "-o",
        "name",
    ]);
    assert_eq!(names.lines().count(), 4, "{names}");
    // Defaults of a Service, as the real server fills them in.
    let svc = env.kubectl_ok(&[
        "get",
        "svc",
        "metrics",
        "-n",
        "ops",
        "-o",
        "jsonpath={.spec.type} {.spec.ports[0].protocol} {.spec.ports[0].targetPort}",
    ]);
    assert_eq!(svc, "ClusterIP TCP 8080");
    let ex = env.kubectl_ok(&["explain", "clusterroles.rules.verbs"]);
    assert!(ex.contains("Verbs"), "{ex}");
    // A second apply with the same field manager changes nothing and succeeds.
    let out = env.kubectl_ok(&["apply", "--server-side", "-f", path]);
    assert!(out.contains("serverside-applied"), "{out}");
    env.sandbox.shutdown().await;
    Ok(())
}

/// The imperative kubectl commands that send protobuf bodies (and ask for
/// protobuf answers) work, and the stored objects hold what kubectl sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_run_and_scale_speak_protobuf() -> Result<(), Box<dyn std::error::Error>> {
    let env = common::start(SandboxConfig::with_scenario(common::fast(
        Scenario::with_nodes(2),
    )))
    .await;
    let (ok, out, err) = env.kubectl(&["create", "namespace", "demo", "-v=8"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("namespace/demo created"), "{out}");
    // Sent as protobuf, and answered in protobuf (request and response headers).
    assert!(
        err.matches("Content-Type: application/vnd.kubernetes.protobuf")
            .count()
            >= 2,
        "kubectl did not send or get protobuf: {err}"
    );
    assert_eq!(
        env.kubectl_ok(&["get", "ns", "demo", "-o", "jsonpath={.status.phase}"]),
        "Active"
    );
    env.kubectl_ok(&[
        "-n",
        "demo",
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=two",
    ]);
    assert_eq!(
        env.kubectl_ok(&[
            "-n",
            "demo",
            "get",
            "cm",
            "cfg",
            "-o",
            "jsonpath={.data.a}/{.data.b}"
        ]),
        "1/two"
    );
    env.kubectl_ok(&[
        "-n",
        "demo",
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cr\u{e9}t",
    ]);
    let b64 = env.kubectl_ok(&[
        "-n",
        "demo",
        "get",
        "secret",
        "creds",
        "-o",
        "jsonpath={.data.password} {.type}",
    ]);
    assert_eq!(b64, "czNjcsOpdA== Opaque");
    env.kubectl_ok(&["-n", "demo", "create", "serviceaccount", "robot"]);
    env.kubectl_ok(&[
        "-n",
        "demo",
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    assert_eq!(
        env.kubectl_ok(&[
            "-n",
            "demo",
            "get",
            "role",
            "reader",
            "-o",
            "jsonpath={.rules[0].verbs}"
        ]),
        r#"["get","list"]"#
    );
    env.kubectl_ok(&[
        "-n",
        "demo",
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=80",
    ]);
    let d = env.kubectl_ok(&["-n", "demo", "get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.spec.selector.matchLabels.app}"]);
    assert_eq!(d, "2 nginx:1.27 80 web");
    env.kubectl_ok(&[
        "-n",
        "demo",
        "run",
        "debug",
        "--image=busybox",
        "--labels=role=debug",
        "--",
        "sleep",
        "3600",
    ]);
    assert_eq!(
        env.kubectl_ok(&[
            "-n",
            "demo",
            "get",
            "pod",
            "debug",
            "-o",
            "jsonpath={.spec.containers[0].args} {.metadata.labels.role}"
        ]),
        r#"["sleep","3600"] debug"#
    );
    let out = env.kubectl_ok(&["-n", "demo", "scale", "deployment", "web", "--replicas=4"]);
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    assert_eq!(
        env.kubectl_ok(&[
            "-n",
            "demo",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "4"
    );
    common::eventually(Duration::from_secs(20), "4 web pods", || async {
        let out = env.kubectl_ok(&["-n", "demo", "get", "pods", "-l", "app=web", "-o", "name"]);
        (out.lines().count() == 4).then_some(())
    })
    .await;
    // With a precondition that does not hold, nothing changes.
    let (ok, _, err) = env.kubectl(&[
        "-n",
        "demo",
        "scale",
        "deployment",
        "web",
        "--current-replicas=3",
        "--replicas=1",
    ]);
    assert!(!ok, "scaled despite the precondition");
    assert!(err.contains("3"), "{err}");
    assert_eq!(
        env.kubectl_ok(&[
            "-n",
            "demo",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "4"
    );
    Ok(())
}
