#!/usr/bin/env bash
# P5/P6 benchmark: file-stream windowed count, Sluice vs PySpark Structured Streaming with the
# RocksDB state store (see benches/p5_filestream.rs).
#   scripts/bench-p5.sh [--files 20] [--rows-per-file 200000] [--no-spark]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
[ -x .venv/bin/python ] || bash scripts/bench-peers.sh
# One release build of the whole workspace: the bench and the `sluice` binary it runs.
cargo build --locked --release --workspace --all-targets
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/p5_filestream-* | grep -v '\.d$' | head -1)" "$@"
