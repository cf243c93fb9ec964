#!/usr/bin/env bash
# P11 benchmark: dynamic allocation under a load step vs fixed executor counts (see
# benches/p11_elastic.rs).
#   scripts/bench-p11.sh [--base N] [--step N] [--phase-secs S] [--tail-secs S] [--trigger-ms T] [--parallelism P] [--min N] [--max N] [--depth D] [--chains C] [--max-records-per-trigger N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-broker.sh >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
# The release `sluice` binary and this bench.
cargo build --locked --release --workspace --bins --bench p11_elastic
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/p11_elastic-* | grep -v '\.d$' | head -1)" "$@"
