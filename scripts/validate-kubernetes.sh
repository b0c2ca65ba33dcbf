#!/usr/bin/env bash
# Validates, offline, everything labssh sends to a Kubernetes API server against
# the API's OpenAPI schemas of two versions (kubernetes-validate from PyPI, strict:
# an unknown or misspelt field fails too):
#   - every object of each overlay of deploy/kubernetes (`kubectl kustomize`);
#   - the Secrets deploy/kubernetes/make-secrets.sh writes;
#   - the Pod, PersistentVolumeClaim and NetworkPolicy the agent's Kubernetes
#     backend builds, for each case of its kube-objects example.
# First it checks that the check can fail: deliberately broken objects must be
# refused, else the run fails.
#
#   bash scripts/validate-kubernetes.sh        (scripts/setup-host.sh installs what it uses)
#
# Versions: 1.33.0, the API the agent is built against (k8s-openapi's v1_33 in
# Cargo.toml), and the newest the installed kubernetes-validate knows.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${LABSSH_VENV:-/opt/labssh-venv}"
validator="$venv/bin/kubernetes-validate"
oldest="1.33.0"

die() {
  echo "validate-kubernetes: $*" >&2
  exit 1
}

[ -x "$validator" ] || die "$validator is missing: run scripts/setup-host.sh"
# kubectl whose kustomize is v5 (labels, replacements): the system's if it is one,
# else the one setup-host.sh put in the venv (Debian bookworm's is 1.20, kustomize v2).
kubectl=""
for candidate in "$(command -v kubectl || true)" "$venv/bin/kubectl"; do
  if [ -z "$candidate" ] || [ ! -x "$candidate" ]; then continue; fi
  if "$candidate" version --client 2>/dev/null | grep -Eq '^Kustomize Version: v[5-9]'; then
    kubectl="$candidate"
    break
  fi
done
[ -n "$kubectl" ] || die "no kubectl with kustomize v5 or later: run scripts/setup-host.sh"
newest="$("$venv/bin/python" -c 'from kubernetes_validate import utils; print(utils.latest_version())')"
[ "$newest" != "$oldest" ] || die "kubernetes-validate knows no version newer than $oldest"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# Validates FILE against both versions; counts one pass or one failure per version.
check() {
  local file="$1" version out
  for version in "$oldest" "$newest"; do
    if out="$("$validator" --strict --quiet -k "$version" "$file" 2>&1)"; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
      echo "validate-kubernetes: FAILED $file against $version:" >&2
      echo "$out" >&2
    fi
  done
}

# What must be refused, so a validator that accepts anything fails the run.
refused() {
  local file="$1" why="$2" version
  for version in "$oldest" "$newest"; do
    if "$validator" --strict --quiet -k "$version" "$file" >/dev/null 2>&1; then
      die "self-test: $why was accepted against $version: the check cannot fail"
    fi
  done
}

echo "validate-kubernetes: kubectl $("$kubectl" version --client | sed -n 's/^Client Version: //p'), kubernetes-validate against $oldest and $newest" >&2

# The self-test: a pod with a misspelt field (only strict validation finds it),
# one with a port that is not a number, and a NetworkPolicy missing a required
# field (an ipBlock's cidr).
mkdir -p "$work/broken"
cat >"$work/broken/misspelt.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: broken}
spec:
  nodeNmae: node-a
  containers: [{name: student, image: busybox}]
EOF
cat >"$work/broken/type.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: broken}
spec:
  containers: [{name: student, image: busybox, ports: [{containerPort: ssh}]}]
EOF
cat >"$work/broken/required.yaml" <<'EOF'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken}
spec:
  podSelector: {}
  egress: [{to: [{ipBlock: {except: [10.0.0.0/8]}}]}]
EOF
refused "$work/broken/misspelt.yaml" "a pod with a misspelt field"
refused "$work/broken/type.yaml" "a pod whose port is a word"
refused "$work/broken/required.yaml" "a NetworkPolicy ipBlock without its cidr"
# And a good object passes, so the refusals above are about the faults.
cat >"$work/broken/good.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: good}
spec:
  nodeName: node-a
  containers: [{name: student, image: busybox, ports: [{containerPort: 22}]}]
EOF
"$validator" --strict --quiet -k "$oldest" "$work/broken/good.yaml" >/dev/null ||
  die "self-test: a valid pod was refused"

# Each overlay, rendered as `kubectl apply -k` would, one file per overlay.
for overlay in deploy/kubernetes/overlays/*/; do
  name="$(basename "$overlay")"
  "$kubectl" kustomize "$overlay" >"$work/overlay-$name.yaml" ||
    die "kubectl kustomize $overlay failed"
  objects="$(grep -c '^kind: ' "$work/overlay-$name.yaml" || true)"
  [ "$objects" -gt 0 ] || die "overlay $name rendered no objects"
  echo "validate-kubernetes: overlay $name: $objects objects" >&2
  check "$work/overlay-$name.yaml"
done

# The path of an executable target, built if it is not up to date. `--workspace`
# as in scripts/test.sh: `-p` alone resolves the dependencies' features for one
# package and builds them a second time.
built() {
  cargo build -q --workspace "$@" --message-format=json-render-diagnostics |
    "$venv/bin/python" -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("executable")]
print(exe[-1] if exe else "")'
}

# The Secrets make-secrets.sh writes (needs the labssh binary for the certificates).
labssh="${LABSSH:-$(built --bin labssh)}"
[ -x "$labssh" ] || die "no labssh binary (cargo build --bin labssh)"
bash deploy/kubernetes/make-secrets.sh --dir "$work/secrets" --labssh "$labssh" \
  --node node-a --node ip-10-0-1-5.ec2.internal >"$work/secrets.yaml" 2>/dev/null ||
  die "make-secrets.sh failed"
[ "$(grep -c '^kind: Secret' "$work/secrets.yaml")" -eq 6 ] ||
  die "make-secrets.sh wrote $(grep -c '^kind: Secret' "$work/secrets.yaml") Secrets, not 6 (the web front door's TLS among them)"
check "$work/secrets.yaml"

# The agent's own objects, from its builders.
kube_objects="$(built --example kube-objects)"
[ -x "$kube_objects" ] || die "the kube-objects example did not build"
"$kube_objects" "$work/objects" 2>/dev/null || die "the kube-objects example failed"
count=0
for file in "$work"/objects/*.json; do
  [ -e "$file" ] || continue
  check "$file"
  count=$((count + 1))
done
[ "$count" -gt 0 ] || die "the kube-objects example wrote no objects"
echo "validate-kubernetes: $count agent objects" >&2

echo "validate-kubernetes: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
