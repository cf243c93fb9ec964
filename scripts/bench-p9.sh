#!/usr/bin/env bash
# P9 benchmark: the P1 group-by with input and output on an S3 server vs local files vs pyarrow (see benches/p9_object_store.rs).
#   scripts/bench-p9.sh [--rows N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
# One release build of the whole workspace: the bench and the `sluice` binary it runs.
cargo build --locked --release --workspace --all-targets
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/p9_object_store-* | grep -v '\.d$' | head -1)" "$@"
