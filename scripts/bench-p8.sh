#!/usr/bin/env bash
# P8 benchmark: an epoch during which an executor is killed vs a normal epoch, and driver
# restart to the next committed epoch (see benches/p8_recovery.rs).
#   scripts/bench-p8.sh [--files 40] [--rows-per-file 200000] [--kills 3]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
# One release build of the whole workspace: the bench and the `sluice` binary it runs.
cargo build --locked --release --workspace --all-targets
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/p8_recovery-* | grep -v '\.d$' | head -1)" "$@"
