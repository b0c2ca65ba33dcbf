#!/usr/bin/env bash
# Placement at scale (issue 23): the controller's real Registry and Placer, simulated
# agents and users, in release, in one process (controller/examples/bench-placement.rs
# says what each figure means).
#
#   bash scripts/bench-placement.sh
#   bash scripts/bench-placement.sh --agents 10,100 --users 10000   # any example argument
#   BASELINE=93086f0 bash scripts/bench-placement.sh                 # before/after, one run
#
# Settings (environment):
#   BASELINE  a git revision: the same benchmark is also built against the controller
#             at that revision (from `git archive`, into a temporary directory) and run
#             first, agent count by agent count interleaved with the current code, and
#             the ratios printed (baseline ÷ current for times, current ÷ baseline for
#             rates)
#   OUT       results directory                                  (target/bench-placement-DATE)
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-target/bench-placement-$(date +%Y%m%d-%H%M%S)}"
BASELINE="${BASELINE:-}"
say() { echo "bench-placement: $*" >&2; }
die() { say "$*"; exit 1; }

# The agent counts, from --agents if given (for interleaving), else the default.
agents="10,100,1000,5000"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --agents) [ $# -ge 2 ] || die "--agents needs a value"; agents=$2; shift 2 ;;
    --tsv) die "--tsv is set by this script" ;;
    *) args+=("$1"); shift ;;
  esac
done

mkdir -p "$OUT"
TARGET="$(pwd)/target"
WORK=""
cleanup() { [ -z "$WORK" ] || rm -rf "$WORK"; }
trap cleanup EXIT

say "building the benchmark (release)"
cargo build --release -p labssh-controller --example bench-placement
cp target/release/examples/bench-placement "$OUT/bench-current"

if [ -n "$BASELINE" ]; then
  rev=$(git rev-parse --verify "$BASELINE^{commit}") || die "BASELINE=$BASELINE is not a revision"
  WORK="$(mktemp -d /tmp/labssh-bench-placement.XXXXXX)"
  say "building the same benchmark against $rev (in $WORK)"
  git archive "$rev" | tar -x -C "$WORK"
  mkdir -p "$WORK/controller/examples"
  cp controller/examples/bench-placement.rs "$WORK/controller/examples/"
  # A target directory of its own (cargo would take the current build's artifacts
  # for fresh: same package names, older file times), seeded with hard links to
  # the current one's dependencies; the extracted sources are touched so every
  # workspace crate is built from them.
  base_target="$TARGET/bench-placement-baseline"
  if [ ! -d "$base_target/release" ]; then
    mkdir -p "$base_target"
    cp -al "$TARGET/release" "$base_target/release"
  fi
  find "$WORK" -type f -exec touch {} +
  (cd "$WORK" && CARGO_TARGET_DIR="$base_target" cargo build --release -p labssh-controller --example bench-placement)
  cp "$base_target/release/examples/bench-placement" "$OUT/bench-baseline"
  cmp -s "$OUT/bench-baseline" "$OUT/bench-current" && die "the baseline build is the current one"
fi

{
  echo "cpus=$(nproc) kernel=$(uname -r) load=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "revision=$(git rev-parse HEAD)$(git diff --quiet HEAD -- controller || echo ' (modified)') baseline=${BASELINE:-none}"
  echo "agents=$agents args=${args[*]:-}"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

IFS=, read -r -a counts <<< "$agents"
for n in "${counts[@]}"; do
  if [ -n "$BASELINE" ]; then
    say "baseline, $n agents"
    "$OUT/bench-baseline" --agents "$n" "${args[@]}" --tsv "$OUT/baseline-$n.tsv" > "$OUT/baseline-$n.md"
    cat "$OUT/baseline-$n.md"
  fi
  say "current, $n agents"
  "$OUT/bench-current" --agents "$n" "${args[@]}" --tsv "$OUT/current-$n.tsv" > "$OUT/current-$n.md"
  cat "$OUT/current-$n.md"
done

cat "$OUT"/current-*.tsv > "$OUT/current.tsv"
[ -z "$BASELINE" ] || cat "$OUT"/baseline-*.tsv > "$OUT/baseline.tsv"

# One table: metric × agent count, "baseline → current (ratio)" with a baseline.
table() {
  awk -F'\t' -v counts="$agents" -v have_base="${BASELINE:+1}" '
    FNR == 1 { file++ }
    file == 1 { cur[$1, $2] = $3; if (!seen[$1]++) order[++m] = $1 }
    file == 2 { base[$1, $2] = $3 }
    function num(s) { return s + 0 }
    END {
      n = split(counts, c, ",")
      printf "| metric |"; for (i = 1; i <= n; i++) printf " %s agents |", c[i]; print ""
      printf "|---|"; for (i = 1; i <= n; i++) printf "---:|"; print ""
      for (k = 1; k <= m; k++) {
        metric = order[k]; printf "| %s |", metric
        for (i = 1; i <= n; i++) {
          v = cur[metric, c[i]]
          if (have_base && ((metric, c[i]) in base)) {
            b = base[metric, c[i]]; r = ""
            # Times: smaller is better; rates: larger is better.
            if (metric ~ /_us$|_ms$/ && num(v) > 0) r = sprintf(" (%.1f×)", num(b) / num(v))
            if (metric ~ /_per_s$/ && num(b) > 0) r = sprintf(" (%.1f×)", num(v) / num(b))
            printf " %s → %s%s |", b, v, r
          } else printf " %s |", v
        }
        print ""
      }
    }' "$OUT/current.tsv" ${BASELINE:+"$OUT/baseline.tsv"}
}
echo
table | tee "$OUT/summary.md"
grep -h '^note:\|^login rate' "$OUT"/*.md | sort -u || true
say "results in $OUT"
