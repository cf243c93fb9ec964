#!/usr/bin/env bash
# The project's test command: formatting, lints, and every test — unit tests plus end-to-end
# tests that start real driver and executor processes talking QUIC with mutual TLS.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
