#!/usr/bin/env bash
# Runs sofort's whole test suite on a fresh clone: it installs what the tests
# need into the repository (nothing system-wide) and then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Property tests run a bounded number of cases; raise with SOFORT_PROPTEST_CASES.
export SOFORT_PROPTEST_CASES="${SOFORT_PROPTEST_CASES:-64}"

if [ -x scripts/setup-test-tools.sh ]; then
  scripts/setup-test-tools.sh
fi

# Benchmarks print figures and take minutes: run them with `cargo bench`, not here.
cargo test --workspace --lib --bins --tests --locked "$@"
# Doc tests are not part of --all-targets.
cargo test --workspace --doc --locked
