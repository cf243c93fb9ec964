#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a number of executions each, starting from the
# seed corpus the unit tests of `sluice-fuzz` write (real stage plans, shuffle streams, records,
# the example jobs), two targets at a time. Prints one line per target with its executions,
# seconds and corpus size; a crash stops that target and leaves its input in fuzz/artifacts/.
#
#   scripts/fuzz.sh [--runs N] [--max-time S] [--timeout S] [--jobs J] [TARGET...]   # N: 10 000 000
#
# --max-time S stops each target after S seconds even if it has not reached N executions.
# --timeout S (default 10): one input taking longer is a finding too (libFuzzer's own default is
# 20 minutes), as a job text that takes seconds to parse is a bug.
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and `cargo install cargo-fuzz`.
# The instrumented release build goes to $SLUICE_FUZZ_TARGET (default ~/.cache/sluice-fuzz-target).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=10000000
max_time=0
timeout=10
jobs=2
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --max-time) max_time="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    -*) echo "usage: scripts/fuzz.sh [--runs N] [--max-time S] [--timeout S] [--jobs J] [TARGET...]" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
fuzz_target="${SLUICE_FUZZ_TARGET:-$HOME/.cache/sluice-fuzz-target}"
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# -s none: no AddressSanitizer (safe Rust: a panic is the finding, and runs are several times
# faster); 16 codegen units: a build in minutes rather than most of an hour.
cargo +nightly fuzz build -s none --codegen-units 16 --target-dir "$fuzz_target"
# The seed corpus: the unit tests write the inputs they check into fuzz/corpus/TARGET/.
SLUICE_FUZZ_CORPUS="$PWD/fuzz/corpus" cargo test --locked -p sluice-fuzz --quiet

mkdir -p fuzz/logs
run_one() {
  local t="$1" log="fuzz/logs/$1.log"
  mkdir -p "fuzz/corpus/$t"
  if cargo +nightly fuzz run -s none --codegen-units 16 --target-dir "$fuzz_target" "$t" -- \
      -runs="$runs" -max_total_time="$max_time" -timeout="$timeout" -print_final_stats=1 > "$log" 2>&1; then
    local runs_done secs corpus
    runs_done=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o '[0-9]* second' | grep -o '[0-9]*')
    corpus=$(ls "fuzz/corpus/$t" | wc -l)
    echo "$t: ${runs_done:-?} executions in ${secs:-?} s, no crash (corpus $corpus inputs)"
  else
    echo "$t: FAILED after $(grep -o '#[0-9]*' "$log" | tail -1 | tr -d '#') runs; see $log and fuzz/artifacts/$t/"
    return 1
  fi
}
export -f run_one
export runs max_time timeout fuzz_target
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'
