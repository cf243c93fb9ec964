#!/usr/bin/env bash
# The demos, each one command on the embedded local cluster (a driver and 2 executor processes).
#
#   scripts/demo.sh [--rows N] [--debug]
#       Batch: generates sample bids (Parquet) if missing, runs examples/bids.sql, shows that a
#       rerun on the same checkpoint commits nothing twice, and queries the result.
#   scripts/demo.sh --streaming [--records N] [--port P] [--debug]
#       Streaming, Kafka → Parquet exactly once: starts a broker, produces N events (one in a
#       thousand not JSON) while examples/pipeline.sql runs with a 500 ms trigger, kill -9s the
#       driver mid-way and restarts it, drains, and reads the lake back: every good record
#       exactly once, every bad one in the dead-letter table. Everything lives in demo/streaming/.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=2000000
records=200000
port=9092
profile=release
mode=batch
usage="usage: scripts/demo.sh [--rows N] [--debug] | --streaming [--records N] [--port P] [--debug]"
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows="$2"; shift 2 ;;
    --streaming) mode=streaming; shift ;;
    --records) records="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --debug) profile=dev; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
dir=$([ "$profile" = dev ] && echo debug || echo release)
target="${CARGO_TARGET_DIR:-target}"
sluice="$target/$dir/sluice"

batch_demo() {
  cargo build --locked --profile "$profile" -p sluice-engine --bin sluice
  cargo run --locked --profile "$profile" --example generate_bids -- --rows "$rows" --out demo/data/bids
  rm -rf demo/out demo/checkpoint
  echo "== sluice run examples/bids.sql (driver + 2 executor processes)"
  "$sluice" run examples/bids.sql --checkpoint demo/checkpoint
  echo "== the same job again on the same checkpoint: nothing is written twice"
  "$sluice" run examples/bids.sql --checkpoint demo/checkpoint
  echo "== what the checkpoint recorded"
  "$sluice" checkpoint inspect demo/checkpoint
  echo "== reading the output back"
  "$sluice" run -e "SELECT channel, count(*) AS auctions, sum(n) AS bids, max(top) AS top_price FROM 'demo/out/totals/' GROUP BY channel ORDER BY bids DESC"
}

# The one value of a one-row, one-column query.
scalar() {
  "$sluice" run -e "$1" 2>/dev/null | awk -F'|' 'NR == 4 { gsub(/ /, "", $2); print $2 }'
}

# Committed epochs in the events file so far.
commits() {
  if [ -f "$d/events.jsonl" ]; then grep -c '"event":"epoch_committed"' "$d/events.jsonl" || true; else echo 0; fi
}

# Waits until more than $1 epochs have committed (at most 120 s).
wait_commits() {
  for _ in $(seq 1 1200); do
    [ "$(commits)" -gt "$1" ] && return 0
    kill -0 "$driver" 2>/dev/null || { echo "the driver exited; see $d/driver.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "no epoch committed within 120 s; see $d/driver.log" >&2; exit 1
}

start_driver() {
  "$sluice" run "$d/pipeline.sql" --checkpoint "$d/ckpt" --trigger 500ms \
    --events "$d/events.jsonl" "$@" 2>> "$d/driver.log" &
  driver=$!
}

streaming_demo() {
  d=demo/streaming
  bad_every=1000
  cargo build --locked --profile "$profile" -p sluice-engine --bin sluice
  cargo build --locked --profile "$profile" --example produce_events
  producer="$target/$dir/examples/produce_events"
  scripts/broker.sh stop --dir "$d/broker" > /dev/null
  rm -rf "$d" && mkdir -p "$d"
  # examples/pipeline.sql with this demo's broker port and directories.
  sed -e "s|127.0.0.1:9092|127.0.0.1:$port|" -e "s|demo/lake/events/|$d/lake/|" \
      -e "s|demo/dead/events/|$d/dead/|" examples/pipeline.sql > "$d/pipeline.sql"
  driver=""
  trap 'if [ -n "$driver" ]; then kill -9 "$driver" 2>/dev/null || true; fi; scripts/broker.sh stop --dir "$d/broker" > /dev/null' EXIT

  echo "== a broker on 127.0.0.1:$port and a topic 'events' with 4 partitions"
  scripts/broker.sh start --port "$port" --dir "$d/broker"
  scripts/broker.sh topic events 4 --port "$port" > /dev/null
  half=$((records / 2))
  produce() {
    "$producer" --bootstrap "127.0.0.1:$port" --topic events --first "$1" --count "$2" \
      --bad-every "$bad_every"
  }
  echo "== producing records 0..$half (every ${bad_every}th is not JSON)"
  produce 0 "$half"

  echo "== sluice run $d/pipeline.sql --checkpoint $d/ckpt --trigger 500ms (log: $d/driver.log)"
  start_driver
  wait_commits 0
  echo "== producing records $half..$records while the query runs (5 batches, 0.5 s apart)"
  (
    chunk=$(((records - half) / 5))
    for i in 0 1 2 3 4; do
      first=$((half + i * chunk))
      count=$([ "$i" = 4 ] && echo $((records - first)) || echo "$chunk")
      produce "$first" "$count" 2>/dev/null
      sleep 0.5
    done
  ) &
  producing=$!
  wait_commits "$(commits)"
  echo "== kill -9 the driver (pid $driver) mid-stream; its executors go down with it"
  kill -9 "$driver"
  wait "$driver" 2>/dev/null || true
  echo "== the same command again: it resumes from the checkpoint"
  start_driver
  wait "$producing"
  sleep 2
  echo "== SIGTERM (as Ctrl-C): the driver stops after the current epoch commits"
  kill -TERM "$driver"
  wait "$driver"
  driver=""
  echo "== draining what is left: the same command with --trigger available-now"
  "$sluice" run "$d/pipeline.sql" --checkpoint "$d/ckpt" --trigger available-now \
    --events "$d/events.jsonl" 2>> "$d/driver.log"

  echo "== progress of the epochs (from $d/driver.log; every record is in $d/events.jsonl)"
  grep -E '^sluice: epoch [0-9]+ committed:' "$d/driver.log" > "$d/epochs.txt" || true
  head -3 "$d/epochs.txt"
  echo "   ..."
  grep 'replayed' "$d/epochs.txt" | head -2 || true
  tail -2 "$d/epochs.txt"

  echo "== reading the lake and the dead letters back"
  "$sluice" run -e "SELECT dt, count(*) AS records, min(user_id) AS first_id, max(user_id) AS last_id FROM '$d/lake/' GROUP BY dt ORDER BY dt" 2>/dev/null
  bad=$((records / bad_every))
  good=$((records - bad))
  rows=$(scalar "SELECT count(*) FROM '$d/lake/'")
  ids=$(scalar "SELECT count(DISTINCT user_id) FROM '$d/lake/'")
  wrong=$(scalar "SELECT count(*) FROM '$d/lake/' WHERE user_id % $bad_every = $((bad_every - 1)) OR user_id < 0 OR user_id >= $records")
  dead=$(scalar "SELECT count(*) FROM '$d/dead/'")
  echo "produced $records records: $good good, $bad not JSON"
  echo "lake: $rows rows, $ids distinct ids, $wrong that should not be there; dead letters: $dead"
  if [ "$rows" = "$good" ] && [ "$ids" = "$good" ] && [ "$wrong" = 0 ] && [ "$dead" = "$bad" ]; then
    echo "exactly once: every good record is in the lake once, every bad one is a dead letter"
  else
    echo "NOT exactly once: expected $good rows with $good distinct ids and $bad dead letters" >&2
    exit 1
  fi
}

if [ "$mode" = streaming ]; then streaming_demo; else batch_demo; fi
