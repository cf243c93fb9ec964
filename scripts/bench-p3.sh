#!/usr/bin/env bash
# P3 benchmark: Kafka -> Parquet throughput vs a plain rdkafka consumer (see benches/p3_kafka.rs).
#   scripts/bench-p3.sh [--records N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-broker.sh >/dev/null
cargo build --locked --release -p sluice-engine --bin sluice
cargo bench --locked --bench p3_kafka -- "$@"
