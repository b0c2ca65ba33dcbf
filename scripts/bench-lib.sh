# Shared by the bench-*.sh scripts (sourced). They define say/die, the array `pids`
# (killed on exit) and the directory WORK (logs).

# Waits until something accepts on 127.0.0.1:PORT while process PID lives; gives up
# after SECONDS (default 60) and shows the end of LOG.
wait_port() {
  local port=$1 pid=$2 log=$3 seconds=${4:-60}
  for _ in $(seq 1 $((seconds * 10))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      say "the server for port $port exited:"; tail -n 20 "$log" >&2; exit 1
    fi
    sleep 0.1
  done
  say "nothing listens on port $port after $seconds s:"; tail -n 20 "$log" >&2; exit 1
}

# start NAME PORT COMMAND...: runs COMMAND in the background with its output in
# $WORK/NAME.log, remembers it for the exit trap and waits for PORT. The process id
# is left in STARTED_PID (not printed: a $(start …) subshell would lose `pids`).
start() {
  local name=$1 port=$2 seconds=${START_TIMEOUT:-60}; shift 2
  "$@" >"$WORK/$name.log" 2>&1 &
  STARTED_PID=$!
  pids+=("$STARTED_PID")
  wait_port "$port" "$STARTED_PID" "$WORK/$name.log" "$seconds"
}

# Stops what `start` started: every process in `pids`, then waits for them.
stop_started() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# remove_lab PREFIX: removes the containers and home volumes of the agent prefix.
remove_lab() {
  docker ps -aq --filter "label=labssh.prefix=$1" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker volume ls -q --filter "label=labssh.prefix=$1" | xargs -r docker volume rm >/dev/null 2>&1 || true
}

# bench_image IMAGE: builds the busybox test image when that is the one asked for;
# any other image must already be on this machine (there is no registry to pull from).
bench_image() {
  case "$1" in
    labssh/busybox:*) bash scripts/build-busybox-image.sh "$1" >/dev/null ;;
    *) docker image inspect "$1" >/dev/null 2>&1 || die "image $1 is not present locally" ;;
  esac
}

# build_labssh_and_loadtest PROFILE: builds both binaries; their directory is left in BIN.
build_labssh_and_loadtest() {
  say "building labssh and labssh-loadtest ($1)"
  cargo build --profile "$1" -p labssh -p labssh-loadtest --bin labssh --bin labssh-loadtest
  case "$1" in dev) BIN=target/debug ;; *) BIN="target/$1" ;; esac
  BIN="$(cd "$BIN" && pwd)"
}

# pct FILE P: the P-th percentile of the numbers in FILE, one a line (nearest rank).
pct() { sort -n "$1" | awk -v p="$2" '{v[NR]=$1} END {i=int((p/100)*NR+0.999); if(i<1)i=1; print v[i]}'; }

# lab_config DIR PREFIX USERS KEY.pub: the agent and proxy configuration of a bench lab
# in DIR (agent `local` with container prefix PREFIX) and USERS students
# student001… with the key. All of them come from one address at once: the
# per-address and early-drop limits on connections not logged in yet are lifted (what
# they guard is not measured). START_CONCURRENCY, if set, is the agent's
# `start_concurrency`. Needs BIN (build_labssh_and_loadtest), or LABSSH.
lab_config() {
  local dir=$1 prefix=$2 users=$3 key=$4 width=${#3}
  [ "$width" -lt 3 ] && width=3
  local capacity=$((users > 300 ? users : 300))
  mkdir -p "$dir"
  cat > "$dir/agent.toml" <<TOML
name = "local"
capacity = $capacity
container_prefix = "$prefix"
TOML
  if [ -n "${START_CONCURRENCY:-}" ]; then
    echo "start_concurrency = $START_CONCURRENCY" >> "$dir/agent.toml"
  fi
  cat > "$dir/proxy.toml" <<TOML
host_keys = ["$dir/host_ed25519_key"]
users_file = "$dir/users.toml"
cache_key_file = "$dir/cache.key"
max_unauthenticated_per_address = $((users * 2))
max_startups = "$((users * 2)):30:$((users * 4))"
TOML
  for i in $(seq 1 "$users"); do
    "${LABSSH:-$BIN/labssh}" user add "$(printf "student%0${width}d" "$i")" \
      --key "$key" --users "$dir/users.toml" >/dev/null
  done
}

# at_once OUT N FUNC: runs `FUNC I` for I = 1…N all at once in the background and
# waits for them (only them: labssh runs in the background too). Each appends
# "I,START_NS,END_NS,STATUS" to OUT (emptied first), its own start and end.
at_once() {
  local out=$1 n=$2 func=$3 jobs=()
  : > "$out"
  for i in $(seq 1 "$n"); do
    ( s=$(date +%s%N); rc=0; "$func" "$i" >/dev/null 2>&1 || rc=$?; e=$(date +%s%N)
      echo "$i,$s,$e,$rc" >> "$out" ) &
    jobs+=($!)
  done
  wait "${jobs[@]}"
}

# arrivals IN CSV: at_once's lines as the CSV of time-to-shell in arrival order (by
# start): arrival,index,start_ms,ms,status, start_ms from the first start. Prints
# how many failed.
arrivals() {
  sort -t, -k2,2n "$1" | awk -F, 'BEGIN {print "arrival,index,start_ms,ms,status"}
    NR==1 {t0=$2} {printf "%d,%d,%d,%d,%d\n", NR, $1, ($2-t0)/1e6, ($3-$2)/1e6, $4; if ($4) bad++}
    END {print bad+0 > "/dev/stderr"}' > "$2" 2> "$2.failed"
  cat "$2.failed"; rm -f "$2.failed"
}

# ms_of CSV: the ms column of an arrivals CSV, one a line (its successes only).
ms_of() { awk -F, 'NR>1 && $5==0 {print $4}' "$1"; }
