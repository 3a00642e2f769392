#!/usr/bin/env bash
# Measures the footprint of `sofort agent` against the cluster of $KUBECONFIG
# (the sandbox's kubeconfig, or a real cluster): resident memory after start-up,
# CPU used while idle, and whether SIGTERM stops it cleanly.
#
#   scripts/agent-rss.sh [--node NAME] [--settle SECONDS] [--idle SECONDS] [--binary PATH]
#
# The node must exist in that cluster. The agent runs with a sentinel file in a
# temporary directory and the signal reboot method; it never reboots anything
# unless the node's record asks for it, so point it at a node that is idle.
set -euo pipefail

node=n1
settle=10
idle=30
binary=${CARGO_TARGET_DIR:-target}/release/sofort

while [[ $# -gt 0 ]]; do
  case $1 in
    --node) node=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

if [[ ! -x $binary ]]; then
  echo "no agent binary at $binary; build it with: cargo build --release" >&2
  exit 2
fi
: "${KUBECONFIG:?set KUBECONFIG to the cluster to measure against}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$binary" agent --node-name "$node" --sentinel-file "$tmp/reboot-required" \
  --metrics-addr 127.0.0.1:0 --check-interval 5m >"$tmp/log" 2>&1 &
pid=$!

sleep "$settle"
if ! kill -0 "$pid" 2>/dev/null; then
  echo "the agent exited during start-up:" >&2
  cat "$tmp/log" >&2
  exit 1
fi

ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(ticks)
sleep "$idle"
after=$(ticks)
hz=$(getconf CLK_TCK)

rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
printf 'agent RSS after start-up: %d KiB (%.1f MiB), peak %d KiB, %d threads\n' \
  "$rss" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$hwm" "$threads"
printf 'CPU while idle for %ss: %s ticks (%s per second)\n' "$idle" "$((after - before))" "$hz"

kill -TERM "$pid"
if wait "$pid"; then
  echo "SIGTERM: clean exit"
else
  echo "SIGTERM: exit status $?" >&2
  tail -5 "$tmp/log" >&2
  exit 1
fi
if (( rss >= 10 * 1024 )); then
  echo "RSS is over the 10 MiB budget" >&2
  exit 1
fi
