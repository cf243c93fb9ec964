#!/usr/bin/env bash
# The project's test command: formatting, lints, and every test — unit tests plus end-to-end
# tests that start real driver and executor processes talking QUIC with mutual TLS.
#
#   scripts/test.sh            # everything
#   scripts/test.sh --no-run   # formatting, and the lint-checked build of every target
#
# The lints ride on the test build: clippy-driver compiles the workspace's own crates — every
# target: libraries, binaries, tests, benches, examples — and fails on any clippy warning,
# exactly as `cargo clippy --workspace --all-targets -- -D warnings` does, but without clippy's
# separate check pass over every dependency (a third of a cold build).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
cargo test --workspace --all-targets --locked --no-run
if [ "${1:-}" != "--no-run" ]; then
  cargo test --workspace --locked
fi
