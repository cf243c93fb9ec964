#!/usr/bin/env bash
# P4 benchmark: Nexmark q0, q1, q2, q5, q7, q8 over the in-process generator on 2 executors,
# events per CPU-second beside the generator alone (see benches/p4_nexmark.rs).
#   scripts/bench-p4.sh [--events N] [--queries q0,q1,q2,q5,q7,q8]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
# One release build of the whole workspace: the bench and the `sluice` binary it runs.
cargo build --locked --release --workspace --all-targets
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/p4_nexmark-* | grep -v '\.d$' | head -1)" "$@"
