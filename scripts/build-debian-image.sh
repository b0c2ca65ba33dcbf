#!/usr/bin/env bash
# Builds a real Debian lab image with debootstrap (no registry needed; about a
# minute). Includes bash, coreutils, procps, less, nano, python3, openssh's
# sftp-server, scp, rsync, sshd (a student's own, for ProxyJump), xauth and the X11
# utilities (xdpyinfo, xmessage) for ssh -X, and sudo-free tooling students expect.
set -euo pipefail
IMAGE="${1:-labssh/debian:bookworm}"
# Bumped whenever the package list changes, so an older image is rebuilt.
VERSION=4
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
have="$(docker image inspect -f '{{index .Config.Labels "labssh.image-version"}}' "$IMAGE" 2>/dev/null || true)"
if [ "$have" = "$VERSION" ] && [ -z "${FORCE:-}" ]; then
  echo "image $IMAGE already present"; exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
echo "debootstrap $SUITE into $root (this takes a minute)"
debootstrap --variant=minbase \
  --include=bash,coreutils,procps,less,nano,vim-tiny,python3,openssh-sftp-server,openssh-client,openssh-server,rsync,xauth,x11-utils,ca-certificates,iproute2,iputils-ping,curl,git,make,gcc,libc6-dev \
  "$SUITE" "$root" "$MIRROR" >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
echo 'labssh' > "$root/etc/hostname"
# sshd wants its privilege-separation directory, which only systemd would make; a
# student may run their own sshd (as themselves, on a high port) for ProxyJump.
mkdir -p "$root/run/sshd"
rm -f "$root"/etc/ssh/ssh_host_*
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL labssh.image-version=$VERSION" - "$IMAGE" >/dev/null
echo "built $IMAGE"
