#!/usr/bin/env bash
# Installs the Kafka-protocol broker the tests and the streaming demo use — tansu (Apache-2.0,
# written in Rust) — into a cache outside the clone, unless it is already there, and prints the
# binary's path. About 8 minutes the first time; instant afterwards.
#
#   scripts/install-broker.sh            # prints e.g. /root/.cache/sluice-tools/tansu/bin/tansu
#   SLUICE_TOOLS=DIR scripts/install-broker.sh
set -euo pipefail
tools="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"
bin="$tools/tansu/bin/tansu"
if [ ! -x "$bin" ]; then
  echo "installing the tansu broker into $tools/tansu (one time, several minutes)" >&2
  # Its own target directory, not the project's: different features would rebuild ours. Its
  # release profile (one codegen unit, thin LTO) is overridden for a faster build on small
  # machines: a test broker needs no whole-program optimisation.
  env -u CARGO_TARGET_DIR CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo install tansu --version 0.6.0 --locked \
    --features dynostore,libsql --root "$tools/tansu" >&2
fi
echo "$bin"
