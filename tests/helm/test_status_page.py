"""The status page in the chart: off by default; when on, its own port,
Service and (optional) Ingress for the /status paths only, branding passed
as environment values, and the NetworkPolicy opening just that port."""

from __future__ import annotations

import helm_python as helm
import pytest

from conftest import CHART, NAMESPACE, all_of, container, find, objects, render

ON = {
    "statusPage": {
        "enabled": True,
        "baseUrl": "https://status.example.com",
        "branding": {
            "company": "Example Hosting",
            "logoUrl": "https://example.com/logo.png",
            "accent": "#c62828",
            "language": "de",
            "timeZone": "Europe/Zurich",
        },
        "ingress": {"enabled": True, "className": "nginx", "host": "status.example.com", "tlsSecretName": "status-tls"},
    },
    "networkPolicy": {"enabled": True},
}


def env(c):
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def test_off_by_default(chart):
    objs = objects(render(chart))
    assert not [o for o in all_of(objs, "Service") if o["metadata"]["name"].endswith("-status")]
    assert not all_of(objs, "Ingress")
    c = container(find(objs, "Deployment", "sofort-controller"))
    assert "SOFORT_STATUS_ADDR" not in env(c)
    assert [p["name"] for p in c["ports"]] == ["metrics"]


def test_enabled_page_has_its_own_port_service_and_ingress(chart):
    objs = objects(render(chart, ON))
    c = container(find(objs, "Deployment", "sofort-controller"))
    e = env(c)
    assert e["SOFORT_STATUS_ADDR"] == "0.0.0.0:8090"
    assert e["SOFORT_STATUS_COMPANY"] == "Example Hosting"
    assert e["SOFORT_STATUS_LANGUAGE"] == "de"
    assert e["SOFORT_STATUS_TIME_ZONE"] == "Europe/Zurich"
    assert e["SOFORT_STATUS_ACCENT"] == "#c62828"
    assert e["SOFORT_STATUS_LOGO_URL"] == "https://example.com/logo.png"
    assert e["SOFORT_STATUS_BASE_URL"] == "https://status.example.com"
    assert {"name": "status", "containerPort": 8090, "protocol": "TCP"} in c["ports"]
    svc = find(objs, "Service", "sofort-controller-status")
    assert svc["spec"]["ports"] == [{"name": "status", "port": 8090, "targetPort": "status", "protocol": "TCP"}]
    ing = find(objs, "Ingress", "sofort-controller-status")
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "status.example.com"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/status" and path["backend"]["service"]["port"]["name"] == "status"
    assert ing["spec"]["tls"] == [{"secretName": "status-tls", "hosts": ["status.example.com"]}]
    np = find(objs, "NetworkPolicy", "sofort-controller")
    assert [i["ports"] for i in np["spec"]["ingress"]] == [
        [{"port": "metrics", "protocol": "TCP"}],
        [{"port": "status", "protocol": "TCP"}],
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"branding": {"accent": "red"}},
        {"branding": {"language": "fr"}},
        {"branding": {"logoUrl": "javascript:alert(1)"}},
        {"history": 51},
        {"baseUrl": "ftp://status.example.com"},
    ],
)
def test_bad_branding_is_refused(chart, bad):
    with pytest.raises(Exception):
        render(chart, {"statusPage": {"enabled": True, **bad}})
