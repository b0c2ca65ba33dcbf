#!/usr/bin/env bash
# How long the proxy takes to refuse a wrong password for a user who exists vs any
# password for one who does not, on one proxy in one run (issue 20, finding 6: if
# unknown users are refused faster, timing tells who has an account). Prints the
# median of each, as the stock ssh client sees it, and their ratio (1.00: the same
# work; the unknown user's attempt runs one argon2 check against a dummy hash).
#
#   bash scripts/bench-auth-timing.sh
#   ROUNDS=100 PROFILE=dev bash scripts/bench-auth-timing.sh
#
# The proxy runs alone (refusing a login needs no controller) with
# auth_rejection_ms = 0: the constant rejection delay (300 ms by default) pads both
# kinds to the same time and would hide the work compared here. The per-user
# slow-down is off too: every attempt fails, so it would grow for both alike and
# swamp the difference. Each attempt is one ssh process (key exchange included,
# the same for both kinds); the two kinds alternate, so load affects both.
#
# Settings (environment):
#   ROUNDS   attempts of each kind (40), after 3 of each not counted
#   PORT     the proxy's SSH port (42390)
#   PROFILE  cargo profile of labssh (release, as it ships; dev skips that build)
#
# Nothing is timed as a test; the numbers are only printed.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-40}"
PORT="${PORT:-42390}"
PROFILE="${PROFILE:-release}"

say() { echo "bench-auth-timing: $*" >&2; }
die() { say "$*"; exit 1; }
source scripts/bench-lib.sh

command -v ssh >/dev/null || die "the OpenSSH client is missing"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  die "port $PORT is in use; set PORT"
fi
cargo build --profile "$PROFILE" --bin labssh >&2
dir=release
[ "$PROFILE" = dev ] && dir=debug
[ "$PROFILE" != dev ] && [ "$PROFILE" != release ] && dir="$PROFILE"
BIN="target/$dir"

WORK="$(mktemp -d /tmp/labssh-authtiming.XXXXXX)"
pids=()
cleanup() {
  stop_started
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf 'the-right-one\n' |
  "$BIN/labssh" user add known --password-stdin --users "$WORK/users.toml" >/dev/null
cat > "$WORK/proxy.toml" <<TOML
listen = "127.0.0.1:$PORT"
host_keys = ["$WORK/host_ed25519_key"]
users_file = "$WORK/users.toml"
cache_key_file = "$WORK/cache.key"
controller = "http://127.0.0.1:9"
auth_rejection_ms = 0

[rate_limit]
max_failures_per_address = 0
max_failures_per_user = 0
TOML
printf '#!/bin/sh\necho not-the-password\n' > "$WORK/askpass"
chmod 755 "$WORK/askpass"
start proxy "$PORT" "$BIN/labssh" proxy --config "$WORK/proxy.toml"

# One refused attempt as USER; prints its wall-clock time in microseconds.
attempt() {
  local t0 t1
  t0=$(date +%s%N)
  if SSH_ASKPASS="$WORK/askpass" SSH_ASKPASS_REQUIRE=force DISPLAY= \
    ssh -F /dev/null -p "$PORT" -o StrictHostKeyChecking=no \
      -o UserKnownHostsFile=/dev/null -o LogLevel=QUIET \
      -o PreferredAuthentications=password -o PubkeyAuthentication=no \
      -o NumberOfPasswordPrompts=1 "$1@127.0.0.1" true </dev/null >/dev/null 2>&1; then
    die "the login as $1 was not refused"
  fi
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000))
}

median_ms() { sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f", m / 1000 }'; }

for _ in 1 2 3; do attempt known >/dev/null; attempt nobody-here >/dev/null; done
: > "$WORK/known"
: > "$WORK/unknown"
for _ in $(seq 1 "$ROUNDS"); do
  attempt known >> "$WORK/known"
  attempt nobody-here >> "$WORK/unknown"
done
known=$(median_ms < "$WORK/known")
unknown=$(median_ms < "$WORK/unknown")
echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), profile $PROFILE, $ROUNDS attempts of each kind"
echo "median refusal, known user + wrong password: $known ms"
echo "median refusal, unknown user:                $unknown ms"
awk -v k="$known" -v u="$unknown" 'BEGIN { printf "ratio unknown / known:                       %.2f\n", u / k }'
