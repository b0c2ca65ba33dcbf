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
if [ ! -s "$DIR/users.toml" ]; then
  echo student | ./target/release/labssh user add student --password-stdin --users "$DIR/users.toml"
  echo "created user 'student' with password 'student' (change it: labssh user add student --users $DIR/users.toml)"
fi
exec ./target/release/labssh up --dir "$DIR" --image "$IMAGE" "$@"
