#!/usr/bin/env bash
# P2 benchmark: cycle time of an epoch with no new data vs PySpark's triggerExecution
# (see benches/p2_epoch.rs).
#   scripts/bench-p2.sh [--epochs N] [--spark-seconds S] [--no-spark]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-broker.sh >/dev/null
cargo build --locked --release -p sluice-engine --bin sluice
cargo bench --locked --bench p2_epoch -- "$@"
