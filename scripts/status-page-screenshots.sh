#!/usr/bin/env bash
# Regenerates the pictures of docs/status-page.md from the urgent demo: runs
# `sofort sandbox --urgent`, and has headless Chromium take the public status
# page at phone (412 px) and desktop (1280 px) width while the rollout is in
# progress and again once it completed; saves the Atom feed after completion
# as well. Writes docs/images/status-page-{in-progress,completed}{-phone,}.png
# and docs/status-page-urgent.atom.
#
# Needs chromium (Debian's package; scripts/setup-test-tools.sh installs it),
# curl and python3. Builds the release binary first, unless SOFORT_BIN names
# a sofort binary to run instead.
set -euo pipefail
cd "$(dirname "$0")/.."

out=docs/images
mkdir -p "$out"
work=$(mktemp -d)
sandbox_pid=

stop_sandbox() {
  [ -n "$sandbox_pid" ] || return 0
  kill -INT "$sandbox_pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$sandbox_pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -TERM "$sandbox_pid" 2>/dev/null || true
  wait "$sandbox_pid" 2>/dev/null || true
  sandbox_pid=
}
cleanup() {
  stop_sandbox
  rm -rf "$work"
}
trap cleanup EXIT

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "status-page-screenshots: needs chromium; run scripts/setup-test-tools.sh" >&2
  exit 1
fi

sofort=${SOFORT_BIN:-}
if [ -z "$sofort" ]; then
  cargo build --release --quiet --bin sofort
  sofort=target/release/sofort
fi
"$sofort" sandbox --urgent --plain --kubeconfig "$work/kubeconfig" \
  >"$work/sandbox.out" 2>&1 &
sandbox_pid=$!

# The sandbox prints `status:     http://127.0.0.1:PORT/status ...`.
url=
for _ in $(seq 300); do
  url=$(sed -n 's|^ *status: *\(http://[0-9.:]*/status\).*|\1|p' "$work/sandbox.out" | head -n 1)
  [ -n "$url" ] && break
  kill -0 "$sandbox_pid" 2>/dev/null || { cat "$work/sandbox.out" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "status-page-screenshots: no status URL printed" >&2; exit 1; }
echo "status-page-screenshots: page at $url" >&2

# Waits (up to 3 minutes) until the page's JSON passes the Python test $1
# (on `d`, the document).
wait_json() {
  for _ in $(seq 1800); do
    if curl -fsS "$url.json" 2>/dev/null |
      python3 -c "import json, sys; d = json.load(sys.stdin); sys.exit(0 if ($1) else 1)" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "status-page-screenshots: timed out waiting for: $1" >&2
  exit 1
}

# Fails unless the page's JSON passes the Python test $1 now.
check_json() {
  curl -fsS "$url.json" | python3 -c "import json, sys; d = json.load(sys.stdin); sys.exit(0 if ($1) else 1)" ||
    { echo "status-page-screenshots: the page moved on during the screenshots; run again" >&2; exit 1; }
}

# Screenshots at phone and desktop width, taken at once: $1 is the state.
shoot() {
  local pids=()
  for spec in "412 1000 -phone" "1280 800 "; do
    read -r width height suffix <<<"$spec"
    mkdir -p "$work/profile$width"
    "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
      --disable-background-networking --disable-component-update --disable-sync \
      --hide-scrollbars --user-data-dir="$work/profile$width" \
      --window-size="$width,$height" \
      --screenshot="$out/status-page-$1$suffix.png" "$url" >/dev/null 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}

# Under way: a few servers updated, so the expected completion shows.
wait_json 'd["status"] == "securityMaintenance" and d["current"][0]["servers"]["updated"] >= 2'
shoot in-progress
# The shots must show the rollout still under way.
check_json 'd["status"] == "securityMaintenance"'

wait_json 'd["status"] == "operational" and d["history"] and d["history"][0]["state"] == "completed"'
shoot completed
curl -fsS "$url.atom" >docs/status-page-urgent.atom
stop_sandbox

ls -l "$out"/status-page-*.png docs/status-page-urgent.atom >&2
