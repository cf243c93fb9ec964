#!/usr/bin/env bash
# P1 benchmark: Sluice vs DataFusion vs PySpark on a 10 M-row group-by (see benches/p1_groupby.rs).
#   scripts/bench-p1.sh [--rows N] [--runs N] [--no-spark]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
# One release build of the whole workspace: the bench and the `sluice` binary it runs.
cargo build --locked --release --workspace --all-targets
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/p1_groupby-* | grep -v '\.d$' | head -1)" "$@"
