#!/usr/bin/env bash
# P12: Nexmark over JSON files, Sluice against Flink 2.3 (PyFlink, local mini-cluster on Java 17)
# on the same machine (see benches/p12_flink.rs), then the window-visible latency of both (P13's
# `lat_window` at a fixed input rate: Sluice at triggers 0 ms / 100 ms / 1 s, Flink with 1 s
# checkpoints; see benches/p13_latency.rs and scripts/bench-latency.sh for every engine and
# option). Installs Flink into .venv-flink (ignored).
#   scripts/bench-flink.sh [--events 10000000] [--queries q0,q1,q2,q5,q7,q8] [--no-flink] [--no-latency]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
latency=1
engines=sluice,flink
args=()
for arg in "$@"; do
  case "$arg" in
    --no-latency) latency=0 ;;
    --no-flink) engines=sluice; args+=("$arg") ;;
    *) args+=("$arg") ;;
  esac
done
bash scripts/install-readers.sh >/dev/null
bash scripts/install-flink.sh
# The release `sluice` binary and the two benches.
cargo build --locked --release --workspace --bins --bench p12_flink --bench p13_latency
bench() { ls -t "$CARGO_TARGET_DIR"/release/deps/"$1"-* | grep -v '\.d$' | head -1; }
"$(bench p12_flink)" "${args[@]}"
if [ "$latency" = 1 ]; then
  echo
  "$(bench p13_latency)" --engines "$engines" --queries lat_window
fi
