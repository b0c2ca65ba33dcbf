#!/usr/bin/env bash
# File transfer and tunnel throughput, labssh beside a plain OpenSSH sshd on this
# machine, in the same run (BENCHMARKS.md, "Transfers"):
#   scp up     scp (SFTP protocol) of SIZE_MB from here to the server
#   scp down   the same file back (compared with the original)
#   ssh -L     SIZE_MB pushed through a local forward to a discard server (inside the
#              student's container for labssh; on loopback for sshd)
# and the peak RSS (VmHWM) of the labssh proxy and agent during each transfer, and the
# CPU time the whole machine was busy per GB moved (client, servers and kernel).
#
#   bash scripts/bench-transfer.sh
#   SIZE_MB=256 ROUNDS=1 bash scripts/bench-transfer.sh
#
# labssh runs as three processes (controller, agent, proxy), mTLS between them as
# deployed (MTLS=0 turns it off). The container is Debian, so scp uses the same
# OpenSSH sftp-server binary sshd uses; BUILTIN=1 also measures labssh's built-in
# SFTP server (busybox image). The same client key, cipher and file for both.
# RELAY=1 also measures scp with labssh-init relaying the bytes (`helper_pipes =
# false`, the way before it handed the process's pipes to the agent): the agent is
# restarted with that setting for those transfers and back again, in every round.
#
# Settings (environment):
#   SIZE_MB    megabytes per transfer                 (1024)
#   ROUNDS     repetitions, interleaved labssh/sshd   (3)
#   MTLS       1: mTLS between proxy, controller, agent (1)
#   BUILTIN    1: also labssh's built-in SFTP server   (0)
#   RELAY      1: also scp relayed through labssh-init (0)
#   CIPHER     ssh cipher for every client            (the client's default)
#   PORT_BASE  first of the ports used                (42300)
#   PROFILE    cargo profile                          (release)
#   PERF       a directory: `perf record` the proxy and the agent during each labssh
#              transfer of the first round, one file per transfer, and print the
#              hottest symbols of each (the figures of that round then carry
#              perf's own cost; compare them with nothing)
#
# Needs root (a system user for sshd), Docker and openssh-server.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB="${SIZE_MB:-1024}"
ROUNDS="${ROUNDS:-3}"
MTLS="${MTLS:-1}"
BUILTIN="${BUILTIN:-0}"
RELAY="${RELAY:-0}"
CIPHER="${CIPHER:-}"
PORT_BASE="${PORT_BASE:-42300}"
PROFILE="${PROFILE:-release}"
PERF="${PERF:-}"
PERF_PID=
SSHD=/usr/sbin/sshd
IMAGE=labssh/debian:bookworm
PREFIX=lbxfer
SSHD_USER=lbxfer

P_CONTROLLER=$PORT_BASE
P_AGENT=$((PORT_BASE + 1))
P_PROXY=$((PORT_BASE + 2))
P_SSHD=$((PORT_BASE + 3))
P_DISCARD=$((PORT_BASE + 4))    # inside the container, and on loopback for sshd
P_LOCAL=$((PORT_BASE + 5))      # the ssh -L listening port

say() { echo "bench-transfer: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh

[ "$(id -u)" -eq 0 ] || die "run as root: the sshd baseline needs a system user"
[ -x "$SSHD" ] || die "$SSHD is missing: apt-get install openssh-server"
docker info >/dev/null 2>&1 || die "Docker does not answer (bash scripts/setup-host.sh starts it)"
command -v python3 >/dev/null || die "python3 is missing"
for port in "$P_CONTROLLER" "$P_AGENT" "$P_PROXY" "$P_SSHD" "$P_DISCARD" "$P_LOCAL"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is taken; choose another PORT_BASE"
  fi
done

bash scripts/build-debian-image.sh "$IMAGE" >&2
[ "$BUILTIN" = 1 ] && bash scripts/build-busybox-image.sh labssh/busybox:latest >/dev/null
say "building labssh ($PROFILE)"
cargo build --profile "$PROFILE" -p labssh --bin labssh
case "$PROFILE" in dev) BIN=target/debug ;; *) BIN="target/$PROFILE" ;; esac
BIN="$(cd "$BIN" && pwd)"

WORK="$(mktemp -d /var/tmp/labssh-xfer.XXXXXX)"
chmod 755 "$WORK"
pids=()
cleanup() {
  [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null
  stop_started
  remove_lab "$PREFIX"
  userdel -r "$SSHD_USER" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"

# --- labssh: controller, agent, proxy ---------------------------------------------
tls() {  # ROLE-NAME, as `labssh certs` names the files
  [ "$MTLS" = 1 ] || return 0
  printf '[tls]\nca = "%s"\ncert = "%s"\nkey = "%s"\n' \
    "$WORK/certs/ca.pem" "$WORK/certs/$1.pem" "$WORK/certs/$1.key"
}
scheme=http
if [ "$MTLS" = 1 ]; then
  "$BIN/labssh" certs --dir "$WORK/certs" >/dev/null
  "$BIN/labssh" certs --dir "$WORK/certs" --role agent --name xfer >/dev/null
  scheme=https
fi
cat > "$WORK/controller.toml" <<TOML
listen = "127.0.0.1:$P_CONTROLLER"
default_environment = "debian"
[environments.debian]
image = "$IMAGE"
shell = "/bin/bash"
uid = 1000
gid = 1000
memory_mb = 0
cpus = 0.0
[environments.busybox]
image = "labssh/busybox:latest"
uid = 1000
gid = 1000
memory_mb = 0
cpus = 0.0
$(tls controller-local)
TOML
cat > "$WORK/agent.toml" <<TOML
name = "xfer"
listen = "127.0.0.1:$P_AGENT"
advertise = "$scheme://127.0.0.1:$P_AGENT"
controller = "$scheme://127.0.0.1:$P_CONTROLLER"
container_prefix = "$PREFIX"
firewall = false
$(tls agent-xfer)
TOML
# (Before any [table]: the key is the agent's own.)
sed 's/^firewall = false$/&\nhelper_pipes = false/' "$WORK/agent.toml" > "$WORK/agent-relay.toml"
grep -q '^helper_pipes = false$' "$WORK/agent-relay.toml" || die "agent-relay.toml lacks helper_pipes"
"$BIN/labssh" user add student --key "$WORK/id.pub" --users "$WORK/users.toml" >/dev/null
cat > "$WORK/proxy.toml" <<TOML
listen = "127.0.0.1:$P_PROXY"
host_keys = ["$WORK/host_key"]
users_file = "$WORK/users.toml"
cache_key_file = "$WORK/cache.key"
controller = "$scheme://127.0.0.1:$P_CONTROLLER"
session_start_timeout_secs = 300
$(tls proxy-local)
TOML
say "starting labssh (controller, agent, proxy; mTLS=$MTLS)"
start controller "$P_CONTROLLER" "$BIN/labssh" controller --config "$WORK/controller.toml"
start agent "$P_AGENT" "$BIN/labssh" agent --config "$WORK/agent.toml"
AGENT_PID=$STARTED_PID
start proxy "$P_PROXY" "$BIN/labssh" proxy --config "$WORK/proxy.toml"
PROXY_PID=$STARTED_PID

# --- sshd -------------------------------------------------------------------------
id "$SSHD_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$SSHD_USER"
usermod -p '*' "$SSHD_USER"
mkdir -p "/home/$SSHD_USER/.ssh" /run/sshd
cp "$WORK/id.pub" "/home/$SSHD_USER/.ssh/authorized_keys"
chown -R "$SSHD_USER" "/home/$SSHD_USER/.ssh"
cat > "$WORK/sshd_config" <<EOF
Port $P_SSHD
ListenAddress 127.0.0.1
HostKey $WORK/host_key
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PidFile none
AllowUsers $SSHD_USER
UseDNS no
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel ERROR
EOF
say "starting sshd on 127.0.0.1:$P_SSHD"
start sshd "$P_SSHD" "$SSHD" -D -e -f "$WORK/sshd_config"

# --- clients ----------------------------------------------------------------------
cat > "$WORK/ssh_config" <<EOF
Host labssh labssh-relay labssh-builtin sshd
  HostName 127.0.0.1
  IdentityFile $WORK/id
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
Host labssh labssh-relay
  Port $P_PROXY
  User student
Host labssh-builtin
  Port $P_PROXY
  User student+busybox
Host sshd
  Port $P_SSHD
  User $SSHD_USER
EOF
[ -n "$CIPHER" ] && sed -i "1a\\  Ciphers $CIPHER" "$WORK/ssh_config"
ssh_() { ssh -F "$WORK/ssh_config" "$@"; }

# The discard server: reads to EOF, answers with the byte count.
cat > "$WORK/discard.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(8)
while True:
    c, _ = s.accept()
    n = 0
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        n += len(b)
    c.sendall(b"%d\n" % n)
    c.close()
PY
# The pusher: sends SIZE bytes, waits for the count, prints seconds.
cat > "$WORK/push.py" <<'PY'
import os, socket, sys, time
port, size = int(sys.argv[1]), int(sys.argv[2])
block = os.urandom(1 << 20)
s = socket.create_connection(("127.0.0.1", port))
t = time.monotonic()
left = size
while left > 0:
    n = min(left, len(block))
    s.sendall(block[:n])
    left -= n
s.shutdown(socket.SHUT_WR)
got = s.makefile().readline().strip()
elapsed = time.monotonic() - t
if got != str(size):
    sys.exit("discard server counted %r, expected %d" % (got, size))
print("%.3f" % elapsed)
PY

say "preparing a $SIZE_MB MB file and the containers"
head -c "$((SIZE_MB << 20))" /dev/urandom > "$WORK/payload"
ssh_ labssh true   # creates the container
ssh_ labssh "cat > /tmp/discard.py" < "$WORK/discard.py"
[ "$BUILTIN" = 1 ] && ssh_ labssh-builtin true
# The discard servers live as long as these sessions (the container's ends with an
# agent restart).
start_discard() {
  ssh_ labssh "exec python3 /tmp/discard.py $P_DISCARD" >/dev/null 2>&1 &
  pids+=($!)
  sleep 1
}
start_discard
python3 "$WORK/discard.py" "$P_DISCARD" >/dev/null 2>&1 &
pids+=($!)
# restart_agent CONFIG: the agent again with CONFIG, once logins reach it.
restart_agent() {
  kill "$AGENT_PID" 2>/dev/null || true
  wait "$AGENT_PID" 2>/dev/null || true
  start agent "$P_AGENT" "$BIN/labssh" agent --config "$1"
  AGENT_PID=$STARTED_PID
  for _ in $(seq 1 150); do
    ssh_ labssh true 2>/dev/null && return 0
    sleep 0.2
  done
  die "the restarted agent took no login within 30 s"
}

# Peak RSS (kB) of a process since the last reset; resetting needs Linux 4.0+.
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
reset_hwm() { echo 5 > "/proc/$1/clear_refs" 2>/dev/null || true; }
now() { date +%s.%N; }
# CPU time the whole machine spent busy (user, nice, system, irq, softirq, steal), in
# ticks of 1/100 s: what a transfer costs, client included, whatever else the run shows.
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# CPU ticks the labssh proxy and agent used (the gateway's own cost).
gateway() { awk '{t += $14 + $15} END {print t}' "/proc/$PROXY_PID/stat" "/proc/$AGENT_PID/stat"; }
# Starts measuring a transfer: peak RSS reset, CPU counters noted.
mark() { reset_hwm "$PROXY_PID"; reset_hwm "$AGENT_PID"; C0=$(busy); G0=$(gateway); }
# With PERF, profiles the proxy and the agent from here until perf_stop (labssh
# targets, first round only).
perf_start() {  # target test round
  [ -n "$PERF" ] && [ "$1" != sshd ] && [ "$3" = 1 ] || return 0
  command -v perf >/dev/null || die "PERF needs perf: apt-get install linux-perf"
  mkdir -p "$PERF"
  PERF_OUT="$PERF/$1-${2// /-}.data"
  perf record -q -F 999 --call-graph dwarf,16384 -p "$PROXY_PID,$AGENT_PID" -o "$PERF_OUT" 2>/dev/null &
  PERF_PID=$!
  sleep 0.5   # perf attaches before the transfer starts
}
perf_stop() {
  [ -n "$PERF_PID" ] || return 0
  kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=
  say "profile: $PERF_OUT (hottest symbols, proxy and agent by pid)"
  perf report -i "$PERF_OUT" --no-children --sort pid,sym --stdio -q 2>/dev/null \
    | grep -v '^$' | grep '%' | head -25 >&2 || true
}

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
record() {  # target test seconds (after mark)
  local busy_ticks=$(( $(busy) - C0 )) gateway_ticks=$(( $(gateway) - G0 ))
  local mbps cpu gw
  per_gb() { awk -v t="$1" -v m="$SIZE_MB" 'BEGIN { printf "%.2f", t / 100 / (m / 1024) }'; }
  mbps=$(awk -v s="$3" -v m="$SIZE_MB" 'BEGIN { printf "%.1f", m / s }')
  cpu=$(per_gb "$busy_ticks")
  local p a
  if [ "$1" = sshd ]; then
    p=-; a=-; gw=-
  else
    p=$(hwm "$PROXY_PID"); a=$(hwm "$AGENT_PID"); gw=$(per_gb "$gateway_ticks")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$mbps" "$p" "$a" "$cpu" "$gw" >> "$RESULTS"
  say "$(printf '%-15s %-9s %7.2f s %8s MB/s  machine %5s CPU s/GB (proxy+agent %s)  proxy %s kB  agent %s kB' "$1" "$2" "$3" "$mbps" "$cpu" "$gw" "$p" "$a")"
}

targets=(labssh sshd)
[ "$BUILTIN" = 1 ] && targets+=(labssh-builtin)
[ "$RELAY" = 1 ] && targets+=(labssh-relay)
for round in $(seq 1 "$ROUNDS"); do
  say "round $round of $ROUNDS"
  for t in "${targets[@]}"; do
    [ "$t" = labssh-relay ] && restart_agent "$WORK/agent-relay.toml"
    perf_start "$t" "scp up" "$round"
    mark; s=$(now); scp -F "$WORK/ssh_config" -q "$WORK/payload" "$t:payload"; e=$(now)
    record "$t" "scp up" "$(awk -v a="$s" -v b="$e" 'BEGIN{printf "%.3f", b-a}')"
    perf_stop
    perf_start "$t" "scp down" "$round"
    mark; s=$(now); scp -F "$WORK/ssh_config" -q "$t:payload" "$WORK/download"; e=$(now)
    record "$t" "scp down" "$(awk -v a="$s" -v b="$e" 'BEGIN{printf "%.3f", b-a}')"
    perf_stop
    cmp -s "$WORK/payload" "$WORK/download" || die "$t: downloaded file differs"
    rm -f "$WORK/download"
    ssh_ "$t" rm -f payload
    if [ "$t" = labssh-relay ]; then
      restart_agent "$WORK/agent.toml"
      start_discard
      continue   # a tunnel's socket is handed over either way
    fi
    [ "$t" = labssh-builtin ] && continue   # the tunnel is the same path as labssh's
    perf_start "$t" "ssh -L" "$round"
    mark
    # Not through ssh_: $! must be ssh itself, so the kill below ends the forward.
    ssh -F "$WORK/ssh_config" -N -o ExitOnForwardFailure=yes -L "$P_LOCAL:127.0.0.1:$P_DISCARD" "$t" &
    fwd=$!
    for _ in $(seq 1 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$P_LOCAL") 2>/dev/null && break
      sleep 0.1
    done
    secs=$(python3 "$WORK/push.py" "$P_LOCAL" "$((SIZE_MB << 20))")
    record "$t" "ssh -L" "$secs"
    perf_stop
    kill "$fwd" 2>/dev/null || true; wait "$fwd" 2>/dev/null || true
  done
done

say "summary (median of $ROUNDS; labssh ÷ sshd throughput)"
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = {}
for target, test, secs, mbps, p, a, cpu, gw in rows:
    by.setdefault((target, test), []).append((float(mbps), p, a, float(cpu), gw))
tests = ["scp up", "scp down", "ssh -L"]
print("| transfer | sshd MB/s | labssh MB/s | labssh ÷ sshd | machine CPU s/GB, sshd | machine CPU s/GB, labssh | of which proxy+agent | labssh built-in SFTP MB/s | relayed through init MB/s | labssh ÷ relayed | relayed machine CPU s/GB | proxy peak RSS | agent peak RSS |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for test in tests:
    s = by.get(("sshd", test))
    l = by.get(("labssh", test))
    b = by.get(("labssh-builtin", test))
    r = by.get(("labssh-relay", test))
    if not s or not l:
        continue
    sm = statistics.median(x[0] for x in s)
    lm = statistics.median(x[0] for x in l)
    sc = statistics.median(x[3] for x in s)
    lc = statistics.median(x[3] for x in l)
    bm = "%.1f" % statistics.median(x[0] for x in b) if b else "-"
    rm = statistics.median(x[0] for x in r) if r else None
    rs = "%.1f" % rm if r else "-"
    rr = "%.2f" % (lm / rm) if r else "-"
    rc = "%.2f" % statistics.median(x[3] for x in r) if r else "-"
    peak_p = max(int(x[1]) for x in l + (b or []) + (r or []))
    peak_a = max(int(x[2]) for x in l + (b or []) + (r or []))
    lg = statistics.median(float(x[4]) for x in l)
    print("| %s | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %s | %s | %s | %s | %.1f MB | %.1f MB |" % (test, sm, lm, lm / sm, sc, lc, lg, bm, rs, rr, rc, peak_p / 1024, peak_a / 1024))
PY
