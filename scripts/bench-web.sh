#!/usr/bin/env bash
# Download throughput through the web front door beside `ssh -L`, in the same run
# (issue 18; BENCHMARKS.md, "The web front door"): one file of SIZE_MB served by
# busybox httpd in a student's container, fetched ROUNDS times each way, interleaved:
#   ssh -L   curl http://127.0.0.1:LOCAL/big through `ssh -N -L LOCAL:localhost:8080`
#   web      curl https://8080-bench.lab.localhost:PORT/big through `labssh web`
#            (HTTP/2 from curl, the login's cookie)
# and the peak RSS (VmHWM) of `labssh up`, which runs both the SSH proxy and the front
# door, before and after, so an unbounded buffer would show. Then REQUESTS small
# requests each way, one curl each (its connection reused where the server lets it:
# busybox httpd closes each, so through ssh -L each is a new SSH channel and Forward;
# through the front door each is a new Forward on one HTTP/2 connection): what one
# request costs, beside what a download does.
#
#   bash scripts/bench-web.sh
#   SIZE_MB=256 ROUNDS=1 PROFILE=dev bash scripts/bench-web.sh
#
# Settings (environment):
#   SIZE_MB   megabytes per download              (512)
#   ROUNDS    repetitions of each                 (3)
#   REQUESTS  small requests per round and way    (200; 0 for none)
#   PORT      SSH port; PORT+1 the front door; PORT+2 the local end of ssh -L (42400)
#   PROFILE   cargo profile of labssh             (release)
#
# Needs Docker, curl and the OpenSSH client. Nothing here is a test: the figures are
# printed, never judged.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB="${SIZE_MB:-512}"
ROUNDS="${ROUNDS:-3}"
REQUESTS="${REQUESTS:-200}"
PORT="${PORT:-42400}"
PROFILE="${PROFILE:-release}"
WEB=$((PORT + 1))
LOCAL=$((PORT + 2))
DOMAIN=lab.localhost
PREFIX=lbweb
pids=()

say() { echo "bench-web: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh

docker info >/dev/null 2>&1 || die "Docker does not answer (bash scripts/setup-host.sh starts it)"
command -v curl >/dev/null || die "curl is missing (apt-get install curl)"
bench_image labssh/busybox:latest
say "building labssh ($PROFILE)"
cargo build --profile "$PROFILE" -p labssh --bin labssh
TARGET="${CARGO_TARGET_DIR:-target}"
case "$PROFILE" in dev) BIN="$TARGET/debug" ;; *) BIN="$TARGET/$PROFILE" ;; esac
BIN="$(cd "$BIN" && pwd)"

WORK="$(mktemp -d)"
cleanup() { stop_started; remove_lab "$PREFIX"; rm -rf "$WORK"; }
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
echo "bench-password" | "$BIN/labssh" user add bench --password-stdin --key "$WORK/id.pub" --users "$WORK/users.toml" >/dev/null
mkdir -p "$WORK/up"
cp "$WORK/users.toml" "$WORK/up/users.toml"
cat > "$WORK/up/agent.toml" <<TOML
name = "local"
capacity = 10
container_prefix = "$PREFIX"
TOML
start up "$WEB" "$BIN/labssh" up --dir "$WORK/up" --listen "127.0.0.1:$PORT" --web "127.0.0.1:$WEB" --http "" --no-tls
UP_PID=$STARTED_PID
wait_port "$PORT" "$UP_PID" "$WORK/up.log"

SSH=(ssh -p "$PORT" -i "$WORK/id" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
     -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes)
say "serving $SIZE_MB MB from bench's container"
"${SSH[@]}" bench@127.0.0.1 "mkdir -p ~/www && head -c $((SIZE_MB * 1048576)) /dev/urandom > ~/www/big && echo small > ~/www/small && httpd -p 8080 -h ~/www"
controller=$(sed -n 's/^ *controller: *\(http[^ ]*\).*/\1/p' "$WORK/up.log" | head -1)
for _ in $(seq 1 300); do
  "$BIN/labssh" services --user bench --controller "$controller" 2>/dev/null | grep -q '^8080-bench ' && break
  sleep 0.1
done

CURL=(curl -s --cacert "$WORK/up/web.crt" --resolve "$DOMAIN:$WEB:127.0.0.1"
      --resolve "8080-bench.$DOMAIN:$WEB:127.0.0.1" -b "$WORK/jar" -c "$WORK/jar")
token=$("${CURL[@]}" "https://$DOMAIN:$WEB/login" | sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p')
[ -n "$token" ] || die "no login form from the front door"
"${CURL[@]}" -o /dev/null --data-urlencode user=bench --data-urlencode password=bench-password \
  --data-urlencode "csrf=$token" --data-urlencode next=/ "https://$DOMAIN:$WEB/login"
grep -q labssh_session "$WORK/jar" || die "the front door's login failed"

"${SSH[@]}" -N -L "$LOCAL:localhost:8080" bench@127.0.0.1 &
pids+=("$!")
wait_port "$LOCAL" "$!" /dev/null

hwm() { awk '/VmHWM/ {print $2}' "/proc/$UP_PID/status"; }
say "labssh up peak RSS before: $(hwm) kB"
# seconds SIZE: curl's total time for a download of the whole file, checked for size.
fetch() {
  local out
  out=$("$@" -o /dev/null -w '%{size_download} %{time_total}')
  [ "${out% *}" -eq $((SIZE_MB * 1048576)) ] || die "short download: $out"
  echo "${out#* }"
}
: > "$WORK/ssh.txt"; : > "$WORK/web.txt"
for round in $(seq 1 "$ROUNDS"); do
  t=$(fetch curl -s "http://127.0.0.1:$LOCAL/big"); echo "$t" >> "$WORK/ssh.txt"
  u=$(fetch "${CURL[@]}" "https://8080-bench.$DOMAIN:$WEB/big"); echo "$u" >> "$WORK/web.txt"
  say "round $round: ssh -L $t s, web $u s"
done
say "labssh up peak RSS after: $(hwm) kB"
mean() { awk '{s+=$1} END {printf "%.6f", s/NR}' "$1"; }
ssh_s=$(mean "$WORK/ssh.txt"); web_s=$(mean "$WORK/web.txt")
awk -v mb="$SIZE_MB" -v a="$ssh_s" -v b="$web_s" 'BEGIN {
  printf "download of %d MB, mean of the rounds:\n", mb
  printf "  ssh -L  %7.3f s  %7.1f MB/s\n", a, mb / a
  printf "  web     %7.3f s  %7.1f MB/s\n", b, mb / b
  printf "  web / ssh -L throughput: %.2f\n", a / b
}'

[ "$REQUESTS" -gt 0 ] || exit 0
# seconds per request: REQUESTS of URL through one curl (a config file of them).
many() {
  local url=$1; shift
  local cfg="$WORK/many.cfg" start end
  : > "$cfg"
  for _ in $(seq 1 "$REQUESTS"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >> "$cfg"; done
  start=$(date +%s.%N)
  "$@" --fail -K "$cfg" || die "a small request failed: $url"
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" -v n="$REQUESTS" 'BEGIN {printf "%.6f", (b - a) / n}'
}
: > "$WORK/ssh-small.txt"; : > "$WORK/web-small.txt"
for round in $(seq 1 "$ROUNDS"); do
  t=$(many "http://127.0.0.1:$LOCAL/small" curl -s); echo "$t" >> "$WORK/ssh-small.txt"
  u=$(many "https://8080-bench.$DOMAIN:$WEB/small" "${CURL[@]}"); echo "$u" >> "$WORK/web-small.txt"
  say "round $round: $REQUESTS small requests, ssh -L $t s each, web $u s each"
done
ssh_r=$(mean "$WORK/ssh-small.txt"); web_r=$(mean "$WORK/web-small.txt")
awk -v n="$REQUESTS" -v a="$ssh_r" -v b="$web_r" 'BEGIN {
  printf "%d small requests, mean per request over the rounds:\n", n
  printf "  ssh -L  %7.2f ms  %7.0f requests/s\n", a * 1000, 1 / a
  printf "  web     %7.2f ms  %7.0f requests/s\n", b * 1000, 1 / b
  printf "  web / ssh -L requests per second: %.2f\n", a / b
}'
