#!/usr/bin/env bash
# P3 benchmark: Kafka -> Parquet throughput vs a plain rdkafka consumer (see benches/p3_kafka.rs).
#   scripts/bench-p3.sh [--records N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-broker.sh >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
# One release build of the whole workspace: the bench and the `sluice` binary it runs.
cargo build --locked --release --workspace --all-targets
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/p3_kafka-* | grep -v '\.d$' | head -1)" "$@"
