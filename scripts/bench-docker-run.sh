#!/usr/bin/env bash
# Docker's own start throughput (BENCHMARKS.md, "Class start"): COUNT `docker run -d`
# of the image, helper-like (a label, a home volume), at parallelism 1, 2, 4, 8, 16
# and all at once; per level the wall time, containers per second and the p50/p99 of
# one run. Which start concurrency suits this Docker is the level where throughput
# stops growing. No labssh involved.
#
#   bash scripts/bench-docker-run.sh
#   COUNT=32 LEVELS="1 4 all" NETWORK=mynet bash scripts/bench-docker-run.sh
#
# Settings (environment):
#   COUNT    containers per level                    (48)
#   LEVELS   parallelism levels ("all" = COUNT)      (1 2 4 8 16 all)
#   IMAGE    the image                               (labssh/busybox:latest)
#   NETWORK  network of the containers               (Docker's default bridge)
#   ICC      with NETWORK unset: "false" makes a bridge with enable_icc=false, as
#            labssh's, for the run                   (unset)
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT="${COUNT:-48}"
LEVELS="${LEVELS:-1 2 4 8 16 all}"
IMAGE="${IMAGE:-labssh/busybox:latest}"
NETWORK="${NETWORK:-}"
LABEL=labssh-bench=docker-run
NAME=lbbenchdr

say() { echo "bench-docker-run: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh

docker info >/dev/null 2>&1 || die "Docker does not answer (bash scripts/setup-host.sh starts it)"
bench_image "$IMAGE"
WORK="$(mktemp -d /tmp/labssh-bench-dr.XXXXXX)"
made_network=""
remove_all() {
  docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker volume ls -q --filter "label=$LABEL" | xargs -r docker volume rm >/dev/null 2>&1 || true
}
cleanup() {
  remove_all
  [ -n "$made_network" ] && docker network rm "$made_network" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
remove_all
if [ -z "$NETWORK" ] && [ "${ICC:-}" = false ]; then
  made_network="$NAME-net-$$"
  docker network create --label "$LABEL" -o com.docker.network.bridge.enable_icc=false "$made_network" >/dev/null
  NETWORK=$made_network
fi

# one I: container I, as the class-start benchmark's raw run.
one() {
  docker run -d --name "$NAME$1" --label "$LABEL" ${NETWORK:+--network "$NETWORK"} \
    --mount "type=volume,source=$NAME-home$1,target=/home/s$1,volume-label=$LABEL" \
    "$IMAGE" sleep 2147483647 >/dev/null
}
# worker W P OUT: runs containers W, W+P, W+2P… one after another.
worker() {
  local i=$1
  while [ "$i" -le "$COUNT" ]; do
    s=$(date +%s%N); one "$i"; e=$(date +%s%N)
    echo $(( (e - s) / 1000000 )) >> "$3"
    i=$((i + $2))
  done
}

printf "%-12s %9s %12s %8s %8s\n" parallelism wall_ms "containers/s" p50_ms p99_ms
for level in $LEVELS; do
  p=$level; [ "$p" = all ] && p=$COUNT
  : > "$WORK/ms"
  s=$(date +%s%N)
  jobs=()
  for w in $(seq 1 "$p"); do worker "$w" "$p" "$WORK/ms" & jobs+=($!); done
  wait "${jobs[@]}"
  wall=$(( ($(date +%s%N) - s) / 1000000 ))
  [ "$(wc -l < "$WORK/ms")" -eq "$COUNT" ] || die "level $level: some runs failed"
  awk -v p="$level" -v w="$wall" -v n="$COUNT" -v a="$(pct "$WORK/ms" 50)" -v b="$(pct "$WORK/ms" 99)" \
    'BEGIN {printf "%-12s %9d %12.2f %8d %8d\n", p, w, n * 1000 / w, a, b}'
  remove_all
done
echo "count=$COUNT image=$IMAGE network=${NETWORK:-bridge} cpus=$(nproc) docker=$(docker version -f '{{.Server.Version}}')"
