#!/usr/bin/env bash
# Starts a Kafka-protocol broker (tansu) on loopback in the background and creates topics.
#
#   scripts/broker.sh start [--port 9092] [--dir DIR]   # data in DIR/tansu.db (sqlite, survives restarts)
#   scripts/broker.sh topic NAME PARTITIONS [--port 9092]
#   scripts/broker.sh stop [--dir DIR]
#
# The broker needs topics created before use (no auto-creation).
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:-}"; shift || true
port=9092
dir=demo/broker
name=""; partitions=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    *) if [ -z "$name" ]; then name="$1"; else partitions="$1"; fi; shift ;;
  esac
done
case "$cmd" in
  start)
    bin=$(bash scripts/install-broker.sh)
    mkdir -p "$dir"
    if [ -f "$dir/tansu.pid" ] && kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null; then
      echo "broker already running (pid $(cat "$dir/tansu.pid"))"; exit 0
    fi
    (cd "$dir" && nohup "$bin" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "sqlite://tansu.db" > tansu.log 2>&1 & echo $! > tansu.pid)
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "broker listening on 127.0.0.1:$port (pid $(cat "$dir/tansu.pid"), log $dir/tansu.log)"; exit 0
      fi
      sleep 0.1
    done
    echo "broker did not start; see $dir/tansu.log" >&2; exit 1 ;;
  topic)
    [ -n "$name" ] && [ -n "$partitions" ] || { echo "usage: scripts/broker.sh topic NAME PARTITIONS" >&2; exit 2; }
    bin=$(bash scripts/install-broker.sh)
    "$bin" topic create "$name" --partitions "$partitions" --broker "tcp://127.0.0.1:$port" ;;
  stop)
    if [ -f "$dir/tansu.pid" ]; then kill "$(cat "$dir/tansu.pid")" 2>/dev/null || true; rm -f "$dir/tansu.pid"; fi ;;
  *) echo "usage: scripts/broker.sh start|topic|stop ..." >&2; exit 2 ;;
esac
