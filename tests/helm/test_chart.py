"""The chart lints clean, renders for every supported configuration, and each
rendered object says what the design promises (security, RBAC, probes, args)."""

from __future__ import annotations

import pathlib
import shutil
import tomllib

import helm_python as helm
import pytest
import yaml

from conftest import CHART, MATRIX, NAMESPACE, RENDER_DIR, REPO, all_of, container, find, objects, render

# Severity codes of helm lint findings.
INFO, WARNING, ERROR = 1, 2, 3


def test_helm_lint_is_clean_for_defaults_and_every_matrix_case():
    for case, values in MATRIX.items():
        report = helm.lint(CHART, values or None, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
        findings = [m for m in report["messages"] if m["severity"] >= WARNING]
        assert not findings and not report["errors"], f"{case}: {findings or report['errors']}"
        # The only accepted note is the missing icon (no artwork yet).
        infos = {m["error"] for m in report["messages"] if m["severity"] == INFO}
        assert infos <= {"icon is recommended"}, f"{case}: {infos}"


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_every_matrix_case_renders_and_is_written_for_the_rust_test(chart, case):
    rendered = render(chart, MATRIX[case])
    out = RENDER_DIR / case
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for path, text in rendered.items():
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        (out / pathlib.Path(path).name).write_text(text)
    written = sorted(p.name for p in out.iterdir())
    assert "controller-deployment.yaml" in written and "agent-daemonset.yaml" in written, written
    for obj in objects(rendered):
        assert obj.get("apiVersion") and obj.get("kind") and obj["metadata"].get("name"), obj


def test_default_render_has_the_expected_objects(chart):
    objs = objects(render(chart))
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objs)
    assert kinds == sorted(
        [
            ("ClusterRole", "sofort-agent"),
            ("ClusterRole", "sofort-controller"),
            ("ClusterRoleBinding", "sofort-agent"),
            ("ClusterRoleBinding", "sofort-controller"),
            ("DaemonSet", "sofort-agent"),
            ("Deployment", "sofort-controller"),
            ("PodDisruptionBudget", "sofort-controller"),
            ("Role", "sofort-agent-events"),
            ("Role", "sofort-controller-leader-election"),
            ("Role", "sofort-controller-webhook-secrets"),
            ("RoleBinding", "sofort-agent-events"),
            ("RoleBinding", "sofort-controller-leader-election"),
            ("RoleBinding", "sofort-controller-webhook-secrets"),
            ("Service", "sofort-controller-metrics"),
            ("ServiceAccount", "sofort-agent"),
            ("ServiceAccount", "sofort-controller"),
            ("ValidatingAdmissionPolicy", "sofort-agent-own-node"),
            ("ValidatingAdmissionPolicy", "sofort-controller-keys"),
            ("ValidatingAdmissionPolicyBinding", "sofort-agent-own-node"),
            ("ValidatingAdmissionPolicyBinding", "sofort-controller-keys"),
        ]
    )
    for o in objs:
        if o["metadata"]["name"] == "sofort-agent-events":
            # Events about cluster-scoped Nodes are created in `default`.
            assert o["metadata"]["namespace"] == "default", o["metadata"]
        elif o["kind"] not in {"ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}:
            assert o["metadata"]["namespace"] == NAMESPACE, o["metadata"]


def test_controller_deployment_is_highly_available_probed_and_locked_down(chart):
    objs = objects(render(chart))
    dep = find(objs, "Deployment")
    spec = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert dep["spec"]["replicas"] == 2
    assert spec["automountServiceAccountToken"] is True
    assert spec["serviceAccountName"] == "sofort-controller"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert "--metrics-addr=0.0.0.0:8080" in c["args"] and "--log-format=json" in c["args"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"SOFORT_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    pdb = find(objs, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": dep["spec"]["selector"]}
    svc = find(objs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_single_replica_without_leader_election(chart):
    objs = objects(render(chart, MATRIX["single-replica"]))
    c = container(find(objs, "Deployment"))
    assert "--no-leader-election" in c["args"]
    assert not [a for a in c["args"] if a.startswith("--lease")]
    assert not all_of(objs, "PodDisruptionBudget")
    assert [r["metadata"]["name"] for r in all_of(objs, "Role")] == ["sofort-agent-events", "sofort-controller-webhook-secrets"]


def test_several_replicas_without_leader_election_are_refused(chart):
    with pytest.raises(helm.HelmRenderError, match="needs controller.replicas=1"):
        render(chart, {"controller": {"leaderElection": {"enabled": False}}})


def agent(chart, values=None):
    return find(objects(render(chart, values)), "DaemonSet")


def test_agent_runs_on_every_node_with_the_host_pid_namespace(chart):
    ds = agent(chart)
    spec = ds["spec"]["template"]["spec"]
    c = container(ds)
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["hostPID"] is True
    assert "hostNetwork" not in spec
    assert spec["automountServiceAccountToken"] is True
    assert c["env"] == [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    assert "--node-name=$(NODE_NAME)" in c["args"]
    assert c["resources"]["limits"]["memory"] == "64Mi"


def test_signal_method_is_root_with_only_cap_kill(chart):
    ds = agent(chart)
    c = container(ds)
    assert "--reboot-method=signal" in c["args"]
    assert not [a for a in c["args"] if a.startswith(("--reboot-command", "--allow-host-commands", "--sentinel-command"))]
    assert c["securityContext"] == {
        "runAsUser": 0,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["KILL"]},
    }
    assert ds["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("case", ["reboot-command", "host-commands", "sentinel-command"])
def test_nsenter_cases_are_privileged(chart, case):
    c = container(agent(chart, MATRIX[case]))
    assert c["securityContext"]["privileged"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "capabilities" not in c["securityContext"]
    assert "allowPrivilegeEscalation" not in c["securityContext"]


def test_command_method_passes_the_reboot_command(chart):
    args = container(agent(chart, MATRIX["reboot-command"]))["args"]
    assert "--reboot-method=command" in args
    assert "--reboot-command=/usr/bin/systemctl reboot --no-wall" in args
    assert "--allow-host-commands" not in args


def test_host_commands_only_when_enabled(chart):
    assert "--allow-host-commands" in container(agent(chart, MATRIX["host-commands"]))["args"]
    for case in ("default", "reboot-command", "sentinel-command"):
        assert "--allow-host-commands" not in container(agent(chart, MATRIX[case]))["args"], case


def test_sentinel_directory_is_mounted_read_only(chart):
    for case, file in [("default", "reboot-required"), ("custom-sentinel-path", "needs-reboot")]:
        ds = agent(chart, MATRIX[case])
        c = container(ds)
        assert f"--sentinel-file=/host/sentinel/{file}" in c["args"], case
        assert c["volumeMounts"] == [{"name": "sentinel", "mountPath": "/host/sentinel", "readOnly": True}]
        assert ds["spec"]["template"]["spec"]["volumes"] == [
            {"name": "sentinel", "hostPath": {"path": "/run/sofort", "type": "DirectoryOrCreate"}}
        ]
    ds = agent(chart, MATRIX["sentinel-command"])
    assert "--sentinel-command=/usr/bin/test -e /run/reboot-required" in container(ds)["args"]
    assert "volumes" not in ds["spec"]["template"]["spec"]


def test_default_agent_does_not_mount_the_hosts_run(chart):
    for case, values in MATRIX.items():
        spec = agent(chart, values)["spec"]["template"]["spec"]
        for v in spec.get("volumes", []):
            path = v.get("hostPath", {}).get("path", "")
            assert path.rstrip("/") not in ("", "/run", "/var/run", "/var"), (case, v)
    # A sentinel directly in a shared system directory is refused with the way out.
    for path in ("/run/reboot-required", "/var/run/reboot-required", "/reboot-required", "/run/./reboot-required"):
        with pytest.raises(helm.HelmRenderError, match="directory of sofort's own"):
            render(chart, {"agent": {"sentinel": {"hostPath": path}}})


def images(objs):
    for o in objs:
        if o["kind"] in {"Deployment", "DaemonSet"}:
            yield from (c["image"] for c in o["spec"]["template"]["spec"]["containers"])


def test_no_latest_tag_anywhere(chart):
    for case, values in MATRIX.items():
        for image in images(objects(render(chart, values))):
            assert not image.endswith(":latest") and ":" in image.split("/")[-1] or "@sha256:" in image, (case, image)
    assert set(images(objects(render(chart)))) == {"sofort:0.1.0"}
    with pytest.raises(helm.HelmRenderError, match='image.tag must not be "latest"'):
        render(chart, {"image": {"tag": "latest"}})
    text = "\n".join(p.read_text() for p in CHART.rglob("*") if p.is_file() and p.name != "README.md")
    assert ":latest" not in text


def test_digest_pins_the_image(chart):
    assert set(images(objects(render(chart, MATRIX["digest"])))) == {
        "registry.example.com/ops/sofort@sha256:" + "ab" * 32
    }


def rules(role):
    return [(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"]), tuple(r.get("resourceNames", ()))) for r in role["rules"]]


def test_controller_rbac_is_exactly_what_it_calls(chart):
    objs = objects(render(chart))
    assert rules(find(objs, "ClusterRole", "sofort-controller")) == [
        (("",), ("nodes",), ("list", "watch", "patch"), ()),
        (("",), ("pods",), ("list", "watch"), ()),
        (("",), ("pods/eviction",), ("create",), ()),
        (("policy",), ("poddisruptionbudgets",), ("list",), ()),
        (("apps",), ("deployments", "statefulsets", "daemonsets", "replicasets"), ("get",), ()),
        (("sofort.dev",), ("patchpolicies",), ("get", "list", "watch", "patch"), ()),
        (("sofort.dev",), ("patchpolicies/status",), ("patch",), ()),
        (("events.k8s.io",), ("events",), ("create", "patch"), ()),
    ]
    lease = find(objs, "Role", "sofort-controller-leader-election")
    assert lease["metadata"]["namespace"] == NAMESPACE
    assert rules(lease) == [
        (("coordination.k8s.io",), ("leases",), ("create",), ()),
        (("coordination.k8s.io",), ("leases",), ("get", "patch"), ("sofort-controller",)),
    ]
    secrets = find(objs, "Role", "sofort-controller-webhook-secrets")
    assert secrets["metadata"]["namespace"] == NAMESPACE
    assert rules(secrets) == [(("",), ("secrets",), ("get",), ())]
    for binding in all_of(objs, "RoleBinding") + all_of(objs, "ClusterRoleBinding"):
        (subject,) = binding["subjects"]
        assert subject["namespace"] == NAMESPACE
        assert subject["name"] == binding["roleRef"]["name"].replace("-leader-election", "").replace("-webhook-secrets", "").replace("-events", "")
    # Nothing anywhere grants wildcards.
    for role in all_of(objs, "ClusterRole") + all_of(objs, "Role"):
        for r in role["rules"]:
            assert "*" not in r["verbs"] + r["resources"] + r["apiGroups"], role["metadata"]["name"]


def test_pod_delete_is_opt_in(chart):
    objs = objects(render(chart, MATRIX["pod-delete"]))
    assert (("",), ("pods",), ("list", "watch", "delete"), ()) in rules(find(objs, "ClusterRole", "sofort-controller"))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["controller"]["podDelete"] is False


def test_webhook_secrets_by_namespace_and_name(chart):
    objs = objects(render(chart, MATRIX["secrets-by-name"]))
    role = find(objs, "Role", "sofort-controller-webhook-secrets")
    assert role["metadata"]["namespace"] == "ops-secrets"
    assert rules(role) == [(("",), ("secrets",), ("get",), ("statuspage", "chatops"))]
    binding = find(objs, "RoleBinding", "sofort-controller-webhook-secrets")
    assert binding["metadata"]["namespace"] == "ops-secrets"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sofort-controller", "namespace": NAMESPACE}]


def test_agent_rbac_and_admission_policy(chart):
    objs = objects(render(chart))
    assert rules(find(objs, "ClusterRole", "sofort-agent")) == [
        (("",), ("nodes",), ("list", "watch", "patch"), ()),
        (("sofort.dev",), ("patchpolicies",), ("get",), ()),
    ]
    # Events about cluster-scoped Nodes live in `default`: only there.
    events = find(objs, "Role", "sofort-agent-events")
    assert events["metadata"]["namespace"] == "default"
    assert rules(events) == [(("events.k8s.io",), ("events",), ("create", "patch"), ())]
    binding = find(objs, "RoleBinding", "sofort-agent-events")
    assert binding["metadata"]["namespace"] == "default"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sofort-agent", "namespace": NAMESPACE}]
    assert not [b for b in all_of(objs, "ClusterRoleBinding") if b["roleRef"]["name"] == "sofort-agent-events"]
    vap = find(objs, "ValidatingAdmissionPolicy", "sofort-agent-own-node")
    assert vap["apiVersion"] == "admissionregistration.k8s.io/v1"
    spec = vap["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["nodes"] and rule["operations"] == ["UPDATE"]
    (cond,) = spec["matchConditions"]
    assert cond["expression"] == 'request.userInfo.username == "system:serviceaccount:sofort-system:sofort-agent"'
    exprs = " ".join(v["expression"] for v in spec["validations"])
    assert "request.userInfo.extra['authentication.kubernetes.io/node-name']" in exprs
    assert "object.metadata.name" in exprs and "object.spec == oldObject.spec" in exprs
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    # Exactly the keys the agent writes (src/core/node_record.rs).
    assert variables["agentLabels"] == "['sofort.dev/reboot-required']"
    assert variables["agentAnnotations"] == "['sofort.dev/reboot-ack', 'sofort.dev/patch-result', 'sofort.dev/agent-error']"
    node_record = (REPO / "src" / "core" / "node_record.rs").read_text()
    for key in ("sofort.dev/reboot-required", "sofort.dev/reboot-ack", "sofort.dev/patch-result", "sofort.dev/agent-error"):
        assert f'"{key}"' in node_record, key
    binding = find(objs, "ValidatingAdmissionPolicyBinding", "sofort-agent-own-node")
    assert binding["spec"] == {"policyName": vap["metadata"]["name"], "validationActions": ["Deny"]}
    assert not all_of(objects(render(chart, MATRIX["no-admission-policy"])), "ValidatingAdmissionPolicy")


def test_controller_keys_admission_policy(chart):
    objs = objects(render(chart))
    vap = find(objs, "ValidatingAdmissionPolicy", "sofort-controller-keys")
    spec = vap["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["nodes"] and rule["operations"] == ["CREATE", "UPDATE"]
    conditions = {c["name"]: c["expression"] for c in spec["matchConditions"]}
    assert conditions["not-the-sofort-controller"] == 'request.userInfo.username != "system:serviceaccount:sofort-system:sofort-controller"'
    assert conditions["not-an-allowed-group"] == "!request.userInfo.groups.exists(g, g in ['system:masters'])"
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    # Exactly the keys the controller writes (src/core/node_record.rs).
    assert variables["controllerLabels"] == "['sofort.dev/step']"
    assert variables["controllerAnnotations"] == "['sofort.dev/record', 'sofort.dev/done']"
    node_record = (REPO / "src" / "core" / "node_record.rs").read_text()
    for key in ("sofort.dev/step", "sofort.dev/record", "sofort.dev/done"):
        assert f'"{key}"' in node_record, key
    binding = find(objs, "ValidatingAdmissionPolicyBinding", "sofort-controller-keys")
    assert binding["spec"] == {"policyName": "sofort-controller-keys", "validationActions": ["Deny"]}
    no_group = find(objects(render(chart, MATRIX["no-break-glass-group"])), "ValidatingAdmissionPolicy", "sofort-controller-keys")
    assert [c["name"] for c in no_group["spec"]["matchConditions"]] == ["not-the-sofort-controller"]


def test_admission_policy_follows_a_renamed_agent_account(chart):
    objs = objects(render(chart, MATRIX["everything-overridden"]))
    (cond,) = find(objs, "ValidatingAdmissionPolicy", "patcher-agent-own-node")["spec"]["matchConditions"]
    controller = find(objs, "ValidatingAdmissionPolicy", "patcher-controller-keys")["spec"]["matchConditions"][0]
    assert "system:serviceaccount:sofort-system:patcher-ctl" in controller["expression"]
    assert "system:serviceaccount:sofort-system:patcher-node" in cond["expression"]
    assert find(objs, "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == "patcher-node"


def test_service_monitor(chart):
    assert not all_of(objects(render(chart)), "ServiceMonitor")
    objs = objects(render(chart, MATRIX["service-monitor"]))
    sm = find(objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    svc = find(objs, "Service")
    assert all(svc["metadata"]["labels"][k] == v for k, v in sm["spec"]["selector"]["matchLabels"].items())


def test_network_policy(chart):
    assert not all_of(objects(render(chart)), "NetworkPolicy")
    objs = objects(render(chart, MATRIX["network-policy"]))
    ctl = find(objs, "NetworkPolicy", "sofort-controller")
    (ingress,) = ctl["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"] == MATRIX["network-policy"]["networkPolicy"]["metricsFrom"]
    egress = ctl["spec"]["egress"]
    assert egress[0] == {
        "ports": [{"port": 6443, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "172.18.0.2/32"}}],
    }
    assert {p["port"] for p in egress[1]["ports"]} == {53}
    assert egress[2] == MATRIX["network-policy"]["networkPolicy"]["webhookEgress"][0]
    agent_np = find(objs, "NetworkPolicy", "sofort-agent")
    assert agent_np["spec"]["egress"] == egress[:2], "agents get no webhook egress"


def test_notes_say_what_to_apply_next(chart):
    notes = render(chart)["sofort/templates/NOTES.txt"]
    assert "kubectl apply -f examples/nightly-workers.yaml" in notes
    assert "kubectl get pp" in notes
    assert "kubectl apply -f crds/" in notes


def test_crd_in_chart_is_the_generated_one():
    chart_crd = CHART / "crds" / "patchpolicy.yaml"
    assert not chart_crd.is_symlink(), "a symlink does not survive helm package; copy the file"
    assert chart_crd.read_bytes() == (REPO / "crds" / "patchpolicy.yaml").read_bytes(), (
        "charts/sofort/crds/patchpolicy.yaml differs from crds/patchpolicy.yaml; "
        "copy it with: cp crds/patchpolicy.yaml charts/sofort/crds/patchpolicy.yaml"
    )


def test_chart_crds_are_loaded_by_helm(chart):
    (crd,) = chart.crds
    assert crd["filename"].endswith("crds/patchpolicy.yaml"), crd["filename"]
    assert crd["data"] == (CHART / "crds" / "patchpolicy.yaml").read_text()
    assert yaml.safe_load(crd["data"])["metadata"]["name"] == "patchpolicies.sofort.dev"


def test_chart_version_is_the_crate_version(chart):
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    crate = cargo["workspace"]["package"]["version"]
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert (meta["version"], meta["appVersion"]) == (crate, crate), (
        f"Chart.yaml version/appVersion must equal the crate version {crate}"
    )
    assert isinstance(meta["appVersion"], str)
