#!/usr/bin/env bash
# Runs a Kafka-protocol broker (tansu) on loopback in the background and creates topics.
#
#   scripts/broker.sh start [--port 9092] [--dir DIR]   # data in DIR/tansu.db (SQLite, survives restarts)
#   scripts/broker.sh topic NAME PARTITIONS [--port 9092]
#   scripts/broker.sh status [--dir DIR]                # exit 0 if it runs, 1 if not
#   scripts/broker.sh stop [--dir DIR]                  # returns once the port is free
#
# DIR (default demo/broker) holds the database, tansu.log, tansu.pid (the broker's own pid) and
# tansu.port. The broker needs topics created before use (no auto-creation).
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
    -*) echo "scripts/broker.sh: unknown option $1" >&2; exit 2 ;;
    *) if [ -z "$name" ]; then name="$1"; else partitions="$1"; fi; shift ;;
  esac
done

# The pid of the broker started in $dir, if it still runs (and is a tansu process).
running_pid() {
  local pid
  [ -f "$dir/tansu.pid" ] || return 1
  pid=$(cat "$dir/tansu.pid")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # An exited broker nobody has reaped yet (state Z) is not running.
  [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)" != Z ] || return 1
  case "$(cat "/proc/$pid/comm" 2>/dev/null)" in tansu*) echo "$pid" ;; *) return 1 ;; esac
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case "$cmd" in
  start)
    if pid=$(running_pid); then
      echo "broker already running in $dir (pid $pid, port $(cat "$dir/tansu.port" 2>/dev/null))"; exit 0
    fi
    if port_open "$port"; then
      echo "port $port is in use by another process; choose one with --port" >&2; exit 1
    fi
    bin=$(bash scripts/install-broker.sh)
    mkdir -p "$dir"
    # `exec nohup`: the background job becomes the broker itself (immune to the terminal
    # closing), so $! is its pid.
    (cd "$dir" && exec nohup "$bin" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "sqlite://tansu.db" > tansu.log 2>&1 < /dev/null) &
    pid=$!
    disown "$pid" 2>/dev/null || true
    echo "$pid" > "$dir/tansu.pid"
    echo "$port" > "$dir/tansu.port"
    for _ in $(seq 1 100); do
      if port_open "$port"; then
        echo "broker listening on 127.0.0.1:$port (pid $pid, log $dir/tansu.log)"; exit 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    echo "broker did not start; see $dir/tansu.log" >&2; exit 1 ;;
  topic)
    [ -n "$name" ] && [ -n "$partitions" ] || { echo "usage: scripts/broker.sh topic NAME PARTITIONS [--port P]" >&2; exit 2; }
    bin=$(bash scripts/install-broker.sh)
    if out=$(NO_COLOR=1 "$bin" topic create "$name" --partitions "$partitions" --broker "tcp://127.0.0.1:$port" 2>&1); then
      echo "topic '$name' created with $partitions partitions"
    elif grep -q "already exists" <<<"$out"; then
      echo "topic '$name' already exists"
    else
      echo "creating topic '$name' failed: $out" >&2; exit 1
    fi ;;
  status)
    if pid=$(running_pid); then
      echo "broker running in $dir (pid $pid, port $(cat "$dir/tansu.port" 2>/dev/null))"
    else
      echo "no broker running in $dir"; exit 1
    fi ;;
  stop)
    if ! pid=$(running_pid); then
      rm -f "$dir/tansu.pid"; echo "no broker running in $dir"; exit 0
    fi
    bport=$(cat "$dir/tansu.port" 2>/dev/null || echo "$port")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      if ! running_pid > /dev/null && ! port_open "$bport"; then break; fi
      [ "$i" = 50 ] && kill -9 "$pid" 2>/dev/null || true   # not gone after 5 s
      sleep 0.1
    done
    if running_pid > /dev/null || port_open "$bport"; then
      echo "broker (pid $pid) did not stop; port $bport still in use" >&2; exit 1
    fi
    rm -f "$dir/tansu.pid" "$dir/tansu.port"
    echo "broker stopped (pid $pid; port $bport free)" ;;
  *) echo "usage: scripts/broker.sh start|topic|status|stop [--port P] [--dir DIR]" >&2; exit 2 ;;
esac
