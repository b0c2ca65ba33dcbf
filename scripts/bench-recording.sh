#!/usr/bin/env bash
# What session recording costs a student's keystrokes (issue 17): the echo latency
# of SESSIONS interactive pty sessions typing a key every INTERVAL ms, on one
# `labssh up`, in three settings measured in the same run, ROUNDS times interleaved:
#   off        the default environment, not recorded
#   recorded   an environment with record = "input-and-output", the proxy's
#              [recording] dir on this machine's disk
#   full-disk  the same environment with a full 64 KiB tmpfs mounted over the
#              recording dir: every recording fails and is turned off, the session not
# and each setting's echo p50/p99 beside the unrecorded one's, as a ratio.
#
#   bash scripts/bench-recording.sh
#   PROFILE=dev SESSIONS=5 DURATION=10 ROUNDS=1 bash scripts/bench-recording.sh
#
# Settings (environment):
#   SESSIONS   sessions typing at once per setting         (10)
#   DURATION   seconds each setting is measured             (20)
#   INTERVAL   ms between a session's keystrokes            (100)
#   ROUNDS     repetitions, interleaved                     (2)
#   PROFILE    cargo profile of the binaries                (release)
#   PORT       labssh's SSH port; PORT+1 its /metrics       (42400)
#   KEEP       set: keep the logs and recordings in the work directory
#
# Needs root (the tmpfs mount) and Docker. Nothing here is a test: the figures are
# printed, never judged.
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS="${SESSIONS:-10}"
DURATION="${DURATION:-20}"
INTERVAL="${INTERVAL:-100}"
ROUNDS="${ROUNDS:-2}"
PROFILE="${PROFILE:-release}"
PORT="${PORT:-42400}"
IMAGE=labssh/busybox:latest
PREFIX=lbrec

say() { echo "bench-recording: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh

[ "$(id -u)" -eq 0 ] || die "run as root: a tmpfs is mounted over the recording directory"
docker info >/dev/null 2>&1 || die "Docker does not answer (bash scripts/setup-host.sh starts it)"
command -v python3 >/dev/null || die "python3 is missing"
bench_image "$IMAGE"
build_labssh_and_loadtest "$PROFILE"

WORK="$(mktemp -d /var/tmp/labssh-recording.XXXXXX)"
REC="$WORK/recordings"
pids=()
cleanup() {
  umount "$REC" 2>/dev/null || true
  stop_started
  remove_lab "$PREFIX"
  if [ -n "${KEEP:-}" ]; then say "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
mkdir -p "$WORK/labssh" "$REC"
cat > "$WORK/labssh/controller.toml" <<EOF
default_environment = "default"

[environments.default]
image = "$IMAGE"
description = "not recorded"
shell = "/bin/sh"

[environments.exam]
image = "$IMAGE"
description = "recorded, keystrokes too"
shell = "/bin/sh"
record = "input-and-output"
EOF
cat > "$WORK/labssh/agent.toml" <<EOF
name = "local"
capacity = 300
container_prefix = "$PREFIX"
max_sessions_per_user = $((SESSIONS * 3 + 4))
EOF
cat > "$WORK/labssh/proxy.toml" <<EOF
host_keys = ["$WORK/labssh/host_ed25519_key"]
users_file = "$WORK/labssh/users.toml"
cache_key_file = "$WORK/labssh/cache.key"
max_unauthenticated_per_address = 100000
max_startups = "100000:30:100000"

[recording]
dir = "$REC"
EOF
"$BIN/labssh" user add student001 --key "$WORK/id.pub" --users "$WORK/labssh/users.toml" >/dev/null
START_TIMEOUT=120 start labssh "$PORT" "$BIN/labssh" up --dir "$WORK/labssh" \
  --listen "127.0.0.1:$PORT" --http "127.0.0.1:$((PORT + 1))" --image "$IMAGE"

metric() {  # the sum of labssh_errors_total{kind=KIND}
  curl -s "127.0.0.1:$((PORT + 1))/metrics" |
    awk -v k="kind=\"$1\"" '/^labssh_errors_total/ && index($0, k) {s += $NF} END {print s + 0}'
}

# soak NAME LOGIN: one setting's soak; its echo p50 and p99 appended to $WORK/NAME.
soak() {
  local name=$1 login=$2 out="$WORK/out-$1-$round"
  "$BIN/labssh-loadtest" soak --target "$name=127.0.0.1:$PORT,user=$login,key=$WORK/id" \
    --sessions "$SESSIONS" --duration "$DURATION" --interval "$INTERVAL" \
    --phase-timeout 120 --out "$out" >"$WORK/soak-$name-$round.log" 2>&1 ||
    { tail -n 20 "$WORK/soak-$name-$round.log" >&2; die "the $name soak had failures"; }
  python3 - "$out/soak.json" >>"$WORK/$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))[0]
print(r["echo"]["p50_ms"], r["echo"]["p99_ms"], r["keystrokes"], r["dropped"])
PY
}

say "warming: each environment's container made once (the agent registers first)"
for login in student001 student001+exam; do
  for try in $(seq 1 60); do
    ssh -i "$WORK/id" -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o LogLevel=ERROR "$login@127.0.0.1" true 2>>"$WORK/warm.log" && break
    [ "$try" = 60 ] && { tail -n 5 "$WORK/warm.log" >&2; die "$login could not log in"; }
    sleep 1
  done
done

failed_before=$(metric recording_failed)
for round in $(seq 1 "$ROUNDS"); do
  say "round $round of $ROUNDS"
  soak off student001
  soak recorded student001+exam
  mount -t tmpfs -o size=64k tmpfs "$REC"
  dd if=/dev/zero of="$REC/fill" bs=4k 2>/dev/null || true
  soak full-disk student001+exam
  umount "$REC"
done
failed=$(( $(metric recording_failed) - failed_before ))
casts=$(find "$REC" -name '*.cast' | wc -l)

echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), profile $PROFILE, $(nproc) cores, kernel $(uname -r)"
echo "$SESSIONS sessions a setting, a key every $INTERVAL ms for $DURATION s, $ROUNDS round(s)"
echo
python3 - "$WORK" <<'PY'
import sys, statistics
work = sys.argv[1]
rows = {}
for name in ["off", "recorded", "full-disk"]:
    lines = [l.split() for l in open(f"{work}/{name}")]
    rows[name] = (
        statistics.median(float(l[0]) for l in lines),
        statistics.median(float(l[1]) for l in lines),
        sum(int(l[2]) for l in lines),
        sum(int(l[3]) for l in lines),
    )
base = rows["off"]
print(f"{'setting':<10} {'echo p50 ms':>12} {'echo p99 ms':>12} {'p50 / off':>10} {'p99 / off':>10} {'keys':>8} {'dropped':>8}")
for name, (p50, p99, keys, dropped) in rows.items():
    print(f"{name:<10} {p50:>12.2f} {p99:>12.2f} {p50 / base[0]:>10.2f} {p99 / base[1]:>10.2f} {keys:>8} {dropped:>8}")
PY
echo
echo "recordings written on the real disk: $casts; recordings the full disk turned off: $failed"
