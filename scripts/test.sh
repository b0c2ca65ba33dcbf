#!/usr/bin/env bash
# The test command: sets up a fresh Debian machine (Docker, Redis, OpenSSH
# client, the busybox test image) and runs every test against the real parts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
bash scripts/build-busybox-image.sh labssh/busybox:latest
cargo test --workspace --all-targets "$@"
