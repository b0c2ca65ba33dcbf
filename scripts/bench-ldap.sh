#!/usr/bin/env bash
# What LDAP adds to a password login, and what the credential cache takes off
# (issue 14): the loadtest sweep at 1, 100, 300 parallel password logins, students
# from a real slapd beside students from the users file, cache cold and warm, in
# one run. Prints p50/p99 of the auth phase and of the whole login per target and
# level, and the ratio LDAP / users file.
#
#   bash scripts/bench-ldap.sh
#   LEVELS=1,10 PROFILE=dev bash scripts/bench-ldap.sh
#
# One controller and one agent serve four proxies, which differ only in their
# authenticator (auth.chain) and cache, for the same students student001…:
#   file-cold / ldap-cold  auth_cache_ttl_secs = 0: every login is checked by the
#                          authenticator (argon2 for the users file; search, group
#                          search and bind for LDAP);
#   file-warm / ldap-warm  auth_cache_ttl_secs = 300 (the default): `--warm` logs every
#                          student in once before the first level, so measured
#                          logins are cache hits.
# Same password for all; the directory stores it as {SSHA}. slapd is local
# (loopback), so the figures are the directory's and the proxy's work, not a
# campus network's round trips.
#
# Settings (environment):
#   LEVELS         parallel logins per level                  (1,100,300)
#   USERS          students                                   (the highest level)
#   POOL           auth.ldap.pool_size                        (4, the default)
#   IMAGE          the containers' image                      (labssh/busybox:latest)
#   OUT            results directory                          (target/bench-ldap-DATE)
#   PORT_BASE      controller, agent, slapd, then the four proxies: PORT_BASE…+6 (42500);
#                  right after a run its ports may still be in TIME-WAIT ("Address
#                  already in use"): wait a minute or choose another
#   PHASE_TIMEOUT  seconds any one phase may take              (300)
#   PROFILE        cargo profile of the binaries              (release)
#
# Nothing is timed as a test; the numbers are only printed (and kept in OUT).
set -euo pipefail
cd "$(dirname "$0")/.."

LEVELS="${LEVELS:-1,100,300}"
IMAGE="${IMAGE:-labssh/busybox:latest}"
OUT="${OUT:-target/bench-ldap-$(date +%Y%m%d-%H%M%S)}"
PORT_BASE="${PORT_BASE:-42500}"
PHASE_TIMEOUT="${PHASE_TIMEOUT:-300}"
PROFILE="${PROFILE:-release}"
POOL="${POOL:-4}"
max_level=$(echo "$LEVELS" | tr ',:-' '\n\n\n' | grep -E '^[0-9]+$' | sort -n | tail -n 1)
USERS="${USERS:-${max_level:-1}}"
width=${#USERS}; [ "$width" -lt 3 ] && width=3
PASSWORD="bench-ldap-correct-horse"
PREFIX=lbldap
BASE_DN="dc=bench,dc=test"

P_CONTROLLER=$PORT_BASE
P_AGENT=$((PORT_BASE + 1))
P_SLAPD=$((PORT_BASE + 2))
TARGETS=(file-cold ldap-cold file-warm ldap-warm)
port_of() {  # the proxy port of a target
  case "$1" in file-cold) echo $((PORT_BASE + 3)) ;; ldap-cold) echo $((PORT_BASE + 4)) ;;
    file-warm) echo $((PORT_BASE + 5)) ;; ldap-warm) echo $((PORT_BASE + 6)) ;; esac
}

say() { echo "bench-ldap: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh

[ -x /usr/sbin/slapd ] || die "slapd is missing (bash scripts/setup-host.sh installs it)"
command -v slappasswd >/dev/null || die "slappasswd is missing (Debian's slapd package)"
docker info >/dev/null 2>&1 || die "Docker does not answer (bash scripts/setup-host.sh starts it)"
for port in "$P_CONTROLLER" "$P_AGENT" "$P_SLAPD" $(for t in "${TARGETS[@]}"; do port_of "$t"; done); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is taken; choose another PORT_BASE"
  fi
done
bench_image "$IMAGE"
build_labssh_and_loadtest "$PROFILE"

WORK="$(mktemp -d /tmp/labssh-bench-ldap.XXXXXX)"
pids=()
cleanup() {
  stop_started
  remove_lab "$PREFIX"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
START_TIMEOUT=30

# --- the directory ----------------------------------------------------------------
say "making a directory of $USERS students (slapd on 127.0.0.1:$P_SLAPD)"
mkdir -p "$WORK/slapd/db"
cat > "$WORK/slapd/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile $WORK/slapd/slapd.pid
argsfile $WORK/slapd/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "$BASE_DN"
rootdn "cn=admin,$BASE_DN"
directory $WORK/slapd/db
maxsize 104857600
index uid,memberUid,objectClass eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by dn.exact="cn=reader,$BASE_DN" read by self read by * none
CONF
hash=$(slappasswd -h '{SSHA}' -s "$PASSWORD")
reader_pw="bench-reader-pw"
{
  printf 'dn: %s\nobjectClass: dcObject\nobjectClass: organization\no: bench\ndc: bench\n\n' "$BASE_DN"
  printf 'dn: ou=people,%s\nobjectClass: organizationalUnit\nou: people\n\n' "$BASE_DN"
  printf 'dn: ou=groups,%s\nobjectClass: organizationalUnit\nou: groups\n\n' "$BASE_DN"
  printf 'dn: cn=reader,%s\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\nuserPassword: %s\n\n' \
    "$BASE_DN" "$(slappasswd -h '{SSHA}' -s "$reader_pw")"
  members=""
  for i in $(seq 1 "$USERS"); do
    u=$(printf "student%0${width}d" "$i")
    printf 'dn: uid=%s,ou=people,%s\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nuid: %s\ncn: %s\nsn: %s\nuidNumber: %d\ngidNumber: 20000\nhomeDirectory: /home/%s\nuserPassword: %s\n\n' \
      "$u" "$BASE_DN" "$u" "$u" "$u" $((20000 + i)) "$u" "$hash"
    members+="memberUid: $u"$'\n'
  done
  printf 'dn: cn=cs101,ou=groups,%s\nobjectClass: posixGroup\ncn: cs101\ngidNumber: 30001\n%s\n' "$BASE_DN" "$members"
} > "$WORK/slapd/data.ldif"
/usr/sbin/slapadd -q -f "$WORK/slapd/slapd.conf" -l "$WORK/slapd/data.ldif"
printf '%s\n' "$reader_pw" > "$WORK/reader.pw"
start slapd "$P_SLAPD" /usr/sbin/slapd -f "$WORK/slapd/slapd.conf" -h "ldap://127.0.0.1:$P_SLAPD/" -d 0

# --- labssh: controller, agent, two proxies ---------------------------------------
say "adding the $USERS students to the users file"
for i in $(seq 1 "$USERS"); do
  printf '%s\n' "$PASSWORD" | "$BIN/labssh" user add "$(printf "student%0${width}d" "$i")" \
    --password-stdin --users "$WORK/users.toml" >/dev/null
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
capacity = $(( USERS > 300 ? USERS : 300 ))
container_prefix = "$PREFIX"
firewall = false
TOML
proxy_toml() {  # port, cache ttl, authenticator
  cat <<TOML
listen = "127.0.0.1:$1"
host_keys = ["$WORK/host_key"]
users_file = "$WORK/users.toml"
cache_key_file = "$WORK/cache.key"
controller = "http://127.0.0.1:$P_CONTROLLER"
auth_cache_ttl_secs = $2
session_start_timeout_secs = 300
max_unauthenticated_per_address = $((USERS * 4))
max_startups = "$((USERS * 4)):30:$((USERS * 8))"

[rate_limit]
max_failures_per_address = 0
max_failures_per_user = 0

[auth]
chain = ["$3"]
TOML
  [ "$3" = ldap ] || return 0
  cat <<TOML

[auth.ldap]
url = "ldap://127.0.0.1:$P_SLAPD"
bind_dn = "cn=reader,$BASE_DN"
bind_password_file = "$WORK/reader.pw"
base_dn = "ou=people,$BASE_DN"
group_base_dn = "ou=groups,$BASE_DN"
group_attribute = ""
pool_size = $POOL
TOML
}
ulimit -n 65536 2>/dev/null || true
start controller "$P_CONTROLLER" "$BIN/labssh" controller --config "$WORK/controller.toml"
start agent "$P_AGENT" "$BIN/labssh" agent --config "$WORK/agent.toml"
# The agent's port is open before it has registered; a login before then finds no agent.
registered=""
for _ in $(seq 1 150); do
  if "$BIN/labssh" agent list --controller "http://127.0.0.1:$P_CONTROLLER" 2>/dev/null \
    | awk '$1 == "bench" && $2 == "yes" { found = 1 } END { exit !found }'; then
    registered=1
    break
  fi
  sleep 0.2
done
[ -n "$registered" ] || die "the agent did not register with the controller within 30 s"
targets=()
for t in "${TARGETS[@]}"; do
  ttl=300; [ "${t#*-}" = cold ] && ttl=0
  authenticator=users_file; [ "${t%-*}" = ldap ] && authenticator=ldap
  proxy_toml "$(port_of "$t")" "$ttl" "$authenticator" > "$WORK/$t.toml"
  start "$t" "$(port_of "$t")" "$BIN/labssh" proxy --config "$WORK/$t.toml"
  targets+=(--target "$t=127.0.0.1:$(port_of "$t"),users=student:$USERS,password=$PASSWORD")
done

# --- the sweep ----------------------------------------------------------------------
mkdir -p "$OUT"
say "sweeping levels $LEVELS (results in $OUT)"
status=0
"$BIN/labssh-loadtest" sweep --levels "$LEVELS" --warm --phase-timeout "$PHASE_TIMEOUT" \
  "${targets[@]}" \
  --out "$OUT" >&2 || status=$?
for p in "${TARGETS[@]}" slapd; do cp "$WORK/$p.log" "$OUT/$p.log" 2>/dev/null || true; done
{
  echo "levels=$LEVELS users=$USERS pool_size=$POOL image=$IMAGE profile=$PROFILE"
  echo "cpus=$(nproc) kernel=$(uname -r) slapd=$(/usr/sbin/slapd -VV 2>&1 | head -n 1 | sed 's/^@(#) \$//')"
} > "$OUT/machine.txt"

# p50/p99 (ms) of the auth phase and of the whole login, with LDAP / users file.
[ -f "$OUT/phases.csv" ] || die "the sweep wrote no phases.csv (status $status)"
awk -F, '
  NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
  $col["phase"] == "auth" || $col["phase"] == "total" {
    k = $col["target"] SUBSEP $col["level"] SUBSEP $col["phase"]
    p50[k] = $col["p50_ms"]; p99[k] = $col["p99_ms"]
    if (!($col["level"] in seen)) { seen[$col["level"]] = 1; order[++n] = $col["level"] }
  }
  function ratio(a, b) { return (b > 0 && a != "") ? sprintf("%.2f", a / b) : "-" }
  END {
    printf "%-5s %-5s %-6s %10s %10s %10s %10s %7s %7s\n", "level", "cache", "phase", "file p50", "ldap p50", "file p99", "ldap p99", "p50 x", "p99 x"
    for (j = 1; j <= n; j++) for (c = 0; c < 2; c++) for (ph = 0; ph < 2; ph++) {
      l = order[j]; cache = c ? "warm" : "cold"; phase = ph ? "total" : "auth"
      f = "file-" cache SUBSEP l SUBSEP phase; d = "ldap-" cache SUBSEP l SUBSEP phase
      printf "%-5s %-5s %-6s %10s %10s %10s %10s %7s %7s\n", l, cache, phase, p50[f], p50[d], p99[f], p99[d], ratio(p50[d], p50[f]), ratio(p99[d], p99[f])
    }
  }' "$OUT/phases.csv" | tee "$OUT/ldap-vs-file.txt"
exit "$status"
