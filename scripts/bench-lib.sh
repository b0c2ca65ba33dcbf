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
