#!/usr/bin/env bash
# P1 benchmark: Sluice vs DataFusion vs PySpark on a 10 M-row group-by (see benches/p1_groupby.rs).
#   scripts/bench-p1.sh [--rows N] [--runs N] [--no-spark]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release -p sluice-engine --bin sluice
cargo bench --locked --bench p1_groupby -- "$@"
