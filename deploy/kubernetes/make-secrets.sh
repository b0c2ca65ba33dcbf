#!/usr/bin/env bash
# Writes the Secrets deploy/kubernetes mounts, as one YAML stream on stdout, made
# offline: the proxies' shared SSH host key (ssh-keygen), the users file, the
# credential cache's HMAC key and the web front door's session cookie key, the
# mTLS certificates of the controller, the proxies (the web front door uses theirs)
# and every named node's agent (`labssh certs`), and the web front door's HTTPS
# certificate (yours, or a self-signed one made with openssl).
#
#   bash deploy/kubernetes/make-secrets.sh --node node-a --node node-b > secrets.yaml
#   kubectl apply -f secrets.yaml
#
# Everything is kept in --dir (default ./labssh-k8s, private: it holds the CA's key
# and the host key): a second run reuses the CA, the host key, the cache and cookie
# keys and the self-signed web certificate, and only issues what is missing, so adding a node (`--node node-c`, with the others)
# changes no other key and known_hosts stays valid. Keep --dir off the cluster.
#
# Options:
#   --node NAME     a node whose agent gets a certificate (its Kubernetes node
#                   name, which is the agent's name); repeat for every node
#   --users FILE    the users file to ship (labssh user add NAME --users FILE);
#                   default: --dir's users.toml, an empty one at first
#   --web-cert FILE the web front door's certificate chain (PEM) for DOMAIN and
#   --web-key FILE  *.DOMAIN, and its key: your wildcard certificate. Without
#                   them, a self-signed one is made (once, kept in --dir), which
#                   browsers warn about
#   --web-domain D  the self-signed certificate's DOMAIN (default: [web] domain
#                   in base/config/proxy.toml)
#   --dir DIR       where the keys and certificates are kept
#   --labssh PATH   the labssh binary (default: $LABSSH, `labssh` on PATH, or this
#                   checkout's target/release or target/debug build)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
namespace="labssh"
dir="labssh-k8s"
users=""
labssh="${LABSSH:-}"
nodes=()
web_cert=""
web_key=""
web_domain=""

die() {
  echo "make-secrets: $*" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --node) [ $# -ge 2 ] || die "--node needs a name"; nodes+=("$2"); shift 2 ;;
    --users) [ $# -ge 2 ] || die "--users needs a file"; users="$2"; shift 2 ;;
    --dir) [ $# -ge 2 ] || die "--dir needs a directory"; dir="$2"; shift 2 ;;
    --labssh) [ $# -ge 2 ] || die "--labssh needs a path"; labssh="$2"; shift 2 ;;
    --web-cert) [ $# -ge 2 ] || die "--web-cert needs a file"; web_cert="$2"; shift 2 ;;
    --web-key) [ $# -ge 2 ] || die "--web-key needs a file"; web_key="$2"; shift 2 ;;
    --web-domain) [ $# -ge 2 ] || die "--web-domain needs a name"; web_domain="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[ "${#nodes[@]}" -gt 0 ] || die "name every node an agent runs on: --node NAME (kubectl get nodes)"
for node in "${nodes[@]}"; do
  # The agent's name rule (backend-agent/src/config.rs), which a node name must
  # meet since the agent is named after its node.
  [[ "$node" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ ]] ||
    die "node '$node' cannot be an agent's name ([A-Za-z0-9][A-Za-z0-9_.-], at most 63)"
done
if [ -z "$labssh" ]; then
  if command -v labssh >/dev/null 2>&1; then
    labssh="$(command -v labssh)"
  elif [ -x "$repo/target/release/labssh" ]; then
    labssh="$repo/target/release/labssh"
  elif [ -x "$repo/target/debug/labssh" ]; then
    labssh="$repo/target/debug/labssh"
  else
    die "no labssh binary: build one (cargo build --release -p labssh) or give --labssh PATH"
  fi
fi
[ -x "$labssh" ] || die "--labssh $labssh is not an executable"
command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen is missing (apt-get install openssh-client)"
[ -z "$users" ] || [ -f "$users" ] || die "--users $users: no such file"
if [ -n "$web_cert$web_key" ]; then
  [ -n "$web_cert" ] && [ -n "$web_key" ] || die "--web-cert and --web-key go together"
  grep -q -e '-----BEGIN CERTIFICATE-----' "$web_cert" 2>/dev/null ||
    die "--web-cert $web_cert: no PEM certificate in it"
  grep -q -e '-----BEGIN .*PRIVATE KEY-----' "$web_key" 2>/dev/null ||
    die "--web-key $web_key: no PEM private key in it"
fi
if [ -z "$web_domain" ]; then
  web_domain="$(sed -n 's/^domain *= *"\([^"]*\)".*/\1/p' "$here/base/config/proxy.toml" | head -n1)"
fi
[[ "$web_domain" =~ ^[a-z0-9-]+(\.[a-z0-9-]+)*$ ]] ||
  die "--web-domain '$web_domain' is not a lowercase DNS name like lab.example.edu"

umask 077
mkdir -p "$dir/certs"

# The proxies' one host key, made once.
host_key="$dir/ssh_host_ed25519_key"
if [ ! -f "$host_key" ]; then
  ssh-keygen -q -t ed25519 -N "" -C "labssh" -f "$host_key" >/dev/null
  echo "make-secrets: new host key $(ssh-keygen -l -f "$host_key")" >&2
fi
# The credential cache's HMAC key: 32 random bytes in hex, as the proxy makes it.
cache_key="$dir/cache.key"
if [ ! -f "$cache_key" ]; then
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$cache_key"
  echo >>"$cache_key"
fi
# The web front door's session cookie key, the same way (web.cookie_key_file).
cookie_key="$dir/web-cookie.key"
if [ ! -f "$cookie_key" ]; then
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$cookie_key"
  echo >>"$cookie_key"
fi
if [ -z "$users" ]; then
  users="$dir/users.toml"
  [ -f "$users" ] || : >"$users"
fi

# Certificates: existing ones are kept by `labssh certs`.
certs="$dir/certs"
"$labssh" certs --dir "$certs" --role controller --name labssh >/dev/null
"$labssh" certs --dir "$certs" --role proxy --name labssh >/dev/null
for node in "${nodes[@]}"; do
  "$labssh" certs --dir "$certs" --role agent --name "$node" >/dev/null
done

# The certificate browsers see. `labssh certs` issues only cluster certificates
# (from the cluster CA, naming a role), which are no browser's business; a
# self-signed one comes from openssl, once.
if [ -z "$web_cert" ]; then
  web_cert="$dir/web.crt"
  web_key="$dir/web.key"
  if [ ! -f "$web_cert" ] || [ ! -f "$web_key" ]; then
    command -v openssl >/dev/null 2>&1 ||
      die "openssl is missing for a self-signed web certificate (apt-get install openssl), or give --web-cert and --web-key"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
      -subj "/CN=$web_domain" -addext "subjectAltName=DNS:$web_domain,DNS:*.$web_domain" \
      -keyout "$web_key" -out "$web_cert" >/dev/null 2>&1 ||
      die "openssl could not make a self-signed certificate for $web_domain"
    echo "make-secrets: new SELF-SIGNED web certificate for $web_domain and *.$web_domain" \
      "in $web_cert (browsers warn; give --web-cert and --web-key for a real one)" >&2
  else
    echo "make-secrets: the web certificate is the self-signed $web_cert" \
      "(give --web-cert and --web-key for a real one)" >&2
  fi
fi

# One Secret: TYPE, NAME, then KEY=FILE pairs.
typed_secret() {
  local type="$1" name="$2"
  shift 2
  printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\n' "$name" "$namespace"
  printf '  labels:\n    app.kubernetes.io/part-of: labssh\ntype: %s\ndata:\n' "$type"
  local pair
  for pair in "$@"; do
    printf '  %s: %s\n' "${pair%%=*}" "$(base64 -w0 <"${pair#*=}")"
  done
}
secret() {
  typed_secret Opaque "$@"
}

echo "# labssh's Secrets, made by deploy/kubernetes/make-secrets.sh: kubectl apply -f this"
secret labssh-host-key "ssh_host_ed25519_key=$host_key"
secret labssh-users "users.toml=$users" "cache.key=$cache_key" "web-cookie.key=$cookie_key"
secret labssh-controller-tls "ca.pem=$certs/ca.pem" \
  "cert.pem=$certs/controller-labssh.pem" "key.pem=$certs/controller-labssh.key"
# The proxies' and the web front door's: the controller and agents authorise by
# certificate role, and the front door's calls are the proxy role's.
secret labssh-proxy-tls "ca.pem=$certs/ca.pem" \
  "cert.pem=$certs/proxy-labssh.pem" "key.pem=$certs/proxy-labssh.key"
# kubernetes.io/tls, the form cert-manager keeps a Certificate in, should it
# manage this one instead.
typed_secret kubernetes.io/tls labssh-web-tls "tls.crt=$web_cert" "tls.key=$web_key"
agent_files=("ca.pem=$certs/ca.pem")
for node in "${nodes[@]}"; do
  agent_files+=("agent-$node.pem=$certs/agent-$node.pem" "agent-$node.key=$certs/agent-$node.key")
done
secret labssh-agent-tls "${agent_files[@]}"
echo "make-secrets: ${#nodes[@]} agent certificate(s); students' known_hosts line:" >&2
echo "  [your-lab-host] $(cut -d' ' -f1,2 "$host_key.pub")" >&2
