#!/usr/bin/env bash
# The demo: generates sample bids (Parquet) if missing, runs examples/bids.sql on the embedded
# local cluster (a driver and 2 executor processes), shows that a rerun on the same checkpoint
# commits nothing twice, and queries the result with `sluice run -e`.
#
#   scripts/demo.sh [--rows N] [--debug]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=2000000
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows="$2"; shift 2 ;;
    --debug) profile=dev; shift ;;
    *) echo "usage: scripts/demo.sh [--rows N] [--debug]" >&2; exit 2 ;;
  esac
done
dir=$([ "$profile" = dev ] && echo debug || echo release)
target="${CARGO_TARGET_DIR:-target}"

cargo build --locked --profile "$profile" -p sluice-engine --bin sluice
cargo run --locked --profile "$profile" --example generate_bids -- --rows "$rows" --out demo/data/bids
sluice="$target/$dir/sluice"

rm -rf demo/out demo/checkpoint
echo "== sluice run examples/bids.sql (driver + 2 executor processes)"
"$sluice" run examples/bids.sql --checkpoint demo/checkpoint
echo "== the same job again on the same checkpoint: nothing is written twice"
"$sluice" run examples/bids.sql --checkpoint demo/checkpoint
echo "== what the checkpoint recorded"
"$sluice" checkpoint inspect demo/checkpoint
echo "== reading the output back"
"$sluice" run -e "SELECT channel, count(*) AS auctions, sum(n) AS bids, max(top) AS top_price FROM 'demo/out/totals/' GROUP BY channel ORDER BY bids DESC"
