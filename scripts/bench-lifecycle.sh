#!/usr/bin/env bash
# Waking a class (BENCHMARKS.md, "Waking paused and stopped containers"): STUDENTS
# students whose containers labssh paused, then stopped, after idling all log in at
# once; beside them the same number of raw `docker unpause` / `docker start` of
# plain containers of the same image, all at once. Same run, same machine.
#
#   bash scripts/bench-lifecycle.sh
#   STUDENTS=20 PROFILE=dev bash scripts/bench-lifecycle.sh
#
# Settings (environment):
#   STUDENTS       students, and raw containers                       (100)
#   IMAGE          the containers' image                              (labssh/busybox:latest)
#   IDLE_PAUSE     the environment's idle_pause_after                 (3s)
#   IDLE_STOP      the environment's idle_stop_after                  (20s)
#   WAIT           seconds to wait for the agent to pause / stop them (180)
#   PORT           labssh listens here                                (42200)
#   PROFILE        cargo profile of the binaries                      (release)
#   OUT            results directory                                  (target/bench-lifecycle-DATE)
#
# Prints one table: p50/p99 of a labssh login (connect to exit of `true`) into a running,
# a paused and a stopped container, of the raw Docker calls, and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

STUDENTS="${STUDENTS:-100}"
IMAGE="${IMAGE:-labssh/busybox:latest}"
IDLE_PAUSE="${IDLE_PAUSE:-3s}"
IDLE_STOP="${IDLE_STOP:-20s}"
WAIT="${WAIT:-180}"
PORT="${PORT:-42200}"
PROFILE="${PROFILE:-release}"
OUT="${OUT:-target/bench-lifecycle-$(date +%Y%m%d-%H%M%S)}"
PREFIX=lbwake            # labssh containers: lbwake-student001.default
RAW_LABEL=labssh-bench=wake-raw

say() { echo "bench-lifecycle: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh

docker info >/dev/null 2>&1 || die "Docker does not answer (bash scripts/setup-host.sh starts it)"
command -v python3 >/dev/null || die "python3 is missing (it reads the load generator's summary)"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "port $PORT is taken; choose another PORT"; fi
case "$IMAGE" in
  labssh/busybox:*) bash scripts/build-busybox-image.sh "$IMAGE" >/dev/null ;;
  *) docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE is not present locally" ;;
esac

say "building labssh and labssh-loadtest ($PROFILE)"
cargo build --profile "$PROFILE" -p labssh -p labssh-loadtest --bin labssh --bin labssh-loadtest
case "$PROFILE" in dev) BIN=target/debug ;; *) BIN="target/$PROFILE" ;; esac
BIN="$(cd "$BIN" && pwd)"

WORK="$(mktemp -d /tmp/labssh-wake.XXXXXX)"
pids=()
cleanup() {
  stop_started
  docker ps -aq --filter "label=$RAW_LABEL" | xargs -r docker rm -f >/dev/null 2>&1 || true
  remove_lab "$PREFIX"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || true

# quantiles FILE: "p50 p99" (nearest rank) of the milliseconds in FILE, one per line.
quantiles() {
  sort -n "$1" | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "- -"; exit }
    i50 = int(0.50 * NR); if (i50 < 0.50 * NR) i50++
    i99 = int(0.99 * NR); if (i99 < 0.99 * NR) i99++
    printf "%.1f %.1f\n", v[i50], v[i99] }'
}

# all_at_once VERB FILE: `docker VERB` on every raw container at once, each call's
# milliseconds into FILE; fails if any call failed.
all_at_once() {
  local verb=$1 file=$2
  docker ps -aq --filter "label=$RAW_LABEL" | xargs -P "$STUDENTS" -I{} sh -c '
    s=$(date +%s%N); docker "$1" "$2" >/dev/null || exit 255; e=$(date +%s%N)
    echo $(( (e - s) / 1000 )) | awk "{ printf \"%.3f\\n\", \$1 / 1000 }"
  ' _ "$verb" {} > "$file"
  [ "$(wc -l < "$file")" -eq "$STUDENTS" ] || die "not every docker $verb succeeded"
}

# --- raw Docker -------------------------------------------------------------------
say "raw Docker: $STUDENTS containers of $IMAGE"
seq 1 "$STUDENTS" | xargs -P 4 -I{} docker run -d --label "$RAW_LABEL" --network none \
  "$IMAGE" sleep 2147483647 >/dev/null
docker ps -q --filter "label=$RAW_LABEL" | xargs -r docker pause >/dev/null
all_at_once unpause "$WORK/raw-unpause.ms"
docker ps -q --filter "label=$RAW_LABEL" | xargs -r docker stop -t 0 >/dev/null
all_at_once start "$WORK/raw-start.ms"
docker ps -aq --filter "label=$RAW_LABEL" | xargs -r docker rm -f >/dev/null

# --- labssh -----------------------------------------------------------------------
say "starting labssh on 127.0.0.1:$PORT: idle_pause_after=$IDLE_PAUSE idle_stop_after=$IDLE_STOP"
mkdir -p "$WORK/labssh"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
cat > "$WORK/labssh/agent.toml" <<EOF
name = "local"
capacity = $((STUDENTS > 300 ? STUDENTS : 300))
container_prefix = "$PREFIX"
EOF
cat > "$WORK/labssh/controller.toml" <<EOF
default_environment = "default"
[environments.default]
image = "$IMAGE"
idle_pause_after = "$IDLE_PAUSE"
idle_stop_after = "$IDLE_STOP"
EOF
for i in $(seq 1 "$STUDENTS"); do
  "$BIN/labssh" user add "$(printf "student%03d" "$i")" \
    --key "$WORK/id.pub" --users "$WORK/labssh/users.toml" >/dev/null
done
START_TIMEOUT=120 start labssh "$PORT" "$BIN/labssh" up --dir "$WORK/labssh" \
  --listen "127.0.0.1:$PORT" --http ""

# $WORK/until.sh STATE: waits until every student's container is in Docker's STATE
# (the load generator runs it before a wave).
cat > "$WORK/until.sh" <<EOF
n=0
for _ in \$(seq 1 $((WAIT * 2))); do
  n=\$(docker ps -aq --filter label=labssh.prefix=$PREFIX --filter "status=\$1" | wc -l)
  [ "\$n" -ge $STUDENTS ] && exit 0
  sleep 0.5
done
echo "bench-lifecycle: only \$n of $STUDENTS containers \$1 after $WAIT s" >&2
exit 1
EOF

# wave NAME [BEFORE]: every student logs in at once and runs `true`.
wave() {
  local name=$1; shift
  "$BIN/labssh-loadtest" sweep --levels "$STUDENTS" --command true --phase-timeout 300 \
    --target "labssh=127.0.0.1:$PORT,users=student:$STUDENTS,key=$WORK/id" \
    --out "$OUT/$name" "$@" >/dev/null
  python3 - "$OUT/$name/summary.json" "$STUDENTS" <<'EOF'
import json, sys
records = json.load(open(sys.argv[1]))
record = records[0] if isinstance(records, list) else records
if record["ok"] != int(sys.argv[2]):
    sys.exit(f"bench-lifecycle: only {record['ok']} of {sys.argv[2]} logins succeeded: {record['failed']}")
print(f"{record['total']['p50_ms']:.1f} {record['total']['p99_ms']:.1f}")
EOF
}

say "creating the $STUDENTS containers (first login)"
wave create >/dev/null
say "every student logs in at once into a running container"
read -r run50 run99 < <(wave running)
say "waiting for the agent to pause them"
read -r pau50 pau99 < <(wave paused --before-level "sh $WORK/until.sh paused")
say "waiting for the agent to stop them"
read -r sto50 sto99 < <(wave stopped --before-level "sh $WORK/until.sh exited")
read -r un50 un99 < <(quantiles "$WORK/raw-unpause.ms")
read -r st50 st99 < <(quantiles "$WORK/raw-start.ms")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
{
  echo "students=$STUDENTS image=$IMAGE profile=$PROFILE cpus=$(nproc) docker=$(docker version --format '{{.Server.Version}}')"
  printf "%-36s %10s %10s\n" "all at once" "p50 ms" "p99 ms"
  printf "%-36s %10s %10s\n" "labssh login, container running" "$run50" "$run99"
  printf "%-36s %10s %10s\n" "labssh login, container paused" "$pau50" "$pau99"
  printf "%-36s %10s %10s\n" "raw docker unpause" "$un50" "$un99"
  printf "%-36s %10s %10s\n" "labssh login, container stopped" "$sto50" "$sto99"
  printf "%-36s %10s %10s\n" "raw docker start" "$st50" "$st99"
  echo "ratios (labssh login / raw call): paused $(ratio "$pau50" "$un50")x p50, $(ratio "$pau99" "$un99")x p99;" \
    "stopped $(ratio "$sto50" "$st50")x p50, $(ratio "$sto99" "$st99")x p99"
} | tee "$OUT/table.txt"
