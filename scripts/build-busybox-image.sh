#!/usr/bin/env bash
# Builds a tiny lab image from Debian's busybox-static, for tests and quick trials.
# No registry is needed: the root filesystem is assembled here and `docker import`ed.
set -euo pipefail
IMAGE="${1:-labssh/busybox:latest}"
if docker image inspect "$IMAGE" >/dev/null 2>&1 && [ -z "${FORCE:-}" ]; then
  echo "image $IMAGE already present"; exit 0
fi
# Debian's busybox-static puts a statically linked busybox at /bin/busybox.
BUSYBOX=/bin/busybox
if [ ! -x "$BUSYBOX" ]; then
  echo "$BUSYBOX is missing: apt-get install busybox-static" >&2; exit 1
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home,proc,sys,dev,var/tmp}
chmod 1777 "$root/tmp" "$root/var/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$root/etc/group" <<'G'
root:x:0:
nogroup:x:65534:
G
echo 'export PS1="\u@\h:\w\$ "' > "$root/etc/profile"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
echo "built $IMAGE"
