#!/usr/bin/env bash
# Installs the tools the test suite needs beyond cargo into .tools/ in the
# repository (nothing system-wide): a Python virtual environment with the Helm
# engine (helm-python-sdk embeds Helm as a library), pytest and PyYAML, pinned
# in tests/helm/requirements.txt. Idempotent: does nothing when the environment
# already matches the requirements file. Needs Python 3.11+ with venv and pip.
#
# Debian packages are installed system-wide when their binary is missing:
# `prometheus` for promtool (the alert and dashboard tests) and for the server
# the health gate tests start, `lua5.1` (the Argo CD health check test),
# `prometheus-alertmanager` and `prometheus-pushgateway` (the health gate tests
# start them on 127.0.0.1 ports of their own), `chromium` (the status page
# tests) and `openssl` (certificates of the SMTP tests). This needs root and Debian's mirrors; apt-get
# update runs only when something is to be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing+=(prometheus)
command -v lua5.1 >/dev/null 2>&1 || missing+=(lua5.1)
# Health gates: the real Prometheus server, Alertmanager and Pushgateway.
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
# Status page tests: headless Chromium; channel tests: openssl for their certificates.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-test-tools: install the Debian packages ${missing[*]}; this needs root and apt-get" >&2
    exit 1
  fi
  echo "setup-test-tools: installing ${missing[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv=.tools/venv
req=tests/helm/requirements.txt
stamp=$venv/.requirements.sha256
python=${PYTHON:-python3}

want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup-test-tools: $python is older than 3.11 (set PYTHON=...)" >&2
  exit 1
fi

echo "setup-test-tools: installing $req into $venv" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --require-virtualenv -r "$req"
# The Helm library loads at import time; fail here rather than in the tests.
"$venv/bin/python" -c 'import helm_python, pytest, yaml; print("setup-test-tools: Helm", helm_python.helm_sdk_version(), "ready", file=__import__("sys").stderr)'
"$venv/bin/python" -c 'import feedparser, aiosmtpd, jsonschema'
echo "$want" > "$stamp"
