#!/usr/bin/env bash
# Runs one cargo-fuzz target (fuzz/fuzz_targets/TARGET.rs) for SECONDS, starting from
# the committed seeds in fuzz/corpus/TARGET; new inputs it finds go to a scratch corpus
# beside them, crashes to fuzz/artifacts/TARGET/. Needs the nightly toolchain;
# installs cargo-fuzz when it is missing.
#
#   bash scripts/fuzz.sh                 # list the targets
#   bash scripts/fuzz.sh config 60       # one target for a minute
#   bash scripts/fuzz.sh all 5           # every target for 5 s each
#   bash scripts/fuzz.sh smoke 3         # CI's smoke run: every target for 3 s each,
#                                        # built unoptimised without a sanitizer (a
#                                        # quicker build; still coverage-guided)
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
flags=()
if [ "$target" = smoke ]; then
  target=all
  flags=(--dev -s none)
fi
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
  local status=0
  (cd fuzz && cargo +nightly fuzz run "${flags[@]}" "$t" "../$scratch" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1) > "fuzz/target/$t.log" 2>&1 || status=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)' \
    "fuzz/target/$t.log" || true
  # A crash, a failed build or anything else that stops the run early is a failure.
  if [ "$status" -ne 0 ] || ! grep -q '^stat::number_of_executed_units' "fuzz/target/$t.log"; then
    tail -n 30 "fuzz/target/$t.log" >&2
    echo "fuzz.sh: $t failed (exit $status); see fuzz/target/$t.log and fuzz/artifacts/$t/" >&2
    return 1
  fi
}
if [ "$target" = all ]; then
  for t in $targets; do run "$t"; done
else
  run "$target"
fi
