#!/usr/bin/env bash
# The soak command: a Nexmark windowed aggregation for 30 minutes (by default), printing the
# driver's and executors' RSS every minute (see benches/soak.rs).
#   scripts/soak.sh [--minutes M] [--rate N] [--every-secs S]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
# The release `sluice` binary and the soak bench.
cargo build --locked --release --workspace --bins --bench soak
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/soak-* | grep -v '\.d$' | head -1)" "$@"
