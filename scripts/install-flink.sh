#!/usr/bin/env bash
# Installs PyFlink 2.3.0 (the full Flink distribution, run as a local mini-cluster on Java 17)
# into .venv-flink (ignored by git), once: the peer of scripts/bench-flink.sh and
# scripts/bench-latency.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-flink/bin/python ] || ! .venv-flink/bin/python -c "import pyflink" 2>/dev/null; then
  python3 -m venv .venv-flink
  .venv-flink/bin/pip install -q --upgrade pip
  .venv-flink/bin/pip install -q "apache-flink==2.3.0"
fi
