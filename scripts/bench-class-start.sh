#!/usr/bin/env bash
# A class starting (BENCHMARKS.md, "Class start"): USERS students log in at once with
# the stock OpenSSH client (`ssh … true`) in four states of their containers, each
# beside the matching raw Docker operation for the same count at once:
#
#   state        labssh login            raw Docker, USERS at once
#   none         no container yet        docker run -d (label, home volume, like labssh's)
#   stopped      container stopped       docker start
#   paused       container paused        docker unpause
#   prestarted   `labssh prestart` ran   docker exec CONTAINER true (a running container)
#
# Prints p50/p99/max of each and the ratios (labssh / raw); writes every student's
# time-to-shell in arrival order to OUT/STATE.csv (and the raw ones to OUT/raw-STATE.csv)
# and plots them to OUT/arrivals.svg (`labssh-loadtest arrivals`); labssh's log is kept
# in OUT/labssh.log (RUST_LOG=labssh_agent::backend::docker::timing=debug adds the
# time of every step of each container's creation).
#
#   bash scripts/bench-class-start.sh
#   USERS=20 PROFILE=dev STATES="none stopped" bash scripts/bench-class-start.sh
#
# Settings (environment):
#   USERS          students logging in at once                    (100)
#   STATES         which states, in this order                    (none stopped paused prestarted)
#   IMAGE          the containers' image                          (labssh/busybox:latest)
#   OUT            results directory                              (target/bench-class-start-DATE)
#   PORT           labssh's SSH port                              (42160)
#   PROFILE        cargo profile of the binaries                  (release)
#   LABSSH         a labssh binary to measure instead of the one built (say, an older build)
#
# The roles talk plain HTTP/2 (`labssh up --no-tls`) so that `labssh prestart` reaches
# the controller at http://127.0.0.1:PORT (the port `labssh up` prints). Containers are
# stopped and paused with the docker CLI, as the idle loop would. Needs Docker and the
# OpenSSH client.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS="${USERS:-100}"
STATES="${STATES:-none stopped paused prestarted}"
IMAGE="${IMAGE:-labssh/busybox:latest}"
OUT="${OUT:-target/bench-class-start-$(date +%Y%m%d-%H%M%S)}"
PORT="${PORT:-42160}"
PROFILE="${PROFILE:-release}"

PREFIX=lbbenchcs                # labssh containers: lbbenchcs-student001.default
RAW_LABEL=labssh-bench=class-start-raw
RAW_NAME=lbbenchcs-raw          # raw containers lbbenchcs-raw1…, volumes lbbenchcs-raw-home1…

say() { echo "bench-class-start: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh

command -v ssh >/dev/null || die "ssh is missing: apt-get install openssh-client"
docker info >/dev/null 2>&1 || die "Docker does not answer (bash scripts/setup-host.sh starts it)"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "port $PORT is taken; choose another PORT"; fi
for state in $STATES; do
  case "$state" in none|stopped|paused|prestarted) ;; *) die "STATES: unknown state $state";; esac
done
bench_image "$IMAGE"
build_labssh_and_loadtest "$PROFILE"
LABSSH="${LABSSH:-$BIN/labssh}"
[ -x "$LABSSH" ] || die "LABSSH=$LABSSH is not an executable"

WORK="$(mktemp -d /tmp/labssh-bench-cs.XXXXXX)"
pids=()
remove_raw() {
  docker ps -aq --filter "label=$RAW_LABEL" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker volume ls -q --filter "label=$RAW_LABEL" | xargs -r docker volume rm >/dev/null 2>&1 || true
}
cleanup() {
  stop_started
  cp "$WORK/labssh.log" "$OUT/" 2>/dev/null || true
  remove_lab "$PREFIX"
  remove_raw
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
remove_lab "$PREFIX"
remove_raw

ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
mkdir -p "$OUT"
lab_config "$WORK/labssh" "$PREFIX" "$USERS" "$WORK/id.pub"
width=${#USERS}; [ "$width" -lt 3 ] && width=3
user() { printf "student%0${width}d" "$1"; }
for i in $(seq 1 "$USERS"); do user "$i"; echo; done > "$WORK/users.list"

say "starting $LABSSH on 127.0.0.1:$PORT with $USERS students"
start labssh "$PORT" "$LABSSH" up --dir "$WORK/labssh" --listen "127.0.0.1:$PORT" \
  --image "$IMAGE" --no-tls --http ""
# The SSH port accepts before the agent has registered: wait for `labssh up`'s welcome.
for _ in $(seq 1 600); do grep -q "labssh is up" "$WORK/labssh.log" && break; sleep 0.1; done
grep -q "labssh is up" "$WORK/labssh.log" || { tail -n 20 "$WORK/labssh.log" >&2; die "labssh did not come up"; }
ulimit -n 65536 2>/dev/null || true

# login I: student I's whole login through labssh with the stock client.
login() {
  ssh -q -p "$PORT" -i "$WORK/id" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=600 \
    "$(user "$1")@127.0.0.1" true
}
# raw_run I / raw_start I / raw_unpause I / raw_exec I: Docker's own operation on raw
# container I; raw_run is what labssh asks for, in short: a label and a home volume.
raw_run() {
  docker run -d --name "$RAW_NAME$1" --label "$RAW_LABEL" --label "labssh.user=$(user "$1")" \
    --mount "type=volume,source=$RAW_NAME-home$1,target=/home/$(user "$1"),volume-label=$RAW_LABEL" \
    "$IMAGE" sleep 2147483647
}
raw_start() { docker start "$RAW_NAME$1"; }
raw_unpause() { docker unpause "$RAW_NAME$1"; }
raw_exec() { docker exec "$RAW_NAME$1" true; }
labssh_all() { docker ps -aq --filter "label=labssh.prefix=$PREFIX"; }
raw_all() { docker ps -aq --filter "label=$RAW_LABEL"; }

# measure STATE FUNC: USERS runs of FUNC at once into OUT/STATE.csv; dies if any failed.
measure() {
  at_once "$WORK/$1.lines" "$USERS" "$2"
  local failed; failed=$(arrivals "$WORK/$1.lines" "$OUT/$1.csv")
  [ "$failed" = 0 ] || die "$failed of $USERS failed in $1 (see $OUT/$1.csv)"
}

declare -A raw_of=([none]="docker run -d" [stopped]="docker start" [paused]="docker unpause" [prestarted]="docker exec true")
for state in $STATES; do
  case "$state" in
    none)
      labssh_all | xargs -r docker rm -f >/dev/null
      docker volume ls -q --filter "label=labssh.prefix=$PREFIX" | xargs -r docker volume rm >/dev/null
      remove_raw
      say "$USERS new students (no container, no home volume) log in"
      measure none login
      say "raw: $USERS docker run -d at once"
      measure raw-none raw_run ;;
    stopped)
      [ -n "$(labssh_all)" ] || die "stopped: no containers yet (put none first in STATES)"
      labssh_all | xargs -r docker stop -t 1 >/dev/null
      say "$USERS students with stopped containers log in"
      measure stopped login
      raw_all | xargs -r docker stop -t 1 >/dev/null
      say "raw: $USERS docker start at once"
      measure raw-stopped raw_start ;;
    paused)
      [ -n "$(labssh_all)" ] || die "paused: no containers yet (put none first in STATES)"
      labssh_all | xargs -r docker start >/dev/null
      docker ps -q --filter "label=labssh.prefix=$PREFIX" | xargs -r docker pause >/dev/null
      say "$USERS students with paused containers log in"
      measure paused login
      raw_all | xargs -r docker start >/dev/null
      raw_all | xargs -r docker pause >/dev/null
      say "raw: $USERS docker unpause at once"
      measure raw-paused raw_unpause ;;
    prestarted)
      labssh_all | xargs -r docker rm -f >/dev/null
      say "labssh prestart of $USERS students"
      controller=$(sed -n 's|.*controller: *\(http://[0-9.:]*\).*|\1|p' "$WORK/labssh.log" | head -n 1)
      [ -n "$controller" ] || die "prestarted: labssh up printed no controller address"
      s=$(date +%s%N)
      "$LABSSH" prestart --env default --users "$WORK/users.list" --controller "$controller" \
        >"$WORK/prestart.log" 2>&1 || { tail -n 20 "$WORK/prestart.log" >&2; die "labssh prestart failed"; }
      prestart_ms=$(( ($(date +%s%N) - s) / 1000000 ))
      say "prestart took $prestart_ms ms; $USERS students log in"
      measure prestarted login
      [ -n "$(raw_all)" ] || { say "raw containers for docker exec"; measure raw-setup raw_run; }
      raw_all | xargs -r docker start >/dev/null 2>&1 || true
      raw_all | xargs -r docker unpause >/dev/null 2>&1 || true
      say "raw: $USERS docker exec true at once"
      measure raw-prestarted raw_exec ;;
  esac
done

series=()
for state in $STATES; do series+=(--series "labssh $state=$OUT/$state.csv" --series "${raw_of[$state]}=$OUT/raw-$state.csv"); done
"$BIN/labssh-loadtest" arrivals "${series[@]}" --out "$OUT/arrivals.svg" \
  --title "$USERS students at once, time to shell in arrival order"

# stat CSV P: p50/p99 (P = 50, 99) or max (P = 100) of a CSV's successes, in ms.
stat() { ms_of "$1" > "$WORK/ms"; pct "$WORK/ms" "$2"; }
{
  echo "users=$USERS image=$IMAGE profile=$PROFILE labssh=$LABSSH cpus=$(nproc) kernel=$(uname -r) docker=$(docker version -f '{{.Server.Version}}')"
  [ -n "${prestart_ms:-}" ] && echo "labssh prestart of $USERS students: $prestart_ms ms"
  printf "%-34s %8s %8s %8s\n" "what (ms, $USERS at once)" p50 p99 max
  for state in $STATES; do
    for pair in "labssh login, $state|$state" "raw ${raw_of[$state]}|raw-$state"; do
      name=${pair%|*} file="$OUT/${pair#*|}.csv"
      printf "%-34s %8s %8s %8s\n" "$name" "$(stat "$file" 50)" "$(stat "$file" 99)" "$(stat "$file" 100)"
    done
  done
  for state in $STATES; do
    a="$OUT/$state.csv" b="$OUT/raw-$state.csv"
    awk -v n="$state / ${raw_of[$state]}" -v a50="$(stat "$a" 50)" -v b50="$(stat "$b" 50)" \
        -v a99="$(stat "$a" 99)" -v b99="$(stat "$b" 99)" -v am="$(stat "$a" 100)" -v bm="$(stat "$b" 100)" \
      'function r(x, y) {return y > 0 ? x / y : 0}
       BEGIN {printf "ratio %-32s p50 %.2fx  p99 %.2fx  max %.2fx\n", n, r(a50, b50), r(a99, b99), r(am, bm)}'
  done
} | tee "$OUT/summary.txt"
say "results in $OUT (summary.txt, STATE.csv, raw-STATE.csv, arrivals.svg)"
