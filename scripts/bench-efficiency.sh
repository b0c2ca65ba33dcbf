#!/usr/bin/env bash
# What labssh costs (issue 19; BENCHMARKS.md, "Efficiency"): CPU per warm login per
# process, and resident memory per open interactive session, on `labssh up` with the
# local Docker. One run prints:
#   - CPU time per warm login (`true`, LOGINS in parallel, containers already running)
#     of `labssh up` (proxy + controller + agent in one process), of every container's
#     labssh-init with the shells it reaped, and of dockerd, from /proc/PID/stat;
#   - VmRSS of `labssh up` and of the containers' labssh-init with 0 and then each of
#     SESSIONS interactive pty sessions held open and idle, and the cost per session.
#
#   bash scripts/bench-efficiency.sh
#   LOGINS=300 SESSIONS=100,300 bash scripts/bench-efficiency.sh     # the issue's figures
#   PROFILE=dev LOGINS=50 SESSIONS=50 bash scripts/bench-efficiency.sh
#
# Settings (environment):
#   LOGINS     parallel warm logins measured                    (100)
#   SESSIONS   open sessions to measure memory at, a list        (50,100)
#   USERS      distinct students; sessions are spread over them  (20)
#   PROFILE    cargo profile of the binaries                     (release)
#   IMAGE      the containers' image                             (labssh/busybox:latest)
#   PORT       labssh's SSH port; PORT+1 its /metrics            (42200)
#   BASELINE   another labssh binary measured the same way in the same run (e.g. a
#              copy built from an earlier commit), in the order baseline, current,
#              current, baseline; the ratios of the means follow
#   BASELINE_GRACE  instead of BASELINE: this same binary with the agent's
#              `reattach_grace` at this value (0: sessions end with the agent, none
#              kept) as the baseline, e.g. what keeping sessions for a re-attach costs
#   KEEP       set: keep the work directory (the logs of labssh and the load) at the end
#   PERF       a file: `perf record` labssh up during the measured sweep (the current
#              binary, its first measurement) into it, with call graphs, and the
#              whole machine flat into FILE.all; print the hottest symbols of labssh up,
#              the CPU by command, and the hottest symbols of labssh-init; the CPU
#              figures of that measurement then carry perf's own cost
#
# Needs root (to read other processes' /proc) and Docker. Nothing here is a test:
# the figures are printed, never judged.
set -euo pipefail
cd "$(dirname "$0")/.."

LOGINS="${LOGINS:-100}"
SESSIONS="${SESSIONS:-50,100}"
USERS="${USERS:-20}"
PROFILE="${PROFILE:-release}"
IMAGE="${IMAGE:-labssh/busybox:latest}"
PORT="${PORT:-42200}"
BASELINE="${BASELINE:-}"
BASELINE_GRACE="${BASELINE_GRACE:-}"
PERF="${PERF:-}"
PERF_PID=
PERF_ALL_PID=
PREFIX=lbeff

say() { echo "bench-efficiency: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh

[ "$(id -u)" -eq 0 ] || die "run as root: other processes' /proc/PID/stat is read"
docker info >/dev/null 2>&1 || die "Docker does not answer (bash scripts/setup-host.sh starts it)"
bench_image "$IMAGE"
build_labssh_and_loadtest "$PROFILE"

WORK="$(mktemp -d /tmp/labssh-efficiency.XXXXXX)"
pids=()
cleanup() {
  [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null
  [ -n "$PERF_ALL_PID" ] && kill -INT "$PERF_ALL_PID" 2>/dev/null
  stop_started
  remove_lab "$PREFIX"
  if [ -n "${KEEP:-}" ]; then say "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each student's share of the most sessions open at once: the largest of SESSIONS, or
# the parallel logins, whichever is more.
max_sessions=$( (echo "$SESSIONS" | tr ',' '\n'; echo "$LOGINS") | sort -n | tail -n 1)
per_user=$(( (max_sessions + USERS - 1) / USERS + 2 ))
[ "$per_user" -lt 8 ] && per_user=8
ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
# measure LABSSH NAME [GRACE]: one labssh binary's figures (its agent's reattach_grace
# GRACE, else the default), printed, and kept in $WORK/NAME.tsv.
measure() {
local LABSSH=$1 NAME=$2 GRACE=${3:-}
rm -rf "$WORK/labssh"
mkdir -p "$WORK/labssh"
cat > "$WORK/labssh/agent.toml" <<EOF
name = "local"
capacity = $(( USERS > 300 ? USERS : 300 ))
container_prefix = "$PREFIX"
max_sessions_per_user = $per_user
EOF
[ -z "$GRACE" ] || echo "reattach_grace = $GRACE" >> "$WORK/labssh/agent.toml"
# One source address for every load connection: no pre-login cap may throttle it.
cat > "$WORK/labssh/proxy.toml" <<EOF
host_keys = ["$WORK/labssh/host_ed25519_key"]
users_file = "$WORK/labssh/users.toml"
cache_key_file = "$WORK/labssh/cache.key"
max_unauthenticated_per_address = 100000
max_startups = "100000:30:100000"
EOF
for i in $(seq 1 "$USERS"); do
  "$LABSSH" user add "$(printf "student%03d" "$i")" --key "$WORK/id.pub" \
    --users "$WORK/labssh/users.toml" >/dev/null
done
START_TIMEOUT=120 start labssh "$PORT" "$LABSSH" up --dir "$WORK/labssh" \
  --listen "127.0.0.1:$PORT" --http "127.0.0.1:$((PORT + 1))" --image "$IMAGE"
UP_PID=$STARTED_PID
TARGET="labssh=127.0.0.1:$PORT,users=student:$USERS,key=$WORK/id"

# CPU seconds of PID, its reaped children included (utime+stime+cutime+cstime).
cpu_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat" 2>/dev/null || echo 0; }
helper_pids() {
  docker ps -q --filter "label=labssh.prefix=$PREFIX" | xargs -r docker inspect -f '{{.State.Pid}}'
}
# The containers' inits, listed once after the warm-up: asking Docker while measuring
# would count the script's own calls against dockerd.
HELPERS=""
helpers_ticks() { local t=0; for p in $HELPERS; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
helpers_rss() { local t=0; for p in $HELPERS; do t=$((t + $(rss_kb "$p"))); done; echo "$t"; }
DOCKERD=$(pgrep -xo dockerd || true)
HZ=$(getconf CLK_TCK)

say "warming: every student logs in once, so the measured logins are warm"
"$BIN/labssh-loadtest" sweep --target "$TARGET" --levels "$USERS" --command true \
  --phase-timeout 120 >"$WORK/warm.log" 2>&1 || { tail -n 20 "$WORK/warm.log" >&2; die "warm-up failed"; }
sleep 2
HELPERS=$(helper_pids)
[ "$(echo "$HELPERS" | wc -w)" -ge "$USERS" ] || die "only $(echo "$HELPERS" | wc -w) containers after the warm-up"

if [ -n "$PERF" ] && { [ "$NAME" = current ] || [ "$NAME" = current-1 ]; }; then
  command -v perf >/dev/null || die "PERF needs perf: apt-get install linux-perf"
  perf record -q -F 999 --call-graph dwarf,16384 -p "$UP_PID" -o "$PERF" 2>/dev/null &
  PERF_PID=$!
  perf record -q -F 999 -a -o "$PERF.all" 2>/dev/null &
  PERF_ALL_PID=$!
  sleep 0.5   # perf attaches before the sweep starts
fi
up0=$(cpu_ticks "$UP_PID"); h0=$(helpers_ticks); d0=$( [ -n "$DOCKERD" ] && cpu_ticks "$DOCKERD" || echo 0)
"$BIN/labssh-loadtest" sweep --target "$TARGET" --levels "$LOGINS" --command true \
  --phase-timeout 120 >"$WORK/sweep.log" 2>&1 || { tail -n 20 "$WORK/sweep.log" >&2; die "the sweep failed"; }
up1=$(cpu_ticks "$UP_PID"); h1=$(helpers_ticks); d1=$( [ -n "$DOCKERD" ] && cpu_ticks "$DOCKERD" || echo 0)
failed=$(grep -ciE "failed|error" "$WORK/sweep.log" || true)
if [ -n "$PERF_PID" ]; then
  kill -INT "$PERF_PID" "$PERF_ALL_PID"; wait "$PERF_PID" "$PERF_ALL_PID" 2>/dev/null || true
  PERF_PID=; PERF_ALL_PID=
  say "profile of labssh up during the sweep: $PERF (hottest symbols, self time)"
  perf report -i "$PERF" --no-children --sort dso,sym --stdio -q -g none 2>/dev/null \
    | grep '%' | head -30 >&2 || true
  say "the whole machine during the sweep: $PERF.all (CPU by command)"
  perf report -i "$PERF.all" --sort comm --stdio -q 2>/dev/null | grep '%' | head -12 >&2 || true
  say "labssh-init's hottest symbols (its command name in containers is init; it is stripped, so mostly kernel ones)"
  perf report -i "$PERF.all" --comms init --sort dso,sym --stdio -q 2>/dev/null \
    | grep '%' | head -20 >&2 || true
fi

echo
echo "== $NAME: $LABSSH${GRACE:+ (reattach_grace = $GRACE)}"
echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), profile $PROFILE, $(nproc) cores, kernel $(uname -r)"
echo
echo "CPU per warm login ($LOGINS in parallel, \`true\`, $USERS students)"
per_login() { awk -v a="$1" -v b="$2" -v hz="$HZ" -v n="$LOGINS" 'BEGIN {printf "%8.2f ms", (b - a) * 1000 / hz / n}'; }
echo "  labssh up (proxy + controller + agent)  $(per_login "$up0" "$up1")"
echo "  labssh-init and the shells it reaped     $(per_login "$h0" "$h1")"
if [ -n "$DOCKERD" ]; then
  echo "  dockerd                                  $(per_login "$d0" "$d1")"
fi
echo "  total                                    $(per_login "$((up0 + h0 + d0))" "$((up1 + h1 + d1))")"
: > "$WORK/$NAME.tsv"
ms() { per_login "$1" "$2" | tr -d ' ms'; }
printf 'cpu_up\t%s\ncpu_helpers\t%s\ncpu_total\t%s\n' "$(ms "$up0" "$up1")" "$(ms "$h0" "$h1")" \
  "$(ms "$((up0 + h0 + d0))" "$((up1 + h1 + d1))")" >> "$WORK/$NAME.tsv"
[ "$failed" = 0 ] || echo "  (the sweep's output mentions failures: see a rerun with KEEP of $WORK/sweep.log)"

echo
echo "Resident memory with idle interactive sessions (pty, the login shell)"
sleep 3
base_up=$(rss_kb "$UP_PID"); base_h=$(helpers_rss)
printf "  %8s %14s %14s %16s %16s\n" sessions "labssh up kB" "helpers kB" "up kB/session" "helpers kB/sess"
printf "  %8d %14d %14d %16s %16s\n" 0 "$base_up" "$base_h" - -
for n in $(echo "$SESSIONS" | tr ',' ' '); do
  # Held 12 s, a keystroke every 6 s: idle between, as a student reading.
  "$BIN/labssh-loadtest" soak --target "$TARGET" --sessions "$n" --duration 14 --interval 6000 \
    --phase-timeout 120 >"$WORK/soak-$n.log" 2>&1 &
  soak=$!
  # Opened, then idle for a few seconds (the helper gives quiet sessions' buffers back).
  open=0
  for _ in $(seq 1 100); do
    open=$(curl -s "127.0.0.1:$((PORT + 1))/metrics" | awk '/^labssh_proxy_sessions_active/ {s += $2} END {print s + 0}')
    [ "${open%.*}" -ge "$n" ] && break
    sleep 0.2
  done
  sleep 4
  up=$(rss_kb "$UP_PID"); h=$(helpers_rss)
  wait "$soak" || true
  # The next level starts from none open: wait for this one's to be closed.
  for _ in $(seq 1 150); do
    left=$(curl -s "127.0.0.1:$((PORT + 1))/metrics" | awk '/^labssh_proxy_sessions_active/ {s += $2} END {print s + 0}')
    [ "${left%.*}" -le 0 ] && break
    sleep 0.2
  done
  printf "  %8d %14d %14d %16.1f %16.1f   (%s open when measured)\n" "$n" "$up" "$h" \
    "$(awk -v a="$up" -v b="$base_up" -v n="$n" 'BEGIN {print (a - b) / n}')" \
    "$(awk -v a="$h" -v b="$base_h" -v n="$n" 'BEGIN {print (a - b) / n}')" "${open%.*}"
  printf 'up_per_session_%s\t%s\n' "$n" "$(awk -v a="$up" -v b="$base_up" -v n="$n" 'BEGIN {print (a - b) / n}')" >> "$WORK/$NAME.tsv"
done
kill "$UP_PID" 2>/dev/null || true
wait "$UP_PID" 2>/dev/null || true
remove_lab "$PREFIX"
}

if [ -z "$BASELINE" ] && [ -z "$BASELINE_GRACE" ]; then
  measure "$BIN/labssh" current
  exit 0
fi
if [ -n "$BASELINE" ]; then
  [ -x "$BASELINE" ] || die "BASELINE=$BASELINE is not an executable"
else
  BASELINE="$BIN/labssh"
fi
# Baseline, current, current, baseline: whichever goes second in a pair pays for its
# place (the machine's state after the first), so each side gets both places.
measure "$BASELINE" baseline-1 "$BASELINE_GRACE"
measure "$BIN/labssh" current-1
measure "$BIN/labssh" current-2
measure "$BASELINE" baseline-2 "$BASELINE_GRACE"
echo
echo "current ÷ baseline (same run; each side the mean of its two measurements)"
mean() { join -t "$(printf '\t')" <(sort "$WORK/$1-1.tsv") <(sort "$WORK/$1-2.tsv") |
  awk -F '\t' '{ printf "%s\t%.3f\n", $1, ($2 + $3) / 2 }'; }
join -t "$(printf '\t')" <(mean baseline) <(mean current) |
  awk -F '\t' '{ printf "  %-24s %10s %10s %8.2f\n", $1, $2, $3, ($2 == 0 ? 0 : $3 / $2) }'
