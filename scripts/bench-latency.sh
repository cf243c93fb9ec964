#!/usr/bin/env bash
# P13: end-to-end latency of a file-stream pipeline at a fixed input rate — Sluice at triggers
# of 0 ms / 100 ms / 1 s, Flink 2.3 (PyFlink in .venv-flink) and Spark Structured Streaming
# (PySpark in .venv) — on the same machine, one run (see benches/p13_latency.rs).
#   scripts/bench-latency.sh [--rate 2000] [--seconds 30] [--warmup 20] [--engines sluice,flink,spark]
#       [--triggers 0ms,100ms,1s] [--queries lat_pass,lat_window] [--watermark-ms 1000]
#       [--flink-checkpoint-ms 1000]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
bash scripts/install-readers.sh >/dev/null
bash scripts/install-flink.sh
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import pyspark" 2>/dev/null; then
  bash scripts/bench-peers.sh
fi
# The release `sluice` binary and this bench.
cargo build --locked --release --workspace --bins --bench p13_latency
exec "$(ls -t "$CARGO_TARGET_DIR"/release/deps/p13_latency-* | grep -v '\.d$' | head -1)" "$@"
