#!/usr/bin/env bash
# Installs the tools the test suite needs beyond cargo into .tools/ in the
# repository (nothing system-wide): a Python virtual environment with the Helm
# engine (helm-python-sdk embeds Helm as a library), pytest and PyYAML, pinned
# in tests/helm/requirements.txt. Idempotent: does nothing when the environment
# already matches the requirements file. Needs Python 3.11+ with venv and pip.
set -euo pipefail
cd "$(dirname "$0")/.."

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
echo "$want" > "$stamp"
