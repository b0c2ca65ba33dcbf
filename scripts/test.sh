#!/usr/bin/env bash
# The test command: sets up a fresh Debian machine (Docker, Redis, OpenSSH
# client, the busybox test image) and runs every test against the real parts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
bash scripts/build-busybox-image.sh labssh/busybox:latest
cargo test --workspace --all-targets "$@"
# The session tests again with every environment on Docker exec, the fallback for
# containers without the in-container helper (the run above uses the helper).
# `--workspace`, as above: with `-p labssh` cargo would resolve the dependencies'
# features for that one package and build every dependency a second time.
LABSSH_TEST_SPAWN=exec cargo test --workspace --test e2e "$@" -- sessions::
# deploy/kubernetes's overlays, its Secrets and the agent's own Pods, PVCs and
# NetworkPolicies against the Kubernetes API's schemas (no cluster runs here).
bash scripts/validate-kubernetes.sh
# Every cargo-fuzz target for a few seconds, as a smoke test (scripts/fuzz.sh). It needs
# the nightly toolchain; the stable replay of the same checks over the committed seeds
# ran above in any case (labssh-fuzz-checks' corpus test).
if cargo +nightly --version >/dev/null 2>&1; then
  bash scripts/fuzz.sh smoke 3
else
  echo "test.sh: no nightly toolchain here (rustup toolchain install nightly): cargo-fuzz smoke run skipped" >&2
fi
