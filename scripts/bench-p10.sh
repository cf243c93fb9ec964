#!/usr/bin/env bash
# P10 benchmark: a ~50 M-key group-by at 256 MiB per executor vs DuckDB and PySpark with the same
# memory (see benches/p10_memory.rs).
#   scripts/bench-p10.sh [--rows N] [--memory-mb M] [--runs N] [--no-spark]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
bash scripts/install-readers.sh >/dev/null
# The release `sluice` binary and this bench.
cargo build --locked --release --workspace --bins --bench p10_memory
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/p10_memory-* | grep -v '\.d$' | head -1)" "$@"
