#!/usr/bin/env bash
# P4 benchmark: Nexmark q0, q1, q2, q5, q7, q8 over the in-process generator on 2 executors,
# events per CPU-second beside the generator alone (see benches/p4_nexmark.rs).
#   scripts/bench-p4.sh [--events N] [--queries q0,q1,q2,q5,q7,q8]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release -p sluice-engine --bin sluice
cargo bench --locked --bench p4_nexmark -- "$@"
