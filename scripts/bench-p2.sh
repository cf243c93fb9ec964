#!/usr/bin/env bash
# P2 benchmark: cycle time of an epoch with no new data vs PySpark's triggerExecution
# (see benches/p2_epoch.rs).
#   scripts/bench-p2.sh [--epochs N] [--spark-seconds S] [--no-spark]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-broker.sh >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
# One release build of the whole workspace: the bench and the `sluice` binary it runs.
cargo build --locked --release --workspace --all-targets
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/p2_epoch-* | grep -v '\.d$' | head -1)" "$@"
