#!/usr/bin/env bash
# Waking idle containers (BENCHMARKS.md, "Lifecycle: paused and stopped logins"):
# USERS students whose containers are all paused (then all stopped) log in at once
# through labssh, beside USERS raw `docker unpause` (then `docker start`) run at once
# on containers of the same image. p50/p99 of each and the ratios.
#
#   bash scripts/bench-lifecycle.sh
#   USERS=20 PROFILE=dev bash scripts/bench-lifecycle.sh     # a quick check
#
# Settings (environment):
#   USERS          students logging in at once              (100)
#   COMMAND        what every login runs                    (true)
#   IMAGE          the containers' image                    (labssh/busybox:latest)
#   OUT            results directory                        (target/bench-lifecycle-DATE)
#   PORT           labssh's SSH port                        (42150)
#   PHASE_TIMEOUT  seconds any one phase may take           (300)
#   PROFILE        cargo profile of the binaries            (release)
#
# The containers are paused and stopped with the docker CLI before each level, as the
# idle loop would (`idle_pause_after`, `idle_stop_after`), so the figures do not wait
# on timers. Needs Docker and the OpenSSH client.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS="${USERS:-100}"
COMMAND="${COMMAND:-true}"
IMAGE="${IMAGE:-labssh/busybox:latest}"
OUT="${OUT:-target/bench-lifecycle-$(date +%Y%m%d-%H%M%S)}"
PORT="${PORT:-42150}"
PHASE_TIMEOUT="${PHASE_TIMEOUT:-300}"
PROFILE="${PROFILE:-release}"

PREFIX=lbbenchlc                # labssh containers: lbbenchlc-student001.default
RAW_LABEL=labssh-bench=lifecycle-raw

say() { echo "bench-lifecycle: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh

command -v ssh-keygen >/dev/null || die "ssh-keygen is missing: apt-get install openssh-client"
docker info >/dev/null 2>&1 || die "Docker does not answer (bash scripts/setup-host.sh starts it)"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "port $PORT is taken; choose another PORT"; fi
bench_image "$IMAGE"

build_labssh_and_loadtest "$PROFILE"

WORK="$(mktemp -d /tmp/labssh-bench-lc.XXXXXX)"
pids=()
cleanup() {
  stop_started
  remove_lab "$PREFIX"
  docker ps -aq --filter "label=$RAW_LABEL" | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
mkdir -p "$OUT"
lab_config "$WORK/labssh" "$PREFIX" "$USERS" "$WORK/id.pub"
say "starting labssh on 127.0.0.1:$PORT with $USERS students"
start labssh "$PORT" "$BIN/labssh" up --dir "$WORK/labssh" --listen "127.0.0.1:$PORT" --image "$IMAGE"

ulimit -n 65536 2>/dev/null || true
target="labssh=127.0.0.1:$PORT,users=student:$USERS,key=$WORK/id"
all="docker ps -q --filter label=labssh.prefix=$PREFIX"
# sweep NAME BEFORE: one level of USERS logins at once after BEFORE ran.
sweep() {
  local name=$1 before=$2
  "$BIN/labssh-loadtest" sweep --levels "$USERS" --command "$COMMAND" \
    --phase-timeout "$PHASE_TIMEOUT" --target "$target" --out "$OUT/$name" \
    ${before:+--before-level "$before"} >"$WORK/$name.log" 2>&1 ||
    { tail -n 20 "$WORK/$name.log" >&2; die "the $name sweep failed"; }
}
say "creating the $USERS containers (one warm round)"
sweep warm ""
say "logins into running containers"
sweep running ""
say "logins into paused containers"
sweep paused "$all | xargs -r docker pause >/dev/null"
say "logins into stopped containers"
sweep stopped "docker ps -aq --filter label=labssh.prefix=$PREFIX | xargs -r docker stop -t 1 >/dev/null"

# raw ACTION: USERS containers of the image, each `docker ACTION`ed at once, timed.
say "raw docker unpause / start on $USERS containers"
seq 1 "$USERS" | xargs -P 4 -I{} docker run -d --label "$RAW_LABEL" --network none "$IMAGE" sleep 2147483647 >/dev/null
raw_ids=$(docker ps -q --filter "label=$RAW_LABEL")
raw() {
  local action=$1 out=$2 ids=($raw_ids)
  one() { docker "$action" "${ids[$(($1 - 1))]}"; }
  at_once "$out.lines" "${#ids[@]}" one
  awk -F, '{print int(($3 - $2) / 1000000)}' "$out.lines" > "$out"
}
echo "$raw_ids" | xargs docker pause >/dev/null
raw unpause "$WORK/raw-unpause.ms"
echo "$raw_ids" | xargs docker stop -t 1 >/dev/null
raw start "$WORK/raw-start.ms"

# login P S: the loadtest's p50 or p99 (P) of whole logins in sweep S (phases.csv).
login() {
  awk -F, -v col="$1_ms" 'NR==1 {for(i=1;i<=NF;i++) if($i==col) c=i; next} $3=="total" {print $c}' \
    "$OUT/$2/phases.csv"
}
{
  echo "users=$USERS command=$COMMAND image=$IMAGE profile=$PROFILE cpus=$(nproc) kernel=$(uname -r)"
  printf "%-28s %8s %8s\n" "what (ms, $USERS at once)" p50 p99
  for s in running paused stopped; do
    printf "%-28s %8s %8s\n" "labssh login, $s" "$(login p50 "$s")" "$(login p99 "$s")"
  done
  printf "%-28s %8s %8s\n" "raw docker unpause" "$(pct "$WORK/raw-unpause.ms" 50)" "$(pct "$WORK/raw-unpause.ms" 99)"
  printf "%-28s %8s %8s\n" "raw docker start" "$(pct "$WORK/raw-start.ms" 50)" "$(pct "$WORK/raw-start.ms" 99)"
  for pair in "paused raw-unpause" "stopped raw-start"; do
    set -- $pair
    awk -v a="$(login p50 "$1")" -v b="$(pct "$WORK/$2.ms" 50)" \
        -v c="$(login p99 "$1")" -v d="$(pct "$WORK/$2.ms" 99)" -v n="$1 / $2" \
      'BEGIN {printf "ratio %-24s p50 %.1fx  p99 %.1fx\n", n, (b>0?a/b:0), (d>0?c/d:0)}'
  done
} | tee "$OUT/summary.txt"
