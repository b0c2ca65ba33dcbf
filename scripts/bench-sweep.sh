#!/usr/bin/env bash
# Connection sweep, three SSH servers side by side on this machine
# (BENCHMARKS.md, "Connection sweep (loadtest)"):
#   sshd         plain OpenSSH sshd on loopback: system users lbdx001…, /bin/sh, no container
#   labssh       `labssh up` on the local Docker, students student001…studentN
#   docker-exec  the same sshd and users, with a ForceCommand that runs `docker exec -i`
#                into the user's own container (a ContainerSSH-like baseline)
# Same key, same command, same levels, run interleaved; sshd is the ratios' baseline.
#
#   bash scripts/bench-sweep.sh
#   LEVELS=1,10,20 bash scripts/bench-sweep.sh
#   LEVELS=1,10-300:10 PHASE_TIMEOUT=300 bash scripts/bench-sweep.sh   # the full experiment
#   COLD=1 bash scripts/bench-sweep.sh     # remove the containers before every level
#
# Settings (environment):
#   LEVELS         parallel connections per level            (1,10,50,100: this box has 2 cores)
#   USERS          distinct students                         (the highest level)
#   COMMAND        what every connection runs                (true)
#   IMAGE          the containers' image                     (labssh/busybox:latest)
#   OUT            results directory                         (target/bench-sweep-DATE)
#   PORT_BASE      labssh, sshd, docker-exec listen on PORT_BASE, +1, +2   (42100)
#   PHASE_TIMEOUT  seconds any one phase may take            (120)
#   COLD           1: --before-level removes the target's containers, so every
#                  level starts cold (docker-exec then creates them on login)
#   PROFILE        cargo profile of the binaries             (release)
#   KEEP           1: keep the bench users, containers and state directory
#
# Needs root (it adds system users lbdx001… in group docker for the two sshds and
# removes them at exit), Docker, and openssh-server.
set -euo pipefail
cd "$(dirname "$0")/.."

LEVELS="${LEVELS:-1,10,50,100}"
COMMAND="${COMMAND:-true}"
IMAGE="${IMAGE:-labssh/busybox:latest}"
OUT="${OUT:-target/bench-sweep-$(date +%Y%m%d-%H%M%S)}"
PORT_BASE="${PORT_BASE:-42100}"
PHASE_TIMEOUT="${PHASE_TIMEOUT:-120}"
COLD="${COLD:-0}"
PROFILE="${PROFILE:-release}"
KEEP="${KEEP:-0}"
SSHD=/usr/sbin/sshd

# The highest number in LEVELS (ranges such as 10-300:10 included).
max_level=$(echo "$LEVELS" | tr ',:-' '\n\n\n' | grep -E '^[0-9]+$' | sort -n | tail -n 1)
USERS="${USERS:-${max_level:-1}}"
# labssh-loadtest pads user numbers to three digits, or more for 1000+ users.
width=${#USERS}; [ "$width" -lt 3 ] && width=3

# Names that cannot collide with a developer's own `labssh up` (prefix labssh).
LABSSH_PREFIX=lbbench          # labssh containers: lbbench-student001-default
DX_USER=lbdx                   # docker-exec system users: lbdx001…
DX_LABEL=labssh-bench=docker-exec

P_LABSSH=$PORT_BASE
P_SSHD=$((PORT_BASE + 1))
P_DX=$((PORT_BASE + 2))

say() { echo "bench-sweep: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh

[ "$(id -u)" -eq 0 ] || die "run as root: the sshd baselines need system users"
[ -x "$SSHD" ] || die "$SSHD is missing: apt-get install openssh-server"
command -v ssh-keygen >/dev/null || die "ssh-keygen is missing: apt-get install openssh-client"
docker info >/dev/null 2>&1 || die "Docker does not answer (bash scripts/setup-host.sh starts it)"
getent group docker >/dev/null || die "there is no 'docker' group to let the docker-exec users reach Docker"
for port in "$P_LABSSH" "$P_SSHD" "$P_DX"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is taken; choose another PORT_BASE"
  fi
done

bench_image "$IMAGE"

build_labssh_and_loadtest "$PROFILE"

WORK="$(mktemp -d /tmp/labssh-bench.XXXXXX)"
chmod 755 "$WORK"   # sshd reads authorized_keys as the logging-in user
pids=()
cleanup() {
  stop_started
  if [ "$KEEP" = 1 ]; then
    say "kept $WORK, the users $DX_USER* and the containers"
    return
  fi
  docker ps -aq --filter "label=$DX_LABEL" | xargs -r docker rm -f >/dev/null 2>&1 || true
  remove_lab "$LABSSH_PREFIX"
  for i in $(seq 1 "$USERS"); do
    userdel "$(printf "%s%0${width}d" "$DX_USER" "$i")" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
cp "$WORK/id.pub" "$WORK/authorized_keys"

# --- labssh -------------------------------------------------------------------
say "starting labssh on 127.0.0.1:$P_LABSSH with $USERS students"
mkdir -p "$WORK/labssh"
capacity=$((USERS > 300 ? USERS : 300))
cat > "$WORK/labssh/agent.toml" <<EOF
name = "local"
capacity = $capacity
container_prefix = "$LABSSH_PREFIX"
EOF
for i in $(seq 1 "$USERS"); do
  "$BIN/labssh" user add "$(printf "student%0${width}d" "$i")" \
    --key "$WORK/id.pub" --users "$WORK/labssh/users.toml" >/dev/null
done
"$BIN/labssh" up --dir "$WORK/labssh" --listen "127.0.0.1:$P_LABSSH" --image "$IMAGE" \
  >"$WORK/labssh.log" 2>&1 &
pids+=($!)
wait_port "$P_LABSSH" "$!" "$WORK/labssh.log"

# --- OpenSSH sshd, plain and docker-exec ----------------------------------------
sshd_config() {
  local port=$1 allow=$2
  cat <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $WORK/host_key
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile $WORK/authorized_keys
StrictModes no
PidFile none
PermitRootLogin no
AllowUsers $allow
UseDNS no
MaxStartups 100000
MaxSessions 100000
MaxAuthTries 100
LoginGraceTime 600
LogLevel ERROR
EOF
}
say "creating $USERS system users for the sshd baselines"
for i in $(seq 1 "$USERS"); do
  user=$(printf "%s%0${width}d" "$DX_USER" "$i")
  id "$user" >/dev/null 2>&1 || useradd -M -d /tmp -s /bin/sh -G docker "$user"
  usermod -p '*' "$user"   # unlocked, no password: key logins only
done
mkdir -p /run/sshd
sshd_config "$P_SSHD" "$DX_USER*" > "$WORK/sshd_config"
# OpenSSH 9.8+ penalises addresses that fail or drop; the load comes from one address.
if "$SSHD" -T -f "$WORK/sshd_config" 2>/dev/null | grep -qi '^persourcepenalties'; then
  echo "PerSourcePenalties no" >> "$WORK/sshd_config"
fi
say "starting plain sshd on 127.0.0.1:$P_SSHD"
"$SSHD" -D -e -f "$WORK/sshd_config" 2>"$WORK/sshd.log" &
pids+=($!)
wait_port "$P_SSHD" "$!" "$WORK/sshd.log"

# The student's own container; a tty only when the client asked for one.
cat > "$WORK/docker-exec.sh" <<EOF
#!/bin/sh
name="$DX_USER-\$USER"
if [ "$COLD" = 1 ]; then
  # ContainerSSH-like: create the container on demand.
  docker container inspect "\$name" >/dev/null 2>&1 ||
    docker run -d --name "\$name" --label "$DX_LABEL" --network none "$IMAGE" sleep 2147483647 >/dev/null 2>&1 ||
    docker container inspect "\$name" >/dev/null 2>&1 || exit 255
fi
tty=""
[ -n "\${SSH_TTY:-}" ] && tty="-t"
exec docker exec -i \$tty "\$name" /bin/sh -c "\${SSH_ORIGINAL_COMMAND:-exec /bin/sh -l}"
EOF
chmod 755 "$WORK/docker-exec.sh"
if [ "$COLD" != 1 ]; then
  say "creating their $USERS containers"
  seq -f "$DX_USER%0${width}g" 1 "$USERS" | xargs -P 4 -I{} sh -c '
    docker rm -f "$1-$2" >/dev/null 2>&1
    docker run -d --name "$1-$2" --label "$3" --network none "$4" sleep 2147483647 >/dev/null
  ' _ "$DX_USER" {} "$DX_LABEL" "$IMAGE"
fi
{ sshd_config "$P_DX" "$DX_USER*"; echo "ForceCommand $WORK/docker-exec.sh"; } > "$WORK/sshd_dx_config"
if "$SSHD" -T -f "$WORK/sshd_dx_config" 2>/dev/null | grep -qi '^persourcepenalties'; then
  echo "PerSourcePenalties no" >> "$WORK/sshd_dx_config"
fi
say "starting docker-exec sshd on 127.0.0.1:$P_DX"
"$SSHD" -D -e -f "$WORK/sshd_dx_config" 2>"$WORK/sshd_dx.log" &
pids+=($!)
wait_port "$P_DX" "$!" "$WORK/sshd_dx.log"

# --- the sweep ------------------------------------------------------------------
extra=(--warm)
if [ "$COLD" = 1 ]; then
  extra=(--before-level "case \"\$LOADTEST_TARGET\" in
    labssh) docker ps -aq --filter label=labssh.prefix=$LABSSH_PREFIX | xargs -r docker rm -f >/dev/null ;;
    docker-exec) docker ps -aq --filter label=$DX_LABEL | xargs -r docker rm -f >/dev/null ;;
  esac")
fi
ulimit -n 65536 2>/dev/null || true
mkdir -p "$OUT"
say "sweeping levels $LEVELS (results in $OUT)"
status=0
"$BIN/labssh-loadtest" sweep \
  --levels "$LEVELS" \
  --command "$COMMAND" \
  --phase-timeout "$PHASE_TIMEOUT" \
  --target "sshd=127.0.0.1:$P_SSHD,users=$DX_USER:$USERS,key=$WORK/id" \
  --target "labssh=127.0.0.1:$P_LABSSH,users=student:$USERS,key=$WORK/id" \
  --target "docker-exec=127.0.0.1:$P_DX,users=$DX_USER:$USERS,key=$WORK/id" \
  --out "$OUT" "${extra[@]}" || status=$?
{
  echo "levels=$LEVELS users=$USERS command=$COMMAND image=$IMAGE cold=$COLD profile=$PROFILE"
  echo "cpus=$(nproc) kernel=$(uname -r) sshd=$("$SSHD" -V 2>&1 | head -n 1)"
  echo "docker=$(docker version --format '{{.Server.Version}}' 2>/dev/null)"
} > "$OUT/machine.txt"
cp "$WORK/labssh.log" "$OUT/labssh.log" 2>/dev/null || true
exit "$status"
