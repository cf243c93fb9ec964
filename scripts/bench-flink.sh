#!/usr/bin/env bash
# P12: Nexmark over JSON files, Sluice against Flink 2.3 (PyFlink, local mini-cluster on Java 17)
# on the same machine (see benches/p12_flink.rs). Installs Flink into .venv-flink (ignored).
#   scripts/bench-flink.sh [--events 10000000] [--queries q0,q1,q2,q5,q7,q8] [--no-flink]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
bash scripts/install-readers.sh >/dev/null
bash scripts/install-flink.sh
# The release `sluice` binary and this bench.
cargo build --locked --release --workspace --bins --bench p12_flink
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/p12_flink-* | grep -v '\.d$' | head -1)" "$@"
