#!/usr/bin/env bash
# Runs one cargo-fuzz target (fuzz/fuzz_targets/TARGET.rs) for SECONDS, starting from
# the committed seeds in fuzz/corpus/TARGET; new inputs it finds go to a scratch corpus
# beside them, crashes to fuzz/artifacts/TARGET/. Needs the nightly toolchain;
# installs cargo-fuzz when it is missing.
#
#   bash scripts/fuzz.sh                 # list the targets
#   bash scripts/fuzz.sh config 60       # one target for a minute
#   bash scripts/fuzz.sh all 5           # every target for 5 s each (a smoke run)
#
# What each target checks: fuzz-checks/src/lib.rs. The same checks replay the seeds
# on stable in `cargo test -p labssh-fuzz-checks`, which CI always runs.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^labssh-fuzz$')
if [ $# -eq 0 ]; then
  echo "targets:" $targets
  exit 0
fi
target="$1"
seconds="${2:-60}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is not installed (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
run() {
  local t="$1"
  local scratch="fuzz/target/corpus/$t"
  mkdir -p "$scratch"
  echo "== $t for ${seconds}s"
  # The committed seeds are read, never written: new inputs go to the scratch corpus.
  (cd fuzz && cargo +nightly fuzz run "$t" "../$scratch" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1) | tee "fuzz/target/$t.log" |
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)' || true
  if grep -q -E 'ERROR: libFuzzer|==[0-9]+==ERROR|panicked' "fuzz/target/$t.log"; then
    echo "fuzz.sh: $t crashed; see fuzz/target/$t.log and fuzz/artifacts/$t/" >&2
    return 1
  fi
}
if [ "$target" = all ]; then
  for t in $targets; do run "$t"; done
else
  run "$target"
fi
