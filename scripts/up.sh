#!/usr/bin/env bash
# One command from a fresh Debian machine to a lab you can ssh into:
# installs the host's needs, builds a Debian lab image locally, builds labssh,
# creates a demo student (unless users exist) and runs `labssh up`.
#
#   bash scripts/up.sh            # then: ssh -p 2222 student@127.0.0.1
#   IMAGE=labssh/busybox:latest bash scripts/up.sh   # tiny image, no debootstrap
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${DIR:-labssh-dev}"
IMAGE="${IMAGE:-labssh/debian:bookworm}"
bash scripts/setup-host.sh
case "$IMAGE" in
  labssh/busybox:*) bash scripts/build-busybox-image.sh "$IMAGE" ;;
  labssh/debian:*) bash scripts/build-debian-image.sh "$IMAGE" ;;
  *) docker image inspect "$IMAGE" >/dev/null 2>&1 || { echo "image $IMAGE is not present locally" >&2; exit 1; } ;;
esac
cargo build --release --bin labssh
mkdir -p "$DIR"
if [ ! -f "$DIR/controller.toml" ] && [ "$IMAGE" = "labssh/debian:bookworm" ]; then
  # First run: a Debian lab with bash, plus a tiny busybox environment.
  cat > "$DIR/controller.toml" <<'TOML'
# labssh controller configuration (written by scripts/up.sh; edit freely).
default_environment = "default"

[environments.default]               # ssh student@...
image = "labssh/debian:bookworm"
description = "Debian lab shell"
memory_mb = 1024
cpus = 1.0
pids_limit = 512
uid = 1000
gid = 1000
shell = "/bin/bash"

[environments.tiny]                  # ssh student+tiny@...
image = "labssh/busybox:latest"
description = "Busybox, for quick checks"
memory_mb = 128
cpus = 0.5
pids_limit = 64
shell = "/bin/sh"
TOML
  bash scripts/build-busybox-image.sh labssh/busybox:latest
fi
if [ ! -s "$DIR/users.toml" ]; then
  echo student | ./target/release/labssh user add student --password-stdin --users "$DIR/users.toml"
  echo "created user 'student' with password 'student' (change it: labssh user add student --users $DIR/users.toml)"
fi
if grep -q 'labssh/debian:bookworm' "$DIR/controller.toml" 2>/dev/null && [ "$IMAGE" = "labssh/debian:bookworm" ]; then
  exec ./target/release/labssh up --dir "$DIR" "$@"
fi
exec ./target/release/labssh up --dir "$DIR" --image "$IMAGE" "$@"
