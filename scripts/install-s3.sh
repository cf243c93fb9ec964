#!/usr/bin/env bash
# Installs the S3-compatible server the object-storage tests use — moto's server (`moto[server]`
# from PyPI; it honours conditional writes, If-None-Match and If-Match, which Sluice's commit
# protocol relies on) — into a virtualenv in the tool cache outside the clone, unless it is
# already there, and prints the server's path. About half a minute the first time.
#
#   scripts/install-s3.sh            # prints e.g. /root/.cache/sluice-tools/s3/bin/moto_server
#   SLUICE_TOOLS=DIR scripts/install-s3.sh
set -euo pipefail
tools="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"
venv="$tools/s3"
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "installing moto's S3 server into $venv (one time)" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]>=5.1,<6" >&2
fi
echo "$venv/bin/moto_server"
