#!/usr/bin/env bash
# Two proxy replicas behind HAProxy against one proxy, in one run
# (BENCHMARKS.md, "Proxy replicas behind HAProxy"):
#   replicas  HAProxy (send-proxy-v2, leastconn) → proxy p1, p2
#   single    proxy p3 on its own
# All three proxies share the controller, the agent, Redis, the users and the
# host key, so the only difference is the balancer and the replica count.
# Levels run interleaved (replicas, single, replicas, ...).
#
#   bash scripts/bench-replicas.sh
#   LEVELS=1,100,200,300 bash scripts/bench-replicas.sh
#
# Settings: LEVELS (1,50,100), USERS (highest level), IMAGE (labssh/busybox:latest),
# OUT (target/bench-replicas-DATE), PORT_BASE (42200), PROFILE (release).
# Needs Docker, HAProxy and Redis (bash scripts/setup-host.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

LEVELS="${LEVELS:-1,50,100}"
IMAGE="${IMAGE:-labssh/busybox:latest}"
OUT="${OUT:-target/bench-replicas-$(date +%Y%m%d-%H%M%S)}"
PORT_BASE="${PORT_BASE:-42200}"
PROFILE="${PROFILE:-release}"
max_level=$(echo "$LEVELS" | tr ',:-' '\n\n\n' | grep -E '^[0-9]+$' | sort -n | tail -n 1)
USERS="${USERS:-${max_level:-1}}"
width=${#USERS}; [ "$width" -lt 3 ] && width=3
PREFIX=lbrepl

P_CONTROLLER=$PORT_BASE; P_AGENT=$((PORT_BASE + 1)); P_REDIS=$((PORT_BASE + 2))
P_HAPROXY=$((PORT_BASE + 3)); P1=$((PORT_BASE + 4)); P2=$((PORT_BASE + 5)); P3=$((PORT_BASE + 6))

say() { echo "bench-replicas: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh
command -v haproxy >/dev/null || die "haproxy is missing: bash scripts/setup-host.sh"
command -v redis-server >/dev/null || die "redis-server is missing: bash scripts/setup-host.sh"
docker info >/dev/null 2>&1 || die "Docker does not answer (bash scripts/setup-host.sh starts it)"
bench_image "$IMAGE"

build_labssh_and_loadtest "$PROFILE"

WORK="$(mktemp -d /tmp/labssh-replicas.XXXXXX)"
pids=()
cleanup() {
  stop_started
  remove_lab "$PREFIX"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

START_TIMEOUT=30

ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
say "adding $USERS students"
for i in $(seq 1 "$USERS"); do
  "$BIN/labssh" user add "$(printf "student%0${width}d" "$i")" --key "$WORK/id.pub" --users "$WORK/users.toml" >/dev/null
done

cat > "$WORK/controller.toml" <<TOML
listen = "127.0.0.1:$P_CONTROLLER"
[environments.default]
image = "$IMAGE"
TOML
cat > "$WORK/agent.toml" <<TOML
name = "bench"
listen = "127.0.0.1:$P_AGENT"
advertise = "http://127.0.0.1:$P_AGENT"
controller = "http://127.0.0.1:$P_CONTROLLER"
capacity = $((USERS > 300 ? USERS : 300))
container_prefix = "$PREFIX"
firewall = false
TOML
proxy_toml() {  # port, behind-haproxy
  cat <<TOML
listen = "127.0.0.1:$1"
host_keys = ["$WORK/host_key"]
users_file = "$WORK/users.toml"
cache_key_file = "$WORK/cache.key"
controller = "http://127.0.0.1:$P_CONTROLLER"
redis_url = "redis://127.0.0.1:$P_REDIS/"
session_start_timeout_secs = 300
TOML
  if [ "$2" = 1 ]; then printf '[proxy_protocol]\ntrusted = ["127.0.0.1/32"]\nrequired = true\n'; fi
}
proxy_toml "$P1" 1 > "$WORK/p1.toml"
proxy_toml "$P2" 1 > "$WORK/p2.toml"
proxy_toml "$P3" 0 > "$WORK/p3.toml"
cat > "$WORK/haproxy.cfg" <<CFG
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 600s
  timeout server 600s
frontend ssh
  bind 127.0.0.1:$P_HAPROXY
  default_backend proxies
backend proxies
  balance leastconn
  option tcp-check
  tcp-check connect default
  tcp-check expect rstring ^SSH-2\.0-
  default-server send-proxy-v2 check-send-proxy check inter 1s fall 2 rise 2
  server p1 127.0.0.1:$P1
  server p2 127.0.0.1:$P2
CFG

ulimit -n 65536 2>/dev/null || true
start redis "$P_REDIS" redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no
start controller "$P_CONTROLLER" "$BIN/labssh" controller --config "$WORK/controller.toml"
start agent "$P_AGENT" "$BIN/labssh" agent --config "$WORK/agent.toml"
start p1 "$P1" "$BIN/labssh" proxy --config "$WORK/p1.toml"
start p2 "$P2" "$BIN/labssh" proxy --config "$WORK/p2.toml"
start p3 "$P3" "$BIN/labssh" proxy --config "$WORK/p3.toml"
start haproxy "$P_HAPROXY" haproxy -db -f "$WORK/haproxy.cfg"
sleep 3   # HAProxy marks both replicas up

mkdir -p "$OUT"
say "sweeping levels $LEVELS (results in $OUT)"
status=0
"$BIN/labssh-loadtest" sweep --levels "$LEVELS" --warm --phase-timeout 300 \
  --target "replicas=127.0.0.1:$P_HAPROXY,users=student:$USERS,key=$WORK/id" \
  --target "single=127.0.0.1:$P3,users=student:$USERS,key=$WORK/id" \
  --out "$OUT" || status=$?
for p in p1 p2 p3; do
  echo "$p: $(grep -c authenticated "$WORK/$p.log" || true) logins" | tee -a "$OUT/replicas.txt" >&2
done
echo "levels=$LEVELS users=$USERS image=$IMAGE cpus=$(nproc) haproxy=$(haproxy -v | head -n 1)" >> "$OUT/replicas.txt"
exit "$status"
