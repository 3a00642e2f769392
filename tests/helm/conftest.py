"""Shared helpers for the chart tests: the chart rendered by the real Helm engine."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sofort"
RELEASE = "sofort"
NAMESPACE = "sofort-system"
# Rendered manifests are written here for the Rust test (tests/chart.rs), which
# deserializes them into k8s-openapi types and parses the container args with
# the binary's own CLI definitions.
RENDER_DIR = pathlib.Path(os.environ.get("SOFORT_CHART_RENDER_DIR", REPO / "target" / "chart-render"))

# Non-default values rendered besides the defaults; every case lands in RENDER_DIR/<case>/.
MATRIX: dict[str, dict[str, Any]] = {
    "default": {},
    "reboot-command": {"agent": {"rebootMethod": "command", "rebootCommand": ["/usr/bin/systemctl", "reboot", "--no-wall"]}},
    "host-commands": {"agent": {"hostCommands": {"enabled": True}}},
    "sentinel-command": {"agent": {"sentinel": {"command": ["/usr/bin/test", "-e", "/run/reboot-required"]}}},
    "custom-sentinel-path": {"agent": {"sentinel": {"hostPath": "/run/sofort/needs-reboot"}}},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}},
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "apiServer": {"cidrs": ["10.96.0.1/32", "172.18.0.2/32"], "ports": [6443]},
            "webhookEgress": [
                {"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
            ],
        }
    },
    "digest": {"image": {"repository": "registry.example.com/ops/sofort", "digest": "sha256:" + "ab" * 32}},
    "single-replica": {"controller": {"replicas": 1, "leaderElection": {"enabled": False}, "podDisruptionBudget": {"enabled": False}}},
    "pod-delete": {"controller": {"podDelete": True}},
    "secrets-by-name": {"notify": {"secretsNamespace": "ops-secrets", "secretNames": ["statuspage", "chatops"]}},
    "no-admission-policy": {"agent": {"admissionPolicy": {"enabled": False}}, "controller": {"admissionPolicy": {"enabled": False}}},
    "no-break-glass-group": {"controller": {"admissionPolicy": {"allowedGroups": []}}},
    "everything-overridden": {
        "fullnameOverride": "patcher",
        "commonLabels": {"team": "platform"},
        "image": {"repository": "registry.example.com/ops/sofort", "tag": "0.1.0-rc.1", "pullPolicy": "Always"},
        "imagePullSecrets": ["regcred"],
        "logFormat": "text",
        "logLevel": "sofort=debug,info",
        "controller": {
            "replicas": 3,
            "leaderElection": {"leaseName": "patcher-leader", "leaseDuration": "30s"},
            "maxEvictionsInFlight": 2,
            "evictionRetry": "10s",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": 1, "memory": "512Mi"}},
            "podDisruptionBudget": {"maxUnavailable": "50%"},
            "topologySpread": {"maxSkew": 2, "whenUnsatisfiable": "DoNotSchedule"},
            "priorityClassName": "system-cluster-critical",
            "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}]
                    }
                }
            },
            "podAnnotations": {"example.com/owner": "platform"},
            "podLabels": {"tier": "ops"},
            "serviceAccount": {"name": "patcher-ctl", "annotations": {"example.com/role": "ctl"}},
        },
        "agent": {
            "checkInterval": "1m",
            "metricsPort": 9102,
            "resources": {"requests": {"cpu": "10m", "memory": "20Mi"}, "limits": {"memory": "48Mi"}},
            "priorityClassName": "system-node-critical",
            "nodeSelector": {"kubernetes.io/os": "linux", "pool": "workers"},
            "maxUnavailable": 2,
            "podAnnotations": {"example.com/owner": "platform"},
            "podLabels": {"tier": "ops"},
            "serviceAccount": {"name": "patcher-node", "annotations": {"example.com/role": "node"}},
            "admissionPolicy": {"validationActions": ["Warn", "Audit"]},
        },
        "metrics": {"port": 9090, "service": {"type": "ClusterIP", "annotations": {"example.com/scrape": "true"}}},
    },
}


@pytest.fixture(scope="session")
def chart() -> helm.Chart:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, str]:
    """Templates rendered as `helm install` would (schema checked, values merged)."""
    return chart.render(values or None, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object in the rendered templates (NOTES.txt excluded)."""
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append(doc)
    return out


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in hits]}"
    return hits[0]


def all_of(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, containers
    return containers[0]
