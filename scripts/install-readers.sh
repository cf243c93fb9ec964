#!/usr/bin/env bash
# Installs the independent Parquet readers the tests check output with — DuckDB (and pyarrow)
# from PyPI — and the Prometheus client's text-format parser (the metrics test's) into a virtualenv in the tool cache outside the clone, unless it is already there,
# and prints its python's path. About half a minute the first time; instant afterwards.
#
#   scripts/install-readers.sh            # prints e.g. /root/.cache/sluice-tools/readers/bin/python
#   SLUICE_TOOLS=DIR scripts/install-readers.sh
set -euo pipefail
tools="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"
venv="$tools/readers"
if ! "$venv/bin/python" -c 'import duckdb, pyarrow, prometheus_client, kubernetes_validate' >/dev/null 2>&1; then
  echo "installing DuckDB and pyarrow into $venv (one time)" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "duckdb>=1.1,<2" "pyarrow>=17" "prometheus-client>=0.20" \
    "kubernetes-validate==1.37.0" >&2
fi
echo "$venv/bin/python"
