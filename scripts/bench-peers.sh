#!/usr/bin/env bash
# Installs the benchmark peers (PySpark 4 with pyarrow) into .venv (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "pyspark>=4,<5" pyarrow
.venv/bin/python -c "import pyspark; print('pyspark', pyspark.__version__)"
