#!/usr/bin/env bash
# Session start through the in-container helper (labssh-init) vs through Docker exec,
# on one container in one run (BENCHMARKS.md, "Session start: helper vs docker exec"):
# p50/p99/max of spawning `true` and reading its exit status, sequentially and with
# 50 in parallel, the ratios, and the helper's RSS idle and with 50 shells open.
#
#   bash scripts/bench-spawn.sh
#   bash scripts/bench-spawn.sh --sequential 300 --rounds 5
#   PROFILE=dev bash scripts/bench-spawn.sh     # skip the release build
#
# Settings (environment):
#   PROFILE   cargo profile of the benchmark (release, as the agent ships)
#   IMAGE     the container's image (labssh/busybox:latest, built if missing)
# Arguments go to the benchmark: --sequential N (100), --parallel N (50),
# --rounds N (3 parallel batches per path), --sessions N (50), --image IMAGE.
#
# Needs root (the agent reaches the helper through the container's init in /proc)
# and Docker. Nothing is timed as a test; the numbers are only printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-release}"
IMAGE="${IMAGE:-labssh/busybox:latest}"

if [ "$(id -u)" != 0 ]; then
  echo "bench-spawn: run as root (the helper's socket directory is root's)" >&2
  exit 1
fi
docker info >/dev/null 2>&1 || { echo "bench-spawn: Docker is not running" >&2; exit 1; }
if [ "$IMAGE" = labssh/busybox:latest ]; then
  bash scripts/build-busybox-image.sh "$IMAGE" >/dev/null
fi

# Building the agent builds labssh-init too (backend-agent/build.rs); the agent finds it.
cargo build --profile "$PROFILE" -p labssh-agent --example bench-spawn
dir=release
[ "$PROFILE" = dev ] && dir=debug
[ "$PROFILE" != dev ] && [ "$PROFILE" != release ] && dir="$PROFILE"
echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), profile $PROFILE, kernel $(uname -r)"
exec "target/$dir/examples/bench-spawn" --image "$IMAGE" "$@"
